//! A segment's durability: msync of written ranges, early write-back, and the header's
//! sealed and synced marks (`docs/format.md`). Called by the flush thread (and recovery,
//! before it exists). The `unsafe` here follows the rules of the module (`mod.rs`).

use std::sync::atomic::Ordering;

use super::{header, Segment, WriteVia, SEALED_MAGIC};
use crate::error::{Error, Result};
use crate::format::SEGMENT_HEADER_SIZE;

/// The page size the advice calls round to (every supported target's).
const PAGE: u64 = 4096;

/// How far ahead of a sync [`Segment::convert_ahead`] sends reserved blocks to write-back.
const CONVERT_AHEAD: u64 = 1 << 20;

impl Segment {
    /// Makes `[from, to)` durable (msync). Ranges are widened to pages by the kernel.
    pub fn sync_range(&self, from: u64, to: u64) -> Result<()> {
        if to <= from {
            return Ok(());
        }
        // A back end that syncs by file gets a duplicate of the descriptor, if the segment
        // holds one: the lock is not held while the sync runs (a `pwrite` writer takes it).
        let file = if self.fs.syncs_by_file() {
            let held = self.file.lock().unwrap_or_else(|e| e.into_inner());
            held.as_ref().and_then(|f| f.try_clone().ok())
        } else {
            None
        };
        self.fs
            .sync_data(
                file.as_ref(),
                &self.map,
                &self.path,
                from as usize,
                (to - from) as usize,
            )
            .map_err(|e| Error::io("msync", &self.path, e))
    }

    /// Starts write-back of `[from, to)` without waiting (`sync_file_range(WRITE)`), so that a
    /// later durable flush has less to do. Best effort. The writer has finished with these
    /// bytes: `to` is at or below its position, and it never writes behind its position.
    ///
    /// The whole pages of the range are unmapped from this process first
    /// (`MADV_DONTNEED`; the bytes stay in the page cache and are mapped again by the next
    /// access). Write-back of a page that a shared map holds writable must make that mapping
    /// read-only first, one page and one TLB shootdown (an interrupt of the writer's CPU)
    /// at a time: measured, that was 40% of the process's CPU time in a bulk append. Unmapped,
    /// the range costs one TLB flush.
    pub(crate) fn start_writeback(&self, from: u64, to: u64) {
        if to <= from {
            return;
        }
        self.unmap_pages(from, to);
        let _ = self.with_file(|f| {
            crate::io::writeback_hint(f, from, to - from, libc::SYNC_FILE_RANGE_WRITE);
            Ok(())
        });
    }

    /// After a sync up to `end`: where the blocks ahead of `end` were only reserved, starts
    /// write-back (`sync_file_range(WRITE)`, no wait) of the next [`CONVERT_AHEAD`] bytes, the
    /// zero pages the prefault left dirty there. On ext4 a sync over reserved blocks commits
    /// their conversion to written blocks, one more synchronous write (the inode's block)
    /// after the data of every sync; sent ahead, a mebibyte is converted at once and the
    /// syncs that follow there commit nothing. Best effort, and a hint only: what a sync
    /// makes durable is decided by `sync_range`, and the writer's bytes in these pages are
    /// written again by the sync that covers them.
    pub(crate) fn convert_ahead(&self, end: u64) {
        let done = self.converted.load(Ordering::Relaxed);
        if done >= self.size || end + CONVERT_AHEAD / 2 <= done || self.via != WriteVia::Map {
            return;
        }
        let from = done.max(end / PAGE * PAGE);
        let to = (from + CONVERT_AHEAD).min(self.size);
        self.converted.store(to, Ordering::Relaxed);
        let _ = self.with_file(|f| {
            crate::io::writeback_hint(f, from, to - from, libc::SYNC_FILE_RANGE_WRITE);
            Ok(())
        });
    }

    /// Starts reading `[from, end of segment)` into the page cache (`MADV_WILLNEED`; best
    /// effort, it does not wait), for a writer that continues this segment at `from` after an
    /// open. Pages read this way are cached one page per folio. Left to the writer's own
    /// faults, read-ahead would cache them as large folios, and a page dirtied through the
    /// map marks its whole folio dirty: every small `msync` would then write whole folios back
    /// (measured on ext4, Linux 6.18, after a reopen with a cold cache: 270 KiB written per
    /// durable 16-entry batch without this, 75 KiB with it, and 1.2–1.3× the batch rate).
    pub(crate) fn read_ahead_for_writer(&self, from: u64) {
        let start = from / PAGE * PAGE;
        let len = (self.map.len() as u64).saturating_sub(start);
        if len > 0 {
            let _ = self
                .map
                .advise_range(memmap2::Advice::WillNeed, start as usize, len as usize);
        }
    }

    /// Drops this process's page table entries for the whole pages inside `[from, to)` of a
    /// shared map (`MADV_DONTNEED`); the file's bytes are untouched. Best effort.
    pub(crate) fn unmap_pages(&self, from: u64, to: u64) {
        let start = from.div_ceil(PAGE) * PAGE;
        let end = (to / PAGE * PAGE).min(self.map.len() as u64);
        if end <= start {
            return;
        }
        // SAFETY: `MADV_DONTNEED` on a shared file mapping (every segment map is one, see
        // `map_file`) drops page table entries only: a dirty entry's state moves to the page
        // cache first, and the next access maps the same page-cache page again, so every byte
        // reads as before and nothing is lost. A reader's `&[u8]` over these pages stays valid
        // and unchanged (the file is never shortened while mapped, I4). The range is inside
        // the map (clamped above).
        let _ = unsafe {
            self.map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                start as usize,
                (end - start) as usize,
            )
        };
    }

    /// Durable prefix known to the flusher.
    pub fn synced(&self) -> u64 {
        self.synced.load(Ordering::Acquire)
    }

    /// Records that `[.., to)` is durable.
    pub(crate) fn set_synced(&self, to: u64) {
        self.synced.fetch_max(to, Ordering::AcqRel);
    }

    /// Whether the sealed mark is on disk.
    pub fn is_sealed_marked(&self) -> bool {
        self.sealed_end().is_some()
    }

    /// Writes and syncs the sealed mark: every record below `end` is already durable.
    /// Called by the flusher only, after syncing `[.., end)`.
    pub(crate) fn mark_sealed(&self, end: u64) -> Result<()> {
        // The end first, then the magic that makes it count: a process killed between the two
        // copies leaves an unsealed segment, never a sealed mark with a stale end.
        // SAFETY: bytes 40..56 of the header are never covered by a reference: readers only
        // borrow record ranges (>= SEGMENT_HEADER_SIZE), recovery's whole-file slices are
        // dropped before the flusher starts, and `sealed_end()` reads the atomic, not the map.
        // Only the flusher (or recovery, before it exists) writes these bytes.
        unsafe { self.write_at(48, &end.to_le_bytes())? };
        std::sync::atomic::fence(Ordering::Release);
        // SAFETY: as above.
        unsafe { self.write_at(40, &SEALED_MAGIC.to_le_bytes())? };
        self.sync_range(0, SEGMENT_HEADER_SIZE as u64)?;
        self.sealed_end.store(end, Ordering::Release);
        Ok(())
    }

    /// At close, once no flush runs: writes the synced mark up to everything synced (if it
    /// lags) and syncs the header. With `written_end` (the end of every byte this process
    /// wrote into the segment) equal to everything synced, the mark is a *closed* one: the
    /// next open need not look for this life's bytes after it. Best effort: a failure leaves
    /// the older mark, which only makes recovery more lenient (or slower).
    pub(crate) fn mark_synced_on_close(&self, written_end: u64) {
        let synced = self.synced();
        let closed = written_end == synced;
        if !self.writable
            || self.is_sealed_marked()
            || synced < SEGMENT_HEADER_SIZE as u64
            || (synced <= self.synced_mark().unwrap_or(0) && !closed)
        {
            return;
        }
        if self.write_mark(synced, closed).is_ok() {
            let _ = self.sync_range(0, SEGMENT_HEADER_SIZE as u64);
        }
    }

    /// The end a closed synced mark named when the file was opened: the writer before closed
    /// cleanly, and wrote nothing at or after it.
    pub fn closed_end(&self) -> Option<u64> {
        self.closed_end
    }

    /// The synced mark (header bytes 56..64) as last written or read at open: `Some(end)`
    /// when every record below `end` was durable when it was written.
    pub fn synced_mark(&self) -> Option<u64> {
        match self.synced_mark.load(Ordering::Acquire) {
            0 => None,
            end => Some(end),
        }
    }

    /// Writes the synced mark `end` into the header, *without* syncing it: the caller makes it
    /// durable with (or after) the records below `end`, never before them. Every record below
    /// `end` must already be durable. Called by the flusher (or recovery, before it exists)
    /// only.
    pub(crate) fn write_synced_mark(&self, end: u64) -> Result<()> {
        self.write_mark(end, false)
    }

    /// Writes a synced mark (`closed`: a closed one, see [`Segment::mark_synced_on_close`]).
    fn write_mark(&self, end: u64, closed: bool) -> Result<()> {
        let Ok(end32) = u32::try_from(end) else {
            return Err(Error::corrupt(
                &self.path,
                56,
                format!("synced mark {end} does not fit the header"),
            ));
        };
        let check = if closed {
            header::closed_mark_check(self.salt, end32)
        } else {
            header::synced_mark_check(self.salt, end32)
        };
        let mut mark = [0u8; 8];
        mark[..4].copy_from_slice(&end32.to_le_bytes());
        mark[4..].copy_from_slice(&check.to_le_bytes());
        // SAFETY: bytes 56..64 of the header are never covered by a reference: readers only
        // borrow record ranges (>= SEGMENT_HEADER_SIZE), recovery's whole-file slices are
        // dropped before the flusher starts, and `synced_mark()` reads the atomic, not the map.
        // Only the flusher (or recovery, before it exists, or the last owner at close) writes
        // these bytes.
        unsafe { self.write_at(56, &mark)? };
        self.synced_mark.store(end, Ordering::Release);
        Ok(())
    }
}
