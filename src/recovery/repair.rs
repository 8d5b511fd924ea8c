//! Applying a plan before the writer starts: remove dropped files, zero what follows the cut,
//! make every kept record durable and seal older segments.

use std::path::Path;
use std::sync::Arc;

use super::plan::Plan;
use super::scan::first_nonzero;
use crate::error::{Error, Result};
use crate::format::SEGMENT_HEADER_SIZE;
use crate::segment::FileOptions;
use crate::segment::Segment;

/// Applies a plan's cuts: removes dropped files, zeroes bytes after the cut in the last
/// segment (so stale bytes can never come back as records, invariant I5; a recycled last
/// segment is sealed there instead), makes every kept record durable and seals older
/// segments. Runs before the writer exists.
pub fn repair(dir: &Path, plan: &mut Plan, opts: &FileOptions) -> Result<()> {
    // Dropped segments are the newest ones: removed newest first (segment names are
    // zero-padded, so they sort by sequence number), each removal durable before the next, so
    // that a power cut during repair leaves the surviving segments contiguous (it can only
    // bring back the newest dropped ones, which the next recovery drops again).
    let mut remove = plan.remove.clone();
    remove.sort_by(|a, b| b.file_name().cmp(&a.file_name()));
    let mut dir_changed = false;
    for p in &remove {
        if dir_changed {
            crate::io::sync_dir(&*opts.fs, dir)?;
            dir_changed = false;
        }
        match opts.fs.remove(p) {
            Ok(()) => dir_changed = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", p, e)),
        }
    }
    if plan.segments.last().is_some_and(|s| s.is_short()) {
        // Give the newest segment its full size again before anything writes into it.
        if let Some(last) = plan.segments.pop() {
            let path = last.path().to_path_buf();
            let owned = Arc::try_unwrap(last).map_err(|_| {
                Error::corrupt(&path, 0, "short segment is still in use during recovery")
            })?;
            plan.segments.push(Arc::new(owned.extend_to_full(opts)?));
        }
    }
    let n = plan.segments.len();
    for (k, seg) in plan.segments.iter().enumerate() {
        let end = if k + 1 == n {
            plan.write_pos
        } else {
            plan.scans[k].end
        };
        // A newest segment closed cleanly at `end` holds no byte of its last life past it.
        let closed_clean = k + 1 == n
            && seg.closed_end() == Some(end)
            && plan.scans.get(k).is_some_and(|s| s.torn.is_none());
        // A recycled newest segment is sealed where its records end instead of zeroed after
        // them (the rest of the file is its previous life's bytes, and zeroing them would write
        // the whole file): the writer then starts a new segment, so bytes this life may have
        // written past the end before a power cut can never be read as records. Not after a
        // clean close: this life wrote nothing past `end`, and the writer goes on there once
        // the closed mark is a plain one again (below).
        let seal_recycled =
            k + 1 == n && seg.is_recycled() && !plan.needs_checkpoint && !closed_clean;
        // The writer goes on in the newest segment unless it is sealed: its synced mark must
        // name the kept end. Lowered (only after tolerated corruption) before the bytes after
        // the end are zeroed, raised only once the kept records are durable.
        let marked = k + 1 == n && !seal_recycled && seg.sealed_end().is_none();
        if marked && seg.synced_mark().is_some_and(|m| m > end) {
            seg.write_synced_mark(end)?;
            seg.sync_range(0, SEGMENT_HEADER_SIZE as u64)?;
        }
        // A newest segment closed cleanly at `end` holds no byte of its last life past it:
        // nothing to zero. Its closed mark becomes a plain one, durable with the sync below
        // and so before anything is written past `end` (else a power cut could leave this
        // life's unsynced records there under a mark that says there are none).
        // (Not when its records stop at a torn or damaged record there: that is no clean end,
        // and the bytes after it are zeroed as usual.)
        if closed_clean {
            seg.write_synced_mark(end)?;
        } else if k + 1 == n && !seal_recycled {
            zero_after(seg, end)?;
        }
        seg.sync_range(0, end)?;
        seg.set_synced(end);
        if marked && seg.synced_mark().is_none_or(|m| m < end) {
            seg.write_synced_mark(end)?;
            seg.sync_range(0, SEGMENT_HEADER_SIZE as u64)?;
        }
        let sealed = seg.sealed_end();
        if seal_recycled && sealed.is_none() {
            seg.mark_sealed(end)?;
        }
        if k + 1 == n && sealed.is_some_and(|e| e != end) {
            // Only after tolerated corruption: the mark must name the new end, or the next
            // recovery would see the cut as corruption again.
            seg.mark_sealed(end)?;
        }
        if k + 1 < n && sealed.is_none() {
            seg.mark_sealed(end)?;
        }
    }
    if dir_changed {
        crate::io::sync_dir(&*opts.fs, dir)?;
    }
    Ok(())
}

/// Zeroes every non-zero page after `end` in `seg` and syncs them.
fn zero_after(seg: &Segment, end: u64) -> Result<()> {
    const PAGE: usize = 4096;
    let size = seg.size() as usize;
    let mut pos = end as usize;
    let mut dirty: Option<(usize, usize)> = None;
    while pos < size {
        let stop = ((pos / PAGE) + 1) * PAGE;
        let stop = stop.min(size);
        // SAFETY: recovery owns the segment (no writer, flusher or reader yet); the slice is
        // dropped before we write the same range below.
        let nonzero = first_nonzero(unsafe { seg.bytes(pos, stop - pos) }).is_some();
        if nonzero {
            // SAFETY: as above: single-threaded recovery, no live reference to this range.
            unsafe { seg.zero_at(pos, stop - pos)? };
            let d = dirty.get_or_insert((pos, stop));
            d.1 = stop;
        }
        pos = stop;
    }
    if let Some((a, b)) = dirty {
        seg.sync_range(a as u64, b as u64)?;
    }
    Ok(())
}
