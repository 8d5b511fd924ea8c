//! A raft-rs `RawNode` writes through its Ready loop into `MmapRaftStorage`; the node is
//! dropped and the directory reopened: the initial state and the log are what the node had
//! acknowledged (persisted and synced), and a new node continues from there. The same with
//! raft-rs's asynchronous Ready loop (`advance_append_async` / `on_persist_ready`, driven by
//! the log's flush callbacks).
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

/// The asynchronous Ready loop of raft-rs (`advance_append_async`, then `on_persist_ready`
/// once the log's flush callback says the Ready's writes are durable): the node commits only
/// what the flush callbacks acknowledged, and a reopened log holds exactly that.
#[test]
fn an_asynchronous_ready_loop_commits_only_what_was_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let mut storage = MmapRaftStorage::open(dir.path(), log_config()).unwrap();
    storage
        .set_conf_state(ConfState {
            voters: vec![1],
            ..ConfState::default()
        })
        .unwrap();
    storage.sync().unwrap();
    let mut node = new_node(storage);
    node.campaign().unwrap();

    let (tx, rx) = std::sync::mpsc::channel::<(u64, raft_mmap_log::Result<()>)>();
    // Ready number -> the last entry index and hard state it wrote.
    let mut in_flight: Vec<(u64, u64, Option<HardState>)> = Vec::new();
    let mut persisted_last = 0u64;
    let mut acked = Acked::default();
    let mut applied: Vec<Entry> = Vec::new();
    let mut next_proposal = 0u32;
    loop {
        // Acknowledgements that arrived: the Ready's entries and hard state are durable.
        let mut wait = !node.has_ready() && !in_flight.is_empty();
        loop {
            let got = if wait {
                let t = std::time::Duration::from_secs(30);
                Some(rx.recv_timeout(t).expect("a flush callback never came"))
            } else {
                rx.try_recv().ok()
            };
            let Some((number, result)) = got else { break };
            wait = false;
            result.expect("flush");
            let k = in_flight.iter().position(|(n, _, _)| *n == number).unwrap();
            let (_, last, hs) = in_flight.remove(k);
            persisted_last = persisted_last.max(last);
            if let Some(hs) = hs {
                acked.hs = hs;
            }
            node.on_persist_ready(number);
        }
        if node.has_ready() {
            let mut rd = node.ready();
            let committed = rd.take_committed_entries();
            for e in &committed {
                assert!(
                    e.index <= persisted_last,
                    "entry {} handed out for applying before it was persisted (up to {persisted_last})",
                    e.index
                );
            }
            applied.extend(committed);
            let store = node.mut_store();
            if !rd.entries().is_empty() {
                store.append(rd.entries()).unwrap();
                let first = rd.entries()[0].index;
                acked.entries.retain(|e| e.index < first);
                acked.entries.extend(rd.entries().iter().cloned());
            }
            if let Some(hs) = rd.hs() {
                store.set_hard_state(hs).unwrap();
            }
            let last = rd.entries().last().map_or(persisted_last, |e| e.index);
            let number = rd.number();
            in_flight.push((number, last, rd.hs().cloned()));
            let tx = tx.clone();
            store
                .flush(move |r| {
                    let _ = tx.send((number, r));
                })
                .unwrap();
            node.advance_append_async(rd);
            if let Some(last) = applied.last() {
                node.advance_apply_to(last.index);
            }
            continue;
        }
        if !in_flight.is_empty() {
            continue;
        }
        if next_proposal == 100 {
            break;
        }
        // Several proposals per turn, so that Readies overlap their persistence.
        for _ in 0..5 {
            node.propose(vec![], format!("put {next_proposal}").into_bytes())
                .unwrap();
            next_proposal += 1;
        }
    }
    assert_eq!(node.raft.state, StateRole::Leader);
    assert_eq!(data(&applied).len(), 100);
    node.mut_store().sync().unwrap();
    acked.hs.commit = node.raft.raft_log.committed;
    drop(node);
    let storage = reopen_and_check(dir.path(), &acked);
    assert_eq!(storage.initial_state().unwrap().hard_state.commit, 101);
}
