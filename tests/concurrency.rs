//! Readers against a busy writer: 4 reader threads validate every byte they read while the
//! writer appends 1,000,000 small entries into 64 KiB segments (many rollovers), truncates
//! suffixes (and re-appends them), purges prefixes and flushes.
//!
//! Every payload is verifiable alone: bytes 0..8 are the index (LE), bytes 8..12 the writer's
//! truncate generation at the time of the append, the rest a pattern derived from both, and the
//! length is a function of the index. Within one consistent log the generation never decreases
//! with the index (an entry is appended after every entry before it), so a snapshot that mixed
//! entries from before and after a truncate shows up as a generation going down.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use raft_mmap_log::{Config, Reader, Store, View};

const TOTAL: u64 = 1_000_000;
const READERS: usize = 4;
const SEGMENT: u64 = 64 << 10;
/// Entries kept after a purge (roughly).
const WINDOW: u64 = 60_000;

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn payload_len(index: u64) -> usize {
    16 + (mix(index) % 49) as usize
}

fn pattern(index: u64, gen: u32, k: usize) -> u8 {
    let w = mix(index ^ mix(u64::from(gen) | ((k / 8) as u64) << 32));
    (w >> ((k % 8) * 8)) as u8
}

fn payload(index: u64, gen: u32, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(&gen.to_le_bytes());
    let len = payload_len(index);
    for k in 12..len {
        out.push(pattern(index, gen, k));
    }
}

/// Checks every byte of the payload of `index`; returns its generation.
fn check(index: u64, p: &[u8]) -> Result<u32, String> {
    if p.len() != payload_len(index) || p.len() < 12 {
        return Err(format!(
            "entry {index}: wrong length {} (payload starts {:02x?})",
            p.len(),
            &p[..p.len().min(16)]
        ));
    }
    let got = u64::from_le_bytes(p[..8].try_into().unwrap());
    if got != index {
        return Err(format!("entry {index}: payload of entry {got}"));
    }
    let gen = u32::from_le_bytes(p[8..12].try_into().unwrap());
    for (k, &b) in p.iter().enumerate().skip(12) {
        if b != pattern(index, gen, k) {
            return Err(format!(
                "entry {index} gen {gen}: byte {k} is wrong (torn or stale read)"
            ));
        }
    }
    Ok(gen)
}

fn validate(index: u64, p: &[u8]) -> u32 {
    check(index, p).unwrap_or_else(|e| panic!("{e}"))
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = mix(self.0);
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Default, Debug)]
struct Stats {
    entries: u64,
    snapshots: u64,
    ranges: u64,
    gets: u64,
    full_scans: u64,
    held_checks: u64,
}

/// Shared progress counters of the writer.
struct Progress {
    /// Incremented after every writer operation (batch, truncate, purge, flush).
    ops: AtomicU64,
    done: AtomicBool,
    failed: AtomicBool,
}

/// Reads `[a, b)` from the snapshot: exactly those entries, in order, every byte valid,
/// generations non-decreasing. Returns the number read.
fn check_range(snap: &View, a: u64, b: u64) -> u64 {
    let mut expect = a;
    let mut last_gen = 0u32;
    for e in snap.range(a..b) {
        assert_eq!(
            e.index, expect,
            "range({a}..{b}) skipped or repeated an index"
        );
        let gen = validate(e.index, e.payload);
        assert!(
            gen >= last_gen,
            "range({a}..{b}): entry {} has generation {gen} after {last_gen}: mixed versions",
            e.index
        );
        last_gen = gen;
        expect += 1;
    }
    assert_eq!(
        expect,
        b,
        "range({a}..{b}) of [{}, {}) ended early",
        snap.first_index(),
        snap.next_index()
    );
    b - a
}

/// A snapshot held across writer operations, with copies of what was read from it.
struct Held {
    snap: View,
    first: u64,
    next: u64,
    /// index, address of the slice, bytes at read time.
    seen: Vec<(u64, usize, Vec<u8>)>,
}

impl Held {
    fn verify(&self) {
        assert_eq!(
            self.snap.first_index(),
            self.first,
            "held snapshot first moved"
        );
        assert_eq!(
            self.snap.next_index(),
            self.next,
            "held snapshot next moved"
        );
        for (i, addr, copy) in &self.seen {
            let p = self
                .snap
                .get(*i)
                .unwrap_or_else(|| panic!("held snapshot lost entry {i}"));
            assert_eq!(
                p.as_ptr() as usize,
                *addr,
                "entry {i} moved in a held snapshot"
            );
            assert_eq!(p, &copy[..], "entry {i} changed in a held snapshot");
        }
    }
}

fn reader_loop(reader: Reader, progress: &Progress, seed: u64) -> Stats {
    let mut rng = Rng(seed);
    let mut st = Stats::default();
    let mut held: VecDeque<Held> = VecDeque::new();
    while !progress.done.load(Ordering::Acquire) && !progress.failed.load(Ordering::Relaxed) {
        let snap = reader.view();
        st.snapshots += 1;
        let (first, next) = (snap.first_index(), snap.next_index());
        assert!(first <= next, "first {first} > next {next}");
        assert_eq!(snap.len(), next - first);
        assert!(
            snap.get(next).is_none(),
            "get(next={next}) returned a value"
        );
        if first > 0 {
            assert!(
                snap.get(first - 1).is_none(),
                "get(first-1) returned a value"
            );
        }
        if next == first {
            std::thread::yield_now();
            continue;
        }
        let n = next - first;

        // Random ranges, half of them at the tail where the writer is.
        for _ in 0..4 {
            let len = 1 + rng.below(256.min(n));
            let a = if rng.below(2) == 0 {
                next - len
            } else {
                first + rng.below(n - len + 1)
            };
            st.entries += check_range(&snap, a, a + len);
            st.ranges += 1;
        }
        // Random gets.
        for _ in 0..16 {
            let i = first + rng.below(n);
            let p = snap
                .get(i)
                .unwrap_or_else(|| panic!("get({i}) is None in [{first}, {next})"));
            validate(i, p);
            st.entries += 1;
            st.gets += 1;
        }
        // Sometimes the whole snapshot: exactly next - first entries, in order.
        if rng.below(64) == 0 {
            st.entries += check_range(&snap, first, next);
            let count = snap.range(..).count() as u64;
            assert_eq!(count, n, "range(..) yields {count} entries, want {n}");
            st.full_scans += 1;
        }

        // Hold real slices while the writer moves on, then check them.
        if rng.below(8) == 0 {
            let mut slices: Vec<(u64, &[u8], Vec<u8>)> = Vec::new();
            for k in 0..32 {
                let i = if k % 2 == 0 {
                    next - 1 - rng.below(n.min(64))
                } else {
                    first + rng.below(n)
                };
                let p = snap.get(i).expect("get in range");
                slices.push((i, p, p.to_vec()));
            }
            let start = progress.ops.load(Ordering::Acquire);
            let deadline = Instant::now() + Duration::from_millis(20);
            while progress.ops.load(Ordering::Acquire) < start + 3
                && !progress.done.load(Ordering::Acquire)
                && Instant::now() < deadline
            {
                std::thread::yield_now();
            }
            for (i, p, copy) in &slices {
                assert_eq!(*p, &copy[..], "slice of entry {i} changed under a reader");
                validate(*i, p);
            }
            st.held_checks += slices.len() as u64;
        }

        // Keep a few snapshots for a long time (across truncates, purges and file deletes).
        if rng.below(16) == 0 {
            let seen = (0..8)
                .map(|_| {
                    let i = first + rng.below(n);
                    let p = snap.get(i).expect("get in range");
                    (i, p.as_ptr() as usize, p.to_vec())
                })
                .collect();
            held.push_back(Held {
                snap: snap.clone(),
                first,
                next,
                seen,
            });
            if held.len() > 8 {
                let old = held.pop_front().expect("held");
                old.verify();
                let (a, b) = (old.first, old.next);
                let len = (b - a).min(512);
                st.entries += check_range(&old.snap, b - len, b);
                st.held_checks += old.seen.len() as u64;
            }
        }
        if let Some(h) = held.get(rng.below(held.len() as u64 + 1) as usize) {
            h.verify();
            st.held_checks += h.seen.len() as u64;
        }
    }
    for h in held {
        h.verify();
    }
    st
}

/// Sets `failed` if the thread unwinds, so the others stop early.
struct FailFlag<'a>(&'a AtomicBool);
impl Drop for FailFlag<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::Relaxed);
        }
    }
}

#[derive(Default, Debug)]
struct WriterStats {
    appended: u64,
    truncates: u64,
    truncated_entries: u64,
    purges: u64,
    flushes: u64,
}

fn writer_loop(store: &mut Store, progress: &Progress, seed: u64) -> (WriterStats, u32) {
    let mut rng = Rng(seed);
    let mut ws = WriterStats::default();
    let mut gen = 0u32;
    let mut next_truncate = 20_000 + rng.below(20_000);
    let mut next_purge = WINDOW + 20_000;
    let mut next_flush = 10_000;
    let mut bufs: Vec<Vec<u8>> = (0..64).map(|_| Vec::new()).collect();
    while store.next_index() < TOTAL && !progress.failed.load(Ordering::Relaxed) {
        let start = store.next_index();
        let n = (1 + rng.below(64)).min(TOTAL - start) as usize;
        for (k, b) in bufs.iter_mut().take(n).enumerate() {
            payload(start + k as u64, gen, b);
        }
        store
            .append_batch(
                bufs.iter()
                    .take(n)
                    .enumerate()
                    .map(|(k, b)| (start + k as u64, &b[..])),
            )
            .expect("append");
        ws.appended += n as u64;
        progress.ops.fetch_add(1, Ordering::AcqRel);
        let next = store.next_index();

        if next >= next_truncate {
            next_truncate = next + 20_000 + rng.below(20_000);
            let first = store.first_index();
            let from = next.saturating_sub(1 + rng.below(5_000)).max(first);
            store.truncate_from(from).expect("truncate");
            gen += 1;
            ws.truncates += 1;
            ws.truncated_entries += next - from;
            progress.ops.fetch_add(1, Ordering::AcqRel);
        }
        if next >= next_purge {
            next_purge = next + 20_000 + rng.below(20_000);
            store.purge_to(next - WINDOW + 1).expect("purge");
            ws.purges += 1;
            progress.ops.fetch_add(1, Ordering::AcqRel);
        }
        if next >= next_flush {
            next_flush = next + 10_000;
            store.flush(|r| r.expect("flush")).expect("flush");
            ws.flushes += 1;
            progress.ops.fetch_add(1, Ordering::AcqRel);
        }
    }
    (ws, gen)
}

#[test]
fn readers_validate_every_byte_while_the_writer_appends_truncates_and_purges() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        segment_size: SEGMENT,
        ..Config::default()
    };
    let mut store = Store::open(dir.path(), config.clone()).unwrap();
    let reader = store.reader();
    let progress = Progress {
        ops: AtomicU64::new(0),
        done: AtomicBool::new(false),
        failed: AtomicBool::new(false),
    };
    let started = Instant::now();
    let (ws, stats) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..READERS)
            .map(|t| {
                let reader = reader.clone();
                let progress = &progress;
                s.spawn(move || {
                    let _f = FailFlag(&progress.failed);
                    reader_loop(reader, progress, 0x5EED + t as u64)
                })
            })
            .collect();
        let ws = {
            let _f = FailFlag(&progress.failed);
            let r = writer_loop(&mut store, &progress, 42);
            progress.done.store(true, Ordering::Release);
            r
        };
        let stats: Vec<Stats> = handles
            .into_iter()
            .map(|h| h.join().expect("reader thread panicked"))
            .collect();
        (ws, stats)
    });
    let elapsed = started.elapsed();
    let (ws, gen) = ws;
    assert!(!progress.failed.load(Ordering::Relaxed));
    assert_eq!(store.next_index(), TOTAL);

    // The final log, then the same after a reopen.
    store.sync().unwrap();
    let check_all = |store: &Store| {
        let snap = store.reader().view();
        assert_eq!(snap.next_index(), TOTAL);
        let (first, next) = (snap.first_index(), snap.next_index());
        assert!(next - first >= WINDOW, "purged too much: [{first}, {next})");
        check_range(&snap, first, next);
        let mut last = 0;
        for e in snap.range(..) {
            last = validate(e.index, e.payload);
        }
        assert_eq!(last, gen, "last entry has an old generation");
        (first, next)
    };
    let before = check_all(&store);
    drop(store);
    let reopened = Store::open(dir.path(), config).unwrap();
    assert_eq!(check_all(&reopened), before, "reopen changed the log");

    let total = Stats {
        entries: stats.iter().map(|s| s.entries).sum(),
        snapshots: stats.iter().map(|s| s.snapshots).sum(),
        ranges: stats.iter().map(|s| s.ranges).sum(),
        gets: stats.iter().map(|s| s.gets).sum(),
        full_scans: stats.iter().map(|s| s.full_scans).sum(),
        held_checks: stats.iter().map(|s| s.held_checks).sum(),
    };
    let secs = elapsed.as_secs_f64();
    eprintln!(
        "concurrency: {:.2}s; writer {ws:?}; readers {total:?}; {:.0} entries read/s, {:.0} appends/s",
        secs,
        total.entries as f64 / secs,
        ws.appended as f64 / secs,
    );
    for (t, s) in stats.iter().enumerate() {
        assert!(s.entries > 0, "reader {t} read nothing: {s:?}");
    }
    assert!(ws.truncates > 0 && ws.purges > 0);
}

/// The validator is what makes the stress test able to fail: any changed byte, a payload of
/// another entry or generation, or a cut payload must be rejected.
#[test]
fn validator_rejects_any_damage() {
    let rejects = |i: u64, p: &[u8]| check(i, p).is_err();
    let mut p = Vec::new();
    for i in [0u64, 1, 77, 123_456, TOTAL - 1] {
        payload(i, 3, &mut p);
        assert_eq!(validate(i, &p), 3);
        for k in 0..p.len() {
            for bit in 0..8 {
                let mut q = p.clone();
                q[k] ^= 1 << bit;
                assert!(
                    rejects(i, &q),
                    "entry {i}: flip of byte {k} bit {bit} accepted"
                );
            }
        }
        assert!(rejects(i, &p[..p.len() - 1]), "short payload accepted");
        assert!(
            rejects(i + 1, &p),
            "payload of entry {i} accepted as {}",
            i + 1
        );
        let mut q = p.clone();
        q[8..12].copy_from_slice(&4u32.to_le_bytes());
        assert!(rejects(i, &q), "generation changed without the pattern");
    }
}
