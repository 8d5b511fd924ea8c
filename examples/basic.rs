//! Appends, syncs, reopens and reads back a log in a temporary directory.
use std::time::Instant;

use raft_mmap_log::{Config, Store};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let n = 200_000u64;
    let payload = vec![7u8; 256];
    let mut store = Store::open(dir.path(), Config::default())?;
    let t = Instant::now();
    for chunk in (1..=n).collect::<Vec<_>>().chunks(64) {
        store.append_batch(chunk.iter().map(|&i| (i, &payload[..])))?;
    }
    store.sync()?;
    let dt = t.elapsed();
    println!(
        "appended and synced {n} entries of {} B in {:.3} s ({:.2} M entries/s)",
        payload.len(),
        dt.as_secs_f64(),
        n as f64 / dt.as_secs_f64() / 1e6
    );
    drop(store);
    let t = Instant::now();
    let store = Store::open(dir.path(), Config::default())?;
    println!(
        "reopened in {:.3} s: entries {}..={}",
        t.elapsed().as_secs_f64(),
        store.first_index(),
        store.last_index().unwrap_or(0)
    );
    let snap = store.reader().view();
    let bytes: usize = snap.range(..).map(|e| e.payload.len()).sum();
    assert_eq!(bytes as u64, n * payload.len() as u64);
    println!("read back {n} entries, {bytes} payload bytes, zero-copy");
    Ok(())
}
