//! 3 nodes × 16 Raft groups in one process: each node keeps every group in ONE shared log
//! (`raft_mmap_log::groups::Groups`) and runs an `openraft::Raft` per group over
//! `MmapLogStore::for_group`; the nodes talk over ONE TCP connection per node pair
//! (127.0.0.1), which carries every group's RPCs and routes them by group id.
//!
//! Keys are hashed to groups and written through each group's leader. Node 3 is stopped, more
//! keys are written, node 3 reopens its shared log (every group recovers) and catches up
//! while every group keeps taking writes, installing snapshots for the groups whose leaders
//! purged what it missed. Each group is initialized on one node; the others start it on its
//! first request. An extra group, written first, is removed at the end (its Raft shut down
//! and its log store dropped on every node, then `Groups::remove_group`): the old segments
//! it alone kept are freed. The example checks that every group converged and every
//! acknowledged key is on every node, and exits non-zero otherwise.
//!
//! ```text
//! cargo run --release --features openraft --example multi_cluster -- --groups 16 --keys 16000
//! ```
//!
//! Options: `--groups N` (default 16), `--keys N` (default 16,000), `--more N` (written while
//! a node is down, default 8,000), `--during N` (written while it catches up, at least;
//! default 8,000), `--workers N` (writes in flight in all, default 64), `--snapshot-every N`
//! (entries between snapshots, 0 = never, default 200), `--scratch-keys N` (default 2,000),
//! `--segment-kib N` (default 1024), `--dir PATH` (keep the node directories there instead
//! of a temporary directory).

#[cfg(feature = "openraft")]
#[path = "multi_cluster/mod.rs"]
#[allow(dead_code)]
mod multi_cluster;

#[cfg(not(feature = "openraft"))]
fn main() {
    eprintln!("this example needs the `openraft` feature: --features openraft");
}

#[cfg(feature = "openraft")]
fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use multi_cluster::scenario::{run, Options};

    let mut o = Options {
        groups: 16,
        keys: 16_000,
        more: 8_000,
        during: 8_000,
        workers: 64,
        snapshot_every: 200,
        scratch_keys: 2_000,
        segment_bytes: 1 << 20,
    };
    let mut dir: Option<std::path::PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--groups" => o.groups = val()?.parse::<u64>()?.max(1),
            "--keys" => o.keys = val()?.parse()?,
            "--more" => o.more = val()?.parse()?,
            "--during" => o.during = val()?.parse()?,
            "--workers" => o.workers = val()?.parse::<u64>()?.max(1),
            "--snapshot-every" => o.snapshot_every = val()?.parse()?,
            "--scratch-keys" => o.scratch_keys = val()?.parse()?,
            "--segment-kib" => o.segment_bytes = val()?.parse::<u64>()? << 10,
            "--dir" => dir = Some(val()?.into()),
            "-h" | "--help" => {
                println!(
                    "multi_cluster [--groups N] [--keys N] [--more N] [--during N] [--workers N] \
                     [--snapshot-every N] [--scratch-keys N] [--segment-kib N] [--dir PATH]"
                );
                return Ok(());
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let tmp = tempfile::tempdir()?;
    let base = dir.unwrap_or_else(|| tmp.path().to_path_buf());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let r = rt.block_on(run(&base, &o))?;

    let rate = |n: u64, d: std::time::Duration| n as f64 / d.as_secs_f64().max(1e-9);
    println!("log directories:   {}", base.display());
    println!(
        "groups:            {} on 3 nodes, one shared log per node",
        o.groups
    );
    println!(
        "elected in:        {:?}, groups led per node {:?}",
        r.elect, r.leaders
    );
    println!(
        "started on demand: {:?} (groups per node)",
        r.created_on_demand
    );
    println!(
        "write {:>7} keys: {:?} ({:.0} writes/s, {} in flight, p50 {:?}, p99 {:?})",
        o.keys,
        r.write1,
        rate(o.keys, r.write1),
        o.workers,
        r.latency1.0,
        r.latency1.1
    );
    println!("stopped:           node {}", r.stopped);
    println!(
        "write {:>7} more: {:?} ({:.0} writes/s, 2 of 3 nodes up)",
        o.more,
        r.write2,
        rate(o.more, r.write2)
    );
    println!(
        "restart node {}:    shared log reopened in {:?}, {} groups recovered, node up in {:?}",
        r.stopped, r.reopen, r.recovered_groups, r.restart
    );
    println!(
        "write {:>7} more: {:?} ({:.0} writes/s) while node {} caught up in {:?}",
        r.during,
        r.write3,
        rate(r.during, r.write3),
        r.stopped,
        r.catch_up
    );
    println!(
        "snapshots:         node {} installed snapshots for {} groups ({} while the writes \
         went on)",
        r.stopped,
        r.snapshot_installs.len(),
        r.installs_while_writing
    );
    println!(
        "scratch group {}:  {} keys written first, group removed at the end; segment files \
         per node before -> after {:?}",
        r.scratch, o.scratch_keys, r.segments
    );
    for p in &r.problems {
        println!("PROBLEM: {p}");
    }
    println!(
        "converged:         {}",
        if r.problems.is_empty() { "yes" } else { "NO" }
    );
    if !r.problems.is_empty() {
        return Err(format!("{} problems", r.problems.len()).into());
    }
    Ok(())
}
