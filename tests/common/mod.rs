//! Helpers shared by the integration tests (each test file is its own crate and includes this
//! module with `mod common;`, so an item one binary does not use is marked `dead_code`).
//!
//! * [`Rng`] and [`derive`]: small deterministic randomness for payloads and damage.
//! * [`strict_config`], [`scratch`]: configurations and scratch directories.
//! * [`seg_files`], [`header_of`], [`is_sealed`], [`copy_segments`]: segment files of a log
//!   directory, their headers and sealed marks, and a consistent copy of an open log.
//! * [`fail_keeping_dir`], [`describe_dir`]: failure reports that keep the directory.
//! * [`kill9_config`]: the writers of the SIGKILL and power-loss tests.
//!
//! Submodules (included by every test binary, used by a few):
//!
//! * [`damage`]: what a crash could do to such a copy after the durable frontier.
//! * [`crash_harness`]: the harness of the crash models (`tests/crash_model.rs`,
//!   `tests/raft_crash_model.rs`): flush bookkeeping, crash copy, damage, recovery, comparison
//!   with the candidate states, generic over the model and the opener.
//! * [`engine_model`]: the engine operation model of `tests/kill9.rs` and
//!   `tests/power_loss.rs`.
//! * [`raft_model`]: the `RaftLog` operation model of `tests/kill9_raft.rs`.
//! * [`raft_state_model`]: the typed `RaftLog` model of `tests/raft_crash_model.rs`.
//! * [`child`]: child processes of the SIGKILL tests (spawn, kill, line protocol) and env knobs.

#[allow(dead_code)]
pub mod child;
#[allow(dead_code)]
pub mod crash_harness;
#[allow(dead_code)]
pub mod damage;
#[allow(dead_code)]
pub mod engine_model;
#[allow(dead_code)]
pub mod raft_model;
#[allow(dead_code)]
pub mod raft_state_model;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use raft_mmap_log::Config;
use raft_mmap_log::{Allocation, FlushIo, RecoveryMode};

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

/// `segment_size`, strict recovery, `prepare_ahead` as given, the allocation path that
/// `RML_ALLOCATION` names (`zero-fill` forces the fallback used where `fallocate` is refused)
/// and the flush I/O that `RML_FLUSH_IO` names (`io-uring`); `.ci/run` runs the crash tests
/// once that way.
#[allow(dead_code)]
pub fn strict_config(segment_size: u64, prepare_ahead: bool) -> Config {
    Config {
        segment_size,
        recovery_mode: RecoveryMode::Strict,
        prepare_ahead,
        allocation: allocation_from_env(),
        flush_io: flush_io_from_env(),
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

/// The flush I/O `RML_FLUSH_IO` asks for (`io-uring`; default: the threads). A kernel that
/// refuses io_uring opens logs with the threads anyway: that is said once on stderr.
#[allow(dead_code)]
pub fn flush_io_from_env() -> FlushIo {
    match std::env::var("RML_FLUSH_IO").as_deref() {
        Ok("io-uring") => {
            if let Err(why) = FlushIo::IoUring.available() {
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| {
                    eprintln!("RML_FLUSH_IO=io-uring: refused ({why}), threads used")
                });
            }
            FlushIo::IoUring
        }
        _ => FlushIo::Threads,
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

/// Sets the length of the file at `path` (damage done behind the log's back).
#[allow(dead_code)]
pub fn set_len(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// Overwrites `bytes` at offset `at` of the file at `path` (damage done behind the log's back).
#[allow(dead_code)]
pub fn patch(path: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(bytes, at)
        .unwrap();
}

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
    match raft_mmap_log::raft::inspect::verify(dir, &|_| {}) {
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
