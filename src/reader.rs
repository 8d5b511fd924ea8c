//! Lock-free, zero-copy readers.
//!
//! A [`Reader`] is a cheap `Clone + Send + Sync` handle. [`Reader::snapshot`] loads the current
//! [`Version`] from `ArcSwap` (no lock shared with the writer) and the published length of the
//! last run; everything read through the [`View`] borrows bytes straight from the mapped
//! segments, which the snapshot keeps alive.

use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use zerocopy::FromBytes;

use crate::error::{Error, Result};
use crate::format::{RecordHeader, RECORD_HEADER_SIZE};
use crate::notify::Notify;
use crate::record::check;
use crate::segment::Segment;
use crate::version::Version;

mod spans;
pub use spans::{FileRange, FrameBatch, FrameSpan};

/// A handle for reading the log from any thread while the writer appends.
#[derive(Debug, Clone)]
pub struct Reader {
    pub(crate) current: Arc<ArcSwap<Version>>,
    /// Where [`Reader::wait_for`] parks; the log's writer wakes it at every publication.
    pub(crate) notify: Arc<Notify>,
}

impl Reader {
    /// A consistent view of the log as of now.
    pub fn view(&self) -> View {
        View::new(self.current.load_full())
    }

    /// Waits until entry `index` has been appended (the log's next index is past it), for at
    /// most `timeout`; returns whether it has. For a replication or apply loop that has sent
    /// or applied everything it can see: it sleeps until the writer publishes, instead of
    /// polling [`Reader::view`]. Any publication of the log wakes it to look again (a group of
    /// a shared log is woken by every group's writes). A writer with no waiting reader pays
    /// one load per call: the waiter, not the writer, makes the memory barrier (Linux's
    /// `membarrier`; where it is missing, both sides fence).
    ///
    /// The entry may still be undurable when this returns (a leader may send entries before
    /// its own flush completes); it may also be gone again, truncated or purged, when the
    /// caller reads it, which its [`View`] then says.
    ///
    /// ```
    /// # fn main() -> raft_mmap_log::Result<()> {
    /// use std::time::Duration;
    /// let dir = tempfile::tempdir().unwrap();
    /// let mut store = raft_mmap_log::Store::open(dir.path(), raft_mmap_log::Config::default())?;
    /// let reader = store.reader();
    /// let follower = std::thread::spawn(move || {
    ///     assert!(reader.wait_for(0, Duration::from_secs(10)));
    ///     reader.view().get(0).map(|p| p.to_vec())
    /// });
    /// store.append(0, b"first")?;
    /// assert_eq!(follower.join().unwrap().as_deref(), Some(&b"first"[..]));
    /// assert!(!store.reader().wait_for(1, Duration::from_millis(1)));
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_for(&self, index: u64, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now().checked_add(timeout);
        self.notify
            .wait_until(deadline, || self.view().next_index() > index)
    }

    /// First retained index (equal to [`Reader::next_index`] when the log is empty).
    pub fn first_index(&self) -> u64 {
        self.view().first_index()
    }

    /// Last index, `None` when the log is empty.
    pub fn last_index(&self) -> Option<u64> {
        self.view().last_index()
    }

    /// One past the last index.
    pub fn next_index(&self) -> u64 {
        self.view().next_index()
    }
}

/// One consistent version of the log. Slices read from it live as long as it does; holding a
/// snapshot keeps its segments mapped (even purged ones), so drop it when done.
#[derive(Debug, Clone)]
pub struct View {
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

impl View {
    pub(crate) fn new(version: Arc<Version>) -> Self {
        let tail_len = version.tail_len();
        let next = match version.runs.last() {
            Some(last) => (last.run.first() + tail_len).max(version.first),
            None => version.next,
        };
        View {
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

    /// Number of segment files this view keeps mapped.
    pub fn segment_count(&self) -> usize {
        self.version.segments.len()
    }

    /// Total size of the segment files this view keeps mapped, in bytes.
    pub fn segment_bytes(&self) -> u64 {
        self.version.segments.iter().map(|s| s.size()).sum()
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

    /// The record of slot `slot` of run `pos`: its header, and its body borrowed exactly
    /// (never a byte past it, which may be unpublished).
    #[inline]
    fn record_at(&self, pos: usize, slot: u64) -> Option<(&RecordHeader, &[u8])> {
        let run = &self.version.runs[pos].run;
        record_in(run.segment(), run.offset(slot)?)
    }

    #[inline]
    fn payload_at(&self, pos: usize, slot: u64) -> Option<&[u8]> {
        self.record_at(pos, slot).map(|(_, body)| body)
    }

    /// Position of entry `index`: (run position, slot), if it is in this view.
    #[inline]
    fn locate(&self, index: u64) -> Option<(usize, u64)> {
        if index < self.version.first || index >= self.next {
            return None;
        }
        let pos = self.version.run_for(index)?;
        let slot = index - self.version.runs[pos].run.first();
        (slot < self.run_len(pos)).then_some((pos, slot))
    }

    /// The payload of entry `index`, borrowed from the map.
    ///
    /// The bytes are not checked against their CRC here (recovery checked every record when
    /// the log was opened, and the writer wrote the rest); [`View::get_checked`] does.
    pub fn get(&self, index: u64) -> Option<&[u8]> {
        let (pos, slot) = self.locate(index)?;
        self.payload_at(pos, slot)
    }

    /// Like [`View::get`], and verifies the record's CRC32C first: a bit that flipped on
    /// disk or in memory since the log was opened is [`Error::Corrupt`] naming the segment
    /// file and the record's offset, never returned as data. Costs one CRC pass over the
    /// payload (about 7 GB/s on one core); meant for replication senders and audits.
    pub fn get_checked(&self, index: u64) -> Result<Option<&[u8]>> {
        let Some((pos, slot)) = self.locate(index) else {
            return Ok(None);
        };
        let run = &self.version.runs[pos].run;
        let seg = run.segment();
        let offset = u64::from(run.offset(slot).unwrap_or(0));
        let corrupt = |why: &str| {
            Error::corrupt(
                seg.path(),
                offset,
                format!("entry {index}: {why} (the record changed after the log was opened)"),
            )
        };
        let (h, body) = self
            .record_at(pos, slot)
            .ok_or_else(|| corrupt("record length runs past the end of the segment"))?;
        match check(seg.seed(), h, body) {
            Ok(()) if h.arg.get() == index => Ok(Some(body)),
            Ok(()) => Err(corrupt(&format!("the record names index {}", h.arg.get()))),
            Err(why) => Err(corrupt(why)),
        }
    }

    /// The entries in `range` (clamped to the log), each checked as [`View::get_checked`]
    /// checks it. Stops being useful at the first error, which names file and offset.
    pub fn range_checked(
        &self,
        range: impl RangeBounds<u64>,
    ) -> impl Iterator<Item = Result<Entry<'_>>> + '_ {
        let it = self.range(range);
        let (start, end) = (it.next, it.end);
        (start..end).map(move |index| match self.get_checked(index) {
            Ok(Some(payload)) => Ok(Entry { index, payload }),
            Ok(None) => Err(Error::corrupt(
                "",
                0,
                format!("entry {index} is missing from a view that holds it"),
            )),
            Err(e) => Err(e),
        })
    }

    /// `range` as `start..end` within the log (`start >= end` when nothing of it is held).
    pub(crate) fn clamp(&self, range: &impl RangeBounds<u64>) -> (u64, u64) {
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
        (start, end)
    }

    /// The entries in `range` (clamped to the log), in order, borrowed from the map.
    pub fn range(&self, range: impl RangeBounds<u64>) -> Entries<'_> {
        let (start, end) = self.clamp(&range);
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
            slots: [].iter(),
            region: &[],
            base: 0,
        }
    }
}

/// The record at `offset` of `seg`: its header, and its body borrowed exactly (never a byte
/// past it, which may be unpublished). `offset` must come from a slot published before the
/// view that holds `seg` was built.
#[inline]
fn record_in(seg: &Segment, offset: u32) -> Option<(&RecordHeader, &[u8])> {
    let offset = offset as usize;
    let size = seg.size() as usize;
    let body_at = offset.checked_add(RECORD_HEADER_SIZE)?;
    if body_at > size {
        return None;
    }
    // SAFETY: `offset` comes from a published slot (loaded with Acquire before the view was
    // built), so the record header at `offset` was completely written before publication and
    // is never written again while mapped (I1, I3). The range is inside the map (checked
    // above). The segment is kept mapped by the `Arc<Run>` -> `Arc<Segment>` held by the
    // view's version, which outlives the returned borrow (I2).
    let head = unsafe { seg.bytes(offset, RECORD_HEADER_SIZE) };
    let (h, _) = RecordHeader::ref_from_prefix(head).ok()?;
    let len = h.len.get() as usize;
    if len > size - body_at {
        return None;
    }
    // SAFETY: as above: the body was written before the header's slot was published, and
    // `body_at..body_at + len` is inside the map (checked above).
    let body = unsafe { seg.bytes(body_at, len) };
    Some((h, body))
}

/// Iterator over [`View::range`]. Allocates nothing.
#[derive(Debug)]
pub struct Entries<'a> {
    snap: &'a View,
    next: u64,
    end: u64,
    /// Position of the run holding `next`, once `slots` is empty.
    pos: usize,
    /// Offsets of the next entries: published slots of the current run, within one index
    /// chunk and within the range. Refilled by [`batch`] when empty, so the usual
    /// step is one slot load and two bounds checks.
    slots: std::slice::Iter<'a, AtomicU32>,
    /// The bytes of the segment from the first record of `slots` to the end of the last
    /// one: all written before they were published, so never written again (I1).
    region: &'a [u8],
    /// Segment offset of `region[0]`.
    base: u32,
}

/// The next entries of [`Entries`] from one run: see its fields.
struct Batch<'a> {
    pos: usize,
    slots: std::slice::Iter<'a, AtomicU32>,
    region: &'a [u8],
    base: u32,
}

/// The entries of `snap` from `next` on (at most up to `end`), from the run at or after
/// position `pos` that holds `next`: their slots and the bytes of their records. `None` at the
/// end of the range (or of what the view holds). Takes and returns plain values, so that the
/// iterator's fields can stay in registers while it runs.
#[cold]
fn batch(snap: &View, next: u64, end: u64, mut pos: usize) -> Option<Batch<'_>> {
    if next >= end {
        return None;
    }
    loop {
        let r = snap.version.runs.get(pos)?;
        let slot = next.checked_sub(r.run.first())?;
        let len = snap.run_len(pos);
        if slot < len {
            let slots = r.run.slots(slot, (len - slot).min(end - next));
            let first = slots.first()?.load(Ordering::Relaxed);
            let last = slots.last()?.load(Ordering::Relaxed);
            let seg = r.run.segment();
            // Records of one run lie in slot order in the segment.
            let (_, body) = record_in(seg, last).filter(|_| first <= last)?;
            let end_of_last = last as usize + RECORD_HEADER_SIZE + body.len();
            // SAFETY: `first..end_of_last` runs from the first record of published slots
            // (loaded with Acquire before this view was built) to the end of the last one:
            // every byte of it was written before publication and is never written again
            // while mapped (I1, I3); `record_in` checked that the last record lies inside the
            // map. The segment stays mapped as long as the view's version holds it (I2).
            let region = unsafe { seg.bytes(first as usize, end_of_last - first as usize) };
            return Some(Batch {
                pos,
                slots: slots.iter(),
                region,
                base: first,
            });
        }
        pos += 1;
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Entry<'a>;

    #[inline]
    fn next(&mut self) -> Option<Entry<'a>> {
        let slot = match self.slots.next() {
            Some(s) => s,
            None => {
                let b = batch(self.snap, self.next, self.end, self.pos)?;
                self.pos = b.pos;
                self.slots = b.slots;
                self.region = b.region;
                self.base = b.base;
                self.slots.next()?
            }
        };
        // Below `base` wraps to a large offset, which the bounds checks below refuse.
        let at = slot.load(Ordering::Relaxed).wrapping_sub(self.base) as usize;
        let head = self.region.get(at..at + RECORD_HEADER_SIZE)?;
        let (h, _) = RecordHeader::ref_from_prefix(head).ok()?;
        let body_at = at + RECORD_HEADER_SIZE;
        let payload = self.region.get(body_at..body_at + h.len.get() as usize)?;
        let index = self.next;
        self.next += 1;
        Some(Entry { index, payload })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = (self.end - self.next) as usize;
        (n, Some(n))
    }
}
