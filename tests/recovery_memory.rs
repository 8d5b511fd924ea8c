//! Recovery's heap peak: opening a log holds at most the index (4 bytes per entry, in buckets)
//! plus a fixed allowance at any instant, not a copy of every offset per stage of recovery.
//! The CLI bench's counting global allocator, used by this test binary too, tracks live heap
//! bytes over all threads (the scan runs on rayon's) and their peak.

use std::sync::Mutex;

use raft_mmap_log::{Config, Store};

/// The CLI bench's counting global allocator (`start`, `live_and_peak`), for this test binary.
#[path = "../cli/src/bench/heap.rs"]
mod heap;

/// Every test of this binary holds it throughout, so that no other test's allocations count
/// in a measured peak.
static SERIAL: Mutex<()> = Mutex::new(());

/// Heap bytes live before `f` and the most live at once while it ran (all threads), as
/// counted since the first measurement.
fn heap_peak_during<R>(f: impl FnOnce() -> R) -> (isize, isize, R) {
    heap::start();
    let (base, _) = heap::live_and_peak();
    let r = f();
    let (_, peak) = heap::live_and_peak();
    (base, peak, r)
}

/// What the index may cost per entry at the peak of an open (it holds 4 bytes per entry once
/// open; issue #13's bound is 8).
const BYTES_PER_ENTRY: usize = 8;
/// Everything else an open allocates, whatever the log's length: the directory listing,
/// paths, per-segment tables, threads.
const FIXED: usize = 512 << 10;

#[test]
fn open_of_200k_entries_peaks_within_8_bytes_per_entry() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let entries = 200_000u64;
    let config = Config {
        // Several segments, so the parallel scan holds several segments' offsets at once.
        segment_size: 1 << 20,
        ..Config::default()
    };
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = Store::open(dir.path(), config.clone()).unwrap();
        let payload = [5u8; 8];
        for start in (0..entries).step_by(1000) {
            store
                .append_batch((start..start + 1000).map(|i| (i, &payload[..])))
                .unwrap();
        }
        store.sync().unwrap();
    }
    let (base, peak, store) = heap_peak_during(|| Store::open(dir.path(), config).unwrap());
    assert_eq!(store.reader().view().len(), entries);
    let peak_added = usize::try_from(peak - base).unwrap_or(0);
    eprintln!(
        "heap peak during open: {peak_added} B over the {base} B live before, {:.2} B/entry",
        peak_added as f64 / entries as f64
    );
    let bound = BYTES_PER_ENTRY * entries as usize + FIXED;
    assert!(
        peak_added <= bound,
        "open of {entries} entries held {peak_added} heap bytes at its peak, more than \
         {BYTES_PER_ENTRY} per entry + {FIXED} ({bound})"
    );
}

/// The payload of entry `i` in `life` (entries rewritten after a truncate differ).
fn body(i: u64, life: u8) -> [u8; 12] {
    let mut b = [life; 12];
    b[..8].copy_from_slice(&i.to_le_bytes());
    b
}

#[test]
fn runs_adopted_after_truncates_inside_one_segment_read_back_every_entry() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // One segment; truncates leave the segment's offsets in several pieces, which the open
    // moves together in place (across index buckets) for the run to adopt.
    let config = Config {
        segment_size: 4 << 20,
        ..Config::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut want: Vec<[u8; 12]> = Vec::new();
    {
        let mut store = Store::open(dir.path(), config.clone()).unwrap();
        let append = |store: &mut Store, range: std::ops::Range<u64>, life: u8| {
            let bodies: Vec<[u8; 12]> = range.clone().map(|i| body(i, life)).collect();
            store
                .append_batch(range.zip(bodies.iter().map(|b| &b[..])))
                .unwrap();
        };
        append(&mut store, 0..3000, 1);
        store.truncate_from(1000).unwrap();
        append(&mut store, 1000..1500, 2);
        store.truncate_from(1200).unwrap();
        append(&mut store, 1200..2600, 3);
        store.sync().unwrap();
        want.extend((0..1000).map(|i| body(i, 1)));
        want.extend((1000..1200).map(|i| body(i, 2)));
        want.extend((1200..2600).map(|i| body(i, 3)));
    }
    let store = Store::open(dir.path(), config).unwrap();
    let view = store.reader().view();
    assert_eq!(view.len(), 2600);
    for (i, w) in want.iter().enumerate() {
        assert_eq!(view.get(i as u64), Some(&w[..]), "entry {i}");
    }
}

/// Heap bytes a group of a few entries may hold once its shared log is open: its state, its
/// index root and its entries' offsets. (raft-engine's memtable holds about as much per
/// region.)
const BYTES_PER_SMALL_GROUP: usize = 1024;

#[test]
fn an_open_shared_log_holds_under_a_kibibyte_per_group_of_16_entries() {
    use raft_mmap_log::groups::Groups;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let groups = 4096u64;
    let config = Config {
        segment_size: 8 << 20,
        ..Config::default()
    };
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Groups::open(dir.path(), config.clone()).unwrap();
        for g in 1..=groups {
            let h = log.group(g);
            h.append_batch((1..=16u64).map(|i| (i, &b"entry"[..])))
                .unwrap();
        }
        log.sync().unwrap();
    }
    let (base, _, log) = heap_peak_during(|| Groups::open(dir.path(), config).unwrap());
    let (live, _) = heap::live_and_peak();
    assert_eq!(log.ids().len() as u64, groups);
    assert_eq!(log.group(groups).reader().view().len(), 16);
    let per_group = usize::try_from(live - base).unwrap_or(0) / groups as usize;
    eprintln!("{per_group} heap bytes per group of 16 entries, open");
    assert!(
        per_group <= BYTES_PER_SMALL_GROUP,
        "an open log of {groups} groups of 16 entries holds {per_group} heap bytes per group, \
         more than {BYTES_PER_SMALL_GROUP}"
    );
}

/// `estimated_memory` against the heap an open log really holds (counted by the allocator):
/// within 0.7–1.3× of it, for one long log and for many small groups.
#[test]
fn estimated_memory_is_within_30_percent_of_the_heap_an_open_log_holds() {
    use raft_mmap_log::groups::Groups;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let check = |what: &str, estimate: usize, base: isize| {
        let (live, _) = heap::live_and_peak();
        let held = usize::try_from(live - base).unwrap_or(0);
        let ratio = estimate as f64 / held as f64;
        eprintln!("{what}: estimated {estimate} B, holds {held} B ({ratio:.2}x)");
        assert!(
            (0.7..=1.3).contains(&ratio),
            "{what}: estimated_memory says {estimate} B, the open log holds {held} B"
        );
    };

    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        segment_size: 1 << 20,
        ..Config::default()
    };
    {
        let mut store = Store::open(dir.path(), config.clone()).unwrap();
        let payload = [5u8; 8];
        for start in (0..200_000u64).step_by(1000) {
            store
                .append_batch((start..start + 1000).map(|i| (i, &payload[..])))
                .unwrap();
        }
        store.put_meta(3, &[7u8; 300]).unwrap();
        store.sync().unwrap();
    }
    let (base, _, store) = heap_peak_during(|| Store::open(dir.path(), config).unwrap());
    check("200,000 entries", store.estimated_memory(), base);
    drop(store);

    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        segment_size: 8 << 20,
        ..Config::default()
    };
    {
        let log = Groups::open(dir.path(), config.clone()).unwrap();
        for g in 1..=4096u64 {
            let h = log.group(g);
            h.append_batch((1..=16u64).map(|i| (i, &b"entry"[..])))
                .unwrap();
            h.put_meta(1, &g.to_le_bytes()).unwrap();
        }
        log.sync().unwrap();
    }
    let (base, _, log) = heap_peak_during(|| Groups::open(dir.path(), config).unwrap());
    check("4,096 groups of 16 entries", log.estimated_memory(), base);
}
