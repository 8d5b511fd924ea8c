//! raft-rs `Storage::entries` on `MmapRaftStorage`: 256 entries per call, data copied out of
//! the map or shared with it (`share_data_from`), for data sizes around the default threshold.
//!
//! `cargo bench --features raft-rs --bench raft_rs_entries`

#![allow(clippy::field_reassign_with_default)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raft::eraftpb::Entry;
use raft::{GetEntriesContext, Storage};
use raft_mmap_log::raft_rs::MmapRaftStorage;
use raft_mmap_log::Config;

const PER_CALL: u64 = 256;

fn entries(c: &mut Criterion) {
    let mut g = c.benchmark_group("raft_rs_entries");
    g.measurement_time(Duration::from_secs(2));
    g.throughput(Throughput::Elements(PER_CALL));
    for size in [64usize, 256, 1024, 4096, 16384] {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = MmapRaftStorage::open(dir.path(), Config::default()).expect("open");
        let ents: Vec<Entry> = (1..=PER_CALL)
            .map(|i| {
                let mut e = Entry::default();
                e.index = i;
                e.term = 1;
                e.data = vec![i as u8; size].into();
                e
            })
            .collect();
        s.append(&ents).expect("append");
        s.sync().expect("sync");
        for (name, share) in [("copy", None), ("share", Some(0))] {
            s.share_data_from(share);
            g.bench_with_input(BenchmarkId::new(name, size), &size, |b, _| {
                b.iter(|| {
                    let v = s
                        .entries(1, PER_CALL + 1, None, GetEntriesContext::empty(false))
                        .expect("entries");
                    black_box(v.len())
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, entries);
criterion_main!(benches);
