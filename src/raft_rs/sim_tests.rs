//! The raft-rs storage's crash model on the simulated file system: workloads of the calls a
//! Ready loop makes (hard states, appends with conflicts in a higher term, commits,
//! compactions, snapshots inside and beyond the log, configurations), a power cut after every
//! file-system effect, and recovery checked against the states the storage went through since
//! the last acknowledged sync. A call that writes several records (an append that truncates
//! first, a snapshot) has each intermediate state in the model: each must be a state raft-rs
//! can start from.
//!
//! `RML_SIM_WORKLOADS` (default 10) sets the number of workloads.

use std::path::Path;
use std::sync::Arc;

use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Snapshot};
use raft::{GetEntriesContext, Storage};

use super::{MmapRaftStorage, RaftRsTypes};
use crate::io::sim::{power_cut_after_every_effect, workloads, Acked, Explored, Rng, SimFs};
use crate::raft::RaftLog;
use crate::Config;

/// An entry as the model keeps it: term, index, entry type, context, data.
type ModelEntry = (u64, u64, i32, Vec<u8>, Vec<u8>);

/// What a reopen must show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Model {
    /// Hard state: term, vote, commit.
    hs: (u64, u64, u64),
    voters: Vec<u64>,
    /// The dummy entry: (term, index) of the snapshot or compaction point.
    dummy: (u64, u64),
    entries: Vec<ModelEntry>,
}

impl Model {
    fn first(&self) -> u64 {
        self.dummy.1 + 1
    }

    fn last(&self) -> u64 {
        self.entries.last().map_or(self.dummy.1, |e| e.1)
    }

    fn term_at(&self, index: u64) -> Option<u64> {
        self.entries.iter().find(|e| e.1 == index).map(|e| e.0)
    }
}

fn config() -> Config {
    Config {
        segment_size: 4096,
        prepare_ahead: false,
        ..Config::default()
    }
}

fn entry(r: &mut Rng, term: u64, index: u64) -> Entry {
    let mut e = Entry {
        term,
        index,
        ..Entry::default()
    };
    if r.below(5) == 0 {
        e.set_entry_type(EntryType::EntryConfChange);
        e.context = format!("ctx-{index}").into_bytes().into();
    }
    let len = r.below(200) as usize;
    e.data = (0..len).map(|_| r.next() as u8).collect::<Vec<u8>>().into();
    e
}

fn modelled(e: &Entry) -> ModelEntry {
    (
        e.term,
        e.index,
        e.entry_type as i32,
        e.context.to_vec(),
        e.data.to_vec(),
    )
}

fn voters(r: &mut Rng) -> Vec<u64> {
    (1..=5).filter(|_| r.below(2) == 0).collect()
}

struct Run {
    states: Vec<Model>,
    acked: usize,
}

fn open(dir: &Path, fs: Arc<SimFs>) -> Option<MmapRaftStorage> {
    let log = RaftLog::<RaftRsTypes>::open_with_fs(dir, config(), fs).ok()?;
    MmapRaftStorage::from_log(log).ok()
}

/// With `recycling`, the workload is longer and a quarter of the steps more commit
/// everything, compact it away and sync: purged segments go to the pool and later rollovers
/// reuse them.
fn run(dir: &Path, fs: Arc<SimFs>, seed: u64, recycling: bool) -> Run {
    let mut states = vec![Model::default()];
    let acked = Acked::default();
    let Some(mut s) = open(dir, fs.clone()) else {
        return Run { states, acked: 0 };
    };
    let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut m = Model::default();
    let mut applied = 0usize;
    // The highest term used so far (entries, votes, snapshots).
    let mut term = 1u64;
    let steps = 40 + r.below(30) + if recycling { 40 } else { 0 };
    for step in 0..steps {
        if fs.cut_taken() {
            break;
        }
        let res = match r.below(if recycling { 17 } else { 13 }) {
            0 => {
                let t = m.hs.0.max(term) + r.below(2);
                let vote = if t == m.hs.0 && m.hs.1 != 0 {
                    m.hs.1
                } else {
                    r.below(4)
                };
                term = term.max(t);
                m.hs = (t, vote, m.hs.2);
                states.push(m.clone());
                let hs = HardState {
                    term: t,
                    vote,
                    commit: m.hs.2,
                    ..HardState::default()
                };
                s.set_hard_state(&hs)
            }
            1..=4 => {
                let (first, last) = (m.first(), m.last());
                let lo = first.max(m.hs.2 + 1);
                let conflict = r.below(4) == 0 && last >= lo;
                let start = if conflict {
                    term += 1;
                    let start = lo + r.below(last - lo + 1);
                    m.entries.retain(|e| e.1 < start);
                    states.push(m.clone());
                    start
                } else {
                    last + 1
                };
                let ents: Vec<Entry> = (0..1 + r.below(5))
                    .map(|j| entry(&mut r, term, start + j))
                    .collect();
                for e in &ents {
                    m.entries.push(modelled(e));
                    states.push(m.clone());
                }
                s.append(&ents)
            }
            5 | 6 => {
                let last = m.last();
                if last > m.hs.2 {
                    m.hs.2 += 1 + r.below(last - m.hs.2);
                    states.push(m.clone());
                    s.set_commit(m.hs.2)
                } else {
                    Ok(())
                }
            }
            7 => {
                let first = m.first();
                if m.hs.2 >= first {
                    let i = first + 1 + r.below(m.hs.2 + 1 - first);
                    let t = m.term_at(i - 1).expect("committed entries are stored");
                    m.dummy = (t, i - 1);
                    m.entries.retain(|e| e.1 >= i);
                    states.push(m.clone());
                    s.compact(i)
                } else {
                    Ok(())
                }
            }
            8 => {
                let lo = m.first().max(m.hs.2);
                let index = lo + r.below(m.last() + 3 - lo);
                let held = m.term_at(index).filter(|_| r.below(2) == 0);
                let sterm = held.unwrap_or(term);
                term = term.max(sterm);
                let vs = voters(&mut r);
                if m.term_at(index) == Some(sterm) && m.last() > index {
                    m.entries.retain(|e| e.1 <= index);
                    states.push(m.clone());
                }
                m.entries.clear();
                m.dummy = (sterm, index);
                m.hs.2 = index;
                m.voters = vs.clone();
                states.push(m.clone());
                if m.hs.0 < sterm {
                    m.hs = (sterm, 0, index);
                    states.push(m.clone());
                }
                let mut snap = Snapshot::default();
                snap.mut_metadata().index = index;
                snap.mut_metadata().term = sterm;
                snap.mut_metadata().mut_conf_state().voters = vs;
                s.apply_snapshot(&snap)
            }
            9 => {
                m.voters = voters(&mut r);
                states.push(m.clone());
                let cs = ConfState {
                    voters: m.voters.clone(),
                    ..ConfState::default()
                };
                s.set_conf_state(cs)
            }
            10 | 11 => {
                let upto = states.len() - 1;
                s.sync().map(|()| acked.raise(upto))
            }
            13.. => {
                let last = m.last();
                let mut res = Ok(());
                if last > m.hs.2 {
                    m.hs.2 = last;
                    states.push(m.clone());
                    res = s.set_commit(last);
                }
                if let (Ok(()), Some(t)) = (&res, m.term_at(last)) {
                    m.dummy = (t, last);
                    m.entries.clear();
                    states.push(m.clone());
                    res = s.compact(last + 1);
                }
                res.and_then(|()| {
                    let upto = states.len() - 1;
                    s.sync().map(|()| acked.raise(upto))
                })
            }
            _ => s.flush(acked.on_flush(states.len() - 1)),
        };
        match res {
            Ok(()) => applied = states.len() - 1,
            Err(e) => {
                assert!(
                    fs.cut_taken(),
                    "workload {seed}, step {step}: refused without a power cut: {e}"
                );
                break;
            }
        }
    }
    if s.sync().is_ok() {
        acked.raise(applied);
    }
    drop(s);
    Run {
        states,
        acked: acked.get(),
    }
}

fn observe(s: &MmapRaftStorage) -> Model {
    let hs = s.hard_state();
    let dummy = s.log().state().purged.map_or((0, 0), |p| (p.term, p.index));
    let (first, last) = (s.first_index().unwrap(), s.last_index().unwrap());
    assert_eq!(first, dummy.1 + 1, "first index after the dummy entry");
    assert_eq!(s.term(dummy.1), Ok(dummy.0), "the dummy entry's term");
    let entries = s
        .entries(first, last + 1, None, GetEntriesContext::empty(false))
        .unwrap_or_else(|e| panic!("reading the recovered log: {e}"));
    Model {
        hs: (hs.term, hs.vote, hs.commit),
        voters: s.conf_state().voters.clone(),
        dummy,
        entries: entries.iter().map(modelled).collect(),
    }
}

/// Cuts each workload after every effect and checks every image; returns what was explored
/// and the recycled segments the dry runs installed.
fn cut_after_every_effect(recycling: bool) -> (Explored, u64) {
    let mut recycled = 0;
    let explored = power_cut_after_every_effect(
        "rml-rrsim",
        7_919,
        |seed, dir, fs| run(dir, fs, seed, recycling),
        |seed, dry, fs, r| {
            recycled += fs.recycled_installs();
            // Without a cut the workload runs to its end and a reopen shows its last state.
            let s = MmapRaftStorage::open(dry, config()).expect("reopen the dry run");
            assert_eq!(
                observe(&s),
                *r.states.last().expect("a state"),
                "workload {seed}"
            );
        },
        |seed, k, image, r| {
            let s = MmapRaftStorage::open(image, config()).unwrap_or_else(|e| {
                panic!("workload {seed}, cut after effect {k}: recovery failed: {e}")
            });
            let got = observe(&s);
            assert!(
                r.states[r.acked..].contains(&got),
                "workload {seed}, cut after effect {k}: recovered {got:?} is not a state since \
                 the acknowledged one {:?}",
                r.states[r.acked]
            );
        },
    );
    eprintln!(
        "raft-rs sim crash model (recycling: {recycling}): {explored} over {} workloads, \
         {recycled} recycled segments installed",
        workloads()
    );
    (explored, recycled)
}

#[test]
fn raft_rs_storage_survives_a_power_cut_after_every_effect() {
    cut_after_every_effect(false);
}

#[test]
fn raft_rs_storage_with_recycled_segments_survives_a_power_cut_after_every_effect() {
    let (explored, recycled) = cut_after_every_effect(true);
    assert!(explored.cuts > 0);
    assert!(
        recycled >= workloads(),
        "only {recycled} recycled segments installed"
    );
}
