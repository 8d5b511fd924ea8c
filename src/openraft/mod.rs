//! openraft 0.9 log storage (feature `openraft`): [`MmapLogStore`] implements openraft's
//! storage-v2 `RaftLogStorage` and [`MmapLogReader`] its `RaftLogReader`, on
//! [`crate::raft::RaftLog`].
//!
//! ```no_run
//! use raft_mmap_log::openraft::{KvConfig, KvStateMachine, MmapLogStore};
//! use raft_mmap_log::Config;
//!
//! # async fn start(network: impl openraft::RaftNetworkFactory<KvConfig>) -> Result<(), Box<dyn std::error::Error>> {
//! let log = MmapLogStore::<KvConfig>::open("/var/lib/node-1/raft-log", Config::default())?;
//! let config = std::sync::Arc::new(openraft::Config::default().validate()?);
//! let raft = openraft::Raft::new(1, config, network, log, KvStateMachine::new()).await?;
//! # let _ = raft; Ok(()) }
//! ```
//!
//! * [`MmapLogStore`] works for any `C: RaftTypeConfig` whose entries are openraft's own
//!   `Entry<C>` and whose node id converts to and from `u64`, in openraft's default leader-id
//!   mode. Application data and membership are stored in postcard (see [`EntryCodecError`]
//!   and `docs/openraft.md` for what that asks of their serde impls).
//! * [`OpenraftTypes`] fixes how log ids and votes are stored (see there).
//! * [`KvConfig`] / [`KvStateMachine`] are a small in-memory key-value state machine used by
//!   the tests and the `cluster` example; useful as a template, not durable by itself.
//!
//! See `docs/openraft.md` for the guarantees and trade-offs.

mod entry_codec;
pub mod inspect;
mod kv;
mod store;
mod types;

pub use entry_codec::{CodecStep, EntryCodecError, ENTRY_CODEC_POSTCARD};
pub use kv::{KvConfig, KvData, KvRequest, KvResponse, KvSnapshotBuilder, KvStateMachine};
pub use store::{MmapLogReader, MmapLogStore, OPENRAFT_RULES};
pub use types::{
    log_id_from_stored, log_id_to_stored, vote_from_stored, vote_to_stored, OpenraftTypes,
    OpenraftVote,
};
