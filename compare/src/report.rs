//! Markdown rendering of a report.

use std::fmt::Write;

use serde_json::Value;

pub struct Row {
    pub label: &'static str,
    pub workload: &'static str,
    pub metric: &'static str,
    higher_better: bool,
}

pub const ROWS: &[Row] = &[
    Row {
        label: "1. append, no sync (entries/s)",
        workload: "append",
        metric: "entries_per_s",
        higher_better: true,
    },
    Row {
        label: "1. append, no sync (MB/s)",
        workload: "append",
        metric: "mb_per_s",
        higher_better: true,
    },
    Row {
        label: "2. bulk append + final fsync (entries/s)",
        workload: "bulk_sync",
        metric: "entries_per_s",
        higher_better: true,
    },
    Row {
        label: "3. durable 16-entry batches (batches/s)",
        workload: "durable",
        metric: "ops_per_s",
        higher_better: true,
    },
    Row {
        label: "3. durable batch p50 (µs)",
        workload: "durable",
        metric: "p50_us",
        higher_better: false,
    },
    Row {
        label: "3. durable batch p99 (µs)",
        workload: "durable",
        metric: "p99_us",
        higher_better: false,
    },
    Row {
        label: "3. durable batch p99.9 (µs)",
        workload: "durable",
        metric: "p999_us",
        higher_better: false,
    },
    Row {
        label: "4. hot 1000-entry range reads (entries/s)",
        workload: "read",
        metric: "entries_per_s",
        higher_better: true,
    },
    Row {
        label: "5. recovery, warm cache (ms)",
        workload: "recovery",
        metric: "warm_ms",
        higher_better: false,
    },
    Row {
        label: "5. recovery, cold cache (ms)",
        workload: "recovery",
        metric: "cold_ms",
        higher_better: false,
    },
    Row {
        label: "6. steady state, append + purge, no sync (entries/s)",
        workload: "steady",
        metric: "append_entries_per_s",
        higher_better: true,
    },
    Row {
        label: "6. steady state, durable 16-entry batches (batches/s)",
        workload: "steady",
        metric: "durable_ops_per_s",
        higher_better: true,
    },
    Row {
        label: "6. steady state, durable batch p99 (µs)",
        workload: "steady",
        metric: "durable_p99_us",
        higher_better: false,
    },
    Row {
        label: "7. first-touch read of entries just appended, other thread (ns/entry)",
        workload: "first_touch",
        metric: "ns_per_entry",
        higher_better: false,
    },
    Row {
        label: "7. first-touch read, median round (ns/entry)",
        workload: "first_touch",
        metric: "round_p50_ns_per_entry",
        higher_better: false,
    },
    Row {
        label: "7. lagging read, 16 MiB behind the tail (ns/entry)",
        workload: "first_touch",
        metric: "lagging_ns_per_entry",
        higher_better: false,
    },
    Row {
        label: "7. lagging read, minor page faults per 1,000 entries",
        workload: "first_touch",
        metric: "lagging_faults_per_1k_entries",
        higher_better: false,
    },
    Row {
        label: "7. first-touch read, minor page faults per 1,000 entries",
        workload: "first_touch",
        metric: "faults_per_1k_entries",
        higher_better: false,
    },
    Row {
        label: "8. durable 16-entry batches over 10 new segments (batches/s)",
        workload: "durable_long",
        metric: "ops_per_s",
        higher_better: true,
    },
    Row {
        label: "8. the same, within the first segment's worth (batches/s)",
        workload: "durable_long",
        metric: "first_segment_ops_per_s",
        higher_better: true,
    },
    Row {
        label: "8. the same, after the first segment's worth (batches/s)",
        workload: "durable_long",
        metric: "after_first_segment_ops_per_s",
        higher_better: true,
    },
    Row {
        label: "8. the same, after the first segment: p99 (µs)",
        workload: "durable_long",
        metric: "after_first_segment_p99_us",
        higher_better: false,
    },
];

pub fn human(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn ratio(ours: Option<f64>, best: Option<(f64, &str)>, higher_better: bool) -> String {
    match (ours, best) {
        (Some(o), Some((b, who))) if b > 0.0 => {
            let r = o / b;
            let better = if higher_better { r >= 1.0 } else { r <= 1.0 };
            format!(
                "{r:.2}x vs {who} ({})",
                if better { "ours better" } else { "ours worse" }
            )
        }
        (None, _) => "ours n/a".into(),
        _ => "no competitor figure".into(),
    }
}

const NOTES: &str = "
How each crate was driven (all through public APIs; details in compare/src/engines/):
- ours: Store::append_batch; durable = append_batch + Store::sync(); reads = reader().view().range() (zero-copy).
- ours-raft: the Raft layer on the same engine, RaftLog::append with a LogId per entry (24 more bytes per entry, every Raft rule checked); durable = append + RaftLog::sync(); reads = reader().view().read() (zero-copy, log id decoded and checked).
- Limits measured in each engine's own process: the read floor is the same ranges and checks over the same payloads in one in-memory Vec (the harness's own per-entry cost); the cold read() limit reads the engine's own files with 1 MiB read() calls after the same page-cache eviction as its cold recovery.
- raft-log: RaftLog::append + flush(false) per batch; 'no sync' ends with wait_worker_idle() so queued writes have reached the OS; durable = flush(true, callback) and wait. Default payload cache (100k items / 1 GiB) kept.
- raft-engine: one LogBatch per batch via Engine::write(batch, sync); the final/durable batch is written with sync=true (Engine::sync() writes an empty batch and does not fsync in 0.4.2). LZ4 batch compression off (payloads are incompressible).
- hiqlite-wal: its public writer channel (Action::Append, as its RaftLogStorage::append does), openraft Entry + bincode like the store itself; LogSync::Immediate for workload 3 (blocking msync before the callback), IntervalMillis(1 h) + an explicit Action::Sync otherwise; reads via its RaftLogReader. Its writer thread sets ThreadPriority::Max (seen as setpriority(-20): granted here because the run is root), which shields its flush wake-ups from other CPU load. A clean restart reads file headers only (its full scan runs only after an unclean stop), hence its recovery times.
- okaywal: one chunk per Raft entry, one okaywal entry (commit = fsync) per batch; positions kept by the harness, rebuilt in recovery with CRC checks; checkpointing disabled (it would discard the log). Workload 2 = one entry of N chunks, one commit. Note: EntryChunk::skip_remaining_bytes() in 0.3.1 skips the CRC twice and loses the rest of the segment in recovery; not used.
- Payload bytes: 8-byte index stamp + incompressible data; every read checks index and length (ours borrows, the others copy).
- Warm-up: each engine's process first runs the append workload once, untimed, into a scratch log it then removes (on this kind of VM the first heavy run after a few idle seconds is up to 2x slower, whatever the engine).";

/// Cells of one row: a figure, or a footnote marker for a failure.
struct Table {
    out: String,
    notes: Vec<String>,
}

impl Table {
    fn note(&mut self, text: String) -> String {
        if let Some(i) = self.notes.iter().position(|n| *n == text) {
            return format!("n/a [{}]", i + 1);
        }
        self.notes.push(text);
        format!("n/a [{}]", self.notes.len())
    }
}

pub fn render(r: &Value, engines: &[&str], workloads: &[&str]) -> String {
    let mut t = Table {
        out: String::new(),
        notes: Vec::new(),
    };
    let m = &r["machine"];
    let p = &r["params"];
    let o = &mut t.out;
    let _ = writeln!(
        o,
        "# raft-mmap-log vs alternatives (same machine, same run)\n"
    );
    let _ = writeln!(
        o,
        "Machine: {} cores, {}; kernel {}; temp dir {} on {}",
        m["cores"],
        m["cpu"].as_str().unwrap_or("?"),
        m["kernel"].as_str().unwrap_or("?"),
        m["temp_dir"].as_str().unwrap_or("?"),
        m["temp_fs"].as_str().unwrap_or("?")
    );
    let load0 = m["loadavg"].as_str().unwrap_or("?");
    let load1 = r["loadavg_at_end"].as_str().unwrap_or("?");
    let busy = [load0, load1].iter().any(|l| {
        l.split(' ')
            .next()
            .and_then(|x| x.parse::<f64>().ok())
            .unwrap_or(0.0)
            > 0.5
    });
    let _ = writeln!(
        o,
        "Load average (1/5/15 min) at start: {load0}; at end: {load1}{}",
        if busy {
            " -- WARNING: other work was running on this machine; timings, above all durable latencies, are disturbed"
        } else {
            ""
        }
    );
    let _ = writeln!(
        o,
        "Params: {} entries x {} B, appends in batches of {}; durable: {} batches x {} entries; reads: {}-entry ranges for {} s; segment/chunk/file size {} MiB where configurable{}\n",
        p["entries"], p["entry_size"], p["append_batch"], p["durable_batches"], p["durable_batch"],
        p["read_range"], p["read_secs"], p["segment_bytes"].as_u64().unwrap_or(0) >> 20,
        if p["quick"].as_bool() == Some(true) { " (--quick)" } else { "" }
    );
    let versions = r["versions"].as_object().cloned().unwrap_or_default();
    let v: Vec<String> = versions
        .iter()
        .map(|(k, v)| format!("{k} {}", v.as_str().unwrap_or("?")))
        .collect();
    let _ = writeln!(o, "Versions: {}\n", v.join(", "));

    // Physical limits.
    let lim = &r["limits"];
    let memcpy = lim["memcpy"]["ok"]["gb_per_s"].as_f64();
    if lim.as_object().is_some_and(|l| !l.is_empty()) {
        let _ = writeln!(o, "Physical limits (same run):");
        match memcpy {
            Some(g) => {
                let _ = writeln!(
                    o,
                    "- memcpy, 256 B chunks into a faulted 256 MiB buffer: {g:.1} GB/s"
                );
            }
            None => {
                let _ = writeln!(o, "- memcpy: {}", lim["memcpy"]["err"]);
            }
        }
        match &lim["fdatasync"]["ok"] {
            Value::Object(f) => {
                for (k, v) in f {
                    let _ = writeln!(
                        o,
                        "- 16 KiB pwrite + fdatasync, {k} file: {} ops/s (p50 {} µs)",
                        human(v["ops_per_s"].as_f64().unwrap_or(0.0)),
                        human(v["p50_us"].as_f64().unwrap_or(0.0))
                    );
                }
            }
            _ => {
                let _ = writeln!(o, "- fdatasync: {}", lim["fdatasync"]["err"]);
            }
        }
        match &lim["file_write"]["ok"] {
            Value::Object(w) => {
                let _ = writeln!(
                    o,
                    "- the log's payload bytes ({} MB) written with 1 MiB pwrite into a new file: {} MB/s into the page cache, {} MB/s with the final fdatasync",
                    human(w["bytes"].as_f64().unwrap_or(0.0) / 1e6),
                    human(w["fill_mb_per_s"].as_f64().unwrap_or(0.0)),
                    human(w["write_sync_mb_per_s"].as_f64().unwrap_or(0.0))
                );
            }
            _ if lim.get("file_write").is_some() => {
                let _ = writeln!(o, "- file write: {}", lim["file_write"]["err"]);
            }
            _ => {}
        }
        if let Some(f) = lim["fdatasync_interleaved"]["ok"]["ops_per_s"].as_f64() {
            let i = &lim["fdatasync_interleaved"]["ok"];
            let _ = writeln!(
                o,
                "- 16 KiB pwrite + fdatasync, written file, interleaved with workload 3 (the limit used below): {} ops/s (p50 {} µs, p99 {} µs)",
                human(f),
                human(i["p50_us"].as_f64().unwrap_or(0.0)),
                human(i["p99_us"].as_f64().unwrap_or(0.0))
            );
        }
        let _ = writeln!(o);
    }

    if workloads.is_empty() {
        return t.out;
    }
    let eng = &r["engines"];
    // header
    let mut head = "| workload |".to_string();
    let mut sep = "|---|".to_string();
    for e in engines {
        let _ = write!(head, " {e} |");
        sep.push_str("---:|");
    }
    head.push_str(" ours / best competitor | ours-raft / best competitor |");
    sep.push_str("---|---|");
    let _ = writeln!(t.out, "{head}\n{sep}");

    let value = |e: &str, w: &str, metric: &str| -> Result<f64, String> {
        let c = &eng[e]["cells"][w];
        if let Some(v) = c["ok"][metric].as_f64() {
            Ok(v)
        } else if let Some(s) = c["err"].as_str() {
            Err(format!("{e} / {w}: {s}"))
        } else {
            Err(format!("{e} / {w}: no result reported"))
        }
    };

    for row in ROWS.iter().filter(|r| workloads.contains(&r.workload)) {
        let mut line = format!("| {} |", row.label);
        let (mut ours, mut ours_raft) = (None, None);
        let mut best: Option<(f64, &str)> = None;
        for e in engines {
            match value(e, row.workload, row.metric) {
                Ok(v) => {
                    let _ = write!(line, " {} |", human(v));
                    if *e == "ours" {
                        ours = Some(v);
                    } else if *e == "ours-raft" {
                        ours_raft = Some(v);
                    } else if best
                        .is_none_or(|(b, _)| if row.higher_better { v > b } else { v < b })
                    {
                        best = Some((v, e));
                    }
                }
                Err(text) => {
                    let n = t.note(text);
                    let _ = write!(line, " {n} |");
                }
            }
        }
        let _ = writeln!(
            line,
            " {} | {} |",
            ratio(ours, best, row.higher_better),
            ratio(ours_raft, best, row.higher_better)
        );
        t.out.push_str(&line);
    }

    // Memory rows.
    for (label, key) in [
        ("peak RSS, VmHWM (MiB)", "vm_hwm_kib"),
        ("peak anon RSS, sampled every 10 ms (MiB)", "peak_anon_kib"),
        ("anon RSS at exit (MiB)", "rss_anon_kib"),
    ] {
        let mut line = format!("| {label} |");
        let (mut ours, mut ours_raft) = (None, None);
        let mut best: Option<(f64, &str)> = None;
        for e in engines {
            match eng[e]["rss"][key].as_f64() {
                Some(kib) => {
                    let mib = kib / 1024.0;
                    let _ = write!(line, " {} |", human(mib));
                    if *e == "ours" {
                        ours = Some(mib);
                    } else if *e == "ours-raft" {
                        ours_raft = Some(mib);
                    } else if best.is_none_or(|(b, _)| mib < b) {
                        best = Some((mib, e));
                    }
                }
                None => {
                    let n = t.note(format!(
                        "{e} / memory: the child process reported no RSS (it did not finish)"
                    ));
                    let _ = write!(line, " {n} |");
                }
            }
        }
        let _ = writeln!(
            line,
            " {} | {} |",
            ratio(ours, best, false),
            ratio(ours_raft, best, false)
        );
        t.out.push_str(&line);
    }
    if let Some(n) = p["entries"].as_f64().filter(|n| *n > 0.0) {
        let floor = (p["read_range"].as_f64().unwrap_or(0.0)
            * (n / p["read_range"].as_f64().unwrap_or(n).max(1.0)).clamp(1.0, 16.0)
            * p["entry_size"].as_f64().unwrap_or(0.0))
            / (1 << 20) as f64;
        let mut line = format!(
            "| peak anon RSS above the child's own start, bytes per entry (includes the harness's {floor:.1} MiB read floor) |"
        );
        for e in engines {
            let r = &eng[e]["rss"];
            match (r["peak_anon_kib"].as_f64(), r["start_anon_kib"].as_f64()) {
                (Some(peak), Some(start)) => {
                    let _ = write!(line, " {:.1} |", (peak - start).max(0.0) * 1024.0 / n);
                }
                _ => line.push_str(" - |"),
            }
        }
        line.push_str(" | |\n");
        t.out.push_str(&line);
    }

    // Fractions of the physical limits.
    let mut frac = String::new();
    if let Some(g) = memcpy {
        let mut line = "| 1. append MB/s as % of memcpy |".to_string();
        for e in engines {
            match value(e, "append", "mb_per_s") {
                Ok(v) => {
                    let _ = write!(line, " {:.1}% |", v / (g * 1e3) * 100.0);
                }
                Err(_) => line.push_str(" - |"),
            }
        }
        if workloads.contains(&"append") {
            let _ = writeln!(frac, "{line}");
        }
    }
    let write = &lim["file_write"]["ok"];
    for (workload, key, what) in [
        (
            "append",
            "fill_mb_per_s",
            "1. append MB/s as % of a pwrite of the same bytes into a new file's page cache",
        ),
        (
            "bulk_sync",
            "write_sync_mb_per_s",
            "2. bulk + sync MB/s as % of a pwrite + fdatasync of the same bytes",
        ),
    ] {
        if let (Some(limit), true) = (write[key].as_f64(), workloads.contains(&workload)) {
            let mut line = format!("| {what} |");
            for e in engines {
                match value(e, workload, "mb_per_s") {
                    Ok(v) => {
                        let _ = write!(line, " {:.0}% |", v / limit * 100.0);
                    }
                    Err(_) => line.push_str(" - |"),
                }
            }
            let _ = writeln!(frac, "{line}");
        }
    }
    let inter = &lim["fdatasync_interleaved"]["ok"];
    if workloads.contains(&"durable") {
        if let Some(f) = inter["ops_per_s"].as_f64() {
            let mut line =
                "| 3. durable batches/s as % of bare pwrite+fdatasync (interleaved) |".to_string();
            for e in engines {
                match value(e, "durable", "ops_per_s") {
                    Ok(v) => {
                        let _ = write!(line, " {:.0}% |", v / f * 100.0);
                    }
                    Err(_) => line.push_str(" - |"),
                }
            }
            let _ = writeln!(frac, "{line}");
        }
    }
    let falloc = lim["fdatasync"]["ok"]["fallocated"]["ops_per_s"].as_f64();
    if workloads.contains(&"durable") {
        if let Some(f) = falloc {
            let mut line =
                "| 3. durable batches/s as % of bare pwrite+fdatasync into fresh fallocated blocks |"
                    .to_string();
            for e in engines {
                match value(e, "durable", "ops_per_s") {
                    Ok(v) => {
                        let _ = write!(line, " {:.0}% |", v / f * 100.0);
                    }
                    Err(_) => line.push_str(" - |"),
                }
            }
            let _ = writeln!(frac, "{line}");
        }
        let bare = match (inter["p99_us"].as_f64(), inter["p50_us"].as_f64()) {
            (Some(p99), Some(p50)) if p50 > 0.0 => {
                format!("; the bare loop beside them: {:.2}x", p99 / p50)
            }
            _ => String::new(),
        };
        let mut line = format!("| 3. durable batch p99 / p50 (goal ≤ 1.5x{bare}) |");
        for e in engines {
            match (value(e, "durable", "p99_us"), value(e, "durable", "p50_us")) {
                (Ok(p99), Ok(p50)) if p50 > 0.0 => {
                    let _ = write!(line, " {:.2}x |", p99 / p50);
                }
                _ => line.push_str(" - |"),
            }
        }
        let _ = writeln!(frac, "{line}");
    }
    let written = lim["fdatasync"]["ok"]["written"]["ops_per_s"].as_f64();
    if let (true, Some(w)) = (workloads.contains(&"durable_long"), written) {
        let mut line = "| 8. durable batches/s after the first segment as % of bare pwrite+fdatasync over written blocks (goal ≥ 85%) |".to_string();
        for e in engines {
            match value(e, "durable_long", "after_first_segment_ops_per_s") {
                Ok(v) => {
                    let _ = write!(line, " {:.0}% |", v / w * 100.0);
                }
                Err(_) => line.push_str(" - |"),
            }
        }
        let _ = writeln!(frac, "{line}");
    }
    // A row of `metric / floor_metric` per engine, with both figures.
    let ratio_row = |label: &str, workload: &str, metric: &str, floor_metric: &str, unit: &str| {
        let mut line = format!("| {label} |");
        for e in engines {
            match (value(e, workload, metric), value(e, workload, floor_metric)) {
                (Ok(v), Ok(floor)) if floor > 0.0 => {
                    let _ = write!(
                        line,
                        " {:.2}x ({} / {} {unit}) |",
                        v / floor,
                        human(v),
                        human(floor)
                    );
                }
                _ => line.push_str(" - |"),
            }
        }
        line
    };
    if workloads.contains(&"read") {
        let line = ratio_row(
            "4. range read ns/entry as a multiple of the harness floor (same process)",
            "read",
            "ns_per_entry",
            "floor_ns_per_entry",
            "ns",
        );
        let _ = writeln!(frac, "{line}");
    }
    if workloads.contains(&"first_touch") {
        for (label, metric, floor_metric) in [
            (
                "7. first-touch read ns/entry as a multiple of the same bytes' first touch in a heap copy",
                "ns_per_entry",
                "floor_fresh_ns_per_entry",
            ),
            (
                "7. first-touch read ns/entry as a multiple of a hot re-read",
                "ns_per_entry",
                "hot_ns_per_entry",
            ),
            (
                "7. lagging read (16 MiB behind) ns/entry as a multiple of the same bytes in a heap copy",
                "lagging_ns_per_entry",
                "lagging_floor_ns_per_entry",
            ),
        ] {
            let line = ratio_row(label, "first_touch", metric, floor_metric, "ns");
            let _ = writeln!(frac, "{line}");
        }
    }
    if workloads.contains(&"recovery") {
        let line = ratio_row(
            "5. cold recovery as a multiple of a cold read() of its own files",
            "recovery",
            "cold_ms",
            "cold_read_ms",
            "ms",
        );
        let _ = writeln!(frac, "{line}");
    }
    if !frac.is_empty() {
        let mut head = "\n| fraction of the physical limit |".to_string();
        let mut sep = "|---|".to_string();
        for e in engines {
            let _ = write!(head, " {e} |");
            sep.push_str("---:|");
        }
        let _ = writeln!(t.out, "{head}\n{sep}\n{frac}");
    }

    // Recovery eviction check.
    let mut ev = Vec::new();
    for e in engines {
        if let Some(pct) = eng[e]["cells"]["recovery"]["ok"]["resident_after_evict_pct"].as_f64() {
            ev.push(format!("{e} {pct:.1}%"));
        }
    }
    if !ev.is_empty() {
        let _ = writeln!(t.out, "\nCold recovery: share of the log's pages still cached after posix_fadvise(DONTNEED): {}", ev.join(", "));
    }
    let times: Vec<String> = engines
        .iter()
        .filter_map(|e| {
            eng[e]["child_secs"]
                .as_f64()
                .map(|s| format!("{e} {s:.1} s"))
        })
        .collect();
    let _ = writeln!(
        t.out,
        "Wall time per engine: {}; total {:.1} s",
        times.join(", "),
        r["total_secs"].as_f64().unwrap_or(0.0)
    );

    if !t.notes.is_empty() {
        let _ = writeln!(t.out, "\nCells without a figure:");
        for (i, n) in t.notes.iter().enumerate() {
            let _ = writeln!(t.out, "[{}] {n}", i + 1);
        }
    }
    let _ = writeln!(t.out, "\nRatios: ours / best competitor for that row; throughput rows: >1x = ours faster; latency, time and memory rows: <1x = ours better. VmHWM counts file pages mapped by mmap-based stores (ours, hiqlite-wal) while they are resident; anon RSS does not. Memory rows cover workloads 1, 2, 4, 5 (workload 3 runs all engines interleaved in one process so that all see the same device state).");
    let _ = writeln!(t.out, "{NOTES}");
    t.out
}
