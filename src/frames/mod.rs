//! Replication frames: the wire form of entries, checked before anything is written.
//!
//! A frame is an entry record exactly as a version 2 segment stores it (`docs/format.md`):
//! a 24-byte [`RecordHeader`] (kind [`RecordKind::Entry`], `arg` = log index, `body_crc` =
//! the unsalted checksum of kind, len, arg and body), the body, and zero padding to 8 bytes.
//! The header's first 4 bytes, the sender's salted CRC, mean nothing to a receiver: they are
//! ignored here and rewritten when the frame is stored. A batch is frames back to back with
//! consecutive indexes. The sender produces batches with [`View::frames`](crate::View::frames)
//! (spans borrowed from its map); the receiver stores them with
//! [`Store::append_frames`](crate::Store::append_frames) or
//! [`RaftLog::append_frames`](crate::raft::RaftLog::append_frames). `docs/replication.md`
//! has the loops.
//!
//! [`parse`] is the one place that checks frames: framing (a whole header, a length that
//! stays inside the input, zero padding), kind, reserved bytes, the body checksum, the index
//! bound and consecutive indexes. It never panics and never allocates.

use zerocopy::FromBytes;

use crate::error::{Error, Result};
use crate::format::{align_up, RecordHeader, RecordKind, MAX_INDEX, RECORD_HEADER_SIZE};
use crate::record::body_crc;

pub use crate::reader::{FileRange, FrameBatch, FrameSpan};

/// One checked frame of a batch.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// Byte offset of the frame in the batch.
    pub offset: usize,
    /// Its log index.
    pub index: u64,
    /// Its header (the `crc` field is the sender's and is not checked).
    pub header: &'a RecordHeader,
    /// Its body.
    pub body: &'a [u8],
    /// The bytes after the header: body and zero padding.
    pub tail: &'a [u8],
}

impl Frame<'_> {
    /// Bytes the frame takes, header and padding included.
    pub fn size(&self) -> usize {
        RECORD_HEADER_SIZE + self.tail.len()
    }
}

/// Iterator of [`parse`].
#[derive(Debug, Clone)]
pub struct FrameIter<'a> {
    bytes: &'a [u8],
    pos: usize,
    next_index: Option<u64>,
    failed: bool,
}

/// Walks a batch of frames, checking each (see the module docs). The first bad frame is
/// [`Error::BadFrame`] naming the byte offset in `bytes` and the index the frame should have
/// (the previous frame's + 1; for the first frame, the index its header names, which may be
/// the damaged bytes themselves); the iterator ends after it.
pub fn parse(bytes: &[u8]) -> FrameIter<'_> {
    FrameIter {
        bytes,
        pos: 0,
        next_index: None,
        failed: false,
    }
}

impl<'a> FrameIter<'a> {
    fn bad(&mut self, index: u64, reason: impl Into<String>) -> Option<Result<Frame<'a>>> {
        self.failed = true;
        Some(Err(Error::BadFrame {
            index,
            offset: self.pos as u64,
            reason: reason.into(),
        }))
    }
}

impl<'a> Iterator for FrameIter<'a> {
    type Item = Result<Frame<'a>>;

    fn next(&mut self) -> Option<Result<Frame<'a>>> {
        if self.failed || self.pos >= self.bytes.len() {
            return None;
        }
        let rest = &self.bytes[self.pos..];
        let expected = self.next_index.unwrap_or(0);
        let Ok((h, after)) = RecordHeader::ref_from_prefix(rest) else {
            return self.bad(
                expected,
                format!("{} bytes left: less than a frame header", rest.len()),
            );
        };
        let index = h.arg.get();
        let shown = self.next_index.unwrap_or(index);
        if h.kind != RecordKind::Entry as u8 {
            return self.bad(shown, format!("kind {} is not an entry", h.kind));
        }
        if h.reserved != [0; 3] {
            return self.bad(shown, "reserved header bytes are not zero");
        }
        let len = h.len.get() as usize;
        let padded = align_up(len);
        if padded > after.len() {
            return self.bad(
                shown,
                format!(
                    "a {len}-byte body runs past the end of the input ({} bytes left)",
                    after.len()
                ),
            );
        }
        let (body, pad) = after[..padded].split_at(len);
        if pad.iter().any(|&b| b != 0) {
            return self.bad(shown, "non-zero padding after the body");
        }
        if body_crc(h, &[body]) != h.body_crc.get() {
            return self.bad(shown, "body checksum mismatch");
        }
        if index > MAX_INDEX {
            return self.bad(shown, format!("index {index} is above {MAX_INDEX}"));
        }
        if let Some(want) = self.next_index {
            if index != want {
                return self.bad(want, format!("the frame names index {index}"));
            }
        }
        let frame = Frame {
            offset: self.pos,
            index,
            header: h,
            body,
            tail: &after[..padded],
        };
        self.pos += RECORD_HEADER_SIZE + padded;
        self.next_index = Some(index + 1);
        Some(Ok(frame))
    }
}

/// Encodes entries as a batch of frames (tests, and senders that do not read from a log).
pub fn encode<'a>(entries: impl IntoIterator<Item = (u64, &'a [u8])>) -> Vec<u8> {
    use zerocopy::IntoBytes;
    let mut out = Vec::new();
    for (index, body) in entries {
        let h = crate::record::header(0, RecordKind::Entry, index, &[body]);
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(body);
        out.resize(out.len() + align_up(body.len()) - body.len(), 0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all(bytes: &[u8]) -> Result<Vec<(u64, Vec<u8>)>> {
        parse(bytes)
            .map(|f| f.map(|f| (f.index, f.body.to_vec())))
            .collect()
    }

    #[test]
    fn round_trip_and_empty() {
        let b = encode([(5, &b"abc"[..]), (6, b""), (7, b"12345678")]);
        assert_eq!(b.len(), 32 + 24 + 32);
        let got = all(&b).unwrap();
        assert_eq!(
            got,
            vec![(5, b"abc".to_vec()), (6, vec![]), (7, b"12345678".to_vec())]
        );
        assert!(all(&[]).unwrap().is_empty());
    }

    #[test]
    fn every_byte_flip_is_refused_with_its_frame() {
        let b = encode([(5, &b"abc"[..]), (6, b"defghij")]);
        for i in 0..b.len() {
            if i % 32 < 4 {
                continue; // the sender's salted CRC: not checked, rewritten by the receiver
            }
            let mut w = b.clone();
            w[i] ^= 0x10;
            match all(&w) {
                Err(Error::BadFrame { offset, index, .. }) => {
                    let frame = i / 32;
                    assert_eq!(offset as usize, frame * 32, "byte {i}");
                    // The first frame's index is what its (maybe damaged) header says.
                    if !(frame == 0 && (16..24).contains(&i)) {
                        assert_eq!(index, 5 + frame as u64, "byte {i}");
                    }
                }
                other => panic!("byte {i}: {other:?}"),
            }
        }
    }

    #[test]
    fn gaps_short_input_and_other_kinds_are_refused() {
        let b = encode([(5, &b"abc"[..]), (7, b"x")]);
        assert!(matches!(
            all(&b),
            Err(Error::BadFrame {
                offset: 32,
                index: 6,
                ..
            })
        ));
        let b = encode([(5, &b"abc"[..])]);
        assert!(matches!(
            all(&b[..31]),
            Err(Error::BadFrame { offset: 0, .. })
        ));
        assert!(matches!(
            all(&b[..20]),
            Err(Error::BadFrame { offset: 0, .. })
        ));
        let mut two = b.clone();
        two.extend_from_slice(&[0; 8]);
        assert!(matches!(all(&two), Err(Error::BadFrame { offset: 32, .. })));
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            for f in parse(&bytes).flatten() {
                prop_assert!(f.offset + f.size() <= bytes.len());
            }
        }
    }
}
