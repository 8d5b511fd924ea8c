//! Replication frames on the Raft layer: `RaftView::frames` on a leader, `RaftLog::append_frames`
//! on a follower, and Raft's conflict rule (docs/replication.md).
//!
//! * the conflict cases one by one, each checking that a refused batch writes nothing;
//! * a proptest: leader logs with random appends, truncates (new terms), commits and purges are
//!   shipped in random batches from random (legal) starting points to a follower through
//!   `append_frames`, and to a reference follower through the plain path (`truncate_after` of
//!   the entry before the first conflict, then `append`); after every shipment both followers
//!   hold the same log ids, payloads and state, and after a final catch-up they equal the
//!   leader. Honours `PROPTEST_CASES`.

mod common;

use std::path::Path;

use common::{derive, seg_files, strict_config};
use proptest::prelude::*;
use raft_mmap_log::raft::{Codec, LogId, RaftError, RaftLog, RaftTypes, StateError};
use raft_mmap_log::{frames, Error};

type Log = RaftLog<RaftTypes>;

fn open(dir: &Path, segment_size: u64) -> Log {
    Log::open(dir, strict_config(segment_size, false)).unwrap()
}

fn id(term: u64, index: u64) -> LogId {
    LogId::new(term, 1, index)
}

fn payload(id: &LogId) -> Vec<u8> {
    derive(
        id.index,
        id.term,
        (id.index as usize * 41 + id.term as usize) % 150,
    )
    .to_vec()
}

/// Appends entries `range` of term `term`.
fn fill(log: &mut Log, term: u64, range: std::ops::Range<u64>) {
    let es: Vec<(LogId, Vec<u8>)> = range
        .map(|i| (id(term, i), payload(&id(term, i))))
        .collect();
    log.append(es.iter().map(|(i, p)| (*i, &p[..]))).unwrap();
}

fn entries(log: &Log) -> Vec<(LogId, Vec<u8>)> {
    log.reader()
        .view()
        .read(..)
        .map(|e| e.map(|(i, p)| (i, p.to_vec())).unwrap())
        .collect()
}

fn dir_bytes(dir: &Path) -> Vec<Vec<u8>> {
    seg_files(dir)
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect()
}

/// Frames made by hand: entry bodies are the encoded log id, then the payload.
fn craft(ids: &[LogId]) -> Vec<u8> {
    let bodies: Vec<(u64, Vec<u8>)> = ids
        .iter()
        .map(|i| {
            let mut b = Vec::new();
            i.encode(&mut b);
            b.extend_from_slice(&payload(i));
            (i.index, b)
        })
        .collect();
    frames::encode(bodies.iter().map(|(i, b)| (*i, &b[..])))
}

/// Asserts that `append_frames(wire)` fails as `check` says and leaves files and state alone.
fn refused(log: &mut Log, dir: &Path, wire: &[u8], check: impl Fn(&RaftError<RaftTypes>) -> bool) {
    // Background work of earlier calls (the flush thread syncs and marks segments sealed at
    // rollover, and retires purged ones) finishes first: the files are then only the refused
    // call's to change.
    log.sync().unwrap();
    let (files, state, es) = (dir_bytes(dir), log.state().clone(), entries(log));
    let err = log.append_frames(wire).unwrap_err();
    assert!(check(&err), "unexpected error: {err}");
    assert_eq!(dir_bytes(dir), files, "nothing written");
    assert_eq!(log.state(), &state);
    assert_eq!(entries(log), es);
}

#[test]
fn an_identical_prefix_is_a_no_op_and_new_entries_after_it_are_appended() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut leader = open(a.path(), 4096);
    fill(&mut leader, 1, 1..30);
    let mut follower = open(b.path(), 4096);
    fill(&mut follower, 1, 1..20);
    let view = leader.reader().view();
    let before = dir_bytes(b.path());
    follower
        .append_frames(&view.frames(3..15).unwrap().to_vec())
        .unwrap();
    assert_eq!(
        dir_bytes(b.path()),
        before,
        "an identical prefix writes nothing"
    );
    assert_eq!(follower.state().last, Some(id(1, 19)));
    follower
        .append_frames(&view.frames(10..30).unwrap().to_vec())
        .unwrap();
    assert_eq!(entries(&follower), entries(&leader));
    assert_eq!(follower.state().last, Some(id(1, 29)));
}

/// A leader with entries 1..6 of term 1 and 6..9 of term 2, and a follower with 1..11 of
/// term 1: they agree up to index 5 and differ from 6. Returns both directories too.
fn diverged() -> (tempfile::TempDir, tempfile::TempDir, Log, Log) {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut leader = open(a.path(), 4096);
    fill(&mut leader, 1, 1..6);
    fill(&mut leader, 2, 6..9);
    let mut follower = open(b.path(), 4096);
    fill(&mut follower, 1, 1..11);
    (a, b, leader, follower)
}

#[test]
fn the_first_differing_log_id_truncates_the_rest() {
    let (_a, b, leader, mut follower) = diverged();
    follower.commit(id(1, 4)).unwrap();
    // Entries 4, 5 match; 6 differs: 6.. go, 6..9 of term 2 come in; 9 and 10 are gone
    // although the batch ends before them.
    let wire = leader.reader().view().frames(4..9).unwrap().to_vec();
    follower.append_frames(&wire).unwrap();
    assert_eq!(entries(&follower), entries(&leader));
    assert_eq!(follower.state().last, Some(id(2, 8)));
    assert_eq!(follower.state().committed, Some(id(1, 4)));
    // The same state after a reopen.
    let state = follower.state().clone();
    follower.sync().unwrap();
    drop(follower);
    let follower = open(b.path(), 4096);
    assert_eq!(follower.state(), &state);
    assert_eq!(entries(&follower), entries(&leader));
}

#[test]
fn a_conflict_below_the_committed_log_id_is_refused() {
    let (_a, b, leader, mut follower) = diverged();
    follower.commit(id(1, 7)).unwrap();
    let wire = leader.reader().view().frames(4..9).unwrap().to_vec();
    refused(&mut follower, b.path(), &wire, |e| {
        matches!(
            e,
            RaftError::State(StateError::TruncateBelowCommitted { .. })
        )
    });
}

#[test]
fn purged_frames_are_skipped_and_a_purged_index_must_match() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut leader = open(a.path(), 4096);
    fill(&mut leader, 1, 1..40);
    let mut follower = open(b.path(), 4096);
    fill(&mut follower, 1, 1..20);
    follower.commit(id(1, 15)).unwrap();
    follower.purge_upto(id(1, 15)).unwrap();
    let wire = leader.reader().view().frames(5..40).unwrap().to_vec();
    follower.append_frames(&wire).unwrap();
    assert_eq!(entries(&follower), entries(&leader)[15..]);
    // A frame at the purged index with another log id contradicts the snapshot.
    let wire = craft(&[id(3, 15), id(3, 16)]);
    refused(&mut follower, b.path(), &wire, |e| {
        matches!(
            e,
            RaftError::State(StateError::LogIdMismatch { index: 15, .. })
        )
    });
}

#[test]
fn gaps_reversals_and_bad_log_ids_are_refused_with_nothing_written() {
    let b = tempfile::tempdir().unwrap();
    let mut follower = open(b.path(), 4096);
    fill(&mut follower, 2, 1..10);
    // A gap after the last entry.
    refused(
        &mut follower,
        b.path(),
        &craft(&[id(2, 11), id(2, 12)]),
        |e| {
            matches!(
                e,
                RaftError::Engine(Error::NonConsecutive {
                    expected: 10,
                    got: 11
                })
            )
        },
    );
    // A lower term after the last entry.
    refused(&mut follower, b.path(), &craft(&[id(1, 10)]), |e| {
        matches!(e, RaftError::State(StateError::LogIdReversal { .. }))
    });
    // Log ids that go down inside the batch (a conflict at 10 would otherwise truncate).
    refused(
        &mut follower,
        b.path(),
        &craft(&[id(3, 10), id(2, 11)]),
        |e| matches!(e, RaftError::State(StateError::LogIdReversal { .. })),
    );
    // A log id that names another index than its frame.
    let mut body = Vec::new();
    id(2, 77).encode(&mut body);
    let wire = frames::encode([(10, &body[..])]);
    refused(&mut follower, b.path(), &wire, |e| {
        matches!(
            e,
            RaftError::Engine(Error::BadFrame {
                index: 10,
                offset: 0,
                ..
            })
        )
    });
    // A damaged second frame: nothing of the first one is written either.
    let mut wire = craft(&[id(2, 10), id(2, 11)]);
    let second = craft(&[id(2, 10)]).len() as u64;
    let last = wire.len() - 1;
    wire[last - 8] ^= 1;
    refused(
        &mut follower,
        b.path(),
        &wire,
        |e| matches!(e, RaftError::Engine(Error::BadFrame { index: 11, offset, .. }) if *offset == second),
    );
}

// ---------------------------------------------------------------------------------------------
// The proptest: frames against the plain path, and against the leader.

#[derive(Debug, Clone)]
enum Op {
    /// Leader appends this many entries in its term.
    Append(u64),
    /// Leader moves to a new term: truncates after a point chosen by the fraction (above its
    /// committed log id) and appends one entry of the new term.
    NewTerm(u8),
    /// Ship from a legal start chosen by the fraction, in batches of this many entries.
    Ship(u8, u64),
    /// Leader commits what the follower holds, then purges up to a fraction of it.
    CommitAndPurge(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u64..40).prop_map(Op::Append),
        1 => any::<u8>().prop_map(Op::NewTerm),
        3 => (any::<u8>(), 1u64..30).prop_map(|(f, b)| Op::Ship(f, b)),
        1 => any::<u8>().prop_map(Op::CommitAndPurge),
    ]
}

fn pick(lo: u64, hi: u64, frac: u8) -> u64 {
    lo + (hi - lo) * u64::from(frac) / 255
}

/// The plain path: skip what matches, `truncate_after` the entry before the first conflict,
/// `append` the rest.
fn plain_apply(f: &mut Log, batch: &[(LogId, Vec<u8>)]) {
    let view = f.reader().view();
    let purged = f.state().purged;
    let mut skip = 0;
    let mut conflict = None;
    for (i, _) in batch {
        if purged.is_some_and(|p| i.index <= p.index) {
            skip += 1;
            continue;
        }
        match view.log_id(i.index).unwrap() {
            Some(s) if s == *i => skip += 1,
            Some(_) => {
                conflict = Some(i.index);
                break;
            }
            None => break,
        }
    }
    let before = conflict.map(|c| match view.log_id(c - 1).unwrap() {
        Some(s) => Some(s),
        None => purged,
    });
    drop(view);
    if let Some(before) = before {
        f.truncate_after(before).unwrap();
    }
    f.append(batch[skip..].iter().map(|(i, p)| (*i, &p[..])))
        .unwrap();
}

/// First index where `f`'s log id differs from the leader's (or where one of them ends).
fn divergence(leader: &Log, f: &Log) -> u64 {
    let (lv, fv) = (leader.reader().view(), f.reader().view());
    let mut i = lv.first_index().max(fv.first_index());
    while i < lv.next_index() && i < fv.next_index() {
        if lv.log_id(i).unwrap() != fv.log_id(i).unwrap() {
            break;
        }
        i += 1;
    }
    i
}

struct Cluster {
    leader: Log,
    follower: Log,
    reference: Log,
    term: u64,
}

impl Cluster {
    fn ship(&mut self, frac: u8, batch: u64) {
        let lv = self.leader.reader().view();
        let hi = divergence(&self.leader, &self.follower).min(lv.next_index());
        let lo = lv
            .first_index()
            .max(self.follower.reader().view().first_index())
            .min(hi);
        let mut at = pick(lo, hi, frac);
        while at < lv.next_index() {
            let frames = lv.frames(at..at + batch).unwrap();
            let wire = frames.to_vec();
            self.follower.append_frames(&wire).unwrap();
            let plain: Vec<(LogId, Vec<u8>)> = lv
                .read(frames.indexes())
                .map(|e| e.map(|(i, p)| (i, p.to_vec())).unwrap())
                .collect();
            plain_apply(&mut self.reference, &plain);
            assert_eq!(entries(&self.follower), entries(&self.reference));
            assert_eq!(self.follower.state(), self.reference.state());
            at = frames.indexes().end;
        }
    }

    fn apply(&mut self, op: &Op) {
        let last = self.leader.state().last.map_or(0, |l| l.index);
        match *op {
            Op::Append(n) => fill(&mut self.leader, self.term, last + 1..last + 1 + n),
            Op::NewTerm(frac) => {
                self.term += 1;
                let floor = self.leader.state().committed.map_or(0, |c| c.index);
                let keep = pick(floor, last, frac);
                let keep_id = self
                    .leader
                    .log_id(keep)
                    .unwrap()
                    .or(self.leader.state().purged);
                self.leader.truncate_after(keep_id).unwrap();
                let next = self.leader.state().next_index().max(1);
                fill(&mut self.leader, self.term, next..next + 1);
            }
            Op::Ship(frac, batch) => self.ship(frac, batch),
            Op::CommitAndPurge(frac) => {
                // Commit what both hold with the leader's log ids.
                let matched = divergence(&self.leader, &self.follower);
                let Some(c) = matched.checked_sub(1) else {
                    return;
                };
                let Some(cid) = self.leader.log_id(c).unwrap() else {
                    return;
                };
                if Some(cid) <= self.leader.state().committed {
                    return;
                }
                self.leader.commit(cid).unwrap();
                for f in [&mut self.follower, &mut self.reference] {
                    f.commit(cid).unwrap();
                }
                let floor = self.leader.state().purged.map_or(0, |p| p.index);
                let upto = pick(floor, c, frac);
                if let Some(pid) = self.leader.log_id(upto).unwrap() {
                    self.leader.purge_upto(pid).unwrap();
                    self.follower.purge_upto(pid).unwrap();
                    self.reference.purge_upto(pid).unwrap();
                }
            }
        }
    }
}

proptest! {
    // PROPTEST_CASES is honoured by the default config; no regression files in the tree.
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn leader_logs_replicate_to_an_equal_follower(
        ops in proptest::collection::vec(op(), 1..40),
        follower_segment in prop_oneof![Just(4096u64), Just(8192), Just(65536)],
    ) {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut c = Cluster {
            leader: open(dirs[0].path(), 4096),
            follower: open(dirs[1].path(), follower_segment),
            reference: open(dirs[2].path(), 4096),
            term: 1,
        };
        for op in &ops {
            c.apply(op);
        }
        c.ship(0, 25);
        prop_assert_eq!(entries(&c.follower), entries(&c.leader));
        prop_assert_eq!(c.follower.state().last, c.leader.state().last);
        prop_assert_eq!(entries(&c.reference), entries(&c.leader));
        // And after a reopen.
        c.follower.sync().unwrap();
        let state = c.follower.state().clone();
        drop(c.follower);
        let follower = open(dirs[1].path(), follower_segment);
        prop_assert_eq!(follower.state(), &state);
        prop_assert_eq!(entries(&follower), entries(&c.leader));
    }
}
