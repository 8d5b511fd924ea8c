//! An in-process raft-rs cluster on `MmapRaftStorage`: one thread per node running a Ready
//! loop (the shape of raft-rs's `five_mem_node` example), messages over channels, each node on
//! its own log directory. Shared by `examples/raft_rs_cluster.rs` and
//! `tests/raft_rs_cluster.rs` through `#[path]`.

#[path = "network.rs"]
mod network;
#[path = "node.rs"]
mod node;
#[path = "state_machine.rs"]
mod state_machine;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use raft_mmap_log::Config;

use node::{encode_put, start_node, Input, Network, Node, NodeConfig, NodeEnd};
pub use node::{value_of, Error, NodeReport};

/// A proposal not acknowledged after this long is sent again (to the leader of the moment).
const RESEND: Duration = Duration::from_millis(1000);
/// How long a phase may wait for a leader or for the nodes to agree.
const PATIENCE: Duration = Duration::from_secs(30);

/// The running cluster.
pub struct Cluster {
    base: PathBuf,
    config: NodeConfig,
    net: Network,
    nodes: BTreeMap<u64, Node>,
}

impl Cluster {
    /// Starts nodes `1..=n`, node `i` on `base/node-i`.
    pub fn start(base: &Path, n: u64, log: Config, compact_keep: Option<u64>) -> Self {
        let peers: Vec<u64> = (1..=n).collect();
        let net = Network::default();
        let mut c = Cluster {
            base: base.to_path_buf(),
            config: NodeConfig {
                log,
                peers: peers.clone(),
                compact_keep,
            },
            net,
            nodes: BTreeMap::new(),
        };
        for id in peers {
            c.start_node(id);
        }
        c
    }

    fn start_node(&mut self, id: u64) {
        let dir = self.base.join(format!("node-{id}"));
        let node = start_node(id, dir, self.config.clone(), &self.net);
        self.nodes.insert(id, node);
    }

    /// The node that leads in the highest term, waiting for one.
    pub fn leader(&mut self) -> Result<u64, Error> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let leader = self
                .nodes
                .iter()
                .filter(|(_, n)| n.status.leader.load(Ordering::Relaxed))
                .max_by_key(|(_, n)| n.status.term.load(Ordering::Relaxed))
                .map(|(&id, _)| id);
            if let Some(id) = leader {
                return Ok(id);
            }
            if let Some(e) = self.failed() {
                return Err(e);
            }
            if Instant::now() > deadline {
                return Err("no leader elected".into());
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Puts `keys` (value [`value_of`]) through the leader, at most `window` in flight, and
    /// returns when every one is applied on the node it was proposed to.
    pub fn put(&mut self, keys: std::ops::Range<u64>, window: usize) -> Result<(), Error> {
        let (ack_tx, ack_rx) = mpsc::channel();
        let mut outstanding: BTreeMap<u64, Instant> = BTreeMap::new();
        let mut next = keys.start;
        let deadline = Instant::now() + PATIENCE + PATIENCE;
        let mut leader = self.leader()?;
        while next < keys.end || !outstanding.is_empty() {
            while outstanding.len() < window && next < keys.end {
                let data = encode_put(next, next, &value_of(next));
                let ack = ack_tx.clone();
                self.net.send(
                    leader,
                    Input::Propose {
                        rid: next,
                        data,
                        ack,
                    },
                );
                outstanding.insert(next, Instant::now());
                next += 1;
            }
            match ack_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(rid) => {
                    outstanding.remove(&rid);
                    while let Ok(rid) = ack_rx.try_recv() {
                        outstanding.remove(&rid);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => unreachable!("we hold a sender"),
            }
            let now = Instant::now();
            if outstanding.values().any(|&t| now - t > RESEND) {
                if now > deadline {
                    return Err(format!("{} puts not acknowledged", outstanding.len()).into());
                }
                leader = self.leader()?;
                for (&rid, t) in outstanding.iter_mut().filter(|(_, t)| now - **t > RESEND) {
                    let data = encode_put(rid, rid, &value_of(rid));
                    let ack = ack_tx.clone();
                    self.net.send(leader, Input::Propose { rid, data, ack });
                    *t = now;
                }
            }
        }
        Ok(())
    }

    /// Stops node `id` and returns its end state.
    fn stop_node(&mut self, id: u64) -> Result<NodeEnd, Error> {
        let node = self.nodes.remove(&id).ok_or("no such node")?;
        self.net.send(id, Input::Stop);
        self.net.set(id, None);
        node.thread
            .join()
            .map_err(|_| format!("node {id} panicked"))?
    }

    /// Waits until every node has applied at least `index`.
    fn wait_applied(&mut self, ids: &[u64], index: u64) -> Result<(), Error> {
        let deadline = Instant::now() + PATIENCE;
        while ids
            .iter()
            .any(|id| self.nodes[id].status.applied.load(Ordering::Relaxed) < index)
        {
            if let Some(e) = self.failed() {
                return Err(e);
            }
            if Instant::now() > deadline {
                return Err(format!("nodes {ids:?} did not apply up to {index}").into());
            }
            thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    /// A node whose thread ended by itself, with why.
    fn failed(&mut self) -> Option<Error> {
        let id = *self.nodes.iter().find(|(_, n)| n.thread.is_finished())?.0;
        let node = self.nodes.remove(&id)?;
        let why = match node.thread.join() {
            Ok(Ok(_)) => "without an error".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "panicked".to_string(),
        };
        Some(format!("node {id} stopped: {why}").into())
    }

    fn commit_of(&self, id: u64) -> u64 {
        self.nodes[&id].status.commit.load(Ordering::Relaxed)
    }
}

/// What a run measured and found.
#[derive(Debug)]
pub struct Report {
    /// The leader during the first writes.
    pub leader: u64,
    /// The follower stopped and restarted.
    pub stopped: u64,
    /// Time to elect the first leader.
    pub election: Duration,
    /// Time for the first `keys` writes.
    pub first_writes: Duration,
    /// Time for the `more` writes with one follower down.
    pub more_writes: Duration,
    /// Time from the restart to a running `RawNode` (the log's reopen included).
    pub reopen: Duration,
    /// Time from the restart until the node applied everything the leader had committed.
    pub catch_up: Duration,
    /// The stopped node's last log index when it stopped.
    pub stopped_last: u64,
    /// Its last log index when it reopened its directory.
    pub reopened_last: u64,
    /// Each node's end state.
    pub nodes: BTreeMap<u64, NodeReport>,
    /// Whether all state machines are equal and hold every key.
    pub converged: bool,
}

/// The run the example and the test make: 3 nodes, `keys` writes, a follower stopped, `more`
/// writes, the follower restarted from its directory and caught up, every node compared.
/// With `compact_keep`, nodes compact their logs as they apply, and the restarted follower
/// catches up from a snapshot if the leader compacted past its log.
pub fn run(
    base: &Path,
    keys: u64,
    more: u64,
    window: usize,
    log_config: Config,
    compact_keep: Option<u64>,
) -> Result<Report, Error> {
    let t = Instant::now();
    let mut cluster = Cluster::start(base, 3, log_config, compact_keep);
    let leader = cluster.leader()?;
    let election = t.elapsed();

    let t = Instant::now();
    cluster.put(0..keys, window)?;
    let first_writes = t.elapsed();

    let stopped = *cluster
        .config
        .peers
        .iter()
        .find(|&&id| id != leader)
        .ok_or("no follower")?;
    let stopped_last = cluster.stop_node(stopped)?.report.last;

    let t = Instant::now();
    cluster.put(keys..keys + more, window)?;
    let more_writes = t.elapsed();

    let leader_then = cluster.leader()?;
    let target = cluster.commit_of(leader_then);
    let t = Instant::now();
    cluster.start_node(stopped);
    cluster.wait_applied(&[stopped], target)?;
    let catch_up = t.elapsed();
    let reopened_last = cluster.nodes[&stopped]
        .status
        .opened_last
        .load(Ordering::Relaxed);
    let reopen = Duration::from_micros(
        cluster.nodes[&stopped]
            .status
            .open_micros
            .load(Ordering::Relaxed),
    );

    // Every node applies what the leader committed, then all stop.
    let leader_now = cluster.leader()?;
    let ids = cluster.config.peers.clone();
    let target = cluster.commit_of(leader_now);
    cluster.wait_applied(&ids, target)?;
    let mut nodes = BTreeMap::new();
    let mut maps = Vec::new();
    for id in ids {
        let end = cluster.stop_node(id)?;
        nodes.insert(id, end.report);
        maps.push(end.map);
    }
    let want = keys + more;
    let converged = maps.windows(2).all(|w| w[0] == w[1])
        && maps.first().is_some_and(|m| {
            m.len() as u64 == want
                && (0..want).all(|k| m.get(&k).is_some_and(|v| *v == value_of(k)))
        });
    Ok(Report {
        leader,
        stopped,
        election,
        first_writes,
        more_writes,
        reopen,
        catch_up,
        stopped_last,
        reopened_last,
        nodes,
        converged,
    })
}
