//! Concurrent appends: reserve under the writer's lock, copy without it, publish in order.
//!
//! A shared log's [`Group::append_batch`](crate::groups::Group::append_batch) does not copy
//! its records while it holds the log: under the lock it only checks the batch, reserves its
//! bytes at the write position (advancing it, rolling over if needed), writes the small
//! `Group` record before it and fills the group's index slots with the offsets its records
//! will have. Then it lets go, and copies its records (checksums included) while other
//! threads reserve and copy theirs. Two orders keep this sound:
//!
//! - **Readers and the group's order.** Each group has a [`Publisher`]: a queue of its
//!   reservations in reservation order. A completed reservation is published (its run lengths
//!   and, if it changed the layout, its version) only once every earlier reservation of the
//!   group is published, so a reader sees a group's batches whole and in index order, never a
//!   slot whose record is not written.
//! - **The flusher and the stream's order.** Every reservation takes a ticket from the
//!   [`Frontier`] (`crate::frontier`), in stream order. Before syncing a segment up to an offset, the flusher
//!   waits until no earlier ticket is open there: what it syncs (and what the synced mark
//!   vouches for) is written. A rollover, which names the last record of the old segment in
//!   its checkpoint, and every call that still writes under the lock, wait until no ticket is
//!   open at all ([`Frontier::drain`]).
//!
//! A copy that fails (a `pwrite` error) or unwinds poisons the log and stops its group's
//! publishing: nothing after the hole is shown or acknowledged.

use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;

use crate::error::Result;
use crate::format::RecordKind;
use crate::frontier::{Frontier, InOrder};
use crate::index::Run;
use crate::notify::Notify;
use crate::record;
use crate::segment::Segment;
use crate::version::Version;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The critical sections below cannot leave their data half-changed (no call in them
    // panics), so a poisoned mutex's data is still consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What readers get once a reservation and every earlier one of its group are written.
pub(crate) struct Publication {
    /// Run lengths to publish (Release), in order.
    pub(crate) runs: Vec<(Arc<Run>, u64)>,
    /// The group's new layout, when the reservation changed it.
    pub(crate) version: Option<Arc<Version>>,
}

/// One group's reservations, published in reservation order.
pub(crate) struct Publisher {
    cell: Arc<ArcSwap<Version>>,
    queue: InOrder<Publication>,
    notify: Arc<Notify>,
}

impl Publisher {
    /// The publisher of the group whose readers load `cell` (and wait on `notify`).
    pub(crate) fn new(cell: Arc<ArcSwap<Version>>, notify: Arc<Notify>) -> Self {
        Publisher {
            cell,
            notify,
            queue: InOrder::default(),
        }
    }

    /// Queues reservation `ticket` (under the writer's lock, so in reservation order).
    pub(crate) fn enqueue(&self, ticket: u64, publication: Publication) {
        self.queue.enqueue(ticket, publication);
    }

    /// Marks `ticket` written (`ok`) or failed, and publishes every written reservation at
    /// the head of the queue. A failed one stops publishing for good.
    pub(crate) fn complete(&self, ticket: u64, ok: bool) {
        self.queue.complete(ticket, ok, |p| {
            if p.version.is_some() {
                // As `Store::finish`: a reader still holding the old version never pairs
                // its layout with entries published after it.
                self.cell.load().supersede();
            }
            for (run, len) in &p.runs {
                run.publish(*len);
            }
            if let Some(v) = p.version {
                self.cell.store(v);
            }
        });
        self.notify.wake();
    }
}

/// One record of a reservation, copied after the writer's lock is released
/// ([`crate::store::reserve`]).
pub(super) struct Copy<'a> {
    pub(super) segment: Arc<Segment>,
    pub(super) pos: usize,
    pub(super) index: u64,
    pub(super) payload: &'a [u8],
}

impl Copy<'_> {
    /// Writes the entry record (both checksums computed here).
    pub(super) fn write(&self) -> Result<()> {
        let h = record::header_with(
            self.segment.seed(),
            RecordKind::Entry,
            self.index,
            &[self.payload],
        );
        // SAFETY: `pos..pos + record size` was reserved for this record under the writer's
        // lock (inside the map: the reservation checked it against the segment size) and is
        // published only once this copy completes (`reserve::Publisher`); only the holder of
        // the reservation writes it.
        unsafe { self.segment.write_record(self.pos, &h, [&[], self.payload]) }
    }
}

/// A reservation whose records are still to be copied: what the copy needs, and the tickets
/// to close. Dropping it without [`Reservation::copy`] (an unwinding copy) poisons the log.
pub(crate) struct Reservation<'a> {
    pub(super) copies: Vec<Copy<'a>>,
    pub(super) ticket: u64,
    pub(super) publisher: Arc<Publisher>,
    pub(super) frontier: Arc<Frontier>,
    pub(super) poison: crate::flusher::Poison,
    pub(super) done: bool,
}

impl Reservation<'_> {
    /// Copies the records into their reserved places (no lock held), then publishes them in
    /// the group's order and closes the ticket. A failed write poisons the log.
    pub(crate) fn copy(mut self) -> Result<()> {
        let mut result = Ok(());
        for c in &self.copies {
            if let Err(e) = c.write() {
                result = Err(e);
                break;
            }
        }
        if let Err(e) = &result {
            let mut g = lock(&self.poison);
            g.get_or_insert_with(|| format!("a concurrent append failed to copy its records: {e}"));
        }
        self.finish(result.is_ok());
        result
    }

    fn finish(&mut self, ok: bool) {
        self.done = true;
        self.publisher.complete(self.ticket, ok);
        self.frontier.close(self.ticket);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.done {
            lock(&self.poison).get_or_insert_with(|| {
                "a concurrent append stopped before its records were copied".to_string()
            });
            self.finish(false);
        }
    }
}

impl super::Store {
    /// Reserves the records of `entries` for the focused group (consecutive indexes, the
    /// rules and limits of [`Store::append_batch`](super::Store::append_batch)), under the
    /// caller's lock on the log: checks them, places them (rolling over as needed; a
    /// rollover first writes this reservation's records in the old segment and waits for
    /// every other reservation, so that the new checkpoint can name the old segment's last
    /// record), writes the `Group` records, fills the index slots and advances the state.
    /// Nothing is visible to readers or the flusher until [`Reservation::copy`] completes.
    ///
    /// All or nothing: on error nothing is reserved (the log is as before, or poisoned if
    /// undoing failed). `None`: no entries.
    pub(crate) fn reserve_append<'a>(
        &mut self,
        entries: &[(u64, &'a [u8])],
    ) -> Result<Option<Reservation<'a>>> {
        self.check_writable()?;
        let parts = entries.iter().map(|&(i, p)| (i, &[][..], p));
        let Some(new_segments) = self.plan_append(&self.state, None, parts)? else {
            return Ok(None);
        };
        self.ensure_spares(new_segments)?;
        let undo = self.begin();
        let mut pending = super::write::Pending::default();
        let mut copies = Vec::with_capacity(entries.len());
        if let Err(e) = self.reserve_entries(entries, &mut copies, &mut pending) {
            return Err(self.rollback(undo, pending, e));
        }
        // Effects on others, as `finish` makes them, but the runs and the version wait for
        // the copy.
        let mut runs = std::mem::take(&mut pending.publish);
        if let Some(t) = &self.tail {
            runs.push((t.clone(), self.tail_len));
        }
        let version = pending.layout_changed.then(|| {
            self.version.first = self.state.first;
            self.version.next = self.state.next;
            self.version.metas = self.state.metas.clone();
            Arc::new(self.version.clone())
        });
        pending.layout_changed = false;
        self.submit_seals(&mut pending);
        let (seq, start) = match copies.first() {
            Some(c) => (c.segment.seq(), c.pos as u64),
            None => (self.active.seq(), self.write_pos),
        };
        let ticket = self.frontier.open(seq, start);
        self.publisher
            .enqueue(ticket, Publication { runs, version });
        self.hint_writeback();
        Ok(Some(Reservation {
            copies,
            ticket,
            publisher: self.publisher.clone(),
            frontier: self.frontier.clone(),
            poison: self.flusher.poison_cell(),
            done: false,
        }))
    }

    fn reserve_entries<'a>(
        &mut self,
        entries: &[(u64, &'a [u8])],
        copies: &mut Vec<Copy<'a>>,
        p: &mut super::write::Pending,
    ) -> Result<()> {
        for &(index, payload) in entries {
            let rs = crate::format::record_size(payload.len()) as u64;
            if self.write_pos + self.switch_len() + rs > self.active.size() {
                // The old segment must be complete before its successor's checkpoint names
                // its last record and the flusher seals it: this reservation's records there
                // are written now, and every other reservation is waited for.
                for c in copies.drain(..) {
                    c.write()?;
                    self.last_crc_at(c.pos as u64);
                }
                self.frontier.drain();
                self.rollover(p)?;
                self.check_fits_after_rollover(rs)?;
            }
            self.switch_stream()?;
            let pos = self.write_pos;
            copies.push(Copy {
                segment: self.active.clone(),
                pos: pos as usize,
                index,
                payload,
            });
            self.last_crc_at(pos);
            self.index_entry(index, pos as usize, rs, p);
        }
        Ok(())
    }

    /// The last record of the active segment is the one at `pos`, copied by a reservation.
    fn last_crc_at(&mut self, pos: u64) {
        self.crc_at = Some(pos);
    }
}
