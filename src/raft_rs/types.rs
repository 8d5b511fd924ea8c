//! How raft-rs's log ids, hard state and configuration are stored: [`RaftRsTypes`].

use std::cmp::Ordering;
use std::fmt;

use crate::raft::{Codec, CodecError, Types};

/// The [`Types`] of a log that serves raft-rs.
///
/// * Log ids are [`EntryId`] `(term, index)`: an entry's term and index are stored once, in the
///   log id, and not again in the entry's body.
/// * Votes are [`HardVote`] `(term, voted for)`: the term and vote of raft-rs's `HardState`
///   (its `commit` is the log's committed log id).
/// * User data is [`StoredConf`]: the `ConfState` the application last set, with the index of
///   the log's snapshot at that moment, so that a later snapshot's configuration wins over it.
///
/// The encodings are those of [`crate::raft::RaftTypes`] (a log id is `(term, node id 0,
/// index)`, a vote `(term, voted for, false)`, the user data a byte string), so the crate's
/// tools (`raft-mmap-log stat|verify|dump`) read a raft-rs log as they read any other.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RaftRsTypes;

impl Types for RaftRsTypes {
    type LogId = EntryId;
    type Vote = HardVote;
    type UserData = StoredConf;

    /// `(u64, u64, u64)`, as [`crate::raft::LogId`].
    const MAX_LOG_ID_LEN: usize = 24;
    /// `(u64, u64, bool)`, as [`crate::raft::Vote`].
    const MAX_VOTE_LEN: usize = 17;

    fn log_index(log_id: &EntryId) -> u64 {
        log_id.index
    }
}

/// A raft-rs log position: term, then index. Ordered by term, then index (along a Raft log
/// both never decrease). Displayed as `term/index` (`3/17`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId {
    /// The entry's term.
    pub term: u64,
    /// The entry's index.
    pub index: u64,
}

impl EntryId {
    /// A log id.
    pub fn new(term: u64, index: u64) -> Self {
        EntryId { term, index }
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.term, self.index)
    }
}

/// As a [`crate::raft::LogId`] `(term, node id, index)` with node id 0.
impl Codec for EntryId {
    fn encode(&self, buf: &mut Vec<u8>) {
        (self.term, 0u64, self.index).encode(buf)
    }
    fn decode(bytes: &[u8]) -> Result<(Self, usize), CodecError> {
        let ((term, node, index), n) = <(u64, u64, u64)>::decode(bytes)?;
        if node != 0 {
            return Err(CodecError(format!(
                "raft-rs log id: node id {node} where 0 is stored"
            )));
        }
        Ok((EntryId { term, index }, n))
    }
}

/// The vote part of raft-rs's `HardState`: the term and the node voted for in it (0: none).
///
/// Ordered as Raft allows a vote to change: a higher term is greater; in the same term, a vote
/// for a node is greater than no vote; votes for two different nodes in the same term are
/// incomparable (so the log refuses to change a vote within a term). Displayed as `T5-N2`
/// (`T5-N0`: no vote in term 5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct HardVote {
    /// `HardState::term`.
    pub term: u64,
    /// `HardState::vote`: the node voted for in `term`, 0 if none.
    pub vote: u64,
}

impl HardVote {
    /// A vote.
    pub fn new(term: u64, vote: u64) -> Self {
        HardVote { term, vote }
    }
}

impl PartialOrd for HardVote {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match self.term.cmp(&other.term) {
            Ordering::Equal => {}
            o => return Some(o),
        }
        match (self.vote, other.vote) {
            (a, b) if a == b => Some(Ordering::Equal),
            (0, _) => Some(Ordering::Less),
            (_, 0) => Some(Ordering::Greater),
            _ => None,
        }
    }
}

impl fmt::Display for HardVote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "T{}-N{}", self.term, self.vote)
    }
}

/// As a [`crate::raft::Vote`] `(term, node id, committed)` with committed false.
impl Codec for HardVote {
    fn encode(&self, buf: &mut Vec<u8>) {
        (self.term, self.vote, false).encode(buf)
    }
    fn decode(bytes: &[u8]) -> Result<(Self, usize), CodecError> {
        let ((term, vote, committed), n) = <(u64, u64, bool)>::decode(bytes)?;
        if committed {
            return Err(CodecError("raft-rs vote: a committed flag is set".into()));
        }
        Ok((HardVote { term, vote }, n))
    }
}

/// The configuration the application set last (`ConfState`, protobuf-encoded), and the index
/// of the log's snapshot at that moment.
///
/// A snapshot carries its own `ConfState` in its meta; the effective configuration is the
/// stored one if it was set after the log's current snapshot was installed
/// (`snapshot_index` at least the snapshot's index), else the snapshot's (see
/// [`super::MmapRaftStorage::conf_state`]). This makes installing a snapshot and saving its
/// configuration safe to do as two writes: a crash between them leaves the snapshot's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredConf {
    /// Index of the log's last installed snapshot when the configuration was set (0: none).
    pub snapshot_index: u64,
    /// The protobuf encoding of the `ConfState`.
    pub conf_state: Vec<u8>,
}

/// As a byte string (`Vec<u8>`, the user data of [`crate::raft::RaftTypes`]) holding the
/// snapshot index (`u64` LE) and the `ConfState`'s protobuf bytes.
impl Codec for StoredConf {
    fn encode(&self, buf: &mut Vec<u8>) {
        let len = 8usize.saturating_add(self.conf_state.len());
        (len as u32).encode(buf);
        self.snapshot_index.encode(buf);
        buf.extend_from_slice(&self.conf_state);
    }
    fn decode(bytes: &[u8]) -> Result<(Self, usize), CodecError> {
        let (inner, n) = Vec::<u8>::decode(bytes)?;
        let (snapshot_index, m) = u64::decode(&inner)?;
        Ok((
            StoredConf {
                snapshot_index,
                conf_state: inner[m..].to_vec(),
            },
            n,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The crate's tools decode a raft-rs log with `RaftTypes`: the same bytes must decode.
    #[test]
    fn encodings_are_raft_types_ones() {
        use crate::raft::{LogId, Vote};
        let id = EntryId::new(4, 17);
        assert_eq!(
            LogId::from_bytes(&id.to_bytes()).unwrap(),
            LogId::new(4, 0, 17)
        );
        let vote = HardVote::new(5, 2);
        assert_eq!(
            Vote::from_bytes(&vote.to_bytes()).unwrap(),
            Vote::new(5, 2, false)
        );
        let conf = StoredConf {
            snapshot_index: 3,
            conf_state: vec![9, 8],
        };
        let mut want = 3u64.to_le_bytes().to_vec();
        want.extend_from_slice(&[9, 8]);
        assert_eq!(Vec::<u8>::from_bytes(&conf.to_bytes()).unwrap(), want);
    }

    #[test]
    fn vote_order_is_raft_s() {
        let v = HardVote::new;
        assert!(v(2, 0) > v(1, 3));
        assert!(v(2, 1) > v(2, 0));
        assert_eq!(v(2, 1).partial_cmp(&v(2, 1)), Some(Ordering::Equal));
        assert_eq!(v(2, 1).partial_cmp(&v(2, 3)), None);
        assert!(v(1, 3) < v(2, 0));
    }

    #[test]
    fn codecs_round_trip_at_the_declared_sizes() {
        let id = EntryId::new(u64::MAX, u64::MAX);
        assert_eq!(id.to_bytes().len(), RaftRsTypes::MAX_LOG_ID_LEN);
        assert_eq!(EntryId::from_bytes(&id.to_bytes()).unwrap(), id);
        let vote = HardVote::new(u64::MAX, 3);
        assert_eq!(vote.to_bytes().len(), RaftRsTypes::MAX_VOTE_LEN);
        assert_eq!(HardVote::from_bytes(&vote.to_bytes()).unwrap(), vote);
        let conf = StoredConf {
            snapshot_index: 9,
            conf_state: vec![1, 2, 3],
        };
        assert_eq!(StoredConf::from_bytes(&conf.to_bytes()).unwrap(), conf);
        assert!(StoredConf::from_bytes(&[4, 0, 0, 0, 1, 2, 3, 4]).is_err());
        assert!(EntryId::from_bytes(&crate::raft::LogId::new(1, 2, 3).to_bytes()).is_err());
        assert!(HardVote::from_bytes(&crate::raft::Vote::new(1, 2, true).to_bytes()).is_err());
        assert!(EntryId::new(1, 9) < EntryId::new(2, 3));
        assert_eq!(EntryId::new(3, 17).to_string(), "3/17");
    }
}
