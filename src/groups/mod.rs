//! Many logs in one: [`Groups`] keeps any number of groups (a `u64` id each, say one per Raft
//! group or region) in one directory and one segment stream, written by any number of
//! threads.
//!
//! Each group is a log with the rules of a [`Store`]: its own first and next index, entries,
//! truncate, purge, reset and meta values; [`Group::reader`] gives lock-free, zero-copy
//! [`View`](crate::View)s of it alone. All groups share one set of segment files, one flush
//! thread and one preparer: a flush makes every group's writes durable with one sync, and a
//! [`WriteBatch`] writes the entries of many groups in one call (a Raft Ready loop over many
//! regions). Creating a group costs no file and no thread; [`Groups::remove_group`] frees its
//! space. A segment file goes once no group holds live entries in it (released by the purge,
//! reset, rewrite or removal that empties it, or at the next open);
//! [`Groups::rewrite_lagging`] moves the few live entries of groups that lag behind forward,
//! and [`Groups::oldest_groups`] names the groups that hold the oldest data, for the
//! application to compact.
//!
//! ```
//! use raft_mmap_log::groups::{Groups, WriteBatch};
//! use raft_mmap_log::Config;
//! let dir = tempfile::tempdir()?;
//! let log = Groups::open(dir.path(), Config::default())?;
//! let (a, b) = (log.group(7), log.group(8));
//! a.append_batch([(1, &b"a1"[..]), (2, b"a2")])?;
//! let mut batch = WriteBatch::new();
//! batch.add_entries(8, [(1, &b"b1"[..])]);
//! batch.add_entries(7, [(3, &b"a3"[..])]);
//! log.write(&batch)?;
//! log.sync()?; // one sync for both groups
//! assert_eq!(a.reader().view().get(3), Some(&b"a3"[..]));
//! assert_eq!(b.reader().view().get(1), Some(&b"b1"[..]));
//! drop((a, b, log));
//! let log = Groups::open(dir.path(), Config::default())?;
//! assert_eq!(log.ids(), vec![7, 8]);
//! assert_eq!(log.group(7).next_index(), 4);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::reader::Reader;
use crate::store::{Before, Config, Store};
use crate::RecoveryReport;

mod batch;
#[cfg(test)]
mod sim_tests;

pub use crate::store::GroupUsage;
pub use batch::WriteBatch;

/// A shared log: one directory, one segment stream, many groups. `Clone` is cheap (all
/// clones are the same log); the directory is released when the last clone and the last
/// [`Group`] handle are dropped.
#[derive(Clone)]
pub struct Groups {
    inner: Arc<Inner>,
}

struct Inner {
    store: Mutex<Store>,
    dir: PathBuf,
    /// The groups a Raft log holds ([`Group::claim_for_raft`]). Locked before `store` where
    /// both are held.
    raft_held: Mutex<BTreeSet<u64>>,
}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Groups")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

impl Groups {
    /// Opens (or creates) the shared log in `dir`, recovering every group. A directory
    /// written by [`Store`] opens too: its log is group 0.
    ///
    /// Fails as [`Store::open`] does ([`Error::Locked`], [`Error::Corrupt`] with file and
    /// offset, [`Error::InvalidConfig`]).
    pub fn open(dir: impl AsRef<Path>, config: Config) -> Result<Self> {
        Self::from_store(Store::open(dir, config)?)
    }

    #[cfg(test)]
    #[allow(dead_code)] // for the seam crash tests
    pub(crate) fn open_with_fs(
        dir: impl AsRef<Path>,
        config: Config,
        fs: Arc<dyn crate::io::Fs>,
    ) -> Result<Self> {
        Self::from_store(Store::open_with_fs(dir, config, fs)?)
    }

    fn from_store(mut store: Store) -> Result<Self> {
        store.prepare_for_groups()?;
        let dir = store.dir().to_path_buf();
        Ok(Groups {
            inner: Arc::new(Inner {
                store: Mutex::new(store),
                dir,
                raft_held: Mutex::new(BTreeSet::new()),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        self.inner.lock()
    }

    /// A handle on group `id`, created on its first write (no file, no thread, nothing
    /// written now). Handles are `Clone + Send + Sync`.
    pub fn group(&self, id: u64) -> Group {
        Group {
            id,
            inner: self.inner.clone(),
        }
    }

    /// The groups that exist, in increasing order: written to, not removed, and not back in
    /// the default state (no entry at index 0, no meta value: an empty group there is the
    /// same as no group, and is not kept).
    pub fn ids(&self) -> Vec<u64> {
        self.lock().group_ids()
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// What recovery found when the log was opened.
    pub fn recovery_report(&self) -> RecoveryReport {
        self.lock().recovery_report().clone()
    }

    /// Writes every part of `batch` (entries and meta values of many groups) in one call:
    /// readers see each group's part once the call returns, and one flush makes them all
    /// durable.
    ///
    /// Every part is checked first (each group's rules, entry and meta sizes): a batch that
    /// breaks a rule writes nothing. If writing then fails (an I/O error) after some groups'
    /// parts were written, the log is poisoned with an error that says so (each group's own
    /// part is all or nothing); if it fails in the first part, nothing was written.
    pub fn write(&self, batch: &WriteBatch<'_>) -> Result<()> {
        let mut store = self.lock();
        for part in batch.parts() {
            store.focus(part.group);
            store.check_overwrite(&part.entries, &part.metas)?;
        }
        let total = batch.parts().len();
        for (i, part) in batch.parts().iter().enumerate() {
            store.focus(part.group);
            let written = write_part(&mut store, &part.entries, &part.metas);
            if let Err(e) = written {
                if i == 0 || matches!(e, Error::Poisoned(_)) {
                    return Err(e);
                }
                return Err(store.poison(format!(
                    "a batch failed in group {} ({e}) after the parts of {i} of its {total} \
                     groups were written",
                    part.group
                )));
            }
        }
        Ok(())
    }

    /// Asks for everything written so far, in every group, to be made durable; `callback`
    /// runs on the flush thread once it is. Many flushes share one sync. See
    /// [`Store::flush`].
    pub fn flush(&self, callback: impl FnOnce(Result<()>) + Send + 'static) -> Result<()> {
        self.inner.lock_undrained().flush(callback)
    }

    /// A future that resolves once everything written so far, in every group, is durable
    /// (feature `tokio`): [`Groups::flush`] with a [`Durable`](crate::Durable) for its
    /// callback. Many futures asked for while a sync runs share the next one.
    #[cfg(feature = "tokio")]
    pub fn flushed(&self) -> crate::Durable {
        self.inner.lock_undrained().flushed()
    }

    /// Makes everything written so far, in every group, durable, blocking until it is. The
    /// log is not locked while this waits: other threads keep writing, and their flushes join
    /// the same sync.
    pub fn sync(&self) -> Result<()> {
        self.inner.sync()
    }

    /// Like [`Groups::sync`], but when the flush thread is idle the sync runs on this thread
    /// (after the log is let go, so other threads keep writing), saving the two thread
    /// wake-ups of a hand-off: for one loop that makes every group durable at once, as a
    /// multi-Raft Ready loop does. When the flush thread is busy, this is [`Groups::sync`].
    /// With many threads syncing at once, prefer [`Groups::sync`]: the flush thread then
    /// batches their syncs into fewer `fdatasync`s.
    pub fn sync_here(&self) -> Result<()> {
        self.inner.sync_here()
    }

    /// Removes group `id`: its entries, meta values and state are gone once the removal is
    /// durable (one small record); segments no other group needs are deleted after the next
    /// flush. Readers already holding a view keep it. Removing a group that does not exist
    /// writes nothing. A group a Raft log holds ([`RaftLog::for_group`](crate::raft::RaftLog::for_group)
    /// or an adapter's storage) is refused with [`Error::GroupInUse`]: drop that first.
    pub fn remove_group(&self, id: u64) -> Result<()> {
        let held = self.inner.raft_held();
        if held.contains(&id) {
            return Err(Error::GroupInUse {
                group: id,
                action: "removing the group",
            });
        }
        self.lock().remove_group(id)
    }

    /// The flush I/O in use, and why the one configured was refused (see
    /// [`Store::flush_io`]).
    pub fn flush_io(&self) -> (crate::FlushIo, Option<String>) {
        let store = self.inner.lock_undrained();
        let (io, why) = store.flush_io();
        (io, why.map(str::to_string))
    }

    /// An estimate of the heap bytes the open log holds, every group included (see
    /// [`Store::estimated_memory`]: the index, each group's state and meta values, the
    /// segment table; not the page cache or the mapped files).
    pub fn estimated_memory(&self) -> usize {
        self.inner.lock_undrained().estimated_memory()
    }

    /// Bytes of log on disk, every group's entries included (see [`Store::log_bytes`]).
    pub fn log_bytes(&self) -> u64 {
        self.inner.lock_undrained().log_bytes()
    }

    /// Whether the shared log has grown past
    /// [`Config::compaction_threshold`](crate::Config::compaction_threshold): time to compact
    /// the groups [`Groups::oldest_groups`] names (or to run [`Groups::rewrite_lagging`]).
    pub fn needs_compaction(&self) -> bool {
        self.inner.lock_undrained().needs_compaction()
    }

    /// The groups holding the oldest data, oldest first, at most `n`: the groups an
    /// application should compact (purge) so that old segment files can go.
    pub fn oldest_groups(&self, n: usize) -> Vec<GroupUsage> {
        let mut all = self.lock().group_usage();
        all.truncate(n);
        all
    }

    /// Moves forward the live entries of the groups that hold the oldest segment and have at
    /// most `max_entries` live entries in all (an idle group: raft-engine rewrites regions
    /// with fewer than 32), so that the segment can go once no other group needs it: each
    /// such group's entries are written again in the active segment (one reset record and
    /// the entries, all or nothing per group; indexes, payloads and meta values stay as they
    /// were; the rewrite record and the entries lie in one segment, and recovery applies
    /// the rewrite only whole). Groups with more live entries are left to the application,
    /// which should purge
    /// them: [`Groups::oldest_groups`] names them. Returns the ids of the groups moved.
    /// Readers holding views keep reading the old bytes; the old file goes after the next
    /// flush if nothing needs it.
    pub fn rewrite_lagging(&self, max_entries: u64) -> Result<Vec<u64>> {
        let mut store = self.lock();
        let usage = store.group_usage();
        let Some(oldest) = usage.first().map(|u| u.oldest_segment) else {
            return Ok(Vec::new());
        };
        let mut moved = Vec::new();
        for u in usage.iter().take_while(|u| u.oldest_segment == oldest) {
            let total = u.next_index - u.first_index;
            if total > max_entries {
                continue;
            }
            store.focus(u.id);
            let view = store.reader().view();
            let entries: Vec<(u64, &[u8])> = view.range(..).map(|e| (e.index, e.payload)).collect();
            if entries.len() as u64 != total {
                return Err(Error::corrupt(
                    store.dir(),
                    0,
                    format!(
                        "group {}: {} live entries but {total} expected",
                        u.id,
                        entries.len()
                    ),
                ));
            }
            match store.append_parts_after(
                Before::Rewrite,
                entries.iter().map(|(i, p)| (*i, &[][..], *p)),
            ) {
                Ok(()) => moved.push(u.id),
                // Too large to move in one segment: left to the application to purge.
                Err(Error::InvalidConfig(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(moved)
    }
}

/// Writes one group's part of a batch: the entries (replacing any at or after the first
/// one's index), then the meta values.
fn write_part(store: &mut Store, entries: &[(u64, &[u8])], metas: &[(u64, &[u8])]) -> Result<()> {
    if let Some(&(first, _)) = entries.first() {
        store.append_parts_after(
            Before::Truncate(first),
            entries.iter().map(|(i, p)| (*i, &[][..], *p)),
        )?;
    }
    if !metas.is_empty() {
        store.put_metas(metas)?;
    }
    Ok(())
}

impl Inner {
    /// The log, with every concurrent append's copy completed and published: what calls
    /// that write under the lock, or read the writer's state, need.
    fn lock(&self) -> MutexGuard<'_, Store> {
        let store = self.lock_undrained();
        store.drain_reservations();
        store
    }

    /// The log, while concurrent appends may still be copying (their reservations are
    /// behind the write position, unpublished).
    fn lock_undrained(&self) -> MutexGuard<'_, Store> {
        // A panic while the lock was held cannot leave the store half-changed: every writer
        // call is all or nothing or poisons the log, and panics are not caught half-way.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn raft_held(&self) -> MutexGuard<'_, BTreeSet<u64>> {
        // A set of ids: no state a panic could leave half-changed.
        self.raft_held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One sync for everything written so far: run on this thread after the log is let go
    /// when the flush thread is idle (no thread hop), else queued behind the others (their
    /// syncs and this one share the thread's next one).
    fn sync_here(&self) -> Result<()> {
        let wait = self.lock_undrained().sync_unlocked()?;
        wait.wait()
    }

    fn sync(&self) -> Result<()> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.lock_undrained().flush(move |r| {
            let _ = tx.send(r);
        })?;
        rx.recv().map_err(|_| Error::FlusherStopped)?
    }
}

/// A group held by a Raft log: released when dropped.
pub(crate) struct RaftClaim {
    id: u64,
    inner: Arc<Inner>,
}

impl Drop for RaftClaim {
    fn drop(&mut self) {
        self.inner.raft_held().remove(&self.id);
    }
}

/// A handle on one group of a [`Groups`] log: `Clone + Send + Sync`; any number of threads
/// may write through handles at once (each call is serialized with the others' for its
/// copy into the map). The rules and errors are [`Store`]'s.
#[derive(Clone)]
pub struct Group {
    id: u64,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group").field("id", &self.id).finish()
    }
}

impl Group {
    /// The group's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Marks the group as held by a Raft log until the returned claim is dropped;
    /// [`Error::GroupInUse`] if another one holds it.
    pub(crate) fn claim_for_raft(&self) -> Result<RaftClaim> {
        if !self.inner.raft_held().insert(self.id) {
            return Err(Error::GroupInUse {
                group: self.id,
                action: "opening another",
            });
        }
        Ok(RaftClaim {
            id: self.id,
            inner: self.inner.clone(),
        })
    }

    /// Runs `f` on the log with this group focused (every concurrent append drained).
    pub(crate) fn with_store<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let mut store = self.inner.lock();
        store.focus(self.id);
        f(&mut store)
    }

    /// A lock-free reader of this group alone (see [`Reader`]); valid across later writes.
    pub fn reader(&self) -> Reader {
        let mut store = self.inner.lock_undrained();
        Reader {
            current: store.group_cell(self.id),
            notify: store.notify(),
        }
    }

    /// First retained index.
    pub fn first_index(&self) -> u64 {
        self.with_store(|s| s.first_index())
    }

    /// One past the last index.
    pub fn next_index(&self) -> u64 {
        self.with_store(|s| s.next_index())
    }

    /// Last index, `None` when the group has no entry.
    pub fn last_index(&self) -> Option<u64> {
        self.with_store(|s| s.last_index())
    }

    /// The latest value of meta key `key`, copied.
    pub fn meta(&self, key: u64) -> Option<Vec<u8>> {
        self.with_store(|s| s.meta(key).map(<[u8]>::to_vec))
    }

    /// The largest payload an entry of this group may have (a group other than 0 needs a
    /// small record more at the start of a segment than a [`Store`] does).
    pub fn max_payload(&self) -> usize {
        self.with_store(|s| s.group_max_payload())
    }

    /// Appends one entry. See [`Store::append_batch`].
    pub fn append(&self, index: u64, payload: &[u8]) -> Result<()> {
        self.append_batch(std::iter::once((index, payload)))
    }

    /// Appends entries with consecutive indexes, all or nothing. See [`Store::append_batch`].
    ///
    /// Concurrent with the other writers: the log is locked only to check the batch and
    /// reserve its place (its indexes and its bytes in the active segment); the records are
    /// copied after the lock is released, while other threads reserve and copy theirs.
    /// Readers see the batch once it is copied and every earlier batch of this group is too;
    /// a flush covers it once it is copied. Several threads may append to the same group:
    /// each reserves the next indexes, and the batches are published in index order.
    ///
    /// All or nothing: a batch refused by a rule, or whose reservation fails, leaves
    /// nothing; a copy that fails (an I/O error of the `pwrite` mode) poisons the log.
    pub fn append_batch<'a, I>(&self, entries: I) -> Result<()>
    where
        I: IntoIterator<Item = (u64, &'a [u8])>,
    {
        let entries: Vec<(u64, &'a [u8])> = entries.into_iter().collect();
        let reservation = {
            let mut store = self.inner.lock_undrained();
            store.focus(self.id);
            store.reserve_append(&entries)?
        };
        match reservation {
            Some(r) => r.copy(),
            None => Ok(()),
        }
    }

    /// Appends replication frames. See [`Store::append_frames`].
    pub fn append_frames(&self, bytes: &[u8]) -> Result<()> {
        self.with_store(|s| s.append_frames(bytes))
    }

    /// Removes every entry with index `>= from`. See [`Store::truncate_from`].
    pub fn truncate_from(&self, from: u64) -> Result<()> {
        self.with_store(|s| s.truncate_from(from))
    }

    /// Removes every entry with index `< first`. See [`Store::purge_to`].
    pub fn purge_to(&self, first: u64) -> Result<()> {
        self.with_store(|s| s.purge_to(first))
    }

    /// A purge and meta values in one record. See [`Store::purge_to_with_meta`].
    pub fn purge_to_with_meta(&self, first: u64, metas: &[(u64, &[u8])]) -> Result<()> {
        self.with_store(|s| s.purge_to_with_meta(first, metas))
    }

    /// Drops every entry; `first` becomes the first and next index. See
    /// [`Store::reset_to_with_meta`].
    pub fn reset_to_with_meta(&self, first: u64, metas: &[(u64, &[u8])]) -> Result<()> {
        self.with_store(|s| s.reset_to_with_meta(first, metas))
    }

    /// Sets meta value `key`. See [`Store::put_meta`].
    pub fn put_meta(&self, key: u64, value: &[u8]) -> Result<()> {
        self.with_store(|s| s.put_meta(key, value))
    }

    /// Removes meta value `key` of this group; returns whether it was set. See
    /// [`Store::remove_meta`].
    pub fn remove_meta(&self, key: u64) -> Result<bool> {
        self.with_store(|s| s.remove_meta(key))
    }

    /// Asks for everything written so far (in every group) to be made durable. See
    /// [`Groups::flush`].
    pub fn flush(&self, callback: impl FnOnce(Result<()>) + Send + 'static) -> Result<()> {
        self.inner.lock_undrained().flush(callback)
    }

    /// A future that resolves once everything written so far (in every group) is durable
    /// (feature `tokio`). See [`Groups::flushed`].
    #[cfg(feature = "tokio")]
    pub fn flushed(&self) -> crate::Durable {
        self.inner.lock_undrained().flushed()
    }

    /// Makes everything written so far (in every group) durable, blocking until it is, with
    /// the log unlocked while it waits. See [`Groups::sync`].
    pub fn sync(&self) -> Result<()> {
        self.inner.sync()
    }
}
