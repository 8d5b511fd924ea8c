//! The merge: replays the scans oldest first through the same [`LogState`] rules the writer
//! uses and decides what is a torn tail (cut it) and what is corruption (refuse to open,
//! naming the file and offset).

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::files::Directory;
use super::scan::{Item, Scan};
use super::verdict::{DropReason, Fate};
use super::{RecoveryMode, RecoveryReport};
use crate::error::{Error, Result};
use crate::format::{MAX_INDEX, SEGMENT_HEADER_SIZE};
use crate::index::Offsets;
use crate::segment::Segment;
use crate::state::LogState;

/// A run of entries rebuilt by the merge: which kept segment, first index, and where its
/// record offsets are in that segment's scan (no copy of them: the index run adopts the
/// scan's, see [`Plan::take_run_offsets`]).
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// Position in [`Plan::segments`] (and [`Plan::scans`]).
    pub segment: usize,
    /// Log index of the first offset.
    pub first: u64,
    /// Positions of its record offsets in the segment's [`Scan::offsets`], in order,
    /// increasing and not overlapping.
    pub slots: Vec<Range<usize>>,
    /// Number of entries (the sum of the lengths of `slots`).
    len: u64,
}

impl RunPlan {
    fn new(segment: usize, first: u64, slots: Range<usize>) -> Self {
        let len = slots.len() as u64;
        RunPlan {
            segment,
            first,
            slots: vec![slots],
            len,
        }
    }

    /// One past the last index of the run.
    pub fn end(&self) -> u64 {
        self.first.saturating_add(self.len)
    }

    /// The run's record offsets, read from its segment's scan.
    pub fn offsets<'a>(&'a self, scan: &'a Scan) -> impl Iterator<Item = u32> + 'a {
        self.slots
            .iter()
            .flat_map(|r| r.clone())
            .filter_map(|i| scan.offsets.get(i))
    }

    /// Appends the entries at `slots` (after every slot the run has).
    fn extend(&mut self, slots: Range<usize>) {
        self.len += slots.len() as u64;
        match self.slots.last_mut() {
            Some(last) if last.end == slots.start => last.end = slots.end,
            _ => self.slots.push(slots),
        }
    }

    /// Keeps the first `keep` entries.
    fn truncate(&mut self, keep: u64) {
        let mut left = keep;
        self.slots.retain_mut(|r| {
            let n = (r.len() as u64).min(left);
            left -= n;
            r.end = r.start + n as usize;
            n > 0
        });
        self.len = self.len.min(keep);
    }
}

/// What recovery found and what it must change before the log opens.
#[derive(Debug)]
pub struct Plan {
    /// Segments that stay, oldest first; the last one is written next.
    pub segments: Vec<Arc<Segment>>,
    /// Scan of each kept segment.
    pub scans: Vec<Arc<Scan>>,
    /// Recovered state.
    pub state: LogState,
    /// Index runs.
    pub runs: Vec<RunPlan>,
    /// The other groups of a shared log, by id (never 0), each with a non-default state.
    pub groups: BTreeMap<u64, GroupPlan>,
    /// Where writing resumes in the last segment.
    pub write_pos: u64,
    /// CRC field of the last record before `write_pos` (the next segment's checkpoint names
    /// it).
    pub last_crc: u32,
    /// The group the last record before `write_pos` belongs to (0 after the checkpoints).
    pub stream_group: u64,
    /// The last segment needs a fresh checkpoint at `write_pos` (its own was lost).
    pub needs_checkpoint: bool,
    /// Files to delete: segments after a cut, never-written segment files, prepared files.
    pub remove: Vec<PathBuf>,
    /// Pooled files found in the directory (kept for reuse, never read as data).
    pub pool: Vec<PathBuf>,
    /// Leading segments (indexes into `segments`... always a prefix) that hold only purged
    /// entries.
    pub purged_prefix: usize,
    /// What happened, for people.
    pub report: RecoveryReport,
    /// What happens to each segment file of the directory, oldest first.
    pub fates: Vec<Fate>,
}

impl Plan {
    /// The record offsets of each of [`Plan::runs`], in order, for the index runs to adopt.
    /// Moved out of the scans, not copied, when the plan holds the only reference to a scan
    /// and no other run names its segment (always, for `Store::open`): the scan's offsets
    /// are then compacted in place to the run's. Otherwise they are copied. Scans whose
    /// segment holds no run lose their offsets too.
    pub fn take_run_offsets(&mut self) -> (Vec<Offsets>, BTreeMap<u64, Vec<Offsets>>) {
        let mut runs_per_segment = vec![0usize; self.scans.len()];
        let all_runs = self
            .runs
            .iter()
            .chain(self.groups.values().flat_map(|g| g.runs.iter()));
        for rp in all_runs {
            if let Some(n) = runs_per_segment.get_mut(rp.segment) {
                *n += 1;
            }
        }
        // Offsets no run needs (purged or truncated entries) go now.
        for (scan, _) in self
            .scans
            .iter_mut()
            .zip(&runs_per_segment)
            .filter(|(_, &n)| n == 0)
        {
            if let Some(scan) = Arc::get_mut(scan) {
                scan.offsets = Offsets::default();
            }
        }
        let scans = &mut self.scans;
        let mut take = |runs: &[RunPlan]| -> Vec<Offsets> {
            runs.iter()
                .map(|rp| {
                    let Some(scan) = scans.get_mut(rp.segment) else {
                        return Offsets::default();
                    };
                    if runs_per_segment[rp.segment] == 1 {
                        if let Some(scan) = Arc::get_mut(scan) {
                            let mut offsets = std::mem::take(&mut scan.offsets);
                            offsets.keep_only(&rp.slots);
                            return offsets;
                        }
                    }
                    scan.offsets.copy_of(&rp.slots)
                })
                .collect()
        };
        let main = take(&self.runs);
        let groups = self
            .groups
            .iter()
            .map(|(id, g)| (*id, take(&g.runs)))
            .collect();
        (main, groups)
    }
}

/// A group's replayed state and index runs (group 0 is the log's own: [`Plan::state`] and
/// [`Plan::runs`]).
#[derive(Debug, Clone, Default)]
pub struct GroupPlan {
    /// Recovered state.
    pub state: LogState,
    /// Index runs.
    pub runs: Vec<RunPlan>,
}

impl GroupPlan {
    /// A group whose state is the default (no entry, no first index, no meta value) does not
    /// exist: it is neither written in checkpoints nor kept.
    pub fn exists(&self) -> bool {
        self.state != LogState::default()
    }
}

/// Merges the scans of `dir` oldest first and decides how the log recovers. Reads nothing:
/// every file was opened and scanned once by [`examine`](super::files::examine).
///
/// Fails with [`Error::Corrupt`] (file, offset, why) when the log must not open in `mode`.
pub fn merge(dir: &Directory, mode: RecoveryMode) -> Result<Plan> {
    let started = std::time::Instant::now();
    let mut remove: Vec<PathBuf> = dir.prepared.clone();
    let mut report = RecoveryReport::default();
    let mut fates: Vec<Fate> = vec![Fate::Kept; dir.files.len()];

    // A file whose header never reached the disk was created but never synced (a flush syncs
    // a segment from its header on): nothing in it or after it was acknowledged, so it and
    // every later file are dropped.
    let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(dir.files.len());
    let mut scans: Vec<Arc<Scan>> = Vec::with_capacity(dir.files.len());
    for (i, file) in dir.files.iter().enumerate() {
        if let Some(prev) = i.checked_sub(1).and_then(|j| dir.files.get(j)) {
            if prev.seq.checked_add(1) != Some(file.seq) {
                return Err(Error::corrupt(
                    &file.path,
                    0,
                    format!(
                        "segment {} is missing (found {} then {})",
                        prev.seq.saturating_add(1),
                        prev.seq,
                        file.seq
                    ),
                ));
            }
        }
        match &file.opened {
            Ok((seg, scan)) => {
                if seg.is_short() {
                    report.short_segment = Some(file.path.clone());
                }
                segments.push(seg.clone());
                scans.push(scan.clone());
            }
            Err(_) if file.never_written => {
                for (j, later) in dir.files.iter().enumerate().skip(i) {
                    remove.push(later.path.clone());
                    report.dropped_files.push(later.path.clone());
                    fates[j] = Fate::Dropped(if j == i {
                        DropReason::NeverWritten
                    } else {
                        DropReason::AfterNeverWritten
                    });
                }
                break;
            }
            Err(e) => return Err(e.clone()),
        }
    }

    report.segments_scanned = scans.len();
    report.entry_records = scans.iter().map(|s| s.entries).sum();
    report.bytes_scanned = scans.iter().map(|s| s.end).sum();

    // Merge oldest first. Group 0 is the log's own; the others are a shared log's groups.
    let mut groups: BTreeMap<u64, GroupPlan> = BTreeMap::from([(0, GroupPlan::default())]);
    let mut keep = segments.len();
    let mut write_pos = SEGMENT_HEADER_SIZE as u64;
    // CRC field of the last kept record, and the group the stream was in there.
    let mut last_crc = 0u32;
    let mut stream_group = 0u64;
    let mut needs_checkpoint = segments.is_empty();
    for (k, (seg, scan)) in segments.iter().zip(&scans).enumerate() {
        let newest = k + 1 == segments.len();
        let sealed_end = seg.sealed_end();
        // Where this segment's valid part ends and why, if it ends early.
        let mut cut: Option<(u64, String)> = scan.torn.clone();
        if let (Some(end), None) = (sealed_end, &cut) {
            if end != scan.end {
                cut = Some((
                    scan.end,
                    format!(
                        "records end at {} but the segment was sealed at {end}",
                        scan.end
                    ),
                ));
            }
        }
        // An unsealed segment's synced mark: every record below it was durable, so records
        // that end before it were damaged after they were synced (corruption), not torn by a
        // crash. (Past the mark, an early end is still a torn write.)
        let synced_damage = match (sealed_end, seg.synced_mark()) {
            (None, Some(mark)) if scan.end < mark => {
                let why = match &cut {
                    Some((_, why)) => format!(
                        "{why}, below the synced mark {mark} (the records up to there were durable)"
                    ),
                    None => format!(
                        "records end at {} but the segment was synced up to {mark}",
                        scan.end
                    ),
                };
                cut = Some((scan.end, why));
                true
            }
            _ => false,
        };
        // Damage in a range that was durable: corruption, never a torn write.
        let durable_damage = sealed_end.is_some() || synced_damage;
        let mut items = scan.items.iter().peekable();
        match items.next() {
            Some(Item::Checkpoint {
                offset,
                first,
                next,
                prev_end,
                prev_crc,
                metas,
            }) => {
                let chained = k == 0 || {
                    let prev = &scans[k - 1];
                    (prev.end, prev.last_crc) == (*prev_end, *prev_crc)
                };
                let main_cp = LogState {
                    first: *first,
                    next: *next,
                    metas: Arc::new(metas.clone()),
                };
                // The group checkpoints right after it: the state of every other group.
                let mut cp_groups: BTreeMap<u64, LogState> = BTreeMap::new();
                while let Some(Item::GroupCheckpoint {
                    offset,
                    id,
                    first,
                    next,
                    metas,
                }) = items.peek()
                {
                    let st = LogState {
                        first: *first,
                        next: *next,
                        metas: Arc::new(metas.clone()),
                    };
                    if *id == 0 || st == LogState::default() || cp_groups.insert(*id, st).is_some()
                    {
                        return Err(Error::corrupt(
                            seg.path(),
                            *offset,
                            format!("malformed group checkpoint for group {id}"),
                        ));
                    }
                    items.next();
                }
                if k == 0 {
                    groups.clear();
                    groups.insert(
                        0,
                        GroupPlan {
                            state: main_cp,
                            runs: Vec::new(),
                        },
                    );
                    for (id, st) in cp_groups {
                        groups.insert(
                            id,
                            GroupPlan {
                                state: st,
                                runs: Vec::new(),
                            },
                        );
                    }
                } else if !chained || !same_states(&groups, &main_cp, &cp_groups) {
                    let state = groups.get(&0).map(|g| g.state.clone()).unwrap_or_default();
                    let why = format!(
                        "checkpoint says first={first} next={next} after a segment ending at {prev_end} \
                         (crc {prev_crc:#x}), but the previous segment ends at {} (crc {:#x}) with first={} next={}",
                        scans[k - 1].end, scans[k - 1].last_crc, state.first, state.next
                    );
                    // The previous segment lost its unsynced tail while this one's start
                    // reached the disk: a torn write if the previous one was never sealed.
                    let prev = &segments[k - 1];
                    if prev.sealed_end().is_some() {
                        corrupt_or_tolerate(mode, &mut report, seg.path(), *offset, &why)?;
                    } else {
                        report.cut = Some((prev.path().to_path_buf(), scans[k - 1].end, why));
                    }
                    keep = k;
                    break;
                }
            }
            _ => {
                // No checkpoint: nothing valid in this segment. Only a torn write if the
                // segment was never sealed (nor synced past it).
                if durable_damage {
                    let (off, why) = cut
                        .clone()
                        .unwrap_or((SEGMENT_HEADER_SIZE as u64, String::new()));
                    corrupt_or_tolerate(mode, &mut report, seg.path(), off, &why)?;
                }
                if k == 0 && !newest {
                    return Err(Error::corrupt(
                        seg.path(),
                        SEGMENT_HEADER_SIZE as u64,
                        "oldest segment has no checkpoint; the log's start state is unknown",
                    ));
                }
                if let Some((off, why)) = &cut {
                    report.cut = Some((seg.path().to_path_buf(), *off, why.clone()));
                }
                needs_checkpoint = true;
                write_pos = SEGMENT_HEADER_SIZE as u64;
                keep = k + 1;
                break;
            }
        }
        // Records after the checkpoints belong to group 0 until a group record says otherwise.
        let mut group = 0u64;
        let mut rewrite_cut: Option<(u64, String, u32)> = None;
        while let Some(item) = items.next() {
            let Item::Rewrite {
                offset,
                first,
                count,
                prev_crc,
            } = item
            else {
                replay_item(seg, k, scan, item, &mut groups, &mut group)?;
                continue;
            };
            // Its entries follow at once (possibly with later consecutive entries of the
            // group in the same item).
            let entries = match items.peek() {
                Some(Item::Entries {
                    offset: at,
                    first: f,
                    slots,
                }) if f == first && slots.len() as u64 >= *count => {
                    let n = usize::try_from(*count).unwrap_or(usize::MAX);
                    let split = slots.start.saturating_add(n).min(slots.end);
                    let own = Item::Entries {
                        offset: *at,
                        first: *first,
                        slots: slots.start..split,
                    };
                    let rest = (split < slots.end).then(|| Item::Entries {
                        offset: scan.offsets.get(split).map_or(*at, u64::from),
                        first: first.saturating_add(*count),
                        slots: split..slots.end,
                    });
                    items.next();
                    Some((own, rest))
                }
                _ if *count == 0 => None,
                _ => {
                    let why = format!(
                        "the rewrite of group {group} at index {first} lacks some of its {count} \
                         entries (a crash cut it short)"
                    );
                    rewrite_cut = Some((*offset, why, *prev_crc));
                    break;
                }
            };
            replay_rewrite(seg, k, scan, *offset, *first, &mut groups, group)?;
            if let Some((own, rest)) = entries {
                replay_item(seg, k, scan, &own, &mut groups, &mut group)?;
                if let Some(rest) = rest {
                    replay_item(seg, k, scan, &rest, &mut groups, &mut group)?;
                }
            }
        }
        write_pos = scan.end;
        last_crc = scan.last_crc;
        stream_group = group;
        let mut durable_damage = durable_damage;
        if let Some((off, why, prev_crc)) = rewrite_cut {
            // The writer writes a rewrite and its entries in one call, before any flush
            // covers them: only a torn tail can cut it, and the log ends before it.
            write_pos = off;
            last_crc = prev_crc;
            durable_damage |= seg.synced_mark().is_some_and(|m| off < m);
            cut = Some((off, why));
        }
        if let Some((off, why)) = cut {
            // A sealed segment was fully durable when it was marked, and an unsealed one up
            // to its synced mark: damage there is not a torn write, whether or not it is the
            // newest file.
            if durable_damage {
                corrupt_or_tolerate(mode, &mut report, seg.path(), off, &why)?;
            }
            report.cut = Some((seg.path().to_path_buf(), off, why));
            keep = k + 1;
            break;
        }
    }
    for (k, seg) in segments.drain(keep..).enumerate() {
        remove.push(seg.path().to_path_buf());
        report.dropped_files.push(seg.path().to_path_buf());
        if let Some(f) = fates.get_mut(keep + k) {
            *f = Fate::Dropped(DropReason::AfterCut);
        }
    }
    // Dropped files come after the kept ones in the report, oldest first.
    report.dropped_files.sort();
    if let Some((path, offset, reason)) = &report.cut {
        if let Some(k) = dir.files.iter().take(keep).position(|f| &f.path == path) {
            fates[k] = Fate::Cut {
                offset: *offset,
                reason: reason.clone(),
            };
        }
    }
    scans.truncate(keep);
    if segments.is_empty() {
        needs_checkpoint = true;
        write_pos = SEGMENT_HEADER_SIZE as u64;
    }
    // The runs must hold every live entry: a gap means a segment that held entries is gone.
    // Without a cut, the record that explains the gap may be the one an unsealed recycled
    // newest segment ended at (not a torn write there, but damaged if entries are missing).
    let recycled_end = segments.last().zip(scans.last()).and_then(|(seg, scan)| {
        let (off, why) = scan.recycled_end.clone()?;
        Some((seg.path().to_path_buf(), off, why))
    });
    // Groups in their default state do not exist (see `GroupPlan::exists`).
    groups.retain(|id, g| *id == 0 || g.exists());
    let main = groups.remove(&0).unwrap_or_default();
    for (id, g) in std::iter::once((&0, &main)).chain(groups.iter()) {
        check_coverage(
            &segments,
            *id,
            &g.state,
            &g.runs,
            report.cut.as_ref().or(recycled_end.as_ref()),
        )?;
    }
    // Leading segments that no live entry of any group needs.
    let first_used = std::iter::once(&main)
        .chain(groups.values())
        .filter_map(|g| g.runs.first().map(|r| r.segment))
        .min()
        .unwrap_or(usize::MAX);
    let purged_prefix = first_used.min(segments.len().saturating_sub(1));
    let (state, runs) = (main.state, main.runs);
    if needs_checkpoint {
        stream_group = 0;
    }
    report.elapsed = dir.elapsed + started.elapsed();
    Ok(Plan {
        segments,
        scans,
        state,
        runs,
        groups,
        write_pos,
        last_crc,
        stream_group,
        needs_checkpoint,
        remove,
        pool: dir.pool.clone(),
        purged_prefix,
        report,
        fates,
    })
}

/// Checks that the runs hold every live entry. When they do not and recovery cut a damaged
/// record, the cut is what lost them (later changes, such as deleting the segments a purge
/// released, depended on that record), so the error names its file and offset.
fn check_coverage(
    segments: &[Arc<Segment>],
    group: u64,
    state: &LogState,
    runs: &[RunPlan],
    cut: Option<&(PathBuf, u64, String)>,
) -> Result<()> {
    let mut expect = state.first;
    let mut ok = true;
    for r in runs {
        let end = r.end();
        if end <= state.first {
            continue; // dead run (all purged or truncated away)
        }
        if r.first > expect {
            ok = false;
            break;
        }
        expect = end;
    }
    if ok && (state.is_empty() || expect == state.next) {
        return Ok(());
    }
    if let Some((path, offset, why)) = cut {
        return Err(Error::corrupt(
            path,
            *offset,
            format!(
                "damaged record ({why}); without it entries {expect}..{} {}are missing, and the \
                 segment that held them is gone, so the record was durable and this is \
                 corruption, not a torn write",
                state.next,
                of_group(group)
            ),
        ));
    }
    let (path, offset) = segments
        .first()
        .map(|s| (s.path().to_path_buf(), 0))
        .unwrap_or_default();
    Err(Error::corrupt(
        path,
        offset,
        format!(
            "entries {expect}..{} {}are missing: a segment that held them is gone",
            state.next,
            of_group(group)
        ),
    ))
}

/// "of group G " for a shared log's group, nothing for the log's own.
fn of_group(group: u64) -> String {
    if group == 0 {
        String::new()
    } else {
        format!("of group {group} ")
    }
}

/// Whether a segment's checkpoints (`main` for group 0, `cp_groups` for the others) equal the
/// replayed state of every group.
fn same_states(
    groups: &BTreeMap<u64, GroupPlan>,
    main: &LogState,
    cp_groups: &BTreeMap<u64, LogState>,
) -> bool {
    let replayed_main = groups.get(&0).map(|g| &g.state);
    let others: Vec<(&u64, &LogState)> = groups
        .iter()
        .filter(|(id, g)| **id != 0 && g.exists())
        .map(|(id, g)| (id, &g.state))
        .collect();
    replayed_main == Some(main)
        && others.len() == cp_groups.len()
        && others.iter().all(|(id, st)| cp_groups.get(id) == Some(*st))
}

/// Replays a rewrite record of `group` (its entries follow): the group's entries are
/// dropped and its next index becomes `first` (a reset without meta values).
fn replay_rewrite(
    seg: &Segment,
    k: usize,
    scan: &Scan,
    offset: u64,
    first: u64,
    groups: &mut BTreeMap<u64, GroupPlan>,
    group: u64,
) -> Result<()> {
    let as_reset = Item::Purge {
        offset,
        first,
        metas: Vec::new(),
        reset: true,
    };
    let mut g = group;
    replay_item(seg, k, scan, &as_reset, groups, &mut g)
}

/// Replays one record into the group it belongs to: a group record changes `group`, the
/// group the next records belong to.
fn replay_item(
    seg: &Segment,
    k: usize,
    scan: &Scan,
    item: &Item,
    groups: &mut BTreeMap<u64, GroupPlan>,
    group: &mut u64,
) -> Result<()> {
    match item {
        Item::Group { id, .. } => *group = *id,
        Item::GroupRemove { id, .. } => {
            groups.insert(*id, GroupPlan::default());
        }
        Item::GroupCheckpoint { offset, id, .. } => {
            return Err(Error::corrupt(
                seg.path(),
                *offset,
                format!("group checkpoint for group {id} after other records"),
            ))
        }
        _ => {
            let g = groups.entry(*group).or_default();
            replay(seg, k, scan, item, &mut g.state, &mut g.runs).map_err(|e| match e {
                Error::Corrupt {
                    path,
                    offset,
                    reason,
                } if *group != 0 => Error::Corrupt {
                    path,
                    offset,
                    reason: format!("group {group}: {reason}"),
                },
                e => e,
            })?;
        }
    }
    Ok(())
}

fn corrupt_or_tolerate(
    mode: RecoveryMode,
    report: &mut RecoveryReport,
    path: &Path,
    offset: u64,
    why: &str,
) -> Result<()> {
    match mode {
        RecoveryMode::Strict => Err(Error::corrupt(path, offset, why)),
        RecoveryMode::TruncateAtCorruption => {
            report.tolerated_corruption = Some(format!("{}:{offset}: {why}", path.display()));
            Ok(())
        }
    }
}

fn replay(
    seg: &Segment,
    k: usize,
    scan: &Scan,
    item: &Item,
    state: &mut LogState,
    runs: &mut Vec<RunPlan>,
) -> Result<()> {
    let bad = |offset: u64, e: Error| {
        Error::corrupt(
            seg.path(),
            offset,
            format!("record breaks the log's rules: {e}"),
        )
    };
    match item {
        Item::Checkpoint { offset, .. } => {
            return Err(Error::corrupt(seg.path(), *offset, "second checkpoint"))
        }
        Item::Entries {
            offset,
            first,
            slots,
        } => {
            state.check_append(*first).map_err(|e| bad(*offset, e))?;
            // Every index of the run must leave room for a successor, like the first; the
            // error names the first record past the limit.
            let last = (slots.len() as u64)
                .checked_sub(1)
                .and_then(|n| first.checked_add(n))
                .filter(|&l| l <= MAX_INDEX);
            let Some(last) = last else {
                let slot = usize::try_from(MAX_INDEX.saturating_sub(*first).saturating_add(1))
                    .unwrap_or(usize::MAX);
                let at = slots
                    .start
                    .checked_add(slot)
                    .filter(|&i| i < slots.end)
                    .and_then(|i| scan.offsets.get(i))
                    .map_or(*offset, u64::from);
                return Err(bad(
                    at,
                    Error::IndexTooLarge {
                        index: first.saturating_add(slot as u64),
                        max: MAX_INDEX,
                    },
                ));
            };
            state.apply_append(*first);
            state.next = last + 1;
            match runs.last_mut() {
                Some(r) if r.segment == k && r.end() == *first => r.extend(slots.clone()),
                _ => {
                    // An append to an empty log may skip ahead: older runs are gone.
                    if runs.last().is_some_and(|r| r.end() != *first) {
                        runs.clear();
                    }
                    runs.push(RunPlan::new(k, *first, slots.clone()))
                }
            }
        }
        Item::Truncate { offset, from } => {
            if state.check_truncate(*from).map_err(|e| bad(*offset, e))? {
                state.apply_truncate(*from);
                runs.retain(|r| r.first < *from);
                if let Some(r) = runs.last_mut() {
                    r.truncate(from.saturating_sub(r.first));
                }
                // A truncate at the first index leaves the runs before it no live entry (as
                // the writer's `normalize_runs` drops them): kept, they would pin their
                // segment.
                runs.retain(|r| r.end() > state.first);
            }
        }
        Item::Purge {
            first,
            metas,
            reset: true,
            offset,
        } => {
            if *first < state.first {
                return Err(bad(
                    *offset,
                    Error::BelowFirstIndex {
                        from: *first,
                        first: state.first,
                    },
                ));
            }
            for (k, v) in metas {
                state.apply_meta(*k, v.clone());
            }
            state.apply_reset(*first);
            runs.clear();
        }
        Item::Purge { first, metas, .. } => {
            for (k, v) in metas {
                state.apply_meta(*k, v.clone());
            }
            state.apply_purge(*first);
            runs.retain(|r| r.end() > *first);
        }
        Item::Meta { key, value, .. } => state.apply_meta(*key, value.clone()),
        // Handled by `replay_item`.
        Item::Group { .. }
        | Item::GroupCheckpoint { .. }
        | Item::GroupRemove { .. }
        | Item::Rewrite { .. } => {}
    }
    Ok(())
}
