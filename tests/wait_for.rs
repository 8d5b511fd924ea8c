//! `Reader::wait_for`: a reader parked until the writer appends the entry it waits for is
//! woken by that append, through every way entries are published (`Store::append`, a shared
//! log's concurrent `Group::append_batch`, `Groups::write`, the Raft layer), and not by
//! another group's entries; with nothing appended it returns `false` once its time is up.
//!
//! Every wait has a long timeout. A wait that is not woken still sees its entry when its time
//! is up, so a lost wake-up shows as a wait that lasted the whole timeout: the waiters below
//! count that as a failure (and stop at the first one).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use raft_mmap_log::groups::{Groups, WriteBatch};
use raft_mmap_log::raft::{LogId, RaftLog, RaftTypes};
use raft_mmap_log::{Config, Reader, Store};

const PATIENCE: Duration = Duration::from_secs(20);

fn config() -> Config {
    Config {
        segment_size: 64 * 1024,
        ..Config::default()
    }
}

/// A thread that waits for entries `from..to` of `reader` one by one, telling `parked` before
/// each wait; it returns whether every wait was woken (it ended before its timeout) and saw its
/// entry readable.
fn waiter(
    reader: Reader,
    from: u64,
    to: u64,
    parked: mpsc::Sender<u64>,
) -> std::thread::JoinHandle<bool> {
    std::thread::spawn(move || {
        (from..to).all(|i| {
            let _ = parked.send(i);
            let t = Instant::now();
            reader.wait_for(i, PATIENCE) && t.elapsed() < PATIENCE && reader.view().get(i).is_some()
        })
    })
}

#[test]
fn a_store_reader_is_woken_by_each_append() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::open(tmp.path().join("log"), config()).unwrap();
    let (tx, rx) = mpsc::channel();
    let w = waiter(store.reader(), 0, 500, tx);
    for i in 0..500u64 {
        // Let the reader reach its wait most of the time: the append then has to wake it.
        let _ = rx.recv();
        if i % 2 == 0 {
            std::thread::sleep(Duration::from_micros(100));
        }
        store.append(i, &i.to_le_bytes()).unwrap();
    }
    assert!(w.join().unwrap(), "a wait ended without its entry");
}

#[test]
fn a_wait_with_nothing_appended_ends_with_false_after_its_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::open(tmp.path().join("log"), config()).unwrap();
    store.append(0, b"zero").unwrap();
    let reader = store.reader();
    assert!(reader.wait_for(0, Duration::ZERO), "an entry that is there");
    let t = Instant::now();
    assert!(!reader.wait_for(1, Duration::from_millis(30)));
    assert!(t.elapsed() >= Duration::from_millis(30));
    // Writes that publish something else (a meta value) wake it, and it goes back to waiting.
    let r = reader.clone();
    let w = std::thread::spawn(move || r.wait_for(1, Duration::from_millis(300)));
    std::thread::sleep(Duration::from_millis(50));
    store.put_meta(1, b"meta").unwrap();
    assert!(!w.join().unwrap(), "a meta value is not entry 1");
}

#[test]
fn a_group_reader_is_woken_by_its_group_and_not_by_others() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Groups::open(tmp.path().join("log"), config()).unwrap();
    let (a, b) = (log.group(1), log.group(2));
    // Concurrent appends (`Group::append_batch`) publish through the group's publisher.
    let (tx, rx) = mpsc::channel();
    let w = waiter(a.reader(), 0, 300, tx);
    for i in 0..300u64 {
        let _ = rx.recv();
        b.append_batch([(i, &b"other group"[..])]).unwrap();
        assert_eq!(
            a.reader().view().next_index(),
            i,
            "group 2's entries are not group 1's"
        );
        a.append_batch([(i, &i.to_le_bytes()[..])]).unwrap();
    }
    assert!(w.join().unwrap(), "a wait ended without its entry");

    // `Groups::write` (one batch for many groups) wakes a reader of each.
    let (tx1, rx1) = mpsc::channel();
    let (tx2, rx2) = mpsc::channel();
    let w1 = waiter(a.reader(), 300, 400, tx1);
    let w2 = waiter(b.reader(), 300, 400, tx2);
    for i in 300..400u64 {
        let _ = rx1.recv();
        let _ = rx2.recv();
        let p = i.to_le_bytes();
        let mut batch = WriteBatch::new();
        batch.add_entries(1, [(i, &p[..])]);
        batch.add_entries(2, [(i, &p[..])]);
        log.write(&batch).unwrap();
    }
    assert!(w1.join().unwrap() && w2.join().unwrap());

    // Another group's writes alone do not satisfy a wait.
    let r = a.reader();
    let w = std::thread::spawn(move || r.wait_for(400, Duration::from_millis(300)));
    for i in 400..410u64 {
        b.append_batch([(i, &b"x"[..])]).unwrap();
    }
    assert!(!w.join().unwrap());
}

#[test]
fn a_raft_reader_waits_for_the_entry_at_an_index() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = RaftLog::<RaftTypes>::open(tmp.path().join("log"), config()).unwrap();
    let reader = log.reader();
    let w = std::thread::spawn(move || {
        let t = Instant::now();
        reader.wait_for(3, PATIENCE) && t.elapsed() < PATIENCE && reader.view().next_index() == 4
    });
    for i in 0..4u64 {
        std::thread::sleep(Duration::from_millis(5));
        log.append([(LogId::new(1, 1, i), &b"entry"[..])]).unwrap();
    }
    assert!(w.join().unwrap());
}
