//! [`RaftRsError`]: what the raft-rs storage's writer calls fail with, and how every error
//! reaches raft-rs as a `raft::Error`.

use raft::StorageError;

use super::types::RaftRsTypes;
use crate::raft::RaftError;

/// Why a write through [`super::MmapRaftStorage`] was refused or failed.
///
/// Refusals (every variant but `Log(RaftError::Engine(..))`) write nothing. As a
/// `raft::Error` (`From`), [`RaftRsError::Compacted`] is `StorageError::Compacted`,
/// [`RaftRsError::SnapshotOutOfDate`] is `StorageError::SnapshotOutOfDate`, and everything
/// else is `StorageError::Other` carrying this error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RaftRsError {
    /// The Raft layer refused the change (a state rule: vote, commit, truncate, purge,
    /// snapshot) or the engine failed underneath (I/O, a poisoned log, a value that does not
    /// decode).
    #[error(transparent)]
    Log(#[from] RaftError<RaftRsTypes>),
    /// Entries to append start below the first index: they would overwrite compacted entries.
    #[error(
        "append from index {index} would overwrite compacted entries: the first index is {first}"
    )]
    Compacted {
        /// Index of the first entry given.
        index: u64,
        /// The log's first index.
        first: u64,
    },
    /// Entries to append start after the next index.
    #[error("append from index {index} leaves a gap: the last index is {last}")]
    Gap {
        /// Index of the first entry given.
        index: u64,
        /// The log's last index.
        last: u64,
    },
    /// Entries to append are not one run: an index that does not follow, or a term that goes
    /// down (also against the entry they follow in the log).
    #[error("entries to append are out of order: {given} cannot follow {after}")]
    OutOfOrder {
        /// The entry before, as `term/index`.
        after: String,
        /// The entry refused, as `term/index`.
        given: String,
    },
    /// A compaction past the last index + 1.
    #[error("compact to index {index} is past the last index {last} + 1")]
    CompactBeyondLast {
        /// The compact index given (first index to keep).
        index: u64,
        /// The log's last index.
        last: u64,
    },
    /// A committed index that names no entry the log holds (nor its snapshot).
    #[error(
        "commit index {index} is not in the log (snapshot index {snapshot}, last index {last})"
    )]
    CommitNotInLog {
        /// The commit index given.
        index: u64,
        /// Index of the entry before the first one (the snapshot's, or 0).
        snapshot: u64,
        /// The log's last index.
        last: u64,
    },
    /// A snapshot older than the first index (raft-rs's `SnapshotOutOfDate`).
    #[error("snapshot at index {index} is out of date: the first index is {first}")]
    SnapshotOutOfDate {
        /// The snapshot's index.
        index: u64,
        /// The log's first index.
        first: u64,
    },
}

/// Result of the raft-rs storage's writer calls.
pub type RaftRsResult<V> = Result<V, RaftRsError>;

impl From<crate::Error> for RaftRsError {
    fn from(e: crate::Error) -> Self {
        RaftRsError::Log(RaftError::Engine(e))
    }
}

impl From<RaftRsError> for raft::Error {
    fn from(e: RaftRsError) -> Self {
        match e {
            RaftRsError::Compacted { .. } => raft::Error::Store(StorageError::Compacted),
            RaftRsError::SnapshotOutOfDate { .. } => {
                raft::Error::Store(StorageError::SnapshotOutOfDate)
            }
            e => raft::Error::Store(StorageError::Other(Box::new(e))),
        }
    }
}

/// An engine error as raft-rs sees it: `StorageError::Other`.
pub(crate) fn engine_err(e: crate::Error) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(e)))
}
