//! Workload 6, `steady` (opt-in): a node that runs for days. It appends and purges behind its
//! snapshots, keeping the last K entries (K = 4 segments' worth), so the files it writes to
//! are recycled ones rather than fresh ones. Purges run in steps of 1/16 segment: whenever the
//! log holds more than K + step entries, it is purged down to the last K.
//!
//! 1. fill, untimed: 3 K entries in batches of `params.batch`, purging as it goes, then one
//!    sync, so that purged files have been released (to the pool where the crate has one);
//! 2. append, timed: N = max(`params.entries`, 10 segments' worth) more entries, no sync,
//!    purges continuing; entries/s and MB/s;
//! 3. durable, timed: `params.durable_batches` durable batches of `params.durable_batch`
//!    entries (`append_durable`), purges continuing; each operation's time covers the durable
//!    append and the purge that follows it, if any.
//!
//! Then the last index is checked and the last batch read back.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::engines::SEGMENT_BYTES;
use crate::harness::{
    fresh, guarded, mbps, read_checked, summarize, Engine, Fail, Gen, Mode, Params, R,
};

/// Keeps the log at most `keep + step` entries long: once an append passes that, purges down
/// to the last `keep`. (Purging after every batch would cost raft-engine O(K) per purge: its
/// `compact_to` shrinks the in-memory index to fit, and the next append regrows it. Raft
/// nodes purge in steps too, behind snapshots or on a log-GC tick.)
struct Purger {
    keep: u64,
    step: u64,
    first: u64,
    purges: u64,
    secs: f64,
}

impl Purger {
    /// `next` is the index after the last one appended.
    fn after_append<E: Engine>(&mut self, e: &mut E, next: u64) -> R<()> {
        if next - self.first > self.keep + self.step {
            let first_kept = next - self.keep;
            let t = Instant::now();
            e.purge_to(first_kept)?;
            self.secs += t.elapsed().as_secs_f64();
            self.purges += 1;
            self.first = first_kept;
        }
        Ok(())
    }
}

/// Appends `first..first + n` in batches of `per_batch`, purging behind.
fn append_purging<E: Engine>(
    e: &mut E,
    gen: &Gen,
    purger: &mut Purger,
    first: u64,
    n: u64,
    per_batch: usize,
) -> R<()> {
    gen.each_batch(first, n, per_batch, |b| {
        e.append(b)?;
        purger.after_append(e, b.end())
    })
}

/// Files and bytes under `dir`.
fn dir_usage(dir: &Path) -> (u64, u64) {
    let (mut files, mut bytes) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for ent in rd.flatten() {
            let Ok(md) = ent.metadata() else { continue };
            if md.is_dir() {
                stack.push(ent.path());
            } else {
                files += 1;
                bytes += md.len();
            }
        }
    }
    (files, bytes)
}

/// Runs the workload for one engine in `root/steady` and returns its cell.
pub fn run<E: Engine>(p: &Params, root: &Path) -> R<Value> {
    let dir = fresh(root, "steady");
    let r = guarded("steady", || run_in::<E>(p, &dir));
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn run_in<E: Engine>(p: &Params, dir: &Path) -> R<Value> {
    let gen = Gen::new(p.entry_size);
    let size = p.entry_size as u64;
    let seg_entries = (SEGMENT_BYTES / size).max(1);
    let keep = seg_entries * 4;
    let first = E::FIRST_INDEX;
    let mut e = E::open(dir, Mode::Lazy)?;
    // Fail fast (before the fill) if the crate has no purge in the harness.
    let mut b = gen.batch();
    gen.fill(&mut b, first, 1);
    e.append(&b)?;
    e.purge_to(first)?;
    let mut purger = Purger {
        keep,
        step: (seg_entries / 16).max(1),
        first,
        purges: 0,
        secs: 0.0,
    };
    let mut next = first + 1;

    // 1. fill, untimed
    let fill = 3 * keep;
    append_purging(&mut e, &gen, &mut purger, next, fill - 1, p.batch)?;
    next += fill - 1;
    e.sync()?;
    let after_fill = dir_usage(dir);

    // 2. append, timed
    let n = p.entries.max(10 * seg_entries);
    let (purges0, psecs0) = (purger.purges, purger.secs);
    let t = Instant::now();
    append_purging(&mut e, &gen, &mut purger, next, n, p.batch)?;
    e.settle()?;
    let secs = t.elapsed().as_secs_f64();
    next += n;
    let append = json!({
        "entries": n, "secs": secs,
        "entries_per_s": n as f64 / secs, "mb_per_s": mbps(n, p.entry_size, secs),
        "purges": purger.purges - purges0, "purge_secs": purger.secs - psecs0,
    });
    let after_append = dir_usage(dir);

    // 3. durable batches, timed one by one (append_durable + its purge)
    let (purges0, psecs0) = (purger.purges, purger.secs);
    let mut lat: Vec<Duration> = Vec::with_capacity(p.durable_batches);
    for _ in 0..p.durable_batches {
        gen.fill(&mut b, next, p.durable_batch);
        let t0 = Instant::now();
        e.append_durable(&b)?;
        next += p.durable_batch as u64;
        purger.after_append(&mut e, next)?;
        lat.push(t0.elapsed());
    }
    if lat.is_empty() {
        return Err(Fail::Error("no durable batch was written".into()));
    }
    let mut durable = summarize(&mut lat, p.durable_batch);
    durable["purges"] = json!(purger.purges - purges0);
    durable["purge_secs"] = json!(purger.secs - psecs0);

    // check: last index, and the last batch reads back
    let last = e.last_index()?;
    if last != Some(next - 1) {
        return Err(Fail::Error(format!(
            "after steady last index is {last:?}, expected {}",
            next - 1
        )));
    }
    read_checked(&mut e, next - p.durable_batch as u64, next, p.entry_size)?;
    let at_end = dir_usage(dir);
    e.close()?;

    Ok(json!({
        "keep_entries": keep, "fill_entries": fill,
        "append_entries_per_s": append["entries_per_s"],
        "append_mb_per_s": append["mb_per_s"],
        "durable_ops_per_s": durable["ops_per_s"],
        "durable_p50_us": durable["p50_us"],
        "durable_p99_us": durable["p99_us"],
        "append": append, "durable": durable,
        "files_after_fill": after_fill.0, "bytes_after_fill": after_fill.1,
        "files_after_append": after_append.0, "bytes_after_append": after_append.1,
        "files_at_end": at_end.0, "bytes_at_end": at_end.1,
    }))
}
