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
//! Case count: `PROPTEST_CASES` (default 64).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};

use proptest::prelude::*;
use raft_mmap_log::{Config, Error, Store};

mod common;

use common::{copy_segments, damage, derive, proptest_cases, seg_files, History, Rng};

const META_KEYS: u64 = 4;

// ---------------------------------------------------------------------------------------------
// Model

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Model {
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
    let snap = store.reader().snapshot();
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

struct Harness {
    store: Store,
    config: Config,
    model: Model,
    hist: History<Model>,
    generation: u64,
    /// Flushes issued and not yet seen completing: (id, absolute state, position).
    pending: Vec<(u64, usize, (PathBuf, u64))>,
    done_tx: mpsc::Sender<(u64, Result<(), Error>)>,
    done_rx: mpsc::Receiver<(u64, Result<(), Error>)>,
    next_flush: u64,
}

impl Harness {
    fn new(dir: &Path, config: Config) -> Self {
        let store = Store::open(dir, config.clone()).expect("open fresh");
        let model = observe(&store);
        assert_eq!(model, Model::default());
        let (done_tx, done_rx) = mpsc::channel();
        let durable = store.position();
        Harness {
            store,
            config,
            hist: History {
                base: 0,
                states: vec![model.clone()],
                durable,
            },
            model,
            generation: 0,
            pending: Vec::new(),
            done_tx,
            done_rx,
            next_flush: 0,
        }
    }

    /// Records the model after a step and checks the live store against it (cheaply).
    fn step(&mut self) {
        self.hist.push(self.model.clone());
        assert_eq!(self.store.first_index(), self.model.first, "live first");
        assert_eq!(self.store.next_index(), self.model.next, "live next");
        if let Some((i, p)) = self.model.entries.iter().next_back() {
            assert_eq!(self.store.reader().snapshot().get(*i), Some(&p[..]));
        }
    }

    fn apply(&mut self, op: &Op) {
        let m = &self.model;
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
                self.store
                    .append_batch(batch.iter().map(|(i, p)| (*i, &p[..])))
                    .expect("append_batch");
                // A batch is not atomic: every prefix is a state a crash may recover.
                for (i, p) in batch {
                    self.model.append(i, p);
                    self.hist.push(self.model.clone());
                }
                self.hist.states.pop();
                self.step();
            }
            Op::TruncateFrom(pick) | Op::TruncateAfter(pick) => {
                let from = pick_in(*pick, m.first.saturating_sub(1), m.next + 1);
                let r = match op {
                    Op::TruncateFrom(_) => self.store.truncate_from(from),
                    _ => match from.checked_sub(1) {
                        Some(idx) => self.store.truncate_after(idx),
                        None => return,
                    },
                };
                if from < m.first {
                    assert!(
                        matches!(r, Err(Error::TruncateBelowPurged { .. })),
                        "truncate from {from} below first {}: {r:?}",
                        m.first
                    );
                } else {
                    r.expect("truncate");
                    self.model.truncate_from(from);
                }
                self.step();
            }
            Op::Purge(pick) => {
                let upto = pick_in(*pick, m.first.saturating_sub(1), m.next + 2);
                self.store.purge_upto(upto).expect("purge_upto");
                self.model.purge_to(upto + 1);
                self.step();
            }
            Op::Meta { key, len } => {
                self.generation += 1;
                let key = u64::from(*key);
                let v = derive(key | 1 << 63, self.generation, *len as usize);
                self.store.put_meta(key, &v).expect("put_meta");
                self.model.metas.insert(key, v);
                self.step();
            }
            Op::Flush => {
                let id = self.next_flush;
                self.next_flush += 1;
                let tx = self.done_tx.clone();
                self.pending
                    .push((id, self.hist.current_abs(), self.store.position()));
                self.store
                    .flush(move |r| {
                        let _ = tx.send((id, r));
                    })
                    .expect("flush");
            }
            Op::Sync => {
                self.store.sync().expect("sync");
                let abs = self.hist.current_abs();
                // Callbacks run in order: every earlier flush has completed too.
                self.wait_flushes();
                self.hist.advance(abs, self.store.position());
            }
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
                let r = self.store.append(bad, b"bad");
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

    /// Waits for every issued flush; the last one becomes the durable frontier.
    fn wait_flushes(&mut self) {
        for (id, abs, pos) in std::mem::take(&mut self.pending) {
            let (got, r) = self
                .done_rx
                .recv_timeout(std::time::Duration::from_secs(30))
                .expect("flush callback");
            assert_eq!(got, id, "flush callbacks out of order");
            r.expect("flush result");
            self.hist.advance(abs, pos);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Crash: copy, damage (tests/common), recover, check

fn crash_and_check(h: &mut Harness, seed: u64) {
    h.wait_flushes();
    // The live store matches the model exactly.
    assert_eq!(
        observe(&h.store),
        h.model,
        "live store differs from the model"
    );

    let copy = tempfile::tempdir().expect("tempdir");
    copy_segments(h.store.dir(), copy.path());
    let mut rng = Rng(seed);
    let desc = damage(copy.path(), &h.hist.durable, &mut rng, false);
    let cands = &h.hist.states;
    let explain = |rec: &Model, store: Option<&Store>| {
        let mut s = format!(
            "damage: {desc}\nrecovered: {}\ncandidates:\n",
            rec.summary()
        );
        for c in cands {
            s += &format!("  {}\n", c.summary());
        }
        if let Some(st) = store {
            s += &format!("report: {:?}\n", st.recovery_report());
        }
        s
    };

    let store = match Store::open(copy.path(), h.config.clone()) {
        Ok(s) => s,
        Err(e) => panic!("recovery failed: {e}\n{}", explain(&Model::default(), None)),
    };
    let rec = observe(&store);
    assert!(
        cands.contains(&rec),
        "recovered state is not one the log went through since the last flush\n{}",
        explain(&rec, Some(&store))
    );
    if std::env::var("CRASH_MODEL_STATS").is_ok() {
        let pos = cands.iter().rposition(|c| *c == rec).unwrap_or(0);
        eprintln!(
            "STAT cands={} recovered_pos={} cut={} dropped={} len={} desc={desc}",
            cands.len(),
            pos,
            store.recovery_report().cut.is_some(),
            store.recovery_report().dropped_files.len(),
            rec.next - rec.first,
        );
    }
    drop(store);

    // A second open finds exactly the same log.
    let mut store = Store::open(copy.path(), h.config.clone()).expect("second reopen");
    assert_eq!(observe(&store), rec, "second reopen changed the log");

    // A new append lands where the old tail was; stale records after it must stay dead. Same
    // length as the lost entry at that index, so record boundaries line up with stale ones.
    let index = rec.next;
    let len = cands
        .iter()
        .rev()
        .find_map(|c| c.entries.get(&index).map(|p| p.len()))
        .unwrap_or(rng.below(300) as usize);
    let p = derive(index, u64::MAX - seed, len);
    store.append(index, &p).expect("append after recovery");
    store.sync().expect("sync after recovery");
    let mut expect = rec.clone();
    expect.append(index, p);
    assert_eq!(observe(&store), expect, "live after append");
    drop(store);
    let store = Store::open(copy.path(), h.config.clone()).expect("third reopen");
    assert_eq!(
        observe(&store),
        expect,
        "after append + reopen\n{}",
        explain(&rec, Some(&store))
    );
}

#[derive(Debug, Clone)]
struct Case {
    segment_size: u64,
    prepare_ahead: bool,
    ops: Vec<Op>,
    seed: u64,
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        prop_oneof![3 => Just(4096u64), 1 => Just(8192u64)],
        any::<bool>(),
        prop_oneof![
            prop::collection::vec(op_strategy(2), 1..80),
            // Rare flushes: several segments written since the frontier.
            (
                prop::collection::vec(op_strategy(2), 0..20),
                prop::collection::vec(op_strategy(0), 1..50),
            )
                .prop_map(|(mut head, tail)| {
                    head.push(Op::Sync);
                    head.extend(tail);
                    head
                }),
        ],
        any::<u64>(),
    )
        .prop_map(|(segment_size, prepare_ahead, ops, seed)| Case {
            segment_size,
            prepare_ahead,
            ops,
            seed,
        })
}

fn run_case(case: &Case) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        segment_size: case.segment_size,
        prepare_ahead: case.prepare_ahead,
        allocation: common::allocation_from_env(),
        ..Default::default()
    };
    let mut h = Harness::new(dir.path(), config);
    let mut crashes = 0u64;
    for op in &case.ops {
        if let Op::Crash = op {
            crash_and_check(&mut h, case.seed.wrapping_add(crashes));
            crashes += 1;
        } else {
            h.apply(op);
        }
    }
    crash_and_check(&mut h, case.seed.wrapping_add(crashes));
}

proptest! {
    #![proptest_config(ProptestConfig {
        // Do not write regression files into the source tree.
        failure_persistence: None,
        ..ProptestConfig::with_cases(proptest_cases())
    })]

    #[test]
    fn crash_recovers_a_state_since_the_last_flush(case in case_strategy()) {
        run_case(&case);
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
