//! Running one future to completion on the calling thread, with a deadline.
//!
//! The crate's futures are driven by its own executor threads; the caller
//! only has to wait for the result. Waiting parks this thread until the
//! future's waker unparks it or the deadline passes. A timer future raced
//! against the call would do the same through async-io's reactor thread,
//! at the price of registering a timer and waking that thread on every
//! call: measurable on a path that makes thousands of calls a second.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::Instant;

/// Wakes the thread that is blocked on the future.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

thread_local! {
    /// This thread's waker, made once.
    static WAKER: Waker = Waker::from(Arc::new(Unpark(thread::current())));
}

/// Polls `fut` until it is ready (`Some`) or `deadline` passes (`None`).
pub fn block_on_until<F: Future>(fut: F, deadline: Instant) -> Option<F::Output> {
    let mut fut = pin!(fut);
    WAKER.with(|waker| {
        let mut cx = Context::from_waker(waker);
        loop {
            if let Poll::Ready(output) = fut.as_mut().poll(&mut cx) {
                return Some(output);
            }
            // A wake-up may be spurious or early: poll again either way.
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            thread::park_timeout(left);
        }
    })
}
