//! The Raft log state and how it is stored as engine meta values.

use std::fmt;

use super::codec::Codec;
use super::types::Types;
use crate::error::{Error, Result};

/// Meta key of the vote.
pub const META_VOTE: u64 = 1;
/// Meta key of the committed log id.
pub const META_COMMITTED: u64 = 2;
/// Meta key of the purged log id (written atomically with the purge record).
pub const META_PURGED: u64 = 3;
/// Meta key of the user data.
pub const META_USER_DATA: u64 = 4;
/// Meta key of the snapshot meta (its last log id and an opaque blob).
pub const META_SNAPSHOT: u64 = 5;

/// What the log knows about the last snapshot the application installed or built.
pub struct SnapshotMeta<T: Types> {
    /// Last log id the snapshot covers; everything up to it is purged from the log.
    pub last_log_id: T::LogId,
    /// Opaque application bytes (membership, snapshot id, ...); keep it small.
    pub data: Vec<u8>,
}

impl<T: Types> Clone for SnapshotMeta<T> {
    fn clone(&self) -> Self {
        SnapshotMeta {
            last_log_id: self.last_log_id.clone(),
            data: self.data.clone(),
        }
    }
}

impl<T: Types> PartialEq for SnapshotMeta<T> {
    fn eq(&self, other: &Self) -> bool {
        self.last_log_id == other.last_log_id && self.data == other.data
    }
}

impl<T: Types> Eq for SnapshotMeta<T> {}

impl<T: Types> fmt::Debug for SnapshotMeta<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotMeta")
            .field("last_log_id", &self.last_log_id)
            .field("data_len", &self.data.len())
            .finish()
    }
}

/// The Raft state of a log: always what a reopen would recover once flushed.
pub struct RaftState<T: Types> {
    /// The saved vote.
    pub vote: Option<T::Vote>,
    /// Log id of the last entry, or the purged log id if no entry is left.
    pub last: Option<T::LogId>,
    /// The committed log id.
    pub committed: Option<T::LogId>,
    /// Entries up to this log id are purged.
    pub purged: Option<T::LogId>,
    /// Application data.
    pub user_data: Option<T::UserData>,
    /// The last snapshot's meta.
    pub snapshot: Option<SnapshotMeta<T>>,
}

impl<T: Types> Default for RaftState<T> {
    fn default() -> Self {
        RaftState {
            vote: None,
            last: None,
            committed: None,
            purged: None,
            user_data: None,
            snapshot: None,
        }
    }
}

impl<T: Types> Clone for RaftState<T> {
    fn clone(&self) -> Self {
        RaftState {
            vote: self.vote.clone(),
            last: self.last.clone(),
            committed: self.committed.clone(),
            purged: self.purged.clone(),
            user_data: self.user_data.clone(),
            snapshot: self.snapshot.clone(),
        }
    }
}

impl<T: Types> PartialEq for RaftState<T> {
    fn eq(&self, o: &Self) -> bool {
        self.vote == o.vote
            && self.last == o.last
            && self.committed == o.committed
            && self.purged == o.purged
            && self.user_data == o.user_data
            && self.snapshot == o.snapshot
    }
}

impl<T: Types> Eq for RaftState<T> {}

impl<T: Types> fmt::Debug for RaftState<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RaftState")
            .field("vote", &self.vote)
            .field("last", &self.last)
            .field("committed", &self.committed)
            .field("purged", &self.purged)
            .field("user_data", &self.user_data)
            .field("snapshot", &self.snapshot)
            .finish()
    }
}

impl<T: Types> RaftState<T> {
    /// Index after the last log id (the last entry, or the purged log id): the index the next
    /// appended entry must have. 0 if there is none; such a log (no entries, nothing purged)
    /// accepts its first entry at any index.
    pub fn next_index(&self) -> u64 {
        self.last
            .as_ref()
            .map_or(0, |l| T::log_index(l).saturating_add(1))
    }
}

pub(crate) fn decode_meta<V: Codec>(key: u64, bytes: Option<&[u8]>) -> Result<Option<V>> {
    match bytes {
        None => Ok(None),
        Some(b) => V::from_bytes(b).map(Some).map_err(|e| Error::Decode {
            what: format!("meta value {}", meta_name(key)),
            reason: e.to_string(),
        }),
    }
}

fn meta_name(key: u64) -> &'static str {
    match key {
        META_VOTE => "vote",
        META_COMMITTED => "committed",
        META_PURGED => "purged",
        META_USER_DATA => "user data",
        META_SNAPSHOT => "snapshot meta",
        _ => "unknown",
    }
}

/// Splits an entry body into its log id and payload.
#[inline]
pub(crate) fn split_entry<T: Types>(index: u64, body: &[u8]) -> Result<(T::LogId, &[u8])> {
    let (id, n) = T::LogId::decode(body).map_err(|e| Error::Decode {
        what: format!("log id of entry {index}"),
        reason: e.to_string(),
    })?;
    if T::log_index(&id) != index {
        return Err(Error::Decode {
            what: format!("log id of entry {index}"),
            reason: format!("it names index {}", T::log_index(&id)),
        });
    }
    Ok((id, &body[n..]))
}

/// Rebuilds the state from meta values and the last entry.
pub(crate) fn decode_state<'a, T: Types>(
    meta: impl Fn(u64) -> Option<&'a [u8]>,
    last_entry: Option<(u64, &[u8])>,
) -> Result<RaftState<T>> {
    let purged: Option<T::LogId> = decode_meta(META_PURGED, meta(META_PURGED))?;
    let last = match last_entry {
        Some((index, body)) => Some(split_entry::<T>(index, body)?.0),
        None => purged.clone(),
    };
    let snapshot = decode_meta::<(T::LogId, Vec<u8>)>(META_SNAPSHOT, meta(META_SNAPSHOT))?
        .map(|(last_log_id, data)| SnapshotMeta { last_log_id, data });
    Ok(RaftState {
        vote: decode_meta(META_VOTE, meta(META_VOTE))?,
        committed: decode_meta(META_COMMITTED, meta(META_COMMITTED))?,
        user_data: decode_meta::<Option<T::UserData>>(META_USER_DATA, meta(META_USER_DATA))?
            .flatten(),
        last,
        purged,
        snapshot,
    })
}
