//! The workloads, written once against the [`Engine`] trait and run unchanged for every crate.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::sys;

/// Why a cell has no figure. Both kinds are printed in full; nothing is skipped silently.
#[derive(Debug)]
pub enum Fail {
    /// The crate's API cannot express the workload honestly.
    Unsupported(String),
    /// The crate was asked to and failed (error, panic, wrong data).
    Error(String),
}

impl Fail {
    pub fn text(&self) -> String {
        match self {
            Fail::Unsupported(s) => format!("not supported: {s}"),
            Fail::Error(s) => format!("error: {s}"),
        }
    }
}

pub type R<T> = Result<T, Fail>;

/// Wraps any error as [`Fail::Error`] with some context.
pub fn err<E: Display>(what: &str) -> impl FnOnce(E) -> Fail + '_ {
    move |e| Fail::Error(format!("{what}: {e}"))
}

/// How a store will be used; only engines whose durability is fixed at open time care.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// Appends are not synced until `sync()` is called.
    Lazy,
    /// Every append is made durable before the next one (workload 3).
    DurableEach,
}

/// A batch of consecutive entries: `count` payloads of `size` bytes, contiguous in `buf`.
/// Each payload starts with its log index (8 bytes LE) so that reads can be verified; the rest
/// is incompressible pseudo-random data.
pub struct Batch {
    pub first: u64,
    pub size: usize,
    pub buf: Vec<u8>,
}

impl Batch {
    /// The index after the batch's last entry.
    pub fn end(&self) -> u64 {
        self.first + (self.buf.len() / self.size.max(1)) as u64
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> + Clone + '_ {
        let first = self.first;
        self.buf
            .chunks_exact(self.size)
            .enumerate()
            .map(move |(i, p)| (first + i as u64, p))
    }
}

/// Produces batches; the cost (one small memcpy per entry) is the same for every engine.
pub struct Gen {
    noise: Vec<u8>,
    size: usize,
}

impl Gen {
    pub fn new(size: usize) -> Self {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let noise = (0..(1 << 20) + size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        Gen { noise, size }
    }

    pub fn fill(&self, batch: &mut Batch, first: u64, count: usize) {
        batch.first = first;
        batch.size = self.size;
        batch.buf.clear();
        for i in 0..count as u64 {
            let index = first + i;
            let off = (index.wrapping_mul(2_654_435_761) as usize) & ((1 << 20) - 1);
            batch.buf.extend_from_slice(&index.to_le_bytes());
            batch
                .buf
                .extend_from_slice(&self.noise[off..off + self.size - 8]);
        }
    }

    pub fn batch(&self) -> Batch {
        Batch {
            first: 0,
            size: self.size,
            buf: Vec::new(),
        }
    }

    /// Calls `f` with entries `first..first + n` in batches of `per_batch` (the last one
    /// shorter), one reused buffer; stops at the first error.
    pub fn each_batch(
        &self,
        first: u64,
        n: u64,
        per_batch: usize,
        mut f: impl FnMut(&Batch) -> R<()>,
    ) -> R<()> {
        let mut b = self.batch();
        let mut i = 0;
        while i < n {
            let k = (per_batch.max(1) as u64).min(n - i) as usize;
            self.fill(&mut b, first + i, k);
            f(&b)?;
            i += k as u64;
        }
        Ok(())
    }
}

/// One implementation per crate. Every method must keep the crate's documented guarantees:
/// `append_durable` and `sync` return only once the data is on stable storage.
pub trait Engine: Sized {
    /// Index of the first entry of a new log (raft-log insists on 0).
    const FIRST_INDEX: u64 = 1;

    fn open(dir: &Path, mode: Mode) -> R<Self>;
    /// Appends a batch; no durability asked for.
    fn append(&mut self, batch: &Batch) -> R<()>;
    /// Appends a batch and returns once it (and everything before) is durable.
    fn append_durable(&mut self, batch: &Batch) -> R<()> {
        self.append(batch)?;
        self.sync()
    }
    /// Makes everything appended so far durable.
    fn sync(&mut self) -> R<()>;
    /// Waits until background writers have handed appended data to the OS (no fsync).
    /// Called at the end of the un-synced append workload so that a crate that only queues
    /// data to a background thread is not credited for work it has not done yet.
    fn settle(&mut self) -> R<()> {
        Ok(())
    }
    /// Appends entries `first..first + n` in batches of `per_batch`, no sync (workload 1, and
    /// the warm-up).
    fn append_all(&mut self, gen: &Gen, first: u64, n: u64, per_batch: usize) -> R<()> {
        gen.each_batch(first, n, per_batch, |b| self.append(b))
    }
    /// Workload 2. Default: `append_all`, then `sync` once.
    fn bulk_then_sync(&mut self, gen: &Gen, first: u64, n: u64, per_batch: usize) -> R<()> {
        self.append_all(gen, first, n, per_batch)?;
        self.sync()
    }
    /// Calls `f(index, payload)` for each entry in `from..to`, in order.
    fn read_range(&mut self, from: u64, to: u64, f: &mut dyn FnMut(u64, &[u8])) -> R<()>;
    fn last_index(&mut self) -> R<Option<u64>>;
    /// Removes every entry below `first_kept` (compaction behind a snapshot); files that hold
    /// only removed entries may be deleted or recycled. Used by the opt-in `steady` workload.
    fn purge_to(&mut self, _first_kept: u64) -> R<()> {
        Err(Fail::Unsupported(
            "no purge wired up for this crate in the harness".into(),
        ))
    }
    /// A reader for another thread, used while this one keeps appending (the `first_touch`
    /// workload). It must see every entry appended before the call that reads it.
    fn tail_reader(&mut self) -> R<Box<dyn TailReader>> {
        Err(Fail::Unsupported(
            "no reader usable from another thread is wired up for this crate in the harness".into(),
        ))
    }
    /// Clean shutdown.
    fn close(self) -> R<()>;
}

/// A crate's read handle on another thread (see [`Engine::tail_reader`]).
pub trait TailReader: Send {
    /// Calls `f(index, payload)` for each entry in `from..to`, in order.
    fn read_range(&mut self, from: u64, to: u64, f: &mut dyn FnMut(u64, &[u8])) -> R<()>;
}

#[derive(Clone, Debug)]
pub struct Params {
    pub entries: u64,
    pub entry_size: usize,
    pub batch: usize,
    pub durable_batches: usize,
    pub durable_batch: usize,
    pub read_range: u64,
    pub read_secs: f64,
    pub only: Vec<String>,
}

pub const WORKLOADS: [&str; 6] = [
    "append",
    "bulk_sync",
    "durable",
    "read",
    "recovery",
    "first_touch",
];

/// Workloads run only when named in `--only` (each is long: see [`crate::steady`] and
/// [`crate::durable_long`]).
pub const OPT_IN: [&str; 2] = ["steady", "durable_long"];

impl Params {
    pub fn wants(&self, w: &str) -> bool {
        let ws: Vec<&String> = self
            .only
            .iter()
            .filter(|o| {
                WORKLOADS.contains(&o.as_str())
                    || OPT_IN.contains(&o.as_str())
                    || o.as_str() == "limits"
            })
            .collect();
        if OPT_IN.contains(&w) {
            return ws.iter().any(|o| o.as_str() == w);
        }
        ws.is_empty() || ws.iter().any(|o| o.as_str() == w)
    }
}

fn ok(v: Value) -> Value {
    json!({ "ok": v })
}

fn fail(f: Fail) -> Value {
    json!({ "err": f.text() })
}

pub(crate) fn cell(r: R<Value>) -> Value {
    match r {
        Ok(v) => ok(v),
        Err(f) => fail(f),
    }
}

/// Runs a closure, turning a panic inside the crate into a printed error for that cell.
pub(crate) fn guarded<T>(what: &str, f: impl FnOnce() -> R<T>) -> R<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic".into());
            Err(Fail::Error(format!("panicked during {what}: {msg}")))
        }
    }
}

/// Records a cell and reports it at once on stdout, so that the parent keeps finished cells
/// even if a later workload hangs or kills the process.
pub(crate) fn put(cells: &mut Map<String, Value>, name: &str, v: Value) {
    println!("CELL {}", json!({ "workload": name, "cell": v }));
    let _ = std::io::Write::flush(&mut std::io::stdout());
    cells.insert(name.into(), v);
}

pub(crate) fn fresh(root: &Path, name: &str) -> PathBuf {
    let d = root.join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn verify(size: usize) -> impl FnMut(u64, &[u8]) -> Option<String> {
    move |index, p| {
        if p.len() != size {
            return Some(format!("entry {index}: {} bytes, expected {size}", p.len()));
        }
        if p[..8] != index.to_le_bytes() {
            return Some(format!("entry {index}: payload belongs to another index"));
        }
        None
    }
}

/// Reads `from..to`, checks every entry; returns the number read.
pub(crate) fn read_checked<E: Engine>(e: &mut E, from: u64, to: u64, size: usize) -> R<u64> {
    check_reads(from, to, size, |f| e.read_range(from, to, f))
}

/// Runs `read` (which reads `from..to` into its callback) and checks every entry it gives;
/// returns the number read.
pub(crate) fn check_reads(
    from: u64,
    to: u64,
    size: usize,
    read: impl FnOnce(&mut dyn FnMut(u64, &[u8])) -> R<()>,
) -> R<u64> {
    let mut n = 0u64;
    let mut expect = from;
    let mut bad: Option<String> = None;
    let mut check = verify(size);
    read(&mut |index, p| {
        if bad.is_none() {
            if index != expect {
                bad = Some(format!("got index {index}, expected {expect}"));
            } else if let Some(why) = check(index, p) {
                // Assigned only on a failure: a store of the whole `Option` per entry cost
                // ~5 ns (a store-forwarding stall), more than some engines' whole read.
                bad = Some(why);
            }
        }
        expect += 1;
        n += 1;
    })?;
    if let Some(b) = bad {
        return Err(Fail::Error(format!("read back wrong data: {b}")));
    }
    if n != to - from {
        return Err(Fail::Error(format!(
            "read {n} entries of {from}..{to}, expected {}",
            to - from
        )));
    }
    Ok(n)
}

pub(crate) fn mbps(entries: u64, size: usize, secs: f64) -> f64 {
    entries as f64 * size as f64 / secs / 1e6
}

/// Runs all requested workloads for one engine and returns `{workload: cell}`.
pub fn run_all<E: Engine>(p: &Params, root: &Path) -> Map<String, Value> {
    let gen = Gen::new(p.entry_size);
    let mut cells = Map::new();
    let first = E::FIRST_INDEX;
    let n = p.entries;

    // 0. warm-up, untimed: the same appends into a scratch log, removed. On some VMs the first
    // heavy run after a few idle seconds is twice as slow as the next one, whatever the engine;
    // without this, the engine that runs first pays for it.
    if p.wants("append") || p.wants("bulk_sync") {
        let dir = fresh(root, "warm-up");
        let _ = guarded("warm-up", || {
            let mut e = E::open(&dir, Mode::Lazy)?;
            e.append_all(&gen, first, n, p.batch)?;
            e.close()
        });
        let _ = std::fs::remove_dir_all(&dir);
    }

    // 1. append, no sync
    if p.wants("append") {
        let dir = fresh(root, "append");
        let r = guarded("append", || {
            let mut e = E::open(&dir, Mode::Lazy)?;
            let t = Instant::now();
            e.append_all(&gen, first, n, p.batch)?;
            e.settle()?;
            let secs = t.elapsed().as_secs_f64();
            let last = e.last_index()?;
            if last != Some(first + n - 1) {
                return Err(Fail::Error(format!(
                    "after append last index is {last:?}, expected {}",
                    first + n - 1
                )));
            }
            e.close()?;
            Ok(
                json!({"secs": secs, "entries_per_s": n as f64 / secs, "mb_per_s": mbps(n, p.entry_size, secs)}),
            )
        });
        let _ = std::fs::remove_dir_all(&dir);
        put(&mut cells, "append", cell(r));
    }

    // 2. bulk append + one final durable sync; its log is reused by 4 and 5.
    let need_log = p.wants("bulk_sync") || p.wants("read") || p.wants("recovery");
    let dir = fresh(root, "log");
    let mut log: Result<E, String> = Err("log not built".into());
    if need_log {
        let r = guarded("bulk append + sync", || {
            let mut e = E::open(&dir, Mode::Lazy)?;
            let t = Instant::now();
            e.bulk_then_sync(&gen, first, n, p.batch)?;
            let secs = t.elapsed().as_secs_f64();
            Ok((e, secs))
        });
        match r {
            Ok((e, secs)) => {
                log = Ok(e);
                if p.wants("bulk_sync") {
                    put(
                        &mut cells,
                        "bulk_sync",
                        ok(
                            json!({"secs": secs, "entries_per_s": n as f64 / secs, "mb_per_s": mbps(n, p.entry_size, secs)}),
                        ),
                    );
                }
            }
            Err(f) => {
                let why = f.text();
                if p.wants("bulk_sync") {
                    put(&mut cells, "bulk_sync", fail(f));
                }
                log = Err(format!("the {n}-entry log could not be built ({why})"));
            }
        }
    }

    // 4. hot range reads from the tail
    if p.wants("read") {
        let r = match &mut log {
            Err(why) => Err(Fail::Error(why.clone())),
            Ok(e) => guarded("range read", || {
                let range = p.read_range.min(n);
                let end = first + n;
                // cycle over the last 16 ranges of the log
                let spans = (n / range).clamp(1, 16);
                let budget = Duration::from_secs_f64(p.read_secs);
                let t = Instant::now();
                let (mut total, mut reps) = (0u64, 0u64);
                while reps < spans || t.elapsed() < budget {
                    let hi = end - (reps % spans) * range;
                    total += read_checked(e, hi - range, hi, p.entry_size)?;
                    reps += 1;
                }
                let secs = t.elapsed().as_secs_f64();
                // The floor, in this process, right after: the same ranges and checks over
                // the same payloads held in one in-memory vector.
                let mut mem = MemLog::new(&gen, end - spans * range, spans * range);
                let t = Instant::now();
                let (mut floor_total, mut floor_reps) = (0u64, 0u64);
                while floor_reps < spans || t.elapsed() < budget {
                    let hi = end - (floor_reps % spans) * range;
                    floor_total += read_checked(&mut mem, hi - range, hi, p.entry_size)?;
                    floor_reps += 1;
                }
                let floor_secs = t.elapsed().as_secs_f64();
                Ok(json!({
                    "secs": secs, "ranges": reps, "range_len": range,
                    "entries_per_s": total as f64 / secs,
                    "ns_per_entry": secs * 1e9 / total as f64,
                    "floor_ns_per_entry": floor_secs * 1e9 / floor_total as f64,
                }))
            }),
        };
        put(&mut cells, "read", cell(r));
    }

    // 5. recovery, warm then cold
    if p.wants("recovery") {
        let r = match std::mem::replace(&mut log, Err("moved".into())) {
            Err(why) => Err(Fail::Error(why)),
            Ok(e) => guarded("recovery", || {
                e.close()?;
                let last = first + n - 1;
                let reopen = || -> R<f64> {
                    let t = Instant::now();
                    let mut e = E::open(&dir, Mode::Lazy)?;
                    let got = e.last_index()?;
                    if got != Some(last) {
                        return Err(Fail::Error(format!(
                            "after reopen last index is {got:?}, expected {last}"
                        )));
                    }
                    read_checked(&mut e, last, last + 1, p.entry_size)?;
                    let secs = t.elapsed().as_secs_f64();
                    e.close()?;
                    Ok(secs)
                };
                let warm = reopen()?;
                let evict = sys::evict_dir(&dir).map_err(err("evicting page cache"))?;
                let cold = reopen()?;
                // The limit: a plain read() of the same files, cold.
                sys::evict_dir(&dir).map_err(err("evicting page cache"))?;
                let t = Instant::now();
                sys::read_files(&dir).map_err(err("reading the log's files"))?;
                let cold_read = t.elapsed().as_secs_f64();
                Ok(json!({"warm_ms": warm * 1e3, "cold_ms": cold * 1e3,
                          "cold_read_ms": cold_read * 1e3,
                          "dir_bytes": evict.bytes, "resident_after_evict_pct": evict.resident_after_pct}))
            }),
        };
        put(&mut cells, "recovery", cell(r));
    } else if let Ok(e) = log {
        let _ = e.close();
    }
    let _ = std::fs::remove_dir_all(&dir);

    // 6. steady state: appends with purges behind them (opt-in)
    if p.wants("steady") {
        let r = crate::steady::run::<E>(p, root);
        put(&mut cells, "steady", cell(r));
    }

    // 7. first-touch reads of entries just appended, from another thread
    if p.wants("first_touch") {
        let r = crate::first_touch::run::<E>(p, root);
        put(&mut cells, "first_touch", cell(r));
    }

    // 8. sustained durable writes over 10 segments, nothing purged (opt-in)
    if p.wants("durable_long") {
        let r = crate::durable_long::run::<E>(p, root);
        put(&mut cells, "durable_long", cell(r));
    }

    cells
}

/// The read floor: `count` entries from `first` on, generated as the engines got them, in
/// one vector; reading it costs only the harness's own work per entry.
struct MemLog {
    first: u64,
    size: usize,
    buf: Vec<u8>,
}

impl MemLog {
    fn new(gen: &Gen, first: u64, count: u64) -> Self {
        let mut b = gen.batch();
        gen.fill(&mut b, first, count as usize);
        MemLog {
            first,
            size: b.size,
            buf: b.buf,
        }
    }
}

impl Engine for MemLog {
    fn open(_: &Path, _: Mode) -> R<Self> {
        Err(Fail::Unsupported("in-memory floor only".into()))
    }
    fn append(&mut self, _: &Batch) -> R<()> {
        Err(Fail::Unsupported("in-memory floor only".into()))
    }
    fn sync(&mut self) -> R<()> {
        Ok(())
    }
    /// Calls `f` through the `dyn` reference, as every engine does (`black_box` keeps the
    /// compiler from inlining the check into this loop, which no engine's read gets).
    fn read_range(&mut self, from: u64, to: u64, f: &mut dyn FnMut(u64, &[u8])) -> R<()> {
        let f = std::hint::black_box(f);
        let a = (from - self.first) as usize * self.size;
        let b = (to - self.first) as usize * self.size;
        for (i, p) in self.buf[a..b].chunks_exact(self.size).enumerate() {
            f(from + i as u64, p);
        }
        Ok(())
    }
    fn last_index(&mut self) -> R<Option<u64>> {
        Ok((self.first + (self.buf.len() / self.size) as u64).checked_sub(1))
    }
    fn close(self) -> R<()> {
        Ok(())
    }
}

/// One participant of the interleaved durable workload (3): an engine, or the bare
/// pwrite + fdatasync probe. The device's flush latency drifts by 10-30x over seconds on some
/// machines, so all participants run in one process, round-robin, in short slices: each sees
/// the same device states, and the probe measured in the same rotation is the limit.
pub trait Stepper {
    /// Runs `k` more durable batches.
    fn step(&mut self, k: usize) -> R<()>;
    /// Closes and reports.
    fn finish(self: Box<Self>) -> R<Value>;
}

/// Latency summary of durable operations (time spent inside this participant only).
pub fn summarize(lat: &mut [Duration], per_op_entries: usize) -> Value {
    lat.sort();
    let busy: f64 = lat.iter().map(Duration::as_secs_f64).sum();
    let n = lat.len();
    let q = |f: f64| lat[((n as f64 * f) as usize).min(n - 1)].as_secs_f64() * 1e6;
    json!({"ops": n, "busy_secs": busy, "ops_per_s": n as f64 / busy,
           "entries_per_s": (n * per_op_entries) as f64 / busy,
           "p50_us": q(0.50), "p99_us": q(0.99), "p999_us": q(0.999)})
}

pub struct DurableRun<E: Engine> {
    engine: Option<E>,
    gen: Gen,
    batch: Batch,
    per_batch: usize,
    next: u64,
    lat: Vec<Duration>,
}

impl<E: Engine> DurableRun<E> {
    pub fn open(dir: &Path, p: &Params) -> R<Self> {
        let engine = guarded("open", || E::open(dir, Mode::DurableEach))?;
        let gen = Gen::new(p.entry_size);
        let batch = gen.batch();
        Ok(Self {
            engine: Some(engine),
            gen,
            batch,
            per_batch: p.durable_batch,
            next: E::FIRST_INDEX,
            lat: Vec::with_capacity(p.durable_batches),
        })
    }
}

impl<E: Engine> Stepper for DurableRun<E> {
    fn step(&mut self, k: usize) -> R<()> {
        guarded("durable append", || {
            let e = self.engine.as_mut().expect("open");
            for _ in 0..k {
                self.gen.fill(&mut self.batch, self.next, self.per_batch);
                let t0 = Instant::now();
                e.append_durable(&self.batch)?;
                self.lat.push(t0.elapsed());
                self.next += self.per_batch as u64;
            }
            Ok(())
        })
    }

    fn finish(mut self: Box<Self>) -> R<Value> {
        let e = self.engine.take().expect("open");
        guarded("close", || e.close())?;
        if self.lat.is_empty() {
            return Err(Fail::Error("no batch was written".into()));
        }
        Ok(summarize(&mut self.lat, self.per_batch))
    }
}

/// Runs the durable workload for all `participants` interleaved; emits one cell per name.
pub fn run_durable_interleaved(p: &Params, participants: Vec<(String, R<Box<dyn Stepper>>)>) {
    let slice = 50usize.min(p.durable_batches.max(1));
    let rounds = p.durable_batches.div_ceil(slice);
    let mut live: Vec<(String, Option<Box<dyn Stepper>>)> = Vec::new();
    let mut cells = Map::new();
    for (name, r) in participants {
        match r {
            Ok(s) => live.push((name, Some(s))),
            Err(f) => put(&mut cells, &name, fail(f)),
        }
    }
    for round in 0..rounds {
        let k = slice.min(p.durable_batches - round * slice);
        for (name, s) in live.iter_mut() {
            if let Some(st) = s {
                if let Err(f) = st.step(k) {
                    *s = None;
                    put(&mut cells, name, fail(f));
                }
            }
        }
    }
    for (name, s) in live {
        if let Some(st) = s {
            put(&mut cells, &name, cell(st.finish()));
        }
    }
}
