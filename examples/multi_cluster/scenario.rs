//! The `multi_cluster` scenario, shared by the example and `tests/openraft_multi.rs`: 3 nodes,
//! each with one shared log (`Groups`) and a Raft per group; a node stopped and restarted;
//! a group created, written first and removed at the end; every check made here.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::cluster::{group_of, raft_config, Cluster};
use super::net::{GroupId, NodeId};
use super::node::{BoxError, NodeSettings, SharedLog};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Raft groups (ids `0..groups`); keys are hashed to them.
    pub groups: u64,
    /// Keys written with all nodes up.
    pub keys: u64,
    /// Keys written while one node is down.
    pub more: u64,
    /// Keys written at least while the restarted node catches up (the writes go on until
    /// it caught up: some of its groups install a snapshot while every group keeps taking
    /// writes).
    pub during: u64,
    /// Writes in flight, in all.
    pub workers: u64,
    /// openraft builds a snapshot every this many entries and purges the log it covers;
    /// 0: never.
    pub snapshot_every: u64,
    /// Keys written to the extra group that is created, then removed.
    pub scratch_keys: u64,
    /// Segment file size of the shared logs.
    pub segment_bytes: u64,
}

/// What happened, and what is wrong (`problems` empty: everything checked out).
#[derive(Debug, Default)]
pub struct Report {
    pub elect: Duration,
    /// Groups led by each node after the election.
    pub leaders: BTreeMap<NodeId, usize>,
    /// Groups each node started because a peer's request for them arrived.
    pub created_on_demand: BTreeMap<NodeId, usize>,
    pub write1: Duration,
    pub latency1: (Duration, Duration),
    pub stopped: NodeId,
    pub write2: Duration,
    pub reopen: Duration,
    pub restart: Duration,
    /// Groups running on the restarted node right after it started (from its log).
    pub recovered_groups: usize,
    pub catch_up: Duration,
    /// Keys written while the restarted node caught up (at least `Options::during`: the
    /// writes go on until it caught up), and how long that took.
    pub during: u64,
    pub write3: Duration,
    /// Groups of the restarted node that installed a snapshot from their leader.
    pub snapshot_installs: BTreeMap<GroupId, u64>,
    /// Of those, the groups whose snapshot was installed before the writes made during the
    /// catch-up ended.
    pub installs_while_writing: usize,
    /// The group written first and removed at the end.
    pub scratch: GroupId,
    /// Segment files of each node's log before and after the scratch group was removed.
    pub segments: BTreeMap<NodeId, (u64, u64)>,
    pub problems: Vec<String>,
}

/// p50 and p99 of `lat`.
pub fn percentiles(lat: &[Duration]) -> (Duration, Duration) {
    let mut v = lat.to_vec();
    v.sort_unstable();
    let at = |p: f64| {
        v.get(((v.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    (at(0.50), at(0.99))
}

/// Keys of the scratch group are numbered from here.
const SCRATCH_KEYS: u64 = 1 << 40;

/// Segment files in a log directory (not counting recycled files kept for reuse).
fn segment_files(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
            .count() as u64
    })
}

/// Runs the scenario in `base`.
pub async fn run(base: &Path, o: &Options) -> Result<Report, BoxError> {
    let mut r = Report::default();
    // The scratch group never snapshots: it keeps its whole log, as an idle group would.
    let settings = NodeSettings {
        raft: raft_config((o.snapshot_every > 0).then_some(o.snapshot_every))?,
        raft_of_group: [(o.groups, raft_config(None)?)].into(),
        segment_bytes: o.segment_bytes,
    };
    let groups: Vec<GroupId> = (0..o.groups).collect();
    let n = o.groups;
    let route = move |i| group_of(i, n);

    // Start 3 nodes; each group is initialized on one node and started on the other two by
    // its first vote or append request. Group `groups` is the scratch group: written first,
    // so that it holds the oldest segments, and removed at the end.
    r.scratch = o.groups;
    let scratch = r.scratch;
    let scratch_keys = SCRATCH_KEYS..SCRATCH_KEYS + o.scratch_keys;
    let mut all = groups.clone();
    all.push(scratch);
    let t = Instant::now();
    let mut c = Cluster::<SharedLog>::start(base, &[1, 2, 3], settings).await?;
    c.create_groups(all.iter().copied()).await?;
    let leaders = c.wait_leaders(&all, Duration::from_secs(30)).await?;
    r.elect = t.elapsed();
    for l in leaders.values() {
        *r.leaders.entry(*l).or_default() += 1;
    }
    c.write_keys(scratch_keys.clone(), o.workers, move |_| scratch)
        .await?;

    let t = Instant::now();
    let lat = c.write_keys(0..o.keys, o.workers, route).await?;
    r.write1 = t.elapsed();
    r.latency1 = percentiles(&lat);
    for (id, node) in &c.nodes {
        r.created_on_demand
            .insert(*id, node.created_on_demand.lock().unwrap().len());
    }

    // Stop a node (one that leads groups: they elect new leaders), write more, restart it.
    r.stopped = 3;
    c.stop_node(r.stopped).await?;
    let t = Instant::now();
    c.write_keys(o.keys..o.keys + o.more, o.workers, route)
        .await?;
    r.write2 = t.elapsed();
    let (reopen, restart) = c.restart_node(r.stopped).await?;
    (r.reopen, r.restart) = (reopen, restart);
    let restarted = c.nodes[&r.stopped].clone();
    r.recovered_groups = restarted.group_ids().len();
    if r.recovered_groups != all.len() {
        r.problems.push(format!(
            "node {} came back with {} groups, not {}",
            r.stopped,
            r.recovered_groups,
            all.len()
        ));
    }
    // Node 3 catches up while every group keeps taking writes: groups whose leader purged
    // what node 3 missed install a snapshot meanwhile.
    let installs = || {
        groups
            .iter()
            .filter_map(|&g| {
                let n = restarted.get(g)?.installed.load(Ordering::Relaxed);
                (n > 0).then_some((g, n))
            })
            .collect::<BTreeMap<GroupId, u64>>()
    };
    // The writers write at least `during` keys and go on (in rounds of 4 keys per worker)
    // until node 3 caught up.
    let caught_up = AtomicBool::new(false);
    let t = Instant::now();
    let writing = async {
        let (start, mut next) = (o.keys + o.more, o.keys + o.more);
        while next < start + o.during || !caught_up.load(Ordering::Acquire) {
            let round = if next < start + o.during {
                o.during.min(start + o.during - next)
            } else {
                4 * o.workers
            };
            c.write_keys(next..next + round, o.workers, route).await?;
            next += round;
        }
        Ok::<_, BoxError>((next, t.elapsed(), installs().len()))
    };
    let catching_up = async {
        let w = c.wait_caught_up(&all, Duration::from_secs(60)).await;
        caught_up.store(true, Ordering::Release);
        (w, t.elapsed())
    };
    let (w3, (caught, catch_up)) = tokio::join!(writing, catching_up);
    caught?;
    let (end, write3, during_writes) = w3?;
    r.during = end - (o.keys + o.more);
    (r.write3, r.catch_up, r.installs_while_writing) = (write3, catch_up, during_writes);
    // Then everything the writers were acknowledged reaches every node.
    c.wait_caught_up(&all, Duration::from_secs(60)).await?;
    r.snapshot_installs = installs();
    if o.snapshot_every > 0
        && o.more / o.groups > 2 * o.snapshot_every
        && r.installs_while_writing == 0
    {
        r.problems.push(format!(
            "node {} installed no snapshot while the groups kept writing",
            r.stopped
        ));
    }

    // The scratch group converged too; then it is removed from every node, and the segments
    // it alone kept go.
    r.problems
        .extend(c.check(&[scratch], scratch_keys, move |_| scratch));
    let before: BTreeMap<NodeId, u64> = c
        .nodes
        .iter()
        .map(|(id, n)| (*id, segment_files(n.backend.groups.dir())))
        .collect();
    c.remove_group(scratch).await?;
    for (id, node) in &c.nodes {
        node.backend.groups.sync()?;
        if node.backend.groups.ids().contains(&scratch) {
            r.problems
                .push(format!("node {id}: group {scratch} still in the log"));
        }
        let after = segment_files(node.backend.groups.dir());
        r.segments.insert(*id, (before[id], after));
        if o.snapshot_every > 0 && after >= before[id] {
            r.problems.push(format!(
                "node {id}: {after} segment files after removing group {scratch}, {} before",
                before[id]
            ));
        }
    }

    // Every group converged, every acknowledged key on every node.
    r.problems.extend(c.check(&groups, 0..end, route));
    c.shutdown().await?;
    Ok(r)
}
