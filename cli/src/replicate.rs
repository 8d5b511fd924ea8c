//! `replicate`: a leader and a follower over TCP on 127.0.0.1 with replication frames (the
//! loops of `examples/replicate/loops.rs`, included below), measured against a bare loopback
//! TCP stream of the same bytes in the same run.
//!
//! Phases: the bare stream (a sender writing batches of the same size from one buffer, a
//! receiver reading them into one buffer, nothing else); live replication (the leader appends
//! while it ships); catch-up replication (a full leader log shipped to an empty follower).
//! Each replication phase is printed as a ratio of the bare stream's MB/s.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use crate::workdir::Workdir;
use crate::{Failure, Outcome};

#[path = "../../examples/replicate/loops.rs"]
#[allow(dead_code)]
mod loops;

/// Options of `replicate`.
#[derive(Debug, Args)]
pub struct ReplicateArgs {
    /// Directory for the two logs (must be empty or not exist). Default: a new temporary
    /// directory. Put it on the file system you want measured (`/dev/shm` leaves the disk out).
    #[arg(long, value_name = "D")]
    dir: Option<PathBuf>,
    /// Entries the leader appends.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    entries: u64,
    /// Payload bytes per entry (a 24-byte log id is stored in front of it).
    #[arg(long, value_name = "BYTES", default_value_t = 256)]
    entry_size: usize,
    /// Entries per leader append (and flush).
    #[arg(long, value_name = "K", default_value_t = 256)]
    append_batch: u64,
    /// Most entries per shipped batch.
    #[arg(long, value_name = "K", default_value_t = 4096)]
    ship_batch: u64,
    /// The follower drops its log and connection after N entries, reopens and resumes (in the
    /// live phase).
    #[arg(long, value_name = "N")]
    restart_at: Option<u64>,
    /// Segment file size.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
    segment_size: u64,
    /// The follower reads each batch into a buffer and copies it in with `append_frames`,
    /// instead of receiving it straight into its map (`receive_frames`).
    #[arg(long)]
    copy_receive: bool,
    /// The leader sends each span from its segment file with `sendfile` instead of one
    /// `write_vectored` of the mapped bytes.
    #[arg(long)]
    sendfile: bool,
    /// Leave the log directories in place.
    #[arg(long)]
    keep: bool,
    /// Print the results as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

fn err(e: impl std::fmt::Display) -> Failure {
    Failure::Error(e.to_string())
}

/// Bytes a frame of a `payload`-byte entry takes (24-byte header, 24-byte log id, padding).
fn frame_size(payload: usize) -> usize {
    24 + (24 + payload).div_ceil(8) * 8
}

/// A sender writing `batches` batches of `batch_bytes` (each after an 8-byte length) to a
/// receiver reading them into one buffer: the same bytes as replication, nothing else.
/// Returns the time from the first byte to the last byte received.
fn bare_stream(batches: u64, batch_bytes: usize) -> std::io::Result<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let receiver = std::thread::spawn(move || -> std::io::Result<Duration> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = Vec::new();
        let mut start = None;
        loop {
            let mut len = [0u8; 8];
            s.read_exact(&mut len)?;
            start.get_or_insert_with(Instant::now);
            let len = u64::from_le_bytes(len) as usize;
            if len == 0 {
                return Ok(start.map_or(Duration::ZERO, |t| t.elapsed()));
            }
            buf.resize(len, 0);
            s.read_exact(&mut buf)?;
        }
    });
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let data: Vec<u8> = (0..batch_bytes).map(|i| (i * 7) as u8).collect();
    let prefix = (batch_bytes as u64).to_le_bytes();
    for _ in 0..batches {
        let mut slices = [std::io::IoSlice::new(&prefix), std::io::IoSlice::new(&data)];
        loops::write_all_vectored(&mut s, &mut slices)?;
    }
    s.write_all(&0u64.to_le_bytes())?;
    receiver
        .join()
        .map_err(|_| std::io::Error::other("receiver panicked"))?
}

/// Runs the command.
pub fn run(a: ReplicateArgs) -> Outcome {
    if a.entries == 0 || a.append_batch == 0 || a.ship_batch == 0 {
        return Err(Failure::Error(
            "--entries, --append-batch and --ship-batch must be at least 1".into(),
        ));
    }
    let work = Workdir::new(a.dir.as_deref(), a.keep)?;
    let frame = frame_size(a.entry_size);
    let bytes = a.entries * frame as u64;

    // 1. The bare stream: the same bytes in batches of the same size.
    let batches = a.entries.div_ceil(a.ship_batch);
    let batch_bytes = (a.ship_batch as usize) * frame;
    let bare = bare_stream(batches, batch_bytes).map_err(err)?;
    let bare_mbs = (batches * batch_bytes as u64) as f64 / 1e6 / bare.as_secs_f64().max(1e-9);

    // 2. Live replication, 3. catch-up replication.
    let mut phases = Vec::new();
    for (name, prefill, restart_at) in [
        ("live (append while shipping)", false, a.restart_at),
        ("catch-up (ship a full log)", true, None),
    ] {
        let o = loops::Options {
            entries: a.entries,
            entry_size: a.entry_size,
            append_batch: a.append_batch,
            ship_batch: a.ship_batch,
            restart_at,
            prefill,
            segment_size: a.segment_size,
            copy_receive: a.copy_receive,
            sendfile: a.sendfile,
        };
        let sub = work.path.join(if prefill { "catch-up" } else { "live" });
        let r = loops::run(&sub.join("leader"), &sub.join("follower"), &o).map_err(err)?;
        if !a.keep {
            let _ = std::fs::remove_dir_all(&sub);
        }
        phases.push((name, r));
    }

    if a.json {
        let phase_json: Vec<_> = phases
            .iter()
            .map(|(name, r)| {
                let mbs = bytes as f64 / 1e6 / r.end_to_end.as_secs_f64().max(1e-9);
                json!({
                    "name": name,
                    "seconds": r.end_to_end.as_secs_f64(),
                    "entries_per_sec": (a.entries as f64 / r.end_to_end.as_secs_f64().max(1e-9)).round(),
                    "mb_per_sec": (mbs * 10.0).round() / 10.0,
                    "ratio_to_bare_tcp": (mbs / bare_mbs * 1000.0).round() / 1000.0,
                    "leader_copies_per_entry": r.leader.copies_per_entry(),
                    "follower_copies_per_entry": r.follower.copies_per_entry(),
                    "follower_restarts": r.follower.restarts,
                })
            })
            .collect();
        let v = json!({
            "entries": a.entries,
            "entry_size": a.entry_size,
            "frame_bytes": bytes,
            "bare_tcp": { "seconds": bare.as_secs_f64(), "mb_per_sec": (bare_mbs * 10.0).round() / 10.0 },
            "phases": phase_json,
        });
        println!("{v}");
        return Ok(());
    }
    println!(
        "{} entries x {} B ({} B frames, {:.1} MB), logs in {}",
        a.entries,
        a.entry_size,
        frame,
        bytes as f64 / 1e6,
        work.path.display()
    );
    println!(
        "{:<32} {:>10} {:>12} {:>10} {:>9}  copies/entry (us+kernel) leader, follower",
        "phase", "seconds", "entries/s", "MB/s", "vs TCP"
    );
    println!(
        "{:<32} {:>10.3} {:>12.0} {:>10.1} {:>9}",
        "bare loopback TCP stream",
        bare.as_secs_f64(),
        a.entries as f64 / bare.as_secs_f64().max(1e-9),
        bare_mbs,
        "100%"
    );
    for (name, r) in &phases {
        let secs = r.end_to_end.as_secs_f64().max(1e-9);
        let mbs = bytes as f64 / 1e6 / secs;
        let (lu, lk) = r.leader.copies_per_entry();
        let (fu, fk) = r.follower.copies_per_entry();
        println!(
            "{:<32} {:>10.3} {:>12.0} {:>10.1} {:>8.0}%  {lu:.2}+{lk:.2}, {fu:.2}+{fk:.2}{}",
            name,
            secs,
            a.entries as f64 / secs,
            mbs,
            mbs / bare_mbs * 100.0,
            if r.follower.restarts > 0 {
                format!(" ({} follower restart)", r.follower.restarts)
            } else {
                String::new()
            }
        );
    }
    println!("follower logs equal to the leader's: yes (checked frame byte for frame byte)");
    Ok(())
}
