//! Raft state-rule violations.
//!
//! Every variant names both values involved (formatted with `Debug`) and means that nothing
//! was written.

/// A Raft state rule that an operation broke. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// A vote lower than the saved one.
    #[error("vote reversal: saved vote is {saved}, refused lower vote {given}")]
    VoteReversal {
        /// The saved vote.
        saved: String,
        /// The vote refused.
        given: String,
    },
    /// An appended log id not greater than the last one.
    #[error("log id reversal: last log id is {last}, refused {given}")]
    LogIdReversal {
        /// The last log id.
        last: String,
        /// The log id refused.
        given: String,
    },
    /// An appended index that does not directly follow the last one.
    #[error("non-consecutive append: expected index {expected}, got {got}")]
    NonConsecutive {
        /// The index that would have been accepted.
        expected: u64,
        /// The index given.
        got: u64,
    },
    /// A commit beyond the last log id.
    #[error("commit beyond last: last log id is {last}, refused commit of {given}")]
    CommitBeyondLast {
        /// The last log id.
        last: String,
        /// The commit refused.
        given: String,
    },
    /// A commit behind the current one.
    #[error("commit reversal: committed is {committed}, refused {given}")]
    CommitReversal {
        /// The current committed log id.
        committed: String,
        /// The commit refused.
        given: String,
    },
    /// A truncate that would remove purged entries.
    #[error("truncate below purged: purged up to {purged}, refused truncate after {given}")]
    TruncateBelowPurged {
        /// The purged log id.
        purged: String,
        /// The truncate point refused.
        given: String,
    },
    /// A truncate that would remove committed entries.
    #[error("truncate below committed: committed is {committed}, refused truncate after {given}")]
    TruncateBelowCommitted {
        /// The committed log id.
        committed: String,
        /// The truncate point refused.
        given: String,
    },
    /// A purge of entries that are not committed.
    #[error("purge beyond committed: committed is {committed}, refused purge up to {given}")]
    PurgeBeyondCommitted {
        /// The committed log id.
        committed: String,
        /// The purge point refused.
        given: String,
    },
    /// A purge beyond the last entry.
    #[error("purge beyond last: last log id is {last}, refused purge up to {given}")]
    PurgeBeyondLast {
        /// The last log id.
        last: String,
        /// The purge point refused.
        given: String,
    },
    /// A log id that names an index whose stored entry has another log id.
    #[error("log id mismatch at index {index}: stored {stored}, given {given}")]
    LogIdMismatch {
        /// The index.
        index: u64,
        /// The log id stored there.
        stored: String,
        /// The log id given.
        given: String,
    },
    /// A snapshot not after the purged log id.
    #[error("snapshot reversal: purged up to {purged}, refused snapshot up to {given}")]
    SnapshotReversal {
        /// The purged log id.
        purged: String,
        /// The snapshot's last log id.
        given: String,
    },
}

/// `Debug` text of a value, for error messages.
pub(crate) fn show<T: std::fmt::Debug>(v: &T) -> String {
    format!("{v:?}")
}
