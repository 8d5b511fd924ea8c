//! A log with thousands of segments under a low file-descriptor limit: sealed segments keep
//! their mapping but not their file descriptor, so the number of segments is not bounded by
//! `ulimit -n`. Its own test binary, because the limit applies to the whole process.

use raft_mmap_log::{Config, Store};

mod common;

const SEGMENTS: usize = 2000;
const FD_LIMIT: u64 = 256;

fn lower_fd_limit(to: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write or read one plain struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = to.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
}

fn payload(i: u64) -> Vec<u8> {
    (0..1200).map(|j| (i as usize * 7 + j) as u8).collect()
}

#[test]
fn two_thousand_segments_under_a_256_fd_limit() {
    let dir = common::scratch("rml-fds");
    lower_fd_limit(FD_LIMIT);
    let config = Config {
        segment_size: 4096,
        ..Config::default()
    };
    let mut store = Store::open(dir.path(), config.clone()).unwrap();
    let mut i = 0u64;
    while store.reader().view().segment_count() < SEGMENTS {
        store.append(i, &payload(i)).unwrap();
        i += 1;
        if i % 256 == 0 {
            store.sync().unwrap();
        }
    }
    store.sync().unwrap();
    drop(store);
    let store = Store::open(dir.path(), config).unwrap();
    let snap = store.reader().view();
    assert!(snap.segment_count() >= SEGMENTS);
    assert_eq!(snap.next_index(), i);
    for k in (0..i).step_by(97) {
        assert_eq!(snap.get(k), Some(&payload(k)[..]), "entry {k}");
    }
}
