//! One writer per log directory: a POSIX record lock on `DIR/LOCK`, plus a registry of the
//! locks this process holds.
//!
//! * A [`Store`](crate::Store) takes a write lock ([`DirLock`], `fcntl(F_SETLK)` with `F_WRLCK`
//!   over the whole file); read-only tools take a read lock ([`ReadLock`], `F_RDLCK`). Neither
//!   waits: contention is [`Error::Locked`] at once.
//! * POSIX record locks belong to the process, not to the open file description: a child
//!   forked by any thread of this process (e.g. a `std::process::Command` spawned elsewhere)
//!   does not inherit them, even though it holds copies of our descriptors until its `exec`.
//!   (A `flock` would be shared with that copy, so a directory just closed here could still
//!   look locked for a moment.) The kernel drops them when the process dies, however it dies.
//! * Within one process POSIX locks never conflict, and closing *any* descriptor of the file
//!   drops all of the process's locks on it. So every lock this process holds is also
//!   recorded in a process-wide registry keyed by the directory's `(dev, ino)`, checked before
//!   the `LOCK` file is opened: a second `Store` on a directory, or a `Store` and a tool, are
//!   refused with [`Error::Locked`] without opening (and then closing) the file; tools in this
//!   process share one descriptor and one read lock, counted. Entries are added and removed
//!   (and their descriptor closed) under the registry's mutex.
//!
//! Code that opens `DIR/LOCK` itself (a backup copying every file of a live directory, say)
//! and closes it again releases this process's lock on the directory, so that another process
//! could then open it: copy only the segment files.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

use crate::error::{Error, Result};
use crate::format::LOCK_FILE;

/// A directory, by `(st_dev, st_ino)`.
type DirId = (u64, u64);

/// Who in this process holds a directory.
#[derive(Debug)]
enum Holders {
    /// One `Store`.
    Writer,
    /// This many read-only tools, sharing the descriptor.
    Readers(usize),
}

/// One registry entry: the holders and the descriptor that carries the record lock (`None` for
/// readers of a directory on a read-only file system without a `LOCK` file).
#[derive(Debug)]
struct Held {
    holders: Holders,
    _file: Option<File>,
}

/// Every directory this process holds a lock on.
static REGISTRY: LazyLock<Mutex<HashMap<DirId, Held>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn registry() -> MutexGuard<'static, HashMap<DirId, Held>> {
    // Nothing panics while the mutex is held, and every update leaves the map consistent.
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Checks that `dir` is a directory and returns its identity.
fn dir_id(dir: &Path) -> Result<DirId> {
    let meta = std::fs::metadata(dir).map_err(|e| Error::io("open log directory", dir, e))?;
    if !meta.is_dir() {
        return Err(Error::io(
            "open log directory",
            dir,
            std::io::Error::other("not a directory"),
        ));
    }
    Ok((meta.dev(), meta.ino()))
}

fn locked(dir: &Path) -> Error {
    Error::Locked {
        path: dir.to_path_buf(),
    }
}

/// Takes a POSIX record lock (`kind` = `F_WRLCK` or `F_RDLCK`) on the whole of `file` (the
/// directory's `LOCK` file at `lock_path`) without waiting. Contention is [`Error::Locked`]
/// naming the directory.
fn set_lock(file: &File, kind: libc::c_int, dir: &Path, lock_path: &Path) -> Result<()> {
    // SAFETY: `flock` is a plain C struct of integers, for which all zeroes is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = 0;
    fl.l_len = 0; // to the end of the file, however long it grows
    loop {
        // SAFETY: the descriptor is open (borrowed from `file` for the call) and `fl` is a
        // valid, initialised `flock` that outlives the call; F_SETLK does not block.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &fl) };
        if r == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EACCES) | Some(libc::EAGAIN) => return Err(locked(dir)),
            _ => return Err(Error::io("lock", lock_path, e)),
        }
    }
}

/// A registry entry held by one guard; dropping it releases this guard's share.
#[derive(Debug)]
struct Registration {
    id: DirId,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut reg = registry();
        if let Some(Held {
            holders: Holders::Readers(n),
            ..
        }) = reg.get_mut(&self.id)
        {
            if *n > 1 {
                *n -= 1;
                return;
            }
        }
        // The last holder: closing the descriptor (still under the mutex, so nobody in this
        // process can open the file meanwhile) releases the record lock.
        drop(reg.remove(&self.id));
    }
}

/// A held write lock on a log directory (one `Store`); released on drop.
#[derive(Debug)]
pub struct DirLock {
    _reg: Registration,
}

impl DirLock {
    /// Takes the write lock on `dir`, creating `DIR/LOCK` if needed. Fails at once with
    /// [`Error::Locked`] if a `Store` or a read-only tool, in this process or another, holds
    /// the directory.
    pub fn acquire(dir: &Path) -> Result<Self> {
        let id = dir_id(dir)?;
        let mut reg = registry();
        if reg.contains_key(&id) {
            // Checked before opening the file: closing a second descriptor would release the
            // lock held through the first.
            return Err(locked(dir));
        }
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("open lock file", &path, e))?;
        set_lock(&file, libc::F_WRLCK, dir, &path)?;
        reg.insert(
            id,
            Held {
                holders: Holders::Writer,
                _file: Some(file),
            },
        );
        Ok(DirLock {
            _reg: Registration { id },
        })
    }
}

/// A read lock on a log directory's `LOCK` file, held while a tool reads the directory; see
/// the [module docs](crate::inspect#locking). Released on drop.
#[derive(Debug)]
pub struct ReadLock {
    _reg: Registration,
}

impl ReadLock {
    /// Checks that `dir` is a directory and takes a read lock on its `LOCK` file, without
    /// waiting. Read locks share with each other (in this process and across processes) but
    /// not with a `Store`: fails with [`Error::Locked`] when one holds the directory.
    ///
    /// A missing `LOCK` file is created (empty), so that a `Store` opening the directory
    /// meanwhile sees the lock. Only if it cannot be created because the file system is
    /// read-only (`EROFS`; no `Store` can write there) is the directory read without a lock.
    pub fn acquire(dir: &Path) -> Result<Self> {
        let id = dir_id(dir)?;
        let mut reg = registry();
        match reg.get_mut(&id) {
            Some(Held {
                holders: Holders::Readers(n),
                ..
            }) => {
                *n += 1;
                return Ok(ReadLock {
                    _reg: Registration { id },
                });
            }
            Some(_) => return Err(locked(dir)),
            None => {}
        }
        let path = dir.join(LOCK_FILE);
        let file = match File::open(&path) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)
                {
                    Ok(f) => Some(f),
                    Err(e) if e.raw_os_error() == Some(libc::EROFS) => None,
                    Err(e) => return Err(Error::io("create lock file", &path, e)),
                }
            }
            Err(e) => return Err(Error::io("open lock file", &path, e)),
        };
        if let Some(f) = &file {
            set_lock(f, libc::F_RDLCK, dir, &path)?;
        }
        reg.insert(
            id,
            Held {
                holders: Holders::Readers(1),
                _file: file,
            },
        );
        Ok(ReadLock {
            _reg: Registration { id },
        })
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

    #[test]
    fn readers_share_with_each_other_not_with_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let r1 = ReadLock::acquire(dir.path()).unwrap();
        let r2 = ReadLock::acquire(dir.path()).unwrap();
        assert!(matches!(
            DirLock::acquire(dir.path()),
            Err(Error::Locked { .. })
        ));
        drop(r1);
        assert!(matches!(
            DirLock::acquire(dir.path()),
            Err(Error::Locked { .. })
        ));
        drop(r2);
        let w = DirLock::acquire(dir.path()).unwrap();
        assert!(matches!(
            ReadLock::acquire(dir.path()),
            Err(Error::Locked { .. })
        ));
        drop(w);
        ReadLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn not_a_directory_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"").unwrap();
        let err = ReadLock::acquire(&file).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        let err = DirLock::acquire(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
    }
}
