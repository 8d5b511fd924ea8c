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
    /// Takes the lock on `dir`, failing at once with [`Error::Locked`] if someone holds it.
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

/// Takes a non-blocking `flock` on `file` (the directory's `LOCK` file at `lock_path`),
/// exclusive for a `Store`, shared for read-only tools. Contention is [`Error::Locked`]
/// naming the directory.
pub(crate) fn try_lock(file: &File, exclusive: bool, dir: &Path, lock_path: &Path) -> Result<()> {
    // Call the trait methods explicitly: std's `File::try_lock*` would shadow them.
    let res = if exclusive {
        fs2::FileExt::try_lock_exclusive(file)
    } else {
        fs2::FileExt::try_lock_shared(file)
    };
    match res {
        Ok(()) => Ok(()),
        Err(e)
            if e.kind() == std::io::ErrorKind::WouldBlock
                || e.raw_os_error() == Some(libc::EWOULDBLOCK) =>
        {
            Err(Error::Locked {
                path: dir.to_path_buf(),
            })
        }
        Err(e) => Err(Error::io("lock", lock_path, e)),
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
