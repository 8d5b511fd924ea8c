//! Who may use a log directory: POSIX record locks on bytes of `DIR/LOCK`, plus a registry of
//! the locks this process holds.
//!
//! * **Byte 0: the directory.** A [`Store`](crate::Store) takes a write lock on byte 0
//!   ([`DirLock`], `fcntl(F_SETLK)` with `F_WRLCK`); read-only tools take a read lock on it
//!   ([`ReadLock`], `F_RDLCK`). Neither waits: contention is [`Error::Locked`] at once.
//! * **Byte 1: the mappings.** Every process that maps segment files of the directory holds a
//!   read lock on byte 1 for as long as any of those mappings lives ([`MapLock`], taken by
//!   each segment file before it is mapped and released with it). A view, or anything else
//!   that keeps an `Arc` of a segment, may outlive its `Store`: the `Store`'s lock on byte 0
//!   goes, the lock on byte 1 stays. Another process may then open the directory and write,
//!   but its preparer asks ([`others_map`], `F_GETLK`) before it rewrites a pooled file, and
//!   leaves the pool alone while another process holds byte 1 (invariant I6). Mapping needs
//!   byte 0 first (a `Store` or a tool maps files only while it holds its lock), so no other
//!   process can start mapping while a `Store` holds the directory.
//! * POSIX record locks belong to the process, not to the open file description: a child
//!   forked by any thread of this process (e.g. a `std::process::Command` spawned elsewhere)
//!   does not inherit them, even though it holds copies of our descriptors until its `exec`.
//!   (A `flock` would be shared with that copy, so a directory just closed here could still
//!   look locked for a moment.) The kernel drops them when the process dies, however it dies.
//! * Within one process POSIX locks never conflict, and closing *any* descriptor of the file
//!   drops all of the process's locks on it. So every lock this process holds is also
//!   recorded in a process-wide registry keyed by the directory's `(dev, ino)`, checked before
//!   the `LOCK` file is opened: a second `Store` on a directory, or a `Store` and a tool, are
//!   refused with [`Error::Locked`] without opening (and then closing) the file; tools and
//!   mappings in this process share one descriptor, counted. A descriptor is closed only when
//!   the directory's entry goes, once nobody in the process holds any of its locks. Entries
//!   are added and removed (and their descriptor closed) under the registry's mutex.
//! * Versions of this crate that lock the whole file conflict with either byte: such a
//!   process and this one exclude each other while either holds anything (a `Store`, a tool,
//!   or, on this side, a mapping), which is only more cautious. Such an older process does not
//!   hold byte 1 for its own views once its `Store` is gone.
//!
//! Code that opens `DIR/LOCK` itself (a backup copying every file of a live directory, say)
//! and closes it again releases this process's locks on the directory, so that another
//! process could then open it: copy only the segment files.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

use crate::error::{Error, Result};
use crate::format::LOCK_FILE;

/// A directory, by `(st_dev, st_ino)`.
type DirId = (u64, u64);

/// A registry entry's key: the `LOCK` file by `(st_dev, st_ino)`, or, on a read-only file
/// system without one, the directory. Not the directory alone: a directory removed while this
/// process still holds its entry (views kept after their `Store`) frees its inode number for
/// a new directory, whose `LOCK` is another file; the entry's open descriptor keeps its `LOCK`
/// file's inode from being reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Lock(u64, u64),
    Dir(DirId),
}

/// The byte of `LOCK` that a `Store` (write) or a tool (read) locks.
const DIR_BYTE: libc::off_t = 0;
/// The byte of `LOCK` that every process mapping segment files read-locks.
const MAP_BYTE: libc::off_t = 1;

/// What this process holds on one directory, and the descriptor that carries the locks.
#[derive(Debug)]
struct Held {
    /// A `Store` holds byte 0 (write).
    writer: bool,
    /// This many read-only tools hold byte 0 (read), sharing the lock.
    readers: usize,
    /// This many live mappings of the directory's files hold byte 1 (read), sharing the lock.
    mappers: usize,
    /// The descriptor the locks were taken through (`None` on a read-only file system without
    /// a `LOCK` file, where nobody can write).
    file: Option<File>,
    /// Whether `file` is open for writing (a write lock needs that).
    writable: bool,
    /// Earlier descriptors of the file, kept open until the entry goes: closing one would
    /// drop every lock of the process on the file.
    retired: Vec<File>,
}

impl Held {
    fn empty(file: Option<File>, writable: bool) -> Self {
        Held {
            writer: false,
            readers: 0,
            mappers: 0,
            file,
            writable,
            retired: Vec::new(),
        }
    }

    fn is_unused(&self) -> bool {
        !self.writer && self.readers == 0 && self.mappers == 0
    }
}

/// Every directory this process holds a lock on.
static REGISTRY: LazyLock<Mutex<HashMap<Key, Held>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

fn registry() -> MutexGuard<'static, HashMap<Key, Held>> {
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

/// The key of this process's entry for the directory `dir` (identity `dir_key`) whose lock
/// file is `path`, if it has one. Looked up without opening the file (`lstat`).
fn find(reg: &HashMap<Key, Held>, dir_key: DirId, path: &Path) -> Result<Option<Key>> {
    let key = match std::fs::symlink_metadata(path) {
        Ok(m) => Key::Lock(m.dev(), m.ino()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Key::Dir(dir_key),
        Err(e) => return Err(Error::io("stat lock file", path, e)),
    };
    Ok(reg.contains_key(&key).then_some(key))
}

fn locked(dir: &Path) -> Error {
    Error::Locked {
        path: dir.to_path_buf(),
    }
}

/// A `flock` for one byte.
fn byte_lock(kind: libc::c_int, byte: libc::off_t) -> libc::flock {
    // SAFETY: `flock` is a plain C struct of integers, for which all zeroes is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = byte;
    fl.l_len = 1;
    fl
}

/// Sets (`F_WRLCK`, `F_RDLCK`) or releases (`F_UNLCK`) this process's POSIX record lock on
/// `byte` of `file` (the directory's `LOCK` file at `lock_path`) without waiting. Contention is
/// [`Error::Locked`] naming the directory.
fn set_lock(
    file: &File,
    kind: libc::c_int,
    byte: libc::off_t,
    dir: &Path,
    lock_path: &Path,
) -> Result<()> {
    let fl = byte_lock(kind, byte);
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

/// Releases `byte`; best effort (an unlock only fails on a bad descriptor, and then the
/// lock goes with the descriptor anyway).
fn unlock(held: &Held, byte: libc::off_t) {
    if let Some(f) = &held.file {
        let fl = byte_lock(libc::F_UNLCK, byte);
        // SAFETY: as in `set_lock`.
        unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLK, &fl) };
    }
}

/// Opens `DIR/LOCK` for reading, creating it (empty) if it is missing; `None` where it is
/// missing and cannot be created because the file system is read-only (`EROFS`; no `Store`
/// can write there).
fn open_for_reading(path: &Path) -> Result<Option<File>> {
    match open_lock_only_to_read(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match open_for_writing(path) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.raw_os_error() == Some(libc::EROFS) => Ok(None),
            Err(e) => Err(Error::io("create lock file", path, e)),
        },
        Err(e) => Err(Error::io("open lock file", path, e)),
    }
}

/// Opens an existing `DIR/LOCK` for reading (no symlink followed, no FIFO waited for).
fn open_lock_only_to_read(path: &Path) -> std::io::Result<File> {
    crate::io::regular(
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path),
    )
}

/// Opens `DIR/LOCK` for reading and writing, creating it if it is missing. Like the segment
/// files, it is opened without following a symlink or blocking on a FIFO, and must be a
/// regular file.
fn open_for_writing(path: &Path) -> std::io::Result<File> {
    crate::io::regular(
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path),
    )
}

/// Which share of a registry entry a guard holds.
#[derive(Debug, Clone, Copy)]
enum Role {
    Writer,
    Reader,
    Mapper,
}

/// A registry entry's share held by one guard; dropping it releases that share (and the
/// lock byte when it was the last of its kind), and the entry with its descriptor when
/// nothing else holds it.
#[derive(Debug)]
struct Registration {
    key: Key,
    role: Role,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut reg = registry();
        let Some(held) = reg.get_mut(&self.key) else {
            return;
        };
        match self.role {
            Role::Writer => {
                held.writer = false;
                unlock(held, DIR_BYTE);
            }
            Role::Reader => {
                held.readers = held.readers.saturating_sub(1);
                if held.readers == 0 {
                    unlock(held, DIR_BYTE);
                }
            }
            Role::Mapper => {
                held.mappers = held.mappers.saturating_sub(1);
                if held.mappers == 0 {
                    unlock(held, MAP_BYTE);
                }
            }
        }
        if held.is_unused() {
            // The last holder: closing the descriptors (still under the mutex, so nobody in
            // this process can open the file meanwhile) releases whatever is left.
            drop(reg.remove(&self.key));
        }
    }
}

/// Joins `held` (a new entry, or this process's entry for the directory) as `role`, taking
/// the lock byte the role needs unless the process holds it already.
fn join(held: &mut Held, role: Role, dir: &Path, path: &Path) -> Result<()> {
    match role {
        Role::Writer => {
            if held.writer || held.readers > 0 {
                return Err(locked(dir));
            }
            // Only mappings hold the entry: the write lock needs a descriptor open for
            // writing. A new one is kept even when the lock fails, since closing it would
            // drop the mapping lock.
            if !held.writable {
                let file =
                    open_for_writing(path).map_err(|e| Error::io("open lock file", path, e))?;
                if let Some(old) = held.file.replace(file) {
                    held.retired.push(old);
                }
                held.writable = true;
            }
            if let Some(f) = &held.file {
                set_lock(f, libc::F_WRLCK, DIR_BYTE, dir, path)?;
            }
            held.writer = true;
        }
        Role::Reader => {
            if held.writer {
                return Err(locked(dir));
            }
            if held.readers == 0 {
                if let Some(f) = &held.file {
                    set_lock(f, libc::F_RDLCK, DIR_BYTE, dir, path)?;
                }
            }
            held.readers += 1;
        }
        Role::Mapper => {
            if held.mappers == 0 {
                if let Some(f) = &held.file {
                    set_lock(f, libc::F_RDLCK, MAP_BYTE, dir, path)?;
                }
            }
            held.mappers += 1;
        }
    }
    Ok(())
}

/// Takes `role`'s share of `dir`: joins this process's entry for the directory if there is
/// one (found without opening the file: closing a second descriptor would release the locks
/// held through the first), else opens `DIR/LOCK` (creating it if missing), takes the lock and
/// adds the entry.
fn acquire(dir: &Path, role: Role) -> Result<Registration> {
    let dir_key = dir_id(dir)?;
    let path = dir.join(LOCK_FILE);
    let mut reg = registry();
    if let Some(key) = find(&reg, dir_key, &path)? {
        if let Some(held) = reg.get_mut(&key) {
            join(held, role, dir, &path)?;
            return Ok(Registration { key, role });
        }
    }
    let file = match role {
        Role::Writer => {
            Some(open_for_writing(&path).map_err(|e| Error::io("open lock file", &path, e))?)
        }
        Role::Reader | Role::Mapper => open_for_reading(&path)?,
    };
    let key = match &file {
        Some(f) => {
            let m = f
                .metadata()
                .map_err(|e| Error::io("stat lock file", &path, e))?;
            Key::Lock(m.dev(), m.ino())
        }
        None => Key::Dir(dir_key),
    };
    if let Some(held) = reg.get_mut(&key) {
        // The file appeared under its name only now, yet the process holds it (it was
        // renamed back, say): the new descriptor is kept, not closed.
        if let Some(f) = file {
            held.retired.push(f);
        }
        join(held, role, dir, &path)?;
        return Ok(Registration { key, role });
    }
    let mut held = Held::empty(file, matches!(role, Role::Writer));
    join(&mut held, role, dir, &path)?;
    reg.insert(key, held);
    Ok(Registration { key, role })
}

/// A held write lock on a log directory (one `Store`); released on drop.
#[derive(Debug)]
pub struct DirLock {
    _reg: Registration,
}

impl DirLock {
    /// Takes the write lock on `dir`, creating `DIR/LOCK` if needed. Fails at once with
    /// [`Error::Locked`] if a `Store` or a read-only tool, in this process or another, holds
    /// the directory. Views of this process or another that outlived their `Store` do not
    /// keep it out (they hold only the mapping byte).
    pub fn acquire(dir: &Path) -> Result<Self> {
        Ok(DirLock {
            _reg: acquire(dir, Role::Writer)?,
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
        Ok(ReadLock {
            _reg: acquire(dir, Role::Reader)?,
        })
    }
}

/// A share of this process's read lock on byte 1 of a directory's `LOCK` file: "this process
/// maps segment files of the directory". Each mapped segment file holds one from before it is
/// mapped until its map is gone; the lock is released with the last one.
#[derive(Debug)]
pub(crate) struct MapLock {
    _reg: Registration,
}

impl MapLock {
    /// Takes a share of the mapping lock of the directory `dir`. The caller holds the
    /// directory (a `Store` or a tool) in this process, so that no other process's `Store` can
    /// be writing it; if nobody in this process does (only tests map files that way), the
    /// `LOCK` file is opened (created if missing) for the mapping lock alone.
    pub(crate) fn acquire(dir: &Path) -> Result<Self> {
        Ok(MapLock {
            _reg: acquire(dir, Role::Mapper)?,
        })
    }
}

/// Whether another process holds the mapping lock of `dir` (byte 1 of `DIR/LOCK`, or the whole
/// file, as older versions lock it): then files it mapped may still be mapped there, and a
/// pooled file must not be rewritten. Asked with `F_GETLK`, which ignores this process's own
/// locks. A directory without a `LOCK` file has no other mapper.
pub(crate) fn others_map(dir: &Path) -> Result<bool> {
    let dir_key = dir_id(dir)?;
    let path = dir.join(LOCK_FILE);
    let reg = registry();
    let opened;
    let held = find(&reg, dir_key, &path)?.and_then(|key| reg.get(&key));
    let file = match held.map(|h| h.file.as_ref()) {
        Some(Some(f)) => f,
        Some(None) => return Ok(false),
        // Nothing of this process holds the directory: a descriptor opened and closed here
        // releases no lock of ours.
        None => match open_lock_only_to_read(&path) {
            Ok(f) => {
                opened = f;
                &opened
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io("open lock file", &path, e)),
        },
    };
    let mut fl = byte_lock(libc::F_WRLCK, MAP_BYTE);
    loop {
        // SAFETY: the descriptor is open for the call and `fl` is a valid `flock` the kernel
        // may overwrite (it outlives the call); F_GETLK does not block.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut fl) };
        if r == 0 {
            return Ok(fl.l_type != libc::F_UNLCK as libc::c_short);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(Error::io("query lock", &path, e));
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

    #[test]
    fn mappings_outlive_the_writer_and_leave_the_directory_free() {
        let dir = tempfile::tempdir().unwrap();
        let w = DirLock::acquire(dir.path()).unwrap();
        let m = MapLock::acquire(dir.path()).unwrap();
        let m2 = MapLock::acquire(dir.path()).unwrap();
        drop(w);
        // Only mappings hold the directory: a writer or a tool may take it.
        let r = ReadLock::acquire(dir.path()).unwrap();
        drop(r);
        let w = DirLock::acquire(dir.path()).unwrap();
        assert!(matches!(
            DirLock::acquire(dir.path()),
            Err(Error::Locked { .. })
        ));
        drop(m);
        // This process's own mapping lock does not count as another's.
        assert!(!others_map(dir.path()).unwrap());
        drop(w);
        drop(m2);
        let path = dir.path().join(LOCK_FILE);
        let key = find(&registry(), dir_id(dir.path()).unwrap(), &path).unwrap();
        assert!(key.is_none(), "the entry goes with its last holder");
        ReadLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn a_writer_after_a_tool_whose_mappings_live_gets_a_writable_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let r = ReadLock::acquire(dir.path()).unwrap();
        let m = MapLock::acquire(dir.path()).unwrap();
        drop(r);
        let w = DirLock::acquire(dir.path()).unwrap();
        drop(m);
        assert!(matches!(
            ReadLock::acquire(dir.path()),
            Err(Error::Locked { .. })
        ));
        drop(w);
    }

    #[test]
    fn a_new_directory_is_not_mistaken_for_a_removed_one_whose_mappings_live() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        std::fs::create_dir(&dir).unwrap();
        let w = DirLock::acquire(&dir).unwrap();
        let m = MapLock::acquire(&dir).unwrap();
        drop(w);
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir(&dir).unwrap();
        // Whatever inode the new directory got, its own LOCK file is made and locked.
        let w = DirLock::acquire(&dir).unwrap();
        assert!(
            dir.join(LOCK_FILE).exists(),
            "the new directory has no LOCK"
        );
        assert!(matches!(DirLock::acquire(&dir), Err(Error::Locked { .. })));
        let path = dir.join(LOCK_FILE);
        let key = find(&registry(), dir_id(&dir).unwrap(), &path).unwrap();
        assert!(key.is_some());
        drop(m);
        drop(w);
    }
}
