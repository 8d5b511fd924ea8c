//! Meta room: how large the user data and the snapshot meta may be, so that the fixed-size
//! values (vote, committed, purged, and the snapshot meta's log id) always fit.
//!
//! The engine keeps all meta values, encoded as a checkpoint body (a [`CheckpointHead`], then
//! per value a [`MetaItemHead`] and the value), within a quarter of a segment, and refuses a
//! write that would pass it (`Error::MetaTooLarge`; see `Store::put_meta`). Without a
//! reservation, large user data would make every later vote, commit or purge fail.

use std::mem::size_of;

use super::state::{META_COMMITTED, META_PURGED, META_SNAPSHOT, META_USER_DATA, META_VOTE};
use super::types::Types;
use crate::format::{CheckpointHead, MetaItemHead};
use crate::store::Store;

/// Encoded length of an empty `Vec<u8>` (its `u32` length).
const EMPTY_BYTES_LEN: usize = 4;

/// Bytes counted for meta `key` other than its item head, or `None` if it takes no room: the
/// declared largest encoding (or the stored one, if that is larger) for the fixed-size values,
/// the stored encoding for the user data.
fn reserved<T: Types>(store: &Store, key: u64) -> Option<usize> {
    let stored = store.meta(key).map(<[u8]>::len);
    let declared = match key {
        META_VOTE => T::MAX_VOTE_LEN,
        META_COMMITTED | META_PURGED => T::MAX_LOG_ID_LEN,
        META_SNAPSHOT => T::MAX_LOG_ID_LEN.saturating_add(EMPTY_BYTES_LEN),
        _ => return stored,
    };
    Some(stored.map_or(declared, |s| s.max(declared)))
}

/// The largest encoded size the value of `key` (user data or snapshot meta) may have so that
/// the vote, committed, purged and snapshot meta keep their room.
pub(crate) fn room<T: Types>(store: &Store, key: u64) -> usize {
    let limit = store.config().meta_limit();
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
    .filter_map(|k| reserved::<T>(store, k))
    .fold(
        size_of::<CheckpointHead>().saturating_add(item),
        |acc, n| acc.saturating_add(item).saturating_add(n),
    );
    limit.saturating_sub(used)
}

/// Whether a new value of `key` that encodes to `size` bytes fits: within [`room`], or no
/// larger than the stored value (shrinking is always allowed).
pub(crate) fn fits<T: Types>(store: &Store, key: u64, size: usize) -> Result<(), usize> {
    let room = room::<T>(store, key);
    let stored = store.meta(key).map_or(0, <[u8]>::len);
    if size <= room || size <= stored {
        Ok(())
    } else {
        Err(room)
    }
}
