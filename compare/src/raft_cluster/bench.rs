//! One cell of `compare cluster`, run in a child process: 3 raft-rs nodes on one backend, G
//! regions, durable client writes with a fixed number in flight; then a node restarted and
//! caught up. The Ready loop, the nodes and the client are the `raft_rs_multi` example's.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::backend::{Error, NodeLog};
use super::cluster::{problems, region_of, Cluster, PutStats};

/// What a cell runs.
#[derive(Debug, Clone, Copy)]
pub struct Work {
    pub regions: u64,
    /// Client writes in flight, in total over the regions.
    pub in_flight: usize,
    /// Seconds of measured writes (after a warm-up of a tenth of it).
    pub secs: f64,
    /// Seconds of writes while the restarted node is down.
    pub down_secs: f64,
    /// Whether to stop and restart a node (not for a backend without a disk: a node that
    /// comes back without its log is not a Raft restart, and raft-rs panics on it).
    pub restart: bool,
}

/// The node stopped and restarted.
const RESTARTED: u64 = 3;

/// Ready rounds that synced, and the time they spent writing and syncing, over all nodes.
fn rounds<L: NodeLog>(c: &Cluster<L>) -> (u64, Duration, Duration) {
    c.peers()
        .iter()
        .fold((0, Duration::ZERO, Duration::ZERO), |(n, w, s), &id| {
            let (dw, ds) = c.write_and_sync_time(id);
            (n + c.syncs(id), w + dw, s + ds)
        })
}

/// Runs the cell; the JSON of its figures.
pub fn run<L: NodeLog>(dir: &Path, w: Work) -> Result<Value, Error> {
    let regions: Vec<u64> = (1..=w.regions).collect();
    let g = w.regions;
    let route = move |k: u64| region_of(k, g);
    let mut cluster = Cluster::<L>::start(dir, 3, None);
    let t = Instant::now();
    cluster.create_regions(&regions)?;
    let election = t.elapsed();
    let mut acked = Vec::new();
    let mut next = 0u64;
    let mut put_for = |c: &mut Cluster<L>, secs: f64| -> Result<PutStats, Error> {
        let until = Instant::now() + Duration::from_secs_f64(secs);
        let s = c.put(next..u64::MAX, w.in_flight, Some(until), &route)?;
        next += s.acked.len() as u64; // every key sent was acknowledged
        acked.extend_from_slice(&s.acked);
        Ok(s)
    };
    put_for(&mut cluster, w.secs / 10.0)?;
    let before = rounds(&cluster);
    let s = put_for(&mut cluster, w.secs)?;
    let after = rounds(&cluster);
    let syncs = after.0 - before.0;
    // Per synced round (none without a disk: those figures are left out).
    let per_round = |x: f64| (syncs > 0).then(|| x / syncs as f64);
    let mut v = json!({
        "writes_per_s": s.per_second(),
        "p50_us": s.quantile_us(0.5),
        "p99_us": s.quantile_us(0.99),
        "writes": s.acked.len(),
        "syncs_per_s": syncs as f64 / s.elapsed.as_secs_f64(),
        // Every write is persisted on the 3 nodes: client writes per round of one node.
        "writes_per_sync": per_round(s.acked.len() as f64 * 3.0),
        "resent": s.resent,
        "write_us_per_round": per_round((after.1 - before.1).as_secs_f64() * 1e6),
        "sync_us_per_round": per_round((after.2 - before.2).as_secs_f64() * 1e6),
    });

    v["election_ms"] = json!(election.as_secs_f64() * 1e3);
    if w.restart {
        cluster.stop_node(RESTARTED)?;
        let down = put_for(&mut cluster, w.down_secs)?;
        let t = Instant::now();
        cluster.start_node(RESTARTED);
        let reopen = cluster.wait_open(RESTARTED)?;
        let recovered: u64 = cluster.recovered(RESTARTED).values().sum();
        cluster.wait_applied(&[RESTARTED], &regions)?;
        v["down_writes"] = json!(down.acked.len());
        v["reopen_ms"] = json!(reopen.as_secs_f64() * 1e3);
        v["catch_up_ms"] = json!(t.elapsed().as_secs_f64() * 1e3);
        v["entries_recovered"] = json!(recovered);
    }
    cluster.wait_applied(&cluster.peers(), &regions)?;
    let ends = cluster.stop_all()?;
    let wrong = problems(&ends, &regions, &acked, &route);
    if !wrong.is_empty() {
        return Err(format!("the nodes disagree: {}", wrong.join("; ")).into());
    }
    v["acked_checked"] = json!(acked.len());
    Ok(v)
}
