//! A view that outlives its `Store` keeps its bytes while another process opens the same
//! directory, purges, appends and would recycle the files the view maps (invariant I6 across
//! processes: the mapping lock on byte 1 of `DIR/LOCK`).
//!
//! The other process is this test binary re-executed (`child_writer`, selected by the
//! `RML_OTHER_PROC_DIR` env var; a no-op test in a normal run).

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use raft_mmap_log::format::SEGMENT_FLAG_RECYCLED;
use raft_mmap_log::{Config, Store};

const CHILD_ENV: &str = "RML_OTHER_PROC_DIR";

fn config() -> Config {
    Config {
        segment_size: 4096,
        prepare_ahead: false,
        segment_pool: 2,
        ..Config::default()
    }
}

fn payload(i: u64) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..300)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn append(store: &mut Store, range: std::ops::Range<u64>) {
    let batch: Vec<(u64, Vec<u8>)> = range.map(|i| (i, payload(i))).collect();
    store
        .append_batch(batch.iter().map(|(i, p)| (*i, &p[..])))
        .unwrap();
}

/// Child side: opens the log, appends, purges all but the last entry, appends enough for
/// many new segments (each a recycling chance), syncs and says `RML DONE`.
#[test]
fn child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut store = match Store::open(&dir, config()) {
        Ok(s) => s,
        Err(e) => {
            println!("\nRML FAIL open: {e}");
            std::process::exit(3);
        }
    };
    let next = store.next_index();
    append(&mut store, next..next + 50);
    store.sync().unwrap();
    store.purge_to(next + 49).unwrap();
    store.sync().unwrap();
    append(&mut store, next + 50..next + 250);
    store.sync().unwrap();
    store.purge_to(next + 240).unwrap();
    store.sync().unwrap();
    append(&mut store, next + 250..next + 300);
    store.sync().unwrap();
    drop(store);
    println!("\nRML DONE");
}

/// Runs `child_writer` on `dir` to its end (killed after a minute) and checks it finished.
fn run_child(dir: &Path) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("child writer hung");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        status.success() && out.contains("RML DONE"),
        "child writer failed ({status:?}):\n{out}\n{err}"
    );
}

/// Segment files of `dir` whose header has the recycled flag.
fn recycled_segment_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .filter(|e| {
            let Ok(f) = std::fs::File::open(e.path()) else {
                return false;
            };
            let mut flags = [0u8; 4];
            f.read_exact_at(&mut flags, 32).is_ok()
                && u32::from_le_bytes(flags) & SEGMENT_FLAG_RECYCLED != 0
        })
        .count()
}

#[test]
fn a_view_keeps_its_bytes_while_another_process_writes_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let mut store = Store::open(&dir, config()).unwrap();
    append(&mut store, 0..60);
    store.sync().unwrap();
    let view = store.reader().view();
    let held: Vec<&[u8]> = (0..40).map(|i| view.get(i).unwrap()).collect();
    let expected: Vec<Vec<u8>> = held.iter().map(|s| s.to_vec()).collect();
    // Two purged segments go to the pool, still mapped by the view.
    store.purge_to(45).unwrap();
    store.sync().unwrap();
    drop(store);

    // Another process opens the directory while the view lives, writes and would recycle.
    run_child(&dir);
    for (i, (now, was)) in held.iter().zip(&expected).enumerate() {
        assert!(
            now == was,
            "entry {i}: bytes changed under a view while another process wrote the directory"
        );
    }
    assert_eq!(
        recycled_segment_files(&dir),
        0,
        "a file this process maps was recycled by another process"
    );
    // Tools still read the directory meanwhile.
    let stat = raft_mmap_log::inspect::stat(&dir).unwrap();
    assert!(stat.entries() > 0);

    // Once the view is gone, another process recycles again.
    drop(held);
    drop(view);
    run_child(&dir);
    assert!(
        recycled_segment_files(&dir) > 0,
        "no pooled file was recycled once the view was dropped"
    );
    let store = Store::open(&dir, config()).unwrap();
    assert_eq!(
        store.reader().view().get(store.next_index() - 1).unwrap(),
        {
            let last = store.next_index() - 1;
            &payload(last)[..]
        }
    );
}
