//! The `raft-mmap-log` binary on real logs made by the library.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use std::collections::{BTreeMap, BTreeSet};

use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{BasicNode, CommittedLeaderId, Entry, EntryPayload, Membership};
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, ConfState, EntryType, HardState};
use raft_mmap_log::format::segment_file_name;
use raft_mmap_log::groups::{Group, Groups};
use raft_mmap_log::openraft::{KvConfig, KvRequest, MmapLogStore, OpenraftTypes, OPENRAFT_RULES};
use raft_mmap_log::raft::{LogId, RaftLog, RaftTypes, Types, Vote};
use raft_mmap_log::raft_rs::{MmapRaftStorage, RaftRsTypes};
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

/// `--steady`: purges keep four segments' worth, so the directory ends with about that many
/// segments (plus the pool), not the ten or more written, and the log verifies.
#[test]
fn bench_steady_recycles_and_the_log_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let d = dir.to_str().unwrap();
    let out = run(&[
        "bench",
        "--dir",
        d,
        "--keep",
        "--entries",
        "2000",
        "--entry-size",
        "64",
        "--segment-size",
        "1048576",
        "--steady",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let phases = v["phases"].as_array().unwrap();
    let steady: Vec<&serde_json::Value> = phases
        .iter()
        .filter(|p| p["name"].as_str().unwrap().starts_with("steady"))
        .collect();
    assert_eq!(steady.len(), 2, "{v}");
    // At least ten 1 MiB segments' worth of 64-byte entries went through the log.
    assert!(
        steady[0]["entries"].as_u64().unwrap() > 10 * (1 << 20) / 112,
        "{v}"
    );
    let segments = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_str()
                .unwrap()
                .ends_with(".seg")
        })
        .count();
    assert!((4..=7).contains(&segments), "{segments} segment files left");
    let out = run(&["verify", d]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
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

fn or_id(index: u64) -> openraft::LogId<u64> {
    openraft::LogId::new(CommittedLeaderId::new(1, 1), index)
}

/// An openraft log written through `MmapLogStore`: a blank entry, a membership, a short and a
/// long key-value request, a committed vote and a committed log id.
fn make_openraft_log(dir: &Path) {
    let nodes = BTreeMap::from([
        (1u64, BasicNode::new("10.0.0.1:5000")),
        (2, BasicNode::new("10.0.0.2:5000")),
    ]);
    let set = |key: &str, value: String| {
        EntryPayload::Normal(KvRequest::Set {
            key: key.into(),
            value,
        })
    };
    let entries = [
        EntryPayload::Blank,
        EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1, 2])], nodes)),
        set("color", "blue".into()),
        set("k", "x".repeat(100)),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, payload)| Entry::<KvConfig> {
        log_id: or_id(i as u64),
        payload,
    });
    let mut s = MmapLogStore::<KvConfig>::open(dir, config()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        s.save_vote(&openraft::Vote::new_committed(1, 1))
            .await
            .unwrap();
        s.blocking_append(entries).await.unwrap();
        s.save_committed(Some(or_id(2))).await.unwrap();
    });
    s.with_log(|l| l.sync()).unwrap().unwrap();
}

fn rs_entry(index: u64, entry_type: EntryType, data: &[u8]) -> raft::eraftpb::Entry {
    raft::eraftpb::Entry {
        term: 1,
        index,
        entry_type,
        data: data.to_vec().into(),
        ..Default::default()
    }
}

/// A raft-rs log written through `MmapRaftStorage`: a configuration, an empty entry, a text
/// and a binary one, a conf change, a hard state.
fn make_raft_rs_log(dir: &Path) {
    let mut s = MmapRaftStorage::open(dir, config()).unwrap();
    s.set_conf_state(ConfState::from((vec![1, 2, 3], vec![])))
        .unwrap();
    let cc = ConfChange {
        change_type: ConfChangeType::AddLearnerNode,
        node_id: 4,
        ..Default::default()
    };
    s.append(&[
        rs_entry(1, EntryType::EntryNormal, b""),
        rs_entry(2, EntryType::EntryNormal, b"put a 1"),
        rs_entry(3, EntryType::EntryConfChange, &cc.write_to_bytes().unwrap()),
        rs_entry(4, EntryType::EntryNormal, &[0xff, 0x00, 0x01]),
    ])
    .unwrap();
    s.set_hard_state(&HardState {
        term: 1,
        vote: 1,
        commit: 2,
        ..Default::default()
    })
    .unwrap();
    s.sync().unwrap();
}

fn dump_text(args: &[&str]) -> String {
    let out = run(&[&["dump"], args].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

/// The line of entry `index` (exactly one).
fn entry_line(t: &str, index: u64) -> &str {
    let want = format!(" index={index} log_id=");
    let mut lines = t
        .lines()
        .filter(|l| l.contains(" entry ") && l.contains(&want));
    let line = lines
        .next()
        .unwrap_or_else(|| panic!("no entry {index} in\n{t}"));
    assert!(lines.next().is_none(), "entry {index} twice in\n{t}");
    line
}

fn json_entries(t: &str) -> Vec<serde_json::Value> {
    t.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["kind"] == "entry")
        .collect()
}

const OPENRAFT_WANT: [&str; 4] = [
    "openraft: blank",
    r#"openraft: membership configs=[{1, 2}] nodes={1: "10.0.0.1:5000", 2: "10.0.0.2:5000"}"#,
    r#"openraft: normal data="\0\u{5}color\u{4}blue""#,
    r#"openraft: normal data="\0\u{1}kdxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"... (104 bytes)"#,
];

const RAFT_RS_WANT: [&str; 4] = [
    "raft-rs: normal (empty)",
    r#"raft-rs: normal data="put a 1""#,
    "raft-rs: conf-change AddLearnerNode node=4",
    "raft-rs: normal data=0xff0001",
];

#[test]
fn dump_decodes_openraft_entries_and_metas() {
    let tmp = tempfile::tempdir().unwrap();
    make_openraft_log(tmp.path());
    let d = tmp.path().to_str().unwrap();
    for args in [&[d][..], &[d, "--decode", "openraft"]] {
        let t = dump_text(args);
        for (i, want) in OPENRAFT_WANT.iter().enumerate() {
            let line = entry_line(&t, i as u64);
            assert!(line.ends_with(want), "{line}\nwant {want}");
        }
        assert!(t.contains("key=vote len=17 crc="), "{t}");
        assert!(t.contains(" openraft: T1-N1:committed\n"), "{t}");
        assert!(t.contains(" openraft: 1-1-2\n"), "{t}");
        assert!(!t.contains("shown raw"), "{t}");
    }
    // --format hex shows the whole data.
    let t = dump_text(&[d, "--format", "hex", "--from", "3"]);
    assert!(
        entry_line(&t, 3).ends_with(&format!("d{}\"", "x".repeat(100))),
        "{t}"
    );

    let out = dump_text(&[d, "--format", "json"]);
    let recs = json_entries(&out);
    assert_eq!(recs.len(), 4, "{out}");
    assert_eq!(recs[2]["decoder"], "openraft");
    assert_eq!(recs[2]["decoded"], r#"normal data="\0\u{5}color\u{4}blue""#);
    assert_eq!(recs[2]["decode_error"], serde_json::Value::Null);

    // raw: bytes only; raft-rs: every entry shown raw with the reason.
    let t = dump_text(&[d, "--decode", "raw"]);
    assert!(!t.contains("openraft:"), "{t}");
    assert!(entry_line(&t, 0).ends_with(" payload=0100"), "{t}");
    let t = dump_text(&[d, "--decode", "raft-rs"]);
    let line = entry_line(&t, 2);
    assert!(
        line.contains("payload=") && line.contains("(not raft-rs: decode log id of entry 2: raft-rs log id: node id 1 where 0 is stored)"),
        "{line}"
    );

    let out = run(&["stat", d]);
    let t = text(&out.stdout);
    assert!(t.contains("openraft      vote: T1-N1:committed\n"), "{t}");
    assert!(t.contains("openraft      committed: 1-1-2\n"), "{t}");
}

#[test]
fn dump_and_stat_decode_raft_rs_entries_and_metas() {
    let tmp = tempfile::tempdir().unwrap();
    make_raft_rs_log(tmp.path());
    let d = tmp.path().to_str().unwrap();
    for args in [&[d][..], &[d, "--decode", "raft-rs"]] {
        let t = dump_text(args);
        for (i, want) in RAFT_RS_WANT.iter().enumerate() {
            let line = entry_line(&t, i as u64 + 1);
            assert!(line.ends_with(want), "{line}\nwant {want}");
        }
        assert!(
            t.contains(" raft-rs: conf state voters=[1, 2, 3] (set at snapshot index 0)\n"),
            "{t}"
        );
        assert!(t.contains(" raft-rs: term=1 vote=1\n"), "{t}");
        assert!(t.contains(" raft-rs: 1/2\n"), "{t}");
    }
    let out = dump_text(&[d, "--format", "json", "--from", "3", "--to", "3"]);
    let recs = json_entries(&out);
    assert_eq!(recs[0]["decoder"], "raft-rs");
    assert_eq!(recs[0]["decoded"], "conf-change AddLearnerNode node=4");

    let out = run(&["stat", d]);
    let t = text(&out.stdout);
    assert!(
        t.contains(
            "raft-rs       user_data: conf state voters=[1, 2, 3] (set at snapshot index 0)\n"
        ),
        "{t}"
    );
    assert!(t.contains("raft-rs       vote: term=1 vote=1\n"), "{t}");
    assert!(t.contains("raft-rs       committed: 1/2\n"), "{t}");
    let out = run(&["stat", d, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["decoded"]["adapter"], "raft-rs", "{v}");
    assert_eq!(v["decoded"]["vote"], "term=1 vote=1", "{v}");
    let out = run(&["stat", d, "--decode", "raw"]);
    assert!(!text(&out.stdout).contains("raft-rs"));
}

/// Every entry of the log in `dir`, as stored (log id, body after it), and its Raft state.
/// Stored entries: log id and body.
type Stored<T> = Vec<(<T as Types>::LogId, Vec<u8>)>;

fn stored<T: Types>(dir: &Path) -> (Stored<T>, raft_mmap_log::raft::RaftState<T>) {
    let log = RaftLog::<T>::open_with_rules(dir, config(), OPENRAFT_RULES).unwrap();
    let entries = log
        .reader()
        .view()
        .read(..)
        .map(|e| {
            let (id, body) = e.unwrap();
            (id, body.to_vec())
        })
        .collect();
    (entries, log.state().clone())
}

#[test]
fn dump_decodes_each_group_of_a_shared_log_by_its_adapter() {
    let tmp = tempfile::tempdir().unwrap();
    let (or_dir, rs_dir, shared_dir) = (
        tmp.path().join("openraft"),
        tmp.path().join("raft-rs"),
        tmp.path().join("shared"),
    );
    make_openraft_log(&or_dir);
    make_raft_rs_log(&rs_dir);
    // Group 1 holds the openraft log's records, group 2 the raft-rs log's, byte for byte.
    {
        let shared = Groups::open(&shared_dir, config()).unwrap();
        let (entries, st) = stored::<OpenraftTypes>(&or_dir);
        let mut g1 =
            RaftLog::<OpenraftTypes, Group>::for_group_with_rules(shared.group(1), OPENRAFT_RULES)
                .unwrap();
        g1.save_vote(st.vote.unwrap()).unwrap();
        g1.append(entries.iter().map(|(id, b)| (*id, &b[..])))
            .unwrap();
        g1.sync().unwrap();
        let (entries, st) = stored::<RaftRsTypes>(&rs_dir);
        let mut g2 = RaftLog::<RaftRsTypes, Group>::for_group(shared.group(2)).unwrap();
        g2.save_user_data(st.user_data).unwrap();
        g2.append(entries.iter().map(|(id, b)| (*id, &b[..])))
            .unwrap();
        g2.sync().unwrap();
    }
    let d = shared_dir.to_str().unwrap();
    let t = dump_text(&[d, "--group", "1"]);
    for (i, want) in OPENRAFT_WANT.iter().enumerate() {
        assert!(entry_line(&t, i as u64).ends_with(want), "{t}");
    }
    assert!(t.contains(" openraft: T1-N1:committed\n"), "{t}");
    assert!(!t.contains("raft-rs"), "{t}");
    let t = dump_text(&[d, "--group", "2"]);
    for (i, want) in RAFT_RS_WANT.iter().enumerate() {
        assert!(entry_line(&t, i as u64 + 1).ends_with(want), "{t}");
    }
    assert!(t.contains(" raft-rs: conf state voters=[1, 2, 3]"), "{t}");
    // The whole log: each group by its own adapter.
    let t = dump_text(&[d]);
    let lines = |g: u64| {
        t.lines()
            .filter(move |l| l.contains(" entry ") && l.contains(&format!(" group={g} ")))
            .collect::<Vec<_>>()
    };
    assert!(lines(1).iter().all(|l| l.contains(" openraft: ")), "{t}");
    assert!(lines(2).iter().all(|l| l.contains(" raft-rs: ")), "{t}");
    assert_eq!((lines(1).len(), lines(2).len()), (4, 4), "{t}");
    let out = dump_text(&[
        d, "--group", "2", "--format", "json", "--from", "2", "--to", "2",
    ]);
    let recs = json_entries(&out);
    assert_eq!(recs[0]["group"], 2);
    assert_eq!(recs[0]["decoded"], r#"normal data="put a 1""#);
}

#[test]
fn dump_shows_an_undecodable_body_raw_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    make_openraft_log(tmp.path());
    {
        let mut log =
            RaftLog::<OpenraftTypes>::open_with_rules(tmp.path(), config(), OPENRAFT_RULES)
                .unwrap();
        log.append([
            (LogId::new(1, 1, 4), &[0x7f, 0x01, 0x02][..]),
            (LogId::new(1, 1, 5), &[0x01, 0x09]),
            (LogId::new(1, 1, 6), &[0x01, 0x00, 0xee]),
        ])
        .unwrap();
        log.sync().unwrap();
    }
    let d = tmp.path().to_str().unwrap();
    let t = dump_text(&[d]);
    assert!(entry_line(&t, 2).contains("openraft: normal"), "{t}");
    let line = entry_line(&t, 4);
    assert!(
        line.ends_with(" payload=7f0102 (not openraft: decode openraft entry body: entry 4: unknown entry codec id 0x7f (this build reads 0x01 = postcard 1.x, and '{' = the serde_json of earlier versions); was the log written by a newer raft-mmap-log?)"),
        "{line}"
    );
    assert!(entry_line(&t, 5).contains("unknown entry kind 9"), "{t}");
    assert!(entry_line(&t, 6).contains("1 trailing bytes"), "{t}");
    let out = dump_text(&[d, "--format", "json", "--from", "4", "--to", "4"]);
    let recs = json_entries(&out);
    assert_eq!(recs[0]["decoded"], serde_json::Value::Null);
    assert_eq!(recs[0]["decoder"], serde_json::Value::Null);
    assert!(
        recs[0]["decode_error"]
            .as_str()
            .unwrap()
            .contains("unknown entry codec id 0x7f"),
        "{out}"
    );

    // A log neither adapter wrote is shown raw, and says so once.
    let plain = tmp.path().join("plain");
    make_log(&plain, 5);
    let t = dump_text(&[plain.to_str().unwrap()]);
    assert!(
        !t.contains("openraft:") && !t.contains("raft-rs:") && !t.contains("(not "),
        "{t}"
    );
    assert!(
        t.contains("# group 0 shown raw: no entries decode as openraft's or raft-rs's\n"),
        "{t}"
    );
    assert!(
        entry_line(&t, 1).ends_with(&format!(" payload=\"{}\"...", "Z".repeat(24))),
        "{t}"
    );
}

/// `stat` counts the log's bytes as the open log does, and gives the compaction hint for the
/// threshold asked (never for the default on a small log), and whether io_uring is usable.
#[test]
fn stat_shows_the_compaction_hint_as_the_open_log_gives_it() {
    let tmp = tempfile::tempdir().unwrap();
    let live = {
        let mut log = RaftLog::<RaftTypes>::open(tmp.path(), config()).unwrap();
        for i in 0..400 {
            log.append([(LogId::new(1, 1, i), &[7u8; 300][..])])
                .unwrap();
        }
        log.sync().unwrap();
        log.store().log_bytes()
    };
    let d = tmp.path().to_str().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&run(&["stat", d, "--json"]).stdout).unwrap();
    assert_eq!(v["log_bytes"], live, "{v}");
    assert_eq!(v["needs_compaction"], false);
    assert!(v["io_uring"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
    let small = (live - 1).to_string();
    let out = run(&["stat", d, "--compaction-threshold", &small]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    assert!(t.contains("compact (snapshot and purge)"), "{t}");
    assert!(t.contains("flush I/O"), "{t}");
}
