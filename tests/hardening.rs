//! Regression tests of the engine's hardening (docs/reliability.md, "Hardening"): each one
//! reproduces an edge found on e59df71 and fails there.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use raft_mmap_log::format::{
    segment_file_name, RecordKind, SegmentHeader, MAX_INDEX, PREPARED_SUFFIX,
};
use raft_mmap_log::{inspect, Allocation, Config, Error, Store};
use zerocopy::{FromBytes, IntoBytes};

fn config(segment_size: u64) -> Config {
    Config {
        segment_size,
        prepare_ahead: false,
        ..Config::default()
    }
}

fn payload(i: u64) -> Vec<u8> {
    let len = 40 + (i * 13 % 200) as usize;
    (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
}

fn append(store: &mut Store, range: std::ops::Range<u64>) -> Result<(), Error> {
    let data: Vec<(u64, Vec<u8>)> = range.map(|i| (i, payload(i))).collect();
    store.append_batch(data.iter().map(|(i, p)| (*i, &p[..])))
}

fn seg_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

fn tmp_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(PREPARED_SUFFIX))
        .collect()
}

/// Flips the bits `mask` of the byte at `at` in the file at `path` (behind the log's back).
fn flip(path: &Path, at: u64, mask: u8) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= mask;
    f.write_all_at(&b, at).unwrap();
}

/// Offset of the last valid record of each segment file.
fn last_records(dir: &Path) -> Vec<(PathBuf, u64, RecordKind)> {
    let mut last: Vec<(PathBuf, u64, RecordKind)> = Vec::new();
    inspect::dump::<Error>(
        dir,
        inspect::DumpFilter::default(),
        |r| {
            match last.last_mut() {
                Some(l) if l.0 == r.path => *l = (r.path.to_path_buf(), r.offset, r.kind),
                _ => last.push((r.path.to_path_buf(), r.offset, r.kind)),
            }
            Ok(())
        },
        |_| Ok(()),
    )
    .unwrap();
    last
}

// ---- 1. no safe function reads a live log -------------------------------------------------

#[test]
fn tools_refuse_a_log_this_process_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), config(4096)).unwrap();
    append(&mut store, 0..50).unwrap();
    assert!(matches!(
        inspect::stat(dir.path()),
        Err(Error::Locked { .. })
    ));
    assert!(matches!(
        inspect::verify(dir.path(), &|_| {}),
        Err(Error::Locked { .. })
    ));
    let dumped = inspect::dump::<Error>(
        dir.path(),
        inspect::DumpFilter::default(),
        |_| Ok(()),
        |_| Ok(()),
    );
    assert!(matches!(dumped, Err(Error::Locked { .. })));
    // The writer is unharmed.
    append(&mut store, 50..60).unwrap();
    store.sync().unwrap();
}

// ---- 3. a smaller segment size than the metas need ----------------------------------------

#[test]
fn smaller_segment_size_than_the_metas_need_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), config(1 << 20)).unwrap();
    store.put_meta(9, &vec![7u8; 200 << 10]).unwrap();
    append(&mut store, 0..10).unwrap();
    store.sync().unwrap();
    drop(store);
    match Store::open(dir.path(), config(64 << 10)) {
        Err(Error::InvalidConfig(msg)) => {
            assert!(msg.contains("65536"), "{msg}");
            assert!(msg.contains("1048576"), "{msg}");
        }
        Err(e) => panic!("expected InvalidConfig, got {e}"),
        Ok(_) => panic!("a 64 KiB segment cannot hold a 200 KiB checkpoint"),
    }
    assert_eq!(seg_files(dir.path()).len(), 1, "a refused open made files");
    for _ in 0..2 {
        let store = Store::open(dir.path(), config(1 << 20)).unwrap();
        assert_eq!(store.next_index(), 10);
        assert_eq!(store.meta(9).map(|m| m.len()), Some(200 << 10));
    }
}

#[test]
fn entry_too_large_names_the_payload_and_the_segment_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), config(4096)).unwrap();
    let big = vec![1u8; 5000];
    match store.append(0, &big) {
        Err(e @ Error::EntryTooLarge { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("5000") && msg.contains("4096"), "{msg}");
        }
        other => panic!("expected EntryTooLarge, got {other:?}"),
    }
}

// ---- 4. all or nothing --------------------------------------------------------------------

/// Makes the rename that installs segment `seq` fail: a non-empty directory has its name.
fn block_segment_name(dir: &Path, seq: u64) -> PathBuf {
    let blocker = dir.join(segment_file_name(seq));
    std::fs::create_dir(&blocker).unwrap();
    std::fs::write(blocker.join("x"), b"x").unwrap();
    blocker
}

#[test]
fn a_batch_whose_rollover_fails_leaves_the_log_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), config(4096)).unwrap();
    append(&mut store, 0..5).unwrap();
    store.sync().unwrap();
    let files_before = seg_files(dir.path());
    let next_seq = files_before.len() as u64 + 1;
    let blocker = block_segment_name(dir.path(), next_seq);
    // 40 entries of ~150 bytes need at least one rollover of a 4 KiB segment.
    let err = append(&mut store, 5..45).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    let reader = store.reader();
    assert_eq!((store.next_index(), reader.next_index()), (5, 5));
    assert!(tmp_files(dir.path()).is_empty(), "a prepared file leaked");
    std::fs::remove_dir_all(&blocker).unwrap();
    assert_eq!(seg_files(dir.path()), files_before);
    // The same batch is accepted now, and everything reopens.
    append(&mut store, 5..45).unwrap();
    assert_eq!(store.reader().next_index(), 45);
    store.sync().unwrap();
    drop(store);
    let store = Store::open(dir.path(), config(4096)).unwrap();
    let snap = store.reader().view();
    assert_eq!((snap.first_index(), snap.next_index()), (0, 45));
    for i in 0..45 {
        assert_eq!(snap.get(i), Some(&payload(i)[..]), "entry {i}");
    }
}

#[test]
fn an_undone_batch_leaves_no_stale_records_for_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), config(4096)).unwrap();
    append(&mut store, 0..5).unwrap();
    store.sync().unwrap();
    let blocker = block_segment_name(dir.path(), seg_files(dir.path()).len() as u64 + 1);
    append(&mut store, 5..45).unwrap_err();
    std::fs::remove_dir_all(&blocker).unwrap();
    // A shorter record now lands where the failed batch wrote; nothing of that batch may come
    // back after a reopen.
    store.put_meta(1, b"m").unwrap();
    store.sync().unwrap();
    drop(store);
    let store = Store::open(dir.path(), config(4096)).unwrap();
    assert_eq!(store.next_index(), 5);
    assert_eq!(store.meta(1), Some(&b"m"[..]));
    assert!(store.recovery_report().cut.is_none());
}

// ---- 5. indexes that leave no room for a successor ----------------------------------------

#[test]
fn an_index_without_a_successor_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), config(4096)).unwrap();
    for i in [u64::MAX, u64::MAX - 1] {
        assert!(
            matches!(store.append(i, b"x"), Err(Error::IndexTooLarge { .. })),
            "index {i} accepted"
        );
    }
    store.append(MAX_INDEX, b"x").unwrap();
    store.sync().unwrap();
    drop(store);
    let store = Store::open(dir.path(), config(4096)).unwrap();
    assert_eq!(store.last_index(), Some(MAX_INDEX));
}

#[test]
fn a_crafted_record_past_the_largest_index_is_corruption_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), config(4096)).unwrap();
    store.append(u64::MAX - 2, b"last").unwrap();
    store.sync().unwrap();
    drop(store);
    // A CRC-valid entry record for the next index, right after the last record.
    let path = seg_files(dir.path()).pop().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let head = SegmentHeader::read_from_prefix(&bytes).unwrap().0;
    let (_, at, kind) = last_records(dir.path()).pop().unwrap();
    assert_eq!(kind, RecordKind::Entry);
    let at = at + 32; // a 4-byte body: 24 + 8
    let h =
        raft_mmap_log::record::header(head.salt.get(), RecordKind::Entry, u64::MAX - 1, &[b"evil"]);
    let mut rec = h.as_bytes().to_vec();
    rec.extend_from_slice(b"evil\0\0\0\0");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .write_all_at(&rec, at)
        .unwrap();
    match Store::open(dir.path(), config(4096)) {
        Err(Error::Corrupt {
            path: p, offset, ..
        }) => {
            assert_eq!(p, path);
            assert_eq!(offset, at);
        }
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(s) => panic!("opened with last index {:?}", s.last_index()),
    }
}

// ---- 6. a view is one version ---------------------------------------------------------------

#[test]
fn a_view_never_pairs_old_metas_with_newer_entries() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), config(1 << 20)).unwrap();
    store.put_meta(1, &0u64.to_le_bytes()).unwrap();
    store.append(0, &0u64.to_le_bytes()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let reader = store.reader();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut views = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let snap = reader.view();
                    let meta = u64::from_le_bytes(snap.meta(1).unwrap().try_into().unwrap());
                    let last = snap.last_index().unwrap();
                    let entry = u64::from_le_bytes(snap.get(last).unwrap().try_into().unwrap());
                    // Meta i is written before entry i: a consistent view has entry <= meta.
                    assert!(entry <= meta, "view with meta {meta} and entry {entry}");
                    views += 1;
                }
                views
            })
        })
        .collect();
    let started = std::time::Instant::now();
    let mut i = 1u64;
    while started.elapsed() < std::time::Duration::from_secs(2) {
        store.put_meta(1, &i.to_le_bytes()).unwrap();
        store.append(i, &i.to_le_bytes()).unwrap();
        i += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        let views = r.join().expect("a reader saw an inconsistent view");
        assert!(views > 0);
    }
}

// ---- 8. power cuts: files whose size or data never became durable ---------------------------

/// A log with several segments, closed cleanly; returns its directory and last index.
fn log_with_segments(seg: u64, allocation: Allocation) -> (tempfile::TempDir, u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(
        dir.path(),
        Config {
            allocation,
            ..config(seg)
        },
    )
    .unwrap();
    append(&mut store, 0..60).unwrap();
    store.sync().unwrap();
    let next = store.next_index();
    drop(store);
    (dir, next)
}

fn assert_opens_with(dir: &Path, next: u64, dropped: usize) {
    let rep = inspect::verify(dir, &|_| {}).unwrap();
    assert!(rep.is_sound(), "verify: {:?}", rep.findings);
    let store = Store::open(dir, config(4096)).unwrap();
    assert_eq!(store.recovery_report().dropped_files.len(), dropped);
    let snap = store.reader().view();
    assert_eq!(snap.next_index(), next);
    for i in snap.first_index()..next {
        assert_eq!(snap.get(i), Some(&payload(i)[..]), "entry {i}");
    }
}

#[test]
fn files_a_power_cut_leaves_after_the_last_segment_are_dropped() {
    type Make = fn(&Path);
    let cases: [(&str, Make, usize); 5] = [
        ("zero-length", |p| std::fs::write(p, b"").unwrap(), 1),
        (
            "shorter than a header",
            |p| std::fs::write(p, [0u8; 40]).unwrap(),
            1,
        ),
        (
            "short and blank",
            |p| std::fs::write(p, vec![0u8; 9216]).unwrap(),
            1,
        ),
        (
            "full size and blank",
            |p| std::fs::write(p, vec![0u8; 4096]).unwrap(),
            1,
        ),
        (
            "zero-length, then blank",
            |p| {
                std::fs::write(p, b"").unwrap();
                let next = p.with_file_name(segment_file_name(
                    p.file_stem()
                        .unwrap()
                        .to_str()
                        .unwrap()
                        .parse::<u64>()
                        .unwrap()
                        + 1,
                ));
                std::fs::write(next, vec![0u8; 4096]).unwrap();
            },
            2,
        ),
    ];
    for (name, make, dropped) in cases {
        let (dir, next) = log_with_segments(4096, Allocation::Auto);
        let n = seg_files(dir.path()).len() as u64;
        make(&dir.path().join(segment_file_name(n + 1)));
        eprintln!("case: {name}");
        assert_opens_with(dir.path(), next, dropped);
    }
}

#[test]
fn a_short_newest_segment_keeps_its_valid_prefix() {
    // Both allocation paths extend the file again; zero fill must not zero the kept prefix.
    for allocation in [Allocation::Auto, Allocation::ZeroFill] {
        short_newest_segment(allocation);
    }
}

fn short_newest_segment(allocation: Allocation) {
    let (dir, next) = log_with_segments(1 << 20, allocation);
    let config = Config {
        allocation,
        ..config(1 << 20)
    };
    let path = seg_files(dir.path()).pop().unwrap();
    // The records take well under 64 KiB; the rest of the file never became durable.
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(64 << 10).unwrap();
    drop(f);
    let rep = inspect::verify(dir.path(), &|_| {}).unwrap();
    assert!(rep.is_sound(), "verify: {:?}", rep.findings);
    let mut store = Store::open(dir.path(), config.clone()).unwrap();
    assert_eq!(store.recovery_report().short_segment.as_ref(), Some(&path));
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        1 << 20,
        "not extended"
    );
    assert_eq!(store.next_index(), next);
    append(&mut store, next..next + 10).unwrap();
    store.sync().unwrap();
    drop(store);
    let store = Store::open(dir.path(), config).unwrap();
    assert_eq!(store.next_index(), next + 10);
}

#[test]
fn a_new_log_whose_creation_was_cut_opens() {
    // The header and checkpoint reached the disk, the file's size did not.
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path(), config(1 << 20)).unwrap());
    let path = seg_files(dir.path()).pop().unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(9216).unwrap();
    drop(f);
    for _ in 0..2 {
        let mut store = Store::open(dir.path(), config(1 << 20)).unwrap();
        let next = store.next_index();
        append(&mut store, next..next + 3).unwrap();
        store.sync().unwrap();
    }
    let store = Store::open(dir.path(), config(1 << 20)).unwrap();
    assert_eq!((store.first_index(), store.next_index()), (0, 6));
}

#[test]
fn the_zero_fill_allocation_path_works_and_reopens() {
    let (dir, next) = log_with_segments(4096, Allocation::ZeroFill);
    assert!(seg_files(dir.path()).len() > 2);
    for p in seg_files(dir.path()) {
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 4096);
    }
    assert_opens_with(dir.path(), next, 0);
}

// ---- 10. smaller ones -----------------------------------------------------------------------

#[test]
fn a_purged_file_that_cannot_be_removed_does_not_fail_the_flush() {
    let dir = tempfile::tempdir().unwrap();
    // Without recycling: purged files are removed, not renamed into the pool.
    let no_pool = || Config {
        segment_pool: 0,
        ..config(4096)
    };
    let mut store = Store::open(dir.path(), no_pool()).unwrap();
    append(&mut store, 0..60).unwrap();
    store.sync().unwrap();
    let oldest = seg_files(dir.path()).remove(0);
    // Removing the file will fail: a non-empty directory now has its name.
    let aside = dir.path().join("aside");
    std::fs::rename(&oldest, &aside).unwrap();
    std::fs::create_dir(&oldest).unwrap();
    std::fs::write(oldest.join("x"), b"x").unwrap();
    store.purge_to(40).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    store
        .flush(move |r| {
            let _ = tx.send(r);
        })
        .unwrap();
    rx.recv()
        .unwrap()
        .expect("the purge is durable; the callback must succeed");
    let failures = store.removal_failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, oldest);
    // Still writable, and the removal is retried at the next flush.
    std::fs::remove_dir_all(&oldest).unwrap();
    append(&mut store, 60..70).unwrap();
    store.sync().unwrap();
    assert!(store.removal_failures().is_empty());
    drop(store);
    std::fs::remove_file(aside).unwrap();
    let store = Store::open(dir.path(), no_pool()).unwrap();
    assert_eq!((store.first_index(), store.next_index()), (40, 70));
}

#[test]
fn a_checked_read_refuses_a_flipped_bit() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), config(1 << 20)).unwrap();
    append(&mut store, 0..10).unwrap();
    store.sync().unwrap();
    let snap = store.reader().view();
    assert_eq!(snap.get_checked(3).unwrap(), Some(&payload(3)[..]));
    assert_eq!(snap.range_checked(..).count(), 10);
    // Flip a payload bit of entry 3 behind the store's back (the map shares the page cache).
    let want = snap.get(3).unwrap().to_vec();
    drop(snap);
    let path = seg_files(dir.path()).pop().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let body_at = bytes
        .windows(want.len())
        .position(|w| w == &want[..])
        .unwrap() as u64;
    let at = body_at - 24; // the record header
    flip(&path, at + 30, 0x10);
    let snap = store.reader().view();
    assert_ne!(
        snap.get(3),
        Some(&payload(3)[..]),
        "the plain read returns the flipped bytes"
    );
    match snap.get_checked(3) {
        Err(Error::Corrupt {
            path: p,
            offset,
            reason,
        }) => {
            assert_eq!((p, offset), (path, at), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(snap.range_checked(..).any(|r| r.is_err()));
    assert!(snap.get_checked(4).is_ok());
}

#[test]
fn a_damaged_durable_purge_is_named_by_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), config(4096)).unwrap();
    append(&mut store, 0..60).unwrap();
    store.sync().unwrap();
    assert!(seg_files(dir.path()).len() > 2);
    // The purge's record is the newest segment's last record; once it is durable the older
    // segments are deleted.
    store.purge_to(60).unwrap();
    store.sync().unwrap();
    store.sync().unwrap();
    drop(store);
    let (path, at, kind) = last_records(dir.path()).pop().unwrap();
    assert_eq!(kind, RecordKind::Purge);
    flip(&path, at + 20, 1);
    match Store::open(dir.path(), config(4096)) {
        Err(Error::Corrupt {
            path: p,
            offset,
            reason,
        }) => {
            assert_eq!((p, offset), (path, at), "{reason}");
        }
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(s) => panic!("opened with {}..{}", s.first_index(), s.next_index()),
    }
}
