//! `MmapRaftStorage`'s writer calls are all or nothing: a call that fails leaves the entries,
//! the hard state, the configuration and the snapshot as they were, also after a reopen. For
//! every engine: the including test file names it in its `engine` module.
#![allow(clippy::field_reassign_with_default)]

use raft::eraftpb::{ConfState, Entry, HardState};
use raft::{GetEntriesContext, Storage};
use raft_mmap_log::format::MAX_INDEX;

use crate::engine::Tested;
use crate::helpers::{new_entry, new_snapshot, open, reopen};

/// Everything a restarted node reads back.
#[derive(Debug, PartialEq)]
struct Seen {
    hard_state: HardState,
    conf_state: ConfState,
    first: u64,
    last: u64,
    entries: Vec<Entry>,
    snapshot_index: u64,
}

fn seen(s: &Tested) -> Seen {
    let (first, last) = (s.first_index().unwrap(), s.last_index().unwrap());
    let entries = if last >= first {
        s.entries(first, last + 1, None, GetEntriesContext::empty(false))
            .unwrap()
    } else {
        Vec::new()
    };
    Seen {
        hard_state: s.hard_state(),
        conf_state: s.conf_state().clone(),
        first,
        last,
        entries,
        snapshot_index: s
            .log()
            .state()
            .snapshot
            .as_ref()
            .map_or(0, |m| m.last_log_id.index),
    }
}

/// Checks `s` against `before` now and after a reopen; returns the reopened storage.
fn unchanged(s: Tested, dir: &std::path::Path, before: &Seen) -> Tested {
    assert_eq!(&seen(&s), before);
    let s = reopen(s, dir);
    assert_eq!(&seen(&s), before, "after a reopen");
    s
}

/// A conflicting append whose new entries the engine refuses (an index past `MAX_INDEX`)
/// does not remove the entries it conflicts with.
#[test]
fn a_refused_conflicting_append_keeps_the_conflicting_entries() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    s.append(&[new_entry(MAX_INDEX - 1, 1), new_entry(MAX_INDEX, 1)])
        .unwrap();
    let before = seen(&s);
    let err = s
        .append(&[new_entry(MAX_INDEX, 2), new_entry(MAX_INDEX + 1, 2)])
        .unwrap_err();
    assert!(err.to_string().contains("too large"), "{err}");
    unchanged(s, dir.path(), &before);
}

/// A hard state whose commit the log cannot hold saves neither its term and vote nor its
/// commit.
#[test]
fn a_refused_hard_state_saves_no_vote() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    s.append(&[new_entry(1, 1), new_entry(2, 1), new_entry(3, 1)])
        .unwrap();
    let mut hs = HardState::default();
    hs.term = 1;
    hs.vote = 1;
    hs.commit = 2;
    s.set_hard_state(&hs).unwrap();
    let before = seen(&s);
    let mut hs = HardState::default();
    hs.term = 5;
    hs.vote = 2;
    hs.commit = 100;
    assert!(s.set_hard_state(&hs).is_err());
    unchanged(s, dir.path(), &before);
}

/// A snapshot whose configuration does not fit the meta room next to its own meta is refused
/// before the entries after it are dropped and before it is installed.
#[test]
fn a_refused_snapshot_drops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    s.append(&(1..=5).map(|i| new_entry(i, 1)).collect::<Vec<_>>())
        .unwrap();
    let mut hs = HardState::default();
    hs.term = 1;
    hs.commit = 2;
    s.set_hard_state(&hs).unwrap();
    let before = seen(&s);
    // About 10 KB of configuration: it fits the 16 KiB meta room once, not twice (the
    // snapshot meta and the stored configuration both hold it).
    let voters: Vec<u64> = (1000..6000).collect();
    let snap = new_snapshot(3, 1, voters);
    assert!(s.apply_snapshot(&snap).is_err());
    let s = unchanged(s, dir.path(), &before);
    // A small snapshot at the same point is installed.
    let mut s = s;
    s.apply_snapshot(&new_snapshot(3, 1, vec![1, 2, 3]))
        .unwrap();
    assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (4, 3));
}
