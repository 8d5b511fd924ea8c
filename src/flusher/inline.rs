//! A sync run on the caller's thread instead of the flush thread (a shared log's `sync` when
//! the flush thread is idle): no thread hop for a lone writer.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{process, FlushRequest, Poison};
use crate::error::{Error, Result};
use crate::frontier::Frontier;
use crate::io::{DirSyncs, Fs};

/// A sync claimed while the flush thread was idle, to run on the caller's thread after it
/// lets go of the log ([`super::Flusher::claim_if_idle`]): counted as sent, so every later
/// request goes to the thread. `process` runs one at a time (the `processing` lock), in
/// either order: a later request covers this one's range, and a claimed request never carries
/// a directory fsync or purged files, so neither order acknowledges anything early.
pub(crate) struct InlineSync {
    pub(super) req: FlushRequest,
    pub(super) fs: Arc<dyn Fs>,
    pub(super) dir: PathBuf,
    pub(super) dir_syncs: Arc<DirSyncs>,
    pub(super) frontier: Arc<Frontier>,
    pub(super) poison: Poison,
    pub(super) done: Arc<AtomicU64>,
    pub(super) processing: Arc<Mutex<()>>,
}

impl InlineSync {
    /// Makes the claimed range durable (the same `process` the thread runs, the same
    /// poisoning on failure), then counts the request done.
    pub(crate) fn run(self) -> Result<()> {
        let r = {
            let _one = self.processing.lock().unwrap_or_else(|e| e.into_inner());
            let already = self
                .poison
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|m| Error::Poisoned(m.clone()));
            match already {
                Some(e) => Err(e),
                None => {
                    let r = process(
                        &*self.fs,
                        &self.dir,
                        &self.dir_syncs,
                        &self.frontier,
                        std::slice::from_ref(&self.req),
                    );
                    if let Err(e) = &r {
                        let mut g = self.poison.lock().unwrap_or_else(|e| e.into_inner());
                        g.get_or_insert_with(|| e.to_string());
                    }
                    r
                }
            }
        };
        self.done.fetch_add(1, Ordering::Release);
        r
    }
}
