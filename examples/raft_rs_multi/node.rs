//! One node of the multi-region cluster: a thread that drives every region (Raft group) the
//! node has a peer of, on one [`NodeLog`], with the Ready loop TiKV uses: collect every
//! region's Ready, write them all, make them durable with one sync, then advance each.

// raft-rs's protobuf messages are built field by field, as in raft-rs's own examples.
#![allow(clippy::field_reassign_with_default)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use raft::prelude::*;
use raft::{RawNode, StateRole, Storage, StorageError};

use super::backend::{Error, NodeLog};
use super::network::Network;
use super::state_machine::Kv;

/// One raft-rs tick.
const TICK: Duration = Duration::from_millis(10);

/// What a node thread receives.
pub enum Input {
    /// A raft message for a region; a region the node does not know yet is created.
    Msg(u64, Message),
    /// Propose a put to a region; `ack` gets `rid` once this node applies it.
    Propose {
        region: u64,
        rid: u64,
        data: Vec<u8>,
        ack: Sender<u64>,
    },
    /// Start an election in a region (creating it on this node if new).
    Campaign(u64),
    /// Destroy the node's peer of a region: its storage is removed from the log, and later
    /// messages for it are dropped.
    Destroy(u64),
    Stop,
}

/// The mailboxes of the running nodes.
pub type Net = Network<Input>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a region looks like on one node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegionStatus {
    pub leader: bool,
    pub term: u64,
    pub commit: u64,
    pub applied: u64,
    /// First and last index of its stored log.
    pub first: u64,
    pub last: u64,
    /// Snapshots it restored from the leader.
    pub snapshots: u64,
}

/// What a node thread publishes while it runs.
#[derive(Default)]
pub struct Status {
    pub regions: Mutex<BTreeMap<u64, RegionStatus>>,
    /// The regions found in the log at open, with their last index.
    pub recovered: Mutex<BTreeMap<u64, u64>>,
    /// Time from the thread's start to every recovered region running (open of the log and
    /// of each region's `RawNode` included).
    pub open_micros: AtomicU64,
    /// Ready rounds that wrote something, and the syncs they made (one each).
    pub rounds: AtomicU64,
    pub syncs: AtomicU64,
    /// Time those rounds spent writing (every region's `write_ready`) and syncing, in µs.
    pub write_micros: AtomicU64,
    pub sync_micros: AtomicU64,
    /// Regions created because a message (or proposal) named a region the node did not have.
    pub created_on_contact: AtomicU64,
}

impl Status {
    pub fn region(&self, region: u64) -> Option<RegionStatus> {
        lock(&self.regions).get(&region).copied()
    }
}

/// How a node runs.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub peers: Vec<u64>,
    /// Compact a region's log to its last `n` applied entries once it holds twice that
    /// (saving its state machine beside the log first); `None`: never.
    pub compact_keep: Option<u64>,
}

/// A node's end state: every region's status and state machine, and the regions its log holds.
pub struct NodeEnd {
    pub regions: BTreeMap<u64, (RegionStatus, BTreeMap<u64, Vec<u8>>)>,
    pub log_regions: Vec<u64>,
    /// Entries a Ready asked to persist that the log already held with the same term (raft-rs
    /// hands each entry to persist once; a conflicting entry has another term): should be 0.
    pub persisted_again: u64,
}

pub struct Node {
    pub status: Arc<Status>,
    pub thread: JoinHandle<Result<NodeEnd, Error>>,
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

/// Starts node `id` on `dir` (its log in `dir/log`, saved state machines in `dir/kv`).
pub fn start_node<L: NodeLog>(id: u64, dir: PathBuf, config: NodeConfig, net: &Net) -> Node {
    let (tx, rx) = mpsc::channel();
    net.set(id, Some(tx));
    let status = Arc::new(Status::default());
    let st = status.clone();
    let net = net.clone();
    let thread = thread::Builder::new()
        .name(format!("raft-node-{id}"))
        .spawn(move || run_node::<L>(id, &dir, config, rx, net, st))
        .expect("spawn a node thread");
    Node { status, thread }
}

struct Region<S: Storage> {
    node: RawNode<S>,
    kv: Arc<Mutex<Kv>>,
    pending: HashMap<u64, Sender<u64>>,
}

struct NodeState<L: NodeLog> {
    id: u64,
    dir: PathBuf,
    config: NodeConfig,
    log: L,
    regions: BTreeMap<u64, Region<L::Store>>,
    destroyed: HashSet<u64>,
    net: Net,
    status: Arc<Status>,
    logger: slog::Logger,
    /// See [`NodeEnd::persisted_again`].
    persisted_again: u64,
}

fn run_node<L: NodeLog>(
    id: u64,
    dir: &Path,
    config: NodeConfig,
    rx: Receiver<Input>,
    net: Net,
    status: Arc<Status>,
) -> Result<NodeEnd, Error> {
    let started = Instant::now();
    std::fs::create_dir_all(dir.join("kv"))?;
    let mut n = NodeState {
        id,
        dir: dir.to_path_buf(),
        config,
        log: L::open(&dir.join("log"))?,
        regions: BTreeMap::new(),
        destroyed: HashSet::new(),
        net,
        status,
        logger: slog::Logger::root(slog::Discard, slog::o!()),
        persisted_again: 0,
    };
    for region in n.log.regions()? {
        n.open_region(region)?;
        let last = n.regions[&region].node.store().last_index()?;
        lock(&n.status.recovered).insert(region, last);
    }
    n.publish(None);
    let open = (started.elapsed().as_micros() as u64).max(1);
    n.status.open_micros.store(open, Ordering::Relaxed);
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
            if !n.handle(input)? {
                break 'run;
            }
        }
        let ticked = Instant::now() >= next_tick;
        if ticked {
            for r in n.regions.values_mut() {
                r.node.tick();
            }
            next_tick = Instant::now() + TICK;
        }
        let advanced = n.round()?;
        n.compact()?;
        n.publish((!ticked).then_some(&advanced));
    }
    n.end()
}

impl<L: NodeLog> NodeState<L> {
    fn kv_path(&self, region: u64) -> PathBuf {
        self.dir.join("kv").join(format!("r{region}.kv"))
    }

    /// Opens the node's peer of `region`: its storage (recovered or new), its saved state
    /// machine, its `RawNode`.
    fn open_region(&mut self, region: u64) -> Result<&mut Region<L::Store>, Error> {
        let mut store = self.log.storage(region, &self.config.peers)?;
        let kv = Arc::new(Mutex::new(Kv::load(&self.kv_path(region))?));
        let for_snapshots = kv.clone();
        self.log.serve_snapshots(
            &mut store,
            Box::new(move |meta, _to| {
                // The storage describes the state at the committed index; give it once applied.
                let kv = lock(&for_snapshots);
                if kv.applied != meta.index {
                    let e = StorageError::SnapshotTemporarilyUnavailable;
                    return Err(raft::Error::Store(e));
                }
                Ok(kv.encode())
            }),
        );
        let applied = lock(&kv).applied;
        let node = RawNode::new(&raft_config(self.id, applied), store, &self.logger)?;
        let r = Region {
            node,
            kv,
            pending: HashMap::new(),
        };
        Ok(self.regions.entry(region).or_insert(r))
    }

    /// The node's peer of `region`, created on first contact; `None` if it was destroyed.
    fn region(&mut self, region: u64) -> Result<Option<&mut Region<L::Store>>, Error> {
        if self.destroyed.contains(&region) {
            return Ok(None);
        }
        if !self.regions.contains_key(&region) {
            self.status
                .created_on_contact
                .fetch_add(1, Ordering::Relaxed);
            return self.open_region(region).map(Some);
        }
        Ok(self.regions.get_mut(&region))
    }

    /// Handles one input; false to stop.
    fn handle(&mut self, input: Input) -> Result<bool, Error> {
        match input {
            Input::Msg(region, m) => {
                if let Some(r) = self.region(region)? {
                    let _ = r.node.step(m);
                }
            }
            Input::Propose {
                region,
                rid,
                data,
                ack,
            } => {
                if let Some(r) = self.region(region)? {
                    if r.node.propose(vec![], data).is_ok() {
                        r.pending.insert(rid, ack);
                    }
                }
            }
            Input::Campaign(region) => {
                if !self.destroyed.contains(&region) {
                    let r = match self.regions.get_mut(&region) {
                        Some(r) => r,
                        None => self.open_region(region)?,
                    };
                    r.node.campaign()?;
                }
            }
            Input::Destroy(region) => {
                self.destroyed.insert(region);
                // The region's RawNode, and so its storage, goes first: a log gives a group
                // one storage at a time, and removes a group no storage holds.
                let peer = self.regions.remove(&region);
                let had = peer.is_some();
                drop(peer);
                if had {
                    self.log.remove(region)?;
                    let _ = std::fs::remove_file(self.kv_path(region));
                }
                lock(&self.status.regions).remove(&region);
            }
            Input::Stop => return Ok(false),
        }
        Ok(true)
    }

    /// One Ready round over every region: each region's Ready is taken, its messages sent,
    /// its committed entries applied and what it asks to persist written; one sync makes all
    /// of it durable; then each region's persisted messages are sent and the region advanced.
    /// Returns the regions advanced.
    fn round(&mut self) -> Result<Vec<u64>, Error> {
        let NodeState {
            log,
            regions,
            net,
            persisted_again,
            ..
        } = self;
        let mut readies = Vec::new();
        let mut wrote = false;
        let mut restored = Vec::new();
        let mut writing = Duration::ZERO;
        for (&id, r) in regions.iter_mut() {
            if !r.node.has_ready() {
                continue;
            }
            let mut rd = r.node.ready();
            send(net, id, rd.take_messages());
            let mut kv = lock(&r.kv);
            if !rd.snapshot().is_empty() {
                kv.restore(rd.snapshot())?;
                restored.push(id);
            }
            kv.apply(rd.take_committed_entries(), &mut r.pending)?;
            drop(kv);
            if rd.snapshot().is_empty() {
                *persisted_again += held_already(r.node.store(), rd.entries())?;
            }
            let t = Instant::now();
            wrote |= log.write_ready(id, r.node.mut_store(), &rd)?;
            writing += t.elapsed();
            readies.push((id, rd));
        }
        if wrote {
            let t = Instant::now();
            log.sync()?;
            let st = &self.status;
            st.sync_micros
                .fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
            st.write_micros
                .fetch_add(writing.as_micros() as u64, Ordering::Relaxed);
            st.rounds.fetch_add(1, Ordering::Relaxed);
            st.syncs.fetch_add(1, Ordering::Relaxed);
        }
        // A restored state machine is saved once the snapshot is durable in the log, so that
        // a restart finds a state machine at least as new as the log's first index.
        for id in restored {
            let path = self.kv_path(id);
            lock(&self.regions[&id].kv).save(&path)?;
        }
        let mut advanced = Vec::with_capacity(readies.len());
        let NodeState {
            log, regions, net, ..
        } = self;
        for (id, mut rd) in readies {
            let r = regions
                .get_mut(&id)
                .ok_or("a region went away in a round")?;
            send(net, id, rd.take_persisted_messages());
            let mut light = r.node.advance(rd);
            if let Some(commit) = light.commit_index() {
                log.set_commit(id, r.node.mut_store(), commit)?;
            }
            send(net, id, light.take_messages());
            lock(&r.kv).apply(light.take_committed_entries(), &mut r.pending)?;
            r.node.advance_apply();
            advanced.push(id);
        }
        Ok(advanced)
    }

    /// With `compact_keep`, compacts each region whose log holds twice that many applied
    /// entries to its last `keep`, once its commit is durable and its state machine saved.
    fn compact(&mut self) -> Result<(), Error> {
        let Some(keep) = self.config.compact_keep else {
            return Ok(());
        };
        let mut due = Vec::new();
        for (&id, r) in &self.regions {
            let applied = lock(&r.kv).applied;
            if applied >= r.node.store().first_index()? + 2 * keep {
                due.push(id);
            }
        }
        for id in due {
            let path = self.kv_path(id);
            let NodeState { log, regions, .. } = self;
            let r = regions.get_mut(&id).ok_or("no such region")?;
            log.sync_region(id, r.node.mut_store())?;
            let applied = {
                let kv = lock(&r.kv);
                kv.save(&path)?;
                kv.applied
            };
            log.compact(id, r.node.mut_store(), applied - keep)?;
        }
        Ok(())
    }

    fn region_status(r: &Region<L::Store>) -> Result<RegionStatus, Error> {
        let kv = lock(&r.kv);
        let store = r.node.store();
        Ok(RegionStatus {
            leader: r.node.raft.state == StateRole::Leader,
            term: r.node.raft.term,
            commit: r.node.raft.raft_log.committed,
            applied: kv.applied,
            first: store.first_index()?,
            last: store.last_index()?,
            snapshots: kv.snapshots,
        })
    }

    /// Publishes the status of `only` these regions, or of all.
    fn publish(&self, only: Option<&Vec<u64>>) {
        let mut out = lock(&self.status.regions);
        let mut put = |id: u64, r: &Region<L::Store>| {
            if let Ok(s) = Self::region_status(r) {
                out.insert(id, s);
            }
        };
        match only {
            Some(ids) => ids
                .iter()
                .filter_map(|id| self.regions.get(id).map(|r| (*id, r)))
                .for_each(|(id, r)| put(id, r)),
            None => self.regions.iter().for_each(|(&id, r)| put(id, r)),
        }
    }

    fn end(self) -> Result<NodeEnd, Error> {
        let mut regions = BTreeMap::new();
        for (&id, r) in &self.regions {
            let status = Self::region_status(r)?;
            let map = std::mem::take(&mut lock(&r.kv).map);
            regions.insert(id, (status, map));
        }
        let log_regions = self.log.regions()?;
        lock(&self.status.regions)
            .values_mut()
            .for_each(|s| s.leader = false);
        Ok(NodeEnd {
            regions,
            log_regions,
            persisted_again: self.persisted_again,
        })
    }
}

/// How many of `entries` (a Ready's, to persist) `store` already holds with the same term.
fn held_already<S: Storage>(store: &S, entries: &[Entry]) -> Result<u64, Error> {
    let last = store.last_index()?;
    let mut n = 0;
    for e in entries.iter().take_while(|e| e.index <= last) {
        if store.term(e.index).ok() == Some(e.term) {
            n += 1;
        }
    }
    Ok(n)
}

/// Sends a region's raft messages; a message to a stopped node is dropped (raft-rs retries).
fn send(net: &Net, region: u64, msgs: Vec<Message>) {
    for m in msgs {
        net.send(m.to, Input::Msg(region, m));
    }
}
