//! What a `bench` phase measured and how it is reported: page faults (of the writer thread
//! and of the process), latency percentiles, rates, resident memory.

use std::time::Duration;

use serde_json::{json, Value};

/// One measured phase.
pub(super) struct Phase {
    pub(super) name: String,
    pub(super) entries: u64,
    pub(super) bytes: u64,
    pub(super) elapsed: Duration,
    pub(super) note: String,
    /// Page faults during the phase.
    pub(super) faults: Option<Faults>,
}

impl Phase {
    pub(super) fn per_sec(&self) -> f64 {
        self.entries as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub(super) fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub(super) fn json(&self) -> Value {
        json!({
            "name": self.name,
            "entries": self.entries,
            "payload_bytes": self.bytes,
            "seconds": self.elapsed.as_secs_f64(),
            "entries_per_sec": self.per_sec().round(),
            "mb_per_sec": (self.mb_per_sec() * 10.0).round() / 10.0,
            "note": self.note,
            "writer_faults": self.faults.map(|f| json!({"minor": f.writer.0, "major": f.writer.1})),
            "process_faults": self.faults.map(|f| json!({"minor": f.process.0, "major": f.process.1})),
            "writer_faults_per_mb": self.faults_per_mb(|f| f.writer).map(|v| (v * 100.0).round() / 100.0),
            "process_faults_per_mb": self.faults_per_mb(|f| f.process).map(|v| (v * 100.0).round() / 100.0),
        })
    }

    /// Page faults (minor + major) per MB of payload, of the writer thread or the process.
    pub(super) fn faults_per_mb(&self, which: impl Fn(&Faults) -> (u64, u64)) -> Option<f64> {
        let (minor, major) = which(self.faults.as_ref()?);
        Some((minor + major) as f64 / (self.bytes as f64 / 1e6).max(1e-9))
    }
}

/// Page faults so far (minor, major) of the calling thread (the writer: what the hot path
/// takes) and of the whole process (with the preparer's prefaulting), from
/// `/proc/thread-self/stat` and `/proc/self/stat`. `None` where they are missing.
pub(super) fn faults() -> Option<Faults> {
    Some(Faults {
        writer: stat_faults("/proc/thread-self/stat")?,
        process: stat_faults("/proc/self/stat")?,
    })
}

/// Page faults (minor, major) of the writer thread and of the process.
#[derive(Debug, Clone, Copy)]
pub(super) struct Faults {
    pub(super) writer: (u64, u64),
    pub(super) process: (u64, u64),
}

/// Fields 10 (minflt) and 12 (majflt) of a `stat` file, counted after the command name
/// (which may hold spaces).
fn stat_faults(path: &str) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(path).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid pgrp session tty_nr tpgid flags minflt(10) cminflt majflt(12).
    Some((f.get(7)?.parse().ok()?, f.get(9)?.parse().ok()?))
}

/// Faults between two readings.
pub(super) fn faults_since(before: Option<Faults>) -> Option<Faults> {
    let (a, b) = (before?, faults()?);
    let d = |x: (u64, u64), y: (u64, u64)| (y.0.saturating_sub(x.0), y.1.saturating_sub(x.1));
    Some(Faults {
        writer: d(a.writer, b.writer),
        process: d(a.process, b.process),
    })
}

pub(crate) fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

pub(crate) fn us(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e7).round() / 10.0
}

pub(super) fn fmt_rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// Fields of `/proc/self/status` in bytes (VmRSS, RssAnon, RssFile).
pub(super) fn proc_status() -> (u64, u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("RssAnon:"), field("RssFile:"))
}
