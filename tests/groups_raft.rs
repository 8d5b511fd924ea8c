//! The typed Raft layer on groups of a shared log: `RaftLog<T, Group>` has the API and the
//! rules of a `RaftLog` with a directory of its own, each group keeps its own Raft state
//! (vote, commit, purge, snapshot, user data), and the states come back after a reopen.

use raft_mmap_log::groups::{Group, Groups};
use raft_mmap_log::raft::{LogId, RaftError, RaftLog, RaftTypes, StateError, Vote};
use raft_mmap_log::Config;

type Log = RaftLog<RaftTypes, Group>;

fn config() -> Config {
    Config {
        segment_size: 8192,
        prepare_ahead: false,
        ..Config::default()
    }
}

fn payload(group: u64, index: u64) -> Vec<u8> {
    format!("g{group}-i{index}-{}", "x".repeat((index % 50) as usize)).into_bytes()
}

/// Drives group `g` through every Raft call; term and node differ per group.
fn drive(log: &mut Log, g: u64) {
    let node = g + 1;
    log.save_vote(Vote::new(1, node, false)).unwrap();
    let ids: Vec<LogId> = (1..=40).map(|i| LogId::new(1, node, i)).collect();
    let bodies: Vec<Vec<u8>> = (1..=40).map(|i| payload(g, i)).collect();
    log.append(ids.iter().copied().zip(bodies.iter().map(|b| &b[..])))
        .unwrap();
    log.commit(LogId::new(1, node, 30)).unwrap();
    // A conflicting suffix from a new leader.
    log.truncate_after(Some(LogId::new(1, node, 35))).unwrap();
    log.save_vote(Vote::new(2, node, true)).unwrap();
    let more: Vec<Vec<u8>> = (36..=50).map(|i| payload(g + 100, i)).collect();
    log.append(
        (36..=50)
            .map(|i| LogId::new(2, node, i))
            .zip(more.iter().map(|b| &b[..])),
    )
    .unwrap();
    log.purge_upto(LogId::new(1, node, 10 + g)).unwrap();
    log.save_user_data(Some(format!("user data of {g}").into_bytes()))
        .unwrap();
    log.sync().unwrap();
}

fn check(log: &Log, g: u64) {
    let node = g + 1;
    let st = log.state();
    assert_eq!(st.vote, Some(Vote::new(2, node, true)), "group {g}");
    assert_eq!(st.committed, Some(LogId::new(1, node, 30)));
    assert_eq!(st.purged, Some(LogId::new(1, node, 10 + g)));
    assert_eq!(st.last, Some(LogId::new(2, node, 50)));
    let view = log.reader().view();
    assert_eq!(view.first_index(), 11 + g);
    for i in 11 + g..=50 {
        let (id, body) = view.get(i).unwrap().unwrap();
        let want = if i <= 35 {
            (LogId::new(1, node, i), payload(g, i))
        } else {
            (LogId::new(2, node, i), payload(g + 100, i))
        };
        assert_eq!((id, body), (want.0, &want.1[..]), "group {g} index {i}");
    }
}

#[test]
fn each_group_keeps_its_own_raft_state_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let shared = Groups::open(dir.path(), config()).unwrap();
        let mut logs: Vec<Log> = (1..=3)
            .map(|g| Log::for_group(shared.group(g)).unwrap())
            .collect();
        for (g, log) in (1..=3).zip(logs.iter_mut()) {
            drive(log, g);
        }
        for (g, log) in (1..=3).zip(logs.iter()) {
            check(log, g);
        }
        // A snapshot that replaces one group's log leaves the others as they are.
        logs[1]
            .install_snapshot(LogId::new(3, 3, 500), b"snapshot of 2".to_vec())
            .unwrap();
        logs[1].sync().unwrap();
        check(&logs[0], 1);
        check(&logs[2], 3);
    }
    let shared = Groups::open(dir.path(), config()).unwrap();
    assert_eq!(shared.ids(), vec![1, 2, 3]);
    for g in [1, 3] {
        check(&Log::for_group(shared.group(g)).unwrap(), g);
    }
    let two = Log::for_group(shared.group(2)).unwrap();
    assert_eq!(two.state().purged, Some(LogId::new(3, 3, 500)));
    assert_eq!(two.reader().view().first_index(), 501);
}

#[test]
fn a_groups_raft_rules_are_checked_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let shared = Groups::open(dir.path(), config()).unwrap();
    let mut log = Log::for_group(shared.group(9)).unwrap();
    log.save_vote(Vote::new(5, 1, false)).unwrap();
    // A vote for another candidate in the same term is refused.
    let err = log.save_vote(Vote::new(5, 2, false)).unwrap_err();
    assert!(
        matches!(err, RaftError::State(StateError::VoteConflict { .. })),
        "{err}"
    );
    log.append([(LogId::new(5, 1, 1), &b"one"[..])]).unwrap();
    // A gap is refused, and nothing is written.
    let err = log
        .append([(LogId::new(5, 1, 3), &b"three"[..])])
        .unwrap_err();
    assert!(err.to_string().contains('3'), "{err}");
    assert_eq!(shared.group(9).next_index(), 2);
    // Another group is not affected by this one's vote.
    let mut other = Log::for_group(shared.group(10)).unwrap();
    other.save_vote(Vote::new(1, 2, false)).unwrap();
    assert_eq!(other.state().vote, Some(Vote::new(1, 2, false)));
}

/// A group has one Raft log at a time: a second `RaftLog` on it, and its removal, are refused
/// while the first lives (either would leave the first acting on a state that is no longer
/// the group's), and allowed once it is dropped. Other groups are not affected.
#[test]
fn a_group_has_one_raft_log_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let groups = Groups::open(dir.path(), config()).unwrap();
    let mut first = Log::for_group(groups.group(3)).unwrap();
    first.save_vote(Vote::new(1, 1, false)).unwrap();
    let in_use = |r: Result<(), raft_mmap_log::Error>, action: &str| match r {
        Err(raft_mmap_log::Error::GroupInUse {
            group: 3,
            action: a,
        }) => assert_eq!(a, action),
        other => panic!("expected GroupInUse ({action}), got {other:?}"),
    };
    match Log::for_group(groups.group(3)) {
        Err(RaftError::Engine(e)) => in_use(Err(e), "opening another"),
        other => panic!("a second Raft log on group 3: {other:?}"),
    }
    in_use(groups.remove_group(3), "removing the group");
    assert_eq!(groups.ids(), vec![3], "nothing removed");
    let other = Log::for_group(groups.group(4)).unwrap();
    drop(other);
    drop(first);
    let again = Log::for_group(groups.group(3)).unwrap();
    assert_eq!(again.state().vote, Some(Vote::new(1, 1, false)));
    drop(again);
    groups.remove_group(3).unwrap();
    assert!(groups.ids().is_empty());
}
