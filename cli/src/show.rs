//! `stat`, `verify` and `dump`: formatting of `raft_mmap_log::inspect` results.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use raft_mmap_log::format::RecordKind;
use raft_mmap_log::inspect;
use raft_mmap_log::inspect::{DumpEnd, DumpFilter, DumpRecord};
use raft_mmap_log::raft::inspect::{
    self as raft_inspect, entry_log_id, MetaValue, RaftVerifyReport,
};
use raft_mmap_log::raft::{META_COMMITTED, META_PURGED, META_SNAPSHOT, META_USER_DATA, META_VOTE};
use raft_mmap_log::{Config, RecoveryMode, Store};
use serde_json::{json, Value};

use crate::decode::{decoded_metas, DecodeMode, Decoder};
use crate::progress::progress_bar;
use crate::{finish, out, DumpFormat, Failure, Outcome};

/// Human-readable byte count.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

fn meta_text<V>(v: &MetaValue<V>, show: impl Fn(&V) -> String) -> String {
    match v {
        MetaValue::Absent => "none".into(),
        MetaValue::Value(v) => show(v),
        MetaValue::Raw { len, error } => format!("{len} bytes (not a RaftTypes value: {error})"),
    }
}

fn meta_json<V>(v: &MetaValue<V>, show: impl Fn(&V) -> Value) -> Value {
    match v {
        MetaValue::Absent => Value::Null,
        MetaValue::Value(v) => show(v),
        MetaValue::Raw { len, error } => json!({ "raw_len": len, "decode_error": error }),
    }
}

fn log_id_json(id: &raft_mmap_log::raft::LogId) -> Value {
    json!({ "term": id.term, "node_id": id.node_id, "index": id.index })
}

pub fn stat(dir: &Path, as_json: bool, decode: DecodeMode, compaction_threshold: u64) -> Outcome {
    let rs = raft_inspect::stat(dir)?;
    let (st, r) = (&rs.stat, &rs.raft);
    let needs_compaction = st.needs_compaction(Some(compaction_threshold));
    // Whether a log opened here with `FlushIo::IoUring` would get it (the kernel's answer).
    let io_uring = raft_mmap_log::FlushIo::IoUring.available();
    let decoded = decoded_metas(dir, st, decode)?;
    let mut w = out();
    if as_json {
        let segs: Vec<Value> = st
            .segments
            .iter()
            .map(|s| {
                json!({
                    "file": file_name(&s.path),
                    "seq": s.seq,
                    "size": s.size,
                    "records_end": s.records_end,
                    "entry_records": s.entry_records,
                    "sealed": s.sealed_end.is_some(),
                    "torn": s.torn.as_ref().map(|(o, why)| json!({"offset": o, "what": why})),
                })
            })
            .collect();
        let v = json!({
            "dir": st.dir.display().to_string(),
            "segments": segs,
            "segment_count": st.segments.len(),
            "file_bytes": st.file_bytes,
            "record_bytes": st.record_bytes,
            "first_index": st.first_index,
            "last_index": st.last_index(),
            "entries": st.entries(),
            "last_log_id": meta_json(&rs.last_log_id, log_id_json),
            "vote": meta_json(&r.vote, |v| json!({"term": v.term, "node_id": v.node_id, "committed": v.committed})),
            "committed": meta_json(&r.committed, log_id_json),
            "purged": meta_json(&r.purged, log_id_json),
            "user_data_len": meta_json(&r.user_data, |u| json!(u.as_ref().map(|d| d.len()))),
            "snapshot": meta_json(&r.snapshot, |(id, data)| json!({"last_log_id": log_id_json(id), "data_len": data.len()})),
            "other_metas": r.other.iter().map(|(k, l)| json!({"key": k, "len": l})).collect::<Vec<_>>(),
            "open_would_cut": st.recovery.cut.as_ref().map(|(p, o, why)| format!("{}:{o}: {why}", p.display())),
            "open_would_drop": st.recovery.dropped_files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "corruption": st.corruption,
            "prepared_files": st.prepared_files.len(),
            "pool_files": st.pool_files.len(),
            "pool_bytes": st.pool_bytes,
            "log_bytes": st.log_bytes(),
            "compaction_threshold": compaction_threshold,
            "needs_compaction": needs_compaction,
            "io_uring": match &io_uring { Ok(()) => "usable".to_string(), Err(why) => format!("refused: {why}") },
            "groups": st.groups.iter().map(|g| json!({
                "id": g.id,
                "first_index": g.first,
                "next_index": g.next,
                "metas": g.metas,
                "oldest_segment": g.oldest_segment.as_deref().map(file_name),
                "pinned_bytes": g.pinned_bytes,
            })).collect::<Vec<_>>(),
            "decoded": decoded.as_ref().map(|(a, metas)| {
                let mut m = serde_json::Map::new();
                m.insert("adapter".into(), json!(a.name()));
                for (k, t) in metas {
                    let v = match t {
                        Ok(t) => json!(t),
                        Err(e) => json!({ "error": e }),
                    };
                    m.insert(meta_key_name(*k), v);
                }
                Value::Object(m)
            }),
        });
        writeln!(w, "{v}")?;
        return finish(w);
    }
    let seg_range = match (st.segments.first(), st.segments.last()) {
        (Some(a), Some(b)) => format!(" ({} .. {})", file_name(&a.path), file_name(&b.path)),
        _ => String::new(),
    };
    let mut s = String::new();
    let _ = writeln!(s, "directory     {}", st.dir.display());
    let _ = writeln!(s, "segments      {}{seg_range}", st.segments.len());
    if !st.groups.is_empty() {
        // The groups that keep the most disk first: the ones to compact.
        let mut by_pinned: Vec<_> = st.groups.iter().collect();
        by_pinned.sort_by_key(|g| (std::cmp::Reverse(g.pinned_bytes), g.id));
        let _ = writeln!(
            s,
            "groups        {} besides group 0 (the log shown below)",
            st.groups.len()
        );
        for g in by_pinned.iter().take(10) {
            let _ = writeln!(
                s,
                "  group {:<8} entries {}..{} ({}), {} meta values, pins {} from {}",
                g.id,
                g.first,
                g.next,
                g.next - g.first,
                g.metas,
                bytes(g.pinned_bytes),
                g.oldest_segment.as_deref().map_or("-".into(), file_name)
            );
        }
        if by_pinned.len() > 10 {
            let _ = writeln!(
                s,
                "  ... {} more (stat --json lists all)",
                by_pinned.len() - 10
            );
        }
    }
    let _ = writeln!(
        s,
        "bytes         {} on disk, {} of records",
        bytes(st.file_bytes),
        bytes(st.record_bytes)
    );
    match st.last_index() {
        Some(last) => {
            let _ = writeln!(
                s,
                "entries       {} (first index {}, last index {last})",
                st.entries(),
                st.first_index
            );
        }
        None => {
            let _ = writeln!(s, "entries       0 (next index {})", st.next_index);
        }
    }
    let _ = writeln!(
        s,
        "last log id   {}",
        meta_text(&rs.last_log_id, |i| i.to_string())
    );
    let _ = writeln!(
        s,
        "committed     {}",
        meta_text(&r.committed, |i| i.to_string())
    );
    let _ = writeln!(
        s,
        "purged        {}",
        meta_text(&r.purged, |i| i.to_string())
    );
    let _ = writeln!(s, "vote          {}", meta_text(&r.vote, |v| v.to_string()));
    let _ = writeln!(
        s,
        "user data     {}",
        meta_text(&r.user_data, |u| match u {
            Some(d) => bytes(d.len() as u64),
            None => "none".into(),
        })
    );
    let _ = writeln!(
        s,
        "snapshot      {}",
        meta_text(&r.snapshot, |(id, d)| format!(
            "up to {id}, {} of meta",
            bytes(d.len() as u64)
        ))
    );
    for (k, len) in &r.other {
        let _ = writeln!(s, "meta key {k:<4} {}", bytes(*len as u64));
    }
    if let Some((a, metas)) = &decoded {
        for (k, t) in metas {
            let t = t
                .as_ref()
                .map_or_else(|e| format!("does not decode: {e}"), |t| t.clone());
            let _ = writeln!(s, "{:<13} {}: {t}", a.name(), meta_key_name(*k));
        }
    }
    let _ = writeln!(
        s,
        "compaction    {} of log, hint at {}: {}",
        bytes(st.log_bytes()),
        bytes(compaction_threshold),
        if needs_compaction {
            "compact (snapshot and purge)"
        } else {
            "not yet"
        }
    );
    let _ = match &io_uring {
        Ok(()) => writeln!(s, "flush I/O     io_uring usable here (Config::flush_io)"),
        Err(why) => writeln!(
            s,
            "flush I/O     io_uring refused here, threads used: {why}"
        ),
    };
    match &st.recovery.cut {
        Some((p, o, why)) => {
            let _ = writeln!(
                s,
                "on open       cut torn tail at {}:{o}: {why}",
                p.display()
            );
        }
        None => {
            let _ = writeln!(s, "on open       nothing to repair");
        }
    }
    for p in &st.recovery.dropped_files {
        let _ = writeln!(s, "on open       drop {}", p.display());
    }
    if let Some(c) = &st.corruption {
        let _ = writeln!(
            s,
            "CORRUPT       {c} (state shown up to the corruption; run verify)"
        );
    }
    if !st.prepared_files.is_empty() {
        let _ = writeln!(
            s,
            "leftovers     {} prepared segment file(s) (removed at open)",
            st.prepared_files.len()
        );
    }
    if !st.pool_files.is_empty() {
        let _ = writeln!(
            s,
            "pool          {} recycled segment file(s), {} bytes (kept for reuse)",
            st.pool_files.len(),
            st.pool_bytes
        );
    }
    w.write_all(s.as_bytes())?;
    finish(w)
}

pub fn verify(dir: &Path, repair: bool, truncate_at_corruption: bool) -> Outcome {
    if repair {
        // Report first what is wrong, then let recovery fix it.
        let before = run_verify(dir)?;
        print_findings(&before);
        let mode = if truncate_at_corruption {
            RecoveryMode::TruncateAtCorruption
        } else {
            RecoveryMode::Strict
        };
        let config = Config {
            recovery_mode: mode,
            prepare_ahead: false,
            ..Config::default()
        };
        let store = match Store::open(dir, config) {
            Ok(s) => s,
            Err(e @ raft_mmap_log::Error::Corrupt { .. }) => {
                return Err(Failure::Error(format!(
                    "repair refused: {e} (add --truncate-at-corruption to cut the log there; \
                     entries after it are lost)"
                )))
            }
            Err(e) => return Err(e.into()),
        };
        let rep = store.recovery_report().clone();
        drop(store);
        let mut did = Vec::new();
        if let Some((p, o, why)) = &rep.cut {
            did.push(format!(
                "cut the log at {}:{o} ({why}) and zeroed the rest",
                p.display()
            ));
        }
        for p in &rep.dropped_files {
            did.push(format!("removed {}", p.display()));
        }
        if let Some(c) = &rep.tolerated_corruption {
            did.push(format!("cut at corruption {c}: later entries are lost"));
        }
        if did.is_empty() {
            println!("repair: nothing to cut; synced the log and sealed older segments");
        }
        for d in did {
            println!("repair: {d}");
        }
        let after = run_verify(dir)?;
        print_findings(&after);
        return verdict(&after);
    }
    let rep = run_verify(dir)?;
    print_findings(&rep);
    verdict(&rep)
}

fn run_verify(dir: &Path) -> Result<RaftVerifyReport, Failure> {
    let total: u64 = if crate::progress::interactive() {
        inspect::segment_files(dir)
            .map(|v| v.iter().map(|s| s.1).sum())
            .unwrap_or(0)
    } else {
        0
    };
    let pb = progress_bar(total, "verify", true);
    let rep = raft_inspect::verify(dir, &|n| pb.inc(n));
    pb.finish_and_clear();
    Ok(rep?)
}

fn print_findings(rep: &RaftVerifyReport) {
    for f in rep.notes() {
        println!("note: {f}");
    }
    for f in rep.problems() {
        println!("{f}");
    }
}

fn verdict(rep: &RaftVerifyReport) -> Outcome {
    let problems = rep.problems().count();
    let summary = format!(
        "{} segment(s), {} records ({} entries, {}) checked{}",
        rep.segments,
        rep.records,
        rep.entry_records,
        bytes(rep.record_bytes),
        if rep.raft_checked {
            format!(
                "; Raft state and {} log ids checked",
                rep.raft_entries_checked
            )
        } else {
            "; not a Raft log (no Raft meta values): Raft checks skipped".into()
        }
    );
    if problems == 0 {
        println!("ok: {summary}");
        Ok(())
    } else {
        println!("FAILED: {problems} problem(s); {summary}");
        Err(Failure::Exit(1))
    }
}

fn kind_name(k: RecordKind) -> &'static str {
    match k {
        RecordKind::Entry => "entry",
        RecordKind::Truncate => "truncate",
        RecordKind::Purge => "purge",
        RecordKind::Meta => "meta",
        RecordKind::Checkpoint => "checkpoint",
        RecordKind::Reset => "reset",
        RecordKind::Group => "group",
        RecordKind::GroupCheckpoint => "group-checkpoint",
        RecordKind::GroupRemove => "group-remove",
        RecordKind::Rewrite => "rewrite",
        RecordKind::MetaRemove => "meta-remove",
    }
}

fn meta_key_name(k: u64) -> String {
    match k {
        META_VOTE => "vote".into(),
        META_COMMITTED => "committed".into(),
        META_PURGED => "purged".into(),
        META_USER_DATA => "user_data".into(),
        META_SNAPSHOT => "snapshot".into(),
        k => format!("key{k}"),
    }
}

/// What the record's argument means, in words (with its group, for a shared log's group).
fn describe(rec: &DumpRecord<'_>) -> String {
    let own = describe_arg(rec);
    let names_group = matches!(
        rec.kind,
        RecordKind::Group | RecordKind::GroupCheckpoint | RecordKind::GroupRemove
    );
    if rec.group != 0 && !names_group {
        format!("group={} {own}", rec.group)
    } else {
        own
    }
}

fn describe_arg(rec: &DumpRecord<'_>) -> String {
    match rec.kind {
        RecordKind::Entry => match entry_log_id(rec) {
            Some(id) => format!("index={} log_id={id}", rec.arg),
            None => format!("index={}", rec.arg),
        },
        RecordKind::Truncate => format!("from={}", rec.arg),
        RecordKind::Purge => format!("first={}", rec.arg),
        RecordKind::Reset => format!("first=next={}", rec.arg),
        RecordKind::Meta | RecordKind::MetaRemove => format!("key={}", meta_key_name(rec.arg)),
        RecordKind::Checkpoint => match rec.checkpoint() {
            Some((f, n, m)) => format!("first={f} next={n} metas={m}"),
            None => "malformed".into(),
        },
        RecordKind::GroupCheckpoint => match rec.checkpoint() {
            Some((f, n, m)) => format!("group={} first={f} next={n} metas={m}", rec.arg),
            None => format!("group={} malformed", rec.arg),
        },
        RecordKind::Group | RecordKind::GroupRemove => format!("group={}", rec.arg),
        RecordKind::Rewrite => match <[u8; 8]>::try_from(rec.body) {
            Ok(n) => format!("first={} entries={}", rec.arg, u64::from_le_bytes(n)),
            Err(_) => format!("first={} malformed", rec.arg),
        },
    }
}

/// Payload shown after the log id (for Raft entries) as a short preview.
fn payload_of<'a>(rec: &DumpRecord<'a>) -> &'a [u8] {
    match entry_log_id(rec) {
        // A RaftTypes log id is three little-endian u64s.
        Some(_) => rec.body.get(24..).unwrap_or(&[]),
        None => rec.body,
    }
}

fn preview(b: &[u8], max: usize) -> String {
    let shown = &b[..b.len().min(max)];
    let printable = !shown.is_empty() && shown.iter().all(|&c| c.is_ascii_graphic() || c == b' ');
    let mut s = if printable {
        format!("{:?}", String::from_utf8_lossy(shown))
    } else {
        let mut h = String::with_capacity(shown.len() * 2);
        for c in shown {
            let _ = write!(h, "{c:02x}");
        }
        h
    };
    if b.len() > max {
        s.push_str("...");
    }
    s
}

fn hex_block(b: &[u8], w: &mut impl Write) -> std::io::Result<()> {
    for (i, chunk) in b.chunks(16).enumerate() {
        let mut line = format!("    {:08x}  ", i * 16);
        for (j, c) in chunk.iter().enumerate() {
            let _ = write!(line, "{c:02x}{}", if j == 7 { "  " } else { " " });
        }
        for _ in chunk.len()..16 {
            line.push_str("   ");
        }
        line.push_str(if chunk.len() <= 8 { "  |" } else { " |" });
        for &c in chunk {
            line.push(if c.is_ascii_graphic() || c == b' ' {
                c as char
            } else {
                '.'
            });
        }
        line.push('|');
        writeln!(w, "{line}")?;
    }
    Ok(())
}

pub fn dump(dir: &Path, filter: DumpFilter, format: DumpFormat, decode: DecodeMode) -> Outcome {
    if let (Some(f), Some(t)) = (filter.from, filter.to) {
        if f > t {
            return Err(Failure::Error(format!("--from {f} is after --to {t}")));
        }
    }
    let decoder = Decoder::for_dump(decode, dir, filter, format == DumpFormat::Hex)?;
    let mut w = out();
    let mut count = 0u64;
    let w_ref = &mut w;
    let res: Result<(), Failure> = {
        let w = std::cell::RefCell::new(w_ref);
        inspect::dump::<Failure>(
            dir,
            filter,
            |rec| {
                count += 1;
                let mut w = w.borrow_mut();
                let seg = file_name(rec.path);
                let decoded = decoder.record(rec);
                match format {
                    DumpFormat::Json => {
                        let payload = payload_of(rec);
                        let ok = decoded.as_ref().and_then(|d| d.as_ref().ok());
                        let v = json!({
                            "segment": seg,
                            "offset": rec.offset,
                            "kind": kind_name(rec.kind),
                            "group": rec.group,
                            "arg": rec.arg,
                            "log_id": entry_log_id(rec).map(|i| log_id_json(&i)),
                            "len": rec.len,
                            "crc": format!("{:08x}", rec.crc),
                            "detail": describe(rec),
                            "payload_len": payload.len(),
                            "payload_preview": preview(payload, 32),
                            "decoder": ok.map(|(a, _)| a.name()),
                            "decoded": ok.map(|(_, t)| t),
                            "decode_error": decoded.as_ref().and_then(|d| d.as_ref().err()),
                        });
                        writeln!(w, "{v}")?;
                    }
                    DumpFormat::Text | DumpFormat::Hex => {
                        let payload = payload_of(rec);
                        let tail = match decoded {
                            Some(Ok((a, t))) => format!(" {}: {t}", a.name()),
                            Some(Err(why)) => {
                                format!(" payload={} ({why})", preview(payload, 24))
                            }
                            None if matches!(rec.kind, RecordKind::Entry | RecordKind::Meta) => {
                                format!(" payload={}", preview(payload, 24))
                            }
                            None => String::new(),
                        };
                        writeln!(
                            w,
                            "{seg} @{:<10} {:<10} {} len={} crc={:08x}{tail}",
                            rec.offset,
                            kind_name(rec.kind),
                            describe(rec),
                            rec.len,
                            rec.crc
                        )?;
                        if format == DumpFormat::Hex {
                            hex_block(rec.body, &mut **w)?;
                        }
                    }
                }
                Ok(())
            },
            |end: &DumpEnd<'_>| {
                let seg = file_name(end.path);
                let line = match &end.invalid {
                    None => format!(
                        "{seg} @{}: end of records{}",
                        end.offset,
                        if end.sealed { " (sealed)" } else { "" }
                    ),
                    Some(why) => format!(
                        "{seg} @{}: records stop: {why}{}",
                        end.offset,
                        if end.sealed { " (sealed segment!)" } else { "" }
                    ),
                };
                if format == DumpFormat::Json {
                    let v = json!({
                        "segment": seg,
                        "offset": end.offset,
                        "end": true,
                        "invalid": end.invalid,
                        "sealed": end.sealed,
                    });
                    writeln!(w.borrow_mut(), "{v}")?;
                } else if (filter.from.is_none() && filter.to.is_none() && filter.group.is_none())
                    || end.invalid.is_some()
                {
                    writeln!(w.borrow_mut(), "{line}")?;
                }
                Ok(())
            },
        )
    };
    res?;
    if format != DumpFormat::Json {
        for (g, why) in decoder.undecided() {
            writeln!(w, "# group {g} shown raw: {why}")?;
        }
        writeln!(w, "# {count} record(s)")?;
    }
    finish(w)
}
