//! Recovery: scan every segment in parallel, then merge the scans in order.
//!
//! Each segment starts with a checkpoint, so it can be scanned alone into a [`Scan`] (rayon,
//! one task per segment). The merge replays the scans oldest first through the same
//! [`LogState`] rules the writer uses and decides what is a torn tail (cut it) and what is
//! corruption (refuse to open, naming the file and offset). [`plan`] only reads; [`repair`]
//! applies the plan's cuts before the writer starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use zerocopy::FromBytes;

use crate::error::{Error, Result};
use crate::format::{
    parse_segment_file_name, CheckpointHead, MetaItemHead, RecordKind, MAX_INDEX, PREPARED_SUFFIX,
    SEGMENT_HEADER_SIZE,
};
use crate::record::{decode, Decoded};
use crate::segment::{FileOptions, Segment};
use crate::state::LogState;

/// What recovery does when it finds a bad record where no crash could have left one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Refuse to open with [`Error::Corrupt`] naming the file and offset (default).
    #[default]
    Strict,
    /// Cut the log at the first bad record and drop everything after it: the log opens, but
    /// entries after the corruption are lost. The cut is reported in [`RecoveryReport`].
    TruncateAtCorruption,
}

/// One thing found in a segment.
#[derive(Debug, Clone)]
pub enum Item {
    /// The segment's opening state.
    Checkpoint {
        /// File offset.
        offset: u64,
        /// State it records.
        first: u64,
        /// State it records.
        next: u64,
        /// Where the previous segment's records end.
        prev_end: u64,
        /// CRC of the previous segment's last record.
        prev_crc: u32,
        /// Meta values it records.
        metas: BTreeMap<u64, Arc<[u8]>>,
    },
    /// Entries with consecutive indexes.
    Entries {
        /// File offset of the first.
        offset: u64,
        /// Index of the first.
        first: u64,
        /// Record offsets.
        offsets: Vec<u32>,
    },
    /// Truncate record.
    Truncate {
        /// File offset.
        offset: u64,
        /// First index removed.
        from: u64,
    },
    /// Purge record.
    Purge {
        /// File offset.
        offset: u64,
        /// New first index.
        first: u64,
        /// Meta values set atomically with the purge.
        metas: Vec<(u64, Arc<[u8]>)>,
        /// A reset record: every entry is dropped and `first` is also the next index.
        reset: bool,
    },
    /// Meta record.
    Meta {
        /// File offset.
        offset: u64,
        /// Key.
        key: u64,
        /// Value.
        value: Arc<[u8]>,
    },
}

/// The result of scanning one segment alone.
#[derive(Debug, Clone)]
pub struct Scan {
    /// Valid records, in file order.
    pub items: Vec<Item>,
    /// Offset just past the last valid record.
    pub end: u64,
    /// First bad spot after the valid prefix, and what is wrong there.
    pub torn: Option<(u64, String)>,
    /// Number of entry records.
    pub entries: u64,
    /// CRC field of the last valid record (0 if none).
    pub last_crc: u32,
}

/// Scans a segment. Reads only; never panics on any byte pattern.
pub fn scan_segment(seg: &Segment) -> Scan {
    // SAFETY: recovery runs before any writer or flusher exists for this segment, and the
    // slice is dropped before `repair` writes to it.
    let bytes = unsafe { seg.all_bytes() };
    let salt = seg.salt();
    let mut pos = SEGMENT_HEADER_SIZE;
    let mut items: Vec<Item> = Vec::new();
    let mut torn = None;
    let mut entries = 0u64;
    let mut last_crc = 0u32;
    loop {
        let rest = bytes.get(pos..).unwrap_or(&[]);
        match decode(salt, rest) {
            Decoded::End => {
                // A sealed segment's mark says where its records end, so the unused rest need
                // not be read (reading it would fault in every page of a 64 MiB file).
                let check_tail = seg.sealed_end().is_none();
                if let Some(nz) = first_nonzero(rest).filter(|_| check_tail) {
                    torn = Some((
                        (pos + nz) as u64,
                        "non-zero bytes after the last record".to_string(),
                    ));
                }
                break;
            }
            Decoded::Invalid(why) => {
                torn = Some((pos as u64, why.to_string()));
                break;
            }
            Decoded::Record(r) => {
                let offset = pos as u64;
                let is_first = pos == SEGMENT_HEADER_SIZE;
                if is_first != (r.kind == RecordKind::Checkpoint) {
                    let why = if is_first {
                        "segment does not start with a checkpoint"
                    } else {
                        "checkpoint record after the start of a segment"
                    };
                    torn = Some((offset, why.to_string()));
                    break;
                }
                match r.kind {
                    RecordKind::Entry => {
                        entries += 1;
                        match items.last_mut() {
                            Some(Item::Entries { first, offsets, .. })
                                if first.checked_add(offsets.len() as u64) == Some(r.arg) =>
                            {
                                offsets.push(pos as u32)
                            }
                            _ => items.push(Item::Entries {
                                offset,
                                first: r.arg,
                                offsets: vec![pos as u32],
                            }),
                        }
                    }
                    RecordKind::Truncate => items.push(Item::Truncate {
                        offset,
                        from: r.arg,
                    }),
                    RecordKind::Purge | RecordKind::Reset => match decode_meta_items(r.body) {
                        Some(metas) => items.push(Item::Purge {
                            offset,
                            first: r.arg,
                            metas,
                            reset: r.kind == RecordKind::Reset,
                        }),
                        None => {
                            torn = Some((offset, "malformed purge body".to_string()));
                            break;
                        }
                    },
                    RecordKind::Meta => items.push(Item::Meta {
                        offset,
                        key: r.arg,
                        value: Arc::from(r.body),
                    }),
                    RecordKind::Checkpoint => match decode_checkpoint(r.body) {
                        Some(cp) => items.push(Item::Checkpoint {
                            offset,
                            first: cp.first,
                            next: cp.next,
                            prev_end: cp.prev_end,
                            prev_crc: cp.prev_crc,
                            metas: cp.metas,
                        }),
                        None => {
                            torn = Some((offset, "malformed checkpoint body".to_string()));
                            break;
                        }
                    },
                }
                pos += r.size;
                last_crc = r.crc;
            }
        }
    }
    Scan {
        items,
        end: pos.min(bytes.len()) as u64,
        torn,
        entries,
        last_crc,
    }
}

fn first_nonzero(bytes: &[u8]) -> Option<usize> {
    let (pre, mid, post) = {
        // Word-at-a-time scan; `align_to` is safe for u64 reads via zerocopy.
        let head = bytes.len().min(bytes.as_ptr().align_offset(8));
        let body_len = (bytes.len() - head) / 8 * 8;
        (
            &bytes[..head],
            &bytes[head..head + body_len],
            &bytes[head + body_len..],
        )
    };
    if let Some(i) = pre.iter().position(|&b| b != 0) {
        return Some(i);
    }
    let words = <[zerocopy::little_endian::U64]>::ref_from_bytes(mid).ok()?;
    if let Some(w) = words.iter().position(|w| w.get() != 0) {
        let at = pre.len() + w * 8;
        return bytes[at..].iter().position(|&b| b != 0).map(|i| at + i);
    }
    post.iter()
        .position(|&b| b != 0)
        .map(|i| pre.len() + mid.len() + i)
}

/// Encodes meta items (`MetaItemHead` + bytes each) after a `u32` count: the body of a purge
/// record.
pub fn encode_meta_items(items: &[(u64, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    if items.is_empty() {
        return out;
    }
    out.extend_from_slice(&(items.len() as u32).to_le_bytes());
    for (k, v) in items {
        push_meta_item(&mut out, *k, v);
    }
    out
}

fn push_meta_item(out: &mut Vec<u8>, key: u64, value: &[u8]) {
    use zerocopy::IntoBytes;
    let item = MetaItemHead {
        key: key.into(),
        len: (value.len() as u32).into(),
    };
    out.extend_from_slice(item.as_bytes());
    out.extend_from_slice(value);
}

/// Decodes `count` meta items from the front of `bytes`, returning them and the rest.
/// Meta key/value pairs.
pub type MetaItems = Vec<(u64, Arc<[u8]>)>;

fn take_meta_items(mut bytes: &[u8], count: u32) -> Option<(MetaItems, &[u8])> {
    let mut items = Vec::new();
    for _ in 0..count {
        let (item, r) = MetaItemHead::read_from_prefix(bytes).ok()?;
        let len = item.len.get() as usize;
        items.push((item.key.get(), Arc::from(r.get(..len)?)));
        bytes = &r[len..];
    }
    Some((items, bytes))
}

/// Decodes the body written by [`encode_meta_items`]; an empty body is no items.
pub fn decode_meta_items(body: &[u8]) -> Option<MetaItems> {
    if body.is_empty() {
        return Some(Vec::new());
    }
    let (count, rest) = body.split_first_chunk::<4>()?;
    let (items, rest) = take_meta_items(rest, u32::from_le_bytes(*count))?;
    rest.is_empty().then_some(items)
}

/// Encodes a checkpoint body: `state`, chained to a previous segment whose records end at
/// `prev_end` with a last record of CRC `prev_crc`.
pub fn encode_checkpoint(state: &LogState, prev_end: u64, prev_crc: u32) -> Vec<u8> {
    use zerocopy::IntoBytes;
    let head = CheckpointHead {
        first: state.first.into(),
        next: state.next.into(),
        prev_end: prev_end.into(),
        meta_count: (state.metas.len() as u32).into(),
        prev_crc: prev_crc.into(),
    };
    let mut out = head.as_bytes().to_vec();
    for (k, v) in state.metas.iter() {
        push_meta_item(&mut out, *k, v);
    }
    out
}

/// Size of the checkpoint body for `state`.
pub fn checkpoint_len(state: &LogState) -> usize {
    std::mem::size_of::<CheckpointHead>()
        + state
            .metas
            .values()
            .map(|v| std::mem::size_of::<MetaItemHead>() + v.len())
            .sum::<usize>()
}

/// A decoded checkpoint body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// First retained index.
    pub first: u64,
    /// One past the last index.
    pub next: u64,
    /// Where the previous segment's records end.
    pub prev_end: u64,
    /// CRC of the previous segment's last record.
    pub prev_crc: u32,
    /// Meta values.
    pub metas: BTreeMap<u64, Arc<[u8]>>,
}

/// Decodes a checkpoint body; `None` if it is malformed.
pub fn decode_checkpoint(body: &[u8]) -> Option<Checkpoint> {
    let (head, rest) = CheckpointHead::read_from_prefix(body).ok()?;
    let (items, rest) = take_meta_items(rest, head.meta_count.get())?;
    if !rest.is_empty() || head.first.get() > head.next.get() || head.next.get() > MAX_INDEX + 1 {
        return None;
    }
    Some(Checkpoint {
        first: head.first.get(),
        next: head.next.get(),
        prev_end: head.prev_end.get(),
        prev_crc: head.prev_crc.get(),
        metas: items.into_iter().collect(),
    })
}

/// A run of entries rebuilt by the merge: which kept segment, first index, offsets.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// Position in [`Plan::segments`].
    pub segment: usize,
    /// Log index of the first offset.
    pub first: u64,
    /// Record offsets.
    pub offsets: Vec<u32>,
}

impl RunPlan {
    /// One past the last index of the run.
    pub fn end(&self) -> u64 {
        self.first.saturating_add(self.offsets.len() as u64)
    }
}

/// What recovery found and what it must change before the log opens.
#[derive(Debug)]
pub struct Plan {
    /// Segments that stay, oldest first; the last one is written next.
    pub segments: Vec<Arc<Segment>>,
    /// Scan of each kept segment.
    pub scans: Vec<Scan>,
    /// Recovered state.
    pub state: LogState,
    /// Index runs.
    pub runs: Vec<RunPlan>,
    /// Where writing resumes in the last segment.
    pub write_pos: u64,
    /// The last segment needs a fresh checkpoint at `write_pos` (its own was lost).
    pub needs_checkpoint: bool,
    /// Files to delete: segments after a cut, never-written segment files, prepared files.
    pub remove: Vec<PathBuf>,
    /// Leading segments (indexes into `segments`... always a prefix) that hold only purged
    /// entries.
    pub purged_prefix: usize,
    /// What happened, for people.
    pub report: RecoveryReport,
}

/// What recovery found, for logs and tools.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// Segment files scanned.
    pub segments_scanned: usize,
    /// Entry records found (including truncated and purged ones).
    pub entry_records: u64,
    /// Bytes of records scanned.
    pub bytes_scanned: u64,
    /// Where a torn tail was cut: file, offset, why.
    pub cut: Option<(PathBuf, u64, String)>,
    /// Whole segment files dropped after the cut, or never written.
    pub dropped_files: Vec<PathBuf>,
    /// The newest segment file was shorter than its header says (a power cut before its size
    /// was durable): its valid records were kept and the file extended again.
    pub short_segment: Option<PathBuf>,
    /// Corruption tolerated under [`RecoveryMode::TruncateAtCorruption`].
    pub tolerated_corruption: Option<String>,
    /// Time taken.
    pub elapsed: std::time::Duration,
}

/// Segment files `(seq, path)` oldest first, and leftover prepared files.
pub type Listing = (Vec<(u64, PathBuf)>, Vec<PathBuf>);

/// Lists segment files (seq, path) in `dir`, oldest first, and leftover prepared files.
pub fn list_dir(dir: &Path) -> Result<Listing> {
    let mut segs = Vec::new();
    let mut prepared = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
    for ent in rd {
        let ent = ent.map_err(|e| Error::io("read directory", dir, e))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = parse_segment_file_name(name) {
            segs.push((seq, ent.path()));
        } else if name.ends_with(PREPARED_SUFFIX) {
            prepared.push(ent.path());
        }
    }
    segs.sort();
    Ok((segs, prepared))
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
pub(crate) fn never_written(listed: &[(u64, PathBuf)], i: usize) -> bool {
    let Some((_, path)) = listed.get(i) else {
        return false;
    };
    header_is_blank(path) && (blank_after(listed, i) || (i > 0 && is_full_size(path)))
}

/// Whether file `i` may be shorter than its header says: only the last written segment,
/// which a power cut can leave short (every later file is blank).
pub(crate) fn may_be_short(listed: &[(u64, PathBuf)], i: usize) -> bool {
    blank_after(listed, i)
}

/// Whether every file after `i` is blank (trivially true for the newest).
fn blank_after(listed: &[(u64, PathBuf)], i: usize) -> bool {
    listed
        .get(i + 1..)
        .unwrap_or(&[])
        .iter()
        .all(|(_, p)| header_is_blank(p))
}

/// Whether the file is at least as long as a segment header.
fn is_full_size(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.len() >= crate::format::MIN_SEGMENT_SIZE)
}

/// Whether the header bytes the file has (up to `SEGMENT_HEADER_SIZE`) are all zero: a file
/// whose header never reached the disk. A short file with any non-zero byte is not blank.
fn header_is_blank(path: &Path) -> bool {
    use std::io::Read;
    let mut raw = Vec::with_capacity(SEGMENT_HEADER_SIZE);
    match std::fs::File::open(path) {
        Ok(f) => match f.take(SEGMENT_HEADER_SIZE as u64).read_to_end(&mut raw) {
            Ok(_) => raw.iter().all(|&b| b == 0),
            Err(_) => false,
        },
        Err(_) => false,
    }
}

/// Reads the directory and decides how the log recovers. Writes nothing.
///
/// `opts` say how the writer will write the segments (irrelevant when `writable` is false).
pub fn plan(dir: &Path, mode: RecoveryMode, writable: bool, opts: &FileOptions) -> Result<Plan> {
    let started = std::time::Instant::now();
    let (listed, prepared) = list_dir(dir)?;
    let mut remove: Vec<PathBuf> = prepared;
    let mut report = RecoveryReport::default();

    // Open segments. A file whose header never reached the disk was created but never synced
    // (a flush syncs a segment from its header on): nothing in it or after it was
    // acknowledged, so it and every later file are dropped.
    let mut segments = Vec::with_capacity(listed.len());
    for (i, (seq, path)) in listed.iter().enumerate() {
        if let Some(&(prev, _)) = i.checked_sub(1).and_then(|j| listed.get(j)) {
            if prev + 1 != *seq {
                return Err(Error::corrupt(
                    path,
                    0,
                    format!("segment {} is missing (found {prev} then {seq})", prev + 1),
                ));
            }
        }
        // Only the last written segment may be short (a power cut before its size was
        // durable, in logs written before sizes were synced ahead of the rename): its valid
        // prefix is kept, and the file is extended again before it is written.
        match Segment::open(path, *seq, writable, opts, may_be_short(&listed, i)) {
            Ok(s) => {
                if s.is_short() {
                    report.short_segment = Some(path.clone());
                }
                segments.push(Arc::new(s))
            }
            Err(_) if never_written(&listed, i) => {
                for (_, p) in &listed[i..] {
                    remove.push(p.clone());
                    report.dropped_files.push(p.clone());
                }
                break;
            }
            Err(e) => return Err(e),
        }
    }

    let scans: Vec<Scan> = segments.par_iter().map(|s| scan_segment(s)).collect();
    report.segments_scanned = scans.len();
    report.entry_records = scans.iter().map(|s| s.entries).sum();
    report.bytes_scanned = scans.iter().map(|s| s.end).sum();

    // Merge oldest first.
    let mut state = LogState::default();
    let mut runs: Vec<RunPlan> = Vec::new();
    let mut keep = segments.len();
    let mut write_pos = SEGMENT_HEADER_SIZE as u64;
    let mut needs_checkpoint = segments.is_empty();
    for (k, (seg, scan)) in segments.iter().zip(&scans).enumerate() {
        let newest = k + 1 == segments.len();
        let sealed_end = seg.sealed_end();
        // Where this segment's valid part ends and why, if it ends early.
        let mut cut: Option<(u64, String)> = scan.torn.clone();
        if let (Some(end), None) = (sealed_end, &cut) {
            if end != scan.end {
                cut = Some((
                    scan.end,
                    format!(
                        "records end at {} but the segment was sealed at {end}",
                        scan.end
                    ),
                ));
            }
        }
        let mut items = scan.items.iter();
        match items.next() {
            Some(Item::Checkpoint {
                offset,
                first,
                next,
                prev_end,
                prev_crc,
                metas,
            }) => {
                let chained = k == 0 || {
                    let prev = &scans[k - 1];
                    (prev.end, prev.last_crc) == (*prev_end, *prev_crc)
                };
                if k == 0 {
                    state.first = *first;
                    state.next = *next;
                    state.metas = Arc::new(metas.clone());
                } else if !chained
                    || (state.first, state.next, &*state.metas) != (*first, *next, metas)
                {
                    let why = format!(
                        "checkpoint says first={first} next={next} after a segment ending at {prev_end} \
                         (crc {prev_crc:#x}), but the previous segment ends at {} (crc {:#x}) with first={} next={}",
                        scans[k - 1].end, scans[k - 1].last_crc, state.first, state.next
                    );
                    // The previous segment lost its unsynced tail while this one's start
                    // reached the disk: a torn write if the previous one was never sealed.
                    let prev = &segments[k - 1];
                    if prev.sealed_end().is_some() {
                        corrupt_or_tolerate(mode, &mut report, seg.path(), *offset, &why)?;
                    } else {
                        report.cut = Some((prev.path().to_path_buf(), scans[k - 1].end, why));
                    }
                    keep = k;
                    break;
                }
            }
            _ => {
                // No checkpoint: nothing valid in this segment. Only a torn write if the
                // segment was never sealed.
                if sealed_end.is_some() {
                    let (off, why) = cut
                        .clone()
                        .unwrap_or((SEGMENT_HEADER_SIZE as u64, String::new()));
                    corrupt_or_tolerate(mode, &mut report, seg.path(), off, &why)?;
                }
                if k == 0 && !newest {
                    return Err(Error::corrupt(
                        seg.path(),
                        SEGMENT_HEADER_SIZE as u64,
                        "oldest segment has no checkpoint; the log's start state is unknown",
                    ));
                }
                if let Some((off, why)) = &cut {
                    report.cut = Some((seg.path().to_path_buf(), *off, why.clone()));
                }
                needs_checkpoint = true;
                write_pos = SEGMENT_HEADER_SIZE as u64;
                keep = k + 1;
                break;
            }
        }
        for item in items {
            replay(seg, k, item, &mut state, &mut runs)?;
        }
        write_pos = scan.end;
        if let Some((off, why)) = cut {
            // A sealed segment was fully durable when it was marked: damage in it is not a
            // torn write, whether or not it is the newest file.
            if sealed_end.is_some() {
                corrupt_or_tolerate(mode, &mut report, seg.path(), off, &why)?;
            }
            report.cut = Some((seg.path().to_path_buf(), off, why));
            keep = k + 1;
            break;
        }
    }
    for seg in segments.drain(keep..) {
        remove.push(seg.path().to_path_buf());
        report.dropped_files.push(seg.path().to_path_buf());
    }
    let mut scans = scans;
    scans.truncate(keep);
    if segments.is_empty() {
        needs_checkpoint = true;
        write_pos = SEGMENT_HEADER_SIZE as u64;
    }
    // The runs must hold every live entry: a gap means a segment that held entries is gone.
    check_coverage(&segments, &state, &runs, report.cut.as_ref())?;
    // Leading segments that no live entry needs.
    let first_used = runs.first().map(|r| r.segment).unwrap_or(usize::MAX);
    let purged_prefix = first_used.min(segments.len().saturating_sub(1));
    report.elapsed = started.elapsed();
    Ok(Plan {
        segments,
        scans,
        state,
        runs,
        write_pos,
        needs_checkpoint,
        remove,
        purged_prefix,
        report,
    })
}

/// Checks that the runs hold every live entry. When they do not and recovery cut a damaged
/// record, the cut is what lost them (later changes, such as deleting the segments a purge
/// released, depended on that record), so the error names its file and offset.
fn check_coverage(
    segments: &[Arc<Segment>],
    state: &LogState,
    runs: &[RunPlan],
    cut: Option<&(PathBuf, u64, String)>,
) -> Result<()> {
    let mut expect = state.first;
    let mut ok = true;
    for r in runs {
        let end = r.end();
        if end <= state.first {
            continue; // dead run (all purged or truncated away)
        }
        if r.first > expect {
            ok = false;
            break;
        }
        expect = end;
    }
    if ok && (state.is_empty() || expect == state.next) {
        return Ok(());
    }
    if let Some((path, offset, why)) = cut {
        return Err(Error::corrupt(
            path,
            *offset,
            format!(
                "damaged record ({why}); without it entries {expect}..{} are missing, and the \
                 segment that held them is gone, so the record was durable and this is \
                 corruption, not a torn write",
                state.next
            ),
        ));
    }
    let (path, offset) = segments
        .first()
        .map(|s| (s.path().to_path_buf(), 0))
        .unwrap_or_default();
    Err(Error::corrupt(
        path,
        offset,
        format!(
            "entries {expect}..{} are missing: a segment that held them is gone",
            state.next
        ),
    ))
}

fn corrupt_or_tolerate(
    mode: RecoveryMode,
    report: &mut RecoveryReport,
    path: &Path,
    offset: u64,
    why: &str,
) -> Result<()> {
    match mode {
        RecoveryMode::Strict => Err(Error::corrupt(path, offset, why)),
        RecoveryMode::TruncateAtCorruption => {
            report.tolerated_corruption = Some(format!("{}:{offset}: {why}", path.display()));
            Ok(())
        }
    }
}

fn replay(
    seg: &Segment,
    k: usize,
    item: &Item,
    state: &mut LogState,
    runs: &mut Vec<RunPlan>,
) -> Result<()> {
    let bad = |offset: u64, e: Error| {
        Error::corrupt(
            seg.path(),
            offset,
            format!("record breaks the log's rules: {e}"),
        )
    };
    match item {
        Item::Checkpoint { offset, .. } => {
            return Err(Error::corrupt(seg.path(), *offset, "second checkpoint"))
        }
        Item::Entries {
            offset,
            first,
            offsets,
        } => {
            state.check_append(*first).map_err(|e| bad(*offset, e))?;
            // Every index of the run must leave room for a successor, like the first; the
            // error names the first record past the limit.
            let last = (offsets.len() as u64)
                .checked_sub(1)
                .and_then(|n| first.checked_add(n))
                .filter(|&l| l <= MAX_INDEX);
            let Some(last) = last else {
                let slot = usize::try_from(MAX_INDEX.saturating_sub(*first).saturating_add(1))
                    .unwrap_or(usize::MAX);
                let at = offsets.get(slot).map_or(*offset, |&o| u64::from(o));
                return Err(bad(
                    at,
                    Error::IndexTooLarge {
                        index: first.saturating_add(slot as u64),
                        max: MAX_INDEX,
                    },
                ));
            };
            state.apply_append(*first);
            state.next = last + 1;
            match runs.last_mut() {
                Some(r) if r.segment == k && r.end() == *first => {
                    r.offsets.extend_from_slice(offsets)
                }
                _ => {
                    // An append to an empty log may skip ahead: older runs are gone.
                    if runs.last().is_some_and(|r| r.end() != *first) {
                        runs.clear();
                    }
                    runs.push(RunPlan {
                        segment: k,
                        first: *first,
                        offsets: offsets.clone(),
                    })
                }
            }
        }
        Item::Truncate { offset, from } => {
            if state.check_truncate(*from).map_err(|e| bad(*offset, e))? {
                state.apply_truncate(*from);
                runs.retain(|r| r.first < *from);
                if let Some(r) = runs.last_mut() {
                    let keep = (*from - r.first) as usize;
                    r.offsets.truncate(keep);
                }
            }
        }
        Item::Purge {
            first,
            metas,
            reset: true,
            offset,
        } => {
            if *first < state.first {
                return Err(bad(
                    *offset,
                    Error::TruncateBelowPurged {
                        from: *first,
                        first: state.first,
                    },
                ));
            }
            for (k, v) in metas {
                state.apply_meta(*k, v.clone());
            }
            state.apply_reset(*first);
            runs.clear();
        }
        Item::Purge { first, metas, .. } => {
            for (k, v) in metas {
                state.apply_meta(*k, v.clone());
            }
            state.apply_purge(*first);
            runs.retain(|r| r.end() > *first);
        }
        Item::Meta { key, value, .. } => state.apply_meta(*key, value.clone()),
    }
    Ok(())
}

/// Applies a plan's cuts: removes dropped files, zeroes bytes after the cut in the last
/// segment (so stale bytes can never come back as records, invariant I5), makes every kept
/// record durable and seals older segments. Runs before the writer exists.
pub fn repair(dir: &Path, plan: &mut Plan, opts: &FileOptions) -> Result<()> {
    let mut dir_changed = false;
    for p in &plan.remove {
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
        if k + 1 == n {
            zero_after(seg, end)?;
        }
        seg.sync_range(0, end)?;
        seg.set_synced(end);
        let sealed = seg.sealed_end();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trip() {
        let mut s = LogState {
            first: 3,
            next: 9,
            ..Default::default()
        };
        s.apply_meta(1, Arc::from(&b"vote"[..]));
        s.apply_meta(7, Arc::from(&b""[..]));
        let body = encode_checkpoint(&s, 4096, 0xabcd);
        assert_eq!(body.len(), checkpoint_len(&s));
        let cp = decode_checkpoint(&body).unwrap();
        assert_eq!(
            (cp.first, cp.next, cp.prev_end, cp.prev_crc),
            (3, 9, 4096, 0xabcd)
        );
        assert_eq!(cp.metas, *s.metas);
        assert!(decode_checkpoint(&body[..body.len() - 1]).is_none());
        let mut longer = body.clone();
        longer.push(0);
        assert!(decode_checkpoint(&longer).is_none());
    }

    #[test]
    fn meta_items_round_trip() {
        assert_eq!(decode_meta_items(&[]), Some(vec![]));
        let body = encode_meta_items(&[(3, b"abc"), (4, b"")]);
        let got = decode_meta_items(&body).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].0, &got[0].1[..]), (3, &b"abc"[..]));
        assert_eq!((got[1].0, &got[1].1[..]), (4, &b""[..]));
        assert!(decode_meta_items(&body[..body.len() - 1]).is_none());
        assert!(decode_meta_items(&[1, 0]).is_none());
    }

    #[test]
    fn first_nonzero_finds_any_byte() {
        let mut v = vec![0u8; 100];
        assert_eq!(first_nonzero(&v), None);
        for i in [0, 5, 8, 63, 99] {
            v[i] = 1;
            assert_eq!(first_nonzero(&v[..]), Some(i));
            assert_eq!(first_nonzero(&v[1..]), i.checked_sub(1));
            v[i] = 0;
        }
    }
}
