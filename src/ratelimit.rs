//! A token bucket: how many lines a client may send at once, and how fast after that.
//!
//! This module owns the arithmetic only. The caller passes the current time, so the bucket
//! is a pure state machine that tests drive with invented clocks; it must not sleep, read
//! the clock or decide what happens to a client that is over its rate (the session makes
//! it wait).

use std::time::{Duration, Instant};

/// Up to `burst` lines at once, refilled at `per_sec` lines per second.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    burst: f64,
    per_sec: f64,
    /// Below zero when a line was taken on credit: the caller waits until it is paid.
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket. `per_sec == 0` means unlimited.
    pub fn new(burst: u32, per_sec: u32, now: Instant) -> Self {
        TokenBucket {
            burst: f64::from(burst.max(1)),
            per_sec: f64::from(per_sec),
            tokens: f64::from(burst.max(1)),
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
    }

    /// Takes a token for one line and returns how long the caller must wait before acting
    /// on that line: zero while the burst lasts, then one `1 / per_sec` apart. A caller
    /// that waits that long before taking again keeps the debt at one line at most.
    pub fn take(&mut self, now: Instant) -> Duration {
        if self.per_sec == 0.0 {
            return Duration::ZERO;
        }
        self.refill(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(-self.tokens / self.per_sec)
    }

    /// True when the whole burst is available again: the client has been calm for a while.
    pub fn is_full(&mut self, now: Instant) -> bool {
        if self.per_sec == 0.0 {
            return true;
        }
        self.refill(now);
        self.tokens >= self.burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_burst_goes_at_once_then_each_line_waits_its_turn() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(3, 2, start);
        // (ms since start at which a line is taken, wait it is given)
        let rows = [
            (0, ms(0)),
            (0, ms(0)),
            (0, ms(0)),
            (0, ms(500)),   // the fourth line waits half a second at 2 lines/s...
            (500, ms(500)), // ...and one taken just when it may go waits the next turn
            (1000, ms(500)),
            (3000, ms(0)), // a pause of 1.5 s earns three lines back
        ];
        for (at, wait) in rows {
            assert_eq!(bucket.take(start + ms(at)), wait, "line taken at {at} ms");
        }
    }

    #[test]
    fn the_bucket_is_full_again_only_after_a_calm_spell() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(2, 100, start);
        assert!(bucket.is_full(start));
        let _ = bucket.take(start);
        assert!(!bucket.is_full(start));
        assert!(
            bucket.is_full(start + ms(10)),
            "one line back at 100 lines/s"
        );
        let much_later = start + Duration::from_secs(3600);
        let waits: Vec<Duration> = (0..3).map(|_| bucket.take(much_later)).collect();
        assert_eq!(
            waits,
            [ms(0), ms(0), ms(10)],
            "refill never exceeds the burst"
        );
    }

    #[test]
    fn zero_rate_means_unlimited() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1, 0, start);
        assert!((0..10_000).all(|_| bucket.take(start).is_zero()));
        assert!(bucket.is_full(start));
    }
}
