//! The crate's one error type.

use std::path::PathBuf;
use std::sync::Arc;

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, with the context needed to act on it.
///
/// `Error` is `Clone` (I/O errors are shared behind an `Arc`) so that one failed flush can be
/// reported to every callback that waited on it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What we were doing (`"open"`, `"msync"`, ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Arc<std::io::Error>,
    },

    /// Another `Store` (in this or another process) holds the directory.
    #[error("log directory {path} is locked by another process (or another open log in this one)")]
    Locked {
        /// The directory.
        path: PathBuf,
    },

    /// Bytes on disk that recovery refuses: a bad record where no crash could have left one.
    #[error("corrupt log: {path}:{offset}: {reason}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset in that file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },

    /// An entry that cannot fit in one segment, even an empty one. Nothing was written.
    #[error(
        "entry {index} has a {size}-byte payload; with segment_size {segment_size} an entry \
         holds at most {max} bytes of payload"
    )]
    EntryTooLarge {
        /// Log index of the entry.
        index: u64,
        /// The payload size the caller gave.
        size: usize,
        /// The largest payload this configuration accepts.
        max: usize,
        /// `Config::segment_size`.
        segment_size: u64,
    },

    /// An index too large to leave room for a successor (see
    /// [`MAX_INDEX`](crate::format::MAX_INDEX)). Nothing was written.
    #[error("index {index} is too large: at most {max} is allowed here")]
    IndexTooLarge {
        /// The index given.
        index: u64,
        /// The largest accepted.
        max: u64,
    },

    /// Meta values that would be too large together (they are copied into every segment's
    /// checkpoint). Nothing was written.
    #[error("meta value for key {key} would make the meta values {size} bytes; at most {max} bytes are allowed")]
    MetaTooLarge {
        /// Meta key.
        key: u64,
        /// Size of all meta values with this one.
        size: usize,
        /// The limit.
        max: usize,
    },

    /// A shared log's group that would make the checkpoints too large: every segment starts
    /// with the state of every group, and together they may take at most a quarter of a
    /// segment. Nothing was written. Use larger segments, or fewer groups.
    #[error(
        "too many groups for this segment size: with this group the {groups} groups' \
         checkpoints would take {size} bytes of every segment; at most {max} bytes are allowed \
         (use a larger segment_size)"
    )]
    TooManyGroups {
        /// Groups that would exist, this one included.
        groups: usize,
        /// Bytes of every segment's checkpoints with this group.
        size: usize,
        /// The limit (a quarter of a segment).
        max: usize,
    },

    /// Group `group` of a shared log already has a Raft log ([`crate::raft::RaftLog`] or an
    /// adapter's storage over it), which keeps the group's Raft state: a second one, or the
    /// group's removal, would leave it acting on a state that is no longer the group's.
    /// Nothing was done; drop the first one before.
    #[error("group {group} is held by a Raft log (one at a time): drop it before {action}")]
    GroupInUse {
        /// The group.
        group: u64,
        /// What was refused (`"opening another"`, `"removing the group"`).
        action: &'static str,
    },

    /// An append whose index does not follow the last one. Nothing was written.
    #[error("non-consecutive append: expected index {expected}, got {got}")]
    NonConsecutive {
        /// The index that would have been accepted.
        expected: u64,
        /// The index given.
        got: u64,
    },

    /// A truncate or reset below the first index: it would bring back or remove purged
    /// entries. Nothing was written. (The Raft layer's `StateError::TruncateBelowPurged`
    /// names log ids instead.)
    #[error("index {from} is below the first index {first}: entries below it are purged")]
    BelowFirstIndex {
        /// The index given (first index a truncate would remove, or a reset's new first).
        from: u64,
        /// First retained index.
        first: u64,
    },

    /// A replication frame that fails its checks (framing, checksum, kind, index order). Nothing
    /// was written.
    #[error("bad frame for entry {index} at byte {offset} of the batch: {reason}")]
    BadFrame {
        /// The index the frame should carry (for the first frame of a batch: the index its
        /// header names).
        index: u64,
        /// Byte offset of the frame in the input.
        offset: u64,
        /// What is wrong.
        reason: String,
    },

    /// Reading a batch of replication frames into the log failed (the caller's reader, such
    /// as a socket, returned an error). Nothing was written.
    #[error("receiving a batch of {len} bytes: {source}")]
    Receive {
        /// The batch's length.
        len: usize,
        /// The reader's error.
        #[source]
        source: Arc<std::io::Error>,
    },

    /// A value could not be decoded.
    #[error("decode {what}: {reason}")]
    Decode {
        /// What was being decoded (`"vote"`, `"log id of entry 17"`, ...).
        what: String,
        /// Why it failed.
        reason: String,
    },

    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// A previous durable flush failed. After a failed fsync the page cache may no longer
    /// match the disk, so the log refuses further writes: reopen it to recover.
    #[error("the log is poisoned by an earlier flush failure ({0}); reopen it")]
    Poisoned(String),

    /// The background flush thread is gone (it panicked or the log is shutting down).
    #[error("the flush thread has stopped")]
    FlusherStopped,
}

impl Error {
    /// Builds an [`Error::Io`].
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source: Arc::new(source),
        }
    }

    /// Builds an [`Error::Corrupt`].
    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corrupt {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }
}
