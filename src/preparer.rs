//! Prepares the next segment file ahead of the writer.
//!
//! Allocating 64 MiB of real blocks and faulting its pages in takes milliseconds; doing it on
//! the writer's path at every rollover would stall appends, so a background thread keeps one
//! prepared file (`*.seg.tmp`, allocated and mapped with `MAP_POPULATE`) ready. A prepared file
//! never holds log data; recovery deletes leftovers.

use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::segment::{FileOptions, PreparedFile};

/// Source of prepared segment files.
#[derive(Debug)]
pub struct Preparer {
    rx: Option<mpsc::Receiver<Result<PreparedFile>>>,
    handle: Option<JoinHandle<()>>,
    dir: PathBuf,
    size: u64,
    opts: FileOptions,
    token: u64,
}

fn base_token() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Preparer {
    /// Starts preparing files of `size` bytes in `dir`; with `background == false` files are
    /// made on demand on the caller's thread.
    pub fn start(dir: PathBuf, size: u64, opts: FileOptions, background: bool) -> Result<Self> {
        let token = base_token();
        if !background {
            return Ok(Preparer {
                rx: None,
                handle: None,
                dir,
                size,
                opts,
                token,
            });
        }
        let (tx, rx) = mpsc::sync_channel::<Result<PreparedFile>>(0);
        let d = dir.clone();
        let o = opts.clone();
        let handle = std::thread::Builder::new()
            .name("raft-mmap-log-prepare".into())
            .spawn(move || {
                let mut token = token;
                loop {
                    token += 1;
                    let made = PreparedFile::create(&d, token, size, &o);
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
            dir,
            size,
            opts,
            token: token + (1 << 40),
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
                PreparedFile::create(&self.dir, self.token, self.size, &self.opts)
            }
        }
    }
}

impl Drop for Preparer {
    fn drop(&mut self) {
        // Dropping the receiver makes the thread's pending send fail: it removes its file.
        self.rx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
