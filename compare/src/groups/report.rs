//! Markdown tables of a `compare groups` report: medians over the runs with their range, and
//! ratios to raft-engine.

use std::fmt::Write;

use serde_json::Value;

use super::work::Cell;

/// A short progress line for one child's result.
pub fn one_line(v: &Value) -> String {
    if let Some(ok) = v.get("ok") {
        format!(
            "{:>10.0} entries/s  p50 {:>7.0} µs  p99 {:>7.0} µs  reopen {:>7.1} ms  threads {}",
            ok["entries_per_s"].as_f64().unwrap_or(0.0),
            ok["p50_us"].as_f64().unwrap_or(0.0),
            ok["p99_us"].as_f64().unwrap_or(0.0),
            ok["reopen_ms"].as_f64().unwrap_or(0.0),
            ok["threads"]
        )
    } else if let Some(s) = v.get("skip") {
        s.as_str().unwrap_or("skipped").to_string()
    } else {
        v["err"].as_str().unwrap_or("?").to_string()
    }
}

/// Median, min and max of a metric over the runs that succeeded.
#[derive(Clone, Copy)]
pub(crate) struct Stat {
    pub med: f64,
    min: f64,
    max: f64,
}

pub(crate) fn stat(runs: &[Value], metric: &str) -> Option<Stat> {
    let mut v: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.get("ok").and_then(|o| o[metric].as_f64()))
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let med = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Stat {
        med,
        min: v[0],
        max: v[n - 1],
    })
}

pub(crate) fn num(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

pub(crate) fn with_range(s: Option<Stat>) -> String {
    match s {
        Some(s) => format!("{} ({}–{})", num(s.med), num(s.min), num(s.max)),
        None => "—".into(),
    }
}

pub(crate) fn med(s: Option<Stat>, scale: f64) -> String {
    s.map(|s| num(s.med * scale)).unwrap_or_else(|| "—".into())
}

/// Why a cell has no figure: the first error (or skip) of its runs, if every run failed.
pub(crate) fn why(runs: &[Value]) -> Option<String> {
    if runs.iter().any(|r| r.get("ok").is_some()) {
        return None;
    }
    runs.iter().find_map(|r| {
        r.get("skip")
            .or_else(|| r.get("err"))
            .and_then(Value::as_str)
            .map(str::to_string)
    })
}

fn runs_of<'a>(report: &'a Value, cell: &Cell, engine: &str) -> &'a [Value] {
    report["results"][cell.spec()][engine]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn ok_count(runs: &[Value]) -> usize {
    runs.iter().filter(|r| r.get("ok").is_some()).count()
}

fn ratio(a: Option<Stat>, b: Option<Stat>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b.med > 0.0 => format!("{:.2}×", a.med / b.med),
        _ => "—".into(),
    }
}

fn cell_label(c: &Cell) -> String {
    match *c {
        Cell::Ready { k, .. } => format!("K = {k}"),
        Cell::Indep { threads, groups } => format!("T = {threads}, G = {groups}"),
    }
}

fn perf_table(out: &mut String, report: &Value, engines: &[&str], cells: &[Cell]) {
    let _ = writeln!(
        out,
        "| cell | engine | entries/s, median (min–max) | p50 µs | p99 µs | mean µs | write part p50 / p99 µs | entries/s ÷ raft-engine | ÷ bare | CPU µs / entry | switches / write (vol+invol) | probe fdatasync p50 µs, before / after | runs ok |"
    );
    let _ = writeln!(
        out,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for c in cells {
        let base = stat(runs_of(report, c, "raft-engine"), "entries_per_s");
        let limit = stat(runs_of(report, c, "bare"), "entries_per_s");
        for e in engines {
            let runs = runs_of(report, c, e);
            if let Some(w) = why(runs) {
                let _ = writeln!(
                    out,
                    "| {} | {e} | {w} | | | | | | | | | | 0 |",
                    cell_label(c)
                );
                continue;
            }
            let eps = stat(runs, "entries_per_s");
            let _ = writeln!(
                out,
                "| {} | {e} | {} | {} | {} | {} | {} / {} | {} | {} | {} | {}+{} | {} / {} | {}/{} |",
                cell_label(c),
                with_range(eps),
                with_range(stat(runs, "p50_us")),
                with_range(stat(runs, "p99_us")),
                med(stat(runs, "mean_us"), 1.0),
                med(stat(runs, "write_part_p50_us"), 1.0),
                med(stat(runs, "write_part_p99_us"), 1.0),
                if *e == "raft-engine" {
                    "1".into()
                } else {
                    ratio(eps, base)
                },
                if *e == "bare" {
                    "1".into()
                } else {
                    ratio(eps, limit)
                },
                med(stat(runs, "cpu_us_per_entry"), 1.0),
                med(stat(runs, "vol_switches_per_op"), 1.0),
                med(stat(runs, "invol_switches_per_op"), 1.0),
                med(stat(runs, "probe_before_p50_us"), 1.0),
                med(stat(runs, "probe_after_p50_us"), 1.0),
                ok_count(runs),
                runs.len()
            );
        }
    }
}

fn resource_table(out: &mut String, report: &Value, engines: &[&str], cells: &[Cell]) {
    let _ = writeln!(
        out,
        "| cell | engine | entries in log | disk MiB (allocated) | file MiB (length) | files | dirs | threads | open ms | reopen ms | RSS anon MiB | RSS file MiB |"
    );
    let _ = writeln!(
        out,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let mib = 1.0 / (1024.0 * 1024.0);
    let kib = 1.0 / 1024.0;
    for c in cells {
        for e in engines {
            let runs = runs_of(report, c, e);
            if let Some(w) = why(runs) {
                let _ = writeln!(out, "| {} | {e} | {w} | | | | | | | | | |", cell_label(c));
                continue;
            }
            let s = |m: &str| stat(runs, m);
            let _ = writeln!(
                out,
                "| {} | {e} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                cell_label(c),
                med(s("entries_in_log"), 1.0),
                med(s("disk_bytes"), mib),
                med(s("file_bytes"), mib),
                med(s("files"), 1.0),
                med(s("dirs"), 1.0),
                med(s("threads"), 1.0),
                med(s("open_ms"), 1.0),
                with_range(s("reopen_ms")),
                med(s("rss_anon_kib"), kib),
                med(s("rss_file_kib"), kib),
            );
        }
    }
}

pub fn render(report: &Value, engines: &[&str], cells: &[Cell]) -> String {
    let mut out = String::new();
    let p = &report["params"];
    let m = &report["machine"];
    let _ = writeln!(
        out,
        "compare groups: {} run(s) of {} s per cell, payload {} B, {} entries per group per write, \
         every write durable\nmachine: {} ({} cores), {}, temp dir {} on {}; loadavg {} at start, \
         {} at end; {:.0} s in all\nversions: raft-mmap-log {}, raft-engine {}\n",
        p["runs"],
        p["secs_per_cell"],
        p["entry_size"],
        p["entries_per_group_write"],
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"],
        m["kernel"].as_str().unwrap_or("?"),
        m["temp_dir"].as_str().unwrap_or("?"),
        m["temp_fs"].as_str().unwrap_or("?"),
        m["loadavg"].as_str().unwrap_or("?"),
        report["loadavg_at_end"].as_str().unwrap_or("?"),
        report["total_secs"].as_f64().unwrap_or(0.0),
        report["versions"]["raft-mmap-log"].as_str().unwrap_or("?"),
        report["versions"]["raft-engine"].as_str().unwrap_or("?"),
    );
    for (workload, title) in [
        (
            "ready",
            "Ready loop: G = 256 groups, one writer, K groups per durable round (p50/p99: per round)",
        ),
        (
            "indep",
            "Independent writers: T threads, each append + sync round-robin over its own G/T groups (p50/p99: per write)",
        ),
    ] {
        let cs: Vec<Cell> = cells
            .iter()
            .copied()
            .filter(|c| c.workload() == workload)
            .collect();
        if cs.is_empty() {
            continue;
        }
        let _ = writeln!(out, "### {title}\n");
        perf_table(&mut out, report, engines, &cs);
        let _ = writeln!(
            out,
            "\nResources (medians; reopen with its range; threads: the whole process after the \
             writers exited, 2 of them the harness's own; RSS read at the same moment):\n"
        );
        resource_table(&mut out, report, engines, &cs);
        out.push('\n');
    }
    out
}
