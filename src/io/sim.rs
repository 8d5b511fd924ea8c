//! `SimFs`: the real file system, plus the images a power cut could leave (test builds only).
//!
//! Every effect is performed on the real files (so maps, reads and the engine work as usual)
//! and recorded:
//!
//! * per file (by identity, so renames keep it): the **durable** bytes and size, as of its
//!   last `fsync`, or the ranges of its last `msync`s (which also make the size durable);
//! * the **durable names**: the directory as of its last fsync, and the name operations
//!   (create, rename, remove, and the replacement of a rename's target) issued since.
//!
//! A power cut (`image::power_cut`) writes what a disk could hold after a cut at this moment
//! into another directory:
//!
//! * **Names.** A create, rename or remove is durable only once the directory is fsynced
//!   (`sync_dir`). Until then each file keeps, independently of every other file, any name it
//!   had since the last directory fsync: its durable name (or none, if it was created since),
//!   or the name after any of its own pending operations (none after a remove). So each
//!   pending operation may be kept or lost, in any combination across files, yet the image is
//!   always consistent: a file renamed after its create can appear under the new name only
//!   (its create is then implied), a rename A->B then B->C leaves the file under A, B or C,
//!   and one name never holds two files (a rename over an existing file either replaced it
//!   or did not). With `RML_SIM_NAMES=prefix` a cut keeps instead a prefix of all pending
//!   name operations, in the order they were issued (a file system that orders them).
//! * **Data.** A file's bytes are durable only after its own `fsync` or `msync`: its durable
//!   bytes, plus any subset of the pages that differ from them now (written through the map
//!   or with `pwrite`, both visible in the real file), each kept or lost independently, and
//!   its durable or its live size.
//!
//! With [`SimFs::cut_after`] the images (several independent draws of the same moment) are
//! taken right after the k-th effect and every later effect fails with EIO: the machine is
//! off. A directory fsync issued shortly before the cut is slow (it waits a little before
//! taking effect, as a real one waits for the disk), so that other threads' effects can land
//! between a name operation and the fsync that would make it durable, as they can on a real
//! machine. [`SimFs::fail_nth`] fails one chosen call with an error instead.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use memmap2::MmapRaw;

use super::{Fs, RealFs};

mod harness;
mod image;

pub(crate) use harness::{power_cut_after_every_effect, scratch, workloads, Acked, Explored};

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

/// A name operation not yet made durable by a directory fsync, with the file identity it
/// concerns.
#[derive(Debug, Clone)]
enum NameOp {
    Create(PathBuf, u64),
    /// Renamed to this name.
    Rename(PathBuf, u64),
    Remove(u64),
    /// The file that held a rename's target name lost it (the rename replaced it).
    Replaced(u64),
}

/// Effects before the cut during which a directory fsync is slow (see the module doc).
const SLOW_DIR_FSYNC_WINDOW: u64 = 12;
/// How long such a directory fsync waits before it takes effect.
const SLOW_DIR_FSYNC: std::time::Duration = std::time::Duration::from_millis(2);

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
    /// Last live bytes of files removed from the directory, or replaced by a rename (still
    /// needed if the removal is lost in a cut).
    removed: HashMap<u64, Vec<u8>>,
    effects: u64,
    cut_after: Option<u64>,
    /// One directory per image to draw at the cut.
    cut_dirs: Vec<PathBuf>,
    cut_seed: u64,
    cut_taken: bool,
    /// A digest of each image drawn at the cut.
    cut_digests: Vec<u64>,
    fail: Option<(Kind, u64, i32)>,
    /// Fail the n-th directory fsync issued while a rename to a name with this suffix is
    /// pending: (suffix, n, errno, such fsyncs so far).
    fail_dir: Option<(&'static str, u64, i32, u64)>,
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

    /// Takes power-cut images right after effect number `k` (1-based), one into each of
    /// `into`, drawing what is not durable independently for each (from `seed` and the
    /// image's position); every later effect fails with EIO.
    pub(crate) fn cut_after(&self, k: u64, into: &[&Path], seed: u64) {
        let mut st = self.lock();
        st.cut_after = Some(k);
        st.cut_dirs = into.iter().map(|p| p.to_path_buf()).collect();
        st.cut_seed = seed;
    }

    /// For each image of the cut, whether it differs from every image drawn before it (an
    /// image equal to an earlier one need not be checked again). Empty if no cut was taken.
    pub(crate) fn distinct_images(&self) -> Vec<bool> {
        let st = self.lock();
        let mut seen = std::collections::HashSet::new();
        st.cut_digests.iter().map(|d| seen.insert(*d)).collect()
    }

    /// Fails the `n`-th (1-based) call of `kind` with `errno`, doing nothing.
    pub(crate) fn fail_nth(&self, kind: Kind, n: u64, errno: i32) {
        self.lock().fail = Some((kind, n, errno));
    }

    /// Fails the `n`-th (1-based) directory fsync issued while a rename to a name ending in
    /// `suffix` is pending (not durable yet) with `errno`, doing nothing.
    pub(crate) fn fail_dir_fsync_after_rename_to(&self, suffix: &'static str, n: u64, errno: i32) {
        self.lock().fail_dir = Some((suffix, n, errno, 0));
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
            let dirs = std::mem::take(&mut st.cut_dirs);
            let digests = dirs
                .iter()
                .enumerate()
                .map(|(i, into)| {
                    let seed = st.cut_seed ^ (i as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
                    image::power_cut(&st, into, seed)
                })
                .collect();
            st.cut_digests = digests;
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
        // A file the rename replaces keeps its last bytes, in case the replacement is lost.
        let target = self.lock().live.get(to).copied();
        let replaced = target.map(|id| (id, read_all(to)));
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
                    if let Some((old, bytes)) = replaced {
                        st.removed.insert(old, bytes);
                        st.pending.push(NameOp::Replaced(old));
                    }
                    st.live.insert(to.to_path_buf(), id);
                    st.pending.push(NameOp::Rename(to.to_path_buf(), id));
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
                    st.pending.push(NameOp::Remove(id));
                }
            },
        )
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        self.read_call(Kind::ReadDir)?;
        RealFs.read_dir(dir)
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        let slow = {
            let st = self.lock();
            !st.pending.is_empty()
                && st
                    .cut_after
                    .is_some_and(|c| c > st.effects && c - st.effects <= SLOW_DIR_FSYNC_WINDOW)
        };
        if slow {
            std::thread::sleep(SLOW_DIR_FSYNC);
        }
        {
            let mut st = self.lock();
            let renamed = |st: &State, suffix: &str| {
                st.pending.iter().any(|op| {
                    matches!(op, NameOp::Rename(p, _) if p.to_str().is_some_and(|p| p.ends_with(suffix)))
                })
            };
            if let Some((suffix, n, errno, seen)) = st.fail_dir {
                if !st.cut_taken && renamed(&st, suffix) {
                    st.fail_dir = Some((suffix, n, errno, seen + 1));
                    if seen + 1 == n {
                        return Err(io::Error::from_raw_os_error(errno));
                    }
                }
            }
        }
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
