//! Doorbells: how a sleeping writer thread is told that its queue has lines.
//!
//! This module owns waking writers and nothing else: it knows no queues, lines or sockets.
//! A writer reads the doorbell's count, looks at its own queue, and if nothing there is due
//! sleeps until the count moves on; whoever queues a line rings afterwards. A ring between
//! the look and the sleep is not lost, because the count has already moved.
//!
//! Why writers *share* doorbells: waking a thread is a futex syscall, and Linux finds the
//! sleeper by walking a hash bucket holding a share of all the process's sleeping threads
//! (since Linux 6.16 a per-process table of only 16 buckets on a 2-core machine). With one
//! doorbell per writer, a broadcast to 10,000 users meant 10,000 walks of ~625 sleepers:
//! a third of a second before the first byte was written (docs/PERFORMANCE.md). With
//! [`WRITER_DOORBELLS`] doorbells handed out in turn, a broadcast rings each at most once,
//! and every writer behind it wakes from that one syscall. The price: a line for one user
//! also wakes the others behind that doorbell, who find nothing and sleep again. Up to
//! [`WRITER_DOORBELLS`] clients no doorbell is shared, so a small server pays nothing.
//!
//! A ring says what it is for. [`Ring::Urgent`] (a chat line, a reply, a welcome) wakes
//! everyone behind the doorbell, but only the writers with such a line write; the others
//! sleep again. [`Ring::All`] (notices) lets every writer take its whole queue. So a line
//! for one user costs the writers sharing its doorbell a wake-up, not a write of the
//! notices they hold. A doorbell also remembers whether a notice waits behind it for its
//! next ring for all (a join that did not ring, because the doorbell rang moments ago): the
//! notice flusher rings just those doorbells, and never has to visit every user.
//!
//! [`WRITER_DOORBELLS`]: crate::limits::WRITER_DOORBELLS

use std::cmp::Reverse;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// A wake-up signal for the writers it was handed to: a count of rings, and a condition
/// variable to sleep on until the count changes.
#[derive(Default)]
pub struct Doorbell {
    state: Mutex<Rung>,
    changed: Condvar,
}

/// What a ring asks of the writers behind a doorbell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ring {
    /// Some of them have lines that may not wait: each writer with such a line takes its
    /// queue; the others go back to sleep, and their notices keep waiting. A welcome or a
    /// private line for one user costs the writers beside it a wake-up, not a write.
    Urgent,
    /// Every writer takes whatever is queued, notices too.
    All,
}

/// Where a doorbell's counts stood when a writer looked: pass it to [`Doorbell::wait_past`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    rings: u64,
    all: u64,
}

#[derive(Default)]
struct Rung {
    /// Rings of any kind.
    count: u64,
    /// Rings of kind [`Ring::All`].
    all_count: u64,
    /// When it last rang for all: notices that can wait for the next such ring do not ring
    /// again within their delay (see `outbox::Urgency::Within`).
    at: Option<Instant>,
    /// Some writer behind this doorbell has lines that wait for its next ring for all
    /// (notices that did not ring themselves). The notice flusher rings only such doorbells, so an
    /// idle server's flusher costs a few lock operations, not a visit to every user.
    waiting: bool,
}

impl Rung {
    fn rang_within(&self, delay: Duration) -> bool {
        self.at.is_some_and(|at| at.elapsed() < delay)
    }
}

impl Doorbell {
    pub fn new() -> Self {
        Doorbell::default()
    }

    /// Never held across anything that can panic: a poisoned count is still a count.
    fn lock(&self) -> MutexGuard<'_, Rung> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How often this doorbell has rung so far. Read it *before* looking for work, then
    /// pass it to [`Doorbell::wait_past`].
    pub fn rings(&self) -> Seen {
        let rung = self.lock();
        Seen {
            rings: rung.count,
            all: rung.all_count,
        }
    }

    /// Whether a line that may wait up to `delay` should ring now: true if the doorbell
    /// has not rung for all within `delay`. If not, the doorbell remembers that a line
    /// waits, and [`Doorbells::ring_waiting`] rings it once the delay has passed.
    pub fn due(&self, delay: Duration) -> bool {
        let mut rung = self.lock();
        let rang_lately = rung.rang_within(delay);
        if rang_lately {
            rung.waiting = true;
        }
        !rang_lately
    }

    /// Remembers that a writer behind this doorbell went to sleep with lines queued, to be
    /// taken at the next ring for all.
    pub fn hold(&self) {
        self.lock().waiting = true;
    }

    /// Wakes every writer sleeping on this doorbell. One syscall however many sleep.
    pub fn ring(&self, ring: Ring) {
        let mut rung = self.lock();
        rung.count = rung.count.wrapping_add(1);
        if ring == Ring::All {
            rung.all_count = rung.all_count.wrapping_add(1);
            rung.at = Some(Instant::now());
            rung.waiting = false;
        }
        drop(rung);
        self.changed.notify_all();
    }

    /// Sleeps until the doorbell has rung since [`Doorbell::rings`] returned `seen`;
    /// returns at once if it already has. True if one of those rings was [`Ring::All`].
    pub fn wait_past(&self, seen: Seen) -> bool {
        let mut rung = self.lock();
        while rung.count == seen.rings {
            rung = self
                .changed
                .wait(rung)
                .unwrap_or_else(PoisonError::into_inner);
        }
        rung.all_count != seen.all
    }

    /// Like [`Doorbell::wait_past`], but gives up at `deadline`. A paused writer sleeps
    /// here, so that a queue filling up can cut its pause short (`Outbox::pause`).
    pub fn wait_past_until(&self, seen: Seen, deadline: Instant) {
        let mut rung = self.lock();
        while rung.count == seen.rings {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            rung = self
                .changed
                .wait_timeout(rung, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// A fixed set of doorbells, handed out in turn to new writers.
pub struct Doorbells {
    bells: Vec<Arc<Doorbell>>,
    next: AtomicUsize,
}

impl Doorbells {
    /// `count` doorbells (at least one).
    pub fn new(count: usize) -> Self {
        Doorbells {
            bells: (0..count.max(1))
                .map(|_| Arc::new(Doorbell::new()))
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// The next doorbell in turn, so writers spread evenly over them.
    pub fn assign(&self) -> Arc<Doorbell> {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        Arc::clone(&self.bells[turn % self.bells.len()])
    }

    /// Rings for all every doorbell with lines waiting behind it that has not rung for all
    /// within `delay` (the notice flusher's tick). Returns how many rang.
    pub fn ring_waiting(&self, delay: Duration) -> usize {
        let mut rang = 0;
        for bell in &self.bells {
            let ring = {
                let rung = bell.lock();
                rung.waiting && !rung.rang_within(delay)
            };
            if ring {
                bell.ring(Ring::All);
                rang += 1;
            }
        }
        rang
    }
}

/// Doorbells to ring once a lock is released, each at most once however many of its
/// writers got lines: the saving this module exists for.
#[derive(Default)]
pub struct Rings {
    bells: Vec<(Arc<Doorbell>, Ring)>,
}

impl Rings {
    pub fn add(&mut self, bell: &Arc<Doorbell>, ring: Ring) {
        self.bells.push((Arc::clone(bell), ring));
    }

    /// Rings every doorbell added, once each, for all if any of its rings was for all.
    /// Call with no lock held: each ring is a syscall.
    pub fn ring(mut self) {
        // Sorted by doorbell and, for one doorbell, `All` first: dedup keeps the first.
        self.bells
            .sort_unstable_by_key(|(bell, ring)| (Arc::as_ptr(bell), Reverse(*ring)));
        self.bells.dedup_by(|a, b| Arc::ptr_eq(&a.0, &b.0));
        for (bell, ring) in &self.bells {
            bell.ring(*ring);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (rings of any kind, rings for all) so far.
    fn counts(bell: &Doorbell) -> (u64, u64) {
        let seen = bell.rings();
        (seen.rings, seen.all)
    }

    #[test]
    fn a_ring_before_the_sleep_is_not_lost() {
        let bell = Doorbell::new();
        let seen = bell.rings();
        bell.ring(Ring::Urgent); // lands between "look at the queue" and "sleep"
        bell.wait_past(seen); // must return at once, or this test hangs
        assert_eq!(counts(&bell), (1, 0));
    }

    #[test]
    fn a_ring_wakes_a_sleeping_writer() {
        let bell = Arc::new(Doorbell::new());
        let seen = bell.rings();
        let sleeper = {
            let bell = Arc::clone(&bell);
            std::thread::spawn(move || bell.wait_past(seen))
        };
        std::thread::sleep(Duration::from_millis(20)); // let it fall asleep (not required)
        bell.ring(Ring::All);
        assert!(sleeper.join().expect("woken writer"), "it rang for all");
    }

    #[test]
    fn a_timed_wait_ends_at_a_ring_or_at_its_deadline() {
        let bell = Arc::new(Doorbell::new());
        let started = Instant::now();
        bell.wait_past_until(bell.rings(), started + Duration::from_millis(5));
        assert!(
            started.elapsed() >= Duration::from_millis(5),
            "returned before the deadline"
        );

        let seen = bell.rings();
        let ringer = Arc::clone(&bell);
        let ring = std::thread::spawn(move || ringer.ring(Ring::Urgent));
        let started = Instant::now();
        // Returns at the ring (or this test hangs), not at the deadline an hour away.
        bell.wait_past_until(seen, started + Duration::from_secs(3600));
        assert_ne!(bell.rings(), seen, "woke without a ring");
        ring.join().expect("ringer");
    }

    #[test]
    fn the_writer_learns_whether_any_ring_since_it_looked_was_for_all() {
        // (rings since the look) -> may the writer take its notices?
        let table: [(&[Ring], bool); 4] = [
            (&[Ring::Urgent], false),
            (&[Ring::All], true),
            (&[Ring::Urgent, Ring::All], true),
            (&[Ring::All, Ring::Urgent, Ring::Urgent], true),
        ];
        for (rings, expected) in table {
            let bell = Doorbell::new();
            bell.ring(Ring::All); // an earlier ring, before the look, does not count
            let seen = bell.rings();
            for &ring in rings {
                bell.ring(ring);
            }
            assert_eq!(bell.wait_past(seen), expected, "{rings:?}");
        }
    }

    #[test]
    fn a_line_rings_only_if_the_doorbell_has_not_rung_for_all_within_its_delay() {
        let bell = Doorbell::new();
        assert!(bell.due(Duration::from_secs(60)), "never rang");
        bell.ring(Ring::Urgent);
        assert!(
            bell.due(Duration::from_secs(60)),
            "an urgent ring took no notices"
        );
        bell.ring(Ring::All);
        assert!(!bell.due(Duration::from_secs(60)), "rang for all just now");
        assert!(bell.due(Duration::ZERO));
    }

    #[test]
    fn the_flusher_rings_only_doorbells_with_lines_waiting_past_their_delay() {
        let bells = Doorbells::new(3);
        let (waits, idle, recent) = (bells.assign(), bells.assign(), bells.assign());
        waits.ring(Ring::All);
        assert!(
            !waits.due(Duration::from_secs(60)),
            "a line now waits behind it"
        );
        recent.ring(Ring::All);
        recent.hold(); // a writer slept with lines queued, just after a ring
        assert_eq!(bells.ring_waiting(Duration::from_secs(60)), 0, "too soon");
        waits.ring(Ring::Urgent); // takes no notices, so it does not cover them
        assert_eq!(bells.ring_waiting(Duration::ZERO), 2);
        assert_eq!(counts(&waits), (3, 2));
        assert_eq!(counts(&idle), (0, 0));
        assert_eq!(counts(&recent), (2, 2));
        assert_eq!(bells.ring_waiting(Duration::ZERO), 0, "a ring covers them");
    }

    #[test]
    fn doorbells_are_handed_out_in_turn() {
        let bells = Doorbells::new(3);
        let handed: Vec<_> = (0..7).map(|_| bells.assign()).collect();
        for (i, bell) in handed.iter().enumerate() {
            for (j, other) in handed.iter().enumerate() {
                assert_eq!(
                    Arc::ptr_eq(bell, other),
                    i % 3 == j % 3,
                    "bells {i} and {j}"
                );
            }
        }
    }

    #[test]
    fn rings_rings_each_doorbell_once_for_all_if_any_ring_was() {
        let bells = Doorbells::new(3);
        let (a, b, c) = (bells.assign(), bells.assign(), bells.assign());
        let mut rings = Rings::default();
        let added = [
            (&a, Ring::Urgent),
            (&b, Ring::Urgent),
            (&a, Ring::All),
            (&a, Ring::Urgent),
            (&b, Ring::Urgent),
            (&c, Ring::All),
        ];
        for (bell, ring) in added {
            rings.add(bell, ring);
        }
        rings.ring();
        assert_eq!(
            (counts(&a), counts(&b), counts(&c)),
            ((1, 1), (1, 0), (1, 1))
        );
    }
}
