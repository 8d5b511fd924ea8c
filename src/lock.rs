//! One process per log directory: an exclusive `fs2` lock on `DIR/LOCK`.
//!
//! The lock is held by an open file descriptor, so the kernel releases it when the process
//! dies, however it dies (including SIGKILL).

use std::fs::{File, OpenOptions};
use std::path::Path;

use crate::error::{Error, Result};
use crate::format::LOCK_FILE;

/// A held directory lock; released on drop.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock on `dir`, failing with [`Error::Locked`] if someone holds it (after at
    /// most [`LOCK_RETRY`]).
    pub fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("open lock file", &path, e))?;
        try_lock(&file, true, dir, &path)?;
        Ok(DirLock { _file: file })
    }
}

/// How long contention is retried before it is reported as [`Error::Locked`].
///
/// A `flock` belongs to the open file description, which a `fork` duplicates: a child process
/// forked by *any* thread of this process holds a copy of the lock file descriptor until its
/// `exec` closes it (`O_CLOEXEC`). In that window a directory that was just closed still looks
/// locked. The window is short, so contention is retried briefly before it is reported; a
/// directory that is really held still fails within this bound.
pub const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// Takes a `flock` on `file` (the directory's `LOCK` file at `lock_path`), exclusive for a
/// `Store`, shared for read-only tools, without waiting longer than [`LOCK_RETRY`].
/// Contention is [`Error::Locked`] naming the directory.
pub(crate) fn try_lock(file: &File, exclusive: bool, dir: &Path, lock_path: &Path) -> Result<()> {
    let deadline = std::time::Instant::now() + LOCK_RETRY;
    loop {
        // Call the trait methods explicitly: std's `File::try_lock*` would shadow them.
        let res = if exclusive {
            fs2::FileExt::try_lock_exclusive(file)
        } else {
            fs2::FileExt::try_lock_shared(file)
        };
        match res {
            Ok(()) => return Ok(()),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.raw_os_error() == Some(libc::EWOULDBLOCK) =>
            {
                if std::time::Instant::now() >= deadline {
                    return Err(Error::Locked {
                        path: dir.to_path_buf(),
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Err(e) => return Err(Error::io("lock", lock_path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_fails_until_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let a = DirLock::acquire(dir.path()).unwrap();
        let err = DirLock::acquire(dir.path()).unwrap_err();
        assert!(matches!(err, Error::Locked { .. }), "{err}");
        assert!(err.to_string().contains(&dir.path().display().to_string()));
        drop(a);
        DirLock::acquire(dir.path()).unwrap();
    }
}
