//! Readable text of what an openraft log stores, for tools (`raft-mmap-log dump` and `stat`)
//! that do not know the application's type config: entry bodies ([`describe_entry`]) and
//! meta values ([`describe_meta`]).

use std::collections::{BTreeMap, BTreeSet};

use ::openraft::{BasicNode, EmptyNode};
use serde::de::DeserializeOwned;

use super::entry_codec::{EntryCodecError, Kind, ENTRY_CODEC_POSTCARD, LEGACY_JSON};
use super::types::{OpenraftTypes, OpenraftVote};
use crate::error::{Error, Result};
use crate::raft::inspect::render_bytes;
use crate::raft::state::split_entry;
use crate::raft::{
    Codec, CodecError, LogId, META_COMMITTED, META_PURGED, META_SNAPSHOT, META_VOTE,
};

/// The text of entry `index`'s stored record body (its log id, then the body
/// `docs/openraft.md` describes), without the log id: `blank`, `normal data=...`,
/// `membership configs=[{1, 2, 3}] nodes={1: "10.0.0.1:5000"}`, or for a body written in the
/// earlier serde_json encoding `json payload={"Normal":...}`.
///
/// The application data's type is the application's, so a normal entry's data is shown as
/// its stored postcard bytes (a quoted string when they are UTF-8, else hex), at most
/// `max_data` of them. A membership's node ids are read as `u64`; its nodes as openraft's
/// `BasicNode` or `EmptyNode` when exactly one of them reads all the bytes, else shown as
/// bytes.
///
/// An error when the body is not an openraft entry: its log id does not decode or names
/// another index, the codec id or kind is unknown, a blank entry has data, a membership's
/// configs do not decode, or a serde_json body does not parse or names another log id.
/// Never panics.
pub fn describe_entry(index: u64, record_body: &[u8], max_data: usize) -> Result<String> {
    let (id, body) = split_entry::<OpenraftTypes>(index, record_body)?;
    describe_body(&id, body, max_data).map_err(|e| Error::Decode {
        what: "openraft entry body".into(),
        reason: e.to_string(),
    })
}

fn describe_body(
    id: &LogId,
    body: &[u8],
    max_data: usize,
) -> std::result::Result<String, EntryCodecError> {
    let index = id.index;
    let header = |reason| EntryCodecError::Header { index, reason };
    let (codec, used) = u8::decode(body).map_err(header)?;
    match codec {
        ENTRY_CODEC_POSTCARD => {}
        LEGACY_JSON => return describe_legacy_json(id, body, max_data),
        other => return Err(EntryCodecError::UnknownCodec { index, id: other }),
    }
    let rest = &body[used..];
    let (kind, used) = Kind::decode(rest).map_err(header)?;
    let data = &rest[used..];
    match kind {
        Kind::Blank if data.is_empty() => Ok("blank".into()),
        Kind::Blank => Err(EntryCodecError::Trailing {
            index,
            what: "blank entry's kind",
            step: super::CodecStep::Decode,
            trailing: data.len(),
        }),
        Kind::Normal => Ok(format!("normal data={}", render_bytes(data, max_data))),
        Kind::Membership => describe_membership(index, data, max_data),
    }
}

fn describe_membership(
    index: u64,
    data: &[u8],
    max_data: usize,
) -> std::result::Result<String, EntryCodecError> {
    let (configs, nodes) =
        postcard::take_from_bytes::<Vec<BTreeSet<u64>>>(data).map_err(|source| {
            EntryCodecError::Postcard {
                index,
                what: "membership",
                step: super::CodecStep::Decode,
                source,
            }
        })?;
    let basic = exactly::<BTreeMap<u64, BasicNode>>(nodes);
    let empty = exactly::<BTreeMap<u64, EmptyNode>>(nodes);
    let nodes = match (basic, empty) {
        (Some(b), None) => {
            let list: Vec<String> = b
                .iter()
                .map(|(id, n)| format!("{id}: {}", render_bytes(n.addr.as_bytes(), max_data)))
                .collect();
            format!("{{{}}}", list.join(", "))
        }
        (None, Some(e)) => format!("{:?}", e.keys().collect::<Vec<_>>()),
        _ => format!("{} (node type unknown)", render_bytes(nodes, max_data)),
    };
    Ok(format!("membership configs={configs:?} nodes={nodes}"))
}

/// `T` if postcard reads it from all of `bytes`.
fn exactly<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((v, [])) => Some(v),
        _ => None,
    }
}

/// A body written before codec ids: the serde_json of the whole entry, log id included.
fn describe_legacy_json(
    id: &LogId,
    body: &[u8],
    max_data: usize,
) -> std::result::Result<String, EntryCodecError> {
    let index = id.index;
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|source| EntryCodecError::LegacyJson { index, source })?;
    let named = &v["log_id"];
    let field = |v: &serde_json::Value| v.as_u64();
    let named_id = (
        field(&named["leader_id"]["term"]),
        field(&named["leader_id"]["node_id"]),
        field(&named["index"]),
    );
    if named_id != (Some(id.term), Some(id.node_id), Some(id.index)) {
        return Err(EntryCodecError::LogIdMismatch {
            index,
            stored: id.to_string(),
            named: named.to_string(),
        });
    }
    let payload = v["payload"].to_string();
    Ok(format!(
        "json payload={}",
        truncate_text(&payload, max_data)
    ))
}

/// `s` cut to at most `max` bytes (at a character boundary), then `...` when cut.
fn truncate_text(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}

fn decode<V: Codec>(what: &str, value: &[u8]) -> Result<V> {
    V::from_bytes(value).map_err(|e: CodecError| Error::Decode {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

/// The text of a meta value as the openraft store writes it: the vote
/// (`T5-N2:committed`), the committed and purged log ids (`5-2-17`), the snapshot meta
/// (`snapshot up to 5-2-17`).
///
/// `None` for a key the openraft store does not write (the user data is the
/// application's); an error when the value does not decode. Never panics.
pub fn describe_meta(key: u64, value: &[u8]) -> Option<Result<String>> {
    let text = match key {
        META_VOTE => decode::<OpenraftVote>("openraft vote", value).map(|v| v.to_string()),
        META_COMMITTED | META_PURGED => {
            decode::<LogId>("openraft log id", value).map(|id| id.to_string())
        }
        META_SNAPSHOT => {
            decode::<(LogId, Vec<u8>)>("openraft snapshot meta", value).map(|(id, data)| {
                if data.is_empty() {
                    format!("snapshot up to {id}")
                } else {
                    format!("snapshot up to {id} data={}", render_bytes(&data, 64))
                }
            })
        }
        _ => return None,
    };
    Some(text)
}

#[cfg(test)]
mod tests {
    use ::openraft::{CommittedLeaderId, Entry, EntryPayload, Membership};
    use proptest::prelude::*;

    use super::super::entry_codec::encode_entry;
    use super::*;
    use crate::openraft::{KvConfig, KvRequest};

    fn record(e: &Entry<KvConfig>) -> Vec<u8> {
        let id = LogId::new(
            e.log_id.leader_id.term,
            e.log_id.leader_id.node_id,
            e.log_id.index,
        );
        let mut b = id.to_bytes();
        encode_entry(e, &mut b).unwrap();
        b
    }

    fn lid(index: u64) -> ::openraft::LogId<u64> {
        ::openraft::LogId::new(CommittedLeaderId::new(3, 2), index)
    }

    #[test]
    fn entries_are_described() {
        let blank = Entry::<KvConfig> {
            log_id: lid(1),
            payload: EntryPayload::Blank,
        };
        assert_eq!(describe_entry(1, &record(&blank), 64).unwrap(), "blank");
        let normal = Entry::<KvConfig> {
            log_id: lid(2),
            payload: EntryPayload::Normal(KvRequest::Set {
                key: "k".into(),
                value: "vv".into(),
            }),
        };
        assert_eq!(
            describe_entry(2, &record(&normal), 64).unwrap(),
            r#"normal data="\0\u{1}k\u{2}vv""#
        );
        let m = Entry::<KvConfig> {
            log_id: lid(3),
            payload: EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1, 2])], None)),
        };
        let s = describe_entry(3, &record(&m), 64).unwrap();
        assert!(s.starts_with("membership configs=[{1, 2}] nodes="), "{s}");
        // The legacy encoding, its log id checked.
        let mut old = LogId::new(3, 2, 4).to_bytes();
        old.extend_from_slice(
            &serde_json::to_vec(&Entry {
                log_id: lid(4),
                ..normal
            })
            .unwrap(),
        );
        let s = describe_entry(4, &old, 64).unwrap();
        assert!(s.starts_with(r#"json payload={"Normal""#), "{s}");
        let mut wrong = LogId::new(3, 2, 4).to_bytes();
        wrong.extend_from_slice(
            &serde_json::to_vec(&Entry {
                log_id: lid(5),
                ..blank
            })
            .unwrap(),
        );
        assert!(describe_entry(4, &wrong, 64).is_err());
        // Not openraft: unknown codec, a raft-rs normal entry, a log id of another index.
        for body in [&[0x7f, 1][..], &[0, b'x'], &[ENTRY_CODEC_POSTCARD, 0, 1]] {
            let mut b = LogId::new(3, 2, 4).to_bytes();
            b.extend_from_slice(body);
            assert!(describe_entry(4, &b, 64).is_err(), "{body:?}");
        }
        assert!(describe_entry(5, &record(&m), 64).is_err());
    }

    #[test]
    fn membership_nodes_basic_and_empty() {
        let configs = vec![BTreeSet::from([1u64, 2])];
        let mut basic = postcard::to_allocvec(&configs).unwrap();
        basic.extend(
            postcard::to_allocvec(&BTreeMap::from([(1u64, BasicNode::new("a:1"))])).unwrap(),
        );
        assert_eq!(
            describe_membership(1, &basic, 64).unwrap(),
            r#"membership configs=[{1, 2}] nodes={1: "a:1"}"#
        );
        let mut empty = postcard::to_allocvec(&configs).unwrap();
        empty.extend(
            postcard::to_allocvec(&BTreeMap::from([(1u64, EmptyNode {}), (2, EmptyNode {})]))
                .unwrap(),
        );
        assert_eq!(
            describe_membership(1, &empty, 64).unwrap(),
            "membership configs=[{1, 2}] nodes=[1, 2]"
        );
    }

    #[test]
    fn metas_are_described() {
        let v = OpenraftVote {
            term: 4,
            node_id: 1,
            committed: true,
        };
        assert_eq!(
            describe_meta(META_VOTE, &v.to_bytes()).unwrap().unwrap(),
            "T4-N1:committed"
        );
        assert!(describe_meta(crate::raft::META_USER_DATA, &[]).is_none());
        assert!(describe_meta(META_COMMITTED, &[1]).unwrap().is_err());
    }

    proptest! {
        #[test]
        fn garbage_never_panics(body in proptest::collection::vec(any::<u8>(), 0..64), key in 0u64..8) {
            let _ = describe_entry(1, &body, 8);
            let mut b = LogId::new(1, 1, 1).to_bytes();
            b.push(ENTRY_CODEC_POSTCARD);
            b.extend_from_slice(&body);
            let _ = describe_entry(1, &b, 8);
            let _ = describe_meta(key, &body);
        }
    }
}
