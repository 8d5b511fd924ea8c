//! Concurrent appends to a shared log (`groups::Groups`): threads reserve under the log's
//! lock and copy without it. With small segments (a rollover every few batches, each one
//! waiting for every open reservation), several threads appending to the same group, flushes
//! and truncates in between, readers on other threads must only ever see whole, checked
//! records in index order, and everything synced must be there after a reopen.
//!
//! `RML_CONCURRENT_ROUNDS` (default 1500) sets the batches per writer thread.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use raft_mmap_log::groups::Groups;
use raft_mmap_log::{Config, Error};

fn payload(group: u64, index: u64) -> Vec<u8> {
    let len = ((group * 131 + index * 17) % 300) as usize;
    (0..len as u64)
        .map(|k| (group ^ index.rotate_left(8) ^ k) as u8)
        .collect()
}

fn rounds() -> u64 {
    std::env::var("RML_CONCURRENT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500)
}

fn config(segment_size: u64) -> Config {
    Config {
        segment_size,
        segment_pool: 2,
        ..Config::default()
    }
}

/// Checks a view of `group`: every index below its next index reads back checked with the
/// payload it was written with.
fn check_view(log: &Groups, group: u64) -> u64 {
    let view = log.group(group).reader().view();
    let next = view.next_index();
    for i in view.first_index()..next {
        let got = view
            .get_checked(i)
            .unwrap_or_else(|e| panic!("group {group} index {i}: {e}"))
            .unwrap_or_else(|| panic!("group {group} index {i} below next {next} is missing"));
        assert_eq!(got, &payload(group, i)[..], "group {group} index {i}");
    }
    next
}

fn run(segment_size: u64) {
    let dir = tempfile::tempdir().unwrap();
    let log = Groups::open(dir.path(), config(segment_size)).unwrap();
    const OWN: u64 = 6; // threads with a group of their own: groups 1..=6
    const SHARED: u64 = 100; // appended to by 3 threads at once
    let stop = Arc::new(AtomicBool::new(false));
    // The shared group starts with entry 0: an empty group accepts any first index, so a
    // thread whose later range reserved first would otherwise start the group past the
    // others' ranges, and they would wait for ever.
    log.group(SHARED).append(0, &payload(SHARED, 0)).unwrap();
    // The shared group's next index, taken with the append so indexes stay consecutive.
    let shared_next = Arc::new(Mutex::new(1u64));
    let synced: Arc<Mutex<BTreeMap<u64, u64>>> = Arc::default();
    let mut writers = Vec::new();
    for t in 0..OWN + 3 {
        let log = log.clone();
        let shared_next = shared_next.clone();
        let synced = synced.clone();
        writers.push(std::thread::spawn(move || {
            let (group, shared) = if t < OWN {
                (t + 1, false)
            } else {
                (SHARED, true)
            };
            let g = log.group(group);
            let mut next = 0u64;
            for round in 0..rounds() {
                let n = 1 + (round * 7 + t) % 9;
                if shared {
                    // Hold the counter only to take indexes and reserve them: the copy of
                    // each thread's batch then runs concurrently with the others'.
                    let mut at = shared_next.lock().unwrap();
                    let first = *at;
                    let bodies: Vec<Vec<u8>> =
                        (first..first + n).map(|i| payload(group, i)).collect();
                    *at += n;
                    drop(at);
                    // Another thread may reserve between the counter and the append:
                    // retry in index order.
                    loop {
                        match g.append_batch(bodies.iter().zip(first..).map(|(b, i)| (i, &b[..]))) {
                            Ok(()) => break,
                            // Not its turn yet: the thread with the indexes before these
                            // has not reserved them. Sleep rather than spin, so it runs.
                            Err(Error::NonConsecutive { .. }) => {
                                std::thread::sleep(std::time::Duration::from_micros(20))
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                } else {
                    let bodies: Vec<Vec<u8>> =
                        (next..next + n).map(|i| payload(group, i)).collect();
                    g.append_batch(bodies.iter().zip(next..).map(|(b, i)| (i, &b[..])))
                        .unwrap();
                    next += n;
                    if round % 50 == 49 {
                        // A truncate of the last entry and its re-append (same payload): a
                        // call under the lock that waits for every open reservation.
                        g.truncate_from(next - 1).unwrap();
                        g.append(next - 1, &payload(group, next - 1)).unwrap();
                    }
                }
                if round % 10 == 0 {
                    g.sync().unwrap();
                    if !shared {
                        synced.lock().unwrap().insert(group, next);
                    }
                }
            }
            g.sync().unwrap();
            if !shared {
                synced.lock().unwrap().insert(group, next);
            }
        }));
    }
    let mut readers = Vec::new();
    for r in 0..2u64 {
        let log = log.clone();
        let stop = stop.clone();
        readers.push(std::thread::spawn(move || {
            let mut last: BTreeMap<u64, u64> = BTreeMap::new();
            let mut checks = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for group in (1..=OWN).chain([SHARED]).filter(|g| g % 2 == r) {
                    let next = check_view(&log, group);
                    let before = last.insert(group, next).unwrap_or(0);
                    // Only a truncate-and-re-append dips by one, and only for a moment.
                    assert!(
                        next + 1 >= before,
                        "group {group}: next went {before} -> {next}"
                    );
                    checks += 1;
                }
            }
            checks
        }));
    }
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    let shared_total = *shared_next.lock().unwrap();
    assert_eq!(check_view(&log, SHARED), shared_total);
    let synced = synced.lock().unwrap().clone();
    drop(log);

    let log = Groups::open(dir.path(), config(segment_size)).unwrap();
    for (group, next) in synced {
        assert_eq!(check_view(&log, group), next, "group {group} after reopen");
    }
    assert_eq!(check_view(&log, SHARED), shared_total);
    let files = std::fs::read_dir(dir.path()).unwrap().count();
    assert!(files > 3, "no rollover: {files} files");
}

#[test]
fn concurrent_appends_with_a_rollover_every_few_batches() {
    run(8 << 10);
}

#[test]
fn concurrent_appends_with_larger_segments() {
    run(256 << 10);
}
