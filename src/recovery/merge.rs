//! The merge: replays the scans oldest first through the same [`LogState`] rules the writer
//! uses and decides what is a torn tail (cut it) and what is corruption (refuse to open,
//! naming the file and offset).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::files::Directory;
use super::plan::{GroupPlan, Plan, RunPlan};
use super::replay::{of_group, replay_item, replay_rewrite, same_states};
use super::scan::{Item, Scan};
use super::verdict::{DropReason, Fate};
use super::{RecoveryMode, RecoveryReport};
use crate::error::{Error, Result};
use crate::format::SEGMENT_HEADER_SIZE;
use crate::segment::Segment;
use crate::state::LogState;

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
