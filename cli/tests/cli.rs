//! The `raft-mmap-log` binary on real logs made by the library.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use raft_mmap_log::format::segment_file_name;
use raft_mmap_log::raft::{LogId, RaftLog, RaftTypes, Vote};
use raft_mmap_log::Config;

const SEGMENT: u64 = 16 * 1024;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_raft-mmap-log"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run raft-mmap-log")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn config() -> Config {
    Config {
        segment_size: SEGMENT,
        ..Config::default()
    }
}

/// A Raft log with `n` entries over several small segments, synced and closed. Returns the
/// newest segment's path and where its records end.
fn make_log(dir: &Path, n: u64) -> (PathBuf, u64) {
    let mut log = RaftLog::<RaftTypes>::open(dir, config()).unwrap();
    log.save_vote(Vote::new(2, 1, true)).unwrap();
    let payload = [0x5au8; 200];
    for i in 0..n {
        log.append([(LogId::new(2, 1, i), &payload[..])]).unwrap();
    }
    log.commit(LogId::new(2, 1, n - 2)).unwrap();
    log.save_user_data(Some(b"hello".to_vec())).unwrap();
    log.sync().unwrap();
    let pos = log.store().position();
    drop(log);
    pos
}

fn assert_clean_failure(out: &Output) {
    assert!(!out.status.success(), "expected failure: {out:?}");
    let err = text(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(!err.contains("RUST_BACKTRACE"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("raft-mmap-log: error: "), "{err}");
}

#[test]
fn bench_runs_small_and_json_parses() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    let d = dir.to_str().unwrap();
    let out = run(&[
        "bench",
        "--dir",
        d,
        "--keep",
        "--entries",
        "3000",
        "--entry-size",
        "64",
        "--readers",
        "2",
        "--segment-size",
        "1048576",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let phases = v["phases"].as_array().unwrap();
    assert!(phases.len() >= 6, "{v}");
    assert!(
        phases
            .iter()
            .all(|p| p["entries_per_sec"].as_f64().unwrap() > 0.0),
        "{v}"
    );
    assert!(
        v["memory_after_recovery"]["index_heap_bytes"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(v["durable_latency_us"]["p50"].as_f64().unwrap() > 0.0);
    // The kept log is sound and readable by the other commands.
    let out = run(&["verify", d]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let out = run(&["stat", d, "--json"]);
    assert!(out.status.success());
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["first_index"], 0);
    assert!(s["entries"].as_u64().unwrap() > 3000);

    // Table output, temporary directory removed.
    let out = run(&[
        "bench",
        "--entries",
        "2000",
        "--readers",
        "1",
        "--sync",
        "each",
        "--segment-size",
        "1048576",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    for want in [
        "append, no sync",
        "durable append",
        "tail reads",
        "range reads",
        "reopen",
        "bytes/entry",
        "p99.9",
    ] {
        assert!(t.contains(want), "missing {want:?} in\n{t}");
    }
}

#[test]
fn replicate_runs_small_with_a_restart_and_reports_ratios() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("r");
    let out = run(&[
        "replicate",
        "--dir",
        d.to_str().unwrap(),
        "--entries",
        "5000",
        "--entry-size",
        "64",
        "--restart-at",
        "2000",
        "--segment-size",
        "1048576",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert!(v["bare_tcp"]["mb_per_sec"].as_f64().unwrap() > 0.0, "{v}");
    let phases = v["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 2, "{v}");
    assert!(
        phases
            .iter()
            .all(|p| p["ratio_to_bare_tcp"].as_f64().unwrap() > 0.0),
        "{v}"
    );
    assert_eq!(phases[0]["follower_restarts"], 1, "{v}");
}

#[test]
fn bench_refuses_non_empty_dir() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("x"), b"x").unwrap();
    let out = run(&[
        "bench",
        "--dir",
        tmp.path().to_str().unwrap(),
        "--entries",
        "10",
    ]);
    assert_clean_failure(&out);
    assert!(tmp.path().join("x").exists());
}

#[test]
fn stat_shows_raft_state() {
    let tmp = tempfile::tempdir().unwrap();
    make_log(tmp.path(), 300);
    let d = tmp.path().to_str().unwrap();
    let out = run(&["stat", d]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    assert!(t.contains("300 (first index 0, last index 299)"), "{t}");
    assert!(t.contains("last log id   2-1-299"), "{t}");
    assert!(t.contains("committed     2-1-298"), "{t}");
    assert!(t.contains("T2-N1 (committed)"), "{t}");
    assert!(t.contains("user data     5 B"), "{t}");

    let out = run(&["stat", d, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["entries"], 300);
    assert_eq!(v["last_index"], 299);
    assert_eq!(v["vote"]["term"], 2);
    assert_eq!(v["committed"]["index"], 298);
    assert_eq!(v["user_data_len"], 5);
    assert!(v["segment_count"].as_u64().unwrap() >= 3, "{v}");
    // stat wrote nothing: verify still sees the same, clean log.
    assert!(run(&["verify", d]).status.success());
}

#[test]
fn verify_sound_log() {
    let tmp = tempfile::tempdir().unwrap();
    make_log(tmp.path(), 300);
    let out = run(&["verify", tmp.path().to_str().unwrap()]);
    let t = text(&out.stdout);
    assert!(out.status.success(), "{t}");
    assert!(t.starts_with("ok: "), "{t}");
    assert!(t.contains("300 log ids checked"), "{t}");
}

#[test]
fn verify_torn_tail_is_a_note_and_repair_cuts_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (newest, end) = make_log(tmp.path(), 300);
    assert!(end + 40 <= SEGMENT, "the newest segment has room");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&newest)
        .unwrap();
    f.write_all_at(&[0xab; 40], end).unwrap();
    drop(f);
    let before = std::fs::read(&newest).unwrap();

    let d = tmp.path().to_str().unwrap();
    let out = run(&["verify", d]);
    let t = text(&out.stdout);
    assert!(out.status.success(), "a torn tail is not a failure: {t}");
    let name = newest.file_name().unwrap().to_str().unwrap();
    assert!(
        t.contains(&format!("note: {}:{end}: torn tail", newest.display())),
        "{t}\n{name}"
    );
    assert_eq!(
        std::fs::read(&newest).unwrap(),
        before,
        "verify never writes"
    );

    let out = run(&["verify", d, "--repair"]);
    let t = text(&out.stdout);
    assert!(out.status.success(), "{t}{}", text(&out.stderr));
    assert!(
        t.contains(&format!(
            "repair: cut the log at {}:{end}",
            newest.display()
        )),
        "{t}"
    );
    let out = run(&["verify", d]);
    let t = text(&out.stdout);
    assert!(out.status.success() && !t.contains("note:"), "{t}");
}

#[test]
fn verify_corrupt_sealed_segment_fails_with_file_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    make_log(tmp.path(), 300);
    let first = tmp.path().join(segment_file_name(1));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&first)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 5000).unwrap();
    f.write_all_at(&[b[0] ^ 0xff], 5000).unwrap();
    drop(f);

    let out = run(&["verify", tmp.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let t = text(&out.stdout);
    let prefix = format!("{}:", first.display());
    let line = t
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} line in\n{t}"));
    let off: u64 = line[prefix.len()..]
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(off <= 5000 && off > 4000, "{line}");
    assert!(line.contains("checksum"), "{line}");
    assert!(t.contains("FAILED"), "{t}");

    // stat still shows what is there, and says it is corrupt.
    let out = run(&["stat", tmp.path().to_str().unwrap()]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("CORRUPT"));
    // repair without --truncate-at-corruption refuses.
    let out = run(&["verify", tmp.path().to_str().unwrap(), "--repair"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--truncate-at-corruption"));
}

#[test]
fn dump_lists_records_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    make_log(tmp.path(), 100);
    let d = tmp.path().to_str().unwrap();
    let out = run(&["dump", d]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    let first = t.lines().next().unwrap();
    assert!(
        first.starts_with("00000000000000000001.seg @64 "),
        "{first}"
    );
    assert!(first.contains("checkpoint"), "{first}");
    assert!(t.contains("index=5 log_id=2-1-5 len=224 crc="), "{t}");
    assert!(t.contains("key=vote"), "{t}");
    assert!(t.contains("key=committed"), "{t}");
    let entries = t.lines().filter(|l| l.contains(" entry ")).count();
    assert_eq!(entries, 100, "{t}");

    let out = run(&["dump", d, "--from", "5", "--to", "7"]);
    let t = text(&out.stdout);
    let lines: Vec<_> = t.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines.len(), 3, "{t}");
    assert!(
        lines[0].contains("index=5") && lines[2].contains("index=7"),
        "{t}"
    );

    let out = run(&["dump", d, "--format", "json", "--from", "10", "--to", "10"]);
    let recs: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["kind"] == "entry")
        .collect();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["log_id"]["index"], 10);
    assert_eq!(recs[0]["payload_len"], 200);

    let out = run(&["dump", d, "--format", "hex", "--from", "3", "--to", "3"]);
    assert!(
        text(&out.stdout).contains("    00000000  "),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn bad_input_is_one_clean_line() {
    let out = run(&["stat", "/nonexistent/raft-mmap-log-dir"]);
    assert_clean_failure(&out);
    assert!(text(&out.stderr).contains("/nonexistent/raft-mmap-log-dir"));
    assert_clean_failure(&run(&["verify", "/nonexistent/raft-mmap-log-dir"]));
    assert_clean_failure(&run(&["dump", "/nonexistent/raft-mmap-log-dir"]));
    // A file is not a log directory.
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("file");
    std::fs::write(&f, b"x").unwrap();
    assert_clean_failure(&run(&["stat", f.to_str().unwrap()]));
    // Usage errors come from clap with exit code 2, no panic.
    let out = run(&["dump"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!text(&out.stderr).contains("panicked"));
}

#[test]
fn locked_directory_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    make_log(tmp.path(), 10);
    // Other tests spawn processes concurrently; the lock just released by `make_log` must not
    // look held meanwhile (a forked child does not inherit the record lock).
    let log = RaftLog::<RaftTypes>::open(tmp.path(), config()).unwrap();
    for cmd in ["stat", "verify", "dump"] {
        let out = run(&[cmd, tmp.path().to_str().unwrap()]);
        assert_clean_failure(&out);
        assert!(
            text(&out.stderr).contains("locked by another process"),
            "{out:?}"
        );
    }
    drop(log);
    // (Same fork window as above, so allow a few tries.)
    let ok = (0..50).any(|_| {
        let ok = run(&["stat", tmp.path().to_str().unwrap()])
            .status
            .success();
        if !ok {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        ok
    });
    assert!(ok, "stat works once the log is closed");
}
