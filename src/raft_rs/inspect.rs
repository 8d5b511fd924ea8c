//! Readable text of what a raft-rs log stores, for tools (`raft-mmap-log dump` and `stat`):
//! entry bodies ([`describe_entry`]) and meta values ([`describe_meta`]).

use raft::eraftpb::{ConfChange, ConfChangeV2, ConfState, EntryType, SnapshotMetadata};

use super::codec::{decode_pb, parse_body};
use super::types::{EntryId, HardVote, RaftRsTypes, StoredConf};
use crate::error::{Error, Result};
use crate::raft::inspect::render_bytes;
use crate::raft::state::split_entry;
use crate::raft::{Codec, META_COMMITTED, META_PURGED, META_SNAPSHOT, META_USER_DATA, META_VOTE};

/// The text of entry `index`'s stored record body (its log id, then the body
/// `docs/raft-rs.md` describes), without the log id: `normal data="put k v"`,
/// `conf-change AddNode node=2`, `conf-change-v2 Auto [AddNode 2, AddLearnerNode 3]`, with
/// ` sync_log` and ` context=...` when set. Application bytes (data, contexts) are shown as a
/// quoted string when they are UTF-8, else in hex, at most `max_data` of them.
///
/// An error when the body is not a raft-rs entry: its log id does not decode as raft-rs's
/// (node id 0) or names another index, the tag byte is unknown, the context length runs past
/// the body, or a conf change's protobuf does not parse. Never panics.
pub fn describe_entry(index: u64, record_body: &[u8], max_data: usize) -> Result<String> {
    let (_, body) = split_entry::<RaftRsTypes>(index, record_body)?;
    let b = parse_body(index, body)?;
    let mut s = match b.entry_type {
        EntryType::EntryNormal if b.data.is_empty() => "normal (empty)".to_string(),
        EntryType::EntryNormal => format!("normal data={}", render_bytes(b.data, max_data)),
        EntryType::EntryConfChange => {
            let cc: ConfChange = decode_pb(&format!("conf change of entry {index}"), b.data)?;
            let mut s = format!("conf-change {:?} node={}", cc.change_type, cc.node_id);
            if cc.id != 0 {
                s.push_str(&format!(" id={}", cc.id));
            }
            if !cc.context.is_empty() {
                s.push_str(&format!(
                    " change_context={}",
                    render_bytes(&cc.context, max_data)
                ));
            }
            s
        }
        EntryType::EntryConfChangeV2 => {
            let cc: ConfChangeV2 = decode_pb(&format!("conf change v2 of entry {index}"), b.data)?;
            let changes: Vec<String> = cc
                .changes
                .iter()
                .map(|c| format!("{:?} {}", c.change_type, c.node_id))
                .collect();
            let mut s = format!(
                "conf-change-v2 {:?} [{}]",
                cc.transition,
                changes.join(", ")
            );
            if !cc.context.is_empty() {
                s.push_str(&format!(
                    " change_context={}",
                    render_bytes(&cc.context, max_data)
                ));
            }
            s
        }
    };
    if b.sync_log {
        s.push_str(" sync_log");
    }
    if !b.context.is_empty() {
        s.push_str(&format!(" context={}", render_bytes(b.context, max_data)));
    }
    Ok(s)
}

/// A `ConfState` as `voters=[1, 2, 3]`, with its other lists and `auto_leave` when set.
fn conf_state_text(cs: &ConfState) -> String {
    let mut s = format!("voters={:?}", cs.voters);
    for (name, ids) in [
        ("learners", &cs.learners),
        ("voters_outgoing", &cs.voters_outgoing),
        ("learners_next", &cs.learners_next),
    ] {
        if !ids.is_empty() {
            s.push_str(&format!(" {name}={ids:?}"));
        }
    }
    if cs.auto_leave {
        s.push_str(" auto_leave");
    }
    s
}

fn decode<V: Codec>(what: &str, value: &[u8]) -> Result<V> {
    V::from_bytes(value).map_err(|e| Error::Decode {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

/// The text of a meta value as the raft-rs storage writes it: the hard state's vote
/// (`term=5 vote=2`), the committed and purged log ids (`5/17`), the configuration
/// (`conf state voters=[1, 2, 3] (set at snapshot index 0)`) and the snapshot meta
/// (`snapshot 5/17 voters=[1, 2, 3]`).
///
/// `None` for a key the raft-rs storage does not write; an error when the value does not
/// decode as the storage's. Never panics.
pub fn describe_meta(key: u64, value: &[u8]) -> Option<Result<String>> {
    let text = match key {
        META_VOTE => decode::<HardVote>("raft-rs hard state vote", value)
            .map(|v| format!("term={} vote={}", v.term, v.vote)),
        META_COMMITTED | META_PURGED => {
            decode::<EntryId>("raft-rs log id", value).map(|id| id.to_string())
        }
        META_USER_DATA => {
            decode::<Option<StoredConf>>("raft-rs configuration", value).and_then(|c| match c {
                None => Ok("conf state none".to_string()),
                Some(c) => {
                    let cs: ConfState = decode_pb("raft-rs ConfState", &c.conf_state)?;
                    Ok(format!(
                        "conf state {} (set at snapshot index {})",
                        conf_state_text(&cs),
                        c.snapshot_index
                    ))
                }
            })
        }
        META_SNAPSHOT => {
            decode::<(EntryId, Vec<u8>)>("raft-rs snapshot meta", value).and_then(|(id, meta)| {
                let m: SnapshotMetadata = decode_pb("raft-rs SnapshotMetadata", &meta)?;
                Ok(format!(
                    "snapshot {id} {}",
                    conf_state_text(m.get_conf_state())
                ))
            })
        }
        _ => return None,
    };
    Some(text)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use raft::eraftpb::{ConfChangeType, Entry};

    use super::super::codec::{encode_body, encode_pb};
    use super::*;

    fn record(index: u64, e: &Entry) -> Vec<u8> {
        let mut b = EntryId::new(e.term, index).to_bytes();
        encode_body(e, &mut b).unwrap();
        b
    }

    #[test]
    fn entries_are_described() {
        let mut e = Entry {
            term: 2,
            data: b"put k v".to_vec().into(),
            ..Entry::default()
        };
        assert_eq!(
            describe_entry(3, &record(3, &e), 64).unwrap(),
            r#"normal data="put k v""#
        );
        e.data = vec![0xff, 0, 1].into();
        e.sync_log = true;
        e.context = b"c".to_vec().into();
        assert_eq!(
            describe_entry(3, &record(3, &e), 64).unwrap(),
            r#"normal data=0xff0001 sync_log context="c""#
        );
        e.data = vec![b'a'; 100].into();
        e.context = Default::default();
        e.sync_log = false;
        let s = describe_entry(3, &record(3, &e), 4).unwrap();
        assert_eq!(s, r#"normal data="aaaa"... (100 bytes)"#);
        let cc = ConfChange {
            change_type: ConfChangeType::AddLearnerNode,
            node_id: 4,
            ..ConfChange::default()
        };
        let e = Entry {
            term: 2,
            entry_type: EntryType::EntryConfChange,
            data: encode_pb("cc", &cc).unwrap().into(),
            ..Entry::default()
        };
        assert_eq!(
            describe_entry(5, &record(5, &e), 64).unwrap(),
            "conf-change AddLearnerNode node=4"
        );
        // A body that is not raft-rs's is an error.
        assert!(describe_entry(5, &record(6, &e), 64).is_err());
        let mut bad = EntryId::new(2, 5).to_bytes();
        bad.extend_from_slice(&[1, 0x00]);
        assert!(describe_entry(5, &bad, 64).is_err());
        let other_node = crate::raft::LogId::new(2, 1, 5).to_bytes();
        assert!(describe_entry(5, &other_node, 64).is_err());
    }

    #[test]
    fn metas_are_described() {
        let cs = ConfState::from((vec![1, 2, 3], vec![4]));
        let conf = Some(StoredConf {
            snapshot_index: 0,
            conf_state: encode_pb("cs", &cs).unwrap(),
        });
        assert_eq!(
            describe_meta(META_USER_DATA, &conf.to_bytes())
                .unwrap()
                .unwrap(),
            "conf state voters=[1, 2, 3] learners=[4] (set at snapshot index 0)"
        );
        assert_eq!(
            describe_meta(META_VOTE, &HardVote::new(5, 2).to_bytes())
                .unwrap()
                .unwrap(),
            "term=5 vote=2"
        );
        assert!(describe_meta(99, &[]).is_none());
        assert!(describe_meta(META_VOTE, &[1, 2]).unwrap().is_err());
    }

    proptest! {
        #[test]
        fn garbage_never_panics(body in proptest::collection::vec(any::<u8>(), 0..64), key in 0u64..8) {
            let _ = describe_entry(1, &body, 8);
            let _ = describe_meta(key, &body);
        }
    }
}
