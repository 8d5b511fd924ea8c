//! The write side of [`MmapRaftStorage`]: what a raft-rs Ready loop persists.
//!
//! Every call checks what it can before writing anything: raft-rs's own expectations of a
//! storage (the ones `MemStorage` enforces with panics) here, then the Raft layer's state
//! rules inside [`crate::raft::RaftLog`]. Nothing is durable before [`MmapRaftStorage::sync`]
//! returns (or a [`MmapRaftStorage::flush`] callback reports success).

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};

use super::codec;
use super::error::{RaftRsError, RaftRsResult};
use super::storage::MmapRaftStorage;
use super::types::{EntryId, HardVote, RaftRsTypes, StoredConf};
use crate::raft::{LogEngine, Reset, Types};
use crate::Error;

/// Bytes of an encoded log id in front of each entry's body.
const ID_LEN: usize = <RaftRsTypes as Types>::MAX_LOG_ID_LEN;

fn out_of_order(after: EntryId, e: &Entry) -> RaftRsError {
    RaftRsError::OutOfOrder {
        after: after.to_string(),
        given: EntryId::new(e.term, e.index).to_string(),
    }
}

impl<S: LogEngine> MmapRaftStorage<S> {
    /// Appends entries, removing the stored entries they conflict with (`MemStorage::append`).
    ///
    /// `ents` must be one run (consecutive indexes, terms never going down) starting at or
    /// after the first index and at most at the last index + 1 (a log with no entries and no
    /// snapshot takes any start). As Raft's log matching allows, entries the log already holds
    /// with the same term are skipped; from the first one whose term differs (or that is new),
    /// the log is truncated and the rest appended. A truncation of committed entries is refused
    /// by the Raft layer. All or nothing: everything is checked before the truncation is
    /// written, and the truncation and the entries are written as one call.
    pub fn append(&mut self, ents: &[Entry]) -> RaftRsResult<()> {
        let Some(head) = ents.first() else {
            return Ok(());
        };
        let (first, last) = (self.first(), self.last());
        let fresh = self.log.state().last.is_none();
        if head.index < first.max(1) && !(fresh && head.index >= 1) {
            return Err(RaftRsError::Compacted {
                index: head.index,
                first,
            });
        }
        if head.index > last.saturating_add(1) && !fresh {
            return Err(RaftRsError::Gap {
                index: head.index,
                last,
            });
        }
        for w in ents.windows(2) {
            if w[1].index != w[0].index.saturating_add(1) || w[1].term < w[0].term {
                return Err(out_of_order(EntryId::new(w[0].term, w[0].index), &w[1]));
            }
        }
        // Skip what the log already holds.
        let view = self.reader.view();
        let mut skip = 0;
        for e in ents.iter().take_while(|e| e.index <= last) {
            match view.log_id(e.index)? {
                Some(id) if id.term == e.term => skip += 1,
                _ => break,
            }
        }
        let new = &ents[skip..];
        let Some(at) = new.first() else {
            return Ok(());
        };
        // The entry the new ones follow: a stored one, the snapshot's, or none (a fresh log or
        // a truncation of every entry of a log that never purged).
        let prev = match at.index.checked_sub(1) {
            Some(p) if p >= first || self.log.state().purged.is_some() => self.id_at(&view, p)?,
            _ => None,
        };
        drop(view);
        if let Some(prev) = prev {
            if at.term < prev.term {
                return Err(out_of_order(prev, at));
            }
        }
        // Bodies, and their sizes against what a segment holds, before any write.
        self.buf.clear();
        let mut spans = Vec::with_capacity(new.len());
        let max = self.log.max_payload();
        for e in new {
            let start = self.buf.len();
            codec::encode_body(e, &mut self.buf)?;
            let size = self.buf.len() - start;
            if size.saturating_add(ID_LEN) > max {
                return Err(Error::EntryTooLarge {
                    index: e.index,
                    size,
                    max: max.saturating_sub(ID_LEN),
                    segment_size: self.log.engine().segment_size(),
                }
                .into());
            }
            spans.push((start, self.buf.len()));
        }
        let buf = &self.buf;
        let entries = new
            .iter()
            .zip(&spans)
            .map(|(e, &(a, b))| (EntryId::new(e.term, e.index), &buf[a..b]));
        if at.index <= last {
            // The truncation and the entries are one call: if the entries are refused, the
            // entries they conflict with stay.
            self.log.truncate_and_append(prev, entries)?;
        } else {
            self.log.append(entries)?;
        }
        Ok(())
    }

    /// Saves a `HardState`: its term and vote as the log's vote (which may only grow: a vote
    /// for another node in the same term is refused), its commit as the committed log id
    /// (which may only grow, and must name an entry the log holds or its snapshot).
    ///
    /// All or nothing: the vote and the commit are checked first and written in one call; a
    /// commit the log cannot hold ([`RaftRsError::CommitNotInLog`], or a reversal the Raft
    /// layer refuses) saves nothing.
    pub fn set_hard_state(&mut self, hs: &HardState) -> RaftRsResult<()> {
        let vote = HardVote::new(hs.term, hs.vote);
        let saved = self.log.state().vote;
        let changed = saved != Some(vote) && !(saved.is_none() && vote == HardVote::default());
        let commit = self.commit_id(hs.commit)?;
        self.log
            .save_vote_and_commit(changed.then_some(vote), commit)?;
        Ok(())
    }

    /// Saves the committed index (a `LightReady`'s `commit_index`).
    pub fn set_commit(&mut self, index: u64) -> RaftRsResult<()> {
        if let Some(id) = self.commit_id(index)? {
            self.log.commit(id)?;
        }
        Ok(())
    }

    /// The log id to commit for `index`: `None` if it is already the committed index, else
    /// the log id of the entry (or the snapshot) at `index`, or
    /// [`RaftRsError::CommitNotInLog`].
    fn commit_id(&self, index: u64) -> RaftRsResult<Option<EntryId>> {
        if index == self.log.state().committed.map_or(0, |c| c.index) {
            return Ok(None);
        }
        let view = self.reader.view();
        let id = match self.id_at(&view, index)? {
            Some(id) => id,
            None => {
                return Err(RaftRsError::CommitNotInLog {
                    index,
                    snapshot: self.dummy().index,
                    last: self.last(),
                })
            }
        };
        Ok(Some(id))
    }

    /// Saves the configuration (after applying a conf change), stamped with the index of the
    /// log's snapshot so that a snapshot installed later replaces it.
    pub fn set_conf_state(&mut self, cs: ConfState) -> RaftRsResult<()> {
        self.save_conf(cs)
    }

    fn save_conf(&mut self, cs: ConfState) -> RaftRsResult<()> {
        let snapshot_index = self
            .log
            .state()
            .snapshot
            .as_ref()
            .map_or(0, |s| s.last_log_id.index);
        let conf_state = codec::encode_pb("raft-rs conf state", &cs)?;
        self.log.save_user_data(Some(StoredConf {
            snapshot_index,
            conf_state,
        }))?;
        self.conf = cs;
        Ok(())
    }

    /// Replaces the log with a snapshot (`MemStorage::apply_snapshot`): every entry goes, the
    /// snapshot's log id becomes the dummy entry (first index = its index + 1), the committed
    /// index moves up to it, the term up to its term (with no vote, if it is a new term) and
    /// the configuration becomes the snapshot's. A snapshot below the first index is
    /// [`RaftRsError::SnapshotOutOfDate`]. The snapshot's data is the application's to keep.
    ///
    /// All or nothing, and one record: the reset of the log, the snapshot's log id and meta,
    /// the commit, the new term and the configuration are written together (every check runs
    /// first: a configuration too large for the meta room next to the snapshot meta is
    /// refused with nothing written), so no crash separates them.
    pub fn apply_snapshot(&mut self, snapshot: &Snapshot) -> RaftRsResult<()> {
        let meta = snapshot.get_metadata();
        let first = self.first();
        if meta.index < first {
            return Err(RaftRsError::SnapshotOutOfDate {
                index: meta.index,
                first,
            });
        }
        let id = EntryId::new(meta.term, meta.index);
        let meta_bytes = codec::encode_pb("raft-rs snapshot meta", meta)?;
        let cs = meta.get_conf_state().clone();
        let conf_state = codec::encode_pb("raft-rs conf state", &cs)?;
        // raft-rs's storage forgets every entry, also the ones after a snapshot it holds.
        let reset = Reset {
            snapshot: id,
            data: meta_bytes,
            vote: (self.log.state().vote)
                .is_none_or(|v| v.term < meta.term)
                .then(|| HardVote::new(meta.term, 0)),
            user_data: Some(Some(StoredConf {
                snapshot_index: id.index,
                conf_state,
            })),
        };
        self.log
            .reset_and_append(reset, std::iter::empty::<(EntryId, &[u8])>())?;
        self.conf = cs;
        Ok(())
    }

    /// Drops the entries before `compact_index` (`MemStorage::compact`): nothing to do at or
    /// below the first index; past the last index + 1 is [`RaftRsError::CompactBeyondLast`];
    /// the Raft layer refuses to drop entries that are not committed. Whole segment files are
    /// deleted once the compaction is durable.
    pub fn compact(&mut self, compact_index: u64) -> RaftRsResult<()> {
        if compact_index <= self.first() {
            return Ok(());
        }
        let last = self.last();
        if compact_index > last.saturating_add(1) {
            return Err(RaftRsError::CompactBeyondLast {
                index: compact_index,
                last,
            });
        }
        let view = self.reader.view();
        let Some(id) = view.log_id(compact_index - 1)? else {
            return Err(RaftRsError::CompactBeyondLast {
                index: compact_index,
                last,
            });
        };
        drop(view);
        self.log.purge_upto(id)?;
        Ok(())
    }

    /// Writes what a `Ready` asks to persist, in the order raft-rs's examples do (snapshot,
    /// entries, hard state), and makes it durable before returning, so the caller may then
    /// send the Ready's persisted messages and call `advance`.
    pub fn persist_ready(&mut self, rd: &raft::Ready) -> RaftRsResult<()> {
        if self.write_ready(rd)? {
            self.sync()?;
        }
        Ok(())
    }

    /// Writes what a `Ready` asks to persist, as [`persist_ready`](Self::persist_ready) does,
    /// but does not make it durable: returns whether anything was written. A Ready loop over
    /// many regions of one shared log writes every region's Ready this way, then makes them
    /// all durable with one sync ([`Groups::sync`](crate::groups::Groups::sync), or
    /// [`sync`](Self::sync) on any of them), and only then sends their persisted messages and
    /// advances them.
    ///
    /// Each part is all or nothing; a failure leaves the parts before it written (not
    /// durable): the caller must not advance the region, and may retry the same Ready, whose
    /// parts already written are then skipped (entries the log holds with the same term) or
    /// written again unchanged.
    pub fn write_ready(&mut self, rd: &raft::Ready) -> RaftRsResult<bool> {
        let mut wrote = false;
        if !rd.snapshot().is_empty() {
            self.apply_snapshot(rd.snapshot())?;
            wrote = true;
        }
        if !rd.entries().is_empty() {
            self.append(rd.entries())?;
            wrote = true;
        }
        if let Some(hs) = rd.hs() {
            self.set_hard_state(hs)?;
            wrote = true;
        }
        Ok(wrote)
    }

    /// Makes everything written so far durable, blocking until it is.
    pub fn sync(&mut self) -> RaftRsResult<()> {
        self.log.sync()?;
        Ok(())
    }

    /// Calls `callback` on the log's flush thread once everything written before this call
    /// is durable (or with the error that prevented it); returns at once. For an
    /// asynchronous Ready loop (`advance_append_async`, then `on_persist_ready`).
    pub fn flush(
        &mut self,
        callback: impl FnOnce(crate::Result<()>) + Send + 'static,
    ) -> RaftRsResult<()> {
        self.log.flush(callback)?;
        Ok(())
    }
}
