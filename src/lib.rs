//! # raft-mmap-log
//!
//! A durable write-ahead log for Raft, built as a memory-mapped, zero-copy segment store.
//!
//! * [`Store`] is the engine: `u64` indexes, byte payloads, small meta values; one writer.
//! * [`Reader`] / [`View`] read from any thread without blocking the writer and return
//!   payloads as `&[u8]` borrowed straight from the mapped segment files.
//! * [`groups::Groups`] keeps many logs (groups, one per Raft group) in one directory and one
//!   segment stream, written by many threads, made durable by one shared flush.
//! * [`raft::RaftLog`] is the typed Raft layer on top (vote, append, commit, truncate, purge,
//!   snapshot meta) with Raft's state rules checked before anything reaches disk.
//!
//! The on-disk format and the invariants that make the zero-copy reads sound are described in
//! `docs/format.md`.
//!
//! # What is not public
//!
//! No safe function reads bytes the writer may be writing, or changes a log directory
//! without holding its lock. The recovery scan, the segment files and the live segments of a
//! view are therefore crate-private; tools read a closed log through [`inspect`], which takes
//! the directory's lock. These do not compile:
//!
//! ```compile_fail
//! let _ = raft_mmap_log::recovery::plan;
//! ```
//! ```compile_fail
//! let _ = raft_mmap_log::recovery::scan_segment;
//! ```
//! ```compile_fail
//! let _ = raft_mmap_log::segment::Segment::open;
//! ```
//! ```compile_fail
//! fn live(s: &raft_mmap_log::View) { let _ = s.segments(); }
//! ```
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(feature = "tokio")]
mod durable;
mod error;
mod flusher;
pub mod format;
pub mod frames;
mod frontier;
/// The synchronization types of `frontier` (`tests/loom_frontier.rs` gives it loom's).
mod frontier_sync {
    pub use std::sync::{Condvar, Mutex, MutexGuard};
}
pub mod groups;
mod index;
mod notify;
/// The synchronization types of `notify` (`tests/loom_notify.rs` gives it loom's).
mod notify_sync {
    pub(crate) use crate::io::{membarrier, membarrier_available};
    pub use std::sync::atomic::{compiler_fence, fence, AtomicUsize, Ordering};
    pub use std::sync::{Condvar, Mutex, MutexGuard};
}
pub mod inspect;
mod io;
mod lock;
#[cfg(feature = "openraft")]
pub mod openraft;
mod preparer;
pub mod raft;
#[cfg(feature = "raft-rs")]
pub mod raft_rs;
mod reader;
pub mod record;
mod recovery;
mod segment;
mod state;
mod store;
mod version;

#[cfg(feature = "tokio")]
pub use durable::Durable;
pub use error::{Error, Result};
pub use flusher::Callback;
pub use reader::{Entries, Entry, Reader, View};
pub use recovery::{RecoveryMode, RecoveryReport};
pub use state::{LogState, Metas};
pub use store::{Allocation, Config, FlushIo, Store, WriteMode};
