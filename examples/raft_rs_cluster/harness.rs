//! An in-process raft-rs cluster on `MmapRaftStorage`: one thread per node running a Ready
//! loop (the shape of raft-rs's `five_mem_node` example), messages over channels, each node on
//! its own log directory. Shared by `examples/raft_rs_cluster.rs` and
//! `tests/raft_rs_cluster.rs` through `#[path]`.

// raft-rs's protobuf messages are built field by field, as in raft-rs's own examples.
#![allow(clippy::field_reassign_with_default)]

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, RwLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use raft::prelude::*;
use raft::{RawNode, StateRole, Storage};
use raft_mmap_log::raft_rs::{discard_logger, MmapRaftStorage};
use raft_mmap_log::Config;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// One raft-rs tick.
const TICK: Duration = Duration::from_millis(10);
/// A proposal not acknowledged after this long is sent again (to the leader of the moment).
const RESEND: Duration = Duration::from_millis(1000);
/// How long a phase may wait for a leader or for the nodes to agree.
const PATIENCE: Duration = Duration::from_secs(30);

/// What a node thread receives.
enum Input {
    Msg(Message),
    /// Propose a put; `ack` gets `rid` once this node applies it.
    Propose {
        rid: u64,
        data: Vec<u8>,
        ack: Sender<u64>,
    },
    Stop,
}

/// The mailboxes of the running nodes.
#[derive(Clone, Default)]
struct Network {
    boxes: Arc<RwLock<HashMap<u64, Sender<Input>>>>,
}

impl Network {
    fn send(&self, to: u64, input: Input) -> bool {
        let boxes = self.boxes.read().unwrap_or_else(|e| e.into_inner());
        boxes.get(&to).is_some_and(|tx| tx.send(input).is_ok())
    }

    /// Sends raft messages; a message to a stopped node is dropped (raft-rs retries).
    fn send_all(&self, msgs: Vec<Message>) {
        for m in msgs {
            self.send(m.to, Input::Msg(m));
        }
    }

    fn set(&self, id: u64, tx: Option<Sender<Input>>) {
        let mut boxes = self.boxes.write().unwrap_or_else(|e| e.into_inner());
        match tx {
            Some(tx) => boxes.insert(id, tx),
            None => boxes.remove(&id),
        };
    }
}

/// What a node thread publishes while it runs.
#[derive(Default)]
struct Status {
    leader: AtomicBool,
    term: AtomicU64,
    applied: AtomicU64,
    commit: AtomicU64,
    /// Time from the thread's start to a running `RawNode` (open of the log included).
    open_micros: AtomicU64,
    /// The log's last index when the node opened it.
    opened_last: AtomicU64,
}

/// The state machine: key -> value, and the last applied index.
#[derive(Default)]
struct Kv {
    map: BTreeMap<u64, Vec<u8>>,
    applied: u64,
}

/// A put: request id, key, value.
fn encode_put(rid: u64, key: u64, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + value.len());
    v.extend_from_slice(&rid.to_le_bytes());
    v.extend_from_slice(&key.to_le_bytes());
    v.extend_from_slice(value);
    v
}

fn decode_put(data: &[u8]) -> Option<(u64, u64, &[u8])> {
    let (rid, rest) = data.split_first_chunk::<8>()?;
    let (key, value) = rest.split_first_chunk::<8>()?;
    Some((u64::from_le_bytes(*rid), u64::from_le_bytes(*key), value))
}

/// The value written for `key`.
pub fn value_of(key: u64) -> Vec<u8> {
    format!("value-{key:08}").into_bytes()
}

impl Kv {
    fn apply(
        &mut self,
        entries: Vec<Entry>,
        pending: &mut HashMap<u64, Sender<u64>>,
    ) -> Result<(), Error> {
        for e in entries {
            if e.index <= self.applied {
                continue;
            }
            if e.index != self.applied + 1 {
                return Err(format!("applied {} then got entry {}", self.applied, e.index).into());
            }
            self.applied = e.index;
            if e.get_entry_type() != EntryType::EntryNormal || e.data.is_empty() {
                continue; // a new leader's empty entry
            }
            let (rid, key, value) =
                decode_put(&e.data).ok_or_else(|| format!("entry {}: not a put", e.index))?;
            self.map.insert(key, value.to_vec());
            if let Some(ack) = pending.remove(&rid) {
                let _ = ack.send(rid);
            }
        }
        Ok(())
    }

    fn digest(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.map.hash(&mut h);
        h.finish()
    }
}

/// A node's end state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    /// Last applied index.
    pub applied: u64,
    /// Commit index (hard state) in the node's storage.
    pub commit: u64,
    /// First and last index of the node's log.
    pub first: u64,
    /// Last index of the node's log.
    pub last: u64,
    /// The node's term.
    pub term: u64,
    /// Keys in its state machine.
    pub keys: usize,
    /// Hash of its whole state machine.
    pub digest: u64,
}

struct NodeEnd {
    report: NodeReport,
    map: BTreeMap<u64, Vec<u8>>,
}

struct Node {
    status: Arc<Status>,
    thread: JoinHandle<Result<NodeEnd, Error>>,
}

fn raft_config(id: u64) -> raft::Config {
    raft::Config {
        id,
        election_tick: 10,
        heartbeat_tick: 2,
        max_size_per_msg: 1 << 20,
        max_inflight_msgs: 256,
        pre_vote: true,
        ..Default::default()
    }
}

/// Starts node `id` on `dir` (a new or an existing log).
fn start_node(id: u64, dir: PathBuf, log_config: Config, peers: Vec<u64>, net: &Network) -> Node {
    let (tx, rx) = mpsc::channel();
    net.set(id, Some(tx));
    let status = Arc::new(Status::default());
    let st = status.clone();
    let net = net.clone();
    let thread = thread::Builder::new()
        .name(format!("raft-node-{id}"))
        .spawn(move || run_node(id, &dir, log_config, peers, rx, net, st))
        .expect("spawn a node thread");
    Node { status, thread }
}

fn run_node(
    id: u64,
    dir: &Path,
    log_config: Config,
    peers: Vec<u64>,
    rx: Receiver<Input>,
    net: Network,
    status: Arc<Status>,
) -> Result<NodeEnd, Error> {
    let started = Instant::now();
    let mut storage = MmapRaftStorage::open(dir, log_config)?;
    status
        .opened_last
        .store(storage.last_index()?, Ordering::Relaxed);
    if storage.conf_state().voters.is_empty() {
        // Every node starts from the same configuration (as `MemStorage::new_with_conf_state`).
        let mut cs = ConfState::default();
        cs.voters = peers;
        storage.set_conf_state(cs)?;
        storage.sync()?;
    }
    let mut node = RawNode::new(&raft_config(id), storage, &discard_logger())?;
    status
        .open_micros
        .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    let mut kv = Kv::default();
    let mut pending: HashMap<u64, Sender<u64>> = HashMap::new();
    let mut next_tick = Instant::now() + TICK;
    'run: loop {
        let wait = next_tick.saturating_duration_since(Instant::now());
        let first = match rx.recv_timeout(wait) {
            Ok(input) => Some(input),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let more = std::iter::from_fn(|| rx.try_recv().ok()).take(4096);
        for input in first.into_iter().chain(more) {
            match input {
                Input::Msg(m) => {
                    let _ = node.step(m);
                }
                Input::Propose { rid, data, ack } => {
                    if node.propose(vec![], data).is_ok() {
                        pending.insert(rid, ack);
                    }
                }
                Input::Stop => break 'run,
            }
        }
        if Instant::now() >= next_tick {
            node.tick();
            next_tick = Instant::now() + TICK;
        }
        on_ready(&mut node, &net, &mut kv, &mut pending)?;
        status
            .leader
            .store(node.raft.state == StateRole::Leader, Ordering::Relaxed);
        status.term.store(node.raft.term, Ordering::Relaxed);
        status
            .commit
            .store(node.raft.raft_log.committed, Ordering::Relaxed);
        status.applied.store(kv.applied, Ordering::Relaxed);
    }
    status.leader.store(false, Ordering::Relaxed);
    let store = node.store();
    let report = NodeReport {
        applied: kv.applied,
        commit: store.initial_state()?.hard_state.commit,
        first: store.first_index()?,
        last: store.last_index()?,
        term: node.raft.term,
        keys: kv.map.len(),
        digest: kv.digest(),
    };
    Ok(NodeEnd {
        report,
        map: kv.map,
    })
}

/// One turn of the Ready loop: send, apply, persist (durable), send what needed persistence,
/// advance.
fn on_ready(
    node: &mut RawNode<MmapRaftStorage>,
    net: &Network,
    kv: &mut Kv,
    pending: &mut HashMap<u64, Sender<u64>>,
) -> Result<(), Error> {
    if !node.has_ready() {
        return Ok(());
    }
    let mut rd = node.ready();
    net.send_all(rd.take_messages());
    if !rd.snapshot().is_empty() {
        return Err("a snapshot arrived, but this cluster never compacts its logs".into());
    }
    kv.apply(rd.take_committed_entries(), pending)?;
    node.mut_store().persist_ready(&rd)?;
    net.send_all(rd.take_persisted_messages());
    let mut light = node.advance(rd);
    if let Some(commit) = light.commit_index() {
        node.mut_store().set_commit(commit)?;
    }
    net.send_all(light.take_messages());
    kv.apply(light.take_committed_entries(), pending)?;
    node.advance_apply();
    Ok(())
}

/// The running cluster.
pub struct Cluster {
    base: PathBuf,
    log_config: Config,
    peers: Vec<u64>,
    net: Network,
    nodes: BTreeMap<u64, Node>,
}

impl Cluster {
    /// Starts nodes `1..=n`, node `i` on `base/node-i`.
    pub fn start(base: &Path, n: u64, log_config: Config) -> Self {
        let peers: Vec<u64> = (1..=n).collect();
        let net = Network::default();
        let mut c = Cluster {
            base: base.to_path_buf(),
            log_config,
            peers: peers.clone(),
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
        let node = start_node(
            id,
            dir,
            self.log_config.clone(),
            self.peers.clone(),
            &self.net,
        );
        self.nodes.insert(id, node);
    }

    /// The node that leads in the highest term, waiting for one.
    pub fn leader(&self) -> Result<u64, Error> {
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
            if let Some((id, n)) = self.nodes.iter().find(|(_, n)| n.thread.is_finished()) {
                return Err(format!("node {id} stopped: {:?}", n.status.applied).into());
            }
            if Instant::now() > deadline {
                return Err("no leader elected".into());
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Puts `keys` (value [`value_of`]) through the leader, at most `window` in flight, and
    /// returns when every one is applied on the node it was proposed to.
    pub fn put(&self, keys: std::ops::Range<u64>, window: usize) -> Result<(), Error> {
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
    fn wait_applied(&self, ids: &[u64], index: u64) -> Result<(), Error> {
        let deadline = Instant::now() + PATIENCE;
        while ids
            .iter()
            .any(|id| self.nodes[id].status.applied.load(Ordering::Relaxed) < index)
        {
            if let Some((id, _)) = self.nodes.iter().find(|(_, n)| n.thread.is_finished()) {
                return Err(format!("node {id} stopped").into());
            }
            if Instant::now() > deadline {
                return Err(format!("nodes {ids:?} did not apply up to {index}").into());
            }
            thread::sleep(Duration::from_millis(2));
        }
        Ok(())
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
pub fn run(
    base: &Path,
    keys: u64,
    more: u64,
    window: usize,
    log_config: Config,
) -> Result<Report, Error> {
    let t = Instant::now();
    let mut cluster = Cluster::start(base, 3, log_config);
    let leader = cluster.leader()?;
    let election = t.elapsed();

    let t = Instant::now();
    cluster.put(0..keys, window)?;
    let first_writes = t.elapsed();

    let stopped = *cluster
        .peers
        .iter()
        .find(|&&id| id != leader)
        .ok_or("no follower")?;
    let stopped_last = cluster.stop_node(stopped)?.report.last;

    let t = Instant::now();
    cluster.put(keys..keys + more, window)?;
    let more_writes = t.elapsed();

    let target = cluster.commit_of(cluster.leader()?);
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
    let ids = cluster.peers.clone();
    cluster.wait_applied(&ids, cluster.commit_of(leader_now))?;
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
