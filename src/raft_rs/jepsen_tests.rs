//! A Jepsen-style test of a 3-node raft-rs cluster on this log, in one thread, deterministic
//! for a seed: every node's log on its own simulated file system (`io::sim`), messages through
//! a simulated network that delays, drops and partitions, and faults that no test on real
//! processes can make deterministic: a **power cut** of one node (or of two at once), which
//! drops that node's unsynced effects as the crash models do and restarts it from the durable
//! image; a restart; a partition. Clients append unique values to a few keys and read whole
//! lists (Jepsen's list-append), through the log; the history (invoke and complete ticks,
//! outcome: ok, failed, or indeterminate after a timeout) is checked by `history::check`:
//! every acknowledged append is on every node once, in one order all agree on, nothing
//! unwritten appears, and the reads and appends are linearizable.
//!
//! Two deliberately broken variants must fail the checker: a node that acknowledges its
//! Ready before syncing it (`Persist::Unsynced`), and a node whose restart brings back an
//! older copy of its files, losing its last synced entries (`Persist::StaleRestart`).
//!
//! `RML_JEPSEN_SEEDS` (default 8) and `RML_JEPSEN_TICKS` (default 20,000 ticks of simulated
//! time per seed) make longer campaigns. A failing seed prints the violations, the history
//! around them, and keeps the nodes' directories.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use raft::eraftpb::{ConfState, Entry, EntryType, Message};
use raft::{RawNode, StateRole};

use super::history::{self, Event, History, Op, Outcome};
use super::{discard_logger, MmapRaftStorage};
use crate::io::sim::{scratch, Rng, SimFs};
use crate::io::Fs;
use crate::raft::RaftLog;
use crate::Config;

const NODES: u64 = 3;
const KEYS: u64 = 3;
const CLIENTS: u64 = 4;
/// Ticks a client waits for its operation before calling it indeterminate.
const TIMEOUT: u64 = 60;

/// How a node makes its Ready durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Persist {
    /// `persist_ready`: written and synced before the Ready's messages go out.
    Synced,
    /// Broken: written, never synced by the Ready loop.
    Unsynced,
    /// Broken: synced, but a restart brings back the copy of the files taken at the node's
    /// previous restart (its entries and votes since then are gone).
    StaleRestart,
}

fn config() -> Config {
    Config {
        segment_size: 64 * 1024,
        prepare_ahead: false,
        ..Config::default()
    }
}

fn raft_config(id: u64) -> raft::Config {
    raft::Config {
        id,
        election_tick: 10,
        heartbeat_tick: 2,
        max_inflight_msgs: 64,
        pre_vote: true,
        ..Default::default()
    }
}

/// One node: its log's directory and file system (a new pair after a power cut), the running
/// raft-rs node (`None` while down), and its state machine (rebuilt from the log at restart).
struct Node {
    id: u64,
    dirs: Vec<tempfile::TempDir>,
    fs: Arc<SimFs>,
    raw: Option<RawNode<MmapRaftStorage>>,
    kv: BTreeMap<u64, Vec<u64>>,
    applied: u64,
    /// The copy a `StaleRestart` node comes back from.
    stale: Option<tempfile::TempDir>,
    /// A broken variant's node that raft-rs stopped with a panic (its own check of the log,
    /// e.g. a commit index past the last entry): down for the rest of the run, as a node in
    /// a crash loop is.
    dead: bool,
}

impl Node {
    fn dir(&self) -> &Path {
        self.dirs
            .last()
            .map_or(Path::new("/nonexistent"), |d| d.path())
    }

    /// Opens the node's log (its current directory) and starts raft-rs on it, from an empty
    /// state machine: raft-rs applies the committed entries again.
    fn start(&mut self) {
        let log = RaftLog::open_with_fs(self.dir(), config(), self.fs.clone()).unwrap();
        let mut storage = MmapRaftStorage::from_log(log).unwrap();
        if storage.conf_state().voters.is_empty() {
            let cs = ConfState {
                voters: (1..=NODES).collect(),
                ..Default::default()
            };
            storage.set_conf_state(cs).unwrap();
            storage.sync().unwrap();
        }
        self.raw = Some(RawNode::new(&raft_config(self.id), storage, &discard_logger()).unwrap());
        self.kv.clear();
        self.applied = 0;
    }

    /// A clean stop (the log closed) and a start on the same files; a `StaleRestart` node
    /// comes back on the copy taken at its previous restart instead, and keeps a new copy.
    fn restart(&mut self, persist: Persist) {
        self.raw = None;
        if persist == Persist::StaleRestart {
            let copy = scratch("rml-jepsen-stale");
            copy_files(self.dir(), copy.path());
            if let Some(old) = self.stale.replace(copy) {
                let dir = scratch("rml-jepsen");
                copy_files(old.path(), dir.path());
                self.fs = Arc::new(SimFs::new(dir.path()));
                self.dirs.push(dir);
            }
        }
        self.start();
    }

    /// A power cut now: the node's durable image (unsynced effects kept or lost
    /// independently, drawn from `seed`) becomes its files, and it starts on them.
    fn power_cut(&mut self, seed: u64) {
        let image = scratch("rml-jepsen");
        self.fs
            .cut_after(self.fs.effects() + 1, &[image.path()], seed);
        let _ = self.fs.sync_dir(self.dir());
        assert!(self.fs.cut_taken());
        self.raw = None;
        self.fs = Arc::new(SimFs::new(image.path()));
        self.dirs.push(image);
        self.start();
    }
}

fn copy_files(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

/// An operation's entry: request id, kind (0 append, 1 read), key, value.
fn encode(rid: u64, op: &Op) -> Vec<u8> {
    let (kind, key, value) = match *op {
        Op::Append { key, value } => (0u8, key, value),
        Op::Read { key } => (1u8, key, 0),
    };
    let mut v = rid.to_le_bytes().to_vec();
    v.push(kind);
    v.extend_from_slice(&key.to_le_bytes());
    v.extend_from_slice(&value.to_le_bytes());
    v
}

fn decode(data: &[u8]) -> Option<(u64, u8, u64, u64)> {
    let word = |r: std::ops::Range<usize>| Some(u64::from_le_bytes(data.get(r)?.try_into().ok()?));
    Some((word(0..8)?, *data.get(8)?, word(9..17)?, word(17..25)?))
}

/// The cluster, its network and its clients.
struct Sim {
    persist: Persist,
    rng: Rng,
    now: u64,
    nodes: Vec<Node>,
    /// Messages in flight: delivery tick and message.
    wire: Vec<(u64, Message)>,
    /// Nodes cut off from the others until a tick.
    isolated: Option<(u64, u64)>,
    history: History,
    /// Request id → (event index, client, deadline).
    inflight: HashMap<u64, (usize, u64, u64)>,
    busy: [bool; CLIENTS as usize],
    next_rid: u64,
    next_value: u64,
}

impl Sim {
    fn new(seed: u64, persist: Persist) -> Sim {
        let nodes = (1..=NODES)
            .map(|id| {
                let dir = scratch("rml-jepsen");
                let mut n = Node {
                    id,
                    fs: Arc::new(SimFs::new(dir.path())),
                    dirs: vec![dir],
                    raw: None,
                    kv: BTreeMap::new(),
                    applied: 0,
                    stale: None,
                    dead: false,
                };
                n.start();
                n
            })
            .collect();
        Sim {
            persist,
            rng: Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            now: 0,
            nodes,
            wire: Vec::new(),
            isolated: None,
            history: History { events: Vec::new() },
            inflight: HashMap::new(),
            busy: [false; CLIENTS as usize],
            next_rid: 1,
            next_value: 1,
        }
    }

    fn leader(&self) -> Option<usize> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| !n.dead)
            .filter_map(|(i, n)| Some((i, n.raw.as_ref()?)))
            .filter(|(_, r)| r.raft.state == StateRole::Leader)
            .max_by_key(|(_, r)| r.raft.term)
            .map(|(i, _)| i)
    }

    fn cut_off(&self, a: u64, b: u64) -> bool {
        self.isolated
            .is_some_and(|(node, until)| self.now < until && (a == node) != (b == node))
    }

    /// One tick: faults and new client operations (when `active`), deliveries, raft ticks,
    /// client timeouts, Ready handling.
    fn step(&mut self, active: bool) {
        self.now += 1;
        if active {
            self.fault();
        }
        let due: Vec<Message> = {
            let now = self.now;
            let (due, later): (Vec<_>, Vec<_>) = self.wire.drain(..).partition(|(t, _)| *t <= now);
            self.wire = later;
            due.into_iter().map(|(_, m)| m).collect()
        };
        for m in due {
            if self.cut_off(m.from, m.to) {
                continue;
            }
            let i = (m.to - 1) as usize;
            self.guard(i, |sim| {
                if let Some(raw) = sim.nodes[i].raw.as_mut() {
                    let _ = raw.step(m);
                }
            });
        }
        for i in 0..self.nodes.len() {
            self.guard(i, |sim| {
                if let Some(raw) = sim.nodes[i].raw.as_mut() {
                    raw.tick();
                }
            });
        }
        self.clients(active);
        for i in 0..self.nodes.len() {
            self.guard(i, |sim| sim.ready(i));
        }
    }

    /// Runs `f` on node `i`. A panic fails the test in the sound variant; in a broken one it
    /// takes the node down for good (raft-rs noticed the log's damage before the checker).
    fn guard(&mut self, i: usize, f: impl FnOnce(&mut Sim)) {
        if self.nodes[i].dead {
            return;
        }
        if self.persist == Persist::Synced {
            return f(self);
        }
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self)));
        if r.is_err() {
            let n = &mut self.nodes[i];
            n.dead = true;
            n.raw = None;
        }
    }

    fn send(&mut self, msgs: Vec<Message>) {
        for m in msgs {
            if self.rng.below(100) < 2 {
                continue; // dropped
            }
            let at = self.now + 1 + self.rng.below(3);
            self.wire.push((at, m));
        }
    }

    fn ready(&mut self, i: usize) {
        let persist = self.persist;
        let Some(raw) = self.nodes[i].raw.as_mut() else {
            return;
        };
        if !raw.has_ready() {
            return;
        }
        let mut rd = raw.ready();
        let msgs = rd.take_messages();
        let committed = rd.take_committed_entries();
        match persist {
            Persist::Unsynced => drop(raw.mut_store().write_ready(&rd).unwrap()),
            Persist::Synced | Persist::StaleRestart => raw.mut_store().persist_ready(&rd).unwrap(),
        }
        let persisted = rd.take_persisted_messages();
        let mut light = raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            raw.mut_store().set_commit(commit).unwrap();
        }
        let more_msgs = light.take_messages();
        let more = light.take_committed_entries();
        raw.advance_apply();
        self.send(msgs);
        self.send(persisted);
        self.send(more_msgs);
        self.apply(i, committed);
        self.apply(i, more);
    }

    /// Applies committed entries to node `i`'s state machine; an operation still in flight
    /// completes with what it did there.
    fn apply(&mut self, i: usize, entries: Vec<Entry>) {
        for e in entries {
            let n = &mut self.nodes[i];
            if e.index <= n.applied {
                continue;
            }
            assert_eq!(e.index, n.applied + 1, "node {} applied out of order", n.id);
            n.applied = e.index;
            if e.get_entry_type() != EntryType::EntryNormal || e.data.is_empty() {
                continue;
            }
            let (rid, kind, key, value) = decode(&e.data).expect("an operation's entry");
            let list = n.kv.entry(key).or_default();
            if kind == 0 {
                list.push(value);
            }
            let read = (kind == 1).then(|| list.clone());
            if let Some((ev, client, _)) = self.inflight.remove(&rid) {
                let ev = &mut self.history.events[ev];
                ev.complete = Some(self.now);
                ev.outcome = Outcome::Ok(read);
                self.busy[client as usize] = false;
            }
        }
    }

    /// Idle clients start an operation at the leader (or fail at once without one) when
    /// `invoke`; late ones become indeterminate.
    fn clients(&mut self, invoke: bool) {
        let now = self.now;
        let late: Vec<u64> = self
            .inflight
            .iter()
            .filter(|(_, (_, _, deadline))| *deadline <= now)
            .map(|(rid, _)| *rid)
            .collect();
        for rid in late {
            if let Some((ev, client, _)) = self.inflight.remove(&rid) {
                self.history.events[ev].outcome = Outcome::Indeterminate;
                self.busy[client as usize] = false;
            }
        }
        for client in 0..CLIENTS {
            if !invoke || self.busy[client as usize] || self.rng.below(4) != 0 {
                continue;
            }
            let key = self.rng.below(KEYS);
            let op = if self.rng.below(3) == 0 {
                Op::Read { key }
            } else {
                self.next_value += 1;
                Op::Append {
                    key,
                    value: self.next_value,
                }
            };
            let rid = self.next_rid;
            self.next_rid += 1;
            let data = encode(rid, &op);
            let proposed = self
                .leader()
                .and_then(|l| self.nodes[l].raw.as_mut())
                .is_some_and(|raw| raw.propose(vec![], data).is_ok());
            let ev = self.history.events.len();
            self.history.events.push(Event {
                client,
                op,
                invoke: now,
                complete: (!proposed).then_some(now + 1),
                outcome: if proposed {
                    Outcome::Indeterminate
                } else {
                    Outcome::Failed
                },
            });
            if proposed {
                self.inflight.insert(rid, (ev, client, now + TIMEOUT));
                self.busy[client as usize] = true;
            }
        }
    }

    /// Now and then: a restart or a power cut (biased to the leader), or a partition.
    fn fault(&mut self) {
        if self.rng.below(120) != 0 {
            return;
        }
        if self.nodes.iter().any(|n| n.dead) {
            return;
        }
        let leader = self.leader();
        let pick = |rng: &mut Rng| match leader {
            Some(l) if rng.below(2) == 0 => l,
            _ => rng.below(NODES) as usize,
        };
        match self.rng.below(4) {
            0 => {
                let i = pick(&mut self.rng);
                self.nodes[i].restart(self.persist);
            }
            1 => {
                let (i, seed) = (pick(&mut self.rng), self.rng.next());
                self.nodes[i].power_cut(seed);
            }
            2 => {
                // Two nodes at once (a rack losing power): the leader and another.
                let i = pick(&mut self.rng);
                let j = (i + 1 + self.rng.below(NODES - 1) as usize) % NODES as usize;
                let (a, b) = (self.rng.next(), self.rng.next());
                if self.persist == Persist::StaleRestart {
                    self.nodes[i].restart(self.persist);
                    self.nodes[j].restart(self.persist);
                } else {
                    self.nodes[i].power_cut(a);
                    self.nodes[j].power_cut(b);
                }
            }
            _ => {
                let node = 1 + self.rng.below(NODES);
                self.isolated = Some((node, self.now + 30 + self.rng.below(100)));
            }
        }
    }

    /// Heals, then runs until every node has applied everything the cluster committed.
    fn settle(&mut self) {
        self.isolated = None;
        for _ in 0..2000 {
            self.step(false);
            let commits: Vec<u64> = self
                .nodes
                .iter()
                .filter_map(|n| Some(n.raw.as_ref()?.raft.raft_log.committed))
                .collect();
            let top = commits.iter().copied().max().unwrap_or(0);
            let live = self.nodes.iter().filter(|n| !n.dead);
            if self.inflight.is_empty() && live.clone().all(|n| n.applied == top) {
                return;
            }
        }
    }

    /// Every running node's state machine (a broken variant's dead nodes left out).
    fn final_state(&self) -> Vec<(u64, BTreeMap<u64, Vec<u64>>)> {
        self.nodes
            .iter()
            .filter(|n| !n.dead)
            .map(|n| (n.id, n.kv.clone()))
            .collect()
    }

    /// Keeps every directory of the run (for a failing seed) and names them.
    fn keep_dirs(self) -> Vec<PathBuf> {
        self.nodes
            .into_iter()
            .flat_map(|n| n.dirs.into_iter().map(|d| d.keep()))
            .collect()
    }
}

/// Runs one seed for `ticks` ticks of faults, then settles; the checker's verdict.
fn run(seed: u64, ticks: u64, persist: Persist) -> (Sim, Result<(), Vec<history::Violation>>) {
    let mut sim = Sim::new(seed, persist);
    for _ in 0..ticks {
        sim.step(true);
    }
    sim.settle();
    let verdict = history::check(&sim.history, &sim.final_state());
    if std::env::var("RML_JEPSEN_DEBUG").is_ok() {
        let ok =
            |f: fn(&Outcome) -> bool| sim.history.events.iter().filter(|e| f(&e.outcome)).count();
        eprintln!(
            "seed {seed} {persist:?}: {} events, {} ok, {} failed, {} indeterminate; lives {:?}; dead {:?}; lists {:?}; {}",
            sim.history.events.len(),
            ok(|o| matches!(o, Outcome::Ok(_))),
            ok(|o| matches!(o, Outcome::Failed)),
            ok(|o| matches!(o, Outcome::Indeterminate)),
            sim.nodes.iter().map(|n| n.dirs.len()).collect::<Vec<_>>(),
            sim.nodes.iter().map(|n| n.dead).collect::<Vec<_>>(),
            sim.final_state().iter().map(|(_, kv)| kv.values().map(Vec::len).sum::<usize>()).collect::<Vec<_>>(),
            match &verdict { Ok(()) => "ok".to_string(), Err(v) => format!("{} violations, first: {}", v.len(), v[0]) },
        );
    }
    (sim, verdict)
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn a_cluster_under_power_cuts_restarts_and_partitions_loses_no_acknowledged_append() {
    let (seeds, ticks) = (env("RML_JEPSEN_SEEDS", 8), env("RML_JEPSEN_TICKS", 20_000));
    for seed in 0..seeds {
        let (sim, verdict) = run(seed, ticks, Persist::Synced);
        let acked = sim
            .history
            .events
            .iter()
            .filter(|e| matches!(e.outcome, Outcome::Ok(_)))
            .count();
        if let Err(violations) = verdict {
            let at: Vec<usize> = violations.iter().flat_map(|v| v.events()).collect();
            let around = history::describe_around(&sim.history, &at, 5);
            let dirs = sim.keep_dirs();
            panic!(
                "seed {seed}: {} violations, first: {}\n{around}\nnode directories kept: {dirs:?}",
                violations.len(),
                violations[0]
            );
        }
        assert!(
            acked > 100,
            "seed {seed}: only {acked} operations acknowledged"
        );
    }
}

#[test]
fn the_checker_catches_a_log_that_acknowledges_before_syncing() {
    let caught = (0..8u64).any(|seed| run(seed, 3000, Persist::Unsynced).1.is_err());
    assert!(caught, "no seed of the unsynced variant was caught");
}

#[test]
fn the_checker_catches_a_node_whose_restart_drops_its_last_synced_entries() {
    let caught = (0..8u64).any(|seed| run(seed, 3000, Persist::StaleRestart).1.is_err());
    assert!(caught, "no seed of the stale-restart variant was caught");
}
