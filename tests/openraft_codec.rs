//! How `MmapLogStore` stores entries: the log id only in the record, the body as codec id +
//! kind + postcard data; directories written with the earlier serde_json bodies still read;
//! unknown codec ids and data postcard cannot read back are clear errors.
#![cfg(feature = "openraft")]

use std::collections::BTreeSet;
use std::io::Cursor;
use std::path::Path;

use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership, Vote};
use raft_mmap_log::openraft::{KvConfig, KvRequest, MmapLogStore, OpenraftTypes, OPENRAFT_RULES};
use raft_mmap_log::raft::{self, RaftLog};
use raft_mmap_log::Config;
use serde::{Deserialize, Serialize};

/// The codec id of postcard bodies (`raft_mmap_log::openraft::ENTRY_CODEC_POSTCARD`), written
/// out so that this file also compiles against the store before codec ids.
const POSTCARD: u8 = 0x01;

fn config() -> Config {
    Config {
        segment_size: 64 << 10,
        ..Config::default()
    }
}

fn lid(term: u64, node: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, node), index)
}

fn normal(term: u64, index: u64) -> Entry<KvConfig> {
    Entry {
        log_id: lid(term, 1, index),
        payload: EntryPayload::Normal(KvRequest::Set {
            key: format!("key-{index}"),
            value: format!("value-{index}"),
        }),
    }
}

fn blank(term: u64, index: u64) -> Entry<KvConfig> {
    Entry {
        log_id: lid(term, 1, index),
        payload: EntryPayload::Blank,
    }
}

fn membership(term: u64, index: u64) -> Entry<KvConfig> {
    Entry {
        log_id: lid(term, 1, index),
        payload: EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1, 2, 3])], None)),
    }
}

/// openraft's `Entry` has no `PartialEq`: compare JSON.
fn json<E: Serialize>(entries: &[E]) -> Vec<String> {
    entries
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect()
}

fn stored_id(e: &Entry<KvConfig>) -> raft::LogId {
    raft::LogId::new(
        e.log_id.leader_id.term,
        e.log_id.leader_id.node_id,
        e.log_id.index,
    )
}

fn raw_log(dir: &Path) -> RaftLog<OpenraftTypes> {
    RaftLog::open_with_rules(dir, config(), OPENRAFT_RULES).unwrap()
}

/// The stored body of every entry, read through the untyped reader.
fn bodies(s: &MmapLogStore<KvConfig>) -> Vec<(u64, Vec<u8>)> {
    let view = s.reader().raw().view();
    view.read(..)
        .map(|e| {
            let (id, body) = e.unwrap();
            (id.index, body.to_vec())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_written_with_serde_json_bodies_is_read_and_extended() {
    let tmp = tempfile::tempdir().unwrap();
    // Exactly what the store wrote before codec ids: the serde_json of the whole entry, log
    // id included, as the payload of a record under the same log id.
    let old = [blank(1, 0), membership(1, 1), normal(1, 2), normal(1, 3)];
    {
        let mut log = raw_log(tmp.path());
        let encoded: Vec<Vec<u8>> = old.iter().map(|e| serde_json::to_vec(e).unwrap()).collect();
        log.save_vote(raft_mmap_log::openraft::vote_to_stored(
            &Vote::new_committed(1, 1u64),
        ))
        .unwrap();
        log.append(
            old.iter()
                .zip(&encoded)
                .map(|(e, b)| (stored_id(e), &b[..])),
        )
        .unwrap();
        log.sync().unwrap();
    }

    let mut s = MmapLogStore::<KvConfig>::open(tmp.path(), config()).unwrap();
    assert_eq!(
        s.read_vote().await.unwrap(),
        Some(Vote::new_committed(1, 1))
    );
    let got = s.try_get_log_entries(..).await.unwrap();
    assert_eq!(json(&got), json(&old));

    // New entries go in the new encoding, after the old ones.
    let new = [normal(2, 4), blank(2, 5), membership(2, 6)];
    s.blocking_append(new.clone()).await.unwrap();
    let b = bodies(&s);
    assert!(b[..4].iter().all(|(_, body)| body[0] == b'{'));
    assert!(b[4..].iter().all(|(_, body)| body[0] == POSTCARD), "{b:?}");
    drop(s);

    let mut s = MmapLogStore::<KvConfig>::open(tmp.path(), config()).unwrap();
    let all: Vec<_> = old.iter().chain(&new).cloned().collect();
    assert_eq!(json(&s.try_get_log_entries(..).await.unwrap()), json(&all));
    let mut r = s.get_log_reader().await;
    assert_eq!(
        json(&r.try_get_log_entries(3..6).await.unwrap()),
        json(&all[3..6])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_holds_codec_kind_and_data_but_not_the_log_id() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = MmapLogStore::<KvConfig>::open(tmp.path(), config()).unwrap();
    let entries = [
        blank(7, 0),
        Entry {
            log_id: lid(7, 1, 1),
            payload: EntryPayload::Normal(KvRequest::Delete { key: "ab".into() }),
        },
        membership(7, 2),
    ];
    s.blocking_append(entries.clone()).await.unwrap();
    let b = bodies(&s);
    assert_eq!(b[0], (0, vec![POSTCARD, 0]));
    // kind 1 (Normal); postcard: variant 1 (Delete), length 2, "ab".
    assert_eq!(b[1], (1, vec![POSTCARD, 1, 1, 2, b'a', b'b']));
    assert_eq!(&b[2].1[..2], &[POSTCARD, 2]);
    assert!(b[2].1.len() < 20, "membership body {:?}", b[2].1);
    assert_eq!(
        json(&s.try_get_log_entries(..).await.unwrap()),
        json(&entries)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_codec_id_is_an_error_naming_the_index() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let mut log = raw_log(tmp.path());
        let good = {
            let mut s = MmapLogStore::<KvConfig>::from_log(raw_log(&tmp.path().join("x")));
            s.blocking_append([normal(1, 0)]).await.unwrap();
            bodies(&s).remove(0).1
        };
        log.append([
            (stored_id(&normal(1, 0)), &good[..]),
            (raft::LogId::new(1, 1, 1), &[0x7f, 1, 0][..]),
            (raft::LogId::new(1, 1, 2), &[][..]),
        ])
        .unwrap();
        log.sync().unwrap();
    }
    let mut s = MmapLogStore::<KvConfig>::open(tmp.path(), config()).unwrap();
    assert_eq!(s.try_get_log_entries(0..1).await.unwrap().len(), 1);
    let e = s.try_get_log_entries(0..3).await.unwrap_err().to_string();
    assert!(
        e.contains("entry 1: unknown entry codec id 0x7f"),
        "unclear error: {e}"
    );
    let e = s.try_get_log_entries(2..3).await.unwrap_err().to_string();
    assert!(
        e.contains("entry 2: bad entry header"),
        "unclear error: {e}"
    );
}

/// Application data postcard writes but cannot read back (it is not self-describing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum Untagged {
    Num(u64),
    Text(String),
}

openraft::declare_raft_types!(
    UntaggedConfig:
        D = Untagged,
        R = (),
        SnapshotData = Cursor<Vec<u8>>,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_postcard_cannot_read_back_fails_the_append_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = MmapLogStore::<UntaggedConfig>::open(tmp.path(), config()).unwrap();
    let e = |i, d| Entry::<UntaggedConfig> {
        log_id: lid(1, 1, i),
        payload: EntryPayload::Normal(d),
    };
    let err = s
        .blocking_append([
            Entry {
                log_id: lid(1, 1, 0),
                payload: EntryPayload::Blank,
            },
            e(1, Untagged::Text("x".into())),
        ])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("entry 1: application data does not read back through postcard")
            && err.contains("untagged"),
        "unclear error: {err}"
    );
    assert_eq!(s.get_log_state().await.unwrap().last_log_id, None);
    assert!(s.try_get_log_entries(..).await.unwrap().is_empty());
    drop(s);
    let mut s = MmapLogStore::<UntaggedConfig>::open(tmp.path(), config()).unwrap();
    assert_eq!(s.get_log_state().await.unwrap().last_log_id, None);
}
