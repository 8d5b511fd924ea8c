//! Short runs of the `raft_rs_multi` example: 3 raft-rs nodes × 8 or 64 regions, each node on
//! one shared log; 2,000 keys hashed to the regions, node 3 stopped and restarted from its log
//! mid-run, a region created on first contact and destroyed (gone from every log, holding no
//! segment); every region agrees on every node and holds every acknowledged key.
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

use std::path::Path;

use raft_mmap_log::groups::Groups;
use scenario::{Options, Report};

const KEYS: u64 = 2_000;

fn run(regions: u64, compact_keep: Option<u64>) -> Report {
    let tmp = tempfile::tempdir().unwrap();
    let o = Options {
        regions,
        keys: KEYS,
        window: 128,
        compact_keep,
    };
    let r = scenario::run::<ours::SharedLog>(tmp.path(), &o).expect("cluster run");
    assert!(r.problems.is_empty(), "{:#?}", r.problems);
    assert_eq!(r.acked, KEYS);
    // The restarted node found every region in its log as it left it.
    assert_eq!(r.stopped_last.len() as u64, regions, "{r:#?}");
    assert_eq!(r.recovered, r.stopped_last, "{r:#?}");
    assert!(r.recovered.values().all(|&last| last > 1), "{r:#?}");
    // Each node created the regions it did not campaign in when their first message came
    // (node 3 before its restart; after it, only the region created later, unless node 3 is
    // the one that campaigns in it: regions' first campaigns go round the nodes).
    for id in [1, 2] {
        assert!(r.created_on_contact[&id] >= regions / 2, "{r:#?}");
    }
    let campaigner = (r.destroyed - 1) % 3 + 1;
    assert_eq!(
        r.created_on_contact[&3],
        u64::from(campaigner != 3),
        "{r:#?}"
    );
    assert!(r.destroyed_gone, "{r:#?}");
    for node in 1..=3 {
        destroyed_region_holds_nothing(tmp.path(), node, regions, r.destroyed);
    }
    let applied: Vec<u64> = r.applied.values().copied().collect();
    assert!(applied.windows(2).all(|w| w[0] == w[1]), "{r:#?}");
    r
}

/// Node `node`'s shared log, reopened, holds the regions `1..=regions` and nothing of the
/// destroyed one: no group, no state, no entry pinning a segment.
fn destroyed_region_holds_nothing(base: &Path, node: u64, regions: u64, destroyed: u64) {
    let dir = base.join(format!("node-{node}")).join("log");
    let log = Groups::open(&dir, ours::shared_config()).expect("reopen a node's log");
    let all: Vec<u64> = (1..=regions).collect();
    assert_eq!(log.ids(), all, "node {node}");
    // Groups with live entries (a region reset to a snapshot may have none).
    let pinning: Vec<u64> = log.oldest_groups(usize::MAX).iter().map(|u| u.id).collect();
    assert!(
        pinning.iter().all(|id| all.contains(id)),
        "node {node}: the groups holding segments: {pinning:?}"
    );
    let g = log.group(destroyed);
    assert_eq!(g.last_index(), None, "node {node}");
    // The Raft layer's meta values (hard state, commit, purge, user data, snapshot).
    assert!((1..=5).all(|k| g.meta(k).is_none()), "node {node}");
}

#[test]
fn regions_converge_after_a_node_restarts_from_its_shared_log() {
    let r = run(64, None);
    assert_eq!(r.snapshots, 0, "{r:#?}");
}

/// 8 regions compact to their last 5 applied entries: the regions that moved on while node 3
/// was down send it snapshots, installed while the other regions keep writing.
#[test]
fn a_restarted_node_installs_snapshots_while_other_regions_write() {
    let r = run(8, Some(5));
    assert!(r.snapshots >= 1, "{r:#?}");
}
