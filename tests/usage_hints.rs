//! The compaction hint and the byte count it reads: `log_bytes` grows with appends, a purge
//! that lets segments go lowers it, and `needs_compaction` says yes exactly past the
//! configured threshold (never with `None`), for `Store`, `Groups` and `RaftLog`.

use raft_mmap_log::groups::Groups;
use raft_mmap_log::raft::{LogId, RaftLog, RaftTypes};
use raft_mmap_log::{Config, Store};

const SEGMENT: u64 = 64 * 1024;

fn config(threshold: Option<u64>) -> Config {
    Config {
        segment_size: SEGMENT,
        compaction_threshold: threshold,
        ..Config::default()
    }
}

#[test]
fn a_store_needs_compaction_past_its_threshold_and_not_after_a_purge() {
    let tmp = tempfile::tempdir().unwrap();
    let threshold = 4 * SEGMENT;
    let mut log = Store::open(tmp.path(), config(Some(threshold))).unwrap();
    let payload = [9u8; 1000];
    let mut i = 0u64;
    let mut last = log.log_bytes();
    while !log.needs_compaction() {
        log.append(i, &payload).unwrap();
        i += 1;
        assert!(
            log.log_bytes() >= last,
            "log_bytes went down without a purge"
        );
        last = log.log_bytes();
        assert!(i < 10_000, "never said yes");
    }
    assert!(log.log_bytes() >= threshold);
    // One entry before: below the threshold.
    assert!(i * 1000 > 3 * SEGMENT, "said yes after {i} entries");
    log.purge_to(i - 10).unwrap();
    log.sync().unwrap();
    assert!(log.log_bytes() < threshold, "{} bytes", log.log_bytes());
    assert!(!log.needs_compaction());
}

#[test]
fn no_threshold_never_needs_compaction() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = Store::open(tmp.path(), config(None)).unwrap();
    for i in 0..500u64 {
        log.append(i, &[1u8; 1000]).unwrap();
    }
    assert!(log.log_bytes() > 7 * SEGMENT);
    assert!(!log.needs_compaction());
}

#[test]
fn groups_and_raft_logs_report_the_shared_log() {
    let tmp = tempfile::tempdir().unwrap();
    let groups = Groups::open(tmp.path(), config(Some(3 * SEGMENT))).unwrap();
    let mut raft = RaftLog::<RaftTypes, _>::for_group(groups.group(7)).unwrap();
    assert!(!groups.needs_compaction() && !raft.needs_compaction());
    let before = groups.estimated_memory();
    for g in 1..=4u64 {
        let h = groups.group(g);
        h.append_batch((0..50u64).map(|i| (i, &[3u8; 1000][..])))
            .unwrap();
    }
    assert!(groups.log_bytes() >= 3 * SEGMENT);
    assert!(groups.needs_compaction() && raft.needs_compaction());
    assert!(groups.estimated_memory() > before);
    assert!(raft.estimated_memory() >= groups.estimated_memory());
    raft.append([(LogId::new(1, 1, 0), &b"x"[..])]).unwrap();
}
