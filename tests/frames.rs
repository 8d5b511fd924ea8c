//! Replication frames on the engine: `View::frames` on a leader log, `Store::append_frames` on
//! a follower (docs/replication.md).
//!
//! * round trips: across segment boundaries, with meta and truncate records between entries,
//!   after a purge, into a follower with another segment size, from a version 1 log;
//! * the spans: one per contiguous run of entry records, `(file, offset, len)` equal to the
//!   bytes, `write_all_to` through partial writes;
//! * every damaged byte of a batch is refused, naming the frame, with nothing written (the
//!   follower's files are compared byte for byte);
//! * `frames_checked` refuses a record damaged in the leader's file.

mod common;

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::{derive, patch, seg_files, strict_config};
use raft_mmap_log::format::RECORD_HEADER_SIZE;
use raft_mmap_log::{Config, Error, Store};

fn config(segment_size: u64) -> Config {
    strict_config(segment_size, false)
}

fn entries(store: &Store) -> Vec<(u64, Vec<u8>)> {
    store
        .reader()
        .view()
        .range(..)
        .map(|e| (e.index, e.payload.to_vec()))
        .collect()
}

/// Every byte of every segment file of `dir`, by name.
fn dir_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    seg_files(dir)
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// Ships `leader[from..]` to `follower` in batches of at most `batch` entries.
fn ship(leader: &Store, follower: &mut Store, batch: u64) {
    let view = leader.reader().view();
    let mut at = follower.next_index().max(view.first_index());
    while at < view.next_index() {
        let frames = view.frames(at..at + batch).unwrap();
        assert_eq!(frames.indexes().start, at);
        let wire = frames.to_vec();
        assert_eq!(wire.len(), frames.len());
        follower.append_frames(&wire).unwrap();
        at = frames.indexes().end;
    }
}

/// A leader with entries in several segments, meta records between some of them, a truncate
/// and a purge.
fn busy_leader(dir: &Path) -> Store {
    let mut s = Store::open(dir, config(8192)).unwrap();
    for i in 10..120u64 {
        s.append(i, &derive(i, 0, (i as usize * 37) % 300)).unwrap();
        if i % 9 == 0 {
            s.put_meta(1, &i.to_le_bytes()).unwrap();
        }
    }
    s.truncate_from(100).unwrap();
    for i in 100..160u64 {
        s.append(i, &derive(i, 1, (i as usize * 53) % 200)).unwrap();
    }
    s.purge_to(30).unwrap();
    s
}

#[test]
fn frames_round_trip_across_segments_metas_truncate_and_purge() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = busy_leader(a.path());
    let view = leader.reader().view();
    assert!(view.segment_count() > 3);
    let frames = view.frames(..).unwrap();
    assert_eq!(frames.indexes(), 30..160);
    // Spans break at segment boundaries, meta records and the truncate, nowhere else.
    let mut next = 30;
    for span in frames.spans() {
        assert_eq!(span.indexes().start, next);
        next = span.indexes().end;
        let file = span.file().expect("a version 2 segment: borrowed");
        assert_eq!(file.len as usize, span.bytes().len());
        let mut on_disk = vec![0u8; span.bytes().len()];
        std::fs::File::open(file.path)
            .unwrap()
            .read_exact_at(&mut on_disk, file.offset)
            .unwrap();
        assert_eq!(on_disk, span.bytes(), "(file, offset, len) names the bytes");
    }
    assert_eq!(next, 160);
    let metas_between = (30..100u64).filter(|i| i % 9 == 0).count();
    assert!(
        frames.spans().len() <= metas_between + view.segment_count() + 2,
        "{} spans",
        frames.spans().len()
    );
    // One batch into a follower that starts at 30, and many small batches into another one
    // with a smaller segment size (frames cross its segment boundaries on other entries).
    for (segment_size, batch) in [(8192, 1000), (4096, 7)] {
        let dir = tempfile::tempdir().unwrap();
        let mut follower = Store::open(dir.path(), config(segment_size)).unwrap();
        ship(&leader, &mut follower, batch);
        assert_eq!(entries(&follower), entries(&leader));
        follower.sync().unwrap();
        drop(follower);
        let follower = Store::open(dir.path(), config(segment_size)).unwrap();
        assert_eq!(entries(&follower), entries(&leader));
        for i in 30..160 {
            assert!(follower.reader().view().get_checked(i).unwrap().is_some());
        }
    }
    drop(view);
    drop(b);
}

#[test]
fn frames_clamp_to_the_log_and_an_empty_batch_writes_nothing() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = busy_leader(a.path());
    let view = leader.reader().view();
    assert_eq!(view.frames(0..10).unwrap().indexes(), 30..30);
    assert!(view.frames(200..).unwrap().is_empty());
    assert_eq!(view.frames(150..=500).unwrap().indexes(), 150..160);
    let mut follower = Store::open(b.path(), config(4096)).unwrap();
    let before = dir_bytes(b.path());
    follower.append_frames(&[]).unwrap();
    assert_eq!(dir_bytes(b.path()), before);
    assert_eq!(follower.last_index(), None);
}

/// A follower that already holds entries: the batch must follow them.
#[test]
fn the_engine_refuses_a_batch_that_does_not_follow() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = busy_leader(a.path());
    let mut follower = Store::open(b.path(), config(4096)).unwrap();
    let view = leader.reader().view();
    follower
        .append_frames(&view.frames(30..40).unwrap().to_vec())
        .unwrap();
    for range in [35..45, 41..45, 30..31] {
        let before = dir_bytes(b.path());
        let err = follower
            .append_frames(&view.frames(range.clone()).unwrap().to_vec())
            .unwrap_err();
        assert!(
            matches!(err, Error::NonConsecutive { expected: 40, .. }),
            "{err}"
        );
        assert_eq!(dir_bytes(b.path()), before, "{range:?}: nothing written");
    }
    assert_eq!(follower.next_index(), 40);
}

#[test]
fn every_damaged_byte_is_refused_with_nothing_written() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut leader = Store::open(a.path(), config(4096)).unwrap();
    let payloads: Vec<Vec<u8>> = (0..4u64)
        .map(|i| derive(i, 0, 5 + i as usize * 6).to_vec())
        .collect();
    leader
        .append_batch(payloads.iter().enumerate().map(|(i, p)| (i as u64, &p[..])))
        .unwrap();
    let wire = leader.reader().view().frames(..).unwrap().to_vec();
    let starts: Vec<usize> = {
        let mut v = vec![0];
        for p in &payloads[..3] {
            v.push(v.last().unwrap() + RECORD_HEADER_SIZE + p.len().div_ceil(8) * 8);
        }
        v
    };
    let mut follower = Store::open(b.path(), config(4096)).unwrap();
    let before = dir_bytes(b.path());
    for i in 0..wire.len() {
        let frame = starts.iter().rposition(|&s| s <= i).unwrap();
        if i - starts[frame] < 4 {
            continue; // the leader's salted CRC: not part of the frame's checks (rewritten)
        }
        for bit in [0x01u8, 0x80] {
            let mut w = wire.clone();
            w[i] ^= bit;
            match follower.append_frames(&w) {
                Err(Error::BadFrame { offset, index, .. }) => {
                    assert_eq!(offset as usize, starts[frame], "byte {i}");
                    if frame > 0 {
                        assert_eq!(index, frame as u64, "byte {i}");
                    }
                }
                other => panic!("byte {i} bit {bit:#x}: {other:?}"),
            }
            assert_eq!(follower.next_index(), 0);
            assert_eq!(follower.last_index(), None);
        }
    }
    // A batch cut anywhere but at a frame boundary is refused too.
    for cut in 1..wire.len() {
        if starts.contains(&cut) {
            continue;
        }
        let err = follower.append_frames(&wire[..cut]).unwrap_err();
        assert!(matches!(err, Error::BadFrame { .. }), "cut at {cut}: {err}");
    }
    assert_eq!(dir_bytes(b.path()), before, "nothing was written");
    // The undamaged batch goes in; the leader's CRC bytes may be anything.
    let mut w = wire.clone();
    w[0] ^= 0xff;
    follower.append_frames(&w).unwrap();
    assert_eq!(entries(&follower), entries(&leader));
}

#[test]
fn a_frame_too_large_for_the_follower_is_refused_before_writing() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut leader = Store::open(a.path(), config(64 * 1024)).unwrap();
    leader.append(1, b"small").unwrap();
    leader.append(2, &vec![7u8; 8000]).unwrap();
    let wire = leader.reader().view().frames(..).unwrap().to_vec();
    let mut follower = Store::open(b.path(), config(4096)).unwrap();
    let before = dir_bytes(b.path());
    let err = follower.append_frames(&wire).unwrap_err();
    assert!(
        matches!(err, Error::EntryTooLarge { index: 2, .. }),
        "{err}"
    );
    assert_eq!(dir_bytes(b.path()), before);
    assert_eq!(follower.last_index(), None);
}

#[test]
fn frames_checked_refuses_a_record_damaged_in_the_leaders_file() {
    let a = tempfile::tempdir().unwrap();
    let mut leader = Store::open(a.path(), config(4096)).unwrap();
    for i in 0..5u64 {
        leader.append(i, &derive(i, 0, 40)).unwrap();
    }
    leader.sync().unwrap();
    let view = leader.reader().view();
    let span_file = view.frames(3..4).unwrap().spans()[0].file().unwrap();
    let (path, at) = (span_file.path.to_path_buf(), span_file.offset);
    assert!(view.frames_checked(..).is_ok());
    // A flipped payload byte of entry 3, seen through the shared map.
    let mut b = [0u8; 1];
    std::fs::File::open(&path)
        .unwrap()
        .read_exact_at(&mut b, at + 30)
        .unwrap();
    patch(&path, at + 30, &[b[0] ^ 4]);
    match view.frames_checked(..) {
        Err(Error::Corrupt {
            path: p, offset, ..
        }) => assert_eq!((p, offset), (path, at)),
        other => panic!("{other:?}"),
    }
    assert!(view.frames_checked(..3).is_ok());
    // The unchecked frames go out; the follower's check catches the damage.
    let wire = view.frames(..).unwrap().to_vec();
    let b = tempfile::tempdir().unwrap();
    let mut follower = Store::open(b.path(), config(4096)).unwrap();
    let err = follower.append_frames(&wire).unwrap_err();
    assert!(matches!(err, Error::BadFrame { index: 3, .. }), "{err}");
}

/// A writer that takes at most 5 bytes per call.
struct Trickle(Vec<u8>);

impl Write for Trickle {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(5);
        self.0.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn write_all_to_survives_partial_writes() {
    let a = tempfile::tempdir().unwrap();
    let leader = busy_leader(a.path());
    let view = leader.reader().view();
    let frames = view.frames(..).unwrap();
    let mut t = Trickle(Vec::new());
    frames.write_all_to(&mut t).unwrap();
    assert_eq!(t.0, frames.to_vec());
    assert_eq!(frames.io_slices().len(), frames.spans().len());
}

/// A copy of the version 1 golden store log (`tests/data/v1/store`) in a new temporary
/// directory, and the config it was written with.
fn v1_store_copy() -> (tempfile::TempDir, Config) {
    let tmp = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/v1/store");
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
    }
    let cfg = Config {
        segment_size: 4096,
        prepare_ahead: false,
        ..Config::default()
    };
    (tmp, cfg)
}

/// Entries of a version 1 log (no body checksums) are framed as copies with the checksum
/// filled in; the follower takes them like any other.
#[test]
fn frames_from_a_version_1_log() {
    let (tmp, cfg) = v1_store_copy();
    let mut leader = Store::open(tmp.path(), cfg.clone()).unwrap();
    let first_new = leader.next_index();
    for i in first_new..first_new + 30 {
        leader.append(i, &derive(i, 0, 100)).unwrap();
    }
    let view = leader.reader().view();
    let frames = view.frames_checked(..).unwrap();
    assert!(
        frames.spans().iter().any(|s| s.file().is_none()),
        "v1 spans are copies"
    );
    assert!(
        frames.spans().iter().any(|s| s.file().is_some()),
        "v2 spans are borrowed"
    );
    let b = tempfile::tempdir().unwrap();
    let mut follower = Store::open(b.path(), cfg).unwrap();
    follower.append_frames(&frames.to_vec()).unwrap();
    assert_eq!(entries(&follower), entries(&leader));
}

/// A version 1 log as the follower: frames go into its version 1 active segment (with a
/// version 1 CRC and no body checksum) until it is full, then into segments of the current
/// version (which have body checksums); the
/// mixed log reopens with every entry checked.
#[test]
fn frames_into_a_version_1_log() {
    let (tmp, cfg) = v1_store_copy();
    let mut follower = Store::open(tmp.path(), cfg.clone()).unwrap();
    let next = follower.next_index();
    let a = tempfile::tempdir().unwrap();
    let mut leader = Store::open(a.path(), config(4096)).unwrap();
    for i in next..next + 40 {
        leader.append(i, &derive(i, 0, 100)).unwrap();
    }
    ship(&leader, &mut follower, 3);
    follower.sync().unwrap();
    let versions = |dir: &Path| -> Vec<u32> {
        seg_files(dir)
            .iter()
            .map(|p| u32::from_le_bytes(std::fs::read(p).unwrap()[8..12].try_into().unwrap()))
            .collect()
    };
    drop(follower);
    let v = versions(tmp.path());
    let current = raft_mmap_log::format::FORMAT_VERSION;
    assert!(v.contains(&1) && v.contains(&current), "{v:?}");
    let follower = Store::open(tmp.path(), cfg).unwrap();
    let view = follower.reader().view();
    for i in next..next + 40 {
        assert_eq!(
            view.get_checked(i).unwrap(),
            Some(&derive(i, 0, 100)[..]),
            "entry {i}"
        );
    }
}
