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
//! A doorbell also remembers whether a notice waits behind it for its next ring (a join
//! that did not ring, because the doorbell rang moments ago): the notice flusher rings
//! just those doorbells, and never has to visit every user.
//!
//! [`WRITER_DOORBELLS`]: crate::limits::WRITER_DOORBELLS

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

#[derive(Default)]
struct Rung {
    count: u64,
    /// When it last rang: notices that can wait for the next ring do not ring again
    /// within their delay (see `outbox::Urgency::Within`).
    at: Option<Instant>,
    /// Some writer behind this doorbell has lines that wait for its next ring (notices
    /// that did not ring themselves). The notice flusher rings only such doorbells, so an
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
    pub fn rings(&self) -> u64 {
        self.lock().count
    }

    /// Whether a line that may wait up to `delay` should ring now: true if the doorbell
    /// has not rung within `delay`. If not, the doorbell remembers that a line waits, and
    /// [`Doorbells::ring_waiting`] rings it once the delay has passed.
    pub fn due(&self, delay: Duration) -> bool {
        let mut rung = self.lock();
        let rang_lately = rung.rang_within(delay);
        if rang_lately {
            rung.waiting = true;
        }
        !rang_lately
    }

    /// Remembers that a writer behind this doorbell went to sleep with lines queued, to be
    /// taken at the next ring.
    pub fn hold(&self) {
        self.lock().waiting = true;
    }

    /// Wakes every writer sleeping on this doorbell. One syscall however many sleep.
    pub fn ring(&self) {
        let mut rung = self.lock();
        rung.count = rung.count.wrapping_add(1);
        rung.at = Some(Instant::now());
        rung.waiting = false;
        drop(rung);
        self.changed.notify_all();
    }

    /// Sleeps until the doorbell has rung since [`Doorbell::rings`] returned `seen`;
    /// returns at once if it already has.
    pub fn wait_past(&self, seen: u64) {
        let mut rung = self.lock();
        while rung.count == seen {
            rung = self
                .changed
                .wait(rung)
                .unwrap_or_else(PoisonError::into_inner);
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

    /// Rings every doorbell with lines waiting behind it that has not rung within `delay`
    /// (the notice flusher's tick). Returns how many rang.
    pub fn ring_waiting(&self, delay: Duration) -> usize {
        let mut rang = 0;
        for bell in &self.bells {
            let ring = {
                let rung = bell.lock();
                rung.waiting && !rung.rang_within(delay)
            };
            if ring {
                bell.ring();
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
    bells: Vec<Arc<Doorbell>>,
}

impl Rings {
    pub fn add(&mut self, bell: &Arc<Doorbell>) {
        self.bells.push(Arc::clone(bell));
    }

    /// Rings every doorbell added, once each. Call with no lock held: each ring is a syscall.
    pub fn ring(mut self) {
        self.bells.sort_unstable_by_key(Arc::as_ptr);
        self.bells.dedup_by(|a, b| Arc::ptr_eq(a, b));
        for bell in &self.bells {
            bell.ring();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_before_the_sleep_is_not_lost() {
        let bell = Doorbell::new();
        let seen = bell.rings();
        bell.ring(); // lands between "look at the queue" and "sleep"
        bell.wait_past(seen); // must return at once, or this test hangs
        assert_eq!(bell.rings(), seen + 1);
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
        bell.ring();
        sleeper.join().expect("woken writer");
    }

    #[test]
    fn a_line_rings_only_if_the_doorbell_has_not_rung_within_its_delay() {
        let bell = Doorbell::new();
        assert!(bell.due(Duration::from_secs(60)), "never rang");
        bell.ring();
        assert!(!bell.due(Duration::from_secs(60)), "rang just now");
        assert!(bell.due(Duration::ZERO));
    }

    #[test]
    fn the_flusher_rings_only_doorbells_with_lines_waiting_past_their_delay() {
        let bells = Doorbells::new(3);
        let (waits, idle, recent) = (bells.assign(), bells.assign(), bells.assign());
        waits.ring();
        assert!(
            !waits.due(Duration::from_secs(60)),
            "a line now waits behind it"
        );
        recent.ring();
        recent.hold(); // a writer slept with lines queued, just after a ring
        assert_eq!(bells.ring_waiting(Duration::from_secs(60)), 0, "too soon");
        assert_eq!(bells.ring_waiting(Duration::ZERO), 2);
        assert_eq!((waits.rings(), idle.rings(), recent.rings()), (2, 0, 2));
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
    fn rings_rings_each_doorbell_once() {
        let bells = Doorbells::new(2);
        let (a, b) = (bells.assign(), bells.assign());
        let mut rings = Rings::default();
        for bell in [&a, &b, &a, &a, &b] {
            rings.add(bell);
        }
        rings.ring();
        assert_eq!((a.rings(), b.rings()), (1, 1));
    }
}
