//! The Raft layer in a few lines: vote, append, commit, a conflicting truncate, a snapshot,
//! a reader thread replicating while the writer appends, and a reopen.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use raft_mmap_log::raft::{LogId, RaftLog, RaftTypes, Vote};
use raft_mmap_log::Config;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut log = RaftLog::<RaftTypes>::open(dir.path(), Config::default())?;

    // Hard state first: the vote is durable before we answer the candidate.
    log.save_vote(Vote::new(1, 1, false))?;
    log.sync()?;

    // A replication loop on another thread reads the tail without blocking the writer.
    let reader = log.reader();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let replicator = std::thread::spawn(move || {
        let mut sent = 0u64;
        let mut bytes = 0usize;
        loop {
            let stopping = stop2.load(Ordering::Acquire);
            let snap = reader.view();
            for entry in snap.read(sent..) {
                let (id, payload) = entry.expect("entries decode");
                bytes += payload.len(); // `payload` borrows the mapped file: no copy
                sent = id.index + 1;
            }
            if stopping {
                break (sent, bytes);
            }
        }
    });

    // Term 1: entries 0..1000, committed up to 900.
    let payload = [42u8; 200];
    for chunk in (0..1000u64).collect::<Vec<_>>().chunks(100) {
        log.append(chunk.iter().map(|&i| (LogId::new(1, 1, i), &payload[..])))?;
    }
    log.commit(LogId::new(1, 1, 900))?;

    // A new leader in term 2 overwrites the uncommitted suffix.
    log.save_vote(Vote::new(2, 2, true))?;
    log.truncate_after(Some(LogId::new(1, 1, 950)))?;
    log.append((951..1100u64).map(|i| (LogId::new(2, 2, i), &payload[..])))?;
    log.commit(LogId::new(2, 2, 1099))?;

    // The application took a snapshot up to 1000: compact the log.
    log.install_snapshot(LogId::new(2, 2, 1000), b"membership {1,2,3}".to_vec())?;
    log.sync()?;

    stop.store(true, Ordering::Release);
    let (sent, bytes) = replicator.join().expect("replicator");
    println!("replicator read up to index {sent} ({bytes} payload bytes) while appends went on");

    let state = log.state().clone();
    println!("state before reopen: {state:?}");
    drop(log);
    let log = RaftLog::<RaftTypes>::open(dir.path(), Config::default())?;
    assert_eq!(log.state(), &state);
    let snap = log.reader().view();
    println!(
        "after reopen: entries {}..{}, first {:?}",
        snap.first_index(),
        snap.next_index(),
        snap.get(snap.first_index())?.map(|(id, p)| (id, p.len()))
    );
    Ok(())
}
