//! How an openraft entry is stored in a record's payload (the "entry body").
//!
//! The record already carries the entry's log id (the crate's [`LogId`], through
//! [`super::OpenraftTypes`]), so the body holds only what is left of the entry:
//!
//! ```text
//! byte 0    codec id     0x01 = this layout, application data in postcard 1.x
//! byte 1    entry kind   0 = Blank, 1 = Normal, 2 = Membership
//! byte 2..  data         Blank: nothing; Normal: postcard of C::D;
//!                        Membership: postcard of openraft's Membership<C::NodeId, C::Node>
//! ```
//!
//! Codec id and kind go through the crate's own [`Codec`]. A body whose first byte is `{` is
//! the serde_json of the whole `Entry` written by raft-mmap-log before codec ids existed: it
//! is still read (and its log id checked against the record's). Any other first byte is an
//! [`EntryCodecError::UnknownCodec`], so a later encoding can take a new id.

use ::openraft::{Entry, EntryPayload, Membership, RaftTypeConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::types::log_id_from_stored;
use crate::raft::{Codec, CodecError, LogId};

/// Codec id of the layout above with postcard 1.x for application data and membership.
pub const ENTRY_CODEC_POSTCARD: u8 = 0x01;

/// First byte of a body written before codec ids: the `{` of the entry's serde_json.
pub(super) const LEGACY_JSON: u8 = b'{';

/// Why an entry body could not be encoded or decoded. Every variant names the entry's index.
#[derive(Debug, thiserror::Error)]
pub enum EntryCodecError {
    /// The body's first byte names no codec this build knows.
    #[error(
        "entry {index}: unknown entry codec id {id:#04x} (this build reads {ENTRY_CODEC_POSTCARD:#04x} \
         = postcard 1.x, and '{{' = the serde_json of earlier versions); \
         was the log written by a newer raft-mmap-log?"
    )]
    UnknownCodec {
        /// Log index of the entry.
        index: u64,
        /// The codec id found.
        id: u8,
    },
    /// The codec id or kind could not be read (an empty or one-byte body, or a kind this build
    /// does not know).
    #[error("entry {index}: bad entry header: {reason}")]
    Header {
        /// Log index of the entry.
        index: u64,
        /// What is wrong.
        reason: CodecError,
    },
    /// postcard could not encode, read back or decode the application data or membership.
    #[error("entry {index}: {what} does not {step} through postcard: {source}{hint}",
        hint = step.hint())]
    Postcard {
        /// Log index of the entry.
        index: u64,
        /// `"application data"` or `"membership"`.
        what: &'static str,
        /// Which step failed.
        step: CodecStep,
        /// postcard's error.
        source: postcard::Error,
    },
    /// The data decoded but did not use the whole body.
    #[error("entry {index}: {trailing} trailing bytes after the {what}{hint}", hint = step.hint())]
    Trailing {
        /// Log index of the entry.
        index: u64,
        /// `"application data"` or `"membership"`.
        what: &'static str,
        /// Which step failed.
        step: CodecStep,
        /// Bytes left over.
        trailing: usize,
    },
    /// A body in the earlier serde_json encoding did not parse.
    #[error(
        "entry {index}: serde_json entry (written before codec ids) does not decode: {source}"
    )]
    LegacyJson {
        /// Log index of the entry.
        index: u64,
        /// serde_json's error.
        source: serde_json::Error,
    },
    /// A serde_json body names another log id than the record it is stored under.
    #[error("entry {index} is stored under log id {stored} but its payload names {named}")]
    LogIdMismatch {
        /// Log index of the entry.
        index: u64,
        /// The record's log id.
        stored: String,
        /// The log id inside the JSON.
        named: String,
    },
}

/// The step of [`EntryCodecError::Postcard`] / [`EntryCodecError::Trailing`] that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecStep {
    /// Encoding in an `append` (which then writes nothing).
    Encode,
    /// Decoding back what an `append` just encoded (which then writes nothing).
    ReadBack,
    /// Decoding a stored entry.
    Decode,
}

impl CodecStep {
    fn hint(self) -> &'static str {
        match self {
            CodecStep::Encode | CodecStep::ReadBack => NOT_SELF_DESCRIBING,
            CodecStep::Decode => "",
        }
    }
}

impl std::fmt::Display for CodecStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CodecStep::Encode => "encode",
            CodecStep::ReadBack => "read back",
            CodecStep::Decode => "decode",
        })
    }
}

const NOT_SELF_DESCRIBING: &str = " (postcard is not self-describing: data types with \
    #[serde(untagged)], internally tagged enums, #[serde(flatten)] or skip_serializing_if \
    cannot be stored; nothing was written)";

/// What an entry carries besides its log id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Blank = 0,
    Normal = 1,
    Membership = 2,
}

impl Codec for Kind {
    fn encode(&self, buf: &mut Vec<u8>) {
        (*self as u8).encode(buf)
    }
    fn decode(bytes: &[u8]) -> Result<(Self, usize), CodecError> {
        let (b, n) = u8::decode(bytes)?;
        let kind = match b {
            0 => Kind::Blank,
            1 => Kind::Normal,
            2 => Kind::Membership,
            other => return Err(CodecError(format!("unknown entry kind {other}"))),
        };
        Ok((kind, n))
    }
}

/// Appends the body of `entry` (everything but its log id) to `buf`.
///
/// The application data (and membership) is decoded back once before this returns, so a type
/// that postcard can write but not read (see [`NOT_SELF_DESCRIBING`]) fails the append instead
/// of being stored unreadable. On error `buf` may hold a partial body: the caller drops it.
pub(crate) fn encode_entry<C>(entry: &Entry<C>, buf: &mut Vec<u8>) -> Result<(), EntryCodecError>
where
    C: RaftTypeConfig<Entry = Entry<C>>,
{
    let index = entry.log_id.index;
    ENTRY_CODEC_POSTCARD.encode(buf);
    match &entry.payload {
        EntryPayload::Blank => Kind::Blank.encode(buf),
        EntryPayload::Normal(d) => {
            Kind::Normal.encode(buf);
            encode_checked(d, buf, index, "application data")?;
        }
        EntryPayload::Membership(m) => {
            Kind::Membership.encode(buf);
            encode_checked(m, buf, index, "membership")?;
        }
    }
    Ok(())
}

fn encode_checked<T: Serialize + DeserializeOwned>(
    value: &T,
    buf: &mut Vec<u8>,
    index: u64,
    what: &'static str,
) -> Result<(), EntryCodecError> {
    let start = buf.len();
    *buf = postcard::to_extend(value, std::mem::take(buf)).map_err(|source| {
        EntryCodecError::Postcard {
            index,
            what,
            step: CodecStep::Encode,
            source,
        }
    })?;
    decode_all::<T>(&buf[start..], index, what, CodecStep::ReadBack).map(drop)
}

fn decode_all<T: DeserializeOwned>(
    bytes: &[u8],
    index: u64,
    what: &'static str,
    step: CodecStep,
) -> Result<T, EntryCodecError> {
    let (value, rest) =
        postcard::take_from_bytes::<T>(bytes).map_err(|source| EntryCodecError::Postcard {
            index,
            what,
            step,
            source,
        })?;
    if !rest.is_empty() {
        return Err(EntryCodecError::Trailing {
            index,
            what,
            step,
            trailing: rest.len(),
        });
    }
    Ok(value)
}

/// Decodes the entry stored under `id` with body `body`.
pub(crate) fn decode_entry<C>(id: &LogId, body: &[u8]) -> Result<Entry<C>, EntryCodecError>
where
    C: RaftTypeConfig<Entry = Entry<C>>,
    C::NodeId: From<u64>,
{
    let index = id.index;
    let header = |reason| EntryCodecError::Header { index, reason };
    let (codec, used) = u8::decode(body).map_err(header)?;
    match codec {
        ENTRY_CODEC_POSTCARD => {}
        LEGACY_JSON => return decode_legacy_json(id, body),
        other => return Err(EntryCodecError::UnknownCodec { index, id: other }),
    }
    let rest = &body[used..];
    let (kind, used) = Kind::decode(rest).map_err(header)?;
    let data = &rest[used..];
    let payload = match kind {
        Kind::Blank if data.is_empty() => EntryPayload::Blank,
        Kind::Blank => {
            return Err(EntryCodecError::Trailing {
                index,
                what: "blank entry's kind",
                step: CodecStep::Decode,
                trailing: data.len(),
            })
        }
        Kind::Normal => EntryPayload::Normal(decode_all::<C::D>(
            data,
            index,
            "application data",
            CodecStep::Decode,
        )?),
        Kind::Membership => EntryPayload::Membership(decode_all::<Membership<C::NodeId, C::Node>>(
            data,
            index,
            "membership",
            CodecStep::Decode,
        )?),
    };
    Ok(Entry {
        log_id: log_id_from_stored(id),
        payload,
    })
}

/// A body written before codec ids: the serde_json of the whole entry, log id included.
fn decode_legacy_json<C>(id: &LogId, body: &[u8]) -> Result<Entry<C>, EntryCodecError>
where
    C: RaftTypeConfig<Entry = Entry<C>>,
    C::NodeId: From<u64>,
{
    let index = id.index;
    let entry: Entry<C> = serde_json::from_slice(body)
        .map_err(|source| EntryCodecError::LegacyJson { index, source })?;
    let stored: ::openraft::LogId<C::NodeId> = log_id_from_stored(id);
    if entry.log_id != stored {
        return Err(EntryCodecError::LogIdMismatch {
            index,
            stored: stored.to_string(),
            named: entry.log_id.to_string(),
        });
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use ::openraft::{CommittedLeaderId, Membership};
    use proptest::prelude::*;

    use super::*;
    use crate::openraft::{KvConfig, KvRequest};

    fn lid(index: u64) -> ::openraft::LogId<u64> {
        ::openraft::LogId::new(CommittedLeaderId::new(3, 2), index)
    }

    fn stored(index: u64) -> LogId {
        LogId::new(3, 2, index)
    }

    fn body(e: &Entry<KvConfig>) -> Vec<u8> {
        let mut b = Vec::new();
        encode_entry(e, &mut b).unwrap();
        b
    }

    fn json(e: &Entry<KvConfig>) -> String {
        serde_json::to_string(e).unwrap()
    }

    #[test]
    fn every_kind_round_trips_and_the_log_id_is_not_in_the_body() {
        let entries = [
            Entry::<KvConfig> {
                log_id: lid(7),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: lid(8),
                payload: EntryPayload::Normal(KvRequest::Set {
                    key: "k".into(),
                    value: "vv".into(),
                }),
            },
            Entry {
                log_id: lid(9),
                payload: EntryPayload::Membership(Membership::new(
                    vec![BTreeSet::from([1, 2, 3])],
                    None,
                )),
            },
        ];
        for e in &entries {
            let b = body(e);
            let back = decode_entry::<KvConfig>(&stored(e.log_id.index), &b).unwrap();
            assert_eq!(json(&back), json(e));
        }
        assert_eq!(body(&entries[0]), [ENTRY_CODEC_POSTCARD, 0]);
        // codec, kind, variant 0 (Set), len 1 "k", len 2 "vv"
        assert_eq!(
            body(&entries[1]),
            [ENTRY_CODEC_POSTCARD, 1, 0, 1, b'k', 2, b'v', b'v']
        );
    }

    #[test]
    fn legacy_json_is_read_and_its_log_id_checked() {
        let e = Entry::<KvConfig> {
            log_id: lid(4),
            payload: EntryPayload::Normal(KvRequest::Delete { key: "a".into() }),
        };
        let old = serde_json::to_vec(&e).unwrap();
        let back = decode_entry::<KvConfig>(&stored(4), &old).unwrap();
        assert_eq!(json(&back), json(&e));
        let err = decode_entry::<KvConfig>(&stored(5), &old).unwrap_err();
        assert!(
            matches!(err, EntryCodecError::LogIdMismatch { index: 5, .. }),
            "{err}"
        );
    }

    #[test]
    fn unknown_codec_kind_and_garbage_are_errors_naming_the_index() {
        let e = decode_entry::<KvConfig>(&stored(6), &[0x02, 1, 0]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("entry 6: unknown entry codec id 0x02"),
            "{e}"
        );
        let e = decode_entry::<KvConfig>(&stored(6), &[]).unwrap_err();
        assert!(e.to_string().contains("entry 6: bad entry header"), "{e}");
        let e = decode_entry::<KvConfig>(&stored(6), &[ENTRY_CODEC_POSTCARD, 9]).unwrap_err();
        assert!(e.to_string().contains("unknown entry kind 9"), "{e}");
        let e = decode_entry::<KvConfig>(&stored(6), &[ENTRY_CODEC_POSTCARD, 0, 0]).unwrap_err();
        assert!(e.to_string().contains("1 trailing bytes"), "{e}");
        let mut b = body(&Entry {
            log_id: lid(6),
            payload: EntryPayload::Normal(KvRequest::Delete { key: "abc".into() }),
        });
        b.push(0);
        let e = decode_entry::<KvConfig>(&stored(6), &b).unwrap_err();
        assert!(e.to_string().contains("trailing"), "{e}");
        b.truncate(b.len() - 2);
        let e = decode_entry::<KvConfig>(&stored(6), &b).unwrap_err();
        assert!(
            e.to_string()
                .contains("entry 6: application data does not decode"),
            "{e}"
        );
    }

    fn arb_entry() -> impl Strategy<Value = Entry<KvConfig>> {
        let payload = prop_oneof![
            Just(EntryPayload::Blank),
            (".{0,40}", ".{0,200}")
                .prop_map(|(key, value)| EntryPayload::Normal(KvRequest::Set { key, value })),
            ".{0,40}".prop_map(|key| EntryPayload::Normal(KvRequest::Delete { key })),
            proptest::collection::btree_set(any::<u64>(), 0..5)
                .prop_map(|s| EntryPayload::Membership(Membership::new(vec![s], None))),
        ];
        (any::<u64>(), any::<u64>(), any::<u64>(), payload).prop_map(|(t, n, i, payload)| Entry {
            log_id: ::openraft::LogId::new(CommittedLeaderId::new(t, n), i),
            payload,
        })
    }

    proptest! {
        #[test]
        fn any_entry_round_trips(e in arb_entry()) {
            let id = LogId::new(e.log_id.leader_id.term, e.log_id.leader_id.node_id, e.log_id.index);
            let b = body(&e);
            let back = decode_entry::<KvConfig>(&id, &b).unwrap();
            prop_assert_eq!(json(&back), json(&e));
            // Every strict prefix is an error, never a panic or a different entry.
            for cut in 0..b.len() {
                prop_assert!(decode_entry::<KvConfig>(&id, &b[..cut]).is_err());
            }
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..48)) {
            let mut with_codec = vec![ENTRY_CODEC_POSTCARD];
            with_codec.extend_from_slice(&bytes);
            let _ = decode_entry::<KvConfig>(&stored(1), &with_codec);
            let _ = decode_entry::<KvConfig>(&stored(1), &bytes);
        }
    }
}
