//! [`Config`]: how a [`super::Store`] is set up, and the checks made on it at open.

use crate::error::{Error, Result};
use crate::format::{
    record_size, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE, RECORD_ALIGN, RECORD_HEADER_SIZE,
    SEGMENT_HEADER_SIZE,
};
use crate::recovery::RecoveryMode;
use crate::recovery::{self, checkpoint_len};
use crate::segment::WriteVia;

/// How records get into segment files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WriteMode {
    /// [`WriteMode::Pwrite`] on copy-on-write file systems (btrfs, ZFS, bcachefs, detected
    /// with `statfs`), [`WriteMode::Map`] everywhere else (default).
    #[default]
    Auto,
    /// Copy records into the shared map. The fastest path; on a file system that needs new
    /// blocks to rewrite a page (copy-on-write), a full disk would kill the process with
    /// SIGBUS instead of returning an error, so `Auto` avoids it there.
    Map,
    /// Write records with `pwrite`; a full disk is a clean `No space left on device` error.
    /// Reads still borrow from the map (the page cache is shared).
    Pwrite,
}

/// How new segment files get their blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Allocation {
    /// `fallocate`, and zeros written where the file system refuses it (default).
    #[default]
    Auto,
    /// Always write zeros: the fallback path, forced (tests use it so that both allocation
    /// paths are covered on every machine).
    ZeroFill,
}

/// How the flush thread makes data durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FlushIo {
    /// Plain blocking system calls (`msync`, `fdatasync`, `fsync`) on the flush thread
    /// (default).
    #[default]
    Threads,
    /// The syncs, directory fsyncs and `pwrite`s through one io_uring ring (Linux, feature
    /// `io-uring`). Where the kernel refuses io_uring (too old, `kernel.io_uring_disabled`, a
    /// seccomp filter) or the feature is off, the log opens with [`FlushIo::Threads`] and
    /// [`Store::flush_io`](super::Store::flush_io) says why. Measured on a virtio disk it is
    /// slower than the threads, with more CPU per sync (`docs/benchmarks.md`).
    IoUring,
}

impl FlushIo {
    /// Whether this back end can be used here: `Err` says why not (the kernel's answer, or
    /// a build without the feature).
    pub fn available(self) -> std::result::Result<(), String> {
        match crate::io::for_flush_io(self) {
            (_, _, Some(why)) => Err(why),
            _ => Ok(()),
        }
    }
}

/// How a [`Store`](super::Store) is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// Size of each segment file in bytes (default 64 MiB). Between 4 KiB and 4 GiB, a multiple
    /// of 8. The meta values (copied into every segment's checkpoint) may use at most a
    /// quarter of one, and every segment keeps that room for them, so an entry may be at most
    /// [`Config::max_payload`] bytes.
    pub segment_size: u64,
    /// What recovery does with corruption (default: refuse to open).
    pub recovery_mode: RecoveryMode,
    /// Prepare the next segment file on a background thread (default true).
    pub prepare_ahead: bool,
    /// How records are written (default [`WriteMode::Auto`]).
    pub write_mode: WriteMode,
    /// How new segment files get their blocks (default [`Allocation::Auto`]).
    pub allocation: Allocation,
    /// How many purged segment files are kept for reuse (default 2; 0 disables recycling).
    ///
    /// A purged segment's file is renamed into this pool (`<token>.pool`, a name recovery
    /// never reads as data) instead of being deleted, and the preparer reuses it for a later
    /// segment once no reader's view maps it any more: its blocks are already written, so
    /// writing and syncing into it costs no block allocation or extent conversion. While
    /// recycling is on, a new segment file (the first one, and any the pool cannot supply)
    /// also gets its blocks *written* with zeros on the preparer thread, once for the file's
    /// life, instead of only reserved, and when the pool is empty the preparer uses its idle
    /// time (while the writer has the next file in hand) to make such a pooled file ahead
    /// (not on copy-on-write file systems, see [`WriteMode::Auto`], where a rewrite takes new
    /// blocks anyway). With 0, new files are only reserved: each sync then sends the next
    /// mebibyte ahead of it to write-back, so that their conversion is committed once per
    /// mebibyte. Disk use: the live segments, at most this many pooled files, and the
    /// prepared file(s). Pooled files found at open are kept up to this number (the rest are
    /// removed).
    pub segment_pool: usize,
    /// The compaction hint: [`Store::needs_compaction`](super::Store::needs_compaction) says
    /// yes once the log's live segment files hold this many bytes
    /// ([`Store::log_bytes`](super::Store::log_bytes)). `None`: never. Default 10 GiB (as
    /// raft-engine's purge threshold). Only a hint: the log never compacts on its own.
    pub compaction_threshold: Option<u64>,
    /// How the flush thread makes data durable (default [`FlushIo::Threads`]).
    pub flush_io: FlushIo,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            segment_size: 64 << 20,
            recovery_mode: RecoveryMode::Strict,
            prepare_ahead: true,
            write_mode: WriteMode::Auto,
            allocation: Allocation::Auto,
            segment_pool: 2,
            compaction_threshold: Some(10 << 30),
            flush_io: FlushIo::Threads,
        }
    }
}

impl Config {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<()> {
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&self.segment_size)
            || self.segment_size % RECORD_ALIGN as u64 != 0
        {
            return Err(Error::InvalidConfig(format!(
                "segment_size {} must be a multiple of {RECORD_ALIGN} between {MIN_SEGMENT_SIZE} and {MAX_SEGMENT_SIZE}",
                self.segment_size
            )));
        }
        Ok(())
    }

    /// The most bytes the meta values may take in a checkpoint body (the meta budget): a
    /// quarter of a segment.
    pub(crate) fn meta_limit(&self) -> usize {
        usize::try_from(self.segment_size / 4).unwrap_or(usize::MAX)
    }

    /// The largest payload an entry may have: what a new segment holds after its header and
    /// a checkpoint whose meta values use their whole budget (a quarter of a segment). It
    /// depends on `segment_size` alone, so logs with the same configuration accept the same
    /// entries whatever meta values each holds. Zero for a `segment_size` that
    /// [`Config::validate`] refuses.
    ///
    /// ```
    /// use raft_mmap_log::Config;
    /// let config = Config { segment_size: 64 << 10, ..Config::default() };
    /// // 65536 - 64 (segment header) - (24 + 16384) (checkpoint) - 24 (record header)
    /// assert_eq!(config.max_payload(), 49_040);
    /// ```
    pub fn max_payload(&self) -> usize {
        if self.validate().is_err() {
            return 0;
        }
        max_payload_in(self.segment_size, self.meta_limit())
    }

    /// How this configuration writes into files in `dir`.
    pub(crate) fn write_via(&self, dir: &std::path::Path) -> WriteVia {
        match self.write_mode {
            WriteMode::Map => WriteVia::Map,
            WriteMode::Pwrite => WriteVia::Pwrite,
            WriteMode::Auto => match crate::io::copy_on_write_fs(dir) {
                Some(_) => WriteVia::Pwrite,
                None => WriteVia::Map,
            },
        }
    }
}

/// Refuses a first index past which no entry could be appended.
pub(super) fn check_first_index(first: u64) -> Result<()> {
    let max = crate::format::MAX_INDEX + 1;
    if first > max {
        return Err(Error::IndexTooLarge { index: first, max });
    }
    Ok(())
}

/// The largest payload that fits in a fresh segment of `segment_size` bytes after its header
/// and a checkpoint of `checkpoint_len` bytes. Zero if not even an empty entry fits.
fn max_payload_in(segment_size: u64, checkpoint_len: usize) -> usize {
    let room = usize::try_from(segment_size)
        .unwrap_or(usize::MAX)
        .saturating_sub(SEGMENT_HEADER_SIZE + record_size(checkpoint_len) + RECORD_HEADER_SIZE);
    room / RECORD_ALIGN * RECORD_ALIGN
}

/// Refuses a configuration whose segments are too small for the meta values the log already
/// holds: every new segment starts with a checkpoint carrying them all.
pub(super) fn check_fits(config: &Config, plan: &recovery::Plan) -> Result<()> {
    // Every group's checkpoint is copied into every segment, after the log's own.
    let needed = plan
        .groups
        .values()
        .fold(checkpoint_len(&plan.state), |n, g| {
            n.saturating_add(crate::format::record_size(checkpoint_len(&g.state)))
        });
    if needed <= config.meta_limit() {
        return Ok(());
    }
    let written_with = plan
        .segments
        .last()
        .map(|s| format!("; it was written with {}-byte segments", s.size()))
        .unwrap_or_default();
    Err(Error::InvalidConfig(format!(
        "segment_size {} is too small for this log: its meta values take {needed} bytes of \
         every segment's checkpoint, and a segment of this size allows {}{written_with}",
        config.segment_size,
        config.meta_limit()
    )))
}
