//! `compare openraft-read`: openraft's read path, `RaftLogReader::try_get_log_entries`, per
//! entry — raft-mmap-log's `MmapLogStore` against hiqlite-wal's openraft `LogStore`, both with
//! `Vec<u8>` application data (the same type config), plus raft-mmap-log's borrowed
//! (non-openraft) read as the floor. Time is the best of `--rounds` passes; allocations are
//! counted across all threads during one pass (hiqlite-wal reads on its own thread).
//!
//! Instruction counts (stable on a busy machine): run one engine under callgrind with
//! `--rounds 1` and with `--rounds 0` and divide the difference by `--entries`.

mod alloc;
#[cfg(feature = "ours")]
mod ours_openraft;

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use serde_json::{json, Value};

use crate::engines::hiqlite::HiqliteEngine;
use crate::harness::{Engine, Fail, Gen, Mode, R};

const USAGE: &str = "\
compare openraft-read: per-entry cost of openraft's try_get_log_entries

USAGE: cargo run --release -p compare -- openraft-read [OPTIONS]

OPTIONS:
  --entries N        entries in each log (default 100000)
  --entry-size B     application data bytes per entry, >= 8 (default 256)
  --range K          entries per try_get_log_entries call (default 1000)
  --rounds R         timed passes over the log; 0 = fill only (default 5)
  --only NAME[,..]   ours-openraft, hiqlite-wal, ours-borrowed
  --json             machine-readable output";

const ENGINES: [&str; 3] = ["ours-openraft", "hiqlite-wal", "ours-borrowed"];

struct Args {
    entries: u64,
    entry_size: usize,
    range: u64,
    rounds: u32,
    only: Vec<String>,
    json: bool,
}

fn die(msg: &str) -> ! {
    eprintln!("compare openraft-read: {msg}\n\n{USAGE}");
    std::process::exit(2);
}

fn parse(args: &[String]) -> Args {
    let mut a = Args {
        entries: 100_000,
        entry_size: 256,
        range: 1000,
        rounds: 5,
        only: Vec::new(),
        json: false,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .unwrap_or_else(|| die(&format!("{flag} needs a value")))
        };
        let num = |v: String| -> u64 { v.parse().unwrap_or_else(|_| die(&format!("bad {flag}"))) };
        match flag.as_str() {
            "--entries" => a.entries = num(val()),
            "--entry-size" => a.entry_size = num(val()) as usize,
            "--range" => a.range = num(val()),
            "--rounds" => a.rounds = num(val()) as u32,
            "--only" => {
                for n in val().split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if !ENGINES.contains(&n) {
                        die(&format!("unknown engine {n:?}"));
                    }
                    a.only.push(n.to_string());
                }
            }
            "--json" => a.json = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => die(&format!("unknown argument {other:?}")),
        }
    }
    if a.entry_size < 8 || a.entries == 0 || a.range == 0 {
        die("--entry-size must be >= 8, --entries and --range > 0");
    }
    a
}

/// Runs the mode with the arguments after `openraft-read`.
pub fn main(args: &[String]) {
    let a = parse(args);
    let root = tempfile::Builder::new()
        .prefix("compare-openraft-read-")
        .tempdir()
        .unwrap_or_else(|e| die(&format!("cannot create temp dir: {e}")));
    let mut rows = Vec::new();
    for name in ENGINES {
        if !a.only.is_empty() && !a.only.iter().any(|o| o == name) {
            continue;
        }
        let dir = root.path().join(name);
        let r = match name {
            "ours-openraft" => run_ours_openraft(&dir, &a),
            "hiqlite-wal" => run::<HiqliteEngine>(&dir, &a),
            _ => run_ours_borrowed(&dir, &a),
        };
        let cell = match r {
            Ok(v) => v,
            Err(e) => json!({ "err": e.text() }),
        };
        rows.push((name, cell));
    }
    if a.json {
        let m: serde_json::Map<String, Value> =
            rows.into_iter().map(|(n, c)| (n.to_string(), c)).collect();
        let out = json!({
            "entries": a.entries, "entry_size": a.entry_size, "range": a.range,
            "rounds": a.rounds, "engines": m,
        });
        println!("{}", serde_json::to_string_pretty(&out).expect("json"));
        return;
    }
    println!(
        "openraft try_get_log_entries: {} entries of {} B, ranges of {}, best of {} passes",
        a.entries, a.entry_size, a.range, a.rounds
    );
    println!(
        "{:<15} {:>12} {:>14} {:>16}",
        "engine", "ns/entry", "allocs/entry", "alloc B/entry"
    );
    for (name, c) in rows {
        if let Some(e) = c.get("err") {
            println!("{name:<15} {}", e.as_str().unwrap_or("?"));
            continue;
        }
        println!(
            "{name:<15} {:>12.1} {:>14.2} {:>16.1}",
            c["ns_per_entry"].as_f64().unwrap_or(f64::NAN),
            c["allocs_per_entry"].as_f64().unwrap_or(f64::NAN),
            c["alloc_bytes_per_entry"].as_f64().unwrap_or(f64::NAN),
        );
    }
}

#[cfg(feature = "ours")]
fn run_ours_openraft(dir: &Path, a: &Args) -> R<Value> {
    run::<ours_openraft::OursOpenraft>(dir, a)
}

#[cfg(feature = "ours")]
fn run_ours_borrowed(dir: &Path, a: &Args) -> R<Value> {
    run::<crate::engines::ours::OursEngine>(dir, a)
}

#[cfg(not(feature = "ours"))]
fn run_ours_openraft(_: &Path, _: &Args) -> R<Value> {
    Err(Fail::Unsupported("built without feature `ours`".into()))
}

#[cfg(not(feature = "ours"))]
fn run_ours_borrowed(_: &Path, _: &Args) -> R<Value> {
    Err(Fail::Unsupported("built without feature `ours`".into()))
}

/// Fills a log with `entries` entries in batches of 1000, syncs, then times `rounds` passes
/// of `read_range` over it in ranges of `range`, checking every entry.
fn run<E: Engine>(dir: &Path, a: &Args) -> R<Value> {
    std::fs::create_dir_all(dir).map_err(crate::harness::err("create dir"))?;
    let mut e = E::open(dir, Mode::Lazy)?;
    let gen = Gen::new(a.entry_size);
    let first = E::FIRST_INDEX;
    e.append_all(&gen, first, a.entries, 1000)?;
    e.sync()?;
    let mut best = f64::INFINITY;
    let (mut allocs, mut bytes) = (0, 0);
    for _ in 0..a.rounds {
        let t = Instant::now();
        let (r, n_alloc, n_bytes) = alloc::count(|| read_pass(&mut e, first, a));
        let ns = t.elapsed().as_nanos() as f64 / a.entries as f64;
        black_box(r?);
        best = best.min(ns);
        (allocs, bytes) = (n_alloc, n_bytes);
    }
    e.close()?;
    let n = a.entries as f64;
    Ok(json!({
        "ns_per_entry": if a.rounds == 0 { Value::Null } else { json!(best) },
        "allocs_per_entry": allocs as f64 / n,
        "alloc_bytes_per_entry": bytes as f64 / n,
    }))
}

/// One pass over the whole log; every entry's index and length are checked.
#[inline(never)]
fn read_pass<E: Engine>(e: &mut E, first: u64, a: &Args) -> R<u64> {
    let mut sum = 0u64;
    let mut seen = 0u64;
    let mut bad = None;
    let end = first + a.entries;
    let mut from = first;
    while from < end {
        let to = (from + a.range).min(end);
        let mut next = from;
        e.read_range(from, to, &mut |i, p| {
            let stamped = p
                .get(..8)
                .map(|h| u64::from_le_bytes(h.try_into().unwrap_or([0; 8])));
            if i != next || stamped != Some(i) || p.len() != a.entry_size {
                bad.get_or_insert(i);
            }
            next = i + 1;
            sum = sum.wrapping_add(p.last().copied().unwrap_or(0) as u64);
        })?;
        seen += next - from;
        from = to;
    }
    if let Some(i) = bad {
        return Err(Fail::Error(format!("wrong entry at or near index {i}")));
    }
    if seen != a.entries {
        return Err(Fail::Error(format!(
            "read {seen} entries, expected {}",
            a.entries
        )));
    }
    Ok(sum)
}
