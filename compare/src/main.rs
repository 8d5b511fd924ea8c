//! Same-machine, same-run comparison of raft-mmap-log against the Rust log stores a user would
//! pick instead. `cargo run --release -p compare -- --help` for the options.
//!
//! The parent process runs each engine (and the physical-limit probes) in a child process — the
//! same binary with the hidden `--child NAME` flag — so that peak RSS is per engine. A child
//! prints one `CELL {json}` line per finished workload and a final `RSS {json}` line.

mod cells;
mod durable_long;
mod engines;
mod first_touch;
mod groups;
mod harness;
#[cfg(feature = "ours")]
mod openraft_cluster;
mod openraft_read;
mod raft_cluster;
mod runs;
mod steady;
mod sys;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use engines::ENGINES;
use harness::{Engine, Params, OPT_IN, WORKLOADS};

const USAGE: &str = "\
compare: run the same workloads against raft-mmap-log and the crates a user would pick instead

USAGE: cargo run --release -p compare -- [OPTIONS]
       cargo run --release -p compare -- openraft-read [--help]   (openraft's read path)
       cargo run --release -p compare -- groups [--help]          (many groups in one process)
       cargo run --release -p compare -- cluster [--help]         (3 raft-rs nodes, many regions)
       cargo run --release -p compare -- openraft-cluster [--help] (3 openraft nodes, G groups)

OPTIONS:
  --entries N        entries in the append / bulk / read / recovery / first_touch logs
                     (default 1000000; quick 100000)
  --entry-size B     payload bytes per entry, >= 8 (default 256)
  --only NAME[,..]   only these workloads (append, bulk_sync, durable, read, recovery,
                     first_touch, limits, steady, durable_long) and/or engines (ours, ours-raft, raft-log, raft-engine, hiqlite-wal,
                     okaywal). `steady` (appends and durable batches with purges keeping the
                     last 4 segments, files recycled; writes ~17 segments per engine) and
                     `durable_long` (durable 16-entry batches over 10 new segments, nothing
                     purged) are opt-in: they run only when named here, never by default
  --quick            small, fast run
  --json             print machine-readable JSON instead of the table
  --timeout SECS     per-engine child process limit (default 600; quick 180)
  --runs N           whole runs, engine order rotated, the machine settled before every child
                     process; medians with min-max ranges (default 5; quick 1)
  -h, --help         this text";

struct Cli {
    params: Params,
    quick: bool,
    json: bool,
    timeout: Duration,
    runs: usize,
    child: Option<String>,
    root: Option<std::path::PathBuf>,
    passthrough: Vec<String>,
}

fn die(msg: &str) -> ! {
    eprintln!("compare: {msg}\n\n{USAGE}");
    std::process::exit(2);
}

fn parse_cli() -> Cli {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut entries = None;
    let mut entry_size = 256usize;
    let mut only = Vec::new();
    let mut quick = false;
    let mut json = false;
    let mut timeout = None;
    let mut runs = None;
    let mut child = None;
    let mut root = None;
    let mut passthrough = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| -> String {
            it.next()
                .cloned()
                .unwrap_or_else(|| die(&format!("{name} needs a value")))
        };
        match a.as_str() {
            "--entries" => {
                let v = val(a);
                entries = Some(v.parse::<u64>().unwrap_or_else(|_| die("bad --entries")));
                passthrough.extend([a.clone(), v]);
            }
            "--entry-size" => {
                let v = val(a);
                entry_size = v.parse().unwrap_or_else(|_| die("bad --entry-size"));
                passthrough.extend([a.clone(), v]);
            }
            "--only" => {
                let v = val(a);
                for name in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if !WORKLOADS.contains(&name)
                        && !OPT_IN.contains(&name)
                        && name != "limits"
                        && !ENGINES.contains(&name)
                    {
                        die(&format!("unknown workload or engine {name:?}"));
                    }
                    only.push(name.to_string());
                }
                passthrough.extend([a.clone(), v]);
            }
            "--quick" => {
                quick = true;
                passthrough.push(a.clone());
            }
            "--json" => json = true,
            "--timeout" => {
                timeout = Some(
                    val(a)
                        .parse::<u64>()
                        .unwrap_or_else(|_| die("bad --timeout")),
                )
            }
            "--runs" => {
                let v = val(a);
                let n = v.parse::<usize>().ok().filter(|&n| n > 0);
                runs = Some(n.unwrap_or_else(|| die("--runs needs a number >= 1")));
            }
            "--child" => child = Some(val(a)),
            "--root" => root = Some(std::path::PathBuf::from(val(a))),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => die(&format!("unknown argument {other:?}")),
        }
    }
    if entry_size < 8 {
        die("--entry-size must be at least 8 (the index is stamped in each payload)");
    }
    let entries = entries.unwrap_or(if quick { 100_000 } else { 1_000_000 });
    if entries < 2 {
        die("--entries must be at least 2");
    }
    let params = Params {
        entries,
        entry_size,
        batch: 64,
        durable_batches: if quick { 200 } else { 2000 },
        durable_batch: 16,
        read_range: 1000,
        read_secs: if quick { 0.25 } else { 1.0 },
        only,
    };
    Cli {
        params,
        runs: runs.unwrap_or(if quick { 1 } else { 5 }),
        quick,
        json,
        timeout: Duration::from_secs(timeout.unwrap_or(if quick { 180 } else { 600 })),
        child,
        root,
        passthrough,
    }
}

fn version_of(engine: &str) -> &'static str {
    match engine {
        "ours" | "ours-raft" => env!("VER_OURS"),
        "raft-log" => env!("VER_RAFT_LOG"),
        "raft-engine" => env!("VER_RAFT_ENGINE"),
        "hiqlite-wal" => env!("VER_HIQLITE_WAL"),
        "okaywal" => env!("VER_OKAYWAL"),
        _ => "",
    }
}

// ---------------------------------------------------------------- child side

fn run_child(name: &str, cli: &Cli) {
    sys::start_anon_sampler();
    // The parent owns (and removes) the directory, even if this process is killed.
    let root = tempfile::Builder::new()
        .prefix(&format!("compare-{name}-"))
        .tempdir_in(cli.root.clone().unwrap_or_else(std::env::temp_dir))
        .unwrap_or_else(|e| die(&format!("cannot create temp dir: {e}")));
    let p = &cli.params;
    match name {
        "limits" => {
            let mem = sys::memcpy_limit(cli.quick);
            println!(
                "CELL {}",
                json!({"workload": "memcpy", "cell": {"ok": mem}})
            );
            let fs = match sys::fdatasync_limit(root.path(), cli.quick) {
                Ok(v) => json!({ "ok": v }),
                Err(e) => json!({ "err": format!("error: {e}") }),
            };
            println!("CELL {}", json!({"workload": "fdatasync", "cell": fs}));
            let bytes = p.entries * p.entry_size as u64;
            let w = match sys::file_write_limit(root.path(), bytes, cli.quick) {
                Ok(v) => json!({ "ok": v }),
                Err(e) => json!({ "err": format!("error: {e}") }),
            };
            println!("CELL {}", json!({"workload": "file_write", "cell": w}));
        }
        "durable" => {
            let engines = selected_engines(p);
            let mut parts: Vec<(String, harness::R<Box<dyn harness::Stepper>>)> = Vec::new();
            parts.push((
                PROBE.to_string(),
                sys::FsyncProbe::open(&root.path().join("probe"))
                    .map(|s| Box::new(s) as Box<dyn harness::Stepper>)
                    .map_err(harness::err("probe file")),
            ));
            for e in engines {
                let dir = root.path().join(e);
                let r: harness::R<Box<dyn harness::Stepper>> = match e {
                    "ours" => stepper::<Ours>(&dir, p),
                    "ours-raft" => stepper::<OursRaft>(&dir, p),
                    "raft-log" => stepper::<engines::raftlog::RaftLogEngine>(&dir, p),
                    "raft-engine" => stepper::<engines::raftengine::RaftEngineEngine>(&dir, p),
                    "hiqlite-wal" => stepper::<engines::hiqlite::HiqliteEngine>(&dir, p),
                    "okaywal" => stepper::<engines::okaywal::OkayWalEngine>(&dir, p),
                    _ => unreachable!(),
                };
                parts.push((e.to_string(), r));
            }
            harness::run_durable_interleaved(p, parts);
        }
        "ours" => run_engine_child::<Ours>(p, root.path()),
        "ours-raft" => run_engine_child::<OursRaft>(p, root.path()),
        "raft-log" => run_engine_child::<engines::raftlog::RaftLogEngine>(p, root.path()),
        "raft-engine" => run_engine_child::<engines::raftengine::RaftEngineEngine>(p, root.path()),
        "hiqlite-wal" => run_engine_child::<engines::hiqlite::HiqliteEngine>(p, root.path()),
        "okaywal" => run_engine_child::<engines::okaywal::OkayWalEngine>(p, root.path()),
        other => die(&format!("unknown child {other:?}")),
    }
    println!("RSS {}", sys::rss());
}

fn stepper<E: Engine + 'static>(dir: &Path, p: &Params) -> harness::R<Box<dyn harness::Stepper>> {
    harness::DurableRun::<E>::open(dir, p).map(|s| Box::new(s) as Box<dyn harness::Stepper>)
}

/// Name of the bare pwrite + fdatasync participant of the interleaved durable workload.
const PROBE: &str = "bare 16 KiB pwrite+fdatasync";

fn selected_engines(p: &Params) -> Vec<&'static str> {
    let filter: Vec<&str> = p
        .only
        .iter()
        .map(String::as_str)
        .filter(|o| ENGINES.contains(o))
        .collect();
    ENGINES
        .iter()
        .copied()
        .filter(|e| filter.is_empty() || filter.contains(e))
        .collect()
}

fn run_engine_child<E: Engine>(p: &Params, root: &Path) {
    harness::run_all::<E>(p, root);
}

#[cfg(feature = "ours")]
type Ours = engines::ours::OursEngine;
#[cfg(feature = "ours")]
type OursRaft = engines::ours_raft::OursRaftEngine;

/// Stand-in when built without the root crate: every cell says why.
#[cfg(not(feature = "ours"))]
type Ours = NoOurs;
#[cfg(not(feature = "ours"))]
type OursRaft = NoOurs;

#[cfg(not(feature = "ours"))]
struct NoOurs;

#[cfg(not(feature = "ours"))]
impl Engine for NoOurs {
    fn open(_: &Path, _: harness::Mode) -> harness::R<Self> {
        Err(harness::Fail::Unsupported(
            "compare was built with --no-default-features (feature `ours` off)".into(),
        ))
    }
    fn append(&mut self, _: &harness::Batch) -> harness::R<()> {
        unreachable!()
    }
    fn sync(&mut self) -> harness::R<()> {
        unreachable!()
    }
    fn read_range(&mut self, _: u64, _: u64, _: &mut dyn FnMut(u64, &[u8])) -> harness::R<()> {
        unreachable!()
    }
    fn last_index(&mut self) -> harness::R<Option<u64>> {
        unreachable!()
    }
    fn close(self) -> harness::R<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------- parent side

struct ChildOut {
    cells: Map<String, Value>,
    rss: Value,
    secs: f64,
}

/// Runs `--child name`, collecting its lines; a child that dies or times out still yields the
/// cells it finished, and every missing cell says what happened.
fn spawn_child(name: &str, cli: &Cli, expected: &[&str]) -> ChildOut {
    let exe = std::env::current_exe().unwrap_or_else(|e| die(&format!("current_exe: {e}")));
    let t = Instant::now();
    let root = tempfile::Builder::new()
        .prefix("compare-")
        .tempdir_in(std::env::temp_dir())
        .unwrap_or_else(|e| die(&format!("cannot create temp dir: {e}")));
    let mut child = match Command::new(exe)
        .arg("--child")
        .arg(name)
        .arg("--root")
        .arg(root.path())
        .args(&cli.passthrough)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => die(&format!("cannot start child: {e}")),
    };
    let stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out_thread = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            lines.push(l);
        }
        lines
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if t.elapsed() > cli.timeout => {
                timed_out = true;
                let _ = child.kill(); // our own child, by its handle
                break child.wait().ok();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(_) => break None,
        }
    };
    let lines = out_thread.join().unwrap_or_default();
    let err_text = err_thread.join().unwrap_or_default();
    let mut cells = Map::new();
    let mut rss = Value::Null;
    for l in &lines {
        if let Some(j) = l.strip_prefix("CELL ") {
            if let Ok(v) = serde_json::from_str::<Value>(j) {
                let w = v["workload"].as_str().unwrap_or("?").to_string();
                cells.insert(w, v["cell"].clone());
            }
        } else if let Some(j) = l.strip_prefix("RSS ") {
            rss = serde_json::from_str(j).unwrap_or(Value::Null);
        }
    }
    let ok_exit = status.map(|s| s.success()).unwrap_or(false);
    if timed_out || !ok_exit {
        let tail: Vec<&str> = err_text.lines().rev().take(6).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        let why = if timed_out {
            format!(
                "error: child killed after the {} s limit",
                cli.timeout.as_secs()
            )
        } else {
            format!(
                "error: child process failed ({}){}",
                status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "no status".into()),
                if tail.is_empty() {
                    String::new()
                } else {
                    format!("; stderr: {}", tail.join(" | "))
                }
            )
        };
        for w in expected {
            cells
                .entry(w.to_string())
                .or_insert_with(|| json!({ "err": why.clone() }));
        }
    }
    ChildOut {
        cells,
        rss,
        secs: t.elapsed().as_secs_f64(),
    }
}

fn read_first_line(path: &str, prefix: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "?".into())
}

fn machine() -> Value {
    let tmp = std::env::temp_dir();
    // filesystem of the temp dir: longest mount point prefix in /proc/mounts
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut fs = ("?".to_string(), 0usize);
    for l in mounts.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() > 2 && tmp.starts_with(f[1]) && f[1].len() >= fs.1 {
            fs = (format!("{} ({})", f[2], f[0]), f[1].len());
        }
    }
    json!({
        "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        "cpu": read_first_line("/proc/cpuinfo", "model name"),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "temp_dir": tmp.display().to_string(),
        "temp_fs": fs.0,
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("openraft-read") {
        openraft_read::main(&args[1..]);
        return;
    }
    if args.first().map(String::as_str) == Some("openraft-cluster") {
        #[cfg(feature = "ours")]
        openraft_cluster::main(&args[1..]);
        #[cfg(not(feature = "ours"))]
        die("openraft-cluster needs the `ours` feature");
        return;
    }
    if args.first().map(String::as_str) == Some("cluster") {
        raft_cluster::main(&args[1..]);
        return;
    }
    if args.first().map(String::as_str) == Some("groups") {
        groups::main(&args[1..]);
        return;
    }
    let cli = parse_cli();
    if let Some(name) = &cli.child {
        run_child(name, &cli);
        return;
    }
    let p = &cli.params;
    let engines = selected_engines(p);
    let workloads: Vec<&str> = WORKLOADS
        .iter()
        .chain(OPT_IN.iter())
        .copied()
        .filter(|w| p.wants(w))
        .collect();
    let mut reports = Vec::new();
    for run in 0..cli.runs {
        if cli.runs > 1 {
            eprintln!("compare: run {} of {}", run + 1, cli.runs);
        }
        reports.push(one_run(&cli, &runs::rotated(&engines, run), &workloads));
    }
    let (mut report, lo, hi) = runs::aggregate(&reports);
    // The parameters are the same in every run: the first run's, as given (not medians).
    if let Some(first) = reports.first() {
        report["params"] = first["params"].clone();
    }
    report["runs"] = json!(cli.runs);
    if cli.json {
        if cli.runs > 1 {
            report["min"] = lo;
            report["max"] = hi;
            report["each_run"] = Value::Array(reports);
        }
        println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    } else {
        print!("{}", report::render(&report, &engines, &workloads));
        if cli.runs > 1 {
            runs::render_ranges(&lo, &hi, &engines, &workloads, cli.runs);
        }
    }
}

/// One whole run: the limits, each engine in its own child process (in the order given, the
/// machine settled before each), then the interleaved durable workload. Returns its report.
fn one_run(cli: &Cli, engines: &[&str], workloads: &[&str]) -> Value {
    let p = &cli.params;
    let t0 = Instant::now();
    let machine_at_start = machine();
    let mut limits = Map::new();
    let mut settled = "";
    if p.wants("limits") {
        settled = runs::settle();
        eprintln!("compare: measuring physical limits ...");
        limits = spawn_child("limits", cli, &["memcpy", "fdatasync", "file_write"]).cells;
    }
    let mut results = Map::new();
    let per_engine: Vec<&str> = workloads
        .iter()
        .copied()
        .filter(|w| *w != "durable")
        .collect();
    for e in engines {
        if per_engine.is_empty() {
            results.insert(
                e.to_string(),
                json!({"version": version_of(e), "cells": {}, "rss": null}),
            );
            continue;
        }
        settled = runs::settle();
        eprintln!("compare: running {e} {} ...", version_of(e));
        let out = spawn_child(e, cli, &per_engine);
        eprintln!("compare:   {e} done in {:.1} s", out.secs);
        results.insert(
            e.to_string(),
            json!({"version": version_of(e), "cells": out.cells, "rss": out.rss, "child_secs": out.secs}),
        );
    }
    if workloads.contains(&"durable") {
        settled = runs::settle();
        eprintln!("compare: durable batches, all engines interleaved in one process ...");
        let mut names: Vec<&str> = engines.to_vec();
        names.push(PROBE);
        let out = spawn_child("durable", cli, &names);
        eprintln!("compare:   durable done in {:.1} s", out.secs);
        for e in engines {
            if let Some(c) = out.cells.get(*e) {
                results[*e]["cells"]["durable"] = c.clone();
            }
        }
        if let Some(c) = out.cells.get(PROBE) {
            limits.insert("fdatasync_interleaved".into(), c.clone());
        }
    }
    json!({
        "machine": machine_at_start,
        "loadavg_at_end": machine()["loadavg"].clone(),
        "settled": settled,
        "params": {
            "entries": p.entries, "entry_size": p.entry_size, "append_batch": p.batch,
            "durable_batches": p.durable_batches, "durable_batch": p.durable_batch,
            "read_range": p.read_range, "read_secs": p.read_secs,
            "segment_bytes": engines::SEGMENT_BYTES, "quick": cli.quick,
        },
        "versions": {
            "raft-mmap-log": env!("VER_OURS"), "raft-log": env!("VER_RAFT_LOG"),
            "raft-engine": env!("VER_RAFT_ENGINE"), "raft-proto": env!("VER_RAFT_PROTO"),
            "hiqlite-wal": env!("VER_HIQLITE_WAL"), "openraft (for hiqlite-wal)": env!("VER_OPENRAFT"),
            "okaywal": env!("VER_OKAYWAL"),
        },
        "limits": limits,
        "engines": results,
        "total_secs": t0.elapsed().as_secs_f64(),
    })
}

mod report;
