//! The run `examples/raft_rs_multi.rs` and `tests/raft_rs_multi.rs` make: 3 nodes, many
//! regions, keys hashed to regions, a node stopped and restarted from its log mid-run, a
//! region created on first contact and destroyed, and the checks at the end.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use super::backend::{Error, NodeLog};
use super::cluster::{problems, region_of, Cluster, PutStats};
use super::node::Input;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub regions: u64,
    pub keys: u64,
    /// Puts in flight.
    pub window: usize,
    /// Regions compact their logs to their last N applied entries: the restarted node then
    /// catches up from a snapshot in the regions that moved on without it.
    pub compact_keep: Option<u64>,
}

/// Keys written to the region created and destroyed at the end (after the hashed keys).
const LIFECYCLE_KEYS: u64 = 20;

/// What a run measured and found.
#[derive(Debug, Default)]
pub struct Report {
    /// Time for every region to elect its first leader.
    pub election: Duration,
    /// The three phases of puts: all nodes up, one node down, after its restart.
    pub phases: Vec<(String, Duration, u64)>,
    /// The node stopped and restarted.
    pub stopped: u64,
    /// Each region's last log index on the stopped node when it stopped.
    pub stopped_last: BTreeMap<u64, u64>,
    /// The regions (and their last index) it found in its log when it reopened.
    pub recovered: BTreeMap<u64, u64>,
    /// Time from its restart to all its regions running.
    pub reopen: Duration,
    /// Time from its restart to every region applied up to what its leader had committed.
    pub catch_up: Duration,
    /// Snapshots its regions restored from their leaders.
    pub snapshots: u64,
    /// Regions each node created on first contact (a message for a region it did not have).
    pub created_on_contact: BTreeMap<u64, u64>,
    /// Ready rounds that wrote, each with one sync, per node (the restarted node's since its
    /// restart).
    pub syncs: BTreeMap<u64, u64>,
    /// The region created during the run and destroyed.
    pub destroyed: u64,
    /// Whether it is gone from every node's log, and from a log reopened after the run.
    pub destroyed_gone: bool,
    /// Keys acknowledged.
    pub acked: u64,
    /// Each node's last applied index summed over its regions.
    pub applied: BTreeMap<u64, u64>,
    /// What the checks found wrong (empty: every region agrees on every node and holds every
    /// acknowledged key).
    pub problems: Vec<String>,
}

/// Runs the scenario with logs `L` in `base`.
pub fn run<L: NodeLog>(base: &Path, o: &Options) -> Result<Report, Error> {
    let mut r = Report::default();
    let regions: Vec<u64> = (1..=o.regions).collect();
    let n = o.regions;
    let route = move |k: u64| region_of(k, n);
    let t = Instant::now();
    let mut cluster = Cluster::<L>::start(base, 3, o.compact_keep);
    cluster.create_regions(&regions)?;
    r.election = t.elapsed();

    let (k1, k2) = (o.keys * 2 / 5, o.keys * 4 / 5);
    let mut acked = Vec::new();
    let mut phase = |c: &mut Cluster<L>, name: &str, keys, r: &mut Report| {
        let s: PutStats = c.put(keys, o.window, None, &route)?;
        r.phases
            .push((name.to_string(), s.elapsed, s.acked.len() as u64));
        acked.extend_from_slice(&s.acked);
        Ok::<_, Error>(())
    };
    phase(&mut cluster, "3 nodes up", 0..k1, &mut r)?;

    // Node 3 leads a third of the regions: they elect new leaders while it is down.
    r.stopped = 3;
    let end = cluster.stop_node(r.stopped)?;
    let stopped_again = end.persisted_again;
    r.stopped_last = end
        .regions
        .iter()
        .map(|(&id, (s, _))| (id, s.last))
        .collect();
    phase(&mut cluster, "node 3 down", k1..k2, &mut r)?;

    let t = Instant::now();
    cluster.start_node(r.stopped);
    r.reopen = cluster.wait_open(r.stopped)?;
    r.recovered = cluster.recovered(r.stopped);
    phase(&mut cluster, "node 3 restarted", k2..o.keys, &mut r)?;
    cluster.wait_applied(&[r.stopped], &regions)?;
    r.catch_up = t.elapsed();

    // A region created during the run: node 1 campaigns, nodes 2 and 3 create it when its
    // messages reach them; it takes some keys, then every node destroys it.
    r.destroyed = o.regions + 1;
    cluster.create_regions(&[r.destroyed])?;
    let extra = o.keys..o.keys + LIFECYCLE_KEYS;
    let destroyed = r.destroyed;
    let s = cluster.put(extra, o.window, None, &|_| destroyed)?;
    if s.acked.len() as u64 != LIFECYCLE_KEYS {
        return Err("the created region did not take its keys".into());
    }
    cluster.wait_applied(&cluster.peers(), &[r.destroyed])?;
    for id in cluster.peers() {
        cluster.send(id, Input::Destroy(r.destroyed));
    }

    cluster.wait_applied(&cluster.peers(), &regions)?;
    for id in cluster.peers() {
        r.created_on_contact
            .insert(id, cluster.created_on_contact(id));
        r.syncs.insert(id, cluster.syncs(id));
    }
    let ends = cluster.stop_all()?;
    r.snapshots = ends
        .get(&r.stopped)
        .map_or(0, |e| e.regions.values().map(|(s, _)| s.snapshots).sum());
    r.applied = ends
        .iter()
        .map(|(&id, e)| (id, e.regions.values().map(|(s, _)| s.applied).sum()))
        .collect();
    let in_logs = ends.values().any(|e| e.log_regions.contains(&r.destroyed));
    let reopened = L::open(&base.join("node-1").join("log"))?.regions()?;
    r.destroyed_gone = !in_logs && !reopened.contains(&r.destroyed) && reopened == regions;
    r.acked = acked.len() as u64;
    r.problems = problems(&ends, &regions, &acked, &route);
    if stopped_again > 0 {
        r.problems.push(format!(
            "node {} persisted {stopped_again} entries again before it stopped",
            r.stopped
        ));
    }
    if acked.len() as u64 != o.keys {
        r.problems
            .push(format!("{} of {} keys acknowledged", acked.len(), o.keys));
    }
    Ok(r)
}
