//! Waking readers that wait for entries ([`Notify`]): a replication or apply thread parks until
//! the writer publishes, instead of polling.
//!
//! The writer's side costs one load per publication while nobody waits (and a compiler
//! fence). The protocol (checked by `tests/loom_notify.rs`, which compiles this file with
//! loom's types through `notify_sync`):
//!
//! 1. A waiter first checks its condition (a view of the log) and returns if it holds.
//! 2. Otherwise it counts itself in `waiting`, then a barrier, then takes the lock and checks
//!    again before every wait, so a publication it missed in step 1 is seen here.
//! 3. The writer publishes (its readers' atomics), then a barrier, then reads `waiting`; if
//!    anybody waits it takes the lock, and only then notifies.
//!
//! The two barriers order "count myself, then look" against "publish, then look": either the
//! writer sees the waiter counted (and notifies under the lock, which the waiter holds from
//! its last check until the wait releases it, so the notification cannot fall between the
//! two), or the waiter's check after its barrier sees the publication. No wake-up is lost.
//!
//! The barriers are asymmetric where the system allows it: the waiter, about to sleep
//! anyway, calls `membarrier` (a full barrier on every running thread of the process), so the
//! writer's side is a compiler fence only (membarrier(2) gives this very pattern). Elsewhere
//! both sides use a full fence (about 15–20 ns on the writer's side here).

use std::time::Instant;

use super::notify_sync::{
    compiler_fence, fence, membarrier, membarrier_available, AtomicUsize, Condvar, Mutex,
    MutexGuard, Ordering,
};

fn lock(m: &Mutex<()>) -> MutexGuard<'_, ()> {
    // Nothing is guarded but the order of check and wait: a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where readers wait for a log's writer to publish.
pub struct Notify {
    waiting: AtomicUsize,
    lock: Mutex<()>,
    published: Condvar,
    /// The waiter's barrier is `membarrier`, the writer's a compiler fence. Decided once, when
    /// the log opens, before either side exists.
    asymmetric: bool,
}

impl Default for Notify {
    fn default() -> Self {
        Notify {
            waiting: AtomicUsize::new(0),
            lock: Mutex::new(()),
            published: Condvar::new(),
            asymmetric: membarrier_available(),
        }
    }
}

impl std::fmt::Debug for Notify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notify")
            .field("waiting", &self.waiting.load(Ordering::Relaxed))
            .finish()
    }
}

impl Notify {
    /// Called by the writer after every publication (step 3).
    #[inline]
    pub fn wake(&self) {
        if self.asymmetric {
            compiler_fence(Ordering::SeqCst);
        } else {
            fence(Ordering::SeqCst);
        }
        if self.waiting.load(Ordering::Relaxed) == 0 {
            return;
        }
        drop(lock(&self.lock));
        self.published.notify_all();
    }

    /// Waits until `ready()` holds, or until `deadline` (never with `None`); returns whether
    /// it holds. `ready` is called again after every publication while the caller waits.
    pub fn wait_until(&self, deadline: Option<Instant>, mut ready: impl FnMut() -> bool) -> bool {
        if ready() {
            return true;
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        if self.asymmetric {
            membarrier();
        } else {
            fence(Ordering::SeqCst);
        }
        let mut guard = lock(&self.lock);
        let holds = loop {
            if ready() {
                break true;
            }
            guard = match deadline {
                None => self
                    .published
                    .wait(guard)
                    .unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        break false;
                    }
                    match self.published.wait_timeout(guard, d - now) {
                        Ok((g, _)) => g,
                        Err(e) => e.into_inner().0,
                    }
                }
            };
        };
        drop(guard);
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        holds
    }
}
