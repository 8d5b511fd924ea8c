//! A leader and a follower replicating a Raft log over TCP on 127.0.0.1 with frames: the leader
//! appends `--entries` entries of `--entry-size` bytes while a sender thread ships them
//! (`RaftView::frames`, one `write_vectored` per batch from the leader's map); the follower
//! stores each batch with `RaftLog::append_frames`, flushes it and acknowledges the durable
//! index; the leader commits what both hold. At the end the follower's log is compared with
//! the leader's frame byte for frame byte; a difference exits non-zero.
//!
//! ```text
//! cargo run --release --example replicate                       # 1,000,000 x 256 B
//! cargo run --release --example replicate -- --restart-at 400000
//! cargo run --release --example replicate -- --prefill          # catch-up: ship a full log
//! ```
//!
//! Options: `--entries N`, `--entry-size B`, `--append-batch K`, `--ship-batch K`,
//! `--restart-at N` (the follower drops its log and connection after N entries, reopens and
//! resumes from its last durable index), `--prefill`, `--dir PATH` (keep both logs there).
//! The loops are in `examples/replicate/loops.rs`; `docs/replication.md` explains them.

#[path = "replicate/loops.rs"]
mod loops;

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut o = loops::Options::default();
    let mut dir: Option<std::path::PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--entries" => o.entries = val()?.parse()?,
            "--entry-size" => o.entry_size = val()?.parse()?,
            "--append-batch" => o.append_batch = val()?.parse::<u64>()?.max(1),
            "--ship-batch" => o.ship_batch = val()?.parse::<u64>()?.max(1),
            "--restart-at" => o.restart_at = Some(val()?.parse()?),
            "--prefill" => o.prefill = true,
            "--copy-receive" => o.copy_receive = true,
            "--sendfile" => o.sendfile = true,
            "--dir" => dir = Some(val()?.into()),
            "-h" | "--help" => {
                println!(
                    "replicate [--entries N] [--entry-size B] [--append-batch K] \
                     [--ship-batch K] [--restart-at N] [--prefill] [--copy-receive] [--sendfile] [--dir PATH]"
                );
                return Ok(());
            }
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    let tmp = tempfile::tempdir()?;
    let root = dir.unwrap_or_else(|| tmp.path().to_path_buf());
    let (l, f) = (root.join("leader"), root.join("follower"));
    let r = loops::run(&l, &f, &o)?;
    if let Some(p) = r.prefill {
        println!(
            "prefill: {} entries appended and synced in {:.2?}",
            o.entries, p
        );
    }
    for (name, s) in [("leader", &r.leader), ("follower", &r.follower)] {
        let (user, kernel) = s.copies_per_entry();
        println!(
            "{name:8}: {} entries in {:.2?}: {:.0} entries/s, {:.1} MB/s of frames; \
             copies per entry: {user:.2} by us, {kernel:.2} by the kernel",
            s.entries,
            s.elapsed,
            s.entries_per_sec(),
            s.mb_per_sec(),
        );
    }
    println!(
        "end to end: {} entries durable on both in {:.2?} ({:.0} entries/s, {:.1} MB/s); \
         follower restarts: {}; logs equal",
        o.entries,
        r.end_to_end,
        o.entries as f64 / r.end_to_end.as_secs_f64(),
        r.follower.wire_bytes as f64 / 1e6 / r.end_to_end.as_secs_f64(),
        r.follower.restarts
    );
    Ok(())
}
