//! raft-rs 0.7's own `MemStorage` tests (`support/raft_rs_storage_cases.rs`) and the
//! all-or-nothing checks of the writer calls (`support/raft_rs_all_or_nothing_cases.rs`) on
//! `MmapRaftStorage` over one group of a shared log: the tested group shares its segment
//! stream with two other groups, which are written at every open (before and after the tested
//! group's records), so every read and every reopen must pick the tested group's records out
//! of an interleaved stream, and must leave the other groups as they were.
#![cfg(feature = "raft-rs")]

/// The engine under test: group [`TESTED`] of a shared log.
mod engine {
    use std::path::Path;

    use raft_mmap_log::groups::{Group, Groups};
    use raft_mmap_log::raft::RaftLog;
    use raft_mmap_log::raft_rs::{MmapRaftStorage, RaftRsTypes};

    use crate::helpers::config;

    /// The group the cases run on; groups `TESTED - 1` and `TESTED + 1` are the others.
    pub(crate) const TESTED: u64 = 7;

    pub(crate) type Tested = MmapRaftStorage<Group>;

    /// Opens the shared log, checks that the other groups hold what earlier opens wrote,
    /// appends one more entry to each of them, and hands out the tested group.
    pub(crate) fn open_log(dir: &Path) -> RaftLog<RaftRsTypes, Group> {
        let log = Groups::open(dir, config()).expect("open the shared log");
        for other in [TESTED - 1, TESTED + 1] {
            let g = log.group(other);
            let next = g.next_index();
            let view = g.reader().view();
            for i in 0..next {
                assert_eq!(
                    view.get(i),
                    Some(noise(other, i).as_slice()),
                    "group {other}, entry {i}"
                );
            }
            drop(view);
            g.append(next, &noise(other, next))
                .expect("append to another group");
        }
        RaftLog::for_group(log.group(TESTED)).expect("open the tested group")
    }

    /// Entry `i` of another group.
    fn noise(group: u64, i: u64) -> Vec<u8> {
        format!("group {group} entry {i}").into_bytes()
    }
}

#[path = "support/raft_rs_storage.rs"]
mod helpers;

#[path = "support/raft_rs_storage_cases.rs"]
mod cases;

#[path = "support/raft_rs_all_or_nothing_cases.rs"]
mod all_or_nothing;
