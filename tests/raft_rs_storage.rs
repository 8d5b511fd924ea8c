//! raft-rs 0.7's own `MemStorage` tests (`support/raft_rs_storage_cases.rs`) on
//! `MmapRaftStorage` over a log with a directory of its own.
#![cfg(feature = "raft-rs")]

#[path = "support/raft_rs_store_engine.rs"]
mod engine;

#[path = "support/raft_rs_storage.rs"]
mod helpers;

#[path = "support/raft_rs_storage_cases.rs"]
mod cases;
