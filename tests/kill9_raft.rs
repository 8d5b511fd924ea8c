//! Process crash (SIGKILL) of a `RaftLog` writer, checked against a model of the Raft state
//! and the log ids of the live entries (`tests/common/raft_model.rs`).
//!
//! **`kill9_raft_rounds`**: the test re-executes its own binary as a child
//! (`raft_child_entry`, env `RML_KILL9_RAFT_CHILD`; `tests/common/child.rs`), which drives a
//! `RaftLog`: votes (synced before they are acknowledged), appends, commits, conflicting
//! truncates followed by appends in a higher term, purges and user data, each announced by an
//! intent line; flush callbacks report "ops up to n are durable" with the vote, committed,
//! purged and last log id as of the flush. After each kill the parent reopens the log and
//! checks the acknowledged Raft state against what was recovered, then that the recovered log
//! is exactly the state after some op at or after the acknowledged one, then
//! `inspect::verify`. `RML_KILL9_RAFT_ROUNDS` (default 60) sets the number of kills,
//! `RML_KILL9_RAFT_SEED` replays.

use std::path::Path;
use std::time::{Duration, Instant};

use raft_mmap_log::raft::{LogId, RaftLog, RaftTypes, Vote};

mod common;

use common::child::{
    emit, emit_intents, env_usize, kill_delay, protocol_lines, seed_from_env, spawn_and_kill, Line,
    SEED_ENV,
};
use common::raft_model::{
    dec_id, dec_vote, enc_id, enc_vote, raft_observe, RModel, ROp, RaftDriver,
};
use common::{kill9_config as config, Rng};

const RAFT_CHILD_ENV: &str = "RML_KILL9_RAFT_CHILD";

/// Entry point of the Raft child process; a no-op in a normal test run.
#[test]
fn raft_child_entry() {
    let Ok(dir) = std::env::var(RAFT_CHILD_ENV) else {
        return;
    };
    let seed = seed_from_env(SEED_ENV);
    let log = match RaftLog::<RaftTypes>::open(&dir, config()) {
        Ok(l) => l,
        Err(e) => {
            emit(&format!("RML FAIL open: {e}\n"));
            std::process::exit(3);
        }
    };
    emit("\nRML OPEN\n");
    let st = log.state();
    let term = st
        .vote
        .map_or(0, |v| v.term)
        .max(st.last.map_or(0, |l| l.term))
        .max(1);
    let mut d = RaftDriver {
        log,
        rng: Rng(seed),
        term,
        user_counter: seed << 20,
    };
    let mut issued = 0usize;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut steps = 0u64;
    while Instant::now() < deadline {
        let is_vote = d.step(&mut |ops| {
            emit_intents(ops.iter().map(ROp::encode));
            issued += ops.len();
        });
        steps += 1;
        let st = d.log.state();
        let ack = format!(
            "RML A {issued} {} {} {} {}\n",
            enc_vote(&st.vote),
            enc_id(&st.committed),
            enc_id(&st.purged),
            enc_id(&st.last)
        );
        if is_vote || steps % 32 == 0 {
            // A vote is durable before the node answers the candidate.
            d.log.sync().expect("sync");
            emit(&ack);
        } else {
            d.log
                .flush(move |r| match r {
                    Ok(()) => emit(&ack),
                    Err(e) => emit(&format!("RML FAIL flush: {e}\n")),
                })
                .expect("flush");
        }
    }
    emit("RML FAIL child was not killed in time\n");
    std::process::exit(4);
}

/// What a flush callback acknowledged: ops `..n` are durable, with this state.
#[derive(Debug, Clone, Default)]
struct RAck {
    n: usize,
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
    last: Option<LogId>,
}

struct RaftChildRun {
    ops: Vec<ROp>,
    /// The last acknowledgement (none: only the state the child opened is durable).
    ack: Option<RAck>,
    opened: bool,
}

impl RaftChildRun {
    fn acked(&self) -> usize {
        self.ack.as_ref().map_or(0, |a| a.n)
    }
}

fn run_raft_child_and_kill(dir: &Path, seed: u64, delay: Duration) -> RaftChildRun {
    let (complete, err) = spawn_and_kill("raft_child_entry", RAFT_CHILD_ENV, dir, seed, delay);
    let mut run = RaftChildRun {
        ops: Vec::new(),
        ack: None,
        opened: false,
    };
    for line in protocol_lines(&complete, &err, "raft child") {
        match line {
            Line::Op(op) => run.ops.push(ROp::decode(op).expect("bad intent line")),
            Line::Ack(a) => {
                let f: Vec<&str> = a.split(' ').collect();
                assert_eq!(f.len(), 5, "bad ack line {a:?}");
                let ack = RAck {
                    n: f[0].parse().unwrap(),
                    vote: dec_vote(f[1]).expect("ack vote"),
                    committed: dec_id(f[2]).expect("ack committed"),
                    purged: dec_id(f[3]).expect("ack purged"),
                    last: dec_id(f[4]).expect("ack last"),
                };
                assert!(ack.n <= run.ops.len(), "ack {} before its intents", ack.n);
                assert!(ack.n >= run.acked(), "acks out of order");
                run.ack = Some(ack);
            }
            Line::Open => run.opened = true,
        }
    }
    run
}

/// The checks the acknowledgements promise, stated directly.
fn check_raft_acks(start: &RModel, run: &RaftChildRun, got: &RModel) -> Result<(), String> {
    let mut at_ack = start.clone();
    for op in &run.ops[..run.acked()] {
        at_ack.apply(op);
    }
    let ack = run.ack.clone().unwrap_or(RAck {
        n: 0,
        vote: start.vote,
        committed: start.committed,
        purged: start.purged,
        last: start.last,
    });
    // The child's reported state is the model's state at the ack.
    if (at_ack.vote, at_ack.committed, at_ack.purged, at_ack.last)
        != (ack.vote, ack.committed, ack.purged, ack.last)
    {
        return Err(format!(
            "model at ack {} differs from the child's report {ack:?}",
            at_ack.line()
        ));
    }
    let ge = |name: &str, got: bool| {
        if got {
            Ok(())
        } else {
            Err(format!(
                "{name} went backwards below the acknowledged value"
            ))
        }
    };
    ge("vote", got.vote >= ack.vote)?;
    ge("committed", got.committed >= ack.committed)?;
    ge("purged", got.purged >= ack.purged)?;
    let later = &run.ops[run.acked()..];
    // Lowest truncate point issued after the ack (acknowledged or not: SIGKILL keeps the page
    // cache, so a later truncate may well have survived).
    let cut = later
        .iter()
        .filter_map(|op| match op {
            ROp::Truncate(at) => Some(at.map_or(0, |l| l.index + 1)),
            _ => None,
        })
        .min();
    if cut.is_none() {
        ge("last log id", got.last >= ack.last)?;
    }
    for (&i, id) in &at_ack.entries {
        if got.purged.is_some_and(|p| p.index >= i) || cut.is_some_and(|c| i >= c) {
            continue;
        }
        if got.entries.get(&i) != Some(id) {
            return Err(format!(
                "acknowledged entry {id} lost (recovered {:?})",
                got.entries.get(&i)
            ));
        }
    }
    Ok(())
}

/// Finds `k` in `acked..=ops.len()` such that `start` + `ops[..k]` equals `got`.
fn raft_match_prefix(
    start: &RModel,
    ops: &[ROp],
    acked: usize,
    got: &RModel,
) -> Result<usize, String> {
    let mut m = start.clone();
    for op in &ops[..acked] {
        m.apply(op);
    }
    let at_ack = m.clone();
    for k in acked..=ops.len() {
        if &m == got {
            return Ok(k);
        }
        if let Some(op) = ops.get(k) {
            m.apply(op);
        }
    }
    Err(format!(
        "recovered state matches no state at or after the acknowledged op {acked} (of {}):\n  \
         recovered: {}\n  acked:     {}\n  ops after ack: {:?}",
        ops.len(),
        got.line(),
        at_ack.line(),
        &ops[acked..ops.len().min(acked + 40)]
    ))
}

#[test]
fn kill9_raft_rounds() {
    let rounds = env_usize("RML_KILL9_RAFT_ROUNDS", 60);
    let seed = seed_from_env("RML_KILL9_RAFT_SEED");
    eprintln!("kill9 raft: {rounds} rounds, seed {seed} (RML_KILL9_RAFT_SEED to replay)");
    let mut rng = Rng(seed ^ 0xA5A5);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("raft");
    let started = Instant::now();
    let mut model = RModel::default();
    let (mut total_ops, mut total_acked, mut beyond_ack, mut cuts, mut in_open) = (0, 0, 0, 0, 0);
    for round in 0..rounds {
        let delay = kill_delay(&mut rng);
        let run = run_raft_child_and_kill(&dir, seed.wrapping_add(round as u64 + 1), delay);
        let ctx = format!(
            "round {round} (seed {seed}, child {} ops, {} acked, opened: {}, killed after \
             {delay:?})",
            run.ops.len(),
            run.acked(),
            run.opened
        );
        let log = match RaftLog::<RaftTypes>::open(&dir, config()) {
            Ok(l) => l,
            Err(e) => common::fail_keeping_dir(
                tmp,
                &dir,
                &format!("{ctx}: reopen after SIGKILL failed: {e}"),
            ),
        };
        if log.store().recovery_report().cut.is_some() {
            cuts += 1;
        }
        let got = raft_observe(&log);
        let checked = check_raft_acks(&model, &run, &got)
            .and_then(|()| raft_match_prefix(&model, &run.ops, run.acked(), &got));
        let k = match checked {
            Ok(k) => k,
            Err(why) => {
                let report = format!("{:?}", log.store().recovery_report());
                drop(log);
                common::fail_keeping_dir(
                    tmp,
                    &dir,
                    &format!(
                        "{ctx}: {why}\n  recovered {}\n  reopen recovered: {report}",
                        got.line()
                    ),
                )
            }
        };
        total_ops += run.ops.len();
        total_acked += run.acked();
        beyond_ack += k - run.acked();
        in_open += usize::from(!run.opened);
        model = got;
        drop(log);
        match raft_mmap_log::raft::inspect::verify(&dir, &|_| {}) {
            Ok(report) if report.is_sound() => {}
            Ok(_) => common::fail_keeping_dir(tmp, &dir, &format!("{ctx}: verify found problems")),
            Err(e) => common::fail_keeping_dir(tmp, &dir, &format!("{ctx}: verify failed: {e}")),
        }
    }
    eprintln!(
        "kill9 raft: {rounds} kills in {:.1?}: {total_ops} ops issued, {total_acked} acknowledged, \
         {beyond_ack} unacknowledged ops survived, {cuts} torn tails cut, {in_open} kills before \
         the child had opened the log; final {}",
        started.elapsed(),
        model.line()
    );
}
