//! The Raft layer's errors: [`RaftError`] wraps the engine's [`crate::Error`] and the Raft
//! state rules ([`StateError`]).
//!
//! Every [`StateError`] variant holds the values involved, typed (your `LogId` and `Vote`),
//! and its message shows them through their `Display` (an absent value prints as `none`).
//! A state error means that nothing was written.

use std::fmt;

use super::types::Types;

/// What a [`RaftLog`](super::RaftLog) call can fail with: the engine's error underneath, or a
/// Raft state rule the call broke (then nothing was written).
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum RaftError<T: Types> {
    /// The engine failed (I/O, corruption, a poisoned log, a value that does not decode, an
    /// index that does not follow...).
    #[error(transparent)]
    Engine(#[from] crate::Error),
    /// A Raft state rule was broken. Nothing was written.
    #[error(transparent)]
    State(#[from] StateError<T>),
}

impl<T: Types> fmt::Debug for RaftError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RaftError::Engine(e) => f.debug_tuple("Engine").field(e).finish(),
            RaftError::State(e) => f.debug_tuple("State").field(e).finish(),
        }
    }
}

impl<T: Types> Clone for RaftError<T> {
    fn clone(&self) -> Self {
        match self {
            RaftError::Engine(e) => RaftError::Engine(e.clone()),
            RaftError::State(e) => RaftError::State(e.clone()),
        }
    }
}

/// Result of the Raft layer.
pub type RaftResult<V, T> = std::result::Result<V, RaftError<T>>;

/// An optional value as error messages show it: the value, or `none`.
pub struct Shown<'a, V>(pub &'a Option<V>);

impl<V: fmt::Display> fmt::Display for Shown<'_, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("none"),
        }
    }
}

/// What a [`StateError::LogIdMismatch`] found at the index.
struct Stored<'a, L>(&'a Option<L>, &'a Option<L>);

impl<L: fmt::Display> fmt::Display for Stored<'_, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (Some(s), _) => s.fmt(f),
            (None, Some(p)) => write!(f, "nothing (purged up to {p})"),
            (None, None) => f.write_str("nothing"),
        }
    }
}

/// A Raft state rule that an operation broke. Nothing was written.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum StateError<T: Types> {
    /// A vote lower than the saved one.
    #[error("vote reversal: saved vote is {saved}, refused lower vote {given}")]
    VoteReversal {
        /// The saved vote.
        saved: T::Vote,
        /// The vote refused.
        given: T::Vote,
    },
    /// A vote neither greater than nor equal to the saved one, nor lower: in the same term, a
    /// vote for another node.
    #[error("vote conflict: saved vote is {saved}, refused incomparable vote {given}")]
    VoteConflict {
        /// The saved vote.
        saved: T::Vote,
        /// The vote refused.
        given: T::Vote,
    },
    /// An appended log id not greater than the last one.
    #[error("log id reversal: last log id is {last}, refused {given}")]
    LogIdReversal {
        /// The last log id.
        last: T::LogId,
        /// The log id refused.
        given: T::LogId,
    },
    /// A commit beyond the last log id.
    #[error(
        "commit beyond last: last log id is {}, refused commit of {given}",
        Shown(last)
    )]
    CommitBeyondLast {
        /// The last log id.
        last: Option<T::LogId>,
        /// The commit refused.
        given: T::LogId,
    },
    /// A commit behind the current one.
    #[error("commit reversal: committed is {committed}, refused {given}")]
    CommitReversal {
        /// The current committed log id.
        committed: T::LogId,
        /// The commit refused.
        given: T::LogId,
    },
    /// A truncate that would remove purged entries.
    #[error(
        "truncate below purged: purged up to {}, refused truncate after {}",
        Shown(purged),
        Shown(given)
    )]
    TruncateBelowPurged {
        /// The purged log id.
        purged: Option<T::LogId>,
        /// The truncate point refused.
        given: Option<T::LogId>,
    },
    /// A truncate that would remove committed entries.
    #[error(
        "truncate below committed: committed is {}, refused truncate after {}",
        Shown(committed),
        Shown(given)
    )]
    TruncateBelowCommitted {
        /// The committed log id.
        committed: Option<T::LogId>,
        /// The truncate point refused.
        given: Option<T::LogId>,
    },
    /// A purge of entries that are not committed.
    #[error(
        "purge beyond committed: committed is {}, refused purge up to {given}",
        Shown(committed)
    )]
    PurgeBeyondCommitted {
        /// The committed log id.
        committed: Option<T::LogId>,
        /// The purge point refused.
        given: T::LogId,
    },
    /// A purge beyond the last entry.
    #[error(
        "purge beyond last: last log id is {}, refused purge up to {given}",
        Shown(last)
    )]
    PurgeBeyondLast {
        /// The last log id.
        last: Option<T::LogId>,
        /// The purge point refused.
        given: T::LogId,
    },
    /// A log id the log does not hold: the entry at its index has another log id, or there is
    /// none (`stored` is `None`; `purged` says if the index was purged, and under which id).
    #[error(
        "log id mismatch at index {index}: stored {}, given {given}",
        Stored(stored, purged)
    )]
    LogIdMismatch {
        /// The index.
        index: u64,
        /// The log id stored there, if any.
        stored: Option<T::LogId>,
        /// The purged log id, when the index is at or below it.
        purged: Option<T::LogId>,
        /// The log id given.
        given: T::LogId,
    },
    /// A snapshot not after the purged log id.
    #[error(
        "snapshot reversal: purged up to {}, refused snapshot up to {given}",
        Shown(purged)
    )]
    SnapshotReversal {
        /// The purged log id.
        purged: Option<T::LogId>,
        /// The snapshot's last log id.
        given: T::LogId,
    },
    /// A log id whose index is the largest `u64`: no entry could follow it.
    #[error("no successor: log id {given} leaves no index after it")]
    NoSuccessor {
        /// The log id refused.
        given: T::LogId,
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

impl<T: Types> fmt::Debug for StateError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The message names every value; the variant is in it too.
        write!(f, "StateError({self})")
    }
}

impl<T: Types> Clone for StateError<T> {
    fn clone(&self) -> Self {
        use StateError::*;
        match self {
            VoteReversal { saved, given } => VoteReversal {
                saved: saved.clone(),
                given: given.clone(),
            },
            VoteConflict { saved, given } => VoteConflict {
                saved: saved.clone(),
                given: given.clone(),
            },
            LogIdReversal { last, given } => LogIdReversal {
                last: last.clone(),
                given: given.clone(),
            },
            CommitBeyondLast { last, given } => CommitBeyondLast {
                last: last.clone(),
                given: given.clone(),
            },
            CommitReversal { committed, given } => CommitReversal {
                committed: committed.clone(),
                given: given.clone(),
            },
            TruncateBelowPurged { purged, given } => TruncateBelowPurged {
                purged: purged.clone(),
                given: given.clone(),
            },
            TruncateBelowCommitted { committed, given } => TruncateBelowCommitted {
                committed: committed.clone(),
                given: given.clone(),
            },
            PurgeBeyondCommitted { committed, given } => PurgeBeyondCommitted {
                committed: committed.clone(),
                given: given.clone(),
            },
            PurgeBeyondLast { last, given } => PurgeBeyondLast {
                last: last.clone(),
                given: given.clone(),
            },
            LogIdMismatch {
                index,
                stored,
                purged,
                given,
            } => LogIdMismatch {
                index: *index,
                stored: stored.clone(),
                purged: purged.clone(),
                given: given.clone(),
            },
            SnapshotReversal { purged, given } => SnapshotReversal {
                purged: purged.clone(),
                given: given.clone(),
            },
            NoSuccessor { given } => NoSuccessor {
                given: given.clone(),
            },
            MetaNoRoom { what, size, room } => MetaNoRoom {
                what,
                size: *size,
                room: *room,
            },
        }
    }
}
