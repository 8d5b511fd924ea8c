//! Lock-free, zero-copy readers.
//!
//! A [`Reader`] is a cheap `Clone + Send + Sync` handle. [`Reader::snapshot`] loads the current
//! [`Version`] from `ArcSwap` (no lock shared with the writer) and the published length of the
//! last run; everything read through the [`Snapshot`] borrows bytes straight from the mapped
//! segments, which the snapshot keeps alive.

use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::record::trusted_body;
use crate::segment::Segment;
use crate::version::Version;

/// A handle for reading the log from any thread while the writer appends.
#[derive(Debug, Clone)]
pub struct Reader {
    pub(crate) current: Arc<ArcSwap<Version>>,
}

impl Reader {
    /// A consistent view of the log as of now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::new(self.current.load_full())
    }

    /// First retained index (equal to [`Reader::next_index`] when the log is empty).
    pub fn first_index(&self) -> u64 {
        self.snapshot().first_index()
    }

    /// Last index, `None` when the log is empty.
    pub fn last_index(&self) -> Option<u64> {
        self.snapshot().last_index()
    }

    /// One past the last index.
    pub fn next_index(&self) -> u64 {
        self.snapshot().next_index()
    }
}

/// One consistent version of the log. Slices read from it live as long as it does; holding a
/// snapshot keeps its segments mapped (even purged ones), so drop it when done.
#[derive(Debug, Clone)]
pub struct Snapshot {
    version: Arc<Version>,
    /// Slots of the last run visible in this snapshot.
    tail_len: u64,
    next: u64,
}

/// One log entry borrowed from a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Its log index.
    pub index: u64,
    /// Its payload, borrowed from the mapped segment.
    pub payload: &'a [u8],
}

impl Snapshot {
    pub(crate) fn new(version: Arc<Version>) -> Self {
        let (tail_len, next) = match version.runs.last() {
            Some(last) => {
                let len = last.len();
                (len, (last.run.first() + len).max(version.first))
            }
            None => (0, version.next),
        };
        Snapshot {
            version,
            tail_len,
            next,
        }
    }

    /// First retained index.
    pub fn first_index(&self) -> u64 {
        self.version.first
    }

    /// One past the last index.
    pub fn next_index(&self) -> u64 {
        self.next
    }

    /// Last index, `None` when empty.
    pub fn last_index(&self) -> Option<u64> {
        (self.next > self.version.first).then(|| self.next - 1)
    }

    /// Number of entries.
    pub fn len(&self) -> u64 {
        self.next - self.version.first
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Value of meta key `key` as of this snapshot.
    pub fn meta(&self, key: u64) -> Option<&[u8]> {
        self.version.metas.get(&key).map(|v| &v[..])
    }

    /// The live segments, oldest first.
    pub fn segments(&self) -> &[Arc<Segment>] {
        &self.version.segments
    }

    /// Heap bytes of the position index.
    pub fn index_heap_bytes(&self) -> usize {
        self.version.index_heap_bytes()
    }

    #[inline]
    fn run_len(&self, pos: usize) -> u64 {
        if pos + 1 == self.version.runs.len() {
            self.tail_len
        } else {
            self.version.runs[pos].len()
        }
    }

    #[inline]
    fn payload_at(&self, pos: usize, slot: u64) -> Option<&[u8]> {
        let run = &self.version.runs[pos].run;
        let offset = run.offset(slot)? as usize;
        let seg = run.segment();
        let avail = (seg.size() as usize).checked_sub(offset)?;
        // SAFETY: `offset` comes from a published slot (slot < run_len, loaded with Acquire
        // before this snapshot was built), so the record at `offset` was completely written
        // before publication and is never written again while mapped (I1, I3). The range is
        // inside the map (`avail`). The segment is kept mapped by the `Arc<Run>` -> `Arc<Segment>`
        // held by `self.version`, which outlives the returned borrow of `self` (I2).
        let bytes = unsafe { seg.bytes(offset, avail) };
        trusted_body(bytes)
    }

    /// The payload of entry `index`, borrowed from the map.
    pub fn get(&self, index: u64) -> Option<&[u8]> {
        if index < self.version.first || index >= self.next {
            return None;
        }
        let pos = self.version.run_for(index)?;
        let slot = index - self.version.runs[pos].run.first();
        if slot >= self.run_len(pos) {
            return None;
        }
        self.payload_at(pos, slot)
    }

    /// The entries in `range` (clamped to the log), in order, borrowed from the map.
    pub fn range(&self, range: impl RangeBounds<u64>) -> Entries<'_> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        }
        .max(self.version.first);
        let end = match range.end_bound() {
            Bound::Included(&e) => e.saturating_add(1),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => u64::MAX,
        }
        .min(self.next);
        let pos = if start < end {
            self.version.run_for(start)
        } else {
            None
        };
        Entries {
            snap: self,
            next: start,
            end: if pos.is_some() { end } else { start },
            pos: pos.unwrap_or(0),
        }
    }
}

/// Iterator over [`Snapshot::range`]. Allocates nothing.
#[derive(Debug)]
pub struct Entries<'a> {
    snap: &'a Snapshot,
    next: u64,
    end: u64,
    pos: usize,
}

impl<'a> Iterator for Entries<'a> {
    type Item = Entry<'a>;

    #[inline]
    fn next(&mut self) -> Option<Entry<'a>> {
        if self.next >= self.end {
            return None;
        }
        let runs = &self.snap.version.runs;
        loop {
            let run = runs.get(self.pos)?;
            let slot = self.next.checked_sub(run.run.first())?;
            if slot < self.snap.run_len(self.pos) {
                let payload = self.snap.payload_at(self.pos, slot)?;
                let e = Entry {
                    index: self.next,
                    payload,
                };
                self.next += 1;
                return Some(e);
            }
            self.pos += 1;
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = (self.end - self.next) as usize;
        (n, Some(n))
    }
}
