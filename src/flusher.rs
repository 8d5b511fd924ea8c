//! The background flush thread: group commit.
//!
//! The writer sends [`FlushRequest`]s; the thread takes every request queued at the moment it
//! wakes, makes the union of their ranges durable with one `msync` per segment (oldest segment
//! first, sealing marks before anything newer), fsyncs the directory if files were created,
//! deletes purged files, and then runs the callbacks in the order they were requested.
//!
//! A failed sync poisons the log: every pending and later callback gets the error, and the
//! writer refuses further writes (after a failed fsync the kernel may have dropped the dirty
//! pages, so retrying could acknowledge data that is not on disk).
//!
//! Purged files go to the [`Pool`] of recycled segments while it has room (renamed to
//! `<token>.pool`; the preparer reuses them once no view maps them), else they are removed:
//! oldest first, with a directory fsync after each, so that the segment names a power cut
//! can leave stay contiguous. Every directory fsync here is counted in [`DirSyncs`], so the
//! writer knows which segment renames are durable.
//!
//! A blocking sync whose request would be the only one in flight ([`Flusher::run_if_idle`])
//! runs the same `process` on the writer's thread instead: the flush thread is idle then
//! (every request sent has been processed and its callbacks have run) and only the writer
//! sends requests, so nothing can run beside it, and the two thread hand-offs (a wake-up of
//! this thread, then of the writer) are saved from the latency of a durable append.
//!
//! A purged file that cannot be removed does not poison anything: the data the callbacks wait
//! for is durable all the same. The failure is kept (see [`Flusher::removal_failures`]) and
//! the removal is tried again at every later flush, and at the next open.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::frontier::Frontier;
use crate::io::{DirSyncs, Fs};
use crate::segment::{Pool, Segment};

mod inline;
pub(crate) use inline::InlineSync;

/// A flush completion callback. It receives `Ok(())` once everything written before the
/// `flush` call is durable, or the error that prevented it.
pub type Callback = Box<dyn FnOnce(Result<()>) + Send + 'static>;

/// A segment range to make durable.
#[derive(Debug)]
pub struct SyncTarget {
    /// The segment.
    pub segment: Arc<Segment>,
    /// Sync `[.., end)`.
    pub end: u64,
    /// The segment is sealed: write its sealed mark after syncing.
    pub seal: bool,
}

/// One `flush` call.
pub struct FlushRequest {
    /// What to sync.
    pub targets: Vec<SyncTarget>,
    /// Segment files were created or renamed since the last request.
    pub sync_dir: bool,
    /// Purged segments whose files may be deleted once the targets are durable (a failed
    /// removal is retried at later flushes, never reported to the callback).
    pub deletes: Vec<Arc<Segment>>,
    /// Start write-back of this range without waiting (a hint: completed data of the active
    /// segment, so that a later durable flush has little left to write).
    pub writeback: Option<(Arc<Segment>, u64, u64)>,
    /// Called when done.
    pub callback: Option<Callback>,
}

/// Shared "first flush error" cell.
pub type Poison = Arc<Mutex<Option<String>>>;

/// Purged files whose removal failed: path and the last error. Shared with the writer.
pub type RemovalFailures = Arc<Mutex<Vec<(PathBuf, String)>>>;

/// Handle of the flush thread.
#[derive(Debug)]
pub struct Flusher {
    tx: Option<mpsc::Sender<FlushRequest>>,
    handle: Option<JoinHandle<()>>,
    poison: Poison,
    removals: RemovalFailures,
    /// Requests sent (only the writer sends, so only it counts).
    sent: AtomicU64,
    /// Requests the thread has processed and run the callbacks of (Release after each batch).
    done: Arc<AtomicU64>,
    dir: PathBuf,
    fs: Arc<dyn Fs>,
    dir_syncs: Arc<DirSyncs>,
    frontier: Arc<Frontier>,
    /// Held around every `process`: the thread's, and a sync run on a caller's thread.
    processing: Arc<Mutex<()>>,
}

impl Flusher {
    /// Starts the thread for the log in `dir`; purged files go to `pool` while it has room.
    pub(crate) fn start(
        dir: PathBuf,
        fs: Arc<dyn Fs>,
        pool: Arc<Pool>,
        frontier: Arc<Frontier>,
    ) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<FlushRequest>();
        let poison: Poison = Arc::default();
        let removals: RemovalFailures = Arc::default();
        let done = Arc::new(AtomicU64::new(0));
        let dir_syncs: Arc<DirSyncs> = Arc::default();
        let processing: Arc<Mutex<()>> = Arc::default();
        let thread = Thread {
            processing: processing.clone(),
            frontier: frontier.clone(),
            dir_syncs: dir_syncs.clone(),
            unsynced_removal: false,
            dir: dir.clone(),
            fs: fs.clone(),
            pool,
            poison: poison.clone(),
            removals: removals.clone(),
            done: done.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("raft-mmap-log-flush".into())
            .spawn(move || run(thread, rx))
            .map_err(|e| Error::io("spawn flush thread", "", e))?;
        Ok(Flusher {
            tx: Some(tx),
            handle: Some(handle),
            poison,
            removals,
            sent: AtomicU64::new(0),
            done,
            dir,
            fs,
            dir_syncs,
            frontier,
            processing,
        })
    }

    /// Claims `req` (no callback) for the caller's thread when the flush thread is idle, as
    /// [`Flusher::run_if_idle`] would run it, but to run after the caller lets go of the log
    /// ([`InlineSync::run`]), so that other writers go on meanwhile. The claim counts as sent.
    /// `Err(req)` hands the request back when it must go to the thread.
    ///
    /// Only the writer (the holder of the log) may call this.
    pub(crate) fn claim_if_idle(
        &self,
        req: FlushRequest,
    ) -> std::result::Result<InlineSync, FlushRequest> {
        // A request that must fsync the directory goes to the thread: a request claimed
        // here may run after one queued later, and that one must not acknowledge entries of
        // a segment whose name is not durable yet.
        if req.sync_dir || !self.runs_inline(&req) {
            return Err(req);
        }
        self.sent.fetch_add(1, Ordering::Relaxed);
        Ok(InlineSync {
            req,
            fs: self.fs.clone(),
            dir: self.dir.clone(),
            dir_syncs: self.dir_syncs.clone(),
            frontier: self.frontier.clone(),
            poison: self.poison.clone(),
            done: self.done.clone(),
            processing: self.processing.clone(),
        })
    }

    /// Whether `req` may run on the caller's thread: the flush thread is idle (every request
    /// sent before was processed and its callbacks ran), `req` has no callback and removes
    /// no purged file, and no removal waits for a retry (the thread retries them).
    fn runs_inline(&self, req: &FlushRequest) -> bool {
        let idle = self.done.load(Ordering::Acquire) == self.sent.load(Ordering::Relaxed);
        idle && req.deletes.is_empty()
            && req.callback.is_none()
            && self.tx.is_some()
            && self
                .removals
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
    }

    /// Segment renames and the directory fsyncs that made them durable (shared with the
    /// writer, which renames segments into place).
    pub(crate) fn dir_syncs(&self) -> &DirSyncs {
        &self.dir_syncs
    }

    /// Queues a request. Its callback is called exactly once, after the callbacks of every
    /// request submitted before it (callbacks complete in submission order, errors included).
    ///
    /// On a poisoned log this returns [`Error::Poisoned`], and the callback gets the same
    /// error: at once if nothing is in flight, else from the flush thread after the earlier
    /// requests' callbacks. If the thread is gone, [`Error::FlusherStopped`], and the callback
    /// has been called with it. Never waits for the flush thread (a callback running there
    /// may wait for a lock the caller holds).
    pub fn submit(&self, mut req: FlushRequest) -> Result<()> {
        if let Some(e) = self.poisoned() {
            let Some(cb) = req.callback.take() else {
                return Err(e);
            };
            let idle = self.done.load(Ordering::Acquire) == self.sent.load(Ordering::Relaxed);
            let cb = match (&self.tx, idle) {
                (Some(tx), false) => {
                    // Earlier callbacks are still queued or running: this one goes behind
                    // them, and the thread (which sees the poison) gives it the error. Only
                    // the callback: nothing is synced on a poisoned log.
                    let only_cb = FlushRequest {
                        targets: Vec::new(),
                        sync_dir: false,
                        deletes: Vec::new(),
                        writeback: None,
                        callback: Some(cb),
                    };
                    self.sent.fetch_add(1, Ordering::Relaxed);
                    match tx.send(only_cb) {
                        Ok(()) => return Err(e),
                        Err(mpsc::SendError(mut back)) => {
                            self.sent.fetch_sub(1, Ordering::Relaxed);
                            back.callback.take()
                        }
                    }
                }
                _ => Some(cb),
            };
            if let Some(cb) = cb {
                cb(Err(e.clone()));
            }
            return Err(e);
        }
        let Some(tx) = &self.tx else {
            if let Some(cb) = req.callback.take() {
                cb(Err(Error::FlusherStopped));
            }
            return Err(Error::FlusherStopped);
        };
        self.sent.fetch_add(1, Ordering::Relaxed);
        tx.send(req).map_err(|mpsc::SendError(mut req)| {
            self.sent.fetch_sub(1, Ordering::Relaxed);
            if let Some(cb) = req.callback.take() {
                cb(Err(Error::FlusherStopped));
            }
            Error::FlusherStopped
        })
    }

    /// Runs `req` (no callback) on the caller's thread if the flush thread is idle: every
    /// request sent before has been processed and its callbacks have run. Then nothing else
    /// touches the segments' sync state, and what this does is what the thread would do with
    /// `req` alone: the same `process`, the same poisoning on failure. A request that removes
    /// purged files (`deletes`), or any request while a removal is waiting for a retry, goes
    /// to the thread. `Err(req)` hands it back then, for [`Flusher::submit`].
    ///
    /// Only the writer may call this (the one sender: `sent` is its own count).
    pub fn run_if_idle(&self, req: FlushRequest) -> std::result::Result<Result<()>, FlushRequest> {
        if !self.runs_inline(&req) {
            return Err(req);
        }
        if let Some(e) = self.poisoned() {
            return Ok(Err(e));
        }
        let _one = self.processing.lock().unwrap_or_else(|e| e.into_inner());
        let r = process(
            &*self.fs,
            &self.dir,
            &self.dir_syncs,
            &self.frontier,
            std::slice::from_ref(&req),
        );
        if let Err(e) = &r {
            self.poison(e.to_string());
        }
        Ok(r)
    }

    /// The error that poisoned the log, if any.
    pub fn poisoned(&self) -> Option<Error> {
        let g = self.poison.lock().unwrap_or_else(|e| e.into_inner());
        g.as_ref().map(|m| Error::Poisoned(m.clone()))
    }

    /// The poison cell, for a concurrent append that poisons the log without the writer.
    pub(crate) fn poison_cell(&self) -> Poison {
        self.poison.clone()
    }

    /// Poisons the log (the writer could not restore a consistent state): every later write
    /// and flush fails with [`Error::Poisoned`] carrying `why`. The first reason is kept.
    pub fn poison(&self, why: String) -> Error {
        let mut g = self.poison.lock().unwrap_or_else(|e| e.into_inner());
        Error::Poisoned(g.get_or_insert(why).clone())
    }

    /// Purged files whose removal failed so far (retried at every flush), with the error.
    pub fn removal_failures(&self) -> Vec<(PathBuf, String)> {
        self.removals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Flusher {
    /// Stops the thread once it has finished every queued request (callbacks included), and
    /// waits for it. Later requests fail with [`Error::FlusherStopped`]. Idempotent.
    pub(crate) fn close(&mut self) {
        // Closing the channel lets the thread finish what is queued, then exit.
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.close();
    }
}

/// What the flush thread owns besides its channel.
struct Thread {
    dir: PathBuf,
    fs: Arc<dyn Fs>,
    pool: Arc<Pool>,
    poison: Poison,
    removals: RemovalFailures,
    done: Arc<AtomicU64>,
    dir_syncs: Arc<DirSyncs>,
    /// Concurrent appends still copying: a range is synced only once it is written.
    frontier: Arc<Frontier>,
    /// Held around every `process` (see [`InlineSync`]).
    processing: Arc<Mutex<()>>,
    /// A purged file left its segment name, and no directory fsync has succeeded since.
    unsynced_removal: bool,
}

fn run(mut t: Thread, rx: mpsc::Receiver<FlushRequest>) {
    // Purged segments whose files could not be removed yet.
    let mut undeleted: Vec<Arc<Segment>> = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let n = batch.len() as u64;
        let already = t
            .poison
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|m| Error::Poisoned(m.clone()));
        let result = match already {
            Some(e) => Err(e),
            None => {
                let r = {
                    let _one = t.processing.lock().unwrap_or_else(|e| e.into_inner());
                    process(&*t.fs, &t.dir, &t.dir_syncs, &t.frontier, &batch)
                };
                match &r {
                    Err(e) => {
                        let mut g = t.poison.lock().unwrap_or_else(|e| e.into_inner());
                        g.get_or_insert_with(|| e.to_string());
                    }
                    Ok(()) => {
                        undeleted.extend(batch.iter().flat_map(|r| r.deletes.iter().cloned()));
                        retire_purged(&mut t, &mut undeleted);
                    }
                }
                r
            }
        };
        for req in batch {
            if let Some(cb) = req.callback {
                // A panicking callback must not take the flush thread (and every later
                // acknowledgement) down with it.
                let r = result.clone();
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || cb(r)));
            }
        }
        // After the callbacks: the writer may run a sync itself only once this batch is
        // entirely over (`Flusher::run_if_idle`).
        t.done.fetch_add(n, Ordering::Release);
    }
}

fn process(
    fs: &dyn Fs,
    dir: &std::path::Path,
    dir_syncs: &DirSyncs,
    frontier: &Frontier,
    batch: &[FlushRequest],
) -> Result<()> {
    for (seg, from, to) in batch.iter().filter_map(|r| r.writeback.as_ref()) {
        seg.start_writeback(*from, *to);
    }
    // Union of the targets: per segment the furthest end, sealed if any request says so.
    let mut targets: Vec<(&Arc<Segment>, u64, bool)> = Vec::new();
    for t in batch.iter().flat_map(|r| &r.targets) {
        match targets
            .iter_mut()
            .find(|(s, _, _)| Arc::ptr_eq(s, &t.segment))
        {
            Some(entry) => {
                entry.1 = entry.1.max(t.end);
                entry.2 |= t.seal;
            }
            None => targets.push((&t.segment, t.end, t.seal)),
        }
    }
    targets.sort_by_key(|(s, _, _)| s.seq());
    for (seg, end, seal) in targets {
        let from = seg.synced();
        if end > from {
            // Reservations below `end` may still be copying: sync (and vouch for in the
            // synced mark) only what is written.
            frontier.wait_below(seg.seq(), end);
            // The synced mark, one sync behind: `[.., from)` is durable, so the header may
            // say so, and it becomes durable with this sync (one range from the header on,
            // so still one sync). Never the new `end`: the header page could reach the disk
            // before the records it vouches for.
            let start = if !seal && from > seg.synced_mark().unwrap_or(0) {
                seg.write_synced_mark(from)?;
                0
            } else {
                from
            };
            // The whole pages being synced are unmapped from this process first: the writer
            // is past them (they are below `end`, and every reservation there has finished).
            // Otherwise write-back write-protects each mapped page on its own, one TLB
            // shootdown per page (measured: a fifth of the CPU time of a many-group Ready
            // loop); unmapped, the range costs one. Readers map them again on their next
            // access.
            seg.unmap_pages(from, end);
            seg.sync_range(start, end)?;
            seg.set_synced(end);
            if !seal {
                seg.convert_ahead(end);
            }
        }
        if seal && !seg.is_sealed_marked() {
            seg.mark_sealed(end)?;
            // Never written again: its map stays valid without the file descriptor.
            seg.release_fd();
        }
    }
    if batch.iter().any(|r| r.sync_dir) {
        dir_syncs.sync(fs, dir)?;
    }
    Ok(())
}

/// Retires the files of purged segments (their purge is durable: `process` succeeded), oldest
/// first: each goes to the pool while it has room, else it is removed, and the directory is
/// fsynced after each one before the next leaves its name. So at most one segment name is
/// ever pending removal, and a power cut that loses it leaves the segments contiguous (it
/// only brings back the oldest one, whose purge is durable). Files renamed into the pool are
/// reusable only once a directory fsync after their rename succeeded
/// ([`Pool::commit_staged`]; after a failed fsync they stay staged, and the next flush
/// fsyncs the directory again before retiring anything more). A file that cannot be removed
/// stops the retirement there (a later one gone would leave a gap): it and the later ones
/// stay in `undeleted` for the next flush, and it is reported in `removals`; it never fails a
/// callback, whose data is durable.
fn retire_purged(t: &mut Thread, undeleted: &mut Vec<Arc<Segment>>) {
    if undeleted.is_empty() && !t.pool.has_staged() && !t.unsynced_removal {
        return;
    }
    let mut failed = Vec::new();
    let mut gone = t.pool.has_staged() || t.unsynced_removal;
    loop {
        if gone {
            match t.dir_syncs.sync(&*t.fs, &t.dir) {
                Ok(()) => {
                    t.pool.commit_staged();
                    t.unsynced_removal = false;
                }
                Err(e) => {
                    // The last one's retirement is not durable yet: nothing more leaves
                    // its name before a directory fsync succeeds (the next flush tries
                    // again; the next open removes what comes back).
                    t.unsynced_removal = true;
                    failed.push((t.dir.clone(), e.to_string()));
                    break;
                }
            }
        }
        let Some(seg) = undeleted.first().cloned() else {
            break;
        };
        gone = match t.pool.offer(seg) {
            Ok(()) => true,
            Err(seg) => match t.fs.remove(seg.path()) {
                Ok(()) => true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => {
                    failed.push((seg.path().to_path_buf(), e.to_string()));
                    break;
                }
            },
        };
        undeleted.remove(0);
    }
    *t.removals.lock().unwrap_or_else(|e| e.into_inner()) = failed;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(callback: Option<Callback>) -> FlushRequest {
        FlushRequest {
            targets: Vec::new(),
            sync_dir: false,
            deletes: Vec::new(),
            writeback: None,
            callback,
        }
    }

    /// The writer may sync on its own thread only once every request it sent is over, its
    /// callbacks included: a sync run beside a queued (or running) batch could acknowledge
    /// before an earlier seal is durable.
    #[test]
    fn a_sync_runs_on_the_callers_thread_only_when_the_flush_thread_is_idle() {
        let dir = tempfile::tempdir().unwrap();
        let fs = crate::io::real();
        let (pool, _) = Pool::new(dir.path(), 0, fs.clone(), Vec::new());
        let flusher =
            Flusher::start(dir.path().to_path_buf(), fs, Arc::new(pool), Arc::default()).unwrap();
        assert!(matches!(flusher.run_if_idle(request(None)), Ok(Ok(()))));

        // A request whose callback holds the thread until released.
        let (entered_tx, entered) = mpsc::channel::<()>();
        let (release, gate) = mpsc::channel::<()>();
        flusher
            .submit(request(Some(Box::new(move |_| {
                entered_tx.send(()).unwrap();
                let _ = gate.recv();
            }))))
            .unwrap();
        // Queued behind it: another request.
        flusher.submit(request(None)).unwrap();
        assert!(
            flusher.run_if_idle(request(None)).is_err(),
            "busy: sent, not begun"
        );
        entered.recv().unwrap();
        assert!(
            flusher.run_if_idle(request(None)).is_err(),
            "busy: in a callback"
        );
        // A request with a callback or with files to remove always goes to the thread.
        let with_cb = request(Some(Box::new(|_| {})));
        assert!(flusher.run_if_idle(with_cb).is_err());
        release.send(()).unwrap();

        // Once both requests are over, the writer may run one itself.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match flusher.run_if_idle(request(None)) {
                Ok(r) => break r.unwrap(),
                Err(_) => {
                    assert!(std::time::Instant::now() < deadline, "never idle again");
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        }
    }

    /// Callbacks complete in the order their requests were submitted, also when the log is
    /// poisoned while earlier ones are still queued or running: a later callback never reports
    /// the error before an earlier one has run.
    #[test]
    fn callbacks_run_in_submission_order_when_the_log_is_poisoned() {
        let dir = tempfile::tempdir().unwrap();
        let fs = crate::io::real();
        let (pool, _) = Pool::new(dir.path(), 0, fs.clone(), Vec::new());
        let flusher =
            Flusher::start(dir.path().to_path_buf(), fs, Arc::new(pool), Arc::default()).unwrap();
        let order: Arc<Mutex<Vec<(u32, bool)>>> = Arc::default();
        let record = |n: u32| -> Callback {
            let order = order.clone();
            Box::new(move |r: Result<()>| order.lock().unwrap().push((n, r.is_ok())))
        };
        // Request 1 holds the thread in its callback; request 2 waits in the channel.
        let (entered_tx, entered) = mpsc::channel::<()>();
        let (release, gate) = mpsc::channel::<()>();
        let first = record(1);
        flusher
            .submit(request(Some(Box::new(move |r| {
                entered_tx.send(()).unwrap();
                let _ = gate.recv();
                first(r);
            }))))
            .unwrap();
        flusher.submit(request(Some(record(2)))).unwrap();
        entered.recv().unwrap();
        flusher.poison("a sync failed".into());
        // Submitted while 1 and 2 are in flight: refused, and its callback waits its turn.
        let err = flusher.submit(request(Some(record(3)))).unwrap_err();
        assert!(matches!(err, Error::Poisoned(_)), "{err}");
        assert!(order.lock().unwrap().is_empty(), "3 ran before 1 and 2");
        release.send(()).unwrap();
        drop(flusher); // finishes what is queued
        let order = order.lock().unwrap().clone();
        // 2 may have shared 1's batch (synced before the poison) or not.
        let ids: Vec<u32> = order.iter().map(|o| o.0).collect();
        assert_eq!(ids, vec![1, 2, 3], "{order:?}");
        assert!(order[0].1 && !order[2].1, "{order:?}");

        // With nothing in flight (or no thread), the callback runs at once.
        let (pool, _) = Pool::new(dir.path(), 0, crate::io::real(), Vec::new());
        let flusher = Flusher::start(
            dir.path().to_path_buf(),
            crate::io::real(),
            Arc::new(pool),
            Arc::default(),
        )
        .unwrap();
        flusher.poison("a sync failed".into());
        let order: Arc<Mutex<Vec<u32>>> = Arc::default();
        let o = order.clone();
        assert!(flusher
            .submit(request(Some(Box::new(move |_| o.lock().unwrap().push(4)))))
            .is_err());
        assert_eq!(*order.lock().unwrap(), vec![4]);
    }
}
