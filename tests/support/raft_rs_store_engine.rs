//! The engine of the raft-rs storage tests that run on a `Store`: one directory per log (the
//! `engine` module of `support/raft_rs_storage.rs`'s users).

use std::path::Path;

use raft_mmap_log::raft::RaftLog;
use raft_mmap_log::raft_rs::{MmapRaftStorage, RaftRsTypes};

use crate::helpers::config;

pub(crate) type Tested = MmapRaftStorage;

pub(crate) fn open_log(dir: &Path) -> RaftLog<RaftRsTypes> {
    RaftLog::open(dir, config()).expect("open")
}
