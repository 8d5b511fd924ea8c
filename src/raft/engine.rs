//! What a [`RaftLog`](super::RaftLog) writes to: a [`Store`] (a log with a directory of its
//! own) or a [`Group`] of a shared log ([`crate::groups`]). The Raft layer is the same for
//! both; only these calls differ.

use crate::error::{Error, Result};
use crate::frames::Frame;
use crate::groups::{Group, RaftClaim};
use crate::reader::Reader;
use crate::store::{Before, Landed, Placed, Received, Store};

mod sealed {
    /// Only the crate's engines implement [`super::LogEngine`].
    pub trait Sealed {}
    impl Sealed for crate::store::Store {}
    impl Sealed for crate::groups::Group {}
}

/// The engine under a [`RaftLog`](super::RaftLog): [`Store`] (the default: a log with its own
/// directory) or [`Group`] (one group of a shared log, many Raft groups in one directory).
/// Implemented by these two only.
#[allow(private_bounds)] // the calls are crate-private; the trait is sealed
pub trait LogEngine: sealed::Sealed + Calls + Send {}

impl LogEngine for Store {}
impl LogEngine for Group {}

/// The engine calls the Raft layer makes (each one `Store`'s, for a group through its log).
// The combined calls serve the raft-rs adapter.
#[cfg_attr(not(feature = "raft-rs"), allow(dead_code))]
pub(crate) trait Calls {
    /// Holds the log for one Raft log at a time (a group of a shared log; nothing to hold
    /// for a `Store`, which has its directory's lock).
    fn claim_for_raft(&self) -> Result<Option<RaftClaim>>;
    fn reader(&self) -> Reader;
    fn first_index(&self) -> u64;
    fn next_index(&self) -> u64;
    /// Length of meta value `key`.
    fn meta_len(&self, key: u64) -> Option<usize>;
    /// Bytes the meta values of this log may take in a checkpoint (for a group: what the
    /// other groups' checkpoints leave of the shared budget).
    fn meta_limit(&self) -> usize;
    /// The largest payload an entry may have.
    fn max_payload(&self) -> usize;
    /// The segment size the log was opened with.
    fn segment_size(&self) -> u64;
    fn append_parts<'a, I>(&mut self, entries: I) -> Result<()>
    where
        I: Iterator<Item = (u64, &'a [u8], &'a [u8])> + Clone;
    fn append_parts_after<'a, I>(&mut self, before: Before<'_>, entries: I) -> Result<()>
    where
        I: Iterator<Item = (u64, &'a [u8], &'a [u8])> + Clone;
    fn write_frames(&mut self, truncate_from: Option<u64>, frames: &[Frame<'_>]) -> Result<()>;
    /// Reads a received batch into the map where it can (`store::receive`), else a buffer.
    fn receive<F>(&mut self, len: usize, fill: F) -> Result<Received>
    where
        F: FnOnce(&mut [u8]) -> std::io::Result<()>;
    /// Commits a landed batch's checked frames in place.
    fn commit_landed(&mut self, landed: Landed, placed: &[Placed]) -> Result<()>;
    /// Gives a landed batch back (zeroed, the call undone); fails only if undoing it failed.
    fn release(&mut self, landed: Landed) -> Result<()>;
    fn put_meta(&mut self, key: u64, value: &[u8]) -> Result<()>;
    fn remove_meta(&mut self, key: u64) -> Result<bool>;
    /// The log's heap estimate (for a group: the whole shared log's).
    fn estimated_memory(&self) -> usize;
    /// The log's compaction hint (for a group: the whole shared log's).
    fn needs_compaction(&self) -> bool;
    fn put_metas(&mut self, metas: &[(u64, &[u8])]) -> Result<()>;
    fn truncate_from(&mut self, from: u64) -> Result<()>;
    fn purge_to_with_meta(&mut self, first: u64, metas: &[(u64, &[u8])]) -> Result<()>;
    fn reset_to_with_meta(&mut self, first: u64, metas: &[(u64, &[u8])]) -> Result<()>;
    fn flush(&mut self, callback: impl FnOnce(Result<()>) + Send + 'static) -> Result<()>;
    fn sync(&mut self) -> Result<()>;
}

impl Calls for Store {
    fn claim_for_raft(&self) -> Result<Option<RaftClaim>> {
        Ok(None)
    }
    fn reader(&self) -> Reader {
        Store::reader(self)
    }
    fn first_index(&self) -> u64 {
        Store::first_index(self)
    }
    fn next_index(&self) -> u64 {
        Store::next_index(self)
    }
    fn meta_len(&self, key: u64) -> Option<usize> {
        self.meta(key).map(<[u8]>::len)
    }
    fn meta_limit(&self) -> usize {
        self.group_meta_limit()
    }
    fn max_payload(&self) -> usize {
        Store::max_payload(self)
    }
    fn segment_size(&self) -> u64 {
        self.config().segment_size
    }
    fn append_parts<'a, I>(&mut self, entries: I) -> Result<()>
    where
        I: Iterator<Item = (u64, &'a [u8], &'a [u8])> + Clone,
    {
        Store::append_parts(self, entries)
    }
    fn append_parts_after<'a, I>(&mut self, before: Before<'_>, entries: I) -> Result<()>
    where
        I: Iterator<Item = (u64, &'a [u8], &'a [u8])> + Clone,
    {
        Store::append_parts_after(self, before, entries)
    }
    fn write_frames(&mut self, truncate_from: Option<u64>, frames: &[Frame<'_>]) -> Result<()> {
        Store::write_frames(self, truncate_from, frames)
    }
    fn receive<F>(&mut self, len: usize, fill: F) -> Result<Received>
    where
        F: FnOnce(&mut [u8]) -> std::io::Result<()>,
    {
        Store::receive(self, len, fill)
    }
    fn commit_landed(&mut self, landed: Landed, placed: &[Placed]) -> Result<()> {
        Store::commit_landed(self, landed, placed)
    }
    fn release(&mut self, landed: Landed) -> Result<()> {
        Store::release(self, landed)
    }
    fn put_meta(&mut self, key: u64, value: &[u8]) -> Result<()> {
        Store::put_meta(self, key, value)
    }
    fn put_metas(&mut self, metas: &[(u64, &[u8])]) -> Result<()> {
        Store::put_metas(self, metas)
    }
    fn truncate_from(&mut self, from: u64) -> Result<()> {
        Store::truncate_from(self, from)
    }
    fn purge_to_with_meta(&mut self, first: u64, metas: &[(u64, &[u8])]) -> Result<()> {
        Store::purge_to_with_meta(self, first, metas)
    }
    fn reset_to_with_meta(&mut self, first: u64, metas: &[(u64, &[u8])]) -> Result<()> {
        Store::reset_to_with_meta(self, first, metas)
    }
    fn estimated_memory(&self) -> usize {
        Store::estimated_memory(self)
    }
    fn remove_meta(&mut self, key: u64) -> Result<bool> {
        Store::remove_meta(self, key)
    }
    fn needs_compaction(&self) -> bool {
        Store::needs_compaction(self)
    }
    fn flush(&mut self, callback: impl FnOnce(Result<()>) + Send + 'static) -> Result<()> {
        Store::flush(self, callback)
    }
    fn sync(&mut self) -> Result<()> {
        Store::sync(self)
    }
}

impl Calls for Group {
    fn claim_for_raft(&self) -> Result<Option<RaftClaim>> {
        Group::claim_for_raft(self).map(Some)
    }
    fn reader(&self) -> Reader {
        Group::reader(self)
    }
    fn first_index(&self) -> u64 {
        Group::first_index(self)
    }
    fn next_index(&self) -> u64 {
        Group::next_index(self)
    }
    fn meta_len(&self, key: u64) -> Option<usize> {
        self.with_store(|s| s.meta(key).map(<[u8]>::len))
    }
    fn meta_limit(&self) -> usize {
        self.with_store(|s| s.group_meta_limit())
    }
    fn max_payload(&self) -> usize {
        Group::max_payload(self)
    }
    fn segment_size(&self) -> u64 {
        self.with_store(|s| s.config().segment_size)
    }
    fn append_parts<'a, I>(&mut self, entries: I) -> Result<()>
    where
        I: Iterator<Item = (u64, &'a [u8], &'a [u8])> + Clone,
    {
        self.with_store(|s| s.append_parts(entries))
    }
    fn append_parts_after<'a, I>(&mut self, before: Before<'_>, entries: I) -> Result<()>
    where
        I: Iterator<Item = (u64, &'a [u8], &'a [u8])> + Clone,
    {
        self.with_store(|s| s.append_parts_after(before, entries))
    }
    fn write_frames(&mut self, truncate_from: Option<u64>, frames: &[Frame<'_>]) -> Result<()> {
        self.with_store(|s| s.write_frames(truncate_from, frames))
    }
    /// A group's batch is read into a buffer and copied (its records follow a group record,
    /// and the log's lock is not held while a socket is read).
    fn receive<F>(&mut self, len: usize, fill: F) -> Result<Received>
    where
        F: FnOnce(&mut [u8]) -> std::io::Result<()>,
    {
        let mut buf = vec![0u8; len];
        fill(&mut buf).map_err(|e| Error::Receive {
            len,
            source: std::sync::Arc::new(e),
        })?;
        Ok(Received::Buffered(buf))
    }
    fn commit_landed(&mut self, _landed: Landed, _placed: &[Placed]) -> Result<()> {
        // `receive` above never lands a batch in the map.
        Err(Error::InvalidConfig(
            "a batch landed in a log's map is committed by that log".into(),
        ))
    }
    fn release(&mut self, _landed: Landed) -> Result<()> {
        Ok(())
    }
    fn put_meta(&mut self, key: u64, value: &[u8]) -> Result<()> {
        Group::put_meta(self, key, value)
    }
    fn put_metas(&mut self, metas: &[(u64, &[u8])]) -> Result<()> {
        self.with_store(|s| s.put_metas(metas))
    }
    fn truncate_from(&mut self, from: u64) -> Result<()> {
        Group::truncate_from(self, from)
    }
    fn purge_to_with_meta(&mut self, first: u64, metas: &[(u64, &[u8])]) -> Result<()> {
        Group::purge_to_with_meta(self, first, metas)
    }
    fn reset_to_with_meta(&mut self, first: u64, metas: &[(u64, &[u8])]) -> Result<()> {
        Group::reset_to_with_meta(self, first, metas)
    }
    fn estimated_memory(&self) -> usize {
        self.with_store(|s| s.estimated_memory())
    }
    fn remove_meta(&mut self, key: u64) -> Result<bool> {
        Group::remove_meta(self, key)
    }
    fn needs_compaction(&self) -> bool {
        self.with_store(|s| s.needs_compaction())
    }
    fn flush(&mut self, callback: impl FnOnce(Result<()>) + Send + 'static) -> Result<()> {
        Group::flush(self, callback)
    }
    fn sync(&mut self) -> Result<()> {
        Group::sync(self)
    }
}
