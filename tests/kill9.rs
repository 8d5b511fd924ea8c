//! Process crash (SIGKILL) of an engine writer, checked against an exact model of the
//! operations (`tests/common/engine_model.rs`).
//!
//! **`kill9_rounds`**: the test re-executes its own binary as a child (`child_entry`, selected
//! by the `RML_KILL9_CHILD` env var; `tests/common/child.rs`). The child opens the log, appends
//! batches, truncates, purges and sets a meta value, with small segments (16 KiB) so that kills
//! land during rollovers. Before each operation it writes an *intent* line to stdout (a pipe),
//! and from each flush callback it writes an *ack* line: "everything up to operation n is
//! durable". The parent SIGKILLs it at a random moment, reopens the directory and checks that
//! the recovered log is exactly the state after some operation `k >= n` (every acknowledged
//! append, truncate, purge and meta write is there, every payload has the right bytes, no
//! gaps, nothing that was never written), then that a read-only `inspect::stat` reports no
//! corruption and no cut. The next round continues in the same directory.
//! `RML_KILL9_ROUNDS` (default 60) sets the number of kills, `RML_KILL9_TEST_SEED` replays.
//!
//! SIGKILL keeps the page cache, so it cannot lose unsynced writes: `tests/power_loss.rs`
//! simulates that. The `RaftLog` variant is `tests/kill9_raft.rs`.

use std::path::Path;
use std::time::{Duration, Instant};

use raft_mmap_log::Store;

mod common;

use common::child::{
    emit, emit_intents, env_usize, kill_delay, protocol_lines, seed_from_env, spawn_and_kill, Line,
    SEED_ENV,
};
use common::engine_model::{check_clean, match_prefix, observe, Driver, Model, Op};
use common::{kill9_config as config, Rng};

const CHILD_ENV: &str = "RML_KILL9_CHILD";

/// Entry point of the child process; a no-op in a normal test run.
#[test]
fn child_entry() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let seed = seed_from_env(SEED_ENV);
    let store = match Store::open(&dir, config()) {
        Ok(s) => s,
        Err(e) => {
            emit(&format!("RML FAIL open: {e}\n"));
            std::process::exit(3);
        }
    };
    // The parent knows the starting state; the child only needs it to pick valid ops.
    let model = observe(&store);
    emit("\nRML OPEN\n");
    let mut d = Driver::new(store, model, seed);
    let mut issued = 0usize;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut steps = 0u64;
    while Instant::now() < deadline {
        d.step(&mut |ops| {
            emit_intents(ops.iter().map(Op::encode));
            issued += ops.len();
        });
        steps += 1;
        let n = issued;
        let report = move |r: raft_mmap_log::Result<()>| match r {
            Ok(()) => emit(&format!("RML A {n}\n")),
            Err(e) => emit(&format!("RML FAIL flush: {e}\n")),
        };
        if steps % 32 == 0 {
            // Keep the flush backlog bounded.
            d.store.sync().expect("sync");
            report(Ok(()));
        } else {
            d.store.flush(report).expect("flush");
        }
    }
    emit("RML FAIL child was not killed in time\n");
    std::process::exit(4);
}

/// What a child did before the kill: the ops it announced, how many were acknowledged durable,
/// and whether it had opened the log.
struct ChildRun {
    ops: Vec<Op>,
    acked: usize,
    opened: bool,
}

fn run_child_and_kill(dir: &Path, seed: u64, delay: Duration) -> ChildRun {
    let (complete, err) = spawn_and_kill("child_entry", CHILD_ENV, dir, seed, delay);
    let mut run = ChildRun {
        ops: Vec::new(),
        acked: 0,
        opened: false,
    };
    for line in protocol_lines(&complete, &err, "child") {
        match line {
            Line::Op(op) => run.ops.push(Op::decode(op).expect("bad intent line")),
            Line::Ack(n) => {
                let n: usize = n.parse().unwrap();
                assert!(n <= run.ops.len(), "ack {n} before its intents");
                run.acked = run.acked.max(n);
            }
            Line::Open => run.opened = true,
        }
    }
    run
}

#[test]
fn kill9_rounds() {
    let rounds = env_usize("RML_KILL9_ROUNDS", 60);
    let seed = seed_from_env("RML_KILL9_TEST_SEED");
    eprintln!("kill9: {rounds} rounds, seed {seed} (RML_KILL9_TEST_SEED to replay)");
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let started = Instant::now();
    let mut model = Model::default();
    let (mut total_ops, mut total_acked, mut beyond_ack, mut cuts, mut in_open) = (0, 0, 0, 0, 0);
    for round in 0..rounds {
        let delay = kill_delay(&mut rng);
        let run = run_child_and_kill(&dir, seed.wrapping_add(round as u64 + 1), delay);
        let ctx = format!(
            "round {round} (seed {seed}, child {} ops, {} acked, opened: {}, killed after \
             {delay:?})",
            run.ops.len(),
            run.acked,
            run.opened
        );
        let store = match Store::open(&dir, config()) {
            Ok(s) => s,
            Err(e) => common::fail_keeping_dir(
                tmp,
                &dir,
                &format!("{ctx}: reopen after SIGKILL failed: {e}"),
            ),
        };
        if store.recovery_report().cut.is_some() {
            cuts += 1;
        }
        let got = observe(&store);
        let k = match match_prefix(&model, &run.ops, run.acked, &got) {
            Ok(k) => k,
            Err(why) => {
                let report = format!("{:?}", store.recovery_report());
                drop(store);
                common::fail_keeping_dir(
                    tmp,
                    &dir,
                    &format!("{ctx}: {why}\n  reopen recovered: {report}"),
                )
            }
        };
        total_ops += run.ops.len();
        total_acked += run.acked;
        beyond_ack += k - run.acked;
        in_open += usize::from(!run.opened);
        model = got;
        drop(store);
        if let Err(why) = check_clean(&dir) {
            common::fail_keeping_dir(tmp, &dir, &format!("{ctx}: after a clean close: {why}"));
        }
    }
    eprintln!(
        "kill9: {rounds} kills in {:.1?}: {total_ops} ops issued, {total_acked} acknowledged, \
         {beyond_ack} unacknowledged ops survived, {cuts} torn tails cut, {in_open} kills before \
         the child had opened the log",
        started.elapsed()
    );
}
