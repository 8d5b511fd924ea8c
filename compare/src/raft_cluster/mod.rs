//! `compare cluster`: 3 raft-rs nodes in one process, G regions, durable client writes —
//! the `raft_rs_multi` example's nodes and Ready loop (its modules, included here) on each
//! backend: ours with one shared log per node, ours with a directory per region, raft-engine
//! (one `Engine` per node), and raft-rs's `MemStorage` (no disk, the ceiling).
//!
//! Each (backend, G, run) is a child process (the same binary with the hidden `--child`
//! flag) in a fresh directory; the backend order rotates from cell to cell and run to run,
//! and the parent syncs and waits a moment between children.

#[path = "../../../examples/raft_rs_multi/backend.rs"]
mod backend;
mod bench;
#[path = "../../../examples/raft_rs_multi/cluster.rs"]
#[allow(dead_code)] // the example's lifecycle calls
mod cluster;
mod mem;
#[path = "../../../examples/raft_rs_cluster/network.rs"]
mod network;
#[path = "../../../examples/raft_rs_multi/node.rs"]
#[allow(dead_code)] // the example's lifecycle calls
mod node;
#[cfg(feature = "ours")]
#[path = "../../../examples/raft_rs_multi/ours.rs"]
mod ours;
mod raftengine;
mod report;
#[path = "../../../examples/raft_rs_cluster/state_machine.rs"]
#[allow(dead_code)]
mod state_machine;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

const USAGE: &str = "\
compare cluster: 3 raft-rs nodes in one process, G regions, durable writes — ours (one shared
log per node), ours-dirs (a directory per region per node), raft-engine (one Engine per node),
mem (raft-rs MemStorage, no disk: the ceiling)

USAGE: cargo run --release -p compare -- cluster [OPTIONS]

Each cell: the regions elect leaders spread over the nodes; a client keeps 64 writes in
flight in total, keys hashed to the regions, each acknowledged once applied on its leader;
writes/s and latency over --secs; then node 3 is stopped, writes go on for a second, node 3
is restarted (reopen) and caught up in every region (catch-up, from the restart); at the end
every region must agree on every node and hold every acknowledged key.

OPTIONS:
  --groups G[,..]    regions (default 1,16,64)
  --only NAME[,..]   backends (ours, ours-dirs, raft-engine, mem)
  --runs N           repetitions of every cell (default 3; quick 1)
  --secs S           seconds of measured writes per cell (default 5; quick 2)
  --in-flight N      client writes in flight (default 64)
  --quick            short cells, one run
  --out FILE         also write the raw results as JSON to FILE
  --json             print the JSON instead of the tables
  --timeout SECS     per-child limit (default 180)
  -h, --help         this text";

pub const BACKENDS: [&str; 4] = ["ours", "ours-dirs", "raft-engine", "mem"];

struct Args {
    groups: Vec<u64>,
    only: Vec<String>,
    runs: usize,
    secs: f64,
    in_flight: usize,
    out: Option<PathBuf>,
    json: bool,
    timeout: Duration,
    child: Option<String>,
    root: Option<PathBuf>,
}

fn die(msg: &str) -> ! {
    eprintln!("compare cluster: {msg}\n\n{USAGE}");
    std::process::exit(2);
}

fn parse(args: &[String]) -> Args {
    let mut a = Args {
        groups: vec![1, 16, 64],
        only: Vec::new(),
        runs: 3,
        secs: 5.0,
        in_flight: 64,
        out: None,
        json: false,
        timeout: Duration::from_secs(180),
        child: None,
        root: None,
    };
    let (mut runs, mut secs, mut quick) = (None, None, false);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .unwrap_or_else(|| die(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--groups" => {
                a.groups = val()
                    .split(',')
                    .map(|g| g.trim().parse().ok().filter(|&g| g > 0))
                    .collect::<Option<_>>()
                    .unwrap_or_else(|| die("bad --groups"))
            }
            "--only" => {
                for n in val().split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if !BACKENDS.contains(&n) {
                        die(&format!("unknown backend {n:?}"));
                    }
                    a.only.push(n.to_string());
                }
            }
            "--runs" => runs = Some(val().parse().unwrap_or_else(|_| die("bad --runs"))),
            "--secs" => {
                secs = Some(
                    val()
                        .parse::<f64>()
                        .ok()
                        .filter(|s| *s > 0.0)
                        .unwrap_or_else(|| die("bad --secs")),
                )
            }
            "--in-flight" => {
                a.in_flight = val()
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .unwrap_or_else(|| die("bad --in-flight"))
            }
            "--quick" => quick = true,
            "--out" => a.out = Some(PathBuf::from(val())),
            "--json" => a.json = true,
            "--timeout" => {
                a.timeout =
                    Duration::from_secs(val().parse().unwrap_or_else(|_| die("bad --timeout")))
            }
            "--child" => a.child = Some(val()),
            "--root" => a.root = Some(PathBuf::from(val())),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => die(&format!("unknown argument {other:?}")),
        }
    }
    a.runs = runs.unwrap_or(if quick { 1 } else { 3 }).max(1);
    a.secs = secs.unwrap_or(if quick { 2.0 } else { 5.0 });
    a
}

/// Runs the mode with the arguments after `cluster`.
pub fn main(args: &[String]) {
    let a = parse(args);
    match &a.child {
        Some(backend) => run_child(backend, &a),
        None => run_parent(&a),
    }
}

fn run_child(backend: &str, a: &Args) {
    let root = a.root.clone().unwrap_or_else(std::env::temp_dir);
    let work = bench::Work {
        regions: a.groups.first().copied().unwrap_or(1),
        in_flight: a.in_flight,
        secs: a.secs,
        down_secs: 1.0,
        restart: backend != "mem",
    };
    let dir = root.join(format!("{backend}-g{}", work.regions));
    let r = match backend {
        #[cfg(feature = "ours")]
        "ours" => bench::run::<ours::SharedLog>(&dir, work),
        #[cfg(feature = "ours")]
        "ours-dirs" => bench::run::<ours::DirPerRegion>(&dir, work),
        "raft-engine" => bench::run::<raftengine::EngineLog>(&dir, work),
        "mem" => bench::run::<mem::MemLog>(&dir, work),
        other => Err(format!("backend {other:?} not built (feature `ours` off?)").into()),
    };
    let v = match r {
        Ok(v) => json!({ "ok": v }),
        Err(e) => json!({ "err": format!("error: {e}") }),
    };
    println!("RESULT {v}");
}

fn run_parent(a: &Args) {
    let backends: Vec<&str> = BACKENDS
        .iter()
        .copied()
        .filter(|b| a.only.is_empty() || a.only.iter().any(|o| o == b))
        .collect();
    let root = tempfile::Builder::new()
        .prefix("compare-cluster-")
        .tempdir_in(std::env::temp_dir())
        .unwrap_or_else(|e| die(&format!("cannot create temp dir: {e}")));
    let t0 = Instant::now();
    let machine = crate::machine();
    let plan = crate::cells::Plan {
        mode: "cluster",
        backends: &backends,
        groups: &a.groups,
        runs: a.runs,
        timeout: a.timeout,
    };
    let args = |_: &str, g: u64, dir: &std::path::Path| -> Vec<String> {
        vec![
            "--root".into(),
            dir.display().to_string(),
            "--groups".into(),
            g.to_string(),
            "--secs".into(),
            a.secs.to_string(),
            "--in-flight".into(),
            a.in_flight.to_string(),
        ]
    };
    let results = crate::cells::run_all(&plan, root.path(), args, report::one_line);
    let report = json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "machine": machine,
        "loadavg_at_end": crate::machine()["loadavg"].clone(),
        "params": {
            "runs": a.runs, "secs": a.secs, "in_flight": a.in_flight, "groups": a.groups,
            "nodes": 3, "restart_down_secs": 1.0,
        },
        "versions": {
            "raft-mmap-log": env!("VER_OURS"), "raft-engine": env!("VER_RAFT_ENGINE"),
            "raft-proto": env!("VER_RAFT_PROTO"),
        },
        "results": results,
        "total_secs": t0.elapsed().as_secs_f64(),
    });
    if let Some(path) = &a.out {
        let text = serde_json::to_string_pretty(&report).expect("json");
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("compare cluster: cannot write {}: {e}", path.display());
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    } else {
        print!("{}", report::render(&report, &backends, &a.groups));
    }
}
