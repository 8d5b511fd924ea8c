//! `compare openraft-cluster`: 3 openraft nodes in one process over 127.0.0.1 (the
//! `multi_cluster` example's harness: one TCP connection per node pair, a Raft per group),
//! durable client writes, G groups; the log backend varies: raft-mmap-log with one shared log
//! per node, raft-mmap-log with a directory per group, hiqlite-wal per group, and an
//! in-memory log (the ceiling).
//!
//! Each (G, backend) runs in its own child process (the same binary with the hidden
//! `--child`), in a fresh directory; the backend order rotates from cell to cell and run to
//! run, and the parent syncs and waits a moment between children.

mod backends;

#[path = "../../../examples/multi_cluster/mod.rs"]
#[allow(dead_code)]
mod multi_cluster;

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::groups::report::{stat, why, with_range};
use multi_cluster::cluster::{group_of, raft_config, Cluster};
use multi_cluster::net::GroupId;
use multi_cluster::node::{BoxError, LogBackend, NodeSettings, SharedLog};
use multi_cluster::scenario::percentiles;

const USAGE: &str = "\
compare openraft-cluster: 3 openraft nodes in one process over 127.0.0.1 (one TCP connection
per node pair), G Raft groups, durable client writes (64 in flight in all, each to its
group's leader), then node 3 stopped, more writes, node 3 restarted until it caught up

USAGE: cargo run --release -p compare -- openraft-cluster [OPTIONS]

Backends (a log per group per node unless said):
  ours         raft-mmap-log, ONE shared log (Groups) per node, MmapLogStore::for_group
  ours-dirs    raft-mmap-log, MmapLogStore::open, a directory per group
  hiqlite-wal  hiqlite-wal's openraft LogStore, a directory per group, LogSync::Immediate
  memory       an in-memory log store (not durable: the ceiling)

OPTIONS:
  --groups G[,..]    group counts (default 1,16,64)
  --runs N           repetitions of every cell (default 3; quick 1)
  --keys N           timed client writes per cell (default 20000; quick 4000)
  --more N           writes while node 3 is down (default keys / 4)
  --only NAME[,..]   backends (default all)
  --quick            small, fast run
  --out FILE         also write the raw results (every run) as JSON to FILE
  --json             print the JSON instead of the tables
  --timeout SECS     per-child limit (default 300)
  -h, --help         this text";

const BACKENDS: [&str; 4] = ["ours", "ours-dirs", "hiqlite-wal", "memory"];
/// Segment (WAL file) size of every durable backend.
const SEGMENT_BYTES: u64 = 8 << 20;
/// Client writes in flight, in all.
const IN_FLIGHT: u64 = 64;

struct Args {
    groups: Vec<u64>,
    runs: usize,
    keys: u64,
    more: u64,
    only: Vec<String>,
    out: Option<PathBuf>,
    json: bool,
    timeout: Duration,
    child: Option<String>,
    root: Option<PathBuf>,
}

fn die(msg: &str) -> ! {
    eprintln!("compare openraft-cluster: {msg}\n\n{USAGE}");
    std::process::exit(2);
}

fn parse(args: &[String]) -> Args {
    let (mut groups, mut runs, mut keys, mut more) = (None, None, None, None);
    let mut a = Args {
        groups: vec![1, 16, 64],
        runs: 3,
        keys: 20_000,
        more: 0,
        only: Vec::new(),
        out: None,
        json: false,
        timeout: Duration::from_secs(300),
        child: None,
        root: None,
    };
    let mut quick = false;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .unwrap_or_else(|| die(&format!("{flag} needs a value")))
        };
        let number = |v: String| {
            v.parse::<u64>()
                .unwrap_or_else(|_| die(&format!("bad {flag}")))
        };
        match flag.as_str() {
            "--groups" => {
                groups = Some(
                    val()
                        .split(',')
                        .map(|g| g.trim().parse::<u64>().ok().filter(|g| *g > 0))
                        .collect::<Option<Vec<u64>>>()
                        .unwrap_or_else(|| die("bad --groups")),
                )
            }
            "--runs" => runs = Some(number(val()) as usize),
            "--keys" => keys = Some(number(val())),
            "--more" => more = Some(number(val())),
            "--only" => {
                for n in val().split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if !BACKENDS.contains(&n) {
                        die(&format!("unknown backend {n:?}"));
                    }
                    a.only.push(n.to_string());
                }
            }
            "--quick" => quick = true,
            "--out" => a.out = Some(PathBuf::from(val())),
            "--json" => a.json = true,
            "--timeout" => a.timeout = Duration::from_secs(number(val())),
            "--child" => a.child = Some(val()),
            "--root" => a.root = Some(PathBuf::from(val())),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => die(&format!("unknown argument {other:?}")),
        }
    }
    a.groups = groups.unwrap_or(a.groups);
    a.runs = runs.unwrap_or(if quick { 1 } else { 3 }).max(1);
    a.keys = keys.unwrap_or(if quick { 4_000 } else { 20_000 }).max(1);
    a.more = more.unwrap_or(a.keys / 4).max(1);
    a
}

/// Runs the mode with the arguments after `openraft-cluster`.
pub fn main(args: &[String]) {
    let a = parse(args);
    match &a.child {
        Some(backend) => run_child_cell(backend, &a),
        None => run_parent(&a),
    }
}

// ---------------------------------------------------------------- child side

fn run_child_cell(backend: &str, a: &Args) {
    let root = a.root.clone().unwrap_or_else(std::env::temp_dir);
    let groups = a.groups[0];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| die(&format!("tokio runtime: {e}")));
    let r = rt.block_on(async {
        match backend {
            "ours" => run_cell::<SharedLog>(&root, groups, a.keys, a.more).await,
            "ours-dirs" => run_cell::<backends::DirPerGroup>(&root, groups, a.keys, a.more).await,
            "hiqlite-wal" => {
                run_cell::<backends::HiqlitePerGroup>(&root, groups, a.keys, a.more).await
            }
            "memory" => run_cell::<backends::InMemory>(&root, groups, a.keys, a.more).await,
            other => Err(format!("unknown backend {other:?}").into()),
        }
    });
    let v = match r {
        Ok(v) => json!({ "ok": v }),
        Err(e) => json!({ "err": format!("error: {e}") }),
    };
    println!("RESULT {v}");
}

/// One cell: start 3 nodes with `groups` groups, write `keys` keys (after a warm-up), stop
/// node 3, write `more`, restart node 3 and wait until every group caught up, check that
/// every node has every key.
async fn run_cell<B: LogBackend>(
    root: &Path,
    groups: u64,
    keys: u64,
    more: u64,
) -> Result<Value, BoxError> {
    let settings = NodeSettings {
        raft: raft_config(None)?,
        raft_of_group: BTreeMap::new(),
        segment_bytes: SEGMENT_BYTES,
    };
    let ids: Vec<GroupId> = (0..groups).collect();
    let route = move |i| group_of(i, groups);
    let mut c = Cluster::<B>::start(root, &[1, 2, 3], settings).await?;
    c.create_groups(ids.iter().copied()).await?;
    c.wait_leaders(&ids, Duration::from_secs(60)).await?;
    let warm_up = (keys / 10).max(IN_FLIGHT);
    c.write_keys(0..warm_up, IN_FLIGHT, route).await?;

    let t = Instant::now();
    let sched0 = sched();
    let lat = c
        .write_keys(warm_up..warm_up + keys, IN_FLIGHT, route)
        .await?;
    let secs = t.elapsed().as_secs_f64();
    let sched1 = sched();
    let (p50, p99) = percentiles(&lat);
    let during = crate::groups::work::status(&["Threads", "VmRSS"]);

    let end = warm_up + keys + more;
    c.stop_node(3).await?;
    c.write_keys(warm_up + keys..end, IN_FLIGHT, route).await?;
    let t = Instant::now();
    let (reopen, up) = c.restart_node(3).await?;
    c.wait_caught_up(&ids, Duration::from_secs(120)).await?;
    let catch_up = t.elapsed();

    let problems = c.check(&ids, 0..end, route);
    c.shutdown().await?;
    if !problems.is_empty() {
        return Err(format!("did not converge: {}", problems.join("; ")).into());
    }
    Ok(json!({
        "writes_per_s": keys as f64 / secs,
        "p50_ms": p50.as_secs_f64() * 1e3,
        "p99_ms": p99.as_secs_f64() * 1e3,
        "reopen_ms": reopen.as_secs_f64() * 1e3,
        "restart_ms": up.as_secs_f64() * 1e3,
        "catch_up_ms": catch_up.as_secs_f64() * 1e3,
        // CPU time of the process's threads in the timed writes, and how long they waited
        // runnable for a CPU (both per client write, in µs).
        "cpu_us_per_write": (sched1.0 - sched0.0) as f64 / 1e3 / keys as f64,
        "runq_us_per_write": (sched1.1 - sched0.1) as f64 / 1e3 / keys as f64,
        "threads": during["Threads"],
        "rss_kib": during["VmRSS"],
    }))
}

/// Nanoseconds this process's live threads have spent on a CPU and waiting runnable for one
/// (`/proc/self/task/*/schedstat`).
fn sched() -> (u64, u64) {
    let mut total = (0, 0);
    for t in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let s = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
        let mut f = s.split_whitespace().map(|x| x.parse::<u64>().unwrap_or(0));
        total.0 += f.next().unwrap_or(0);
        total.1 += f.next().unwrap_or(0);
    }
    total
}

// ---------------------------------------------------------------- parent side

fn run_parent(a: &Args) {
    let backends: Vec<&str> = BACKENDS
        .iter()
        .copied()
        .filter(|b| a.only.is_empty() || a.only.iter().any(|o| o == b))
        .collect();
    let root = tempfile::Builder::new()
        .prefix("compare-openraft-cluster-")
        .tempdir_in(std::env::temp_dir())
        .unwrap_or_else(|e| die(&format!("cannot create temp dir: {e}")));
    let t0 = Instant::now();
    let machine = crate::machine();
    let plan = crate::cells::Plan {
        mode: "openraft-cluster",
        backends: &backends,
        groups: &a.groups,
        runs: a.runs,
        timeout: a.timeout,
    };
    let args = |_: &str, g: u64, dir: &std::path::Path| -> Vec<String> {
        vec![
            "--groups".into(),
            g.to_string(),
            "--keys".into(),
            a.keys.to_string(),
            "--more".into(),
            a.more.to_string(),
            "--root".into(),
            dir.display().to_string(),
        ]
    };
    let results = crate::cells::run_all(&plan, root.path(), args, one_line);
    let report = json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "machine": machine,
        "loadavg_at_end": crate::machine()["loadavg"].clone(),
        "params": {
            "runs": a.runs, "keys": a.keys, "more": a.more, "in_flight": IN_FLIGHT,
            "segment_bytes": SEGMENT_BYTES, "nodes": 3,
        },
        "versions": {
            "raft-mmap-log": env!("VER_OURS"), "hiqlite-wal": env!("VER_HIQLITE_WAL"),
            "openraft": env!("VER_OPENRAFT"),
        },
        "results": results,
        "total_secs": t0.elapsed().as_secs_f64(),
    });
    if let Some(path) = &a.out {
        let text = serde_json::to_string_pretty(&report).expect("json");
        if let Err(e) = std::fs::write(path, text) {
            eprintln!(
                "compare openraft-cluster: cannot write {}: {e}",
                path.display()
            );
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    } else {
        print!("{}", render(&report, &backends, &a.groups));
    }
}

fn one_line(v: &Value) -> String {
    match v.get("ok") {
        Some(ok) => format!(
            "{:>8.0} writes/s  p50 {:>6.2} ms  p99 {:>7.2} ms  restart {:>7.1} ms  catch-up {:>7.1} ms",
            ok["writes_per_s"].as_f64().unwrap_or(0.0),
            ok["p50_ms"].as_f64().unwrap_or(0.0),
            ok["p99_ms"].as_f64().unwrap_or(0.0),
            ok["restart_ms"].as_f64().unwrap_or(0.0),
            ok["catch_up_ms"].as_f64().unwrap_or(0.0),
        ),
        None => v["err"].as_str().unwrap_or("?").to_string(),
    }
}

/// One Markdown table per group count: medians over the runs, (min–max) range.
fn render(report: &Value, backends: &[&str], groups: &[u64]) -> String {
    let mut s = String::new();
    let p = &report["params"];
    let _ = writeln!(
        s,
        "3 nodes, {} in flight, {} timed writes per cell, {} while node 3 is down; median \
         (min–max) of {} runs\n",
        p["in_flight"], p["keys"], p["more"], p["runs"]
    );
    for g in groups {
        let _ = writeln!(s, "### G = {g}\n");
        let _ = writeln!(
            s,
            "| backend | writes/s | vs ours | p50 ms | p99 ms | restart ms | catch-up ms | \
             CPU µs/write | run-queue wait µs/write |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
        let runs_of = |b: &str| -> Vec<Value> {
            report["results"][format!("G={g}")][b]
                .as_array()
                .cloned()
                .unwrap_or_default()
        };
        let ours = stat(&runs_of("ours"), "writes_per_s");
        for b in backends {
            let runs = runs_of(b);
            if let Some(why) = why(&runs) {
                let _ = writeln!(s, "| {b} | {why} | | | | | | | |");
                continue;
            }
            let rate = stat(&runs, "writes_per_s");
            let ratio = match (rate, ours) {
                (Some(r), Some(o)) if o.med > 0.0 => format!("{:.2}×", r.med / o.med),
                _ => "—".into(),
            };
            let _ = writeln!(
                s,
                "| {b} | {} | {ratio} | {} | {} | {} | {} | {} | {} |",
                with_range(rate),
                with_range(stat(&runs, "p50_ms")),
                with_range(stat(&runs, "p99_ms")),
                with_range(stat(&runs, "restart_ms")),
                with_range(stat(&runs, "catch_up_ms")),
                with_range(stat(&runs, "cpu_us_per_write")),
                with_range(stat(&runs, "runq_us_per_write")),
            );
        }
        let _ = writeln!(s);
    }
    s
}
