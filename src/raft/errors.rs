//! Raft state-rule violations.

/// A Raft state rule that an operation broke. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// A vote lower than the saved one.
    #[error("vote reversal: saved vote is {saved}, refused {given}")]
    VoteReversal {
        /// The saved vote.
        saved: String,
        /// The vote refused.
        given: String,
    },
}
