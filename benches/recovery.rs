//! Recovery (reopen) of a large log. Size in MiB from `RML_BENCH_RECOVERY_MB` (default 256;
//! the full run uses 1024). The page cache is warm: this measures the scan (CRC32C of every
//! record, parallel over segments) and index rebuild, not the disk.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use raft_mmap_log::raft::{LogId, RaftLog, RaftTypes};
use raft_mmap_log::Config;

fn recovery(c: &mut Criterion) {
    let mb: u64 = std::env::var("RML_BENCH_RECOVERY_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let payload = vec![0x33u8; 256];
    let record = 280u64 + 24; // record header + log id + payload
    let n = (mb << 20) / record;
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let mut log = RaftLog::<RaftTypes>::open(dir.path(), Config::default()).expect("open");
        for start in (0..n).step_by(256) {
            let end = (start + 256).min(n);
            log.append((start..end).map(|i| (LogId::new(1, 1, i), &payload[..])))
                .expect("append");
        }
        log.sync().expect("sync");
    }
    let mut g = c.benchmark_group("recovery");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Bytes(n * record));
    g.bench_function(format!("reopen_{mb}MiB"), |b| {
        b.iter(|| {
            let log = RaftLog::<RaftTypes>::open(dir.path(), Config::default()).expect("open");
            assert_eq!(log.reader().view().next_index(), n);
        })
    });
    g.finish();
}

criterion_group!(benches, recovery);
criterion_main!(benches);
