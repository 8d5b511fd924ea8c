//! Markdown tables of a `compare cluster` report: medians over the runs with their range, and
//! ours' ratios to the other backends.

use std::fmt::Write;

use serde_json::Value;

use crate::groups::report::{med, stat, why, with_range, Stat};

/// A short progress line for one child's result.
pub fn one_line(v: &Value) -> String {
    match v.get("ok") {
        Some(ok) => format!(
            "{:>8.0} writes/s  p50 {:>6.0} µs  p99 {:>6.0} µs  reopen {:>7.1} ms  catch-up {:>7.1} ms",
            ok["writes_per_s"].as_f64().unwrap_or(0.0),
            ok["p50_us"].as_f64().unwrap_or(0.0),
            ok["p99_us"].as_f64().unwrap_or(0.0),
            ok["reopen_ms"].as_f64().unwrap_or(0.0),
            ok["catch_up_ms"].as_f64().unwrap_or(0.0),
        ),
        None => v["err"].as_str().unwrap_or("?").to_string(),
    }
}

fn runs_of<'a>(report: &'a Value, g: u64, backend: &str) -> &'a [Value] {
    report["results"][format!("G={g}")][backend]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn ok_count(runs: &[Value]) -> usize {
    runs.iter().filter(|r| r.get("ok").is_some()).count()
}

/// `a / b` of the medians, or a dash.
fn ratio(a: Option<Stat>, b: Option<Stat>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b.med > 0.0 => format!("{:.2}×", a.med / b.med),
        _ => "—".into(),
    }
}

pub fn render(report: &Value, backends: &[&str], groups: &[u64]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Client writes (durable on a quorum, acknowledged once applied on the leader):\n"
    );
    let _ = writeln!(
        out,
        "| G | backend | writes/s, median (min–max) | p50 µs | p99 µs | ÷ raft-engine | ÷ ours-dirs | ÷ mem | syncs/s (3 nodes) | writes per node round | write / sync µs per round | runs ok |"
    );
    let _ = writeln!(
        out,
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for &g in groups {
        let rate = |b: &str| stat(runs_of(report, g, b), "writes_per_s");
        for b in backends {
            let runs = runs_of(report, g, b);
            if let Some(w) = why(runs) {
                let _ = writeln!(out, "| {g} | {b} | {w} | | | | | | | | | 0 |");
                continue;
            }
            let _ = writeln!(
                out,
                "| {g} | {b} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {}/{} |",
                with_range(rate(b)),
                with_range(stat(runs, "p50_us")),
                with_range(stat(runs, "p99_us")),
                ratio(rate(b), rate("raft-engine")),
                ratio(rate(b), rate("ours-dirs")),
                ratio(rate(b), rate("mem")),
                med(stat(runs, "syncs_per_s"), 1.0),
                med(stat(runs, "writes_per_sync"), 1.0),
                med(stat(runs, "write_us_per_round"), 1.0),
                med(stat(runs, "sync_us_per_round"), 1.0),
                ok_count(runs),
                runs.len()
            );
        }
    }
    let _ = writeln!(
        out,
        "\nRestart of node 3 (down for a second of writes): reopen = its log and every region's \
         RawNode open; catch-up = from the restart until every region applied what its leader \
         had committed (the node replays its own log, then takes the rest from the leaders):\n"
    );
    let _ = writeln!(
        out,
        "| G | backend | reopen ms | catch-up ms | ÷ raft-engine (catch-up time) | its regions' last indexes summed at reopen | runs ok |"
    );
    let _ = writeln!(out, "|---:|---|---:|---:|---:|---:|---:|");
    for &g in groups {
        let catch = |b: &str| stat(runs_of(report, g, b), "catch_up_ms");
        for b in backends {
            let runs = runs_of(report, g, b);
            if let Some(w) = why(runs) {
                let _ = writeln!(out, "| {g} | {b} | {w} | | | | 0 |");
                continue;
            }
            let _ = writeln!(
                out,
                "| {g} | {b} | {} | {} | {} | {} | {}/{} |",
                with_range(stat(runs, "reopen_ms")),
                with_range(catch(b)),
                ratio(catch(b), catch("raft-engine")),
                med(stat(runs, "entries_recovered"), 1.0),
                ok_count(runs),
                runs.len()
            );
        }
    }
    out
}
