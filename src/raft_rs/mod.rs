//! raft-rs (TiKV's `raft` 0.7) storage (feature `raft-rs`): [`MmapRaftStorage`] implements
//! `raft::Storage` on [`crate::raft::RaftLog`], and has the write calls a Ready loop needs.
//!
//! ```
//! use raft::{prelude::*, RawNode, Storage};
//! use raft_mmap_log::raft_rs::{discard_logger, MmapRaftStorage};
//! use raft_mmap_log::Config;
//!
//! let dir = tempfile::tempdir()?;
//! let mut storage = MmapRaftStorage::open(dir.path(), Config::default())?;
//! let mut cs = ConfState::default();
//! cs.voters = vec![1];
//! storage.set_conf_state(cs)?;
//! let config = raft::Config { id: 1, ..Default::default() };
//! let mut node = RawNode::new(&config, storage, &discard_logger())?;
//! node.campaign()?;
//! while node.has_ready() {
//!     let mut rd = node.ready();
//!     node.mut_store().persist_ready(&rd)?;  // snapshot, entries, hard state; then sync
//!     let mut light = node.advance(rd);
//!     if let Some(commit) = light.commit_index() {
//!         node.mut_store().set_commit(commit)?;
//!     }
//!     node.advance_apply();
//! }
//! assert_eq!(node.raft.state, raft::StateRole::Leader);
//! assert_eq!(node.store().initial_state()?.hard_state.term, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! * [`RaftRsTypes`] fixes how raft-rs's values are stored: log ids [`EntryId`]
//!   `(term, index)`, votes [`HardVote`] `(term, voted for)`, the `ConfState` as user data
//!   ([`StoredConf`]).
//! * An entry's body is its type, flags, context and data; term and index are its log id
//!   (`docs/raft-rs.md` has the layout and what a read copies).
//! * [`discard_logger`] is the `slog::Logger` to give raft-rs when the application has none.

mod codec;
mod error;
#[cfg(test)]
mod history;
pub mod inspect;
#[cfg(test)]
mod jepsen;
mod shared;
#[cfg(test)]
mod sim_tests;
mod storage;
mod types;
mod writer;

pub use error::{RaftRsError, RaftRsResult};
pub use storage::{MmapRaftStorage, SnapshotData, DEFAULT_SHARE_MIN};
pub use types::{EntryId, HardVote, RaftRsTypes, StoredConf};

/// A logger that drops every record, for `RawNode::new` (raft's `default-logger` feature,
/// which prints to the terminal, is not enabled by this crate).
pub fn discard_logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}
