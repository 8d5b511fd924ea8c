//! `MmapRaftStorage`'s writer calls are all or nothing
//! (`support/raft_rs_all_or_nothing_cases.rs`), on a log with a directory of its own.
#![cfg(feature = "raft-rs")]

#[path = "support/raft_rs_store_engine.rs"]
mod engine;

#[path = "support/raft_rs_storage.rs"]
#[allow(dead_code)]
mod helpers;

#[path = "support/raft_rs_all_or_nothing_cases.rs"]
mod cases;
