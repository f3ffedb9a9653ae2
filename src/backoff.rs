//! The one retry pacing every loop of zkmw uses: waits that double from a
//! first value up to a cap, with a little jitter so that many processes
//! retrying at once (after an outage) do not hit ZooKeeper in step.

use std::time::Duration;

/// Doubling waits between retries, capped.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    next: Duration,
}

impl Backoff {
    /// Waits of `first`, then twice that, and so on up to `cap`.
    pub fn new(first: Duration, cap: Duration) -> Backoff {
        Backoff {
            first,
            cap,
            next: first,
        }
    }

    /// The next wait (up to a tenth more, at random) and doubles the one after.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.cap);
        let tenth = wait.as_micros() as u64 / 10;
        wait + Duration::from_micros(rand::random_range(0..=tenth))
    }

    /// Sleeps for the next wait.
    pub fn sleep(&mut self) {
        std::thread::sleep(self.next_wait());
    }

    /// Starts over from the first wait (after a success).
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_starts_over() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(350));
        let waits: Vec<Duration> = (0..4).map(|_| b.next_wait()).collect();
        for (wait, base) in waits.iter().zip([100, 200, 350, 350]) {
            assert!(
                *wait >= ms(base) && *wait <= ms(base + base / 10),
                "{waits:?}"
            );
        }
        b.reset();
        assert!(b.next_wait() <= ms(110));
    }
}
