//! The directory: which files are segments, which were never written, and opening and
//! scanning every segment file once ([`examine`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;

use super::scan::{scan_segment, Scan};
use crate::error::{Error, Result};
use crate::format::{
    parse_segment_file_name, RecordHeader, SegmentHeader, FORMAT_VERSION, POOL_SUFFIX,
    PREPARED_SUFFIX, RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE, SEGMENT_MAGIC,
};
use crate::io::Fs;
use crate::record::{salted_crc, Seed};
use crate::segment::parse_header;
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
/// A file counts when it is at or after [`blank_from`] (blank, with every later file blank
/// too: what a power cut leaves after the last written segment; or the newest file with an
/// unfinished header, see [`header_is_unfinished`]), or when it is blank (empty, or its header
/// bytes are all zero) and a full-size file after the oldest one (new files are allocated and
/// synced before they are named, so a short file in the middle is damage, not a crash). The
/// oldest file's header was synced before any later file could matter (at creation, or before
/// older files were purged), so a blank oldest file followed by written ones is damage too.
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
    i >= blank || (i > 0 && header_is_blank(fs, path).unwrap_or(false) && is_full_size(fs, path))
}

/// The position from which every listed file was never written: the blank files at the end
/// of the listing, and before them the newest written file too if its header is unfinished
/// (a process killed while it wrote the header: see [`header_is_unfinished`]). The listing's
/// length if the newest file is neither. Headers are read from the newest back to the first
/// written one: usually one read.
pub(crate) fn blank_from(fs: &dyn Fs, listed: &[(u64, PathBuf)]) -> Result<usize> {
    let mut k = listed.len();
    while k > 0 {
        let path = &listed[k - 1].1;
        // One read per file: the header, and the first record header after it.
        let raw = read_prefix(fs, path, SEGMENT_HEADER_SIZE + RECORD_HEADER_SIZE)?;
        if is_blank(&raw) {
            k -= 1;
            continue;
        }
        if header_is_unfinished(path, &raw) {
            k -= 1;
        }
        break;
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
    Ok(is_blank(&read_prefix(fs, path, SEGMENT_HEADER_SIZE)?))
}

/// Whether the header bytes among `raw` (a file's leading bytes) are all zero.
fn is_blank(raw: &[u8]) -> bool {
    raw[..raw.len().min(SEGMENT_HEADER_SIZE)]
        .iter()
        .all(|&b| b == 0)
}

/// Whether `raw` (the leading bytes of the file at `path`) holds the start of a header whose
/// writing was cut short, and nothing written after it: the state a process killed while it
/// installed a segment can leave when the header was copied into the map in several stores
/// (logs written before the header went in with one `pwrite`; see `docs/format.md`, "Segment
/// pool and reuse", step 7).
///
/// Such a header is some leading stores of a new header over the blank one: the right magic,
/// then zeros from some point up to the end of the header, so its `header_crc` field (bytes
/// 36..40) is still zero and its CRC does not match. Nothing after it can have been written:
/// the writer copies records only after the header, and nothing is acknowledged before a
/// flush has synced the header. To keep real damage from passing as this state, the first
/// record position must not hold a record that validates under the header's salt (the
/// checkpoint that every written segment starts with).
fn header_is_unfinished(path: &Path, raw: &[u8]) -> bool {
    use zerocopy::FromBytes;
    let Ok((header, rest)) = SegmentHeader::read_from_prefix(raw) else {
        return false;
    };
    let tail_zero = raw[36..SEGMENT_HEADER_SIZE].iter().all(|&b| b == 0);
    if header.magic != SEGMENT_MAGIC || !tail_zero || parse_header(path, raw).is_ok() {
        return false;
    }
    let salt = header.salt.get();
    let seed = Seed {
        salt,
        version: match header.version.get() {
            0 => FORMAT_VERSION,
            v => v,
        },
    };
    let first_record_valid = salt != 0
        && RecordHeader::read_from_prefix(rest).is_ok_and(|(h, _)| {
            h.kind != 0 && seed.has_body_crc() && salted_crc(seed, &h, &[]) == h.crc.get()
        });
    !first_record_valid
}

/// Up to `n` leading bytes of the file.
fn read_prefix(fs: &dyn Fs, path: &Path, n: usize) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut raw = Vec::with_capacity(n);
    fs.open(path, false)
        .and_then(|f| f.take(n as u64).read_to_end(&mut raw))
        .map_err(|e| Error::io("read header", path, e))?;
    Ok(raw)
}
