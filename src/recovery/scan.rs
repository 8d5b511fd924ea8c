//! The one scan loop of the crate: [`Records`] walks a segment's valid records, and
//! [`scan_segment`] folds them into a [`Scan`] for the merge. `inspect::dump` walks the same
//! iterator, so a dump stops where recovery stops, for the same reason.

use std::collections::BTreeMap;
use std::sync::Arc;

use zerocopy::FromBytes;

use super::codec::{decode_checkpoint, decode_meta_items, Checkpoint, MetaItems};
use crate::format::{RecordKind, GROUPS_FORMAT_VERSION, SEGMENT_HEADER_SIZE};
use crate::index::Offsets;
use crate::record::{decode_with, Decoded, Record, Seed};
use crate::segment::Segment;

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
        /// Their record offsets' positions in [`Scan::offsets`].
        slots: std::ops::Range<usize>,
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
    /// A meta removal record.
    MetaRemove {
        /// Key.
        key: u64,
    },
    /// A group record: the records after it belong to group `id`.
    Group {
        /// Group id.
        id: u64,
    },
    /// A group checkpoint: group `id`'s state at the start of the segment.
    GroupCheckpoint {
        /// File offset.
        offset: u64,
        /// Group id.
        id: u64,
        /// First retained index.
        first: u64,
        /// One past the last index.
        next: u64,
        /// Meta values.
        metas: BTreeMap<u64, Arc<[u8]>>,
    },
    /// A rewrite: the group's entries are replaced by the `count` entries that follow.
    Rewrite {
        /// File offset.
        offset: u64,
        /// First index of the entries that follow.
        first: u64,
        /// Number of entries that follow.
        count: u64,
        /// CRC field of the record before it (where the log ends if the rewrite is cut).
        prev_crc: u32,
    },
    /// A group removal.
    GroupRemove {
        /// Group id.
        id: u64,
    },
}

/// The result of scanning one segment alone.
#[derive(Debug)]
pub struct Scan {
    /// Valid records, in file order.
    pub items: Vec<Item>,
    /// The record offset of every entry, in file order, in the index's own chunks: the
    /// [`Item::Entries`] name their slots here, and the index run of the segment adopts
    /// them (`Run::adopt`) instead of copying them. 4 bytes per entry, nothing else per
    /// record is kept.
    pub offsets: Offsets,
    /// Offset just past the last valid record.
    pub end: u64,
    /// First bad spot after the valid prefix, and what is wrong there.
    pub torn: Option<(u64, String)>,
    /// In an unsealed recycled segment, the spot that is not a valid record where the records
    /// end (not a torn write: the previous life's bytes may follow), and what is wrong
    /// there; recovery names it when entries turn out missing.
    pub recycled_end: Option<(u64, String)>,
    /// Number of valid records.
    pub records: u64,
    /// Number of entry records.
    pub entries: u64,
    /// Offset of the last valid record.
    pub last_offset: Option<u64>,
    /// CRC field of the last valid record (0 if none).
    pub last_crc: u32,
}

/// A record's body, checked as recovery checks it.
#[derive(Debug, Clone)]
pub enum Body {
    /// Entry, truncate, meta: the body is opaque here.
    Plain,
    /// A purge or reset record's meta items.
    Purge(MetaItems),
    /// A checkpoint.
    Checkpoint(Checkpoint),
    /// A rewrite's entry count.
    Rewrite(u64),
}

/// One valid record: where it is, the record, and its checked body.
#[derive(Debug, Clone)]
pub struct Found<'a> {
    /// File offset of the record header.
    pub offset: u64,
    /// The record (body borrowed from the caller's bytes).
    pub record: Record<'a>,
    /// Its checked body.
    pub body: Body,
}

/// Iterates the valid records of a segment's bytes, oldest first, stopping at the first spot
/// that is not a valid record; [`Records::stop`] then says where and why.
///
/// The rules: every record decodes (CRC, kind, size), the first record is a checkpoint and no
/// other is, purge and checkpoint bodies decode, and (unless `sealed`) nothing but zeros
/// follows the last record. Never panics on any byte pattern.
pub struct Records<'a> {
    bytes: &'a [u8],
    seed: Seed,
    sealed: bool,
    /// A recycled file: `Some(sealed end)` (0 when unsealed). See [`Records::recycled`].
    recycled: Option<u64>,
    /// See [`Records::closed_at`].
    closed_end: Option<u64>,
    pos: usize,
    stop: Option<(u64, String)>,
    /// See [`Scan::recycled_end`].
    recycled_end: Option<(u64, String)>,
    done: bool,
}

impl<'a> Records<'a> {
    /// Walks `bytes` (a whole segment, header included) with the segment's `seed` (salt and
    /// format version). A sealed
    /// segment's mark says where its records end, so its unused rest is not read (reading it
    /// would fault in every page of a large file).
    pub fn new(bytes: &'a [u8], seed: Seed, sealed: bool) -> Self {
        Records {
            bytes,
            seed,
            sealed,
            recycled: None,
            closed_end: None,
            pos: SEGMENT_HEADER_SIZE,
            stop: None,
            recycled_end: None,
            done: false,
        }
    }

    /// For a recycled file ([`crate::format::SEGMENT_FLAG_RECYCLED`]): the bytes after its
    /// records may be a previous life's, written under another salt, so they are never read
    /// as records and are not a torn write. A sealed one's records end exactly at its sealed
    /// end (`sealed_end`; nothing after it is read); an unsealed one's end at the first spot
    /// that is not a valid record. (Recovery never appends to an unsealed recycled segment
    /// again: it seals it there and starts a new one, so bytes this life wrote past that spot
    /// can never be read either.)
    pub fn recycled(mut self, sealed_end: Option<u64>) -> Self {
        self.recycled = Some(sealed_end.unwrap_or(0));
        self
    }

    /// For a segment whose writer closed cleanly at `end` (its closed synced mark): when the
    /// records end exactly there, the bytes after them are not read (no byte of that life
    /// lies past it, so they hold no torn write; reading them would fault in every page of a
    /// mostly empty file). Records that end anywhere else are checked as without the mark.
    pub fn closed_at(mut self, end: Option<u64>) -> Self {
        self.closed_end = end;
        self
    }

    /// Offset just past the last valid record returned so far.
    pub fn end(&self) -> u64 {
        self.pos.min(self.bytes.len()) as u64
    }

    /// Where the valid records stopped early and why (`None`: a clean end, or not done yet).
    pub fn stop(&self) -> Option<&(u64, String)> {
        self.stop.as_ref()
    }

    /// Where an unsealed recycled segment's records ended at a spot that is not a record
    /// (see [`Scan::recycled_end`]).
    pub fn recycled_end(&self) -> Option<&(u64, String)> {
        self.recycled_end.as_ref()
    }

    fn halt(&mut self, offset: usize, why: impl Into<String>) -> Option<Found<'a>> {
        self.stop = Some((offset as u64, why.into()));
        self.done = true;
        None
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Found<'a>;

    fn next(&mut self) -> Option<Found<'a>> {
        if self.done {
            return None;
        }
        let pos = self.pos;
        if self
            .recycled
            .is_some_and(|end| end > 0 && pos as u64 >= end)
        {
            self.done = true;
            return None;
        }
        let rest = self.bytes.get(pos..).unwrap_or(&[]);
        let r = match decode_with(self.seed, rest) {
            Decoded::Invalid(why) if self.recycled == Some(0) => {
                self.recycled_end = Some((pos as u64, why.to_string()));
                self.done = true;
                return None;
            }
            Decoded::End => {
                self.done = true;
                if self.sealed || self.recycled.is_some() || self.closed_end == Some(pos as u64) {
                    return None;
                }
                return match first_nonzero(rest) {
                    Some(nz) => self.halt(pos + nz, "non-zero bytes after the last record"),
                    None => None,
                };
            }
            Decoded::Invalid(why) => return self.halt(pos, why),
            Decoded::Record(r) => r,
        };
        let is_first = pos == SEGMENT_HEADER_SIZE;
        if is_first != (r.kind == RecordKind::Checkpoint) {
            let why = if is_first {
                "segment does not start with a checkpoint"
            } else {
                "checkpoint record after the start of a segment"
            };
            return self.halt(pos, why);
        }
        let body = match r.kind {
            RecordKind::Purge | RecordKind::Reset => match decode_meta_items(r.body) {
                Some(metas) => Body::Purge(metas),
                None => return self.halt(pos, "malformed purge body"),
            },
            RecordKind::Checkpoint | RecordKind::GroupCheckpoint => {
                match decode_checkpoint(r.body) {
                    Some(cp) => Body::Checkpoint(cp),
                    None => return self.halt(pos, "malformed checkpoint body"),
                }
            }
            RecordKind::Entry | RecordKind::Truncate | RecordKind::Meta => Body::Plain,
            RecordKind::Group | RecordKind::GroupRemove | RecordKind::MetaRemove => Body::Plain,
            RecordKind::Rewrite => match <[u8; 8]>::try_from(r.body) {
                Ok(count) => Body::Rewrite(u64::from_le_bytes(count)),
                Err(_) => return self.halt(pos, "malformed rewrite body"),
            },
        };
        let group_kind = matches!(
            r.kind,
            RecordKind::Group
                | RecordKind::GroupCheckpoint
                | RecordKind::GroupRemove
                | RecordKind::Rewrite
                | RecordKind::MetaRemove
        );
        if group_kind && self.seed.version < GROUPS_FORMAT_VERSION {
            return self.halt(
                pos,
                format!(
                    "{:?} record in a version {} segment (it needs version {})",
                    r.kind, self.seed.version, GROUPS_FORMAT_VERSION
                ),
            );
        }
        self.pos = pos.saturating_add(r.size);
        Some(Found {
            offset: pos as u64,
            record: r,
            body,
        })
    }
}

/// The whole mapped segment, for a scan.
///
/// # Safety
///
/// Nobody may write the segment while the slice lives: recovery runs before any writer or
/// flusher exists for it (and drops the slice before `repair` writes), and the tools hold the
/// directory's read lock, which keeps every `Store` out.
pub unsafe fn segment_bytes(seg: &Segment) -> &[u8] {
    // SAFETY: forwarded to the caller (see above).
    unsafe { seg.all_bytes() }
}

/// Scans a segment. Reads only; never panics on any byte pattern.
pub fn scan_segment(seg: &Segment) -> Scan {
    // SAFETY: recovery runs before any writer or flusher exists for this segment, and the
    // slice is dropped before `repair` writes to it; the tools scan under the directory's
    // read lock, which keeps every `Store` (the only writer) out.
    let bytes = unsafe { segment_bytes(seg) };
    // Where the records are known to end: the sealed end, or the end a clean close left in
    // its closed mark (nothing past it is read unless the records run on, and then the
    // pages fault in as they are read). Read ahead only that far.
    let scan_len = seg
        .sealed_end()
        .or(seg.closed_end())
        .map_or(bytes.len(), |end| {
            usize::try_from(end).unwrap_or(usize::MAX)
        });
    let mut ahead = ReadAhead::new(bytes.get(..scan_len).unwrap_or(bytes));
    ahead.advance(0);
    let mut records = Records::new(bytes, seg.seed(), seg.sealed_end().is_some());
    if seg.is_recycled() {
        records = records.recycled(seg.sealed_end());
    }
    records = records.closed_at(seg.closed_end());
    let mut scan = Scan {
        items: Vec::new(),
        offsets: Offsets::default(),
        end: SEGMENT_HEADER_SIZE as u64,
        torn: None,
        recycled_end: None,
        records: 0,
        entries: 0,
        last_offset: None,
        last_crc: 0,
    };
    for found in records.by_ref() {
        ahead.advance(found.offset as usize);
        add_item(&mut scan.items, &mut scan.offsets, &found, scan.last_crc);
        scan.records += 1;
        if found.record.kind == RecordKind::Entry {
            scan.entries += 1;
        }
        scan.last_offset = Some(found.offset);
        scan.last_crc = found.record.crc;
    }
    scan.offsets.trim();
    scan.end = records.end();
    scan.torn = records.stop().cloned();
    scan.recycled_end = records.recycled_end().cloned();
    scan
}

/// Readahead for the scan of a cold segment: the next [`ReadAhead::WINDOW`]s ahead of the
/// scan position are asked for with `MADV_WILLNEED`, so the disk always has large reads
/// queued ahead of the scan, however small the device's own readahead window is, and the
/// scan never waits for a read it could have started earlier. Each call covers one window,
/// so it returns quickly. A hint that leaves no mode on the map (the readers share it later;
/// unlike `MADV_SEQUENTIAL`, which would stay and change how their pages are read and
/// reclaimed); a kernel that refuses it changes nothing. Off when sampled pages show the file
/// cached: the hint would then look every page up for nothing.
struct ReadAhead<'a> {
    bytes: &'a [u8],
    /// Everything below this offset has been asked for.
    advised: usize,
}

impl<'a> ReadAhead<'a> {
    /// Bytes asked for per call; the scan keeps one to two windows asked for ahead of it.
    const WINDOW: usize = 8 << 20;

    /// For `bytes`, the scan range, which starts at the start of a mapping.
    fn new(bytes: &'a [u8]) -> Self {
        let advised = if looks_cached(bytes) { bytes.len() } else { 0 };
        ReadAhead { bytes, advised }
    }

    /// The scan is at offset `pos`: asks for what lies within two windows ahead of it.
    #[inline]
    fn advance(&mut self, pos: usize) {
        while self.advised < self.bytes.len() && pos.saturating_add(2 * Self::WINDOW) > self.advised
        {
            let end = self.bytes.len().min(self.advised + Self::WINDOW);
            let window = &self.bytes[self.advised..end];
            // SAFETY: `window` lies inside the mapping and starts at a multiple of WINDOW
            // from its page-aligned start; the advice only starts reads into the page cache
            // and never changes the mapped contents.
            unsafe {
                libc::madvise(
                    window.as_ptr() as *mut libc::c_void,
                    window.len(),
                    libc::MADV_WILLNEED,
                );
            }
            self.advised = end;
        }
    }
}

/// Whether eight pages spread over `bytes` (which starts at a page boundary) are all in the
/// page cache (`mincore`). An error counts as not cached.
fn looks_cached(bytes: &[u8]) -> bool {
    const SAMPLES: usize = 8;
    // SAFETY: `sysconf` has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let pages = bytes.len().div_ceil(page.max(1));
    (0..SAMPLES.min(pages)).all(|i| {
        let at = pages * i / SAMPLES * page;
        let mut resident = 0u8;
        // SAFETY: `at` is a page boundary inside the mapping `bytes` lies in (its start is
        // page-aligned); `mincore` only reads the page tables and writes one byte for the one
        // page asked about.
        let rc = unsafe {
            libc::mincore(
                bytes.as_ptr().add(at) as *mut libc::c_void,
                1,
                &mut resident,
            )
        };
        rc == 0 && resident & 1 == 1
    })
}

/// Adds a record to the items (an entry's offset to `offsets`), grouping consecutive
/// entries into one item.
fn add_item(items: &mut Vec<Item>, offsets: &mut Offsets, found: &Found<'_>, prev_crc: u32) {
    let (offset, r) = (found.offset, &found.record);
    let item = match (&found.body, r.kind) {
        (_, RecordKind::Entry) => {
            // Segments are at most `MAX_SEGMENT_SIZE` (< 4 GiB) long: offsets fit a u32.
            let pos = offset as u32;
            let at = offsets.len();
            offsets.push(pos);
            if let Some(Item::Entries { first, slots, .. }) = items.last_mut() {
                if slots.end == at && first.checked_add(slots.len() as u64) == Some(r.arg) {
                    slots.end = at + 1;
                    return;
                }
            }
            Item::Entries {
                offset,
                first: r.arg,
                slots: at..at + 1,
            }
        }
        (_, RecordKind::Truncate) => Item::Truncate {
            offset,
            from: r.arg,
        },
        (Body::Purge(metas), _) => Item::Purge {
            offset,
            first: r.arg,
            metas: metas.clone(),
            reset: r.kind == RecordKind::Reset,
        },
        (Body::Checkpoint(cp), RecordKind::GroupCheckpoint) => Item::GroupCheckpoint {
            offset,
            id: r.arg,
            first: cp.first,
            next: cp.next,
            metas: cp.metas.clone(),
        },
        (_, RecordKind::Group) => Item::Group { id: r.arg },
        (Body::Rewrite(count), _) => Item::Rewrite {
            offset,
            first: r.arg,
            count: *count,
            prev_crc,
        },
        (_, RecordKind::GroupRemove) => Item::GroupRemove { id: r.arg },
        (Body::Checkpoint(cp), _) => Item::Checkpoint {
            offset,
            first: cp.first,
            next: cp.next,
            prev_end: cp.prev_end,
            prev_crc: cp.prev_crc,
            metas: cp.metas.clone(),
        },
        (_, RecordKind::MetaRemove) => Item::MetaRemove { key: r.arg },
        (_, RecordKind::Meta) => Item::Meta {
            offset,
            key: r.arg,
            value: Arc::from(r.body),
        },
        // A purge or checkpoint always carries its decoded body (see `Records::next`).
        (
            Body::Plain,
            RecordKind::Purge
            | RecordKind::Reset
            | RecordKind::Checkpoint
            | RecordKind::GroupCheckpoint
            | RecordKind::Rewrite,
        ) => return,
    };
    items.push(item);
}

/// Offset of the first non-zero byte.
pub fn first_nonzero(bytes: &[u8]) -> Option<usize> {
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
    let words = <[u64]>::ref_from_bytes(mid).ok()?;
    // Blocks of 64 bytes OR-ed together (vector instructions), then the word in the block:
    // the zero tail of a segment is most of a warm reopen's bytes.
    let mut clean = 0;
    for block in words.chunks_exact(8) {
        if block.iter().fold(0, |acc, &w| acc | w) != 0 {
            break;
        }
        clean += block.len();
    }
    if let Some(w) = words[clean..].iter().position(|&w| w != 0) {
        let at = pre.len() + (clean + w) * 8;
        return bytes[at..].iter().position(|&b| b != 0).map(|i| at + i);
    }
    post.iter()
        .position(|&b| b != 0)
        .map(|i| pre.len() + mid.len() + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_nonzero_finds_any_byte() {
        let mut v = vec![0u8; 1000];
        assert_eq!(first_nonzero(&v), None);
        for i in [0, 5, 8, 63, 64, 71, 72, 127, 128, 511, 520, 991, 992, 999] {
            v[i] = 1;
            assert_eq!(first_nonzero(&v[..]), Some(i));
            assert_eq!(first_nonzero(&v[1..]), i.checked_sub(1));
            // The first one, when a later block has one too.
            v[999] |= 2;
            assert_eq!(first_nonzero(&v[..]), Some(i));
            v[i] = 0;
            v[999] = 0;
        }
    }
}
