//! The child processes of the SIGKILL tests (`tests/kill9.rs`, `tests/kill9_raft.rs`) and the
//! environment knobs of the crash tests.
//!
//! A SIGKILL test re-executes its own binary ([`spawn_and_kill`] runs `current_exe()`) with
//! only its child entry test selected (`--exact <name>`) and an env var naming the directory;
//! the child entry is a no-op test in a normal run. The child speaks a line protocol on stdout
//! ([`emit`], [`emit_intents`]): `RML OPEN` once the log is open, `RML O <op>` before each
//! operation, `RML A <n> ...` from a flush callback ("ops up to n are durable"), `RML FAIL ...`
//! on an error. The parent reads it back with [`protocol_lines`].

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::Rng;

/// Seed of a child process (set by the parent to the round's seed).
pub const SEED_ENV: &str = "RML_KILL9_SEED";

/// `var` as a seed; the clock when it is not set (the tests print the seed to replay it).
pub fn seed_from_env(var: &str) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

/// `var` as a number (a round count), `default` when it is not set.
pub fn env_usize(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// How long a round lets its child run before the kill: one round in five a few hundred
/// microseconds (kills while opening), else 5..50 ms.
pub fn kill_delay(rng: &mut Rng) -> Duration {
    if rng.below(5) == 0 {
        Duration::from_micros(rng.below(4000))
    } else {
        Duration::from_millis(5 + rng.below(45))
    }
}

// ---------------------------------------------------------------------------------------------
// Child side

/// Writes `text` to stdout at once (a pipe to the parent).
pub fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    // A failed write means the parent is gone: nothing to report to.
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// One `RML O <op>` intent line per encoded op, in one write.
pub fn emit_intents(ops: impl IntoIterator<Item = String>) {
    let mut s = String::new();
    for op in ops {
        s += "RML O ";
        s += &op;
        s.push('\n');
    }
    emit(&s);
}

// ---------------------------------------------------------------------------------------------
// Parent side

/// Runs the test `name` of this binary (`current_exe()`: each test binary spawns itself) as a
/// child with `env_var=dir` and [`SEED_ENV`]`=seed`, SIGKILLs it after `delay` and returns its
/// complete stdout lines (only complete lines count: an op whose intent line was cut by the
/// kill never started) and its stderr.
pub fn spawn_and_kill(
    name: &str,
    env_var: &str,
    dir: &Path,
    seed: u64,
    delay: Duration,
) -> (Vec<u8>, String) {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(env_var, dir)
        .env(SEED_ENV, seed.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_thread = std::thread::spawn(move || {
        let mut v = String::new();
        let _ = stderr.read_to_string(&mut v);
        v
    });
    std::thread::sleep(delay);
    let early_exit = child.try_wait().unwrap();
    child.kill().ok(); // SIGKILL on Unix
    let status = child.wait().unwrap();
    let mut out = out_thread.join().unwrap();
    let err = err_thread.join().unwrap();
    {
        use std::os::unix::process::ExitStatusExt;
        assert!(
            early_exit.is_none() && status.signal() == Some(libc::SIGKILL),
            "child ended by itself ({status:?}); stderr:\n{err}\nstdout tail:\n{}",
            String::from_utf8_lossy(&out[out.len().saturating_sub(2000)..])
        );
    }
    out.truncate(out.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1));
    (out, err)
}

/// A line of the child protocol.
pub enum Line<'a> {
    /// `RML O <op>`: the encoded op.
    Op(&'a str),
    /// `RML A <ack>`: what follows `A `.
    Ack(&'a str),
    /// `RML OPEN`.
    Open,
}

/// The protocol lines of a child's complete stdout, in order; panics with `"{who} reported:
/// ..."` and the child's stderr `err` if the child reported a failure.
pub fn protocol_lines<'a>(complete: &'a [u8], err: &str, who: &str) -> Vec<Line<'a>> {
    let mut lines = Vec::new();
    for line in complete.split(|&b| b == b'\n') {
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        // libtest may print "test child_entry ... " in front of the first line.
        let Some(at) = line.find("RML ") else {
            continue;
        };
        let rest = &line[at + 4..];
        if let Some(op) = rest.strip_prefix("O ") {
            lines.push(Line::Op(op));
        } else if let Some(a) = rest.strip_prefix("A ") {
            lines.push(Line::Ack(a));
        } else if rest == "OPEN" {
            lines.push(Line::Open);
        } else if rest.starts_with("FAIL") {
            panic!("{who} reported: {rest}\nstderr:\n{err}");
        }
    }
    lines
}
