//! The harness of the crash models: `tests/crash_model.rs` (over `Store`) and
//! `tests/raft_crash_model.rs` (over `RaftLog`). Each model file keeps its operations, its
//! model and its checks; this module does the rest, generic over the [`CrashModel`] and its
//! [`Opener`] (`Store` or `RaftLog`):
//!
//! * [`Harness`]: the live subject, its model, the [`History`] of model states since the durable
//!   frontier, and the flush bookkeeping (a flush's callback moves the frontier to the state and
//!   position it was issued at; a sync moves it to the current one).
//! * [`Harness::crash_and_check`]: copies the segments of the open subject, damages the copy
//!   after the durable frontier ([`damage`]), recovers it and requires one of the candidate
//!   states, then a second open that changes nothing, and a new entry where the old tail was
//!   that survives a reopen with no stale record coming back.
//! * [`Case`], [`case_strategy`], [`run_case`]: proptest cases (segment size, `prepare_ahead`,
//!   ops, seed) and their run with a crash at every `Crash` op and after the last one.

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};

use proptest::prelude::*;
use raft_mmap_log::raft::{RaftError, RaftLog, RaftTypes};
use raft_mmap_log::{Config, Error, RecoveryReport, Store};

use super::damage::damage;
use super::{copy_segments, derive, Rng};

/// What a crash model opens: `Store` or `RaftLog` (implemented below).
/// Errors are the Raft layer's, which wraps the engine's.
pub trait Opener: Sized {
    fn open(dir: &Path, config: Config) -> Result<Self, RaftError<RaftTypes>>;
    /// The engine under it (position, directory, recovery report).
    fn store(&self) -> &Store;
    fn flush(
        &mut self,
        done: impl FnOnce(Result<(), Error>) + Send + 'static,
    ) -> Result<(), RaftError<RaftTypes>>;
    fn sync(&mut self) -> Result<(), RaftError<RaftTypes>>;
}

impl Opener for Store {
    fn open(dir: &Path, config: Config) -> Result<Self, RaftError<RaftTypes>> {
        Ok(Store::open(dir, config)?)
    }
    fn store(&self) -> &Store {
        self
    }
    fn flush(
        &mut self,
        done: impl FnOnce(Result<(), Error>) + Send + 'static,
    ) -> Result<(), RaftError<RaftTypes>> {
        Ok(Store::flush(self, done)?)
    }
    fn sync(&mut self) -> Result<(), RaftError<RaftTypes>> {
        Ok(Store::sync(self)?)
    }
}

impl Opener for RaftLog<RaftTypes> {
    fn open(dir: &Path, config: Config) -> Result<Self, RaftError<RaftTypes>> {
        RaftLog::open(dir, config)
    }
    fn store(&self) -> &Store {
        RaftLog::store(self)
    }
    fn flush(
        &mut self,
        done: impl FnOnce(Result<(), Error>) + Send + 'static,
    ) -> Result<(), RaftError<RaftTypes>> {
        RaftLog::flush(self, done)
    }
    fn sync(&mut self) -> Result<(), RaftError<RaftTypes>> {
        RaftLog::sync(self)
    }
}

/// The model of a crash model: what its log exposes.
pub trait CrashModel: Clone + Default + PartialEq + Debug {
    /// What holds the log.
    type Log: Opener;
    /// The content `log` exposes, checked for consistency between its readers.
    fn observe(log: &Self::Log) -> Self;
    /// One line describing the state (failure reports).
    fn summary(&self) -> String;
    /// The index the next entry gets.
    fn next_index(&self) -> u64;
    /// The payload length of entry `index`, if there is one.
    fn entry_len(&self, index: u64) -> Option<usize>;
}

/// Model states since the durable frontier, with absolute numbering.
pub struct History<M> {
    /// Absolute number of `states[0]`.
    pub base: usize,
    /// `states[0]` is the durable state; every later one may be what a crash recovers.
    pub states: Vec<M>,
    /// Durable frontier: active segment and offset when the last completed flush was issued.
    pub durable: (PathBuf, u64),
}

impl<M> History<M> {
    pub fn push(&mut self, m: M) {
        self.states.push(m);
    }
    pub fn current_abs(&self) -> usize {
        self.base + self.states.len() - 1
    }
    /// The flush issued at absolute state `abs` with position `pos` has completed.
    pub fn advance(&mut self, abs: usize, pos: (PathBuf, u64)) {
        if abs < self.base {
            return;
        }
        self.states.drain(..abs - self.base);
        self.base = abs;
        self.durable = pos;
    }
}

type Done = (u64, Result<(), Error>);

/// A live subject, its model and the states a crash may recover.
pub struct Harness<M: CrashModel> {
    pub live: M::Log,
    pub config: Config,
    pub model: M,
    pub hist: History<M>,
    /// Flushes issued and not yet seen completing: (id, absolute state, position).
    pending: Vec<(u64, usize, (PathBuf, u64))>,
    done_tx: mpsc::Sender<Done>,
    done_rx: mpsc::Receiver<Done>,
    next_flush: u64,
}

/// What a crash and its recovery gave ([`Harness::crash_and_check`]).
pub struct Crash<M> {
    /// The damage done to the copy.
    pub desc: String,
    /// How many states the recovery could have chosen from.
    pub candidates: usize,
    /// Which one it recovered (the last matching; `candidates - 1` is the latest).
    pub pos: usize,
    /// The recovered state.
    pub rec: M,
    /// What the first recovery did.
    pub report: RecoveryReport,
}

impl<M: CrashModel> Harness<M> {
    /// Opens a fresh subject in `dir`; its model is the default one.
    pub fn new(dir: &Path, config: Config) -> Self {
        let live = M::Log::open(dir, config.clone()).expect("open fresh");
        let model = M::observe(&live);
        assert_eq!(model, M::default());
        let (done_tx, done_rx) = mpsc::channel();
        let durable = live.store().position();
        Harness {
            live,
            config,
            hist: History {
                base: 0,
                states: vec![model.clone()],
                durable,
            },
            model,
            pending: Vec::new(),
            done_tx,
            done_rx,
            next_flush: 0,
        }
    }

    /// Records the current model as a state a crash may recover.
    pub fn record(&mut self) {
        self.hist.push(self.model.clone());
    }

    /// Issues a flush; its callback (seen by [`Self::wait_flushes`]) makes the current state
    /// and position the durable frontier.
    pub fn flush(&mut self) {
        let id = self.next_flush;
        self.next_flush += 1;
        let tx = self.done_tx.clone();
        self.pending
            .push((id, self.hist.current_abs(), self.live.store().position()));
        self.live
            .flush(move |r| {
                let _ = tx.send((id, r));
            })
            .expect("flush");
    }

    /// Syncs: the current state and position become the durable frontier.
    pub fn sync(&mut self) {
        self.live.sync().expect("sync");
        let abs = self.hist.current_abs();
        // Callbacks run in order: every earlier flush has completed too.
        self.wait_flushes();
        self.hist.advance(abs, self.live.store().position());
    }

    /// Waits for every issued flush; the last one becomes the durable frontier.
    pub fn wait_flushes(&mut self) {
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

    /// Crash: copies the segments of the live subject, damages the copy after the durable
    /// frontier (`workarounds`: see [`damage`]), recovers it and checks that the recovered
    /// state is one of the candidates (the states since the frontier), then `check(candidates,
    /// recovered)`; that a second open finds the same state; and that a new entry at the
    /// recovered next index (`append(subject, recovered, index, payload)` appends it and
    /// returns the expected model; same length as the lost entry at that index, if any, so
    /// record boundaries line up with stale ones) is there live and after a reopen.
    pub fn crash_and_check(
        &mut self,
        seed: u64,
        workarounds: bool,
        check: impl FnOnce(&[M], &M),
        append: impl FnOnce(&mut M::Log, &M, u64, Arc<[u8]>) -> M,
    ) -> Crash<M> {
        self.wait_flushes();
        // The live subject matches the model exactly.
        assert_eq!(
            M::observe(&self.live),
            self.model,
            "live log differs from the model"
        );

        let copy = tempfile::tempdir().expect("tempdir");
        copy_segments(self.live.store().dir(), copy.path());
        let mut rng = Rng(seed);
        let desc = damage(copy.path(), &self.hist.durable, &mut rng, workarounds);
        let cands = &self.hist.states;
        let explain = |rec: Option<&M>, opened: Option<&M::Log>| {
            let mut s = format!("damage: {desc}\n");
            if let Some(rec) = rec {
                s += &format!("recovered: {}\n", rec.summary());
            }
            s += "candidates (oldest = durable):\n";
            for c in cands {
                s += &format!("  {}\n", c.summary());
            }
            if let Some(o) = opened {
                s += &format!("report: {:?}\n", o.store().recovery_report());
            }
            s
        };

        let recovered = match M::Log::open(copy.path(), self.config.clone()) {
            Ok(l) => l,
            Err(e) => panic!("recovery failed: {e}\n{}", explain(None, None)),
        };
        let rec = M::observe(&recovered);
        let pos = cands.iter().rposition(|c| *c == rec).unwrap_or_else(|| {
            panic!(
                "recovered state is not one the log went through since the last completed \
                 flush or sync\n{}",
                explain(Some(&rec), Some(&recovered))
            )
        });
        check(cands, &rec);
        let report = recovered.store().recovery_report().clone();
        drop(recovered);

        // A second open finds exactly the same log.
        let mut again = M::Log::open(copy.path(), self.config.clone()).expect("second reopen");
        assert_eq!(M::observe(&again), rec, "second reopen changed the log");

        // A new entry lands where the old tail was; stale records after it must stay dead.
        let index = rec.next_index();
        let len = cands
            .iter()
            .rev()
            .find_map(|c| c.entry_len(index))
            .unwrap_or(rng.below(300) as usize);
        let p = derive(index, u64::MAX - seed, len);
        let expect = append(&mut again, &rec, index, p);
        again.sync().expect("sync after recovery");
        assert_eq!(M::observe(&again), expect, "live after append");
        drop(again);
        let last = M::Log::open(copy.path(), self.config.clone()).expect("third reopen");
        assert_eq!(
            M::observe(&last),
            expect,
            "after append + reopen\n{}",
            explain(Some(&rec), Some(&last))
        );
        Crash {
            desc,
            candidates: cands.len(),
            pos,
            rec,
            report,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Cases

/// Proptest case count: `PROPTEST_CASES`, default 64.
pub fn proptest_cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

/// One proptest case of a crash model.
#[derive(Debug, Clone)]
pub struct Case<Op> {
    pub segment_size: u64,
    pub prepare_ahead: bool,
    pub ops: Vec<Op>,
    pub seed: u64,
}

impl<Op> Case<Op> {
    /// Tiny segments, `prepare_ahead` as drawn, the allocation path `RML_ALLOCATION` names and
    /// the flush I/O `RML_FLUSH_IO` names.
    pub fn config(&self) -> Config {
        Config {
            segment_size: self.segment_size,
            prepare_ahead: self.prepare_ahead,
            allocation: super::allocation_from_env(),
            flush_io: super::flush_io_from_env(),
            ..Default::default()
        }
    }
}

/// Cases of 4 KiB (3 in 4) or 8 KiB segments: either up to 80 ops of `ops(true)` (flushes and
/// syncs every few operations), or up to 20 of those, a `sync`, then up to 50 of `ops(false)`
/// (none: several segments written since the frontier).
pub fn case_strategy<Op: Clone + Debug + 'static>(
    ops: impl Fn(bool) -> BoxedStrategy<Op>,
    sync: Op,
) -> impl Strategy<Value = Case<Op>> {
    (
        prop_oneof![3 => Just(4096u64), 1 => Just(8192u64)],
        any::<bool>(),
        prop_oneof![
            prop::collection::vec(ops(true), 1..80),
            // Rare flushes: several segments written since the frontier.
            (
                prop::collection::vec(ops(true), 0..20),
                prop::collection::vec(ops(false), 1..50),
            )
                .prop_map(move |(mut head, tail)| {
                    head.push(sync.clone());
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

/// A crash model: its harness, how it applies an op, how it crashes.
pub trait Workload: Sized {
    type Op;
    fn new(dir: &Path, config: Config) -> Self;
    fn is_crash(op: &Self::Op) -> bool;
    fn apply(&mut self, op: &Self::Op);
    fn crash_and_check(&mut self, seed: u64);
}

/// Runs `case` in a fresh directory: every op, a crash (seeds `seed`, `seed + 1`, ...) at every
/// crash op and one after the last; returns `finish(workload)`.
pub fn run_case<W: Workload, R>(case: &Case<W::Op>, finish: impl FnOnce(W) -> R) -> R {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = W::new(dir.path(), case.config());
    let mut crashes = 0u64;
    for op in &case.ops {
        if W::is_crash(op) {
            w.crash_and_check(case.seed.wrapping_add(crashes));
            crashes += 1;
        } else {
            w.apply(op);
        }
    }
    w.crash_and_check(case.seed.wrapping_add(crashes));
    finish(w)
}
