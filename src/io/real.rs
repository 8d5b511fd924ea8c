//! [`RealFs`]: the operating system.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use memmap2::{MmapOptions, MmapRaw};

use super::Fs;

/// The operating system's file system.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RealFs;

impl Fs for RealFs {
    fn create(&self, path: &Path) -> io::Result<File> {
        regular(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(path),
        )
    }

    fn open(&self, path: &Path, writable: bool) -> io::Result<File> {
        regular(
            OpenOptions::new()
                .read(true)
                .write(writable)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(path),
        )
    }

    /// `fallocate(fd, 0, 0, len)`, called directly rather than through fs2, whose
    /// `posix_fallocate` wrapper loses the error code (ENOSPC would read "Success"), and
    /// which would hide `EOPNOTSUPP` behind glibc's own slow emulation.
    fn fallocate(&self, file: &File, _path: &Path, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let len =
            libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        loop {
            // SAFETY: a plain syscall on a file descriptor we own; it touches no memory of
            // ours.
            let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
            if r == 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    fn write_at(&self, file: &File, _path: &Path, data: &[u8], offset: u64) -> io::Result<()> {
        file.write_all_at(data, offset)
    }

    fn set_len(&self, file: &File, _path: &Path, len: u64) -> io::Result<()> {
        file.set_len(len)
    }

    fn fsync(&self, file: &File, _path: &Path) -> io::Result<()> {
        file.sync_all()
    }

    /// # Safety
    /// As [`Fs::map`]: the caller keeps the file long enough and never makes a reference
    /// over bytes written while it lives.
    unsafe fn map(
        &self,
        file: &File,
        _path: &Path,
        len: usize,
        writable: bool,
    ) -> io::Result<MmapRaw> {
        let mut opts = MmapOptions::new();
        opts.len(len);
        // SAFETY: `map_raw` only promises raw pointers; the caller upholds `Fs::map`'s
        // contract for every access through them.
        if writable {
            opts.map_raw(file)
        } else {
            opts.map_raw_read_only(file)
        }
    }

    fn msync(&self, map: &MmapRaw, _path: &Path, from: usize, len: usize) -> io::Result<()> {
        map.flush_range(from, len)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<std::path::PathBuf>> {
        std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.path()))
            .collect()
    }
}

/// Checks what an open without following a symlink (`O_NOFOLLOW`) and without blocking
/// (`O_NONBLOCK`: a FIFO would wait for a writer) gave: only a regular file is one of the log's
/// files. A symlink is refused (`ELOOP` from the open), and so is anything else that is not a
/// regular file (a directory, a FIFO, a device), checked with `fstat` on the open descriptor,
/// so nothing is ever written through a name that points elsewhere. The descriptor is made
/// blocking again (`O_NONBLOCK` means nothing to a regular file, but it stays clean).
pub(crate) fn regular(opened: io::Result<File>) -> io::Result<File> {
    use std::os::fd::AsRawFd;
    let file = opened.map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "a symbolic link, not a regular file (not followed)",
            )
        } else {
            e
        }
    })?;
    if !file.metadata()?.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (a directory, FIFO, socket or device)",
        ));
    }
    // SAFETY: plain `fcntl` calls on a descriptor we own; they touch no memory of ours.
    unsafe {
        let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
    Ok(file)
}

/// The copy-on-write file system `dir` is on, if it is one where a store into a shared
/// mapping can fail for lack of space (and then kills the process with SIGBUS): btrfs, ZFS,
/// bcachefs. Detected with `statfs`.
pub(crate) fn copy_on_write_fs(dir: &Path) -> Option<&'static str> {
    use std::os::unix::ffi::OsStrExt;
    const BTRFS: i64 = 0x9123_683E;
    const ZFS: i64 = 0x2FC1_2FC1;
    const BCACHEFS: i64 = 0xCA45_1A4E;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `statfs` is zero-initialisable plain data, and the kernel writes at most one
    // `statfs` into it; `c` is a valid NUL-terminated path for the duration of the call.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)]
    match st.f_type as i64 {
        BTRFS => Some("btrfs"),
        ZFS => Some("zfs"),
        BCACHEFS => Some("bcachefs"),
        _ => None,
    }
}
