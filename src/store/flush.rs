//! Durability requests of the writer: `flush` (queued to the flush thread, callback) and
//! `sync` (blocking; run on the caller's thread when the flush thread is idle).

use std::sync::mpsc;

use super::Store;
use crate::error::{Error, Result};
use crate::flusher::{Callback, FlushRequest, SyncTarget};

impl Store {
    /// Asks for everything written so far to be made durable; `callback` runs on the flush
    /// thread once it is (or with the error that prevented it). Many flushes queued while a
    /// sync runs share the next sync. Returns at once.
    ///
    /// `callback` is called exactly once, after the callbacks of every earlier flush, also when
    /// this returns an error: on a poisoned log it gets the same [`Error::Poisoned`] (at once
    /// if no earlier flush is still in flight, else after those).
    pub fn flush(&mut self, callback: impl FnOnce(Result<()>) + Send + 'static) -> Result<()> {
        self.submit_flush(Some(Box::new(callback)))
    }

    /// Like [`Store::flush`], but returns a future that resolves when the callback would run,
    /// with the result it would get (feature `tokio`; see [`Durable`](crate::Durable)).
    /// Returns at once; the flush is queued by this call, not by the first poll.
    #[cfg(feature = "tokio")]
    pub fn flushed(&mut self) -> crate::Durable {
        let (future, complete) = crate::Durable::new();
        // On an error `complete` has been called with it: the future carries it.
        let _ = self.flush(complete);
        future
    }

    fn submit_flush(&mut self, callback: Option<Callback>) -> Result<()> {
        let req = self.flush_request(callback);
        self.flusher.submit(req)
    }

    /// A request for everything written so far. Sealed segments were queued at rollover, so
    /// they are synced (oldest first) before this request's range of the active segment.
    fn flush_request(&mut self, callback: Option<Callback>) -> FlushRequest {
        FlushRequest {
            targets: vec![SyncTarget {
                segment: self.active.clone(),
                end: self.write_pos,
                seal: false,
            }],
            sync_dir: std::mem::take(&mut self.dir_dirty),
            deletes: std::mem::take(&mut self.pending_deletes),
            writeback: None,
            callback,
        }
    }

    /// A sync of everything written so far, claimed to run on this thread once the caller
    /// lets go of the log, when the flush thread is idle ([`crate::flusher::InlineSync`]);
    /// else the request is queued with a callback that sends its result to the receiver
    /// returned. Either way the caller waits without holding the log.
    pub(crate) fn sync_unlocked(&mut self) -> Result<SyncWait> {
        let req = self.flush_request(None);
        let mut req = match self.flusher.claim_if_idle(req) {
            Ok(inline) => return Ok(SyncWait::Inline(inline)),
            Err(req) => req,
        };
        let (tx, rx) = mpsc::sync_channel(1);
        req.callback = Some(Box::new(move |r| {
            let _ = tx.send(r);
        }));
        self.flusher.submit(req)?;
        Ok(SyncWait::Queued(rx))
    }

    /// Makes everything written so far durable, blocking until it is.
    ///
    /// When the flush thread has nothing in flight, the sync runs on this thread (the same
    /// steps the thread would take), saving two thread wake-ups; else it is queued behind
    /// the earlier requests, as [`Store::flush`] does, and waited for.
    pub fn sync(&mut self) -> Result<()> {
        let req = self.flush_request(None);
        let mut req = match self.flusher.run_if_idle(req) {
            Ok(done) => return done,
            Err(req) => req,
        };
        let (tx, rx) = mpsc::sync_channel(1);
        req.callback = Some(Box::new(move |r| {
            let _ = tx.send(r);
        }));
        self.flusher.submit(req)?;
        rx.recv().map_err(|_| Error::FlusherStopped)?
    }
}

/// A sync to wait for without holding the log ([`Store::sync_unlocked`]).
pub(crate) enum SyncWait {
    /// To run on the waiting thread.
    Inline(crate::flusher::InlineSync),
    /// Queued to the flush thread; its result arrives here.
    Queued(mpsc::Receiver<Result<()>>),
}

impl SyncWait {
    /// Waits until the sync is done (or runs it).
    pub(crate) fn wait(self) -> Result<()> {
        match self {
            SyncWait::Inline(s) => s.run(),
            SyncWait::Queued(rx) => rx.recv().map_err(|_| Error::FlusherStopped)?,
        }
    }
}
