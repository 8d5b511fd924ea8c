//! One [`crate::harness::Engine`] implementation per crate.

pub mod hiqlite;
pub mod okaywal;
#[cfg(feature = "ours")]
pub mod ours;
#[cfg(feature = "ours")]
pub mod ours_raft;
pub mod raftengine;
pub mod raftlog;

/// Segment / chunk / WAL-file size given to every engine that has such a setting
/// (raft-mmap-log's default).
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// Engine names, in table order; ours first: the engine (`Store`) and its Raft layer
/// (`RaftLog`).
pub const ENGINES: [&str; 6] = [
    "ours",
    "ours-raft",
    "raft-log",
    "raft-engine",
    "hiqlite-wal",
    "okaywal",
];
