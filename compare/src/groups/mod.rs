//! `compare groups`: many Raft groups in one process — raft-mmap-log's shared `Groups` log
//! against raft-engine (one `Engine`, a region per group) and against one `Store` per group in
//! separate directories.
//!
//! Each (cell, engine) runs in its own child process (the same binary with the hidden
//! `--child` flag) in a fresh directory, so thread counts and RSS are the engine's alone. The
//! engine order is rotated from cell to cell and run to run; between two children the parent
//! calls `sync()` and waits a moment, so that one engine's write-back does not land in the
//! next one's timing.

#[cfg(feature = "ours")]
mod bare;
mod dirs;
#[cfg(feature = "ours")]
mod ours;
mod raftengine;
pub(crate) mod report;
pub(crate) mod work;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use work::{Cell, DIRS_MAX_GROUPS, READY_GROUPS};

const USAGE: &str = "\
compare groups: many groups in one process — ours (one Groups log), raft-engine (one Engine,
a region per group), dirs (one raft_mmap_log::Store per group, separate directories), and
the machine's limit, bare (each write's framed bytes pwritten into one file of written blocks,
then fdatasync: no index, no checksum, no reads)

USAGE: cargo run --release -p compare -- groups [OPTIONS]

Workloads (payload 256 B, 16 entries per group per write, every write durable):
  ready   G = 256 groups, one writer; each round writes K groups (round-robin) and makes them
          durable at once; K in 1, 16, 64
  indep   T writer threads, each doing append + sync round-robin over its own groups
          (thread t owns groups t, t+T, ...); T in 1, 2, 8 and G in 1, 16, 256, 4096, G >= T

OPTIONS:
  --quick            1 s per cell and 1 run (about 3 minutes; a smoke check, no ranges)
  --secs S           seconds per cell (default 3)
  --runs N           repetitions of every cell (default 3; the full default run takes about
                     12 minutes, --runs 5 about 20)
  --only NAME[,..]   engines (ours, raft-engine, bare, dirs; diagnostics: ours-zerofill = ours
                     with Allocation::ZeroFill, ours-pwrite = ours with WriteMode::Pwrite,
                     ours-sharded = 8 Groups logs, group n in log n % 8)
                     and/or workloads (ready, indep)
  --cells SPEC[,..]  only these cells: ready:G:K or indep:T:G (e.g. indep:8:256)
  --entry-size B     payload bytes, >= 8 (default 256)
  --out FILE         also write the raw results (every run) as JSON to FILE
  --json             print the JSON instead of the tables
  --render FILE      print the tables of a report saved with --out (runs nothing)
  --timeout SECS     per-child limit (default 120)
  -h, --help         this text";

pub const ENGINES: [&str; 7] = [
    "ours",
    "raft-engine",
    "bare",
    "dirs",
    "ours-zerofill",
    "ours-pwrite",
    "ours-sharded",
];

/// Run when `--only` names no engine (`ours-zerofill`, `ours-pwrite` and `ours-sharded` are
/// diagnostics, run when named).
const WORKLOADS: [&str; 2] = ["ready", "indep"];

const DEFAULT_ENGINES: [&str; 4] = ["ours", "raft-engine", "bare", "dirs"];

struct Args {
    secs: f64,
    runs: usize,
    entry_size: usize,
    only: Vec<String>,
    cells: Vec<Cell>,
    out: Option<PathBuf>,
    render: Option<PathBuf>,
    json: bool,
    timeout: Duration,
    quick: bool,
    child: Option<String>,
    cell: Option<String>,
    root: Option<PathBuf>,
}

fn die(msg: &str) -> ! {
    eprintln!("compare groups: {msg}\n\n{USAGE}");
    std::process::exit(2);
}

fn parse(args: &[String]) -> Args {
    let mut a = Args {
        secs: 0.0,
        runs: 3,
        entry_size: 256,
        only: Vec::new(),
        cells: Vec::new(),
        out: None,
        render: None,
        json: false,
        timeout: Duration::from_secs(120),
        quick: false,
        child: None,
        cell: None,
        root: None,
    };
    let mut secs = None;
    let mut runs = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .unwrap_or_else(|| die(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--quick" => a.quick = true,
            "--secs" => {
                secs = Some(
                    val()
                        .parse::<f64>()
                        .ok()
                        .filter(|s| *s > 0.0)
                        .unwrap_or_else(|| die("bad --secs")),
                )
            }
            "--runs" => runs = Some(val().parse().unwrap_or_else(|_| die("bad --runs"))),
            "--entry-size" => {
                a.entry_size = val().parse().unwrap_or_else(|_| die("bad --entry-size"))
            }
            "--only" => {
                for n in val().split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if !ENGINES.contains(&n) && n != "ready" && n != "indep" {
                        die(&format!("unknown engine or workload {n:?}"));
                    }
                    a.only.push(n.to_string());
                }
            }
            "--cells" => {
                for spec in val().split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    a.cells.push(
                        Cell::parse(spec).unwrap_or_else(|| die(&format!("bad cell {spec:?}"))),
                    );
                }
            }
            "--out" => a.out = Some(PathBuf::from(val())),
            "--render" => a.render = Some(PathBuf::from(val())),
            "--json" => a.json = true,
            "--timeout" => {
                a.timeout =
                    Duration::from_secs(val().parse().unwrap_or_else(|_| die("bad --timeout")))
            }
            "--child" => a.child = Some(val()),
            "--cell" => a.cell = Some(val()),
            "--root" => a.root = Some(PathBuf::from(val())),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => die(&format!("unknown argument {other:?}")),
        }
    }
    if a.entry_size < 8 {
        die("--entry-size must be at least 8 (the index is stamped in each payload)");
    }
    a.runs = runs.unwrap_or(if a.quick { 1 } else { 3 });
    if a.runs == 0 {
        die("--runs must be at least 1");
    }
    a.secs = secs.unwrap_or(if a.quick { 1.0 } else { 3.0 });
    a
}

/// Runs the mode with the arguments after `groups`.
pub fn main(args: &[String]) {
    let a = parse(args);
    if let Some(engine) = &a.child {
        run_child(engine, &a);
        return;
    }
    if let Some(path) = &a.render {
        let report: Value = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_else(|| die(&format!("cannot read a report from {}", path.display())));
        let engines: Vec<&str> = ENGINES
            .iter()
            .copied()
            .filter(|e| {
                report["results"]
                    .as_object()
                    .is_some_and(|r| r.values().any(|c| c.get(*e).is_some()))
            })
            .collect();
        let cells: Vec<Cell> = cells(&a)
            .into_iter()
            .filter(|c| report["results"].get(c.spec()).is_some())
            .collect();
        print!("{}", report::render(&report, &engines, &cells));
        return;
    }
    run_parent(&a);
}

// ---------------------------------------------------------------- child side

fn run_child(engine: &str, a: &Args) {
    crate::sys::start_anon_sampler();
    let cell = a
        .cell
        .as_deref()
        .and_then(Cell::parse)
        .unwrap_or_else(|| die("--child needs a valid --cell"));
    let root = a.root.clone().unwrap_or_else(std::env::temp_dir);
    let dir = root.join(format!("{engine}-{}", cell.spec().replace(':', "-")));
    let (secs, size) = (a.secs, a.entry_size);
    let r = std::panic::catch_unwind(|| match engine {
        #[cfg(feature = "ours")]
        "ours" => work::run_cell::<ours::OursGroups<{ ours::DEFAULT }>>(&dir, cell, secs, size),
        #[cfg(feature = "ours")]
        "ours-zerofill" => {
            work::run_cell::<ours::OursGroups<{ ours::ZERO_FILL }>>(&dir, cell, secs, size)
        }
        #[cfg(feature = "ours")]
        "ours-sharded" => work::run_cell::<ours::OursSharded>(&dir, cell, secs, size),
        #[cfg(feature = "ours")]
        "ours-pwrite" => {
            work::run_cell::<ours::OursGroups<{ ours::PWRITE }>>(&dir, cell, secs, size)
        }
        #[cfg(feature = "ours")]
        "dirs" => work::run_cell::<dirs::Dirs>(&dir, cell, secs, size),
        "raft-engine" => work::run_cell::<raftengine::RaftEngineGroups>(&dir, cell, secs, size),
        "bare" => work::run_cell::<bare::Bare>(&dir, cell, secs, size),
        other => Err(crate::harness::Fail::Unsupported(format!(
            "engine {other:?} not built (feature `ours` off?)"
        ))),
    });
    let v = match r {
        Ok(Ok(v)) => json!({ "ok": v }),
        Ok(Err(f)) => json!({ "err": f.text() }),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic".into());
            json!({ "err": format!("error: panicked: {msg}") })
        }
    };
    println!("RESULT {v}");
}

// ---------------------------------------------------------------- parent side

/// Whether `name` (one of `all`) is selected: named in `--only`, or in `default` when
/// `--only` names none of `all`.
fn wanted(a: &Args, name: &str, all: &[&str], default: &[&str]) -> bool {
    let chosen: Vec<&String> = a
        .only
        .iter()
        .filter(|o| all.contains(&o.as_str()))
        .collect();
    if chosen.is_empty() {
        return default.contains(&name);
    }
    chosen.iter().any(|o| *o == name)
}

fn cells(a: &Args) -> Vec<Cell> {
    if !a.cells.is_empty() {
        return a.cells.clone();
    }
    let mut v = Vec::new();
    if wanted(a, "ready", &WORKLOADS, &WORKLOADS) {
        for k in [1, 16, 64] {
            v.push(Cell::Ready {
                groups: READY_GROUPS,
                k,
            });
        }
    }
    if wanted(a, "indep", &WORKLOADS, &WORKLOADS) {
        for threads in [1, 2, 8] {
            for groups in [1u64, 16, 256, 4096] {
                if groups >= threads as u64 {
                    v.push(Cell::Indep { threads, groups });
                }
            }
        }
    }
    v
}

/// Runs one child; its `RESULT` cell, or an error cell saying what happened.
fn spawn(engine: &str, cell: Cell, a: &Args, root: &Path) -> Value {
    let mut args: Vec<String> = [
        "groups",
        "--child",
        engine,
        "--cell",
        &cell.spec(),
        "--root",
    ]
    .map(String::from)
    .to_vec();
    args.push(root.display().to_string());
    args.extend(["--secs".into(), a.secs.to_string()]);
    args.extend(["--entry-size".into(), a.entry_size.to_string()]);
    run_for_result(&args, a.timeout)
}

/// Runs this binary with `args` in a child process, for at most `timeout`; the JSON of the
/// child's `RESULT` line, or an error cell saying what happened. Used by `compare cluster`
/// too.
pub(crate) fn run_for_result(args: &[String], timeout: Duration) -> Value {
    let exe = std::env::current_exe().unwrap_or_else(|e| die(&format!("current_exe: {e}")));
    let t = Instant::now();
    let mut child = match Command::new(exe)
        .args(args)
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
    let out = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let errt = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if t.elapsed() > timeout => {
                timed_out = true;
                let _ = child.kill(); // our own child, by its handle
                break child.wait().ok();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break None,
        }
    };
    let lines = out.join().unwrap_or_default();
    let err_text = errt.join().unwrap_or_default();
    for l in &lines {
        if let Some(j) = l.strip_prefix("RESULT ") {
            if let Ok(v) = serde_json::from_str::<Value>(j) {
                return v;
            }
        }
    }
    let tail: Vec<&str> = err_text.lines().rev().take(6).collect::<Vec<_>>();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    let why = if timed_out {
        format!("child killed after the {} s limit", timeout.as_secs())
    } else {
        format!(
            "child failed ({}); stderr: {}",
            status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "no status".into()),
            tail.join(" | ")
        )
    };
    json!({ "err": format!("error: {why}") })
}

/// Lets the previous child's dirty pages reach the disk before the next child starts.
pub(crate) fn settle() {
    // SAFETY: plain syscall, no arguments.
    unsafe { libc::sync() };
    std::thread::sleep(Duration::from_millis(300));
}

fn configs() -> Value {
    let mut m = Map::new();
    #[cfg(feature = "ours")]
    {
        for (name, v) in [
            ("ours", ours::DEFAULT),
            ("ours-zerofill", ours::ZERO_FILL),
            ("ours-pwrite", ours::PWRITE),
        ] {
            m.insert(name.into(), json!(format!("{:?}", ours::config(v))));
        }
        m.insert("dirs".into(), json!(format!("{:?}", dirs::config())));
    }
    m.insert(
        "raft-engine".into(),
        json!("target_file_size 64 MiB, batch_compression_threshold 0, the rest default"),
    );
    Value::Object(m)
}

fn run_parent(a: &Args) {
    let engines: Vec<&str> = ENGINES
        .iter()
        .copied()
        .filter(|e| wanted(a, e, &ENGINES, &DEFAULT_ENGINES))
        .collect();
    let cells = cells(a);
    if engines.is_empty() || cells.is_empty() {
        die("nothing selected");
    }
    let root = tempfile::Builder::new()
        .prefix("compare-groups-")
        .tempdir_in(std::env::temp_dir())
        .unwrap_or_else(|e| die(&format!("cannot create temp dir: {e}")));
    let t0 = Instant::now();
    let machine = crate::machine();
    // results[cell spec][engine] = [one cell per run]
    let mut results = Map::new();
    for run in 0..a.runs {
        for (ci, cell) in cells.iter().enumerate() {
            let n = engines.len();
            for j in 0..n {
                let engine = engines[(j + run + ci) % n];
                let v = if engine == "dirs" && cell.groups() > DIRS_MAX_GROUPS {
                    json!({ "skip": format!("not run: G > {}", DIRS_MAX_GROUPS) })
                } else {
                    let run_root = root.path().join(format!("run{run}"));
                    let _ = std::fs::create_dir_all(&run_root);
                    let v = spawn(engine, *cell, a, &run_root);
                    let _ = std::fs::remove_dir_all(&run_root);
                    settle();
                    v
                };
                eprintln!(
                    "compare groups: run {}/{} {:<16} {:<12} {}",
                    run + 1,
                    a.runs,
                    cell.spec(),
                    engine,
                    report::one_line(&v)
                );
                let per_cell = results
                    .entry(cell.spec())
                    .or_insert_with(|| json!({}))
                    .as_object_mut()
                    .expect("object");
                per_cell
                    .entry(engine.to_string())
                    .or_insert_with(|| json!([]))
                    .as_array_mut()
                    .expect("array")
                    .push(v);
            }
        }
    }
    let report = json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "machine": machine,
        "loadavg_at_end": crate::machine()["loadavg"].clone(),
        "params": {
            "secs_per_cell": a.secs, "runs": a.runs, "entry_size": a.entry_size,
            "entries_per_group_write": work::PER_GROUP, "ready_groups": READY_GROUPS,
        },
        "config": configs(),
        "versions": {
            "raft-mmap-log": env!("VER_OURS"), "raft-engine": env!("VER_RAFT_ENGINE"),
        },
        "results": results,
        "total_secs": t0.elapsed().as_secs_f64(),
    });
    if let Some(path) = &a.out {
        let text = serde_json::to_string_pretty(&report).expect("json");
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("compare groups: cannot write {}: {e}", path.display());
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    } else {
        print!("{}", report::render(&report, &engines, &cells));
    }
}
