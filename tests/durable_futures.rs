//! Awaitable durability (feature `tokio`): a `flushed()` future resolves exactly where a flush
//! callback asked for at the same point would run, on `Store`, `RaftLog`, `Groups` and
//! `Group`; many tasks awaiting at once all resolve; futures dropped before they resolve lose
//! and reorder nothing.

use std::future::Future;
use std::pin::Pin;
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use raft_mmap_log::groups::Groups;
use raft_mmap_log::raft::{LogId, RaftLog, RaftTypes};
use raft_mmap_log::{Config, Store};

fn config() -> Config {
    Config {
        segment_size: 256 * 1024,
        ..Config::default()
    }
}

/// A waker that appends its name to an event list when woken.
struct Recorder(Arc<Mutex<Vec<&'static str>>>, &'static str);
impl Wake for Recorder {
    fn wake(self: Arc<Self>) {
        self.0.lock().unwrap().push(self.1);
    }
}

/// With the flush thread held inside an earlier callback, a future asked for between two
/// callbacks is pending, and it is woken after the earlier callback and before the later one.
#[test]
fn a_future_resolves_between_the_callbacks_asked_for_before_and_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = Store::open(tmp.path(), config()).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let (release, held) = mpsc::channel::<()>();
    let (done, finished) = mpsc::channel::<()>();

    log.append(0, b"zero").unwrap();
    let e = events.clone();
    log.flush(move |r| {
        r.unwrap();
        held.recv().unwrap();
        e.lock().unwrap().push("callback before");
    })
    .unwrap();
    log.append(1, b"one").unwrap();
    let mut future = log.flushed();
    let waker = Waker::from(Arc::new(Recorder(events.clone(), "future woken")));
    let mut cx = Context::from_waker(&waker);
    assert!(Pin::new(&mut future).poll(&mut cx).is_pending());
    log.append(2, b"two").unwrap();
    let e = events.clone();
    log.flush(move |r| {
        r.unwrap();
        e.lock().unwrap().push("callback after");
        done.send(()).unwrap();
    })
    .unwrap();

    release.send(()).unwrap();
    finished.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(
        *events.lock().unwrap(),
        ["callback before", "future woken", "callback after"]
    );
    assert!(future.is_done());
    assert!(matches!(
        Pin::new(&mut future).poll(&mut cx),
        Poll::Ready(Ok(()))
    ));
}

/// 64 tasks on a multi-threaded runtime, each appending 16-entry batches to its own group and
/// awaiting `Group::flushed`, some of them dropping every third future unawaited (a cancelled
/// `select!` branch): every future awaited resolves `Ok`, and after a reopen every group holds
/// every entry in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_awaiting_at_once_all_resolve_and_cancelled_ones_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let groups = Arc::new(Groups::open(tmp.path(), config()).unwrap());
    let mut tasks = Vec::new();
    for g in 0..64u64 {
        let groups = groups.clone();
        tasks.push(tokio::spawn(async move {
            let group = groups.group(g);
            for round in 0..20u64 {
                let payloads: Vec<Vec<u8>> = (0..16).map(|k| entry(g, round * 16 + k)).collect();
                group
                    .append_batch((0..16).map(|k| (round * 16 + k, &payloads[k as usize][..])))
                    .unwrap();
                let durable = group.flushed();
                if g % 2 == 1 && round % 3 == 0 {
                    // Cancelled: whichever branch wins, the future may be dropped pending.
                    tokio::select! {
                        _ = durable => {}
                        _ = tokio::task::yield_now() => {}
                    }
                } else {
                    durable.await.unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    groups.flushed().await.unwrap();
    drop(groups);
    let groups = Groups::open(tmp.path(), config()).unwrap();
    for g in 0..64u64 {
        let view = groups.group(g).reader().view();
        assert_eq!(view.next_index(), 320, "group {g}");
        for i in 0..320 {
            assert_eq!(view.get(i), Some(&entry(g, i)[..]), "group {g} entry {i}");
        }
    }
}

fn entry(group: u64, index: u64) -> Vec<u8> {
    let mut v = group.to_le_bytes().to_vec();
    v.extend_from_slice(&index.to_le_bytes());
    v.resize(40 + (index % 50) as usize, group as u8);
    v
}

/// The Raft layer's future covers the entries appended before it.
#[test]
fn raft_log_flushed_resolves_after_its_entries_are_durable() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    {
        let mut log = RaftLog::<RaftTypes>::open(tmp.path(), config()).unwrap();
        for i in 1..=50 {
            log.append([(LogId::new(1, 1, i), &b"entry"[..])]).unwrap();
        }
        let durable = log.flushed();
        rt.block_on(durable).unwrap();
    }
    let log = RaftLog::<RaftTypes>::open(tmp.path(), config()).unwrap();
    let view = log.reader().view();
    assert_eq!(view.next_index(), 51);
    assert_eq!(view.log_id(50).unwrap(), Some(LogId::new(1, 1, 50)));
}

/// A future made before the log is closed resolves `Ok`: the close completes the flushes
/// queued before it.
#[test]
fn a_future_made_before_a_close_resolves() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = Store::open(tmp.path(), config()).unwrap();
    log.append(0, b"zero").unwrap();
    let future = log.flushed();
    drop(log);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(future).unwrap();
}
