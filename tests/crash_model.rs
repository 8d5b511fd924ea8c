//! Crash model of the engine ([`Store`]): random operation sequences on tiny segments, checked
//! against an in-memory model, with simulated crashes.
//!
//! A crash copies the log directory (every `*.seg` file) while the store is still open, then
//! damages the copy where a real crash could: everything after the durable frontier (the
//! position recorded when the last flush/sync completed) may be cut, zeroed, garbled or lost
//! page by page, and segments created after that frontier may be lost entirely. The copy must
//! open and recover to the model's state at some point between the last completed flush and
//! the crash (appends count per entry: a batch is not atomic), byte for byte; a reopen must
//! change nothing, and a new append must never bring stale bytes back.
//!
//! The harness (flush bookkeeping, crash copy, damage, recovery, comparison with the candidate
//! states) is `tests/common/crash_harness.rs`, shared with `tests/raft_crash_model.rs`; this
//! file has the operations, the model and the checks. Case count: `PROPTEST_CASES` (default
//! 64).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use raft_mmap_log::{Config, Error, Store};

mod common;

use common::crash_harness::{
    case_strategy, proptest_cases, run_case, Case, CrashModel, Harness, Workload,
};
use common::{copy_segments, derive, seg_files};

const META_KEYS: u64 = 4;

// ---------------------------------------------------------------------------------------------
// Model

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    first: u64,
    next: u64,
    entries: BTreeMap<u64, Arc<[u8]>>,
    metas: BTreeMap<u64, Arc<[u8]>>,
}

impl Model {
    fn is_empty(&self) -> bool {
        self.first == self.next
    }

    fn append(&mut self, index: u64, payload: Arc<[u8]>) {
        assert!(if self.is_empty() {
            index >= self.next
        } else {
            index == self.next
        });
        if self.is_empty() {
            self.first = index;
        }
        self.next = index + 1;
        self.entries.insert(index, payload);
    }

    fn truncate_from(&mut self, from: u64) {
        assert!(from >= self.first);
        self.next = self.next.min(from);
        self.entries.split_off(&from);
    }

    fn purge_to(&mut self, first: u64) {
        if first > self.first {
            self.first = first;
            self.next = self.next.max(first);
            self.entries = self.entries.split_off(&first);
        }
    }

    fn summary(&self) -> String {
        format!(
            "first={} next={} metas={:?}",
            self.first,
            self.next,
            self.metas
                .iter()
                .map(|(k, v)| (*k, v.len()))
                .collect::<Vec<_>>()
        )
    }
}

/// The state a store exposes, read through a reader snapshot (and checked for consistency).
fn observe(store: &Store) -> Model {
    let snap = store.reader().view();
    assert_eq!(snap.first_index(), store.first_index(), "snapshot first");
    assert_eq!(snap.next_index(), store.next_index(), "snapshot next");
    let mut entries = BTreeMap::new();
    for i in snap.first_index()..snap.next_index() {
        let p = snap
            .get(i)
            .unwrap_or_else(|| panic!("get({i}) is None inside [first, next)"));
        entries.insert(i, Arc::<[u8]>::from(p));
    }
    let ranged: Vec<(u64, &[u8])> = snap.range(..).map(|e| (e.index, e.payload)).collect();
    assert_eq!(ranged.len(), entries.len(), "range(..) length");
    for ((i, p), (j, q)) in ranged.iter().zip(entries.iter()) {
        assert_eq!(i, j, "range(..) index");
        assert_eq!(*p, &q[..], "range(..) payload of {i}");
    }
    assert!(snap.get(snap.next_index()).is_none());
    if snap.first_index() > 0 {
        assert!(snap.get(snap.first_index() - 1).is_none());
    }
    let mut metas = BTreeMap::new();
    for k in 0..META_KEYS {
        assert_eq!(snap.meta(k), store.meta(k), "snapshot meta {k}");
        if let Some(v) = store.meta(k) {
            metas.insert(k, Arc::<[u8]>::from(v));
        }
    }
    Model {
        first: store.first_index(),
        next: store.next_index(),
        entries,
        metas,
    }
}

// ---------------------------------------------------------------------------------------------
// Operations

#[derive(Debug, Clone)]
enum Op {
    /// Append a batch; `skip` jumps ahead when the log is empty.
    Append {
        skip: u8,
        sizes: Vec<u16>,
    },
    TruncateFrom(u16),
    TruncateAfter(u16),
    Purge(u16),
    Meta {
        key: u8,
        len: u8,
    },
    Flush,
    Sync,
    /// A non-consecutive append that must be refused.
    BadAppend(u8),
    /// Crash here (a crash also happens after the last op).
    Crash,
}

/// `sync_weight` 2 flushes every few operations; 0 lets many rollovers pile up unsynced.
fn op_strategy(sync_weight: u32) -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (0u8..3, prop::collection::vec(0u16..300, 1..8))
            .prop_map(|(skip, sizes)| Op::Append { skip, sizes }),
        2 => any::<u16>().prop_map(Op::TruncateFrom),
        2 => any::<u16>().prop_map(Op::TruncateAfter),
        2 => any::<u16>().prop_map(Op::Purge),
        2 => (0u8..META_KEYS as u8, 0u8..40).prop_map(|(key, len)| Op::Meta { key, len }),
        sync_weight => Just(Op::Flush),
        sync_weight => Just(Op::Sync),
        1 => any::<u8>().prop_map(Op::BadAppend),
        1 => Just(Op::Crash),
    ]
}

/// `lo + pick` folded into `lo..=hi`.
fn pick_in(pick: u16, lo: u64, hi: u64) -> u64 {
    lo + u64::from(pick) % (hi - lo + 1)
}

impl CrashModel for Model {
    type Log = Store;
    fn observe(store: &Store) -> Model {
        observe(store)
    }
    fn summary(&self) -> String {
        Model::summary(self)
    }
    fn next_index(&self) -> u64 {
        self.next
    }
    fn entry_len(&self, index: u64) -> Option<usize> {
        self.entries.get(&index).map(|p| p.len())
    }
}

/// The engine's harness: the shared one plus the payload generation.
struct Engine {
    h: Harness<Model>,
    generation: u64,
}

impl Engine {
    /// Records the model after a step and checks the live store against it (cheaply).
    fn step(&mut self) {
        self.h.record();
        assert_eq!(self.h.live.first_index(), self.h.model.first, "live first");
        assert_eq!(self.h.live.next_index(), self.h.model.next, "live next");
        if let Some((i, p)) = self.h.model.entries.iter().next_back() {
            assert_eq!(self.h.live.reader().view().get(*i), Some(&p[..]));
        }
    }

    fn apply(&mut self, op: &Op) {
        let m = &self.h.model;
        match op {
            Op::Append { skip, sizes } => {
                self.generation += 1;
                let gen = self.generation;
                let start = if m.is_empty() {
                    m.next + u64::from(*skip)
                } else {
                    m.next
                };
                let batch: Vec<(u64, Arc<[u8]>)> = sizes
                    .iter()
                    .enumerate()
                    .map(|(k, &n)| {
                        let i = start + k as u64;
                        (i, derive(i, gen, n as usize))
                    })
                    .collect();
                self.h
                    .live
                    .append_batch(batch.iter().map(|(i, p)| (*i, &p[..])))
                    .expect("append_batch");
                // A batch is not atomic: every prefix is a state a crash may recover.
                for (i, p) in batch {
                    self.h.model.append(i, p);
                    self.h.hist.push(self.h.model.clone());
                }
                self.h.hist.states.pop();
                self.step();
            }
            Op::TruncateFrom(pick) | Op::TruncateAfter(pick) => {
                let from = pick_in(*pick, m.first.saturating_sub(1), m.next + 1);
                let r = match op {
                    Op::TruncateFrom(_) => self.h.live.truncate_from(from),
                    _ => match from.checked_sub(1) {
                        Some(idx) => self.h.live.truncate_after(idx),
                        None => return,
                    },
                };
                if from < m.first {
                    assert!(
                        matches!(r, Err(Error::BelowFirstIndex { .. })),
                        "truncate from {from} below first {}: {r:?}",
                        m.first
                    );
                } else {
                    r.expect("truncate");
                    self.h.model.truncate_from(from);
                }
                self.step();
            }
            Op::Purge(pick) => {
                let upto = pick_in(*pick, m.first.saturating_sub(1), m.next + 2);
                self.h.live.purge_to(upto + 1).expect("purge_to");
                self.h.model.purge_to(upto + 1);
                self.step();
            }
            Op::Meta { key, len } => {
                self.generation += 1;
                let key = u64::from(*key);
                let v = derive(key | 1 << 63, self.generation, *len as usize);
                self.h.live.put_meta(key, &v).expect("put_meta");
                self.h.model.metas.insert(key, v);
                self.step();
            }
            Op::Flush => self.h.flush(),
            Op::Sync => self.h.sync(),
            Op::BadAppend(d) => {
                let bad = if m.is_empty() {
                    match m.next.checked_sub(1 + u64::from(*d % 3)) {
                        Some(i) => i,
                        None => return,
                    }
                } else if d % 2 == 0 {
                    m.next + 1 + u64::from(*d % 5)
                } else {
                    m.next.saturating_sub(1 + u64::from(*d % 5))
                };
                let r = self.h.live.append(bad, b"bad");
                assert!(
                    matches!(r, Err(Error::NonConsecutive { .. })),
                    "append {bad} with next {} accepted: {r:?}",
                    m.next
                );
                self.step();
            }
            Op::Crash => unreachable!("handled by the caller"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Crash: copy, damage, recover, compare (tests/common/crash_harness.rs); the append after
// recovery and the statistics are the engine's

impl Workload for Engine {
    type Op = Op;

    fn new(dir: &Path, config: Config) -> Self {
        Engine {
            h: Harness::new(dir, config),
            generation: 0,
        }
    }

    fn is_crash(op: &Op) -> bool {
        matches!(op, Op::Crash)
    }

    fn apply(&mut self, op: &Op) {
        Engine::apply(self, op)
    }

    fn crash_and_check(&mut self, seed: u64) {
        let c = self.h.crash_and_check(
            seed,
            false,
            |_, _| {},
            |store, rec, index, p| {
                store.append(index, &p).expect("append after recovery");
                let mut expect = rec.clone();
                expect.append(index, p);
                expect
            },
        );
        if std::env::var("CRASH_MODEL_STATS").is_ok() {
            eprintln!(
                "STAT cands={} recovered_pos={} cut={} dropped={} len={} desc={}",
                c.candidates,
                c.pos,
                c.report.cut.is_some(),
                c.report.dropped_files.len(),
                c.rec.next - c.rec.first,
                c.desc,
            );
        }
    }
}

fn op_strategies(syncs: bool) -> BoxedStrategy<Op> {
    op_strategy(if syncs { 2 } else { 0 }).boxed()
}

proptest! {
    #![proptest_config(ProptestConfig {
        // Do not write regression files into the source tree.
        failure_persistence: None,
        ..ProptestConfig::with_cases(proptest_cases())
    })]

    #[test]
    fn crash_recovers_a_state_since_the_last_flush(case in case_strategy(op_strategies, Op::Sync)) {
        let case: Case<Op> = case;
        run_case::<Engine, _>(&case, drop);
    }
}

// ---------------------------------------------------------------------------------------------
// Deterministic regressions for two recovery bugs the model found

fn entry(i: u64, gen: u64) -> Arc<[u8]> {
    derive(i, gen, 100)
}

/// Copies the open store's segments into a fresh directory.
fn crash_copy(store: &Store) -> tempfile::TempDir {
    let copy = tempfile::tempdir().expect("tempdir");
    copy_segments(store.dir(), copy.path());
    copy
}

fn patch(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut b = std::fs::read(path).expect("read");
    f(&mut b);
    std::fs::write(path, b).expect("write");
}

/// Two segments were created after the last sync and neither reached the disk (their headers
/// read as zeros; the directory entries did). Nothing in them was acknowledged, so recovery
/// must drop them. (Regression: recovery used to drop a blank-header file only when it was the
/// newest, and refused to open with "bad magic" otherwise.)
#[test]
fn blank_header_in_older_unsynced_segment() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        segment_size: 4096,
        prepare_ahead: false,
        ..Default::default()
    };
    let mut store = Store::open(dir.path(), config.clone()).unwrap();
    for i in 1..=10 {
        store.append(i, &entry(i, 0)).unwrap();
    }
    store.sync().unwrap();
    let (durable_seg, _) = store.position();
    for i in 11..=80 {
        store.append(i, &entry(i, 0)).unwrap();
    }
    let copy = crash_copy(&store);
    let files = seg_files(copy.path());
    let d = files
        .iter()
        .position(|p| p.file_name() == durable_seg.file_name())
        .unwrap();
    assert!(
        files.len() >= d + 3,
        "need two segments after the durable one"
    );
    for p in &files[d + 1..] {
        patch(p, |b| b.fill(0));
    }
    let rec = Store::open(copy.path(), config).expect("recovery must drop unsynced segments");
    let m = observe(&rec);
    assert_eq!(m.first, 1);
    assert!((11..=81).contains(&m.next), "next {}", m.next);
    for (i, p) in &m.entries {
        assert_eq!(&p[..], &entry(*i, 0)[..], "entry {i}");
    }
}

/// The tail of a segment that was never sealed (the flusher had not got to it) is lost, and it
/// held a truncate plus re-appends that leave `next` unchanged; the next segment's start did
/// reach the disk. Its checkpoint (first, next, metas) matches the damaged segment's replay.
/// (Regression: recovery used to bridge the gap and return old entries followed by newer ones,
/// a log that never existed; checkpoints are now chained to the previous segment's end.)
#[test]
fn lost_tail_of_unsealed_segment_is_not_bridged() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        segment_size: 4096,
        prepare_ahead: false,
        ..Default::default()
    };
    let mut store = Store::open(dir.path(), config.clone()).unwrap();
    // Fill the segment until a truncate record (24 B) and two entries (128 B each) still fit
    // but a third entry does not.
    let mut i = 1;
    loop {
        store.append(i, &entry(i, 0)).unwrap();
        i += 1;
        let room = 4096 - store.position().1;
        if (280..408).contains(&room) {
            break;
        }
    }
    let n = i - 1;
    store.sync().unwrap();
    let (seg_a, durable) = store.position();
    store.truncate_from(n - 1).unwrap();
    store.append(n - 1, &entry(n - 1, 1)).unwrap();
    store.append(n, &entry(n, 1)).unwrap();
    assert_eq!(store.position().0, seg_a, "still in the same segment");
    store.append(n + 1, &entry(n + 1, 1)).unwrap();
    assert_ne!(store.position().0, seg_a, "rolled over");

    let copy = crash_copy(&store);
    let a = copy.path().join(seg_a.file_name().unwrap());
    // The flusher had not sealed A yet; its unsynced tail never reached the disk.
    patch(&a, |b| {
        b[40..56].fill(0);
        b[durable as usize..].fill(0);
    });
    let rec = Store::open(copy.path(), config).unwrap();
    let m = observe(&rec);
    // States since the sync: old 1..=n, then 1..=n-2, then new n-1, n, n+1 appended.
    let old_ok = m.next == n + 1 && (1..=n).all(|i| m.entries[&i][..] == entry(i, 0)[..]);
    let new_ok = (n - 1..=n + 2).contains(&m.next)
        && (1..n - 1).all(|i| m.entries[&i][..] == entry(i, 0)[..])
        && (n - 1..m.next).all(|i| m.entries[&i][..] == entry(i, 1)[..]);
    assert!(
        old_ok || new_ok,
        "recovered a log that never existed: next={} (n={n}); entry {} is {}, entry {} is {}",
        m.next,
        n - 1,
        if m.entries[&(n - 1)][..] == entry(n - 1, 0)[..] {
            "old"
        } else {
            "new"
        },
        n + 1,
        if m.entries.contains_key(&(n + 1)) {
            "present"
        } else {
            "absent"
        },
    );
}
