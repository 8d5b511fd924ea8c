//! Appends through `RaftLog<RaftTypes>`: without sync for 64 B, 256 B and 4 KiB payloads, and
//! batches of 16 made durable one by one.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raft_mmap_log::raft::{LogId, RaftLog, RaftTypes};
use raft_mmap_log::Config;

const BATCH: u64 = 16;
/// Purge the log behind the writer so a long run does not fill the disk.
const KEEP_BYTES: u64 = 256 << 20;

struct Bench {
    _dir: tempfile::TempDir,
    log: RaftLog<RaftTypes>,
    next: u64,
}

impl Bench {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = RaftLog::<RaftTypes>::open(dir.path(), Config::default()).expect("open");
        Bench {
            _dir: dir,
            log,
            next: 0,
        }
    }

    fn append_batch(&mut self, payload: &[u8]) {
        let n = self.next;
        self.log
            .append((n..n + BATCH).map(|i| (LogId::new(1, 1, i), payload)))
            .expect("append");
        self.next += BATCH;
    }

    /// Untimed housekeeping: commit and purge all but the newest `KEEP_BYTES`.
    fn trim(&mut self, entry_bytes: u64) {
        let keep = (KEEP_BYTES / entry_bytes).max(BATCH);
        if self.next > 2 * keep {
            let upto = LogId::new(1, 1, self.next - keep);
            self.log
                .commit(LogId::new(1, 1, self.next - 1))
                .expect("commit");
            self.log.purge_upto(upto).expect("purge");
            self.log.sync().expect("sync");
        }
    }
}

fn append_no_sync(c: &mut Criterion) {
    let mut g = c.benchmark_group("append_no_sync");
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_secs(1));
    for size in [64usize, 256, 4096] {
        let payload = vec![0xa5u8; size];
        g.throughput(Throughput::Elements(BATCH));
        g.bench_with_input(BenchmarkId::new("batch16", size), &payload, |b, payload| {
            let mut bench = Bench::new();
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let chunk = 4096u64;
                let mut done = 0;
                while done < iters {
                    let n = chunk.min(iters - done);
                    let t = Instant::now();
                    for _ in 0..n {
                        bench.append_batch(payload);
                    }
                    timed += t.elapsed();
                    done += n;
                    bench.trim(payload.len() as u64 + 48);
                }
                timed
            });
        });
    }
    g.finish();
}

fn durable_append(c: &mut Criterion) {
    let mut g = c.benchmark_group("durable_append");
    g.measurement_time(Duration::from_secs(5));
    g.sample_size(20);
    let payload = vec![0x5au8; 256];
    g.throughput(Throughput::Elements(BATCH));
    g.bench_function("batch16_sync_256B", |b| {
        let mut bench = Bench::new();
        b.iter(|| {
            bench.append_batch(&payload);
            bench.log.sync().expect("sync");
        });
    });
    g.finish();
}

criterion_group!(benches, append_no_sync, durable_append);
criterion_main!(benches);
