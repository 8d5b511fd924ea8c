//! A segment file's header: checking one read from disk, and the salt a new one gets.

use std::hash::{BuildHasher, Hasher};
use std::path::Path;

use zerocopy::{FromBytes, IntoBytes};

use crate::error::{Error, Result};
use crate::format::{
    SegmentHeader, FORMAT_VERSION, MIN_FORMAT_VERSION, SEGMENT_FLAG_RECYCLED,
    SEGMENT_HEADER_CRC_RANGE, SEGMENT_MAGIC,
};

/// A random salt for segment `seq`, never `avoid` (the salt of the file's previous life, so
/// that none of that life's records can validate in the new one).
pub(super) fn random_salt(seq: u64, avoid: Option<u32>) -> u32 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(seq);
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    let v = h.finish();
    // Zero is avoided only for readability of dumps; any value works.
    let salt = ((v >> 32) as u32 ^ v as u32) | 1;
    if avoid == Some(salt) {
        salt.wrapping_add(2)
    } else {
        salt
    }
}

/// The check value of a synced mark `end` in a segment with `salt`: CRC32C of the mark's four
/// bytes, seeded with the complement of the salt, so a mark from another file (or another
/// life of this one) does not pass here.
pub(crate) fn synced_mark_check(salt: u32, end: u32) -> u32 {
    crc32c::crc32c_append(!salt, &end.to_le_bytes())
}

/// Mixed into the seed of a *closed* synced mark's check ("Clos").
const CLOSED_SEED: u32 = 0x436C_6F73;

/// The check value of a closed synced mark `end`: the mark a clean close leaves when every
/// byte this life wrote lies below `end` (see `docs/format.md`, "The closed mark").
pub(crate) fn closed_mark_check(salt: u32, end: u32) -> u32 {
    crc32c::crc32c_append(!salt ^ CLOSED_SEED, &end.to_le_bytes())
}

/// A synced mark read from a header: where it ends, and whether it is a closed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SyncedMark {
    pub end: u64,
    pub closed: bool,
}

/// The synced mark a header carries: `Some` when its check (a synced mark's or a closed
/// one's) passes and `end` is a record boundary inside the file after the header; `None` for
/// no mark (zeros, as in segments written before the mark existed, or a new one) and for a
/// mark that fails its check (then nothing is known about what was synced, as for a log
/// without marks).
pub(crate) fn parse_synced_mark(header: &SegmentHeader) -> Option<SyncedMark> {
    let end = header.synced_end.get();
    let check = header.synced_check.get();
    let salt = header.salt.get();
    let closed = check == closed_mark_check(salt, end);
    let ok = end != 0
        && (closed || check == synced_mark_check(salt, end))
        && u64::from(end) >= crate::format::SEGMENT_HEADER_SIZE as u64
        && u64::from(end) <= header.segment_size.get()
        && end as usize % crate::format::RECORD_ALIGN == 0;
    ok.then_some(SyncedMark {
        end: u64::from(end),
        closed,
    })
}

pub(super) fn short_file_reason(len: u64, size: u64) -> String {
    format!("file is {len} bytes but its header says {size}: shortened behind our back")
}

/// Parses and checks a segment header.
pub fn parse_header(path: &Path, raw: &[u8]) -> Result<SegmentHeader> {
    let (header, _) = SegmentHeader::read_from_prefix(raw)
        .map_err(|_| Error::corrupt(path, 0, "file shorter than a segment header"))?;
    if header.magic != SEGMENT_MAGIC {
        return Err(Error::corrupt(path, 0, "not a segment file (bad magic)"));
    }
    let crc = crc32c::crc32c(&header.as_bytes()[SEGMENT_HEADER_CRC_RANGE]);
    if crc != header.header_crc.get() {
        return Err(Error::corrupt(path, 32, "segment header checksum mismatch"));
    }
    if header.flags.get() & !SEGMENT_FLAG_RECYCLED != 0 {
        return Err(Error::corrupt(
            path,
            32,
            format!("unknown segment header flags {:#x}", header.flags.get()),
        ));
    }
    if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&header.version.get()) {
        return Err(Error::corrupt(
            path,
            8,
            format!(
                "format version {} is not supported (this build reads versions \
                 {MIN_FORMAT_VERSION} to {FORMAT_VERSION})",
                header.version
            ),
        ));
    }
    Ok(header)
}
