//! Helpers of `tests/raft_rs_storage.rs`: opening, reopening and `MemStorage`-style
//! constructors of entries and snapshots.
// The helpers keep raft-rs's style (`let mut e = Entry::default(); e.term = ..`).
#![allow(clippy::field_reassign_with_default)]

use std::path::Path;

use protobuf::Message as PbMessage;
use raft::eraftpb::{Entry, Snapshot};
use raft::{GetEntriesContext, Storage};
use raft_mmap_log::raft_rs::MmapRaftStorage;
use raft_mmap_log::Config;

use crate::engine::{open_log, Tested};

pub(crate) fn config() -> Config {
    Config {
        segment_size: 64 << 10,
        ..Config::default()
    }
}

pub(crate) fn open(dir: &Path) -> Tested {
    MmapRaftStorage::from_log(open_log(dir)).expect("open")
}

/// Syncs, drops and reopens.
pub(crate) fn reopen(mut s: Tested, dir: &Path) -> Tested {
    s.sync().expect("sync");
    drop(s);
    open(dir)
}

/// Runs `check` on `s`, then on the reopened directory; returns the reopened storage.
pub(crate) fn twice(s: Tested, dir: &Path, check: impl Fn(&Tested)) -> Tested {
    check(&s);
    let s = reopen(s, dir);
    check(&s);
    s
}

pub(crate) fn new_entry(index: u64, term: u64) -> Entry {
    let mut e = Entry::default();
    e.term = term;
    e.index = index;
    e
}

pub(crate) fn size_of<T: PbMessage>(m: &T) -> u32 {
    m.compute_size()
}

pub(crate) fn new_snapshot(index: u64, term: u64, voters: Vec<u64>) -> Snapshot {
    let mut s = Snapshot::default();
    s.mut_metadata().index = index;
    s.mut_metadata().term = term;
    s.mut_metadata().mut_conf_state().voters = voters;
    s
}

/// `MemStorage`'s `storage.wl().entries = ents`: a new log takes its first entry at any index.
pub(crate) fn with_entries(dir: &Path, ents: &[Entry]) -> Tested {
    let mut s = open(dir);
    s.append(ents).expect("append");
    s
}

pub(crate) fn all_entries(s: &Tested) -> Vec<Entry> {
    let (first, last) = (s.first_index().unwrap(), s.last_index().unwrap());
    s.entries(first, last + 1, None, GetEntriesContext::empty(false))
        .unwrap()
}
