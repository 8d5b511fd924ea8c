//! One [`crate::harness::Engine`] implementation per crate.

pub mod hiqlite;
pub mod okaywal;
#[cfg(feature = "ours")]
pub mod ours;
pub mod raftengine;
pub mod raftlog;

/// Segment / chunk / WAL-file size given to every engine that has such a setting
/// (raft-mmap-log's default).
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// Engine names, in table order; "ours" first.
pub const ENGINES: [&str; 5] = ["ours", "raft-log", "raft-engine", "hiqlite-wal", "okaywal"];
