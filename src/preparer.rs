//! Prepares the next segment file ahead of the writer.
//!
//! Allocating 64 MiB of real blocks and faulting its pages in takes milliseconds; doing it on
//! the writer's path at every rollover would stall appends, so a background thread keeps one
//! prepared file ready: mapped and faulted in for writing (`MADV_POPULATE_WRITE`, or a touch
//! of every page), so the writer takes no page fault in it.
//!
//! Where the file comes from: the [`Pool`] of recycled segments first (a pooled file that no
//! view maps any more: its header is blanked and synced, its blocks are already written);
//! otherwise a new `*.seg.tmp` file. With recycling enabled (a pool size above 0) a new file's
//! blocks are *written* with zeros (and synced) rather than only reserved, once for the file's
//! whole life in the pool, so the writer only ever overwrites written blocks (except on
//! copy-on-write file systems, where every rewrite takes a new block anyway). A prepared file
//! never holds log data; recovery deletes `*.seg.tmp` leftovers and keeps `*.pool` files for
//! the pool.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::segment::{FileOptions, Pool, PreparedFile, WriteVia};

/// Source of prepared segment files.
#[derive(Debug)]
pub struct Preparer {
    rx: Option<mpsc::Receiver<Result<PreparedFile>>>,
    handle: Option<JoinHandle<()>>,
    source: Source,
    token: u64,
    stop: Arc<AtomicBool>,
}

/// Where prepared files come from: what the thread and the on-demand path share.
#[derive(Debug, Clone)]
struct Source {
    dir: PathBuf,
    size: u64,
    opts: FileOptions,
    pool: Arc<Pool>,
}

impl Source {
    /// A recycled file from the pool if one is free, else a new file.
    fn next(&self, token: u64, stop: &AtomicBool) -> Result<PreparedFile> {
        while let Some(path) = self.pool.take_unmapped() {
            match PreparedFile::recycle(&path, self.size, &self.opts) {
                Ok(f) => return Ok(f),
                // A pooled file that cannot be reused (another size, an I/O error) is not
                // worth keeping.
                Err(_) => {
                    let _ = self.opts.fs.remove(&path);
                }
            }
        }
        // On a copy-on-write file system (records written with `pwrite`) rewriting a block
        // allocates a new one anyway: writing the blocks first would only cost disk.
        let write = (self.pool.cap() > 0 && self.opts.via == WriteVia::Map).then_some(stop);
        PreparedFile::create(&self.dir, token, self.size, &self.opts, write)
    }
}

fn base_token() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Preparer {
    /// Starts preparing files of `size` bytes in `dir`, recycling from `pool`; with
    /// `background == false` files are made on demand on the caller's thread.
    pub(crate) fn start(
        dir: PathBuf,
        size: u64,
        opts: FileOptions,
        pool: Arc<Pool>,
        background: bool,
    ) -> Result<Self> {
        let token = base_token();
        let source = Source {
            dir,
            size,
            opts,
            pool,
        };
        let stop = Arc::new(AtomicBool::new(false));
        if !background {
            return Ok(Preparer {
                rx: None,
                handle: None,
                source,
                token,
                stop,
            });
        }
        let (tx, rx) = mpsc::sync_channel::<Result<PreparedFile>>(0);
        let src = source.clone();
        let halt = stop.clone();
        let handle = std::thread::Builder::new()
            .name("raft-mmap-log-prepare".into())
            .spawn(move || {
                let mut token = token;
                loop {
                    token += 1;
                    let made = src.next(token, &halt);
                    if halt.load(Ordering::Relaxed) {
                        if let Ok(f) = made {
                            f.discard();
                        }
                        return;
                    }
                    let failed = made.is_err();
                    if let Err(mpsc::SendError(unsent)) = tx.send(made) {
                        if let Ok(f) = unsent {
                            f.discard();
                        }
                        return;
                    }
                    if failed {
                        // Not spinning on a persistent error: the next attempt waits briefly
                        // (the writer asks again right after receiving an error).
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                }
            })
            .map_err(|e| Error::io("spawn preparer thread", "", e))?;
        Ok(Preparer {
            rx: Some(rx),
            handle: Some(handle),
            source,
            token: token + (1 << 40),
            stop,
        })
    }

    /// The next prepared file (blocks until it is ready).
    ///
    /// A failure the thread met while preparing ahead may be stale (the disk was full then and
    /// is not now), so after an error the file is asked for once more: that attempt starts
    /// only after this call, and its result is the answer.
    pub fn take(&mut self) -> Result<PreparedFile> {
        match &self.rx {
            Some(rx) => match rx.recv().map_err(|_| Error::FlusherStopped)? {
                Ok(f) => Ok(f),
                Err(_stale) => rx.recv().map_err(|_| Error::FlusherStopped)?,
            },
            None => {
                self.token += 1;
                self.source.next(self.token, &self.stop)
            }
        }
    }
}

impl Drop for Preparer {
    fn drop(&mut self) {
        // Stop writing a new file's blocks; dropping the receiver makes the thread's pending
        // send fail: it discards its file (a new one is removed, a recycled one stays pooled).
        self.stop.store(true, Ordering::Relaxed);
        self.rx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
