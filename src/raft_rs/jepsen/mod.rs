//! A Jepsen-style test of a 3-node raft-rs cluster on this log (each node on a `Store`, or
//! three regions per node on one shared log, as a multi-Raft node runs them), in one thread, deterministic
//! for a seed: every node's log on its own simulated file system (`io::sim`), messages through
//! a simulated network that delays, drops and partitions, and faults that no test on real
//! processes can make deterministic: a **power cut** of one node (or of two at once), which
//! drops that node's unsynced effects as the crash models do and restarts it from the durable
//! image; a restart; a partition. Clients append unique values to a few keys and read whole
//! lists (Jepsen's list-append), through the log; the history (invoke and complete ticks,
//! outcome: ok, failed, or indeterminate after a timeout) is checked by `history::check`:
//! every acknowledged append is on every node once, in one order all agree on, nothing
//! unwritten appears, and the reads and appends are linearizable.
//!
//! Two deliberately broken variants must fail the checker: a node that acknowledges its
//! Ready before syncing it (`Persist::Unsynced`), and a node whose restart brings back an
//! older copy of its files, losing its last synced entries (`Persist::StaleRestart`).
//!
//! `RML_JEPSEN_SEEDS` (default 8) and `RML_JEPSEN_TICKS` (default 20,000 ticks of simulated
//! time per seed) make longer campaigns. A failing seed prints the violations, the history
//! around them, and keeps the nodes' directories.

mod node;
mod sim;

use super::history::{self, Outcome};
use sim::Sim;

const NODES: u64 = 3;
const KEYS: u64 = 6;
const CLIENTS: u64 = 4;
/// Ticks a client waits for its operation before calling it indeterminate.
const TIMEOUT: u64 = 60;

/// How a node makes its Ready durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Persist {
    /// Written, then synced before the Ready's messages go out (`persist_ready`; for a
    /// shared log, every region's Ready written, then one sync).
    Synced,
    /// Broken: written, never synced by the Ready loop.
    Unsynced,
    /// Broken: synced, but a restart brings back the copy of the files taken at the node's
    /// previous restart (its entries and votes since then are gone).
    StaleRestart,
}

/// Runs one seed for `ticks` ticks of faults, then settles; the checker's verdict.
fn run(
    seed: u64,
    ticks: u64,
    persist: Persist,
    regions: usize,
) -> (Sim, Result<(), Vec<history::Violation>>) {
    let mut sim = Sim::new(seed, persist, regions);
    for _ in 0..ticks {
        sim.step(true);
    }
    sim.settle();
    let verdict = history::check(&sim.history, &sim.final_state());
    if std::env::var("RML_JEPSEN_DEBUG").is_ok() {
        let ok =
            |f: fn(&Outcome) -> bool| sim.history.events.iter().filter(|e| f(&e.outcome)).count();
        eprintln!(
            "seed {seed} {persist:?} {regions} region(s): {} events, {} ok, {} failed, {} indeterminate; lives {:?}; dead {:?}; lists {:?}; {}",
            sim.history.events.len(),
            ok(|o| matches!(o, Outcome::Ok(_))),
            ok(|o| matches!(o, Outcome::Failed)),
            ok(|o| matches!(o, Outcome::Indeterminate)),
            sim.nodes.iter().map(|n| n.dirs.len()).collect::<Vec<_>>(),
            sim.nodes.iter().map(|n| n.dead).collect::<Vec<_>>(),
            sim.final_state().iter().map(|(_, kv)| kv.values().map(Vec::len).sum::<usize>()).collect::<Vec<_>>(),
            match &verdict { Ok(()) => "ok".to_string(), Err(v) => format!("{} violations, first: {}", v.len(), v[0]) },
        );
    }
    (sim, verdict)
}

/// A seed's run is the same every time: the same history, the same final state.
#[test]
fn a_seed_reproduces_its_run() {
    for regions in [1, 3] {
        let (a, _) = run(5, 2000, Persist::Synced, regions);
        let (b, _) = run(5, 2000, Persist::Synced, regions);
        assert_eq!(a.history.events, b.history.events, "{regions} region(s)");
        assert_eq!(a.final_state(), b.final_state(), "{regions} region(s)");
    }
}

/// Whether the checker found the log at fault: a violation other than a malformed event (a
/// fault of the harness, which must not count as a catch).
fn caught(verdict: Result<(), Vec<history::Violation>>) -> bool {
    verdict.is_err_and(|v| {
        v.iter()
            .any(|x| !matches!(x, history::Violation::MalformedEvent { .. }))
    })
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn a_cluster_under_power_cuts_restarts_and_partitions_loses_no_acknowledged_append() {
    campaign(1);
}

#[test]
fn a_multi_raft_cluster_on_shared_logs_under_the_same_faults_loses_no_acknowledged_append() {
    campaign(3);
}

/// Every seed of the sound variant with `regions` regions per node: no violation, and a
/// real amount of acknowledged work.
fn campaign(regions: usize) {
    let (seeds, ticks) = (env("RML_JEPSEN_SEEDS", 8), env("RML_JEPSEN_TICKS", 20_000));
    for seed in 0..seeds {
        let (sim, verdict) = run(seed, ticks, Persist::Synced, regions);
        let acked = sim
            .history
            .events
            .iter()
            .filter(|e| matches!(e.outcome, Outcome::Ok(_)))
            .count();
        if let Err(violations) = verdict {
            let at: Vec<usize> = violations.iter().flat_map(|v| v.events()).collect();
            let around = history::describe_around(&sim.history, &at, 5);
            let dirs = sim.keep_dirs();
            panic!(
                "seed {seed}, {regions} region(s): {} violations, first: {}\n{around}\nnode directories kept: {dirs:?}",
                violations.len(),
                violations[0]
            );
        }
        assert!(
            acked > 100,
            "seed {seed}: only {acked} operations acknowledged"
        );
    }
}

#[test]
fn the_checker_catches_a_log_that_acknowledges_before_syncing() {
    let caught = (0..32u64).any(|seed| caught(run(seed, 3000, Persist::Unsynced, 1).1));
    assert!(caught, "no seed of the unsynced variant was caught");
}

#[test]
fn the_checker_catches_a_node_whose_restart_drops_its_last_synced_entries() {
    let caught = (0..32u64).any(|seed| caught(run(seed, 3000, Persist::StaleRestart, 1).1));
    assert!(caught, "no seed of the stale-restart variant was caught");
}
