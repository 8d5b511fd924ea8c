//! One node of the in-process raft-rs cluster: a thread running raft-rs's Ready loop on
//! `MmapRaftStorage` with the key-value state machine of `state_machine.rs`.

// raft-rs's protobuf messages are built field by field, as in raft-rs's own examples.
#![allow(clippy::field_reassign_with_default)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use raft::prelude::*;
use raft::{RawNode, StateRole, Storage, StorageError};
use raft_mmap_log::raft_rs::{discard_logger, MmapRaftStorage};
use raft_mmap_log::Config;

use super::network;
use super::state_machine::Kv;
pub use super::state_machine::{encode_put, value_of, Error};

/// The mailboxes of the running nodes.
pub type Network = network::Network<Input>;

/// Sends raft messages; a message to a stopped node is dropped (raft-rs retries).
fn send_all(net: &Network, msgs: Vec<Message>) {
    for m in msgs {
        net.send(m.to, Input::Msg(m));
    }
}

/// One raft-rs tick.
const TICK: Duration = Duration::from_millis(10);

/// What a node thread receives.
pub enum Input {
    Msg(Message),
    /// Propose a put; `ack` gets `rid` once this node applies it.
    Propose {
        rid: u64,
        data: Vec<u8>,
        ack: Sender<u64>,
    },
    Stop,
}

/// What a node thread publishes while it runs.
#[derive(Default)]
pub struct Status {
    pub leader: AtomicBool,
    pub term: AtomicU64,
    pub applied: AtomicU64,
    pub commit: AtomicU64,
    /// Time from the thread's start to a running `RawNode` (open of the log included).
    pub open_micros: AtomicU64,
    /// The log's last index when the node opened it.
    pub opened_last: AtomicU64,
}

/// A node's end state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    /// Last applied index.
    pub applied: u64,
    /// Commit index (hard state) in the node's storage.
    pub commit: u64,
    /// First index of the node's log.
    pub first: u64,
    /// Last index of the node's log.
    pub last: u64,
    /// The node's term.
    pub term: u64,
    /// Keys in its state machine.
    pub keys: usize,
    /// Hash of its whole state machine.
    pub digest: u64,
    /// Snapshots it restored from the leader.
    pub snapshots: u64,
}

pub struct NodeEnd {
    pub report: NodeReport,
    pub map: BTreeMap<u64, Vec<u8>>,
}

pub struct Node {
    pub status: Arc<Status>,
    pub thread: JoinHandle<Result<NodeEnd, Error>>,
}

/// How a node runs.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub log: Config,
    pub peers: Vec<u64>,
    /// Compact the log to the last `n` applied entries once it holds twice that (`None`:
    /// never; a follower that falls further behind then needs a snapshot).
    pub compact_keep: Option<u64>,
}

fn raft_config(id: u64, applied: u64) -> raft::Config {
    raft::Config {
        id,
        applied,
        election_tick: 10,
        heartbeat_tick: 2,
        max_size_per_msg: 1 << 20,
        max_inflight_msgs: 256,
        pre_vote: true,
        ..Default::default()
    }
}

/// Starts node `id` on `dir` (a new or an existing log).
pub fn start_node(id: u64, dir: PathBuf, config: NodeConfig, net: &Network) -> Node {
    let (tx, rx) = mpsc::channel();
    net.set(id, Some(tx));
    let status = Arc::new(Status::default());
    let st = status.clone();
    let net = net.clone();
    let thread = thread::Builder::new()
        .name(format!("raft-node-{id}"))
        .spawn(move || run_node(id, &dir, config, rx, net, st))
        .expect("spawn a node thread");
    Node { status, thread }
}

fn run_node(
    id: u64,
    dir: &Path,
    config: NodeConfig,
    rx: Receiver<Input>,
    net: Network,
    status: Arc<Status>,
) -> Result<NodeEnd, Error> {
    let started = Instant::now();
    let mut storage = MmapRaftStorage::open(dir, config.log.clone())?;
    status
        .opened_last
        .store(storage.last_index()?, Ordering::Relaxed);
    if storage.conf_state().voters.is_empty() {
        // Every node starts from the same configuration (as `MemStorage::new_with_conf_state`).
        let mut cs = ConfState::default();
        cs.voters = config.peers.clone();
        storage.set_conf_state(cs)?;
        storage.sync()?;
    }
    // With compaction the log alone cannot rebuild the state machine: it is saved beside it.
    let kv_path = dir.with_extension("kv");
    let kv = Kv::load(&kv_path)?;
    let applied = kv.applied;
    let kv = Arc::new(Mutex::new(kv));
    let for_snapshots = kv.clone();
    storage.set_snapshot_data(Box::new(move |meta, _to| {
        // The storage describes the state at the committed index; give it once applied.
        let kv = for_snapshots.lock().unwrap_or_else(|e| e.into_inner());
        if kv.applied != meta.index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(kv.encode())
    }));
    let mut node = RawNode::new(&raft_config(id, applied), storage, &discard_logger())?;
    status
        .open_micros
        .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
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
        let mut kv = kv.lock().unwrap_or_else(|e| e.into_inner());
        on_ready(&mut node, &net, &mut kv, &mut pending)?;
        if let Some(keep) = config.compact_keep {
            let first = node.store().first_index()?;
            if kv.applied >= first + 2 * keep {
                // The commit (lazy in the storage) must be durable up to what the saved state
                // machine has applied, or a restart could not start from it.
                node.mut_store().sync()?;
                kv.save(&kv_path)?;
                node.mut_store().compact(kv.applied - keep)?;
            }
        }
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
    let kv = std::mem::take(&mut *kv.lock().unwrap_or_else(|e| e.into_inner()));
    let report = NodeReport {
        applied: kv.applied,
        commit: store.initial_state()?.hard_state.commit,
        first: store.first_index()?,
        last: store.last_index()?,
        term: node.raft.term,
        keys: kv.map.len(),
        digest: kv.digest(),
        snapshots: kv.snapshots,
    };
    Ok(NodeEnd {
        report,
        map: kv.map,
    })
}

/// One turn of the Ready loop: send, restore a snapshot, apply, persist (durable), send what
/// needed persistence, advance.
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
    send_all(net, rd.take_messages());
    if !rd.snapshot().is_empty() {
        kv.restore(rd.snapshot())?;
    }
    kv.apply(rd.take_committed_entries(), pending)?;
    node.mut_store().persist_ready(&rd)?;
    send_all(net, rd.take_persisted_messages());
    let mut light = node.advance(rd);
    if let Some(commit) = light.commit_index() {
        node.mut_store().set_commit(commit)?;
    }
    send_all(net, light.take_messages());
    kv.apply(light.take_committed_entries(), pending)?;
    node.advance_apply();
    Ok(())
}
