//! The pool of recycled segment files: purged segments kept, under a name recovery never
//! reads as data (`<token>.pool`), for the preparer to reuse instead of creating new files.
//!
//! Reusing a file means rewriting it, and a shared mapping shows every rewrite of its file:
//! so a pooled file keeps the `Arc<Segment>` of its old life until it is taken, and it is
//! taken only once that `Arc` is the last one ([`Arc::try_unwrap`]), that is once no reader's
//! view maps the file any more (invariant I6). Renaming it into the pool while views still map
//! it changes no byte, so that happens as soon as its purge is durable.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::Segment;
use crate::format::POOL_SUFFIX;
use crate::io::Fs;

/// One pooled file.
#[derive(Debug)]
struct Pooled {
    path: PathBuf,
    /// The old life's segment while anything may still map it; `None` once unmapped (or for
    /// a file found in the pool at open).
    mapped: Option<Arc<Segment>>,
}

/// Purged segment files waiting for reuse, at most `cap` of them.
#[derive(Debug)]
pub(crate) struct Pool {
    dir: PathBuf,
    cap: usize,
    fs: Arc<dyn Fs>,
    files: Mutex<Vec<Pooled>>,
    token: AtomicU64,
}

impl Pool {
    /// A pool of at most `cap` files in `dir` (0: recycling disabled), holding the pooled
    /// files `found` in the directory at open, up to `cap`. Returns the pool and the found
    /// files that did not fit (the caller removes them).
    pub(crate) fn new(
        dir: &Path,
        cap: usize,
        fs: Arc<dyn Fs>,
        mut found: Vec<PathBuf>,
    ) -> (Self, Vec<PathBuf>) {
        found.sort();
        let extra = found.split_off(found.len().min(cap));
        let files = found
            .into_iter()
            .map(|path| Pooled { path, mapped: None })
            .collect();
        let token = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let pool = Pool {
            dir: dir.to_path_buf(),
            cap,
            fs,
            files: Mutex::new(files),
            token: AtomicU64::new(token),
        };
        (pool, extra)
    }

    /// Most files the pool keeps.
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// Files in the pool now (mapped or not).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Pooled files that a view still maps.
    #[cfg(test)]
    pub(crate) fn mapped(&self) -> usize {
        self.lock().iter().filter(|f| f.mapped.is_some()).count()
    }

    /// Takes a purged segment whose purge is durable: renames it into the pool if there is
    /// room. The caller fsyncs the directory after (a lost rename brings the purged segment
    /// back, which the next open recycles or removes). Gives the segment back when the pool
    /// is full (or disabled) or the rename failed: the caller removes the file instead.
    pub(crate) fn offer(&self, seg: Arc<Segment>) -> Result<(), Arc<Segment>> {
        let mut files = self.lock();
        if files.len() >= self.cap {
            return Err(seg);
        }
        let token = self.token.fetch_add(1, Ordering::Relaxed) + 1;
        let path = self.dir.join(format!("{token:020}{POOL_SUFFIX}"));
        match self.fs.rename(seg.path(), &path) {
            Ok(()) => {
                files.push(Pooled {
                    path,
                    mapped: Some(seg),
                });
                Ok(())
            }
            Err(_) => Err(seg),
        }
    }

    /// Takes out of the pool a file that nothing maps any more (its old life's segment is
    /// dropped, unmapping it), oldest first; `None` if there is none.
    pub(crate) fn take_unmapped(&self) -> Option<PathBuf> {
        let mut files = self.lock();
        for i in 0..files.len() {
            if let Some(seg) = files[i].mapped.take() {
                match Arc::try_unwrap(seg) {
                    // The last reference: dropping it unmaps the file.
                    Ok(seg) => drop(seg),
                    Err(shared) => {
                        files[i].mapped = Some(shared);
                        continue;
                    }
                }
            }
            return Some(files.remove(i).path);
        }
        None
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Pooled>> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }
}
