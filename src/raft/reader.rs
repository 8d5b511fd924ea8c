//! Typed, zero-copy readers of a [`super::RaftLog`].

use std::marker::PhantomData;
use std::ops::RangeBounds;

use super::state::{decode_state, split_entry, RaftState};
use super::types::Types;
use crate::error::Result;
use crate::reader::{Entries, FrameBatch, Reader, View};

/// A `Clone + Send + Sync` handle that reads the log from any thread without blocking the
/// writer.
pub struct RaftReader<T: Types> {
    reader: Reader,
    _t: PhantomData<fn() -> T>,
}

impl<T: Types> Clone for RaftReader<T> {
    fn clone(&self) -> Self {
        RaftReader {
            reader: self.reader.clone(),
            _t: PhantomData,
        }
    }
}

impl<T: Types> std::fmt::Debug for RaftReader<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftReader").finish_non_exhaustive()
    }
}

impl<T: Types> RaftReader<T> {
    pub(crate) fn new(reader: Reader) -> Self {
        RaftReader {
            reader,
            _t: PhantomData,
        }
    }

    /// A consistent view of the log as of now.
    pub fn view(&self) -> RaftView<T> {
        RaftView {
            snap: self.reader.view(),
            _t: PhantomData,
        }
    }

    /// Waits until the entry at `index` has been appended, for at most `timeout`; returns
    /// whether it has. See [`Reader::wait_for`]: a replication loop sleeps here instead of
    /// polling [`RaftReader::view`].
    pub fn wait_for(&self, index: u64, timeout: std::time::Duration) -> bool {
        self.reader.wait_for(index, timeout)
    }

    /// The untyped reader underneath.
    pub fn raw(&self) -> &Reader {
        &self.reader
    }
}

/// One consistent version of the log; payloads borrow from it.
pub struct RaftView<T: Types> {
    snap: View,
    _t: PhantomData<fn() -> T>,
}

impl<T: Types> std::fmt::Debug for RaftView<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftView")
            .field("first", &self.snap.first_index())
            .field("next", &self.snap.next_index())
            .finish()
    }
}

impl<T: Types> RaftView<T> {
    /// First index in the log.
    pub fn first_index(&self) -> u64 {
        self.snap.first_index()
    }

    /// One past the last index.
    pub fn next_index(&self) -> u64 {
        self.snap.next_index()
    }

    /// Whether the log holds no entry.
    pub fn is_empty(&self) -> bool {
        self.snap.is_empty()
    }

    /// The entry at `index`: its log id and its payload borrowed from the map.
    pub fn get(&self, index: u64) -> Result<Option<(T::LogId, &[u8])>> {
        match self.snap.get(index) {
            Some(body) => split_entry::<T>(index, body).map(Some),
            None => Ok(None),
        }
    }

    /// Log id of the entry at `index`.
    pub fn log_id(&self, index: u64) -> Result<Option<T::LogId>> {
        Ok(self.get(index)?.map(|(id, _)| id))
    }

    /// Entries in `range` (clamped to the log), in order. An entry whose log id does not
    /// decode is an error naming its index; it is never skipped.
    pub fn read(&self, range: impl RangeBounds<u64>) -> RaftEntries<'_, T> {
        RaftEntries {
            inner: self.snap.range(range),
            _t: PhantomData,
        }
    }

    /// The entries of `range` (clamped to the log) as replication frames, borrowed from the
    /// map: see [`View::frames`]. The follower stores them with
    /// [`RaftLog::append_frames`](crate::raft::RaftLog::append_frames); the log ids travel
    /// inside the entry bodies, so nothing is encoded here.
    pub fn frames(&self, range: impl RangeBounds<u64>) -> Result<FrameBatch<'_>> {
        self.snap.frames(range)
    }

    /// [`RaftView::frames`] that verifies every record it sends first
    /// ([`View::frames_checked`]).
    pub fn frames_checked(&self, range: impl RangeBounds<u64>) -> Result<FrameBatch<'_>> {
        self.snap.frames_checked(range)
    }

    /// The Raft state as of this snapshot.
    pub fn state(&self) -> Result<RaftState<T>> {
        let last = self
            .snap
            .last_index()
            .and_then(|i| self.snap.get(i).map(|b| (i, b)));
        decode_state::<T>(|k| self.snap.meta(k), last)
    }

    /// The untyped snapshot underneath.
    pub fn raw(&self) -> &View {
        &self.snap
    }
}

/// Iterator of [`RaftView::read`].
pub struct RaftEntries<'a, T: Types> {
    inner: Entries<'a>,
    _t: PhantomData<fn() -> T>,
}

impl<'a, T: Types> Iterator for RaftEntries<'a, T> {
    type Item = Result<(T::LogId, &'a [u8])>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let e = self.inner.next()?;
        Some(split_entry::<T>(e.index, e.payload))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}
