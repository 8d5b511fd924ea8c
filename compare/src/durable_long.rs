//! Workload 8, `durable_long` (opt-in): sustained durable writes past a new log's first
//! segment, nothing purged. A new log's first file may have had its blocks written when it
//! was made; every later file is new too (nothing is recycled without purges), so a durable
//! writer there pays for whatever the crate does (or does not do) to make new files' blocks
//! written before it syncs into them.
//!
//! Durable batches of `params.durable_batch` entries (`append_durable`) until 10 segments'
//! worth of payload is written, each timed. Reported: all batches, the batches within the
//! first segment's worth of payload, and those after it, as batches/s with p50 and p99. The
//! last index is checked and the last batch read back.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::engines::SEGMENT_BYTES;
use crate::harness::{fresh, guarded, read_checked, summarize, Engine, Fail, Gen, Mode, Params, R};

/// Segments' worth of payload written.
const SEGMENTS: u64 = 10;

/// Runs the workload for one engine in `root/durable_long` and returns its cell.
pub fn run<E: Engine>(p: &Params, root: &Path) -> R<Value> {
    let dir = fresh(root, "durable_long");
    let r = guarded("durable_long", || run_in::<E>(p, &dir));
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn run_in<E: Engine>(p: &Params, dir: &Path) -> R<Value> {
    let gen = Gen::new(p.entry_size);
    let per = p.durable_batch.max(1);
    let seg_entries = (SEGMENT_BYTES / p.entry_size as u64).max(1);
    let batches = (SEGMENTS * seg_entries).div_ceil(per as u64) as usize;
    let first_seg_batches = (seg_entries / per as u64) as usize;
    let first = E::FIRST_INDEX;
    let mut e = E::open(dir, Mode::DurableEach)?;
    let mut lat: Vec<Duration> = Vec::with_capacity(batches);
    let next = first + (batches * per) as u64;
    let t = Instant::now();
    gen.each_batch(first, next - first, per, |b| {
        let t0 = Instant::now();
        e.append_durable(b)?;
        lat.push(t0.elapsed());
        Ok(())
    })?;
    let secs = t.elapsed().as_secs_f64();
    let last = e.last_index()?;
    if last != Some(next - 1) {
        return Err(Fail::Error(format!(
            "after durable_long last index is {last:?}, expected {}",
            next - 1
        )));
    }
    read_checked(&mut e, next - per as u64, next, p.entry_size)?;
    e.close()?;

    let split = first_seg_batches.min(lat.len());
    let (head, tail) = lat.split_at_mut(split);
    let first_segment = if head.is_empty() {
        Value::Null
    } else {
        summarize(head, per)
    };
    let after = if tail.is_empty() {
        Value::Null
    } else {
        summarize(tail, per)
    };
    let all = summarize(&mut lat, per);
    Ok(json!({
        "batches": batches, "entries_per_batch": per, "secs": secs,
        "segments_of_payload": SEGMENTS,
        "ops_per_s": all["ops_per_s"], "p50_us": all["p50_us"], "p99_us": all["p99_us"],
        "first_segment_ops_per_s": first_segment["ops_per_s"],
        "after_first_segment_ops_per_s": after["ops_per_s"],
        "after_first_segment_p99_us": after["p99_us"],
        "all": all, "first_segment": first_segment, "after_first_segment": after,
    }))
}
