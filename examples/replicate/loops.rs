//! A leader and a follower replicating a `RaftLog` over TCP with frames: the loops of
//! `docs/replication.md`, shared by `examples/replicate.rs`, the CLI's `replicate` command
//! and `tests/replicate.rs` (each includes this file with `#[path]`).
//!
//! The protocol (all integers little-endian):
//! - follower → leader, once per connection: `hello`, a `u64`: the index the follower needs
//!   next (one past its last durable entry);
//! - leader → follower: batches, each a `u64` byte length then that many bytes of frames
//!   ([`RaftView::frames`], sent with one `write_vectored` of the length and the spans
//!   borrowed from the leader's map); a length of 0 ends the stream;
//! - follower → leader: acks, a `u64` each: one past the last entry that is durable on the
//!   follower, written by the follower's flush callback.
//!
//! The leader appends in batches, flushes each (its own durability), commits what both
//! sides have made durable, and a sender thread ships whatever is new. A follower that
//! reconnects says where it is in its hello, and the leader resumes from there.

use std::io::{IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use raft_mmap_log::frames;
use raft_mmap_log::raft::{LogId, RaftLog, RaftReader, RaftTypes};
use raft_mmap_log::Config;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Entries the leader appends.
    pub entries: u64,
    /// Payload bytes per entry.
    pub entry_size: usize,
    /// Entries per leader append (and flush).
    pub append_batch: u64,
    /// Most entries per shipped batch.
    pub ship_batch: u64,
    /// The follower drops its log and connection after this many entries and reopens.
    pub restart_at: Option<u64>,
    /// Append everything before the follower starts (a catch-up run) instead of while
    /// shipping.
    pub prefill: bool,
    /// Segment size of both logs.
    pub segment_size: u64,
    /// The follower reads each batch into a buffer and appends it with `append_frames` (a
    /// copy), instead of receiving it straight into its map with `receive_frames`.
    pub copy_receive: bool,
    /// The leader sends each span of a batch from its segment file with `sendfile` (page cache
    /// to socket, nothing through user space), instead of one `write_vectored` of the mapped
    /// bytes.
    pub sendfile: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            entries: 1_000_000,
            entry_size: 256,
            append_batch: 256,
            ship_batch: 4096,
            restart_at: None,
            prefill: false,
            segment_size: 64 << 20,
            copy_receive: false,
            sendfile: false,
        }
    }
}

/// Figures of one side.
#[derive(Debug, Clone, Default)]
pub struct Side {
    /// Entries handled.
    pub entries: u64,
    /// Wall time from its first to its last entry.
    pub elapsed: Duration,
    /// Payload bytes handled.
    pub payload_bytes: u64,
    /// Frame bytes sent or received.
    pub wire_bytes: u64,
    /// Entry copies made in user space: the leader's append (payload into the map) and
    /// copied version 1 spans, the follower's `append_frames` (frames into the map).
    pub user_copied: u64,
    /// Entry copies made by the kernel: the leader's send (from the map into the socket),
    /// the follower's receive (from the socket into its buffer).
    pub kernel_copied: u64,
    /// Reconnections (follower restarts).
    pub restarts: u64,
}

impl Side {
    /// Entries per second.
    pub fn entries_per_sec(&self) -> f64 {
        self.entries as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Frame megabytes (10^6) per second.
    pub fn mb_per_sec(&self) -> f64 {
        self.wire_bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Copies per entry: (user space, kernel).
    pub fn copies_per_entry(&self) -> (f64, f64) {
        let n = self.entries.max(1) as f64;
        (self.user_copied as f64 / n, self.kernel_copied as f64 / n)
    }
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct Report {
    /// The leader's figures (appending and sending).
    pub leader: Side,
    /// The follower's figures (receiving, storing, flushing).
    pub follower: Side,
    /// From the first append to the last durable ack, end to end.
    pub end_to_end: Duration,
    /// Entries appended before the follower started (`prefill`), and how long that took.
    pub prefill: Option<Duration>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn config(segment_size: u64) -> Config {
    Config {
        segment_size,
        ..Config::default()
    }
}

fn payload(index: u64, size: usize) -> Vec<u8> {
    (0..size as u64)
        .map(|k| (index * 31 + k * 7) as u8)
        .collect()
}

/// Runs a leader in `leader_dir` and a follower in `follower_dir` (both empty or new) on
/// 127.0.0.1, then checks that the follower's log equals the leader's, frame byte for frame
/// byte (everything but each record's salted CRC, which is per file).
pub fn run(leader_dir: &Path, follower_dir: &Path, o: &Options) -> Result<Report, BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut leader = RaftLog::<RaftTypes>::open(leader_dir, config(o.segment_size))?;
    let shared = Arc::new(Shared::default());
    let start = Instant::now();
    let mut prefill = None;
    if o.prefill {
        append_all(&mut leader, &shared, o, None)?;
        leader.sync()?;
        prefill = Some(start.elapsed());
    }
    let ship_start = Instant::now();
    let sender = {
        let (reader, shared, o) = (leader.reader(), shared.clone(), o.clone());
        thread::Builder::new()
            .name("leader-sender".into())
            .spawn(move || send_loop(listener, reader, &shared, &o))?
    };
    let follower = {
        let (dir, o) = (follower_dir.to_path_buf(), o.clone());
        thread::Builder::new()
            .name("follower".into())
            .spawn(move || follow(addr, &dir, &o))?
    };
    shared.set_sender(sender.thread().clone());
    let mut leader_side = if o.prefill {
        Side::default()
    } else {
        append_all(&mut leader, &shared, o, Some(ship_start))?
    };
    // Wait for both sides to be durable, then commit everything.
    let deadline = Instant::now() + Duration::from_secs(600);
    while shared.follower_durable.load(Ordering::Acquire) < o.entries {
        if follower.is_finished() {
            follower.join().map_err(|_| "follower panicked")??;
            return Err("the follower stopped before the end of the stream".into());
        }
        if Instant::now() > deadline {
            return Err("the follower did not catch up within 10 minutes".into());
        }
        thread::sleep(Duration::from_micros(200));
    }
    let end_to_end = if o.prefill {
        ship_start.elapsed()
    } else {
        start.elapsed()
    };
    leader.sync()?;
    if o.entries > 0 {
        leader.commit(LogId::new(1, 1, o.entries - 1))?;
    }
    shared.done.store(true, Ordering::Release);
    shared.wake();
    let sent = sender.join().map_err(|_| "leader sender panicked")??;
    let (follower_side, follower_dir) = follower.join().map_err(|_| "follower panicked")??;
    leader_side.wire_bytes = sent.wire_bytes;
    leader_side.kernel_copied = sent.kernel_copied;
    leader_side.user_copied += sent.user_copied;
    if o.prefill {
        leader_side.entries = o.entries;
        leader_side.elapsed = end_to_end;
    }
    compare(&leader, &follower_dir, o)?;
    Ok(Report {
        leader: leader_side,
        follower: follower_side,
        end_to_end,
        prefill,
    })
}

#[derive(Default)]
struct Shared {
    /// One past the last entry durable on the follower (from its acks).
    follower_durable: AtomicU64,
    /// One past the last entry durable on the leader.
    leader_durable: Arc<AtomicU64>,
    done: AtomicBool,
    sender: Mutex<Option<thread::Thread>>,
}

impl Shared {
    fn set_sender(&self, t: thread::Thread) {
        *self.sender.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
    }

    fn wake(&self) {
        if let Some(t) = &*self.sender.lock().unwrap_or_else(|e| e.into_inner()) {
            t.unpark();
        }
    }
}

/// The leader's writer: appends `o.entries` in batches, flushes each, commits what both
/// sides hold durably, and wakes the sender.
fn append_all(
    leader: &mut RaftLog<RaftTypes>,
    shared: &Shared,
    o: &Options,
    t0: Option<Instant>,
) -> Result<Side, BoxError> {
    let start = t0.unwrap_or_else(Instant::now);
    let mut side = Side::default();
    let mut committed = 0u64;
    let payloads: Vec<Vec<u8>> = (0..64).map(|k| payload(k, o.entry_size)).collect();
    let mut at = 0u64;
    while at < o.entries {
        let end = (at + o.append_batch).min(o.entries);
        leader
            .append((at..end).map(|i| (LogId::new(1, 1, i), &payloads[(i % 64) as usize][..])))?;
        side.user_copied += end - at;
        let durable = shared.leader_durable.clone();
        leader.flush(move |r| {
            if r.is_ok() {
                durable.fetch_max(end, Ordering::AcqRel);
            }
        })?;
        shared.wake();
        // Commit what a majority (both) made durable.
        let both = shared
            .follower_durable
            .load(Ordering::Acquire)
            .min(shared.leader_durable.load(Ordering::Acquire));
        if both > committed + o.append_batch * 16 {
            leader.commit(LogId::new(1, 1, both - 1))?;
            committed = both;
        }
        at = end;
    }
    side.entries = o.entries;
    side.payload_bytes = o.entries * o.entry_size as u64;
    side.elapsed = start.elapsed();
    Ok(side)
}

/// What the sender did.
struct Sent {
    wire_bytes: u64,
    kernel_copied: u64,
    user_copied: u64,
}

/// The leader's sender: accepts a follower, reads its hello, and ships every entry from there
/// as they are appended; after a broken connection, accepts the next one and resumes where
/// that follower says it is.
fn send_loop(
    listener: TcpListener,
    reader: RaftReader<RaftTypes>,
    shared: &Shared,
    o: &Options,
) -> Result<Sent, BoxError> {
    let mut sent = Sent {
        wire_bytes: 0,
        kernel_copied: 0,
        user_copied: 0,
    };
    // Segment files by path, for `sendfile` (a path is never reused for another segment).
    let mut files: std::collections::HashMap<PathBuf, std::fs::File> = Default::default();
    'connections: loop {
        let (mut stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        let mut hello = [0u8; 8];
        stream.read_exact(&mut hello)?;
        let mut at = u64::from_le_bytes(hello);
        shared.follower_durable.fetch_max(at, Ordering::AcqRel);
        let acks = {
            let (mut s, durable) = (stream.try_clone()?, Arc::new(AtomicU64::new(0)));
            let d = durable.clone();
            let h = thread::spawn(move || {
                let mut b = [0u8; 8];
                while s.read_exact(&mut b).is_ok() {
                    d.fetch_max(u64::from_le_bytes(b), Ordering::AcqRel);
                }
            });
            (h, durable)
        };
        loop {
            shared
                .follower_durable
                .fetch_max(acks.1.load(Ordering::Acquire), Ordering::AcqRel);
            let view = reader.view();
            if at >= view.next_index() {
                drop(view);
                if acks.0.is_finished() {
                    // The follower closed the connection (a restart).
                    continue 'connections;
                }
                if shared.done.load(Ordering::Acquire) {
                    // Everything is shipped and acknowledged: end the stream.
                    let _ = stream.write_all(&0u64.to_le_bytes());
                    let _ = acks.0.join();
                    return Ok(sent);
                }
                // Sleeps until the writer appends entry `at` (woken at once), or 1 ms passes
                // (to look at the acks and the end of the run again).
                reader.wait_for(at, Duration::from_millis(1));
                continue;
            }
            let batch = view.frames(at..at + o.ship_batch)?;
            let len = batch.len() as u64;
            let prefix = len.to_le_bytes();
            let shipped = if o.sendfile {
                send_files(&mut stream, &prefix, &batch, &mut files)
            } else {
                let mut slices = vec![IoSlice::new(&prefix)];
                slices.extend(batch.io_slices());
                write_all_vectored(&mut stream, &mut slices)
            };
            if shipped.is_err() {
                // The follower went away (a restart): wait for it to come back.
                let _ = acks.0.join();
                continue 'connections;
            }
            sent.wire_bytes += len;
            sent.kernel_copied += batch.indexes().end - batch.indexes().start;
            sent.user_copied += batch
                .spans()
                .iter()
                .filter(|s| s.file().is_none())
                .map(|s| s.indexes().end - s.indexes().start)
                .sum::<u64>();
            at = batch.indexes().end;
        }
    }
}

/// Sends the length `prefix`, then each span of `batch` from its segment file with
/// `sendfile` while `batch`'s view holds the segment (a span whose file cannot be opened, or
/// a copied one, is written from memory).
fn send_files(
    stream: &mut TcpStream,
    prefix: &[u8],
    batch: &raft_mmap_log::frames::FrameBatch<'_>,
    files: &mut std::collections::HashMap<PathBuf, std::fs::File>,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    stream.write_all(prefix)?;
    for span in batch.spans() {
        let Some(range) = span.file() else {
            stream.write_all(span.bytes())?;
            continue;
        };
        if !files.contains_key(range.path) {
            match std::fs::File::open(range.path) {
                Ok(f) => {
                    files.insert(range.path.to_path_buf(), f);
                }
                Err(_) => {
                    stream.write_all(span.bytes())?;
                    continue;
                }
            }
        }
        let Some(file) = files.get(range.path) else {
            continue;
        };
        let mut offset = i64::try_from(range.offset).map_err(std::io::Error::other)?;
        let mut left = usize::try_from(range.len).map_err(std::io::Error::other)?;
        while left > 0 {
            // SAFETY: both descriptors stay open across the call (the stream and the file
            // are borrowed), and `offset` is a valid `off_t` the call updates.
            let n =
                unsafe { libc::sendfile(stream.as_raw_fd(), file.as_raw_fd(), &mut offset, left) };
            match n {
                0 => return Err(std::io::ErrorKind::WriteZero.into()),
                n if n > 0 => left -= n as usize,
                _ => {
                    let e = std::io::Error::last_os_error();
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
    }
    Ok(())
}

/// `write_vectored` until every slice is written.
pub fn write_all_vectored(w: &mut impl Write, slices: &mut [IoSlice<'_>]) -> std::io::Result<()> {
    let mut rest = slices;
    while !rest.is_empty() {
        match w.write_vectored(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The follower: connects, says where it is, stores every batch with `append_frames`,
/// flushes it and acknowledges it from the flush callback. With `restart_at`, drops its log
/// and connection once past that index, reopens and resumes. Returns its figures and
/// directory.
fn follow(
    addr: std::net::SocketAddr,
    dir: &Path,
    o: &Options,
) -> Result<(Side, PathBuf), BoxError> {
    let mut side = Side::default();
    let mut restart_at = o.restart_at;
    let mut start = None;
    let mut buf = Vec::new();
    loop {
        let mut log = RaftLog::<RaftTypes>::open(dir, config(o.segment_size))?;
        let stream = Arc::new(TcpStream::connect(addr)?);
        stream.set_nodelay(true)?;
        let next = log.state().next_index();
        (&*stream).write_all(&next.to_le_bytes())?;
        let mut reader = &*stream;
        loop {
            let mut len = [0u8; 8];
            reader.read_exact(&mut len)?;
            let len = u64::from_le_bytes(len) as usize;
            if len == 0 {
                log.sync()?;
                side.elapsed = start.map_or(Duration::ZERO, |s: Instant| s.elapsed());
                side.entries = log.state().next_index();
                side.payload_bytes = side.entries * o.entry_size as u64;
                return Ok((side, dir.to_path_buf()));
            }
            start.get_or_insert_with(Instant::now);
            let before = log.state().next_index();
            if o.copy_receive {
                buf.resize(len, 0);
                reader.read_exact(&mut buf)?;
                log.append_frames(&buf)?;
            } else {
                // The socket reads straight into the log's map; the frames are checked there.
                log.receive_frames(len, |room| reader.read_exact(room))?;
            }
            let next = log.state().next_index();
            side.wire_bytes += len as u64;
            side.kernel_copied += next.saturating_sub(before);
            if o.copy_receive {
                side.user_copied += next.saturating_sub(before);
            }
            let ack = stream.clone();
            log.flush(move |r| {
                if r.is_ok() {
                    let _ = (&*ack).write_all(&next.to_le_bytes());
                }
            })?;
            if restart_at.is_some_and(|r| next > r) {
                restart_at = None;
                side.restarts += 1;
                break; // drop the connection and the log, then reopen both
            }
        }
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
}

/// Checks that the follower's log in `dir` equals the leader's: every frame byte but the
/// salted CRC, and the Raft state's last log id.
pub fn compare(leader: &RaftLog<RaftTypes>, dir: &Path, o: &Options) -> Result<(), BoxError> {
    let follower = RaftLog::<RaftTypes>::open(dir, config(o.segment_size))?;
    let (lv, fv) = (leader.reader().view(), follower.reader().view());
    if (lv.first_index(), lv.next_index()) != (fv.first_index(), fv.next_index()) {
        return Err(format!(
            "logs differ: leader holds {}..{}, follower {}..{}",
            lv.first_index(),
            lv.next_index(),
            fv.first_index(),
            fv.next_index()
        )
        .into());
    }
    let mut at = lv.first_index();
    while at < lv.next_index() {
        let (a, b) = (lv.frames(at..at + 65536)?, fv.frames(at..at + 65536)?);
        let (a, b) = (a.to_vec(), b.to_vec());
        for (x, y) in frames::parse(&a).zip(frames::parse(&b)) {
            let (x, y) = (x?, y?);
            // Every byte but the salted CRC (header bytes 0..4), which is per file.
            let (hx, hy) = (x.header, y.header);
            let same_header = (hx.kind, hx.reserved, hx.len, hx.body_crc, hx.arg)
                == (hy.kind, hy.reserved, hy.len, hy.body_crc, hy.arg);
            if !same_header || x.tail != y.tail {
                return Err(
                    format!("entry {} differs between leader and follower", x.index).into(),
                );
            }
        }
        if a.len() != b.len() {
            return Err(format!("frames from {at} differ in length").into());
        }
        at += 65536;
    }
    if leader.state().last != follower.state().last {
        return Err("last log ids differ".into());
    }
    Ok(())
}
