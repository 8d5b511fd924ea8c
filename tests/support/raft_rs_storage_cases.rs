//! raft-rs 0.7's own `MemStorage` tests (its `src/storage.rs`), ported to `MmapRaftStorage`,
//! for every engine: each test file that includes this one names the engine in its `engine`
//! module (`Tested`, `open_log`). Each case runs its checks, then reopens the directory and
//! runs them again. Where our storage answers differently from `MemStorage` on purpose, the
//! case says so (see `docs/raft-rs.md`).
// The tests keep raft-rs's style (`let mut e = Entry::default(); e.term = ..`).
#![allow(clippy::field_reassign_with_default)]

use protobuf::Message as PbMessage;
use raft::eraftpb::{ConfState, Entry, HardState};
use raft::{Error as RaftError, GetEntriesContext, Storage, StorageError};
use raft_mmap_log::raft_rs::{MmapRaftStorage, RaftRsError};

use crate::engine::{open_log, Tested};
use crate::helpers::{
    all_entries, new_entry, new_snapshot, open, reopen, size_of, twice, with_entries,
};

#[test]
fn test_storage_term() {
    let ents = vec![new_entry(3, 3), new_entry(4, 4), new_entry(5, 5)];
    let tests = vec![
        (2, Err(RaftError::Store(StorageError::Compacted))),
        (3, Ok(3)),
        (4, Ok(4)),
        (5, Ok(5)),
        (6, Err(RaftError::Store(StorageError::Unavailable))),
    ];
    for (i, (idx, wterm)) in tests.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let storage = with_entries(dir.path(), &ents);
        twice(storage, dir.path(), |storage| {
            let t = storage.term(idx);
            assert_eq!(t, wterm, "#{i}: term({idx})");
            // The dummy entry before a log that never compacted: index 0, term 0.
            assert_eq!(storage.term(0), Ok(0), "#{i}");
        });
    }
}

#[test]
fn test_storage_entries() {
    let ents = vec![
        new_entry(3, 3),
        new_entry(4, 4),
        new_entry(5, 5),
        new_entry(6, 6),
    ];
    let max_u64 = u64::MAX;
    let tests = vec![
        (
            2,
            6,
            max_u64,
            Err(RaftError::Store(StorageError::Compacted)),
        ),
        (3, 4, max_u64, Ok(vec![new_entry(3, 3)])),
        (4, 5, max_u64, Ok(vec![new_entry(4, 4)])),
        (4, 6, max_u64, Ok(vec![new_entry(4, 4), new_entry(5, 5)])),
        (
            4,
            7,
            max_u64,
            Ok(vec![new_entry(4, 4), new_entry(5, 5), new_entry(6, 6)]),
        ),
        // even if maxsize is zero, the first entry should be returned
        (4, 7, 0, Ok(vec![new_entry(4, 4)])),
        // limit to 2
        (
            4,
            7,
            u64::from(size_of(&ents[1]) + size_of(&ents[2])),
            Ok(vec![new_entry(4, 4), new_entry(5, 5)]),
        ),
        (
            4,
            7,
            u64::from(size_of(&ents[1]) + size_of(&ents[2]) + size_of(&ents[3]) / 2),
            Ok(vec![new_entry(4, 4), new_entry(5, 5)]),
        ),
        (
            4,
            7,
            u64::from(size_of(&ents[1]) + size_of(&ents[2]) + size_of(&ents[3]) - 1),
            Ok(vec![new_entry(4, 4), new_entry(5, 5)]),
        ),
        // all
        (
            4,
            7,
            u64::from(size_of(&ents[1]) + size_of(&ents[2]) + size_of(&ents[3])),
            Ok(vec![new_entry(4, 4), new_entry(5, 5), new_entry(6, 6)]),
        ),
        // Ours: past the last index is `Unavailable` (`MemStorage` panics).
        (
            4,
            8,
            max_u64,
            Err(RaftError::Store(StorageError::Unavailable)),
        ),
    ];
    for (i, (lo, hi, maxsize, wentries)) in tests.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let storage = with_entries(dir.path(), &ents);
        twice(storage, dir.path(), |storage| {
            let e = storage.entries(lo, hi, maxsize, GetEntriesContext::empty(false));
            assert_eq!(e, wentries, "#{i}: entries({lo}, {hi}, {maxsize})");
        });
    }
}

/// `max_size` with entries that carry data and context: the same cut as raft-rs's
/// `limit_size` over the same entries, for every limit around the boundaries.
#[test]
fn entries_max_size_matches_limit_size_with_payloads() {
    let ents: Vec<Entry> = (1..=6u64)
        .map(|i| {
            let mut e = new_entry(i, 1 + i / 3);
            e.data = vec![i as u8; (i * 37) as usize].into();
            if i % 2 == 0 {
                e.context = b"ctx".to_vec().into();
                e.set_entry_type(raft::eraftpb::EntryType::EntryConfChange);
            }
            e
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let storage = with_entries(dir.path(), &ents);
    let total: u64 = ents.iter().map(|e| u64::from(size_of(e))).sum();
    twice(storage, dir.path(), |storage| {
        for max in 0..=total + 1 {
            let mut want = ents.clone();
            raft::util::limit_size(&mut want, Some(max));
            let got = storage
                .entries(1, 7, max, GetEntriesContext::empty(false))
                .unwrap();
            assert_eq!(got, want, "max_size {max}");
        }
    });
}

#[test]
fn test_storage_last_index() {
    let ents = vec![new_entry(3, 3), new_entry(4, 4), new_entry(5, 5)];
    let dir = tempfile::tempdir().unwrap();
    let storage = with_entries(dir.path(), &ents);
    let mut storage = twice(storage, dir.path(), |storage| {
        assert_eq!(storage.last_index(), Ok(5));
    });

    storage.append(&[new_entry(6, 5)]).unwrap();
    twice(storage, dir.path(), |storage| {
        assert_eq!(storage.last_index(), Ok(6));
    });
}

#[test]
fn test_storage_first_index() {
    let ents = vec![new_entry(3, 3), new_entry(4, 4), new_entry(5, 5)];
    let dir = tempfile::tempdir().unwrap();
    let storage = with_entries(dir.path(), &ents);
    let mut storage = twice(storage, dir.path(), |storage| {
        assert_eq!(storage.first_index(), Ok(3));
    });
    // Ours: only committed entries may be compacted.
    storage.set_commit(5).unwrap();
    storage.compact(4).unwrap();
    twice(storage, dir.path(), |storage| {
        assert_eq!(storage.first_index(), Ok(4));
        assert_eq!(storage.term(3), Ok(3), "the dummy entry's term");
    });
}

#[test]
fn test_storage_compact() {
    let ents = vec![new_entry(3, 3), new_entry(4, 4), new_entry(5, 5)];
    let tests = vec![(2, 3, 3, 3), (3, 3, 3, 3), (4, 4, 4, 2), (5, 5, 5, 1)];
    for (i, (idx, windex, wterm, wlen)) in tests.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let mut storage = with_entries(dir.path(), &ents);
        // Ours: only committed entries may be compacted (raft-rs compacts applied ones).
        storage.set_commit(5).unwrap();
        storage.compact(idx).unwrap();
        twice(storage, dir.path(), |storage| {
            let index = storage.first_index().unwrap();
            assert_eq!(index, windex, "#{i}: first index");
            let term = if let Ok(v) =
                storage.entries(index, index + 1, 1, GetEntriesContext::empty(false))
            {
                v.first().map_or(0, |e| e.term)
            } else {
                0
            };
            assert_eq!(term, wterm, "#{i}: term");
            let last = storage.last_index().unwrap();
            let len = storage
                .entries(index, last + 1, 100, GetEntriesContext::empty(false))
                .unwrap()
                .len();
            assert_eq!(len, wlen, "#{i}: len");
        });
    }
}

/// Ours: what `MemStorage` would panic on, or what our rules refuse, is an error that
/// changes nothing.
#[test]
fn compact_refusals_change_nothing() {
    let ents = vec![new_entry(3, 3), new_entry(4, 4), new_entry(5, 5)];
    let dir = tempfile::tempdir().unwrap();
    let mut storage = with_entries(dir.path(), &ents);
    storage.set_commit(4).unwrap();
    assert!(matches!(
        storage.compact(7),
        Err(RaftRsError::CompactBeyondLast { index: 7, last: 5 })
    ));
    // Entry 5 is not committed: the Raft layer refuses to drop it.
    assert!(matches!(storage.compact(6), Err(RaftRsError::Log(_))));
    twice(storage, dir.path(), |storage| {
        assert_eq!(storage.first_index(), Ok(3));
        assert_eq!(all_entries(storage), ents);
    });
}

#[test]
fn test_storage_create_snapshot() {
    let ents = vec![new_entry(3, 3), new_entry(4, 4), new_entry(5, 5)];
    let nodes = vec![1, 2, 3];
    let mut conf_state = ConfState::default();
    conf_state.voters = nodes.clone();

    let unavailable = || {
        Err(RaftError::Store(
            StorageError::SnapshotTemporarilyUnavailable,
        ))
    };
    let tests = vec![
        (4, Ok(new_snapshot(4, 4, nodes.clone())), 0, false),
        (5, Ok(new_snapshot(5, 5, nodes.clone())), 5, false),
        // `MemStorage` answers a snapshot at index 6 with term 5 (its index raised to the
        // request); ours cannot describe state it does not have, and asks raft-rs to retry.
        (5, unavailable(), 6, false),
        // `trigger_snap_unavailable`: here the application's snapshot data says so.
        (5, unavailable(), 5, true),
    ];
    for (i, (idx, wresult, windex, trigger)) in tests.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let mut storage = with_entries(dir.path(), &ents);
        let mut hs = HardState::default();
        hs.commit = idx;
        hs.term = idx;
        storage.set_hard_state(&hs).unwrap();
        storage.set_conf_state(conf_state.clone()).unwrap();
        let check = |storage: &Tested| {
            let result = storage.snapshot(windex, 0);
            assert_eq!(result, wresult, "#{i}");
        };
        let set_trigger = |storage: &mut Tested| {
            if trigger {
                storage.set_snapshot_data(Box::new(|_, _| {
                    Err(RaftError::Store(
                        StorageError::SnapshotTemporarilyUnavailable,
                    ))
                }));
            }
        };
        set_trigger(&mut storage);
        check(&storage);
        let mut storage = reopen(storage, dir.path());
        set_trigger(&mut storage);
        check(&storage);
    }
}

/// Ours: the snapshot's data comes from the application, for the meta the storage chose.
#[test]
fn snapshot_data_comes_from_the_application() {
    let dir = tempfile::tempdir().unwrap();
    let mut storage = with_entries(dir.path(), &[new_entry(1, 1), new_entry(2, 2)]);
    storage.set_commit(2).unwrap();
    storage.set_snapshot_data(Box::new(|meta, to| {
        Ok(format!("state at {}/{} for {to}", meta.term, meta.index).into_bytes())
    }));
    let snap = storage.snapshot(1, 7).unwrap();
    assert_eq!(&snap.data[..], b"state at 2/2 for 7");
    assert_eq!(snap.get_metadata().index, 2);
}

#[test]
fn test_storage_append() {
    let ents = vec![new_entry(3, 3), new_entry(4, 4), new_entry(5, 5)];
    let tests = vec![
        (
            vec![new_entry(3, 3), new_entry(4, 4), new_entry(5, 5)],
            Some(vec![new_entry(3, 3), new_entry(4, 4), new_entry(5, 5)]),
        ),
        (
            vec![new_entry(3, 3), new_entry(4, 6), new_entry(5, 6)],
            Some(vec![new_entry(3, 3), new_entry(4, 6), new_entry(5, 6)]),
        ),
        (
            vec![
                new_entry(3, 3),
                new_entry(4, 4),
                new_entry(5, 5),
                new_entry(6, 5),
            ],
            Some(vec![
                new_entry(3, 3),
                new_entry(4, 4),
                new_entry(5, 5),
                new_entry(6, 5),
            ]),
        ),
        // overwrite compacted raft logs is not allowed
        (
            vec![new_entry(2, 3), new_entry(3, 3), new_entry(4, 5)],
            None,
        ),
        // truncate the existing entries and append
        (
            vec![new_entry(4, 5)],
            Some(vec![new_entry(3, 3), new_entry(4, 5)]),
        ),
        // direct append
        (
            vec![new_entry(6, 6)],
            Some(vec![
                new_entry(3, 3),
                new_entry(4, 4),
                new_entry(5, 5),
                new_entry(6, 6),
            ]),
        ),
        // Ours (`MemStorage` panics or takes them): a gap, a term going down, an index that
        // does not follow; each refused with nothing written.
        (vec![new_entry(7, 6)], None),
        (vec![new_entry(4, 2)], None),
        (vec![new_entry(4, 5), new_entry(6, 5)], None),
        // Every entry replaced (the log never compacted: no dummy entry to keep).
        (
            vec![new_entry(3, 7), new_entry(4, 7)],
            Some(vec![new_entry(3, 7), new_entry(4, 7)]),
        ),
    ];
    for (i, (entries, wentries)) in tests.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let mut storage = with_entries(dir.path(), &ents);
        let res = storage.append(&entries);
        let want = match wentries {
            Some(w) => {
                res.unwrap_or_else(|e| panic!("#{i}: {e}"));
                w
            }
            None => {
                res.expect_err(&format!("#{i}: must be refused"));
                ents.clone()
            }
        };
        twice(storage, dir.path(), |storage| {
            assert_eq!(all_entries(storage), want, "#{i}");
        });
    }
}

/// Ours: committed entries are never truncated by a conflicting append.
#[test]
fn append_refuses_to_truncate_committed_entries() {
    let ents = vec![new_entry(3, 3), new_entry(4, 4), new_entry(5, 5)];
    let dir = tempfile::tempdir().unwrap();
    let mut storage = with_entries(dir.path(), &ents);
    storage.set_commit(4).unwrap();
    assert!(storage.append(&[new_entry(4, 6)]).is_err());
    storage.append(&[new_entry(5, 6)]).unwrap();
    twice(storage, dir.path(), |storage| {
        assert_eq!(
            all_entries(storage),
            vec![new_entry(3, 3), new_entry(4, 4), new_entry(5, 6)]
        );
    });
}

#[test]
fn test_storage_apply_snapshot() {
    let nodes = vec![1, 2, 3];
    let dir = tempfile::tempdir().unwrap();
    let mut storage = open(dir.path());

    // Apply snapshot successfully
    let snap = new_snapshot(4, 4, nodes.clone());
    storage.apply_snapshot(&snap).unwrap();

    // Apply snapshot fails due to StorageError::SnapshotOutOfDate
    let snap = new_snapshot(3, 3, nodes.clone());
    let err = storage.apply_snapshot(&snap).unwrap_err();
    assert_eq!(
        RaftError::from(err),
        RaftError::Store(StorageError::SnapshotOutOfDate)
    );

    let mut storage = twice(storage, dir.path(), |storage| {
        assert_eq!(storage.first_index(), Ok(5));
        assert_eq!(storage.last_index(), Ok(4));
        assert_eq!(storage.term(4), Ok(4), "the dummy entry is the snapshot's");
        assert_eq!(
            storage.term(3),
            Err(RaftError::Store(StorageError::Compacted))
        );
        let st = storage.initial_state().unwrap();
        assert_eq!(st.conf_state.voters, nodes);
        assert_eq!((st.hard_state.term, st.hard_state.commit), (4, 4));
        let snap = storage.snapshot(0, 0).unwrap();
        assert_eq!(snap, new_snapshot(4, 4, nodes.clone()));
    });
    assert!(storage
        .apply_snapshot(&new_snapshot(3, 3, vec![1]))
        .is_err());
    // Entries follow the snapshot.
    storage.append(&[new_entry(5, 4)]).unwrap();
    assert!(storage.append(&[new_entry(4, 4)]).is_err());
}

/// Ours: a snapshot the log holds drops the entries after it too (as `MemStorage`'s clear),
/// and its configuration replaces an older one, also across a reopen.
#[test]
fn apply_snapshot_inside_the_log_drops_every_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut storage = with_entries(
        dir.path(),
        &[
            new_entry(1, 1),
            new_entry(2, 1),
            new_entry(3, 2),
            new_entry(4, 2),
        ],
    );
    let mut old = ConfState::default();
    old.voters = vec![1];
    storage.set_conf_state(old).unwrap();
    storage.set_commit(2).unwrap();
    storage
        .apply_snapshot(&new_snapshot(3, 2, vec![1, 2]))
        .unwrap();
    let storage = twice(storage, dir.path(), |storage| {
        assert_eq!(
            (storage.first_index(), storage.last_index()),
            (Ok(4), Ok(3))
        );
        assert_eq!(storage.conf_state().voters, vec![1, 2]);
        assert_eq!(storage.hard_state().commit, 3);
    });
    drop(storage);
    // The crate's tools decode the snapshot meta, vote and configuration of a raft-rs log.
    let report = raft_mmap_log::raft::inspect::verify(dir.path(), &|_| {}).unwrap();
    assert!(
        report.is_sound(),
        "{:?}",
        report.problems().collect::<Vec<_>>()
    );
    assert!(report.raft_checked);
}

/// Ours: the hard state's vote may not change within a term, nor go back.
#[test]
fn hard_state_follows_raft_s_vote_rules() {
    let dir = tempfile::tempdir().unwrap();
    let mut storage = open(dir.path());
    let hs = |term, vote, commit| {
        let mut h = HardState::default();
        h.term = term;
        h.vote = vote;
        h.commit = commit;
        h
    };
    storage.set_hard_state(&hs(2, 0, 0)).unwrap();
    storage.set_hard_state(&hs(2, 3, 0)).unwrap();
    assert!(
        storage.set_hard_state(&hs(2, 1, 0)).is_err(),
        "another vote"
    );
    assert!(storage.set_hard_state(&hs(1, 3, 0)).is_err(), "lower term");
    assert!(matches!(
        storage.set_hard_state(&hs(2, 3, 1)),
        Err(RaftRsError::CommitNotInLog { index: 1, .. })
    ));
    storage.append(&[new_entry(1, 2)]).unwrap();
    storage.set_hard_state(&hs(3, 0, 1)).unwrap();
    twice(storage, dir.path(), |storage| {
        assert_eq!(storage.initial_state().unwrap().hard_state, hs(3, 0, 1));
    });
}

/// Ours: `apply_snapshot` installs the snapshot, then saves its configuration. A crash
/// between the two leaves the older configuration stored, stamped with an older snapshot's
/// index: the snapshot's configuration wins at reopen.
#[test]
fn a_snapshot_s_configuration_wins_over_an_older_stored_one() {
    use raft_mmap_log::raft_rs::{EntryId, StoredConf};

    let dir = tempfile::tempdir().unwrap();
    let mut old = ConfState::default();
    old.voters = vec![1];
    let mut log = open_log(dir.path());
    log.save_user_data(Some(StoredConf {
        snapshot_index: 0,
        conf_state: old.write_to_bytes().unwrap(),
    }))
    .unwrap();
    let snap = new_snapshot(5, 2, vec![1, 2, 3]);
    let meta = snap.get_metadata().write_to_bytes().unwrap();
    log.install_snapshot(EntryId::new(2, 5), meta).unwrap();
    log.sync().unwrap();
    let storage = MmapRaftStorage::from_log(log).unwrap();
    let storage = twice(storage, dir.path(), |storage| {
        assert_eq!(storage.conf_state().voters, vec![1, 2, 3]);
        assert_eq!(storage.snapshot(0, 0).unwrap(), snap);
    });
    // A configuration set after the snapshot wins over it, even with nothing committed since.
    let mut storage = storage;
    storage.set_conf_state(old.clone()).unwrap();
    twice(storage, dir.path(), |storage| {
        assert_eq!(storage.conf_state(), &old);
    });
}

/// Ours: data of `DEFAULT_SHARE_MIN` bytes or more is handed out sharing the map (two reads
/// give the same bytes, not two copies), and stays valid after the storage is dropped;
/// shorter data, or any with sharing off, is copied.
#[test]
fn large_entry_data_shares_the_map() {
    use raft_mmap_log::raft_rs::DEFAULT_SHARE_MIN;

    let dir = tempfile::tempdir().unwrap();
    let mut big = new_entry(1, 1);
    big.data = vec![7u8; DEFAULT_SHARE_MIN].into();
    let mut small = new_entry(2, 1);
    small.data = vec![8u8; DEFAULT_SHARE_MIN - 1].into();
    let mut storage = with_entries(dir.path(), &[big.clone(), small.clone()]);
    let read = |s: &Tested| s.entries(1, 3, None, GetEntriesContext::empty(false));
    let (a, b) = (read(&storage).unwrap(), read(&storage).unwrap());
    assert_eq!(a, vec![big.clone(), small.clone()]);
    assert_eq!(a[0].data.as_ptr(), b[0].data.as_ptr(), "shared, not copied");
    assert_ne!(a[1].data.as_ptr(), b[1].data.as_ptr(), "copied");
    storage.share_data_from(None);
    let c = read(&storage).unwrap();
    assert_ne!(
        a[0].data.as_ptr(),
        c[0].data.as_ptr(),
        "copied when sharing is off"
    );
    storage.sync().unwrap();
    drop(storage);
    assert_eq!(a[0], big, "the shared bytes outlive the storage");
    let storage = open(dir.path());
    assert_eq!(read(&storage).unwrap(), vec![big, small]);
}
