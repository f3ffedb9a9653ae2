//! Bounded waits: every "it eventually happens" of the tests polls a
//! condition until a deadline, never sleeps a fixed time.

use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Polls `cond` every 50 ms until it holds (true) or `deadline` passes
/// (false; `cond` is tried one last time at the deadline).
pub fn wait_until(deadline: Instant, cond: impl FnMut() -> bool) -> bool {
    poll_until(deadline, Duration::from_millis(50), cond)
}

/// Like [`wait_until`], polling every `every`.
pub fn poll_until(deadline: Instant, every: Duration, mut cond: impl FnMut() -> bool) -> bool {
    loop {
        if cond() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        thread::sleep(every.min(deadline - now));
    }
}

/// `Instant::now() + secs`, for deadlines.
pub fn secs(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

/// Now, in unix milliseconds (the clock `status` times use).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Now, in unix nanoseconds (the clock of a job's `date +%s%N`).
pub fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}
