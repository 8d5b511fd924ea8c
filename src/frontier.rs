//! The two orders of concurrent appends (see `store::reserve`):
//!
//! - [`Frontier`]: the stream's open reservations, the bytes of the active segment that
//!   concurrent appends of a shared log have reserved but not written yet. The flusher syncs a
//!   range only once no earlier reservation is open in it ([`Frontier::wait_below`]), so what
//!   a sync makes durable, and what the synced mark vouches for, is written.
//! - [`InOrder`]: one group's reservations, applied (published to readers) in reservation
//!   order however their copies complete.
//!
//! Both are checked by a model checker (`tests/loom_frontier.rs`, which compiles this file
//! with `loom`'s mutex and condition variable through `frontier_sync`).

use std::collections::{BTreeMap, VecDeque};

use super::frontier_sync::{Condvar, Mutex, MutexGuard};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The critical sections below cannot leave their data half-changed (no call in them
    // panics), so a poisoned mutex's data is still consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The open reservations of the stream, in stream order.
#[derive(Debug, Default)]
pub struct Frontier {
    open: Mutex<FrontierState>,
    closed: Condvar,
}

#[derive(Debug, Default)]
struct FrontierState {
    next_ticket: u64,
    /// Ticket → (segment sequence number, start offset) of each open reservation.
    open: BTreeMap<u64, (u64, u64)>,
}

impl Frontier {
    /// Opens a reservation starting at `start` in segment `seq`. The caller holds the
    /// writer's lock, so tickets follow the stream's order.
    pub fn open(&self, seq: u64, start: u64) -> u64 {
        let mut s = lock(&self.open);
        let t = s.next_ticket;
        s.next_ticket += 1;
        s.open.insert(t, (seq, start));
        t
    }

    /// Closes reservation `ticket` (its bytes are written, or the log is poisoned).
    pub fn close(&self, ticket: u64) {
        lock(&self.open).open.remove(&ticket);
        self.closed.notify_all();
    }

    /// Waits until every byte before `end` in segment `seq` (and every byte of older
    /// segments) that a reservation holds is written.
    pub fn wait_below(&self, seq: u64, end: u64) {
        let mut s = lock(&self.open);
        while s
            .open
            .first_key_value()
            .is_some_and(|(_, &at)| at < (seq, end))
        {
            s = self.closed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Waits until no reservation is open. The caller holds the writer's lock, so none can
    /// open meanwhile.
    pub fn drain(&self) {
        let mut s = lock(&self.open);
        while !s.open.is_empty() {
            s = self.closed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Items completed in any order, applied in the order they were enqueued.
#[derive(Debug)]
pub struct InOrder<T> {
    state: Mutex<InOrderState<T>>,
}

#[derive(Debug)]
struct InOrderState<T> {
    /// (ticket, item, completed), in enqueue order.
    queue: VecDeque<(u64, Option<T>, bool)>,
    /// An item failed: nothing is applied any more.
    broken: bool,
}

impl<T> Default for InOrder<T> {
    fn default() -> Self {
        InOrder {
            state: Mutex::new(InOrderState {
                queue: VecDeque::new(),
                broken: false,
            }),
        }
    }
}

impl<T> InOrder<T> {
    /// Queues `item` under `ticket`, after every item queued before.
    pub fn enqueue(&self, ticket: u64, item: T) {
        lock(&self.state)
            .queue
            .push_back((ticket, Some(item), false));
    }

    /// Marks `ticket` completed (`ok`) or failed, then applies, in order and under this
    /// queue's lock, every completed item at the head of the queue. After a failure nothing
    /// more is applied (the items are dropped).
    pub fn complete(&self, ticket: u64, ok: bool, mut apply: impl FnMut(T)) {
        let mut s = lock(&self.state);
        s.broken |= !ok;
        if let Some(q) = s.queue.iter_mut().find(|q| q.0 == ticket) {
            q.2 = true;
        }
        while s.queue.front().is_some_and(|q| q.2) {
            let item = s.queue.pop_front().and_then(|q| q.1);
            if let (false, Some(item)) = (s.broken, item) {
                apply(item);
            }
        }
    }
}
