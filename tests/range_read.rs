//! `View::range` walks index chunks, runs and segments with cached slots and record bytes:
//! every sub-range must equal entry-by-entry `get`, across chunk boundaries (1,024 slots),
//! segment rollovers, truncations (frozen runs) and purges, and views taken mid-way.

use raft_mmap_log::{Config, Store, View};

fn payload(i: u64, gen: u64) -> Vec<u8> {
    let len = (i * 7 + gen) % 300;
    (0..len).map(|k| (i + k + gen) as u8).collect()
}

/// Every range `a..b` of `view` (a stride of starts and lengths) against `get`.
fn check_ranges(view: &View) {
    let (first, next) = (view.first_index(), view.next_index());
    let lens = [0u64, 1, 2, 3, 1023, 1024, 1025, 2500, u64::MAX];
    let mut a = first.saturating_sub(2);
    while a <= next + 1 {
        for &len in &lens {
            let b = a.saturating_add(len);
            let got: Vec<(u64, &[u8])> = view.range(a..b).map(|e| (e.index, e.payload)).collect();
            let want: Vec<(u64, &[u8])> = (a.max(first)..b.min(next))
                .map(|i| (i, view.get(i).expect("entry in view")))
                .collect();
            assert_eq!(got.len(), want.len(), "range {a}..{b} of {first}..{next}");
            assert!(
                got == want,
                "range {a}..{b} of {first}..{next} differs from get"
            );
            assert_eq!(view.range(a..b).size_hint().0, want.len());
        }
        a += 379;
    }
}

#[test]
fn ranges_equal_gets_across_chunks_runs_segments_truncates_and_purges() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        segment_size: 256 * 1024,
        ..Config::default()
    };
    let mut store = Store::open(dir.path(), config).unwrap();
    let mut views = Vec::new();
    let mut next = 0u64;
    for round in 0..4u64 {
        for _ in 0..3 {
            let batch: Vec<(u64, Vec<u8>)> =
                (next..next + 997).map(|i| (i, payload(i, round))).collect();
            store
                .append_batch(batch.iter().map(|(i, p)| (*i, &p[..])))
                .unwrap();
            next += 997;
            views.push(store.reader().view());
        }
        // A truncate freezes the tail run; the re-appended indexes start a new run.
        next -= 500;
        store.truncate_from(next).unwrap();
        views.push(store.reader().view());
        if round == 2 {
            store.purge_to(1500).unwrap();
            views.push(store.reader().view());
        }
    }
    assert!(store.reader().view().segment_count() > 3);
    for view in &views {
        check_ranges(view);
    }
}
