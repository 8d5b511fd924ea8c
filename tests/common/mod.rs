//! Helpers shared by the integration tests (each test file is its own crate and includes this
//! module with `mod common;`, so an item one binary does not use is marked `dead_code`).
//!
//! * [`Rng`] and [`derive`]: small deterministic randomness for payloads and damage.
//! * [`strict_config`], [`scratch`]: configurations and scratch directories.
//! * [`seg_files`], [`header_of`], [`is_sealed`], [`copy_segments`]: segment files of a log
//!   directory, their headers and sealed marks, and a consistent copy of an open log.
//! * [`damage`]: what a crash could do to such a copy after the durable frontier (used by
//!   `tests/crash_model.rs` and `tests/raft_crash_model.rs`).
//! * [`History`], [`proptest_cases`]: bookkeeping of the crash models.

#[allow(dead_code)]
pub mod child;
#[allow(dead_code)]
pub mod engine_model;
#[allow(dead_code)]
pub mod raft_model;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use raft_mmap_log::Config;
use raft_mmap_log::{Allocation, RecoveryMode};

#[allow(dead_code)]
pub const PAGE: u64 = 4096;
#[allow(dead_code)]
pub const SEG_HEADER: u64 = 64;
/// Bytes 40..48 of a segment header hold this once the segment is sealed (format.rs).
#[allow(dead_code)]
pub const SEALED_MAGIC: u64 = 0x5345_414c_4544_2121;

// ---------------------------------------------------------------------------------------------
// Deterministic randomness

/// SplitMix64: small deterministic RNG for payloads and damage.
#[allow(dead_code)]
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

#[allow(dead_code)]
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n`; 0 (without drawing) when `n == 0`.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    /// True with probability `num / den` (den > 0).
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
}

/// Payload bytes derived from `(tag, generation, len)`: a rewritten index gets other bytes.
#[allow(dead_code)]
pub fn derive(tag: u64, generation: u64, len: usize) -> Arc<[u8]> {
    let mut r = Rng(tag.wrapping_mul(0xD6E8_FEB8_6659_FD93) ^ generation.rotate_left(29));
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&r.next().to_le_bytes());
    }
    v.truncate(len);
    v.into()
}

// ---------------------------------------------------------------------------------------------
// Configurations and scratch directories

/// `segment_size`, strict recovery, `prepare_ahead` as given, and the allocation path that
/// `RML_ALLOCATION` names (`zero-fill` forces the fallback used where `fallocate` is refused;
/// `.ci/run` runs the crash tests once that way).
#[allow(dead_code)]
pub fn strict_config(segment_size: u64, prepare_ahead: bool) -> Config {
    Config {
        segment_size,
        recovery_mode: RecoveryMode::Strict,
        prepare_ahead,
        allocation: allocation_from_env(),
        ..Config::default()
    }
}

/// Segment size of the SIGKILL and power-loss writers: small, so that kills land during
/// rollovers.
#[allow(dead_code)]
pub const KILL9_SEG: u64 = 16 * 1024;

/// The configuration of the SIGKILL and power-loss writers (`tests/kill9.rs`,
/// `tests/kill9_raft.rs`, `tests/power_loss.rs`): [`KILL9_SEG`], strict, `prepare_ahead`.
#[allow(dead_code)]
pub fn kill9_config() -> Config {
    strict_config(KILL9_SEG, true)
}

/// The allocation path `RML_ALLOCATION` asks for (default: `fallocate`).
#[allow(dead_code)]
pub fn allocation_from_env() -> Allocation {
    match std::env::var("RML_ALLOCATION").as_deref() {
        Ok("zero-fill") => Allocation::ZeroFill,
        _ => Allocation::Auto,
    }
}

/// A scratch directory on `/dev/shm` when it exists (tests that fsync a lot: tmpfs makes that
/// free), else in the default temporary directory.
#[allow(dead_code)]
pub fn scratch(prefix: &str) -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new().prefix(prefix).tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Segment files: listing, headers, sealed marks, copies

/// The `*.seg` files of `dir`, sorted (oldest first).
#[allow(dead_code)]
pub fn seg_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".seg"))
        })
        .collect();
    v.sort();
    v
}

/// The first `SEG_HEADER` bytes of `path`, if it can be read that far.
#[allow(dead_code)]
pub fn header_of(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut h = vec![0u8; SEG_HEADER as usize];
    f.read_exact(&mut h).ok()?;
    Some(h)
}

/// Whether the segment image `bytes` carries a sealed mark.
#[allow(dead_code)]
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.len() >= 56 && u64::from_le_bytes(bytes[40..48].try_into().unwrap()) == SEALED_MAGIC
}

/// Copies every `*.seg` file of an open log's directory into `to` (newest first, so that
/// purged files deleted meanwhile can only be missing as a prefix). Retries if a sealed mark
/// was being written while copying.
#[allow(dead_code)]
pub fn copy_segments(from: &Path, to: &Path) {
    for _attempt in 0..100 {
        for p in seg_files(to) {
            std::fs::remove_file(p).expect("clean copy");
        }
        let mut files = seg_files(from);
        files.reverse();
        let mut copied = Vec::new();
        for p in files {
            let dst = to.join(p.file_name().expect("name"));
            match std::fs::copy(&p, &dst) {
                Ok(_) => copied.push((p, dst)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let _ = std::fs::remove_file(&dst);
                }
                Err(e) => panic!("copy {}: {e}", p.display()),
            }
        }
        let stable = copied.iter().all(|(src, dst)| match header_of(src) {
            None => true,
            Some(h) => Some(h) == header_of(dst),
        });
        if stable {
            return;
        }
    }
    panic!("segment headers kept changing while copying");
}

// ---------------------------------------------------------------------------------------------
// Crash damage after the durable frontier

#[allow(dead_code)]
#[derive(Debug, Clone, Copy)]
enum Damage {
    None,
    ZeroSuffix,
    Garbage,
    DropPages,
}

/// Damages the copy in `dir` after the durable frontier `durable` (active segment and offset
/// when the last completed flush/sync was issued). Returns a description.
///
/// `workarounds` re-enables the old workarounds for engine recovery bugs fixed since (see
/// `CRASH_MODEL_WORKAROUNDS` in `tests/raft_crash_model.rs`); they draw nothing from `rng`.
#[allow(dead_code)]
pub fn damage(dir: &Path, durable: &(PathBuf, u64), rng: &mut Rng, workarounds: bool) -> String {
    let files = seg_files(dir);
    let mut data: Vec<Vec<u8>> = files
        .iter()
        .map(|p| std::fs::read(p).expect("read copy"))
        .collect();
    let durable_name = durable.0.file_name().expect("durable name");
    let mut d = files
        .iter()
        .position(|p| p.file_name() == Some(durable_name))
        .unwrap_or_else(|| panic!("durable segment {} missing", durable.0.display()));
    let mut off = durable.1;
    // Segments sealed since the frontier: the flusher may just as well not have got to them
    // yet (it runs behind the writer). Honour a random prefix of those seal marks and erase
    // the rest, as if the crash came first.
    let sealed_since = (d..files.len())
        .take_while(|&k| is_sealed(&data[k]))
        .count();
    let honour = if rng.chance(1, 2) {
        sealed_since
    } else {
        rng.below(sealed_since as u64 + 1) as usize
    };
    for mark in data.iter_mut().skip(d + honour).take(sealed_since - honour) {
        mark[40..56].fill(0);
    }
    // A sealed segment is fully durable; its successor was never flushed on its own.
    for _ in 0..honour {
        if d + 1 < files.len() {
            d += 1;
            off = 0;
        } else {
            off = data[d].len() as u64;
        }
    }
    // Unsynced region: (file, from) for files d.. ; `from == 0` means the whole file.
    let region: Vec<(usize, u64)> = (d..files.len())
        .map(|k| (k, if k == d { off } else { 0 }))
        .collect();
    let total: u64 = region
        .iter()
        .map(|&(k, from)| data[k].len() as u64 - from)
        .sum();
    let orig = if workarounds {
        data.clone()
    } else {
        Vec::new()
    };
    let mode = match rng.below(4) {
        0 => Damage::None,
        1 => Damage::ZeroSuffix,
        2 => Damage::Garbage,
        _ => Damage::DropPages,
    };
    let mut desc = format!(
        "{mode:?} durable=({}, {}) sealed_since={sealed_since} honoured={honour} unsynced_from=({d},{off}) files={}",
        durable_name.to_string_lossy(),
        durable.1,
        files.len()
    );
    let mut removed_from = files.len();
    if total > 0 {
        match mode {
            Damage::None => {}
            Damage::ZeroSuffix => {
                let mut cut = rng.below(total);
                let mut first_hit = true;
                for &(k, from) in &region {
                    let len = data[k].len() as u64 - from;
                    if first_hit && cut >= len {
                        cut -= len;
                        continue;
                    }
                    let mut at = if first_hit { from + cut } else { 0 };
                    // Never a partial header: it sits in the first sector, written whole or
                    // not at all.
                    if from == 0 && at < SEG_HEADER {
                        at = 0;
                    }
                    first_hit = false;
                    desc += &format!(" zero({k}@{at}..)");
                    data[k][at as usize..].fill(0);
                }
            }
            Damage::Garbage => {
                for _ in 0..1 + rng.below(6) {
                    let (k, from) = region[rng.below(region.len() as u64) as usize];
                    let from = from.max(SEG_HEADER);
                    let size = data[k].len() as u64;
                    if from >= size {
                        continue;
                    }
                    // Bias towards the start of the unsynced range, where records are.
                    let span = (size - from).min(if rng.chance(1, 2) { 512 } else { u64::MAX });
                    let at = from + rng.below(span);
                    let n = (1 + rng.below(128)).min(size - at);
                    desc += &format!(" garbage({k}@{at}+{n})");
                    for b in &mut data[k][at as usize..(at + n) as usize] {
                        *b = rng.next() as u8;
                    }
                }
            }
            Damage::DropPages => {
                for &(k, from) in &region {
                    let size = data[k].len() as u64;
                    let mut page = from / PAGE * PAGE;
                    while page < size {
                        if rng.chance(1, 2) {
                            let a = page.max(from);
                            let b = (page + PAGE).min(size);
                            desc += &format!(" drop({k}@{a}..{b})");
                            data[k][a as usize..b as usize].fill(0);
                        }
                        page += PAGE;
                    }
                }
            }
        }
        // Files created after the frontier may be lost from the directory (a suffix of them).
        let whole: Vec<usize> = region
            .iter()
            .filter(|&&(_, from)| from == 0)
            .map(|&(k, _)| k)
            .collect();
        if !whole.is_empty() && rng.chance(1, 3) {
            let n = 1 + rng.below(whole.len() as u64) as usize;
            removed_from = files.len() - n;
            desc += &format!(" remove({removed_from}..)");
        }
        // A file whose size never became durable comes back zero-length or short. The engine
        // syncs a new file's size before naming it, so only a suffix of the files created
        // after the frontier is modelled this way (what a file system that drops unsynced
        // metadata, or a log written before that fix, leaves): the first file of the suffix
        // keeps any prefix, the later ones keep no header.
        let kept: Vec<usize> = whole.into_iter().filter(|&k| k < removed_from).collect();
        if !kept.is_empty() && !workarounds && rng.chance(1, 3) {
            let n = 1 + rng.below(kept.len() as u64) as usize;
            for (j, &k) in kept[kept.len() - n..].iter().enumerate() {
                let size = data[k].len() as u64;
                // Sizes a file really had: 0 when created, whole pages while allocated.
                let len = match rng.below(3) {
                    0 => 0,
                    1 => rng.below(SEG_HEADER),
                    _ => PAGE * (1 + rng.below((size / PAGE).saturating_sub(1).max(1))),
                }
                .min(size);
                data[k].truncate(len as usize);
                if j > 0 || len < SEG_HEADER {
                    let h = data[k].len().min(SEG_HEADER as usize);
                    data[k][..h].fill(0);
                }
                desc += &format!(" short({k}:{len})");
            }
        }
    }
    if workarounds {
        // Workarounds for known engine recovery bugs (fixed since).
        let zero_tail = |k: usize| match data[k].iter().zip(&orig[k]).position(|(a, b)| a != b) {
            Some(c) => data[k][c..].iter().all(|&b| b == 0),
            None => false,
        };
        if let Some(k) = (d..removed_from.min(files.len()).saturating_sub(1))
            .find(|&k| !is_sealed(&data[k]) && zero_tail(k))
        {
            removed_from = k + 1;
            desc += &format!(" [workaround: remove({removed_from}..)]");
        }
        let last = removed_from.min(files.len()) - 1;
        for k in d..last {
            if data[k][..SEG_HEADER as usize].iter().all(|&b| b == 0) {
                data[k][..SEG_HEADER as usize].copy_from_slice(&orig[k][..SEG_HEADER as usize]);
                data[k][40..56].fill(0);
                desc += &format!(" [workaround: header {k} kept]");
            }
        }
    }
    for (k, p) in files.iter().enumerate() {
        if k >= removed_from {
            std::fs::remove_file(p).expect("remove");
        } else if k >= d {
            std::fs::write(p, &data[k]).expect("write damaged copy");
        }
    }
    desc
}

// ---------------------------------------------------------------------------------------------
// Crash-model bookkeeping

/// Model states since the durable frontier, with absolute numbering.
#[allow(dead_code)]
pub struct History<M> {
    /// Absolute number of `states[0]`.
    pub base: usize,
    /// `states[0]` is the durable state; every later one may be what a crash recovers.
    pub states: Vec<M>,
    /// Durable frontier: active segment and offset when the last completed flush was issued.
    pub durable: (PathBuf, u64),
}

#[allow(dead_code)]
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

/// Proptest case count: `PROPTEST_CASES`, default 64.
#[allow(dead_code)]
pub fn proptest_cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

// ---------------------------------------------------------------------------------------------
// Failure reports

/// Panics with `msg` followed by what is needed to understand a failure on the log in `dir`
/// (somewhere inside `tmp`): the directory listing and a read-only recovery report
/// ([`describe_dir`]). `tmp` is kept on disk and its path printed. Call it with no `Store`
/// open on `dir` in this process.
#[allow(dead_code)]
pub fn fail_keeping_dir(tmp: tempfile::TempDir, dir: &Path, msg: &str) -> ! {
    let kept = tmp.keep();
    panic!(
        "{msg}\n  directory kept: {}\n{}",
        kept.display(),
        describe_dir(dir)
    );
}

/// The files of `dir` (names and sizes), then what the read-only tools say about it:
/// `inspect::verify` (problems and notes) and `inspect::stat` (state, what opening would
/// recover). They take a read lock; if they cannot (the directory is still locked), that is
/// said, and nothing reads the files without the lock (that would race a writer).
#[allow(dead_code)]
pub fn describe_dir(dir: &Path) -> String {
    use raft_mmap_log::inspect;
    use std::fmt::Write;
    let mut s = format!("  listing of {}:\n", dir.display());
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            let mut v: Vec<(String, String)> = rd
                .map(|e| match e {
                    Ok(e) => (
                        e.file_name().to_string_lossy().into_owned(),
                        match e.metadata() {
                            Ok(m) => m.len().to_string(),
                            Err(err) => format!("? ({err})"),
                        },
                    ),
                    Err(err) => (format!("? ({err})"), String::new()),
                })
                .collect();
            v.sort();
            for (name, size) in v {
                let _ = writeln!(s, "    {name:<30} {size:>10}");
            }
        }
        Err(e) => {
            let _ = writeln!(s, "    cannot list: {e}");
        }
    }
    match inspect::verify(dir, &|_| {}) {
        Ok(r) => {
            let _ = writeln!(
                s,
                "  verify: {} ({} segments, {} records, {} entry records, raft checked: {})",
                if r.is_sound() { "sound" } else { "PROBLEMS" },
                r.segments,
                r.records,
                r.entry_records,
                r.raft_checked
            );
            for f in &r.findings {
                let _ = writeln!(s, "    {:?}: {f}", f.severity);
            }
        }
        Err(e) => {
            let _ = writeln!(s, "  verify failed: {e}");
        }
    }
    match inspect::stat(dir) {
        Ok(st) => {
            let _ = writeln!(
                s,
                "  stat: entries {}..{}, {} segments, corruption: {:?}\n  stat: recovery would \
                 do: {:?}",
                st.first_index,
                st.next_index,
                st.segments.len(),
                st.corruption,
                st.recovery
            );
        }
        Err(e) => {
            let _ = writeln!(s, "  stat failed: {e}");
        }
    }
    s
}
