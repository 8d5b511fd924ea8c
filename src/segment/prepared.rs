//! A prepared segment file: allocated (durably), mapped and faulted in, not named as a
//! segment yet (`*.seg.tmp`, or a recycled `*.pool` file).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::MmapRaw;
use zerocopy::FromBytes;

use super::{dir_of, map_file, FileOptions, WriteVia};
use crate::error::{Error, Result};
use crate::format::{SegmentHeader, PREPARED_SUFFIX, SEGMENT_HEADER_SIZE, SEGMENT_MAGIC};
use crate::io::{allocate, write_blocks, Fs};
use crate::lock::MapLock;

/// A preallocated, mapped file that is not a segment yet: a fresh `*.seg.tmp` file, or a
/// recycled `*.pool` file whose header was blanked.
#[derive(Debug)]
pub struct PreparedFile {
    pub(super) path: PathBuf,
    pub(super) file: File,
    pub(super) map: MmapRaw,
    pub(super) size: u64,
    pub(super) via: WriteVia,
    pub(super) fs: Arc<dyn Fs>,
    /// A file from the pool: its bytes after the header may be a previous life's.
    pub(super) recycled: bool,
    /// The salt of that previous life, which the new one must not reuse.
    pub(super) old_salt: Option<u32>,
    /// Taken from the pool (kept there, under its pool name, if given up).
    from_pool: bool,
    /// Blocks below this offset are known *written* (not only reserved): the whole file for
    /// a recycled one or one allocated with zeros, as far as the zeros went for one the
    /// preparer was writing, 0 for a file whose blocks were only `fallocate`d.
    pub(super) written: u64,
    /// This process's mapping lock on the directory (after `map`: dropped after it); moves
    /// into the segment made of the file.
    pub(super) map_lock: MapLock,
}

impl PreparedFile {
    /// Creates `dir/<token>.seg.tmp` of `size` bytes with real blocks and maps it, faulting
    /// every page in *for writing* (`MADV_POPULATE_WRITE`, or a write to each page where the
    /// kernel lacks it), so the writer never takes a page fault in this segment. On error the
    /// file is removed.
    ///
    /// The allocation (blocks, zeros and size) is made durable here, before the file can be
    /// renamed into the log: a power cut must never leave a named segment short or empty.
    ///
    /// With [`WriteVia::Pwrite`] the pages are faulted in for reading only: a write fault is
    /// what raises SIGBUS on a full copy-on-write file system.
    pub(crate) fn create(dir: &Path, token: u64, size: u64, opts: &FileOptions) -> Result<Self> {
        let path = dir.join(format!("{token:020}{PREPARED_SUFFIX}"));
        let made = Self::create_at(&path, size, opts);
        if made.is_err() {
            let _ = opts.fs.remove(&path);
        }
        made
    }

    fn create_at(path: &Path, size: u64, opts: &FileOptions) -> Result<Self> {
        let path = path.to_path_buf();
        let file = reserve(&path, size, opts)?;
        // Reserved only, unless the allocation wrote zeros.
        let written = if opts.zero_fill { size } else { 0 };
        Self::mapped(path, file, size, opts, false, None, written)
    }

    /// [`PreparedFile::create`], with the blocks *written* (zeros, synced) before the file is
    /// mapped, as a pooled file's are: the writer then only overwrites written blocks, so no
    /// `fdatasync` of this segment has to commit extent conversions. On ext4 such a commit is
    /// one more synchronous write (the inode's block) after every sync's data: it halves the
    /// rate of small durable appends, and costs a durable round of many groups a fifth to a
    /// third of its time. A new log uses it for its first segment, and the preparer for every
    /// new file when recycling is on (the file is then reused for as long as the log lives).
    ///
    /// `stop` is asked between chunks: a writer waiting for the file gets it at once, with
    /// the rest of its blocks reserved only. `paced` keeps at most one 64 KiB piece in write-back
    /// at a time (see [`write_blocks`]), for a file made beside a running writer.
    pub(crate) fn create_written(
        dir: &Path,
        token: u64,
        size: u64,
        opts: &FileOptions,
        stop: &dyn Fn() -> bool,
        paced: bool,
    ) -> Result<Self> {
        let path = dir.join(format!("{token:020}{PREPARED_SUFFIX}"));
        let made = (|| {
            let file = reserve(&path, size, opts)?;
            let written = write_blocks(&*opts.fs, &file, &path, size, stop, paced)?;
            opts.fs
                .fsync(&file, &path)
                .map_err(|e| Error::io("fsync new segment file", &path, e))?;
            Self::mapped(path.clone(), file, size, opts, false, None, written)
        })();
        if made.is_err() {
            let _ = opts.fs.remove(&path);
        }
        made
    }

    /// Makes a new pooled file at `path` (a [`super::Pool::new_path`] name) whose blocks are
    /// *written*, not only reserved: the allocation is made durable first (so the file is a
    /// valid pooled file from then on, whatever happens), then zeros are written over it and
    /// synced. `stop` is asked between chunks: a file stopped early is still a valid pooled
    /// file (its rest reserved, not written). On error the file is removed.
    pub(crate) fn write_pool_file(
        path: &Path,
        size: u64,
        opts: &FileOptions,
        stop: &dyn Fn() -> bool,
    ) -> Result<()> {
        let made = (|| {
            let file = reserve(path, size, opts)?;
            if write_blocks(&*opts.fs, &file, path, size, stop, true)? == size {
                opts.fs
                    .fsync(&file, path)
                    .map_err(|e| Error::io("fsync pooled file", path, e))?;
            }
            Ok(())
        })();
        if made.is_err() {
            let _ = opts.fs.remove(path);
        }
        made
    }

    /// Makes the pooled file at `path` ready for reuse: checks its size, blanks its header
    /// and syncs that, then maps and prefaults it. The caller guarantees that nothing maps
    /// the file any more (invariant I6: a shared mapping would show every rewrite).
    ///
    /// Crash points: the file keeps its pool name throughout, so recovery never reads it as
    /// data. The blank header is durable before the writer can rename the file into the log,
    /// so a power cut after that rename leaves either a blank-header file (never written:
    /// dropped) or the new header; never the previous life's header under a new name.
    ///
    /// On error the file is left as it is; the caller removes it.
    pub(crate) fn recycle(path: &Path, size: u64, opts: &FileOptions) -> Result<Self> {
        let fs = &*opts.fs;
        let file = fs
            .open(path, true)
            .map_err(|e| Error::io("open pooled file", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat", path, e))?
            .len();
        if len != size {
            return Err(Error::InvalidConfig(format!(
                "pooled file {} is {len} bytes, segments are {size}",
                path.display()
            )));
        }
        let mut raw = [0u8; SEGMENT_HEADER_SIZE];
        file.read_exact_at(&mut raw, 0)
            .map_err(|e| Error::io("read header", path, e))?;
        let old_salt = SegmentHeader::read_from_bytes(&raw[..])
            .ok()
            .filter(|h| h.magic == SEGMENT_MAGIC)
            .map(|h| h.salt.get());
        fs.write_at(&file, path, &[0u8; SEGMENT_HEADER_SIZE], 0)
            .map_err(|e| Error::io("blank header", path, e))?;
        // A pooled file the preparer was making when the power went off may have its size
        // without all its blocks: `fallocate` fills any hole (a no-op otherwise), and the
        // fsync below makes that durable too (I4: never map a sparse file).
        allocate(fs, &file, path, size, size, false)?;
        fs.fsync(&file, path)
            .map_err(|e| Error::io("fsync pooled file", path, e))?;
        // Every pooled file may hold records after the header: a purged segment its previous
        // life, and even a `*.fresh.pool` file the preparer wrote as zeros (once installed,
        // its pages can reach the disk before its rename does, and a power cut then leaves
        // records under the fresh pool name). So the new segment is always flagged recycled:
        // the name is never trusted to mean "zeros only".
        Self::mapped(path.to_path_buf(), file, size, opts, true, old_salt, size)
    }

    fn mapped(
        path: PathBuf,
        file: File,
        size: u64,
        opts: &FileOptions,
        recycled: bool,
        old_salt: Option<u32>,
        written: u64,
    ) -> Result<Self> {
        let from_pool = path
            .to_str()
            .is_some_and(|p| p.ends_with(crate::format::POOL_SUFFIX));
        let map_lock = MapLock::acquire(dir_of(&path))?;
        let map = map_file(&*opts.fs, &file, &path, size, true)?;
        match opts.via {
            WriteVia::Map => prefault_for_write(&map),
            WriteVia::Pwrite => {
                let _ = map.advise(memmap2::Advice::PopulateRead);
            }
        }
        Ok(PreparedFile {
            path,
            file,
            map,
            size,
            via: opts.via,
            fs: opts.fs.clone(),
            recycled,
            old_salt,
            from_pool,
            written,
            map_lock,
        })
    }

    /// Gives the file up: a new `*.seg.tmp` file is removed; one from the pool stays in the
    /// directory under its pool name (blank header), where the next open finds it.
    pub(crate) fn discard(self) {
        if !self.from_pool {
            let _ = self.fs.remove(&self.path);
        }
    }
}

/// Creates `path` with `size` bytes of real blocks, durably (blocks, size).
fn reserve(path: &Path, size: u64, opts: &FileOptions) -> Result<File> {
    let fs = &*opts.fs;
    let file = fs.create(path).map_err(|e| Error::io("create", path, e))?;
    allocate(fs, &file, path, 0, size, opts.zero_fill)?;
    fs.fsync(&file, path)
        .map_err(|e| Error::io("fsync new segment file", path, e))?;
    Ok(file)
}

/// Faults every page of a map in for writing, so the writer takes no fault in it. A fresh
/// map's pages hold zeros and stay zeros; a recycled file's keep their bytes. They become
/// dirty, which costs nothing extra because the writer dirties them anyway.
///
/// Pages not in the page cache come in one page each (`MADV_RANDOM` while populating, so no
/// read-ahead brings them as large folios): a page dirtied through a shared map marks its
/// whole folio dirty, and every small `msync` would then write the whole folio back.
fn prefault_for_write(map: &MmapRaw) {
    let _ = map.advise(memmap2::Advice::Random);
    let populated = map.advise(memmap2::Advice::PopulateWrite).is_ok();
    let _ = map.advise(memmap2::Advice::Normal);
    if populated {
        return;
    }
    const PAGE: usize = 4096;
    for off in (0..map.len()).step_by(PAGE) {
        // SAFETY: the map is private to this thread until the prepared file is handed over
        // (nobody else can hold a reference into it: a fresh file, or a pooled one that no
        // mapping holds any more), `off < len`, and writing a byte's own value back changes
        // nothing but the page's fault state.
        unsafe {
            let p = map.as_mut_ptr().add(off);
            std::ptr::write_volatile(p, std::ptr::read_volatile(p));
        }
    }
}
