//! Starting a thread without ever aborting the process.
//!
//! This module owns the server's thread budget: how many threads may live at once, set at
//! start from the machine's limits (`capacity.rs`), and the one way to start a client
//! thread, which counts against it. It must not decide what the threads do.
//!
//! Why a budget, when `thread::Builder::spawn` already returns an error: not every failure
//! comes back as one. A new thread also maps a signal stack for itself; if the kernel's
//! limit on memory mappings (`vm.max_map_count`) is reached just then, Rust's runtime
//! aborts the whole process, and every user is cut off. So the server never asks the
//! kernel for more threads than the limits it read at start allow.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};

use crate::limits::CLIENT_THREAD_STACK;

/// The budget every client thread (reader or writer) counts against.
pub static CLIENT_THREADS: Budget = Budget::new();

/// A count of live threads and the most that may live at once.
pub struct Budget {
    live: AtomicUsize,
    most: AtomicUsize,
}

impl Budget {
    /// No thread alive; unlimited until [`Budget::set`] is called.
    pub const fn new() -> Budget {
        Budget {
            live: AtomicUsize::new(0),
            most: AtomicUsize::new(usize::MAX),
        }
    }

    /// Sets how many threads may be alive at once.
    pub fn set(&self, threads: usize) {
        self.most.store(threads, Ordering::Relaxed);
    }

    /// Threads alive now.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Starts `body` on a new thread named `name`, with the small stack every client
    /// thread gets, if the budget allows. The error says why not; the caller refuses or
    /// cuts that one client and the server goes on.
    pub fn spawn<F>(&'static self, name: &str, body: F) -> io::Result<JoinHandle<()>>
    where
        F: FnOnce() + Send + 'static,
    {
        let taken = self.live.fetch_add(1, Ordering::Relaxed);
        if taken >= self.most.load(Ordering::Relaxed) {
            self.live.fetch_sub(1, Ordering::Relaxed);
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "thread budget used up",
            ));
        }
        let spawned = thread::Builder::new()
            .name(name.to_string())
            .stack_size(CLIENT_THREAD_STACK)
            .spawn(move || {
                // Counted out however the thread ends, a panic included.
                let _alive = Alive(self);
                body();
            });
        if spawned.is_err() {
            self.live.fetch_sub(1, Ordering::Relaxed);
        }
        spawned
    }
}

impl Default for Budget {
    fn default() -> Budget {
        Budget::new()
    }
}

/// Held by every thread a [`Budget`] started, for its whole life.
struct Alive(&'static Budget);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_spawn_past_the_budget_is_refused_and_a_finished_thread_frees_its_place() {
        static BUDGET: Budget = Budget::new();
        BUDGET.set(1);
        let (release, wait) = mpsc::channel::<()>();
        let first = BUDGET
            .spawn("first", move || {
                let _ = wait.recv_timeout(Duration::from_secs(10));
            })
            .expect("within the budget");
        assert_eq!(BUDGET.live(), 1);
        let refused = BUDGET.spawn("second", || {});
        assert!(refused.is_err(), "a second thread past a budget of one");
        assert_eq!(BUDGET.live(), 1, "a refused spawn is not counted");
        drop(release);
        first.join().expect("first thread");
        assert_eq!(BUDGET.live(), 0);
        BUDGET
            .spawn("third", || panic!("a panicking thread is counted out too"))
            .expect("room again")
            .join()
            .expect_err("it panicked");
        assert_eq!(BUDGET.live(), 0);
    }
}
