//! A cluster of [`Node`]s in one process, talking over 127.0.0.1, and its clients: keys are
//! hashed to groups and every write goes to its group's leader.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::{BasicNode, ServerState, SnapshotPolicy};
use raft_mmap_log::openraft::KvRequest;
use tokio::net::TcpListener;

use super::net::{GroupId, NodeId};
use super::node::{BoxError, LogBackend, Node, NodeSettings};

/// openraft's configuration for every group; `snapshot_every` (entries since the last
/// snapshot) turns on snapshots and purges the log they cover.
pub fn raft_config(snapshot_every: Option<u64>) -> Result<Arc<openraft::Config>, BoxError> {
    let mut c = openraft::Config {
        cluster_name: "raft-mmap-log-multi".into(),
        heartbeat_interval: 100,
        election_timeout_min: 800,
        election_timeout_max: 1600,
        max_payload_entries: 1000,
        snapshot_policy: SnapshotPolicy::Never,
        ..Default::default()
    };
    if let Some(n) = snapshot_every {
        c.snapshot_policy = SnapshotPolicy::LogsSinceLast(n);
        c.max_in_snapshot_log_to_keep = 0;
    }
    Ok(Arc::new(c.validate()?))
}

/// The group of key `i` among `groups` groups (a 64-bit mix of the key, so that neighbouring
/// keys land in different groups).
pub fn group_of(i: u64, groups: u64) -> GroupId {
    let mut x = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (x ^ (x >> 31)) % groups
}

pub fn key(i: u64) -> String {
    format!("key-{i:08}")
}

pub fn value(i: u64) -> String {
    format!("value-{i}")
}

/// Nodes `ids`, each in its own directory under `base` and on its own port.
pub struct Cluster<B: LogBackend> {
    pub base: PathBuf,
    pub settings: NodeSettings,
    pub addrs: BTreeMap<NodeId, SocketAddr>,
    pub nodes: BTreeMap<NodeId, Arc<Node<B>>>,
    /// The last leader seen for each group.
    leaders: Arc<Mutex<HashMap<GroupId, NodeId>>>,
}

impl<B: LogBackend> Cluster<B> {
    pub fn dir(&self, id: NodeId) -> PathBuf {
        self.base.join(format!("node-{id}"))
    }

    /// Binds a port per node, then starts every node (each dials the others).
    pub async fn start(
        base: &Path,
        ids: &[NodeId],
        settings: NodeSettings,
    ) -> Result<Self, BoxError> {
        let mut listeners = Vec::new();
        let mut addrs = BTreeMap::new();
        for &id in ids {
            let l = TcpListener::bind("127.0.0.1:0").await?;
            addrs.insert(id, l.local_addr()?);
            listeners.push((id, l));
        }
        let mut c = Cluster {
            base: base.to_path_buf(),
            settings,
            addrs,
            nodes: BTreeMap::new(),
            leaders: Arc::default(),
        };
        for (id, l) in listeners {
            let (node, _) = Node::start(id, &c.dir(id), l, &c.addrs, c.settings.clone()).await?;
            c.nodes.insert(id, node);
        }
        Ok(c)
    }

    /// Creates `groups` with every node as a voter: group `g` is started and initialized on
    /// node `ids[g % n]`; the others start it when its first request reaches them.
    pub async fn create_groups(
        &self,
        groups: impl IntoIterator<Item = GroupId>,
    ) -> Result<(), BoxError> {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        let members: BTreeMap<NodeId, BasicNode> =
            ids.iter().map(|&id| (id, BasicNode::default())).collect();
        for g in groups {
            let first = &self.nodes[&ids[(g % ids.len() as u64) as usize]];
            let raft = first.group(g, false).await?.raft;
            raft.initialize(members.clone()).await?;
        }
        Ok(())
    }

    /// Waits until every group of `groups` has a leader that all running nodes agree on.
    pub async fn wait_leaders(
        &self,
        groups: &[GroupId],
        timeout: Duration,
    ) -> Result<BTreeMap<GroupId, NodeId>, BoxError> {
        let t = Instant::now();
        let mut found = BTreeMap::new();
        for &g in groups {
            loop {
                let seen: Vec<Option<NodeId>> = self
                    .nodes
                    .values()
                    .map(|n| {
                        n.get(g)
                            .and_then(|r| r.raft.metrics().borrow().current_leader)
                    })
                    .collect();
                let leader =
                    seen[0].filter(|l| {
                        seen.iter().all(|s| *s == Some(*l))
                            && self.nodes.get(l).and_then(|n| n.get(g)).is_some_and(|r| {
                                r.raft.metrics().borrow().state == ServerState::Leader
                            })
                    });
                if let Some(l) = leader {
                    found.insert(g, l);
                    self.leaders.lock().unwrap().insert(g, l);
                    break;
                }
                if t.elapsed() > timeout {
                    return Err(format!("group {g}: no leader after {timeout:?}: {seen:?}").into());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Ok(found)
    }

    /// Writes keys `keys`, key `i` to group `route(i)` through its leader, `workers` writes
    /// in flight in all. Returns each write's latency, in key order.
    pub async fn write_keys(
        &self,
        keys: Range<u64>,
        workers: u64,
        route: impl Fn(u64) -> GroupId + Clone + Send + Sync + 'static,
    ) -> Result<Vec<Duration>, BoxError> {
        let nodes: Arc<Vec<Arc<Node<B>>>> = Arc::new(self.nodes.values().cloned().collect());
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..workers.max(1) {
            let (nodes, leaders, route) = (nodes.clone(), self.leaders.clone(), route.clone());
            let keys = keys.clone();
            tasks.spawn(async move {
                let mut lat = Vec::new();
                let mut i = keys.start + w;
                while i < keys.end {
                    let t = Instant::now();
                    write_one(&nodes, &leaders, route(i), i).await?;
                    lat.push((i, t.elapsed()));
                    i += workers;
                }
                Ok::<_, BoxError>(lat)
            });
        }
        let mut all = Vec::new();
        while let Some(r) = tasks.join_next().await {
            all.extend(r??);
        }
        all.sort_unstable_by_key(|(i, _)| *i);
        Ok(all.into_iter().map(|(_, d)| d).collect())
    }

    /// Stops node `id`: its connections close, its groups shut down, its logs are released.
    pub async fn stop_node(&mut self, id: NodeId) -> Result<(), BoxError> {
        if let Some(node) = self.nodes.remove(&id) {
            node.stop().await?;
        }
        Ok(())
    }

    /// Restarts node `id` from its directory on its old port: its logs are reopened and every
    /// group that has a log starts again. Returns how long opening the logs took and how long
    /// the whole start took.
    pub async fn restart_node(&mut self, id: NodeId) -> Result<(Duration, Duration), BoxError> {
        let t = Instant::now();
        let listener = loop {
            match TcpListener::bind(self.addrs[&id]).await {
                Ok(l) => break l,
                Err(e) if t.elapsed() > Duration::from_secs(10) => return Err(e.into()),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let (node, opened) = Node::start(
            id,
            &self.dir(id),
            listener,
            &self.addrs,
            self.settings.clone(),
        )
        .await?;
        self.nodes.insert(id, node);
        Ok((opened, t.elapsed()))
    }

    /// Waits until every running node has applied, in every group of `groups`, what the
    /// group's leader had applied when this was called.
    pub async fn wait_caught_up(
        &self,
        groups: &[GroupId],
        timeout: Duration,
    ) -> Result<(), BoxError> {
        let leaders = self.wait_leaders(groups, timeout).await?;
        for &g in groups {
            let leader = self.nodes[&leaders[&g]]
                .get(g)
                .ok_or("leader without group")?;
            let target = leader.raft.metrics().borrow().last_applied.map(|l| l.index);
            for (id, n) in &self.nodes {
                let r = n.group(g, false).await?;
                r.raft
                    .wait(Some(timeout))
                    .applied_index_at_least(target, format!("node {id} group {g}"))
                    .await?;
            }
        }
        Ok(())
    }

    /// Removes group `g` from every node.
    pub async fn remove_group(&self, g: GroupId) -> Result<(), BoxError> {
        for n in self.nodes.values() {
            n.remove_group(g).await?;
        }
        self.leaders.lock().unwrap().remove(&g);
        Ok(())
    }

    /// What is wrong with `groups` on the running nodes: a group missing on a node, nodes
    /// whose state machines differ, or a key of `keys` (all acknowledged) missing or wrong.
    pub fn check(
        &self,
        groups: &[GroupId],
        keys: Range<u64>,
        route: impl Fn(u64) -> GroupId,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        let mut expected: BTreeMap<GroupId, usize> = groups.iter().map(|&g| (g, 0)).collect();
        for i in keys.clone() {
            *expected.entry(route(i)).or_default() += 1;
        }
        for &g in groups {
            let mut reference = None;
            for (id, n) in &self.nodes {
                let Some(r) = n.get(g) else {
                    problems.push(format!("group {g} does not run on node {id}"));
                    continue;
                };
                let data = r.kv.state().data;
                if data.len() != expected[&g] {
                    problems.push(format!(
                        "node {id} group {g}: {} keys, {} acknowledged",
                        data.len(),
                        expected[&g]
                    ));
                }
                match &reference {
                    None => reference = Some((id, data)),
                    Some((rid, rdata)) if *rdata != data => {
                        problems.push(format!("group {g}: node {id} differs from node {rid}"))
                    }
                    Some(_) => {}
                }
            }
        }
        for i in keys {
            let g = route(i);
            for (id, n) in &self.nodes {
                if let Some(r) = n.get(g) {
                    if r.kv.get(&key(i)) != Some(value(i)) {
                        problems.push(format!("node {id} group {g}: key {i} missing or wrong"));
                    }
                }
            }
            if problems.len() > 20 {
                problems.push("...".into());
                break;
            }
        }
        problems
    }

    pub async fn shutdown(mut self) -> Result<(), BoxError> {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop_node(id).await?;
        }
        Ok(())
    }
}

/// Writes key `i` in group `g` through its leader (the last one seen, then whoever a node
/// names), retrying for up to 30 s while leadership moves.
async fn write_one<B: LogBackend>(
    nodes: &[Arc<Node<B>>],
    leaders: &Mutex<HashMap<GroupId, NodeId>>,
    g: GroupId,
    i: u64,
) -> Result<(), BoxError> {
    let req = KvRequest::Set {
        key: key(i),
        value: value(i),
    };
    let t = Instant::now();
    let mut target = leaders.lock().unwrap().get(&g).copied();
    let mut next = 0usize;
    loop {
        let node = match target.and_then(|l| nodes.iter().find(|n| n.id == l)) {
            Some(n) => n,
            None => &nodes[next % nodes.len()],
        };
        let err = match node.get(g) {
            Some(r) => match r.raft.client_write(req.clone()).await {
                Ok(_) => {
                    leaders.lock().unwrap().insert(g, node.id);
                    return Ok(());
                }
                Err(e) => {
                    target = e.forward_to_leader::<BasicNode>().and_then(|f| f.leader_id);
                    e.to_string()
                }
            },
            None => {
                target = None;
                format!("group {g} does not run on node {}", node.id)
            }
        };
        if t.elapsed() > Duration::from_secs(30) {
            return Err(format!("write of key {i} to group {g} failed: {err}").into());
        }
        // Go where the node pointed, if that is another running node; otherwise wait and
        // try the next node.
        target = target.filter(|l| *l != node.id && nodes.iter().any(|n| n.id == *l));
        if target.is_none() {
            next += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
