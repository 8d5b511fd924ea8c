//! [`RaftLog::append_frames`]: a follower stores the leader's frames, with Raft's conflict
//! rule.

use super::{check_follows, state_err, RaftLog};
use crate::error::{Error, Result};
use crate::frames::{parse, Frame};
use crate::raft::engine::LogEngine;
use crate::raft::errors::{RaftError, RaftResult, StateError};
use crate::raft::state::split_entry;
use crate::raft::types::Types;
use crate::store::{Placed, Received};

impl<T: Types, S: LogEngine> RaftLog<T, S> {
    /// Appends a batch of replication frames from the leader (its
    /// [`RaftView::frames`](crate::raft::RaftView::frames)), resolving conflicts as Raft does.
    ///
    /// Checked before anything is written, in this order:
    /// 1. every frame: framing, kind, body checksum, consecutive indexes, and a log id that
    ///    decodes and names the frame's index ([`Error::BadFrame`], naming the entry and the
    ///    byte offset in `bytes`); log ids increase through the batch
    ///    ([`StateError::LogIdReversal`]);
    /// 2. the conflict rule: frames whose entry the log already holds with the same log id,
    ///    and frames at or below the purged log id (covered by the snapshot; one that names
    ///    the purged index with another log id is [`StateError::LogIdMismatch`]), are skipped.
    ///    At the first frame whose log id differs from the stored one, every entry from that
    ///    index on is removed (the first differing id wins) and the rest of the batch is
    ///    appended, truncate and entries in one all-or-nothing call. With the default
    ///    [`Rules`](crate::raft::Rules), removing a committed entry is
    ///    [`StateError::TruncateBelowCommitted`]. A batch that only repeats entries the log
    ///    holds is a no-op; entries after the batch stay unless a conflict removed them;
    /// 3. the frames after the skipped prefix must follow the last log id, as
    ///    [`RaftLog::append`] requires.
    ///
    /// The result is what `truncate_after(Some(id of the entry before the conflict))` then
    /// `append(the rest)` would leave, in one call. Payloads are not decoded: the frame bytes
    /// are copied into the map and only each record's salted CRC is rewritten.
    pub fn append_frames(&mut self, bytes: &[u8]) -> RaftResult<(), T> {
        let frames = parse(bytes).collect::<Result<Vec<Frame<'_>>>>()?;
        let Some(plan) = self.plan_frames(&frames)? else {
            return Ok(());
        };
        self.store
            .write_frames(plan.conflict, &frames[plan.skip..])?;
        self.state.last = plan.last;
        Ok(())
    }

    /// Receives a batch of `len` bytes of the leader's frames straight into the log's map
    /// (`fill` reads it, for example with `read_exact` on a socket), then stores it as
    /// [`RaftLog::append_frames`] would: the same checks, the same conflict rule, all or
    /// nothing. A batch of new entries that follow the log (what a leader streams) is
    /// committed where it landed, without a copy; a batch that repeats entries the log holds,
    /// or that conflicts with them, is copied as `append_frames` copies it. See
    /// [`Store::receive_frames`](crate::Store::receive_frames); a group of a shared log
    /// receives into a buffer and copies.
    pub fn receive_frames(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> std::io::Result<()>,
    ) -> RaftResult<(), T> {
        let landed = match self.store.receive(len, fill)? {
            Received::Buffered(buf) => return self.append_frames(&buf),
            Received::Landed(landed) => landed,
        };
        let checked = parse(landed.bytes())
            .collect::<Result<Vec<Frame<'_>>>>()
            .map_err(RaftError::from)
            .and_then(|frames| {
                let plan = self.plan_frames(&frames)?;
                // Only a batch whose every frame is new can stay where it landed.
                let in_place = plan
                    .as_ref()
                    .is_some_and(|p| p.skip == 0 && p.conflict.is_none());
                let placed: Vec<Placed> = if in_place {
                    frames.iter().map(Placed::from).collect()
                } else {
                    Vec::new()
                };
                let rest = match (&plan, frames.get(plan.as_ref().map_or(0, |p| p.skip))) {
                    (Some(_), Some(first)) if !in_place => landed.bytes()[first.offset..].to_vec(),
                    _ => Vec::new(),
                };
                Ok((plan, placed, rest))
            });
        let (plan, placed, rest) = match checked {
            Ok(c) => c,
            Err(e) => {
                self.store.release(landed)?;
                return Err(e);
            }
        };
        let Some(plan) = plan else {
            // Nothing new: give the room back.
            return Ok(self.store.release(landed)?);
        };
        if !placed.is_empty() {
            self.store.commit_landed(landed, &placed)?;
        } else {
            self.store.release(landed)?;
            let frames = parse(&rest).collect::<Result<Vec<Frame<'_>>>>()?;
            self.store.write_frames(plan.conflict, &frames)?;
        }
        self.state.last = plan.last;
        Ok(())
    }

    /// Checks a batch of frames against the log (log ids, the conflict rule, the order of
    /// ids): what to skip, where to truncate, and the last log id after it. `None`: the batch
    /// changes nothing.
    fn plan_frames(&self, frames: &[Frame<'_>]) -> RaftResult<Option<FramesPlan<T>>, T> {
        let mut ids: Vec<T::LogId> = Vec::with_capacity(frames.len());
        for f in frames {
            let (id, _) = split_entry::<T>(f.index, f.body).map_err(|e| Error::BadFrame {
                index: f.index,
                offset: f.offset as u64,
                reason: e.to_string(),
            })?;
            if let Some(prev) = ids.last() {
                if id <= *prev {
                    return Err(state_err(StateError::LogIdReversal {
                        last: prev.clone(),
                        given: id,
                    }));
                }
            }
            ids.push(id);
        }

        // The conflict rule: skip what the log holds, find the first differing log id.
        let view = self.store.reader().view();
        let purged_index = self.state.purged.as_ref().map(|p| T::log_index(p));
        let mut skip = 0;
        let mut conflict = None;
        for (f, id) in frames.iter().zip(&ids) {
            if purged_index.is_some_and(|p| f.index <= p) {
                if purged_index == Some(f.index) && self.state.purged.as_ref() != Some(id) {
                    return Err(state_err(StateError::LogIdMismatch {
                        index: f.index,
                        stored: None,
                        purged: self.state.purged.clone(),
                        given: id.clone(),
                    }));
                }
                skip += 1;
                continue;
            }
            let Some(body) = view.get(f.index) else { break };
            if split_entry::<T>(f.index, body)?.0 == *id {
                skip += 1;
                continue;
            }
            conflict = Some(f.index);
            break;
        }
        let mut last = self.state.last.clone();
        let mut engine_next = self.store.next_index();
        if let Some(from) = conflict {
            // The log id before the conflict: the stored entry's, or the purged one.
            let before = match from
                .checked_sub(1)
                .and_then(|i| view.get(i).map(|b| (i, b)))
            {
                Some((i, body)) => Some(split_entry::<T>(i, body)?.0),
                None => self.state.purged.clone(),
            };
            if self.rules.truncate_keeps_committed && before < self.state.committed {
                return Err(state_err(StateError::TruncateBelowCommitted {
                    committed: self.state.committed.clone(),
                    given: before,
                }));
            }
            last = before;
            engine_next = from;
        }
        drop(view);
        let rest = &frames[skip..];
        for id in &ids[skip..] {
            check_follows::<T>(last.as_ref(), engine_next, id)?;
            last = Some(id.clone());
        }
        if rest.is_empty() && conflict.is_none() {
            return Ok(None);
        }
        Ok(Some(FramesPlan {
            skip,
            conflict,
            last,
        }))
    }
}

/// What a batch of frames does to the log ([`RaftLog::plan_frames`]).
struct FramesPlan<T: Types> {
    /// Leading frames the log already holds.
    skip: usize,
    /// Where the log is truncated first.
    conflict: Option<u64>,
    /// The last log id after the batch.
    last: Option<T::LogId>,
}
