//! Prepares the next segment file ahead of the writer, and keeps the pool of written files.
//!
//! Allocating 64 MiB of real blocks and faulting its pages in takes milliseconds; doing it on
//! the writer's path at every rollover would stall appends, so a background thread keeps the
//! next file ready: mapped and faulted in for writing (`MADV_POPULATE_WRITE`, or a touch of
//! every page), so the writer takes no page fault in it.
//!
//! The thread starts on its first file once the writer has filled an eighth of its segment
//! (or asks): a log opened and closed again, or one that writes little, makes no file it does
//! not use, and its open and close pay for none.
//!
//! Where the next file comes from: the [`Pool`] of recycled segments first (a pooled file
//! that no view maps any more: its header is blanked and synced, its blocks are written);
//! otherwise a new `*.seg.tmp` file whose blocks are reserved (`fallocate`). With recycling
//! enabled, the new file's blocks are then also *written* (zeros, in 64 KiB pieces, each
//! written back before the next, then synced), so that the writer's syncs there commit no
//! extent conversions; the file is reused for the log's whole life, so it is written once. A
//! `take` call that comes first stops the writing between chunks and gets the file as it is
//! (its rest reserved only).
//!
//! With recycling enabled (a pool size above 0), the thread also uses the time while its
//! ready file waits for the writer (once it has waited `IDLE_BEFORE_WRITING`: a bulk load
//! is not slowed by it) to keep the pool from running dry: when it is empty, it
//! makes a new pooled file whose blocks it *writes* (zeros, synced) once for the file's whole
//! life, so that the writer overwrites written blocks (no extent conversion at each
//! `fdatasync`). That work stops (between 64 KiB pieces) as soon as a `take` call begins, so
//! the writer waits at most for one chunk; a file stopped early is still a valid pooled file. Not on
//! copy-on-write file systems, where every rewrite takes a new block anyway. Pooled files hold
//! no log data; recovery deletes `*.seg.tmp` leftovers and keeps `*.pool` files.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::segment::{FileOptions, Pool, PreparedFile, WriteVia};

/// Source of prepared segment files.
#[derive(Debug)]
pub struct Preparer {
    /// Prepared files (or the error making one met), each with the number of `take` calls
    /// begun when the thread started making it.
    rx: Option<mpsc::Receiver<(u64, Result<PreparedFile>)>>,
    handle: Option<JoinHandle<()>>,
    source: Source,
    token: u64,
    stop: Arc<AtomicBool>,
    /// A `take` call is waiting for the thread's file.
    ready: Arc<AtomicBool>,
    /// `take` calls begun.
    asked: Arc<AtomicU64>,
    /// The writer will want a file soon ([`Preparer::want_next`]): the thread makes its first
    /// one only then (or at the first `take`), so a log that is opened and closed again, or
    /// that writes little, makes no file it does not use.
    wanted: Arc<AtomicBool>,
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
    /// A recycled file from the pool if one is free, else a new file: its blocks written
    /// (paced, until `stop` says the writer waits for it) where [`Source::writes_new_files`],
    /// else reserved only.
    fn next(&self, token: u64, stop: &dyn Fn() -> bool) -> Result<PreparedFile> {
        match self.recycled() {
            Some(f) => Ok(f),
            None if self.writes_new_files() => {
                PreparedFile::create_written(&self.dir, token, self.size, &self.opts, stop, true)
            }
            None => PreparedFile::create(&self.dir, token, self.size, &self.opts),
        }
    }

    /// Whether new segment files get their blocks written, not only reserved: when recycling
    /// is on (a file written once is then reused for the log's whole life), on a file system
    /// that rewrites blocks in place, and unless every allocation writes zeros anyway.
    fn writes_new_files(&self) -> bool {
        self.pool.cap() > 0 && self.opts.via == WriteVia::Map && !self.opts.zero_fill
    }

    /// A file from the pool that no live segment maps, made ready for reuse.
    ///
    /// Nothing is taken while another process holds the directory's mapping lock (views of a
    /// `Store` that was here before this one, see `crate::lock`): it may map any pooled file
    /// that was once its segment, and would see the rewrite. The files stay pooled; once
    /// that process's last view is gone, the next file is recycled again. If the lock cannot
    /// be asked, nothing is recycled either.
    fn recycled(&self) -> Option<PreparedFile> {
        if self.pool.len() == 0 || crate::lock::others_map(&self.dir).unwrap_or(true) {
            return None;
        }
        while let Some(path) = self.pool.take_unmapped() {
            match PreparedFile::recycle(&path, self.size, &self.opts) {
                Ok(f) => return Some(f),
                // A pooled file that cannot be reused (another size, an I/O error) is not
                // worth keeping.
                Err(_) => {
                    let _ = self.opts.fs.remove(&path);
                }
            }
        }
        None
    }

    /// Whether the pool should get a new file with written blocks: recycling is on, the pool
    /// is empty (purged files are preferred: they cost no writing), and the file system
    /// rewrites blocks in place.
    fn wants_written_file(&self) -> bool {
        self.pool.cap() > 0 && self.pool.len() == 0 && self.opts.via == WriteVia::Map
    }

    /// Makes one pooled file with written blocks, stopping early when `stop` says so. Errors
    /// are not the writer's: the file is dropped and the pool stays as it was.
    fn write_pool_file(&self, stop: &dyn Fn() -> bool) {
        let path = self.pool.new_fresh_path();
        if PreparedFile::write_pool_file(&path, self.size, &self.opts, stop).is_ok() {
            self.pool.add(path);
        }
    }
}

/// How long the ready file must wait for the writer before the thread writes a pooled file.
/// A writer that fills segments faster (a bulk load: 64 MiB in well under a second) gets
/// new files, whose preparation is cheaper than writing one more file's blocks beside it;
/// a writer that makes small durable appends leaves the thread idle for seconds.
const IDLE_BEFORE_WRITING: std::time::Duration = std::time::Duration::from_millis(250);

/// Waits up to `limit` for `stop` (a `take` call or shutdown unparks this thread); true if
/// the whole time passed without it.
fn idle_for(limit: std::time::Duration, stop: &dyn Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if stop() {
            return false;
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            return true;
        }
        std::thread::park_timeout(deadline - now);
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
    /// `background == false` files are made on demand on the caller's thread (and no pooled
    /// file is written ahead).
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
        let ready = Arc::new(AtomicBool::new(false));
        let asked = Arc::new(AtomicU64::new(0));
        let wanted = Arc::new(AtomicBool::new(false));
        if !background {
            return Ok(Preparer {
                rx: None,
                handle: None,
                source,
                token,
                stop,
                ready,
                asked,
                wanted,
            });
        }
        // A rendezvous: one prepared file at a time. While it waits for the writer, the thread
        // may write a pooled file (below), until a `take` call begins.
        let (tx, rx) = mpsc::sync_channel::<(u64, Result<PreparedFile>)>(0);
        let src = source.clone();
        let (halt, waiting, calls) = (stop.clone(), ready.clone(), asked.clone());
        let want = wanted.clone();
        let handle = std::thread::Builder::new()
            .name("raft-mmap-log-prepare".into())
            .spawn(move || {
                // Nothing until the writer has filled an eighth of its segment, or asks.
                while !want.load(Ordering::Acquire) && !waiting.load(Ordering::Acquire) {
                    if halt.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::park();
                }
                let mut token = token;
                loop {
                    token += 1;
                    let started = calls.load(Ordering::Acquire);
                    let stop = || halt.load(Ordering::Relaxed) || waiting.load(Ordering::Acquire);
                    let made = src.next(token, &stop);
                    let failed = made.is_err();
                    // The file is ready: once the writer has left it waiting for a while,
                    // write a pooled file until the writer asks for it.
                    if !failed && src.wants_written_file() && idle_for(IDLE_BEFORE_WRITING, &stop) {
                        src.write_pool_file(&stop);
                    }
                    if let Err(mpsc::SendError((_, unsent))) = tx.send((started, made)) {
                        if let Ok(f) = unsent {
                            f.discard();
                        }
                        return;
                    }
                    if halt.load(Ordering::Relaxed) {
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
            ready,
            asked,
            wanted,
        })
    }

    /// The writer will want the next file: the thread starts on it if it has not yet. Cheap
    /// after the first call (one atomic load).
    #[inline]
    pub fn want_next(&self) {
        if !self.wanted.load(Ordering::Relaxed) {
            self.wanted.store(true, Ordering::Release);
            if let Some(h) = &self.handle {
                h.thread().unpark();
            }
        }
    }

    /// The file of a new log's first segment, on the caller's thread: a pooled file if there
    /// is one, else a new file whose blocks are written here, once, when recycling would
    /// write them anyway (see [`PreparedFile::create_written`]), else a new file with its
    /// blocks reserved. So a new log's first durable appends overwrite written blocks too.
    pub fn first_file(&self) -> Result<PreparedFile> {
        let src = &self.source;
        if let Some(f) = src.recycled() {
            return Ok(f);
        }
        if src.writes_new_files() {
            PreparedFile::create_written(&src.dir, 0, src.size, &src.opts, &|| false, false)
        } else {
            PreparedFile::create(&src.dir, 0, src.size, &src.opts)
        }
    }

    /// The next prepared file (blocks until it is ready).
    ///
    /// A failure the thread met while preparing ahead may be stale (the disk was full then and
    /// is not now): an error from an attempt that started before this call is skipped, so the
    /// answer is a file, or the error of an attempt made after this call began.
    pub fn take(&mut self) -> Result<PreparedFile> {
        match &self.rx {
            Some(rx) => {
                let call = self.asked.fetch_add(1, Ordering::AcqRel) + 1;
                self.ready.store(true, Ordering::Release);
                if let Some(h) = &self.handle {
                    h.thread().unpark();
                }
                let answer = loop {
                    let got = rx.recv();
                    match got {
                        Err(_) => break Err(Error::FlusherStopped),
                        Ok((started, Err(_stale))) if started < call => continue,
                        Ok((_, got)) => break got,
                    }
                };
                self.ready.store(false, Ordering::Release);
                answer
            }
            None => {
                self.token += 1;
                self.source.next(self.token, &|| false)
            }
        }
    }
}

impl Drop for Preparer {
    fn drop(&mut self) {
        // Stop writing a pooled file, then take every file the thread still sends until it
        // ends, discarding each (a new one is removed, a recycled one stays pooled): nothing
        // is left in the channel, and the thread is never blocked sending.
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = &self.handle {
            h.thread().unpark();
        }
        let Some(rx) = self.rx.take() else {
            return;
        };
        let handle = self.handle.take();
        loop {
            while let Ok((_, made)) = rx.try_recv() {
                if let Ok(f) = made {
                    f.discard();
                }
            }
            match &handle {
                Some(h) if !h.is_finished() => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                _ => break,
            }
        }
        while let Ok((_, made)) = rx.try_recv() {
            if let Ok(f) = made {
                f.discard();
            }
        }
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}
