//! `bench`'s wake-up phase: how long a reader parked in `RaftReader::wait_for` takes to run
//! after the writer appends the entry it waits for (a replication loop that has sent
//! everything and sleeps until there is more).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft_mmap_log::raft::{RaftLog, RaftTypes};

use super::measure::{pct, us, Phase};
use super::{err, ids};
use crate::Failure;

/// Entries appended one at a time, each waited for by the reader.
const ROUNDS: u64 = 2_000;
/// Pause after each append, so that the reader has parked again before the next one.
const PAUSE: Duration = Duration::from_micros(200);
/// Longest a reader waits for one entry before the phase fails.
const PATIENCE: Duration = Duration::from_secs(10);

/// Appends [`ROUNDS`] entries one by one from index `*next`, pausing after each, while a
/// reader thread waits for each with `wait_for`; the phase's note gives the wake-up latency,
/// from just before the append call to the reader running.
pub(super) fn run(
    log: &mut RaftLog<RaftTypes>,
    next: &mut u64,
    payload: &[u8],
) -> Result<Phase, Failure> {
    let start = *next;
    let origin = Instant::now();
    // Nanoseconds since `origin` at which the append of entry `start + k` began (0: not yet).
    let began: Arc<Vec<AtomicU64>> = Arc::new((0..ROUNDS).map(|_| AtomicU64::new(0)).collect());
    let reader = log.reader();
    let seen = began.clone();
    let waiter = std::thread::spawn(move || -> Result<Vec<Duration>, String> {
        let mut lat = Vec::with_capacity(ROUNDS as usize);
        for k in 0..ROUNDS {
            if !reader.wait_for(start + k, PATIENCE) {
                return Err(format!("entry {} not seen within {PATIENCE:?}", start + k));
            }
            let woke = origin.elapsed();
            // The writer stores when its append began right after the append returns.
            let mut t0 = seen[k as usize].load(Ordering::Acquire);
            while t0 == 0 {
                std::hint::spin_loop();
                t0 = seen[k as usize].load(Ordering::Acquire);
            }
            lat.push(woke.saturating_sub(Duration::from_nanos(t0)));
        }
        Ok(lat)
    });
    let t = Instant::now();
    for k in 0..ROUNDS {
        std::thread::sleep(PAUSE);
        let t0 = origin.elapsed().as_nanos().max(1) as u64;
        log.append(ids(start + k..start + k + 1, payload))
            .map_err(err)?;
        began[k as usize].store(t0, Ordering::Release);
    }
    let elapsed = t.elapsed();
    *next = start + ROUNDS;
    let mut lat = waiter
        .join()
        .map_err(|_| Failure::Error("the waiting reader panicked".into()))?
        .map_err(Failure::Error)?;
    lat.sort_unstable();
    Ok(Phase {
        name: "wake-up of a waiting reader".into(),
        entries: ROUNDS,
        bytes: ROUNDS * payload.len() as u64,
        elapsed,
        note: format!(
            "append -> reader in wait_for running: p50 {:.1} µs, p99 {:.1} µs, max {:.0} µs \
             ({ROUNDS} entries, one every {} µs)",
            us(pct(&lat, 0.50)),
            us(pct(&lat, 0.99)),
            us(pct(&lat, 1.0)),
            PAUSE.as_micros()
        ),
        faults: None,
    })
}
