//! The in-memory position index: log index -> byte offset in a segment.
//!
//! A [`Run`] maps a range of consecutive log indexes stored in one segment to their record
//! offsets, 4 bytes per entry. It is append-only and readable without locks while the writer
//! appends: slots live in fixed-size chunks of atomics that are allocated once and never move,
//! and the number of readable slots is published with a Release store after the slots are
//! written (invariant I3). A slot is only written while unpublished (a failed batch that is
//! undone leaves written but unpublished slots, which the next batch overwrites); truncation
//! never rewrites a published slot,
//! it freezes the run at a shorter length inside a new [`crate::version::Version`] and starts
//! a new run.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::format::{RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE};
use crate::segment::Segment;

const CHUNK: usize = 1024;

/// A chunk of zero slots (allocated when its first slot is written).
#[cold]
fn new_chunk() -> Box<[AtomicU32; CHUNK]> {
    Box::new([const { AtomicU32::new(0) }; CHUNK])
}

/// Chunks per leaf of a run's chunk table.
const LEAF: usize = 64;

type Chunk = Box<[AtomicU32; CHUNK]>;
type Leaf = Box<[OnceLock<Chunk>; LEAF]>;

/// A leaf of empty chunk cells (allocated when its first chunk is).
#[cold]
fn new_leaf() -> Leaf {
    Box::new([const { OnceLock::new() }; LEAF])
}

/// Consecutive entries of one segment.
///
/// Its chunks hang from a two-level table whose leaves are allocated with their first
/// chunk, so that a run of a few entries (a shared log's group writes a few entries into
/// each segment) costs one chunk, one leaf and a small root, not a table sized for the
/// whole segment.
#[derive(Debug)]
pub struct Run {
    segment: Arc<Segment>,
    first: u64,
    published: AtomicU64,
    /// Leaves of `LEAF` chunk cells each; chunk `c` is cell `c % LEAF` of leaf `c / LEAF`.
    chunks: Box<[OnceLock<Leaf>]>,
    /// Chunks the run may have (its capacity in slots, divided by `CHUNK`, rounded up).
    max_chunks: usize,
}

impl Run {
    /// An empty run whose first entry will have log index `first`.
    pub fn new(segment: Arc<Segment>, first: u64) -> Self {
        // A segment cannot hold more records than this, so a run never needs more slots.
        let capacity =
            (segment.size() as usize).saturating_sub(SEGMENT_HEADER_SIZE) / RECORD_HEADER_SIZE + 1;
        let max_chunks = capacity.div_ceil(CHUNK);
        let chunks = (0..max_chunks.div_ceil(LEAF))
            .map(|_| OnceLock::new())
            .collect();
        Run {
            segment,
            first,
            published: AtomicU64::new(0),
            chunks,
            max_chunks,
        }
    }

    /// Chunk `c`, if allocated.
    #[inline]
    fn chunk(&self, c: usize) -> Option<&Chunk> {
        self.chunks.get(c / LEAF)?.get()?.get(c % LEAF)?.get()
    }

    /// The cell of chunk `c` (its leaf allocated if needed); `None` past the capacity.
    #[inline]
    fn chunk_cell(&self, c: usize) -> Option<&OnceLock<Chunk>> {
        if c >= self.max_chunks {
            return None;
        }
        let leaf = self.chunks.get(c / LEAF)?;
        let leaf = match leaf.get() {
            Some(l) => l,
            None => leaf.get_or_init(new_leaf),
        };
        leaf.get(c % LEAF)
    }

    /// Allocates the chunks of slots `0..slots` now (at most the run's capacity), instead of
    /// one at a time as the writer reaches them. The writer calls it when it starts a run in a
    /// new segment, with the length of the run before: growing the heap needs the process's
    /// address-space lock, which the preparer's prefault of the next segment holds for many
    /// milliseconds, so the allocations are made at once, before that prefault starts, and not
    /// one every 1,024 entries in the middle of it.
    pub fn reserve(&self, slots: u64) {
        let n = usize::try_from(slots)
            .unwrap_or(usize::MAX)
            .div_ceil(CHUNK)
            .min(self.max_chunks);
        for c in 0..n {
            if let Some(cell) = self.chunk_cell(c) {
                cell.get_or_init(new_chunk);
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
        Run::adopt(segment, first, collected)
    }

    /// A run made of the offsets recovery collected, all published: it takes their chunks as
    /// its own (nothing is copied, so the offsets are never held twice).
    pub fn adopt(segment: Arc<Segment>, first: u64, offsets: Offsets) -> Self {
        let mut run = Run::new(segment, first);
        let len = offsets.len as u64;
        if offsets.chunks.len() > run.max_chunks {
            // Not reachable through recovery (a segment holds no more records than the run
            // has room for), but a longer run must still hold them all.
            run.max_chunks = offsets.chunks.len();
            let mut table = std::mem::take(&mut run.chunks).into_vec();
            table.resize_with(run.max_chunks.div_ceil(LEAF), OnceLock::new);
            run.chunks = table.into_boxed_slice();
        }
        for (c, chunk) in offsets.chunks.into_iter().enumerate() {
            if let Some(cell) = run.chunk_cell(c) {
                let _ = cell.set(chunk);
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
        let Some(cell) = self.chunk_cell(slot / CHUNK) else {
            return false;
        };
        let chunk = match cell.get() {
            Some(chunk) => chunk,
            None => cell.get_or_init(new_chunk),
        };
        chunk[slot % CHUNK].store(offset, Ordering::Relaxed);
        true
    }

    /// Makes slots `0..len` visible to readers (Release).
    #[inline]
    pub fn publish(&self, len: u64) {
        self.published.store(len, Ordering::Release);
    }

    /// Offset of slot `slot`, which the caller has seen published.
    #[inline]
    pub fn offset(&self, slot: u64) -> Option<u32> {
        let slot = usize::try_from(slot).ok()?;
        let chunk = self.chunk(slot / CHUNK)?;
        Some(chunk[slot % CHUNK].load(Ordering::Relaxed))
    }

    /// Up to `max` slots from `slot` on, within the chunk that holds `slot`: the offsets of
    /// consecutive entries, for an iterator to walk without looking the chunk up again. Empty
    /// if the chunk was never written. The caller has seen `slot..slot + max` published.
    #[inline]
    pub fn slots(&self, slot: u64, max: u64) -> &[AtomicU32] {
        let Ok(slot) = usize::try_from(slot) else {
            return &[];
        };
        let Some(chunk) = self.chunk(slot / CHUNK) else {
            return &[];
        };
        let start = slot % CHUNK;
        let len = usize::try_from(max)
            .unwrap_or(usize::MAX)
            .min(CHUNK - start);
        chunk.get(start..start + len).unwrap_or(&[])
    }

    /// Resident bytes of the index for this run.
    pub fn heap_bytes(&self) -> usize {
        let leaves: Vec<&Leaf> = self.chunks.iter().filter_map(|l| l.get()).collect();
        let chunks: usize = leaves
            .iter()
            .map(|l| l.iter().filter(|c| c.get().is_some()).count())
            .sum();
        chunks * CHUNK * 4
            + leaves.len() * std::mem::size_of::<[OnceLock<Chunk>; LEAF]>()
            + std::mem::size_of_val(&*self.chunks)
    }
}

/// Record offsets as recovery's scan collects them, in the index's own chunks, so that a
/// [`Run`] adopts them ([`Run::adopt`]) instead of copying: at no point of an open are the
/// offsets held twice. Filled with exclusive access: no atomic operation per offset.
#[derive(Debug, Default)]
pub struct Offsets {
    chunks: Vec<Box<[AtomicU32; CHUNK]>>,
    len: usize,
}

impl Offsets {
    /// Appends an offset.
    #[inline]
    pub fn push(&mut self, offset: u32) {
        let slot = self.len % CHUNK;
        if slot == 0 && self.chunks.len() * CHUNK == self.len {
            self.chunks.push(new_chunk());
        }
        if let Some(chunk) = self.chunks.last_mut() {
            *chunk[slot].get_mut() = offset;
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
        let chunk = self.chunks.get(i / CHUNK)?;
        Some(chunk[i % CHUNK].load(Ordering::Relaxed))
    }

    /// Keeps only the offsets of `ranges` (increasing, not overlapping), in order, moved to
    /// the front; frees the chunks no longer needed. Moves in place: a kept offset only ever
    /// moves to a lower position, so nothing is allocated.
    pub fn keep_only(&mut self, ranges: &[std::ops::Range<usize>]) {
        let mut to = 0;
        let mut prev_end = 0;
        for r in ranges {
            let (start, end) = (r.start.max(prev_end), r.end.min(self.len));
            for from in start..end {
                if from != to {
                    let v = *self.chunks[from / CHUNK][from % CHUNK].get_mut();
                    *self.chunks[to / CHUNK][to % CHUNK].get_mut() = v;
                }
                to += 1;
            }
            prev_end = prev_end.max(end);
        }
        self.len = to;
        self.chunks.truncate(to.div_ceil(CHUNK));
        self.chunks.shrink_to_fit();
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
        // `slots` stops at the end of a chunk and at `max`.
        let s = run.slots(1020, 100);
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].load(Ordering::Relaxed), 64 + 1020 * 24);
        assert_eq!(run.slots(4990, 3).len(), 3);
        assert_eq!(run.slots(u64::MAX, 3).len(), 0);
        assert_eq!(run.first(), 100);
        let capacity: usize = ((1 << 20) - 64) / 24 + 1;
        assert!(!run.set(capacity.div_ceil(CHUNK) * CHUNK, 1));
        // `reserve` allocates the chunks up to a slot count, never past the capacity.
        let r3 = Run::new(seg.clone(), 0);
        let empty = r3.heap_bytes();
        let leaf = std::mem::size_of::<[OnceLock<Chunk>; LEAF]>();
        r3.reserve(2500);
        assert_eq!(r3.heap_bytes(), empty + 3 * CHUNK * 4 + leaf);
        r3.reserve(u64::MAX);
        let chunks = capacity.div_ceil(CHUNK);
        assert_eq!(
            r3.heap_bytes(),
            empty + chunks * CHUNK * 4 + chunks.div_ceil(LEAF) * leaf
        );
        // An empty run costs its root only (a 1 MiB segment: one leaf cell).
        assert!(empty < 256, "{empty} bytes for an empty run");
        assert!(r3.set(capacity - 1, 5));
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
        assert_eq!(all.chunks.len(), want.len().div_ceil(CHUNK));
        let run = Run::adopt(seg, 10, all);
        assert_eq!(run.published(), want.len() as u64);
        assert_eq!(run.offset(1039), Some(want[1039]));
        // The writer goes on after the adopted slots, in the adopted chunk and past it.
        assert!(run.set(want.len(), 77));
        assert!(run.set(3 * CHUNK, 78));
        assert_eq!(run.offset(want.len() as u64), Some(77));
        assert_eq!(run.offset(3 * CHUNK as u64), Some(78));
    }
}
