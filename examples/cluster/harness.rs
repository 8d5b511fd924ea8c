//! An in-process openraft cluster on `MmapLogStore`: nodes talk by calling each other's
//! `Raft` handles directly (no sockets). Shared by `examples/cluster.rs` and
//! `tests/openraft_cluster.rs` through `#[path]`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::RaftLogStorage;
use openraft::{BasicNode, Raft, SnapshotPolicy};
use raft_mmap_log::openraft::{KvConfig, KvRequest, KvStateMachine, MmapLogStore};

pub type NodeId = u64;

/// Routes RPCs to the running nodes.
#[derive(Clone, Default)]
pub struct Router {
    nodes: Arc<Mutex<BTreeMap<NodeId, Raft<KvConfig>>>>,
}

impl Router {
    fn get(&self, id: NodeId) -> Option<Raft<KvConfig>> {
        self.nodes.lock().unwrap().get(&id).cloned()
    }
}

/// One node's view of a peer.
pub struct Conn {
    target: NodeId,
    router: Router,
}

fn down<E: std::error::Error>(target: NodeId) -> RPCError<NodeId, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(format!(
        "node {target} is down"
    ))))
}

impl RaftNetworkFactory<KvConfig> for Router {
    type Network = Conn;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Conn {
        Conn {
            target,
            router: self.clone(),
        }
    }
}

impl RaftNetwork<KvConfig> for Conn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<KvConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let raft = self
            .router
            .get(self.target)
            .ok_or_else(|| down(self.target))?;
        raft.append_entries(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<KvConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let raft = self
            .router
            .get(self.target)
            .ok_or_else(|| down(self.target))?;
        raft.install_snapshot(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let raft = self
            .router
            .get(self.target)
            .ok_or_else(|| down(self.target))?;
        raft.vote(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// A running node.
pub struct Node {
    pub raft: Raft<KvConfig>,
    pub log: MmapLogStore<KvConfig>,
    pub sm: KvStateMachine,
}

/// A cluster of in-process nodes, each with its own log directory under `base`.
pub struct Cluster {
    pub base: PathBuf,
    pub router: Router,
    pub nodes: BTreeMap<NodeId, Node>,
    config: Arc<openraft::Config>,
    log_config: raft_mmap_log::Config,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Cluster {
    pub fn new(base: &Path) -> Result<Self, BoxError> {
        let config = openraft::Config {
            cluster_name: "raft-mmap-log".into(),
            heartbeat_interval: 100,
            election_timeout_min: 400,
            election_timeout_max: 800,
            max_payload_entries: 1000,
            // The example state machine lives in memory: keep the whole log so a restarted
            // node rebuilds it by re-applying, and laggards catch up from the log.
            snapshot_policy: SnapshotPolicy::Never,
            ..Default::default()
        };
        Ok(Cluster {
            base: base.to_path_buf(),
            router: Router::default(),
            nodes: BTreeMap::new(),
            config: Arc::new(config.validate()?),
            log_config: raft_mmap_log::Config {
                segment_size: 16 << 20,
                ..Default::default()
            },
        })
    }

    pub fn dir(&self, id: NodeId) -> PathBuf {
        self.base.join(format!("node-{id}"))
    }

    /// Starts (or restarts) node `id` from its directory. Returns how long opening the log
    /// (recovery) took.
    pub async fn start_node(&mut self, id: NodeId) -> Result<Duration, BoxError> {
        let t = Instant::now();
        let dir = self.dir(id);
        // A node that was just shut down may still be releasing its log (and its directory
        // lock) on another task: retry briefly.
        let log = loop {
            match MmapLogStore::<KvConfig>::open(&dir, self.log_config.clone()) {
                Ok(log) => break log,
                Err(raft_mmap_log::raft::RaftError::Engine(raft_mmap_log::Error::Locked {
                    ..
                })) if t.elapsed() < Duration::from_secs(10) => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => return Err(e.into()),
            }
        };
        let opened = t.elapsed();
        let sm = KvStateMachine::new();
        let raft = Raft::new(
            id,
            self.config.clone(),
            self.router.clone(),
            log.clone(),
            sm.clone(),
        )
        .await?;
        self.router.nodes.lock().unwrap().insert(id, raft.clone());
        self.nodes.insert(id, Node { raft, log, sm });
        Ok(opened)
    }

    /// Stops node `id`: unreachable at once, then shut down; its log is closed.
    pub async fn stop_node(&mut self, id: NodeId) -> Result<(), BoxError> {
        self.router.nodes.lock().unwrap().remove(&id);
        if let Some(node) = self.nodes.remove(&id) {
            node.raft
                .shutdown()
                .await
                .map_err(|e| format!("shutdown: {e}"))?;
        }
        Ok(())
    }

    /// Starts nodes `ids`, initializes the cluster from the first, waits for a leader.
    pub async fn start(base: &Path, ids: &[NodeId]) -> Result<Self, BoxError> {
        let mut c = Cluster::new(base)?;
        for &id in ids {
            c.start_node(id).await?;
        }
        let members: BTreeMap<NodeId, BasicNode> =
            ids.iter().map(|&id| (id, BasicNode::default())).collect();
        c.nodes[&ids[0]].raft.initialize(members).await?;
        Ok(c)
    }

    /// Waits until a node reports a leader that all running nodes agree on.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<NodeId, BoxError> {
        let t = Instant::now();
        loop {
            let leaders: Vec<Option<NodeId>> = self
                .nodes
                .values()
                .map(|n| n.raft.metrics().borrow().current_leader)
                .collect();
            if let Some(Some(l)) = leaders.first() {
                if self.nodes.contains_key(l) && leaders.iter().all(|x| *x == Some(*l)) {
                    let m = self.nodes[l].raft.metrics().borrow().clone();
                    if m.current_leader == Some(*l) && m.state == openraft::ServerState::Leader {
                        return Ok(*l);
                    }
                }
            }
            if t.elapsed() > timeout {
                return Err(format!("no leader after {timeout:?}: {leaders:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Writes keys `from..to` through the leader, `workers` requests in flight.
    pub async fn write_keys(&self, from: u64, to: u64, workers: u64) -> Result<(), BoxError> {
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..workers {
            let rafts: Vec<Raft<KvConfig>> = self.nodes.values().map(|n| n.raft.clone()).collect();
            tasks.spawn(async move {
                let mut i = from + w;
                while i < to {
                    write_one(&rafts, i).await?;
                    i += workers;
                }
                Ok::<(), BoxError>(())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        Ok(())
    }

    /// Waits until every running node has applied at least `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), BoxError> {
        for (id, n) in &self.nodes {
            n.raft
                .wait(Some(timeout))
                .applied_index_at_least(Some(index), format!("node {id} applies {index}"))
                .await?;
        }
        Ok(())
    }

    /// The leader's last applied index.
    pub fn applied(&self, id: NodeId) -> Option<u64> {
        self.nodes[&id]
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map(|l| l.index)
    }

    /// Committed and last log index as durably recorded in node `id`'s log.
    pub async fn log_position(&self, id: NodeId) -> Result<(Option<u64>, Option<u64>), BoxError> {
        let mut log = self.nodes[&id].log.clone();
        let committed = log.read_committed().await?.map(|l| l.index);
        let last = log.get_log_state().await?.last_log_id.map(|l| l.index);
        Ok((committed, last))
    }

    pub async fn shutdown(mut self) -> Result<(), BoxError> {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop_node(id).await?;
        }
        Ok(())
    }
}

pub fn key(i: u64) -> String {
    format!("key-{i:08}")
}

pub fn value(i: u64) -> String {
    format!("value-{i}")
}

/// Writes key `i` through whichever node is leader, following leader changes.
async fn write_one(rafts: &[Raft<KvConfig>], i: u64) -> Result<(), BoxError> {
    let req = KvRequest::Set {
        key: key(i),
        value: value(i),
    };
    let t = Instant::now();
    let mut target = 0;
    loop {
        match rafts[target].client_write(req.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) => {
                if t.elapsed() > Duration::from_secs(30) {
                    return Err(format!("write of key {i} failed: {e}").into());
                }
                let leader = e.forward_to_leader::<BasicNode>().and_then(|f| f.leader_id);
                target = leader
                    .and_then(|l| rafts.iter().position(|r| r.metrics().borrow().id == l))
                    .unwrap_or((target + 1) % rafts.len());
                if leader.is_none() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

/// One node at the end of [`run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeReport {
    /// Committed index recorded in its log.
    pub committed: Option<u64>,
    /// Last log index.
    pub last: Option<u64>,
    /// Last applied index.
    pub applied: Option<u64>,
    /// Keys in its state machine.
    pub keys: usize,
}

/// What [`run`] measured.
#[derive(Debug)]
pub struct Report {
    pub leader: NodeId,
    pub stopped: NodeId,
    pub keys: u64,
    pub more: u64,
    pub elect: Duration,
    pub write1: Duration,
    pub write2: Duration,
    pub reopen: Duration,
    pub catch_up: Duration,
    pub nodes: BTreeMap<NodeId, NodeReport>,
    pub converged: bool,
}

/// The whole scenario: 3 nodes, elect, write `keys`, stop a follower, write `more`, restart
/// it from its directory, wait for it to catch up, compare the state machines.
pub async fn run(base: &Path, keys: u64, more: u64, workers: u64) -> Result<Report, BoxError> {
    let t = Instant::now();
    let mut c = Cluster::start(base, &[1, 2, 3]).await?;
    let leader = c.wait_leader(Duration::from_secs(10)).await?;
    let elect = t.elapsed();

    let t = Instant::now();
    c.write_keys(0, keys, workers).await?;
    let write1 = t.elapsed();

    let stopped = *c.nodes.keys().find(|&&id| id != leader).unwrap();
    c.stop_node(stopped).await?;

    let t = Instant::now();
    c.write_keys(keys, keys + more, workers).await?;
    let write2 = t.elapsed();
    let leader = c.wait_leader(Duration::from_secs(10)).await?;
    let target = c.applied(leader).unwrap_or(0);

    let t = Instant::now();
    let reopen = c.start_node(stopped).await?;
    c.wait_applied(target, Duration::from_secs(60)).await?;
    let catch_up = t.elapsed();

    let mut nodes = BTreeMap::new();
    let reference = c.nodes[&leader].sm.state().data;
    let mut converged = reference.len() as u64 == keys + more;
    for (&id, n) in &c.nodes {
        let (committed, last) = c.log_position(id).await?;
        let data = n.sm.state().data;
        converged &= data == reference;
        nodes.insert(
            id,
            NodeReport {
                committed,
                last,
                applied: c.applied(id),
                keys: data.len(),
            },
        );
    }
    converged &= (0..keys + more).all(|i| reference.get(&key(i)) == Some(&value(i)));
    c.shutdown().await?;
    Ok(Report {
        leader,
        stopped,
        keys,
        more,
        elect,
        write1,
        write2,
        reopen,
        catch_up,
        nodes,
        converged,
    })
}
