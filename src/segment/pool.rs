//! The pool of recycled segment files: purged segments kept, under a name recovery never
//! reads as data (`<token>.pool`), for the preparer to reuse instead of creating new files.
//!
//! Reusing a file means rewriting it, and a shared mapping shows every rewrite of its file:
//! so a pooled file is taken only once no live [`Segment`] of this process maps it (the
//! registry of mapped files, [`super::is_mapped`]: the segment of its old life is dropped with
//! the last reader's view that holds it, whichever `Store` that view came from), invariant I6.
//! Renaming it into the pool while views still map it changes no byte, so that happens as soon
//! as its purge is durable. Another process may map pooled files too: views that outlived the
//! `Store` that was here before this one. Such a process holds the directory's mapping lock
//! ([`crate::lock`], byte 1 of `LOCK`), and the preparer takes nothing from the pool while it
//! does. Pooled files are regular files: the listing at open skips anything else under a pool
//! name, and a file opens only as a regular file, never through a symlink.
//!
//! A file renamed into the pool is **staged** until a directory fsync after its rename has
//! succeeded ([`Pool::commit_staged`]): until then a power cut may bring back its old segment
//! name, and a rewrite (a blanked header) under that name would break the log. The preparer
//! takes only committed files.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::Segment;
use crate::format::POOL_SUFFIX;
use crate::io::Fs;

/// Name suffix of a pooled file the preparer made (written with zeros). Only a name: such a
/// file can hold records all the same (its pages can reach the disk before the rename that
/// made it a segment, and a power cut then leaves the old name), so a segment made from it
/// is flagged [`crate::format::SEGMENT_FLAG_RECYCLED`] like any other.
pub(crate) const FRESH_POOL_SUFFIX: &str = ".fresh.pool";

/// Purged segment files waiting for reuse, at most `cap` of them.
#[derive(Debug)]
pub(crate) struct Pool {
    dir: PathBuf,
    cap: usize,
    fs: Arc<dyn Fs>,
    files: Mutex<Files>,
    token: AtomicU64,
}

/// The pooled files.
#[derive(Debug, Default)]
struct Files {
    /// Renamed into the pool; the rename is durable: free for reuse.
    ready: Vec<PathBuf>,
    /// Renamed into the pool, but no directory fsync has succeeded since: not reusable yet.
    staged: Vec<PathBuf>,
}

impl Pool {
    /// A pool of at most `cap` files in `dir` (0: recycling disabled), holding the pooled
    /// files `found` in the directory at open, up to `cap`, staged (the caller fsyncs the
    /// directory and commits them). Returns the pool and the found files that did not fit
    /// (the caller removes them).
    pub(crate) fn new(
        dir: &Path,
        cap: usize,
        fs: Arc<dyn Fs>,
        mut found: Vec<PathBuf>,
    ) -> (Self, Vec<PathBuf>) {
        found.sort();
        let extra = found.split_off(found.len().min(cap));
        let files = found;
        let token = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let pool = Pool {
            dir: dir.to_path_buf(),
            cap,
            fs,
            // Their names may not be durable yet (a process killed before its directory
            // fsync): staged until the opener's.
            files: Mutex::new(Files {
                ready: Vec::new(),
                staged: files,
            }),
            token: AtomicU64::new(token),
        };
        (pool, extra)
    }

    /// Most files the pool keeps.
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// Files in the pool now (mapped or not, staged or not).
    pub(crate) fn len(&self) -> usize {
        let f = self.lock();
        f.ready.len() + f.staged.len()
    }

    /// Whether files renamed into the pool wait for a directory fsync.
    pub(crate) fn has_staged(&self) -> bool {
        !self.lock().staged.is_empty()
    }

    /// Makes the staged files reusable: the caller has just fsynced the directory, after
    /// their renames, successfully.
    pub(crate) fn commit_staged(&self) {
        let mut f = self.lock();
        let staged = std::mem::take(&mut f.staged);
        f.ready.extend(staged);
    }

    /// Pooled files that a view still maps.
    #[cfg(test)]
    pub(crate) fn mapped(&self) -> usize {
        let f = self.lock();
        f.ready
            .iter()
            .chain(&f.staged)
            .filter(|p| self.still_mapped(p) != Some(false))
            .count()
    }

    /// Whether a live segment maps the file (`None`: it cannot be opened).
    fn still_mapped(&self, path: &Path) -> Option<bool> {
        let file = self.fs.open(path, false).ok()?;
        super::is_mapped(&file, path).ok()
    }

    /// Takes a purged segment whose purge is durable: renames it into the pool if there is
    /// room, staged. The caller fsyncs the directory after, and calls
    /// [`Pool::commit_staged`] once that succeeded (a lost rename brings the purged segment
    /// back, intact, which the next open recycles or removes). Gives the segment back when
    /// the pool is full (or disabled) or the rename failed: the caller removes the file
    /// instead.
    pub(crate) fn offer(&self, seg: Arc<Segment>) -> Result<(), Arc<Segment>> {
        // The segment may still be mapped (by views, or by `seg` itself until the caller
        // drops it): only the reuse waits for that, in `take_unmapped`.
        let mut files = self.lock();
        if files.ready.len() + files.staged.len() >= self.cap {
            return Err(seg);
        }
        let path = self.new_path();
        match self.fs.rename(seg.path(), &path) {
            Ok(()) => {
                files.staged.push(path);
                Ok(())
            }
            Err(_) => Err(seg),
        }
    }

    /// A name for a pooled file in the pool's directory.
    fn new_path(&self) -> PathBuf {
        let token = self.token.fetch_add(1, Ordering::Relaxed) + 1;
        self.dir.join(format!("{token:020}{POOL_SUFFIX}"))
    }

    /// A name for a new pooled file that the preparer makes (zeros only, no previous life):
    /// `<token>.fresh.pool`.
    pub(crate) fn new_fresh_path(&self) -> PathBuf {
        let token = self.token.fetch_add(1, Ordering::Relaxed) + 1;
        self.dir.join(format!("{token:020}{FRESH_POOL_SUFFIX}"))
    }

    /// Adds a file the preparer made for the pool (under a [`Pool::new_fresh_path`] name).
    /// Reusable at once: its name was never a segment's, so a lost create only loses it.
    pub(crate) fn add(&self, path: PathBuf) {
        self.lock().ready.push(path);
    }

    /// Takes out of the pool a file whose rename into the pool is durable and that no live
    /// segment maps any more, oldest first; `None` if there is none. A file that cannot even
    /// be opened is taken too (the caller's reuse fails and removes it).
    pub(crate) fn take_unmapped(&self) -> Option<PathBuf> {
        let mut files = self.lock();
        let i = files
            .ready
            .iter()
            .position(|p| self.still_mapped(p) != Some(true))?;
        Some(files.ready.remove(i))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Files> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }
}
