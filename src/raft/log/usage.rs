//! The Raft log's durability future and its usage hints: what the engine under it says, with
//! the Raft state added where it holds memory.

use super::RaftLog;
use crate::raft::engine::LogEngine;
use crate::raft::state::RaftState;
use crate::raft::types::Types;

impl<T: Types, S: LogEngine> RaftLog<T, S> {
    /// A future that resolves once everything written before this call is durable, when a
    /// [`RaftLog::flush`] callback would run and with its result (feature `tokio`; see
    /// [`Durable`](crate::Durable)).
    #[cfg(feature = "tokio")]
    pub fn flushed(&mut self) -> crate::Durable {
        let (future, complete) = crate::Durable::new();
        // On an error `complete` has been called with it: the future carries it.
        let _ = self.store.flush(complete);
        future
    }

    /// An estimate of the heap bytes the log holds: the engine's (see
    /// [`Store::estimated_memory`](crate::Store::estimated_memory); for a group, the whole shared log's) and the Raft state.
    pub fn estimated_memory(&self) -> usize {
        self.store.estimated_memory() + std::mem::size_of::<RaftState<T>>()
    }

    /// The compaction hint: whether the log (for a group, the whole shared log) has grown
    /// past [`Config::compaction_threshold`](crate::Config::compaction_threshold) bytes, so that it is time for a snapshot and
    /// [`RaftLog::purge_upto`].
    pub fn needs_compaction(&self) -> bool {
        self.store.needs_compaction()
    }
}
