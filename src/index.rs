//! The in-memory position index: log index -> byte offset in a segment.
//!
//! A [`Run`] maps a range of consecutive log indexes stored in one segment to their record
//! offsets, 4 bytes per entry. It is append-only and readable without locks while the writer
//! appends: slots live in buckets of atomics that are allocated once and never move, and the
//! number of readable slots is published with a Release store after the slots are written
//! (invariant I3). A slot is only written while unpublished (a failed batch that is undone
//! leaves written but unpublished slots, which the next batch overwrites); truncation never
//! rewrites a published slot, it freezes the run at a shorter length inside a new
//! [`crate::version::Version`] and starts a new run.
//!
//! Bucket sizes double: bucket `k` holds `FIRST << k` slots. A shared log's group writes a
//! few entries into each segment, so its run costs the `Run` itself (which holds the cells of
//! the first four buckets) and one 64-byte bucket; a run that fills a 64 MiB segment needs 18
//! buckets, the cells of those past the fourth in one table.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use zerocopy::FromZeros;

use crate::format::{RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE};
use crate::segment::Segment;

/// Slots of bucket 0.
const FIRST: usize = 16;

type Bucket = Box<[AtomicU32]>;

/// The bucket that holds slot `slot`, and the slot's position in it.
#[inline]
fn locate(slot: usize) -> (usize, usize) {
    let q = slot / FIRST + 1;
    let k = (usize::BITS - 1 - q.leading_zeros()) as usize;
    (k, slot - bucket_start(k))
}

/// First slot of bucket `k` (`k` at most `usize::BITS - 4`, as [`locate`] gives).
#[inline]
fn bucket_start(k: usize) -> usize {
    FIRST * ((1usize << k) - 1)
}

/// Number of buckets that `slots` slots occupy.
fn buckets_for(slots: usize) -> usize {
    match slots.checked_sub(1) {
        None => 0,
        Some(last) => locate(last).0 + 1,
    }
}

/// Bucket `k`, all slots zero (allocated when its first slot is written). Zeroed by the
/// allocator: a large bucket's pages become resident only as its slots are written.
#[cold]
fn new_bucket(k: usize) -> Bucket {
    let len = FIRST << k;
    <[AtomicU32]>::new_box_zeroed_with_elems(len).unwrap_or_else(|_| {
        std::alloc::handle_alloc_error(
            std::alloc::Layout::array::<AtomicU32>(len).unwrap_or(std::alloc::Layout::new::<u32>()),
        )
    })
}

/// Consecutive entries of one segment.
#[derive(Debug)]
pub struct Run {
    segment: Arc<Segment>,
    first: u64,
    published: AtomicU64,
    /// Buckets `0..INLINE`, in the run itself: a short run allocates no table.
    inline: [OnceLock<Bucket>; INLINE],
    /// Buckets `INLINE..count`, allocated with the first of them.
    more: OnceLock<Box<[OnceLock<Bucket>]>>,
    /// Buckets the run may have: bucket `k` holds slots `bucket_start(k)..bucket_start(k + 1)`.
    count: usize,
}

/// Buckets held in a [`Run`] itself (16 + 32 + 64 + 128 = 240 slots).
const INLINE: usize = 4;

impl Run {
    /// An empty run whose first entry will have log index `first`.
    pub fn new(segment: Arc<Segment>, first: u64) -> Self {
        // A segment cannot hold more records than this, so a run never needs more slots.
        let capacity =
            (segment.size() as usize).saturating_sub(SEGMENT_HEADER_SIZE) / RECORD_HEADER_SIZE + 1;
        Run {
            segment,
            first,
            published: AtomicU64::new(0),
            inline: [const { OnceLock::new() }; INLINE],
            more: OnceLock::new(),
            count: buckets_for(capacity),
        }
    }

    /// The cell of bucket `k`, if the run has that bucket and its cell exists.
    #[inline]
    fn cell(&self, k: usize) -> Option<&OnceLock<Bucket>> {
        if k >= self.count {
            return None;
        }
        match k.checked_sub(INLINE) {
            None => self.inline.get(k),
            Some(j) => self.more.get()?.get(j),
        }
    }

    /// The cell of bucket `k`, its table allocated if needed; `None` past the capacity.
    #[inline]
    fn cell_for_write(&self, k: usize) -> Option<&OnceLock<Bucket>> {
        if k >= INLINE && k < self.count && self.more.get().is_none() {
            let more = self.count - INLINE;
            self.more
                .get_or_init(|| (0..more).map(|_| OnceLock::new()).collect());
        }
        self.cell(k)
    }

    /// The bucket of slot `slot` and the slot's position in it, if allocated.
    #[inline]
    fn bucket(&self, slot: usize) -> Option<(&Bucket, usize)> {
        let (k, i) = locate(slot);
        Some((self.cell(k)?.get()?, i))
    }

    /// Allocates the buckets of slots `0..slots` now (at most the run's capacity), instead of
    /// one at a time as the writer reaches them. The writer calls it when it starts a run in a
    /// new segment, with the length of the run before: growing the heap needs the process's
    /// address-space lock, which the preparer's prefault of the next segment holds for many
    /// milliseconds, so the allocations are made at once, before that prefault starts, and not
    /// in the middle of it.
    pub fn reserve(&self, slots: u64) {
        let n = buckets_for(usize::try_from(slots).unwrap_or(usize::MAX)).min(self.count);
        for k in 0..n {
            if let Some(cell) = self.cell_for_write(k) {
                cell.get_or_init(|| new_bucket(k));
            }
        }
    }

    /// A run filled from offsets found by recovery, all published.
    #[cfg(test)]
    pub fn from_offsets(segment: Arc<Segment>, first: u64, offsets: &[u32]) -> Self {
        let mut collected = Offsets::default();
        for &off in offsets {
            collected.push(off);
        }
        Run::adopt(segment, first, collected, true)
    }

    /// A run made of the offsets recovery collected, all published: it takes their buckets
    /// as its own (nothing is copied, so the offsets are never held twice). `receiving`: the
    /// writer will append to it (the last run of its log, in the active segment), so a
    /// trimmed last bucket gets its full length back; any other run is read only.
    pub fn adopt(segment: Arc<Segment>, first: u64, mut offsets: Offsets, receiving: bool) -> Self {
        if receiving {
            offsets.untrim();
        }
        let mut run = Run::new(segment, first);
        let len = offsets.len as u64;
        // More buckets than the run has room for is not reachable through recovery (a
        // segment holds no more records than that), but a longer run must still hold them.
        run.count = run.count.max(offsets.buckets.len());
        for (k, bucket) in offsets.buckets.into_iter().enumerate() {
            if let Some(cell) = run.cell_for_write(k) {
                let _ = cell.set(bucket);
            }
        }
        run.publish(len);
        run
    }

    /// The segment holding this run's records.
    pub fn segment(&self) -> &Arc<Segment> {
        &self.segment
    }

    /// Log index of slot 0.
    pub fn first(&self) -> u64 {
        self.first
    }

    /// Number of published slots (Acquire: the slots and the bytes they point to are visible).
    #[inline]
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Acquire)
    }

    /// Writes slot `slot`. Writer only; the slot must not be published yet.
    /// Returns false if the slot is beyond the run's capacity (a bug, not reachable through
    /// the store, which sizes runs by the segment).
    #[inline]
    pub fn set(&self, slot: usize, offset: u32) -> bool {
        let (k, i) = locate(slot);
        let Some(cell) = self.cell_for_write(k) else {
            return false;
        };
        let bucket = match cell.get() {
            Some(bucket) => bucket,
            None => cell.get_or_init(|| new_bucket(k)),
        };
        match bucket.get(i) {
            Some(s) => {
                s.store(offset, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Makes slots `0..len` visible to readers (Release).
    #[inline]
    pub fn publish(&self, len: u64) {
        self.published.store(len, Ordering::Release);
    }

    /// Offset of slot `slot`, which the caller has seen published.
    #[inline]
    pub fn offset(&self, slot: u64) -> Option<u32> {
        let (bucket, i) = self.bucket(usize::try_from(slot).ok()?)?;
        Some(bucket.get(i)?.load(Ordering::Relaxed))
    }

    /// Up to `max` slots from `slot` on, within the bucket that holds `slot`: the offsets of
    /// consecutive entries, for an iterator to walk without looking the bucket up again.
    /// Empty if the bucket was never written. The caller has seen `slot..slot + max`
    /// published.
    #[inline]
    pub fn slots(&self, slot: u64, max: u64) -> &[AtomicU32] {
        let Some((bucket, start)) = usize::try_from(slot).ok().and_then(|s| self.bucket(s)) else {
            return &[];
        };
        let len = usize::try_from(max)
            .unwrap_or(usize::MAX)
            .min(bucket.len().saturating_sub(start));
        bucket.get(start..start + len).unwrap_or(&[])
    }

    /// Resident bytes of the index for this run (at most: a large bucket's untouched pages
    /// are not resident).
    pub fn heap_bytes(&self) -> usize {
        let more = self.more.get().map_or(&[][..], |m| &m[..]);
        let slots: usize = (self.inline.iter().chain(more))
            .filter_map(|b| b.get())
            .map(|b| b.len())
            .sum();
        std::mem::size_of::<Run>() + slots * 4 + std::mem::size_of_val(more)
    }
}

/// Record offsets as recovery's scan collects them, in the index's own buckets, so that a
/// [`Run`] adopts them ([`Run::adopt`]) instead of copying: at no point of an open are the
/// offsets held twice. Filled with exclusive access: no atomic operation per offset.
#[derive(Debug, Default)]
pub struct Offsets {
    buckets: Vec<Bucket>,
    len: usize,
}

impl Offsets {
    /// Appends an offset.
    #[inline]
    pub fn push(&mut self, offset: u32) {
        let (k, i) = locate(self.len);
        if k == self.buckets.len() {
            self.buckets.push(new_bucket(k));
        }
        if let Some(slot) = self.buckets.get_mut(k).and_then(|b| b.get_mut(i)) {
            *slot.get_mut() = offset;
            self.len += 1;
        }
    }

    /// Number of offsets.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Offset number `i`.
    #[inline]
    pub fn get(&self, i: usize) -> Option<u32> {
        if i >= self.len {
            return None;
        }
        let (k, i) = locate(i);
        Some(self.buckets.get(k)?.get(i)?.load(Ordering::Relaxed))
    }

    /// Slot `i` for writing (`i` below `len`).
    fn slot_mut(&mut self, i: usize) -> Option<&mut u32> {
        let (k, i) = locate(i);
        Some(self.buckets.get_mut(k)?.get_mut(i)?.get_mut())
    }

    /// Keeps only the offsets of `ranges` (increasing, not overlapping), in order, moved to
    /// the front; frees the buckets no longer needed. Moves in place: a kept offset only ever
    /// moves to a lower position, so nothing is allocated.
    pub fn keep_only(&mut self, ranges: &[std::ops::Range<usize>]) {
        let mut to = 0;
        let mut prev_end = 0;
        for r in ranges {
            let (start, end) = (r.start.max(prev_end), r.end.min(self.len));
            for from in start..end {
                if from != to {
                    if let Some(v) = self.get(from) {
                        if let Some(slot) = self.slot_mut(to) {
                            *slot = v;
                        }
                    }
                }
                to += 1;
            }
            prev_end = prev_end.max(end);
        }
        self.len = to;
        self.trim();
    }

    /// Frees what no offset uses: the buckets past the last offset, and the unused end of
    /// the last bucket (exclusive access: nothing refers into them yet). A bucket's size
    /// doubles, so without this the index of a segment's run could hold up to twice its
    /// offsets. A run that adopts trimmed offsets and still receives entries gets its last
    /// bucket back at full length ([`Run::adopt`]).
    pub fn trim(&mut self) {
        let n = buckets_for(self.len);
        self.buckets.truncate(n);
        self.buckets.shrink_to_fit();
        let used = n.checked_sub(1).map(|k| self.len - bucket_start(k));
        if let (Some(last), Some(used)) = (self.buckets.last_mut(), used) {
            if used < last.len() {
                let mut slots = std::mem::take(last).into_vec();
                slots.truncate(used);
                *last = slots.into_boxed_slice();
            }
        }
    }

    /// Gives a trimmed last bucket back its full length, for a run that receives entries.
    fn untrim(&mut self) {
        let k = self.buckets.len().saturating_sub(1);
        if let Some(last) = self.buckets.last_mut() {
            if last.len() < FIRST << k {
                let mut full = new_bucket(k);
                for (to, from) in full.iter_mut().zip(last.iter_mut()) {
                    *to.get_mut() = *from.get_mut();
                }
                *last = full;
            }
        }
    }

    /// A copy of the offsets of `ranges` (increasing, not overlapping), in order.
    pub fn copy_of(&self, ranges: &[std::ops::Range<usize>]) -> Offsets {
        let mut out = Offsets::default();
        for r in ranges {
            for i in r.clone() {
                if let Some(v) = self.get(i) {
                    out.push(v);
                }
            }
        }
        out.trim();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::PreparedFile;

    /// A 1 MiB segment in a new directory (kept alive by the returned guard).
    fn segment_of_1_mib() -> (tempfile::TempDir, Arc<Segment>) {
        let dir = tempfile::tempdir().unwrap();
        let file = PreparedFile::create(dir.path(), 0, 1 << 20, &crate::segment::test_opts());
        let seg = Segment::install(file.unwrap(), dir.path(), 1).unwrap();
        (dir, Arc::new(seg))
    }

    #[test]
    fn slots_publish_and_read_back() {
        let (_dir, seg) = segment_of_1_mib();
        let run = Run::new(seg.clone(), 100);
        for i in 0..5000u32 {
            assert!(run.set(i as usize, 64 + i * 24));
        }
        assert_eq!(run.published(), 0);
        run.publish(5000);
        assert_eq!(run.offset(4999), Some(64 + 4999 * 24));
        // `slots` stops at the end of a bucket (bucket 6: slots 1008..2032) and at `max`.
        let s = run.slots(2020, 100);
        assert_eq!(s.len(), 12);
        assert_eq!(s[0].load(Ordering::Relaxed), 64 + 2020 * 24);
        assert_eq!(run.slots(1020, 100).len(), 100);
        assert_eq!(run.slots(4990, 3).len(), 3);
        assert_eq!(run.slots(u64::MAX, 3).len(), 0);
        assert_eq!(run.first(), 100);
        // 43,690 slots fit in a 1 MiB segment: 12 buckets, 65,520 slots.
        let capacity: usize = ((1 << 20) - 64) / 24 + 1;
        assert_eq!(buckets_for(capacity), 12);
        assert!(!run.set(bucket_start(12), 1));
        // `reserve` allocates the buckets up to a slot count, never past the capacity.
        let r3 = Run::new(seg.clone(), 0);
        let empty = r3.heap_bytes();
        let cell = std::mem::size_of::<OnceLock<Bucket>>();
        r3.reserve(2500);
        assert_eq!(r3.heap_bytes(), empty + bucket_start(8) * 4 + 8 * cell);
        r3.reserve(u64::MAX);
        assert_eq!(r3.heap_bytes(), empty + bucket_start(12) * 4 + 8 * cell);
        // An empty run costs itself only, and a run of 16 entries one 64-byte bucket more.
        assert!(empty < 256, "{empty} bytes for an empty run");
        assert!(r3.set(capacity - 1, 5));
        let small = Run::new(seg.clone(), 0);
        for i in 0..16 {
            assert!(small.set(i, 64));
        }
        assert_eq!(small.heap_bytes(), empty + 64);
        let r2 = Run::from_offsets(seg, 7, &[64, 88]);
        assert_eq!(r2.published(), 2);
        assert_eq!(r2.offset(1), Some(88));
    }

    #[test]
    fn offsets_keep_only_moves_ranges_to_the_front_and_a_run_adopts_them() {
        let (_dir, seg) = segment_of_1_mib();
        let mut all = Offsets::default();
        for i in 0..5000u32 {
            all.push(i);
        }
        assert_eq!(
            (all.len(), all.get(4999), all.get(5000)),
            (5000, Some(4999), None)
        );
        // Ranges across chunk boundaries, touching ones, one past the end.
        let ranges = [0..10, 1000..1030, 1030..2100, 4990..6000];
        let want: Vec<u32> = ranges
            .iter()
            .flat_map(|r| r.clone())
            .filter(|&i| i < 5000)
            .map(|i| i as u32)
            .collect();
        let copy = all.copy_of(&ranges);
        all.keep_only(&ranges);
        for o in [&copy, &all] {
            let got: Vec<u32> = (0..o.len()).filter_map(|i| o.get(i)).collect();
            assert_eq!(got, want);
        }
        assert_eq!(all.buckets.len(), buckets_for(want.len()));
        let run = Run::adopt(seg, 10, all, true);
        assert_eq!(run.published(), want.len() as u64);
        assert_eq!(run.offset(1039), Some(want[1039]));
        // The writer goes on after the adopted slots, in the adopted bucket and past it.
        assert!(run.set(want.len(), 77));
        assert!(run.set(bucket_start(9), 78));
        assert_eq!(run.offset(want.len() as u64), Some(77));
        assert_eq!(run.offset(bucket_start(9) as u64), Some(78));
    }

    #[test]
    fn every_slot_has_one_place_in_the_doubling_buckets() {
        let mut expect = (0, 0);
        for slot in 0..200_000 {
            assert_eq!(locate(slot), expect, "slot {slot}");
            expect.1 += 1;
            if expect.1 == FIRST << expect.0 {
                expect = (expect.0 + 1, 0);
            }
        }
        assert_eq!(
            (
                buckets_for(0),
                buckets_for(1),
                buckets_for(16),
                buckets_for(17)
            ),
            (0, 1, 1, 2)
        );
        assert_eq!(locate(usize::MAX).0, (usize::BITS - 4) as usize);
    }
}
