//! Reading a range allocates nothing per entry: a counting global allocator for this test
//! binary counts allocations made by the current thread while it iterates.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use raft_mmap_log::raft::{LogId, RaftLog, RaftTypes};
use raft_mmap_log::{Config, Store};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    // Only the thread under test counts: the flusher and preparer threads allocate too.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn note_alloc() {
    if COUNTING.try_with(|c| c.get()).unwrap_or(false) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by this thread while `f` runs.
fn allocations_during<R>(f: impl FnOnce() -> R) -> (u64, R) {
    let before = ALLOCS.load(Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    let r = f();
    COUNTING.with(|c| c.set(false));
    (ALLOCS.load(Ordering::Relaxed) - before, r)
}

fn config() -> Config {
    // Small segments: the 1,000-entry range spans several segments and index runs.
    Config {
        segment_size: 64 * 1024,
        ..Config::default()
    }
}

#[test]
fn counter_sees_allocations() {
    let (n, v) = allocations_during(|| vec![1u8; 100]);
    assert!(n >= 1);
    drop(v);
}

#[test]
fn engine_range_of_1000_allocates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), config()).unwrap();
    let payload = [7u8; 256];
    for i in 0..3000u64 {
        store.append(i, &payload).unwrap();
    }
    let snap = store.reader().view();
    let (n, (count, sum)) = allocations_during(|| {
        let mut count = 0u64;
        let mut sum = 0u64;
        for e in snap.range(1000..2000) {
            count += 1;
            sum += e.payload.len() as u64 + e.payload[0] as u64;
        }
        for i in 1000..2000 {
            sum += snap.get(i).map_or(0, |p| p.len() as u64);
        }
        (count, sum)
    });
    assert_eq!(count, 1000);
    assert!(sum > 0);
    assert_eq!(
        n, 0,
        "View::range/get allocated {n} times for 1,000 entries"
    );
}

#[test]
fn raft_read_of_1000_allocates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = RaftLog::<RaftTypes>::open(dir.path(), config()).unwrap();
    let payload = [9u8; 256];
    for i in 0..3000u64 {
        log.append([(LogId::new(1, 1, i), &payload[..])]).unwrap();
    }
    let snap = log.reader().view();
    let (n, count) = allocations_during(|| {
        let mut count = 0u64;
        for e in snap.read(500..1500) {
            let (id, p) = e.expect("entry decodes");
            assert_eq!(p.len(), 256);
            assert_eq!(id.index, 500 + count);
            count += 1;
        }
        count
    });
    assert_eq!(count, 1000);
    assert_eq!(n, 0, "RaftView::read allocated {n} times for 1,000 entries");
}

/// Allocations made while appending `batches` batches of 16 entries of 256 B through `append`.
fn append_allocations(mut append: impl FnMut(u64, &[u8]), batches: u64) -> u64 {
    let payload = [3u8; 256];
    // Warm-up: the first batches size the scratch buffers.
    for b in 0..4 {
        append(b * 16, &payload);
    }
    let (n, ()) = allocations_during(|| {
        for b in 4..4 + batches {
            append(b * 16, &payload);
        }
    });
    n
}

#[test]
fn raft_append_allocates_no_more_than_the_engine() {
    // Big segments and few entries: no rollover, no write-back hint; the engine allocates the
    // index buckets it reaches (their sizes double: entries 64..1,664 reach the buckets that
    // start at slots 112, 240, 496 and 1,008, and with the fifth bucket the table of those past
    // the fourth), and the Raft layer must add nothing to that.
    let config = Config::default();
    let batches = 100;
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), config.clone()).unwrap();
    let engine = append_allocations(
        |first, p| {
            store
                .append_batch((first..first + 16).map(|i| (i, p)))
                .unwrap()
        },
        batches,
    );
    let dir = tempfile::tempdir().unwrap();
    let mut log = RaftLog::<RaftTypes>::open(dir.path(), config).unwrap();
    let raft = append_allocations(
        |first, p| {
            log.append((first..first + 16).map(|i| (LogId::new(1, 1, i), p)))
                .unwrap()
        },
        batches,
    );
    assert!(
        engine <= 5,
        "the engine allocated {engine} times for 1,600 entries"
    );
    assert_eq!(
        raft, engine,
        "RaftLog::append allocated {raft} times for 1,600 entries, the engine {engine}"
    );
}
