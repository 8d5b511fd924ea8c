//! Model check (loom: every interleaving, within its bounds) of the two orders concurrent
//! appends rely on (`src/frontier.rs`, compiled here with loom's mutex and condition
//! variable):
//!
//! - the flusher's wait ([`Frontier::wait_below`]) returns only once every reservation
//!   opened before, starting below its offset, is written; a drain returns only once all are;
//! - a group's reservations are published in reservation order, each exactly once, whatever
//!   order their copies finish in, and nothing after a failed one.

/// What `src/frontier.rs` imports as `super::frontier_sync`.
mod frontier_sync {
    pub use loom::sync::{Condvar, Mutex, MutexGuard};
}

#[path = "../src/frontier.rs"]
#[allow(dead_code)]
mod frontier;

use frontier::{Frontier, InOrder};

#[path = "support/loom_model.rs"]
mod loom_model;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::{Arc, Mutex};
use loom_model::model;

/// One reservation: where it starts, whether its bytes are written.
struct Res {
    start: u64,
    written: AtomicBool,
}

/// Two writers reserve (under the log's lock: ticket and queue entry together, in stream
/// order), then copy and complete concurrently; a flusher waits for the first one's range.
#[test]
fn the_flusher_never_passes_an_unwritten_reservation_and_publishing_keeps_order() {
    model(|| {
        let frontier = Arc::new(Frontier::default());
        let queue: Arc<InOrder<u64>> = Arc::new(InOrder::default());
        let log = Arc::new(Mutex::new(0u64)); // the write position
        let applied = Arc::new(Mutex::new(Vec::new()));
        let res: Arc<Vec<Res>> = Arc::new(
            [0u64, 100]
                .iter()
                .map(|&start| Res {
                    start,
                    written: AtomicBool::new(false),
                })
                .collect(),
        );
        let writers: Vec<_> = (0..2usize)
            .map(|w| {
                let (frontier, queue, log) = (frontier.clone(), queue.clone(), log.clone());
                let (applied, res) = (applied.clone(), res.clone());
                loom::thread::spawn(move || {
                    // Reserve: whoever takes the lock first gets the first range.
                    let (ticket, k) = {
                        let mut pos = log.lock().unwrap();
                        let k = usize::from(*pos != 0);
                        *pos += 100;
                        let t = frontier.open(1, res[k].start);
                        queue.enqueue(t, k as u64);
                        (t, k)
                    };
                    let _ = w;
                    // Copy, then publish in the group's order, then close the ticket.
                    res[k].written.store(true, Ordering::Release);
                    queue.complete(ticket, true, |item| applied.lock().unwrap().push(item));
                    frontier.close(ticket);
                })
            })
            .collect();
        let flusher = {
            let (frontier, res, log) = (frontier.clone(), res.clone(), log.clone());
            loom::thread::spawn(move || {
                // A flush request takes the write position under the log's lock, as
                // `Store::flush` does; the flusher then syncs up to it.
                let end = *log.lock().unwrap();
                frontier.wait_below(1, end);
                for r in res.iter().filter(|r| r.start < end) {
                    assert!(
                        r.written.load(Ordering::Acquire),
                        "synced up to {end} while the reservation at {} was not written",
                        r.start
                    );
                }
            })
        };
        for w in writers {
            w.join().unwrap();
        }
        flusher.join().unwrap();
        frontier.drain();
        assert!(res.iter().all(|r| r.written.load(Ordering::Acquire)));
        assert_eq!(
            *applied.lock().unwrap(),
            vec![0, 1],
            "published out of order"
        );
    });
}

/// The flusher waits while the first reservation is open, even if a later one is written.
#[test]
fn wait_below_returns_only_after_the_earlier_reservation_is_written() {
    model(|| {
        let frontier = Arc::new(Frontier::default());
        let first = Arc::new(AtomicBool::new(false));
        let t0 = frontier.open(1, 0);
        let t1 = frontier.open(1, 100);
        let w0 = {
            let (frontier, first) = (frontier.clone(), first.clone());
            loom::thread::spawn(move || {
                first.store(true, Ordering::Release);
                frontier.close(t0);
            })
        };
        let w1 = {
            let frontier = frontier.clone();
            loom::thread::spawn(move || frontier.close(t1))
        };
        frontier.wait_below(1, 50);
        assert!(
            first.load(Ordering::Acquire),
            "synced past an open reservation"
        );
        // A range below the second reservation's start does not wait for it (it may
        // still be open here); a drain waits for both.
        frontier.drain();
        w0.join().unwrap();
        w1.join().unwrap();
    });
}

/// After a failed copy nothing later of the group is published, and the earlier ones are.
#[test]
fn nothing_is_published_after_a_failed_reservation() {
    model(|| {
        let queue: Arc<InOrder<u64>> = Arc::new(InOrder::default());
        let applied = Arc::new(Mutex::new(Vec::new()));
        for t in 0..3u64 {
            queue.enqueue(t, t);
        }
        let threads: Vec<_> = (0..3u64)
            .map(|t| {
                let (queue, applied) = (queue.clone(), applied.clone());
                loom::thread::spawn(move || {
                    queue.complete(t, t != 1, |i| applied.lock().unwrap().push(i));
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let got = applied.lock().unwrap().clone();
        assert!(got.is_empty() || got == vec![0], "published {got:?}");
    });
}
