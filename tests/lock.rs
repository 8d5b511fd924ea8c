//! The directory lock (`src/lock.rs`): POSIX record locks on `DIR/LOCK` plus a process-wide
//! registry.
//!
//! * `reopen_while_a_forked_child_holds_copies_of_the_fds`: a child forked by another thread
//!   holds copies of every descriptor until its `exec`; a directory just closed by this process
//!   must reopen at once anyway (it did not with `flock`, which the copy kept held).
//! * `tool_creates_a_missing_lock_file_and_locks_it`: a read-only tool on a directory without
//!   `LOCK` creates and locks it, so a `Store` (in this process or another) cannot open the
//!   directory while the tool reads.
//! * `readers_share_writers_exclude`: read locks share with each other, in this process and
//!   across processes, but not with a `Store`.
//!
//! The "other process" is this test binary re-executed (`child_try_open`, selected by the
//! `RML_LOCK_CHILD` env var); it tries to open the directory and prints the outcome.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use raft_mmap_log::inspect::ReadLock;
use raft_mmap_log::{Config, Error, Store};

const CHILD_ENV: &str = "RML_LOCK_CHILD";
const CHILD_MODE_ENV: &str = "RML_LOCK_CHILD_MODE";

fn config() -> Config {
    Config {
        segment_size: 16 * 1024,
        prepare_ahead: false,
        ..Config::default()
    }
}

/// Child side: opens the directory as a `Store` (mode `store`) or takes a read lock (mode
/// `read`) and prints `RML OK` or `RML LOCKED` or `RML ERR <error>`.
#[test]
fn child_try_open() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let res = match std::env::var(CHILD_MODE_ENV).as_deref() {
        Ok("read") => ReadLock::acquire(Path::new(&dir)).map(drop),
        _ => Store::open(&dir, config()).map(drop),
    };
    match res {
        Ok(()) => println!("\nRML OK"),
        Err(Error::Locked { .. }) => println!("\nRML LOCKED"),
        Err(e) => println!("\nRML ERR {e}"),
    }
}

/// Runs `child_try_open` in a child process on `dir` and returns its verdict line.
fn other_process_opens(dir: &Path, mode: &str) -> String {
    let out = Command::new(std::env::current_exe().expect("current exe"))
        .args([
            "--exact",
            "child_try_open",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .env(CHILD_MODE_ENV, mode)
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout
        .lines()
        .find_map(|l| l.find("RML ").map(|at| &l[at..]))
    {
        Some(line) => line.to_string(),
        None => panic!(
            "child printed no verdict ({:?}); stdout:\n{stdout}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[test]
fn reopen_while_a_forked_child_holds_copies_of_the_fds() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), config()).unwrap();

    // The child signals through `tx` (a copy of which it inherits) once it is forked, then
    // sleeps before its exec: meanwhile it holds copies of all our descriptors, the LOCK
    // file's included.
    let (mut rx, tx) = UnixStream::pair().unwrap();
    let spawner = std::thread::spawn(move || {
        let mut cmd = Command::new("true");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&tx);
        let in_child = move || {
            // SAFETY: `fd` is an open socket (inherited; closed only at exec) and the buffer
            // is one valid byte.
            let _ = unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) };
            std::thread::sleep(Duration::from_millis(400));
            Ok(())
        };
        // SAFETY: the closure runs in the forked child before exec and only calls `write` and
        // `nanosleep` (through `thread::sleep`), both async-signal-safe; it allocates nothing
        // and takes no lock.
        unsafe {
            cmd.pre_exec(in_child);
        }
        // `spawn` returns once the child has exec'd (or failed to), ~400 ms from now.
        let status = cmd.status().expect("spawn true");
        drop(tx);
        status
    });
    let mut b = [0u8; 1];
    rx.read_exact(&mut b).expect("child forked");

    drop(store);
    let reopened = Store::open(tmp.path(), config());
    let status = spawner.join().unwrap();
    assert!(status.success(), "{status:?}");
    let reopened =
        reopened.unwrap_or_else(|e| panic!("reopen while a forked child held the fds failed: {e}"));
    drop(reopened);
}

#[test]
fn tool_creates_a_missing_lock_file_and_locks_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut store = Store::open(dir, config()).unwrap();
    store.append(1, b"one").unwrap();
    store.sync().unwrap();
    drop(store);
    std::fs::remove_file(dir.join("LOCK")).unwrap();

    let read = ReadLock::acquire(dir).unwrap();
    assert!(dir.join("LOCK").exists(), "the tool did not create LOCK");
    let err = Store::open(dir, config()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert_eq!(other_process_opens(dir, "store"), "RML LOCKED");
    drop(read);

    assert_eq!(other_process_opens(dir, "store"), "RML OK");
    let store = Store::open(dir, config()).unwrap();
    assert_eq!(store.reader().view().get(1), Some(&b"one"[..]));
}

#[test]
fn readers_share_writers_exclude() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    drop(Store::open(dir, config()).unwrap());

    let a = ReadLock::acquire(dir).unwrap();
    let b = ReadLock::acquire(dir).unwrap();
    assert_eq!(other_process_opens(dir, "read"), "RML OK");
    assert_eq!(other_process_opens(dir, "store"), "RML LOCKED");
    drop(a);
    // One reader left: the file lock must still be held.
    assert_eq!(other_process_opens(dir, "store"), "RML LOCKED");
    let err = Store::open(dir, config()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    drop(b);

    let store = Store::open(dir, config()).unwrap();
    let err = ReadLock::acquire(dir).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert_eq!(other_process_opens(dir, "read"), "RML LOCKED");
    assert_eq!(other_process_opens(dir, "store"), "RML LOCKED");
    // A refused attempt in this process must not have released the lock (POSIX locks go
    // when any descriptor of the file is closed).
    let err = Store::open(dir, config()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert_eq!(other_process_opens(dir, "store"), "RML LOCKED");
    drop(store);
    assert_eq!(other_process_opens(dir, "store"), "RML OK");
    let _ = std::io::stdout().flush();
}
