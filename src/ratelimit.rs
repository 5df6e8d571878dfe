//! A token bucket: how many lines a client may send, and how fast.
//!
//! This module owns the arithmetic only. The caller passes the current time, so the bucket
//! is a pure state machine that tests drive with invented clocks; it must not sleep, read
//! the clock or decide what happens to a client that is over the limit.

use std::time::Instant;

/// Up to `burst` lines at once, refilled at `per_sec` lines per second.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    burst: f64,
    per_sec: f64,
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

    /// Takes one token if there is one. Returns false when the line should be dropped.
    pub fn try_take(&mut self, now: Instant) -> bool {
        if self.per_sec == 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_steady_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(3, 2, start);
        let taken: Vec<bool> = (0..4).map(|_| bucket.try_take(start)).collect();
        assert_eq!(taken, [true, true, true, false]);
        // Half a second at 2 lines/s earns exactly one more line.
        let later = start + Duration::from_millis(500);
        assert!(bucket.try_take(later));
        assert!(!bucket.try_take(later));
    }

    #[test]
    fn refill_never_exceeds_the_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(2, 100, start);
        let much_later = start + Duration::from_secs(3600);
        let taken = (0..5).filter(|_| bucket.try_take(much_later)).count();
        assert_eq!(taken, 2);
    }

    #[test]
    fn zero_rate_means_unlimited() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1, 0, start);
        assert!((0..10_000).all(|_| bucket.try_take(start)));
    }
}
