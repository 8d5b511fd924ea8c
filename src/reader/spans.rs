//! The sender's side of replication: [`View::frames`] hands out the encoded entry records of
//! an index range as a few byte spans borrowed from the map.

use std::io::{IoSlice, Write};
use std::ops::{Range, RangeBounds};
use std::path::Path;

use zerocopy::{FromBytes, IntoBytes};

use super::View;
use crate::error::{Error, Result};
use crate::format::{align_up, RecordHeader, RECORD_HEADER_SIZE};
use crate::record::{body_crc, check};
use crate::segment::Segment;

/// The frames of a contiguous index range, ready to send: see [`View::frames`].
#[derive(Debug)]
pub struct FrameBatch<'v> {
    spans: Vec<FrameSpan<'v>>,
    indexes: Range<u64>,
    len: usize,
}

/// Frames of consecutive entries that are contiguous bytes: borrowed from one segment's map,
/// or (entries in a version 1 segment) a copy with the body checksum filled in.
#[derive(Debug)]
pub struct FrameSpan<'v> {
    bytes: SpanBytes<'v>,
    indexes: Range<u64>,
}

#[derive(Debug)]
enum SpanBytes<'v> {
    Mapped {
        bytes: &'v [u8],
        segment: &'v Segment,
        offset: u64,
    },
    Copied(Vec<u8>),
}

/// Where a span's bytes are in a segment file, for `sendfile`/`splice`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileRange<'v> {
    /// The segment file.
    pub path: &'v Path,
    /// Byte offset of the span in the file.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

impl<'v> FrameSpan<'v> {
    /// The frames' bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.bytes {
            SpanBytes::Mapped { bytes, .. } => bytes,
            SpanBytes::Copied(v) => v,
        }
    }

    /// Indexes of the entries in this span.
    pub fn indexes(&self) -> Range<u64> {
        self.indexes.clone()
    }

    /// The span's place in its segment file, for `sendfile`/`splice`; `None` for a copied
    /// span (entries of a version 1 segment). The file holds these bytes while the segment is
    /// in the log. Open it and send while you hold the [`View`]: a purge deletes the file or
    /// renames it into the segment pool, so the path may be gone (never another segment's
    /// bytes); an open descriptor reads the same bytes while the view lives (a pooled file is
    /// rewritten only once no view maps it), and no longer once it is dropped.
    pub fn file(&self) -> Option<FileRange<'v>> {
        match &self.bytes {
            SpanBytes::Mapped {
                bytes,
                segment,
                offset,
            } => Some(FileRange {
                path: segment.path(),
                offset: *offset,
                len: bytes.len() as u64,
            }),
            SpanBytes::Copied(_) => None,
        }
    }
}

impl<'v> FrameBatch<'v> {
    /// The spans, in index order.
    pub fn spans(&self) -> &[FrameSpan<'v>] {
        &self.spans
    }

    /// Indexes of the entries in the batch (empty if the range held none).
    pub fn indexes(&self) -> Range<u64> {
        self.indexes.clone()
    }

    /// Total bytes of the frames.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch holds no frame.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// One [`IoSlice`] per span, for `write_vectored`.
    pub fn io_slices(&self) -> Vec<IoSlice<'_>> {
        self.spans.iter().map(|s| IoSlice::new(s.bytes())).collect()
    }

    /// Writes every frame to `w` with `write_vectored` calls (as many as partial writes need).
    pub fn write_all_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        let mut slices = self.io_slices();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            match w.write_vectored(rest) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut rest, n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The frames as one owned buffer (a copy).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len);
        for s in &self.spans {
            v.extend_from_slice(s.bytes());
        }
        v
    }
}

impl View {
    /// The entries of `range` (clamped to the log, like [`View::range`]) as replication frames:
    /// their records exactly as stored, borrowed from the map as a few contiguous spans, in
    /// index order. A span ends where the next entry's record does not follow in the same
    /// file: at a segment boundary, or where a meta, truncate or purge record lies between two
    /// entries (frames hold entry records only). Entries of a version 1 segment, which have no
    /// body checksum, come as copies with it filled in (`docs/format.md`).
    ///
    /// Nothing is verified here (recovery checked every record at open, and the writer wrote
    /// the rest): [`View::frames_checked`] verifies what it sends. The receiver checks every
    /// frame either way. Errors only for a record that cannot be located, which is
    /// [`Error::Corrupt`].
    ///
    /// ```
    /// use raft_mmap_log::{Config, Store};
    /// let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    /// let mut leader = Store::open(a.path(), Config::default())?;
    /// leader.append_batch([(1, &b"one"[..]), (2, b"two"), (3, b"three")])?;
    /// let view = leader.reader().view();
    /// let batch = view.frames(2..)?;
    /// assert_eq!(batch.indexes(), 2..4);
    /// let mut wire = Vec::new();
    /// batch.write_all_to(&mut wire)?;               // a TcpStream in real life
    ///
    /// let mut follower = Store::open(b.path(), Config::default())?;
    /// follower.append_frames(&wire)?;
    /// assert_eq!(follower.reader().view().get(3), Some(&b"three"[..]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn frames(&self, range: impl RangeBounds<u64>) -> Result<FrameBatch<'_>> {
        self.build_frames(range, false)
    }

    /// Like [`View::frames`], and verifies every record first (its salted CRC, its body
    /// checksum, its kind and index), as [`View::get_checked`] does: a record that changed
    /// since the log was opened is [`Error::Corrupt`] naming the file and offset, never sent.
    pub fn frames_checked(&self, range: impl RangeBounds<u64>) -> Result<FrameBatch<'_>> {
        self.build_frames(range, true)
    }

    fn build_frames(&self, range: impl RangeBounds<u64>, checked: bool) -> Result<FrameBatch<'_>> {
        let (start, end) = self.clamp(&range);
        let mut out = FrameBatch {
            spans: Vec::new(),
            indexes: start..start.max(end),
            len: 0,
        };
        let mut index = start;
        while index < end {
            let (pos, slot) = self.locate(index).ok_or_else(|| missing(index))?;
            let run = &self.version.runs[pos].run;
            let count = (self.run_len(pos) - slot).min(end - index);
            index = self.run_frames(&mut out, pos, slot, count, checked)?;
            debug_assert_eq!(index, run.first() + slot + count);
        }
        out.len = out.spans.iter().map(|s| s.bytes().len()).sum();
        Ok(out)
    }

    /// Adds the frames of slots `slot..slot + count` of run `pos` to `out`; returns the index
    /// after the last.
    fn run_frames<'v>(
        &'v self,
        out: &mut FrameBatch<'v>,
        pos: usize,
        slot: u64,
        count: u64,
        checked: bool,
    ) -> Result<u64> {
        let run = &self.version.runs[pos].run;
        let seg: &'v Segment = run.segment();
        let seed = seg.seed();
        let first = run.first() + slot;
        // The span being built: (file offset of its start, its end, its first index).
        let mut open: Option<(usize, usize, u64)> = None;
        for k in 0..count {
            let index = first + k;
            let offset = run.offset(slot + k).ok_or_else(|| missing(index))? as usize;
            let (h, body) = self
                .record_at(pos, slot + k)
                .ok_or_else(|| missing(index))?;
            let corrupt = |why: &str| {
                Error::corrupt(
                    seg.path(),
                    offset as u64,
                    format!("entry {index}: {why} (the record changed after the log was opened)"),
                )
            };
            if checked {
                check(seed, h, body).map_err(corrupt)?;
            }
            if h.arg.get() != index {
                return Err(corrupt(&format!("the record names index {}", h.arg.get())));
            }
            let size = RECORD_HEADER_SIZE + align_up(body.len());
            let end = offset + size;
            if end > seg.size() as usize {
                return Err(corrupt("record length runs past the end of the segment"));
            }
            match &mut open {
                Some((_, e, _)) if *e == offset => *e = end,
                _ => {
                    if let Some(span) = open.take() {
                        out.spans.push(self.span(seg, span, index)?);
                    }
                    open = Some((offset, end, index));
                }
            }
        }
        if let Some(span) = open {
            out.spans.push(self.span(seg, span, first + count)?);
        }
        Ok(first + count)
    }

    /// The span of records `start..end` of `seg`, entries `first..next`: borrowed, or copied
    /// with body checksums (a version 1 segment) and zero padding.
    fn span<'v>(
        &'v self,
        seg: &'v Segment,
        (start, end, first): (usize, usize, u64),
        next: u64,
    ) -> Result<FrameSpan<'v>> {
        // SAFETY: `start..end` covers whole records of published slots (each `record_at`
        // above bounded its header and body by the segment size; padding lies before the next
        // record or the unwritten rest, and is never written again): written before
        // publication and never rewritten while mapped (I1, I3). The segment is kept mapped by
        // `self.version`, which outlives the borrow (I2).
        let bytes = unsafe { seg.bytes(start, end - start) };
        let indexes = first..next;
        let padding_clean = || {
            let mut at = 0;
            while at < bytes.len() {
                let Ok((h, rest)) = RecordHeader::ref_from_prefix(&bytes[at..]) else {
                    return false;
                };
                let len = h.len.get() as usize;
                match rest.get(len..align_up(len)) {
                    Some(pad) if pad.iter().all(|&b| b == 0) => {}
                    _ => return false,
                }
                at += RECORD_HEADER_SIZE + align_up(len);
            }
            true
        };
        if seg.seed().has_body_crc() && padding_clean() {
            return Ok(FrameSpan {
                bytes: SpanBytes::Mapped {
                    bytes,
                    segment: seg,
                    offset: start as u64,
                },
                indexes,
            });
        }
        Ok(FrameSpan {
            bytes: SpanBytes::Copied(reframe(bytes)),
            indexes,
        })
    }
}

/// Copies records (already bounded by the caller) as frames: body checksum filled in,
/// padding zeroed.
fn reframe(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while let Ok((h, rest)) = RecordHeader::read_from_prefix(bytes.get(at..).unwrap_or(&[])) {
        let len = h.len.get() as usize;
        let Some(body) = rest.get(..len) else { break };
        let mut h = h;
        h.body_crc = body_crc(&h, &[body]).into();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(body);
        out.resize(out.len() + align_up(len) - len, 0);
        at += RECORD_HEADER_SIZE + align_up(len);
    }
    out
}

fn missing(index: u64) -> Error {
    Error::corrupt(
        "",
        0,
        format!("entry {index} is missing from a view that holds it"),
    )
}
