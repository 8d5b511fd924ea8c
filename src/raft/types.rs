//! The application's Raft types, and a ready default.

use std::cmp::Ordering;
use std::fmt::{self, Debug, Display};

use zerocopy::FromBytes;

use super::codec::{Codec, CodecError};

/// Fixes the types a [`super::RaftLog`] stores.
///
/// `LogId` orders entries (a later entry has a greater log id); `Vote` orders votes (a saved
/// vote may only be replaced by one that is greater or equal). Payloads are plain bytes. Log
/// ids and votes appear in error messages through their `Display`.
///
/// The vote, the committed and purged log ids and the snapshot meta share the engine's meta
/// room (a quarter of a segment) with the user data. [`Types::MAX_LOG_ID_LEN`] and
/// [`Types::MAX_VOTE_LEN`] say how much of it to keep for them, so that user data (and the
/// snapshot meta blob) can never crowd them out.
pub trait Types: 'static {
    /// Identifies an entry: term (or leader id) and index.
    type LogId: Codec + Ord + Clone + Debug + Display + Send + Sync + 'static;
    /// The durable vote (hard state).
    type Vote: Codec + PartialOrd + Eq + Clone + Debug + Display + Send + Sync + 'static;
    /// Application data kept with the log state.
    type UserData: Codec + Eq + Clone + Debug + Send + Sync + 'static;

    /// Largest encoded size of a `LogId`, in bytes (default 64). Set it to the exact size if
    /// your encoding is fixed-size, or higher if it can be longer.
    const MAX_LOG_ID_LEN: usize = 64;
    /// Largest encoded size of a `Vote`, in bytes (default 64).
    const MAX_VOTE_LEN: usize = 64;

    /// The log index of a log id.
    fn log_index(log_id: &Self::LogId) -> u64;
}

/// A ready [`Types`]: log ids of (term, node id, index), votes of (term, node id, committed),
/// user data as bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RaftTypes;

impl Types for RaftTypes {
    type LogId = LogId;
    type Vote = Vote;
    type UserData = Vec<u8>;

    /// `(u64, u64, u64)`.
    const MAX_LOG_ID_LEN: usize = 24;
    /// `(u64, u64, bool)`.
    const MAX_VOTE_LEN: usize = 17;

    fn log_index(log_id: &LogId) -> u64 {
        log_id.index
    }
}

/// A log id: the leader that proposed the entry (term, node id) and the entry's index.
/// Ordered by term, then node id, then index. Displayed as `term-node-index` (`1-0-7`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogId {
    /// Term of the leader that proposed the entry.
    pub term: u64,
    /// Node id of that leader.
    pub node_id: u64,
    /// Log index.
    pub index: u64,
}

impl LogId {
    /// A log id.
    pub fn new(term: u64, node_id: u64, index: u64) -> Self {
        LogId {
            term,
            node_id,
            index,
        }
    }
}

impl Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.term, self.node_id, self.index)
    }
}

impl Codec for LogId {
    // The same bytes as the tuple `(term, node_id, index)`, written and read as one 24-byte
    // block: this runs once per appended and per read entry.
    #[inline]
    fn encode(&self, buf: &mut Vec<u8>) {
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&self.term.to_le_bytes());
        b[8..16].copy_from_slice(&self.node_id.to_le_bytes());
        b[16..].copy_from_slice(&self.index.to_le_bytes());
        buf.extend_from_slice(&b);
    }
    #[inline]
    fn decode(bytes: &[u8]) -> Result<(Self, usize), CodecError> {
        match WireLogId::read_from_prefix(bytes) {
            Ok((w, _)) => Ok((
                LogId {
                    term: w.term.get(),
                    node_id: w.node_id.get(),
                    index: w.index.get(),
                },
                24,
            )),
            // Short input: the tuple's decoder says which part is missing.
            Err(_) => {
                let ((term, node_id, index), n) = <(u64, u64, u64)>::decode(bytes)?;
                Ok((
                    LogId {
                        term,
                        node_id,
                        index,
                    },
                    n,
                ))
            }
        }
    }
}

/// A [`LogId`] as stored: three little-endian `u64`s (the tuple's encoding).
#[derive(zerocopy::FromBytes, zerocopy::KnownLayout, zerocopy::Immutable)]
#[repr(C)]
struct WireLogId {
    term: zerocopy::little_endian::U64,
    node_id: zerocopy::little_endian::U64,
    index: zerocopy::little_endian::U64,
}

/// A vote: for a candidate (`committed == false`) or for an elected leader (`committed`).
///
/// Ordered as in Raft: a higher term is greater; in the same term, the same node's committed
/// vote is greater than its uncommitted one; votes for different nodes in the same term are
/// incomparable unless exactly one is committed (then it is greater). Displayed as `T5-N1`, or
/// `T5-N1 (committed)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Vote {
    /// Term.
    pub term: u64,
    /// Node voted for.
    pub node_id: u64,
    /// Whether a quorum granted it.
    pub committed: bool,
}

impl Vote {
    /// A vote.
    pub fn new(term: u64, node_id: u64, committed: bool) -> Self {
        Vote {
            term,
            node_id,
            committed,
        }
    }
}

impl PartialOrd for Vote {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match self.term.cmp(&other.term) {
            Ordering::Equal => {}
            o => return Some(o),
        }
        if self.node_id == other.node_id {
            return Some(self.committed.cmp(&other.committed));
        }
        match (self.committed, other.committed) {
            (true, false) => Some(Ordering::Greater),
            (false, true) => Some(Ordering::Less),
            _ => None,
        }
    }
}

impl Display for Vote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "T{}-N{}{}",
            self.term,
            self.node_id,
            if self.committed { " (committed)" } else { "" }
        )
    }
}

impl Codec for Vote {
    fn encode(&self, buf: &mut Vec<u8>) {
        (self.term, self.node_id, self.committed).encode(buf)
    }
    fn decode(bytes: &[u8]) -> Result<(Self, usize), CodecError> {
        let ((term, node_id, committed), n) = <(u64, u64, bool)>::decode(bytes)?;
        Ok((
            Vote {
                term,
                node_id,
                committed,
            },
            n,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vote_order() {
        let v = Vote::new;
        assert!(v(2, 1, false) > v(1, 9, true));
        assert!(v(2, 1, true) > v(2, 1, false));
        assert_eq!(v(2, 1, false).partial_cmp(&v(2, 3, false)), None);
        assert!(v(2, 3, true) > v(2, 1, false));
        assert_eq!(
            v(2, 1, false).partial_cmp(&v(2, 1, false)),
            Some(Ordering::Equal)
        );
    }

    #[test]
    fn encoded_sizes_match_the_declared_maximum() {
        let id = LogId::new(u64::MAX, u64::MAX, u64::MAX);
        assert_eq!(id.to_bytes().len(), RaftTypes::MAX_LOG_ID_LEN);
        let vote = Vote::new(u64::MAX, u64::MAX, true);
        assert_eq!(vote.to_bytes().len(), RaftTypes::MAX_VOTE_LEN);
        assert_eq!(vote.to_string(), format!("T{0}-N{0} (committed)", u64::MAX));
        assert_eq!(Vote::new(5, 1, false).to_string(), "T5-N1");
    }

    #[test]
    fn codecs_round_trip() {
        let id = LogId::new(3, 2, 99);
        assert_eq!(LogId::from_bytes(&id.to_bytes()).unwrap(), id);
        let vote = Vote::new(4, 1, true);
        assert_eq!(Vote::from_bytes(&vote.to_bytes()).unwrap(), vote);
        assert!(LogId::new(1, 9, 9) < LogId::new(2, 0, 0));
    }

    #[test]
    fn log_id_bytes_are_the_tuple_bytes() {
        let id = LogId::new(0x0102_0304_0506_0708, 9, u64::MAX - 1);
        let tuple = (id.term, id.node_id, id.index).to_bytes();
        assert_eq!(id.to_bytes(), tuple);
        let mut longer = tuple.clone();
        longer.push(7);
        assert_eq!(LogId::decode(&longer).unwrap(), (id, 24));
        for cut in 0..24 {
            let e = LogId::decode(&tuple[..cut]).unwrap_err();
            assert!(e.0.contains("u64: need 8 bytes"), "{e}");
        }
    }
}
