//! One process per log directory: a second process opening the same directory gets
//! `Error::Locked`; once the first is SIGKILLed the kernel releases its lock and the directory
//! opens with everything the first process synced.
//!
//! The "first process" is this test binary re-executed (`child_holder`, selected by the
//! `RML_TWO_PROC_CHILD` env var).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use raft_mmap_log::{Config, Error, Store};

const CHILD_ENV: &str = "RML_TWO_PROC_CHILD";
const N: u64 = 200;

fn config() -> Config {
    Config {
        segment_size: 16 * 1024,
        ..Config::default()
    }
}

fn payload(i: u64) -> Vec<u8> {
    format!("entry {i} ")
        .repeat(1 + (i % 13) as usize)
        .into_bytes()
}

/// Child side: opens the log, writes and syncs `N` entries, says so, then holds the log open
/// (appending unsynced entries) until killed.
#[test]
fn child_holder() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut store = Store::open(&dir, config()).expect("child open");
    for i in 1..=N {
        store.append(i, &payload(i)).unwrap();
    }
    store.sync().unwrap();
    println!("\nRML READY");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = N + 1;
    while Instant::now() < deadline {
        store.append(i, &payload(i)).unwrap();
        i += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    std::process::exit(4);
}

fn open_retrying_lock(dir: &Path, timeout: Duration) -> raft_mmap_log::Result<Store> {
    let deadline = Instant::now() + timeout;
    loop {
        match Store::open(dir, config()) {
            Err(Error::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            r => return r,
        }
    }
}

#[test]
fn second_process_is_locked_out_until_the_first_is_killed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_holder", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines.any(|l| l.map(|l| l.contains("RML READY")).unwrap_or(false));
    assert!(ready, "child never became ready: {:?}", child.wait());

    // Locked, with the directory named, as many times as we try.
    for _ in 0..3 {
        match Store::open(&dir, config()) {
            Err(Error::Locked { path }) => assert_eq!(path, dir),
            Err(e) => panic!("expected Locked, got {e}"),
            Ok(_) => panic!("a second process opened a locked log"),
        }
    }
    // Read-only tools refuse a live log: its bytes are being written.
    match raft_mmap_log::inspect::stat(&dir) {
        Err(Error::Locked { path }) => assert_eq!(path, dir),
        Err(e) => panic!("expected Locked, got {e}"),
        Ok(_) => panic!("stat read a log that another process is writing"),
    }

    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }
    let started = Instant::now();
    let store = open_retrying_lock(&dir, Duration::from_secs(5))
        .expect("open after the lock holder was killed");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "lock released only after {:?}",
        started.elapsed()
    );
    let snap = store.reader().view();
    assert_eq!(snap.first_index(), 1);
    assert!(snap.next_index() > N);
    for i in 1..snap.next_index() {
        assert_eq!(snap.get(i), Some(&payload(i)[..]), "entry {i}");
    }
    drop(snap);
    // And now this process holds it: a third opener is locked out.
    assert!(matches!(
        Store::open(&dir, config()),
        Err(Error::Locked { .. })
    ));
}
