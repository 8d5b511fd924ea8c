//! Raft state-rule violations.
//!
//! Every variant names the values involved (through their `Display`; an absent value prints
//! as `none`) and means that nothing was written.

/// What a [`RaftLog`](super::RaftLog) call can fail with: the engine's error underneath, or a
/// Raft state rule the call broke (then nothing was written).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RaftError {
    /// The engine failed (I/O, corruption, a poisoned log, a value that does not decode...).
    #[error(transparent)]
    Engine(#[from] crate::Error),
    /// A Raft state rule was broken. Nothing was written.
    #[error(transparent)]
    State(#[from] StateError),
}

/// Result of the Raft layer.
pub type RaftResult<T> = std::result::Result<T, RaftError>;

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
    /// A vote neither greater than nor equal to the saved one, nor lower: in the same term, a
    /// vote for another node.
    #[error("vote conflict: saved vote is {saved}, refused incomparable vote {given}")]
    VoteConflict {
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
    /// A log id the log does not hold: the entry at its index has another log id, or there is
    /// none (`stored` is `nothing`, or says which log id the index was purged under).
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
    /// A log id whose index is the largest `u64`: no entry could follow it.
    #[error("no successor: log id {given} leaves no index after it")]
    NoSuccessor {
        /// The log id refused.
        given: String,
    },
    /// A user data value or snapshot meta blob that would not leave room in the meta values
    /// for the vote, the committed and purged log ids and the snapshot meta.
    #[error(
        "{what} too large: it encodes to {size} bytes, only {room} bytes of meta room are left \
         (the rest is kept for the vote, committed, purged and snapshot meta)"
    )]
    MetaNoRoom {
        /// `user data` or `snapshot meta`.
        what: &'static str,
        /// Its encoded size.
        size: usize,
        /// The largest encoded size that fits.
        room: usize,
    },
}

/// `Display` text of a value, for error messages.
pub(crate) fn show<T: std::fmt::Display>(v: &T) -> String {
    v.to_string()
}

/// `Display` text of an optional value, `none` if absent.
pub(crate) fn show_opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    match v {
        Some(v) => v.to_string(),
        None => "none".into(),
    }
}
