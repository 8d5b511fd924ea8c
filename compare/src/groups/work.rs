//! Child side of `compare groups`: one cell (workload configuration) of one engine, in a
//! fresh directory: open, prefill, the timed workload, resource readings, close, reopen.

use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{summarize, Batch, Fail, Gen, R};

/// Entries per group per write (a Raft Ready's new entries for one group).
pub const PER_GROUP: usize = 16;

/// Groups in the Ready-loop workload.
pub const READY_GROUPS: u64 = 256;

/// Above this many groups the separate-directories engine is not run (a store per group
/// means a flush thread and a preparer thread per group, and at least one file).
pub const DIRS_MAX_GROUPS: u64 = 256;

/// A multi-group log as the workloads see it. Groups are numbered `0..groups`; each engine
/// maps the number to its own id space. Shared by reference between writer threads.
pub trait GEngine: Send + Sync + Sized {
    fn open(dir: &Path, groups: u64) -> R<Self>;
    /// Writes each group's batch; with `durable`, returns once all of them are durable.
    /// Returns how long the writing part took before the sync, for an engine where the two
    /// are separate calls (`None` for one call doing both).
    fn write(&self, parts: &[(u64, &Batch)], durable: bool) -> R<Option<Duration>>;
    /// One independent writer's durable write: one group's batch, then a sync; returns the
    /// writing part's time as [`GEngine::write`] does.
    fn append_sync(&self, group: u64, batch: &Batch) -> R<Option<Duration>> {
        self.write(&[(group, batch)], true)
    }
    /// Makes everything written so far durable in every group (end of the prefill).
    fn sync_all(&self) -> R<()>;
    fn last_index(&self, group: u64) -> R<Option<u64>>;
    fn close(self) -> R<()>;
}

/// One workload configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell {
    /// One writer; each round writes `k` groups' entries and makes them durable at once.
    Ready { groups: u64, k: usize },
    /// `threads` writers, each doing durable writes round-robin over its own groups.
    Indep { threads: usize, groups: u64 },
}

impl Cell {
    pub fn spec(&self) -> String {
        match self {
            Cell::Ready { groups, k } => format!("ready:{groups}:{k}"),
            Cell::Indep { threads, groups } => format!("indep:{threads}:{groups}"),
        }
    }

    pub fn parse(s: &str) -> Option<Cell> {
        let f: Vec<&str> = s.split(':').collect();
        match f.as_slice() {
            ["ready", g, k] => Some(Cell::Ready {
                groups: g.parse().ok()?,
                k: k.parse().ok()?,
            }),
            ["indep", t, g] => Some(Cell::Indep {
                threads: t.parse().ok()?,
                groups: g.parse().ok()?,
            }),
            _ => None,
        }
    }

    pub fn groups(&self) -> u64 {
        match *self {
            Cell::Ready { groups, .. } | Cell::Indep { groups, .. } => groups,
        }
    }

    pub fn workload(&self) -> &'static str {
        match self {
            Cell::Ready { .. } => "ready",
            Cell::Indep { .. } => "indep",
        }
    }
}

/// Fields of /proc/self/status (KiB for the memory ones).
pub fn status(names: &[&str]) -> Value {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mut m = serde_json::Map::new();
    for n in names {
        let v = s
            .lines()
            .find(|l| l.starts_with(&format!("{n}:")))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok());
        m.insert(n.to_string(), json!(v));
    }
    Value::Object(m)
}

#[derive(Default)]
struct Usage {
    files: u64,
    dirs: u64,
    len: u64,
    allocated: u64,
}

fn usage(dir: &Path, u: &mut Usage) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let md = e.metadata()?;
        if md.is_dir() {
            u.dirs += 1;
            usage(&e.path(), u)?;
        } else if md.is_file() {
            u.files += 1;
            u.len += md.len();
            u.allocated += md.blocks() * 512;
        }
    }
    Ok(())
}

fn wrong(what: String) -> Fail {
    Fail::Error(what)
}

/// Writes one batch of entries into every group (256 groups per write), then makes it all
/// durable: every group exists before the timed part, and no dirty page is left for it.
fn prefill<E: GEngine>(e: &E, gen: &Gen, next: &mut [u64]) -> R<()> {
    let ids: Vec<u64> = (0..next.len() as u64).collect();
    for chunk in ids.chunks(256) {
        let batches: Vec<Batch> = chunk
            .iter()
            .map(|&g| {
                let mut b = gen.batch();
                gen.fill(&mut b, next[g as usize], PER_GROUP);
                b
            })
            .collect();
        let parts: Vec<(u64, &Batch)> = chunk.iter().copied().zip(batches.iter()).collect();
        let _ = e.write(&parts, false)?;
        for &g in chunk {
            next[g as usize] += PER_GROUP as u64;
        }
    }
    e.sync_all()
}

/// The Ready loop: one thread, rounds of `k` groups picked round-robin.
/// What a timed workload measured: entries, wall seconds, per-write latencies and (engines
/// with separate calls) the writing part of each.
type Measured = (u64, f64, Vec<Duration>, Vec<Duration>);

fn ready<E: GEngine>(e: &E, gen: &Gen, next: &mut [u64], k: usize, secs: f64) -> R<Measured> {
    let g = next.len();
    if k == 0 || k > g {
        return Err(wrong(format!("K = {k} must be in 1..={g}")));
    }
    let mut batches: Vec<Batch> = (0..k).map(|_| gen.batch()).collect();
    let mut lat = Vec::new();
    let mut part = Vec::new();
    let mut cursor = 0usize;
    let mut entries = 0u64;
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        let ids: Vec<u64> = (0..k).map(|j| ((cursor + j) % g) as u64).collect();
        cursor = (cursor + k) % g;
        for (b, &id) in batches.iter_mut().zip(&ids) {
            gen.fill(b, next[id as usize], PER_GROUP);
        }
        let parts: Vec<(u64, &Batch)> = ids.iter().copied().zip(batches.iter()).collect();
        let t0 = Instant::now();
        let w = e.write(&parts, true)?;
        lat.push(t0.elapsed());
        part.extend(w);
        for &id in &ids {
            next[id as usize] += PER_GROUP as u64;
        }
        entries += (k * PER_GROUP) as u64;
    }
    Ok((entries, start.elapsed().as_secs_f64(), lat, part))
}

/// Independent writers: thread `t` owns groups `t, t + T, t + 2T, ...` and writes them
/// round-robin, each write made durable before the next.
fn indep<E: GEngine>(e: &E, gen: &Gen, next: &mut [u64], threads: usize, secs: f64) -> R<Measured> {
    let g = next.len();
    if threads == 0 || threads > g {
        return Err(wrong(format!("T = {threads} must be in 1..={g}")));
    }
    let mut shares: Vec<Vec<(u64, u64)>> = (0..threads)
        .map(|t| {
            (t..g)
                .step_by(threads)
                .map(|i| (i as u64, next[i]))
                .collect()
        })
        .collect();
    let barrier = Barrier::new(threads + 1);
    let dur = Duration::from_secs_f64(secs);
    let (results, wall) = std::thread::scope(|s| {
        let handles: Vec<_> = shares
            .iter_mut()
            .map(|share| {
                let barrier = &barrier;
                s.spawn(move || -> R<(Vec<Duration>, Vec<Duration>)> {
                    let mut b = gen.batch();
                    let mut lat = Vec::new();
                    let mut part = Vec::new();
                    barrier.wait();
                    let end = Instant::now() + dur;
                    let mut i = 0usize;
                    while Instant::now() < end {
                        let n = share.len();
                        let (group, nx) = &mut share[i % n];
                        gen.fill(&mut b, *nx, PER_GROUP);
                        let t0 = Instant::now();
                        let w = e.append_sync(*group, &b)?;
                        lat.push(t0.elapsed());
                        part.extend(w);
                        *nx += PER_GROUP as u64;
                        i += 1;
                    }
                    Ok((lat, part))
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let results: Vec<R<(Vec<Duration>, Vec<Duration>)>> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(wrong("a writer thread panicked".into())))
            })
            .collect();
        (results, start.elapsed().as_secs_f64())
    });
    let (mut lat, mut part) = (Vec::new(), Vec::new());
    for r in results {
        let (l, p) = r?;
        lat.extend(l);
        part.extend(p);
    }
    for share in &shares {
        for &(group, nx) in share {
            next[group as usize] = nx;
        }
    }
    Ok(((lat.len() * PER_GROUP) as u64, wall, lat, part))
}

/// The device's durable-write latency right now: p50 (µs) of up to 60 4 KiB `pwrite` +
/// `fdatasync` at consecutive offsets of a 1 MiB file whose blocks were written and synced
/// first (within 0.4 s). On a shared VM this swings between two regimes (about 0.2 ms and
/// 2-4 ms) from minute to minute; each cell records it before and after its workload.
fn fdatasync_probe(dir: &Path) -> R<f64> {
    use std::os::unix::fs::FileExt;
    let io = |e: std::io::Error| wrong(format!("fdatasync probe: {e}"));
    let path = dir.join("probe.dat");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io)?;
    file.write_all_at(&vec![0u8; 1 << 20], 0).map_err(io)?;
    file.sync_all().map_err(io)?;
    let block = [0xA5u8; 4096];
    let mut lat = Vec::new();
    let t = Instant::now();
    for i in 0..60u64 {
        let t0 = Instant::now();
        file.write_all_at(&block, i * 4096).map_err(io)?;
        file.sync_data().map_err(io)?;
        lat.push(t0.elapsed());
        if t.elapsed() > Duration::from_millis(400) {
            break;
        }
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    lat.sort();
    Ok(lat[lat.len() / 2].as_secs_f64() * 1e6)
}

/// CPU time (user + system, µs) and context switches (voluntary, involuntary) of the whole
/// process so far.
fn rusage() -> (f64, i64, i64) {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return (0.0, 0, 0);
    }
    let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    (us(ru.ru_utime) + us(ru.ru_stime), ru.ru_nvcsw, ru.ru_nivcsw)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs one cell of engine `E` in `dir` (which must not exist yet) and reports it.
pub fn run_cell<E: GEngine>(dir: &Path, cell: Cell, secs: f64, entry_size: usize) -> R<Value> {
    let base = status(&["Threads", "RssAnon", "RssFile"]);
    let probe_dir = dir
        .parent()
        .ok_or_else(|| wrong("cell directory without a parent".into()))?;
    std::fs::create_dir_all(probe_dir)
        .map_err(|e| wrong(format!("creating {}: {e}", probe_dir.display())))?;
    let probe_before = fdatasync_probe(probe_dir)?;
    let gen = Gen::new(entry_size);
    let groups = cell.groups();
    let t = Instant::now();
    let e = E::open(dir, groups)?;
    let open_ms = ms(t.elapsed());
    let mut next = vec![1u64; groups as usize];
    let t = Instant::now();
    prefill(&e, &gen, &mut next)?;
    let prefill_ms = ms(t.elapsed());
    let after_prefill: u64 = next.iter().map(|n| n - 1).sum();
    let ru0 = rusage();
    let (entries, wall, mut lat, mut part) = match cell {
        Cell::Ready { k, .. } => ready(&e, &gen, &mut next, k, secs)?,
        Cell::Indep { threads, .. } => indep(&e, &gen, &mut next, threads, secs)?,
    };
    let ru1 = rusage();
    if lat.is_empty() {
        return Err(wrong("no write finished in the time given".into()));
    }
    // Writer threads have exited: what is left is the child's 2 (main, RSS sampler) plus the
    // engine's own threads.
    let during = status(&["Threads", "VmRSS", "RssAnon", "RssFile", "VmHWM"]);
    let per_op = match cell {
        Cell::Ready { k, .. } => k * PER_GROUP,
        Cell::Indep { .. } => PER_GROUP,
    };
    let lat_summary = summarize(&mut lat, per_op);
    let part_summary = if part.is_empty() {
        Value::Null
    } else {
        summarize(&mut part, per_op)
    };
    let t = Instant::now();
    e.close()?;
    let close_ms = ms(t.elapsed());
    let probe_after = fdatasync_probe(probe_dir)?;
    let mut u = Usage::default();
    usage(dir, &mut u).map_err(|err| wrong(format!("reading {}: {err}", dir.display())))?;
    let t = Instant::now();
    let e = E::open(dir, groups)?;
    let reopen_ms = ms(t.elapsed());
    for (g, &nx) in next.iter().enumerate() {
        let last = e.last_index(g as u64)?;
        if last != Some(nx - 1) {
            return Err(wrong(format!(
                "after reopen group {g} ends at {last:?}, expected {}",
                nx - 1
            )));
        }
    }
    e.close()?;
    let total: u64 = next.iter().map(|n| n - 1).sum();
    Ok(json!({
        "entries": entries,
        "secs": wall,
        "entries_per_s": entries as f64 / wall,
        "ops": lat_summary["ops"],
        "mean_us": lat_summary["busy_secs"].as_f64().unwrap_or(0.0) * 1e6 / lat.len() as f64,
        "cpu_us_per_entry": (ru1.0 - ru0.0) / entries.max(1) as f64,
        "vol_switches_per_op": (ru1.1 - ru0.1) as f64 / lat.len() as f64,
        "invol_switches_per_op": (ru1.2 - ru0.2) as f64 / lat.len() as f64,
        "p50_us": lat_summary["p50_us"],
        "p99_us": lat_summary["p99_us"],
        "p999_us": lat_summary["p999_us"],
        "write_part_p50_us": part_summary["p50_us"],
        "write_part_p99_us": part_summary["p99_us"],
        "write_part_p999_us": part_summary["p999_us"],
        "probe_before_p50_us": probe_before,
        "probe_after_p50_us": probe_after,
        "open_ms": open_ms,
        "prefill_ms": prefill_ms,
        "prefill_entries": after_prefill,
        "close_ms": close_ms,
        "reopen_ms": reopen_ms,
        "entries_in_log": total,
        "files": u.files,
        "dirs": u.dirs,
        "file_bytes": u.len,
        "disk_bytes": u.allocated,
        "threads_base": base["Threads"],
        "threads": during["Threads"],
        "rss_kib": during["VmRSS"],
        "rss_anon_kib": during["RssAnon"],
        "rss_file_kib": during["RssFile"],
        "rss_anon_base_kib": base["RssAnon"],
        "vm_hwm_kib": during["VmHWM"],
    }))
}
