//! A short run of the `raft_rs_multi` example: 3 raft-rs nodes × 64 regions, each node on one
//! shared log; 2,000 keys hashed to the regions, node 3 stopped and restarted from its log
//! mid-run, a region created on first contact and destroyed; every region agrees on every
//! node and holds every acknowledged key.
#![cfg(feature = "raft-rs")]

#[path = "../examples/raft_rs_multi/backend.rs"]
mod backend;
#[path = "../examples/raft_rs_multi/cluster.rs"]
#[allow(dead_code)]
mod cluster;
#[path = "../examples/raft_rs_cluster/network.rs"]
mod network;
#[path = "../examples/raft_rs_multi/node.rs"]
mod node;
#[path = "../examples/raft_rs_multi/ours.rs"]
#[allow(dead_code)]
mod ours;
#[path = "../examples/raft_rs_multi/scenario.rs"]
mod scenario;
#[path = "../examples/raft_rs_cluster/state_machine.rs"]
#[allow(dead_code)]
mod state_machine;

use scenario::{Options, Report};

const REGIONS: u64 = 64;
const KEYS: u64 = 2_000;

fn run(compact_keep: Option<u64>) -> Report {
    let tmp = tempfile::tempdir().unwrap();
    let o = Options {
        regions: REGIONS,
        keys: KEYS,
        window: 128,
        compact_keep,
    };
    let r = scenario::run::<ours::SharedLog>(tmp.path(), &o).expect("cluster run");
    assert!(r.problems.is_empty(), "{:#?}", r.problems);
    assert_eq!(r.acked, KEYS);
    // The restarted node found every region in its log as it left it.
    assert_eq!(r.stopped_last.len() as u64, REGIONS, "{r:#?}");
    assert_eq!(r.recovered, r.stopped_last, "{r:#?}");
    assert!(r.recovered.values().all(|&last| last > 1), "{r:#?}");
    // Each node created the regions it did not campaign in when their first message came
    // (node 3 before its restart; after it, only the region created later).
    for id in [1, 2] {
        assert!(r.created_on_contact[&id] >= REGIONS / 2, "{r:#?}");
    }
    assert!(r.created_on_contact[&3] >= 1, "{r:#?}");
    assert!(r.destroyed_gone, "{r:#?}");
    let applied: Vec<u64> = r.applied.values().copied().collect();
    assert!(applied.windows(2).all(|w| w[0] == w[1]), "{r:#?}");
    r
}

#[test]
fn regions_converge_after_a_node_restarts_from_its_shared_log() {
    let r = run(None);
    assert_eq!(r.snapshots, 0, "{r:#?}");
}

/// Regions compact to their last 5 applied entries: the regions that moved on while node 3
/// was down send it snapshots, installed while the other regions keep writing.
#[test]
fn a_restarted_node_installs_snapshots_while_other_regions_write() {
    let r = run(Some(5));
    assert!(r.snapshots >= 1, "{r:#?}");
}
