//! `MmapLogStore` across reopens: after every storage call, dropping the store and opening
//! the directory again gives back the same vote, committed log id, log state and entries.
#![cfg(feature = "openraft")]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use openraft::storage::{LogState, RaftLogReader, RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership, Vote};
use raft_mmap_log::openraft::{KvConfig, KvRequest, MmapLogStore, OpenraftTypes, OPENRAFT_RULES};
use raft_mmap_log::raft::RaftLog;
use raft_mmap_log::Config;

type Store = MmapLogStore<KvConfig>;

fn config() -> Config {
    Config {
        segment_size: 64 << 10,
        ..Config::default()
    }
}

fn open(dir: &Path) -> Store {
    Store::open(dir, config()).expect("open")
}

fn lid(term: u64, node: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, node), index)
}

fn normal(term: u64, node: u64, index: u64) -> Entry<KvConfig> {
    Entry {
        log_id: lid(term, node, index),
        payload: EntryPayload::Normal(KvRequest::Set {
            key: format!("key-{index}"),
            value: format!("value-{index}-{}", "x".repeat(index as usize % 300)),
        }),
    }
}

fn membership(term: u64, node: u64, index: u64) -> Entry<KvConfig> {
    Entry {
        log_id: lid(term, node, index),
        payload: EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1, 2, 3])], None)),
    }
}

/// Everything a node reads back at startup.
#[derive(Debug, PartialEq)]
struct Seen {
    vote: Option<Vote<u64>>,
    committed: Option<LogId<u64>>,
    state: LogState<KvConfig>,
    /// Entries as JSON (openraft's `Entry` has no `PartialEq`).
    entries: Vec<String>,
}

async fn observe(s: &mut Store) -> Seen {
    let entries = s.try_get_log_entries(..).await.expect("read entries");
    // The reader handed to openraft sees the same entries.
    let mut reader = s.get_log_reader().await;
    let again = reader.try_get_log_entries(..).await.expect("reader");
    let entries: Vec<String> = entries
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    let again: Vec<String> = again
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    assert_eq!(entries, again);
    Seen {
        vote: s.read_vote().await.unwrap(),
        committed: s.read_committed().await.unwrap(),
        state: s.get_log_state().await.unwrap(),
        entries,
    }
}

/// Observes, drops, reopens, observes again; returns the reopened store and what it saw.
async fn reopen(dir: &Path, mut s: Store) -> (Store, Seen) {
    let before = observe(&mut s).await;
    drop(s);
    let mut s = open(dir);
    let after = observe(&mut s).await;
    assert_eq!(before, after, "reopen changed what the store returns");
    (s, after)
}

fn indexes(seen: &Seen) -> Vec<u64> {
    seen.entries
        .iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(e).unwrap();
            v["log_id"]["index"].as_u64().unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_after_every_call() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let s = open(dir);

    let (mut s, seen) = reopen(dir, s).await;
    assert_eq!(seen.state.last_log_id, None);
    assert_eq!(seen.vote, None);

    s.save_vote(&Vote::new(1, 1)).await.unwrap();
    let (mut s, seen) = reopen(dir, s).await;
    assert_eq!(seen.vote, Some(Vote::new(1, 1)));

    let mut batch = vec![normal(1, 1, 0), membership(1, 1, 1)];
    batch.extend((2..200).map(|i| normal(1, 1, i)));
    s.blocking_append(batch).await.unwrap();
    let (mut s, seen) = reopen(dir, s).await;
    assert_eq!(seen.state.last_log_id, Some(lid(1, 1, 199)));
    assert_eq!(indexes(&seen), (0..200).collect::<Vec<_>>());

    s.save_committed(Some(lid(1, 1, 150))).await.unwrap();
    let (mut s, seen) = reopen(dir, s).await;
    assert_eq!(seen.committed, Some(lid(1, 1, 150)));

    // A committed vote for a later leader; a lower vote is refused and changes nothing.
    s.save_vote(&Vote::new_committed(2, 2)).await.unwrap();
    assert!(s.save_vote(&Vote::new(1, 3)).await.is_err());
    let (mut s, seen) = reopen(dir, s).await;
    assert_eq!(seen.vote, Some(Vote::new_committed(2, 2)));

    // Conflict resolution: drop [180, ..), then the new leader's entries.
    s.truncate(lid(1, 1, 180)).await.unwrap();
    let (mut s, seen) = reopen(dir, s).await;
    assert_eq!(seen.state.last_log_id, Some(lid(1, 1, 179)));
    s.blocking_append((180..260).map(|i| normal(2, 2, i)))
        .await
        .unwrap();
    let (mut s, seen) = reopen(dir, s).await;
    assert_eq!(seen.state.last_log_id, Some(lid(2, 2, 259)));
    assert_eq!(indexes(&seen), (0..260).collect::<Vec<_>>());

    // Truncating committed entries is refused.
    assert!(s.truncate(lid(1, 1, 100)).await.is_err());

    // Purge a prefix (spans several 64 KiB segments).
    s.purge(lid(1, 1, 120)).await.unwrap();
    let (mut s, seen) = reopen(dir, s).await;
    assert_eq!(seen.state.last_purged_log_id, Some(lid(1, 1, 120)));
    assert_eq!(indexes(&seen), (121..260).collect::<Vec<_>>());

    // Purge everything: the purged log id is the last log id, and survives a reopen.
    s.save_committed(Some(lid(2, 2, 259))).await.unwrap();
    s.purge(lid(2, 2, 259)).await.unwrap();
    let (s, seen) = reopen(dir, s).await;
    assert_eq!(
        seen.state,
        LogState {
            last_purged_log_id: Some(lid(2, 2, 259)),
            last_log_id: Some(lid(2, 2, 259)),
        }
    );
    assert!(seen.entries.is_empty());
    let (mut s, seen2) = reopen(dir, s).await; // and once more, from the reopened state
    assert_eq!(seen, seen2);

    // Purge past the end (a snapshot installed from the leader), then continue after it.
    s.purge(lid(3, 1, 300)).await.unwrap();
    let (mut s, seen) = reopen(dir, s).await;
    assert_eq!(seen.state.last_purged_log_id, Some(lid(3, 1, 300)));
    assert_eq!(seen.state.last_log_id, Some(lid(3, 1, 300)));
    s.blocking_append((301..305).map(|i| normal(3, 1, i)))
        .await
        .unwrap();
    let (_s, seen) = reopen(dir, s).await;
    assert_eq!(indexes(&seen), (301..305).collect::<Vec<_>>());
    assert_eq!(seen.vote, Some(Vote::new_committed(2, 2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_log_starting_after_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = open(tmp.path());
    s.blocking_append([normal(1, 0, 5), normal(1, 0, 6)])
        .await
        .unwrap();
    let (_s, seen) = reopen(tmp.path(), s).await;
    assert_eq!(seen.state.last_purged_log_id, Some(lid(1, 0, 4)));
    assert_eq!(seen.state.last_log_id, Some(lid(1, 0, 6)));
    assert_eq!(indexes(&seen), vec![5, 6]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_entry_is_an_error_naming_its_index() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let mut log =
            RaftLog::<OpenraftTypes>::open_with_rules(tmp.path(), config(), OPENRAFT_RULES)
                .unwrap();
        let good = serde_json::to_vec(&normal(1, 1, 0)).unwrap();
        let wrong_id = serde_json::to_vec(&normal(1, 1, 7)).unwrap();
        log.append([
            (raft_mmap_log::raft::LogId::new(1, 1, 0), &good[..]),
            (raft_mmap_log::raft::LogId::new(1, 1, 1), b"{not json"),
            (raft_mmap_log::raft::LogId::new(1, 1, 2), &wrong_id[..]),
        ])
        .unwrap();
        log.sync().unwrap();
    }
    let mut s = open(tmp.path());
    assert_eq!(s.try_get_log_entries(0..1).await.unwrap().len(), 1);
    let e = s.try_get_log_entries(0..3).await.unwrap_err().to_string();
    assert!(e.contains('1'), "{e}");
    let e = s.try_get_log_entries(2..3).await.unwrap_err().to_string();
    assert!(e.contains("entry 2"), "{e}");
}

#[test]
fn readers_do_not_take_the_writer_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut s = open(tmp.path());
    rt.block_on(s.blocking_append((0..100).map(|i| normal(1, 1, i))))
        .unwrap();
    let reader = s.reader();
    let hold = Duration::from_millis(600);
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::channel();
        let writer = s.clone();
        scope.spawn(move || {
            writer
                .with_log(|_| {
                    tx.send(()).unwrap();
                    std::thread::sleep(hold);
                })
                .unwrap();
        });
        rx.recv().unwrap(); // the writer lock is now held
        let t = Instant::now();
        let entries = reader.read(10..20).unwrap();
        assert_eq!(entries.len(), 10);
        assert!(
            t.elapsed() < hold / 2,
            "a read waited for the writer lock ({:?})",
            t.elapsed()
        );
    });
}

/// An append that fails writes nothing, also when it would have moved the start of an empty
/// log: an entry too large at index 5 leaves no purged log id, no commit and no entries, in
/// memory and after a reopen; the log then takes the same index with a small entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_append_on_an_empty_log_moves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = open(tmp.path());
    s.save_vote(&Vote::new(1, 0)).await.unwrap();
    let before = observe(&mut s).await;
    let huge = Entry {
        log_id: lid(1, 0, 5),
        payload: EntryPayload::Normal(KvRequest::Set {
            key: "k".into(),
            value: "v".repeat(config().segment_size as usize),
        }),
    };
    assert!(s.blocking_append([huge]).await.is_err());
    assert_eq!(observe(&mut s).await, before);
    assert_eq!(s.state().unwrap().snapshot, None);
    let (mut s, seen) = reopen(tmp.path(), s).await;
    assert_eq!(seen, before);
    assert_eq!(s.state().unwrap().snapshot, None);
    // The same index with an entry that fits: the log starts after 4, as before.
    s.blocking_append([normal(1, 0, 5)]).await.unwrap();
    let (_s, seen) = reopen(tmp.path(), s).await;
    assert_eq!(seen.state.last_purged_log_id, Some(lid(1, 0, 4)));
    assert_eq!(indexes(&seen), vec![5]);
}
