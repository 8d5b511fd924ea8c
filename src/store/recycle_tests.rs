//! Segment recycling: a pooled file is reused only once no view maps it (invariant I6), a
//! reused file holds its previous life's records after the new ones and recovery never reads
//! them, and pooled files survive a reopen.

use crate::inspect;
use crate::io::sim::{scratch, Rng};
use crate::{Config, Store};

fn config(pool: usize) -> Config {
    Config {
        segment_size: 4096,
        prepare_ahead: false,
        segment_pool: pool,
        ..Config::default()
    }
}

fn payload(i: u64) -> Vec<u8> {
    let mut r = Rng(i.wrapping_mul(0x9E37_79B9) | 1);
    (0..300).map(|_| r.next() as u8).collect()
}

fn append(store: &mut Store, range: std::ops::Range<u64>) {
    let batch: Vec<(u64, Vec<u8>)> = range.map(|i| (i, payload(i))).collect();
    store
        .append_batch(batch.iter().map(|(i, p)| (*i, &p[..])))
        .unwrap();
}

/// Segments of the current version that are recycled files.
fn recycled_segments(store: &Store) -> usize {
    store
        .version
        .segments
        .iter()
        .filter(|s| s.is_recycled())
        .count()
}

#[test]
fn a_view_keeps_its_bytes_across_a_purge_and_a_recycle() {
    let dir = scratch("rml-recycle");
    let mut store = Store::open(dir.path(), config(2)).unwrap();
    append(&mut store, 0..60);
    store.sync().unwrap();
    let view = store.reader().view();
    let held: Vec<&[u8]> = (0..60).map(|i| view.get(i).unwrap()).collect();
    let copies: Vec<Vec<u8>> = held.iter().map(|s| s.to_vec()).collect();

    // The purge releases the oldest segments; once it is durable, the flusher renames their
    // files into the pool, but the view still maps them.
    store.purge_to(45).unwrap();
    store.sync().unwrap();
    assert_eq!(store.pool.len(), 2, "purged files are pooled");
    assert_eq!(store.pool.mapped(), 2, "the view still maps them");

    // Many rollovers: none may reuse a file the view maps.
    append(&mut store, 60..200);
    store.sync().unwrap();
    for (i, (now, then)) in held.iter().zip(&copies).enumerate() {
        assert!(now == then, "entry {i}: bytes changed under a live view");
    }
    assert_eq!(
        recycled_segments(&store),
        0,
        "a mapped pooled file was reused"
    );
    assert_eq!(held[3], &payload(3)[..]);

    // Once the view is gone, the pooled files are reused by the next rollovers.
    drop(held);
    drop(view);
    append(&mut store, 200..300);
    store.sync().unwrap();
    assert!(recycled_segments(&store) > 0, "no pooled file was reused");
    let view = store.reader().view();
    for i in 45..300 {
        assert_eq!(
            view.get_checked(i).unwrap(),
            Some(&payload(i)[..]),
            "entry {i}"
        );
    }
    drop(view);
    drop(store);

    // Reopen: the recycled segments' old tails are not read as records or as damage.
    let store = Store::open(dir.path(), config(2)).unwrap();
    assert!(
        store.recovery_report().cut.is_none(),
        "{:?}",
        store.recovery_report()
    );
    let view = store.reader().view();
    assert_eq!((view.first_index(), view.next_index()), (45, 300));
    for i in 45..300 {
        assert_eq!(view.get(i), Some(&payload(i)[..]), "entry {i}");
    }
}

#[test]
fn pooled_files_are_reused_after_reopen_and_bounded_by_the_pool_size() {
    let dir = scratch("rml-recycle");
    let mut store = Store::open(dir.path(), config(3)).unwrap();
    append(&mut store, 0..120);
    store.purge_to(110).unwrap();
    store.sync().unwrap();
    store.sync().unwrap();
    let pooled = store.pool.len();
    assert_eq!(pooled, 3, "the pool holds at most its size");
    drop(store);

    // The tools see the pool and agree with open.
    let st = inspect::stat(dir.path()).unwrap();
    assert_eq!(st.pool_files.len(), 3);
    assert_eq!(st.pool_bytes, 3 * 4096);
    let rep = inspect::verify(dir.path(), &|_| {}).unwrap();
    assert_eq!(rep.problems().count(), 0, "{:?}", rep.findings);
    assert_eq!(
        rep.notes().count(),
        0,
        "pooled files are no finding: {:?}",
        rep.findings
    );

    // A smaller pool keeps what fits and removes the rest.
    let mut store = Store::open(dir.path(), config(1)).unwrap();
    assert_eq!(store.pool.len(), 1);
    let pool_files = |d: &std::path::Path| {
        std::fs::read_dir(d)
            .unwrap()
            .filter(|e| {
                let n = e.as_ref().unwrap().file_name();
                n.to_string_lossy().ends_with(crate::format::POOL_SUFFIX)
            })
            .count()
    };
    assert_eq!(pool_files(dir.path()), 1);
    append(&mut store, 120..150);
    store.sync().unwrap();
    assert!(
        recycled_segments(&store) > 0,
        "the pooled file was not reused"
    );
    drop(store);
    let store = Store::open(dir.path(), config(0)).unwrap();
    assert_eq!(store.reader().view().get(149), Some(&payload(149)[..]));
    assert_eq!(pool_files(dir.path()), 0, "a disabled pool keeps no files");
}

#[test]
fn a_view_that_outlives_its_store_keeps_its_bytes_when_the_log_is_reopened() {
    let dir = scratch("rml-recycle");
    let mut store = Store::open(dir.path(), config(2)).unwrap();
    append(&mut store, 0..60);
    store.sync().unwrap();
    let view = store.reader().view();
    let held: Vec<&[u8]> = (0..20).map(|i| view.get(i).unwrap()).collect();
    store.purge_to(45).unwrap();
    store.sync().unwrap();
    drop(store);

    // Another store on the same directory, in the same process: it finds the pooled files at
    // open, but must not reuse those the old view still maps.
    let mut store = Store::open(dir.path(), config(2)).unwrap();
    assert_eq!(store.pool.len(), 2);
    append(&mut store, 60..200);
    store.sync().unwrap();
    for (i, now) in held.iter().enumerate() {
        assert!(
            *now == &payload(i as u64)[..],
            "entry {i}: bytes changed under a view of the previous store"
        );
    }
    assert_eq!(
        recycled_segments(&store),
        0,
        "a mapped pooled file was reused"
    );
    drop(held);
    drop(view);
    append(&mut store, 200..260);
    assert!(recycled_segments(&store) > 0, "no pooled file was reused");
}

/// A `*.fresh.pool` file is zeros only when the preparer wrote it, but its pages can reach
/// the disk before the rename that made it a segment does: a power cut then leaves the name
/// `*.fresh.pool` on a file full of records (under an old salt). Reused, it must be flagged
/// recycled like any pooled file: sealed before those old records end, an unflagged segment
/// made every later open fail ("record checksum mismatch" at its sealed end, where the old
/// records go on).
#[test]
fn a_fresh_pool_file_holding_old_records_is_reused_as_a_recycled_segment() {
    // A segment file full of valid records of another life.
    let old = scratch("rml-recycle");
    let mut store = Store::open(old.path(), config(0)).unwrap();
    append(&mut store, 0..40);
    store.sync().unwrap();
    drop(store);
    let mut segs: Vec<_> = std::fs::read_dir(old.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(crate::format::SEGMENT_SUFFIX))
        .collect();
    segs.sort();
    let full = std::fs::read(&segs[0]).unwrap();

    // A log whose pool holds it under a fresh pooled file's name.
    let dir = scratch("rml-recycle");
    drop(Store::open(dir.path(), config(1)).unwrap());
    let fresh = dir
        .path()
        .join(format!("{:020}{}", 7, crate::segment::FRESH_POOL_SUFFIX));
    std::fs::write(&fresh, &full).unwrap();

    let mut store = Store::open(dir.path(), config(1)).unwrap();
    // Enough to roll over into the pooled file, then a few entries in it, then one too large
    // for the rest of it: the segment is sealed well before the old records end.
    append(&mut store, 100..115);
    assert!(!fresh.exists(), "the pooled file was not reused");
    let big = vec![0xA5u8; store.max_payload()];
    store.append(115, &big).unwrap();
    assert_eq!(
        recycled_segments(&store),
        1,
        "the reused file is flagged recycled"
    );
    store.sync().unwrap();
    drop(store);

    for _ in 0..2 {
        let mut store = Store::open(dir.path(), config(1))
            .unwrap_or_else(|e| panic!("reopen after reusing the pooled file: {e}"));
        let view = store.reader().view();
        assert_eq!((view.first_index(), view.next_index()), (100, 116));
        for i in 100..115 {
            assert_eq!(view.get(i), Some(&payload(i)[..]), "entry {i}");
        }
        assert_eq!(view.get(115), Some(&big[..]));
        drop(view);
        store.sync().unwrap();
    }
}

/// A clean close leaves a recycled newest segment as it is: the next open goes on writing in
/// it (no new segment, no sealed mark), and every entry and the ones appended after the
/// reopen read back, across another reopen.
#[test]
fn a_clean_reopen_goes_on_in_a_recycled_newest_segment() {
    let dir = scratch("rml-recycle-reopen");
    let seqs =
        |store: &Store| -> Vec<u64> { store.version.segments.iter().map(|s| s.seq()).collect() };
    let mut next = 0;
    let before = {
        let mut store = Store::open(dir.path(), config(2)).unwrap();
        // Purge behind the writer until the newest segment is a recycled file.
        while !store.active.is_recycled() {
            append(&mut store, next..next + 5);
            next += 5;
            store.sync().unwrap();
            store.purge_to(next - 5).unwrap();
            store.sync().unwrap();
            assert!(next < 2_000, "no segment was recycled");
        }
        append(&mut store, next..next + 2);
        next += 2;
        store.sync().unwrap();
        seqs(&store)
    };
    let mut store = Store::open(dir.path(), config(2)).unwrap();
    assert_eq!(seqs(&store), before, "the reopen started a new segment");
    assert!(store.active.is_recycled() && store.active.sealed_end().is_none());
    append(&mut store, next..next + 2);
    store.sync().unwrap();
    drop(store);
    let store = Store::open(dir.path(), config(2)).unwrap();
    let view = store.reader().view();
    for i in next - 2..next + 2 {
        assert_eq!(view.get(i), Some(&payload(i)[..]), "entry {i}");
    }
}
