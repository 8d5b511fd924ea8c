//! A short run of the `raft_rs_cluster` example: 3 raft-rs nodes on `MmapRaftStorage`, 300
//! puts, a follower stopped, 100 more, the follower restarted from its directory; all nodes
//! converge.
#![cfg(feature = "raft-rs")]

#[path = "../examples/raft_rs_cluster/harness.rs"]
#[allow(dead_code)]
mod harness;

use raft_mmap_log::Config;

fn log_config() -> Config {
    Config {
        segment_size: 256 << 10,
        ..Config::default()
    }
}

#[test]
fn three_nodes_converge_after_a_follower_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let r = harness::run(tmp.path(), 300, 100, 64, log_config(), None).expect("cluster run");
    assert!(r.converged, "{r:#?}");
    assert_eq!(r.nodes.len(), 3);
    let leader = &r.nodes[&r.leader];
    for (id, n) in &r.nodes {
        assert_eq!(n.keys, 400, "node {id}: {r:#?}");
        assert_eq!(n.applied, leader.applied, "node {id}: {r:#?}");
        assert!(
            n.commit <= n.last && n.applied <= n.last,
            "node {id}: {r:#?}"
        );
    }
    // The restarted node found the log it had when it stopped, replayed it, and took the rest
    // from the leader's.
    assert!(r.stopped_last > 0, "{r:#?}");
    assert_eq!(r.reopened_last, r.stopped_last, "{r:#?}");
    let s = &r.nodes[&r.stopped];
    assert!(s.last >= leader.applied && s.first == 1, "{r:#?}");
    assert_eq!(s.snapshots, 0, "{r:#?}");
}

/// The same with compaction: every node keeps only its last 20 applied entries, so the
/// restarted follower is behind the leader's first index and catches up from a snapshot
/// (`Storage::snapshot` on the leader, `apply_snapshot` on the follower).
#[test]
fn a_restarted_follower_catches_up_from_a_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let r = harness::run(tmp.path(), 300, 100, 64, log_config(), Some(20)).expect("cluster run");
    assert!(r.converged, "{r:#?}");
    let leader = &r.nodes[&r.leader];
    for (id, n) in &r.nodes {
        assert_eq!(n.keys, 400, "node {id}: {r:#?}");
        assert_eq!(n.applied, leader.applied, "node {id}: {r:#?}");
        assert!(n.first > 1, "node {id} compacted: {r:#?}");
    }
    let s = &r.nodes[&r.stopped];
    assert!(s.snapshots >= 1, "{r:#?}");
    assert!(
        s.first > r.stopped_last,
        "its log restarts after the snapshot: {r:#?}"
    );
}
