//! A 3-node raft-rs cluster on `MmapRaftStorage`, in one process: one thread per node running
//! a Ready loop, messages over channels, each node on its own log directory.
//!
//! Elects a leader, writes `--keys` keys (default 10,000), stops a follower, writes `--more`
//! keys (default 2,000), restarts the follower from its log directory and waits for it to catch
//! up, then checks that all three state machines agree and prints the timings.
//!
//! ```text
//! cargo run --release --features raft-rs --example raft_rs_cluster -- --keys 10000 --more 2000
//! ```
//!
//! Options: `--keys N`, `--more N`, `--window N` (puts in flight, default 256),
//! `--compact-keep N` (nodes compact their logs to the last N applied entries: the restarted
//! follower then catches up from a snapshot), `--dir PATH` (keep the node directories there
//! instead of a temporary directory).

#[path = "raft_rs_cluster/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::time::Duration;

use raft_mmap_log::Config;

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn main() -> Result<(), harness::Error> {
    let mut keys = 10_000u64;
    let mut more = 2_000u64;
    let mut window = 256usize;
    let mut compact_keep: Option<u64> = None;
    let mut dir: Option<std::path::PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--keys" => keys = val()?.parse()?,
            "--more" => more = val()?.parse()?,
            "--window" => window = val()?.parse::<usize>()?.max(1),
            "--compact-keep" => compact_keep = Some(val()?.parse()?),
            "--dir" => dir = Some(val()?.into()),
            "-h" | "--help" => {
                println!("raft_rs_cluster [--keys N] [--more N] [--window N] [--compact-keep N] [--dir PATH]");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let tmp = tempfile::tempdir()?;
    let base = dir.unwrap_or_else(|| tmp.path().to_path_buf());
    let log_config = Config {
        segment_size: 8 << 20,
        ..Config::default()
    };
    let r = harness::run(&base, keys, more, window, log_config, compact_keep)?;

    println!("3 raft-rs nodes on MmapRaftStorage in {}", base.display());
    println!(
        "leader elected               {:>10.1?}  (node {})",
        r.election, r.leader
    );
    println!(
        "{keys:>6} puts, 3 nodes up     {:>10.1?}  {:>9.0} puts/s",
        r.first_writes,
        rate(keys, r.first_writes)
    );
    println!(
        "{more:>6} puts, node {} down   {:>10.1?}  {:>9.0} puts/s",
        r.stopped,
        r.more_writes,
        rate(more, r.more_writes)
    );
    println!(
        "node {} reopened              {:>10.1?}",
        r.stopped, r.reopen
    );
    println!(
        "node {} caught up             {:>10.1?}",
        r.stopped, r.catch_up
    );
    for (id, n) in &r.nodes {
        println!(
            "node {id}: applied {} commit {} log {}..={} term {} keys {} digest {:016x} snapshots {}",
            n.applied, n.commit, n.first, n.last, n.term, n.keys, n.digest, n.snapshots
        );
    }
    if !r.converged {
        return Err("the nodes' state machines differ".into());
    }
    println!("all nodes applied the same {} keys", keys + more);
    Ok(())
}
