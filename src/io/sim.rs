//! `SimFs`: the real file system, plus the image a power cut would leave (test builds only).
//!
//! Every effect is performed on the real files (so maps, reads and the engine work as usual)
//! and recorded:
//!
//! * per file (by identity, so renames keep it): the **durable** bytes and size, as of its
//!   last `fsync`, or the ranges of its last `msync`s (which also make the size durable);
//! * the **durable names**: the directory as of its last fsync, and the name operations
//!   (create, rename, remove) issued since, in order.
//!
//! [`SimFs::power_cut`] writes what a disk could hold after a cut at this moment into another
//! directory: the durable names plus a prefix of the pending name operations (a journaling
//! file system commits them in order), each file with its durable bytes, any subset of its
//! unsynced pages, and its durable or its live size. With [`SimFs::cut_after`] the image is
//! taken right after the k-th effect and every later effect fails with EIO: the machine is
//! off. [`SimFs::fail_nth`] fails one chosen call with an error instead.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use memmap2::MmapRaw;

use super::{Fs, RealFs};

const PAGE: usize = 4096;

/// Kinds of effects, for fault injection and counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Create,
    Open,
    Fallocate,
    Write,
    SetLen,
    Fsync,
    Msync,
    Rename,
    Remove,
    SyncDir,
    ReadDir,
}

#[derive(Debug, Clone)]
enum NameOp {
    Create(PathBuf, u64),
    Rename(PathBuf, PathBuf, u64),
    Remove(PathBuf),
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    /// Live names (what the directory says now) -> file identity.
    live: HashMap<PathBuf, u64>,
    /// Names as of the last directory fsync.
    durable_names: HashMap<PathBuf, u64>,
    /// Name operations since the last directory fsync, in order.
    pending: Vec<NameOp>,
    /// Durable bytes of each file (their length is the durable size).
    durable: HashMap<u64, Vec<u8>>,
    /// Last live bytes of files removed from the directory (still needed if the removal is
    /// lost in a cut).
    removed: HashMap<u64, Vec<u8>>,
    effects: u64,
    cut_after: Option<u64>,
    cut_dir: Option<PathBuf>,
    cut_seed: u64,
    cut_taken: bool,
    fail: Option<(Kind, u64, i32)>,
    calls: HashMap<Kind, u64>,
    /// Renames of a pooled file (`*.pool`) to a segment name: recycled segments installed.
    recycled: u64,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct SimFs {
    state: Mutex<State>,
}

fn read_all(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

/// A small deterministic generator (xorshift), so a seed replays a cut.
pub(crate) struct Rng(pub u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0 | 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

impl SimFs {
    /// A simulated file system over `dir`, whose present files are all durable.
    pub(crate) fn new(dir: &Path) -> Self {
        let mut st = State::default();
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_file() {
                    let id = st.next_id;
                    st.next_id += 1;
                    st.durable.insert(id, read_all(&p));
                    st.live.insert(p.clone(), id);
                    st.durable_names.insert(p, id);
                }
            }
        }
        SimFs {
            state: Mutex::new(st),
        }
    }

    /// Takes the power-cut image into `into` right after effect number `k` (1-based), drawing
    /// the unsynced parts with `seed`; every later effect fails with EIO.
    pub(crate) fn cut_after(&self, k: u64, into: &Path, seed: u64) {
        let mut st = self.lock();
        st.cut_after = Some(k);
        st.cut_dir = Some(into.to_path_buf());
        st.cut_seed = seed;
    }

    /// Fails the `n`-th (1-based) call of `kind` with `errno`, doing nothing.
    pub(crate) fn fail_nth(&self, kind: Kind, n: u64, errno: i32) {
        self.lock().fail = Some((kind, n, errno));
    }

    /// Effects performed so far.
    pub(crate) fn effects(&self) -> u64 {
        self.lock().effects
    }

    /// Calls of `kind` so far.
    pub(crate) fn calls(&self, kind: Kind) -> u64 {
        self.lock().calls.get(&kind).copied().unwrap_or(0)
    }

    /// Pooled files renamed into the log as segments so far (recycled segments installed).
    pub(crate) fn recycled_installs(&self) -> u64 {
        self.lock().recycled
    }

    /// Whether the cut image was taken.
    pub(crate) fn cut_taken(&self) -> bool {
        self.lock().cut_taken
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one effect: refuses it if the power is off or a fault is due, else performs it
    /// with `op` and records it with `record`; then takes the cut image if this was the k-th.
    fn effect<R>(
        &self,
        kind: Kind,
        op: impl FnOnce() -> io::Result<R>,
        record: impl FnOnce(&mut State),
    ) -> io::Result<R> {
        let mut st = self.lock();
        if st.cut_taken {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let n = {
            let c = st.calls.entry(kind).or_insert(0);
            *c += 1;
            *c
        };
        if let Some((k, nth, errno)) = st.fail {
            if k == kind && nth == n {
                return Err(io::Error::from_raw_os_error(errno));
            }
        }
        let r = op()?;
        record(&mut st);
        st.effects += 1;
        if st.cut_after == Some(st.effects) {
            if let Some(into) = st.cut_dir.clone() {
                let seed = st.cut_seed;
                power_cut(&st, &into, seed);
            }
            st.cut_taken = true;
        }
        Ok(r)
    }

    /// A call that changes nothing (a read) but can fail like an effect.
    fn read_call(&self, kind: Kind) -> io::Result<()> {
        let mut st = self.lock();
        if st.cut_taken {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let n = {
            let c = st.calls.entry(kind).or_insert(0);
            *c += 1;
            *c
        };
        match st.fail {
            Some((k, nth, errno)) if k == kind && nth == n => {
                Err(io::Error::from_raw_os_error(errno))
            }
            _ => Ok(()),
        }
    }

    fn id_of(st: &State, path: &Path) -> Option<u64> {
        st.live.get(path).copied()
    }
}

/// Writes into `into` what a disk could hold if the power went off now.
fn power_cut(st: &State, into: &Path, seed: u64) {
    let mut rng = Rng(seed ^ 0x9E37_79B9_7F4A_7C15);
    // Names: the durable ones, then a prefix of the pending operations.
    let mut names = st.durable_names.clone();
    let keep = rng.below(st.pending.len() as u64 + 1) as usize;
    for op in &st.pending[..keep] {
        match op {
            NameOp::Create(p, id) => {
                names.insert(p.clone(), *id);
            }
            NameOp::Rename(a, b, id) => {
                names.remove(a);
                names.insert(b.clone(), *id);
            }
            NameOp::Remove(p) => {
                names.remove(p);
            }
        }
    }
    let live_path: HashMap<u64, &PathBuf> = st.live.iter().map(|(p, id)| (*id, p)).collect();
    for (name, id) in names {
        let durable = st.durable.get(&id).cloned().unwrap_or_default();
        let live = match live_path.get(&id) {
            Some(p) => read_all(p),
            None => st.removed.get(&id).cloned().unwrap_or_default(),
        };
        // Size: durable, or (if it changed since) the live one.
        let size = if live.len() != durable.len() && rng.below(2) == 0 {
            live.len()
        } else {
            durable.len()
        };
        let mut bytes = durable;
        bytes.resize(size, 0);
        // Any subset of the pages that differ from the durable bytes.
        let mut at = 0;
        while at < size {
            let end = (at + PAGE).min(size);
            let src = live.get(at..end.min(live.len())).unwrap_or(&[]);
            if src != &bytes[at..at + src.len()] && rng.below(2) == 0 {
                bytes[at..at + src.len()].copy_from_slice(src);
            }
            at = end;
        }
        if let Some(file_name) = name.file_name() {
            let _ = std::fs::write(into.join(file_name), &bytes);
        }
    }
}

impl Fs for SimFs {
    fn create(&self, path: &Path) -> io::Result<File> {
        self.effect(
            Kind::Create,
            || RealFs.create(path),
            |st| {
                let id = st.next_id;
                st.next_id += 1;
                st.live.insert(path.to_path_buf(), id);
                st.durable.insert(id, Vec::new());
                st.pending.push(NameOp::Create(path.to_path_buf(), id));
            },
        )
    }

    fn open(&self, path: &Path, writable: bool) -> io::Result<File> {
        self.read_call(Kind::Open)?;
        RealFs.open(path, writable)
    }

    fn fallocate(&self, file: &File, path: &Path, len: u64) -> io::Result<()> {
        self.effect(
            Kind::Fallocate,
            || RealFs.fallocate(file, path, len),
            |_| {},
        )
    }

    fn write_at(&self, file: &File, path: &Path, data: &[u8], offset: u64) -> io::Result<()> {
        self.effect(
            Kind::Write,
            || RealFs.write_at(file, path, data, offset),
            |_| {},
        )
    }

    fn set_len(&self, file: &File, path: &Path, len: u64) -> io::Result<()> {
        self.effect(Kind::SetLen, || RealFs.set_len(file, path, len), |_| {})
    }

    fn fsync(&self, file: &File, path: &Path) -> io::Result<()> {
        // The simulation keeps its own durable image; the real fsync is not needed.
        let read = || -> io::Result<Vec<u8>> {
            let mut bytes = vec![0u8; file.metadata()?.len() as usize];
            file.read_exact_at(&mut bytes, 0)?;
            Ok(bytes)
        };
        let bytes = read()?;
        self.effect(
            Kind::Fsync,
            || Ok(()),
            |st| {
                if let Some(id) = Self::id_of(st, path) {
                    st.durable.insert(id, bytes);
                }
            },
        )
    }

    /// # Safety
    /// As [`Fs::map`].
    unsafe fn map(
        &self,
        file: &File,
        path: &Path,
        len: usize,
        writable: bool,
    ) -> io::Result<MmapRaw> {
        // SAFETY: forwarded: the caller upholds `Fs::map`'s contract.
        unsafe { RealFs.map(file, path, len, writable) }
    }

    fn msync(&self, _map: &MmapRaw, path: &Path, from: usize, len: usize) -> io::Result<()> {
        let live = read_all(path);
        self.effect(
            Kind::Msync,
            || Ok(()),
            |st| {
                if let Some(id) = Self::id_of(st, path) {
                    let d = st.durable.entry(id).or_default();
                    // The size becomes durable with the data (fdatasync semantics).
                    d.resize(live.len(), 0);
                    let a = from / PAGE * PAGE;
                    let b = (from + len)
                        .div_ceil(PAGE)
                        .saturating_mul(PAGE)
                        .min(live.len());
                    if a < b {
                        d[a..b].copy_from_slice(&live[a..b]);
                    }
                }
            },
        )
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.effect(
            Kind::Rename,
            || RealFs.rename(from, to),
            |st| {
                let suffix = |p: &Path, s: &str| p.to_str().is_some_and(|p| p.ends_with(s));
                if suffix(from, crate::format::POOL_SUFFIX)
                    && suffix(to, crate::format::SEGMENT_SUFFIX)
                {
                    st.recycled += 1;
                }
                if let Some(id) = st.live.remove(from) {
                    st.live.insert(to.to_path_buf(), id);
                    st.pending
                        .push(NameOp::Rename(from.to_path_buf(), to.to_path_buf(), id));
                }
            },
        )
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let last = read_all(path);
        self.effect(
            Kind::Remove,
            || RealFs.remove(path),
            |st| {
                if let Some(id) = st.live.remove(path) {
                    st.removed.insert(id, last);
                }
                st.pending.push(NameOp::Remove(path.to_path_buf()));
            },
        )
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        self.read_call(Kind::ReadDir)?;
        RealFs.read_dir(dir)
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        self.effect(
            Kind::SyncDir,
            || Ok(()),
            |st| {
                st.durable_names = st.live.clone();
                st.pending.clear();
            },
        )
    }
}

/// A scratch directory for the seam's crash models, on `/dev/shm` when it exists.
pub(crate) fn scratch(prefix: &str) -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new().prefix(prefix).tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().expect("tempdir")
}

/// Number of workloads of the seam's crash models: `RML_SIM_WORKLOADS`, default 10.
pub(crate) fn workloads() -> u64 {
    std::env::var("RML_SIM_WORKLOADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

/// The last model state a crash model's flushes acknowledged, shared with flush callbacks.
#[derive(Debug, Clone, Default)]
pub(crate) struct Acked(std::sync::Arc<Mutex<usize>>);

impl Acked {
    /// Records that everything up to state `upto` is durable (never moves back).
    pub(crate) fn raise(&self, upto: usize) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *g = (*g).max(upto);
    }

    /// A flush callback that raises the mark to `upto` if the flush succeeded.
    pub(crate) fn on_flush(&self, upto: usize) -> impl FnOnce(crate::Result<()>) + Send + 'static {
        let a = self.clone();
        move |r| {
            if r.is_ok() {
                a.raise(upto)
            }
        }
    }

    /// The mark.
    pub(crate) fn get(&self) -> usize {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The power-cut loop of the seam's crash models. For each workload `seed` (see
/// [`workloads`]): `run(seed, dir, fs)` once without a cut (the dry run, counting its effects),
/// handed to `after_dry(seed, dir, fs, result)`; then once per effect k of the dry run, on a
/// fresh directory, with a power cut right after effect k that writes the durable image
/// (torn with seed `seed * seed_step + k`). A run that reaches no effect k takes no cut and
/// is skipped; otherwise `check(seed, k, image, result)` recovers the image and checks it.
/// Returns the number of cuts.
pub(crate) fn power_cut_after_every_effect<R>(
    prefix: &str,
    seed_step: u64,
    mut run: impl FnMut(u64, &Path, std::sync::Arc<SimFs>) -> R,
    mut after_dry: impl FnMut(u64, &Path, &SimFs, R),
    mut check: impl FnMut(u64, u64, &Path, R),
) -> u64 {
    let mut cuts = 0u64;
    for seed in 0..workloads() {
        let dry = scratch(prefix);
        let fs = std::sync::Arc::new(SimFs::new(dry.path()));
        let r = run(seed, dry.path(), fs.clone());
        after_dry(seed, dry.path(), &fs, r);
        for k in 1..=fs.effects() {
            let dir = scratch(prefix);
            let image = scratch(prefix);
            let fs = std::sync::Arc::new(SimFs::new(dir.path()));
            fs.cut_after(k, image.path(), seed * seed_step + k);
            let r = run(seed, dir.path(), fs.clone());
            if !fs.cut_taken() {
                // Group commit merges flushes by timing, so a run may have fewer effects than
                // the dry run: nothing to cut here.
                continue;
            }
            cuts += 1;
            check(seed, k, image.path(), r);
        }
    }
    cuts
}
