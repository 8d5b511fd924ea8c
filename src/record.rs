//! Encoding and decoding of single records.
//!
//! A record is a [`RecordHeader`] followed by its body, padded with zeros to 8 bytes. How it is
//! checksummed depends on its segment's format version ([`Seed`]):
//!
//! - version 2: `body_crc` is CRC32C (seed 0) over header bytes `4..12`, `16..24` and the body:
//!   it does not depend on the file, so the record can be checked anywhere (replication
//!   frames); `crc` is CRC32C seeded with the segment's salt over header bytes `4..24`, which
//!   include `body_crc`. The body is read once per check.
//! - version 1: `body_crc` is zero; `crc` is CRC32C seeded with the salt over header bytes
//!   `4..24` and then the body.

use zerocopy::{FromBytes, IntoBytes};

use crate::format::{align_up, RecordHeader, RecordKind, FORMAT_VERSION, RECORD_HEADER_SIZE};

mod crc;

/// How the records of one segment are checksummed: the segment's salt and format version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seed {
    /// The segment's random salt.
    pub salt: u32,
    /// The segment's format version (1 or 2).
    pub version: u32,
}

impl Seed {
    /// The seed of a segment written by this build ([`FORMAT_VERSION`]).
    pub fn current(salt: u32) -> Self {
        Seed {
            salt,
            version: FORMAT_VERSION,
        }
    }

    /// Whether records carry a body checksum (version 2 and later).
    pub fn has_body_crc(self) -> bool {
        self.version >= 2
    }
}

/// The unsalted body checksum of a record: CRC32C over header bytes `4..12` (kind, reserved,
/// len), `16..24` (arg) and the body given as `parts`, in one pass and one call.
#[inline]
pub fn body_crc(h: &RecordHeader, parts: &[&[u8]]) -> u32 {
    crc::record_sums(0, head_words(h), parts).0
}

/// Header bytes `4..12` and `16..24` as two little-endian words.
#[inline]
fn head_words(h: &RecordHeader) -> [u64; 2] {
    let [r0, r1, r2] = h.reserved;
    let w0 = u64::from(h.kind)
        | u64::from(r0) << 8
        | u64::from(r1) << 16
        | u64::from(r2) << 24
        | u64::from(h.len.get()) << 32;
    [w0, h.arg.get()]
}

/// The salted CRC field of a record with header `h` (its `body_crc` already set) and body
/// `parts`. Version 2 reads only the header; version 1 also the body.
#[inline]
pub fn salted_crc(seed: Seed, h: &RecordHeader, parts: &[&[u8]]) -> u32 {
    let crc = crc::append(seed.salt, &h.as_bytes()[4..]);
    if seed.has_body_crc() {
        return crc;
    }
    parts.iter().fold(crc, |crc, p| crc::append(crc, p))
}

/// Builds the header of a record whose body is the concatenation of `parts`, for a segment
/// written by this build ([`FORMAT_VERSION`]). See [`header_with`].
pub fn header(salt: u32, kind: RecordKind, arg: u64, parts: &[&[u8]]) -> RecordHeader {
    header_with(Seed::current(salt), kind, arg, parts)
}

/// Builds the header of a record whose body is the concatenation of `parts`, for a segment
/// with seed `seed` (its format version decides the checksums).
#[inline(always)]
pub fn header_with(seed: Seed, kind: RecordKind, arg: u64, parts: &[&[u8]]) -> RecordHeader {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut h = RecordHeader {
        crc: 0.into(),
        kind: kind as u8,
        reserved: [0; 3],
        len: (len as u32).into(),
        body_crc: 0.into(),
        arg: arg.into(),
    };
    if seed.has_body_crc() {
        let (body, crc) = crc::record_sums(seed.salt, head_words(&h), parts);
        h.body_crc = body.into();
        h.crc = crc.into();
    } else {
        h.crc = salted_crc(seed, &h, parts).into();
    }
    h
}

/// Gives a header whose `body_crc` is already right (a checked replication frame) the CRC
/// field of a segment with seed `seed`: for version 2 only the header is read; a version 1
/// segment gets `body_crc` zero and a CRC over the body too.
pub fn reseal(seed: Seed, h: &RecordHeader, body: &[u8]) -> RecordHeader {
    let mut out = *h;
    if !seed.has_body_crc() {
        out.body_crc = 0.into();
    }
    out.crc = salted_crc(seed, &out, &[body]).into();
    out
}

/// A record read from a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Its kind.
    pub kind: RecordKind,
    /// Its kind-specific argument.
    pub arg: u64,
    /// Its body.
    pub body: &'a [u8],
    /// Bytes it occupies, padding included.
    pub size: usize,
    /// Its CRC field.
    pub crc: u32,
}

/// What is found at one offset of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A valid record.
    Record(Record<'a>),
    /// A zero header, or no room for a header: nothing was ever written here.
    End,
    /// Bytes that are not a valid record, and why.
    Invalid(&'static str),
}

/// Decodes the record at the start of `bytes` (the rest of the segment from that offset) of a
/// segment written by this build. See [`decode_with`].
pub fn decode(salt: u32, bytes: &[u8]) -> Decoded<'_> {
    decode_with(Seed::current(salt), bytes)
}

/// Decodes the record at the start of `bytes` (the rest of the segment from that offset) of a
/// segment with seed `seed`. Never panics and never allocates, whatever the bytes are.
pub fn decode_with(seed: Seed, bytes: &[u8]) -> Decoded<'_> {
    let Ok((h, rest)) = RecordHeader::ref_from_prefix(bytes) else {
        return Decoded::End;
    };
    if h.kind == 0 {
        return if h.as_bytes().iter().all(|&b| b == 0) {
            Decoded::End
        } else {
            Decoded::Invalid("non-zero bytes in a header with kind 0")
        };
    }
    let Some(kind) = RecordKind::from_u8(h.kind) else {
        return Decoded::Invalid("unknown record kind");
    };
    let len = h.len.get() as usize;
    if len > rest.len() {
        return Decoded::Invalid("record length runs past the end of the segment");
    }
    let body = &rest[..len];
    if let Err(why) = check_sums(seed, h, body) {
        return Decoded::Invalid(why);
    }
    if h.reserved != [0; 3] {
        return Decoded::Invalid("reserved header bytes are not zero");
    }
    let size = (RECORD_HEADER_SIZE + align_up(len)).min(bytes.len());
    Decoded::Record(Record {
        kind,
        arg: h.arg.get(),
        body,
        size,
        crc: h.crc.get(),
    })
}

/// Checks both checksums of a record (version 2), or the CRC and a zero `body_crc` field
/// (version 1). A version 2 record that is intact is checked with one pass over its bytes;
/// a damaged one is named by the first check that fails: the salted CRC over the stored
/// header, then the body checksum.
fn check_sums(seed: Seed, h: &RecordHeader, body: &[u8]) -> Result<(), &'static str> {
    if seed.has_body_crc() {
        let (body_crc, crc) = crc::record_sums(seed.salt, head_words(h), &[body]);
        if body_crc == h.body_crc.get() {
            // The salted CRC was computed over the stored header bytes.
            return if crc == h.crc.get() {
                Ok(())
            } else {
                Err("record checksum mismatch")
            };
        }
        if salted_crc(seed, h, &[body]) != h.crc.get() {
            return Err("record checksum mismatch");
        }
        return Err("record body checksum mismatch");
    }
    if salted_crc(seed, h, &[body]) != h.crc.get() {
        return Err("record checksum mismatch");
    }
    if h.body_crc.get() != 0 {
        return Err("reserved header bytes are not zero");
    }
    Ok(())
}

/// Checks a record given as its header and exactly its body (the read path's checked read):
/// the checksums for the segment's `seed`, and that it is an entry.
pub(crate) fn check(seed: Seed, h: &RecordHeader, body: &[u8]) -> Result<(), &'static str> {
    check_sums(seed, h, body)?;
    if h.kind != RecordKind::Entry as u8 {
        return Err("the record is not an entry");
    }
    Ok(())
}

/// Reads the body of a record already validated (by recovery or by the writer that wrote
/// it): used on the read path, where the CRC is not recomputed.
#[inline]
pub fn trusted_body(bytes: &[u8]) -> Option<&[u8]> {
    let (h, rest) = RecordHeader::ref_from_prefix(bytes).ok()?;
    rest.get(..h.len.get() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_of_parts_is_the_header_of_their_concatenation() {
        let bytes: Vec<u8> = (0..300u32).map(|i| (i * 37 + 11) as u8).collect();
        let whole = header(7, RecordKind::Entry, 9, &[&bytes]);
        // Splits around the size of the parts that share the header's CRC call.
        for a in [0, 1, 23, 24, 40, 63, 64, 65, 200, 300] {
            for b in [a, a + 1, a + 40, a + 64, 300] {
                let b = b.min(300);
                let parts = [&bytes[..a], &bytes[a..b], &bytes[b..]];
                let h = header(7, RecordKind::Entry, 9, &parts);
                assert_eq!(h.as_bytes(), whole.as_bytes(), "split {a}/{b}");
            }
        }
        let b = whole.as_bytes();
        let body = crc32c::crc32c_append(
            crc32c::crc32c_append(crc32c::crc32c(&b[4..12]), &b[16..24]),
            &bytes,
        );
        assert_eq!(whole.body_crc.get(), body);
        assert_eq!(whole.crc.get(), crc32c::crc32c_append(7, &b[4..]));
    }

    fn encode(salt: u32, kind: RecordKind, arg: u64, body: &[u8]) -> Vec<u8> {
        let h = header(salt, kind, arg, &[body]);
        let mut v = h.as_bytes().to_vec();
        v.extend_from_slice(body);
        v.resize(RECORD_HEADER_SIZE + align_up(body.len()), 0);
        v
    }

    #[test]
    fn round_trip() {
        let v = encode(9, RecordKind::Entry, 42, b"hello");
        assert_eq!(v.len(), 32);
        match decode(9, &v) {
            Decoded::Record(r) => {
                assert_eq!(r.kind, RecordKind::Entry);
                assert_eq!(r.arg, 42);
                assert_eq!(r.body, b"hello");
                assert_eq!(r.size, 32);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(trusted_body(&v), Some(&b"hello"[..]));
    }

    #[test]
    fn version_1_records_round_trip_and_are_not_version_2() {
        let v1 = Seed {
            salt: 9,
            version: 1,
        };
        let h = header_with(v1, RecordKind::Entry, 42, &[b"hello"]);
        assert_eq!(h.body_crc.get(), 0);
        let mut v = h.as_bytes().to_vec();
        v.extend_from_slice(b"hello\0\0\0");
        assert!(matches!(decode_with(v1, &v), Decoded::Record(r) if r.body == b"hello"));
        assert!(!matches!(decode(9, &v), Decoded::Record(_)));
        // A version 2 record has a non-zero body checksum, which version 1 refuses.
        let v2 = encode(9, RecordKind::Entry, 42, b"hello");
        assert!(!matches!(decode_with(v1, &v2), Decoded::Record(_)));
    }

    #[test]
    fn the_body_crc_does_not_depend_on_the_salt_and_reseal_moves_a_record() {
        let a = header(1, RecordKind::Entry, 7, &[b"ab", b"cd"]);
        let b = header(2, RecordKind::Entry, 7, &[b"abcd"]);
        assert_eq!(a.body_crc, b.body_crc);
        assert_ne!(a.crc, b.crc);
        assert_eq!(
            reseal(Seed::current(2), &a, b"abcd").as_bytes(),
            b.as_bytes()
        );
        let v1 = Seed {
            salt: 2,
            version: 1,
        };
        assert_eq!(
            reseal(v1, &a, b"abcd").as_bytes(),
            header_with(v1, RecordKind::Entry, 7, &[b"abcd"]).as_bytes()
        );
    }

    #[test]
    fn a_damaged_record_is_named_by_the_first_check_that_fails() {
        let v = encode(9, RecordKind::Entry, 42, b"some entry body");
        let damaged = |at: usize| {
            let mut w = v.clone();
            w[at] ^= 0x10;
            match decode(9, &w) {
                Decoded::Invalid(why) => why,
                other => panic!("damage at {at} accepted: {other:?}"),
            }
        };
        // The body: the salted CRC over the header still holds.
        assert_eq!(damaged(30), "record body checksum mismatch");
        // The CRC field, the body checksum field, the arg: the salted CRC fails first.
        for at in [0, 13, 17] {
            assert_eq!(damaged(at), "record checksum mismatch", "{at}");
        }
    }

    #[test]
    fn other_salt_is_rejected() {
        let v = encode(9, RecordKind::Entry, 42, b"hello");
        assert_eq!(decode(10, &v), Decoded::Invalid("record checksum mismatch"));
    }

    #[test]
    fn zeros_are_the_end_and_short_input_too() {
        assert_eq!(decode(1, &[0u8; 64]), Decoded::End);
        assert_eq!(decode(1, &[0u8; 10]), Decoded::End);
        let mut z = [0u8; 64];
        z[10] = 1;
        assert!(matches!(decode(1, &z), Decoded::Invalid(_)));
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let v = encode(3, RecordKind::Meta, 7, b"some meta bytes");
        let v1 = Seed {
            salt: 3,
            version: 1,
        };
        let h = header_with(v1, RecordKind::Meta, 7, &[b"some meta bytes"]);
        let mut old = h.as_bytes().to_vec();
        old.extend_from_slice(b"some meta bytes\0");
        for i in 0..(RECORD_HEADER_SIZE + 15) {
            for bit in 0..8 {
                let mut w = v.clone();
                w[i] ^= 1 << bit;
                assert!(
                    !matches!(decode(3, &w), Decoded::Record(_)),
                    "flip at byte {i} bit {bit} accepted"
                );
                let mut w = old.clone();
                w[i] ^= 1 << bit;
                assert!(
                    !matches!(decode_with(v1, &w), Decoded::Record(_)),
                    "version 1: flip at byte {i} bit {bit} accepted"
                );
            }
        }
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), salt: u32) {
            let _ = decode(salt, &bytes);
            let _ = trusted_body(&bytes);
        }

        #[test]
        fn encode_decode(body in proptest::collection::vec(any::<u8>(), 0..100), arg: u64, salt: u32) {
            let v = encode(salt, RecordKind::Entry, arg, &body);
            match decode(salt, &v) {
                Decoded::Record(r) => { prop_assert_eq!(r.body, &body[..]); prop_assert_eq!(r.arg, arg); }
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }
}
