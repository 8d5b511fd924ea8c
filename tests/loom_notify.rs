//! Model check (loom: every interleaving, within its bounds) of the wake-up protocol readers
//! wait on (`src/notify.rs`, compiled here with loom's atomics, mutex and condition variable):
//! a reader that waits for a publication is always woken once it happens, whichever way the
//! writer's publication and the reader's check interleave. A lost wake-up would leave the
//! reader blocked with no thread left to wake it, which loom reports as a deadlock.

/// What `src/notify.rs` imports as `super::notify_sync`.
mod notify_sync {
    pub use loom::sync::atomic::{fence, AtomicUsize, Ordering};
    pub use loom::sync::{Condvar, Mutex, MutexGuard};
    pub use std::sync::atomic::compiler_fence;

    /// Loom has no process-wide barrier: the model checks the protocol with a full fence on
    /// both sides. The library replaces the writer's fence with a compiler fence where the
    /// waiter can use `membarrier`, whose guarantee (membarrier(2): a fast path of store,
    /// compiler barrier, load against a slow path of store, `membarrier`, load) stands in for
    /// it.
    pub fn membarrier_available() -> bool {
        false
    }

    pub fn membarrier() {}
}

#[path = "../src/notify.rs"]
#[allow(dead_code)]
mod notify;

use loom::sync::atomic::{AtomicU64, Ordering};
use loom::sync::Arc;
use notify::Notify;

#[path = "support/loom_model.rs"]
mod loom_model;
use loom_model::model;

/// The log as readers see it: how many entries are published.
struct Log {
    published: AtomicU64,
    notify: Notify,
}

impl Log {
    fn new() -> Arc<Self> {
        Arc::new(Log {
            published: AtomicU64::new(0),
            notify: Notify::default(),
        })
    }

    /// The writer: publish, then wake.
    fn publish(&self, n: u64) {
        self.published.store(n, Ordering::Release);
        self.notify.wake();
    }

    /// A reader waiting (without a deadline) until `n` entries are published.
    fn wait_for(&self, n: u64) -> bool {
        self.notify
            .wait_until(None, || self.published.load(Ordering::Acquire) >= n)
    }
}

#[test]
fn a_waiting_reader_is_woken_by_the_publication() {
    model(|| {
        let log = Log::new();
        let reader = {
            let log = log.clone();
            loom::thread::spawn(move || assert!(log.wait_for(1)))
        };
        log.publish(1);
        reader.join().unwrap();
    });
}

#[test]
fn two_readers_waiting_for_different_entries_are_both_woken() {
    model(|| {
        let log = Log::new();
        let readers: Vec<_> = [1, 2]
            .into_iter()
            .map(|n| {
                let log = log.clone();
                loom::thread::spawn(move || assert!(log.wait_for(n)))
            })
            .collect();
        log.publish(1);
        log.publish(2);
        for r in readers {
            r.join().unwrap();
        }
    });
}

#[test]
fn a_reader_that_comes_after_the_publication_does_not_wait() {
    model(|| {
        let log = Log::new();
        log.publish(1);
        let reader = {
            let log = log.clone();
            loom::thread::spawn(move || assert!(log.wait_for(1)))
        };
        reader.join().unwrap();
    });
}
