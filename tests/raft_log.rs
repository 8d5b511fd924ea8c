//! The typed Raft layer: every state rule, and scenarios that end in a reopen.

use std::path::Path;

use raft_mmap_log::raft::{LogId, RaftError, RaftLog, RaftState, RaftTypes, StateError, Vote};
use raft_mmap_log::{Config, Error};

type Log = RaftLog<RaftTypes>;

fn cfg() -> Config {
    Config {
        segment_size: 8192,
        ..Config::default()
    }
}

fn open(dir: &Path) -> Log {
    Log::open(dir, cfg()).unwrap()
}

fn id(term: u64, index: u64) -> LogId {
    LogId::new(term, 1, index)
}

fn payload(term: u64, index: u64) -> Vec<u8> {
    format!("t{term}-i{index}-")
        .repeat((index % 7 + 1) as usize)
        .into_bytes()
}

fn append(log: &mut Log, term: u64, range: std::ops::Range<u64>) {
    let data: Vec<(LogId, Vec<u8>)> = range.map(|i| (id(term, i), payload(term, i))).collect();
    log.append(data.iter().map(|(i, p)| (*i, &p[..]))).unwrap();
}

/// Every entry in the log, as (log id, payload).
fn entries(log: &Log) -> Vec<(LogId, Vec<u8>)> {
    let snap = log.reader().view();
    snap.read(..)
        .map(|r| r.map(|(i, p)| (i, p.to_vec())))
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Reopens and checks that state and entries are what they were.
fn reopen_same(dir: &Path, log: Log) -> Log {
    let state = log.state().clone();
    let ents = entries(&log);
    let snap_state = log.reader().view().state().unwrap();
    assert_eq!(snap_state, state, "reader state equals writer state");
    drop(log);
    let log = open(dir);
    assert_eq!(log.state(), &state, "state after reopen");
    assert_eq!(entries(&log), ents, "entries after reopen");
    log
}

fn state_err(e: RaftError<RaftTypes>) -> StateError<RaftTypes> {
    match e {
        RaftError::State(s) => s,
        other => panic!("expected a state error, got {other}"),
    }
}

/// Runs `op`, expects a state error whose text contains both `a` and `b`, then checks that
/// nothing was written (a reopen shows the log unchanged).
fn refused(
    dir: &Path,
    mut log: Log,
    a: &str,
    b: &str,
    op: impl FnOnce(&mut Log) -> RaftError<RaftTypes>,
) -> Log {
    log.sync().unwrap();
    let before: RaftState<RaftTypes> = log.state().clone();
    let ents = entries(&log);
    let pos = log.store().position();
    let err = op(&mut log);
    let text = err.to_string();
    assert!(
        text.contains(a) && text.contains(b),
        "{text:?} lacks {a:?} or {b:?}"
    );
    assert_eq!(log.state(), &before);
    assert_eq!(log.store().position(), pos, "nothing written");
    drop(log);
    let log = open(dir);
    assert_eq!(log.state(), &before);
    assert_eq!(entries(&log), ents);
    log
}

#[test]
fn vote_reversal_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    log.save_vote(Vote::new(5, 2, false)).unwrap();
    let log = refused(dir.path(), log, "T5-N2", "T4-N3 (committed)", |l| {
        let e = l.save_vote(Vote::new(4, 3, true)).unwrap_err();
        assert!(matches!(
            state_err(e.clone()),
            StateError::VoteReversal { .. }
        ));
        e
    });
    let mut log = log;
    log.save_vote(Vote::new(5, 2, true)).unwrap();
    let log = refused(
        dir.path(),
        log,
        "T5-N2 (committed)",
        "lower vote T5-N2",
        |l| l.save_vote(Vote::new(5, 2, false)).unwrap_err(),
    );
    assert_eq!(log.state().vote, Some(Vote::new(5, 2, true)));
}

#[test]
fn log_id_reversal_and_gaps_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    append(&mut log, 3, 0..5);
    let log = refused(dir.path(), log, "3-1-4", "2-1-5", |l| {
        let e = l.append([(id(2, 5), &b"x"[..])]).unwrap_err();
        assert!(matches!(
            state_err(e.clone()),
            StateError::LogIdReversal { .. }
        ));
        e
    });
    let log = refused(dir.path(), log, "expected index 6", "got 7", |l| {
        let e = l
            .append([(id(3, 5), &b"x"[..]), (id(3, 7), b"y")])
            .unwrap_err();
        assert!(matches!(
            e,
            RaftError::Engine(Error::NonConsecutive {
                expected: 6,
                got: 7
            })
        ));
        e
    });
    let log = refused(dir.path(), log, "expected index 5", "got 7", |l| {
        l.append([(id(3, 7), &b"y"[..])]).unwrap_err()
    });
    assert_eq!(log.state().last, Some(id(3, 4)));
}

#[test]
fn commit_rules() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    append(&mut log, 1, 0..10);
    let mut log = refused(dir.path(), log, "1-1-9", "1-1-10", |l| {
        let e = l.commit(id(1, 10)).unwrap_err();
        assert!(matches!(
            state_err(e.clone()),
            StateError::CommitBeyondLast { .. }
        ));
        e
    });
    log.commit(id(1, 6)).unwrap();
    let log = refused(dir.path(), log, "1-1-6", "1-1-5", |l| {
        let e = l.commit(id(1, 5)).unwrap_err();
        assert!(matches!(
            state_err(e.clone()),
            StateError::CommitReversal { .. }
        ));
        e
    });
    assert_eq!(log.state().committed, Some(id(1, 6)));
}

#[test]
fn truncate_and_purge_rules() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    append(&mut log, 1, 0..20);
    log.commit(id(1, 12)).unwrap();
    let mut log = refused(dir.path(), log, "1-1-12", "1-1-15", |l| {
        let e = l.purge_upto(id(1, 15)).unwrap_err();
        assert!(matches!(
            state_err(e.clone()),
            StateError::PurgeBeyondCommitted { .. }
        ));
        e
    });
    log.purge_upto(id(1, 8)).unwrap();
    let log = refused(dir.path(), log, "1-1-8", "1-1-3", |l| {
        let e = l.truncate_after(Some(id(1, 3))).unwrap_err();
        assert!(matches!(
            state_err(e.clone()),
            StateError::TruncateBelowPurged { .. }
        ));
        e
    });
    let log = refused(dir.path(), log, "1-1-12", "1-1-10", |l| {
        let e = l.truncate_after(Some(id(1, 10))).unwrap_err();
        assert!(matches!(
            state_err(e.clone()),
            StateError::TruncateBelowCommitted { .. }
        ));
        e
    });
    let log = refused(dir.path(), log, "1-1-14", "7-1-14", |l| {
        let e = l.truncate_after(Some(LogId::new(7, 1, 14))).unwrap_err();
        assert!(matches!(
            state_err(e.clone()),
            StateError::LogIdMismatch { index: 14, .. }
        ));
        e
    });
    let mut log = refused(dir.path(), log, "1-1-19", "1-1-25", |l| {
        // Both rules are broken; the last-entry rule is checked first.
        let e = l.purge_upto(id(1, 25)).unwrap_err();
        assert!(matches!(
            state_err(e.clone()),
            StateError::PurgeBeyondCommitted { .. } | StateError::PurgeBeyondLast { .. }
        ));
        e
    });
    log.commit(id(1, 19)).unwrap();
    let log = refused(dir.path(), log, "1-1-19", "1-1-25", |l| {
        let e = l.purge_upto(id(1, 25)).unwrap_err();
        assert!(matches!(
            state_err(e.clone()),
            StateError::PurgeBeyondLast { .. }
        ));
        e
    });
    drop(log);
}

#[test]
fn append_sync_recover() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    append(&mut log, 1, 0..500);
    log.commit(id(1, 499)).unwrap();
    log.sync().unwrap();
    let log = reopen_same(dir.path(), log);
    assert_eq!(log.state().last, Some(id(1, 499)));
    assert_eq!(entries(&log).len(), 500);
    let segs = log.store().reader().view().segment_count();
    assert!(segs > 3, "{segs} segments");
}

#[test]
fn truncation_survives_recovery_and_new_term_appends() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    append(&mut log, 1, 0..300);
    log.commit(id(1, 100)).unwrap();
    log.truncate_after(Some(id(1, 150))).unwrap();
    assert_eq!(log.state().last, Some(id(1, 150)));
    append(&mut log, 2, 151..200);
    log.sync().unwrap();
    let log = reopen_same(dir.path(), log);
    let ents = entries(&log);
    assert_eq!(ents.len(), 200);
    assert_eq!(ents[150], (id(1, 150), payload(1, 150)));
    assert_eq!(ents[151], (id(2, 151), payload(2, 151)));
    assert_eq!(log.state().last, Some(id(2, 199)));
}

#[test]
fn latest_vote_wins_on_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    for term in 1..200 {
        log.save_vote(Vote::new(term, term % 3, term % 2 == 0))
            .unwrap();
        append(&mut log, term, (term - 1) * 3..term * 3);
    }
    log.sync().unwrap();
    let log = reopen_same(dir.path(), log);
    assert_eq!(log.state().vote, Some(Vote::new(199, 1, false)));
}

#[test]
fn snapshot_and_compaction_survive_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    append(&mut log, 1, 0..1000);
    log.commit(id(1, 900)).unwrap();
    let files_before = std::fs::read_dir(dir.path()).unwrap().count();
    log.install_snapshot(id(1, 800), b"membership: 1,2,3".to_vec())
        .unwrap();
    log.sync().unwrap();
    let files_after = std::fs::read_dir(dir.path()).unwrap().count();
    assert!(
        files_after < files_before,
        "{files_before} -> {files_after}"
    );
    let log = reopen_same(dir.path(), log);
    let st = log.state();
    assert_eq!(st.purged, Some(id(1, 800)));
    assert_eq!(st.committed, Some(id(1, 900)));
    assert_eq!(st.last, Some(id(1, 999)));
    let snap = st.snapshot.clone().unwrap();
    assert_eq!(snap.last_log_id, id(1, 800));
    assert_eq!(snap.data, b"membership: 1,2,3");
    assert_eq!(entries(&log).first().unwrap().0, id(1, 801));

    // A snapshot ahead of the log (a lagging follower): everything goes, the log continues
    // after it, and the state survives purging every segment that recorded it.
    let mut log = log;
    log.install_snapshot(LogId::new(3, 2, 5000), b"later".to_vec())
        .unwrap();
    assert_eq!(log.state().last, Some(LogId::new(3, 2, 5000)));
    assert!(entries(&log).is_empty());
    log.append([(LogId::new(3, 2, 5001), &b"next"[..])])
        .unwrap();
    log.sync().unwrap();
    let log = reopen_same(dir.path(), log);
    assert_eq!(log.state().committed, Some(LogId::new(3, 2, 5000)));
    assert_eq!(log.state().purged, Some(LogId::new(3, 2, 5000)));
}

#[test]
fn purge_everything_keeps_purged_id_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    append(&mut log, 2, 0..100);
    log.commit(id(2, 99)).unwrap();
    log.purge_upto(id(2, 99)).unwrap();
    log.sync().unwrap();
    let mut log = reopen_same(dir.path(), log);
    assert_eq!(log.state().purged, Some(id(2, 99)));
    assert_eq!(log.state().last, Some(id(2, 99)));
    // Append after purge continues at the next index.
    append(&mut log, 2, 100..110);
    log.sync().unwrap();
    let log = reopen_same(dir.path(), log);
    assert_eq!(entries(&log).len(), 10);
}

#[test]
fn empty_log_opens_clean() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    assert_eq!(log.state(), &RaftState::default());
    let log = reopen_same(dir.path(), log);
    assert!(log.reader().view().is_empty());
}

#[test]
fn truncate_everything_then_append() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    append(&mut log, 1, 0..10);
    log.truncate_after(None).unwrap();
    assert_eq!(log.state().last, None);
    append(&mut log, 2, 0..3);
    log.sync().unwrap();
    let log = reopen_same(dir.path(), log);
    assert_eq!(entries(&log)[0].0, id(2, 0));
}

#[test]
fn large_entries() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        segment_size: 1 << 20,
        ..Config::default()
    };
    let mut log = Log::open(dir.path(), config.clone()).unwrap();
    // Each entry fills most of a segment (the largest is `Config::max_payload`, less the
    // 24-byte log id in front of the payload).
    let len = config.max_payload() as u32 - 24;
    let big: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    log.append([(id(1, 0), &big[..]), (id(1, 1), &big[..])])
        .unwrap();
    let too_big = vec![0u8; 1 << 20];
    let err = log.append([(id(1, 2), &too_big[..])]).unwrap_err();
    assert!(
        matches!(
            err,
            RaftError::Engine(Error::EntryTooLarge { index: 2, .. })
        ),
        "{err}"
    );
    log.sync().unwrap();
    drop(log);
    let log = Log::open(dir.path(), config).unwrap();
    let snap = log.reader().view();
    assert_eq!(snap.get(1).unwrap().unwrap().1, &big[..]);
    assert_eq!(snap.next_index(), 2);
}

#[test]
fn user_data_survives() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    log.save_user_data(Some(b"cluster-id: 42".to_vec()))
        .unwrap();
    append(&mut log, 1, 0..400);
    log.sync().unwrap();
    let mut log = reopen_same(dir.path(), log);
    assert_eq!(
        log.state().user_data.as_deref(),
        Some(&b"cluster-id: 42"[..])
    );
    log.save_user_data(None).unwrap();
    log.sync().unwrap();
    let log = reopen_same(dir.path(), log);
    assert_eq!(log.state().user_data, None);
}

#[test]
fn flush_callback_reports_durable_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    let (tx, rx) = std::sync::mpsc::channel();
    append(&mut log, 1, 0..50);
    log.save_vote(Vote::new(1, 1, true)).unwrap();
    log.flush(move |r| tx.send(r.is_ok()).unwrap()).unwrap();
    assert!(rx.recv().unwrap());
    reopen_same(dir.path(), log);
}
