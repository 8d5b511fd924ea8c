//! [`dump`]: every valid record of every segment file, walked with recovery's own record
//! iterator, so a dump stops where recovery stops and says why.

use std::path::Path;

use zerocopy::FromBytes;

use super::{seg_bytes, ReadLock};
use crate::error::Error;
use crate::format::{CheckpointHead, RecordKind};
use crate::recovery::scan::Records;
use crate::recovery::{self, files};
use crate::segment::{FileOptions, Segment};

/// One record, as [`dump`] reports it.
#[derive(Debug, Clone, Copy)]
pub struct DumpRecord<'a> {
    /// The segment file.
    pub path: &'a Path,
    /// Byte offset of the record header.
    pub offset: u64,
    /// Kind.
    pub kind: RecordKind,
    /// Kind-specific argument (entry index, truncate `from`, purge `first`, meta key).
    pub arg: u64,
    /// Body length.
    pub len: u32,
    /// Stored CRC (valid: the record decoded).
    pub crc: u32,
    /// The body.
    pub body: &'a [u8],
    /// The group the record belongs to (0: the log's own; a shared log's group otherwise).
    /// A `Group`, group checkpoint or group removal record names its group.
    pub group: u64,
}

impl DumpRecord<'_> {
    /// For a checkpoint: `(first, next, meta count)`.
    pub fn checkpoint(&self) -> Option<(u64, u64, u32)> {
        if !matches!(
            self.kind,
            RecordKind::Checkpoint | RecordKind::GroupCheckpoint
        ) {
            return None;
        }
        let (h, _) = CheckpointHead::read_from_prefix(self.body).ok()?;
        Some((h.first.get(), h.next.get(), h.meta_count.get()))
    }
}

/// Where a segment's records stop, as [`dump`] reports it.
#[derive(Debug, Clone)]
pub struct DumpEnd<'a> {
    /// The segment file.
    pub path: &'a Path,
    /// Offset just past the last valid record.
    pub offset: u64,
    /// `None`: clean end (zeros). Otherwise why the bytes there are not a record.
    pub invalid: Option<String>,
    /// Whether the segment carries the sealed mark.
    pub sealed: bool,
}

/// Which records [`dump`] reports.
#[derive(Debug, Clone, Copy, Default)]
pub struct DumpFilter {
    /// Only entries with index `>= from`.
    pub from: Option<u64>,
    /// Only entries with index `<= to`.
    pub to: Option<u64>,
    /// Only records of this group (see [`DumpRecord::group`]).
    pub group: Option<u64>,
}

impl DumpFilter {
    fn is_set(&self) -> bool {
        self.from.is_some() || self.to.is_some()
    }

    fn keeps(&self, rec: &DumpRecord<'_>) -> bool {
        if self.group.is_some_and(|g| g != rec.group) {
            return false;
        }
        if !self.is_set() {
            return true;
        }
        rec.kind == RecordKind::Entry
            && self.from.is_none_or(|f| rec.arg >= f)
            && self.to.is_none_or(|t| rec.arg <= t)
    }
}

/// Walks every segment file in order and reports each valid record (`on_record`) and where
/// each segment's records stop (`on_end`), without interpreting truncates or purges: a dump
/// shows what is on disk. The records are those recovery's scan accepts, in the same order,
/// and a segment's end is where that scan stops, for the same reason. With an index range
/// set, only entry records in it are reported. A segment whose header is bad is reported
/// through `on_end` with offset 0. Writes nothing.
///
/// The callbacks may fail (a closed pipe): the error is returned as is.
pub fn dump<E: From<Error>>(
    dir: &Path,
    filter: DumpFilter,
    mut on_record: impl FnMut(&DumpRecord<'_>) -> std::result::Result<(), E>,
    mut on_end: impl FnMut(&DumpEnd<'_>) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let _lock = ReadLock::acquire(dir)?;
    let opts = FileOptions::read_only();
    let (listed, _, _) = recovery::list_dir(&*opts.fs, dir)?;
    let blank = files::blank_from(&*opts.fs, &listed)?;
    for (i, (seq, path)) in listed.iter().enumerate() {
        let may_be_short = files::may_be_short(blank, i);
        let seg = match Segment::open(path, *seq, false, &opts, may_be_short) {
            Ok(s) => s,
            Err(e @ Error::Corrupt { .. }) => {
                on_end(&DumpEnd {
                    path,
                    offset: 0,
                    invalid: Some(e.to_string()),
                    sealed: false,
                })?;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let sealed = seg.sealed_end().is_some();
        let mut records = Records::new(seg_bytes(&seg), seg.seed(), sealed);
        if seg.is_recycled() {
            records = records.recycled(seg.sealed_end());
        }
        // After the checkpoints, records belong to group 0 until a `Group` record.
        let mut group = 0u64;
        for found in records.by_ref() {
            let r = &found.record;
            if r.kind == RecordKind::Group {
                group = r.arg;
            }
            let rec = DumpRecord {
                path,
                offset: found.offset,
                kind: r.kind,
                arg: r.arg,
                len: r.body.len() as u32,
                crc: r.crc,
                body: r.body,
                group: match r.kind {
                    RecordKind::GroupCheckpoint | RecordKind::GroupRemove => r.arg,
                    _ => group,
                },
            };
            if filter.keeps(&rec) {
                on_record(&rec)?;
            }
        }
        on_end(&DumpEnd {
            path,
            offset: records.end(),
            invalid: records.stop().map(|(_, why)| why.clone()),
            sealed,
        })?;
    }
    Ok(())
}
