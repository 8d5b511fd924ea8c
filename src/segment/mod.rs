//! One segment file: preallocated, mapped, append-only.
//!
//! All `unsafe` that touches mapped memory lives in this module (this file, and
//! `durability.rs` for the msync, write-back and header marks). The rules (see
//! `docs/format.md`, "Invariants") are:
//!
//! * **I1** bytes that a reader may see are never written again while the file is mapped: the
//!   writer only writes at or beyond the published end of the segment, and readers only build
//!   slices below it;
//! * **I2** a mapping outlives every slice borrowed from it: slices borrow from a `&Segment`
//!   that is kept alive by an `Arc<Segment>` inside the reader's snapshot;
//! * **I4** the file is never sparse and never shorter than the map: it is fully allocated
//!   before it is mapped and its length is checked at open.
//!
//! We never create a `&mut [u8]` over the map: writes go through raw pointers, so a `&[u8]`
//! that a reader holds over other bytes of the same map stays valid.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use memmap2::MmapRaw;
use zerocopy::IntoBytes;

use crate::error::{Error, Result};
use crate::format::{
    segment_file_name, RecordHeader, SegmentHeader, FORMAT_VERSION, RECORD_HEADER_SIZE,
    SEALED_MAGIC, SEGMENT_FLAG_RECYCLED, SEGMENT_HEADER_CRC_RANGE, SEGMENT_HEADER_SIZE,
    SEGMENT_MAGIC,
};
use crate::io::{allocate, Fs};
use crate::lock::MapLock;

mod durability;
mod header;
mod mapped;
mod pool;
mod prepared;
pub use header::parse_header;
use header::{random_salt, short_file_reason};
pub(crate) use mapped::is_mapped;
use mapped::{file_id, mapped_files};
pub(crate) use pool::Pool;
#[cfg(test)]
pub(crate) use pool::FRESH_POOL_SUFFIX;
pub(crate) use prepared::PreparedFile;

/// How bytes get into a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteVia {
    /// `memcpy` into the shared map (the fast path).
    Map,
    /// `pwrite` on the file descriptor; the map is only read. For copy-on-write file systems,
    /// where a store into the map that cannot get a block kills the process with SIGBUS
    /// instead of returning ENOSPC.
    Pwrite,
}

/// How a file gets its blocks, how the writer writes it, and through which file system.
#[derive(Debug, Clone)]
pub(crate) struct FileOptions {
    /// How records are written.
    pub via: WriteVia,
    /// Write zeros instead of calling `fallocate` (the fallback for file systems that refuse
    /// it, forced by tests so that both paths are covered).
    pub zero_fill: bool,
    /// Every file-system effect goes through it.
    pub fs: Arc<dyn Fs>,
}

impl FileOptions {
    /// The real file system, records copied into the map, `fallocate`: what read-only tools
    /// use (they never write).
    pub(crate) fn read_only() -> Self {
        FileOptions {
            via: WriteVia::Map,
            zero_fill: false,
            fs: crate::io::real(),
        }
    }
}

/// A mapped segment file.
#[derive(Debug)]
pub struct Segment {
    path: PathBuf,
    seq: u64,
    salt: u32,
    /// Format version from the header (records are checksummed by it).
    version: u32,
    /// A recycled file: bytes after the records may be a previous life's (see
    /// [`SEGMENT_FLAG_RECYCLED`]).
    recycled: bool,
    /// Size the header gives (the size of every offset computation).
    size: u64,
    /// Bytes mapped: `size`, or less for a newest segment that a crash left short (then the
    /// segment is only read until recovery extends it).
    map: MmapRaw,
    via: WriteVia,
    fs: Arc<dyn Fs>,
    writable: bool,
    /// Bytes `[SEGMENT_HEADER_SIZE, synced)` are known durable. Only the flusher and open
    /// update it.
    synced: AtomicU64,
    /// The sealed mark: the end it names, or 0 when there is none. Read from the header at
    /// open and set by [`Segment::mark_sealed`], so nobody reads header bytes from the map
    /// while the flusher may write them.
    sealed_end: AtomicU64,
    /// The synced mark last written into the header (bytes 56..64), or read from it at open:
    /// every record below it was durable when it was written (0: none). Only the flusher
    /// (or recovery, before it exists) writes it.
    synced_mark: AtomicU64,
    /// The end a closed synced mark named when the file was opened: the previous writer
    /// closed cleanly with every byte it wrote below it (`docs/format.md`, "The closed
    /// mark"). Never changes; the header's mark itself may be rewritten since.
    closed_end: Option<u64>,
    /// Blocks below this offset are known written, or have been sent to write-back ahead of
    /// the writer (see [`Segment::convert_ahead`]); blocks above it may be reserved only.
    converted: AtomicU64,
    /// The file descriptor, only while it is needed (the active segment): the map stays
    /// valid without it, so a log with thousands of segments does not hold thousands of fds.
    /// Reopened by path when needed again.
    file: Mutex<Option<File>>,
    /// (device, inode): this segment's entry in the registry of mapped files.
    id: (u64, u64),
    /// This process's mapping lock on the directory, held while the map lives (declared
    /// after `map`, so dropped after it): another process does not rewrite the file meanwhile.
    _map_lock: MapLock,
}

impl Segment {
    /// Registers a mapping of file `id` (see [`is_mapped`]).
    fn register(id: (u64, u64)) -> (u64, u64) {
        *mapped_files().entry(id).or_insert(0) += 1;
        id
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        let mut m = mapped_files();
        if let Some(n) = m.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.id);
            }
        }
    }
}

/// The directory a segment or pooled file at `path` is in (whose `LOCK` file carries the
/// mapping lock).
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The one place where a file is mapped. The caller holds a [`MapLock`] of the file's
/// directory for as long as the map lives.
fn map_file(fs: &dyn Fs, file: &File, path: &Path, size: u64, writable: bool) -> Result<MmapRaw> {
    let len = usize::try_from(size)
        .map_err(|_| Error::InvalidConfig(format!("segment size {size} does not fit in memory")))?;
    // SAFETY: mapping is unsafe because another process could change or shorten the file
    // while it is mapped. The directory is locked against other instances of this library
    // (byte 0 of `LOCK` while a `Store` or tool works in it, and the caller's `MapLock` on
    // byte 1 for as long as the map lives, which keeps other processes' preparers from
    // rewriting it: invariant I6),
    // the file has been allocated to at least `size` bytes before this call (I4), and
    // `MmapRaw` never hands out references: all access goes through the functions below, whose
    // own SAFETY comments state the rules. Files changed behind our back by other programs are
    // outside what we can defend against (documented in docs/format.md).
    unsafe { fs.map(file, path, len, writable) }.map_err(|e| Error::io("mmap", path, e))
}

impl Segment {
    /// Turns a prepared file into segment `seq` in `dir`: renames it and writes the header.
    /// The caller must fsync the directory before acknowledging anything written into it.
    /// On error nothing is left behind: the prepared file, or the renamed one, is removed (a
    /// recycled file whose rename failed stays in the pool).
    ///
    /// A recycled file arrives with a blank header, durably (see [`PreparedFile::recycle`]):
    /// until the new header is durable, a power cut leaves a blank-header file under the new
    /// name, which recovery drops as never written, exactly like a fresh file.
    pub(crate) fn install(prepared: PreparedFile, dir: &Path, seq: u64) -> Result<Self> {
        let path = dir.join(segment_file_name(seq));
        if let Err(e) = prepared.fs.rename(&prepared.path, &path) {
            prepared.discard();
            return Err(Error::io("rename", &path, e));
        }
        let id = match file_id(&prepared.file, &path) {
            Ok(id) => id,
            Err(e) => {
                let _ = prepared.fs.remove(&path);
                return Err(e);
            }
        };
        let salt = random_salt(seq, prepared.old_salt);
        let recycled = prepared.recycled;
        let mut header = SegmentHeader {
            magic: SEGMENT_MAGIC,
            version: FORMAT_VERSION.into(),
            salt: salt.into(),
            seq: seq.into(),
            segment_size: prepared.size.into(),
            flags: if recycled { SEGMENT_FLAG_RECYCLED } else { 0 }.into(),
            header_crc: 0.into(),
            sealed_magic: 0.into(),
            sealed_end: 0.into(),
            synced_end: 0.into(),
            synced_check: 0.into(),
        };
        header.header_crc = crc32c::crc32c(&header.as_bytes()[SEGMENT_HEADER_CRC_RANGE]).into();
        let seg = Segment {
            path,
            seq,
            salt,
            version: FORMAT_VERSION,
            recycled,
            size: prepared.size,
            map: prepared.map,
            via: prepared.via,
            fs: prepared.fs,
            writable: true,
            synced: AtomicU64::new(0),
            sealed_end: AtomicU64::new(0),
            synced_mark: AtomicU64::new(0),
            closed_end: None,
            converted: AtomicU64::new(prepared.written),
            file: Mutex::new(Some(prepared.file)),
            id: Segment::register(id),
            _map_lock: prepared.map_lock,
        };
        // One `pwrite`, also when records go in through the map: a copy into the map takes
        // several stores, and a process killed between them would leave the start of a header
        // over the blank one, which no open could read. The kernel copies these 64 bytes (one
        // page) into the page cache the map shares in one piece, so a kill leaves the blank
        // header or the whole new one. No reader can hold a slice into the segment yet (I1).
        let written = seg
            .with_file(|f| seg.fs.write_at(f, &seg.path, header.as_bytes(), 0))
            .map_err(|e| Error::io("write header", &seg.path, e));
        if let Err(e) = written {
            let _ = seg.fs.remove(&seg.path);
            return Err(e);
        }
        Ok(seg)
    }

    /// Opens and maps an existing segment file, checking its header.
    ///
    /// The returned segment's records are not validated yet (that is recovery's job). A
    /// segment opened with `writable == false` is mapped read-only: only tools that never write
    /// (stat, verify, dump) open it that way, and nothing may call the write functions on it.
    ///
    /// `allow_short`: a file shorter than its header's segment size is mapped as far as it
    /// goes instead of refused (only for the newest segment, which a crash may leave short;
    /// recovery keeps its valid prefix and extends it before writing).
    pub(crate) fn open(
        path: &Path,
        seq: u64,
        writable: bool,
        opts: &FileOptions,
        allow_short: bool,
    ) -> Result<Self> {
        let file = opts
            .fs
            .open(path, writable)
            .map_err(|e| Error::io("open", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat", path, e))?
            .len();
        let mut raw = [0u8; SEGMENT_HEADER_SIZE];
        if len < SEGMENT_HEADER_SIZE as u64 {
            return Err(Error::corrupt(
                path,
                len,
                "file shorter than a segment header",
            ));
        }
        file.read_exact_at(&mut raw, 0)
            .map_err(|e| Error::io("read header", path, e))?;
        let header = parse_header(path, &raw)?;
        if header.seq.get() != seq {
            return Err(Error::corrupt(
                path,
                16,
                format!(
                    "header names segment {} but the file name says {seq}",
                    header.seq
                ),
            ));
        }
        let size = header.segment_size.get();
        if !(crate::format::MIN_SEGMENT_SIZE..=crate::format::MAX_SEGMENT_SIZE).contains(&size)
            || size % crate::format::RECORD_ALIGN as u64 != 0
        {
            return Err(Error::corrupt(
                path,
                24,
                format!("segment header gives an impossible segment size {size}"),
            ));
        }
        if len < size && !allow_short {
            return Err(Error::corrupt(path, len, short_file_reason(len, size)));
        }
        let map_lock = MapLock::acquire(dir_of(path))?;
        let map = map_file(&*opts.fs, &file, path, size.min(len), writable)?;
        let id = file_id(&file, path)?;
        let sealed = header.sealed_magic.get() == SEALED_MAGIC;
        let mark = header::parse_synced_mark(&header);
        Ok(Segment {
            path: path.to_path_buf(),
            seq,
            salt: header.salt.get(),
            version: header.version.get(),
            recycled: header.flags.get() & SEGMENT_FLAG_RECYCLED != 0,
            size,
            map,
            via: opts.via,
            fs: opts.fs.clone(),
            writable,
            synced: AtomicU64::new(0),
            sealed_end: AtomicU64::new(if sealed { header.sealed_end.get() } else { 0 }),
            synced_mark: AtomicU64::new(mark.map_or(0, |m| m.end)),
            closed_end: mark.filter(|m| m.closed).map(|m| m.end),
            // Unknown; taken as written, so nothing is sent ahead (a hint only).
            converted: AtomicU64::new(size),
            // Closed now: the map stays valid, and only the active segment needs an fd.
            file: Mutex::new(None),
            id: Segment::register(id),
            _map_lock: map_lock,
        })
    }

    /// Bytes mapped (the file's length when it is short).
    pub(crate) fn mapped_len(&self) -> u64 {
        self.map.len() as u64
    }

    /// Whether the file is shorter than its header says (a crash-shortened newest segment).
    pub(crate) fn is_short(&self) -> bool {
        (self.map.len() as u64) < self.size
    }

    /// Gives a short segment its full size again (durably, like a new file) and maps it
    /// whole. Recovery calls it before the writer exists.
    pub(crate) fn extend_to_full(self, opts: &FileOptions) -> Result<Self> {
        if !self.is_short() {
            return Ok(self);
        }
        let fs = &*opts.fs;
        let file = fs
            .open(&self.path, true)
            .map_err(|e| Error::io("open", &self.path, e))?;
        allocate(
            fs,
            &file,
            &self.path,
            self.mapped_len(),
            self.size,
            opts.zero_fill,
        )?;
        fs.fsync(&file, &self.path)
            .map_err(|e| Error::io("fsync extended segment", &self.path, e))?;
        let sealed = self.sealed_end();
        let reopened = Segment::open(&self.path, self.seq, true, opts, false)?;
        debug_assert_eq!(reopened.sealed_end(), sealed);
        Ok(reopened)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The salt and format version its records are checksummed with.
    pub fn seed(&self) -> crate::record::Seed {
        crate::record::Seed {
            salt: self.salt,
            version: self.version,
        }
    }

    /// Whether the file is a recycled segment: bytes after its records may be a previous
    /// life's, so a non-zero byte there is not a torn write.
    pub fn is_recycled(&self) -> bool {
        self.recycled
    }

    /// File size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The sealed mark read at open (or written since): `Some(end)` when every record up to
    /// `end` was durable when the mark was written.
    pub fn sealed_end(&self) -> Option<u64> {
        match self.sealed_end.load(Ordering::Acquire) {
            0 => None,
            end => Some(end),
        }
    }

    /// Runs `f` on the file descriptor, reopening the file if it was closed.
    fn with_file<R>(&self, f: impl FnOnce(&File) -> std::io::Result<R>) -> std::io::Result<R> {
        let mut g = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            *g = Some(self.fs.open(&self.path, self.writable)?);
        }
        match g.as_ref() {
            Some(file) => f(file),
            None => Err(std::io::Error::other("file descriptor missing")),
        }
    }

    /// Closes the file descriptor (a sealed segment needs none; the map stays valid).
    pub(crate) fn release_fd(&self) {
        let mut g = self.file.lock().unwrap_or_else(|e| e.into_inner());
        *g = None;
    }

    /// Whether the segment currently holds a file descriptor.
    #[cfg(test)]
    #[allow(dead_code)]
    pub(crate) fn holds_fd(&self) -> bool {
        self.file.lock().map(|g| g.is_some()).unwrap_or(true)
    }

    /// Borrows `len` bytes at `offset`.
    ///
    /// # Safety
    /// The range must be inside the map and must never be written again while the returned
    /// slice lives: it is published (below the writer's published end) or the caller is the only
    /// user of the segment (recovery, before any writer exists) and drops the slice before
    /// writing.
    pub(crate) unsafe fn bytes(&self, offset: usize, len: usize) -> &[u8] {
        debug_assert!(offset.checked_add(len).is_some_and(|e| e <= self.map.len()));
        // SAFETY: the caller guarantees bounds and immutability for the slice's lifetime; the
        // map lives as long as `self` (I2).
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(offset), len) }
    }

    /// Borrows `len` bytes at `offset` for writing: the room a received batch is read into
    /// (`store::receive`). Records are copied into the map only (`WriteVia::Map`).
    ///
    /// # Safety
    /// The range must be inside the map, past the writer's published end (I1: no reader holds
    /// a slice over it, and only the writer's thread writes there), and nothing else may read
    /// or write it while the returned slice lives.
    #[allow(clippy::mut_from_ref)] // the map is shared memory; the caller's promise above
    pub(crate) unsafe fn bytes_mut(&self, offset: usize, len: usize) -> &mut [u8] {
        debug_assert!(offset.checked_add(len).is_some_and(|e| e <= self.map.len()));
        debug_assert!(self.via == WriteVia::Map);
        // SAFETY: the caller guarantees bounds and exclusive use for the slice's lifetime; the
        // map lives as long as `self` (I2) and is mapped writable for a writer's segment.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(offset), len) }
    }

    /// The little-endian `u32` at `offset` (a record's CRC field), copied out.
    ///
    /// # Safety
    /// As for [`Segment::bytes`], for `offset..offset + 4`: written, and not written while it
    /// is read (the writes that filled it happen before this call).
    pub(crate) unsafe fn read_u32(&self, offset: usize) -> u32 {
        // SAFETY: forwarded to the caller.
        let b = unsafe { self.bytes(offset, 4) };
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The whole mapped file as one slice, for recovery's scan.
    ///
    /// # Safety
    /// Same as [`Segment::bytes`]: only while nothing writes the segment.
    pub(crate) unsafe fn all_bytes(&self) -> &[u8] {
        // SAFETY: forwarded to the caller.
        unsafe { self.bytes(0, self.map.len()) }
    }

    /// Copies `data` into the segment at `offset`: into the map, or with `pwrite`
    /// ([`WriteVia::Pwrite`]; the shared map shows the new bytes all the same). Only the
    /// `pwrite` path can fail (ENOSPC on a full copy-on-write file system, EIO).
    ///
    /// # Safety
    /// `offset..offset + data.len()` must be inside the map and not yet published: no reader
    /// may hold or build a slice over it until the writer publishes it (I1). One thread writes
    /// the range: the writer, recovery before the writer exists, or the thread holding the
    /// reservation of that range (a shared log's concurrent append, `store::reserve`); ranges
    /// written at the same time by different threads never overlap.
    pub(crate) unsafe fn write_at(&self, offset: usize, data: &[u8]) -> Result<()> {
        debug_assert!(offset
            .checked_add(data.len())
            .is_some_and(|e| e <= self.map.len()));
        match self.via {
            // SAFETY: bounds are the caller's promise; the destination is raw mapped memory
            // that no reference covers (caller's promise), and the source is a distinct
            // heap/stack slice.
            WriteVia::Map => unsafe {
                std::ptr::copy_nonoverlapping(
                    data.as_ptr(),
                    self.map.as_mut_ptr().add(offset),
                    data.len(),
                );
                Ok(())
            },
            WriteVia::Pwrite => self
                .with_file(|f| self.fs.write_at(f, &self.path, data, offset as u64))
                .map_err(|e| Error::io("write", &self.path, e)),
        }
    }

    /// Copies a record into the segment at `offset`: its header, then the parts of its body
    /// back to back (a record's padding is not written: the bytes after a record are zeros,
    /// or old bytes of a recycled file). One bounds check and one dispatch for the record;
    /// the 24-byte header is a fixed-size copy.
    ///
    /// # Safety
    /// As for [`Segment::write_at`], for `offset..offset + 24 + body length`.
    #[inline]
    pub(crate) unsafe fn write_record(
        &self,
        offset: usize,
        header: &RecordHeader,
        body: [&[u8]; 2],
    ) -> Result<()> {
        let [a, b] = body;
        debug_assert!(offset
            .checked_add(RECORD_HEADER_SIZE + a.len() + b.len())
            .is_some_and(|e| e <= self.map.len()));
        match self.via {
            // SAFETY: as for `write_at`: the caller promises that the record's range is inside
            // the map and unpublished; the sources are distinct memory (the header is on the
            // caller's stack, the body parts are the caller's slices, never this map's
            // unpublished bytes).
            WriteVia::Map => unsafe {
                let dst = self.map.as_mut_ptr().add(offset);
                std::ptr::copy_nonoverlapping(header.as_bytes().as_ptr(), dst, RECORD_HEADER_SIZE);
                let dst = dst.add(RECORD_HEADER_SIZE);
                std::ptr::copy_nonoverlapping(a.as_ptr(), dst, a.len());
                std::ptr::copy_nonoverlapping(b.as_ptr(), dst.add(a.len()), b.len());
                Ok(())
            },
            // SAFETY: sub-ranges of the caller's range.
            WriteVia::Pwrite => unsafe {
                self.write_at(offset, header.as_bytes())?;
                self.write_at(offset + RECORD_HEADER_SIZE, a)?;
                self.write_at(offset + RECORD_HEADER_SIZE + a.len(), b)
            },
        }
    }

    /// Fills `offset..offset+len` with zeros.
    ///
    /// # Safety
    /// As for [`Segment::write_at`].
    pub(crate) unsafe fn zero_at(&self, offset: usize, len: usize) -> Result<()> {
        debug_assert!(offset.checked_add(len).is_some_and(|e| e <= self.map.len()));
        match self.via {
            // SAFETY: as for `write_at`.
            WriteVia::Map => unsafe {
                std::ptr::write_bytes(self.map.as_mut_ptr().add(offset), 0, len);
                Ok(())
            },
            WriteVia::Pwrite => {
                let zeros = vec![0u8; len.min(1 << 20)];
                let mut at = offset;
                let end = offset + len;
                while at < end {
                    let n = zeros.len().min(end - at);
                    // SAFETY: a sub-range of the caller's range.
                    unsafe { self.write_at(at, &zeros[..n])? };
                    at += n;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
pub(crate) fn test_opts() -> FileOptions {
    FileOptions::read_only()
}

#[cfg(test)]
mod tests;
