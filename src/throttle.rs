//! Slowing down password guessing: a growing, capped delay after failed sign-ins.
//!
//! This module owns the memory of recent failures, per account and per source address, and
//! the delay they earn. It has its own small mutex (never the registry's) and must not sleep
//! while holding it: the caller asks for the delay, sleeps outside, then tries the password.
//! Memory is bounded: old entries are forgotten, and the table is pruned when it grows.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::limits::{LOGIN_DELAY_BASE, LOGIN_DELAY_CAP, LOGIN_FAILURE_MEMORY};

/// Entries kept before old ones are pruned (bounds memory under a distributed attack).
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Account(String),
    Address(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

/// Recent sign-in failures.
#[derive(Default)]
pub struct LoginThrottle {
    failures: Mutex<HashMap<Key, Failures>>,
}

/// The delay earned by `count` recent failures: none, then base, 2x base, 4x base, ... capped.
pub fn delay_for(count: u32) -> Duration {
    if count == 0 {
        return Duration::ZERO;
    }
    let doublings = (count - 1).min(16);
    LOGIN_DELAY_BASE
        .saturating_mul(1 << doublings)
        .min(LOGIN_DELAY_CAP)
}

impl LoginThrottle {
    pub fn new() -> Self {
        LoginThrottle::default()
    }

    /// How long to wait before checking a password for `account_key` from `address`: the
    /// larger of the two delays, so neither one account nor one address can be hammered.
    pub fn delay(&self, account_key: &str, address: IpAddr, now: Instant) -> Duration {
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let count = |key: &Key| {
            failures
                .get(key)
                .filter(|f| now.saturating_duration_since(f.last) < LOGIN_FAILURE_MEMORY)
                .map_or(0, |f| f.count)
        };
        let worst =
            count(&Key::Account(account_key.to_string())).max(count(&Key::Address(address)));
        delay_for(worst)
    }

    /// Remembers a failed password.
    pub fn record_failure(&self, account_key: &str, address: IpAddr, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if failures.len() >= MAX_ENTRIES {
            failures.retain(|_, f| now.saturating_duration_since(f.last) < LOGIN_FAILURE_MEMORY);
        }
        for key in [Key::Account(account_key.to_string()), Key::Address(address)] {
            let entry = failures.entry(key).or_insert(Failures {
                count: 0,
                last: now,
            });
            if now.saturating_duration_since(entry.last) >= LOGIN_FAILURE_MEMORY {
                entry.count = 0;
            }
            entry.count = entry.count.saturating_add(1);
            entry.last = now;
        }
    }

    /// Forgets the account's failures after a correct password. The address keeps its
    /// record, so an attacker cannot reset it by signing in to an account of its own.
    pub fn record_success(&self, account_key: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        failures.remove(&Key::Account(account_key.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_grows_then_caps() {
        let rows = [
            (0, Duration::ZERO),
            (1, LOGIN_DELAY_BASE),
            (2, LOGIN_DELAY_BASE * 2),
            (3, LOGIN_DELAY_BASE * 4),
            (100, LOGIN_DELAY_CAP),
            (u32::MAX, LOGIN_DELAY_CAP),
        ];
        for (count, expected) in rows {
            assert_eq!(delay_for(count), expected, "count {count}");
        }
    }

    #[test]
    fn failures_count_per_account_and_per_address() {
        let throttle = LoginThrottle::new();
        let now = Instant::now();
        let here: IpAddr = [10, 0, 0, 1].into();
        let there: IpAddr = [10, 0, 0, 2].into();
        throttle.record_failure("alice", here, now);
        throttle.record_failure("alice", here, now);
        assert_eq!(throttle.delay("alice", there, now), LOGIN_DELAY_BASE * 2);
        assert_eq!(throttle.delay("bob", here, now), LOGIN_DELAY_BASE * 2);
        assert_eq!(throttle.delay("bob", there, now), Duration::ZERO);
        throttle.record_success("alice");
        assert_eq!(throttle.delay("alice", there, now), Duration::ZERO);
        assert_eq!(throttle.delay("alice", here, now), LOGIN_DELAY_BASE * 2);
    }

    #[test]
    fn failures_are_forgotten_after_a_while() {
        let throttle = LoginThrottle::new();
        let now = Instant::now();
        let here: IpAddr = [10, 0, 0, 1].into();
        throttle.record_failure("alice", here, now);
        let later = now + LOGIN_FAILURE_MEMORY;
        assert_eq!(throttle.delay("alice", here, later), Duration::ZERO);
    }
}
