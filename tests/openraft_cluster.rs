//! A short run of the `cluster` example: 3 nodes on `MmapLogStore`, 500 keys, a follower
//! stopped, 200 more keys, the follower restarted from its directory; all nodes converge.
#![cfg(feature = "openraft")]

#[path = "../examples/cluster/harness.rs"]
#[allow(dead_code)]
mod harness;

#[test]
fn three_nodes_converge_after_a_follower_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let r = rt
        .block_on(harness::run(tmp.path(), 500, 200, 32))
        .expect("cluster run");
    assert!(r.converged, "{r:#?}");
    assert_eq!(r.nodes.len(), 3);
    let leader = r.nodes[&r.leader];
    for (id, n) in &r.nodes {
        assert_eq!(n.keys, 700, "node {id}: {r:#?}");
        assert_eq!(n.applied, leader.applied, "node {id} applied: {r:#?}");
        assert!(
            n.committed.is_some() && n.last >= n.committed,
            "node {id}: {r:#?}"
        );
    }
    // The restarted node replayed its own log and received the rest from the leader's.
    assert!(r.nodes[&r.stopped].last >= leader.applied, "{r:#?}");
}
