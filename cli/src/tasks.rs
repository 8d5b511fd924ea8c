//! `raft-mmap-log tasks`: durable 16-entry batches from T concurrent tokio tasks, each task
//! writing its own group of one shared log (`groups::Groups`), made durable three ways:
//!
//! - `callback`: `Group::flush` with a callback that completes a tokio oneshot the task
//!   awaits (what a user of the callback API writes in async code);
//! - `future`: `Group::flushed().await` (feature `tokio`);
//! - `future-uring`: the same with `Config::flush_io = FlushIo::IoUring`.
//!
//! Every (way, T) cell runs in a child process of its own on a fresh directory, in an order
//! rotated per run, with `sync()` and a pause between children. Reported per cell: batches/s,
//! p50/p99 of a batch (append to durable), and the process's CPU time per batch
//! (`getrusage`: user + system, every thread, the kernel's io_uring workers included), as
//! medians over the runs with their range.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use raft_mmap_log::groups::Groups;
use raft_mmap_log::{Config, FlushIo, WriteMode};
use serde_json::{json, Value};

use crate::bench::measure::{pct, us};
use crate::{Failure, Outcome};

/// Entries per batch.
const BATCH: u64 = 16;

/// How a task waits for its batch to be durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Way {
    /// `Group::flush` with a callback completing a oneshot channel.
    Callback,
    /// `Group::flushed().await`.
    Future,
    /// `Group::flushed().await`, the flush thread's I/O through io_uring.
    FutureUring,
}

/// Arguments of `tasks`.
#[derive(Debug, Args)]
pub struct TasksArgs {
    /// Concurrent tasks (one group each), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1u32, 8, 64])]
    tasks: Vec<u32>,
    /// The ways to compare.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Way::Callback, Way::Future, Way::FutureUring])]
    ways: Vec<Way>,
    /// Seconds per cell.
    #[arg(long, default_value_t = 2.0)]
    secs: f64,
    /// Runs of every cell (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Payload bytes per entry.
    #[arg(long, default_value_t = 256)]
    entry_size: usize,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// How records are written (`pwrite` for btrfs/ZFS).
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    write_mode: Mode,
    /// Where the children's log directories go (each a fresh subdirectory, removed after).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Run one cell in this process and print its JSON line (used by the parent).
    #[arg(long, value_enum, hide = true)]
    child: Option<Way>,
}

/// `Config::write_mode`, as a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Auto,
    Map,
    Pwrite,
}

pub fn run(a: TasksArgs) -> Outcome {
    if a.tasks.is_empty() || a.tasks.contains(&0) || a.runs == 0 || a.ways.is_empty() {
        return Err(Failure::Error(
            "--tasks needs counts of at least 1, --runs at least 1".into(),
        ));
    }
    if let Some(way) = a.child {
        let dir = a
            .dir
            .clone()
            .ok_or_else(|| Failure::Error("--child needs --dir".into()))?;
        let r = child(&a, way, a.tasks[0], &dir)?;
        println!("{r}");
        return Ok(());
    }
    parent(&a)
}

fn parent(a: &TasksArgs) -> Outcome {
    let base = match &a.dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .map_err(|e| Failure::Error(format!("scratch directory: {e}")))?;
    let exe =
        std::env::current_exe().map_err(|e| Failure::Error(format!("find own executable: {e}")))?;
    let cells: Vec<(Way, u32)> = a
        .tasks
        .iter()
        .flat_map(|&t| a.ways.iter().map(move |&w| (w, t)))
        .collect();
    let mut results: Vec<Vec<Value>> = vec![Vec::new(); cells.len()];
    for run in 0..a.runs as usize {
        for k in 0..cells.len() {
            let i = (k + run) % cells.len();
            let (way, tasks) = cells[i];
            let dir = base.path().join(format!("r{run}-c{i}"));
            settle();
            let out = Command::new(&exe)
                .args(["tasks", "--child"])
                .arg(name(way))
                .args(["--tasks", &tasks.to_string()])
                .args(["--secs", &a.secs.to_string()])
                .args(["--entry-size", &a.entry_size.to_string()])
                .args(["--workers", &a.workers.to_string()])
                .arg("--write-mode")
                .arg(name(a.write_mode))
                .arg("--dir")
                .arg(&dir)
                .output()
                .map_err(|e| Failure::Error(format!("run child: {e}")))?;
            let _ = std::fs::remove_dir_all(&dir);
            if !out.status.success() {
                return Err(Failure::Error(format!(
                    "child {way:?} T={tasks} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            let v: Value = serde_json::from_slice(&out.stdout)
                .map_err(|e| Failure::Error(format!("child output: {e}")))?;
            if !a.json {
                eprintln!(
                    "run {run} {way:?} T={tasks}: {:.0} batches/s, p99 {:.0} µs, {:.1} µs CPU/batch{}",
                    v["batches_per_sec"].as_f64().unwrap_or(0.0),
                    v["p99_us"].as_f64().unwrap_or(0.0),
                    v["cpu_us_per_batch"].as_f64().unwrap_or(0.0),
                    v["flush_io_refused"].as_str().map(|w| format!(" (io_uring refused: {w})")).unwrap_or_default(),
                );
            }
            results[i].push(v);
        }
    }
    let rows: Vec<Value> = cells
        .iter()
        .zip(&results)
        .map(|(&(way, tasks), runs)| {
            let m = |key: &str| median_range(runs.iter().filter_map(|r| r[key].as_f64()).collect());
            json!({
                "way": name(way),
                "tasks": tasks,
                "batches_per_sec": m("batches_per_sec"),
                "p50_us": m("p50_us"),
                "p99_us": m("p99_us"),
                "cpu_us_per_batch": m("cpu_us_per_batch"),
                "flush_io": runs.first().map(|r| r["flush_io"].clone()),
            })
        })
        .collect();
    if a.json {
        println!(
            "{}",
            json!({ "entry_size": a.entry_size, "batch": BATCH, "runs": a.runs, "secs": a.secs, "cells": rows })
        );
        return Ok(());
    }
    println!(
        "durable batches of {BATCH} × {} B, one group per task, medians of {} runs (min–max)",
        a.entry_size, a.runs
    );
    println!(
        "{:<13} {:>5} {:>26} {:>22} {:>24} {:>22}",
        "way", "tasks", "batches/s", "p50 µs", "p99 µs", "CPU µs/batch"
    );
    for r in &rows {
        let f = |v: &Value| {
            format!(
                "{:.0} ({:.0}–{:.0})",
                v[0].as_f64().unwrap_or(0.0),
                v[1].as_f64().unwrap_or(0.0),
                v[2].as_f64().unwrap_or(0.0)
            )
        };
        println!(
            "{:<13} {:>5} {:>26} {:>22} {:>24} {:>22}",
            r["way"].as_str().unwrap_or(""),
            r["tasks"],
            f(&r["batches_per_sec"]),
            f(&r["p50_us"]),
            f(&r["p99_us"]),
            f(&r["cpu_us_per_batch"]),
        );
    }
    Ok(())
}

/// A flag value's name.
fn name(v: impl ValueEnum) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

/// `[median, min, max]`.
fn median_range(mut v: Vec<f64>) -> [f64; 3] {
    if v.is_empty() {
        return [0.0; 3];
    }
    v.sort_by(f64::total_cmp);
    [v[v.len() / 2], v[0], v[v.len() - 1]]
}

/// Lets the previous child's write-back finish before the next one starts.
fn settle() {
    // SAFETY: `sync` takes no arguments and cannot fail.
    unsafe { libc::sync() };
    std::thread::sleep(Duration::from_millis(300));
}

/// CPU time of the whole process so far (user + system, every thread), from
/// `getrusage(RUSAGE_SELF)`.
fn cpu_time() -> Duration {
    // SAFETY: `rusage` is plain data, valid when zeroed.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `getrusage` writes the struct it is given, which lives across the call.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// One cell: `tasks` tasks for `a.secs` seconds, each appending a batch to its group and
/// waiting until it is durable, `way`'s way, then again.
fn child(a: &TasksArgs, way: Way, tasks: u32, dir: &Path) -> Result<Value, Failure> {
    let config = Config {
        flush_io: if way == Way::FutureUring {
            FlushIo::IoUring
        } else {
            FlushIo::Threads
        },
        write_mode: match a.write_mode {
            Mode::Auto => WriteMode::Auto,
            Mode::Map => WriteMode::Map,
            Mode::Pwrite => WriteMode::Pwrite,
        },
        ..Config::default()
    };
    let groups = Arc::new(Groups::open(dir, config).map_err(|e| Failure::Error(e.to_string()))?);
    let (flush_io, refused) = groups.flush_io();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.workers)
        .enable_all()
        .build()
        .map_err(|e| Failure::Error(format!("tokio runtime: {e}")))?;
    let payload: Arc<[u8]> = vec![0x5Au8; a.entry_size].into();
    let secs = Duration::from_secs_f64(a.secs);
    let (cpu0, t0) = (cpu_time(), Instant::now());
    let lat: Result<Vec<Vec<Duration>>, String> = rt.block_on(async {
        let deadline = Instant::now() + secs;
        let handles: Vec<_> = (0..u64::from(tasks))
            .map(|g| {
                let (groups, payload) = (groups.clone(), payload.clone());
                tokio::spawn(async move {
                    let group = groups.group(g + 1);
                    let mut lat = Vec::new();
                    let mut next = 0u64;
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        group
                            .append_batch((next..next + BATCH).map(|i| (i, &payload[..])))
                            .map_err(|e| e.to_string())?;
                        next += BATCH;
                        match way {
                            Way::Callback => {
                                let (tx, rx) = tokio::sync::oneshot::channel();
                                group
                                    .flush(move |r| {
                                        let _ = tx.send(r);
                                    })
                                    .map_err(|e| e.to_string())?;
                                rx.await
                                    .map_err(|e| e.to_string())?
                                    .map_err(|e| e.to_string())?;
                            }
                            Way::Future | Way::FutureUring => {
                                group.flushed().await.map_err(|e| e.to_string())?;
                            }
                        }
                        lat.push(t.elapsed());
                    }
                    Ok::<_, String>(lat)
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.push(h.await.map_err(|e| e.to_string())??);
        }
        Ok(all)
    });
    let (elapsed, cpu) = (t0.elapsed(), cpu_time().saturating_sub(cpu0));
    let mut lat: Vec<Duration> = lat.map_err(Failure::Error)?.into_iter().flatten().collect();
    lat.sort_unstable();
    let batches = lat.len() as f64;
    let at = |p: f64| us(pct(&lat, p));
    Ok(json!({
        "way": name(way),
        "tasks": tasks,
        "batches": lat.len(),
        "batches_per_sec": batches / elapsed.as_secs_f64(),
        "p50_us": at(0.50),
        "p99_us": at(0.99),
        "cpu_us_per_batch": cpu.as_secs_f64() * 1e6 / batches.max(1.0),
        "flush_io": format!("{flush_io:?}"),
        "flush_io_refused": refused,
    }))
}
