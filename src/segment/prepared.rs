//! A prepared segment file: allocated (durably), mapped and faulted in, not named as a
//! segment yet (`*.seg.tmp`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::MmapRaw;

use super::{map_file, FileOptions, WriteVia};
use crate::error::{Error, Result};
use crate::format::PREPARED_SUFFIX;
use crate::io::{allocate, Fs};

/// A preallocated, mapped file that is not a segment yet (a `*.seg.tmp` file).
#[derive(Debug)]
pub struct PreparedFile {
    pub(super) path: PathBuf,
    pub(super) file: File,
    pub(super) map: MmapRaw,
    pub(super) size: u64,
    pub(super) via: WriteVia,
    pub(super) fs: Arc<dyn Fs>,
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
        let fs = &*opts.fs;
        let file = fs
            .create(&path)
            .map_err(|e| Error::io("create", &path, e))?;
        allocate(fs, &file, &path, 0, size, opts.zero_fill)?;
        fs.fsync(&file, &path)
            .map_err(|e| Error::io("fsync new segment file", &path, e))?;
        let map = map_file(fs, &file, &path, size, true)?;
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
        })
    }

    /// Removes the file (used when a prepared file is not needed).
    pub(crate) fn discard(self) {
        let _ = self.fs.remove(&self.path);
    }
}

/// Faults every page of a fresh map in for writing. The pages hold zeros and stay zeros; they
/// become dirty, which costs nothing extra because the writer dirties them anyway.
fn prefault_for_write(map: &MmapRaw) {
    if map.advise(memmap2::Advice::PopulateWrite).is_ok() {
        return;
    }
    const PAGE: usize = 4096;
    for off in (0..map.len()).step_by(PAGE) {
        // SAFETY: the map is private to this thread until the prepared file is handed over
        // (nobody else can hold a reference into it), `off < len`, and writing a zero over a
        // zero byte changes nothing but the page's fault state.
        unsafe { std::ptr::write_volatile(map.as_mut_ptr().add(off), 0u8) };
    }
}
