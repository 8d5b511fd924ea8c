//! Zero-copy receive (`Store::receive_frames`, `RaftLog::receive_frames`): a batch read
//! straight into the map is stored exactly as `append_frames` stores it, across rollovers,
//! in both write modes and across reopens; a batch whose reading fails, panics or whose
//! frames fail a check leaves the log as it was, its room zeroed; a process that dies with a
//! batch half received recovers to the batches before it.

use std::io::Read;
use std::path::Path;

use raft_mmap_log::raft::{LogId, RaftLog, RaftTypes};
use raft_mmap_log::{Config, Error, Store, WriteMode};

fn config(mode: WriteMode) -> Config {
    Config {
        segment_size: 64 * 1024,
        write_mode: mode,
        ..Config::default()
    }
}

fn payload(i: u64) -> Vec<u8> {
    (0..(i * 37 % 700) as usize)
        .map(|k| (i as usize * 7 + k) as u8)
        .collect()
}

/// A leader with entries `0..n`; returns it.
fn leader(dir: &Path, n: u64) -> Store {
    let mut s = Store::open(dir, config(WriteMode::Map)).unwrap();
    let data: Vec<(u64, Vec<u8>)> = (0..n).map(|i| (i, payload(i))).collect();
    s.append_batch(data.iter().map(|(i, p)| (*i, &p[..])))
        .unwrap();
    s
}

fn frames(s: &Store, range: std::ops::Range<u64>) -> Vec<u8> {
    s.reader().view().frames(range).unwrap().to_vec()
}

fn assert_entries(s: &Store, n: u64) {
    let view = s.reader().view();
    assert_eq!(view.next_index(), n);
    for i in 0..n {
        let got = view.get_checked(i).unwrap();
        assert_eq!(got, Some(&payload(i)[..]), "entry {i}");
    }
}

/// Receives `bytes` as a socket would deliver them.
fn receive(s: &mut Store, bytes: &[u8]) -> raft_mmap_log::Result<()> {
    let mut wire = bytes;
    s.receive_frames(bytes.len(), |buf| wire.read_exact(buf))
}

#[test]
fn received_batches_are_stored_as_appended_frames_in_both_write_modes() {
    for mode in [WriteMode::Map, WriteMode::Pwrite] {
        let tmp = tempfile::tempdir().unwrap();
        let lead = leader(&tmp.path().join("leader"), 3000);
        let dir = tmp.path().join("follower");
        let mut f = Store::open(&dir, config(mode)).unwrap();
        let mut at = 0;
        // Batches of 1 to 97 entries: many rollovers of the 64 KiB segments, some batches
        // landing in a new segment because they do not fit the rest of the active one.
        while at < 3000 {
            let end = (at + 1 + at % 97).min(3000);
            receive(&mut f, &frames(&lead, at..end)).unwrap();
            at = end;
        }
        assert_entries(&f, 3000);
        f.sync().unwrap();
        drop(f);
        let f = Store::open(&dir, config(mode)).unwrap();
        assert_entries(&f, 3000);
        assert!(
            f.reader().view().segment_bytes() > 5 * 64 * 1024,
            "{mode:?}: rollovers"
        );
    }
}

#[test]
fn a_failed_read_a_bad_frame_or_a_panic_leaves_the_log_as_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let lead = leader(&tmp.path().join("leader"), 400);
    let dir = tmp.path().join("follower");
    let mut f = Store::open(&dir, config(WriteMode::Map)).unwrap();
    receive(&mut f, &frames(&lead, 0..100)).unwrap();
    let batch = frames(&lead, 100..120);
    let (path, pos) = f.position();
    assert!(
        pos + batch.len() as u64 <= 64 * 1024,
        "the batch lands in this segment"
    );

    // The connection drops half-way.
    let half = batch.len() / 2;
    let got = f.receive_frames(batch.len(), |buf| {
        buf[..half].copy_from_slice(&batch[..half]);
        Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof))
    });
    assert!(matches!(got, Err(Error::Receive { .. })), "{got:?}");
    assert_entries(&f, 100);

    // A flipped bit in a body: refused, nothing of the batch kept.
    let mut bad = batch.clone();
    bad[batch.len() - 40] ^= 1;
    let got = receive(&mut f, &bad);
    assert!(matches!(got, Err(Error::BadFrame { .. })), "{got:?}");
    assert_entries(&f, 100);

    // A batch that does not follow the log.
    let got = receive(&mut f, &frames(&lead, 110..115));
    assert!(matches!(got, Err(Error::NonConsecutive { .. })), "{got:?}");

    // The reader panics: the panic goes on to the caller, the log is as before.
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = f.receive_frames(batch.len(), |buf| {
            buf.copy_from_slice(&batch);
            panic!("the reader failed")
        });
    }));
    assert!(panicked.is_err());
    assert_entries(&f, 100);

    // The room those batches used is zeros again, and the next batch takes it.
    f.sync().unwrap();
    assert_eq!(f.position(), (path.clone(), pos));
    let file = std::fs::read(&path).unwrap();
    assert!(
        file[pos as usize..pos as usize + batch.len()]
            .iter()
            .all(|&b| b == 0),
        "an abandoned batch left bytes behind the log's end"
    );
    receive(&mut f, &batch).unwrap();
    assert_eq!(f.position().0, path, "in the same segment");
    receive(&mut f, &frames(&lead, 120..400)).unwrap();
    assert_entries(&f, 400);
    drop(f);
    let f = Store::open(&dir, config(WriteMode::Map)).unwrap();
    assert_entries(&f, 400);
}

#[test]
fn a_failed_batch_that_rolled_over_leaves_no_new_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let lead = leader(&tmp.path().join("leader"), 400);
    let dir = tmp.path().join("follower");
    let mut f = Store::open(&dir, config(WriteMode::Map)).unwrap();
    // Fill the first segment until a 100-entry batch no longer fits its rest.
    let mut at = 0;
    let big = frames(&lead, 0..100).len() as u64;
    loop {
        let (_, pos) = f.position();
        if pos + big > 64 * 1024 {
            break;
        }
        receive(&mut f, &frames(&lead, at..at + 1)).unwrap();
        at += 1;
    }
    let segs = |d: &Path| {
        std::fs::read_dir(d)
            .unwrap()
            .filter(|e| {
                let n = e.as_ref().unwrap().file_name();
                n.to_string_lossy().ends_with(".seg")
            })
            .count()
    };
    let before = segs(&dir);
    let batch = frames(&lead, at..at + 100);
    let got = f.receive_frames(batch.len(), |_| {
        Err(std::io::ErrorKind::ConnectionReset.into())
    });
    assert!(matches!(got, Err(Error::Receive { .. })), "{got:?}");
    assert_eq!(segs(&dir), before, "the rollover was undone");
    assert_entries(&f, at);
    receive(&mut f, &batch).unwrap();
    assert_entries(&f, at + 100);
}

#[test]
fn a_process_that_dies_with_a_batch_half_received_recovers_the_batches_before() {
    let tmp = tempfile::tempdir().unwrap();
    let lead = leader(&tmp.path().join("leader"), 300);
    let dir = tmp.path().join("follower");
    let copy = tmp.path().join("copy");
    let mut f = Store::open(&dir, config(WriteMode::Map)).unwrap();
    receive(&mut f, &frames(&lead, 0..150)).unwrap();
    f.sync().unwrap();
    let batch = frames(&lead, 150..300);
    // While the batch is in the map, unchecked: copy the directory as the page cache holds
    // it, which is what a process killed at that moment leaves.
    let _ = f.receive_frames(batch.len(), |buf| {
        buf.copy_from_slice(&batch);
        std::fs::create_dir_all(&copy)?;
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            std::fs::copy(e.path(), copy.join(e.file_name()))?;
        }
        Err(std::io::ErrorKind::Interrupted.into())
    });
    drop(f);
    let recovered = Store::open(&copy, config(WriteMode::Map)).unwrap();
    assert_entries(&recovered, 150);
}

#[test]
fn a_raft_log_receives_new_entries_in_place_and_copies_repeats_and_conflicts() {
    let tmp = tempfile::tempdir().unwrap();
    let open = |name: &str| {
        RaftLog::<RaftTypes>::open(tmp.path().join(name), config(WriteMode::Map)).unwrap()
    };
    let mut lead = open("leader");
    let ids = |term: u64, r: std::ops::Range<u64>| -> Vec<(LogId, Vec<u8>)> {
        r.map(|i| (LogId::new(term, 1, i), payload(i))).collect()
    };
    let e = ids(1, 0..200);
    lead.append(e.iter().map(|(id, p)| (*id, &p[..]))).unwrap();
    let batch = |log: &RaftLog<RaftTypes>, r: std::ops::Range<u64>| {
        log.reader().view().frames(r).unwrap().to_vec()
    };
    let recv = |log: &mut RaftLog<RaftTypes>, bytes: &[u8]| {
        let mut wire = bytes;
        log.receive_frames(bytes.len(), |buf| wire.read_exact(buf))
    };
    let mut f = open("follower");
    recv(&mut f, &batch(&lead, 0..100)).unwrap();
    // A batch that repeats 50 entries the follower holds, then 50 new ones (the copy path).
    recv(&mut f, &batch(&lead, 50..150)).unwrap();
    // One that only repeats: nothing changes.
    recv(&mut f, &batch(&lead, 0..150)).unwrap();
    assert_eq!(f.state().next_index(), 150);
    // A new leader with another term from 120 on: the follower truncates and takes it.
    let mut lead2 = open("leader2");
    let mut e2 = ids(1, 0..120);
    e2.extend(ids(2, 120..180));
    lead2
        .append(e2.iter().map(|(id, p)| (*id, &p[..])))
        .unwrap();
    recv(&mut f, &batch(&lead2, 110..180)).unwrap();
    let view = f.reader().view();
    assert_eq!(view.next_index(), 180);
    for (id, p) in &e2 {
        assert_eq!(view.log_id(id.index).unwrap(), Some(*id));
        assert_eq!(view.get(id.index).unwrap().map(|e| e.1), Some(&p[..]));
    }
    drop(view);
    // A bad batch changes nothing.
    let mut bad = batch(&lead2, 180..180);
    bad.extend_from_slice(&[1, 2, 3]);
    assert!(recv(&mut f, &bad).is_err());
    assert_eq!(f.state().next_index(), 180);
    f.sync().unwrap();
    drop(f);
    let f = open("follower");
    assert_eq!(f.state().next_index(), 180);
}
