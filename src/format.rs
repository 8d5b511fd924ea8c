//! The on-disk format: segment header, record header, kinds, limits.
//!
//! This module *is* the specification; `docs/format.md` describes the same bytes in prose and
//! diagrams. Every multi-byte integer is little-endian (`zerocopy::little_endian`), every struct
//! is `#[repr(C)]` with no padding, and the sizes are checked at compile time below.

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Magic bytes at offset 0 of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"RMLOGSEG";
/// Format version written in every new segment header. See "Format version history" in the
/// docs: version 1 segments (no body checksum) and version 2 segments (no group records) are
/// still read, and appended to while they are the active segment (never with group records);
/// every new segment is version 3.
pub const FORMAT_VERSION: u32 = 3;
/// The first format version whose segments may hold group records ([`RecordKind::Group`],
/// [`RecordKind::GroupCheckpoint`], [`RecordKind::GroupRemove`], [`RecordKind::Rewrite`]).
pub const GROUPS_FORMAT_VERSION: u32 = 3;
/// The oldest format version this build reads.
pub const MIN_FORMAT_VERSION: u32 = 1;
/// Size of the segment header; records start at this offset.
pub const SEGMENT_HEADER_SIZE: usize = 64;
/// Size of a record header.
pub const RECORD_HEADER_SIZE: usize = 24;
/// Records start and end on this alignment; the gap after a body is zero.
pub const RECORD_ALIGN: usize = 8;
/// Smallest allowed segment size.
pub const MIN_SEGMENT_SIZE: u64 = 4096;
/// Largest allowed segment size: record offsets are stored as `u32` in the index.
pub const MAX_SEGMENT_SIZE: u64 = u32::MAX as u64 + 1 - RECORD_ALIGN as u64;
/// The largest log index an entry may have: every index must leave room for a successor
/// (`next = index + 1` must itself be a valid index), so `u64::MAX - 1` and `u64::MAX` are
/// refused by the writer and are corruption in a file.
pub const MAX_INDEX: u64 = u64::MAX - 2;
/// Value of [`SegmentHeader::sealed_magic`] once the flusher has synced a sealed segment fully.
pub const SEALED_MAGIC: u64 = 0x5345_414c_4544_2121; // "SEALED!!" as LE bytes, reversed

/// File name suffix of a live segment.
pub const SEGMENT_SUFFIX: &str = ".seg";
/// File name suffix of a segment being prepared (never holds log data; removed at open).
pub const PREPARED_SUFFIX: &str = ".seg.tmp";
/// File name suffix of a pooled file: a purged segment kept for reuse. Never read as data.
pub const POOL_SUFFIX: &str = ".pool";
/// Segment header flag: the file is a recycled segment, so bytes after its records may be a
/// previous life's (written under another salt). Its records end at the first spot that is
/// not a valid record (or at its sealed end), and that is not a torn write.
pub const SEGMENT_FLAG_RECYCLED: u32 = 1;
/// Name of the lock file in the log directory.
pub const LOCK_FILE: &str = "LOCK";

/// The header at offset 0 of a segment file (64 bytes).
///
/// Bytes `0..40` are written once when the segment is created and covered by `header_crc`.
/// Bytes `40..56` are written once more, by the flusher, after every record of the sealed
/// segment is durable: they say "this segment is complete and synced", which turns a bad record
/// inside it from a torn write into corruption. Bytes `56..64` (the synced mark) do the same
/// for the records of an unsealed segment up to the offset they name.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SegmentHeader {
    /// [`SEGMENT_MAGIC`].
    pub magic: [u8; 8],
    /// [`FORMAT_VERSION`].
    pub version: U32,
    /// Random per segment file: seeds every record CRC in this file, so bytes written in
    /// another file (or another life of this one) never validate here.
    pub salt: U32,
    /// Sequence number; equals the number in the file name.
    pub seq: U64,
    /// Total file size in bytes.
    pub segment_size: U64,
    /// Flags: [`SEGMENT_FLAG_RECYCLED`] or zero.
    pub flags: U32,
    /// CRC32C of bytes `0..36` of this header.
    pub header_crc: U32,
    /// [`SEALED_MAGIC`] once sealed and synced, else zero.
    pub sealed_magic: U64,
    /// Byte offset where the records of a sealed segment end, else zero.
    pub sealed_end: U64,
    /// The synced mark of an unsealed segment: every record below this offset was durable
    /// when the mark was written (0: no mark). Rewritten by the flusher, one sync behind.
    pub synced_end: U32,
    /// Check of the synced mark: CRC32C of `synced_end`'s four bytes seeded with `!salt`
    /// (0 when there is no mark).
    pub synced_check: U32,
}

/// Record header (24 bytes), followed by `len` body bytes and zero padding to [`RECORD_ALIGN`].
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RecordHeader {
    /// CRC32C seeded with the segment's salt. Version 2: over header bytes `4..24` (which
    /// include `body_crc`, which covers the body). Version 1: over header bytes `4..24` and
    /// then the body.
    pub crc: U32,
    /// A [`RecordKind`] value; zero means "never written" (end of the log in this segment).
    pub kind: u8,
    /// Reserved, zero.
    pub reserved: [u8; 3],
    /// Body length in bytes.
    pub len: U32,
    /// Version 2: CRC32C (unsalted, seed 0) over header bytes `4..12`, then `16..24`, then the
    /// body: every byte of the record but the salted `crc` and this field. It does not depend
    /// on the file, so a record can travel to another log and be checked there (replication
    /// frames). Version 1: zero.
    pub body_crc: U32,
    /// Kind-specific: the log index of an entry, the `from` index of a truncate, the new first
    /// index of a purge, the meta key of a meta record, the group id of a group record; zero
    /// for a checkpoint.
    pub arg: U64,
}

const _: () = assert!(core::mem::size_of::<SegmentHeader>() == SEGMENT_HEADER_SIZE);
const _: () = assert!(core::mem::size_of::<RecordHeader>() == RECORD_HEADER_SIZE);
const _: () = assert!(RECORD_HEADER_SIZE % RECORD_ALIGN == 0);
const _: () = assert!(SEGMENT_HEADER_SIZE % RECORD_ALIGN == 0);

/// Bytes of the segment header covered by `header_crc`.
pub const SEGMENT_HEADER_CRC_RANGE: core::ops::Range<usize> = 0..36;

/// What a record means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// A log entry: `arg` = log index, body = payload.
    Entry = 1,
    /// Drop every entry with index `>= arg`.
    Truncate = 2,
    /// Drop every entry with index `< arg`; `arg` becomes the first index.
    Purge = 3,
    /// Set meta key `arg` to the body bytes.
    Meta = 4,
    /// State at the start of a segment; first record of every segment. Body: [`CheckpointHead`]
    /// then `meta_count` meta items.
    Checkpoint = 5,
    /// Drop every entry; `arg` becomes both the first and the next index (a snapshot that
    /// replaces the log). Body: meta items, as for a purge, set in the same record.
    Reset = 6,
    /// The records after this one, up to the next `Group` record or the end of the segment,
    /// belong to group `arg` (at the start of a segment, after its checkpoints: group 0).
    /// Empty body. Version 3 segments only.
    Group = 7,
    /// State of group `arg` at the start of a segment: only right after the checkpoint or
    /// another group checkpoint, one per group other than 0 that exists. Body: as a
    /// checkpoint's, with `prev_end` and `prev_crc` zero. Version 3 segments only.
    GroupCheckpoint = 8,
    /// Removes group `arg`: its entries, meta values and state (group 0: back to empty).
    /// Empty body. Version 3 segments only.
    GroupRemove = 9,
    /// Replaces every entry of the record's group with the `count` entry records that follow
    /// it at once, in the same segment, with indexes `arg..arg + count` (meta values
    /// unchanged): a group's live entries moved forward. Body: `count` (`u64`). Recovery
    /// applies it only whole: a rewrite whose entries are not all there was cut short by a
    /// crash, and the log is cut at the rewrite record. Version 3 segments only.
    Rewrite = 10,
    /// Removes meta key `arg` (of the record's group). Empty body. Version 3 segments only.
    MetaRemove = 11,
}

impl RecordKind {
    /// Decodes a kind byte; `None` for zero and unknown values.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Entry,
            2 => Self::Truncate,
            3 => Self::Purge,
            4 => Self::Meta,
            5 => Self::Checkpoint,
            6 => Self::Reset,
            7 => Self::Group,
            8 => Self::GroupCheckpoint,
            9 => Self::GroupRemove,
            10 => Self::Rewrite,
            11 => Self::MetaRemove,
            _ => return None,
        })
    }
}

/// Fixed start of a checkpoint body (32 bytes).
///
/// `prev_end` and `prev_crc` chain the segment to its predecessor: recovery accepts this
/// segment only if the previous segment's records end at `prev_end` and its last record has
/// CRC `prev_crc`. A lost tail of the previous segment (say an unsynced truncate and the
/// entries re-appended after it) therefore cannot be hidden by a later segment whose start
/// reached the disk.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct CheckpointHead {
    /// First retained log index.
    pub first: U64,
    /// One past the last log index (`first == next` means empty).
    pub next: U64,
    /// Where the previous segment's records end (0 for the first segment of a new log).
    pub prev_end: U64,
    /// Number of meta items that follow.
    pub meta_count: U32,
    /// CRC field of the previous segment's last record (0 for the first segment of a log).
    pub prev_crc: U32,
}

/// Header of one meta item inside a checkpoint body (12 bytes), followed by `len` bytes.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct MetaItemHead {
    /// Meta key.
    pub key: U64,
    /// Value length.
    pub len: U32,
}

/// Rounds `n` up to [`RECORD_ALIGN`].
pub const fn align_up(n: usize) -> usize {
    (n + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1)
}

/// Space a record with a body of `body_len` bytes takes in a segment.
pub const fn record_size(body_len: usize) -> usize {
    RECORD_HEADER_SIZE + align_up(body_len)
}

/// File name of segment `seq`.
pub fn segment_file_name(seq: u64) -> String {
    format!("{seq:020}{SEGMENT_SUFFIX}")
}

/// Parses a segment file name back into its sequence number.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort() {
        assert_eq!(segment_file_name(7), "00000000000000000007.seg");
        assert_eq!(parse_segment_file_name(&segment_file_name(7)), Some(7));
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert!(segment_file_name(9) < segment_file_name(10));
        assert_eq!(parse_segment_file_name("7.seg"), None);
        assert_eq!(parse_segment_file_name("0000000000000000000x.seg"), None);
        assert_eq!(
            parse_segment_file_name("00000000000000000007.seg.tmp"),
            None
        );
    }

    #[test]
    fn record_sizes_are_aligned() {
        assert_eq!(record_size(0), 24);
        assert_eq!(record_size(1), 32);
        assert_eq!(record_size(256), 280);
        assert_eq!(align_up(17), 24);
    }

    #[test]
    fn kinds_decode() {
        for k in [
            RecordKind::Entry,
            RecordKind::Truncate,
            RecordKind::Purge,
            RecordKind::Meta,
            RecordKind::Checkpoint,
            RecordKind::Reset,
            RecordKind::Group,
            RecordKind::GroupCheckpoint,
            RecordKind::GroupRemove,
            RecordKind::Rewrite,
            RecordKind::MetaRemove,
        ] {
            assert_eq!(RecordKind::from_u8(k as u8), Some(k));
        }
        assert_eq!(RecordKind::from_u8(0), None);
        assert_eq!(RecordKind::from_u8(12), None);
    }
}
