//! The typed crash model on the simulated file system: `RaftLog` workloads (votes synced
//! before they count, appends, commits, conflicting truncates followed by appends in a higher
//! term, the same conflicts as one `append_frames` batch, purges), a power cut after every file-system effect, and recovery checked against the
//! states the log went through since the last acknowledged flush. The vote never goes back.
//!
//! `RML_SIM_WORKLOADS` (default 10) sets the number of workloads.

use std::path::Path;
use std::sync::Arc;

use super::{LogId, RaftLog, RaftTypes, Vote};
use crate::io::sim::{power_cut_after_every_effect, workloads, Acked, Explored, Rng, SimFs};
use crate::Config;

/// A run records the model after every change it issued, including the one in flight when
/// the power went off (a failed call ends the run). What a reopen must show: vote, committed, purged and every entry with its payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Model {
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
    entries: Vec<(LogId, Vec<u8>)>,
}

impl Model {
    fn last(&self) -> Option<LogId> {
        self.entries.last().map(|e| e.0).or(self.purged)
    }

    fn next_index(&self) -> u64 {
        self.last().map(|l| l.index + 1).unwrap_or(1)
    }
}

fn payload(id: &LogId) -> Vec<u8> {
    let mut r = Rng(id.index.wrapping_mul(31) ^ id.term.rotate_left(20) ^ 7);
    let len = r.below(300) as usize;
    (0..len).map(|_| r.next() as u8).collect()
}

fn config() -> Config {
    Config {
        segment_size: 4096,
        prepare_ahead: false,
        ..Config::default()
    }
}

struct Run {
    states: Vec<Model>,
    acked: usize,
    /// The highest vote a caller was told is durable.
    vote_acked: Option<Vote>,
}

/// With `recycling`, a quarter of the steps more commit everything, purge it and sync: purged
/// segments go to the pool and later rollovers reuse them.
fn run(dir: &Path, fs: Arc<SimFs>, seed: u64, recycling: bool) -> Run {
    let mut states = vec![Model::default()];
    let acked = Acked::default();
    let mut vote_acked = None;
    let Ok(mut log) = RaftLog::<RaftTypes>::open_with_fs(dir, config(), fs.clone()) else {
        return Run {
            states,
            acked: 0,
            vote_acked,
        };
    };
    let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut m = Model::default();
    // The last state whose call succeeded: what a flush acknowledges.
    let mut applied = 0usize;
    let mut term = 1u64;
    for _ in 0..40 + r.below(30) {
        if fs.cut_taken() {
            break;
        }
        let ok = match r.below(if recycling { 13 } else { 10 }) {
            0 => {
                term += r.below(2);
                let v = Vote::new(term, 1 + r.below(3), r.below(2) == 0);
                match m.vote.map(|s| v >= s) {
                    Some(false) => true,
                    _ => {
                        let ok = log.save_vote(v).is_ok();
                        m.vote = Some(v);
                        states.push(m.clone());
                        // Durable before it counts: the vote call succeeded and is synced.
                        if ok && log.sync().is_ok() {
                            acked.raise(states.len() - 1);
                            vote_acked = Some(v);
                        }
                        ok
                    }
                }
            }
            1..=4 => {
                let next = m.next_index();
                let ids: Vec<LogId> = (0..1 + r.below(5))
                    .map(|j| LogId::new(term, 1, next + j))
                    .collect();
                let bodies: Vec<Vec<u8>> = ids.iter().map(payload).collect();
                let ok = log
                    .append(ids.iter().zip(&bodies).map(|(id, b)| (*id, &b[..])))
                    .is_ok();
                // Applied, or in flight when the power went off (a failed call ends the run).
                for (id, b) in ids.into_iter().zip(bodies) {
                    m.entries.push((id, b));
                    states.push(m.clone());
                }
                ok
            }
            5 => match m.entries.get(r.below(m.entries.len() as u64 + 1) as usize) {
                Some(&(id, _)) if Some(id) > m.committed => {
                    let ok = log.commit(id).is_ok();
                    m.committed = Some(id);
                    states.push(m.clone());
                    ok
                }
                _ => true,
            },
            6 => {
                // A conflict: drop an uncommitted suffix; later appends use a higher term.
                let keep = m
                    .entries
                    .iter()
                    .position(|e| Some(e.0) > m.committed)
                    .map(|p| p + r.below((m.entries.len() - p) as u64) as usize);
                match keep {
                    Some(k) if k < m.entries.len() && r.below(2) == 0 => {
                        // The same conflict through replication frames: one identical entry
                        // (if any), then entries of a higher term from the first removed index;
                        // truncate and appends are one call.
                        term += 1;
                        let from = m.entries[k].0.index;
                        let mut ids: Vec<LogId> = m.entries[k.saturating_sub(1)..k]
                            .iter()
                            .map(|e| e.0)
                            .collect();
                        let fresh: Vec<LogId> = (0..1 + r.below(4))
                            .map(|j| LogId::new(term, 1, from + j))
                            .collect();
                        ids.extend(&fresh);
                        let bodies: Vec<(u64, Vec<u8>)> = ids
                            .iter()
                            .map(|id| {
                                let mut b = Vec::new();
                                super::Codec::encode(id, &mut b);
                                b.extend_from_slice(&payload(id));
                                (id.index, b)
                            })
                            .collect();
                        let wire = crate::frames::encode(bodies.iter().map(|(i, b)| (*i, &b[..])));
                        let ok = log.append_frames(&wire).is_ok();
                        m.entries.truncate(k);
                        states.push(m.clone());
                        for id in fresh {
                            m.entries.push((id, payload(&id)));
                            states.push(m.clone());
                        }
                        ok
                    }
                    Some(k) if k < m.entries.len() => {
                        let after = if k == 0 {
                            m.purged
                        } else {
                            Some(m.entries[k - 1].0)
                        };
                        let ok = log.truncate_after(after).is_ok();
                        m.entries.truncate(k);
                        term += 1;
                        states.push(m.clone());
                        ok
                    }
                    _ => true,
                }
            }
            7 => match m.committed {
                Some(c) if Some(c) > m.purged && m.entries.iter().any(|e| e.0 == c) => {
                    let ok = log.purge_upto(c).is_ok();
                    m.entries.retain(|e| e.0 > c);
                    m.purged = Some(c);
                    states.push(m.clone());
                    ok
                }
                _ => true,
            },
            10.. => match m.entries.last().map(|e| e.0) {
                Some(id) => {
                    let mut ok = true;
                    if Some(id) > m.committed {
                        ok = log.commit(id).is_ok();
                        m.committed = Some(id);
                        states.push(m.clone());
                    }
                    if ok {
                        ok = log.purge_upto(id).is_ok();
                        m.entries.clear();
                        m.purged = Some(id);
                        states.push(m.clone());
                    }
                    ok = ok && log.sync().is_ok();
                    if ok {
                        acked.raise(states.len() - 1);
                    }
                    ok
                }
                None => true,
            },
            _ => log.flush(acked.on_flush(applied)).is_ok(),
        };
        if ok {
            applied = states.len() - 1;
        } else {
            break;
        }
    }
    if log.sync().is_ok() {
        acked.raise(applied);
    }
    drop(log);
    let acked = acked.get();
    Run {
        states,
        acked,
        vote_acked,
    }
}

fn observe(log: &RaftLog<RaftTypes>) -> Model {
    let st = log.state();
    let snap = log.reader().view();
    let entries = snap
        .read(..)
        .map(|e| e.map(|(id, p)| (id, p.to_vec())))
        .collect::<crate::Result<Vec<_>>>()
        .unwrap_or_else(|e| panic!("reading the recovered log: {e}"));
    Model {
        vote: st.vote,
        committed: st.committed,
        purged: st.purged,
        entries,
    }
}

/// Cuts each workload after every effect and checks every image; returns what was explored
/// and the recycled segments the dry runs installed.
fn cut_after_every_effect(recycling: bool) -> (Explored, u64) {
    let mut recycled = 0;
    let explored = power_cut_after_every_effect(
        "rml-rsim",
        7_919,
        |seed, dir, fs| run(dir, fs, seed, recycling),
        |_, _, fs, _| recycled += fs.recycled_installs(),
        |seed, k, image, r| {
            let log = RaftLog::<RaftTypes>::open(image, config()).unwrap_or_else(|e| {
                panic!("workload {seed}, cut after effect {k}: recovery failed: {e}")
            });
            let got = observe(&log);
            assert!(
                got.vote >= r.vote_acked,
                "workload {seed}, cut after effect {k}: vote went back from {:?} to {:?}",
                r.vote_acked,
                got.vote
            );
            assert!(
                r.states[r.acked..].contains(&got),
                "workload {seed}, cut after effect {k}: recovered vote {:?} committed {:?} \
                 purged {:?} last {:?}: not a state since the acknowledged one ({:?})",
                got.vote,
                got.committed,
                got.purged,
                got.last(),
                r.states[r.acked].last()
            );
        },
    );
    eprintln!(
        "typed sim crash model (recycling: {recycling}): {explored} over {} workloads, \
         {recycled} recycled segments installed",
        workloads()
    );
    (explored, recycled)
}

#[test]
fn raft_log_survives_a_power_cut_after_every_effect() {
    cut_after_every_effect(false);
}

#[test]
fn raft_log_with_recycled_segments_survives_a_power_cut_after_every_effect() {
    let (explored, recycled) = cut_after_every_effect(true);
    assert!(explored.cuts > 0);
    assert!(
        recycled >= workloads(),
        "only {recycled} recycled segments installed"
    );
}
