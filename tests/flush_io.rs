//! `Config::flush_io`: a log asked to flush through io_uring uses it where the kernel allows
//! (and says so), or opens with the threads and says why; either way every acknowledged
//! entry is there after a reopen, in both write modes.

use std::sync::mpsc;

use raft_mmap_log::{Config, FlushIo, Store, WriteMode};

fn config(write_mode: WriteMode) -> Config {
    Config {
        segment_size: 64 * 1024,
        write_mode,
        flush_io: FlushIo::IoUring,
        ..Config::default()
    }
}

#[test]
fn a_log_flushed_through_io_uring_keeps_every_acknowledged_entry() {
    for mode in [WriteMode::Map, WriteMode::Pwrite] {
        let tmp = tempfile::tempdir().unwrap();
        let payload = |i: u64| vec![(i % 251) as u8; 100 + (i % 700) as usize];
        {
            let mut log = Store::open(tmp.path(), config(mode)).unwrap();
            match (FlushIo::IoUring.available(), log.flush_io()) {
                (Ok(()), (FlushIo::IoUring, None)) => {}
                (Err(why), (FlushIo::Threads, Some(said))) => {
                    assert_eq!(why, said);
                    eprintln!("io_uring refused here, threads used: {why}");
                }
                other => panic!("{other:?}"),
            }
            let (tx, rx) = mpsc::channel();
            // Across several segments (rollovers: directory fsyncs, sealed marks).
            for b in 0..100u64 {
                log.append_batch(
                    (b * 10..b * 10 + 10)
                        .map(|i| (i, payload(i)))
                        .collect::<Vec<_>>()
                        .iter()
                        .map(|(i, p)| (*i, &p[..])),
                )
                .unwrap();
                let tx = tx.clone();
                log.flush(move |r| tx.send((b, r.is_ok())).unwrap())
                    .unwrap();
            }
            for b in 0..100u64 {
                assert_eq!(rx.recv().unwrap(), (b, true));
            }
            log.purge_to(500).unwrap();
            log.sync().unwrap();
        }
        let log = Store::open(tmp.path(), config(mode)).unwrap();
        let view = log.reader().view();
        assert_eq!((view.first_index(), view.next_index()), (500, 1000));
        for i in 500..1000 {
            assert_eq!(
                view.get_checked(i).unwrap(),
                Some(&payload(i)[..]),
                "{mode:?} {i}"
            );
        }
    }
}

#[test]
fn threads_are_the_default_and_always_available() {
    assert_eq!(Config::default().flush_io, FlushIo::Threads);
    assert_eq!(FlushIo::Threads.available(), Ok(()));
    let tmp = tempfile::tempdir().unwrap();
    let log = Store::open(tmp.path(), Config::default()).unwrap();
    assert_eq!(log.flush_io(), (FlushIo::Threads, None));
}
