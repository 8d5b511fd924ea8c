//! A truncate or a reset and the entries written after it, as one all-or-nothing call: the
//! Raft layer's conflict resolution (`truncate_after` then `append`) and a log that begins
//! after a snapshot (`install_snapshot` then `append`) never leave the first half written
//! when the second is refused or fails.

use std::sync::Arc;

use super::config::check_first_index;
use super::write::Pending;
use super::Store;
use crate::error::{Error, Result};
use crate::format::RecordKind;
use crate::recovery;

/// What a combined call writes before its entries.
#[derive(Debug, Clone, Copy)]
pub enum Before<'m> {
    /// Removes every entry with index `>= from` (a truncate that removes nothing writes
    /// nothing).
    Truncate(u64),
    /// Drops every entry and makes `first` both the first and the next index, setting meta
    /// values in the same record ([`Store::reset_to_with_meta`]).
    Reset {
        /// The new first index.
        first: u64,
        /// Meta values set with the reset.
        metas: &'m [(u64, &'m [u8])],
    },
    /// Writes the group's live entries again (the entries given must be exactly them, from
    /// its first index on): one rewrite record, then the entries, all in one segment (a new
    /// one if they do not fit in the active one), so that recovery applies the rewrite only
    /// whole ([`RecordKind::Rewrite`]).
    Rewrite,
}

impl Store {
    /// Writes `before`, then appends `entries` (bodies `prefix ++ payload`) after it, in one
    /// call. Everything is checked first (the truncate or reset against the state, the meta
    /// budget, each entry against the state the first record leaves and against
    /// [`Store::max_payload`]); then the records are written as one transaction: on error the
    /// log, its readers and its files are as before the call (or the log is poisoned if
    /// undoing failed too). An empty `entries` writes the first record alone.
    pub(crate) fn append_parts_after<'a, I>(&mut self, before: Before<'_>, entries: I) -> Result<()>
    where
        I: Iterator<Item = (u64, &'a [u8], &'a [u8])> + Clone,
    {
        self.check_writable()?;
        // Pass 1: the first record and the entries, on a copy of the state.
        let mut after = self.state.clone();
        let (kind, arg, body) = match before {
            Before::Truncate(from) => {
                if !after.check_truncate(from)? {
                    return self.append_parts(entries);
                }
                after.apply_truncate(from);
                (RecordKind::Truncate, from, Vec::new())
            }
            Before::Reset { first, metas } => {
                check_first_index(first)?;
                if first < after.first {
                    return Err(Error::BelowFirstIndex {
                        from: first,
                        first: after.first,
                    });
                }
                for (k, v) in metas {
                    after.apply_meta(*k, Arc::from(*v));
                }
                self.check_meta_size(&after, metas.first().map_or(0, |m| m.0))?;
                after.apply_reset(first);
                (RecordKind::Reset, first, recovery::encode_meta_items(metas))
            }
            Before::Rewrite => {
                let (first, next) = (after.first, after.next);
                let indexes = entries.clone().map(|e| e.0);
                if !indexes.eq(first..next) {
                    return Err(Error::InvalidConfig(format!(
                        "a rewrite must give the live entries {first}..{next}, in order"
                    )));
                }
                after.apply_reset(first);
                (
                    RecordKind::Rewrite,
                    first,
                    (next - first).to_le_bytes().to_vec(),
                )
            }
        };
        let mut new_segments = self
            .plan_append(&after, Some(body.len()), entries.clone())?
            .unwrap_or(0);
        let mut roll_first = None;
        if matches!(before, Before::Rewrite) {
            // One segment holds the whole rewrite: the active one, or the next.
            let total = self.switch_len_in_new_segment() + rewrite_len(body.len(), entries.clone());
            let room = self.config.segment_size.saturating_sub(
                crate::format::SEGMENT_HEADER_SIZE as u64
                    + self.checkpoints_len(&self.state) as u64,
            );
            if total > room {
                return Err(Error::InvalidConfig(format!(
                    "a rewrite of {total} bytes does not fit in one segment ({room} bytes after \
                     its checkpoints)"
                )));
            }
            let here = self.write_pos + self.switch_len() + total <= self.active.size();
            new_segments = usize::from(!here);
            roll_first = (!here).then_some(total);
        }
        self.ensure_spares(new_segments)?;

        // Pass 2: write; undone entirely if anything fails.
        let mut undo = self.begin();
        undo.keep_runs(self.version.runs.clone());
        let mut pending = Pending::default();
        match self.write_after(
            before,
            kind,
            arg,
            &body,
            after,
            entries,
            roll_first,
            &mut pending,
        ) {
            Ok(()) => {
                if matches!(before, Before::Reset { .. } | Before::Rewrite) {
                    // Segments before the reset hold no live entry: deleted after the next
                    // flush, as after any reset.
                    self.release_unneeded_segments();
                }
                self.finish(pending);
                self.hint_writeback();
                Ok(())
            }
            Err(e) => Err(self.rollback(undo, pending, e)),
        }
    }

    /// Sets several meta values as one call (one meta record each, [`Store::put_meta`]'s
    /// rules): all are checked first, and on error none is written.
    pub(crate) fn put_metas(&mut self, metas: &[(u64, &[u8])]) -> Result<()> {
        self.check_writable()?;
        let mut next = self.state.clone();
        for (k, v) in metas {
            next.apply_meta(*k, Arc::from(*v));
        }
        self.check_meta_size(&next, metas.first().map_or(0, |m| m.0))?;
        let undo = self.begin();
        let mut pending = Pending::default();
        for (k, v) in metas {
            if let Err(e) = self.roll_and_write(RecordKind::Meta, *k, v, &mut pending) {
                return Err(self.rollback(undo, pending, e));
            }
            // At once: a rollover for the next record writes a checkpoint that carries it.
            self.state.apply_meta(*k, Arc::from(*v));
        }
        self.finish(pending);
        self.publish();
        Ok(())
    }

    /// Pass 2 of [`Store::append_parts_after`]: the first record, its effect on the writer's
    /// state and runs, then the entries. Nothing is published here (`finish` does).
    #[allow(clippy::too_many_arguments)]
    fn write_after<'a, I>(
        &mut self,
        before: Before<'_>,
        kind: RecordKind,
        arg: u64,
        body: &[u8],
        after: crate::state::LogState,
        entries: I,
        roll_first: Option<u64>,
        p: &mut Pending,
    ) -> Result<()>
    where
        I: Iterator<Item = (u64, &'a [u8], &'a [u8])>,
    {
        if let Some(total) = roll_first {
            // A rewrite that does not fit here goes whole into the next segment.
            self.rollover(p)?;
            self.check_fits_after_rollover(total)?;
        }
        self.roll_and_write(kind, arg, body, p)?;
        match before {
            Before::Truncate(from) => self.apply_truncate(from),
            Before::Reset { .. } | Before::Rewrite => {
                self.state = after;
                self.tail = None;
                self.tail_len = 0;
                self.version.runs.clear();
            }
        }
        p.layout_changed = true;
        self.write_entries(entries, p)
    }
}

/// Bytes of a rewrite record with a `body`-byte body and its entries.
fn rewrite_len<'a>(body: usize, entries: impl Iterator<Item = (u64, &'a [u8], &'a [u8])>) -> u64 {
    let records = entries.map(|(_, a, b)| crate::format::record_size(a.len() + b.len()) as u64);
    crate::format::record_size(body) as u64 + records.sum::<u64>()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::Before;
    use crate::io::sim::{scratch, Kind, SimFs};
    use crate::{Config, Store};

    fn config() -> Config {
        Config {
            segment_size: 4096,
            prepare_ahead: false,
            ..Config::default()
        }
    }

    fn entries(store: &Store) -> Vec<(u64, Vec<u8>)> {
        let view = store.reader().view();
        view.range(..)
            .map(|e| (e.index, e.payload.to_vec()))
            .collect()
    }

    /// A reset and the entries after it are one call: refused entries (too large, or below
    /// the reset's index) and a rollover that fails leave the log, its metas and its
    /// readers as before, also after a reopen; then the same call succeeds.
    #[test]
    fn a_reset_and_its_entries_are_written_together_or_not_at_all() {
        let dir = scratch("rml-combined");
        let fs = Arc::new(SimFs::new(dir.path()));
        let mut store = Store::open_with_fs(dir.path(), config(), fs.clone()).unwrap();
        let old: Vec<Vec<u8>> = (0..30u64).map(|i| vec![i as u8; 150]).collect();
        store
            .append_batch(old.iter().enumerate().map(|(i, p)| (i as u64, &p[..])))
            .unwrap();
        store.put_meta(3, b"before").unwrap();
        let before = entries(&store);
        let reader = store.reader();
        let metas: [(u64, &[u8]); 1] = [(3, b"after")];
        let reset = Before::Reset {
            first: 100,
            metas: &metas,
        };
        let big = vec![7u8; store.max_payload() + 1];
        let small = vec![1u8; 900];
        let check = |store: &Store| {
            assert_eq!(entries(store), before);
            assert_eq!((store.first_index(), store.next_index()), (0, 30));
            assert_eq!(store.meta(3), Some(&b"before"[..]));
            assert_eq!(reader.view().next_index(), 30);
        };
        // Too large.
        let err = store
            .append_parts_after(reset, [(100u64, &[][..], &big[..])].into_iter())
            .unwrap_err();
        assert!(matches!(err, crate::Error::EntryTooLarge { .. }), "{err}");
        check(&store);
        // Below the index the reset sets.
        let err = store
            .append_parts_after(reset, [(99u64, &[][..], &small[..])].into_iter())
            .unwrap_err();
        assert!(matches!(err, crate::Error::NonConsecutive { .. }), "{err}");
        check(&store);
        // The rollover the entries need fails.
        let batch: Vec<(u64, &[u8], &[u8])> =
            (100..110).map(|i| (i, &[][..], &small[..])).collect();
        fs.fail_nth(Kind::Rename, fs.calls(Kind::Rename) + 1, libc::EIO);
        let err = store
            .append_parts_after(reset, batch.iter().copied())
            .unwrap_err();
        assert!(matches!(err, crate::Error::Io { .. }), "{err}");
        check(&store);
        store.sync().unwrap();
        drop(store);
        let mut store = Store::open_with_fs(dir.path(), config(), fs.clone()).unwrap();
        assert_eq!(entries(&store), before);
        assert_eq!(store.meta(3), Some(&b"before"[..]));
        // Now it succeeds, and a reopen finds the result.
        store
            .append_parts_after(reset, batch.iter().copied())
            .unwrap();
        let want: Vec<(u64, Vec<u8>)> = (100..110).map(|i| (i, small.clone())).collect();
        assert_eq!(entries(&store), want);
        assert_eq!(store.meta(3), Some(&b"after"[..]));
        store.sync().unwrap();
        drop(store);
        let store = Store::open(dir.path(), config()).unwrap();
        assert_eq!(entries(&store), want);
        assert_eq!((store.first_index(), store.next_index()), (100, 110));
        assert_eq!(store.meta(3), Some(&b"after"[..]));
    }

    /// Several meta values are one call: when the second one needs a rollover that fails,
    /// the first one is undone too, in memory and after a reopen.
    #[test]
    fn put_metas_is_all_or_nothing() {
        let dir = scratch("rml-metas");
        let fs = Arc::new(SimFs::new(dir.path()));
        let mut store = Store::open_with_fs(dir.path(), config(), fs.clone()).unwrap();
        let mut i = 0u64;
        // Leave room for one 128-byte meta record, not two.
        while 4096 - store.position().1 >= 256 {
            store.append(i, &[i as u8; 8]).unwrap();
            i += 1;
        }
        let value = [0xA5u8; 100];
        let metas: [(u64, &[u8]); 2] = [(1, &value), (2, &value)];
        fs.fail_nth(Kind::Rename, fs.calls(Kind::Rename) + 1, libc::EIO);
        let err = store.put_metas(&metas).unwrap_err();
        assert!(matches!(err, crate::Error::Io { .. }), "{err}");
        assert_eq!((store.meta(1), store.meta(2)), (None, None));
        assert_eq!(store.reader().view().meta(1), None);
        store.sync().unwrap();
        drop(store);
        let mut store = Store::open_with_fs(dir.path(), config(), fs.clone()).unwrap();
        assert_eq!((store.meta(1), store.meta(2)), (None, None));
        assert_eq!(store.next_index(), i);
        store.put_metas(&metas).unwrap();
        store.sync().unwrap();
        drop(store);
        let store = Store::open(dir.path(), config()).unwrap();
        assert_eq!(
            (store.meta(1), store.meta(2)),
            (Some(&value[..]), Some(&value[..]))
        );
    }
}
