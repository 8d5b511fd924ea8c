//! The I/O seam: every file-system effect of the engine goes through [`Fs`].
//!
//! [`RealFs`] is the operating system. Tests plug in a simulated file system
//! (`io::sim::SimFs`, test builds only) that keeps, besides the live files, the image a power
//! cut would leave: per file the bytes and size as of their last sync, and the names as of the
//! last directory fsync. The crash models cut power after every effect and recover that image.
//!
//! Stores into the shared map are not effects: they change the live bytes (as `pwrite` does)
//! and become durable only through [`Fs::msync`] or [`Fs::fsync`]. Reads go through the file
//! handles [`Fs::open`] returns and [`Fs::read_dir`].

use std::fmt;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use memmap2::MmapRaw;

use crate::error::{Error, Result};

mod real;
#[cfg(test)]
pub(crate) mod sim;
#[cfg(all(target_os = "linux", feature = "io-uring"))]
mod uring;

pub(crate) use real::{copy_on_write_fs, regular, RealFs};
#[cfg(all(target_os = "linux", feature = "io-uring"))]
pub(crate) use uring::UringFs;

/// File-system effects, one method per kind.
pub(crate) trait Fs: Send + Sync + fmt::Debug {
    /// Creates `path` (truncating it), open for reading and writing. Never follows a symlink
    /// and never blocks: anything but a regular file under that name is an error.
    fn create(&self, path: &Path) -> io::Result<File>;
    /// Opens an existing file. Never follows a symlink and never blocks (on a FIFO): anything
    /// but a regular file is an error, so nothing outside the directory is read or written
    /// through a name in it.
    fn open(&self, path: &Path, writable: bool) -> io::Result<File>;
    /// Gives the file real blocks for `len` bytes (`fallocate(fd, 0, 0, len)`).
    fn fallocate(&self, file: &File, path: &Path, len: u64) -> io::Result<()>;
    /// Writes `data` at `offset` (`pwrite`).
    fn write_at(&self, file: &File, path: &Path, data: &[u8], offset: u64) -> io::Result<()>;
    /// Sets the file's length.
    fn set_len(&self, file: &File, path: &Path, len: u64) -> io::Result<()>;
    /// Makes the file's bytes and size durable (`fsync`).
    fn fsync(&self, file: &File, path: &Path) -> io::Result<()>;
    /// Maps `len` bytes of the file, shared.
    ///
    /// # Safety
    /// The caller keeps the file at least `len` bytes long while mapped and never creates a
    /// reference over bytes that are written while it lives (see `segment.rs`).
    unsafe fn map(
        &self,
        file: &File,
        path: &Path,
        len: usize,
        writable: bool,
    ) -> io::Result<MmapRaw>;
    /// Makes `[from, from + len)` of a mapped file durable (`msync(MS_SYNC)`, which also
    /// makes a changed size durable, as `fdatasync` does).
    fn msync(&self, map: &MmapRaw, path: &Path, from: usize, len: usize) -> io::Result<()>;
    /// Whether [`Fs::sync_data`] wants the file's descriptor (else it syncs through the map).
    fn syncs_by_file(&self) -> bool {
        false
    }
    /// Makes `[from, from + len)` of a mapped file durable, as [`Fs::msync`] does; `file` is
    /// the mapped file when [`Fs::syncs_by_file`] says it is wanted and the caller has it.
    fn sync_data(
        &self,
        _file: Option<&File>,
        map: &MmapRaw,
        path: &Path,
        from: usize,
        len: usize,
    ) -> io::Result<()> {
        self.msync(map, path, from, len)
    }
    /// Renames a file.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's names durable (`fsync` of the directory).
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// The entries of `dir` (full paths).
    fn read_dir(&self, dir: &Path) -> io::Result<Vec<std::path::PathBuf>>;
}

/// The operating system's file system, shared.
pub(crate) fn real() -> Arc<dyn Fs> {
    Arc::new(RealFs)
}

/// The operating system's file system with the durability calls made the way `io` asks,
/// the one in use, and why the one asked for was refused (then the threads' plain system
/// calls are used).
pub(crate) fn for_flush_io(io: crate::FlushIo) -> (Arc<dyn Fs>, crate::FlushIo, Option<String>) {
    match io {
        crate::FlushIo::Threads => (real(), io, None),
        crate::FlushIo::IoUring => match uring_fs() {
            Ok(fs) => (fs, io, None),
            Err(why) => (real(), crate::FlushIo::Threads, Some(why)),
        },
    }
}

#[cfg(all(target_os = "linux", feature = "io-uring"))]
fn uring_fs() -> std::result::Result<Arc<dyn Fs>, String> {
    UringFs::new()
        .map(|fs| Arc::new(fs) as Arc<dyn Fs>)
        .map_err(|e| e.to_string())
}

#[cfg(not(all(target_os = "linux", feature = "io-uring")))]
fn uring_fs() -> std::result::Result<Arc<dyn Fs>, String> {
    Err("built without the io-uring feature (Linux only)".into())
}

/// fsyncs a directory so that created, renamed and removed entries are durable.
pub(crate) fn sync_dir(fs: &dyn Fs, dir: &Path) -> Result<()> {
    fs.sync_dir(dir)
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// Segments renamed into place, and how many of those renames a directory fsync has made
/// durable: shared by the writer and the flush thread. The writer renames a new segment into
/// place only once every earlier one's rename is durable ([`DirSyncs::sync_if_behind`]), so
/// that a power cut never keeps a segment's name and loses an earlier one's (a gap recovery
/// must refuse).
#[derive(Debug, Default)]
pub(crate) struct DirSyncs {
    /// Renames of a segment into place so far.
    renamed: AtomicU64,
    /// Renames made durable: a directory fsync succeeded that began after each of them.
    synced: AtomicU64,
}

impl DirSyncs {
    /// Counts a rename of a segment into place (after it was issued).
    pub(crate) fn renamed(&self) {
        self.renamed.fetch_add(1, Ordering::SeqCst);
    }

    /// fsyncs `dir`; once that succeeded, every rename counted before it began is durable.
    pub(crate) fn sync(&self, fs: &dyn Fs, dir: &Path) -> Result<()> {
        let renamed = self.renamed.load(Ordering::SeqCst);
        sync_dir(fs, dir)?;
        self.synced.fetch_max(renamed, Ordering::SeqCst);
        Ok(())
    }

    /// fsyncs `dir` if a counted rename may not be durable yet.
    pub(crate) fn sync_if_behind(&self, fs: &dyn Fs, dir: &Path) -> Result<()> {
        if self.synced.load(Ordering::SeqCst) < self.renamed.load(Ordering::SeqCst) {
            self.sync(fs, dir)?;
        }
        Ok(())
    }
}

/// Gives the file `size` bytes of real blocks (invariant I4), keeping its first `keep` bytes
/// (0 for a new file; the valid prefix of a short segment being extended). `fallocate` first;
/// where the filesystem refuses it, or with `zero_fill`, writes zeros after `keep`. Then the
/// length is set to `size` if it is not.
pub(crate) fn allocate(
    fs: &dyn Fs,
    file: &File,
    path: &Path,
    keep: u64,
    size: u64,
    zero_fill: bool,
) -> Result<()> {
    if zero_fill {
        write_zeros(fs, file, path, keep, size)?;
    } else {
        match fs.fallocate(file, path, size) {
            Ok(()) => {}
            Err(e) if is_unsupported(&e) => write_zeros(fs, file, path, keep, size)?,
            Err(e) => return Err(Error::io("fallocate", path, e)),
        }
    }
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    if len != size {
        fs.set_len(file, path, size)
            .map_err(|e| Error::io("set_len", path, e))?;
    }
    Ok(())
}

/// Writes zeros over `[0, size)` of a file whose blocks are reserved, so that they become
/// *written* blocks (later writes overwrite them, and an `fdatasync` commits no extent
/// conversions). `stop` is asked between chunks (1 MiB, or 64 KiB `paced`); returns how far
/// it wrote (`size` when it wrote everything).
///
/// `paced`: zeros go in 64 KiB pieces, each written back (and waited for) before the next, so
/// at most one piece is ever in write-back. A background writer of zeros then never queues
/// more than that ahead of a log's own syncs (measured with 1 MiB pieces and two in flight:
/// the p99 of a durable round of 16 groups was 2.5 times higher; 256 KiB pieces, one at a
/// time, gave 1.4 to 1.8 times the p99 of 64 KiB ones at the same rate), and the final `fsync` has
/// nothing left to write. (Hints only: what is durable is still decided by that `fsync`.)
pub(crate) fn write_blocks(
    fs: &dyn Fs,
    file: &File,
    path: &Path,
    size: u64,
    stop: &dyn Fn() -> bool,
    paced: bool,
) -> Result<u64> {
    let chunk: u64 = if paced { 64 << 10 } else { 1 << 20 };
    let mut off = 0;
    while off < size {
        if stop() {
            return Ok(off);
        }
        let end = (off + chunk).min(size);
        write_zeros(fs, file, path, off, end)?;
        if paced {
            writeback_hint(
                file,
                off,
                end - off,
                libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER,
            );
        }
        off = end;
    }
    Ok(size)
}

/// Whether this process can use [`membarrier`]: registers it once (Linux 4.14 and later,
/// unless a seccomp filter refuses the call); `false` where it cannot.
pub(crate) fn membarrier_available() -> bool {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *REGISTERED.get_or_init(|| {
        const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;
        // SAFETY: a plain syscall with integer arguments; it touches none of this process's
        // memory.
        unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
                0,
                0,
            ) == 0
        }
    })
}

/// A full memory barrier on every thread of this process that is running now
/// (`membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`, which the kernel makes with an interrupt
/// to each CPU running one): the slow side of an asymmetric fence, whose fast side is a
/// compiler fence only. Call it only after [`membarrier_available`] said `true`; if the call
/// fails anyway, a full fence on this thread is all that is left, so it aborts rather than
/// let the fast side go unfenced.
pub(crate) fn membarrier() {
    const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
    // SAFETY: as in `membarrier_available`.
    let r = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) };
    if r != 0 {
        // Registered, so the kernel supports it: a failure here breaks the ordering the
        // writer relies on, and no error can be returned to it.
        std::process::abort();
    }
}

/// `sync_file_range(file, offset, len, flags)`, best effort: a write-back hint that makes
/// nothing durable (no metadata, no device cache flush), so it needs no place in the `Fs`
/// seam's crash model.
pub(crate) fn writeback_hint(file: &File, offset: u64, len: u64, flags: libc::c_uint) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (
        libc::off64_t::try_from(offset),
        libc::off64_t::try_from(len),
    ) else {
        return;
    };
    // SAFETY: a plain syscall on a file descriptor that `file` owns for the whole call; it
    // reads and writes none of this process's memory.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, flags);
    }
}

fn is_unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if code == libc::EOPNOTSUPP || code == libc::ENOSYS)
        || e.kind() == io::ErrorKind::Unsupported
}

/// Writes zeros over `[from, size)` in 16 KiB `pwrite`s. The page cache sizes a folio by the
/// write that makes it, and a page dirtied through a shared map marks its whole folio dirty,
/// so every later small `msync` writes whole folios back. With 1 MiB writes that was ~1 MiB
/// written per durable 16-entry batch on ext4 (Linux 6.18) and 0.55× the batch rate; with
/// 16 KiB folios it is ~36 KiB. (4 KiB writes gave the same rate and made a new log's open
/// 45 ms slower.) The pages stay cached, so mapping the file reads nothing back.
fn write_zeros(fs: &dyn Fs, file: &File, path: &Path, from: u64, size: u64) -> Result<()> {
    let chunk = [0u8; 16 << 10];
    let mut off = from;
    while off < size {
        let n = chunk.len().min((size - off) as usize);
        fs.write_at(file, path, &chunk[..n], off)
            .map_err(|e| Error::io("write zeros", path, e))?;
        off += n as u64;
    }
    Ok(())
}
