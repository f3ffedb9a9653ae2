//! Helper threads of a test that loop until told to stop: owned ones
//! ([`Background`]) and scoped ones ([`StopOnDrop`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};

/// A thread that loops until its flag is set (a "meddler" moving znodes
/// under the cluster, a watch). A test that panics before it stops the
/// thread would leave it running: dropping it sets the flag and joins it.
pub struct Background<T> {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<T>>,
}

impl<T: Send + 'static> Background<T> {
    /// Runs `work` on a thread of its own; it must end soon after the flag
    /// it is given is set.
    pub fn spawn(work: impl FnOnce(&AtomicBool) -> T + Send + 'static) -> Background<T> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || work(&flag));
        Background {
            stop,
            thread: Some(thread),
        }
    }

    /// Sets the flag and joins the thread: what it returned, or its panic.
    pub fn stop(mut self) -> thread::Result<T> {
        self.halt().expect("joined once")
    }
}

impl<T> Background<T> {
    fn halt(&mut self) -> Option<thread::Result<T>> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().map(JoinHandle::join)
    }
}

impl<T> Drop for Background<T> {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}

/// Sets the stop flag of a scoped helper thread when dropped: held in the
/// scope, it stops the thread even when the test panics inside the scope
/// (which would otherwise wait for the thread for ever).
pub struct StopOnDrop<'a>(pub &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}
