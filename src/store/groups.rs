//! Groups in the one engine: a shared log holds many logical logs (groups, by `u64` id) in one
//! segment stream. Group 0 is the log's own (the only one a [`Store`] user sees).
//!
//! The writer's per-group fields (`state`, `current`, `version`, `tail`, `tail_len`) always
//! belong to the *focused* group; every other group that exists is [`Parked`] with the same
//! fields. [`Store::focus`] swaps them (a few words each), so every write path of the engine
//! (append, frames, truncate, purge, reset, meta, the combined calls) serves any group
//! unchanged. The records of a group other than the one the stream was last writing are
//! preceded by a `Group` record ([`Store::switch_stream`]); each segment's checkpoint is
//! followed by one group checkpoint per other group that exists, so that segments can still
//! be scanned and checked on their own and purged files take no group's state with them.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::reserve::Publisher;
use super::write::Pending;
use super::Store;
use crate::error::Result;
use crate::format::{record_size, RecordKind, RECORD_HEADER_SIZE};
use crate::index::Run;
use crate::notify::Notify;
use crate::recovery::{checkpoint_len, encode_checkpoint, GroupPlan};
use crate::state::LogState;
use crate::version::{RunRef, Version};

/// A group's writer fields while another group is focused.
pub(super) struct Parked {
    pub(super) state: LogState,
    pub(super) current: Arc<ArcSwap<Version>>,
    pub(super) version: Version,
    pub(super) tail: Option<Arc<Run>>,
    pub(super) tail_len: u64,
    pub(super) publisher: Arc<Publisher>,
}

impl Parked {
    /// A group that does not exist yet (default state, nothing published).
    pub(super) fn empty(notify: &Arc<Notify>) -> Self {
        let current = Arc::new(ArcSwap::from_pointee(Version::default()));
        Parked {
            state: LogState::default(),
            publisher: Arc::new(Publisher::new(current.clone(), notify.clone())),
            current,
            version: Version::default(),
            tail: None,
            tail_len: 0,
        }
    }

    /// A recovered group: its runs adopted from the scans (`offsets`), the last one still
    /// receiving entries if it lies in `active`.
    pub(super) fn recovered(
        plan: &GroupPlan,
        runs: Vec<Arc<Run>>,
        active: &Arc<crate::segment::Segment>,
        notify: &Arc<Notify>,
    ) -> Self {
        let state = plan.state.clone();
        let mut version = Version::new(state.first, state.next, Vec::new(), state.metas.clone());
        let mut tail = None;
        let mut tail_len = 0;
        let n = runs.len();
        for (i, run) in runs.into_iter().enumerate() {
            let live = i + 1 == n && Arc::ptr_eq(run.segment(), active);
            let len = run.published();
            if live {
                tail = Some(run.clone());
                tail_len = len;
            }
            version.runs.push(RunRef {
                limit: if live { u64::MAX } else { len },
                run,
            });
        }
        let current = Arc::new(ArcSwap::from_pointee(version.clone()));
        Parked {
            state,
            publisher: Arc::new(Publisher::new(current.clone(), notify.clone())),
            current,
            version,
            tail,
            tail_len,
        }
    }

    /// Bytes of this group's checkpoint record in a new segment (none for a group that does
    /// not exist).
    fn checkpoint_bytes(&self) -> usize {
        group_checkpoint_bytes(&self.state)
    }
}

/// Bytes of a group checkpoint record for `state` (0 when the group does not exist: a
/// default state).
pub(super) fn group_checkpoint_bytes(state: &LogState) -> usize {
    if *state == LogState::default() {
        0
    } else {
        record_size(checkpoint_len(state))
    }
}

/// The groups of the engine other than the focused one.
#[derive(Default)]
pub(super) struct ParkedGroups {
    pub(super) parked: HashMap<u64, Parked>,
    /// Sum of the group checkpoint records of the parked groups other than group 0 (group
    /// 0's state is the segment's own checkpoint, always written).
    pub(super) parked_cp: usize,
}

impl ParkedGroups {
    fn add_cp(&mut self, id: u64, p: &Parked) {
        if id != 0 {
            self.parked_cp += p.checkpoint_bytes();
        }
    }

    fn sub_cp(&mut self, id: u64, p: &Parked) {
        if id != 0 {
            self.parked_cp = self.parked_cp.saturating_sub(p.checkpoint_bytes());
        }
    }

    pub(super) fn insert(&mut self, id: u64, p: Parked) {
        self.add_cp(id, &p);
        if let Some(old) = self.parked.insert(id, p) {
            self.sub_cp(id, &old);
        }
    }

    pub(super) fn take(&mut self, id: u64) -> Option<Parked> {
        let p = self.parked.remove(&id)?;
        self.sub_cp(id, &p);
        Some(p)
    }
}

impl Store {
    /// Makes group `id` the focused one: the writer's per-group fields become its own. A group
    /// that does not exist yet starts empty (it exists once a record of it is written).
    pub(crate) fn focus(&mut self, id: u64) {
        if id == self.focus {
            return;
        }
        let incoming = self
            .groups
            .take(id)
            .unwrap_or_else(|| Parked::empty(&self.notify));
        let segments = std::mem::take(&mut self.version.segments);
        let out = Parked {
            state: std::mem::replace(&mut self.state, incoming.state),
            current: std::mem::replace(&mut self.current, incoming.current),
            version: std::mem::replace(&mut self.version, incoming.version),
            tail: std::mem::replace(&mut self.tail, incoming.tail),
            tail_len: std::mem::replace(&mut self.tail_len, incoming.tail_len),
            publisher: std::mem::replace(&mut self.publisher, incoming.publisher),
        };
        self.version.segments = segments;
        self.groups.insert(self.focus, out);
        self.focus = id;
        // A tail run in an older segment takes no more entries (the stream rolled over since
        // this group last wrote): freeze it at its length.
        if let Some(t) = &self.tail {
            if !Arc::ptr_eq(t.segment(), &self.active) {
                let len = self.tail_len;
                if let Some(last) = self.version.runs.last_mut() {
                    last.limit = len;
                }
                self.tail = None;
                self.tail_len = 0;
            }
        }
    }

    /// The reader cell of group `id` (made, empty, for a group that does not exist yet), so
    /// that a reader taken before a group's first write sees it.
    pub(crate) fn group_cell(&mut self, id: u64) -> Arc<ArcSwap<Version>> {
        if id == self.focus {
            return self.current.clone();
        }
        self.groups
            .parked
            .entry(id)
            .or_insert_with(|| Parked::empty(&self.notify))
            .current
            .clone()
    }

    /// The ids of the groups that exist (a non-default state), in increasing order.
    pub(crate) fn group_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .groups
            .parked
            .iter()
            .filter(|(_, p)| p.state != LogState::default())
            .map(|(id, _)| *id)
            .collect();
        if self.state != LogState::default() {
            ids.push(self.focus);
        }
        ids.sort_unstable();
        ids
    }

    /// Bytes of 24-byte `Group` record the focused group's next record needs first.
    #[inline]
    pub(super) fn switch_len(&self) -> u64 {
        if self.stream_group != self.focus {
            RECORD_HEADER_SIZE as u64
        } else {
            0
        }
    }

    /// Bytes of the `Group` record a new segment needs before the focused group's first
    /// record (after the checkpoints, the stream belongs to group 0).
    #[inline]
    pub(super) fn switch_len_in_new_segment(&self) -> u64 {
        if self.focus != 0 {
            RECORD_HEADER_SIZE as u64
        } else {
            0
        }
    }

    /// Writes a `Group` record naming the focused group if the stream's last record belongs
    /// to another group. The caller made room for it ([`Store::switch_len`]).
    #[inline]
    pub(super) fn switch_stream(&mut self) -> Result<()> {
        if self.stream_group != self.focus {
            self.write_here(RecordKind::Group, self.focus, &[])?;
            self.stream_group = self.focus;
        }
        Ok(())
    }

    /// Rolls over if a record of `rs` bytes of the focused group (and the `Group` record
    /// before it, if needed) does not fit in the active segment, then writes that `Group`
    /// record.
    #[inline]
    pub(super) fn make_room(&mut self, rs: u64, p: &mut Pending) -> Result<()> {
        if self.write_pos + self.switch_len() + rs > self.active.size() {
            self.rollover(p)?;
            self.check_fits_after_rollover(rs)?;
        }
        self.switch_stream()
    }

    /// Bytes of every checkpoint record a new segment starts with, if the focused group's
    /// state were `state`: group 0's checkpoint and one group checkpoint per other group that
    /// exists.
    pub(super) fn checkpoints_len(&self, state: &LogState) -> usize {
        let focused = if self.focus == 0 {
            record_size(checkpoint_len(state))
        } else {
            let main = self
                .groups
                .parked
                .get(&0)
                .map_or(checkpoint_len(&LogState::default()), |p| {
                    checkpoint_len(&p.state)
                });
            record_size(main) + group_checkpoint_bytes(state)
        };
        focused + self.groups.parked_cp
    }

    /// Writes the group checkpoints after a segment's checkpoint: the state of every group
    /// other than 0 that exists, in id order. The stream then belongs to group 0.
    pub(super) fn write_group_checkpoints(&mut self) -> Result<()> {
        let mut groups: Vec<(u64, Vec<u8>)> = self
            .groups
            .parked
            .iter()
            .filter(|(id, p)| **id != 0 && p.state != LogState::default())
            .map(|(id, p)| (*id, encode_checkpoint(&p.state, 0, 0)))
            .collect();
        if self.focus != 0 && self.state != LogState::default() {
            groups.push((self.focus, encode_checkpoint(&self.state, 0, 0)));
        }
        groups.sort_unstable_by_key(|g| g.0);
        for (id, body) in groups {
            self.write_here(RecordKind::GroupCheckpoint, id, &body)?;
        }
        self.stream_group = 0;
        Ok(())
    }

    /// The state of group 0, focused or not.
    pub(super) fn main_state(&self) -> LogState {
        if self.focus == 0 {
            self.state.clone()
        } else {
            self.groups
                .parked
                .get(&0)
                .map(|p| p.state.clone())
                .unwrap_or_default()
        }
    }

    /// Index of the oldest segment any group's live entries need (the active one if none
    /// does).
    pub(super) fn oldest_needed_segment(&self) -> usize {
        let segs = &self.version.segments;
        let pos = |run: &RunRef| segs.iter().position(|s| Arc::ptr_eq(s, run.run.segment()));
        let mut keep_from = segs.len().saturating_sub(1);
        let firsts = std::iter::once(&self.version.runs)
            .chain(self.groups.parked.values().map(|p| &p.version.runs))
            .filter_map(|runs| runs.first());
        for r in firsts {
            if let Some(k) = pos(r) {
                keep_from = keep_from.min(k);
                if k == 0 {
                    break;
                }
            }
        }
        keep_from
    }

    /// Removes group `id`: its entries, meta values and state, with one `GroupRemove` record
    /// (group 0 becomes empty). Segments that no group needs any more are deleted after the
    /// next flush. Removing a group that does not exist writes nothing.
    pub(crate) fn remove_group(&mut self, id: u64) -> Result<()> {
        self.check_writable()?;
        self.focus(id);
        if self.state == LogState::default() && self.version.runs.is_empty() {
            return Ok(());
        }
        self.write_record(RecordKind::GroupRemove, id, &[])?;
        self.state = LogState::default();
        if let Some(t) = self.tail.take() {
            t.publish(self.tail_len);
        }
        self.tail_len = 0;
        self.version.runs.clear();
        self.release_unneeded_segments();
        self.publish();
        Ok(())
    }
}

/// A group's place in the stream, for the report of the groups that hold the oldest data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupUsage {
    /// Group id.
    pub id: u64,
    /// First retained index.
    pub first_index: u64,
    /// One past the last index.
    pub next_index: u64,
    /// Sequence number of the oldest segment file holding one of its live entries.
    pub oldest_segment: u64,
    /// Live entries it holds in that segment.
    pub entries_in_oldest: u64,
}

impl Store {
    /// Makes the log ready for records of groups other than 0: they need a version 3
    /// segment, so an active segment written by an older build is sealed and a new one
    /// started (and synced).
    pub(crate) fn prepare_for_groups(&mut self) -> Result<()> {
        if self.active.seed().version < crate::format::GROUPS_FORMAT_VERSION {
            self.roll_to_new_segment()?;
            self.sync()?;
        }
        Ok(())
    }

    /// Bytes the focused group's checkpoint body may take: the meta budget less what every
    /// other group's checkpoint takes in each segment.
    pub(crate) fn group_meta_limit(&self) -> usize {
        let own = record_size(checkpoint_len(&self.state));
        let others = self.checkpoints_len(&self.state).saturating_sub(own);
        self.config.meta_limit().saturating_sub(others)
    }

    /// Refuses to create the focused group (its first record) when every segment's
    /// checkpoints would then pass their budget ([`Error::TooManyGroups`]): a group that
    /// exists adds a checkpoint record to every new segment, and the budget is what keeps
    /// room for the largest entry after them.
    pub(super) fn check_group_room(&self) -> Result<()> {
        if self.focus == 0 || self.state != LogState::default() {
            return Ok(());
        }
        // The smallest state of a group that exists.
        let created = LogState {
            next: 1,
            ..LogState::default()
        };
        let size = self
            .checkpoints_len(&created)
            .saturating_sub(RECORD_HEADER_SIZE);
        let max = self.config.meta_limit();
        if size > max {
            return Err(crate::Error::TooManyGroups {
                groups: self.group_ids().len() + 1,
                size,
                max,
            });
        }
        Ok(())
    }

    /// Waits until every concurrent append's records are copied and published.
    pub(crate) fn drain_reservations(&self) {
        self.frontier.drain();
    }

    /// Poisons the log with `why` (see [`crate::Error::Poisoned`]).
    pub(crate) fn poison(&self, why: String) -> crate::Error {
        self.flusher.poison(why)
    }

    /// Every group with live entries, the one holding the oldest data first.
    pub(crate) fn group_usage(&self) -> Vec<GroupUsage> {
        let usage = |id: u64, state: &LogState, runs: &[RunRef]| {
            let first = runs.first()?;
            let seg = first.run.segment();
            let in_oldest: u64 = runs
                .iter()
                .take_while(|r| Arc::ptr_eq(r.run.segment(), seg))
                .map(|r| {
                    let end = r.run.first().saturating_add(r.len()).min(state.next);
                    end.saturating_sub(r.run.first().max(state.first))
                })
                .sum();
            Some(GroupUsage {
                id,
                first_index: state.first,
                next_index: state.next,
                oldest_segment: seg.seq(),
                entries_in_oldest: in_oldest,
            })
        };
        let mut all: Vec<GroupUsage> = std::iter::once((self.focus, &self.state, &self.version))
            .chain(
                self.groups
                    .parked
                    .iter()
                    .map(|(id, p)| (*id, &p.state, &p.version)),
            )
            .filter_map(|(id, state, version)| usage(id, state, &version.runs))
            .collect();
        all.sort_unstable_by_key(|u| (u.oldest_segment, u.id));
        all
    }
}

impl Store {
    /// Checks, writing nothing, that the focused group accepts `entries` (replacing any at or
    /// after the first one's index) and then `metas`: the checks of
    /// [`Store::append_parts_after`] with a truncate, and of [`Store::put_metas`].
    pub(crate) fn check_overwrite(
        &self,
        entries: &[(u64, &[u8])],
        metas: &[(u64, &[u8])],
    ) -> Result<()> {
        self.check_writable()?;
        let mut after = self.state.clone();
        let mut lead = None;
        if let Some(&(first, _)) = entries.first() {
            if after.check_truncate(first)? {
                after.apply_truncate(first);
                lead = Some(0);
            }
        }
        self.plan_append(&after, lead, entries.iter().map(|(i, p)| (*i, &[][..], *p)))?;
        if let Some(&(key, _)) = metas.first() {
            for (k, v) in metas {
                after.apply_meta(*k, Arc::from(*v));
            }
            self.check_meta_size(&after, key)?;
        }
        Ok(())
    }
}
