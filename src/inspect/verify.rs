//! [`verify`]: what is wrong with a log, or what opening it cuts, rendered from the verdict.

use std::path::{Path, PathBuf};

use super::{Decision, DropReason, Fate, FileVerdict, Inspection, Verdict};
use crate::error::Result;

/// How serious a [`Finding`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The log is damaged or breaks an invariant: opening it fails or would lose data.
    Problem,
    /// Something a crash normally leaves (a torn tail, a leftover file): recovery handles it.
    Note,
}

/// One thing [`verify`] found, located at a file and byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Problem or note.
    pub severity: Severity,
    /// The file.
    pub path: PathBuf,
    /// Byte offset in the file.
    pub offset: u64,
    /// What is wrong.
    pub what: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.offset, self.what)
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// Problems and notes, in file order.
    pub findings: Vec<Finding>,
    /// Segment files checked.
    pub segments: usize,
    /// Valid records whose checksum was checked.
    pub records: u64,
    /// Entry records among them.
    pub entry_records: u64,
    /// Bytes of valid records.
    pub record_bytes: u64,
    /// Recovery's verdict (strict), which the findings render: when it refuses, its error is
    /// the first problem; otherwise what it cuts and drops are notes.
    pub verdict: Verdict,
}

impl VerifyReport {
    /// No problem (notes allowed).
    pub fn is_sound(&self) -> bool {
        self.problems().next().is_none()
    }

    /// The problems.
    pub fn problems(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Problem)
    }

    /// The notes.
    pub fn notes(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Note)
    }

    /// Adds a finding unless one of the same severity, or a problem, is already at that file
    /// and offset (a problem there means opening the log does not cut it as a note would say).
    pub(crate) fn add(
        &mut self,
        severity: Severity,
        path: &Path,
        offset: u64,
        what: impl Into<String>,
    ) {
        let f = Finding {
            severity,
            path: path.to_path_buf(),
            offset,
            what: what.into(),
        };
        if !self.findings.iter().any(|g| {
            g.path == f.path
                && g.offset == f.offset
                && (g.severity == f.severity || g.severity == Severity::Problem)
        }) {
            self.findings.push(f);
        }
    }

    /// Sorts the findings by file and offset.
    pub(crate) fn sort(&mut self) {
        self.findings
            .sort_by(|a, b| (&a.path, a.offset).cmp(&(&b.path, b.offset)));
    }
}

/// Checks every record's checksum and the log's invariants. Writes nothing.
///
/// `progress` is called (from any thread) with the file size of each segment once it is
/// scanned. The report renders recovery's verdict: its problems are what makes opening the
/// log refuse it (the refusal first, then damage in files recovery did not get to); a torn
/// tail, a dropped file or a leftover (what a crash leaves) is a note. `verify` never calls a
/// log broken that opens.
pub fn verify(dir: &Path, progress: &(dyn Fn(u64) + Sync)) -> Result<VerifyReport> {
    let insp = Inspection::open(dir, progress, false)?;
    Ok(verify_of(&insp))
}

/// Renders an inspection's strict verdict as a [`VerifyReport`] (sorted).
pub(crate) fn verify_of(insp: &Inspection) -> VerifyReport {
    let v = &insp.strict.verdict;
    let opened = v.files.iter().filter(|f| f.bad_header.is_none());
    let mut rep = VerifyReport {
        findings: Vec::new(),
        segments: opened.clone().count(),
        records: opened.clone().map(|f| f.records.records).sum(),
        entry_records: opened.clone().map(|f| f.records.entry_records).sum(),
        record_bytes: opened.map(|f| f.records.bytes).sum(),
        verdict: v.clone(),
    };
    if let Decision::Refuses {
        path,
        offset,
        reason,
    } = &v.decision
    {
        rep.add(Severity::Problem, path, *offset, reason.clone());
    }
    for p in &v.prepared_files {
        rep.add(
            Severity::Note,
            p,
            0,
            "leftover prepared segment file (never holds log data; removed at open)",
        );
    }

    if let Some(rec) = v.recovered.as_ref().filter(|r| !r.groups.is_empty()) {
        let entries: u64 = rec.groups.iter().map(|g| g.next - g.first).sum();
        let ids = match (rec.groups.first(), rec.groups.last()) {
            (Some(a), Some(b)) if a.id != b.id => format!("ids {} to {}", a.id, b.id),
            (Some(a), _) => format!("id {}", a.id),
            _ => String::new(),
        };
        let at = v.files.first().map(|f| f.path.clone()).unwrap_or_default();
        rep.add(
            Severity::Note,
            &at,
            0,
            format!(
                "shared log: {} groups besides group 0 ({ids}), {entries} live entries among them",
                rec.groups.len()
            ),
        );
    }
    let newest_seq = v.files.last().map(|f| f.seq);
    let mut prev_seq: Option<u64> = None;
    for f in &v.files {
        if let Some(prev) = prev_seq.filter(|p| p.checked_add(1) != Some(f.seq)) {
            rep.add(
                severity(f),
                &f.path,
                0,
                format!(
                    "segment {} is missing (found {prev} then {})",
                    prev.saturating_add(1),
                    f.seq
                ),
            );
        }
        prev_seq = Some(f.seq);
        render_file(&mut rep, f, Some(f.seq) == newest_seq);
    }
    rep.sort();
    rep
}

/// What is found in a file is a problem only if the log refuses to open; a file that opening
/// the log drops or cuts held nothing acknowledged there.
fn severity(f: &FileVerdict) -> Severity {
    match f.fate {
        Fate::Corrupt { .. } | Fate::Refused => Severity::Problem,
        Fate::Kept | Fate::Cut { .. } | Fate::Dropped(_) => Severity::Note,
    }
}

fn render_file(rep: &mut VerifyReport, f: &FileVerdict, newest: bool) {
    let sev = severity(f);
    let path = &f.path;
    if let Some(len) = f.short {
        rep.add(
            Severity::Note,
            path,
            len,
            "newest segment is shorter than its header says (a power cut before its size was durable); opening the log keeps its valid records and extends it",
        );
    }
    match (&f.bad_header, &f.fate) {
        (Some(_), Fate::Dropped(DropReason::NeverWritten | DropReason::AfterNeverWritten)) => {
            rep.add(
                Severity::Note,
                path,
                0,
                "segment file was never written (crash while creating it); recovery removes it and any later file",
            )
        }
        (Some((offset, reason)), _) => rep.add(sev, path, *offset, reason.clone()),
        (None, _) => {}
    }
    match (&f.stop, f.sealed_end) {
        (Some((off, why)), Some(_)) => rep.add(
            sev,
            path,
            *off,
            format!("{why} (in a sealed segment: it was complete and synced, so this is corruption)"),
        ),
        (Some((off, why)), None) if newest => rep.add(
            Severity::Note,
            path,
            *off,
            format!("torn tail: {why} (what a crash leaves in the newest segment; opening the log cuts it here)"),
        ),
        (Some((off, why)), None) => rep.add(
            Severity::Note,
            path,
            *off,
            format!("torn tail in an unsealed older segment: {why} (a crash during rollover; opening the log cuts it here and drops later segments)"),
        ),
        (None, Some(end)) if end != f.records.end => rep.add(
            sev,
            path,
            f.records.end,
            format!("records end at {} but the segment was sealed at {end}", f.records.end),
        ),
        _ => {}
    }
    if f.bad_header.is_none() && f.records.records == 0 && f.stop.is_none() && !newest {
        rep.add(
            sev,
            path,
            crate::format::SEGMENT_HEADER_SIZE as u64,
            "older segment holds no records",
        );
    }
    match &f.fate {
        // A cut where the file's own records did not stop (the next segment does not follow
        // on from this one).
        Fate::Cut { offset, reason } => rep.add(
            Severity::Note,
            path,
            *offset,
            format!("torn tail: {reason} (opening the log cuts it here)"),
        ),
        Fate::Dropped(DropReason::AfterCut) if !rep.findings.iter().any(|g| &g.path == path) => rep
            .add(
                Severity::Note,
                path,
                0,
                "opening the log drops this segment file (it follows a cut)",
            ),
        _ => {}
    }
}
