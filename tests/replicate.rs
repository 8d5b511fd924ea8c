//! The replication loops of `examples/replicate` (leader and follower over loopback TCP with
//! frames), with a small count: the follower's log equals the leader's at the end, also when
//! the follower drops its log and connection mid-stream and resumes from its durable index,
//! and when a full log is shipped to an empty follower (catch-up).

#[path = "../examples/replicate/loops.rs"]
#[allow(dead_code)]
mod loops;

fn options(entries: u64) -> loops::Options {
    loops::Options {
        entries,
        entry_size: 100,
        append_batch: 64,
        ship_batch: 500,
        segment_size: 256 * 1024,
        ..loops::Options::default()
    }
}

fn run(o: &loops::Options) -> loops::Report {
    let tmp = tempfile::tempdir().unwrap();
    loops::run(&tmp.path().join("leader"), &tmp.path().join("follower"), o).unwrap()
}

#[test]
fn live_replication_ends_with_equal_logs() {
    let r = run(&options(20_000));
    assert_eq!(r.follower.entries, 20_000);
    assert_eq!(r.follower.restarts, 0);
    assert_eq!(
        r.follower.copies_per_entry(),
        (0.0, 1.0),
        "the socket reads into the follower's map: no copy in user space"
    );
    assert_eq!(
        r.leader.copies_per_entry().0,
        1.0,
        "the append; sending copies nothing"
    );
    // The copy path, for comparison: a buffer, then `append_frames`.
    let r = run(&loops::Options {
        copy_receive: true,
        ..options(20_000)
    });
    assert_eq!(r.follower.entries, 20_000);
    assert_eq!(r.follower.copies_per_entry(), (1.0, 1.0));
    // The leader's spans sent from the segment files with `sendfile`.
    let r = run(&loops::Options {
        sendfile: true,
        ..options(20_000)
    });
    assert_eq!(r.follower.entries, 20_000);
}

#[test]
fn a_follower_restart_mid_stream_resumes_from_its_durable_index() {
    for at in [1, 7_000, 19_990] {
        let o = loops::Options {
            restart_at: Some(at),
            ..options(20_000)
        };
        let r = run(&o);
        assert_eq!(r.follower.restarts, 1, "restart at {at}");
        assert_eq!(r.follower.entries, 20_000);
    }
}

#[test]
fn catch_up_ships_a_full_log_without_copying_on_the_leader() {
    let r = run(&loops::Options {
        prefill: true,
        ..options(20_000)
    });
    assert!(r.prefill.is_some());
    assert_eq!(r.leader.copies_per_entry(), (0.0, 1.0));
}

/// The final check finds a follower log that differs from the leader's in one payload byte,
/// or in its length (what makes the example exit non-zero).
#[test]
fn the_comparison_finds_a_differing_log() {
    use raft_mmap_log::raft::{LogId, RaftLog, RaftTypes};
    let o = options(100);
    let cfg = || raft_mmap_log::Config {
        segment_size: o.segment_size,
        ..raft_mmap_log::Config::default()
    };
    let tmp = tempfile::tempdir().unwrap();
    let write = |dir: &std::path::Path, flip: Option<u64>, n: u64| {
        let mut log = RaftLog::<RaftTypes>::open(dir, cfg()).unwrap();
        for i in 0..n {
            let mut p = [i as u8; 100];
            if flip == Some(i) {
                p[50] ^= 1;
            }
            log.append([(LogId::new(1, 1, i), &p[..])]).unwrap();
        }
        log.sync().unwrap();
        log
    };
    let leader = write(&tmp.path().join("l"), None, 100);
    drop(write(&tmp.path().join("same"), None, 100));
    drop(write(&tmp.path().join("flipped"), Some(42), 100));
    drop(write(&tmp.path().join("short"), None, 99));
    loops::compare(&leader, &tmp.path().join("same"), &o).unwrap();
    let e = loops::compare(&leader, &tmp.path().join("flipped"), &o).unwrap_err();
    assert!(e.to_string().contains("entry 42"), "{e}");
    assert!(loops::compare(&leader, &tmp.path().join("short"), &o).is_err());
}
