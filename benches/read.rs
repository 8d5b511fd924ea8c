//! Reads: a hot 1,000-entry `read` next to the same loop over an in-memory vector (the floor), a
//! single `get`, and tail reads by 1, 2 and 4 threads while
//! a writer appends.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raft_mmap_log::raft::{LogId, RaftLog, RaftTypes};
use raft_mmap_log::Config;

const ENTRIES: u64 = 100_000;

fn filled(n: u64, size: usize) -> (tempfile::TempDir, RaftLog<RaftTypes>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = RaftLog::<RaftTypes>::open(dir.path(), Config::default()).expect("open");
    let payload = vec![0x11u8; size];
    for start in (0..n).step_by(64) {
        let end = (start + 64).min(n);
        log.append((start..end).map(|i| (LogId::new(1, 1, i), &payload[..])))
            .expect("append");
    }
    log.sync().expect("sync");
    (dir, log)
}

fn touch(p: &[u8]) -> u64 {
    p.iter().map(|&b| b as u64).sum()
}

fn read_range(c: &mut Criterion) {
    let (_dir, log) = filled(ENTRIES, 256);
    let snap = log.reader().view();
    let mut g = c.benchmark_group("read");
    g.measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(1000));
    g.bench_function("range_1000_hot_256B", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for e in snap.read(50_000..51_000) {
                let (id, p) = e.expect("entry");
                sum = sum.wrapping_add(id.index + black_box(p).len() as u64);
            }
            black_box(sum)
        })
    });
    // The floor: the same consumption over the same payload slices held in a plain vector
    // (the harness's own per-entry cost, in the same process).
    let entries: Vec<(LogId, &[u8])> = (50_000..51_000)
        .map(|i| snap.get(i).expect("entry").expect("present"))
        .collect();
    g.bench_function("range_1000_floor_vec", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for &(id, p) in black_box(&entries[..]) {
                sum = sum.wrapping_add(id.index + black_box(p).len() as u64);
            }
            black_box(sum)
        })
    });
    g.bench_function("range_1000_hot_256B_touch_bytes", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for e in snap.read(50_000..51_000) {
                let (_, p) = e.expect("entry");
                sum = sum.wrapping_add(touch(p));
            }
            black_box(sum)
        })
    });
    g.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    g.bench_function("get", |b| {
        b.iter(|| {
            i = (i + 7919) % ENTRIES;
            black_box(snap.get(i).expect("get").expect("present").1.len())
        })
    });
    g.bench_function("snapshot", |b| {
        let reader = log.reader();
        b.iter(|| black_box(reader.view().next_index()))
    });
    g.finish();
}

fn reader_scaling(c: &mut Criterion) {
    let mut g = c.benchmark_group("tail_readers_while_appending");
    g.measurement_time(Duration::from_secs(3));
    g.sample_size(10);
    const RANGE: u64 = 100;
    for threads in [1usize, 2, 4] {
        g.throughput(Throughput::Elements(RANGE));
        g.bench_with_input(
            BenchmarkId::from_parameter(threads),
            &threads,
            |b, &threads| {
                let (_dir, mut log) = filled(10_000, 256);
                let reader = log.reader();
                let stop = Arc::new(AtomicBool::new(false));
                // The writer: batches of 16, paced like a busy leader, purging behind itself.
                let writer = {
                    let stop = stop.clone();
                    std::thread::spawn(move || {
                        let payload = vec![0x22u8; 256];
                        let mut next = 10_000u64;
                        while !stop.load(Ordering::Relaxed) {
                            log.append(
                                (next..next + 16).map(|i| (LogId::new(1, 1, i), &payload[..])),
                            )
                            .expect("append");
                            next += 16;
                            if next % 200_000 == 0 {
                                log.commit(LogId::new(1, 1, next - 1)).expect("commit");
                                log.purge_upto(LogId::new(1, 1, next - 50_000))
                                    .expect("purge");
                                log.flush(|_| {}).expect("flush");
                            }
                            std::thread::sleep(Duration::from_micros(20));
                        }
                    })
                };
                b.iter_custom(|iters| {
                    let per = iters.div_ceil(threads as u64);
                    let t = Instant::now();
                    std::thread::scope(|s| {
                        for _ in 0..threads {
                            let reader = reader.clone();
                            s.spawn(move || {
                                let mut sum = 0u64;
                                for _ in 0..per {
                                    let snap = reader.view();
                                    let end = snap.next_index();
                                    for e in snap.read(end.saturating_sub(RANGE)..end) {
                                        let (_, p) = e.expect("entry");
                                        sum = sum.wrapping_add(touch(p));
                                    }
                                }
                                black_box(sum)
                            });
                        }
                    });
                    // Wall time for `threads * per` iterations: report per-iteration cost of the
                    // whole group, so throughput shows the aggregate rate.
                    t.elapsed()
                        .mul_f64(iters as f64 / (per * threads as u64) as f64)
                });
                stop.store(true, Ordering::Relaxed);
                writer.join().expect("writer");
            },
        );
    }
    g.finish();
}

criterion_group!(benches, read_range, reader_scaling);
criterion_main!(benches);
