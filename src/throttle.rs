//! Slowing down password guessing without letting one person's typos lock out the others.
//!
//! This module owns the memory of recent failed sign-ins and the delay they earn before the
//! next password check, in two parts:
//!
//! - **per account**: a growing, capped delay after each failure (250 ms, doubling, at most
//!   8 s). Whoever mistypes their own password slows down only that account.
//! - **per source address**: a failure *rate*, kept as a leaky bucket. An address may fail
//!   [`ADDRESS_FAILURE_BURST`] times at once and one more time every
//!   [`ADDRESS_FAILURE_INTERVAL`] after that, without any delay; faster than that, its
//!   checks wait until it is back within that rate. People do not fail that fast, even a
//!   class of students who all share 127.0.0.1 on one shell host; guessing across many
//!   accounts from one address does.
//!
//! It has its own small mutex (never the registry's) and must not sleep while holding it:
//! the caller asks for the delay, sleeps outside, then tries the password. Memory is
//! bounded: old entries are forgotten, and the tables are pruned when they grow.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::limits::{
    ADDRESS_FAILURE_BURST, ADDRESS_FAILURE_INTERVAL, LOGIN_DELAY_BASE, LOGIN_DELAY_CAP,
    LOGIN_FAILURE_MEMORY,
};

/// Entries kept per table before old ones are pruned (bounds memory under a distributed
/// attack).
const MAX_ENTRIES: usize = 100_000;

/// Recent failures of one account.
#[derive(Debug, Clone, Copy)]
struct AccountFailures {
    count: u32,
    last: Instant,
}

/// The two tables, under one lock.
#[derive(Default)]
struct Failures {
    accounts: HashMap<String, AccountFailures>,
    /// Per address, the moment its bucket of failures will have drained empty. Each
    /// failure adds one [`ADDRESS_FAILURE_INTERVAL`] to it; time drains it. (This one
    /// number is the whole leaky bucket: the "generic cell rate algorithm" of ATM networks.)
    addresses: HashMap<IpAddr, Instant>,
}

/// Recent sign-in failures.
#[derive(Default)]
pub struct LoginThrottle {
    failures: Mutex<Failures>,
}

/// The delay earned by `count` recent failures of one account: none, then base, 2x base,
/// 4x base, ... capped.
pub fn delay_for(count: u32) -> Duration {
    if count == 0 {
        return Duration::ZERO;
    }
    let doublings = (count - 1).min(16);
    LOGIN_DELAY_BASE
        .saturating_mul(1 << doublings)
        .min(LOGIN_DELAY_CAP)
}

/// How much failure an address's bucket holds before its checks wait: the burst.
fn address_allowance() -> Duration {
    ADDRESS_FAILURE_INTERVAL.saturating_mul(ADDRESS_FAILURE_BURST)
}

/// The delay for an address whose bucket drains empty at `drained_at`: the time until it
/// is back within its allowance, capped like every sign-in delay.
fn address_delay(drained_at: Instant, now: Instant) -> Duration {
    let load = drained_at.saturating_duration_since(now);
    load.saturating_sub(address_allowance())
        .min(LOGIN_DELAY_CAP)
}

impl LoginThrottle {
    pub fn new() -> Self {
        LoginThrottle::default()
    }

    /// How long to wait before checking a password for `account_key` from `address`: the
    /// larger of the account's delay and the address's, so neither hammering one account
    /// from many addresses nor many accounts from one address escapes it.
    pub fn delay(&self, account_key: &str, address: IpAddr, now: Instant) -> Duration {
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let account = failures
            .accounts
            .get(account_key)
            .filter(|f| now.saturating_duration_since(f.last) < LOGIN_FAILURE_MEMORY)
            .map_or(Duration::ZERO, |f| delay_for(f.count));
        let address = failures
            .addresses
            .get(&address.to_canonical())
            .map_or(Duration::ZERO, |&drained_at| address_delay(drained_at, now));
        account.max(address)
    }

    /// Remembers a failed password.
    pub fn record_failure(&self, account_key: &str, address: IpAddr, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        failures.prune(now);
        let account = failures
            .accounts
            .entry(account_key.to_string())
            .or_insert(AccountFailures {
                count: 0,
                last: now,
            });
        if now.saturating_duration_since(account.last) >= LOGIN_FAILURE_MEMORY {
            account.count = 0;
        }
        account.count = account.count.saturating_add(1);
        account.last = now;

        // A bucket overfilled by a flood of parallel guesses would keep delaying everyone
        // on that address long after the flood; it holds at most twice its allowance, so
        // it is back within the allowance at most that long after the last failure.
        let drained_at = failures
            .addresses
            .entry(address.to_canonical())
            .or_insert(now);
        let filled = (*drained_at).max(now) + ADDRESS_FAILURE_INTERVAL;
        *drained_at = filled.min(now + address_allowance() * 2);
    }

    /// Forgets the account's failures after a correct password. The address keeps its
    /// record, so an attacker cannot reset it by signing in to an account of its own.
    pub fn record_success(&self, account_key: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        failures.accounts.remove(account_key);
    }
}

impl Failures {
    /// Drops what no longer earns a delay, once a table has grown large.
    fn prune(&mut self, now: Instant) {
        if self.accounts.len() >= MAX_ENTRIES {
            self.accounts
                .retain(|_, f| now.saturating_duration_since(f.last) < LOGIN_FAILURE_MEMORY);
        }
        if self.addresses.len() >= MAX_ENTRIES {
            self.addresses.retain(|_, drained_at| *drained_at > now);
        }
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

    /// What happened before the question.
    #[derive(Clone, Copy)]
    enum Event {
        /// `n` failed passwords at once, `at` seconds after the start, for `account`
        /// (`account0`, `account1`, ... when it is `"*"`: guessing across accounts) from
        /// `address`.
        Fail {
            at: f64,
            n: u32,
            account: &'static str,
            address: [u8; 4],
        },
        /// A correct password for `account` (after the failures listed before it).
        Success { account: &'static str },
    }

    use Event::{Fail, Success};

    const STUDENTS: [u8; 4] = [127, 0, 0, 1];
    const ELSEWHERE: [u8; 4] = [198, 51, 100, 7];

    fn seconds(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    fn fail(at: f64, n: u32, account: &'static str, address: [u8; 4]) -> Event {
        Fail {
            at,
            n,
            account,
            address,
        }
    }

    #[test]
    fn delay_table() {
        let interval = ADDRESS_FAILURE_INTERVAL;
        let burst = ADDRESS_FAILURE_BURST;
        let forgotten = LOGIN_FAILURE_MEMORY.as_secs_f64();
        // (what happened, then: asked at, for account, from address, the delay expected)
        type Row = (
            &'static str,
            Vec<Event>,
            (f64, &'static str, [u8; 4]),
            Duration,
        );
        let rows: Vec<Row> = vec![
            (
                "nothing happened",
                vec![],
                (0.0, "alice", STUDENTS),
                Duration::ZERO,
            ),
            // The per-account delay is kept, and follows the account to any address.
            (
                "one typo slows that account",
                vec![fail(0.0, 1, "alice", STUDENTS)],
                (0.0, "alice", STUDENTS),
                LOGIN_DELAY_BASE,
            ),
            (
                "three typos double it twice, from anywhere",
                vec![fail(0.0, 3, "alice", STUDENTS)],
                (0.0, "alice", ELSEWHERE),
                LOGIN_DELAY_BASE * 4,
            ),
            (
                "many typos cap it",
                vec![fail(0.0, 20, "alice", STUDENTS)],
                (0.0, "alice", ELSEWHERE),
                LOGIN_DELAY_CAP,
            ),
            // One student's typos do not slow a classmate on the same address.
            (
                "a classmate is not slowed by three typos",
                vec![fail(0.0, 3, "alice", STUDENTS)],
                (0.0, "bob", STUDENTS),
                Duration::ZERO,
            ),
            (
                "a classmate is not slowed by one student's twenty",
                vec![fail(0.0, 20, "alice", STUDENTS)],
                (0.0, "bob", STUDENTS),
                Duration::ZERO,
            ),
            (
                "a whole class mistyping at once is within the burst",
                vec![fail(0.0, burst, "*", STUDENTS)],
                (0.0, "bob", STUDENTS),
                Duration::ZERO,
            ),
            // Guessing across accounts from one address: the address's rate bites.
            (
                "one failure past the burst: wait one interval",
                vec![fail(0.0, burst + 1, "*", STUDENTS)],
                (0.0, "bob", STUDENTS),
                interval,
            ),
            (
                "three past the burst: wait three intervals",
                vec![fail(0.0, burst + 3, "*", STUDENTS)],
                (0.0, "bob", STUDENTS),
                interval * 3,
            ),
            (
                "far past the burst: the cap",
                vec![fail(0.0, burst + 100, "*", STUDENTS)],
                (0.0, "bob", STUDENTS),
                LOGIN_DELAY_CAP,
            ),
            (
                "the bucket drains: one interval later it is within the rate again",
                vec![fail(0.0, burst + 1, "*", STUDENTS)],
                (interval.as_secs_f64(), "bob", STUDENTS),
                Duration::ZERO,
            ),
            (
                "half an interval later, half an interval to wait",
                vec![fail(0.0, burst + 1, "*", STUDENTS)],
                (interval.as_secs_f64() / 2.0, "bob", STUDENTS),
                interval / 2,
            ),
            (
                "a steady rate of one failure per interval never waits",
                (0..3 * burst)
                    .map(|i| fail(f64::from(i) * interval.as_secs_f64(), 1, "*", STUDENTS))
                    .collect(),
                (
                    f64::from(3 * burst - 1) * interval.as_secs_f64(),
                    "bob",
                    STUDENTS,
                ),
                Duration::ZERO,
            ),
            (
                "a flood fills the bucket to twice the burst at most",
                vec![fail(0.0, 1000 * burst, "*", STUDENTS)],
                ((interval * burst).as_secs_f64() - 1.0, "bob", STUDENTS),
                seconds(1.0),
            ),
            (
                "other addresses are not slowed by a guesser",
                vec![fail(0.0, burst + 100, "*", STUDENTS)],
                (0.0, "bob", ELSEWHERE),
                Duration::ZERO,
            ),
            // The larger delay wins.
            (
                "the account's delay when it is larger",
                vec![fail(0.0, 5, "bob", STUDENTS), fail(0.0, 3, "*", STUDENTS)],
                (0.0, "bob", STUDENTS),
                LOGIN_DELAY_BASE * 16,
            ),
            (
                "the address's delay when it is larger",
                vec![fail(0.0, burst + 3, "bob", ELSEWHERE)],
                (0.0, "carol", ELSEWHERE),
                interval * 3,
            ),
            // Forgetting.
            (
                "a correct password clears the account",
                vec![
                    fail(0.0, 3, "alice", STUDENTS),
                    Success { account: "alice" },
                ],
                (1.0, "alice", STUDENTS),
                Duration::ZERO,
            ),
            (
                "but not the address",
                vec![
                    fail(0.0, burst + 2, "*", STUDENTS),
                    Success {
                        account: "account0",
                    },
                ],
                (0.0, "account0", STUDENTS),
                interval * 2,
            ),
            (
                "account failures are forgotten after a while",
                vec![fail(0.0, 3, "alice", STUDENTS)],
                (forgotten, "alice", STUDENTS),
                Duration::ZERO,
            ),
            (
                "and counted from one again after that",
                vec![
                    fail(0.0, 5, "alice", STUDENTS),
                    fail(forgotten, 1, "alice", STUDENTS),
                ],
                (forgotten, "alice", STUDENTS),
                LOGIN_DELAY_BASE,
            ),
        ];
        let start = Instant::now();
        for (name, events, (asked_at, account, address), expected) in rows {
            let throttle = LoginThrottle::new();
            let mut guesses = 0;
            for event in events {
                match event {
                    Fail {
                        at,
                        n,
                        account,
                        address,
                    } => {
                        for _ in 0..n {
                            let account = if account == "*" {
                                guesses += 1;
                                format!("account{}", guesses - 1)
                            } else {
                                account.to_string()
                            };
                            let now = start + seconds(at);
                            throttle.record_failure(&account, address.into(), now);
                        }
                    }
                    Success { account } => throttle.record_success(account),
                }
            }
            let delay = throttle.delay(account, address.into(), start + seconds(asked_at));
            assert_eq!(delay, expected, "{name}");
        }
    }

    #[test]
    fn an_ipv4_mapped_address_is_the_same_address() {
        let throttle = LoginThrottle::new();
        let now = Instant::now();
        let mapped: IpAddr = "::ffff:198.51.100.7".parse().expect("ip");
        for i in 0..=ADDRESS_FAILURE_BURST {
            throttle.record_failure(&format!("account{i}"), mapped, now);
        }
        let plain: IpAddr = ELSEWHERE.into();
        assert_eq!(throttle.delay("bob", plain, now), ADDRESS_FAILURE_INTERVAL);
    }
}
