//! The power-cut loop the seam's crash models share, and its helpers.

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::SimFs;

/// A scratch directory for the seam's crash models, on `/dev/shm` when it exists.
pub(crate) fn scratch(prefix: &str) -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new().prefix(prefix).tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().expect("tempdir")
}

fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Number of workloads of the seam's crash models: `RML_SIM_WORKLOADS`, default 10.
pub(crate) fn workloads() -> u64 {
    env_count("RML_SIM_WORKLOADS", 10)
}

/// Images drawn at each cut (independent draws of what was not durable):
/// `RML_SIM_DRAWS`, default 4, at least 1.
pub(crate) fn draws() -> u64 {
    env_count("RML_SIM_DRAWS", 4).max(1)
}

/// The last model state a crash model's flushes acknowledged, shared with flush callbacks.
#[derive(Debug, Clone, Default)]
pub(crate) struct Acked(Arc<Mutex<usize>>);

impl Acked {
    /// Records that everything up to state `upto` is durable (never moves back).
    pub(crate) fn raise(&self, upto: usize) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *g = (*g).max(upto);
    }

    /// A flush callback that raises the mark to `upto` if the flush succeeded.
    pub(crate) fn on_flush(&self, upto: usize) -> impl FnOnce(crate::Result<()>) + Send + 'static {
        let a = self.clone();
        move |r| {
            if r.is_ok() {
                a.raise(upto)
            }
        }
    }

    /// The mark.
    pub(crate) fn get(&self) -> usize {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a power-cut loop explored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Explored {
    /// Workload runs cut after an effect.
    pub(crate) cuts: u64,
    /// Images drawn at those cuts.
    pub(crate) images: u64,
    /// Distinct images among them (per cut), each recovered and checked.
    pub(crate) states: u64,
}

impl std::fmt::Display for Explored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} cuts, {} images drawn, {} distinct states checked",
            self.cuts, self.images, self.states
        )
    }
}

/// The power-cut loop of the seam's crash models. For each workload `seed` (see
/// [`workloads`]): `run(seed, dir, fs)` once without a cut (the dry run, counting its effects),
/// handed to `after_dry(seed, dir, fs, result)`; then once per effect k of the dry run, on a
/// fresh directory, with a power cut right after effect k that draws [`draws`] images of what
/// the disk could hold (torn independently, from seed `seed * seed_step + k`). A run that
/// reaches no effect k takes no cut and is skipped; otherwise `check(seed, k, image, result)`
/// recovers each distinct image and checks it. A failing check ends the loop, unless
/// `RML_SIM_KEEP_GOING` is set: then every failing image is reported, and the loop fails at
/// the end.
pub(crate) fn power_cut_after_every_effect<R>(
    prefix: &str,
    seed_step: u64,
    mut run: impl FnMut(u64, &Path, Arc<SimFs>) -> R,
    mut after_dry: impl FnMut(u64, &Path, &SimFs, R),
    mut check: impl FnMut(u64, u64, &Path, &R),
) -> Explored {
    let mut explored = Explored::default();
    let draws = draws();
    // Report every failing image instead of stopping at the first (for investigations).
    let keep_going = std::env::var_os("RML_SIM_KEEP_GOING").is_some();
    let mut failures = 0u64;
    for seed in 0..workloads() {
        let dry = scratch(prefix);
        let fs = Arc::new(SimFs::new(dry.path()));
        let r = run(seed, dry.path(), fs.clone());
        after_dry(seed, dry.path(), &fs, r);
        for k in 1..=fs.effects() {
            let dir = scratch(prefix);
            let images: Vec<tempfile::TempDir> = (0..draws).map(|_| scratch(prefix)).collect();
            let into: Vec<&Path> = images.iter().map(|d| d.path()).collect();
            let fs = Arc::new(SimFs::new(dir.path()));
            fs.cut_after(k, &into, seed * seed_step + k);
            let r = run(seed, dir.path(), fs.clone());
            if !fs.cut_taken() {
                // Group commit merges flushes by timing, so a run may have fewer effects than
                // the dry run: nothing to cut here.
                continue;
            }
            explored.cuts += 1;
            for (draw, (image, distinct)) in into.iter().zip(fs.distinct_images()).enumerate() {
                explored.images += 1;
                if !distinct {
                    continue;
                }
                explored.states += 1;
                let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    check(seed, k, image, &r)
                }));
                if let Err(panic) = checked {
                    eprintln!("failed: workload {seed}, cut after effect {k}, image {draw}");
                    failures += 1;
                    if !keep_going {
                        std::panic::resume_unwind(panic);
                    }
                }
            }
        }
    }
    assert_eq!(
        failures, 0,
        "{failures} images failed their check ({explored})"
    );
    explored
}
