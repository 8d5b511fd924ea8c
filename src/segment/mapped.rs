//! The process-wide registry of mapped files: which files live [`super::Segment`]s map.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::Mutex;

use crate::error::{Error, Result};

/// Files that live [`super::Segment`]s of this process map, by (device, inode), with how many.
/// A pooled file is rewritten only when it is not in here (invariant I6), whichever `Store`
/// of the process mapped it: a view can outlive its `Store`, and a later `Store` on the same
/// directory finds the file in the pool. Other processes' maps are kept from rewrites by the
/// directory's mapping lock ([`crate::lock::MapLock`]), which every segment also holds.
static MAPPED: Mutex<BTreeMap<(u64, u64), usize>> = Mutex::new(BTreeMap::new());

pub(super) fn mapped_files() -> std::sync::MutexGuard<'static, BTreeMap<(u64, u64), usize>> {
    MAPPED.lock().unwrap_or_else(|e| e.into_inner())
}

/// The (device, inode) of an open file.
pub(super) fn file_id(file: &File, path: &Path) -> Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = file.metadata().map_err(|e| Error::io("stat", path, e))?;
    Ok((m.dev(), m.ino()))
}

/// Whether a live [`super::Segment`] of this process maps `file`.
pub(crate) fn is_mapped(file: &File, path: &Path) -> Result<bool> {
    let id = file_id(file, path)?;
    Ok(mapped_files().get(&id).is_some_and(|&n| n > 0))
}
