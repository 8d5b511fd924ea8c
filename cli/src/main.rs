//! `raft-mmap-log`: benchmark, inspect and verify raft-mmap-log directories.
//!
//! ```text
//! raft-mmap-log bench [--entries N] [--entry-size B] [--batch K] [--sync none|batch|each] ...
//! raft-mmap-log replicate [--entries N] [--entry-size B] [--restart-at N] [--dir D] [--json]
//! raft-mmap-log stat DIR [--json] [--decode auto|openraft|raft-rs|raw]
//! raft-mmap-log verify DIR [--repair [--truncate-at-corruption]]
//! raft-mmap-log dump DIR [--from I] [--to J] [--group G] [--format text|json|hex]
//!                        [--decode auto|openraft|raft-rs|raw]
//! ```
//!
//! `stat`, `verify` and `dump` never write to the log: they map segments read-only and hold a
//! read lock on `DIR/LOCK` (creating an empty one if it is missing; see
//! `raft_mmap_log::inspect`), so they refuse a directory that a running node has open ("locked
//! by another process") and a node cannot open it while they read.

mod bench;
mod decode;
mod progress;
mod replicate;
mod show;
mod tasks;
mod workdir;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use decode::DecodeMode;

/// Memory-mapped, zero-copy write-ahead log for Raft: benchmark and inspection tool.
#[derive(Debug, Parser)]
#[command(name = "raft-mmap-log", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a workload (appends, durable appends, tail and range reads, reopen) and print
    /// throughput, latency and memory.
    Bench(bench::BenchArgs),
    /// Replicate a log to a follower over loopback TCP with frames (live and catch-up), and
    /// compare the throughput with a bare TCP stream of the same bytes.
    Replicate(replicate::ReplicateArgs),
    /// Durable 16-entry batches from concurrent tokio tasks (one group each), made durable by
    /// flush callbacks, by `flushed()` futures, and by futures with the flushes through
    /// io_uring: batches/s, p50/p99 and CPU time per batch, one child process per cell.
    Tasks(tasks::TasksArgs),
    /// Show a log directory's segments, indexes and Raft state. Never writes.
    Stat {
        /// The log directory.
        dir: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// The compaction hint's threshold in bytes (the library's `Config` default: 10 GiB).
        #[arg(long, value_name = "BYTES", default_value_t = 10 << 30)]
        compaction_threshold: u64,
        /// Show the Raft meta values as an adapter of the library stores them (auto: the
        /// adapter whose encoding the last entry has; nothing when unsure).
        #[arg(long, value_enum, default_value_t = DecodeMode::Auto)]
        decode: DecodeMode,
    },
    /// Check every record's checksum and the log's invariants. Exit 0 when sound (a torn tail
    /// in the newest segment is a note), 1 with each problem as `file:offset: what`.
    Verify {
        /// The log directory.
        dir: PathBuf,
        /// Open the log (which recovers it: cuts a torn tail, drops files after a cut, seals
        /// older segments) and say what was done. Without it, verify never writes.
        #[arg(long)]
        repair: bool,
        /// With --repair: cut the log at corruption instead of refusing it (entries after the
        /// corruption are lost).
        #[arg(long, requires = "repair")]
        truncate_at_corruption: bool,
    },
    /// Print every record in order: segment, offset, kind, index/log id, length, CRC, payload.
    Dump {
        /// The log directory.
        dir: PathBuf,
        /// Only entries with index >= I (other records are then left out).
        #[arg(long, value_name = "I")]
        from: Option<u64>,
        /// Only entries with index <= J (other records are then left out).
        #[arg(long, value_name = "J")]
        to: Option<u64>,
        /// Only records of group G of a shared log (0: the log's own records).
        #[arg(long, value_name = "G")]
        group: Option<u64>,
        /// Output format: text (one line per record), json (one object per line), hex (text
        /// plus a full hex dump of each body).
        #[arg(long, value_enum, default_value_t = DumpFormat::Text)]
        format: DumpFormat,
        /// Show entry bodies and meta values as an adapter of the library stores them:
        /// openraft (`raft_mmap_log::openraft`), raft-rs (`raft_mmap_log::raft_rs`), raw
        /// (bytes only), or auto: per group, the adapter that decodes its entries when the
        /// other decodes none of them, else raw. A body that does not decode is shown raw
        /// with the reason. Application data is cut at 64 bytes except with --format hex.
        #[arg(long, value_enum, default_value_t = DecodeMode::Auto)]
        decode: DecodeMode,
    },
}

/// Output format of `dump`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DumpFormat {
    Text,
    Json,
    Hex,
}

/// What a command ends with.
enum Failure {
    /// Print this one line on stderr, exit 1.
    Error(String),
    /// Already reported; exit with this code.
    Exit(u8),
}

impl From<raft_mmap_log::Error> for Failure {
    fn from(e: raft_mmap_log::Error) -> Self {
        Failure::Error(e.to_string())
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            // `dump | head`: the reader is gone, which is not an error.
            Failure::Exit(0)
        } else {
            Failure::Error(format!("write output: {e}"))
        }
    }
}

type Outcome = Result<(), Failure>;

fn main() -> ExitCode {
    // A bug must still end as one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("raft-mmap-log: internal error: {msg}{at}");
    }));
    let cli = Cli::parse();
    let result = std::panic::catch_unwind(|| run(cli));
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(Failure::Exit(code))) => ExitCode::from(code),
        Ok(Err(Failure::Error(msg))) => {
            eprintln!("raft-mmap-log: error: {msg}");
            ExitCode::FAILURE
        }
        Err(_) => ExitCode::from(101),
    }
}

fn run(cli: Cli) -> Outcome {
    match cli.command {
        Command::Bench(args) => bench::run(args),
        Command::Replicate(args) => replicate::run(args),
        Command::Tasks(args) => tasks::run(args),
        Command::Stat {
            dir,
            json,
            decode,
            compaction_threshold,
        } => show::stat(&dir, json, decode, compaction_threshold),
        Command::Verify {
            dir,
            repair,
            truncate_at_corruption,
        } => show::verify(&dir, repair, truncate_at_corruption),
        Command::Dump {
            dir,
            from,
            to,
            group,
            format,
            decode,
        } => show::dump(
            &dir,
            raft_mmap_log::inspect::DumpFilter { from, to, group },
            format,
            decode,
        ),
    }
}

/// Buffered stdout for output that may be large.
fn out() -> std::io::BufWriter<std::io::StdoutLock<'static>> {
    std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock())
}

/// Flushes buffered output, mapping a closed pipe to a clean exit.
fn finish(mut w: impl Write) -> Outcome {
    w.flush()?;
    Ok(())
}
