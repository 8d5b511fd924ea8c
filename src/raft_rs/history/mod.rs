//! A checker for histories of a Jepsen-style **list-append** workload.
//!
//! Clients run operations on a few keys, each key holding a list of `u64` values:
//! [`Op::Append`] appends a value that is unique in the whole history, [`Op::Read`] returns the
//! key's whole list. Each [`Event`] records an operation's invoke tick, its completion tick
//! (if it completed) and its [`Outcome`]: `Ok` (with the list, for a read), `Failed` (it
//! definitely did not take effect) or `Indeterminate` (it timed out: it may or may not take
//! effect, at any time after its invoke). At the end the final list of every key on every
//! node is known; [`check`] tests the history against it.
//!
//! # The checks
//!
//! Keys are checked one at a time: linearizability is *local* (Herlihy and Wing, 1990), a
//! history is linearizable iff its restriction to each object is, and every operation here
//! touches one key. For a key, the *final list* `L` is the key's list on the first node of
//! the final state (a node without the key has an empty list); `pos(v)` is `v`'s position in
//! `L`.
//!
//! 1. **Agreement**: every node's final list for the key equals `L`.
//! 2. **Durability**: every acknowledged (`Ok`) append's value is in `L`.
//! 3. **No phantoms, no duplicates**: every value of `L` was appended to this key by an
//!    operation that is `Ok` or `Indeterminate` (not `Failed`), and is in `L` once.
//! 4. **Reads are prefixes**: every `Ok` read returned a prefix of `L`.
//! 5. **Real-time order**: whenever `a` completed before `b` was invoked (`a.complete <
//!    b.invoke`, strictly; equal ticks are concurrent):
//!    * append `A1` (`Ok`) → append `A2` (in `L`): `pos(A1) < pos(A2)`;
//!    * append `A` (`Ok`) → read `R`: `pos(A) < len(R)` (`A` is in `R`'s list);
//!    * read `R` → append `A` (in `L`, `Ok` or `Indeterminate`): `len(R) <= pos(A)` (`A` is not
//!      in `R`'s list);
//!    * read `R1` → read `R2`: `len(R1) <= len(R2)`.
//!
//!    An `Indeterminate` append has no completion (it may take effect at any later time), so it
//!    is only ever the *later* operation of a pair; `Failed` operations, `Indeterminate`
//!    appends absent from `L` and reads that are not `Ok` take no part (they had no effect).
//!
//! Malformed events (a completion not after the invoke, `Ok` without a completion, a read
//! without a list, a value appended twice) are reported too, as [`Violation::MalformedEvent`]
//! and [`Violation::DuplicateAppendOp`].
//!
//! # Why these suffice (and are necessary)
//!
//! The final state is read after the test settled, so it is a read of every key after every
//! operation (an `Indeterminate` append that has not taken effect by then counts as one that
//! never did). Appends are never undone, so the appends that took effect are exactly the
//! values of `L`, and any linearization orders them as `L` does (checks 2 and 3 are
//! necessary: an acknowledged append took effect, a failed one did not, values are unique;
//! check 1 is the replicas' state machines agreeing). A read happens at one point of that
//! order, so it returns a prefix of `L` (check 4), and a read returning `k` values must come
//! after the append at position `k - 1` and before the one at position `k`. So, given 1–4,
//! the order is forced up to the order of reads of equal length: give an append at position
//! `p` the rank `2p + 1` and a read of `k` values the rank `2k`, and order the operations by
//! rank, reads of equal rank by invoke tick. This sequential history is legal (each read
//! returns exactly the list built by the appends before it, the appends build `L`), so the
//! history is linearizable iff this order respects real time: `a.complete < b.invoke` ⇒ `a`
//! before `b`. The four rules of check 5 are exactly that condition for the four kinds of
//! pairs (`2p1 + 1 < 2p2 + 1`, `2p + 1 < 2k`, `2k < 2p + 1`, `2k1 <= 2k2`), and reads of
//! equal length are in real-time order already when ordered by invoke (`R1.invoke <
//! R1.complete < R2.invoke`). Hence `check` passes iff the history is linearizable and
//! consistent with the final state; it needs no search. (The tests compare it with an
//! exhaustive search for a linearization on thousands of small random histories.) When the
//! nodes disagree, the other checks still run, against the first node's list.
//!
//! Each rule of check 5 is "for every later operation `b`, the largest rank among the earlier
//! kind of operations that completed before `b.invoke`": sort those by completion, sweep the
//! later ones by invoke keeping a running maximum (and which event holds it, as the witness
//! of a violation). The whole check is `O(n log n)` plus the lengths of the lists compared.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::fmt::Write as _;

/// A client operation on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Appends `value` (unique in the whole history) to `key`'s list.
    Append {
        /// The key.
        key: u64,
        /// The value appended.
        value: u64,
    },
    /// Reads `key`'s whole list.
    Read {
        /// The key.
        key: u64,
    },
}

impl Op {
    /// The key the operation touches.
    pub(crate) fn key(&self) -> u64 {
        match *self {
            Op::Append { key, .. } | Op::Read { key } => key,
        }
    }
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It took effect: `Some(list)` for a read (the list it returned), `None` for an append.
    Ok(Option<Vec<u64>>),
    /// It definitely did not take effect.
    Failed,
    /// It timed out: it may or may not take effect, at any time after its invoke.
    Indeterminate,
}

/// One operation of the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Event {
    /// The client that ran it.
    pub(crate) client: u64,
    /// The operation.
    pub(crate) op: Op,
    /// The tick it was invoked at.
    pub(crate) invoke: u64,
    /// The tick it completed at (after `invoke`), if it completed.
    pub(crate) complete: Option<u64>,
    /// How it ended.
    pub(crate) outcome: Outcome,
}

/// The operations of a test, in any order; an event is named by its index in `events`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct History {
    /// The operations.
    pub(crate) events: Vec<Event>,
}

mod violation;

pub(crate) use violation::Violation;

/// A list for a history line: whole if short, else its ends and its length.
fn fmt_list(list: &[u64]) -> String {
    let join = |s: &[u64]| {
        s.iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if list.len() <= 12 {
        format!("[{}]", join(list))
    } else {
        format!(
            "[{}, ..., {}] ({} values)",
            join(&list[..3]),
            join(&list[list.len() - 6..]),
            list.len()
        )
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {} ", self.client)?;
        match self.op {
            Op::Append { key, value } => write!(f, "append key {key} value {value}")?,
            Op::Read { key } => write!(f, "read key {key}")?,
        }
        write!(f, ", invoke {}, complete ", self.invoke)?;
        match self.complete {
            Some(c) => write!(f, "{c}")?,
            None => f.write_str("-")?,
        }
        match &self.outcome {
            Outcome::Ok(None) => f.write_str(": ok"),
            Outcome::Ok(Some(list)) => write!(f, ": ok {}", fmt_list(list)),
            Outcome::Failed => f.write_str(": failed"),
            Outcome::Indeterminate => f.write_str(": indeterminate"),
        }
    }
}

/// An event's effect as the checks see it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Acknowledged, completed at this tick.
    Done(u64),
    /// Definitely no effect.
    Failed,
    /// May or may not have taken effect, at any time after its invoke.
    Unknown,
}

/// Validates the events: each one's status, the malformed ones reported.
fn statuses(history: &History, out: &mut Vec<Violation>) -> Vec<Status> {
    let mut bad = |event, reason| out.push(Violation::MalformedEvent { event, reason });
    history
        .events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let backwards = e.complete.is_some_and(|c| c <= e.invoke);
            if backwards {
                bad(i, "it completes at or before its invoke");
            }
            match (&e.outcome, &e.op) {
                (Outcome::Failed, _) => Status::Failed,
                (Outcome::Indeterminate, _) => Status::Unknown,
                (Outcome::Ok(list), op) => {
                    if list.is_some() && matches!(op, Op::Append { .. }) {
                        bad(i, "an append returned a list (ignored)");
                    }
                    if list.is_none() && matches!(op, Op::Read { .. }) {
                        bad(i, "an acknowledged read returned no list");
                        return Status::Unknown;
                    }
                    match e.complete {
                        None => {
                            bad(i, "it is acknowledged without a completion tick");
                            Status::Unknown
                        }
                        Some(_) if backwards => Status::Unknown,
                        Some(c) => Status::Done(c),
                    }
                }
            }
        })
        .collect()
}

/// For each query tick, the largest `rank` among `earlier` entries `(tick, rank, event)` with
/// `tick < query`, and the event holding it (the first to complete, among equal ranks).
fn max_before(earlier: &mut [(u64, usize, usize)], queries: &[u64]) -> Vec<Option<(usize, usize)>> {
    earlier.sort_unstable();
    let mut order: Vec<usize> = (0..queries.len()).collect();
    order.sort_unstable_by_key(|&q| queries[q]);
    let mut out = vec![None; queries.len()];
    let (mut best, mut next): (Option<(usize, usize)>, usize) = (None, 0);
    for q in order {
        while next < earlier.len() && earlier[next].0 < queries[q] {
            let (_, rank, event) = earlier[next];
            if best.is_none_or(|(b, _)| rank > b) {
                best = Some((rank, event));
            }
            next += 1;
        }
        out[q] = best;
    }
    out
}

/// A node's final list for `key` (empty if it lacks the key).
fn list_of(m: &BTreeMap<u64, Vec<u64>>, key: u64) -> &[u64] {
    m.get(&key).map_or(&[], |l| &l[..])
}

/// Checks the history against the final state (`(node id, key → list)` per node), as the
/// module documentation describes: `Ok` iff the history is linearizable and every node ends
/// with the lists it implies; else every violation found, malformed events first, then key
/// by key. With no node at all, every key's final list is empty.
pub(crate) fn check(
    history: &History,
    final_state: &[(u64, BTreeMap<u64, Vec<u64>>)],
) -> Result<(), Vec<Violation>> {
    let mut out = Vec::new();
    let status = statuses(history, &mut out);

    // Who appended each value; each key's appends and reads, in event order.
    let mut appender: HashMap<u64, usize> = HashMap::new();
    let mut ops: BTreeMap<u64, (Vec<usize>, Vec<usize>)> = BTreeMap::new();
    for (i, e) in history.events.iter().enumerate() {
        match e.op {
            Op::Append { key, value } => match appender.get(&value) {
                Some(&first) => out.push(Violation::DuplicateAppendOp {
                    value,
                    first,
                    second: i,
                }),
                None => {
                    appender.insert(value, i);
                    ops.entry(key).or_default().0.push(i);
                }
            },
            Op::Read { key } => ops.entry(key).or_default().1.push(i),
        }
    }
    let keys: BTreeSet<u64> = ops
        .keys()
        .chain(final_state.iter().flat_map(|(_, m)| m.keys()))
        .copied()
        .collect();

    let empty = (Vec::new(), Vec::new());
    for key in keys {
        let (appends, reads) = ops.get(&key).unwrap_or(&empty);
        let list: &[u64] = final_state.first().map_or(&[], |(_, m)| list_of(m, key));

        // 1. Agreement.
        if let Some((reference_node, _)) = final_state.first() {
            for (node, m) in &final_state[1..] {
                let other = list_of(m, key);
                if other != list {
                    let index = list.iter().zip(other).take_while(|(a, b)| a == b).count();
                    out.push(Violation::Disagreement {
                        key,
                        reference_node: *reference_node,
                        node: *node,
                        index,
                        reference_value: list.get(index).copied(),
                        node_value: other.get(index).copied(),
                        reference_len: list.len(),
                        node_len: other.len(),
                    });
                    break;
                }
            }
        }

        // 3. No phantoms, no failed appends, no duplicates.
        let mut pos: HashMap<u64, usize> = HashMap::with_capacity(list.len());
        let mut duplicated: HashSet<u64> = HashSet::new();
        for (p, &value) in list.iter().enumerate() {
            if let Some(&first_position) = pos.get(&value) {
                if duplicated.insert(value) {
                    out.push(Violation::DuplicateValue {
                        key,
                        value,
                        event: appender.get(&value).copied(),
                        first_position,
                        position: p,
                    });
                }
                continue;
            }
            pos.insert(value, p);
            match appender.get(&value) {
                None => out.push(Violation::PhantomValue {
                    key,
                    value,
                    position: p,
                    appended_to: None,
                }),
                Some(&e) if history.events[e].op.key() != key => {
                    out.push(Violation::PhantomValue {
                        key,
                        value,
                        position: p,
                        appended_to: Some((history.events[e].op.key(), e)),
                    })
                }
                Some(&e) if status[e] == Status::Failed => {
                    out.push(Violation::FailedAppendPresent {
                        key,
                        value,
                        event: e,
                        position: p,
                    })
                }
                Some(_) => {}
            }
        }

        // 2. Durability; the appends in the list, as (event, position).
        let mut present: Vec<(usize, usize)> = Vec::new();
        for &e in appends {
            let Op::Append { value, .. } = history.events[e].op else {
                unreachable!("an append")
            };
            match (pos.get(&value), status[e]) {
                (None, Status::Done(_)) => out.push(Violation::LostAppend {
                    key,
                    value,
                    event: e,
                }),
                (Some(&p), Status::Done(_) | Status::Unknown) => present.push((e, p)),
                _ => {}
            }
        }

        // 4. Reads are prefixes; the acknowledged ones, as (event, length).
        let mut good_reads: Vec<(usize, usize)> = Vec::new();
        for &e in reads {
            let (Status::Done(_), Outcome::Ok(Some(read))) =
                (status[e], &history.events[e].outcome)
            else {
                continue;
            };
            if read.len() <= list.len() && read[..] == list[..read.len()] {
                good_reads.push((e, read.len()));
            } else {
                let index = read.iter().zip(list).take_while(|(a, b)| a == b).count();
                out.push(Violation::ReadNotPrefix {
                    key,
                    event: e,
                    index,
                    read_value: read.get(index).copied(),
                    final_value: list.get(index).copied(),
                    read_len: read.len(),
                    final_len: list.len(),
                });
            }
        }

        // 5. Real-time order.
        let complete = |e: usize| match status[e] {
            Status::Done(c) => Some(c),
            _ => None,
        };
        let invoke = |e: usize| history.events[e].invoke;
        let mut acked_appends: Vec<(u64, usize, usize)> = present
            .iter()
            .filter_map(|&(e, p)| Some((complete(e)?, p, e)))
            .collect();
        let mut done_reads: Vec<(u64, usize, usize)> = good_reads
            .iter()
            .filter_map(|&(e, len)| Some((complete(e)?, len, e)))
            .collect();
        let append_invokes: Vec<u64> = present.iter().map(|&(e, _)| invoke(e)).collect();
        let read_invokes: Vec<u64> = good_reads.iter().map(|&(e, _)| invoke(e)).collect();

        let before = max_before(&mut acked_appends, &append_invokes);
        for (&(later, later_position), best) in present.iter().zip(before) {
            match best {
                Some((earlier_position, earlier)) if earlier_position > later_position => {
                    out.push(Violation::AppendsOutOfOrder {
                        key,
                        earlier,
                        earlier_value: list[earlier_position],
                        earlier_position,
                        later,
                        later_value: list[later_position],
                        later_position,
                    })
                }
                _ => {}
            }
        }
        let before = max_before(&mut acked_appends, &read_invokes);
        for (&(read, read_len), best) in good_reads.iter().zip(before) {
            match best {
                Some((position, append)) if position >= read_len => {
                    out.push(Violation::StaleRead {
                        key,
                        append,
                        value: list[position],
                        position,
                        read,
                        read_len,
                    })
                }
                _ => {}
            }
        }
        let before = max_before(&mut done_reads, &append_invokes);
        for (&(append, position), best) in present.iter().zip(before) {
            match best {
                Some((read_len, read)) if read_len > position => out.push(Violation::FutureRead {
                    key,
                    read,
                    read_len,
                    append,
                    value: list[position],
                    position,
                }),
                _ => {}
            }
        }
        let before = max_before(&mut done_reads, &read_invokes);
        for (&(later, later_len), best) in good_reads.iter().zip(before) {
            match best {
                Some((earlier_len, earlier)) if earlier_len > later_len => {
                    out.push(Violation::ReadsRegress {
                        key,
                        earlier,
                        earlier_len,
                        later,
                        later_len,
                    })
                }
                _ => {}
            }
        }
    }

    if out.is_empty() {
        Ok(())
    } else {
        Err(out)
    }
}

/// The history's lines around the given events (by index, `window` events either side),
/// one event a line as `#index client ..., invoke t, complete t: outcome`, the given events
/// marked with `>>`, skipped stretches shown as `...`. Long read lists are shortened to
/// their ends and length. Indexes past the end are ignored.
pub(crate) fn describe_around(history: &History, events: &[usize], window: usize) -> String {
    let n = history.events.len();
    let marked: BTreeSet<usize> = events.iter().copied().filter(|&e| e < n).collect();
    let mut shown: Vec<(usize, usize)> = Vec::new(); // merged inclusive ranges
    for &e in &marked {
        let (lo, hi) = (
            e.saturating_sub(window),
            e.saturating_add(window).min(n - 1),
        );
        match shown.last_mut() {
            Some((_, last_hi)) if lo <= *last_hi + 1 => *last_hi = (*last_hi).max(hi),
            _ => shown.push((lo, hi)),
        }
    }
    let mut s = String::new();
    let mut next = 0;
    for (lo, hi) in shown {
        if lo > next {
            s.push_str("   ...\n");
        }
        for i in lo..=hi {
            let mark = if marked.contains(&i) { ">>" } else { "  " };
            let _ = writeln!(s, "{mark} #{i} {}", history.events[i]);
        }
        next = hi + 1;
    }
    if next < n && !s.is_empty() {
        s.push_str("   ...\n");
    }
    s
}

#[cfg(test)]
mod exhaustive_tests;
#[cfg(test)]
mod tests;
