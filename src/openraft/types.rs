//! How openraft's log ids and votes are stored: [`OpenraftTypes`].

use std::fmt;

use ::openraft::{CommittedLeaderId, LeaderId, NodeId};

use crate::raft::{Codec, CodecError, LogId, Types};

/// The [`Types`] of a log that serves openraft.
///
/// * Log ids are the crate's own [`LogId`] `(term, node id, index)`: openraft's default
///   (non-`single-term-leader`) `LogId` is `(CommittedLeaderId { term, node_id }, index)`, with
///   the same fields and the same order. A log written through openraft can therefore be
///   read by the crate's tools (`raft-mmap-log dump/stat/verify`) as a plain
///   [`crate::raft::RaftTypes`] log.
/// * Votes are [`OpenraftVote`]: the same 17-byte layout as [`crate::raft::Vote`], but ordered
///   the way openraft orders votes (a total order on `(term, node id, committed)`), so the
///   log's vote-reversal check agrees with openraft's own decisions.
/// * User data is unused by the openraft store and left to the application.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenraftTypes;

impl Types for OpenraftTypes {
    type LogId = LogId;
    type Vote = OpenraftVote;
    type UserData = Vec<u8>;

    const MAX_LOG_ID_LEN: usize = <crate::raft::RaftTypes as Types>::MAX_LOG_ID_LEN;
    /// The same 17-byte layout as [`crate::raft::Vote`].
    const MAX_VOTE_LEN: usize = <crate::raft::RaftTypes as Types>::MAX_VOTE_LEN;

    fn log_index(log_id: &LogId) -> u64 {
        log_id.index
    }
}

/// An openraft vote as stored on disk: the leader it names (term, node id) and whether a
/// quorum granted it.
///
/// Ordered like openraft's `Vote` in its default leader-id mode: by term, then node id, then
/// committed (uncommitted < committed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpenraftVote {
    /// Term.
    pub term: u64,
    /// The node the vote is for.
    pub node_id: u64,
    /// Whether a quorum granted it.
    pub committed: bool,
}

impl fmt::Display for OpenraftVote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "T{}-N{}:{}",
            self.term,
            self.node_id,
            if self.committed {
                "committed"
            } else {
                "uncommitted"
            }
        )
    }
}

impl Codec for OpenraftVote {
    fn encode(&self, buf: &mut Vec<u8>) {
        (self.term, self.node_id, self.committed).encode(buf)
    }
    fn decode(bytes: &[u8]) -> Result<(Self, usize), CodecError> {
        let ((term, node_id, committed), n) = <(u64, u64, bool)>::decode(bytes)?;
        Ok((
            OpenraftVote {
                term,
                node_id,
                committed,
            },
            n,
        ))
    }
}

/// Converts an openraft log id to the stored form.
pub fn log_id_to_stored<NID>(id: &::openraft::LogId<NID>) -> LogId
where
    NID: NodeId + Into<u64>,
{
    LogId::new(
        id.leader_id.term,
        id.leader_id.node_id.clone().into(),
        id.index,
    )
}

/// Converts a stored log id back to openraft's.
pub fn log_id_from_stored<NID>(id: &LogId) -> ::openraft::LogId<NID>
where
    NID: NodeId + From<u64>,
{
    ::openraft::LogId::new(
        CommittedLeaderId::new(id.term, NID::from(id.node_id)),
        id.index,
    )
}

/// Converts an openraft vote to the stored form.
pub fn vote_to_stored<NID>(vote: &::openraft::Vote<NID>) -> OpenraftVote
where
    NID: NodeId + Into<u64>,
{
    OpenraftVote {
        term: vote.leader_id.term,
        node_id: vote.leader_id.node_id.clone().into(),
        committed: vote.committed,
    }
}

/// Converts a stored vote back to openraft's.
pub fn vote_from_stored<NID>(vote: &OpenraftVote) -> ::openraft::Vote<NID>
where
    NID: NodeId + From<u64>,
{
    ::openraft::Vote {
        leader_id: LeaderId::new(vote.term, NID::from(vote.node_id)),
        committed: vote.committed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_trip_and_keep_order() {
        let a = ::openraft::LogId::new(CommittedLeaderId::new(3, 7u64), 9);
        let b = ::openraft::LogId::new(CommittedLeaderId::new(3, 8u64), 2);
        assert_eq!(log_id_from_stored::<u64>(&log_id_to_stored(&a)), a);
        assert_eq!(
            a.cmp(&b),
            log_id_to_stored(&a).cmp(&log_id_to_stored(&b)),
            "stored order must be openraft's order"
        );

        let votes = [
            ::openraft::Vote::new(1, 2u64),
            ::openraft::Vote::new_committed(1, 2u64),
            ::openraft::Vote::new(1, 3u64),
            ::openraft::Vote::new_committed(2, 1u64),
        ];
        for x in &votes {
            let s = vote_to_stored(x);
            assert_eq!(vote_from_stored::<u64>(&s), *x);
            assert_eq!(OpenraftVote::from_bytes(&s.to_bytes()).unwrap(), s);
            for y in &votes {
                assert_eq!(
                    x.partial_cmp(y),
                    Some(s.cmp(&vote_to_stored(y))),
                    "{x} vs {y}"
                );
            }
        }
    }
}
