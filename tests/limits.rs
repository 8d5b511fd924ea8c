//! The largest entry is a function of the configuration alone: every segment keeps room for a
//! checkpoint whose meta values are at their budget (a quarter of a segment), so two logs with
//! the same `segment_size` accept the same entries whatever meta values each holds.

use raft_mmap_log::{Config, Error, Store};

const SEGMENT: u64 = 64 << 10;

fn config() -> Config {
    Config {
        segment_size: SEGMENT,
        prepare_ahead: false,
        ..Config::default()
    }
}

/// A meta value that brings the meta values to exactly their budget (a checkpoint body of
/// `SEGMENT / 4` bytes: a 32-byte head, then a 12-byte item head and the value).
fn budget_value() -> Vec<u8> {
    vec![0x5A; (SEGMENT / 4) as usize - 32 - 12]
}

#[test]
fn two_logs_with_different_metas_accept_the_same_largest_entry() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let c = tempfile::tempdir().unwrap();
    let mut leader = Store::open(a.path(), config()).unwrap();
    let mut follower = Store::open(b.path(), config()).unwrap();
    let mut other = Store::open(c.path(), config()).unwrap();
    // The leader holds no meta value; the followers hold some user data.
    follower.put_meta(4, &[7u8; 1000]).unwrap();
    other.put_meta(5, &[9u8; 3000]).unwrap();
    let max = leader.max_payload();
    assert_eq!(max, follower.max_payload());
    assert_eq!(max, other.max_payload());

    let big = vec![0xC3; max];
    leader.append(1, &big).unwrap();
    leader.append(2, &big).unwrap();
    let wire = leader.reader().view().frames(1..3).unwrap().to_vec();
    follower.append_frames(&wire).unwrap();
    other.append_batch([(1, &big[..]), (2, &big[..])]).unwrap();
    for s in [&follower, &other] {
        assert_eq!(s.reader().view().get(2), Some(&big[..]));
    }
    // One byte more is refused everywhere, before anything is written.
    let over = vec![1u8; max + 1];
    for s in [&mut leader, &mut follower, &mut other] {
        let err = s.append(3, &over).unwrap_err();
        assert!(
            matches!(err, Error::EntryTooLarge { index: 3, .. }),
            "{err}"
        );
        assert_eq!(s.next_index(), 3);
    }
}

/// Meta values at their budget and entries of the largest size: every rollover writes the
/// full checkpoint and then the entry, in the same segment; one meta byte more is refused.
#[test]
fn metas_at_the_budget_and_largest_entries_always_fit() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), config()).unwrap();
    let max = store.max_payload();
    store.put_meta(1, &budget_value()).unwrap();
    let mut over = budget_value();
    over.push(0);
    let err = store.put_meta(1, &over).unwrap_err();
    assert!(matches!(err, Error::MetaTooLarge { key: 1, .. }), "{err}");
    assert_eq!(store.max_payload(), max);
    let big = |i: u64| vec![i as u8; max];
    for i in 1..=5 {
        store.append(i, &big(i)).unwrap();
    }
    let wire = store.reader().view().frames(1..6).unwrap().to_vec();
    store.sync().unwrap();
    drop(store);
    let mut store = Store::open(dir.path(), config()).unwrap();
    assert_eq!(store.next_index(), 6);
    assert_eq!(store.meta(1), Some(&budget_value()[..]));
    for i in 1..=5 {
        assert_eq!(store.reader().view().get(i), Some(&big(i)[..]), "entry {i}");
    }
    // The same entries as frames, into a log whose metas are at the budget too.
    let other = tempfile::tempdir().unwrap();
    let mut follower = Store::open(other.path(), config()).unwrap();
    follower.put_meta(9, &budget_value()).unwrap();
    follower.append_frames(&wire).unwrap();
    store.append(6, &big(6)).unwrap();
}
