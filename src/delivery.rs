//! What a delivery leaves to do once the registry lock is released.
//!
//! This module owns the [`Delivery`] a registry method returns: the queues its sender now
//! writes (it claimed them, see `outbox.rs`), the writer threads to wake, the clients to
//! cut, and the crowded queues to wait for. Each of those is a syscall, so none may happen
//! under the lock; the registry only records them, and the sender's thread calls
//! [`Delivery::complete`] after unlocking. It must not decide who receives what.

use std::sync::Arc;
use std::time::Instant;

use crate::limits::CROWDED_PATIENCE;
use crate::log;
use crate::outbox::{Outbox, PushError, Pushed};

/// What one delivery under the registry lock leaves to do once the lock is released: the
/// queues its sender now writes, the writer threads to wake, the clients to cut. Each is a
/// syscall, so none may happen under the lock.
#[must_use = "call complete() once the registry lock is released"]
#[derive(Default)]
pub struct Delivery {
    /// In the order the lines were queued, so the receivers get them in that order.
    to_write: Vec<Arc<Outbox>>,
    to_wake: Vec<Arc<Outbox>>,
    /// Queues that overflowed, with their user's name for the log.
    to_cut: Vec<(String, Arc<Outbox>)>,
    /// Queues whose writer threads this sender waits for (see [`Pushed::Crowded`]).
    to_wait: Vec<Arc<Outbox>>,
}

impl Delivery {
    /// A delivery to up to `receivers` clients, sized at once: one allocation for a
    /// broadcast to 10,000 clients instead of fourteen growing ones.
    pub fn for_receivers(receivers: usize) -> Delivery {
        Delivery {
            to_write: Vec::with_capacity(receivers),
            to_wake: Vec::new(),
            to_cut: Vec::new(),
            to_wait: Vec::new(),
        }
    }

    /// Records what pushing to `name`'s `outbox` left to do.
    pub fn note(&mut self, name: &str, outbox: &Arc<Outbox>, pushed: Result<Pushed, PushError>) {
        match pushed {
            Ok(Pushed::Queued) | Err(PushError::Closed) => {}
            Ok(Pushed::Claimed) => self.to_write.push(Arc::clone(outbox)),
            Ok(Pushed::Wake) => self.to_wake.push(Arc::clone(outbox)),
            Ok(Pushed::Crowded) => self.to_wait.push(Arc::clone(outbox)),
            Err(PushError::Full) => self.to_cut.push((name.to_string(), Arc::clone(outbox))),
        }
    }

    /// Finishes the delivery, with no lock held, on the thread of the client that caused
    /// it: cuts and wake-ups first, since they are quick and let others go on, then this
    /// thread's own writes, one per claimed client, and last the wait for crowded queues.
    pub fn complete(mut self) {
        for (name, outbox) in self.to_cut.drain(..) {
            log::warn(
                "sendq_exceeded",
                &[("user", &name), ("action", &"disconnect")],
            );
            outbox.hang_up();
        }
        for outbox in self.to_wake.drain(..) {
            outbox.wake();
        }
        // Popped one at a time, so if a write panics, `drop` still gives up the rest.
        self.to_write.reverse();
        let mut buf = Vec::new();
        while let Some(outbox) = self.to_write.pop() {
            outbox.write_queue(&mut buf);
        }
        let deadline = Instant::now() + CROWDED_PATIENCE;
        for outbox in self.to_wait.drain(..) {
            outbox.wait_uncrowded(deadline);
        }
    }
}

impl Drop for Delivery {
    /// Reached with claims left only when `complete` was never called or panicked: give
    /// them up without I/O (this may run under the lock), so no client is left unwritable.
    fn drop(&mut self) {
        for outbox in &self.to_write {
            outbox.abandon();
        }
    }
}
