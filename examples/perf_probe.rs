use std::time::Instant;
use raft_mmap_log::{Config, Store};
fn main() {
    let dir = tempfile::tempdir().unwrap();
    let n: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let payload = vec![7u8; 256];
    let mut store = Store::open(dir.path(), Config::default()).unwrap();
    let t = Instant::now();
    let mut i = 0u64;
    while i < n {
        let end = (i + 64).min(n);
        store.append_batch((i..end).map(|k| (k, &payload[..]))).unwrap();
        i = end;
    }
    let a = t.elapsed();
    store.sync().unwrap();
    let b = t.elapsed();
    println!("append {:.2} M/s, with sync {:.2} M/s ({:.3}s / {:.3}s)", n as f64 / a.as_secs_f64() / 1e6, n as f64 / b.as_secs_f64() / 1e6, a.as_secs_f64(), b.as_secs_f64());
}
