//! Integration tests of the segment store: behaviour seen through the public API, each ending
//! in a reopen where durability matters.

use std::path::Path;

use raft_mmap_log::{Config, Error, RecoveryMode, Store};

fn small() -> Config {
    Config {
        segment_size: 4096,
        ..Config::default()
    }
}

fn payload(i: u64) -> Vec<u8> {
    let len = (i * 7 % 90) as usize;
    (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
}

fn append_range(store: &mut Store, range: std::ops::Range<u64>) {
    let data: Vec<(u64, Vec<u8>)> = range.map(|i| (i, payload(i))).collect();
    store
        .append_batch(data.iter().map(|(i, p)| (*i, &p[..])))
        .unwrap();
}

fn assert_entries(store: &Store, range: std::ops::Range<u64>) {
    let snap = store.reader().view();
    assert_eq!(snap.first_index(), range.start, "first index");
    assert_eq!(snap.next_index(), range.end, "next index");
    for i in range.clone() {
        assert_eq!(snap.get(i), Some(&payload(i)[..]), "entry {i}");
    }
    let got: Vec<u64> = snap.range(..).map(|e| e.index).collect();
    assert_eq!(got, range.clone().collect::<Vec<_>>());
    assert!(snap.get(range.end).is_none());
    assert!(range.start == 0 || snap.get(range.start - 1).is_none());
}

fn segment_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    v.sort();
    v
}

#[test]
fn empty_directory_opens_empty_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small()).unwrap();
    assert_eq!(store.last_index(), None);
    assert!(store.reader().view().is_empty());
    drop(store);
    let store = Store::open(dir.path(), small()).unwrap();
    assert_eq!(store.last_index(), None);
    assert_eq!(segment_files(dir.path()).len(), 1);
}

#[test]
fn append_read_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), Config::default()).unwrap();
    append_range(&mut store, 1..1001);
    assert_entries(&store, 1..1001);
    store.sync().unwrap();
    drop(store);
    let store = Store::open(dir.path(), Config::default()).unwrap();
    assert_entries(&store, 1..1001);
}

#[test]
fn rollover_at_small_segments_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), small()).unwrap();
    for i in 0..2000 {
        store.append(i, &payload(i)).unwrap();
    }
    store.sync().unwrap();
    assert!(segment_files(dir.path()).len() > 20);
    assert_entries(&store, 0..2000);
    drop(store);
    let mut store = Store::open(dir.path(), small()).unwrap();
    assert_entries(&store, 0..2000);
    append_range(&mut store, 2000..2100);
    drop(store);
    let store = Store::open(dir.path(), small()).unwrap();
    // Not synced explicitly, but a clean drop leaves the bytes in the page cache.
    assert_entries(&store, 0..2100);
}

#[test]
fn truncate_reappend_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), small()).unwrap();
    append_range(&mut store, 0..300);
    let before = store.reader().view();
    store.truncate_after(149).unwrap();
    // The old snapshot still sees the old log, the new one the truncated log.
    assert_eq!(before.next_index(), 300);
    assert_eq!(before.get(200), Some(&payload(200)[..]));
    assert_entries(&store, 0..150);
    let other: Vec<u8> = b"replacement".to_vec();
    store.append(150, &other).unwrap();
    assert_eq!(store.reader().view().get(150), Some(&other[..]));
    assert_eq!(before.get(150), Some(&payload(150)[..]));
    store.sync().unwrap();
    drop(before);
    drop(store);
    let store = Store::open(dir.path(), small()).unwrap();
    let snap = store.reader().view();
    assert_eq!(snap.next_index(), 151);
    assert_eq!(snap.get(150), Some(&other[..]));
    assert_eq!(snap.get(149), Some(&payload(149)[..]));
}

#[test]
fn truncate_below_purged_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), small()).unwrap();
    append_range(&mut store, 0..100);
    store.purge_to(50).unwrap();
    let err = store.truncate_from(10).unwrap_err();
    assert!(
        matches!(
            err,
            Error::BelowFirstIndex {
                from: 10,
                first: 50
            }
        ),
        "{err}"
    );
    store.sync().unwrap();
    drop(store);
    let store = Store::open(dir.path(), small()).unwrap();
    assert_entries(&store, 50..100);
}

#[test]
fn purge_deletes_files_after_flush_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), small()).unwrap();
    append_range(&mut store, 0..2000);
    store.sync().unwrap();
    let before = segment_files(dir.path()).len();
    store.purge_to(1500).unwrap();
    // Never before the purge record is durable.
    assert_eq!(segment_files(dir.path()).len(), before);
    assert_entries(&store, 1500..2000);
    store.sync().unwrap();
    let after = segment_files(dir.path()).len();
    assert!(after < before / 2, "{before} -> {after}");
    drop(store);
    let store = Store::open(dir.path(), small()).unwrap();
    assert_entries(&store, 1500..2000);
    assert_eq!(segment_files(dir.path()).len(), after);
}

#[test]
fn purge_everything_keeps_position() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), small()).unwrap();
    append_range(&mut store, 0..500);
    store.purge_to(800).unwrap();
    store.sync().unwrap();
    assert_eq!((store.first_index(), store.next_index()), (800, 800));
    drop(store);
    let mut store = Store::open(dir.path(), small()).unwrap();
    assert_eq!((store.first_index(), store.next_index()), (800, 800));
    assert!(store.append(799, b"x").is_err());
    append_range(&mut store, 800..810);
    drop(store);
    let store = Store::open(dir.path(), small()).unwrap();
    assert_entries(&store, 800..810);
}

#[test]
fn entry_too_large_is_refused_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), small()).unwrap();
    append_range(&mut store, 0..3);
    let max = store.max_payload();
    let big = vec![1u8; max + 1];
    let ok = vec![2u8; max];
    let err = store
        .append_batch([(3, &ok[..]), (4, &big[..])])
        .unwrap_err();
    assert!(
        matches!(err, Error::EntryTooLarge { index: 4, .. }),
        "{err}"
    );
    assert_eq!(store.next_index(), 3);
    store.append(3, &ok).unwrap();
    store.sync().unwrap();
    drop(store);
    let store = Store::open(dir.path(), small()).unwrap();
    assert_eq!(store.reader().view().get(3), Some(&ok[..]));
    assert_eq!(store.next_index(), 4);
}

#[test]
fn non_consecutive_append_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), small()).unwrap();
    append_range(&mut store, 5..10);
    let err = store
        .append_batch([(10, &b"a"[..]), (12, b"b")])
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::NonConsecutive {
                expected: 11,
                got: 12
            }
        ),
        "{err}"
    );
    assert_eq!(store.next_index(), 10);
}

#[test]
fn lock_is_held_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small()).unwrap();
    let err = Store::open(dir.path(), small()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert!(err.to_string().contains("locked"));
    drop(store);
    Store::open(dir.path(), small()).unwrap();
}

#[test]
fn meta_values_survive_rollover_purge_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), small()).unwrap();
    store.put_meta(1, b"vote-1").unwrap();
    append_range(&mut store, 0..1000);
    store.put_meta(1, b"vote-2").unwrap();
    store.put_meta(9, b"user").unwrap();
    append_range(&mut store, 1000..2000);
    store.purge_to(1901).unwrap();
    store.sync().unwrap();
    drop(store);
    let store = Store::open(dir.path(), small()).unwrap();
    assert_eq!(store.meta(1), Some(&b"vote-2"[..]));
    assert_eq!(store.meta(9), Some(&b"user"[..]));
    assert_eq!(store.reader().view().meta(9), Some(&b"user"[..]));
}

fn flip_byte(path: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x40;
    f.write_all_at(&b, offset).unwrap();
}

#[test]
fn corrupt_byte_in_sealed_segment_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), small()).unwrap();
    append_range(&mut store, 0..500);
    store.sync().unwrap();
    drop(store);
    let files = segment_files(dir.path());
    let victim = dir.path().join(&files[1]);
    flip_byte(&victim, 200);
    let err = Store::open(dir.path(), small()).unwrap_err();
    match &err {
        Error::Corrupt { path, offset, .. } => {
            assert_eq!(path, &victim);
            assert!(*offset <= 200, "offset {offset}");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    assert!(err.to_string().contains(&files[1]));
    // The tolerant mode opens, keeping the entries before the bad record.
    let cfg = Config {
        recovery_mode: RecoveryMode::TruncateAtCorruption,
        ..small()
    };
    let store = Store::open(dir.path(), cfg).unwrap();
    let n = store.next_index();
    assert!(n > 0 && n < 500, "{n}");
    assert!(store.recovery_report().tolerated_corruption.is_some());
    let snap = store.reader().view();
    for i in 0..n {
        assert_eq!(snap.get(i), Some(&payload(i)[..]));
    }
    drop(snap);
    drop(store);
    // The cut is final: the log now opens cleanly even in strict mode, and keeps working.
    let mut store = Store::open(dir.path(), small()).unwrap();
    assert_eq!(store.next_index(), n);
    assert!(store.recovery_report().tolerated_corruption.is_none());
    append_range(&mut store, n..n + 50);
    store.sync().unwrap();
    drop(store);
    let store = Store::open(dir.path(), small()).unwrap();
    assert_entries(&store, 0..n + 50);
}

#[test]
fn torn_tail_in_newest_segment_is_cut_rest_intact() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), Config::default()).unwrap();
    append_range(&mut store, 0..100);
    store.sync().unwrap();
    drop(store);
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 1);
    let path = dir.path().join(&files[0]);
    // Entry records are 24 + align8(len) bytes after a 64-byte header and a checkpoint;
    // damage a byte somewhere in the middle of the records.
    flip_byte(&path, 2000);
    // And leave garbage far beyond the end, as a lost page pattern would.
    flip_byte(&path, 1 << 20);
    // A torn write is only possible past the synced mark: clear it, as a crash before the
    // sync would have left it (with the mark, this damage is corruption: tests/synced_damage).
    clear_synced_mark(&path);
    let store = Store::open(dir.path(), Config::default()).unwrap();
    let n = store.next_index();
    assert!(n > 10 && n < 100, "{n}");
    let report = store.recovery_report();
    let (cut_path, cut_off, _) = report.cut.clone().expect("a cut");
    assert_eq!(cut_path, path);
    assert!(cut_off <= 2000);
    for i in 0..n {
        assert_eq!(store.reader().view().get(i), Some(&payload(i)[..]));
    }
    drop(store);
    // The cut region was zeroed: the garbage does not come back, and a reopen is clean.
    let mut store = Store::open(dir.path(), Config::default()).unwrap();
    assert_eq!(store.next_index(), n);
    assert!(store.recovery_report().cut.is_none());
    append_range(&mut store, n..n + 10);
    store.sync().unwrap();
    drop(store);
    let store = Store::open(dir.path(), Config::default()).unwrap();
    assert_entries(&store, 0..n + 10);
}

#[test]
fn invalid_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for size in [0, 100, 4097, 1 << 40] {
        let cfg = Config {
            segment_size: size,
            ..Config::default()
        };
        assert!(matches!(
            Store::open(dir.path(), cfg),
            Err(Error::InvalidConfig(_))
        ));
    }
}

#[test]
fn flush_callbacks_fire_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), small()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..50u64 {
        store.append(i, &payload(i)).unwrap();
        let tx = tx.clone();
        store
            .flush(move |r| {
                r.unwrap();
                tx.send(i).unwrap();
            })
            .unwrap();
    }
    drop(tx);
    let got: Vec<u64> = rx.iter().collect();
    assert_eq!(got, (0..50).collect::<Vec<_>>());
}

#[test]
fn a_panicking_callback_does_not_stop_later_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), small()).unwrap();
    store.append(0, b"a").unwrap();
    store.flush(|_| panic!("callback bug")).unwrap();
    store.append(1, b"b").unwrap();
    store.sync().unwrap();
    drop(store);
    let store = Store::open(dir.path(), small()).unwrap();
    assert_eq!(store.next_index(), 2);
}

/// Zeroes a segment's synced mark (header bytes 56..64).
fn clear_synced_mark(path: &std::path::Path) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&[0u8; 8], 56).unwrap();
}
