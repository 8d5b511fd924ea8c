//! Per-entry cost probes, for instruction counts under callgrind (stable on a busy machine,
//! unlike timings). Each workload runs in its own `#[inline(never)]` function so that callgrind
//! can count just that function:
//!
//! ```sh
//! cargo bench --bench per_entry --no-run          # prints the binary's path
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='per_entry::work_*' \
//!     target/release/deps/per_entry-HASH raft-append 200000
//! ```
//!
//! Modes: `store-append N`, `raft-append N` (N entries of 256 B, batches of 16, no sync);
//! `read N` (N entries read as 1,000-entry ranges from a hot 100k-entry log: `RaftView::read`,
//! using the log id and the payload length, like `benches/read.rs`); `floor N` (the same
//! consumption over a plain `Vec<(LogId, &[u8])>` in memory: the harness's own cost);
//! `view-read N` (the engine's `View::range`, no log id decode); `limit N` and `limit-raft N`
//! (the machine's limit for the append workload: N records of 256 B bodies, or 24 + 256 B like
//! a `RaftLog` entry, header and both CRCs built by `record::header_with` and copied back to
//! back into a file mapping whose pages were faulted in before the clock starts, in one thread,
//! with no engine work at all); `limit-copy N` (the same copies with a zero header: the copy
//! alone). Without callgrind, each mode also prints its wall time per entry (rough on a shared
//! machine); the limit modes print M entries/s too.

use std::hint::black_box;
use std::time::Instant;

use raft_mmap_log::format::{record_size, RecordKind, RECORD_HEADER_SIZE};
use raft_mmap_log::raft::{LogId, RaftLog, RaftTypes};
use raft_mmap_log::record::{header_with, Seed};
use raft_mmap_log::{Config, Store};
use zerocopy::IntoBytes;

const BATCH: u64 = 16;
const PAYLOAD: usize = 256;
const LOG_ENTRIES: u64 = 100_000;
const RANGE: u64 = 1000;

#[inline(never)]
fn work_store_append(store: &mut Store, n: u64, payload: &[u8]) {
    let mut i = 0;
    while i < n {
        let end = (i + BATCH).min(n);
        store
            .append_batch((i..end).map(|j| (j, payload)))
            .expect("append");
        i = end;
    }
}

#[inline(never)]
fn work_raft_append(log: &mut RaftLog<RaftTypes>, n: u64, payload: &[u8]) {
    let mut i = 0;
    while i < n {
        let end = (i + BATCH).min(n);
        log.append((i..end).map(|j| (LogId::new(1, 1, j), payload)))
            .expect("append");
        i = end;
    }
}

/// The limit: `n` records of body `prefix ++ payload` written back to back into `map` (its
/// pages already faulted in): the header with both CRCs (`crc` false: a zero header), then the
/// body. Returns the bytes written.
#[inline(never)]
fn work_limit(map: &mut [u8], n: u64, prefix: &[u8], payload: &[u8], crc: bool) -> usize {
    let seed = Seed::current(0x5eed_5a17);
    let body = prefix.len() + payload.len();
    let rs = record_size(body);
    let mut pos = 0;
    for i in 0..n {
        let rec = &mut map[pos..pos + rs];
        if crc {
            let h = header_with(seed, RecordKind::Entry, i, &[prefix, payload]);
            rec[..RECORD_HEADER_SIZE].copy_from_slice(h.as_bytes());
        } else {
            rec[..RECORD_HEADER_SIZE].copy_from_slice(&[0; RECORD_HEADER_SIZE]);
        }
        let (p, rest) = rec[RECORD_HEADER_SIZE..].split_at_mut(prefix.len());
        p.copy_from_slice(prefix);
        rest[..payload.len()].copy_from_slice(payload);
        pos += rs;
    }
    pos
}

/// A file of `len` bytes in `dir`, mapped, every page faulted in for writing (as the
/// preparer leaves a segment) before the caller starts its clock.
fn prefaulted_map(dir: &std::path::Path, len: usize) -> memmap2::MmapMut {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join("limit.dat"))
        .expect("limit file");
    // Blocks reserved like a new segment's (`fallocate`), else a plain length.
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a descriptor we own.
    if unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) } != 0 {
        file.set_len(len as u64).expect("set_len");
    }
    // SAFETY: a file of our own in a fresh temporary directory: nothing else maps, shortens
    // or writes it while the map lives.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.expect("map");
    // As the preparer does it (`MADV_POPULATE_WRITE`), else a write to every page.
    if map.advise(memmap2::Advice::PopulateWrite).is_err() {
        for page in map.chunks_mut(4096) {
            page[0] = 1;
        }
    }
    map
}

/// Start of the `k`-th range read: a fixed stride through the log, like random ranges.
fn range_start(k: u64) -> u64 {
    (k * 7919 * RANGE) % (LOG_ENTRIES - RANGE)
}

/// What every read loop does with an entry: the same for the engine and for the floor, and
/// opaque to the optimizer (`black_box`), so that no loop is vectorized away.
#[inline(always)]
fn consume(sum: &mut u64, index: u64, p: &[u8]) {
    let p = black_box(p);
    *sum = sum.wrapping_add(
        black_box(index) + p.len() as u64 + u64::from(p.first().copied().unwrap_or(0)),
    );
}

#[inline(never)]
fn work_read(view: &raft_mmap_log::raft::RaftView<RaftTypes>, n: u64) -> u64 {
    let mut sum = 0u64;
    for k in 0..n / RANGE {
        let from = range_start(k);
        for e in view.read(from..from + RANGE) {
            let (id, p) = e.expect("entry");
            consume(&mut sum, id.index, p);
        }
    }
    sum
}

#[inline(never)]
fn work_view_read(view: &raft_mmap_log::View, n: u64) -> u64 {
    let mut sum = 0u64;
    for k in 0..n / RANGE {
        let from = range_start(k);
        for e in view.range(from..from + RANGE) {
            consume(&mut sum, e.index, e.payload);
        }
    }
    sum
}

/// The floor: the same ranges and the same consumption over an in-memory vector of the
/// entries' log ids and payload slices (pointing into the same mapped bytes).
#[inline(never)]
fn work_floor(entries: &[(LogId, &[u8])], n: u64) -> u64 {
    let mut sum = 0u64;
    for k in 0..n / RANGE {
        let from = range_start(k) as usize;
        for &(id, p) in &entries[from..from + RANGE as usize] {
            consume(&mut sum, id.index, p);
        }
    }
    sum
}

/// The calling thread's time so far, in nanoseconds: on a CPU, and runnable but waiting for
/// one (`/proc/thread-self/schedstat`; zeros if it cannot be read). The rest of the wall time
/// the thread was blocked (a lock, a channel, I/O).
fn thread_times() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let mut f = s.split_whitespace().map(|v| v.parse().unwrap_or(0));
    (f.next().unwrap_or(0), f.next().unwrap_or(0))
}

/// Minor and major page faults of this process so far (`/proc/self/stat` fields 10 and 12).
fn faults() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    (
        f.get(7).copied().unwrap_or(0),
        f.get(9).copied().unwrap_or(0),
    )
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let mode = args.next().unwrap_or_else(|| "raft-append".into());
    let n: u64 = args.next().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let payload = vec![0x5au8; PAYLOAD];
    let t;
    let f0;
    let cpu0;
    match mode.as_str() {
        "store-append" => {
            let mut store = Store::open(dir.path(), Config::default()).expect("open");
            f0 = faults();
            cpu0 = thread_times();
            t = Instant::now();
            work_store_append(&mut store, n, &payload);
        }
        "raft-append" => {
            let mut log = RaftLog::<RaftTypes>::open(dir.path(), Config::default()).expect("open");
            f0 = faults();
            cpu0 = thread_times();
            t = Instant::now();
            work_raft_append(&mut log, n, &payload);
        }
        "read" | "view-read" | "floor" => {
            let mut log = RaftLog::<RaftTypes>::open(dir.path(), Config::default()).expect("open");
            work_raft_append(&mut log, LOG_ENTRIES, &payload);
            let view = log.reader().view();
            let bodies: Vec<(LogId, &[u8])> = (0..LOG_ENTRIES)
                .map(|i| view.get(i).expect("entry").expect("entry"))
                .collect();
            // Warm: every page and index chunk was touched above, by `get`.
            f0 = faults();
            cpu0 = thread_times();
            t = Instant::now();
            let sum = match mode.as_str() {
                "read" => work_read(&view, n),
                "view-read" => work_view_read(view.raw(), n),
                _ => work_floor(&bodies, n),
            };
            black_box(sum);
        }
        "limit" | "limit-raft" | "limit-copy" => {
            let prefix: &[u8] = if mode == "limit-raft" {
                &[7u8; 24]
            } else {
                &[]
            };
            let len = record_size(prefix.len() + PAYLOAD) * n as usize;
            let t0 = Instant::now();
            let mut map = prefaulted_map(dir.path(), len);
            // What the preparer does ahead of the writer for a new file, per entry's bytes.
            println!(
                "{mode}: faulting the file's pages in (new page-cache pages, zeroed) took \
                 {:.1} ns per entry's bytes",
                t0.elapsed().as_nanos() as f64 / n as f64
            );
            f0 = faults();
            cpu0 = thread_times();
            t = Instant::now();
            let written = work_limit(&mut map, n, prefix, &payload, mode != "limit-copy");
            black_box(&map[written - 1]);
        }
        other => {
            eprintln!(
                "unknown mode {other}: store-append, raft-append, read, view-read, floor, \
                 limit, limit-raft, limit-copy"
            );
            std::process::exit(2);
        }
    }
    let el = t.elapsed();
    let cpu1 = thread_times();
    let per = |ns: u64| ns as f64 / n as f64;
    let (run, queued) = (cpu1.0 - cpu0.0, cpu1.1 - cpu0.1);
    let f1 = faults();
    println!(
        "{mode} {n} entries: {:.1} ns/entry = {:.2} M entries/s (wall time, rough); this \
         thread per entry: {:.1} ns on a CPU, {:.1} ns waiting for one, {:.1} ns blocked; page \
         faults (this process, all threads) per 1,000 entries: {:.1} minor, {:.2} major",
        per(el.as_nanos() as u64),
        n as f64 / el.as_secs_f64() / 1e6,
        per(run),
        per(queued),
        per((el.as_nanos() as u64).saturating_sub(run + queued)),
        (f1.0 - f0.0) as f64 * 1000.0 / n as f64,
        (f1.1 - f0.1) as f64 * 1000.0 / n as f64
    );
}
