//! [`UringFs`]: the operating system, with the durability calls and `pwrite` through one
//! io_uring ring (Linux, feature `io-uring`).
//!
//! Why: a durable flush is a `pwrite` and a sync (or a ranged `msync`), and, when segments are
//! renamed, a directory fsync. Through a ring they are submitted as operations rather than
//! made as blocking system calls, and a data sync names a byte range of the file
//! ([`UringFs::datasync_range`]) without needing the mapping `msync` needs. Measured, one
//! sync through the ring costs more than the system call (the kernel hands it to a worker
//! thread): `docs/benchmarks.md`.
//!
//! What goes through the ring: [`Fs::fsync`] (`IORING_OP_FSYNC`), [`Fs::sync_dir`] (the
//! directory is opened, then fsynced through the ring), [`Fs::write_at`] (`IORING_OP_WRITE`,
//! looping on short writes) and [`Fs::sync_data`] given the file. Everything else, including
//! [`Fs::msync`] (a mapping does not give its file descriptor back), is [`RealFs`].
//!
//! An operation takes an idle ring (or makes one when all are in use: a ring per concurrent
//! caller, so a writer's `pwrite` never waits behind the flush thread's sync), pushes,
//! submits and waits for its completions (matched by `user_data`), then gives the ring back:
//! no operation outlives the call that made it. A ring whose state became unknown (a
//! non-retryable error from `io_uring_enter` after a push) is dropped, so no stale
//! submission is ever sent. (With one ring behind one lock, measured on btrfs in `Pwrite`
//! mode, 64 writers ran at half the threads' rate: every write waited for the sync in
//! flight.)

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use io_uring::{opcode, squeue, types, IoUring, Probe};
use memmap2::MmapRaw;

use super::{Fs, RealFs};

/// Submission queue entries of the ring: an operation uses at most two.
const ENTRIES: u32 = 8;

/// The most one `IORING_OP_WRITE` is asked to write (the kernel's own cap on one
/// read or write, `MAX_RW_COUNT`); longer writes are split.
const MAX_WRITE: usize = 0x7fff_f000;

/// The operating system's file system, with `fsync`, ranged data syncs, directory fsyncs and
/// `pwrite` through io_uring rings (see the module documentation).
pub(crate) struct UringFs {
    /// Rings no operation is using. An operation takes one (or makes one, when every ring is
    /// in use) and gives it back once its completions are reaped, so concurrent operations
    /// (a writer's `pwrite` and the flush thread's sync) never wait for each other's I/O.
    idle: Mutex<Vec<Ring>>,
    /// Everything that does not go through a ring.
    real: RealFs,
}

/// One io_uring instance, used by one operation at a time.
struct Ring {
    /// The io_uring instance.
    uring: IoUring,
    /// The `user_data` of the next operation (each operation's entries get consecutive ones).
    next: u64,
}

impl Ring {
    /// A new ring of [`ENTRIES`] entries.
    fn new() -> io::Result<Ring> {
        let uring = IoUring::new(ENTRIES).map_err(|e| {
            let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
                .map(|s| format!(" (kernel.io_uring_disabled = {})", s.trim()))
                .unwrap_or_default();
            context(&format!("io_uring_setup{sysctl}"), e)
        })?;
        Ok(Ring { uring, next: 0 })
    }
}

/// The byte range of a data sync, as the ring takes it: `None` for nothing to sync (an empty
/// range), `(0, 0)` for the whole file (a range longer than the `u32` length field holds),
/// else `(offset, len)`.
fn sync_range(from: u64, len: u64) -> Option<(u64, u32)> {
    if len == 0 {
        return None;
    }
    Some(match u32::try_from(len) {
        Ok(len) => (from, len),
        // The kernel syncs the whole file for offset 0 and length 0: a superset of the range,
        // in one operation (several ranged ones would each flush the device cache).
        Err(_) => (0, 0),
    })
}

/// Whether an error from `io_uring_enter` leaves the ring as it was, so that the same call can
/// be made again: interrupted by a signal (`EINTR`), no memory for the requests just now
/// (`EAGAIN`), or the completion queue overflowed (`EBUSY`).
fn retryable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY)
    )
}

/// An operation's result as an `io::Result`: a negative result is an error number.
fn check(res: i32) -> io::Result<u32> {
    if res < 0 {
        Err(io::Error::from_raw_os_error(-res))
    } else {
        Ok(res.unsigned_abs())
    }
}

/// `error` with `what` in front of its message, keeping its kind.
fn context(what: &str, error: io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("{what}: {error}"))
}

impl UringFs {
    /// Builds the ring (8 entries) and probes it: the kernel must support `IORING_OP_FSYNC`,
    /// `IORING_OP_WRITE` and `IORING_OP_NOP` (asked with `IORING_REGISTER_PROBE`, Linux 5.6
    /// and later), and a `Nop` must make the round trip. Any failure is returned, with what
    /// failed in its message and its kind kept (`PermissionDenied` where io_uring is disabled
    /// by `kernel.io_uring_disabled` or refused by a seccomp filter, `Unsupported` for a
    /// kernel without it), so that the caller can fall back to [`RealFs`] and say why.
    pub(crate) fn new() -> io::Result<UringFs> {
        let ring = Ring::new()?;
        let mut probe = Probe::new();
        ring.uring
            .submitter()
            .register_probe(&mut probe)
            .map_err(|e| context("io_uring probe (IORING_REGISTER_PROBE)", e))?;
        for (code, name) in [
            (opcode::Nop::CODE, "IORING_OP_NOP"),
            (opcode::Fsync::CODE, "IORING_OP_FSYNC"),
            (opcode::Write::CODE, "IORING_OP_WRITE"),
        ] {
            if !probe.is_supported(code) {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("io_uring: {name} not supported by this kernel"),
                ));
            }
        }
        let fs = UringFs {
            idle: Mutex::new(vec![ring]),
            real: RealFs,
        };
        // SAFETY: a `Nop` names no buffer and no file descriptor.
        let [res] = unsafe { fs.run([opcode::Nop::new().build()], false) }
            .map_err(|e| context("io_uring Nop round trip", e))?;
        check(res).map_err(|e| context("io_uring Nop round trip", e))?;
        Ok(fs)
    }

    /// Makes the bytes of `[from, from + len)` of `file` and its size durable: a data sync of
    /// that range (`IORING_OP_FSYNC` with `IORING_FSYNC_DATASYNC` and the range), which is
    /// what `msync(MS_SYNC)` of a shared file mapping of that range amounts to. Nothing to do
    /// for an empty range; a range longer than `u32::MAX` bytes syncs the whole file's data.
    pub(crate) fn datasync_range(&self, file: &File, from: u64, len: u64) -> io::Result<()> {
        let Some((offset, len)) = sync_range(from, len) else {
            return Ok(());
        };
        let sync = opcode::Fsync::new(types::Fd(file.as_raw_fd()))
            .flags(types::FsyncFlags::DATASYNC)
            .offset(offset)
            .len(len)
            .build();
        // SAFETY: the entry names `file`'s descriptor only, which the borrow keeps open until
        // this returns, and `run` returns only after the operation completed.
        let [res] = unsafe { self.run([sync], false) }?;
        check(res).map(drop)
    }

    /// Writes `data` at `offset` through the ring, at most `max` bytes per operation, looping
    /// on short writes (and on `EINTR`) until all is written, as `pwrite` in a loop would.
    fn write_chunked(&self, file: &File, data: &[u8], offset: u64, max: usize) -> io::Result<()> {
        let mut done = 0;
        while done < data.len() {
            let rest = &data[done..];
            let n = rest.len().min(max).min(MAX_WRITE);
            let at = offset
                .checked_add(done as u64)
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EFBIG))?;
            let write = opcode::Write::new(
                types::Fd(file.as_raw_fd()),
                rest.as_ptr(),
                u32::try_from(n).unwrap_or(MAX_WRITE as u32),
            )
            .offset(at)
            .build();
            // SAFETY: the entry names `file`'s descriptor, open until this returns, and
            // `rest[..n]`, which the kernel only reads and which the borrow of `data` keeps
            // alive and unchanged until this returns; `run` returns only after the operation
            // completed (or aborts the process if it cannot know that: `borrows` is set).
            let [res] = unsafe { self.run([write], true) }?;
            match check(res) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "failed to write whole buffer",
                    ))
                }
                Ok(written) => done += written as usize,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The idle rings (a panic while the list was locked left it whole: pushes and pops only).
    fn idle(&self) -> MutexGuard<'_, Vec<Ring>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pushes `entries` (linked or not, as their flags say), submits them and waits for all
    /// their completions; returns their results, in order (a negative result is an error
    /// number for the caller to check). On a ring of its own from push to last completion.
    ///
    /// `io_uring_enter` interrupted (`EINTR`) or out of memory for now (`EAGAIN`, `EBUSY`) is
    /// retried. Any other error from it leaves the ring's state unknown (the entries may still
    /// be queued, or running): the ring is dropped, never used again, and the error is
    /// returned; if `borrows`, an operation may still be reading the caller's memory after
    /// this returns, so the process aborts instead.
    ///
    /// # Safety
    /// Every buffer and file descriptor the entries name must stay valid (and a buffer the
    /// kernel reads, unchanged) until this returns; `borrows` must be set if an entry names
    /// memory.
    unsafe fn run<const N: usize>(
        &self,
        mut entries: [squeue::Entry; N],
        borrows: bool,
    ) -> io::Result<[i32; N]> {
        let taken = self.idle().pop();
        let mut ring = match taken {
            Some(ring) => ring,
            None => Ring::new()?,
        };
        let base = ring.next;
        ring.next = ring.next.wrapping_add(N as u64);
        for (i, entry) in entries.iter_mut().enumerate() {
            entry.set_user_data(base.wrapping_add(i as u64));
        }
        // SAFETY: the caller keeps every buffer and descriptor the entries name valid until
        // this returns, and this returns only once every entry has completed (or the ring is
        // dropped, and the process aborts if one might still be reading memory): so they
        // outlive the operations. The ring is this call's alone until it is given back, so
        // no other thread submits, reaps or pushes on it meanwhile.
        let pushed = unsafe { ring.uring.submission().push_multiple(&entries) };
        if pushed.is_err() {
            // Cannot happen: every operation is reaped before its ring is given back, and no
            // operation has more entries than the ring.
            return Err(io::Error::other("io_uring submission queue full"));
        }
        let mut results = [None; N];
        let mut left = N;
        while left > 0 {
            match ring.uring.submit_and_wait(left) {
                Ok(_) => {}
                Err(e) if retryable(&e) => {}
                Err(e) => {
                    if borrows {
                        // An operation may still read memory the caller is about to reuse,
                        // and write what it finds into a log file: nothing safe is left.
                        std::process::abort();
                    }
                    return Err(context("io_uring_enter", e));
                }
            }
            for cqe in ring.uring.completion() {
                let k = cqe.user_data().wrapping_sub(base);
                if let Some(slot) = usize::try_from(k).ok().and_then(|k| results.get_mut(k)) {
                    if slot.is_none() {
                        *slot = Some(cqe.result());
                        left -= 1;
                    }
                }
            }
        }
        self.idle().push(ring);
        Ok(results.map(|r| r.unwrap_or(-libc::EIO)))
    }
}

impl fmt::Debug for UringFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UringFs")
            .field("entries", &ENTRIES)
            .field("idle_rings", &self.idle().len())
            .finish()
    }
}

impl Fs for UringFs {
    fn create(&self, path: &Path) -> io::Result<File> {
        self.real.create(path)
    }

    fn open(&self, path: &Path, writable: bool) -> io::Result<File> {
        self.real.open(path, writable)
    }

    fn fallocate(&self, file: &File, path: &Path, len: u64) -> io::Result<()> {
        self.real.fallocate(file, path, len)
    }

    /// `IORING_OP_WRITE`, looping on short writes.
    fn write_at(&self, file: &File, _path: &Path, data: &[u8], offset: u64) -> io::Result<()> {
        self.write_chunked(file, data, offset, MAX_WRITE)
    }

    fn set_len(&self, file: &File, path: &Path, len: u64) -> io::Result<()> {
        self.real.set_len(file, path, len)
    }

    /// `IORING_OP_FSYNC` (a full fsync).
    fn fsync(&self, file: &File, _path: &Path) -> io::Result<()> {
        let sync = opcode::Fsync::new(types::Fd(file.as_raw_fd())).build();
        // SAFETY: the entry names `file`'s descriptor only, open until this returns, and
        // `run` returns only after the operation completed.
        let [res] = unsafe { self.run([sync], false) }?;
        check(res).map(drop)
    }

    /// # Safety
    /// As [`Fs::map`].
    unsafe fn map(
        &self,
        file: &File,
        path: &Path,
        len: usize,
        writable: bool,
    ) -> io::Result<MmapRaw> {
        // SAFETY: the caller upholds `Fs::map`'s contract, which is `RealFs::map`'s.
        unsafe { self.real.map(file, path, len, writable) }
    }

    /// A plain `msync(MS_SYNC)` ([`RealFs`]): a mapping does not give its file descriptor
    /// back. [`UringFs::datasync_range`] does the same through the ring, given the file.
    fn msync(&self, map: &MmapRaw, path: &Path, from: usize, len: usize) -> io::Result<()> {
        self.real.msync(map, path, from, len)
    }

    fn syncs_by_file(&self) -> bool {
        true
    }

    /// [`UringFs::datasync_range`] given the file, else a plain `msync`.
    fn sync_data(
        &self,
        file: Option<&File>,
        map: &MmapRaw,
        path: &Path,
        from: usize,
        len: usize,
    ) -> io::Result<()> {
        match file {
            Some(file) => self.datasync_range(file, from as u64, len as u64),
            None => self.real.msync(map, path, from, len),
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.real.rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.real.remove(path)
    }

    /// Opens the directory, then `IORING_OP_FSYNC` of it.
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let dir = File::open(dir)?;
        self.fsync(&dir, Path::new(""))
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        self.real.read_dir(dir)
    }
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;

    /// A ring, or the test fails saying why there is none.
    /// A ring, or `None` (the test skips, saying why) where the kernel refuses io_uring: a
    /// seccomp filter, `kernel.io_uring_disabled`, an old kernel.
    fn uring() -> Option<UringFs> {
        match UringFs::new() {
            Ok(fs) => Some(fs),
            Err(e) => {
                eprintln!("SKIPPED: io_uring refused here: {e}");
                None
            }
        }
    }

    /// Bytes that differ from offset to offset.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn uring_write_at_reads_back() {
        let Some(fs) = uring() else { return };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = fs.create(&path).unwrap();
        let data = pattern(100_000);
        fs.write_at(&file, &path, &data, 4096).unwrap();
        fs.write_at(&file, &path, b"", 0).unwrap();
        let mut back = vec![0; data.len()];
        file.read_exact_at(&mut back, 4096).unwrap();
        assert_eq!(back, data);
        assert_eq!(file.metadata().unwrap().len(), 4096 + data.len() as u64);
        let mut head = [1u8; 4096];
        file.read_exact_at(&mut head, 0).unwrap();
        assert!(head.iter().all(|&b| b == 0));
    }

    #[test]
    fn uring_write_loops_over_pieces() {
        // Pieces of 1000 bytes stand for short writes: the loop must carry on where the last
        // one stopped.
        let Some(fs) = uring() else { return };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = fs.create(&path).unwrap();
        let data = pattern(10_500);
        fs.write_chunked(&file, &data, 123, 1000).unwrap();
        let mut back = vec![0; data.len()];
        file.read_exact_at(&mut back, 123).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn uring_syncs_succeed() {
        let Some(fs) = uring() else { return };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = fs.create(&path).unwrap();
        fs.fallocate(&file, &path, 1 << 20).unwrap();
        fs.write_at(&file, &path, &pattern(8192), 0).unwrap();
        fs.fsync(&file, &path).unwrap();
        fs.sync_dir(dir.path()).unwrap();
        fs.datasync_range(&file, 0, 8192).unwrap();
        fs.datasync_range(&file, 4096, 0).unwrap();
        fs.datasync_range(&file, 0, u64::from(u32::MAX) + 1)
            .unwrap();
        // The delegated calls work too.
        let to = dir.path().join("g");
        fs.rename(&path, &to).unwrap();
        assert_eq!(fs.read_dir(dir.path()).unwrap(), vec![to.clone()]);
        let reopened = fs.open(&to, false).unwrap();
        fs.fsync(&reopened, &to).unwrap();
        fs.remove(&to).unwrap();
        fs.sync_dir(dir.path()).unwrap();
    }

    #[test]
    fn uring_errors_are_reported_and_the_ring_stays_usable() {
        let Some(fs) = uring() else { return };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = fs.create(&path).unwrap();
        // A write to a file opened read-only fails in the operation: EBADF.
        let read_only = fs.open(&path, false).unwrap();
        let e = fs.write_at(&read_only, &path, b"abc", 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF), "{e}");
        // A descriptor opened with O_PATH cannot be synced: EBADF.
        let o_path = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(&path)
            .unwrap();
        let e = fs.fsync(&o_path, &path).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF), "{e}");
        let e = fs.datasync_range(&o_path, 0, 4096).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF), "{e}");
        // A directory that does not exist: the open fails.
        let e = fs.sync_dir(&dir.path().join("none")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        // The ring goes on.
        fs.write_at(&file, &path, b"abc", 0).unwrap();
        fs.fsync(&file, &path).unwrap();
        fs.datasync_range(&file, 0, 3).unwrap();
        let mut back = [0; 3];
        file.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(&back, b"abc");
        assert!(format!("{fs:?}").contains("idle_rings: 1"), "{fs:?}");
    }

    #[test]
    fn uring_shared_by_threads() {
        let Some(fs) = uring().map(Arc::new) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let fs = Arc::clone(&fs);
                let path = dir.path().join(format!("f{t}"));
                std::thread::spawn(move || {
                    let file = fs.create(&path).unwrap();
                    for i in 0..50u64 {
                        let data = [t as u8 + 1; 512];
                        fs.write_at(&file, &path, &data, i * 512).unwrap();
                        if i % 2 == 0 {
                            fs.fsync(&file, &path).unwrap();
                        } else {
                            fs.datasync_range(&file, i * 512, 512).unwrap();
                        }
                    }
                    let mut back = vec![0; 50 * 512];
                    file.read_exact_at(&mut back, 0).unwrap();
                    assert!(back.iter().all(|&b| b == t as u8 + 1));
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    /// User plus system CPU time of the whole process so far (every thread, the kernel's
    /// io_uring workers included: they are threads of this process), in microseconds.
    fn cpu_us() -> f64 {
        // SAFETY: `rusage` is plain data that zeroes make valid, and `getrusage` writes one.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let r = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
        assert_eq!(r, 0);
        let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
        us(ru.ru_utime) + us(ru.ru_stime)
    }

    /// `pwrite` of 4 KiB + a data sync, 2,000 rounds, on a 64 MiB file whose blocks are
    /// written (zeros, fsynced) beforehand: plain system calls (`pwrite` + `fdatasync`)
    /// against the ring (`IORING_OP_WRITE` + ranged `IORING_OP_FSYNC` with `DATASYNC`), three
    /// times each, alternating. Prints µs and process CPU µs per round. The file goes in
    /// `$URING_BENCH_DIR`, else the crate's `target/` (not `/tmp`, which may be tmpfs).
    ///
    /// `cargo test --lib --features io-uring uring_bench -- --ignored --nocapture`
    #[test]
    #[ignore = "a benchmark: run it explicitly"]
    fn uring_bench_pwrite_datasync() {
        const ROUNDS: u64 = 2000;
        const SIZE: u64 = 64 << 20;
        const PIECE: usize = 4096;
        let base = std::env::var_os("URING_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
        std::fs::create_dir_all(&base).unwrap();
        let dir = tempfile::tempdir_in(&base).unwrap();
        let path = dir.path().join("bench");
        let Some(fs) = uring() else { return };
        let file = fs.create(&path).unwrap();
        fs.fallocate(&file, &path, SIZE).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for off in (0..SIZE).step_by(zeros.len()) {
            file.write_all_at(&zeros, off).unwrap();
        }
        file.sync_all().unwrap();
        let data = pattern(PIECE);
        println!(
            "file {} ({} MiB, blocks written)",
            path.display(),
            SIZE >> 20
        );
        for run in 1..=3 {
            for ring in [false, true] {
                let (t0, c0) = (Instant::now(), cpu_us());
                for i in 0..ROUNDS {
                    let off = (i * PIECE as u64) % SIZE;
                    if ring {
                        fs.write_at(&file, &path, &data, off).unwrap();
                        fs.datasync_range(&file, off, PIECE as u64).unwrap();
                    } else {
                        file.write_all_at(&data, off).unwrap();
                        // SAFETY: a plain syscall on a descriptor `file` keeps open.
                        let r = unsafe { libc::fdatasync(file.as_raw_fd()) };
                        assert_eq!(r, 0, "{}", io::Error::last_os_error());
                    }
                }
                let wall = t0.elapsed().as_secs_f64() * 1e6 / ROUNDS as f64;
                let cpu = (cpu_us() - c0) / ROUNDS as f64;
                let name = if ring {
                    "ring  (Write + Fsync DATASYNC range)"
                } else {
                    "plain (pwrite + fdatasync)          "
                };
                println!("run {run} {name}: {wall:8.1} µs/round, CPU {cpu:6.1} µs/round");
            }
        }
    }
}
