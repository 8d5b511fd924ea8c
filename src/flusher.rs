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

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::segment::{sync_dir, Segment};

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
    /// Purged segments whose files may be deleted once the targets are durable.
    pub deletes: Vec<Arc<Segment>>,
    /// Start write-back of this range without waiting (a hint: completed data of the active
    /// segment, so that a later durable flush has little left to write).
    pub writeback: Option<(Arc<Segment>, u64, u64)>,
    /// Called when done.
    pub callback: Option<Callback>,
}

/// Shared "first flush error" cell.
pub type Poison = Arc<Mutex<Option<String>>>;

/// Handle of the flush thread.
#[derive(Debug)]
pub struct Flusher {
    tx: Option<mpsc::Sender<FlushRequest>>,
    handle: Option<JoinHandle<()>>,
    poison: Poison,
}

impl Flusher {
    /// Starts the thread for the log in `dir`.
    pub fn start(dir: PathBuf) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<FlushRequest>();
        let poison: Poison = Arc::default();
        let p = poison.clone();
        let handle = std::thread::Builder::new()
            .name("raft-mmap-log-flush".into())
            .spawn(move || run(dir, rx, p))
            .map_err(|e| Error::io("spawn flush thread", "", e))?;
        Ok(Flusher {
            tx: Some(tx),
            handle: Some(handle),
            poison,
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

fn run(dir: PathBuf, rx: mpsc::Receiver<FlushRequest>, poison: Poison) {
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
                let r = process(&dir, &batch);
                if let Err(e) = &r {
                    let mut g = poison.lock().unwrap_or_else(|e| e.into_inner());
                    g.get_or_insert_with(|| e.to_string());
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

fn process(dir: &std::path::Path, batch: &[FlushRequest]) -> Result<()> {
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
        }
    }
    if batch.iter().any(|r| r.sync_dir) {
        sync_dir(dir)?;
    }
    let mut deleted = false;
    for seg in batch.iter().flat_map(|r| &r.deletes) {
        match std::fs::remove_file(seg.path()) {
            Ok(()) => deleted = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove purged segment", seg.path(), e)),
        }
    }
    if deleted {
        sync_dir(dir)?;
    }
    Ok(())
}
