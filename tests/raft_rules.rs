//! Regression tests for Raft-layer rules: same-term votes, truncate and commit points that the
//! log does not hold, the first index of a new log, room for the fixed meta values next to user
//! data, and error messages that print values through `Display`.

use std::path::Path;

use raft_mmap_log::raft::{LogId, RaftError, RaftLog, RaftTypes, Rules, StateError, Vote};
use raft_mmap_log::Config;

type Log = RaftLog<RaftTypes>;

fn cfg() -> Config {
    Config {
        segment_size: 4096,
        ..Config::default()
    }
}

fn open(dir: &Path) -> Log {
    Log::open(dir, cfg()).unwrap()
}

fn state_err(e: RaftError<RaftTypes>) -> StateError<RaftTypes> {
    match e {
        RaftError::State(s) => s,
        other => panic!("expected a state error, got {other}"),
    }
}

fn append_ids(log: &mut Log, ids: &[LogId]) {
    log.append(ids.iter().map(|i| (*i, &b"payload"[..])))
        .unwrap();
}

/// Runs `op`, expects an error whose text contains every string in `has` and no `Debug`
/// output, then checks that nothing was written (also after a reopen).
fn refused(
    dir: &Path,
    mut log: Log,
    has: &[&str],
    op: impl FnOnce(&mut Log) -> RaftError<RaftTypes>,
) -> Log {
    log.sync().unwrap();
    let before = log.state().clone();
    let pos = log.store().position();
    let err = op(&mut log);
    let text = err.to_string();
    for s in has {
        assert!(text.contains(s), "{text:?} lacks {s:?}");
    }
    for debug in ["LogId {", "Vote {", "Some(", "term:"] {
        assert!(!text.contains(debug), "{text:?} prints Debug output");
    }
    assert_eq!(log.state(), &before);
    assert_eq!(log.store().position(), pos, "nothing written");
    drop(log);
    let log = open(dir);
    assert_eq!(log.state(), &before);
    log
}

#[test]
fn second_vote_in_same_term_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    log.save_vote(Vote::new(5, 1, false)).unwrap();
    // The same vote again, and its committed form, are fine.
    log.save_vote(Vote::new(5, 1, false)).unwrap();
    let mut log = refused(dir.path(), log, &["T5-N1", "T5-N2"], |l| {
        let e = l.save_vote(Vote::new(5, 2, false)).unwrap_err();
        assert!(matches!(
            state_err(e.clone()),
            StateError::VoteConflict { .. }
        ));
        e
    });
    log.save_vote(Vote::new(5, 1, true)).unwrap();
    // A committed vote for another leader in the same term is incomparable too.
    let mut log = refused(dir.path(), log, &["T5-N1", "T5-N2"], |l| {
        l.save_vote(Vote::new(5, 2, true)).unwrap_err()
    });
    log.save_vote(Vote::new(6, 2, false)).unwrap();
    assert_eq!(log.state().vote, Some(Vote::new(6, 2, false)));
}

#[test]
fn truncate_after_past_the_end_is_a_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let log = refused(dir.path(), log, &["1-1-0", "nothing"], |l| {
        l.truncate_after(Some(LogId::new(1, 1, 0))).unwrap_err()
    });
    let mut log = log;
    append_ids(&mut log, &[LogId::new(1, 1, 1), LogId::new(1, 1, 2)]);
    log = refused(dir.path(), log, &["1-1-5", "nothing", "index 5"], |l| {
        let e = l.truncate_after(Some(LogId::new(1, 1, 5))).unwrap_err();
        assert!(matches!(
            state_err(e.clone()),
            StateError::LogIdMismatch { index: 5, .. }
        ));
        e
    });
    log.truncate_after(Some(LogId::new(1, 1, 2))).unwrap();
    log.truncate_after(Some(LogId::new(1, 1, 1))).unwrap();
    assert_eq!(log.state().last, Some(LogId::new(1, 1, 1)));
}

#[test]
fn new_log_accepts_any_first_index_then_follows_purged() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    // raft-rs logs start at 1.
    append_ids(&mut log, &[LogId::new(1, 1, 1), LogId::new(1, 1, 2)]);
    log.sync().unwrap();
    drop(log);
    let mut log = open(dir.path());
    assert_eq!(log.state().last, Some(LogId::new(1, 1, 2)));
    append_ids(&mut log, &[LogId::new(1, 1, 3), LogId::new(1, 1, 4)]);
    log.commit(LogId::new(1, 1, 4)).unwrap();
    log.purge_upto(LogId::new(1, 1, 4)).unwrap();
    // Everything is purged: the next entry must be purged + 1.
    let log = refused(dir.path(), log, &["expected index 5", "got 7"], |l| {
        let e = l.append([(LogId::new(1, 1, 7), &b"x"[..])]).unwrap_err();
        assert!(matches!(
            e,
            RaftError::Engine(raft_mmap_log::Error::NonConsecutive {
                expected: 5,
                got: 7
            })
        ));
        e
    });
    let mut log = log;
    append_ids(&mut log, &[LogId::new(2, 1, 5)]);

    // A snapshot ahead of the log: the log continues after it.
    log.install_snapshot(LogId::new(3, 1, 10), Vec::new())
        .unwrap();
    let log = refused(dir.path(), log, &["expected index 11", "got 12"], |l| {
        l.append([(LogId::new(3, 1, 12), &b"x"[..])]).unwrap_err()
    });
    let mut log = log;
    append_ids(&mut log, &[LogId::new(3, 1, 11)]);

    // A fresh log that starts with a snapshot.
    let dir2 = tempfile::tempdir().unwrap();
    let mut log2 = open(dir2.path());
    log2.install_snapshot(LogId::new(2, 1, 20), Vec::new())
        .unwrap();
    let log2 = refused(dir2.path(), log2, &["expected index 21", "got 0"], |l| {
        l.append([(LogId::new(3, 1, 0), &b"x"[..])]).unwrap_err()
    });
    drop(log2);
}

#[test]
fn commit_must_name_a_log_id_the_log_holds_or_purged() {
    let dir = tempfile::tempdir().unwrap();
    let rules = Rules {
        purge_requires_commit: false,
        ..Rules::default()
    };
    let mut log = Log::open_with_rules(dir.path(), cfg(), rules).unwrap();
    let ids: Vec<LogId> = (0..=4)
        .map(|i| LogId::new(1, 0, i))
        .chain([LogId::new(2, 0, 5)])
        .collect();
    append_ids(&mut log, &ids);
    // Past the end, though lower than the last log id 2-0-5.
    let log = refused(dir.path(), log, &["1-0-7", "nothing"], |l| {
        let e = l.commit(LogId::new(1, 0, 7)).unwrap_err();
        assert!(matches!(
            state_err(e.clone()),
            StateError::LogIdMismatch { index: 7, .. }
        ));
        e
    });
    drop(log);
    let mut log = Log::open_with_rules(dir.path(), cfg(), rules).unwrap();
    // Index 4 holds 1-0-4, not 1-1-4.
    log = refused(dir.path(), log, &["1-1-4", "1-0-4"], |l| {
        l.commit(LogId::new(1, 1, 4)).unwrap_err()
    });
    drop(log);
    let mut log = Log::open_with_rules(dir.path(), cfg(), rules).unwrap();
    log.purge_upto(LogId::new(1, 0, 3)).unwrap();
    append_ids(&mut log, &[LogId::new(3, 0, 6)]);
    // Purged (at or below the purged log id) is accepted.
    log.commit(LogId::new(1, 0, 2)).unwrap();
    log.commit(LogId::new(1, 0, 3)).unwrap();
    drop(log);
    let log = Log::open_with_rules(dir.path(), cfg(), rules).unwrap();
    // At a purged index but above the purged log id: the log never held it.
    let log = refused(dir.path(), log, &["2-0-3", "1-0-3"], |l| {
        l.commit(LogId::new(2, 0, 3)).unwrap_err()
    });
    drop(log);
    let mut log = Log::open_with_rules(dir.path(), cfg(), rules).unwrap();
    log.commit(LogId::new(2, 0, 5)).unwrap();
    log.commit(LogId::new(3, 0, 6)).unwrap();
    assert_eq!(log.state().committed, Some(LogId::new(3, 0, 6)));
}

/// With 4 KiB segments meta values may use 1024 bytes as a checkpoint body: 32 bytes of head,
/// 12 per item. Kept for the fixed values: vote 17, committed 24, purged 24, snapshot meta
/// 24 + 4 (log id, empty blob), so user data may encode to 1024 - 32 - 5 * 12 - 93 = 839
/// bytes: `Some` tag 1, length 4, 834 bytes.
const MAX_USER_DATA: usize = 834;

#[test]
fn user_data_leaves_room_for_vote_commit_purge() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let log = refused(dir.path(), log, &["839"], |l| {
        let e = l
            .save_user_data(Some(vec![0; MAX_USER_DATA + 1]))
            .unwrap_err();
        assert!(
            matches!(state_err(e.clone()), StateError::MetaNoRoom { .. }),
            "{e}"
        );
        e
    });
    let mut log = log;
    log.save_user_data(Some(vec![7; MAX_USER_DATA])).unwrap();
    log.save_vote(Vote::new(1, 1, false)).unwrap();
    log.save_vote(Vote::new(u64::MAX, u64::MAX, true)).unwrap();
    let ids: Vec<LogId> = (1..=5).map(|i| LogId::new(1, 1, i)).collect();
    append_ids(&mut log, &ids);
    log.commit(LogId::new(1, 1, 4)).unwrap();
    log.purge_upto(LogId::new(1, 1, 3)).unwrap();
    log.install_snapshot(LogId::new(1, 1, 4), Vec::new())
        .unwrap();
    // No room left for a snapshot blob.
    let log = refused(dir.path(), log, &["snapshot"], |l| {
        let e = l
            .install_snapshot(LogId::new(1, 1, 5), vec![1])
            .unwrap_err();
        assert!(
            matches!(state_err(e.clone()), StateError::MetaNoRoom { .. }),
            "{e}"
        );
        e
    });
    let mut log = log;
    // Shrinking the user data makes room for a blob.
    log.save_user_data(Some(vec![7; MAX_USER_DATA - 100]))
        .unwrap();
    log.install_snapshot(LogId::new(1, 1, 5), vec![1; 100])
        .unwrap();
    log.sync().unwrap();
    drop(log);
    let log = open(dir.path());
    assert_eq!(log.state().user_data.as_ref().map(Vec::len), Some(734));
}

#[test]
fn errors_print_values_with_display() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    let ids: Vec<LogId> = (0..=4)
        .map(|i| LogId::new(1, 0, i))
        .chain([LogId::new(2, 0, 5)])
        .collect();
    append_ids(&mut log, &ids);
    let log = refused(dir.path(), log, &["2-0-5", "3-0-6"], |l| {
        l.commit(LogId::new(3, 0, 6)).unwrap_err()
    });
    let log = refused(dir.path(), log, &["none", "2-0-5"], |l| {
        l.purge_upto(LogId::new(2, 0, 5)).unwrap_err()
    });
    let mut log = log;
    log.save_vote(Vote::new(5, 1, true)).unwrap();
    let log = refused(dir.path(), log, &["T5-N1", "T4-N1"], |l| {
        l.save_vote(Vote::new(4, 1, true)).unwrap_err()
    });
    drop(log);
}

#[test]
fn state_errors_carry_typed_values() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = RaftLog::<RaftTypes>::open(dir.path(), Config::default()).unwrap();
    log.save_vote(Vote::new(5, 1, false)).unwrap();
    match log.save_vote(Vote::new(5, 2, false)) {
        Err(RaftError::State(StateError::VoteConflict { saved, given })) => {
            assert_eq!(
                (saved, given),
                (Vote::new(5, 1, false), Vote::new(5, 2, false))
            );
        }
        other => panic!("expected VoteConflict, got {other:?}"),
    }
    log.append([(LogId::new(2, 0, 0), &b"a"[..])]).unwrap();
    match log.commit(LogId::new(1, 0, 7)) {
        Err(RaftError::State(StateError::LogIdMismatch {
            index,
            stored,
            given,
            ..
        })) => assert_eq!((index, stored, given), (7, None, LogId::new(1, 0, 7))),
        other => panic!("expected LogIdMismatch, got {other:?}"),
    }
}
