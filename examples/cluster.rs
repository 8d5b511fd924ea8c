//! A 3-node openraft cluster of a key-value state machine on `MmapLogStore`, in one process.
//!
//! Elects a leader, writes `--keys` keys (default 10,000), stops a follower, writes `--more`
//! keys (default 2,000), restarts the follower from its log directory and waits for it to
//! catch up, then checks that all three state machines agree.
//!
//! ```text
//! cargo run --release --features openraft --example cluster -- --keys 10000 --more 2000
//! ```
//!
//! Options: `--keys N`, `--more N`, `--workers N` (requests in flight, default 64),
//! `--dir PATH` (keep the node directories there instead of a temporary directory).

#[cfg(feature = "openraft")]
#[path = "cluster/harness.rs"]
#[allow(dead_code)]
mod harness;

#[cfg(not(feature = "openraft"))]
fn main() {
    eprintln!("this example needs the `openraft` feature: --features openraft");
}

#[cfg(feature = "openraft")]
fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut keys = 10_000u64;
    let mut more = 2_000u64;
    let mut workers = 64u64;
    let mut dir: Option<std::path::PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--keys" => keys = val()?.parse()?,
            "--more" => more = val()?.parse()?,
            "--workers" => workers = val()?.parse::<u64>()?.max(1),
            "--dir" => dir = Some(val()?.into()),
            "-h" | "--help" => {
                println!("cluster [--keys N] [--more N] [--workers N] [--dir PATH]");
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
    let r = rt.block_on(harness::run(&base, keys, more, workers))?;

    let rate = |n: u64, d: std::time::Duration| n as f64 / d.as_secs_f64().max(1e-9);
    println!("log directories:   {}", base.display());
    println!("leader:            node {}", r.leader);
    println!("elected in:        {:?}", r.elect);
    println!(
        "write {:>7} keys: {:?} ({:.0} writes/s, {} in flight)",
        r.keys,
        r.write1,
        rate(r.keys, r.write1),
        workers
    );
    println!("stopped follower:  node {}", r.stopped);
    println!(
        "write {:>7} more: {:?} ({:.0} writes/s, 2 of 3 nodes up)",
        r.more,
        r.write2,
        rate(r.more, r.write2)
    );
    println!(
        "restart node {}:    log reopened in {:?}, caught up in {:?}",
        r.stopped, r.reopen, r.catch_up
    );
    for (id, n) in &r.nodes {
        println!(
            "node {id}: commit index {:?}, last log index {:?}, applied {:?}, {} keys",
            n.committed, n.last, n.applied, n.keys
        );
    }
    println!(
        "converged:         {}",
        if r.converged { "yes" } else { "NO" }
    );
    if !r.converged {
        return Err("the nodes did not converge".into());
    }
    Ok(())
}
