//! One node of the simulated cluster: its log (a `Store` per node, or one shared log with a
//! raft-rs region per group), its raft-rs nodes, its state machine, and the faults that hit
//! it whole: a clean restart, a power cut, a restart on stale files.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use raft::eraftpb::{ConfState, Entry, Message};
use raft::{RawNode, Ready, StateRole};

use super::{Persist, NODES};
use crate::groups::{Group, Groups};
use crate::io::sim::{scratch, SimFs};
use crate::io::Fs;
use crate::raft::{LogEngine, RaftLog};
use crate::raft_rs::{discard_logger, MmapRaftStorage};
use crate::{Config, Store};

fn config() -> Config {
    Config {
        segment_size: 64 * 1024,
        prepare_ahead: false,
        ..Config::default()
    }
}

/// raft-rs's configuration for node `id`. raft-rs draws each election timeout at random (from
/// a generator it does not let us seed), between `min_election_tick` and
/// `max_election_tick`: a range of one tick makes it a constant, and a different one per node
/// keeps the nodes from timing out together, so a seed's run is the same every time.
fn raft_config(id: u64) -> raft::Config {
    let min = 10 + 3 * (id as usize - 1);
    raft::Config {
        id,
        election_tick: 10,
        min_election_tick: min,
        max_election_tick: min + 1,
        heartbeat_tick: 2,
        max_inflight_msgs: 64,
        pre_vote: true,
        ..Default::default()
    }
}

/// The raft-rs nodes of one node, one per region: on a `Store` of its own (one region), or
/// on the groups of one shared log (a region per group, as a multi-Raft node runs them).
enum Rafts {
    Single(Vec<RawNode<MmapRaftStorage<Store>>>),
    Shared(Vec<RawNode<MmapRaftStorage<Group>>>),
}

/// Runs `$body` with `$v` bound to the node's `Vec` of raft-rs nodes, whichever engine.
macro_rules! with_rafts {
    ($rafts:expr, |$v:ident| $body:expr) => {
        match $rafts {
            Rafts::Single($v) => $body,
            Rafts::Shared($v) => $body,
        }
    };
}

/// What a node's Ready turn sends and applies: messages and committed entries, by region.
#[derive(Default)]
pub(super) struct Turn {
    pub(super) msgs: Vec<(usize, Message)>,
    pub(super) committed: Vec<(usize, Vec<Entry>)>,
}

/// One node: its log's directory and file system (a new pair after a power cut), its raft-rs
/// nodes (`None` while down), and its state machine (rebuilt from the log at each start).
pub(super) struct Node {
    pub(super) id: u64,
    regions: usize,
    pub(super) dirs: Vec<tempfile::TempDir>,
    fs: Arc<SimFs>,
    rafts: Option<Rafts>,
    pub(super) kv: BTreeMap<u64, Vec<u64>>,
    /// The last entry applied, by region.
    pub(super) applied: Vec<u64>,
    /// The copy a `StaleRestart` node comes back from.
    stale: Option<tempfile::TempDir>,
    /// A broken variant's node that raft-rs stopped with a panic (its own check of the log,
    /// e.g. a commit index past the last entry): down for the rest of the run, as a node in
    /// a crash loop is.
    pub(super) dead: bool,
}

impl Node {
    pub(super) fn new(id: u64, regions: usize) -> Node {
        let dir = scratch("rml-jepsen");
        let mut n = Node {
            id,
            regions,
            fs: Arc::new(SimFs::new(dir.path())),
            dirs: vec![dir],
            rafts: None,
            kv: BTreeMap::new(),
            applied: vec![0; regions],
            stale: None,
            dead: false,
        };
        n.start();
        n
    }

    fn dir(&self) -> &Path {
        self.dirs
            .last()
            .map_or(Path::new("/nonexistent"), |d| d.path())
    }

    /// Opens the node's log (its current directory) and starts raft-rs on each region, from
    /// an empty state machine: raft-rs applies the committed entries again.
    fn start(&mut self) {
        let (id, dir, fs) = (self.id, self.dir().to_path_buf(), self.fs.clone());
        self.rafts = Some(if self.regions == 1 {
            let log = RaftLog::open_with_fs(&dir, config(), fs).unwrap();
            Rafts::Single(vec![raft_node(id, MmapRaftStorage::from_log(log).unwrap())])
        } else {
            let groups = Groups::open_with_fs(&dir, config(), fs).unwrap();
            Rafts::Shared(
                (0..self.regions as u64)
                    .map(|r| {
                        raft_node(id, MmapRaftStorage::for_group(groups.group(r + 1)).unwrap())
                    })
                    .collect(),
            )
        });
        self.kv.clear();
        self.applied = vec![0; self.regions];
    }

    /// A clean stop (the log closed) and a start on the same files; a `StaleRestart` node
    /// comes back on the copy taken at its previous restart instead, and keeps a new copy.
    pub(super) fn restart(&mut self, persist: Persist) {
        self.rafts = None;
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
    pub(super) fn power_cut(&mut self, seed: u64) {
        let image = scratch("rml-jepsen");
        self.fs
            .cut_after(self.fs.effects() + 1, &[image.path()], seed);
        let _ = self.fs.sync_dir(self.dir());
        assert!(self.fs.cut_taken());
        self.rafts = None;
        self.fs = Arc::new(SimFs::new(image.path()));
        self.dirs.push(image);
        self.start();
    }

    /// Region `r`'s term if this node leads it.
    pub(super) fn leads(&self, r: usize) -> Option<u64> {
        let rafts = self.rafts.as_ref()?;
        with_rafts!(rafts, |v| v
            .get(r)
            .filter(|raw| raw.raft.state == StateRole::Leader)
            .map(|raw| raw.raft.term))
    }

    /// The highest commit index of region `r` this node knows.
    pub(super) fn committed(&self, r: usize) -> Option<u64> {
        let rafts = self.rafts.as_ref()?;
        with_rafts!(rafts, |v| v.get(r).map(|raw| raw.raft.raft_log.committed))
    }

    pub(super) fn step(&mut self, r: usize, m: Message) {
        if let Some(rafts) = self.rafts.as_mut() {
            with_rafts!(rafts, |v| if let Some(raw) = v.get_mut(r) {
                let _ = raw.step(m);
            })
        }
    }

    pub(super) fn tick(&mut self) {
        if let Some(rafts) = self.rafts.as_mut() {
            with_rafts!(rafts, |v| v.iter_mut().for_each(|raw| {
                raw.tick();
            }))
        }
    }

    /// Proposes `data` in region `r`; whether raft-rs took it.
    pub(super) fn propose(&mut self, r: usize, data: Vec<u8>) -> bool {
        let Some(rafts) = self.rafts.as_mut() else {
            return false;
        };
        with_rafts!(rafts, |v| v
            .get_mut(r)
            .is_some_and(|raw| raw.propose(vec![], data).is_ok()))
    }

    /// One Ready turn of every region: each region's Ready written, then one sync for all of
    /// them (none for `Persist::Unsynced`), then each region's persisted messages and
    /// advance, as a multi-Raft Ready loop does over one shared log.
    pub(super) fn ready(&mut self, persist: Persist) -> Turn {
        let mut turn = Turn::default();
        let Some(rafts) = self.rafts.as_mut() else {
            return turn;
        };
        with_rafts!(rafts, |v| {
            let mut readies: Vec<(usize, Ready)> = Vec::new();
            let mut written = None;
            for (r, raw) in v.iter_mut().enumerate() {
                if !raw.has_ready() {
                    continue;
                }
                let mut rd = raw.ready();
                turn.msgs
                    .extend(rd.take_messages().into_iter().map(|m| (r, m)));
                turn.committed.push((r, rd.take_committed_entries()));
                if raw.mut_store().write_ready(&rd).unwrap() {
                    written = Some(r);
                }
                readies.push((r, rd));
            }
            if let Some(r) = written.filter(|_| persist != Persist::Unsynced) {
                sync(&mut v[r]);
            }
            for (r, mut rd) in readies {
                let raw = &mut v[r];
                turn.msgs
                    .extend(rd.take_persisted_messages().into_iter().map(|m| (r, m)));
                let mut light = raw.advance(rd);
                if let Some(commit) = light.commit_index() {
                    raw.mut_store().set_commit(commit).unwrap();
                }
                turn.msgs
                    .extend(light.take_messages().into_iter().map(|m| (r, m)));
                turn.committed.push((r, light.take_committed_entries()));
                raw.advance_apply();
            }
        });
        turn
    }
}

/// A raft-rs node on `storage`, which starts with every node as a voter.
fn raft_node<S: LogEngine>(
    id: u64,
    mut storage: MmapRaftStorage<S>,
) -> RawNode<MmapRaftStorage<S>> {
    if storage.conf_state().voters.is_empty() {
        let cs = ConfState {
            voters: (1..=NODES).collect(),
            ..Default::default()
        };
        storage.set_conf_state(cs).unwrap();
        storage.sync().unwrap();
    }
    RawNode::new(&raft_config(id), storage, &discard_logger()).unwrap()
}

/// Makes everything the node's log holds durable (for a shared log, every region's).
fn sync<S: LogEngine>(raw: &mut RawNode<MmapRaftStorage<S>>) {
    raw.mut_store().sync().unwrap();
}

fn copy_files(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}
