//! `remove_meta`: a removed key is gone for readers at once and after a reopen, stays gone
//! once the segments holding its value and its removal are purged, touches no other key or
//! group, works on logs written by older format versions, and clears the Raft layer's user
//! data.

use std::path::Path;

use raft_mmap_log::groups::Groups;
use raft_mmap_log::raft::{LogId, RaftLog, RaftTypes};
use raft_mmap_log::{Config, Store};

fn config() -> Config {
    Config {
        segment_size: 16 * 1024,
        ..Config::default()
    }
}

#[test]
fn a_removed_key_is_gone_at_once_and_after_a_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let mut log = Store::open(tmp.path(), config()).unwrap();
        log.put_meta(1, b"one").unwrap();
        log.put_meta(2, b"two").unwrap();
        log.append(0, b"entry").unwrap();
        let reader = log.reader();
        let before = reader.view();
        assert!(log.remove_meta(1).unwrap());
        assert!(!log.remove_meta(1).unwrap(), "removed twice");
        assert!(!log.remove_meta(9).unwrap(), "never set");
        assert_eq!(log.meta(1), None);
        assert_eq!(reader.view().meta(1), None);
        // A view taken before keeps the value it had.
        assert_eq!(before.meta(1), Some(&b"one"[..]));
        log.sync().unwrap();
    }
    let mut log = Store::open(tmp.path(), config()).unwrap();
    assert_eq!(log.meta(1), None);
    assert_eq!(log.meta(2), Some(&b"two"[..]));
    assert_eq!(log.reader().view().get(0), Some(&b"entry"[..]));
    // Set again after the removal: the new value wins after a reopen.
    log.put_meta(1, b"uno").unwrap();
    log.sync().unwrap();
    drop(log);
    let log = Store::open(tmp.path(), config()).unwrap();
    assert_eq!(log.meta(1), Some(&b"uno"[..]));
}

/// The value was set in the first segment and removed in the second; purging past both
/// (their files go) leaves the key removed: no later checkpoint carries it.
#[test]
fn a_removal_survives_purges_past_the_segments_that_held_the_value_and_the_removal() {
    let tmp = tempfile::tempdir().unwrap();
    let payload = [7u8; 1500];
    {
        let mut log = Store::open(tmp.path(), config()).unwrap();
        log.put_meta(5, b"value").unwrap();
        log.put_meta(6, b"kept").unwrap();
        let mut i = 0u64;
        let seg = |log: &Store| log.position().0;
        let first_segment = seg(&log);
        while seg(&log) == first_segment {
            log.append(i, &payload).unwrap();
            i += 1;
        }
        assert!(log.remove_meta(5).unwrap());
        let removal_segment = seg(&log);
        while seg(&log) == removal_segment {
            log.append(i, &payload).unwrap();
            i += 1;
        }
        log.purge_to(i - 1).unwrap();
        log.sync().unwrap();
    }
    let log = Store::open(tmp.path(), config()).unwrap();
    assert_eq!(log.meta(5), None);
    assert_eq!(log.meta(6), Some(&b"kept"[..]));
    let segments = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "seg")
        })
        .count();
    assert_eq!(segments, 1, "the purged segments are gone");
}

#[test]
fn a_group_removes_its_own_key_only() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let groups = Groups::open(tmp.path(), config()).unwrap();
        for g in 1..=3u64 {
            groups.group(g).put_meta(4, &g.to_le_bytes()).unwrap();
        }
        assert!(groups.group(2).remove_meta(4).unwrap());
        assert!(!groups.group(2).remove_meta(4).unwrap());
        groups.sync().unwrap();
    }
    let groups = Groups::open(tmp.path(), config()).unwrap();
    assert_eq!(groups.group(1).meta(4), Some(1u64.to_le_bytes().to_vec()));
    assert_eq!(groups.group(2).meta(4), None);
    assert_eq!(groups.group(3).meta(4), Some(3u64.to_le_bytes().to_vec()));
}

/// A log written by each older format version (the committed golden files) takes a removal:
/// its active segment is sealed and the removal goes into a new, current-version one.
#[test]
fn logs_of_older_format_versions_take_a_removal() {
    for version in [1, 2] {
        let src =
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/v{version}/store"));
        let tmp = tempfile::tempdir().unwrap();
        for e in std::fs::read_dir(&src).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "seg") {
                std::fs::copy(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
            }
        }
        let golden = Config {
            segment_size: 4096,
            prepare_ahead: false,
            ..Config::default()
        };
        let (first, next) = {
            let mut log = Store::open(tmp.path(), golden.clone()).unwrap();
            assert!(log.meta(100).is_some(), "v{version}");
            assert!(log.remove_meta(100).unwrap());
            log.sync().unwrap();
            (log.first_index(), log.next_index())
        };
        let log = Store::open(tmp.path(), golden).unwrap();
        assert_eq!(log.meta(100), None, "v{version}");
        assert_eq!(
            log.meta(200),
            Some(&b"set with the purge"[..]),
            "v{version}"
        );
        assert_eq!((log.first_index(), log.next_index()), (first, next));
        let view = log.reader().view();
        for i in first..next {
            assert!(
                view.get_checked(i).unwrap().is_some(),
                "v{version} entry {i}"
            );
        }
    }
}

#[test]
fn clearing_raft_user_data_removes_its_meta_value() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let mut log = RaftLog::<RaftTypes>::open(tmp.path(), config()).unwrap();
        log.append([(LogId::new(1, 1, 0), &b"e"[..])]).unwrap();
        log.save_user_data(Some(b"app state".to_vec())).unwrap();
        log.sync().unwrap();
        assert!(log
            .store()
            .meta(raft_mmap_log::raft::META_USER_DATA)
            .is_some());
        log.save_user_data(None).unwrap();
        assert_eq!(log.state().user_data, None);
        assert_eq!(log.store().meta(raft_mmap_log::raft::META_USER_DATA), None);
        log.sync().unwrap();
    }
    let log = RaftLog::<RaftTypes>::open(tmp.path(), config()).unwrap();
    assert_eq!(log.state().user_data, None);
    assert_eq!(log.store().meta(raft_mmap_log::raft::META_USER_DATA), None);
}
