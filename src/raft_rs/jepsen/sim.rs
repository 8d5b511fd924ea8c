//! The simulated cluster: nodes, a network that delays, drops and partitions, clients that
//! record a list-append history, and the faults.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use raft::eraftpb::{Entry, EntryType, Message};

use super::node::Node;
use super::{Persist, CLIENTS, KEYS, NODES, TIMEOUT};
use crate::io::sim::Rng;
use crate::raft_rs::history::{Event, History, Op, Outcome};

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
pub(super) struct Sim {
    persist: Persist,
    /// Raft groups (regions) per node.
    regions: usize,
    rng: Rng,
    now: u64,
    pub(super) nodes: Vec<Node>,
    /// Messages in flight: delivery tick, region and message.
    wire: Vec<(u64, usize, Message)>,
    /// Nodes cut off from the others until a tick.
    isolated: Option<(u64, u64)>,
    pub(super) history: History,
    /// Request id → (event index, client, deadline).
    inflight: HashMap<u64, (usize, u64, u64)>,
    busy: [bool; CLIENTS as usize],
    next_rid: u64,
    next_value: u64,
}

impl Sim {
    pub(super) fn new(seed: u64, persist: Persist, regions: usize) -> Sim {
        Sim {
            persist,
            regions,
            nodes: (1..=NODES).map(|id| Node::new(id, regions)).collect(),
            rng: Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            now: 0,
            wire: Vec::new(),
            isolated: None,
            history: History { events: Vec::new() },
            inflight: HashMap::new(),
            busy: [false; CLIENTS as usize],
            next_rid: 1,
            next_value: 1,
        }
    }

    /// The node that leads region `r` in the highest term.
    fn leader(&self, r: usize) -> Option<usize> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| !n.dead)
            .filter_map(|(i, n)| Some((i, n.leads(r)?)))
            .max_by_key(|(_, term)| *term)
            .map(|(i, _)| i)
    }

    fn cut_off(&self, a: u64, b: u64) -> bool {
        self.isolated
            .is_some_and(|(node, until)| self.now < until && (a == node) != (b == node))
    }

    /// One tick: faults and new client operations (when `active`), deliveries, raft ticks,
    /// client timeouts, Ready handling.
    pub(super) fn step(&mut self, active: bool) {
        self.now += 1;
        if active {
            self.fault();
        }
        let now = self.now;
        let (due, later): (Vec<_>, Vec<_>) = self.wire.drain(..).partition(|(t, _, _)| *t <= now);
        self.wire = later;
        for (_, r, m) in due {
            if self.cut_off(m.from, m.to) {
                continue;
            }
            let i = (m.to - 1) as usize;
            self.guard(i, |sim| sim.nodes[i].step(r, m));
        }
        for i in 0..self.nodes.len() {
            self.guard(i, |sim| sim.nodes[i].tick());
        }
        for i in 0..self.nodes.len() {
            self.guard(i, |sim| sim.ready(i));
        }
        // After the Ready turns: an operation invoked now completes at a later tick.
        self.clients(active);
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
            self.nodes[i].dead = true;
        }
    }

    fn send(&mut self, msgs: Vec<(usize, Message)>) {
        for (r, m) in msgs {
            if self.rng.below(100) < 2 {
                continue; // dropped
            }
            let at = self.now + 1 + self.rng.below(3);
            self.wire.push((at, r, m));
        }
    }

    /// One Ready turn of node `i` (every region), then what it sends and applies.
    fn ready(&mut self, i: usize) {
        let turn = self.nodes[i].ready(self.persist);
        self.send(turn.msgs);
        for (r, entries) in turn.committed {
            self.apply(i, r, entries);
        }
    }

    /// Applies region `r`'s committed entries to node `i`'s state machine; an operation
    /// still in flight completes with what it did there.
    fn apply(&mut self, i: usize, r: usize, entries: Vec<Entry>) {
        for e in entries {
            let n = &mut self.nodes[i];
            if e.index <= n.applied[r] {
                continue;
            }
            assert_eq!(
                e.index,
                n.applied[r] + 1,
                "node {} applied out of order",
                n.id
            );
            n.applied[r] = e.index;
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
            let region = (key % self.regions as u64) as usize;
            let proposed = self
                .leader(region)
                .is_some_and(|l| self.nodes[l].propose(region, data));
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
        let leader = self.leader(0);
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
    pub(super) fn settle(&mut self) {
        self.isolated = None;
        for _ in 0..2000 {
            self.step(false);
            let done = (0..self.regions).all(|r| {
                let top = self.nodes.iter().filter_map(|n| n.committed(r)).max();
                let live = self.nodes.iter().filter(|n| !n.dead);
                live.clone().all(|n| Some(n.applied[r]) == top)
            });
            if self.inflight.is_empty() && done {
                return;
            }
        }
    }

    /// Every running node's state machine (a broken variant's dead nodes left out).
    pub(super) fn final_state(&self) -> Vec<(u64, BTreeMap<u64, Vec<u64>>)> {
        self.nodes
            .iter()
            .filter(|n| !n.dead)
            .map(|n| (n.id, n.kv.clone()))
            .collect()
    }

    /// Keeps every directory of the run (for a failing seed) and names them.
    pub(super) fn keep_dirs(self) -> Vec<PathBuf> {
        self.nodes
            .into_iter()
            .flat_map(|n| n.dirs.into_iter().map(|d| d.keep()))
            .collect()
    }
}
