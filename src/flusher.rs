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
//! `<token>.pool`; the preparer reuses them once no view maps them), else they are removed.
//!
//! A purged file that cannot be removed does not poison anything: the data the callbacks wait
//! for is durable all the same. The failure is kept (see [`Flusher::removal_failures`]) and
//! the removal is tried again at every later flush, and at the next open.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::io::{sync_dir, Fs};
use crate::segment::{Pool, Segment};

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
}

impl Flusher {
    /// Starts the thread for the log in `dir`; purged files go to `pool` while it has room.
    pub(crate) fn start(dir: PathBuf, fs: Arc<dyn Fs>, pool: Arc<Pool>) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<FlushRequest>();
        let poison: Poison = Arc::default();
        let removals: RemovalFailures = Arc::default();
        let (p, r) = (poison.clone(), removals.clone());
        let handle = std::thread::Builder::new()
            .name("raft-mmap-log-flush".into())
            .spawn(move || run(dir, fs, pool, rx, p, r))
            .map_err(|e| Error::io("spawn flush thread", "", e))?;
        Ok(Flusher {
            tx: Some(tx),
            handle: Some(handle),
            poison,
            removals,
        })
    }

    /// Queues a request. On error the callback has already been called with it.
    pub fn submit(&self, mut req: FlushRequest) -> Result<()> {
        if let Some(e) = self.poisoned() {
            if let Some(cb) = req.callback.take() {
                cb(Err(e.clone()));
            }
            return Err(e);
        }
        let Some(tx) = &self.tx else {
            return Err(Error::FlusherStopped);
        };
        tx.send(req).map_err(|mpsc::SendError(mut req)| {
            if let Some(cb) = req.callback.take() {
                cb(Err(Error::FlusherStopped));
            }
            Error::FlusherStopped
        })
    }

    /// The error that poisoned the log, if any.
    pub fn poisoned(&self) -> Option<Error> {
        let g = self.poison.lock().unwrap_or_else(|e| e.into_inner());
        g.as_ref().map(|m| Error::Poisoned(m.clone()))
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

impl Drop for Flusher {
    fn drop(&mut self) {
        // Closing the channel lets the thread finish what is queued, then exit.
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn run(
    dir: PathBuf,
    fs: Arc<dyn Fs>,
    pool: Arc<Pool>,
    rx: mpsc::Receiver<FlushRequest>,
    poison: Poison,
    removals: RemovalFailures,
) {
    // Purged segments whose files could not be removed yet.
    let mut undeleted: Vec<Arc<Segment>> = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let already = poison
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|m| Error::Poisoned(m.clone()));
        let result = match already {
            Some(e) => Err(e),
            None => {
                let r = process(&*fs, &dir, &batch);
                match &r {
                    Err(e) => {
                        let mut g = poison.lock().unwrap_or_else(|e| e.into_inner());
                        g.get_or_insert_with(|| e.to_string());
                    }
                    Ok(()) => {
                        undeleted.extend(batch.iter().flat_map(|r| r.deletes.iter().cloned()));
                        retire_purged(&*fs, &dir, &pool, &mut undeleted, &removals);
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
    }
}

fn process(fs: &dyn Fs, dir: &std::path::Path, batch: &[FlushRequest]) -> Result<()> {
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
            seg.sync_range(from, end)?;
            seg.set_synced(end);
        }
        if seal && !seg.is_sealed_marked() {
            seg.mark_sealed(end)?;
            // Never written again: its map stays valid without the file descriptor.
            seg.release_fd();
        }
    }
    if batch.iter().any(|r| r.sync_dir) {
        sync_dir(fs, dir)?;
    }
    Ok(())
}

/// Retires the files of purged segments (their purge is durable: `process` succeeded): each
/// goes to the pool while it has room, else it is removed; then the directory is fsynced. A
/// file that cannot be removed stays in `undeleted` for the next flush and is reported in
/// `removals`; it never fails a callback, whose data is durable.
pub(crate) fn retire_purged(
    fs: &dyn Fs,
    dir: &std::path::Path,
    pool: &Pool,
    undeleted: &mut Vec<Arc<Segment>>,
    removals: &RemovalFailures,
) {
    if undeleted.is_empty() {
        return;
    }
    let mut failed = Vec::new();
    let mut removed = false;
    undeleted.retain(|seg| {
        let Err(seg) = pool.offer(seg.clone()) else {
            removed = true;
            return false;
        };
        match fs.remove(seg.path()) {
            Ok(()) => {
                removed = true;
                false
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => {
                failed.push((seg.path().to_path_buf(), e.to_string()));
                true
            }
        }
    });
    if removed {
        if let Err(e) = sync_dir(fs, dir) {
            // The removals are not durable yet; the next open removes what comes back.
            failed.push((dir.to_path_buf(), e.to_string()));
        }
    }
    *removals.lock().unwrap_or_else(|e| e.into_inner()) = failed;
}
