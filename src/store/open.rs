//! Opening a log: recovery's plan applied, the pool, the threads, the index runs adopted,
//! every group parked, and the active segment ready for the writer.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::config::check_fits;
use super::{groups, reserve, Allocation, Config, Store};
use crate::error::{Error, Result};
use crate::flusher::Flusher;
use crate::index::Run;
use crate::lock::DirLock;
use crate::notify::Notify;
use crate::preparer::Preparer;
use crate::recovery;
use crate::segment::{FileOptions, Pool, Segment};
use crate::version::{RunRef, Version};

impl Store {
    /// [`Store::open`] with every file-system effect going through `fs` (tests use a
    /// simulated file system that models power cuts).
    pub(crate) fn open_with_fs(
        dir: impl AsRef<Path>,
        config: Config,
        fs: Arc<dyn crate::io::Fs>,
    ) -> Result<Self> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        let lock = DirLock::acquire(&dir)?;
        let opts = FileOptions {
            via: config.write_via(&dir),
            zero_fill: config.allocation == Allocation::ZeroFill,
            fs,
        };
        let mut plan = recovery::plan(&dir, config.recovery_mode, true, &opts)?;
        check_fits(&config, &plan)?;
        recovery::repair(&dir, &mut plan, &opts)?;

        // Pooled files found here are kept (up to the pool size) for reuse; the rest go.
        let (pool, extra) = Pool::new(
            &dir,
            config.segment_pool,
            opts.fs.clone(),
            plan.pool.clone(),
        );
        let pool = Arc::new(pool);
        let mut removed_any = false;
        for p in &extra {
            match opts.fs.remove(p) {
                Ok(()) => removed_any = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove pooled file", p, e)),
            }
        }
        let frontier = Arc::new(crate::frontier::Frontier::default());
        let flusher = Flusher::start(dir.clone(), opts.fs.clone(), pool.clone(), frontier.clone())?;
        let preparer = Preparer::start(
            dir.clone(),
            config.segment_size,
            opts.clone(),
            pool.clone(),
            config.prepare_ahead,
        )?;

        let state = plan.state.clone();
        let next_seq = match plan.segments.last() {
            Some(s) => s
                .seq()
                .checked_add(1)
                .ok_or_else(|| Error::corrupt(s.path(), 16, "segment sequence number overflows"))?,
            None => 1,
        };

        // Purged leading segments can go now (to the pool while it has room): recovery has
        // just made the rest durable. A file that cannot be removed is retried at the next
        // flush.
        // Oldest first, each one's name gone durably before the next one's goes: a power cut
        // then only brings back the oldest of them, never leaves a gap. The first that cannot
        // be removed stops it (the flusher retires it and the later ones).
        let purged: Vec<Arc<Segment>> = plan.segments.drain(..plan.purged_prefix).collect();
        if !purged.is_empty() {
            // The names found may not be durable yet: a previous process may have renamed an
            // older purged segment away (into the pool) and stopped, or seen its directory
            // fsync fail, before that rename was durable. It must be, before a newer one's
            // name goes.
            crate::io::sync_dir(&*opts.fs, &dir)?;
        }
        let mut pending_deletes = Vec::new();
        for (i, seg) in purged.iter().enumerate() {
            let gone = match pool.offer(seg.clone()) {
                Ok(()) => true,
                Err(seg) => match opts.fs.remove(seg.path()) {
                    Ok(()) => true,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                    Err(_) => {
                        pending_deletes.extend(purged[i..].iter().cloned());
                        break;
                    }
                },
            };
            if gone {
                crate::io::sync_dir(&*opts.fs, &dir)?;
                pool.commit_staged();
                removed_any = false;
            }
        }
        // Pooled files (found, or renamed into the pool above) are reusable only once their
        // names are durable: after this fsync.
        if removed_any || pool.has_staged() {
            crate::io::sync_dir(&*opts.fs, &dir)?;
        }
        pool.commit_staged();
        let shift = purged.len();
        drop(purged);

        // The runs adopt the offsets the scans collected (moved, not copied: the index is
        // never held twice).
        let (run_offsets, group_offsets) = plan.take_run_offsets();
        // A log's last run receives its next entries if it lies in the active segment (the
        // last one); every other run is read only.
        let adopt = |runs: &[recovery::RunPlan], offsets: Vec<crate::index::Offsets>| {
            runs.iter()
                .zip(offsets)
                .enumerate()
                .map(|(i, (rp, offsets))| {
                    let k = rp.segment.checked_sub(shift);
                    let seg = k
                        .and_then(|k| plan.segments.get(k))
                        .ok_or_else(|| {
                            Error::corrupt(&dir, 0, "recovered index names a purged segment")
                        })?
                        .clone();
                    let receiving =
                        i + 1 == runs.len() && k.map(|k| k + 1) == Some(plan.segments.len());
                    Ok(Arc::new(Run::adopt(seg, rp.first, offsets, receiving)))
                })
                .collect::<Result<Vec<_>>>()
        };
        let runs = adopt(&plan.runs, run_offsets)?;
        let mut group_runs = Vec::with_capacity(plan.groups.len());
        for (id, offsets) in group_offsets {
            if let Some(gp) = plan.groups.get(&id) {
                group_runs.push((id, adopt(&gp.runs, offsets)?));
            }
        }

        let active = match plan.segments.last() {
            Some(s) => {
                s.read_ahead_for_writer(plan.write_pos);
                s.clone()
            }
            None => {
                let seg = Segment::install(preparer.first_file()?, &dir, next_seq)?;
                flusher.dir_syncs().renamed();
                Arc::new(seg)
            }
        };
        let current = Arc::new(ArcSwap::from_pointee(Version::default()));
        let notify = Arc::new(Notify::default());
        let mut store = Store {
            publisher: Arc::new(reserve::Publisher::new(current.clone(), notify.clone())),
            notify,
            frontier,
            crc_at: None,
            flusher,
            preparer,
            dir: dir.clone(),
            config,
            opts,
            state: state.clone(),
            current,
            version: Version::new(
                state.first,
                state.next,
                plan.segments.clone(),
                state.metas.clone(),
            ),
            active,
            write_pos: plan.write_pos,
            writeback_pos: plan.write_pos,
            last_crc: plan.last_crc,
            tail: None,
            tail_len: 0,
            dir_dirty: false,
            pending_deletes,
            spares: Vec::new(),
            pool,
            next_seq,
            focus: 0,
            groups: groups::ParkedGroups::default(),
            stream_group: plan.stream_group,
            report: plan.report.clone(),
            flush_io: (crate::FlushIo::Threads, None),
            _lock: lock,
        };
        for (id, runs) in group_runs {
            if let Some(gp) = plan.groups.get(&id) {
                let parked = groups::Parked::recovered(gp, runs, &store.active, &store.notify);
                store.groups.insert(id, parked);
            }
        }
        let n_runs = runs.len();
        for (i, run) in runs.into_iter().enumerate() {
            let live = i + 1 == n_runs && Arc::ptr_eq(run.segment(), &store.active);
            let len = run.published();
            if live {
                store.tail = Some(run.clone());
                store.tail_len = len;
            }
            store.version.runs.push(RunRef {
                limit: if live { u64::MAX } else { len },
                run,
            });
        }
        if !plan.segments.is_empty() {
            // The names found may not be durable: the process that renamed them may have
            // stopped (or seen its directory fsync fail) before a directory fsync made them
            // so. Nothing written here is acknowledged, and no segment is renamed in after
            // them, before a directory fsync succeeds.
            store.dir_dirty = true;
            store.flusher.dir_syncs().renamed();
        }
        if plan.segments.is_empty() {
            // A brand-new log: the segment made above needs its checkpoint.
            store.next_seq += 1;
            store.version.segments.push(store.active.clone());
            store.dir_dirty = true;
            store.write_checkpoint(0, 0)?;
            store.sync()?;
        } else if plan.needs_checkpoint {
            // The newest segment lost its checkpoint: chain the new one to its predecessor.
            let (prev_end, prev_crc) = match plan.scans.len().checked_sub(2) {
                Some(k) => (plan.scans[k].end, plan.scans[k].last_crc),
                None => (0, 0),
            };
            store.write_checkpoint(prev_end, prev_crc)?;
            store.sync()?;
        } else if store.active.sealed_end().is_some() {
            // A sealed segment is never appended to again.
            store.roll_to_new_segment()?;
            store.sync()?;
        }
        store.publish();
        Ok(store)
    }
}
