#![cfg_attr(not(feature = "raft-rs"), allow(dead_code))] // used by the raft-rs adapter
//! Two-step writes of the adapters as one all-or-nothing call: a truncate and the entries
//! after it (raft-rs's `append` with a conflict), and a snapshot that replaces the log with
//! the entries after it (openraft's first append at an index past 0, raft-rs's
//! `apply_snapshot`). Every check of both steps runs before anything is written, and the
//! engine writes both records in one transaction ([`crate::store::Before`]).

use super::{encode_spans, parts, state_err, successor, RaftLog};
use crate::raft::codec::Codec;
use crate::raft::engine::LogEngine;
use crate::raft::errors::{RaftResult, StateError};
use crate::raft::room;
use crate::raft::state::{
    SnapshotMeta, META_COMMITTED, META_PURGED, META_SNAPSHOT, META_USER_DATA, META_VOTE,
};
use crate::raft::types::Types;
use crate::store::Before;

/// A snapshot that replaces every entry of the log ([`RaftLog::reset_and_append`]), and the
/// values saved with it.
pub(crate) struct Reset<T: Types> {
    /// The snapshot's last log id: the log continues after it.
    pub(crate) snapshot: T::LogId,
    /// The snapshot's meta blob (as in [`RaftLog::install_snapshot`]).
    pub(crate) data: Vec<u8>,
    /// A vote saved with it (the rules of [`RaftLog::save_vote`]).
    pub(crate) vote: Option<T::Vote>,
    /// User data saved with it (the room rule of [`RaftLog::save_user_data`]).
    pub(crate) user_data: Option<Option<T::UserData>>,
}

impl<T: Types, S: LogEngine> RaftLog<T, S> {
    /// `truncate_after(keep)` then `append(entries)`, as one call: every rule of both is
    /// checked first (the entries must follow `keep`, or the purged log id when `keep` is
    /// `None`), and on error nothing is written.
    pub(crate) fn truncate_and_append<'a, I>(
        &mut self,
        keep: Option<T::LogId>,
        entries: I,
    ) -> RaftResult<(), T>
    where
        I: IntoIterator<Item = (T::LogId, &'a [u8])>,
    {
        let Some(from) = self.plan_truncate(&keep)? else {
            return self.append(entries);
        };
        let after = keep.or_else(|| self.state.purged.clone());
        let (mut buf, mut spans) = (Vec::new(), Vec::new());
        let last = encode_spans::<T, _>(after, from, entries, &mut buf, &mut spans)?;
        self.store
            .append_parts_after(Before::Truncate(from), parts(&buf, &spans))?;
        self.state.last = last;
        Ok(())
    }

    /// `save_vote(vote)` then `commit(id)`, as one call: both are checked first (the rules of
    /// [`RaftLog::save_vote`] and [`RaftLog::commit`]), then written together; on error
    /// neither is. `None` (or a value already saved) writes nothing for it.
    pub(crate) fn save_vote_and_commit(
        &mut self,
        vote: Option<T::Vote>,
        commit: Option<T::LogId>,
    ) -> RaftResult<(), T> {
        if let Some(v) = &vote {
            self.check_vote(v)?;
        }
        let commit = match commit {
            Some(id) if self.check_commit(&id)? => Some(id),
            _ => None,
        };
        let vote_bytes = vote.as_ref().map(|v| v.to_bytes());
        let commit_bytes = commit.as_ref().map(|c| c.to_bytes());
        let mut metas: Vec<(u64, &[u8])> = Vec::with_capacity(2);
        if let Some(v) = &vote_bytes {
            metas.push((META_VOTE, v));
        }
        if let Some(c) = &commit_bytes {
            metas.push((META_COMMITTED, c));
        }
        if metas.is_empty() {
            return Ok(());
        }
        self.store.put_metas(&metas)?;
        if vote.is_some() {
            self.state.vote = vote;
        }
        if commit.is_some() {
            self.state.committed = commit;
        }
        Ok(())
    }

    /// Replaces the log with a snapshot (every entry goes; the log continues after
    /// `reset.snapshot`, which becomes the purged log id; the committed log id moves up to
    /// it), saves the vote and user data given with it, and appends `entries` after it, as
    /// one call. Checked first: the snapshot is after the purged log id, its meta and the
    /// user data fit the meta room, the vote is not a reversal, and (with the default rules)
    /// no committed entry after the snapshot's log id is removed; then each entry against the
    /// snapshot's log id as [`RaftLog::append`] checks it. On error nothing is written.
    pub(crate) fn reset_and_append<'a, I>(
        &mut self,
        reset: Reset<T>,
        entries: I,
    ) -> RaftResult<(), T>
    where
        I: IntoIterator<Item = (T::LogId, &'a [u8])>,
    {
        let Reset {
            snapshot,
            data,
            vote,
            user_data,
        } = reset;
        let index = T::log_index(&snapshot);
        if self
            .state
            .purged
            .as_ref()
            .is_some_and(|p| snapshot <= *p || index <= T::log_index(p))
        {
            return Err(state_err(StateError::SnapshotReversal {
                purged: self.state.purged.clone(),
                given: snapshot,
            }));
        }
        let first = successor::<T>(&snapshot)?;
        if self.rules.truncate_keeps_committed
            && self
                .state
                .last
                .as_ref()
                .is_some_and(|l| T::log_index(l) > index)
            && Some(&snapshot) < self.state.committed.as_ref()
            && self.log_id(index)?.as_ref() == Some(&snapshot)
        {
            // The log holds the snapshot's log id and committed entries after it.
            return Err(state_err(StateError::TruncateBelowCommitted {
                committed: self.state.committed.clone(),
                given: Some(snapshot),
            }));
        }
        if let Some(v) = &vote {
            self.check_vote(v)?;
        }
        let snap_bytes = (snapshot.clone(), data.clone()).to_bytes();
        let user_bytes = user_data.as_ref().map(|u| u.to_bytes());
        let mut sizes = vec![(META_SNAPSHOT, snap_bytes.len())];
        if let Some(u) = &user_bytes {
            sizes.push((META_USER_DATA, u.len()));
        }
        room::check::<T>(&self.store, META_SNAPSHOT, snap_bytes.len(), &sizes)?;
        if let Some(u) = &user_bytes {
            room::check::<T>(&self.store, META_USER_DATA, u.len(), &sizes)?;
        }
        let committed = match &self.state.committed {
            Some(c) if *c > snapshot => c.clone(),
            _ => snapshot.clone(),
        };
        let (mut buf, mut spans) = (Vec::new(), Vec::new());
        let last =
            encode_spans::<T, _>(Some(snapshot.clone()), first, entries, &mut buf, &mut spans)?;

        let id_bytes = snapshot.to_bytes();
        let committed_bytes = committed.to_bytes();
        let vote_bytes = vote.as_ref().map(|v| v.to_bytes());
        let mut metas: Vec<(u64, &[u8])> = vec![
            (META_PURGED, &id_bytes),
            (META_SNAPSHOT, &snap_bytes),
            (META_COMMITTED, &committed_bytes),
        ];
        if let Some(v) = &vote_bytes {
            metas.push((META_VOTE, v));
        }
        if let Some(u) = &user_bytes {
            metas.push((META_USER_DATA, u));
        }
        let before = Before::Reset {
            first,
            metas: &metas,
        };
        self.store.append_parts_after(before, parts(&buf, &spans))?;
        self.state.last = last;
        self.state.purged = Some(snapshot.clone());
        self.state.committed = Some(committed);
        self.state.snapshot = Some(SnapshotMeta {
            last_log_id: snapshot,
            data,
        });
        if vote.is_some() {
            self.state.vote = vote;
        }
        if let Some(u) = user_data {
            self.state.user_data = u;
        }
        Ok(())
    }
}
