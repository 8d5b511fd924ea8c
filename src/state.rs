//! The engine's logical state and its transition rules, shared by the writer (which checks a
//! change before writing it) and recovery (which replays records through the same rules).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::MAX_INDEX;

/// Meta key -> latest value.
pub type Metas = BTreeMap<u64, Arc<[u8]>>;

/// First/next log index and the latest meta values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogState {
    /// First retained index.
    pub first: u64,
    /// One past the last index; `first == next` means no entries.
    pub next: u64,
    /// Latest value of each meta key.
    pub metas: Arc<Metas>,
}

impl LogState {
    /// Whether the log holds no entry.
    pub fn is_empty(&self) -> bool {
        self.first == self.next
    }

    /// Checks that `index` may be appended: the next index, or any index at or after `next`
    /// when the log is empty.
    /// Indexes above [`MAX_INDEX`] are refused: they leave no room for a successor.
    #[inline]
    pub fn check_append(&self, index: u64) -> Result<()> {
        if self.is_empty() {
            check_index(index)?;
            if index >= self.next {
                return Ok(());
            }
            return Err(Error::NonConsecutive {
                expected: self.next,
                got: index,
            });
        }
        Self::check_follows(self.next, index)
    }

    /// The rule of [`LogState::check_append`] for a log that holds entries and whose next
    /// index is `next`: `index` must be `next`, and not above [`MAX_INDEX`]. A batch checks
    /// its first entry with `check_append` and each later one with this, against the entry
    /// before it (no copy of the state is needed).
    #[inline]
    pub(crate) fn check_follows(next: u64, index: u64) -> Result<()> {
        check_index(index)?;
        if index == next {
            Ok(())
        } else {
            Err(Error::NonConsecutive {
                expected: next,
                got: index,
            })
        }
    }

    /// Applies an append that [`LogState::check_append`] accepted.
    pub fn apply_append(&mut self, index: u64) {
        if self.is_empty() {
            self.first = index;
        }
        self.next = index + 1;
    }

    /// Checks a truncate of every entry `>= from`. `Ok(false)`: nothing to remove.
    pub fn check_truncate(&self, from: u64) -> Result<bool> {
        if from < self.first {
            return Err(Error::BelowFirstIndex {
                from,
                first: self.first,
            });
        }
        Ok(from < self.next)
    }

    /// Applies a truncate accepted by [`LogState::check_truncate`].
    pub fn apply_truncate(&mut self, from: u64) {
        self.next = self.next.min(from.max(self.first));
    }

    /// Whether a purge of every entry `< first` changes anything.
    pub fn purge_changes(&self, first: u64) -> bool {
        first > self.first
    }

    /// Applies a purge: `first` becomes the first index (moving `next` with it if needed).
    pub fn apply_purge(&mut self, first: u64) {
        if first > self.first {
            self.first = first;
            self.next = self.next.max(first);
        }
    }

    /// Drops every entry: `first` becomes the first and the next index. Callers check
    /// `first >= self.first` (nothing purged comes back).
    pub fn apply_reset(&mut self, first: u64) {
        self.first = first;
        self.next = first;
    }

    /// Sets a meta value.
    pub fn apply_meta(&mut self, key: u64, value: Arc<[u8]>) {
        Arc::make_mut(&mut self.metas).insert(key, value);
    }

    /// Removes meta key `key` (nothing if it is not set).
    pub fn remove_meta(&mut self, key: u64) {
        if self.metas.contains_key(&key) {
            Arc::make_mut(&mut self.metas).remove(&key);
        }
    }
}

/// Refuses an index above [`MAX_INDEX`].
#[inline]
fn check_index(index: u64) -> Result<()> {
    if index > MAX_INDEX {
        return Err(Error::IndexTooLarge {
            index,
            max: MAX_INDEX,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_rules() {
        let mut s = LogState::default();
        s.check_append(5).unwrap();
        s.apply_append(5);
        assert_eq!((s.first, s.next), (5, 6));
        assert!(matches!(
            s.check_append(7),
            Err(Error::NonConsecutive {
                expected: 6,
                got: 7
            })
        ));
        assert!(s.check_append(5).is_err());
        s.check_append(6).unwrap();
        let empty = LogState::default();
        empty.check_append(MAX_INDEX).unwrap();
        for i in [MAX_INDEX + 1, u64::MAX] {
            assert!(matches!(
                empty.check_append(i),
                Err(Error::IndexTooLarge { .. })
            ));
        }
    }

    #[test]
    fn truncate_and_purge_rules() {
        let mut s = LogState::default();
        for i in 0..10 {
            s.apply_append(i);
        }
        s.apply_purge(3);
        assert_eq!((s.first, s.next), (3, 10));
        assert!(matches!(
            s.check_truncate(2),
            Err(Error::BelowFirstIndex { from: 2, first: 3 })
        ));
        assert!(!s.check_truncate(10).unwrap());
        assert!(s.check_truncate(3).unwrap());
        s.apply_truncate(3);
        assert!(s.is_empty());
        assert!(s.check_append(2).is_err());
        s.check_append(3).unwrap();
        s.apply_purge(20);
        assert_eq!((s.first, s.next), (20, 20));
        assert!(!s.purge_changes(20));
        s.check_append(25).unwrap();
        s.apply_append(25);
        assert_eq!((s.first, s.next), (25, 26));
    }
}
