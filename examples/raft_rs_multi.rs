//! 3 raft-rs nodes × many regions (Raft groups) in one process, each node on one shared log
//! (`raft_mmap_log::groups::Groups`, a region per group): one thread per node drives all its
//! regions with one Ready loop (every region's Ready written, one sync for all, then each
//! region advanced), messages over channels.
//!
//! Creates `--regions` regions (default 64), writes `--keys` keys (default 20,000) hashed to
//! the regions, stops node 3 after 40% of them and restarts it from its log after 80% (it
//! reopens the shared log and recovers every region), creates one more region on first
//! contact and destroys it, then checks that every region agrees on every node and holds
//! every acknowledged key, and that no entry was written twice (no Ready asked to persist an
//! entry the log already held); exits non-zero otherwise.
//!
//! ```text
//! cargo run --release --features raft-rs --example raft_rs_multi -- --regions 64 --keys 20000
//! ```
//!
//! Options: `--regions N`, `--keys N`, `--window N` (puts in flight, default 256),
//! `--compact-keep N` (regions compact their logs to their last N applied entries, so the
//! restarted node catches up from snapshots; default 50, 0 for never), `--dir PATH` (keep the
//! node directories there instead of a temporary directory).

#[path = "raft_rs_multi/backend.rs"]
mod backend;
#[path = "raft_rs_multi/cluster.rs"]
#[allow(dead_code)] // latency figures, used by `compare cluster`
mod cluster;
#[path = "raft_rs_cluster/network.rs"]
mod network;
#[path = "raft_rs_multi/node.rs"]
mod node;
#[path = "raft_rs_multi/ours.rs"]
#[allow(dead_code)]
mod ours;
#[path = "raft_rs_multi/scenario.rs"]
mod scenario;
#[path = "raft_rs_cluster/state_machine.rs"]
#[allow(dead_code)]
mod state_machine;

use backend::Error;

fn main() -> Result<(), Error> {
    let mut o = scenario::Options {
        regions: 64,
        keys: 20_000,
        window: 256,
        compact_keep: Some(50),
    };
    let mut dir: Option<std::path::PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--regions" => o.regions = val()?.parse::<u64>()?.max(1),
            "--keys" => o.keys = val()?.parse()?,
            "--window" => o.window = val()?.parse::<usize>()?.max(1),
            "--compact-keep" => o.compact_keep = Some(val()?.parse::<u64>()?).filter(|&k| k > 0),
            "--dir" => dir = Some(val()?.into()),
            "-h" | "--help" => {
                println!("raft_rs_multi [--regions N] [--keys N] [--window N] [--compact-keep N] [--dir PATH]");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let tmp = tempfile::tempdir()?;
    let base = dir.unwrap_or_else(|| tmp.path().to_path_buf());
    let r = scenario::run::<ours::SharedLog>(&base, &o)?;

    println!(
        "3 raft-rs nodes × {} regions, each node on one shared log, in {}",
        o.regions,
        base.display()
    );
    println!("leaders of all regions elected  {:>10.1?}", r.election);
    for (name, took, n) in &r.phases {
        let rate = *n as f64 / took.as_secs_f64().max(1e-9);
        println!("{n:>6} puts, {name:<17} {took:>10.1?}  {rate:>9.0} puts/s");
    }
    println!(
        "node {} reopened its log          {:>10.1?}  ({} regions recovered, {} when it stopped)",
        r.stopped,
        r.reopen,
        r.recovered.len(),
        r.stopped_last.len()
    );
    println!(
        "node {} caught up in all regions  {:>10.1?}  ({} snapshots restored)",
        r.stopped, r.catch_up, r.snapshots
    );
    for (id, applied) in &r.applied {
        println!(
            "node {id}: applied {applied} entries in all, {} regions created on first contact, {} Ready rounds synced",
            r.created_on_contact[id], r.syncs[id]
        );
    }
    println!(
        "region {} created on first contact and destroyed: {}",
        r.destroyed,
        if r.destroyed_gone {
            "gone from every node's log"
        } else {
            "STILL IN A LOG"
        }
    );
    let lost: Vec<_> = r
        .stopped_last
        .iter()
        .filter(|(id, last)| r.recovered.get(id) != Some(last))
        .collect();
    let mut problems = r.problems.clone();
    if !lost.is_empty() {
        problems.push(format!("node {} reopened other logs: {lost:?}", r.stopped));
    }
    if !r.destroyed_gone {
        problems.push(format!("region {} was not removed", r.destroyed));
    }
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("problem: {p}");
        }
        return Err(format!("{} problems", problems.len()).into());
    }
    println!(
        "every region agrees on every node and holds all {} acknowledged keys",
        r.acked
    );
    Ok(())
}
