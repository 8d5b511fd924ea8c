//! The directory: which files are segments, which were never written, and opening and
//! scanning every segment file once ([`examine`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;

use super::scan::{scan_segment, Scan};
use crate::error::{Error, Result};
use crate::format::{parse_segment_file_name, POOL_SUFFIX, PREPARED_SUFFIX, SEGMENT_HEADER_SIZE};
use crate::io::Fs;
use crate::segment::{FileOptions, Segment};

/// One listed segment file as found: opened and scanned, or why it did not open.
#[derive(Debug)]
pub struct Examined {
    /// Sequence number (from the file name).
    pub seq: u64,
    /// The file.
    pub path: PathBuf,
    /// The open segment and its scan, or the error opening it gave.
    pub opened: std::result::Result<(Arc<Segment>, Arc<Scan>), Error>,
    /// For a file that did not open: whether it was never written ([`never_written`]).
    pub never_written: bool,
}

/// Everything in a log directory, each segment file opened and scanned once.
#[derive(Debug)]
pub struct Directory {
    /// Segment files, oldest first.
    pub files: Vec<Examined>,
    /// Leftover prepared files.
    pub prepared: Vec<PathBuf>,
    /// Pooled files (purged segments kept for reuse; never read as data).
    pub pool: Vec<PathBuf>,
    /// Time taken to list, open and scan.
    pub elapsed: std::time::Duration,
}

/// Lists `dir`, opens every segment file on its own (so one bad header does not hide the
/// rest) and scans each opened one once, in parallel; `progress` gets each scanned segment's
/// size. Only I/O errors fail; what is wrong with a file is kept for the merge to judge.
pub fn examine(
    dir: &Path,
    writable: bool,
    opts: &FileOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Directory> {
    let started = std::time::Instant::now();
    let (listed, prepared, pool) = list_dir(&*opts.fs, dir)?;
    let blank = blank_from(&*opts.fs, &listed)?;
    let mut segments = Vec::with_capacity(listed.len());
    for (i, (seq, path)) in listed.iter().enumerate() {
        // Only the last written segment may be short (a power cut before its size was
        // durable): its valid prefix is kept, and the file is extended before it is written.
        segments
            .push(Segment::open(path, *seq, writable, opts, may_be_short(blank, i)).map(Arc::new));
    }
    let scans: Vec<Option<Scan>> = segments
        .par_iter()
        .map(|s| {
            let seg = s.as_ref().ok()?;
            let scan = scan_segment(seg);
            progress(seg.size());
            Some(scan)
        })
        .collect();
    let files = listed
        .iter()
        .enumerate()
        .zip(segments.into_iter().zip(scans))
        .map(|((i, (seq, path)), (seg, scan))| {
            let opened = match (seg, scan) {
                (Ok(seg), Some(scan)) => Ok((seg, Arc::new(scan))),
                (Err(e), _) => Err(e),
                (Ok(_), None) => Err(Error::corrupt(path, 0, "segment was not scanned")),
            };
            let never_written = opened.is_err() && never_written(&*opts.fs, &listed, blank, i);
            Examined {
                seq: *seq,
                path: path.clone(),
                opened,
                never_written,
            }
        })
        .collect();
    Ok(Directory {
        files,
        prepared,
        pool,
        elapsed: started.elapsed(),
    })
}

/// Segment files `(seq, path)` oldest first, leftover prepared files, and pooled files.
pub type Listing = (Vec<(u64, PathBuf)>, Vec<PathBuf>, Vec<PathBuf>);

/// Lists segment files (seq, path) in `dir`, oldest first, leftover prepared files, and
/// pooled files (`*.pool`, sorted by name).
///
/// Every entry under one of these names is looked at without following it
/// (`symlink_metadata`, which neither follows a symlink nor opens a FIFO): only regular files
/// are the log's. A segment name (`*.seg`) on anything else (a symlink, a directory, a FIFO, a
/// device) is refused with [`Error::Corrupt`] naming it: the log is not what was written, and
/// nothing is followed or overwritten. A prepared or pooled name on anything else is left
/// alone: never listed, so never written through, reused or removed.
pub fn list_dir(fs: &dyn Fs, dir: &Path) -> Result<Listing> {
    let mut segs = Vec::new();
    let mut prepared = Vec::new();
    let mut pool = Vec::new();
    let entries = fs
        .read_dir(dir)
        .map_err(|e| Error::io("read directory", dir, e))?;
    for path in entries {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(seq) = parse_segment_file_name(name) {
            if !is_regular(&path)? {
                return Err(Error::corrupt(
                    &path,
                    0,
                    "not a regular file (a symlink, directory, FIFO or device) under a segment \
                     file's name",
                ));
            }
            segs.push((seq, path));
        } else if name.ends_with(PREPARED_SUFFIX) {
            if is_regular(&path)? {
                prepared.push(path);
            }
        } else if name.ends_with(POOL_SUFFIX) && is_regular(&path)? {
            pool.push(path);
        }
    }
    segs.sort();
    pool.sort();
    Ok((segs, prepared, pool))
}

/// Whether the directory entry at `path` is a regular file, not following a symlink. An entry
/// gone meanwhile is not one.
fn is_regular(path: &Path) -> Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => Ok(m.file_type().is_file()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("stat", path, e)),
    }
}

/// Whether segment file `i` of `listed` (which failed to open) is one that was created but
/// whose header never reached the disk: then nothing in it or in a later file was ever
/// acknowledged, and recovery drops them.
///
/// A file counts when it is blank (empty, or its header bytes are all zero) and either every
/// later file is blank too (what a power cut leaves after the last written segment), or it is
/// a full-size file after the oldest one (new files are allocated and synced before they are
/// named, so a short file in the middle is damage, not a crash). The oldest file's header was
/// synced before any later file could matter (at creation, or before older files were
/// purged), so a blank oldest file followed by written ones is damage too.
///
/// `blank` is [`blank_from`] of the listing.
pub(crate) fn never_written(
    fs: &dyn Fs,
    listed: &[(u64, PathBuf)],
    blank: usize,
    i: usize,
) -> bool {
    let Some((_, path)) = listed.get(i) else {
        return false;
    };
    header_is_blank(fs, path).unwrap_or(false)
        && (i + 1 >= blank || (i > 0 && is_full_size(fs, path)))
}

/// The position from which every listed file is blank (the listing's length if the newest
/// is not). Headers are read from the newest back to the first written one: usually one read.
pub(crate) fn blank_from(fs: &dyn Fs, listed: &[(u64, PathBuf)]) -> Result<usize> {
    let mut k = listed.len();
    while k > 0 && header_is_blank(fs, &listed[k - 1].1)? {
        k -= 1;
    }
    Ok(k)
}

/// Whether file `i` may be shorter than its header says: only the last written segment,
/// which a power cut can leave short (every later file is blank). `blank` is [`blank_from`].
pub(crate) fn may_be_short(blank: usize, i: usize) -> bool {
    i + 1 >= blank
}

/// Whether the file is at least as long as a segment header.
fn is_full_size(fs: &dyn Fs, path: &Path) -> bool {
    fs.open(path, false)
        .and_then(|f| f.metadata())
        .is_ok_and(|m| m.len() >= crate::format::MIN_SEGMENT_SIZE)
}

/// Whether the header bytes the file has (up to `SEGMENT_HEADER_SIZE`) are all zero: a file
/// whose header never reached the disk. A short file with any non-zero byte is not blank.
/// An I/O error reading it is an error, not a guess.
fn header_is_blank(fs: &dyn Fs, path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut raw = Vec::with_capacity(SEGMENT_HEADER_SIZE);
    fs.open(path, false)
        .and_then(|f| f.take(SEGMENT_HEADER_SIZE as u64).read_to_end(&mut raw))
        .map_err(|e| Error::io("read header", path, e))?;
    Ok(raw.iter().all(|&b| b == 0))
}
