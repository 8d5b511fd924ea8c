//! `bench`: a Raft-shaped workload on `RaftLog<RaftTypes>`.
//!
//! Phases: appends without sync; durable appends (batches synced one by one, with latency
//! percentiles); tail reads by reader threads while the writer appends; range reads of old
//! entries; a reopen (recovery) in a fresh child process, which also measures resident memory
//! (so the numbers are those of a process that has just recovered the log, not of the one that
//! wrote it).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use raft_mmap_log::raft::{LogId, RaftLog, RaftTypes};
use raft_mmap_log::Config;
use serde_json::{json, Value};

mod heap;
pub(crate) mod measure;
mod steady;
mod wakeup;
use measure::{faults, faults_since, fmt_rate, pct, proc_status, us, Phase};

use crate::progress::progress_bar;
use crate::show::bytes;
use crate::workdir::Workdir;
use crate::{Failure, Outcome};

/// How the durable-append phase makes its writes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SyncMode {
    /// No sync: batches are appended and timed, nothing waits for the disk.
    None,
    /// `sync()` after each batch of `--batch` entries (group commit of a batch).
    Batch,
    /// `sync()` after each single entry.
    Each,
}

/// Options of `bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Directory for the log (must be empty or not exist). Default: a new temporary directory.
    #[arg(long, value_name = "D")]
    dir: Option<PathBuf>,
    /// Entries appended in the first phase (later phases add a few more).
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    entries: u64,
    /// Payload bytes per entry (a 24-byte log id is stored in front of it).
    #[arg(long, value_name = "BYTES", default_value_t = 256)]
    entry_size: usize,
    /// Entries per append call, and per sync in the durable phase.
    #[arg(long, value_name = "K", default_value_t = 16)]
    batch: usize,
    /// Sync mode of the durable-append phase.
    #[arg(long, value_enum, default_value_t = SyncMode::Batch)]
    sync: SyncMode,
    /// Reader threads in the read phases.
    #[arg(long, value_name = "R", default_value_t = 2)]
    readers: usize,
    /// Segment file size.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
    segment_size: u64,
    /// Recycled segment files kept for reuse (`Config::segment_pool`; 0: no recycling, and
    /// new files' blocks are only reserved, not written).
    #[arg(long, value_name = "N", default_value_t = Config::default().segment_pool)]
    pool: usize,
    /// Also run the steady state: appends and then durable batches while purges keep only
    /// the last four segments' worth of entries, so new segments are recycled pool files
    /// (at least ten segments are written).
    #[arg(long)]
    steady: bool,
    /// Leave the log directory in place.
    #[arg(long)]
    keep: bool,
    /// Print the results as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Internal: reopen DIR in this (child) process and print recovery and memory figures.
    #[arg(long, hide = true, value_name = "DIR")]
    reopen_child: Option<PathBuf>,
}

/// Longest time the durable phase runs (it stops earlier after 2,000 operations).
const DURABLE_BUDGET: Duration = Duration::from_secs(3);

fn ids(range: std::ops::Range<u64>, payload: &[u8]) -> impl Iterator<Item = (LogId, &[u8])> {
    range.map(move |i| (LogId::new(1, 1, i), payload))
}

fn err(e: impl std::fmt::Display) -> Failure {
    Failure::Error(e.to_string())
}

/// Sum of the payload bytes: makes every read touch every byte it claims to read.
#[inline]
fn touch(p: &[u8]) -> u64 {
    p.iter().map(|&b| b as u64).sum()
}

pub fn run(a: BenchArgs) -> Outcome {
    if let Some(dir) = &a.reopen_child {
        return reopen_child(dir, a.segment_size);
    }
    if a.entries == 0 || a.batch == 0 || a.readers == 0 {
        return Err(Failure::Error(
            "--entries, --batch and --readers must be at least 1".into(),
        ));
    }
    let config = Config {
        segment_size: a.segment_size,
        segment_pool: a.pool,
        ..Config::default()
    };
    config.validate().map_err(err)?;
    let work = Workdir::new(a.dir.as_deref(), a.keep)?;
    let dir = work.path.clone();
    let payload: Vec<u8> = (0..a.entry_size).map(|i| (i * 31 + 7) as u8).collect();
    let esz = a.entry_size as u64;
    let mut phases: Vec<Phase> = Vec::new();

    let mut log = RaftLog::<RaftTypes>::open(&dir, config.clone()).map_err(err)?;
    let mut next = 0u64;

    // 1. Appends, no sync.
    let n = a.entries;
    let pb = progress_bar(n, "append (no sync)", false);
    let f0 = faults();
    let t = Instant::now();
    while next < n {
        let end = (next + a.batch as u64).min(n);
        log.append(ids(next..end, &payload)).map_err(err)?;
        next = end;
        if next % 65536 < a.batch as u64 {
            pb.set_position(next);
        }
    }
    let elapsed = t.elapsed();
    let append_faults = faults_since(f0);
    pb.finish_and_clear();
    let mut append_phase = Phase {
        name: format!("append, no sync (batch {})", a.batch),
        entries: n,
        bytes: n * esz,
        elapsed,
        note: String::new(),
        faults: append_faults,
    };
    if let (Some(f), Some(w), Some(p)) = (
        append_faults,
        append_phase.faults_per_mb(|f| f.writer),
        append_phase.faults_per_mb(|f| f.process),
    ) {
        append_phase.note = format!(
            "page faults: writer thread {} minor + {} major ({w:.2}/MB); process {} + {} ({p:.2}/MB, \
             with the preparer's prefaulting)",
            f.writer.0, f.writer.1, f.process.0, f.process.1
        );
    }
    phases.push(append_phase);
    // The first sync writes back everything appended so far.
    let t = Instant::now();
    log.sync().map_err(err)?;
    let first_sync = t.elapsed();
    let appended_bytes = log.store().position().1;
    phases.push(Phase {
        name: "sync of the appends above".into(),
        entries: n,
        bytes: n * esz,
        elapsed: first_sync,
        note: "one sync: write-back of the unsynced tail".into(),
        faults: None,
    });
    let _ = appended_bytes;

    // 2. Durable appends.
    let per_op = if a.sync == SyncMode::Each {
        1
    } else {
        a.batch as u64
    };
    let ops = (n / (per_op * 8)).clamp(10, 2000);
    let mut lat = Vec::with_capacity(ops as usize);
    let pb = progress_bar(ops, "durable append", false);
    let t = Instant::now();
    for _ in 0..ops {
        // Bounded in time too: a slow disk must not stretch the default run.
        if t.elapsed() > DURABLE_BUDGET && lat.len() >= 10 {
            break;
        }
        let t0 = Instant::now();
        log.append(ids(next..next + per_op, &payload))
            .map_err(err)?;
        next += per_op;
        if a.sync != SyncMode::None {
            log.sync().map_err(err)?;
        }
        lat.push(t0.elapsed());
        pb.inc(1);
    }
    let elapsed = t.elapsed();
    pb.finish_and_clear();
    lat.sort_unstable();
    let (p50, p99, p999, max) = (
        pct(&lat, 0.50),
        pct(&lat, 0.99),
        pct(&lat, 0.999),
        lat.last().copied().unwrap_or_default(),
    );
    let what = match a.sync {
        SyncMode::None => format!("batches of {per_op}, not synced"),
        SyncMode::Batch => format!("batches of {per_op}, each synced"),
        SyncMode::Each => "single entries, each synced".into(),
    };
    phases.push(Phase {
        name: format!("durable append ({what})"),
        entries: lat.len() as u64 * per_op,
        bytes: lat.len() as u64 * per_op * esz,
        elapsed,
        note: format!(
            "latency of {} ops: p50 {} us, p99 {} us, p99.9 {} us, max {} us",
            lat.len(),
            us(p50),
            us(p99),
            us(p999),
            us(max)
        ),
        faults: None,
    });

    // 3. Tail reads while appending.
    let tail_n = (n / 2).max(1);
    let start = next;
    let stop_at = start + tail_n;
    let done = Arc::new(AtomicBool::new(false));
    let read_total = Arc::new(AtomicU64::new(0));
    let pb = progress_bar(tail_n, "tail reads + appends", false);
    let t = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..a.readers {
        let reader = log.reader();
        let done = done.clone();
        let read_total = read_total.clone();
        handles.push(std::thread::spawn(move || -> Result<Duration, String> {
            let mut cursor = start;
            let mut sum = 0u64;
            let mut count = 0u64;
            loop {
                let snap = reader.view();
                let end = snap.next_index();
                if end > cursor {
                    for e in snap.read(cursor..end) {
                        let (_, p) = e.map_err(|e| e.to_string())?;
                        sum = sum.wrapping_add(touch(p));
                        count += 1;
                    }
                    cursor = end;
                } else if done.load(Ordering::Acquire) && cursor >= stop_at {
                    break;
                } else {
                    std::thread::yield_now();
                }
            }
            black_box(sum);
            read_total.fetch_add(count, Ordering::Relaxed);
            Ok(t.elapsed())
        }));
    }
    while next < stop_at {
        let end = (next + a.batch as u64).min(stop_at);
        log.append(ids(next..end, &payload)).map_err(err)?;
        next = end;
        if next % 16384 < a.batch as u64 {
            pb.set_position(next - start);
        }
    }
    let writer_elapsed = t.elapsed();
    done.store(true, Ordering::Release);
    let mut readers_elapsed = Duration::ZERO;
    for h in handles {
        let d = h
            .join()
            .map_err(|_| Failure::Error("a reader thread panicked".into()))?
            .map_err(Failure::Error)?;
        readers_elapsed = readers_elapsed.max(d);
    }
    pb.finish_and_clear();
    let read = read_total.load(Ordering::Relaxed);
    phases.push(Phase {
        name: format!("appends while {} reader(s) tail", a.readers),
        entries: tail_n,
        bytes: tail_n * esz,
        elapsed: writer_elapsed,
        note: "writer throughput with readers running".into(),
        faults: None,
    });
    phases.push(Phase {
        name: format!("tail reads, {} reader(s)", a.readers),
        entries: read,
        bytes: read * esz,
        elapsed: readers_elapsed,
        note: format!(
            "every reader reads every new entry ({} each); all readers together",
            tail_n
        ),
        faults: None,
    });
    log.sync().map_err(err)?;

    // 4. Range reads of old entries (the first half of the first phase), 1,000 at a time.
    let old = (n / 2).max(1);
    let range_len = 1000u64.min(old);
    let per_reader = ((4 * n) / a.readers as u64).max(range_len);
    let pb = progress_bar(per_reader * a.readers as u64, "range reads", false);
    let t = Instant::now();
    let mut handles = Vec::new();
    for r in 0..a.readers {
        let reader = log.reader();
        let pb = pb.clone();
        handles.push(std::thread::spawn(move || -> Result<u64, String> {
            let snap = reader.view();
            let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (r as u64 + 1);
            let mut count = 0u64;
            let mut sum = 0u64;
            while count < per_reader {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let from = x % (old - range_len + 1);
                for e in snap.read(from..from + range_len) {
                    let (_, p) = e.map_err(|e| e.to_string())?;
                    sum = sum.wrapping_add(touch(p));
                    count += 1;
                }
                if count % (range_len * 64) < range_len {
                    pb.inc(range_len * 64);
                }
            }
            black_box(sum);
            Ok(count)
        }));
    }
    let mut ranged = 0;
    for h in handles {
        ranged += h
            .join()
            .map_err(|_| Failure::Error("a reader thread panicked".into()))?
            .map_err(Failure::Error)?;
    }
    let elapsed = t.elapsed();
    pb.finish_and_clear();
    phases.push(Phase {
        name: format!("range reads of old entries, {} reader(s)", a.readers),
        entries: ranged,
        bytes: ranged * esz,
        elapsed,
        note: format!("random {range_len}-entry ranges of the oldest {old} entries"),
        faults: None,
    });

    // 5. A reader parked in `wait_for`, woken by each append.
    phases.push(wakeup::run(&mut log, &mut next, &payload)?);

    // 6. Optional: the steady state (purges behind the appends, recycled segments).
    if a.steady {
        let steady = steady::Steady {
            payload: &payload,
            batch: a.batch as u64,
            segment_size: a.segment_size,
            entries: n,
        };
        phases.extend(steady.run(&mut log, &mut next)?);
    }

    // 7. Reopen in a child process: recovery time and the memory of a freshly recovered log.
    let total = next;
    let record_bytes: u64 = log.reader().raw().view().segment_bytes();
    drop(log);
    let pb = progress_bar(1, "reopen (recovery)", false);
    pb.tick();
    let child = run_reopen_child(&dir, a.segment_size)?;
    pb.finish_and_clear();
    let get = |k: &str| child.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let open_s = get("open_seconds");
    let recovered = get("entries") as u64;
    phases.push(Phase {
        name: "reopen (recovery)".into(),
        entries: recovered,
        bytes: recovered * esz,
        elapsed: Duration::from_secs_f64(open_s),
        note: format!(
            "scan of {} of records (plan {:.1} ms), warm page cache",
            bytes(get("bytes_scanned") as u64),
            get("plan_seconds") * 1e3
        ),
        faults: None,
    });
    let index_heap = get("index_heap_bytes");
    let bpe = index_heap / (recovered.max(1) as f64);
    let rss = get("vm_rss");
    let anon = get("rss_anon");
    let anon_base = get("rss_anon_before_open");
    let rss_file = get("rss_file");
    let heap_added = get("heap_added_by_open");
    let heap_peak = get("heap_peak_during_open");
    let per_entry = |b: f64| ((b / recovered.max(1) as f64) * 100.0).round() / 100.0;

    if a.json {
        let v = json!({
            "config": {
                "entries": a.entries,
                "entry_size": a.entry_size,
                "batch": a.batch,
                "sync": format!("{:?}", a.sync).to_lowercase(),
                "readers": a.readers,
                "segment_size": a.segment_size,
                "dir": dir.display().to_string(),
                "kept": a.keep,
            },
            "phases": phases.iter().map(Phase::json).collect::<Vec<_>>(),
            "durable_latency_us": { "p50": us(p50), "p99": us(p99), "p999": us(p999), "max": us(max), "samples": lat.len() },
            "total_entries": total,
            "segment_file_bytes": record_bytes,
            "memory_after_recovery": {
                "vm_rss": rss as u64,
                "rss_anon": anon as u64,
                "rss_anon_before_open": anon_base as u64,
                "rss_file": rss_file as u64,
                "index_heap_bytes": index_heap as u64,
                "index_bytes_per_entry": (bpe * 100.0).round() / 100.0,
                "rss_anon_added_by_open_per_entry": per_entry((anon - anon_base).max(0.0)),
                "heap_added_by_open": heap_added as u64,
                "heap_added_by_open_per_entry": per_entry(heap_added),
                "heap_peak_during_open": heap_peak as u64,
                "heap_peak_during_open_per_entry": per_entry(heap_peak),
            },
        });
        println!("{v}");
        return Ok(());
    }

    println!(
        "raft-mmap-log bench: {} entries x {} B payload (+24 B log id), batch {}, sync {:?}, {} reader(s), segments of {}",
        a.entries,
        a.entry_size,
        a.batch,
        a.sync,
        a.readers,
        bytes(a.segment_size)
    );
    println!(
        "directory: {}{}",
        dir.display(),
        if a.keep {
            " (kept)"
        } else {
            " (removed at exit)"
        }
    );
    println!();
    println!(
        "{:<52} {:>10} {:>9} {:>12} {:>9}",
        "phase", "entries", "time", "entries/s", "MB/s"
    );
    println!("{}", "-".repeat(96));
    for p in &phases {
        println!(
            "{:<52} {:>10} {:>8.3}s {:>12} {:>9.1}",
            p.name,
            p.entries,
            p.elapsed.as_secs_f64(),
            fmt_rate(p.per_sec()),
            p.mb_per_sec()
        );
        if !p.note.is_empty() {
            println!("    {}", p.note);
        }
    }
    println!();
    println!(
        "memory after recovery ({} entries, {} of segment files):",
        recovered,
        bytes(record_bytes)
    );
    println!(
        "    VmRSS {}   RssAnon {} ({} before open)   RssFile {} (mapped page cache)",
        bytes(rss as u64),
        bytes(anon as u64),
        bytes(anon_base as u64),
        bytes(rss_file as u64)
    );
    println!(
        "    index heap {} = {:.2} bytes/entry; anonymous memory added by open: {:.2} bytes/entry",
        bytes(index_heap as u64),
        bpe,
        (anon - anon_base).max(0.0) / recovered.max(1) as f64
    );
    println!(
        "    heap added by open {} = {:.2} bytes/entry; heap peak during open {} = {:.2} bytes/entry",
        bytes(heap_added.max(0.0) as u64),
        per_entry(heap_added),
        bytes(heap_peak.max(0.0) as u64),
        per_entry(heap_peak)
    );
    println!("MB/s counts payload bytes (1 MB = 10^6 B); reads touch every payload byte.");
    Ok(())
}

fn run_reopen_child(dir: &Path, segment_size: u64) -> Result<Value, Failure> {
    let exe =
        std::env::current_exe().map_err(|e| Failure::Error(format!("find own executable: {e}")))?;
    let out = std::process::Command::new(exe)
        .arg("bench")
        .arg("--segment-size")
        .arg(segment_size.to_string())
        .arg("--reopen-child")
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| Failure::Error(format!("start reopen process: {e}")))?;
    if !out.status.success() {
        return Err(Failure::Error(format!(
            "reopen process failed ({})",
            out.status
        )));
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| Failure::Error(format!("reopen process output: {e}")))
}

fn reopen_child(dir: &Path, segment_size: u64) -> Outcome {
    let config = Config {
        segment_size,
        ..Config::default()
    };
    let (_, anon_before, _) = proc_status();
    heap::start();
    let (heap_before, _) = heap::live_and_peak();
    let t = Instant::now();
    let log = RaftLog::<RaftTypes>::open(dir, config).map_err(err)?;
    let open = t.elapsed();
    let (heap_after, heap_peak) = heap::live_and_peak();
    let (rss, anon, file) = proc_status();
    let snap = log.reader().raw().view();
    let report = log.store().recovery_report();
    let v = json!({
        "open_seconds": open.as_secs_f64(),
        "plan_seconds": report.elapsed.as_secs_f64(),
        "entries": snap.len(),
        "bytes_scanned": report.bytes_scanned,
        "index_heap_bytes": snap.index_heap_bytes(),
        "vm_rss": rss,
        "rss_anon": anon,
        "rss_anon_before_open": anon_before,
        "rss_file": file,
        "heap_added_by_open": heap_after - heap_before,
        "heap_peak_during_open": heap_peak - heap_before,
    });
    drop(snap);
    drop(log);
    println!("{v}");
    Ok(())
}
