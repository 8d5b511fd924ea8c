//! Encoding and decoding of single records.
//!
//! A record is a [`RecordHeader`] followed by its body, padded with zeros to 8 bytes. The CRC is
//! CRC32C seeded with the segment's salt, over header bytes `4..24` and then the body.

use zerocopy::{FromBytes, IntoBytes};

use crate::format::{align_up, RecordHeader, RecordKind, RECORD_HEADER_SIZE};

/// Parts up to this size are copied next to the header for one CRC call.
const SHORT_PART: usize = 64;

/// Builds the header of a record whose body is the concatenation of `parts`.
pub fn header(salt: u32, kind: RecordKind, arg: u64, parts: &[&[u8]]) -> RecordHeader {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut h = RecordHeader {
        crc: 0.into(),
        kind: kind as u8,
        reserved: [0; 3],
        len: (len as u32).into(),
        reserved2: 0.into(),
        arg: arg.into(),
    };
    // Header bytes 4..24 and a short first part (the Raft log id) go through one CRC call:
    // each call has a fixed cost that is large next to a few dozen bytes.
    let mut head = [0u8; 20 + SHORT_PART];
    head[..20].copy_from_slice(&h.as_bytes()[4..]);
    let mut crc = salt;
    let mut rest = parts;
    let mut used = 20;
    while let Some((p, more)) = rest.split_first() {
        if p.len() > SHORT_PART - (used - 20) {
            break;
        }
        head[used..used + p.len()].copy_from_slice(p);
        used += p.len();
        rest = more;
    }
    crc = crc32c::crc32c_append(crc, &head[..used]);
    for p in rest {
        crc = crc32c::crc32c_append(crc, p);
    }
    h.crc = crc.into();
    h
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

/// Decodes the record at the start of `bytes` (the rest of the segment from that offset).
/// Never panics and never allocates, whatever the bytes are.
pub fn decode(salt: u32, bytes: &[u8]) -> Decoded<'_> {
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
    let crc = crc32c::crc32c_append(crc32c::crc32c_append(salt, &h.as_bytes()[4..]), body);
    if crc != h.crc.get() {
        return Decoded::Invalid("record checksum mismatch");
    }
    if h.reserved != [0; 3] || h.reserved2.get() != 0 {
        return Decoded::Invalid("reserved header bytes are not zero");
    }
    let size = (RECORD_HEADER_SIZE + align_up(len)).min(bytes.len());
    Decoded::Record(Record {
        kind,
        arg: h.arg.get(),
        body,
        size,
        crc,
    })
}

/// Checks a record given as its header and exactly its body (the read path's checked read):
/// the CRC, seeded with the segment's `salt`, and that it is an entry.
pub(crate) fn check(salt: u32, h: &RecordHeader, body: &[u8]) -> Result<(), &'static str> {
    let crc = crc32c::crc32c_append(crc32c::crc32c_append(salt, &h.as_bytes()[4..]), body);
    if crc != h.crc.get() {
        return Err("record checksum mismatch");
    }
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
        let crc = crc32c::crc32c_append(crc32c::crc32c_append(7, &whole.as_bytes()[4..]), &bytes);
        assert_eq!(whole.crc.get(), crc);
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
        for i in 0..(RECORD_HEADER_SIZE + 15) {
            for bit in 0..8 {
                let mut w = v.clone();
                w[i] ^= 1 << bit;
                assert!(
                    !matches!(decode(3, &w), Decoded::Record(_)),
                    "flip at byte {i} bit {bit} accepted"
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
