//! The typed Raft layer: [`RaftLog`] (writer) and [`RaftReader`] (readers).
//!
//! The application fixes its log id, vote and user data types with [`Types`] (or uses the
//! ready [`RaftTypes`]). Payloads stay bytes: reads hand back `&[u8]` borrowed from the map
//! together with the decoded log id. The Raft state (vote, committed, purged, user data,
//! snapshot meta) is stored as engine meta values, which every segment's checkpoint carries.

pub mod codec;
mod engine;
mod errors;
pub mod inspect;
mod log;
mod reader;
mod room;
#[cfg(test)]
mod sim_tests;
pub(crate) mod state;
mod types;

pub use codec::{Codec, CodecError};
pub use engine::LogEngine;
pub use errors::{RaftError, RaftResult, StateError};
#[cfg_attr(not(feature = "raft-rs"), allow(unused_imports))]
pub(crate) use log::Reset;
pub use log::{RaftLog, Rules};
pub use reader::{RaftEntries, RaftReader, RaftView};
pub use state::{
    RaftState, SnapshotMeta, META_COMMITTED, META_PURGED, META_SNAPSHOT, META_USER_DATA, META_VOTE,
};
pub use types::{LogId, RaftTypes, Types, Vote};
