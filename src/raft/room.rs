//! Meta room: how large the user data and the snapshot meta may be, so that the fixed-size
//! values (vote, committed, purged, and the snapshot meta's log id) always fit.
//!
//! The engine keeps all meta values, encoded as a checkpoint body (a [`CheckpointHead`], then
//! per value a [`MetaItemHead`] and the value), within a quarter of a segment, and refuses a
//! write that would pass it (`Error::MetaTooLarge`; see `Store::put_meta`). Without a
//! reservation, large user data would make every later vote, commit or purge fail.

use std::mem::size_of;

use super::engine::Calls;
use super::errors::{RaftError, RaftResult, StateError};
use super::state::{META_COMMITTED, META_PURGED, META_SNAPSHOT, META_USER_DATA, META_VOTE};
use super::types::Types;
use crate::format::{CheckpointHead, MetaItemHead};

/// Encoded length of an empty `Vec<u8>` (its `u32` length).
const EMPTY_BYTES_LEN: usize = 4;

/// Bytes counted for meta `key` other than its item head, or `None` if it takes no room: the
/// declared largest encoding (or the stored one, if that is larger) for the fixed-size values,
/// the stored encoding for the user data.
fn reserved<T: Types>(store: &impl Calls, key: u64, sizes: &[(u64, usize)]) -> Option<usize> {
    let stored = stored_len(store, key, sizes);
    let declared = match key {
        META_VOTE => T::MAX_VOTE_LEN,
        META_COMMITTED | META_PURGED => T::MAX_LOG_ID_LEN,
        META_SNAPSHOT => T::MAX_LOG_ID_LEN.saturating_add(EMPTY_BYTES_LEN),
        _ => return stored,
    };
    Some(stored.map_or(declared, |s| s.max(declared)))
}

/// The size of the value of `key`: as given in `sizes` (a value the same call writes), else
/// as stored.
fn stored_len(store: &impl Calls, key: u64, sizes: &[(u64, usize)]) -> Option<usize> {
    match sizes.iter().find(|(k, _)| *k == key) {
        Some((_, n)) => Some(*n),
        None => store.meta_len(key),
    }
}

/// The largest encoded size the value of `key` (user data or snapshot meta) may have so that
/// the vote, committed, purged and snapshot meta keep their room, when the values of `sizes`
/// (keys and encoded sizes written in the same call) replace the stored ones.
fn room<T: Types>(store: &impl Calls, key: u64, sizes: &[(u64, usize)]) -> usize {
    let limit = store.meta_limit();
    let item = size_of::<MetaItemHead>();
    let used = [
        META_VOTE,
        META_COMMITTED,
        META_PURGED,
        META_SNAPSHOT,
        META_USER_DATA,
    ]
    .into_iter()
    .filter(|&k| k != key)
    .filter_map(|k| reserved::<T>(store, k, sizes))
    .fold(
        size_of::<CheckpointHead>().saturating_add(item),
        |acc, n| acc.saturating_add(item).saturating_add(n),
    );
    limit.saturating_sub(used)
}

/// Whether a new value of `key` that encodes to `size` bytes, written with the values of
/// `sizes`, fits: within [`room`], or no larger than the stored value (shrinking is always
/// allowed). `Err` holds the room.
pub(crate) fn fits<T: Types>(
    store: &impl Calls,
    key: u64,
    size: usize,
    sizes: &[(u64, usize)],
) -> Result<(), usize> {
    let room = room::<T>(store, key, sizes);
    let stored = store.meta_len(key).unwrap_or(0);
    if size <= room || size <= stored {
        Ok(())
    } else {
        Err(room)
    }
}

/// [`fits`] as the Raft layer's error: the user data or snapshot meta (`key`) of
/// `size` bytes, written with the values of `sizes`, must leave the fixed-size values their
/// room ([`StateError::MetaNoRoom`]).
pub(crate) fn check<T: Types>(
    store: &impl Calls,
    key: u64,
    size: usize,
    sizes: &[(u64, usize)],
) -> RaftResult<(), T> {
    fits::<T>(store, key, size, sizes).map_err(|room| {
        RaftError::State(StateError::MetaNoRoom {
            what: if key == META_SNAPSHOT {
                "snapshot meta"
            } else {
                "user data"
            },
            size,
            room,
        })
    })
}
