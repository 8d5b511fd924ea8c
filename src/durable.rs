//! Awaitable durability (feature `tokio`): [`Durable`], a future that resolves when everything
//! written before it was asked for is durable.
//!
//! A `Durable` is a flush whose callback, instead of running user code on the flush thread,
//! stores the result and wakes the task that awaits it. So it resolves exactly when a
//! callback given to `flush` at the same point would run: after the callbacks of every
//! earlier flush, with the same result. Many futures asked for while a sync runs share the
//! next sync, as callbacks do. No thread per waiter and no blocking call: asking for one
//! queues a request and returns; the appends before it are memory copies.
//!
//! Only `std`'s [`Future`] and [`Waker`] are used, so the futures run on any executor; the
//! feature is named after the runtime the crate is tested on and pulls in no dependency.
//!
//! Dropping a `Durable` before it resolves cancels nothing: the flush was queued when the
//! future was made and still runs; its result is dropped. Nothing written is lost or
//! reordered.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::error::Result;

/// A future that resolves once everything written before it was made is durable, or with
/// the error that prevented it (the error a flush callback would get). Made by
/// [`Store::flushed`](crate::Store::flushed), [`RaftLog::flushed`](crate::raft::RaftLog::flushed),
/// [`Groups::flushed`](crate::groups::Groups::flushed) and
/// [`Group::flushed`](crate::groups::Group::flushed).
///
/// ```
/// # fn main() -> raft_mmap_log::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// use raft_mmap_log::{Config, Store};
///
/// let mut log = Store::open(dir.path(), Config::default())?;
/// log.append(1, b"entry")?;
/// let durable = log.flushed(); // the flush is queued now; `log` is free again
/// log.append(2, b"not covered by `durable`")?;
/// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// # rt.block_on(async move {
/// durable.await?; // entry 1 is on disk
/// # Ok::<_, raft_mmap_log::Error>(())
/// # })?;
/// # Ok(())
/// # }
/// ```
#[must_use = "the flush runs anyway; await the future to learn when it is durable"]
#[derive(Debug)]
pub struct Durable {
    shared: Arc<Mutex<State>>,
}

#[derive(Debug)]
enum State {
    /// The flush has not completed; the waker of the last poll.
    Waiting(Option<Waker>),
    /// Completed, result not taken yet.
    Done(Result<()>),
    /// The result was returned by a poll.
    Taken,
}

impl Durable {
    /// A future and the flush callback that completes it.
    pub(crate) fn new() -> (Durable, impl FnOnce(Result<()>) + Send + 'static) {
        let shared = Arc::new(Mutex::new(State::Waiting(None)));
        let completer = {
            let shared = shared.clone();
            move |result: Result<()>| {
                let waker = {
                    let mut state = shared.lock().unwrap_or_else(|e| e.into_inner());
                    match std::mem::replace(&mut *state, State::Done(result)) {
                        State::Waiting(waker) => waker,
                        // A flush callback runs once; nothing else completes the state.
                        done @ (State::Done(_) | State::Taken) => {
                            *state = done;
                            None
                        }
                    }
                };
                // Woken outside the lock, so a waker that polls at once does not deadlock.
                if let Some(waker) = waker {
                    waker.wake();
                }
            }
        };
        (Durable { shared }, completer)
    }

    /// Whether the flush has completed (the next poll is ready). Never blocks for the flush.
    pub fn is_done(&self) -> bool {
        let state = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        !matches!(*state, State::Waiting(_))
    }
}

impl Future for Durable {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let mut state = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *state {
            State::Waiting(waker) => {
                match waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            State::Done(_) => match std::mem::replace(&mut *state, State::Taken) {
                State::Done(result) => Poll::Ready(result),
                _ => unreachable!("matched Done above"),
            },
            State::Taken => panic!("`Durable` polled after it completed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct CountingWaker(AtomicUsize);
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn pending_until_completed_then_ready_with_the_result_and_woken_once() {
        let (mut fut, complete) = Durable::new();
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        assert!(!fut.is_done());
        complete(Err(crate::Error::Poisoned("disk gone".into())));
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert!(fut.is_done());
        match Pin::new(&mut fut).poll(&mut cx) {
            Poll::Ready(Err(crate::Error::Poisoned(m))) => assert_eq!(m, "disk gone"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn completed_before_the_first_poll_is_ready_at_once() {
        let (mut fut, complete) = Durable::new();
        complete(Ok(()));
        let waker = Waker::from(Arc::new(CountingWaker(AtomicUsize::new(0))));
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(
            Pin::new(&mut fut).poll(&mut cx),
            Poll::Ready(Ok(()))
        ));
    }

    /// A future dropped before it resolves still has its flush run: after the flush thread's
    /// sync and a power cut, the entries written before it are in every image the cut can
    /// leave. Nothing else asks for a sync.
    #[test]
    fn a_dropped_future_still_makes_its_entries_durable() {
        use crate::io::sim::{scratch, Kind, SimFs};
        use crate::io::Fs;
        use crate::{Config, Store};
        use std::path::Path;
        use std::time::{Duration, Instant};

        let dir = scratch("rml-durable");
        let images: Vec<tempfile::TempDir> = (0..4).map(|_| scratch("rml-durable")).collect();
        let into: Vec<&Path> = images.iter().map(|d| d.path()).collect();
        let fs = Arc::new(SimFs::new(dir.path()));
        let config = Config {
            segment_size: 64 * 1024,
            ..Config::default()
        };
        let mut log = Store::open_with_fs(dir.path(), config.clone(), fs.clone()).unwrap();
        let syncs = fs.calls(Kind::Msync);
        for i in 0..40u64 {
            log.append(i, &[i as u8; 100]).unwrap();
        }
        drop(log.flushed());
        let t = Instant::now();
        while fs.calls(Kind::Msync) == syncs {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "the dropped flush never ran"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        fs.cut_after(fs.effects() + 1, &into, 7);
        let _ = fs.sync_dir(dir.path());
        assert!(fs.cut_taken());
        drop(log);
        for image in &into {
            let s = Store::open(image, config.clone()).unwrap();
            let view = s.reader().view();
            assert_eq!(view.next_index(), 40);
            for i in 0..40u64 {
                assert_eq!(view.get_checked(i).unwrap(), Some(&[i as u8; 100][..]));
            }
        }
    }

    #[test]
    fn completing_a_dropped_future_is_harmless() {
        let (fut, complete) = Durable::new();
        drop(fut);
        complete(Ok(()));
    }
}
