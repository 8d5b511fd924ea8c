//! Golden files: logs written by each format version, committed under `tests/data/vN/`, must
//! keep opening with exactly the same entries and state (see `tests/data/README.md`).
//!
//! Every case is copied to a temporary directory first (opening a log may repair or write),
//! checked read-only with `inspect::verify`, `inspect::stat` and `inspect::dump` (the dump is
//! compared with the record listing saved next to the case), then opened with the engine or the
//! Raft layer and compared entry by entry with what the generator wrote. Payloads are a
//! deterministic function of the index ([`payload`]), so the expected log is stated here, not
//! read back from the files.
//!
//! The generator is the ignored test `write_golden_files`; it only runs with
//! `RML_GOLDEN_WRITE=1` and refuses to overwrite an existing version directory:
//!
//! ```sh
//! RML_GOLDEN_WRITE=1 cargo test --release --all-features --test golden -- --ignored write_golden_files
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use raft_mmap_log::format::{FORMAT_VERSION, SEGMENT_HEADER_CRC_RANGE, SEGMENT_MAGIC};
use raft_mmap_log::inspect::{self, DumpFilter};
use raft_mmap_log::raft::inspect::{self as raft_inspect, MetaValue};
use raft_mmap_log::raft::{LogId, RaftLog, RaftTypes, Vote};
use raft_mmap_log::{Config, Error, Store};

/// Segment size of every golden log: the smallest allowed, so the files stay small.
const SEGMENT_SIZE: u64 = 4096;

/// The format versions with committed cases (`tests/data/vN`), oldest first; the last one is
/// `FORMAT_VERSION`. When the format moves on, the files of older versions stay as they are.
const VERSIONS: [u32; 3] = [1, 2, 3];
/// The oldest version (the mixed-version and refusal tests start from its files).
const V1: u32 = VERSIONS[0];

fn config() -> Config {
    Config {
        segment_size: SEGMENT_SIZE,
        prepare_ahead: false,
        ..Config::default()
    }
}

/// The payload of entry `index` written in generation `gen` (0: first write; 1 and 2: written
/// again after a truncate or a reset). Length: 1500 bytes when `index % 17 == 5` (a large
/// entry, about a third of a segment), else `(index * 97 + gen * 13) % 301` (0 for index 0 of
/// generation 0); byte `k` is `index * 7 + k * 31 + gen * 101`, truncated to `u8`.
fn payload(index: u64, gen: u64) -> Vec<u8> {
    let len = if index % 17 == 5 {
        1500
    } else {
        ((index * 97 + gen * 13) % 301) as usize
    };
    (0..len as u64)
        .map(|k| (index * 7 + k * 31 + gen * 101) as u8)
        .collect()
}

fn data_dir(version: u32, case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(format!("v{version}"))
        .join(case)
}

/// Copies the segment files of a case into a fresh temporary directory.
fn copy_case(version: u32, case: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let mut n = 0;
    for e in std::fs::read_dir(data_dir(version, case)).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "seg") {
            std::fs::copy(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
            n += 1;
        }
    }
    assert!(
        n > 0,
        "no segment files in {}",
        data_dir(version, case).display()
    );
    tmp
}

/// Sorted segment file names of `dir`.
fn seg_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    v.sort();
    v
}

fn name(seq: u64) -> String {
    raft_mmap_log::format::segment_file_name(seq)
}

/// Every record as `inspect::dump` reports it, one line each, plus one line per segment end.
/// Saved next to each case by the generator and compared by the test.
fn listing(dir: &Path) -> String {
    let out = std::cell::RefCell::new(String::new());
    let file = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
    inspect::dump::<Error>(
        dir,
        DumpFilter::default(),
        |r| {
            writeln!(
                out.borrow_mut(),
                "{} {} {:?} arg={} len={}",
                file(r.path),
                r.offset,
                r.kind,
                r.arg,
                r.len
            )
            .unwrap();
            Ok(())
        },
        |e| {
            writeln!(
                out.borrow_mut(),
                "{} {} end sealed={} invalid={:?}",
                file(e.path),
                e.offset,
                e.sealed,
                e.invalid
            )
            .unwrap();
            Ok(())
        },
    )
    .unwrap();
    out.into_inner()
}

/// Checks what every golden case must satisfy without opening it for writing: headers of
/// its version and 4096 bytes, a sound `verify` with no finding at all, the saved record
/// listing.
fn check_read_only(version: u32, case: &str, dir: &Path, files: &[String]) {
    assert_eq!(seg_names(dir), files, "{case}: segment files");
    for f in files {
        let bytes = std::fs::read(dir.join(f)).unwrap();
        assert_eq!(bytes.len() as u64, SEGMENT_SIZE, "{case}/{f}: file size");
        assert_eq!(bytes[0..8], SEGMENT_MAGIC, "{case}/{f}: magic");
        assert_eq!(bytes[8..12], version.to_le_bytes(), "{case}/{f}: version");
        assert_eq!(
            bytes[24..32],
            SEGMENT_SIZE.to_le_bytes(),
            "{case}/{f}: size"
        );
        let crc = crc32c::crc32c(&bytes[SEGMENT_HEADER_CRC_RANGE]);
        assert_eq!(bytes[36..40], crc.to_le_bytes(), "{case}/{f}: header crc");
    }
    let report = inspect::verify(dir, &|_| {}).unwrap();
    assert!(report.is_sound(), "{case}: {:?}", report.findings);
    assert!(report.findings.is_empty(), "{case}: {:?}", report.findings);
    assert_eq!(report.segments, files.len(), "{case}: segments verified");
    let saved = std::fs::read_to_string(data_dir(version, case).with_extension("records")).unwrap();
    assert_eq!(listing(dir), saved, "{case}: record listing");
}

fn open_store(dir: &Path) -> Store {
    let store = Store::open(dir, config()).unwrap();
    let report = store.recovery_report();
    assert!(report.cut.is_none(), "{:?}", report.cut);
    assert!(
        report.dropped_files.is_empty(),
        "{:?}",
        report.dropped_files
    );
    assert!(report.short_segment.is_none());
    assert!(report.tolerated_corruption.is_none());
    store
}

// ---------------------------------------------------------------------------------------------
// Case `store`: the engine alone.

/// Segment files of case `store`: segment 1 held only purged entries and was deleted.
const STORE_FILES: &[u64] = &[2, 3, 4, 5, 6];
/// Its first and next index.
const STORE_FIRST: u64 = 25;
const STORE_NEXT: u64 = 60;
/// Entries `30..` were truncated and written again (generation 1).
const STORE_TRUNCATED_FROM: u64 = 30;

/// Every meta value of case `store` (key, value).
fn store_metas() -> Vec<(u64, Vec<u8>)> {
    vec![
        (0, Vec::new()),
        (100, b"second value of key 100".to_vec()),
        (200, b"set with the purge".to_vec()),
        (u64::MAX, vec![0xA5; 40]),
    ]
}

fn store_expected(index: u64) -> Vec<u8> {
    payload(index, u64::from(index >= STORE_TRUNCATED_FROM))
}

fn write_store(dir: &Path) {
    let mut s = Store::open(dir, config()).unwrap();
    s.put_meta(100, b"first value of key 100").unwrap();
    for chunk in (0..40u64).collect::<Vec<_>>().chunks(10) {
        let ps: Vec<_> = chunk.iter().map(|&i| (i, payload(i, 0))).collect();
        s.append_batch(ps.iter().map(|(i, p)| (*i, &p[..])))
            .unwrap();
    }
    s.put_meta(100, b"second value of key 100").unwrap();
    s.put_meta(0, b"").unwrap();
    s.put_meta(u64::MAX, &[0xA5; 40]).unwrap();
    s.truncate_from(STORE_TRUNCATED_FROM).unwrap();
    for i in STORE_TRUNCATED_FROM..STORE_NEXT {
        s.append(i, &payload(i, 1)).unwrap();
    }
    s.purge_to_with_meta(STORE_FIRST, &[(200, b"set with the purge")])
        .unwrap();
    s.sync().unwrap();
}

#[test]
fn store_case_opens_with_every_entry_and_meta() {
    for v in VERSIONS {
        store_case(v);
    }
}

fn store_case(version: u32) {
    let tmp = copy_case(version, "store");
    let dir = tmp.path();
    let files: Vec<String> = STORE_FILES.iter().map(|&s| name(s)).collect();
    check_read_only(version, "store", dir, &files);

    let stat = raft_inspect::stat(dir).unwrap();
    assert_eq!(
        (stat.stat.first_index, stat.stat.next_index),
        (STORE_FIRST, STORE_NEXT)
    );
    assert_eq!(stat.raft.vote, MetaValue::Absent);
    let lens: Vec<(u64, usize)> = store_metas().iter().map(|(k, v)| (*k, v.len())).collect();
    assert_eq!(stat.raft.other, lens, "every meta key and its length");

    let mut store = open_store(dir);
    assert_eq!(store.first_index(), STORE_FIRST);
    assert_eq!(store.next_index(), STORE_NEXT);
    assert_eq!(store.last_index(), Some(STORE_NEXT - 1));
    for (k, v) in store_metas() {
        assert_eq!(store.meta(k), Some(&v[..]), "meta {k}");
    }
    for k in [1, 2, 3, 4, 5, 99, 101, 199, 201] {
        assert_eq!(store.meta(k), None, "meta {k}");
    }
    let snap = store.reader().view();
    assert_eq!(snap.get(STORE_FIRST - 1), None);
    assert_eq!(snap.get(STORE_NEXT), None);
    for i in STORE_FIRST..STORE_NEXT {
        assert_eq!(snap.get(i), Some(&store_expected(i)[..]), "entry {i}");
        assert_eq!(snap.get_checked(i).unwrap(), Some(&store_expected(i)[..]));
    }
    let read: Vec<(u64, Vec<u8>)> = snap
        .range(..)
        .map(|e| (e.index, e.payload.to_vec()))
        .collect();
    let want: Vec<(u64, Vec<u8>)> = (STORE_FIRST..STORE_NEXT)
        .map(|i| (i, store_expected(i)))
        .collect();
    assert_eq!(read, want);
    // Replication frames: borrowed from a version 2 file (its records carry `body_crc`),
    // copied with the checksum filled in from a version 1 file.
    let frames = snap.frames_checked(..).unwrap();
    assert_eq!(frames.indexes(), STORE_FIRST..STORE_NEXT);
    let borrowed = frames.spans().iter().all(|s| s.file().is_some());
    assert_eq!(borrowed, version >= 2, "version {version}");
    drop(snap);

    // The log goes on: it takes new entries, which survive a reopen.
    store.append(STORE_NEXT, b"after the golden files").unwrap();
    store.sync().unwrap();
    drop(store);
    let store = open_store(dir);
    let snap = store.reader().view();
    assert_eq!(snap.get(STORE_NEXT), Some(&b"after the golden files"[..]));
    assert_eq!(
        snap.get(STORE_NEXT - 1),
        Some(&store_expected(STORE_NEXT - 1)[..])
    );
}

/// A version 1 log appended to after the upgrade: its active segment takes version 1 records
/// until it is full, every later segment is version 2, and the mixed log reopens with every
/// entry checked by its own segment's version.
#[test]
fn a_version_1_log_goes_on_in_version_2_segments() {
    let tmp = copy_case(V1, "store");
    let dir = tmp.path();
    let mut store = open_store(dir);
    let more: Vec<(u64, Vec<u8>)> = (STORE_NEXT..STORE_NEXT + 40)
        .map(|i| (i, payload(i, 3)))
        .collect();
    for (i, p) in &more {
        store.append(*i, p).unwrap();
    }
    store.sync().unwrap();
    drop(store);
    let versions: Vec<(String, u32)> = seg_names(dir)
        .into_iter()
        .map(|f| {
            let b = std::fs::read(dir.join(&f)).unwrap();
            (f, u32::from_le_bytes(b[8..12].try_into().unwrap()))
        })
        .collect();
    let old = STORE_FILES.len();
    assert!(versions.len() > old + 1, "{versions:?}");
    assert!(
        versions[..old].iter().all(|(_, v)| *v == V1),
        "{versions:?}"
    );
    assert!(
        versions[old..].iter().all(|(_, v)| *v == FORMAT_VERSION),
        "{versions:?}"
    );
    assert!(inspect::verify(dir, &|_| {}).unwrap().findings.is_empty());
    let store = open_store(dir);
    let snap = store.reader().view();
    for i in STORE_FIRST..STORE_NEXT {
        assert_eq!(snap.get_checked(i).unwrap(), Some(&store_expected(i)[..]));
    }
    for (i, p) in &more {
        assert_eq!(snap.get_checked(*i).unwrap(), Some(&p[..]), "entry {i}");
    }
}

// ---------------------------------------------------------------------------------------------
// Case `raft`: the Raft layer with vote, commit, truncate, purge, snapshot meta, user data.

/// Segment files of case `raft`: segments 1 and 2 held only purged entries.
const RAFT_FILES: &[u64] = &[3, 4, 5];

fn raft_vote() -> Vote {
    Vote::new(2, 3, true)
}

/// Log id of entry `index` of case `raft`: term 1 by node 1 up to 25, then term 2 by node 3
/// (entries 26..=30 of term 1 were truncated and replaced).
fn raft_log_id(index: u64) -> LogId {
    if index <= 25 {
        LogId::new(1, 1, index)
    } else {
        LogId::new(2, 3, index)
    }
}

fn raft_expected(index: u64) -> Vec<u8> {
    payload(index, u64::from(index > 25))
}

fn write_raft(dir: &Path) {
    let mut log = RaftLog::<RaftTypes>::open(dir, config()).unwrap();
    log.save_vote(Vote::new(1, 1, false)).unwrap();
    log.save_user_data(Some(b"user data v1".to_vec())).unwrap();
    let first: Vec<_> = (1..=30u64)
        .map(|i| (LogId::new(1, 1, i), payload(i, 0)))
        .collect();
    log.append(first.iter().map(|(id, p)| (*id, &p[..])))
        .unwrap();
    log.commit(LogId::new(1, 1, 20)).unwrap();
    log.save_vote(raft_vote()).unwrap();
    log.truncate_after(Some(LogId::new(1, 1, 25))).unwrap();
    for i in 26..=50u64 {
        log.append([(raft_log_id(i), &payload(i, 1)[..])]).unwrap();
    }
    log.commit(LogId::new(2, 3, 45)).unwrap();
    log.purge_upto(LogId::new(1, 1, 10)).unwrap();
    log.install_snapshot(LogId::new(2, 3, 30), b"snapshot meta blob".to_vec())
        .unwrap();
    log.save_user_data(Some(b"user data v2".to_vec())).unwrap();
    log.sync().unwrap();
}

#[test]
fn raft_case_opens_with_every_entry_and_state() {
    for v in VERSIONS {
        raft_case(v);
    }
}

fn raft_case(version: u32) {
    let tmp = copy_case(version, "raft");
    let dir = tmp.path();
    let files: Vec<String> = RAFT_FILES.iter().map(|&s| name(s)).collect();
    check_read_only(version, "raft", dir, &files);
    let snapshot_id = LogId::new(2, 3, 30);

    let stat = raft_inspect::stat(dir).unwrap();
    assert_eq!((stat.stat.first_index, stat.stat.next_index), (31, 51));
    assert_eq!(stat.last_log_id, MetaValue::Value(raft_log_id(50)));
    assert_eq!(stat.raft.vote, MetaValue::Value(raft_vote()));
    assert_eq!(stat.raft.committed, MetaValue::Value(LogId::new(2, 3, 45)));
    assert_eq!(stat.raft.purged, MetaValue::Value(snapshot_id));
    assert_eq!(
        stat.raft.user_data,
        MetaValue::Value(Some(b"user data v2".to_vec()))
    );
    assert_eq!(
        stat.raft.snapshot,
        MetaValue::Value((snapshot_id, b"snapshot meta blob".to_vec()))
    );
    assert!(stat.raft.other.is_empty(), "{:?}", stat.raft.other);

    let log = RaftLog::<RaftTypes>::open(dir, config()).unwrap();
    let st = log.state();
    assert_eq!(st.vote, Some(raft_vote()));
    assert_eq!(st.last, Some(raft_log_id(50)));
    assert_eq!(st.committed, Some(LogId::new(2, 3, 45)));
    assert_eq!(st.purged, Some(snapshot_id));
    assert_eq!(st.user_data, Some(b"user data v2".to_vec()));
    let snap_meta = st.snapshot.as_ref().unwrap();
    assert_eq!(snap_meta.last_log_id, snapshot_id);
    assert_eq!(snap_meta.data, b"snapshot meta blob");
    assert_eq!(st.next_index(), 51);

    let snap = log.reader().view();
    assert_eq!((snap.first_index(), snap.next_index()), (31, 51));
    assert_eq!(snap.get(30).unwrap(), None);
    assert_eq!(snap.get(51).unwrap(), None);
    for i in 31..=50 {
        let (id, p) = snap.get(i).unwrap().unwrap();
        assert_eq!(
            (id, p),
            (raft_log_id(i), &raft_expected(i)[..]),
            "entry {i}"
        );
    }
    let read: Vec<_> = snap
        .read(..)
        .map(|e| e.map(|(id, p)| (id, p.to_vec())).unwrap())
        .collect();
    let want: Vec<_> = (31..=50)
        .map(|i| (raft_log_id(i), raft_expected(i)))
        .collect();
    assert_eq!(read, want);
    assert_eq!(snap.state().unwrap(), *st);
}

// ---------------------------------------------------------------------------------------------
// Case `raft-reset`: a snapshot ahead of the log replaces it (a reset record).

/// Segment files of case `raft-reset`: the reset released segment 1.
const RESET_FILES: &[u64] = &[2, 3];

fn write_raft_reset(dir: &Path) {
    let mut log = RaftLog::<RaftTypes>::open(dir, config()).unwrap();
    log.save_vote(Vote::new(5, 2, true)).unwrap();
    let first: Vec<_> = (0..=15u64)
        .map(|i| (LogId::new(5, 2, i), payload(i, 0)))
        .collect();
    log.append(first.iter().map(|(id, p)| (*id, &p[..])))
        .unwrap();
    log.commit(LogId::new(5, 2, 10)).unwrap();
    log.install_snapshot(LogId::new(6, 1, 100), b"ahead".to_vec())
        .unwrap();
    for i in 101..=110u64 {
        log.append([(LogId::new(6, 1, i), &payload(i, 2)[..])])
            .unwrap();
    }
    log.sync().unwrap();
}

#[test]
fn raft_reset_case_opens_with_every_entry_and_state() {
    for v in VERSIONS {
        raft_reset_case(v);
    }
}

fn raft_reset_case(version: u32) {
    let tmp = copy_case(version, "raft-reset");
    let dir = tmp.path();
    let files: Vec<String> = RESET_FILES.iter().map(|&s| name(s)).collect();
    check_read_only(version, "raft-reset", dir, &files);
    let snapshot_id = LogId::new(6, 1, 100);

    let stat = raft_inspect::stat(dir).unwrap();
    assert_eq!((stat.stat.first_index, stat.stat.next_index), (101, 111));
    assert_eq!(stat.raft.user_data, MetaValue::Absent);
    assert!(stat.raft.other.is_empty(), "{:?}", stat.raft.other);

    let log = RaftLog::<RaftTypes>::open(dir, config()).unwrap();
    let st = log.state();
    assert_eq!(st.vote, Some(Vote::new(5, 2, true)));
    assert_eq!(st.last, Some(LogId::new(6, 1, 110)));
    assert_eq!(st.committed, Some(snapshot_id));
    assert_eq!(st.purged, Some(snapshot_id));
    assert_eq!(st.user_data, None);
    let snap_meta = st.snapshot.as_ref().unwrap();
    assert_eq!(
        (snap_meta.last_log_id, &snap_meta.data[..]),
        (snapshot_id, &b"ahead"[..])
    );

    let snap = log.reader().view();
    assert_eq!((snap.first_index(), snap.next_index()), (101, 111));
    assert_eq!(snap.get(100).unwrap(), None);
    assert_eq!(snap.get(15).unwrap(), None);
    for i in 101..=110 {
        let (id, p) = snap.get(i).unwrap().unwrap();
        assert_eq!(
            (id, p),
            (LogId::new(6, 1, i), &payload(i, 2)[..]),
            "entry {i}"
        );
    }
    assert_eq!(snap.read(..).count(), 10);
}

// ---------------------------------------------------------------------------------------------

/// A segment whose header names a format version newer than this build's is refused, and the
/// error names the version: what a build that does not read a format must do.
#[test]
fn another_version_is_refused_by_name() {
    let tmp = copy_case(V1, "store");
    let path = tmp.path().join(name(STORE_FILES[0]));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let crc = crc32c::crc32c(&bytes[SEGMENT_HEADER_CRC_RANGE]);
    bytes[36..40].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let err = Store::open(tmp.path(), config()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("format version {}", FORMAT_VERSION + 1)),
        "{msg}"
    );
    assert!(msg.contains(&name(STORE_FILES[0])), "{msg}");
}

/// Writes the cases for the current format version. Never overwrites: a version directory
/// that exists is kept as committed.
#[test]
#[ignore = "writes tests/data; run with RML_GOLDEN_WRITE=1 when adding a format version"]
fn write_golden_files() {
    if std::env::var_os("RML_GOLDEN_WRITE").is_none_or(|v| v != "1") {
        eprintln!("RML_GOLDEN_WRITE=1 is not set: nothing written");
        return;
    }
    assert_eq!(
        VERSIONS.last(),
        Some(&FORMAT_VERSION),
        "add the new version to VERSIONS"
    );
    type Writer = fn(&Path);
    let writers: [(&str, Writer); 3] = [
        ("store", write_store),
        ("raft", write_raft),
        ("raft-reset", write_raft_reset),
    ];
    let root = data_dir(FORMAT_VERSION, "x")
        .parent()
        .unwrap()
        .to_path_buf();
    assert!(
        !root.exists(),
        "{} exists: golden files are never rewritten",
        root.display()
    );
    for (case, write) in writers {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path());
        let out = data_dir(FORMAT_VERSION, case);
        std::fs::create_dir_all(&out).unwrap();
        for f in seg_names(tmp.path()) {
            std::fs::copy(tmp.path().join(&f), out.join(&f)).unwrap();
        }
        std::fs::write(out.with_extension("records"), listing(tmp.path())).unwrap();
    }
}
