//! openraft's read path: `RaftLogReader::try_get_log_entries` on `MmapLogStore`, per entry:
//! wall time, heap allocations (a counting global allocator, this thread only) and stored
//! bytes. Two payloads of about 256 B: the crate's `KvConfig` (`KvRequest::Set` with a
//! 12-byte key and a 240-byte value) and a config whose application data is `Vec<u8>`.
//!
//! ```sh
//! cargo bench --features openraft --bench openraft_read                      # timing + allocations
//! cargo bench --features openraft --bench openraft_read -- --entries 20000 --rounds 1
//! # instruction counts of the reads only (stable on a noisy machine):
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*read_pass*' \
//!     --callgrind-out-file=/tmp/cg.out target/release/deps/openraft_read-<hash> \
//!     --entries 20000 --rounds 1 --only kv          # or --only bytes
//! callgrind_annotate /tmp/cg.out | grep TOTALS    # Ir / entries = instructions per entry
//! ```
//!
//! With `--rounds 1 --only NAME` one config is read exactly once (`--entries` entries in
//! ranges of `--range`), so the callgrind total covers `entries` entries.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use openraft::storage::{RaftLogReader, RaftLogStorageExt};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftTypeConfig};
use raft_mmap_log::openraft::{KvConfig, KvRequest, MmapLogStore};
use raft_mmap_log::Config;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    // Only the measuring thread counts: the log's flush and preparer threads allocate too.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn note_alloc(size: usize) {
    if COUNTING.try_with(|c| c.get()).unwrap_or(false) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(size as u64, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc(new_size);
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

openraft::declare_raft_types!(
    /// Application data as plain bytes (as in `compare/`'s hiqlite-wal config).
    BytesConfig:
        D = Vec<u8>,
        R = (),
        SnapshotData = Cursor<Vec<u8>>,
);

struct Args {
    entries: u64,
    range: u64,
    rounds: u32,
    /// `kv` or `bytes`: only that config (for per-config instruction counts).
    only: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        entries: 100_000,
        range: 1000,
        rounds: 5,
        only: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut num = || -> u64 {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{flag} needs a number"))
        };
        match flag.as_str() {
            "--entries" => a.entries = num(),
            "--range" => a.range = num().max(1),
            "--rounds" => a.rounds = num().max(1) as u32,
            "--only" => a.only = it.next().cloned(),
            "--bench" => {} // passed by `cargo bench`
            other => panic!(
                "unknown argument {other:?} (--entries N --range K --rounds R --only kv|bytes)"
            ),
        }
    }
    a
}

fn lid(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

fn kv_entry(i: u64) -> Entry<KvConfig> {
    Entry {
        log_id: lid(i),
        payload: EntryPayload::Normal(KvRequest::Set {
            key: format!("key-{i:08}"),
            value: "v".repeat(240),
        }),
    }
}

fn bytes_entry(i: u64) -> Entry<BytesConfig> {
    let mut p = vec![0x5au8; 256];
    p[..8].copy_from_slice(&i.to_le_bytes());
    Entry {
        log_id: lid(i),
        payload: EntryPayload::Normal(p),
    }
}

/// Reads `[0, entries)` once in ranges of `range` through `try_get_log_entries`; returns a
/// checksum so nothing is optimized away. The name is what callgrind's `--toggle-collect`
/// matches.
#[inline(never)]
fn read_pass<C, R>(rt: &tokio::runtime::Runtime, reader: &mut R, entries: u64, range: u64) -> u64
where
    C: RaftTypeConfig<NodeId = u64>,
    R: RaftLogReader<C>,
{
    let mut sum = 0u64;
    let mut a = 0;
    while a < entries {
        let b = (a + range).min(entries);
        let got = rt
            .block_on(reader.try_get_log_entries(a..b))
            .expect("try_get_log_entries");
        assert_eq!(got.len() as u64, b - a, "short read at {a}");
        for e in &got {
            sum = sum.wrapping_add(openraft::RaftLogId::get_log_id(e).index);
        }
        drop(black_box(got));
        a = b;
    }
    sum
}

/// Fills a log with `entries` entries of config `$c` and reads them `rounds` times. A macro,
/// not a generic function, so that it compiles against any version of the store's bounds.
macro_rules! run {
    ($c:ty, $name:expr, $args:expr, $make:expr) => {{
        let args: &Args = $args;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = MmapLogStore::<$c>::open(dir.path(), Config::default()).expect("open");
        for start in (0..args.entries).step_by(1000) {
            let end = (start + 1000).min(args.entries);
            rt.block_on(store.blocking_append((start..end).map($make)))
                .expect("append");
        }
        let mut reader = store.reader();
        let stored: u64 = {
            let view = reader.raw().view();
            view.read(..)
                .map(|e| e.expect("stored entry").1.len() as u64)
                .sum()
        };
        let mut best = f64::INFINITY;
        let mut allocs = 0;
        let mut alloc_bytes = 0;
        for _ in 0..args.rounds {
            let (a0, b0) = (
                ALLOCS.load(Ordering::Relaxed),
                ALLOC_BYTES.load(Ordering::Relaxed),
            );
            COUNTING.with(|c| c.set(true));
            let t = Instant::now();
            let sum = read_pass::<$c, _>(&rt, &mut reader, args.entries, args.range);
            let ns = t.elapsed().as_nanos() as f64 / args.entries as f64;
            COUNTING.with(|c| c.set(false));
            black_box(sum);
            allocs = ALLOCS.load(Ordering::Relaxed) - a0;
            alloc_bytes = ALLOC_BYTES.load(Ordering::Relaxed) - b0;
            best = best.min(ns);
        }
        let n = args.entries as f64;
        println!(
            "{:<22} {:>9.1} ns/entry (best of {})  {:>6.2} allocs/entry  {:>7.1} B allocated/entry  {:>6.1} B stored/entry",
            $name,
            best,
            args.rounds,
            allocs as f64 / n,
            alloc_bytes as f64 / n,
            stored as f64 / n,
        );
    }};
}

fn main() {
    let args = args();
    println!(
        "openraft try_get_log_entries: {} entries, ranges of {}",
        args.entries, args.range
    );
    let wants = |name: &str| args.only.as_deref().is_none_or(|o| o == name);
    if wants("kv") {
        run!(KvConfig, "KvConfig (Set, 252 B)", &args, kv_entry);
    }
    if wants("bytes") {
        run!(BytesConfig, "Vec<u8> (256 B)", &args, bytes_entry);
    }
}
