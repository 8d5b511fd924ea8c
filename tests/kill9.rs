//! Crash tests of the whole engine, checked against an exact model of the operations.
//!
//! * **`kill9_rounds`** (process crash): the test re-executes its own binary as a child
//!   (`child_entry`, selected by the `RML_KILL9_CHILD` env var). The child opens the log, appends
//!   batches, truncates, purges and sets a meta value, with small segments (16 KiB) so that kills
//!   land during rollovers. Before each operation it writes an *intent* line to stdout (a pipe),
//!   and from each flush callback it writes an *ack* line: "everything up to operation n is
//!   durable". The parent SIGKILLs it at a random moment, reopens the directory and checks that
//!   the recovered log is exactly the state after some operation `k >= n` (every acknowledged
//!   append, truncate, purge and meta write is there, every payload has the right bytes, no
//!   gaps, nothing that was never written), then that a read-only `inspect::stat` reports no
//!   corruption and no cut. The next round continues in the same directory.
//!   `RML_KILL9_ROUNDS` (default 60) sets the number of kills.
//!
//! * **`power_loss_simulation`**: SIGKILL keeps the page cache, so it cannot lose unsynced
//!   writes. This test records the durable frontier (`Store::position()` right after `sync()`),
//!   keeps writing without flushing, copies the directory and, on the copy, drops what a power
//!   cut could drop: each 4 KiB page after the frontier is kept, zeroed or filled with garbage,
//!   sealed marks written after the frontier may be lost, segment files created after the
//!   frontier may be missing. The copy must recover to the state after some operation at or
//!   after the frontier. `RML_POWERLOSS_ROUNDS` (default 60) sets the number of simulated cuts.
//!   What it cannot simulate is listed in `docs/reliability.md`.
//!
//! Every payload names its index and an "epoch" (changed at each truncate) and is otherwise a
//! pure function of both, so a recovered entry is checked byte for byte.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use raft_mmap_log::inspect;
use raft_mmap_log::raft::{LogId, RaftLog, RaftTypes, Vote};
use raft_mmap_log::{Config, Store};

mod common;

use common::Rng;

const CHILD_ENV: &str = "RML_KILL9_CHILD";
const SEED_ENV: &str = "RML_KILL9_SEED";
const SEG: u64 = 16 * 1024;
const PAGE: usize = 4096;
const META_KEY: u64 = 1;

// ---------------------------------------------------------------------------------------------
// Shared: deterministic randomness (`common::Rng`), payloads, the model.

fn seed_from_env(var: &str) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

fn env_usize(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Payload of entry `index` written in `epoch`: 16 bytes naming both, then 0..700 bytes that
/// depend on both.
fn payload(index: u64, epoch: u64) -> Vec<u8> {
    let mut r = Rng(index.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ epoch.rotate_left(23));
    let len = r.below(700) as usize;
    let mut v = Vec::with_capacity(16 + len);
    v.extend_from_slice(&index.to_le_bytes());
    v.extend_from_slice(&epoch.to_le_bytes());
    while v.len() < 16 + len {
        let w = r.next().to_le_bytes();
        let n = w.len().min(16 + len - v.len());
        v.extend_from_slice(&w[..n]);
    }
    v
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Append { index: u64, epoch: u64 },
    Truncate { from: u64 },
    Purge { first: u64 },
    Meta { value: u64 },
}

impl Op {
    fn encode(&self) -> String {
        match self {
            Op::Append { index, epoch } => format!("E {index} {epoch}"),
            Op::Truncate { from } => format!("T {from}"),
            Op::Purge { first } => format!("P {first}"),
            Op::Meta { value } => format!("M {value}"),
        }
    }
    fn decode(s: &str) -> Option<Op> {
        let mut it = s.split(' ');
        let tag = it.next()?;
        let a: u64 = it.next()?.parse().ok()?;
        Some(match tag {
            "E" => Op::Append {
                index: a,
                epoch: it.next()?.parse().ok()?,
            },
            "T" => Op::Truncate { from: a },
            "P" => Op::Purge { first: a },
            "M" => Op::Meta { value: a },
            _ => return None,
        })
    }
}

/// The logical content of the log: the same rules as the engine's `LogState`, plus the epoch
/// of every live entry (as runs `(first index, epoch)`) and the meta value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Model {
    first: u64,
    next: u64,
    runs: Vec<(u64, u64)>,
    meta: Option<u64>,
}

impl Model {
    fn is_empty(&self) -> bool {
        self.first == self.next
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Append { index, epoch } => {
                assert!(
                    index == self.next || (self.is_empty() && index > self.next),
                    "model: bad append {index} at {self:?}"
                );
                if self.is_empty() {
                    self.first = index;
                }
                self.next = index + 1;
                if self.runs.last().map(|r| r.1) != Some(epoch) {
                    self.runs.push((index, epoch));
                }
            }
            Op::Truncate { from } => {
                assert!(from >= self.first);
                self.next = self.next.min(from.max(self.first));
            }
            Op::Purge { first } => {
                if first > self.first {
                    self.first = first;
                    self.next = self.next.max(first);
                }
            }
            Op::Meta { value } => self.meta = Some(value),
        }
        self.normalize();
    }

    /// Keeps only runs that cover live entries, each starting at or after `first`.
    fn normalize(&mut self) {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (i, &(s, e)) in self.runs.iter().enumerate() {
            let end = self
                .runs
                .get(i + 1)
                .map(|r| r.0)
                .unwrap_or(u64::MAX)
                .min(self.next);
            let s = s.max(self.first);
            if s < end && out.last().map(|r| r.1) != Some(e) {
                out.push((s, e));
            }
        }
        self.runs = out;
    }

    fn epoch_of(&self, index: u64) -> Option<u64> {
        if index < self.first || index >= self.next {
            return None;
        }
        self.runs.iter().rev().find(|r| r.0 <= index).map(|r| r.1)
    }
}

/// Reads the whole log back, checking every payload against its own index and epoch, and
/// returns it as a model. Panics on a gap or a payload that is not exactly what was written.
fn observe(store: &Store) -> Model {
    let snap = store.reader().snapshot();
    let (first, next) = (store.first_index(), store.next_index());
    assert_eq!(
        (snap.first_index(), snap.next_index()),
        (first, next),
        "snapshot and store disagree"
    );
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let mut expect = first;
    for e in snap.range(..) {
        assert_eq!(e.index, expect, "gap or reordering in the recovered log");
        assert!(e.payload.len() >= 16, "entry {} too short", e.index);
        let idx = u64::from_le_bytes(e.payload[..8].try_into().unwrap());
        let epoch = u64::from_le_bytes(e.payload[8..16].try_into().unwrap());
        assert_eq!(idx, e.index, "entry {} holds the payload of {idx}", e.index);
        assert!(
            e.payload == payload(e.index, epoch).as_slice(),
            "entry {} (epoch {epoch}) has wrong bytes",
            e.index
        );
        assert_eq!(snap.get(e.index), Some(e.payload), "get != range");
        if runs.last().map(|r| r.1) != Some(epoch) {
            runs.push((e.index, epoch));
        }
        expect += 1;
    }
    assert_eq!(
        expect, next,
        "range stops at {expect}, next index is {next}"
    );
    let meta = store.meta(META_KEY).map(|v| {
        assert_eq!(v.len(), 8, "meta value length");
        u64::from_le_bytes(v.try_into().unwrap())
    });
    Model {
        first,
        next,
        runs,
        meta,
    }
}

/// Finds `k` in `acked..=ops.len()` such that `start` + `ops[..k]` equals `got`.
fn match_prefix(start: &Model, ops: &[Op], acked: usize, got: &Model) -> Result<usize, String> {
    let mut m = start.clone();
    for op in &ops[..acked] {
        m.apply(op);
    }
    let at_ack = m.clone();
    for k in acked..=ops.len() {
        if &m == got {
            return Ok(k);
        }
        if let Some(op) = ops.get(k) {
            m.apply(op);
        }
    }
    // Explain the first difference from the acknowledged state.
    let mut why = format!(
        "recovered state matches no state at or after the acknowledged op {acked} (of {}):\n  \
         recovered: first={} next={} meta={:?} runs={:?}\n  acked:     first={} next={} meta={:?} runs={:?}",
        ops.len(),
        got.first,
        got.next,
        got.meta,
        got.runs,
        at_ack.first,
        at_ack.next,
        at_ack.meta,
        at_ack.runs
    );
    for i in got.first..got.next {
        if got.epoch_of(i) != at_ack.epoch_of(i) {
            why += &format!(
                "\n  first entry differing from the acked state: {i} epoch {:?} vs {:?}",
                got.epoch_of(i),
                at_ack.epoch_of(i)
            );
            break;
        }
    }
    why += &format!(
        "\n  ops after ack: {:?}",
        &ops[acked..ops.len().min(acked + 40)]
    );
    Err(why)
}

/// Drives random operations against a store, keeping the model in step.
struct Driver {
    store: Store,
    model: Model,
    rng: Rng,
    epoch: u64,
    meta_counter: u64,
}

impl Driver {
    fn new(store: Store, model: Model, seed: u64) -> Self {
        Driver {
            store,
            model,
            rng: Rng(seed),
            // Unique per driver: a new process never reuses an epoch of an earlier one.
            epoch: (seed & 0xFFFF_FFFF) << 24,
            meta_counter: seed << 20,
        }
    }

    /// Performs one random operation (a batch of appends is several ops). `intent` sees the
    /// ops before any byte of them is written.
    fn step(&mut self, intent: &mut dyn FnMut(&[Op])) {
        let (first, next) = (self.model.first, self.model.next);
        let len = next - first;
        let r = self.rng.below(100);
        let ops: Vec<Op> = if r < 4 && len > 0 {
            let from = first + self.rng.below(len);
            self.epoch += 1;
            vec![Op::Truncate { from }]
        } else if r < 9 || len > 300 {
            let target = if self.rng.below(10) == 0 {
                next + self.rng.below(3)
            } else {
                first + 1 + self.rng.below(len.max(1))
            };
            if target <= first {
                return;
            }
            vec![Op::Purge { first: target }]
        } else if r < 12 {
            self.meta_counter += 1;
            vec![Op::Meta {
                value: self.meta_counter,
            }]
        } else {
            let start = next.max(1);
            let n = 1 + self.rng.below(8);
            (start..start + n)
                .map(|index| Op::Append {
                    index,
                    epoch: self.epoch,
                })
                .collect()
        };
        intent(&ops);
        match &ops[0] {
            Op::Append { .. } => {
                let data: Vec<(u64, Vec<u8>)> = ops
                    .iter()
                    .map(|op| match *op {
                        Op::Append { index, epoch } => (index, payload(index, epoch)),
                        _ => unreachable!(),
                    })
                    .collect();
                self.store
                    .append_batch(data.iter().map(|(i, p)| (*i, &p[..])))
                    .expect("append_batch");
            }
            Op::Truncate { from } => self.store.truncate_from(*from).expect("truncate"),
            Op::Purge { first } => self.store.purge_to(*first).expect("purge"),
            Op::Meta { value } => self
                .store
                .put_meta(META_KEY, &value.to_le_bytes())
                .expect("put_meta"),
        }
        for op in &ops {
            self.model.apply(op);
        }
    }
}

fn config() -> Config {
    common::strict_config(SEG, true)
}

/// Read-only check: the directory holds no corruption and no torn tail.
fn assert_clean(dir: &Path) {
    check_clean(dir).unwrap_or_else(|why| panic!("{why}"));
}

/// [`assert_clean`] as a result.
fn check_clean(dir: &Path) -> Result<(), String> {
    let stat = inspect::stat(dir)
        .map_err(|e| format!("read-only stat of {} failed: {e}", dir.display()))?;
    if stat.corruption.is_some() || stat.recovery.cut.is_some() {
        return Err(format!(
            "cut or corruption after a clean close: {:?} {:?}",
            stat.corruption, stat.recovery
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Process crash (SIGKILL).

fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    // A failed write means the parent is gone: nothing to report to.
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Entry point of the child process; a no-op in a normal test run.
#[test]
fn child_entry() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let seed = seed_from_env(SEED_ENV);
    let store = match Store::open(&dir, config()) {
        Ok(s) => s,
        Err(e) => {
            emit(&format!("RML FAIL open: {e}\n"));
            std::process::exit(3);
        }
    };
    // The parent knows the starting state; the child only needs it to pick valid ops.
    let model = observe(&store);
    emit("\nRML OPEN\n");
    let mut d = Driver::new(store, model, seed);
    let mut issued = 0usize;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut steps = 0u64;
    while Instant::now() < deadline {
        d.step(&mut |ops| {
            let mut s = String::new();
            for op in ops {
                s += "RML O ";
                s += &op.encode();
                s.push('\n');
            }
            emit(&s);
            issued += ops.len();
        });
        steps += 1;
        let n = issued;
        let report = move |r: raft_mmap_log::Result<()>| match r {
            Ok(()) => emit(&format!("RML A {n}\n")),
            Err(e) => emit(&format!("RML FAIL flush: {e}\n")),
        };
        if steps % 32 == 0 {
            // Keep the flush backlog bounded.
            d.store.sync().expect("sync");
            report(Ok(()));
        } else {
            d.store.flush(report).expect("flush");
        }
    }
    emit("RML FAIL child was not killed in time\n");
    std::process::exit(4);
}

struct ChildRun {
    ops: Vec<Op>,
    acked: usize,
    opened: bool,
}

/// Runs the test `name` of this binary as a child with `env_var=dir`, SIGKILLs it after
/// `delay` and returns its complete stdout lines (only complete lines count: an op whose intent
/// line was cut by the kill never started) and its stderr.
fn spawn_and_kill(
    name: &str,
    env_var: &str,
    dir: &Path,
    seed: u64,
    delay: Duration,
) -> (Vec<u8>, String) {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(env_var, dir)
        .env(SEED_ENV, seed.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_thread = std::thread::spawn(move || {
        let mut v = String::new();
        let _ = stderr.read_to_string(&mut v);
        v
    });
    std::thread::sleep(delay);
    let early_exit = child.try_wait().unwrap();
    child.kill().ok(); // SIGKILL on Unix
    let status = child.wait().unwrap();
    let mut out = out_thread.join().unwrap();
    let err = err_thread.join().unwrap();
    {
        use std::os::unix::process::ExitStatusExt;
        assert!(
            early_exit.is_none() && status.signal() == Some(libc::SIGKILL),
            "child ended by itself ({status:?}); stderr:\n{err}\nstdout tail:\n{}",
            String::from_utf8_lossy(&out[out.len().saturating_sub(2000)..])
        );
    }
    out.truncate(out.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1));
    (out, err)
}

fn run_child_and_kill(dir: &Path, seed: u64, delay: Duration) -> ChildRun {
    let (complete, err) = spawn_and_kill("child_entry", CHILD_ENV, dir, seed, delay);
    let mut run = ChildRun {
        ops: Vec::new(),
        acked: 0,
        opened: false,
    };
    for line in BufReader::new(&complete[..]).split(b'\n') {
        let line = line.unwrap();
        let Ok(line) = std::str::from_utf8(&line) else {
            continue;
        };
        // libtest may print "test child_entry ... " in front of the first line.
        let Some(at) = line.find("RML ") else {
            continue;
        };
        let rest = &line[at + 4..];
        if let Some(op) = rest.strip_prefix("O ") {
            run.ops.push(Op::decode(op).expect("bad intent line"));
        } else if let Some(n) = rest.strip_prefix("A ") {
            let n: usize = n.parse().unwrap();
            assert!(n <= run.ops.len(), "ack {n} before its intents");
            run.acked = run.acked.max(n);
        } else if rest == "OPEN" {
            run.opened = true;
        } else if rest.starts_with("FAIL") {
            panic!("child reported: {rest}\nstderr:\n{err}");
        }
    }
    run
}

#[test]
fn kill9_rounds() {
    let rounds = env_usize("RML_KILL9_ROUNDS", 60);
    let seed = seed_from_env("RML_KILL9_TEST_SEED");
    eprintln!("kill9: {rounds} rounds, seed {seed} (RML_KILL9_TEST_SEED to replay)");
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let started = Instant::now();
    let mut model = Model::default();
    let (mut total_ops, mut total_acked, mut beyond_ack, mut cuts, mut in_open) = (0, 0, 0, 0, 0);
    for round in 0..rounds {
        let delay = if rng.below(5) == 0 {
            Duration::from_micros(rng.below(4000))
        } else {
            Duration::from_millis(5 + rng.below(45))
        };
        let run = run_child_and_kill(&dir, seed.wrapping_add(round as u64 + 1), delay);
        let ctx = format!(
            "round {round} (seed {seed}, child {} ops, {} acked, opened: {}, killed after \
             {delay:?})",
            run.ops.len(),
            run.acked,
            run.opened
        );
        let store = match Store::open(&dir, config()) {
            Ok(s) => s,
            Err(e) => common::fail_keeping_dir(
                tmp,
                &dir,
                &format!("{ctx}: reopen after SIGKILL failed: {e}"),
            ),
        };
        if store.recovery_report().cut.is_some() {
            cuts += 1;
        }
        let got = observe(&store);
        let k = match match_prefix(&model, &run.ops, run.acked, &got) {
            Ok(k) => k,
            Err(why) => {
                let report = format!("{:?}", store.recovery_report());
                drop(store);
                common::fail_keeping_dir(
                    tmp,
                    &dir,
                    &format!("{ctx}: {why}\n  reopen recovered: {report}"),
                )
            }
        };
        total_ops += run.ops.len();
        total_acked += run.acked;
        beyond_ack += k - run.acked;
        in_open += usize::from(!run.opened);
        model = got;
        drop(store);
        if let Err(why) = check_clean(&dir) {
            common::fail_keeping_dir(tmp, &dir, &format!("{ctx}: after a clean close: {why}"));
        }
    }
    eprintln!(
        "kill9: {rounds} kills in {:.1?}: {total_ops} ops issued, {total_acked} acknowledged, \
         {beyond_ack} unacknowledged ops survived, {cuts} torn tails cut, {in_open} kills before \
         the child had opened the log",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// Process crash (SIGKILL) of a RaftLog writer.
//
// The child (`raft_child_entry`, env `RML_KILL9_RAFT_CHILD`) drives a `RaftLog`: votes (synced
// before they are acknowledged), appends, commits, conflicting truncates followed by appends in
// a higher term, purges and user data, each announced by an intent line; flush callbacks report
// "ops up to n are durable" with the vote, committed, purged and last log id as of the flush.
// After each kill the parent reopens the log and checks the acknowledged Raft state against
// what was recovered, then that the recovered log is exactly the state after some op at or
// after the acknowledged one, then `inspect::verify`.

const RAFT_CHILD_ENV: &str = "RML_KILL9_RAFT_CHILD";

fn leader(term: u64) -> u64 {
    term % 3 + 1
}

/// Payload of the entry with log id `id`: a log id names one entry in Raft, so the bytes are a
/// function of it (24 bytes naming it, then 0..700 bytes derived from it).
fn raft_payload(id: &LogId) -> Vec<u8> {
    let mut r = Rng(id.index.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ id.term.rotate_left(17));
    let len = r.below(700) as usize;
    let mut v = Vec::with_capacity(24 + len);
    for x in [id.term, id.node_id, id.index] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    while v.len() < 24 + len {
        let w = r.next().to_le_bytes();
        let n = w.len().min(24 + len - v.len());
        v.extend_from_slice(&w[..n]);
    }
    v
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ROp {
    Vote(Vote),
    Append(LogId),
    Commit(LogId),
    Truncate(Option<LogId>),
    Purge(LogId),
    User(Option<u64>),
}

fn enc_id(id: &Option<LogId>) -> String {
    match id {
        Some(l) => format!("{}.{}.{}", l.term, l.node_id, l.index),
        None => "-".into(),
    }
}

fn dec_id(s: &str) -> Option<Option<LogId>> {
    if s == "-" {
        return Some(None);
    }
    let mut it = s.split('.').map(|x| x.parse::<u64>());
    let id = LogId::new(it.next()?.ok()?, it.next()?.ok()?, it.next()?.ok()?);
    Some(Some(id))
}

fn enc_vote(v: &Option<Vote>) -> String {
    match v {
        Some(v) => format!("{}.{}.{}", v.term, v.node_id, u8::from(v.committed)),
        None => "-".into(),
    }
}

fn dec_vote(s: &str) -> Option<Option<Vote>> {
    Some(dec_id(s)?.map(|l| Vote::new(l.term, l.node_id, l.index == 1)))
}

impl ROp {
    fn encode(&self) -> String {
        match self {
            ROp::Vote(v) => format!("V {}", enc_vote(&Some(*v))),
            ROp::Append(id) => format!("E {}", enc_id(&Some(*id))),
            ROp::Commit(id) => format!("C {}", enc_id(&Some(*id))),
            ROp::Truncate(id) => format!("T {}", enc_id(id)),
            ROp::Purge(id) => format!("P {}", enc_id(&Some(*id))),
            ROp::User(u) => format!("U {}", u.map_or("-".into(), |u| u.to_string())),
        }
    }
    fn decode(s: &str) -> Option<ROp> {
        let (tag, arg) = s.split_once(' ')?;
        Some(match tag {
            "V" => ROp::Vote(dec_vote(arg)??),
            "E" => ROp::Append(dec_id(arg)??),
            "C" => ROp::Commit(dec_id(arg)??),
            "T" => ROp::Truncate(dec_id(arg)?),
            "P" => ROp::Purge(dec_id(arg)??),
            "U" if arg == "-" => ROp::User(None),
            "U" => ROp::User(Some(arg.parse().ok()?)),
            _ => return None,
        })
    }
}

/// The Raft state and the log ids of the live entries (payloads are checked on reading).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct RModel {
    vote: Option<Vote>,
    last: Option<LogId>,
    committed: Option<LogId>,
    purged: Option<LogId>,
    user: Option<u64>,
    entries: BTreeMap<u64, LogId>,
}

impl RModel {
    fn apply(&mut self, op: &ROp) {
        match *op {
            ROp::Vote(v) => self.vote = Some(v),
            ROp::Append(id) => {
                assert_eq!(id.index, self.last.map_or(0, |l| l.index + 1), "model: gap");
                self.entries.insert(id.index, id);
                self.last = Some(id);
            }
            ROp::Commit(id) => self.committed = Some(id),
            ROp::Truncate(at) => {
                match at {
                    Some(id) => drop(self.entries.split_off(&(id.index + 1))),
                    None => self.entries.clear(),
                }
                self.last = at.or(self.purged);
            }
            ROp::Purge(id) => {
                if Some(id) > self.purged {
                    self.entries = self.entries.split_off(&(id.index + 1));
                    self.purged = Some(id);
                }
            }
            ROp::User(u) => self.user = u,
        }
    }

    fn line(&self) -> String {
        format!(
            "vote={} last={} committed={} purged={} user={:?} entries={}..{}",
            enc_vote(&self.vote),
            enc_id(&self.last),
            enc_id(&self.committed),
            enc_id(&self.purged),
            self.user,
            self.entries
                .keys()
                .next()
                .map_or("-".into(), |i| i.to_string()),
            self.entries
                .keys()
                .next_back()
                .map_or("-".into(), |i| i.to_string()),
        )
    }
}

/// Reads the whole Raft log back, checking every payload against its log id.
fn raft_observe(log: &RaftLog<RaftTypes>) -> RModel {
    let st = log.state().clone();
    let snap = log.reader().snapshot();
    assert_eq!(
        snap.state().expect("reader state"),
        st,
        "reader != writer state"
    );
    let mut entries = BTreeMap::new();
    for e in snap.read(..) {
        let (id, p) = e.expect("read entry");
        assert!(
            p == raft_payload(&id).as_slice(),
            "entry {id} has wrong bytes ({} bytes)",
            p.len()
        );
        entries.insert(id.index, id);
    }
    let user = st.user_data.as_ref().map(|u| {
        assert_eq!(u.len(), 8, "user data length");
        u64::from_le_bytes(u[..].try_into().unwrap())
    });
    let m = RModel {
        vote: st.vote,
        last: st.last,
        committed: st.committed,
        purged: st.purged,
        user,
        entries,
    };
    assert_eq!(
        m.entries.values().next_back().copied().or(m.purged),
        m.last,
        "last log id vs entries"
    );
    m
}

/// Chooses and performs Raft-legal operations on a `RaftLog`.
struct RaftDriver {
    log: RaftLog<RaftTypes>,
    rng: Rng,
    /// Current term (votes, entries).
    term: u64,
    user_counter: u64,
}

impl RaftDriver {
    fn stored(&self, index: u64) -> Option<LogId> {
        let st = self.log.state();
        match self.log.log_id(index).expect("log_id") {
            Some(id) => Some(id),
            None => st.purged.filter(|p| p.index == index),
        }
    }

    /// One step: picks ops, announces them with `intent`, performs them. Returns whether the
    /// step must be synced before it is acknowledged (a vote).
    fn step(&mut self, intent: &mut dyn FnMut(&[ROp])) -> bool {
        let st = self.log.state().clone();
        let last = st.last.map(|l| l.index);
        let first = st.purged.map_or(0, |p| p.index + 1);
        let len = last.map_or(0, |l| l + 1).saturating_sub(first);
        let r = self.rng.below(100);
        let mut ops = Vec::new();
        if r < 5 {
            let v = match st.vote {
                Some(v) if !v.committed && r % 2 == 0 => Vote::new(v.term, v.node_id, true),
                _ => Vote::new(self.term + 1, 1 + self.rng.below(3), self.rng.below(2) == 0),
            };
            self.term = self.term.max(v.term);
            ops.push(ROp::Vote(v));
        } else if r < 10 && last.is_some() {
            // Conflict: truncate at or above committed and purged, then a new term appends.
            let mut cands: Vec<Option<LogId>> = Vec::new();
            if st.committed.is_none() && st.purged.is_none() {
                cands.push(None);
            }
            let lo = st.committed.max(st.purged).map_or(0, |c| c.index);
            let hi = last.unwrap();
            let i = lo + self.rng.below(hi - lo + 1);
            cands.push(Some(self.stored(i).expect("stored log id")));
            let at = cands[self.rng.below(cands.len() as u64) as usize];
            ops.push(ROp::Truncate(at));
            self.term += 1;
            let start = at.or(st.purged).map_or(0, |l| l.index + 1);
            for index in start..start + 1 + self.rng.below(4) {
                ops.push(ROp::Append(LogId::new(self.term, leader(self.term), index)));
            }
        } else if r < 22 && len > 0 {
            let lo = st.committed.map_or(first, |c| c.index.max(first));
            let i = lo + self.rng.below(last.unwrap() + 1 - lo);
            ops.push(ROp::Commit(self.stored(i).expect("stored")));
        } else if (r < 28 || len > 200) && st.committed.is_some_and(|c| c.index >= first) {
            let c = st.committed.unwrap().index;
            let i = first + self.rng.below(c + 1 - first);
            ops.push(ROp::Purge(self.stored(i).expect("stored")));
        } else if r < 30 {
            self.user_counter += 1;
            ops.push(ROp::User(
                (self.rng.below(5) != 0).then_some(self.user_counter),
            ));
        } else {
            let start = last.map_or(0, |l| l + 1);
            for index in start..start + 1 + self.rng.below(8) {
                ops.push(ROp::Append(LogId::new(self.term, leader(self.term), index)));
            }
        }
        intent(&ops);
        let mut appends: Vec<(LogId, Vec<u8>)> = Vec::new();
        let mut is_vote = false;
        for op in &ops {
            match *op {
                ROp::Append(id) => appends.push((id, raft_payload(&id))),
                ROp::Vote(v) => {
                    self.log.save_vote(v).expect("save_vote");
                    is_vote = true;
                }
                ROp::Commit(id) => self.log.commit(id).expect("commit"),
                ROp::Truncate(at) => self.log.truncate_after(at).expect("truncate_after"),
                ROp::Purge(id) => self.log.purge_upto(id).expect("purge_upto"),
                ROp::User(u) => self
                    .log
                    .save_user_data(u.map(|u| u.to_le_bytes().to_vec()))
                    .expect("save_user_data"),
            }
        }
        if !appends.is_empty() {
            self.log
                .append(appends.iter().map(|(i, p)| (*i, &p[..])))
                .expect("append");
        }
        is_vote
    }
}

/// Entry point of the Raft child process; a no-op in a normal test run.
#[test]
fn raft_child_entry() {
    let Ok(dir) = std::env::var(RAFT_CHILD_ENV) else {
        return;
    };
    let seed = seed_from_env(SEED_ENV);
    let log = match RaftLog::<RaftTypes>::open(&dir, config()) {
        Ok(l) => l,
        Err(e) => {
            emit(&format!("RML FAIL open: {e}\n"));
            std::process::exit(3);
        }
    };
    emit("\nRML OPEN\n");
    let st = log.state();
    let term = st
        .vote
        .map_or(0, |v| v.term)
        .max(st.last.map_or(0, |l| l.term))
        .max(1);
    let mut d = RaftDriver {
        log,
        rng: Rng(seed),
        term,
        user_counter: seed << 20,
    };
    let mut issued = 0usize;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut steps = 0u64;
    while Instant::now() < deadline {
        let is_vote = d.step(&mut |ops| {
            let mut s = String::new();
            for op in ops {
                s += "RML O ";
                s += &op.encode();
                s.push('\n');
            }
            emit(&s);
            issued += ops.len();
        });
        steps += 1;
        let st = d.log.state();
        let ack = format!(
            "RML A {issued} {} {} {} {}\n",
            enc_vote(&st.vote),
            enc_id(&st.committed),
            enc_id(&st.purged),
            enc_id(&st.last)
        );
        if is_vote || steps % 32 == 0 {
            // A vote is durable before the node answers the candidate.
            d.log.sync().expect("sync");
            emit(&ack);
        } else {
            d.log
                .flush(move |r| match r {
                    Ok(()) => emit(&ack),
                    Err(e) => emit(&format!("RML FAIL flush: {e}\n")),
                })
                .expect("flush");
        }
    }
    emit("RML FAIL child was not killed in time\n");
    std::process::exit(4);
}

/// What a flush callback acknowledged: ops `..n` are durable, with this state.
#[derive(Debug, Clone, Default)]
struct RAck {
    n: usize,
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
    last: Option<LogId>,
}

struct RaftChildRun {
    ops: Vec<ROp>,
    /// The last acknowledgement (none: only the state the child opened is durable).
    ack: Option<RAck>,
    opened: bool,
}

impl RaftChildRun {
    fn acked(&self) -> usize {
        self.ack.as_ref().map_or(0, |a| a.n)
    }
}

fn run_raft_child_and_kill(dir: &Path, seed: u64, delay: Duration) -> RaftChildRun {
    let (complete, err) = spawn_and_kill("raft_child_entry", RAFT_CHILD_ENV, dir, seed, delay);
    let mut run = RaftChildRun {
        ops: Vec::new(),
        ack: None,
        opened: false,
    };
    for line in BufReader::new(&complete[..]).split(b'\n') {
        let line = line.unwrap();
        let Ok(line) = std::str::from_utf8(&line) else {
            continue;
        };
        let Some(at) = line.find("RML ") else {
            continue;
        };
        let rest = &line[at + 4..];
        if let Some(op) = rest.strip_prefix("O ") {
            run.ops.push(ROp::decode(op).expect("bad intent line"));
        } else if let Some(a) = rest.strip_prefix("A ") {
            let f: Vec<&str> = a.split(' ').collect();
            assert_eq!(f.len(), 5, "bad ack line {a:?}");
            let ack = RAck {
                n: f[0].parse().unwrap(),
                vote: dec_vote(f[1]).expect("ack vote"),
                committed: dec_id(f[2]).expect("ack committed"),
                purged: dec_id(f[3]).expect("ack purged"),
                last: dec_id(f[4]).expect("ack last"),
            };
            assert!(ack.n <= run.ops.len(), "ack {} before its intents", ack.n);
            assert!(ack.n >= run.acked(), "acks out of order");
            run.ack = Some(ack);
        } else if rest == "OPEN" {
            run.opened = true;
        } else if rest.starts_with("FAIL") {
            panic!("raft child reported: {rest}\nstderr:\n{err}");
        }
    }
    run
}

/// The checks the acknowledgements promise, stated directly.
fn check_raft_acks(start: &RModel, run: &RaftChildRun, got: &RModel) -> Result<(), String> {
    let mut at_ack = start.clone();
    for op in &run.ops[..run.acked()] {
        at_ack.apply(op);
    }
    let ack = run.ack.clone().unwrap_or(RAck {
        n: 0,
        vote: start.vote,
        committed: start.committed,
        purged: start.purged,
        last: start.last,
    });
    // The child's reported state is the model's state at the ack.
    if (at_ack.vote, at_ack.committed, at_ack.purged, at_ack.last)
        != (ack.vote, ack.committed, ack.purged, ack.last)
    {
        return Err(format!(
            "model at ack {} differs from the child's report {ack:?}",
            at_ack.line()
        ));
    }
    let ge = |name: &str, got: bool| {
        if got {
            Ok(())
        } else {
            Err(format!(
                "{name} went backwards below the acknowledged value"
            ))
        }
    };
    ge("vote", got.vote >= ack.vote)?;
    ge("committed", got.committed >= ack.committed)?;
    ge("purged", got.purged >= ack.purged)?;
    let later = &run.ops[run.acked()..];
    // Lowest truncate point issued after the ack (acknowledged or not: SIGKILL keeps the page
    // cache, so a later truncate may well have survived).
    let cut = later
        .iter()
        .filter_map(|op| match op {
            ROp::Truncate(at) => Some(at.map_or(0, |l| l.index + 1)),
            _ => None,
        })
        .min();
    if cut.is_none() {
        ge("last log id", got.last >= ack.last)?;
    }
    for (&i, id) in &at_ack.entries {
        if got.purged.is_some_and(|p| p.index >= i) || cut.is_some_and(|c| i >= c) {
            continue;
        }
        if got.entries.get(&i) != Some(id) {
            return Err(format!(
                "acknowledged entry {id} lost (recovered {:?})",
                got.entries.get(&i)
            ));
        }
    }
    Ok(())
}

/// Finds `k` in `acked..=ops.len()` such that `start` + `ops[..k]` equals `got`.
fn raft_match_prefix(
    start: &RModel,
    ops: &[ROp],
    acked: usize,
    got: &RModel,
) -> Result<usize, String> {
    let mut m = start.clone();
    for op in &ops[..acked] {
        m.apply(op);
    }
    let at_ack = m.clone();
    for k in acked..=ops.len() {
        if &m == got {
            return Ok(k);
        }
        if let Some(op) = ops.get(k) {
            m.apply(op);
        }
    }
    Err(format!(
        "recovered state matches no state at or after the acknowledged op {acked} (of {}):\n  \
         recovered: {}\n  acked:     {}\n  ops after ack: {:?}",
        ops.len(),
        got.line(),
        at_ack.line(),
        &ops[acked..ops.len().min(acked + 40)]
    ))
}

#[test]
fn kill9_raft_rounds() {
    let rounds = env_usize("RML_KILL9_RAFT_ROUNDS", 60);
    let seed = seed_from_env("RML_KILL9_RAFT_SEED");
    eprintln!("kill9 raft: {rounds} rounds, seed {seed} (RML_KILL9_RAFT_SEED to replay)");
    let mut rng = Rng(seed ^ 0xA5A5);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("raft");
    let started = Instant::now();
    let mut model = RModel::default();
    let (mut total_ops, mut total_acked, mut beyond_ack, mut cuts, mut in_open) = (0, 0, 0, 0, 0);
    for round in 0..rounds {
        let delay = if rng.below(5) == 0 {
            Duration::from_micros(rng.below(4000))
        } else {
            Duration::from_millis(5 + rng.below(45))
        };
        let run = run_raft_child_and_kill(&dir, seed.wrapping_add(round as u64 + 1), delay);
        let ctx = format!(
            "round {round} (seed {seed}, child {} ops, {} acked, opened: {}, killed after \
             {delay:?})",
            run.ops.len(),
            run.acked(),
            run.opened
        );
        let log = match RaftLog::<RaftTypes>::open(&dir, config()) {
            Ok(l) => l,
            Err(e) => common::fail_keeping_dir(
                tmp,
                &dir,
                &format!("{ctx}: reopen after SIGKILL failed: {e}"),
            ),
        };
        if log.store().recovery_report().cut.is_some() {
            cuts += 1;
        }
        let got = raft_observe(&log);
        let checked = check_raft_acks(&model, &run, &got)
            .and_then(|()| raft_match_prefix(&model, &run.ops, run.acked(), &got));
        let k = match checked {
            Ok(k) => k,
            Err(why) => {
                let report = format!("{:?}", log.store().recovery_report());
                drop(log);
                common::fail_keeping_dir(
                    tmp,
                    &dir,
                    &format!(
                        "{ctx}: {why}\n  recovered {}\n  reopen recovered: {report}",
                        got.line()
                    ),
                )
            }
        };
        total_ops += run.ops.len();
        total_acked += run.acked();
        beyond_ack += k - run.acked();
        in_open += usize::from(!run.opened);
        model = got;
        drop(log);
        match raft_mmap_log::raft::inspect::verify(&dir, &|_| {}) {
            Ok(report) if report.is_sound() => {}
            Ok(_) => common::fail_keeping_dir(tmp, &dir, &format!("{ctx}: verify found problems")),
            Err(e) => common::fail_keeping_dir(tmp, &dir, &format!("{ctx}: verify failed: {e}")),
        }
    }
    eprintln!(
        "kill9 raft: {rounds} kills in {:.1?}: {total_ops} ops issued, {total_acked} acknowledged, \
         {beyond_ack} unacknowledged ops survived, {cuts} torn tails cut, {in_open} kills before \
         the child had opened the log; final {}",
        started.elapsed(),
        model.line()
    );
}

// ---------------------------------------------------------------------------------------------
// Power-loss simulation.

fn seg_files(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().ok()?;
            raft_mmap_log::format::parse_segment_file_name(&name).map(|s| (s, e.path()))
        })
        .collect();
    v.sort();
    v
}

fn headers(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let mut f = std::fs::File::open(e.path()).ok()?;
            let mut h = vec![0u8; 64];
            let n = f.read(&mut h).ok()?;
            h.truncate(n);
            Some((e.file_name().into_string().ok()?, h))
        })
        .collect();
    v.sort();
    v
}

/// Copies the log files (not the lock) of `from` into the new directory `to`, once the
/// flusher has settled (no header changed for a few milliseconds).
fn copy_settled(from: &Path, to: &Path) {
    let mut last = headers(from);
    loop {
        std::thread::sleep(Duration::from_millis(3));
        let now = headers(from);
        if now == last {
            break;
        }
        last = now;
    }
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name == "LOCK" {
            continue;
        }
        std::fs::copy(e.path(), to.join(&name)).unwrap();
    }
}

fn is_sealed(bytes: &[u8]) -> bool {
    bytes.len() >= 48
        && u64::from_le_bytes(bytes[40..48].try_into().unwrap())
            == raft_mmap_log::format::SEALED_MAGIC
}

/// Damages `dir` (a copy) the way a power cut could, given the durable frontier
/// `(frontier_seq, frontier_offset)`. Returns a short description.
fn power_cut(dir: &Path, frontier_seq: u64, frontier_offset: u64, rng: &mut Rng) -> String {
    let segs = seg_files(dir);
    let post: Vec<&(u64, PathBuf)> = segs.iter().filter(|(s, _)| *s >= frontier_seq).collect();
    assert!(
        post.first().map(|p| p.0) == Some(frontier_seq),
        "frontier segment {frontier_seq} missing from the copy"
    );
    let images: Vec<Vec<u8>> = post
        .iter()
        .map(|(_, p)| std::fs::read(p).unwrap())
        .collect();
    // The flusher seals (syncs fully, then marks) oldest first: the sealed segments are a
    // prefix. A crash may have happened before any of those marks reached the disk.
    let sealed = images.iter().take_while(|b| is_sealed(b)).count();
    let keep_sealed = rng.below(sealed as u64 + 1) as usize;
    // Segment `post[keep_sealed]` exists durably (created by the rollover whose sealing synced
    // the directory, or it is the frontier segment). Later files may be missing.
    let keep_files = keep_sealed + 1 + rng.below((post.len() - keep_sealed) as u64) as usize;
    let (p_keep, p_zero) = match rng.below(4) {
        0 => (90, 5),
        1 => (50, 40),
        2 => (10, 80),
        _ => (40, 30),
    };
    let (mut kept, mut zeroed, mut garbage) = (0, 0, 0);
    for (i, ((seq, path), mut img)) in post.iter().copied().zip(images).enumerate() {
        if i < keep_sealed {
            continue;
        }
        if i >= keep_files {
            std::fs::remove_file(path).unwrap();
            continue;
        }
        // The sealed mark of this segment was written after the frontier: it may be lost.
        // Its sealed mark (if any) was written after the frontier: lost here.
        img[40..56].fill(0);
        let start = if *seq == frontier_seq {
            frontier_offset as usize
        } else {
            64
        };
        let mut page_start = start;
        while page_start < img.len() {
            let page_end = ((page_start / PAGE) + 1) * PAGE;
            let page_end = page_end.min(img.len());
            let roll = rng.below(100);
            if roll < p_keep {
                kept += 1;
            } else if roll < p_keep + p_zero {
                img[page_start..page_end].fill(0);
                zeroed += 1;
            } else {
                for b in &mut img[page_start..page_end] {
                    *b = rng.next() as u8;
                }
                garbage += 1;
            }
            page_start = page_end;
        }
        std::fs::write(path, &img).unwrap();
    }
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.to_string_lossy().ends_with(".seg.tmp") && rng.below(2) == 0 {
            std::fs::remove_file(p).unwrap();
        }
    }
    format!(
        "{} post-frontier segments ({} sealed, {keep_sealed} kept sealed, {} files kept); pages kept {kept} zeroed {zeroed} garbage {garbage}",
        post.len(),
        sealed,
        keep_files
    )
}

#[test]
fn power_loss_simulation() {
    let rounds = env_usize("RML_POWERLOSS_ROUNDS", 60);
    let seed = seed_from_env("RML_POWERLOSS_SEED");
    eprintln!("power loss: {rounds} rounds, seed {seed} (RML_POWERLOSS_SEED to replay)");
    let mut rng = Rng(seed ^ 0x5555);
    let tmp = tempfile::tempdir().unwrap();
    let live = tmp.path().join("live");
    let store = Store::open(&live, config()).unwrap();
    let mut d = Driver::new(store, Model::default(), seed);
    let started = Instant::now();
    let (mut lost_ops, mut window_ops, mut cuts) = (0usize, 0usize, 0usize);
    for round in 0..rounds {
        for _ in 0..rng.below(40) {
            d.step(&mut |_| {});
        }
        d.store.sync().unwrap();
        let (fpath, foffset) = d.store.position();
        let fseq = raft_mmap_log::format::parse_segment_file_name(
            fpath.file_name().unwrap().to_str().unwrap(),
        )
        .unwrap();
        let at_frontier = d.model.clone();
        let mut ops: Vec<Op> = Vec::new();
        // No flush in the window: the flusher only seals segments at rollover, never deletes.
        for _ in 0..1 + rng.below(60) {
            d.step(&mut |o| ops.extend_from_slice(o));
        }
        let copy = tmp.path().join(format!("copy{round}"));
        copy_settled(&live, &copy);
        let what = power_cut(&copy, fseq, foffset, &mut rng);
        let store = Store::open(&copy, config()).unwrap_or_else(|e| {
            panic!(
                "round {round} (seed {seed}): open after simulated power cut failed: {e}\n  {what}"
            )
        });
        if store.recovery_report().cut.is_some() {
            cuts += 1;
        }
        let got = observe(&store);
        let k = match_prefix(&at_frontier, &ops, 0, &got)
            .unwrap_or_else(|why| panic!("round {round} (seed {seed}): {what}\n{why}"));
        lost_ops += ops.len() - k;
        window_ops += ops.len();
        drop(store);
        assert_clean(&copy);
        std::fs::remove_dir_all(&copy).unwrap();
    }
    eprintln!(
        "power loss: {rounds} simulated cuts in {:.1?}: {window_ops} unsynced ops, {lost_ops} lost, {cuts} torn tails cut",
        started.elapsed()
    );
}

/// A power cut after a truncate and re-append at the end of a segment that is not sealed yet,
/// while the next segment (whose checkpoint has the same `first`/`next`) did reach the disk.
///
/// Segment A: ..., 9, 10 (synced: the frontier) | truncate_from(9), 9', 10' (unsynced).
/// Rollover to segment B: checkpoint {next: 11}, then entry 11'. Power cut: A's pages after the
/// frontier are lost, B's pages are on disk. Replaying A gives next = 11 and B's checkpoint
/// says next = 11 too; before checkpoints named their predecessor's end and last CRC, B was
/// accepted and the log became 9, 10 (old) followed by 11' (written after 9', 10'), a log that
/// never existed. Regression test: recovery must refuse to bridge the lost tail.
#[test]
fn power_loss_truncate_then_reappend_at_segment_end() {
    let tmp = tempfile::tempdir().unwrap();
    let live = tmp.path().join("live");
    let mut store = Store::open(&live, config()).unwrap();
    for i in 1..=10 {
        store.append(i, &payload(i, 1)).unwrap();
    }
    store.sync().unwrap();
    let (fpath, foffset) = store.position();
    store.truncate_from(9).unwrap();
    store.append(9, &payload(9, 2)).unwrap();
    store.append(10, &payload(10, 2)).unwrap();
    // An entry that cannot fit in what is left of segment A: it goes to segment B.
    let big = vec![0xAB; store.max_payload()];
    store.append(11, &big).unwrap();
    let (bpath, _) = store.position();
    assert_ne!(fpath, bpath, "entry 11 should have started a new segment");
    store.sync().unwrap();
    drop(store);

    let copy = tmp.path().join("copy");
    copy_settled(&live, &copy);
    // Power cut: A's bytes after the frontier and its sealed mark never reached the disk.
    let a = copy.join(fpath.file_name().unwrap());
    let mut img = std::fs::read(&a).unwrap();
    img[40..56].fill(0);
    img[foffset as usize..].fill(0);
    std::fs::write(&a, &img).unwrap();

    let store = Store::open(&copy, config()).unwrap();
    let snap = store.reader().snapshot();
    let e10 = snap.get(10).map(|p| p.to_vec());
    let has11 = snap.get(11).is_some();
    assert!(
        !(has11 && e10.as_deref() == Some(&payload(10, 1)[..])),
        "recovered log holds the truncated entry 10 (epoch 1) followed by entry 11, which was \
         written after the truncate: first={} next={}",
        store.first_index(),
        store.next_index()
    );
}

/// A power cut after two rollovers, where the middle segment's pages (header included) never
/// reached the disk but the newest segment's did: mmap write-back has no order, and the
/// directory entries of both files are durable (renames are journaled in order).
#[test]
fn power_loss_blank_middle_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let live = tmp.path().join("live");
    let mut store = Store::open(&live, config()).unwrap();
    for i in 1..=5 {
        store.append(i, &payload(i, 1)).unwrap();
    }
    store.sync().unwrap();
    let (fpath, foffset) = store.position();
    let big = vec![0xCD; store.max_payload()];
    store.append(6, &big).unwrap(); // segment B
    store.append(7, &big).unwrap(); // segment C
    let (cpath, _) = store.position();
    store.sync().unwrap();
    drop(store);
    let fseq = raft_mmap_log::format::parse_segment_file_name(
        fpath.file_name().unwrap().to_str().unwrap(),
    )
    .unwrap();
    let cseq = raft_mmap_log::format::parse_segment_file_name(
        cpath.file_name().unwrap().to_str().unwrap(),
    )
    .unwrap();
    assert_eq!(cseq, fseq + 2);

    let copy = tmp.path().join("copy");
    copy_settled(&live, &copy);
    let a = copy.join(fpath.file_name().unwrap());
    let mut img = std::fs::read(&a).unwrap();
    img[40..56].fill(0);
    img[foffset as usize..].fill(0);
    std::fs::write(&a, &img).unwrap();
    let b = copy.join(raft_mmap_log::format::segment_file_name(fseq + 1));
    let len = std::fs::metadata(&b).unwrap().len() as usize;
    std::fs::write(&b, vec![0u8; len]).unwrap();

    let store = Store::open(&copy, config())
        .unwrap_or_else(|e| panic!("a recoverable power cut is refused: {e}"));
    let got = observe(&store);
    assert_eq!((got.first, got.next), (1, 6), "state at the frontier");
}
