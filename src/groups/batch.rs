//! [`WriteBatch`]: the entries and meta values of many groups, written by one
//! [`Groups::write`](super::Groups::write) call.

use std::collections::HashMap;

/// One group's part of a batch.
#[derive(Debug, Default)]
pub(super) struct Part<'a> {
    pub(super) group: u64,
    pub(super) entries: Vec<(u64, &'a [u8])>,
    pub(super) metas: Vec<(u64, &'a [u8])>,
}

/// The entries and meta values of many groups, borrowed (nothing is copied until the write
/// copies them into the log). A Raft Ready loop over many groups collects each group's new
/// entries and hard state here, writes them with one [`Groups::write`](super::Groups::write)
/// and makes them durable with one flush.
///
/// Entries follow Raft's storage rule: the entries added for a group replace every entry it
/// has at or after the first one's index (a follower overwriting a conflicting suffix), and
/// must be consecutive. Several calls for one group extend (or overwrite) its part.
#[derive(Debug, Default)]
pub struct WriteBatch<'a> {
    parts: Vec<Part<'a>>,
    by_group: HashMap<u64, usize>,
}

impl<'a> WriteBatch<'a> {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    fn part(&mut self, group: u64) -> &mut Part<'a> {
        let k = *self.by_group.entry(group).or_insert_with(|| {
            self.parts.push(Part {
                group,
                ..Part::default()
            });
            self.parts.len() - 1
        });
        &mut self.parts[k]
    }

    /// Adds entries of `group`: they replace any entries of the group at or after the first
    /// one's index, in the log and earlier in this batch.
    pub fn add_entries(
        &mut self,
        group: u64,
        entries: impl IntoIterator<Item = (u64, &'a [u8])>,
    ) -> &mut Self {
        let part = self.part(group);
        let mut entries = entries.into_iter().peekable();
        if let Some(&(first, _)) = entries.peek() {
            part.entries.retain(|(i, _)| *i < first);
        }
        part.entries.extend(entries);
        self
    }

    /// Sets meta value `key` of `group` (after the group's entries in this batch).
    pub fn put_meta(&mut self, group: u64, key: u64, value: &'a [u8]) -> &mut Self {
        self.part(group).metas.push((key, value));
        self
    }

    /// Number of groups in the batch.
    pub fn groups(&self) -> usize {
        self.parts.len()
    }

    /// Whether the batch holds nothing.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Empties the batch, keeping its allocations.
    pub fn clear(&mut self) {
        self.parts.clear();
        self.by_group.clear();
    }

    pub(super) fn parts(&self) -> &[Part<'a>] {
        &self.parts
    }
}
