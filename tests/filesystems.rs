//! A full disk on real file systems: btrfs, XFS, ext4 (on loop devices) and tmpfs.
//!
//! For each file system a small image file is made with `mkfs.<fs>`, attached with `losetup`
//! and mounted; a filler file of real (non-zero) data leaves about 20 MiB free. Then:
//!
//! 1. **CLI**: `raft-mmap-log bench --dir <mnt>/bench --sync each --batch 1 --entry-size 64
//!    --segment-size 16777216 --keep` (the reported reproducer; it appends far more than fits).
//!    The binary is the workspace crate `cli/`'s, found next to this test's `deps/` directory
//!    (see `cli_binary`): the README's test command builds it; before running this test alone,
//!    `cargo build --release -p raft-mmap-log-cli`.
//! 2. **Writer**: a child process (this binary, `--exact child_entry`, env
//!    `RML_FS_CHILD=write:<dir>`) opens a `Store` on the mount and appends batches of entries,
//!    syncing after each and printing `RML ACK <next index>` once the sync returned, until an
//!    error, which it prints as `RML ERR <error>` before exiting with status 1.
//! 3. **Reopen on the full disk**: a child (`RML_FS_CHILD=reopen:<dir>`) runs `Store::open` on
//!    the still-full file system and checks every entry it finds.
//! 4. **Reopen after freeing space**: the filler is deleted, the file system unmounted and
//!    mounted again (so nothing is read from the old page cache) and the log opened in this
//!    process.
//!
//! Asserted: no process is killed by a signal (a store into a shared mapping whose block cannot
//! be allocated raises SIGBUS); 1 and 2 end with exit status 1 and an error that says
//! "No space left on device"; 3 either opens with every acknowledged entry or fails with that
//! same error; in 4 the log opens with every acknowledged entry, byte for byte, and whatever
//! follows them (written, not acknowledged) is contiguous and correct. All outcomes of a file
//! system are collected first and reported together, so one run shows every failure.
//!
//! Skipped with a printed `SKIPPED <test>: <reason>` (the test passes) when not root, when
//! `mkfs.<fs>` is not installed, or when the loop device or the mount fails (a container).
//! The four tests take turns (a mutex), so they do not compete for the disk and the CPU.
//!
//! Environment (all optional):
//! * `RML_FS_LIST=btrfs,xfs,ext4,tmpfs`: which file systems to run (default: all four);
//! * `RML_FS_FREE_MIB=20`: free space left by the filler;
//! * `RML_FS_ENTRY_SIZE=64`, `RML_FS_BATCH=32`: the writer's payload bytes per entry and
//!   entries per sync; `RML_FS_SEGMENT_SIZE=4194304`: its segment size. 4 MiB, not the CLI's
//!   16 MiB: with room for one 16 MiB segment but not two, opening a new log fails about half
//!   the time (the preparer's file and the first segment race for the space), and the writer
//!   is meant to fill the disk through several rollovers;
//! * `RML_FS_IMAGE_DIR`: where the image files go (default: the temporary directory).

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use raft_mmap_log::{Config, Store};

const CHILD_ENV: &str = "RML_FS_CHILD";
const MIB: u64 = 1 << 20;
/// The message of ENOSPC (`strerror(28)`), as the error text carries it.
const ENOSPC_TEXT: &str = "No space left on device";
/// Longest a child may run before it is killed and the case fails.
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

/// One file system at a time.
static TURN: Mutex<()> = Mutex::new(());

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number")),
        Err(_) => default,
    }
}

fn free_target() -> u64 {
    env_u64("RML_FS_FREE_MIB", 20) * MIB
}

fn entry_size() -> usize {
    env_u64("RML_FS_ENTRY_SIZE", 64) as usize
}

fn batch() -> u64 {
    env_u64("RML_FS_BATCH", 32).max(1)
}

fn segment_size() -> u64 {
    env_u64("RML_FS_SEGMENT_SIZE", 4 * MIB)
}

/// Payload of entry `i`: its index in the first bytes, then a pattern that depends on it.
fn payload(i: u64, len: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len)
        .map(|j| (i.wrapping_mul(31) as usize + j * 13 + 1) as u8)
        .collect();
    let head = i.to_le_bytes();
    let n = head.len().min(len);
    p[..n].copy_from_slice(&head[..n]);
    p
}

#[path = "support/mount.rs"]
mod mount;
use mount::{avail, mib, skip, Mounted};

/// How a process ended, with what it printed.
struct Ended {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Ended {
    fn signal(&self) -> Option<i32> {
        self.status.signal()
    }

    /// `exit 1`, `SIGBUS (signal 7)`, ...
    fn describe(&self) -> String {
        match (self.status.code(), self.signal()) {
            (Some(c), _) => format!("exit {c}"),
            (None, Some(s)) => format!(
                "killed by {} (signal {s}, shell status {})",
                signame(s),
                128 + s
            ),
            _ => format!("{}", self.status),
        }
    }

    fn all_text(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// The last line that starts with `prefix`, without it.
    fn last(&self, prefix: &str) -> Option<&str> {
        self.stdout
            .lines()
            .rev()
            .find_map(|l| l.find(prefix).map(|at| l[at + prefix.len()..].trim()))
    }

    fn tail(&self) -> String {
        let err: Vec<&str> = self.stderr.lines().rev().take(5).collect();
        let out: Vec<&str> = self
            .stdout
            .lines()
            .rev()
            .filter(|l| !l.contains("RML ACK"))
            .take(5)
            .collect();
        format!(
            "stdout: {:?} / stderr: {:?}",
            out.into_iter().rev().collect::<Vec<_>>(),
            err.into_iter().rev().collect::<Vec<_>>()
        )
    }
}

fn signame(s: i32) -> &'static str {
    match s {
        libc::SIGBUS => "SIGBUS",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGKILL => "SIGKILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGXFSZ => "SIGXFSZ",
        _ => "a signal",
    }
}

/// Runs `cmd` to its end (killed after `CHILD_TIMEOUT`), collecting its output.
fn run(mut cmd: Command) -> Ended {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > CHILD_TIMEOUT {
            child.kill().ok();
            let s = child.wait().unwrap();
            panic!("child ran longer than {CHILD_TIMEOUT:?} ({s}): {cmd:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ended {
        status,
        stdout: String::from_utf8_lossy(&t_out.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&t_err.join().unwrap()).into_owned(),
        elapsed: started.elapsed(),
    }
}

fn child(mode: &str, dir: &Path) -> Ended {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{mode}:{}", dir.display()));
    run(cmd)
}

fn config() -> Config {
    Config {
        segment_size: segment_size(),
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes

fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Entry point of the child processes; a no-op in a normal test run.
#[test]
fn child_entry() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (mode, dir) = spec.split_once(':').expect("RML_FS_CHILD=mode:dir");
    let code = match mode {
        "write" => write_until_error(Path::new(dir)),
        "reopen" => reopen_and_check(Path::new(dir)),
        _ => panic!("unknown child mode {mode}"),
    };
    std::process::exit(code);
}

/// Appends and syncs batches until an error. `RML ACK n`: entries `..n` are durable.
fn write_until_error(dir: &Path) -> i32 {
    let mut store = match Store::open(dir, config()) {
        Ok(s) => s,
        Err(e) => {
            emit(&format!("RML ERR open: {e}\n"));
            return 1;
        }
    };
    let (len, batch) = (entry_size(), batch());
    // Far more than the free space: running out of it is the point.
    let limit = 64 * free_target() / (len as u64 + 24) + 10_000;
    let mut next = 0u64;
    while next < limit {
        let payloads: Vec<Vec<u8>> = (next..next + batch).map(|i| payload(i, len)).collect();
        let r = store
            .append_batch((next..).zip(payloads.iter().map(|p| &p[..])))
            .and_then(|()| store.sync());
        if let Err(e) = r {
            emit(&format!("RML ERR {e}\n"));
            return 1;
        }
        next += batch;
        emit(&format!("RML ACK {next}\n"));
    }
    emit(&format!("RML DONE {next} entries without an error\n"));
    0
}

/// Checks entries `first..next` of `store` against `payload`; `Err` names the first bad one.
fn check_entries(store: &Store) -> Result<(u64, u64), String> {
    let snap = store.reader().view();
    let (first, next) = (snap.first_index(), snap.next_index());
    if first != 0 {
        return Err(format!("first index {first}, expected 0"));
    }
    for i in first..next {
        match snap.get(i) {
            Some(p) if p == &payload(i, entry_size())[..] => {}
            Some(_) => return Err(format!("entry {i} has other bytes")),
            None => return Err(format!("entry {i} missing below next index {next}")),
        }
    }
    Ok((first, next))
}

/// Opens the log (recovery may write: cut a torn tail, seal, roll over) and checks it.
fn reopen_and_check(dir: &Path) -> i32 {
    match Store::open(dir, config()) {
        Ok(store) => match check_entries(&store) {
            Ok((_, next)) => {
                emit(&format!("RML OPEN {next}\n"));
                0
            }
            Err(e) => {
                emit(&format!("RML BAD {e}\n"));
                2
            }
        },
        Err(e) => {
            emit(&format!("RML ERR {e}\n"));
            1
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The cases

/// The outcome a full disk must have: no signal, exit status 1, an ENOSPC message.
fn check_enospc(what: &str, e: &Ended, problems: &mut Vec<String>) {
    if e.signal().is_some() {
        problems.push(format!(
            "{what}: {} after {:.1?}; {}",
            e.describe(),
            e.elapsed,
            e.tail()
        ));
    } else if e.status.code() != Some(1) || !e.all_text().contains(ENOSPC_TEXT) {
        problems.push(format!(
            "{what}: expected exit 1 with \"{ENOSPC_TEXT}\", got {}; {}",
            e.describe(),
            e.tail()
        ));
    }
}

/// The `cli/` crate's binary as built with this test's profile (`target/<profile>/`, above
/// this test's `deps/`), or the file `RML_CLI_BIN` names.
fn cli_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("find this test's executable: {e}"))?;
    let bin = match std::env::var_os("RML_CLI_BIN") {
        Some(p) => PathBuf::from(p),
        None => match exe.parent().and_then(Path::parent) {
            Some(dir) => dir.join("raft-mmap-log"),
            None => return Err(format!("no target directory above {}", exe.display())),
        },
    };
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "no binary at {}: build it with this test's profile \
             (`cargo build [--release] -p raft-mmap-log-cli`) or set RML_CLI_BIN",
            bin.display()
        ))
    }
}

/// Step 1: the CLI benchmark on the nearly full file system (`before` bytes free) must end
/// with "No space left on device".
fn cli_bench(
    bin: &Path,
    m: &Mounted,
    before: u64,
    report: &mut Vec<String>,
    problems: &mut Vec<String>,
) {
    let bench_dir = m.mnt.join("bench");
    let entries = (4 * before / 64).max(1_000_000);
    let mut cmd = Command::new(bin);
    cmd.arg("bench")
        .arg("--dir")
        .arg(&bench_dir)
        .args(["--sync", "each", "--batch", "1", "--entry-size", "64"])
        .args(["--segment-size", "16777216", "--keep", "--entries"])
        .arg(entries.to_string());
    let e = run(cmd);
    let written = recorded_entries(&bench_dir);
    report.push(format!(
        "cli bench ({} free): {} after {:.2?}, {written} entries in the log; {}",
        mib(before),
        e.describe(),
        e.elapsed,
        e.stderr.lines().last().unwrap_or("").trim()
    ));
    check_enospc("cli bench", &e, problems);
    let _ = std::fs::remove_dir_all(&bench_dir);
}

fn full_disk(test: &str, fs: &'static str) {
    let list = std::env::var("RML_FS_LIST").unwrap_or_else(|_| "btrfs,xfs,ext4,tmpfs".into());
    if !list.split(',').any(|f| f.trim() == fs) {
        return skip(test, &format!("{fs} not in RML_FS_LIST={list}"));
    }
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let m = match Mounted::new(fs) {
        Ok(m) => m,
        Err(why) => return skip(test, &why),
    };
    let free = free_target();
    let mut problems: Vec<String> = Vec::new();
    let mut report: Vec<String> = Vec::new();

    // 1. The CLI benchmark (the reported reproducer), after filling the disk.
    let before = if fs == "tmpfs" {
        avail(&m.mnt)
    } else {
        m.fill(free)
    };
    match cli_binary() {
        Ok(bin) => cli_bench(&bin, &m, before, &mut report, &mut problems),
        Err(why) => problems.push(format!("cli bench: {why}")),
    }

    // 2. Append + sync until an error.
    let log_dir = m.mnt.join("log");
    let before = avail(&m.mnt);
    let e = child("write", &log_dir);
    let acked: u64 = e.last("RML ACK").map_or(0, |n| n.parse().unwrap());
    report.push(format!(
        "writer ({} free, {} B entries, {} per sync, {} segments): {} after {:.2?}, {acked} entries acknowledged; {}",
        mib(before),
        entry_size(),
        batch(),
        mib(segment_size()),
        e.describe(),
        e.elapsed,
        e.last("RML ERR").or(e.last("RML DONE")).unwrap_or("")
    ));
    check_enospc("writer", &e, &mut problems);
    if acked == 0 {
        problems.push("writer: no sync succeeded".into());
    }

    // 3. Reopen while the disk is still full.
    let e = child("reopen", &log_dir);
    report.push(format!(
        "reopen on the full disk: {} after {:.2?}; {}",
        e.describe(),
        e.elapsed,
        e.last("RML OPEN")
            .map(|n| format!("opened, {n} entries"))
            .or(e.last("RML ERR").map(String::from))
            .or(e.last("RML BAD").map(String::from))
            .unwrap_or_default()
    ));
    if let Some(n) = e.last("RML OPEN") {
        let n: u64 = n.parse().unwrap();
        if n < acked {
            problems.push(format!(
                "reopen on the full disk: {n} entries, {acked} were acknowledged"
            ));
        }
    } else {
        check_enospc("reopen on the full disk", &e, &mut problems);
    }

    // 4. Free space, remount, reopen here.
    m.free_space();
    if fs != "tmpfs" {
        m.remount();
    }
    match Store::open(&log_dir, config()) {
        Ok(store) => match check_entries(&store) {
            Ok((_, next)) => {
                report.push(format!(
                    "reopen after freeing space: {next} entries, all correct"
                ));
                if next < acked {
                    problems.push(format!(
                        "reopen after freeing space: {next} entries, {acked} were acknowledged"
                    ));
                }
            }
            Err(e) => problems.push(format!("reopen after freeing space: {e}")),
        },
        Err(e) => problems.push(format!("reopen after freeing space: {e}")),
    }

    eprintln!(
        "{test} ({fs}, {:.1?}):\n  {}",
        started.elapsed(),
        report.join("\n  ")
    );
    drop(m);
    assert!(
        problems.is_empty(),
        "{fs} with a full disk:\n  {}",
        problems.join("\n  ")
    );
}

/// Entries in a log directory, read without writing (0 when it cannot be read).
fn recorded_entries(dir: &Path) -> u64 {
    match raft_mmap_log::inspect::stat(dir) {
        Ok(s) => s.entries(),
        Err(_) => 0,
    }
}

#[test]
fn full_disk_btrfs() {
    full_disk("full_disk_btrfs", "btrfs");
}

#[test]
fn full_disk_xfs() {
    full_disk("full_disk_xfs", "xfs");
}

#[test]
fn full_disk_ext4() {
    full_disk("full_disk_ext4", "ext4");
}

#[test]
fn full_disk_tmpfs() {
    full_disk("full_disk_tmpfs", "tmpfs");
}
