//! An entry's body on disk: what of a raft-rs `Entry` is not in its log id.
//!
//! The term and index are the log id ([`EntryId`]), stored once by the Raft layer. The body is
//!
//! ```text
//! tag: u8                      bits 0-1 entry type (0 normal, 1 conf change, 2 conf change v2),
//!                              bit 2 sync_log, bit 3 "has context"; bits 4-7 zero
//! [context length: u32 LE,     only if "has context"
//!  context bytes]
//! data bytes                   the rest of the body
//! ```
//!
//! A normal entry without context costs one byte over its data, and decoding it reads one
//! byte before slicing the data out of the mapped record.

use bytes::Bytes;
use raft::eraftpb::{Entry, EntryType};

use super::types::EntryId;
use crate::error::Error;

const TYPE_MASK: u8 = 0b0011;
const SYNC_LOG: u8 = 0b0100;
const HAS_CONTEXT: u8 = 0b1000;
const KNOWN_BITS: u8 = TYPE_MASK | SYNC_LOG | HAS_CONTEXT;

/// A protobuf message (a `ConfState`, a `SnapshotMetadata`) from the bytes the log keeps.
pub(crate) fn decode_pb<M: protobuf::Message>(what: &str, bytes: &[u8]) -> Result<M, Error> {
    M::parse_from_bytes(bytes).map_err(|e| Error::Decode {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

/// The protobuf encoding of `msg`, to keep in the log.
pub(crate) fn encode_pb<M: protobuf::Message>(what: &str, msg: &M) -> Result<Vec<u8>, Error> {
    msg.write_to_bytes().map_err(|e| Error::Decode {
        what: format!("{what} (encoding)"),
        reason: e.to_string(),
    })
}

/// A decoded body that borrows its bytes (from the map, when read from the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryBody<'a> {
    pub entry_type: EntryType,
    pub sync_log: bool,
    pub context: &'a [u8],
    pub data: &'a [u8],
}

/// Appends the body of `e` to `buf`. Fails only if the context is longer than `u32::MAX`.
pub(crate) fn encode_body(e: &Entry, buf: &mut Vec<u8>) -> Result<(), Error> {
    let mut tag = e.entry_type as u8 & TYPE_MASK;
    if e.sync_log {
        tag |= SYNC_LOG;
    }
    if e.context.is_empty() {
        buf.push(tag);
    } else {
        let len = u32::try_from(e.context.len()).map_err(|_| Error::Decode {
            what: format!("context of raft-rs entry {}", e.index),
            reason: format!("{} bytes is more than a u32 length", e.context.len()),
        })?;
        buf.push(tag | HAS_CONTEXT);
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(&e.context);
    }
    buf.extend_from_slice(&e.data);
    Ok(())
}

/// Splits a stored body. Never panics: a body that does not parse is an error naming `index`.
pub(crate) fn parse_body(index: u64, body: &[u8]) -> Result<EntryBody<'_>, Error> {
    let bad = |reason: String| Error::Decode {
        what: format!("body of raft-rs entry {index}"),
        reason,
    };
    let (&tag, rest) = body
        .split_first()
        .ok_or_else(|| bad("empty body: no tag byte".into()))?;
    if tag & !KNOWN_BITS != 0 {
        return Err(bad(format!("unknown tag bits in {tag:#04x}")));
    }
    let entry_type = match tag & TYPE_MASK {
        0 => EntryType::EntryNormal,
        1 => EntryType::EntryConfChange,
        2 => EntryType::EntryConfChangeV2,
        t => return Err(bad(format!("unknown entry type {t}"))),
    };
    let (context, data) = if tag & HAS_CONTEXT == 0 {
        (&rest[..0], rest)
    } else {
        let (len, rest) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| bad("context length cut short".into()))?;
        let len = u32::from_le_bytes(*len) as usize;
        if len > rest.len() {
            return Err(bad(format!(
                "context of {len} bytes but only {} left",
                rest.len()
            )));
        }
        rest.split_at(len)
    };
    Ok(EntryBody {
        entry_type,
        sync_log: tag & SYNC_LOG != 0,
        context,
        data,
    })
}

/// The owned raft-rs `Entry` of a stored one: the context is copied, the data is whatever
/// `data` makes of its bytes (a copy, or a `Bytes` sharing the map); nothing else is
/// allocated.
pub(crate) fn to_entry_with(
    id: EntryId,
    body: &[u8],
    data: impl FnOnce(&[u8]) -> Bytes,
) -> Result<Entry, Error> {
    let b = parse_body(id.index, body)?;
    let mut e = Entry {
        term: id.term,
        index: id.index,
        entry_type: b.entry_type,
        sync_log: b.sync_log,
        ..Entry::default()
    };
    if !b.context.is_empty() {
        e.context = Bytes::copy_from_slice(b.context);
    }
    if !b.data.is_empty() {
        e.data = data(b.data);
    }
    Ok(e)
}

/// [`to_entry_with`] copying the data.
#[cfg(test)]
pub(crate) fn to_entry(id: EntryId, body: &[u8]) -> Result<Entry, Error> {
    to_entry_with(id, body, Bytes::copy_from_slice)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(t: EntryType, sync: bool, ctx: &[u8], data: &[u8]) -> Entry {
        Entry {
            term: 4,
            index: 9,
            entry_type: t,
            sync_log: sync,
            context: ctx.to_vec().into(),
            data: data.to_vec().into(),
            ..Entry::default()
        }
    }

    #[test]
    fn round_trips_and_is_compact() {
        for e in [
            entry(EntryType::EntryNormal, false, b"", b"put 1 x"),
            entry(EntryType::EntryConfChange, true, b"ctx", b"cc"),
            entry(EntryType::EntryConfChangeV2, false, b"c", b""),
            entry(EntryType::EntryNormal, false, b"", b""),
        ] {
            let mut buf = Vec::new();
            encode_body(&e, &mut buf).unwrap();
            if e.context.is_empty() {
                assert_eq!(buf.len(), 1 + e.data.len(), "one tag byte over the data");
            }
            let back = to_entry(EntryId::new(4, 9), &buf).unwrap();
            assert_eq!(back, e);
        }
    }

    #[test]
    fn bad_bodies_are_errors_naming_the_index() {
        for body in [
            &[][..],
            &[0x10],
            &[3],
            &[HAS_CONTEXT, 1, 0],
            &[HAS_CONTEXT, 5, 0, 0, 0, 1],
        ] {
            let e = parse_body(77, body).unwrap_err();
            assert!(e.to_string().contains("raft-rs entry 77"), "{e}");
        }
    }

    proptest! {
        #[test]
        fn garbage_never_panics(body in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = to_entry(EntryId::new(1, 1), &body);
        }
    }
}
