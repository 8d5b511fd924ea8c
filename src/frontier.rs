//! The stream's open reservations: which bytes of the active segment concurrent appends of a
//! shared log have reserved but not written yet (see `store::reserve`). The flusher syncs a
//! range only once no earlier reservation is open in it ([`Frontier::wait_below`]), so what a
//! sync makes durable, and what the synced mark vouches for, is written.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex, MutexGuard};

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
