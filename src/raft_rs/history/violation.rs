//! [`Violation`]: what the checker found wrong, and how it is printed.

use std::fmt;

/// Something the history or the final state got wrong. Event numbers are indexes into
/// [`History::events`]; positions and indexes are into the key's final list (or a read's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Violation {
    /// The event itself is inconsistent (e.g. it completes before it is invoked).
    MalformedEvent {
        /// The event.
        event: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Two operations append the same value (the workload promises unique values); the
    /// second is left out of the other checks.
    DuplicateAppendOp {
        /// The value.
        value: u64,
        /// The first event appending it.
        first: usize,
        /// Another event appending it.
        second: usize,
    },
    /// A node's final list differs from the reference node's (the first node).
    Disagreement {
        /// The key.
        key: u64,
        /// The node whose list is the reference.
        reference_node: u64,
        /// The first node that differs from it.
        node: u64,
        /// The first index at which the lists differ.
        index: usize,
        /// The reference list's value there (`None`: it is shorter).
        reference_value: Option<u64>,
        /// The node's value there (`None`: it is shorter).
        node_value: Option<u64>,
        /// The reference list's length.
        reference_len: usize,
        /// The node's list's length.
        node_len: usize,
    },
    /// An acknowledged append is missing from the final list.
    LostAppend {
        /// The key.
        key: u64,
        /// The value.
        value: u64,
        /// The append.
        event: usize,
    },
    /// A failed append's value is in the final list.
    FailedAppendPresent {
        /// The key.
        key: u64,
        /// The value.
        value: u64,
        /// The failed append.
        event: usize,
        /// Its position in the final list.
        position: usize,
    },
    /// A value is in the final list more than once.
    DuplicateValue {
        /// The key.
        key: u64,
        /// The value.
        value: u64,
        /// The append of the value, if any.
        event: Option<usize>,
        /// Its first position in the final list.
        first_position: usize,
        /// Its second position.
        position: usize,
    },
    /// A value in the final list was never appended to the key.
    PhantomValue {
        /// The key.
        key: u64,
        /// The value.
        value: u64,
        /// Its position in the final list.
        position: usize,
        /// The key it was appended to instead, and the append, if any.
        appended_to: Option<(u64, usize)>,
    },
    /// An acknowledged read did not return a prefix of the final list.
    ReadNotPrefix {
        /// The key.
        key: u64,
        /// The read.
        event: usize,
        /// The first index where the read differs from the final list.
        index: usize,
        /// The read's value there.
        read_value: Option<u64>,
        /// The final list's value there (`None`: the read is longer).
        final_value: Option<u64>,
        /// The read's length.
        read_len: usize,
        /// The final list's length.
        final_len: usize,
    },
    /// An append completed before another was invoked, yet the final list has it later.
    AppendsOutOfOrder {
        /// The key.
        key: u64,
        /// The append that completed first.
        earlier: usize,
        /// Its value.
        earlier_value: u64,
        /// Its position in the final list.
        earlier_position: usize,
        /// The append invoked after it completed.
        later: usize,
        /// Its value.
        later_value: u64,
        /// Its position in the final list (before `earlier_position`).
        later_position: usize,
    },
    /// An append completed before a read was invoked, yet the read misses it.
    StaleRead {
        /// The key.
        key: u64,
        /// The append.
        append: usize,
        /// Its value.
        value: u64,
        /// Its position in the final list.
        position: usize,
        /// The read.
        read: usize,
        /// The read's length (at most `position`).
        read_len: usize,
    },
    /// A read completed before an append was invoked, yet the read contains it.
    FutureRead {
        /// The key.
        key: u64,
        /// The read.
        read: usize,
        /// The read's length (more than `position`).
        read_len: usize,
        /// The append.
        append: usize,
        /// Its value.
        value: u64,
        /// Its position in the final list.
        position: usize,
    },
    /// A read completed before another was invoked, yet returned a longer list.
    ReadsRegress {
        /// The key.
        key: u64,
        /// The read that completed first.
        earlier: usize,
        /// Its length.
        earlier_len: usize,
        /// The read invoked after it completed.
        later: usize,
        /// Its (shorter) length.
        later_len: usize,
    },
}

impl Violation {
    /// The history events involved (for [`describe_around`]).
    pub(crate) fn events(&self) -> Vec<usize> {
        use Violation::*;
        match *self {
            MalformedEvent { event, .. }
            | LostAppend { event, .. }
            | FailedAppendPresent { event, .. }
            | ReadNotPrefix { event, .. } => vec![event],
            DuplicateAppendOp { first, second, .. } => vec![first, second],
            Disagreement { .. } => Vec::new(),
            DuplicateValue { event, .. } => event.into_iter().collect(),
            PhantomValue { appended_to, .. } => appended_to.map(|(_, e)| e).into_iter().collect(),
            AppendsOutOfOrder { earlier, later, .. } | ReadsRegress { earlier, later, .. } => {
                vec![earlier, later]
            }
            StaleRead { append, read, .. } => vec![append, read],
            FutureRead { read, append, .. } => vec![read, append],
        }
    }
}

/// `Some(v)` as `v`, `None` as `nothing`.
struct Opt(Option<u64>);

impl fmt::Display for Opt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => write!(f, "{v}"),
            None => f.write_str("nothing"),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Violation::*;
        match *self {
            MalformedEvent { event, reason } => write!(f, "event {event} is malformed: {reason}"),
            DuplicateAppendOp {
                value,
                first,
                second,
            } => write!(
                f,
                "value {value} is appended by two operations (events {first} and {second}); \
                 appended values must be unique"
            ),
            Disagreement {
                key,
                reference_node,
                node,
                index,
                reference_value,
                node_value,
                reference_len,
                node_len,
            } => write!(
                f,
                "key {key}: node {node}'s final list ({node_len} values) differs from node \
                 {reference_node}'s ({reference_len} values) at index {index}: {} vs {}",
                Opt(node_value),
                Opt(reference_value)
            ),
            LostAppend { key, value, event } => write!(
                f,
                "key {key}: the acknowledged append of {value} (event {event}) is missing from \
                 the final list"
            ),
            FailedAppendPresent {
                key,
                value,
                event,
                position,
            } => write!(
                f,
                "key {key}: the failed append of {value} (event {event}) is in the final list, \
                 at position {position}"
            ),
            DuplicateValue {
                key,
                value,
                event,
                first_position,
                position,
            } => {
                write!(
                    f,
                    "key {key}: value {value} is in the final list more than once (positions \
                     {first_position} and {position})"
                )?;
                match event {
                    Some(e) => write!(f, "; appended by event {e}"),
                    None => Ok(()),
                }
            }
            PhantomValue {
                key,
                value,
                position,
                appended_to,
            } => {
                write!(
                    f,
                    "key {key}: value {value} at position {position} of the final list was never \
                     appended to this key"
                )?;
                match appended_to {
                    Some((k, e)) => write!(f, " (event {e} appended it to key {k})"),
                    None => write!(f, " (nor to any other)"),
                }
            }
            ReadNotPrefix {
                key,
                event,
                index,
                read_value,
                final_value,
                read_len,
                final_len,
            } => write!(
                f,
                "key {key}: the read of event {event} ({read_len} values) is not a prefix of the \
                 final list ({final_len} values): at index {index} it has {} where the final list \
                 has {}",
                Opt(read_value),
                Opt(final_value)
            ),
            AppendsOutOfOrder {
                key,
                earlier,
                earlier_value,
                earlier_position,
                later,
                later_value,
                later_position,
            } => write!(
                f,
                "key {key}: the append of {earlier_value} (event {earlier}) completed before the \
                 append of {later_value} (event {later}) was invoked, but the final list has \
                 {later_value} first (positions {later_position} and {earlier_position})"
            ),
            StaleRead {
                key,
                append,
                value,
                position,
                read,
                read_len,
            } => write!(
                f,
                "key {key}: the append of {value} (event {append}, position {position}) completed \
                 before the read of event {read} was invoked, but the read's {read_len} values \
                 miss it"
            ),
            FutureRead {
                key,
                read,
                read_len,
                append,
                value,
                position,
            } => write!(
                f,
                "key {key}: the read of event {read} completed before the append of {value} \
                 (event {append}) was invoked, but the read's {read_len} values include it (at \
                 position {position})"
            ),
            ReadsRegress {
                key,
                earlier,
                earlier_len,
                later,
                later_len,
            } => write!(
                f,
                "key {key}: the read of event {earlier} ({earlier_len} values) completed before \
                 the read of event {later} was invoked, which returned fewer ({later_len} values)"
            ),
        }
    }
}
