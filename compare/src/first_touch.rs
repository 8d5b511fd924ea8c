//! Workload 7, `first_touch`: a Raft leader's replication loop (or an apply loop) reads what
//! was appended moments ago, from another thread. Those reads are first touches: bytes just
//! written by another core, in pages that may no longer be mapped in the process.
//!
//! Each round, the engine's thread appends `params.read_range` entries (in batches of
//! `params.batch`, no sync), then hands the range to a reader thread, which
//! 1. reads and checks it through the crate's reader (first touch, timed, with the thread's
//!    minor page faults counted);
//! 2. reads it again at once (hot re-read, timed);
//! 3. checks the same payloads in a heap copy the engine's thread made next to its append:
//!    the floor for a first touch (bytes another core just wrote, no page faults), then again
//!    (the hot floor: the harness's own work per entry);
//! 4. reads the range appended [`LAG_BYTES`] of payload earlier, once the log holds it (a
//!    follower catching up, an apply loop behind a burst: bytes out of the CPU caches whose
//!    write-back has started), timed with its page faults, then that round's heap copy (its
//!    floor: the same bytes, as long out of use, in anonymous memory).
//!
//! The engine's thread waits for the reader before the next round, so the two never share
//! the cores. Rounds run until `params.entries` entries are written (several segments).

use std::path::Path;
use std::sync::mpsc;
use std::time::Instant;

use serde_json::{json, Value};

use crate::harness::{check_reads, fresh, guarded, Engine, Fail, Gen, Mode, Params, R};

/// Minor page faults of the calling thread so far.
fn thread_minor_faults() -> u64 {
    // SAFETY: getrusage writes only into the struct it is given.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_THREAD, &mut u) != 0 {
            return 0;
        }
        u.ru_minflt as u64
    }
}

/// One round handed to the reader: the range, the heap copy of its payloads, and the start
/// of the lagging range (the same length, [`LAG_BYTES`] of payload further back), if the log
/// holds it yet.
struct Round {
    from: u64,
    to: u64,
    copy: Vec<u8>,
    lagging: Option<u64>,
}

/// How far behind the tail the lagging reader reads: a follower catching up, or an apply
/// loop behind a burst. Far enough that a crate's write-back of those bytes has started.
const LAG_BYTES: u64 = 16 << 20;

#[derive(Default)]
struct Totals {
    entries: u64,
    first_ns: f64,
    hot_ns: f64,
    floor_fresh_ns: f64,
    floor_hot_ns: f64,
    first_faults: u64,
    hot_faults: u64,
    lag_entries: u64,
    lag_ns: f64,
    lag_faults: u64,
    lag_floor_ns: f64,
    lag_floor_entries: u64,
    /// Per-round first-touch ns per entry, for the median and p99.
    per_round: Vec<f64>,
}

/// Checks `copy` (payloads of `from..to`, contiguous) like an engine's read.
fn read_copy(from: u64, to: u64, size: usize, copy: &[u8]) -> R<u64> {
    check_reads(from, to, size, |f| {
        // Through the `dyn` reference, as the engines' reads call it (see `MemLog`).
        let f = std::hint::black_box(f);
        for (i, p) in copy.chunks_exact(size).enumerate() {
            f(from + i as u64, p);
        }
        Ok(())
    })
}

/// Runs the workload for one engine in `root/first_touch` and returns its cell.
pub fn run<E: Engine>(p: &Params, root: &Path) -> R<Value> {
    let dir = fresh(root, "first_touch");
    let r = guarded("first touch", || run_in::<E>(p, &dir));
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn run_in<E: Engine>(p: &Params, dir: &Path) -> R<Value> {
    let gen = Gen::new(p.entry_size);
    let size = p.entry_size;
    let round = p.read_range.max(1);
    let rounds = (p.entries / round).max(1);
    let lag = (LAG_BYTES / (round * size as u64)).max(1) * round;
    let first = E::FIRST_INDEX;
    let mut e = E::open(dir, Mode::Lazy)?;
    let mut reader = e.tail_reader()?;

    let (to_reader, rounds_rx) = mpsc::sync_channel::<Round>(1);
    let (done_tx, done_rx) = mpsc::sync_channel::<R<()>>(1);
    let lag_rounds = (lag / round) as usize;
    let reader_thread = std::thread::Builder::new()
        .name("ft-reader".into())
        .spawn(move || -> R<Totals> {
            let mut t = Totals::default();
            // The heap copies of the last `lag_rounds` rounds: the lagging read's floor.
            let mut ring: std::collections::VecDeque<Vec<u8>> = Default::default();
            for Round {
                from,
                to,
                copy,
                lagging,
            } in rounds_rx
            {
                let r = (|| -> R<()> {
                    let n = to - from;
                    let f0 = thread_minor_faults();
                    let t0 = Instant::now();
                    check_reads(from, to, size, |f| reader.read_range(from, to, f))?;
                    let first_ns = t0.elapsed().as_nanos() as f64;
                    let f1 = thread_minor_faults();
                    let t1 = Instant::now();
                    check_reads(from, to, size, |f| reader.read_range(from, to, f))?;
                    let hot_ns = t1.elapsed().as_nanos() as f64;
                    let f2 = thread_minor_faults();
                    let t2 = Instant::now();
                    read_copy(from, to, size, &copy)?;
                    let fresh_ns = t2.elapsed().as_nanos() as f64;
                    let t3 = Instant::now();
                    read_copy(from, to, size, &copy)?;
                    let floor_hot_ns = t3.elapsed().as_nanos() as f64;
                    t.entries += n;
                    t.first_ns += first_ns;
                    t.hot_ns += hot_ns;
                    t.floor_fresh_ns += fresh_ns;
                    t.floor_hot_ns += floor_hot_ns;
                    t.first_faults += f1 - f0;
                    t.hot_faults += f2 - f1;
                    t.per_round.push(first_ns / n as f64);
                    if let Some(lf) = lagging {
                        let lt = lf + n;
                        let f3 = thread_minor_faults();
                        let t4 = Instant::now();
                        check_reads(lf, lt, size, |f| reader.read_range(lf, lt, f))?;
                        t.lag_ns += t4.elapsed().as_nanos() as f64;
                        t.lag_faults += thread_minor_faults() - f3;
                        t.lag_entries += n;
                        if let Some(old) = ring.front().filter(|_| ring.len() == lag_rounds) {
                            let t5 = Instant::now();
                            read_copy(lf, lt, size, old)?;
                            t.lag_floor_ns += t5.elapsed().as_nanos() as f64;
                            t.lag_floor_entries += n;
                        }
                    }
                    ring.push_back(copy);
                    if ring.len() > lag_rounds {
                        ring.pop_front();
                    }
                    Ok(())
                })();
                let failed = r.is_err();
                if done_tx.send(r).is_err() || failed {
                    break;
                }
            }
            Ok(t)
        })
        .map_err(|e| Fail::Error(format!("spawning the reader thread: {e}")))?;

    // The engine's side: append a round, hand it over, wait for the reader's verdict.
    let stopped = || Fail::Error("the reader thread stopped".into());
    let wrote = (|| -> R<()> {
        for r in 0..rounds {
            let from = first + r * round;
            let mut copy: Vec<u8> = Vec::with_capacity(round as usize * size);
            gen.each_batch(from, round, p.batch, |b| {
                e.append(b)?;
                copy.extend_from_slice(&b.buf);
                Ok(())
            })?;
            let lagging = from.checked_sub(lag).filter(|&l| l >= first);
            to_reader
                .send(Round {
                    from,
                    to: from + round,
                    copy,
                    lagging,
                })
                .map_err(|_| stopped())?;
            done_rx.recv().map_err(|_| stopped())??;
        }
        Ok(())
    })();
    drop(to_reader);
    let totals = match reader_thread.join() {
        Ok(r) => r?,
        Err(_) => return Err(Fail::Error("the reader thread panicked".into())),
    };
    wrote?;
    e.close()?;

    let n = totals.entries.max(1) as f64;
    let mut per = totals.per_round;
    per.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        per.get(((per.len() as f64 - 1.0) * q).round() as usize)
            .copied()
    };
    let first_ns = totals.first_ns / n;
    let floor_fresh = totals.floor_fresh_ns / n;
    Ok(json!({
        "rounds": per.len(), "round_entries": round, "entries": totals.entries,
        "ns_per_entry": first_ns,
        "round_p50_ns_per_entry": pct(0.5), "round_p99_ns_per_entry": pct(0.99),
        "hot_ns_per_entry": totals.hot_ns / n,
        "floor_fresh_ns_per_entry": floor_fresh,
        "floor_hot_ns_per_entry": totals.floor_hot_ns / n,
        "x_floor_fresh": if floor_fresh > 0.0 { first_ns / floor_fresh } else { 0.0 },
        "faults_per_1k_entries": totals.first_faults as f64 * 1000.0 / n,
        "hot_faults_per_1k_entries": totals.hot_faults as f64 * 1000.0 / n,
        "lagging_entries": totals.lag_entries, "lag_bytes": LAG_BYTES,
        "lagging_ns_per_entry": totals.lag_ns / totals.lag_entries.max(1) as f64,
        "lagging_faults_per_1k_entries":
            totals.lag_faults as f64 * 1000.0 / totals.lag_entries.max(1) as f64,
        "lagging_floor_ns_per_entry":
            totals.lag_floor_ns / totals.lag_floor_entries.max(1) as f64,
    }))
}
