//! A short run of the `multi_cluster` example (its modules, through `#[path]`): 3 nodes × 4
//! groups, one shared log per node, one TCP connection per node pair; groups started on a
//! peer's first request; a node stopped and restarted (its groups recover from its log and
//! install snapshots while every group keeps taking writes); a group removed from every node
//! (Raft shut down, log store dropped, then `remove_group`), its segments freed; every group
//! converges and every acknowledged key is on every node.
#![cfg(feature = "openraft")]

#[path = "../examples/multi_cluster/mod.rs"]
#[allow(dead_code)]
mod multi_cluster;

use multi_cluster::scenario::{run, Options};

#[test]
fn four_groups_on_three_nodes_converge_after_a_restart_and_a_removal() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let o = Options {
        groups: 4,
        keys: 800,
        more: 800,
        during: 800,
        workers: 16,
        snapshot_every: 20,
        scratch_keys: 300,
        segment_bytes: 64 << 10,
    };
    let r = rt.block_on(run(tmp.path(), &o)).expect("cluster run");
    assert!(r.problems.is_empty(), "{r:#?}");
    // Every group (the scratch one too) came back on the restarted node from its log, and
    // some caught up by snapshot while the writes went on.
    assert_eq!(r.recovered_groups, 5, "{r:#?}");
    assert!(r.installs_while_writing > 0, "{r:#?}");
    // The groups initialized elsewhere were started on each node by a peer's request.
    assert!(r.created_on_demand.values().all(|&n| n > 0), "{r:#?}");
    // Removing the scratch group (the oldest data) freed segments on every node.
    assert!(
        r.segments.values().all(|(before, after)| after < before),
        "{r:#?}"
    );
}
