//! The replay rules of the merge: each record of a kept segment applied to the group it
//! belongs to, through the same [`LogState`] rules the writer uses.

use std::collections::BTreeMap;

use super::plan::{GroupPlan, RunPlan};
use super::scan::{Item, Scan};
use crate::error::{Error, Result};
use crate::format::MAX_INDEX;
use crate::segment::Segment;
use crate::state::LogState;

/// "of group G " for a shared log's group, nothing for the log's own.
pub(super) fn of_group(group: u64) -> String {
    if group == 0 {
        String::new()
    } else {
        format!("of group {group} ")
    }
}

/// Whether a segment's checkpoints (`main` for group 0, `cp_groups` for the others) equal the
/// replayed state of every group.
pub(super) fn same_states(
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
pub(super) fn replay_rewrite(
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
pub(super) fn replay_item(
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
        Item::MetaRemove { key, .. } => state.remove_meta(*key),
        // Handled by `replay_item`.
        Item::Group { .. }
        | Item::GroupCheckpoint { .. }
        | Item::GroupRemove { .. }
        | Item::Rewrite { .. } => {}
    }
    Ok(())
}
