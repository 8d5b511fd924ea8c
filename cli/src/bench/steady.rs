//! `bench --steady`: the state a node lives in for days. The log keeps only its last few
//! segments' worth of entries (a purge behind each step, as behind snapshots, and a flush
//! that does not wait after it), so purged segments go to the pool and new segments are
//! recycled files. Two phases: appends without
//! sync, then durable batches, both with the purges going on.

use std::time::{Duration, Instant};

use raft_mmap_log::raft::{LogId, RaftLog, RaftTypes};

use super::measure::{faults, faults_since, pct, us, Phase};
use super::{err, ids};
use crate::progress::progress_bar;
use crate::Failure;

/// Segments' worth of entries the log keeps.
const KEPT_SEGMENTS: u64 = 4;
/// Longest time the durable phase runs (it stops earlier after 2,000 batches).
const DURABLE_BUDGET: Duration = Duration::from_secs(3);

/// Where the steady phases start and what they write.
pub(super) struct Steady<'a> {
    pub payload: &'a [u8],
    pub batch: u64,
    pub segment_size: u64,
    /// Entries of the append phase (at least ten segments' worth are written).
    pub entries: u64,
}

impl Steady<'_> {
    /// Entries the log keeps: four segments' worth (each entry takes its payload, a 24-byte
    /// log id and a 24-byte record header).
    fn kept(&self) -> u64 {
        let per_entry = self.payload.len() as u64 + 48;
        (KEPT_SEGMENTS * self.segment_size / per_entry).max(self.batch)
    }

    /// Purges behind the last `kept` entries once the log holds a sixteenth of a segment more
    /// (the Raft layer purges only committed entries: the commit index moves first).
    fn purge_behind(&self, log: &mut RaftLog<RaftTypes>, next: u64) -> Result<u32, Failure> {
        let kept = self.kept();
        let step = (kept / (KEPT_SEGMENTS * 16)).max(1);
        let first = log.store().first_index();
        if next.saturating_sub(first) < kept + step {
            return Ok(0);
        }
        let last_purged = next - kept - 1;
        log.commit(LogId::new(1, 1, next - 1)).map_err(err)?;
        log.purge_upto(LogId::new(1, 1, last_purged)).map_err(err)?;
        Ok(1)
    }

    /// Runs the two phases from index `*next` on; returns them.
    pub(super) fn run(
        &self,
        log: &mut RaftLog<RaftTypes>,
        next: &mut u64,
    ) -> Result<Vec<Phase>, Failure> {
        let esz = self.payload.len() as u64;
        let ten_segments = 10 * self.segment_size / (esz + 48);
        let n = self.entries.max(ten_segments);
        let mut phases = Vec::new();

        // Fill until purges run, so that the timed part starts with the pool in use.
        while next.saturating_sub(log.store().first_index()) < self.kept() {
            log.append(ids(*next..*next + self.batch, self.payload))
                .map_err(err)?;
            *next += self.batch;
        }
        self.purge_behind(log, *next)?;
        log.sync().map_err(err)?;

        let pb = progress_bar(n, "steady append + purge", false);
        let seq0 = segment_seq(log);
        let f0 = faults();
        let mut purges = 0u32;
        let start = *next;
        let t = Instant::now();
        while *next < start + n {
            log.append(ids(*next..*next + self.batch, self.payload))
                .map_err(err)?;
            *next += self.batch;
            if self.purge_behind(log, *next)? > 0 {
                purges += 1;
                // A node flushes all the time: the purge becomes durable in the background
                // and its segments go to the pool for the next rollovers.
                log.flush(|_| {}).map_err(err)?;
            }
            if *next % 65536 < self.batch {
                pb.set_position(*next - start);
            }
        }
        let elapsed = t.elapsed();
        pb.finish_and_clear();
        let written = *next - start;
        phases.push(Phase {
            name: format!("steady: append + purge, no sync (batch {})", self.batch),
            entries: written,
            bytes: written * esz,
            elapsed,
            note: format!(
                "the log keeps the last {} entries ({KEPT_SEGMENTS} segments); {purges} purges; \
                 {} new segments, from the pool where it had files",
                self.kept(),
                segment_seq(log).saturating_sub(seq0)
            ),
            faults: faults_since(f0),
        });
        log.sync().map_err(err)?;

        let ops = 2000u64;
        let mut lat = Vec::with_capacity(ops as usize);
        let pb = progress_bar(ops, "steady durable", false);
        let t = Instant::now();
        for _ in 0..ops {
            if t.elapsed() > DURABLE_BUDGET && lat.len() >= 10 {
                break;
            }
            let t0 = Instant::now();
            log.append(ids(*next..*next + self.batch, self.payload))
                .map_err(err)?;
            *next += self.batch;
            self.purge_behind(log, *next)?;
            log.sync().map_err(err)?;
            lat.push(t0.elapsed());
            pb.inc(1);
        }
        let elapsed = t.elapsed();
        pb.finish_and_clear();
        lat.sort_unstable();
        let done = lat.len() as u64 * self.batch;
        phases.push(Phase {
            name: format!("steady: durable batches of {}, with purges", self.batch),
            entries: done,
            bytes: done * esz,
            elapsed,
            note: format!(
                "latency of {} batches: p50 {} us, p99 {} us",
                lat.len(),
                us(pct(&lat, 0.50)),
                us(pct(&lat, 0.99))
            ),
            faults: None,
        });
        Ok(phases)
    }
}

/// The active segment's sequence number (0 if its name does not parse).
fn segment_seq(log: &RaftLog<RaftTypes>) -> u64 {
    let (path, _) = log.store().position();
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(raft_mmap_log::format::parse_segment_file_name)
        .unwrap_or(0)
}
