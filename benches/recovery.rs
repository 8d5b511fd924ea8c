//! Recovery (reopen) of a large log.
//!
//! Default (`cargo bench --bench recovery`): a criterion run of a warm-cache reopen of a
//! `RML_BENCH_RECOVERY_MB` log (default 256; the full run uses 1024). The page cache is warm:
//! this measures the scan (CRC32C of every record, parallel over segments) and index rebuild.
//!
//! Table mode (`RML_BENCH_RECOVERY_TABLE=1`): recovery time against log size and rayon pool
//! size, cold and warm, next to a cold `read()` of the same files (the limit):
//!
//! ```sh
//! sudo RML_BENCH_RECOVERY_TABLE=1 RML_BENCH_RECOVERY_MB=256,1024,4096 \
//!     RML_BENCH_RECOVERY_THREADS=1,2 RML_BENCH_RECOVERY_REPS=3 cargo bench --bench recovery
//! ```
//!
//! A cold run drops the page cache (`/proc/sys/vm/drop_caches`, root only; without root the
//! cold rows are skipped, and said so). Sizes above 256 MiB take disk space and minutes, so
//! only the environment asks for them; CI never does.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use raft_mmap_log::raft::{LogId, RaftLog, RaftTypes};
use raft_mmap_log::Config;

/// Bytes one entry takes on disk: record header + log id + 256 B payload.
const RECORD: u64 = 24 + 24 + 256;

fn env_list(name: &str, default: &[u64]) -> Vec<u64> {
    match std::env::var(name) {
        Ok(v) => v.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        Err(_) => default.to_vec(),
    }
}

/// A synced log of `mb` MiB of 256 B entries in a new temporary directory; returns it and the
/// number of entries.
fn build_log(mb: u64) -> (tempfile::TempDir, u64) {
    let payload = vec![0x33u8; 256];
    let n = (mb << 20) / RECORD;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = RaftLog::<RaftTypes>::open(dir.path(), Config::default()).expect("open");
    for start in (0..n).step_by(256) {
        let end = (start + 256).min(n);
        log.append((start..end).map(|i| (LogId::new(1, 1, i), &payload[..])))
            .expect("append");
        if start % (1 << 20) == 0 {
            // Keep the dirty page cache bounded on big runs.
            log.sync().expect("sync");
        }
    }
    log.sync().expect("sync");
    (dir, n)
}

fn recovery(c: &mut Criterion) {
    let mb = env_list("RML_BENCH_RECOVERY_MB", &[256])
        .first()
        .copied()
        .unwrap_or(256);
    let (dir, n) = build_log(mb);
    let mut g = c.benchmark_group("recovery");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Bytes(n * RECORD));
    g.bench_function(format!("reopen_{mb}MiB"), |b| {
        b.iter(|| {
            let log = RaftLog::<RaftTypes>::open(dir.path(), Config::default()).expect("open");
            assert_eq!(log.reader().view().next_index(), n);
        })
    });
    g.finish();
}

/// Drops the page cache (clean pages only: the log was synced). False without permission.
fn drop_caches() -> bool {
    // SAFETY: `sync` has no preconditions.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok()
}

/// A plain `read()` of every file of `dir` in 1 MiB chunks, with `threads` threads taking
/// files in turn: the limit recovery is measured against.
fn read_all(dir: &Path, threads: usize) -> u64 {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    files.sort();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut buf = vec![0u8; 1 << 20];
                    let mut total = 0u64;
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(path) = files.get(i) else { break };
                        let mut f = std::fs::File::open(path).expect("open");
                        loop {
                            let k = f.read(&mut buf).expect("read");
                            if k == 0 {
                                break;
                            }
                            total += k as u64;
                        }
                    }
                    total
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("reader")).sum()
    })
}

fn open_with_threads(dir: &Path, threads: usize, n: u64) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("rayon pool");
    pool.install(|| {
        let log = RaftLog::<RaftTypes>::open(dir, Config::default()).expect("open");
        assert_eq!(log.reader().view().next_index(), n);
    });
}

/// Major page faults of this process so far (`/proc/self/stat` field 12): page faults that
/// waited for the disk. Stable where timings on a shared machine are not.
fn major_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit(')').next().unwrap_or("");
    rest.split_whitespace()
        .nth(9)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Read requests completed and sectors read by every block device so far
/// (`/proc/diskstats`): how the reads reached the disk (other processes count too).
fn disk_reads() -> (u64, u64) {
    let stats = std::fs::read_to_string("/proc/diskstats").unwrap_or_default();
    stats
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // Whole disks only (vda, sda, nvme0n1), not partitions.
            let name = f.get(2)?;
            let whole = !name.chars().last()?.is_ascii_digit()
                || name.starts_with("nvme") && !name.contains('p');
            if !whole || name.starts_with("loop") || name.starts_with("ram") {
                return None;
            }
            Some((
                f.get(3)?.parse::<u64>().ok()?,
                f.get(5)?.parse::<u64>().ok()?,
            ))
        })
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// Median and spread (min–max) of `reps` runs of `f`, in seconds, and the median number of
/// major faults per run; `cold` drops the cache before each run.
fn measure(reps: usize, cold: bool, mut f: impl FnMut()) -> (f64, f64, f64, u64, u64) {
    let mut faults = Vec::new();
    let mut reqs = Vec::new();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            if cold {
                drop_caches();
            }
            let m = major_faults();
            let d = disk_reads();
            let s = Instant::now();
            f();
            let el = s.elapsed().as_secs_f64();
            faults.push(major_faults() - m);
            let d2 = disk_reads();
            // Mean request size in KiB (sectors are 512 B).
            reqs.push((d2.1 - d.1) / 2 / (d2.0 - d.0).max(1));
            el
        })
        .collect();
    t.sort_by(f64::total_cmp);
    faults.sort_unstable();
    reqs.sort_unstable();
    (
        t[t.len() / 2],
        t[0],
        t[t.len() - 1],
        faults[faults.len() / 2],
        reqs[reqs.len() / 2],
    )
}

fn table() {
    let sizes = env_list("RML_BENCH_RECOVERY_MB", &[256]);
    let threads = env_list("RML_BENCH_RECOVERY_THREADS", &[1, 2]);
    let reps = env_list("RML_BENCH_RECOVERY_REPS", &[3])
        .first()
        .copied()
        .unwrap_or(3)
        .max(1) as usize;
    let can_drop = drop_caches();
    if !can_drop {
        println!("(not root: cannot drop the page cache, cold rows skipped)");
    }
    println!(
        "{:>8} {:>7} {:>5} {:>24} {:>7} {:>8} {:>24} {:>8} {:>10}",
        "log MiB",
        "threads",
        "cache",
        "reopen s (median, range)",
        "majflt",
        "KiB/req",
        "read() s (median, range)",
        "KiB/req",
        "ratio"
    );
    for &mb in &sizes {
        let (dir, n) = build_log(mb);
        for &t in &threads {
            let t = t.max(1) as usize;
            for cold in [true, false] {
                if cold && !can_drop {
                    continue;
                }
                if !cold {
                    open_with_threads(dir.path(), t, n); // warm the cache
                }
                let open = measure(reps, cold, || open_with_threads(dir.path(), t, n));
                let read = measure(reps, cold, || {
                    std::hint::black_box(read_all(dir.path(), t));
                });
                println!(
                    "{:>8} {:>7} {:>5} {:>8.3} ({:.3}–{:.3}) {:>7} {:>8} {:>10.3} ({:.3}–{:.3}) {:>8} {:>9.2}x",
                    mb,
                    t,
                    if cold { "cold" } else { "warm" },
                    open.0,
                    open.1,
                    open.2,
                    open.3,
                    open.4,
                    read.0,
                    read.1,
                    read.2,
                    read.4,
                    open.0 / read.0
                );
            }
        }
    }
}

criterion_group!(benches, recovery);

fn main() {
    if std::env::var_os("RML_BENCH_RECOVERY_TABLE").is_some() {
        table();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
