//! A raft-rs `RawNode` writes through its Ready loop into `MmapRaftStorage`; the node is
//! dropped and the directory reopened: the initial state and the log are what the node had
//! acknowledged (persisted and synced), and a new node continues from there.
#![cfg(feature = "raft-rs")]

use std::path::Path;

use raft::eraftpb::{ConfState, Entry, HardState};
use raft::{GetEntriesContext, RawNode, StateRole, Storage};
use raft_mmap_log::raft_rs::{discard_logger, MmapRaftStorage};
use raft_mmap_log::Config;

fn log_config() -> Config {
    Config {
        segment_size: 64 << 10,
        ..Config::default()
    }
}

/// What the node was told is durable.
#[derive(Default)]
struct Acked {
    hs: HardState,
    entries: Vec<Entry>,
}

fn new_node(storage: MmapRaftStorage) -> RawNode<MmapRaftStorage> {
    let config = raft::Config {
        id: 1,
        ..Default::default()
    };
    RawNode::new(&config, storage, &discard_logger()).expect("raw node")
}

/// Runs Ready turns until there are none; returns the entries handed over for applying.
fn drive(node: &mut RawNode<MmapRaftStorage>, acked: &mut Acked) -> Vec<Entry> {
    let mut applied = Vec::new();
    while node.has_ready() {
        let mut rd = node.ready();
        applied.extend(rd.take_committed_entries());
        node.mut_store().persist_ready(&rd).expect("persist");
        if let Some(first) = rd.entries().first() {
            let first = first.index;
            acked.entries.retain(|e| e.index < first);
            acked.entries.extend(rd.entries().iter().cloned());
        }
        if let Some(hs) = rd.hs() {
            acked.hs = hs.clone();
        }
        let mut light = node.advance(rd);
        if let Some(commit) = light.commit_index() {
            node.mut_store().set_commit(commit).expect("commit");
            node.mut_store().sync().expect("sync");
            acked.hs.commit = commit;
        }
        applied.extend(light.take_committed_entries());
        node.advance_apply();
    }
    applied
}

fn propose(
    node: &mut RawNode<MmapRaftStorage>,
    acked: &mut Acked,
    range: std::ops::Range<u32>,
) -> Vec<Entry> {
    let mut applied = Vec::new();
    for i in range {
        node.propose(
            format!("ctx-{i}").into_bytes(),
            format!("put {i}").into_bytes(),
        )
        .expect("propose");
        if i % 7 == 0 {
            applied.extend(drive(node, acked));
        }
    }
    applied.extend(drive(node, acked));
    applied
}

fn stored_entries(s: &MmapRaftStorage) -> Vec<Entry> {
    let (first, last) = (s.first_index().unwrap(), s.last_index().unwrap());
    s.entries(first, last + 1, None, GetEntriesContext::empty(false))
        .unwrap()
}

fn reopen_and_check(dir: &Path, acked: &Acked) -> MmapRaftStorage {
    let storage = MmapRaftStorage::open(dir, log_config()).expect("reopen");
    let st = storage.initial_state().unwrap();
    assert_eq!(st.hard_state, acked.hs, "hard state after reopen");
    assert_eq!(st.conf_state.voters, vec![1]);
    let first = storage.first_index().unwrap();
    let want: Vec<Entry> = acked
        .entries
        .iter()
        .filter(|e| e.index >= first)
        .cloned()
        .collect();
    assert_eq!(stored_entries(&storage), want, "log after reopen");
    assert_eq!(
        storage.last_index().unwrap(),
        acked.entries.last().map_or(0, |e| e.index)
    );
    storage
}

fn data(entries: &[Entry]) -> Vec<Vec<u8>> {
    entries
        .iter()
        .filter(|e| !e.data.is_empty())
        .map(|e| e.data.to_vec())
        .collect()
}

#[test]
fn a_restarted_node_finds_what_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut storage = MmapRaftStorage::open(dir.path(), log_config()).unwrap();
    let cs = ConfState {
        voters: vec![1],
        ..ConfState::default()
    };
    storage.set_conf_state(cs).unwrap();
    storage.sync().unwrap();

    // First life: elected, 60 proposals.
    let mut acked = Acked::default();
    let mut node = new_node(storage);
    node.campaign().unwrap();
    let mut applied = drive(&mut node, &mut acked);
    assert_eq!(node.raft.state, StateRole::Leader);
    applied.extend(propose(&mut node, &mut acked, 0..60));
    assert_eq!(data(&applied).len(), 60);
    assert_eq!(
        acked.hs.commit, 61,
        "the leader's empty entry and 60 proposals"
    );
    drop(node);

    // Second life: the same state; raft-rs replays the committed entries for applying.
    let storage = reopen_and_check(dir.path(), &acked);
    let mut node = new_node(storage);
    assert_eq!(node.raft.term, 1);
    assert_eq!(node.raft.raft_log.committed, 61);
    node.campaign().unwrap();
    let mut replayed = drive(&mut node, &mut acked);
    assert_eq!(node.raft.term, 2);
    replayed.extend(propose(&mut node, &mut acked, 60..80));
    let mut want = data(&applied);
    want.extend((60..80).map(|i| format!("put {i}").into_bytes()));
    assert_eq!(data(&replayed), want, "replayed, then new");

    // Compact what is applied, as a raft-rs application does; third life starts after it.
    let commit = acked.hs.commit;
    node.mut_store().compact(commit - 5).unwrap();
    node.mut_store().sync().unwrap();
    drop(node);
    let storage = reopen_and_check(dir.path(), &acked);
    assert_eq!(storage.first_index().unwrap(), commit - 5);
    let dummy_term = acked.entries[(commit - 7) as usize].term;
    assert_eq!(storage.term(commit - 6), Ok(dummy_term));
    let mut node = new_node(storage);
    node.campaign().unwrap();
    let replayed = drive(&mut node, &mut acked);
    assert_eq!(node.raft.term, 3);
    assert_eq!(
        data(&replayed),
        acked.entries[(commit - 6) as usize..]
            .iter()
            .filter(|e| !e.data.is_empty() && e.index <= commit)
            .map(|e| e.data.to_vec())
            .collect::<Vec<_>>(),
        "only what follows the compaction is replayed"
    );
    drop(node);
    drop(reopen_and_check(dir.path(), &acked));

    // The crate's tools read a raft-rs log like any other: every log id, vote and meta value
    // decodes and the Raft invariants hold.
    let report = raft_mmap_log::raft::inspect::verify(dir.path(), &|_| {}).unwrap();
    assert!(
        report.is_sound(),
        "{:?}",
        report.problems().collect::<Vec<_>>()
    );
    assert!(report.raft_checked);
    assert!(report.raft_entries_checked > 0);
}
