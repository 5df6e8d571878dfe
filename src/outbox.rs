//! The outbound queue of one client (an IRC server's "SendQ"), and the writer that drains it.
//!
//! This module owns the only path from the server to a client's socket. Anyone may *push* a
//! line, which never blocks and never touches the socket. The client's own writer thread
//! writes, and, when that writer is asleep and idle, the sender who pushed a chat line may
//! write it itself once it holds no lock ([`Outbox::write_through`]); the queue says who
//! holds the socket, so the two never write at once. It must not know about users, the
//! registry or the protocol: it moves `Arc<str>` entries of whole lines (one line, or a
//! burst of public lines pushed together), counted in bytes against a fixed budget.
//!
//! Why a queue at all: a broadcast happens under the registry lock, and a socket write can
//! block for as long as the peer likes. Pushing to a bounded queue is a few nanoseconds, so
//! the lock is held only for memory work, and one stalled client can never delay the others.
//! When a queue overflows, its client has stopped reading; it is disconnected, not waited for.
//! The one wait is the other way round: a queue over half full whose writer merely has not
//! had the CPU yet makes the *sender* wait after its delivery ([`Outbox::wait_uncrowded`],
//! with no lock held), so a fast sender cannot overflow the queue of a client that reads.
//!
//! Waking a sleeping writer is the expensive part (a syscall, and a context switch), so
//! pushes under the registry lock only *report* that a wake-up is due (`push_deferred`);
//! the caller rings the writer's doorbell after unlocking (`doorbell.rs`: in a large
//! server writers share doorbells, so a broadcast rings each doorbell once). In a large
//! room, notices ([`Urgency::Within`]) and busy writers (`set_writer_pace`) trade a few
//! milliseconds of delay for far fewer wake-ups (a writer's pause ends early once its queue
//! holds a batch worth a write). Where a writer would not batch anyway (it is idle), the
//! sender skips the wake-up and writes: a broadcast to 10,000 quiet users is then 10,000
//! writes by one thread instead of 10,000 context switches as well. A sender's write waits
//! at most `limits::SENDER_PATIENCE` for a full socket, and a client that made it wait once
//! is written to by its writer only from then on.

use std::collections::VecDeque;
use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::doorbell::{Doorbell, Ring};
use crate::stats;

/// How the transport cuts a connection (for TCP: `shutdown(Both)`). Calling it wakes the
/// client's blocked reader and writer, so both threads leave promptly.
pub type Hangup = Box<dyn Fn() + Send + Sync>;

/// How a *sender* writes to the client's socket itself (see [`Outbox::write_through`]):
/// one write that waits at most [`SENDER_PATIENCE`] for the client's kernel to take
/// `bytes`, returning how many it took (for TCP: the socket's write timeout is lowered
/// around one `write`). A timeout may come back as an error of kind `WouldBlock` or
/// `TimedOut`: nothing was taken.
///
/// [`SENDER_PATIENCE`]: crate::limits::SENDER_PATIENCE
pub type SenderWrite = Box<dyn Fn(&[u8]) -> std::io::Result<usize> + Send + Sync>;

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The queue is over its byte budget: the client stopped reading. The outbox is now
    /// aborted; whoever pushed must call [`Outbox::hang_up`] once it holds no lock.
    Full,
    /// The connection is closing or closed; the line is dropped.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Lines are accepted and written.
    Open,
    /// No more lines; the writer sends what is queued, then hangs up (a polite goodbye).
    Closing,
    /// Hang up now; whatever is queued is dropped.
    Aborted,
}

struct Queue {
    /// Entries waiting for the socket, each one or more whole lines ending in `\n`.
    entries: VecDeque<Arc<str>>,
    bytes: usize,
    state: State,
    /// Entries ever queued, and entries ever written to the socket: together they tell a
    /// session when something it queued has really left (see [`Outbox::wait_written`]).
    pushed: u64,
    written: u64,
    /// The writer sleeps on its doorbell waiting for lines. Only then does a push wake it:
    /// a wake-up is a syscall, and one per line per receiver was the server's largest cost.
    writer_waiting: bool,
    /// A wake-up was decided for the sleeping writer: its doorbell has rung or is about
    /// to, and that ring covers every line queued until the writer takes them.
    wake_requested: bool,
    /// Some queued line may not wait (chat, a reply): the writer takes the queue as soon as
    /// it can. Without one, a writer that just wrote does not come back for notices but
    /// sleeps, and they wait for the next ring of its doorbell (see [`Urgency::Within`]);
    /// otherwise, in a sign-in storm, a stream of joins would keep every writer writing.
    urgent: bool,
    /// When the writer's current write began, while one is in progress.
    writing_since: Option<Instant>,
    /// Threads other than the writer sleeping on `changed` (in `push_wait` or
    /// `wait_written`).
    waiters: usize,
    /// A sender is writing this queue's lines to the socket itself (see
    /// [`Outbox::write_through`]); the writer leaves the socket alone until it is done.
    sender_writing: bool,
    /// A sender's write once ran out of patience: the client's kernel buffers were full.
    /// From then on only the writer writes to this client, so one client costs senders at
    /// most one [`SENDER_PATIENCE`](crate::limits::SENDER_PATIENCE) in its lifetime.
    slow: bool,
    /// When the last write to the socket ended, by the writer or a sender.
    last_write: Option<Instant>,
    /// What a sender's write left unwritten, and how many queue entries it finishes: the writer
    /// sends it before anything else.
    unsent: Vec<u8>,
    unsent_entries: u64,
    /// The writer is in its pause after a write (see `writer_pause`), gathering lines for
    /// its next one. A push that fills the queue to [`Queue::batch_is_full`] cuts the pause
    /// short (`pause_cut`): by then a bigger batch saves nothing, and waiting longer would
    /// only hold up senders (a queue over half full makes them wait, see `short_of_cpu`).
    pausing: bool,
    pause_cut: bool,
}

/// A line was queued by [`Outbox::push_deferred`]; what the caller must do about it once it
/// holds no lock.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// The writer sleeps: ring [`Outbox::doorbell`] this way (for a chat line
    /// [`Ring::Urgent`], for a notice [`Ring::All`]).
    pub wake: Option<Ring>,
    /// The queue is over half full and its writer has fallen behind only for want of the
    /// CPU (see `Queue::short_of_cpu`). The sender should wait for it before sending more
    /// ([`Outbox::wait_uncrowded`]), or a burst from a fast sender overflows queues whose
    /// clients read fine but whose writers were not scheduled. (A writer stuck in a write
    /// has a client that stopped reading; waiting for it would only slow everyone down
    /// until that client is cut.)
    pub crowded: bool,
    /// The writer sleeps and has been idle for a while: rather than waking it, the caller
    /// writes the queue itself ([`Outbox::write_through`]) once it holds no lock.
    pub write_through: bool,
}

impl Queue {
    /// Whether the writer should take the queued lines now: after its doorbell rang for
    /// all ([`Ring::All`]), anything queued; otherwise (after a write, or woken by an
    /// urgent ring for a neighbour) only if some line may not wait, or to send the last
    /// lines before closing.
    fn ready_for_writer(&self, rang: bool) -> bool {
        let now = rang || self.urgent || self.state == State::Closing;
        now && !self.is_empty()
    }

    /// Nothing left to write: no lines, and no rest of a sender's write.
    fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.unsent.is_empty()
    }

    /// Whether a sender with a chat line for this queue should write it to the socket
    /// itself. Only to a writer asleep with no ring on its way, and idle: its last write
    /// ended at least two paces ago, so it would not pause to batch (see `writer_pause`).
    /// That saves the wake-up and the context switch that cost as much as the write. A
    /// busy writer batches lines from many senders into one write, which costs less than a
    /// write by each of them.
    fn sender_may_write(&self, pace: Duration) -> bool {
        // The clock last: every chat line pushed asks, and reading it is the dearest test.
        let idle = || self.last_write.is_none_or(|at| at.elapsed() >= pace * 2);
        self.writer_waiting && !self.wake_requested && !self.sender_writing && !self.slow && idle()
    }

    /// Moves every queued entry, after any rest of a sender's write, into `buf` for one
    /// write, which starts now. Returns the entries that write finishes.
    fn take_all(&mut self, buf: &mut Vec<u8>) -> u64 {
        // One allocation for the batch, not one per doubling (a sleeping writer keeps its
        // buffer small, see `WRITER_BUF_KEEP`).
        buf.reserve(self.unsent.len() + self.bytes);
        buf.append(&mut self.unsent);
        let entries = std::mem::take(&mut self.unsent_entries) + self.entries.len() as u64;
        for entry in self.entries.drain(..) {
            buf.extend_from_slice(entry.as_bytes());
        }
        self.bytes = 0;
        self.writing_since = Some(Instant::now());
        entries
    }

    /// True when the current write has taken long enough that the client, not the CPU,
    /// is what holds it up.
    fn writer_stuck(&self) -> bool {
        self.writing_since
            .is_some_and(|since| since.elapsed() > WRITER_STUCK_AFTER)
    }

    /// Over half of `limit_bytes` while the writer is neither stuck in a write (its client
    /// is slow) nor asleep holding notices on purpose (they go with its doorbell's next
    /// ring for all): the writer is behind only because it has not had the CPU.
    fn short_of_cpu(&self, limit_bytes: usize) -> bool {
        let holding_notices = self.writer_waiting && !self.wake_requested && !self.urgent;
        self.bytes > limit_bytes / 2 && !self.writer_stuck() && !holding_notices
    }

    /// Whether the queue holds enough for a write worth a wake-up: a quarter of the budget,
    /// well before senders have to wait for room (over half).
    fn batch_is_full(&self, limit_bytes: usize) -> bool {
        self.bytes >= limit_bytes / 4
    }

    fn append(&mut self, line: Arc<str>) {
        self.bytes += line.len();
        self.pushed += 1;
        self.entries.push_back(line);
    }
}

/// How soon a queued line must reach the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// Chat and replies: wake a sleeping writer at once.
    Now,
    /// Join and leave notices: wake the writer at once only if its doorbell has not rung
    /// for all within the given delay; otherwise the notice waits for the doorbell's next
    /// ring for all, which the notice flusher makes sure comes (`Doorbells::ring_waiting`).
    /// In a sign-in storm every join goes to every user; this turns one wake-up per join
    /// per user into a few per second per doorbell. (Per doorbell, not per writer: a ring
    /// for all wakes all the writers sharing it, and each takes its queue.)
    Within(Duration),
}

/// A bounded, byte-counted queue of lines for one client.
pub struct Outbox {
    queue: Mutex<Queue>,
    /// Signalled for the threads other than the writer: room was made, lines were
    /// written, or the connection was cut.
    changed: Condvar,
    /// What the writer sleeps on while the queue is empty; maybe shared with other writers.
    doorbell: Arc<Doorbell>,
    limit_bytes: usize,
    hangup: Hangup,
    /// Set when senders may write to the socket themselves (see [`Outbox::write_through`]).
    sender_write: Option<SenderWrite>,
}

impl Outbox {
    /// An open outbox holding at most `limit_bytes` of unwritten lines, with a doorbell of
    /// its own.
    pub fn new(limit_bytes: usize, hangup: Hangup) -> Self {
        Outbox::with_doorbell(limit_bytes, hangup, Arc::new(Doorbell::new()))
    }

    /// Like [`Outbox::new`], but its writer sleeps on `doorbell`, which other writers may
    /// share (see `doorbell.rs`).
    pub fn with_doorbell(limit_bytes: usize, hangup: Hangup, doorbell: Arc<Doorbell>) -> Self {
        Outbox {
            queue: Mutex::new(Queue {
                entries: VecDeque::new(),
                bytes: 0,
                state: State::Open,
                pushed: 0,
                written: 0,
                writer_waiting: false,
                wake_requested: false,
                urgent: false,
                writing_since: None,
                waiters: 0,
                sender_writing: false,
                slow: false,
                last_write: None,
                unsent: Vec::new(),
                unsent_entries: 0,
                pausing: false,
                pause_cut: false,
            }),
            changed: Condvar::new(),
            doorbell,
            limit_bytes,
            hangup,
            sender_write: None,
        }
    }

    /// Lets senders write to the client's socket themselves, through `write`, when its
    /// writer is idle (see [`Outbox::write_through`]).
    pub fn with_sender_write(mut self, write: SenderWrite) -> Self {
        self.sender_write = Some(write);
        self
    }

    /// Never held across I/O, so a poisoned queue is still consistent: recover it.
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `line` and wakes the writer if it sleeps, or, if that writer is idle, writes
    /// the line at once on this thread (see [`Outbox::write_through`]: at most
    /// `SENDER_PATIENCE` of waiting). On overflow the outbox aborts itself (see
    /// [`PushError::Full`]); the caller hangs up after releasing its locks. Never call it
    /// holding the registry lock.
    pub fn push(&self, line: Arc<str>) -> Result<(), PushError> {
        let pushed = self.push_deferred(line, Urgency::Now);
        match pushed {
            Ok(Pushed {
                write_through: true,
                ..
            }) => self.write_through(&mut Vec::new()),
            Ok(Pushed { wake: None, .. }) => {}
            _ => self.wake(),
        }
        pushed.map(|_| ())
    }

    /// Queues `line` like [`Outbox::push`] but leaves waking the writer to the caller (see
    /// [`Pushed`]). A thread woken under the registry lock can preempt the lock holder,
    /// and every other client then queues on the lock (docs/PERFORMANCE.md).
    pub fn push_deferred(&self, line: Arc<str>, urgency: Urgency) -> Result<Pushed, PushError> {
        self.push_all_deferred([line], urgency)
    }

    /// Queues `lines`, in order, under one lock, like [`Outbox::push_deferred`]: the notices
    /// a large room kept for a tick cost each receiver one lock and at most one wake-up,
    /// not one per notice. If a line does not fit, the outbox aborts as for a single line.
    pub fn push_all_deferred(
        &self,
        lines: impl IntoIterator<Item = Arc<str>>,
        urgency: Urgency,
    ) -> Result<Pushed, PushError> {
        let mut queue = self.lock();
        if queue.state != State::Open {
            return Err(PushError::Closed);
        }
        let pushed_before = queue.pushed;
        for line in lines {
            if queue.bytes + line.len() > self.limit_bytes {
                queue.state = State::Aborted;
                stats::record_queue_drop();
                return Err(PushError::Full);
            }
            queue.append(line);
        }
        if queue.pushed == pushed_before {
            return Ok(Pushed::default());
        }
        queue.urgent |= urgency == Urgency::Now;
        let crowded = queue.short_of_cpu(self.limit_bytes);
        if queue.sender_writing {
            // That sender rings the writer for whatever it leaves behind.
            return Ok(Pushed {
                crowded,
                ..Pushed::default()
            });
        }
        if urgency == Urgency::Now
            && self.sender_write.is_some()
            && queue.sender_may_write(writer_pace())
        {
            queue.sender_writing = true;
            return Ok(Pushed {
                write_through: true,
                ..Pushed::default()
            });
        }
        let wake = self.wake_due(&mut queue, urgency);
        Ok(Pushed {
            wake,
            crowded,
            write_through: false,
        })
    }

    /// Whether a line of this urgency, just queued, should wake the writer now, and how; if
    /// so, the wake-up is recorded. Only a sleeping writer needs one, and only one: a ring
    /// already on its way covers this line too (the writer then takes its whole queue).
    fn wake_due(&self, queue: &mut Queue, urgency: Urgency) -> Option<Ring> {
        if queue.pausing && !queue.pause_cut && queue.batch_is_full(self.limit_bytes) {
            queue.pause_cut = true;
            return Some(Ring::Urgent);
        }
        if !queue.writer_waiting || queue.wake_requested {
            return None;
        }
        let ring = match urgency {
            Urgency::Now => Ring::Urgent,
            Urgency::Within(delay) if self.doorbell.due(delay) => Ring::All,
            Urgency::Within(_) => return None,
        };
        queue.wake_requested = true;
        Some(ring)
    }

    /// The doorbell this outbox's writer sleeps on.
    pub fn doorbell(&self) -> &Arc<Doorbell> {
        &self.doorbell
    }

    /// Wakes the writer to look at the queue again. Called with the queue unlocked, so the
    /// woken thread does not at once block on it.
    pub fn wake(&self) {
        self.doorbell.ring(Ring::Urgent);
    }

    /// Queues `line`, waiting up to `patience` for room. For replies this client asked for
    /// (a long user list, its stored messages): they may wait for the client, since only
    /// the client itself is delayed. Must not be called while holding the registry lock.
    pub fn push_wait(&self, line: Arc<str>, patience: Duration) -> Result<(), PushError> {
        let deadline = Instant::now() + patience;
        let mut queue = self.lock();
        loop {
            if queue.state != State::Open {
                return Err(PushError::Closed);
            }
            // A line bigger than the whole budget is let through alone rather than never.
            if queue.bytes + line.len() <= self.limit_bytes || queue.entries.is_empty() {
                queue.append(line);
                queue.urgent = true;
                queue.wake_requested = true;
                drop(queue);
                self.wake();
                return Ok(());
            }
            if Instant::now() >= deadline {
                queue.state = State::Aborted;
                stats::record_queue_drop();
                drop(queue);
                self.changed.notify_all();
                self.wake();
                return Err(PushError::Full);
            }
            queue = self.wait_for_change(queue, deadline);
        }
    }

    /// Stop accepting lines; the writer sends what is queued and then hangs up.
    pub fn close(&self) {
        self.close_deferred();
        self.wake();
    }

    /// Like [`Outbox::close`], but leaves waking the writer to the caller (under the
    /// registry lock, where no syscall may happen).
    pub fn close_deferred(&self) {
        let mut queue = self.lock();
        if queue.state == State::Open {
            queue.state = State::Closing;
        }
    }

    /// Drop everything and cut the connection now. Performs a syscall: never call it while
    /// holding the registry lock.
    pub fn hang_up(&self) {
        let writer_sleeps = {
            let mut queue = self.lock();
            queue.state = State::Aborted;
            queue.entries.clear();
            queue.unsent.clear();
            queue.bytes = 0;
            // Asleep for lines or in its pause: either way it leaves once rung.
            queue.writer_waiting || queue.pausing
        };
        self.changed.notify_all();
        // Not when the writer itself hangs up: others may share its doorbell.
        if writer_sleeps {
            self.wake();
        }
        (self.hangup)();
    }

    /// Waits until the queue is no longer crowded (see [`Pushed::crowded`]), or `deadline`.
    /// Called by a sender after a delivery, with no lock held: only the sender waits, and
    /// its client is slowed down by TCP instead of a reader's queue overflowing. Never
    /// longer than until the writer's current write counts as stuck, so a client that
    /// stopped reading delays a sender once, by at most `WRITER_STUCK_AFTER`. Returns
    /// false if `deadline` came first.
    pub fn wait_uncrowded(&self, deadline: Instant) -> bool {
        let mut queue = self.lock();
        while queue.state == State::Open && queue.short_of_cpu(self.limit_bytes) {
            let stuck_at = queue.writing_since.map(|since| since + WRITER_STUCK_AFTER);
            let until = stuck_at.map_or(deadline, |at| at.min(deadline));
            if Instant::now() >= until {
                return Instant::now() < deadline;
            }
            queue = self.wait_for_change(queue, until);
        }
        true
    }

    /// A mark for "everything queued so far", to pass to [`Outbox::wait_written`].
    pub fn mark(&self) -> u64 {
        self.lock().pushed
    }

    /// Waits until every line queued before `mark` was written to the transport. False if
    /// the connection ended first or `patience` ran out. Used before deleting stored mail,
    /// so a message is never deleted while it could still be lost in the queue.
    pub fn wait_written(&self, mark: u64, patience: Duration) -> bool {
        let deadline = Instant::now() + patience;
        let mut queue = self.lock();
        loop {
            if queue.written >= mark {
                return true;
            }
            if queue.state == State::Aborted || Instant::now() >= deadline {
                return false;
            }
            queue = self.wait_for_change(queue, deadline);
        }
    }

    /// Sleeps until the queue changes or `deadline` passes, counted among the waiters so
    /// the writer knows someone needs its signal.
    fn wait_for_change<'q>(
        &self,
        mut queue: MutexGuard<'q, Queue>,
        deadline: Instant,
    ) -> MutexGuard<'q, Queue> {
        queue.waiters += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let (mut queue, _) = self
            .changed
            .wait_timeout(queue, left)
            .unwrap_or_else(PoisonError::into_inner);
        queue.waiters -= 1;
        queue
    }

    /// For the writer: `entries` more queue entries reached the transport.
    fn record_written(&self, entries: u64) {
        let mut queue = self.lock();
        queue.written += entries;
        queue.writing_since = None;
        queue.last_write = Some(Instant::now());
        let anyone_waits = queue.waiters > 0;
        drop(queue);
        if anyone_waits {
            self.changed.notify_all();
        }
    }

    /// For a sender told to by [`Pushed::write_through`], with no lock held: writes
    /// everything queued to the socket on the caller's thread. To a writer idle on a quiet
    /// queue, a line costs a wake-up and a context switch on top of the write; in a
    /// broadcast to 10,000 users that was a third of the server's time. If the client's
    /// kernel does not take it all within the sender's patience, the rest goes to the
    /// writer, and this outbox is marked slow: no sender writes to it again. `buf` is
    /// scratch space, left empty.
    pub fn write_through(&self, buf: &mut Vec<u8>) {
        let Some(write) = &self.sender_write else {
            return;
        };
        let entries = {
            let mut queue = self.lock();
            if !queue.sender_writing {
                return;
            }
            queue.urgent = false;
            queue.take_all(buf)
        };
        let result = write(buf);
        let written = match result {
            Ok(n) => n.min(buf.len()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => 0,
            Err(_) => {
                buf.clear();
                self.lock().sender_writing = false;
                self.hang_up();
                return;
            }
        };
        stats::record_bytes_out(written);
        let ring = self.finish_sender_write(entries, &buf[written..]);
        buf.clear();
        if ring {
            self.doorbell.ring(Ring::All);
        }
    }

    /// Hands the socket back to the writer after a sender's write that left `rest`
    /// unwritten. Returns whether to ring the writer: it sleeps, and something is due (the
    /// rest, lines queued meanwhile, or a close).
    fn finish_sender_write(&self, entries: u64, rest: &[u8]) -> bool {
        let mut queue = self.lock();
        queue.sender_writing = false;
        queue.writing_since = None;
        queue.last_write = Some(Instant::now());
        if rest.is_empty() {
            queue.written += entries;
        } else if queue.state != State::Aborted {
            queue.slow = true;
            queue.unsent.extend_from_slice(rest);
            queue.unsent_entries = entries;
            queue.bytes += rest.len();
            queue.urgent = true;
        }
        let due = !queue.is_empty() || queue.state != State::Open;
        let ring = due && queue.writer_waiting && !queue.wake_requested;
        queue.wake_requested |= ring;
        let anyone_waits = queue.waiters > 0;
        drop(queue);
        if anyone_waits {
            self.changed.notify_all();
        }
        ring
    }

    /// For the writer: pauses for up to `pause` after a write, so that the lines arriving
    /// meanwhile go out in one batch, but no longer than until the queue holds a full
    /// batch (see `Queue::pausing`) or is closed. Sleeps on the doorbell, which the push
    /// that fills the batch rings.
    fn pause(&self, pause: Duration) {
        let deadline = Instant::now() + pause;
        loop {
            let seen = self.doorbell.rings();
            {
                let mut queue = self.lock();
                let over = queue.pause_cut || queue.state != State::Open;
                if over || Instant::now() >= deadline {
                    queue.pausing = false;
                    queue.pause_cut = false;
                    return;
                }
                queue.pausing = true;
            }
            // A shared doorbell also rings for the neighbours' lines: look again.
            self.doorbell.wait_past_until(seen, deadline);
        }
    }

    /// True once the outbox was aborted (overflow or hang-up).
    pub fn is_aborted(&self) -> bool {
        self.lock().state == State::Aborted
    }

    /// For the writer: waits for lines, then moves *all* queued lines into `buf`, so one
    /// `write` sends them together. Returns what it took, or `None` when the writer should
    /// stop.
    fn take_batch(&self, buf: &mut Vec<u8>) -> Option<Batch> {
        let mut rang = false;
        let mut queue = loop {
            // Read the doorbell before looking at the queue: a line pushed after the look
            // rings after this read, so `wait_past` then returns at once.
            let seen = self.doorbell.rings();
            let mut queue = self.lock();
            match queue.state {
                State::Aborted => return None,
                // A sender holds the socket; it rings when it is done.
                _ if queue.sender_writing => {}
                State::Closing if queue.is_empty() => return None,
                _ if queue.ready_for_writer(rang) => break queue,
                _ => {}
            }
            queue.writer_waiting = true;
            let lines_wait = !queue.is_empty();
            drop(queue);
            if lines_wait {
                // Notices only, just after a write: they wait for the doorbell's next ring
                // for all, which the notice flusher makes sure comes.
                self.doorbell.hold();
            }
            // About to sleep: an idle writer keeps a small buffer. A busy one finds lines
            // queued after its pause, never gets here, and keeps the buffer it needs.
            if buf.capacity() > WRITER_BUF_KEEP {
                buf.shrink_to(WRITER_BUF_KEEP);
            }
            // May ring for another writer's lines (a shared doorbell): after a ring for
            // all this writer takes its own lines early; after an urgent ring for a
            // neighbour it finds nothing due and sleeps again, leaving its notices queued.
            rang |= self.doorbell.wait_past(seen);
        };
        queue.writer_waiting = false;
        queue.wake_requested = false;
        let urgent = std::mem::take(&mut queue.urgent);
        let batch = Batch {
            entries: queue.take_all(buf),
            urgent,
        };
        // Room was made: wake anyone in `push_wait`.
        let anyone_waits = queue.waiters > 0;
        drop(queue);
        if anyone_waits {
            self.changed.notify_all();
        }
        Some(batch)
    }
}

/// What the writer took from its queue for one `write`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Batch {
    /// Queue entries in it: lines, or bursts of lines pushed together.
    entries: u64,
    /// Some line in it may not wait (chat, a reply), as opposed to notices only.
    urgent: bool,
}

/// A write that has not finished after this long is waiting for the client to read, not
/// for the CPU (see [`Pushed::crowded`]).
const WRITER_STUCK_AFTER: Duration = Duration::from_millis(20);

/// Pause of a writer after writing a burst (see `run_writer`). It adds at most this much
/// delay to lines that arrive while their writer lingers; a line arriving at a sleeping
/// writer goes out at once.
const WRITER_LINGER: Duration = Duration::from_millis(1);

/// How long every writer pauses after each write, in microseconds; set from the room size
/// by the registry (see `registry::writer_pace`). Shared by all writers, so an atomic.
static WRITER_PACE_MICROS: AtomicU64 = AtomicU64::new(0);

/// Sets the pause every writer takes after each write. In a large room each chat line
/// goes to many writers; a writer that pauses a few milliseconds takes the lines that
/// arrived meanwhile in one batch, instead of costing a wake-up and a write per line.
pub fn set_writer_pace(pace: Duration) {
    let micros = u64::try_from(pace.as_micros()).unwrap_or(u64::MAX);
    WRITER_PACE_MICROS.store(micros, Ordering::Relaxed);
}

fn writer_pace() -> Duration {
    Duration::from_micros(WRITER_PACE_MICROS.load(Ordering::Relaxed))
}

/// How long to pause after writing `batch`, `since_previous` after the previous write. The
/// pace applies only to a writer that is busy (its writes come less than two paces apart):
/// that is where batching saves wake-ups. A writer that wakes now and then, for a notice or
/// a quiet room's chat, writes at once and sleeps on its queue.
fn writer_pause(batch: Batch, since_previous: Option<Duration>) -> Duration {
    let pace = writer_pace();
    // Twice the pace, so that a writer in its paced rhythm (a pause, then a write) still
    // counts as busy.
    let busy = since_previous.is_some_and(|gap| gap < pace * 2);
    // In a burst of chat (lines from more than one push were waiting) linger at least a
    // little, so the lines still coming go out together. Not after notices alone: the next
    // ones wait for the doorbell anyway, and in a sign-in storm, when every write is a
    // batch of joins, lingering cost every writer a timer wake-up per write.
    let linger = if batch.urgent && batch.entries > 1 {
        WRITER_LINGER
    } else {
        Duration::ZERO
    };
    if busy { pace.max(linger) } else { linger }
}

/// Capacity a writer keeps in its buffer while it sleeps for lines. A larger batch grows
/// it, and a busy writer keeps that for its next batches (shrinking it after every write
/// cost the throughput scenario a `realloc` and fresh pages per write); once the writer
/// sleeps, the rest goes back to the allocator for the next writer. Kept at 16 KiB, every
/// client held its largest batch of join notices after a sign-in storm (10,000 clients: 66
/// to 71 KiB resident per client, against 60 to 62 at 4 KiB); at 1 KiB, growing it again
/// for many batches made the slow-consumer scenario's p99 760 to 2,058 ms, against 80 to
/// 309 (docs/PERFORMANCE.md).
const WRITER_BUF_KEEP: usize = 4 * 1024;

/// The body of a client's writer thread: drain `outbox` into `socket` until the outbox is
/// closed or a write fails, then hang up. Returns the write error, if any, for the log.
pub fn run_writer<W: Write>(outbox: &Outbox, mut socket: W) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut result = Ok(());
    let mut previous_write: Option<Instant> = None;
    while let Some(batch) = outbox.take_batch(&mut buf) {
        if let Err(e) = socket.write_all(&buf) {
            result = Err(e);
            break;
        }
        outbox.record_written(batch.entries);
        let now = Instant::now();
        let pause = writer_pause(batch, previous_write.map(|t| now.duration_since(t)));
        previous_write = Some(now);
        if !pause.is_zero() {
            outbox.pause(pause);
        }
        stats::record_bytes_out(buf.len());
        buf.clear();
    }
    outbox.hang_up();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doorbell::{Doorbells, Rings};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counting_outbox(limit: usize) -> (Arc<Outbox>, Arc<AtomicUsize>) {
        let hangups = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&hangups);
        let hangup: Hangup = Box::new(move || {
            seen.fetch_add(1, Ordering::SeqCst);
        });
        (Arc::new(Outbox::new(limit, hangup)), hangups)
    }

    fn line(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn push_until_full_then_refuse() {
        let (outbox, _) = counting_outbox(10);
        assert_eq!(outbox.push(line("12345")), Ok(()));
        assert_eq!(outbox.push(line("12345")), Ok(()));
        assert_eq!(outbox.push(line("x")), Err(PushError::Full));
        assert!(outbox.is_aborted());
        assert_eq!(outbox.push(line("x")), Err(PushError::Closed));
    }

    #[test]
    fn a_burst_is_queued_in_order_with_one_wake_up_or_overflows_like_a_line() {
        let burst = || [line("a\n"), line("b\n"), line("c\n")];
        let (outbox, _) = counting_outbox(100);
        outbox.lock().writer_waiting = true; // as if asleep in take_batch
        let nothing = outbox.push_all_deferred([], Urgency::Now);
        assert_eq!(nothing, Ok(Pushed::default()), "no lines, no ring");
        let first = outbox.push_all_deferred(burst(), Urgency::Now);
        assert_eq!(first.map(|p| p.wake), Ok(Some(Ring::Urgent)));
        let second = outbox.push_all_deferred(burst(), Urgency::Now);
        assert_eq!(second.map(|p| p.wake), Ok(None), "one ring covers both");
        outbox.close();
        let mut written = Vec::new();
        run_writer(&outbox, &mut written).expect("vec write");
        assert_eq!(written, b"a\nb\nc\na\nb\nc\n");

        let (outbox, _) = counting_outbox(8);
        outbox
            .push_all_deferred(burst(), Urgency::Now)
            .expect("6 bytes fit");
        let over = outbox.push_all_deferred(burst(), Urgency::Now);
        assert_eq!(over, Err(PushError::Full));
        assert!(outbox.is_aborted());
    }

    #[test]
    fn a_push_that_fills_a_batch_cuts_the_writers_pause_short() {
        let (outbox, _) = counting_outbox(400);
        let (done, paused) = std::sync::mpsc::channel();
        let writer = Arc::clone(&outbox);
        std::thread::spawn(move || {
            writer.pause(Duration::from_secs(3600));
            let _ = done.send(());
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while !outbox.lock().pausing {
            assert!(Instant::now() < deadline, "the writer never paused");
            std::thread::yield_now();
        }
        let small = outbox.push_deferred(line(&"a".repeat(60)), Urgency::Now);
        assert_eq!(
            small.map(|p| p.wake),
            Ok(None),
            "60 of 400 bytes: keep gathering"
        );
        let full = outbox.push_deferred(line(&"b".repeat(40)), Urgency::Now);
        assert_eq!(
            full.map(|p| p.wake),
            Ok(Some(Ring::Urgent)),
            "100 of 400: cut it"
        );
        let again = outbox.push_deferred(line("c"), Urgency::Now);
        assert_eq!(again.map(|p| p.wake), Ok(None), "one cut is enough");
        outbox.wake();
        let ended = paused.recv_timeout(Duration::from_secs(10));
        assert!(ended.is_ok(), "the pause went on after the ring");
        let queue = outbox.lock();
        assert!(
            !queue.pausing && !queue.pause_cut,
            "the pause left its flags set"
        );
    }

    #[test]
    fn a_hang_up_ends_the_writers_pause() {
        let (outbox, hangups) = counting_outbox(400);
        let (done, paused) = std::sync::mpsc::channel();
        let writer = Arc::clone(&outbox);
        std::thread::spawn(move || {
            writer.pause(Duration::from_secs(3600));
            let _ = done.send(());
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while !outbox.lock().pausing {
            assert!(Instant::now() < deadline, "the writer never paused");
            std::thread::yield_now();
        }
        outbox.hang_up();
        let ended = paused.recv_timeout(Duration::from_secs(10));
        assert!(
            ended.is_ok(),
            "the writer paused on after its client was cut"
        );
        assert_eq!(hangups.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_pause_ends_at_its_deadline_without_a_ring() {
        let (outbox, _) = counting_outbox(400);
        let started = Instant::now();
        outbox.pause(Duration::from_millis(5));
        assert!(
            started.elapsed() >= Duration::from_millis(5),
            "the pause was skipped"
        );
        assert!(!outbox.lock().pausing);
    }

    #[test]
    fn a_queue_is_short_of_cpu_only_when_its_writer_could_be_writing() {
        let long_ago = Instant::now().checked_sub(Duration::from_secs(1));
        // (bytes of 100, writer asleep, wake requested, urgent, write began) -> short of CPU?
        let table = [
            (50, false, false, true, None, false),     // half full is fine
            (60, false, false, true, None, true),      // awake and behind
            (60, true, true, false, None, true),       // rung, not yet running
            (60, true, false, false, None, false),     // asleep holding notices on purpose
            (60, true, false, true, None, true),       // asleep with chat: about to be rung
            (60, false, false, true, long_ago, false), // stuck in a write: a slow client
        ];
        for (bytes, waiting, rung, urgent, writing_since, expected) in table {
            let (outbox, _) = counting_outbox(100);
            let mut queue = outbox.lock();
            queue.bytes = bytes;
            queue.writer_waiting = waiting;
            queue.wake_requested = rung;
            queue.urgent = urgent;
            queue.writing_since = writing_since;
            let row = format!("{bytes} asleep={waiting} rung={rung} urgent={urgent}");
            assert_eq!(queue.short_of_cpu(100), expected, "{row} {writing_since:?}");
        }
    }

    #[test]
    fn a_sender_waits_for_a_writer_short_of_cpu_but_not_for_a_stuck_one() {
        let (outbox, _) = counting_outbox(100);
        let deadline = Instant::now() + Duration::from_secs(60);
        for _ in 0..6 {
            outbox.push_deferred(line("0123456789"), Urgency::Now).ok();
        }
        assert!(
            outbox.lock().short_of_cpu(100),
            "60 of 100 bytes, no write yet"
        );
        let sender = {
            let outbox = Arc::clone(&outbox);
            std::thread::spawn(move || outbox.wait_uncrowded(deadline))
        };
        while outbox.lock().waiters == 0 {
            assert!(Instant::now() < deadline, "the sender never waited");
            std::thread::yield_now();
        }
        let writer = {
            let outbox = Arc::clone(&outbox);
            std::thread::spawn(move || run_writer(&outbox, Vec::new()))
        };
        assert!(
            sender.join().expect("sender thread"),
            "released by the write"
        );
        assert!(outbox.lock().bytes <= 50);
        outbox.hang_up();
        writer.join().expect("writer thread").expect("vec write");

        // No writer thread here: as if it had been inside one write for a second, held up
        // by its client, not by the CPU.
        let (stuck, _) = counting_outbox(100);
        for _ in 0..6 {
            stuck.push_deferred(line("0123456789"), Urgency::Now).ok();
        }
        stuck.lock().writing_since = Instant::now().checked_sub(Duration::from_secs(1));
        assert!(!stuck.lock().short_of_cpu(100), "its client holds it up");
        assert!(stuck.wait_uncrowded(deadline), "no wait for a stuck writer");
    }

    #[test]
    fn writer_sends_queued_lines_in_order_then_hangs_up_on_close() {
        let (outbox, hangups) = counting_outbox(1000);
        for s in ["a\n", "b\n", "c\n"] {
            outbox.push(line(s)).expect("room");
        }
        outbox.close();
        assert_eq!(outbox.push(line("late\n")), Err(PushError::Closed));
        let mut written = Vec::new();
        run_writer(&outbox, &mut written).expect("vec write");
        assert_eq!(written, b"a\nb\nc\n");
        assert_eq!(hangups.load(Ordering::SeqCst), 1);
    }

    /// A socket that takes at most five bytes per call, cutting across lines.
    struct Trickle(Vec<u8>);

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = buf.len().min(5);
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_batch_written_a_few_bytes_at_a_time_arrives_whole_and_in_order() {
        let (outbox, _) = counting_outbox(1000);
        for s in ["alice: hi\n", "b\n", "", "carol: a longer line\n"] {
            outbox.push(line(s)).expect("room");
        }
        outbox.close();
        let mut socket = Trickle(Vec::new());
        run_writer(&outbox, &mut socket).expect("trickle write");
        assert_eq!(socket.0, b"alice: hi\nb\ncarol: a longer line\n");
    }

    #[test]
    fn push_wait_gets_room_once_the_writer_drains() {
        let (outbox, _) = counting_outbox(4);
        outbox.push(line("abc\n")).expect("room");
        let drainer = {
            let outbox = Arc::clone(&outbox);
            std::thread::spawn(move || {
                let mut sink = Vec::new();
                run_writer(&outbox, &mut sink).map(|_| sink)
            })
        };
        let waited = outbox.push_wait(line("def\n"), Duration::from_secs(10));
        assert_eq!(waited, Ok(()));
        outbox.close();
        let written = drainer.join().expect("writer thread").expect("vec write");
        assert_eq!(written, b"abc\ndef\n");
    }

    #[test]
    fn push_wait_gives_up_after_its_patience() {
        let (outbox, _) = counting_outbox(4);
        outbox.push(line("abc\n")).expect("room");
        let waited = outbox.push_wait(line("def\n"), Duration::from_millis(20));
        assert_eq!(waited, Err(PushError::Full));
        assert!(outbox.is_aborted());
    }

    #[test]
    fn wait_written_returns_once_the_writer_wrote_the_marked_lines() {
        let (outbox, _) = counting_outbox(100);
        outbox.push(line("one\n")).expect("room");
        let mark = outbox.mark();
        assert!(!outbox.wait_written(mark, Duration::from_millis(10)));
        let drainer = {
            let outbox = Arc::clone(&outbox);
            std::thread::spawn(move || run_writer(&outbox, Vec::new()))
        };
        assert!(outbox.wait_written(mark, Duration::from_secs(10)));
        outbox.hang_up();
        assert!(!outbox.wait_written(mark + 1, Duration::from_secs(10)));
        drainer.join().expect("writer thread").expect("vec write");
    }

    #[test]
    fn notices_wake_a_sleeping_writer_at_most_once_per_delay() {
        let (outbox, _) = counting_outbox(1000);
        // As if the writer had taken a batch and gone to sleep in take_batch.
        let writer_sleeps = || {
            let mut queue = outbox.lock();
            queue.writer_waiting = true;
            queue.wake_requested = false;
        };
        writer_sleeps();
        // Pushes like the registry does: ring the doorbell when told to.
        let wakes = |urgency| {
            let pushed = outbox.push_deferred(line("x\n"), urgency).map(|p| p.wake);
            if let Ok(Some(ring)) = pushed {
                outbox.doorbell().ring(ring);
            }
            pushed
        };
        let soon = Urgency::Within(Duration::from_secs(60));
        assert_eq!(wakes(soon), Ok(Some(Ring::All)), "first notice wakes");
        assert_eq!(
            wakes(Urgency::Now),
            Ok(None),
            "that ring covers what follows"
        );
        writer_sleeps();
        assert_eq!(wakes(soon), Ok(None), "the next notices wait");
        let chat = wakes(Urgency::Now);
        assert_eq!(chat, Ok(Some(Ring::Urgent)), "chat never waits");
        writer_sleeps();
        let now = Urgency::Within(Duration::ZERO);
        let notice = wakes(now);
        assert_eq!(
            notice,
            Ok(Some(Ring::All)),
            "after the delay a notice wakes again"
        );
    }

    #[test]
    fn writer_takes_notices_only_when_rung_and_urgent_lines_at_once() {
        // (doorbell rang, urgent line queued, state, lines queued) -> take them now?
        let table = [
            (false, false, State::Open, false, false),
            (true, false, State::Open, false, false),
            (false, false, State::Open, true, false), // only notices, just wrote: sleep
            (true, false, State::Open, true, true),   // rang: take whatever is queued
            (false, true, State::Open, true, true),   // chat may not wait
            (false, false, State::Closing, true, true), // last lines before goodbye
        ];
        for (rang, urgent, state, has_lines, expected) in table {
            let (outbox, _) = counting_outbox(1000);
            let mut queue = outbox.lock();
            if has_lines {
                queue.append(line("x\n"));
            }
            queue.urgent = urgent;
            queue.state = state;
            let got = queue.ready_for_writer(rang);
            assert_eq!(
                got, expected,
                "rang={rang} urgent={urgent} {state:?} {has_lines}"
            );
        }
    }

    #[test]
    fn a_writer_lingers_only_after_a_burst_of_chat() {
        // (entries written, any of them chat) -> pause, for a writer that is not busy
        // (no previous write, so the room-sized pace does not apply).
        let table = [
            (1, true, Duration::ZERO),
            (3, true, WRITER_LINGER),
            (1, false, Duration::ZERO),
            (3, false, Duration::ZERO), // a batch of joins: the next ones can wait
        ];
        for (entries, urgent, expected) in table {
            let batch = Batch { entries, urgent };
            assert_eq!(writer_pause(batch, None), expected, "{batch:?}");
        }
    }

    /// Many writers on few doorbells, fed from several threads with chat and notices
    /// mixed: every line reaches its own writer, in order, and every writer finishes.
    #[test]
    fn writers_sharing_doorbells_lose_nothing() {
        const OUTBOXES: usize = 24;
        const LINES: usize = 300;
        let bells = Doorbells::new(3);
        let outboxes: Vec<Arc<Outbox>> = (0..OUTBOXES)
            .map(|_| {
                Arc::new(Outbox::with_doorbell(
                    1 << 20,
                    Box::new(|| {}),
                    bells.assign(),
                ))
            })
            .collect();
        let writers: Vec<_> = outboxes
            .iter()
            .map(|outbox| {
                let outbox = Arc::clone(outbox);
                std::thread::spawn(move || {
                    let mut sink = Vec::new();
                    run_writer(&outbox, &mut sink).map(|_| sink)
                })
            })
            .collect();
        let feeders: Vec<_> = (0..3)
            .map(|feeder| {
                let outboxes = outboxes.clone();
                std::thread::spawn(move || {
                    for n in 0..LINES {
                        let urgency = if n % 7 == 0 {
                            Urgency::Now
                        } else {
                            Urgency::Within(Duration::from_millis(5))
                        };
                        let mut rings = Rings::default();
                        for outbox in outboxes.iter().skip(feeder).step_by(3) {
                            let pushed = outbox.push_deferred(line(&format!("{n}\n")), urgency);
                            if let Some(ring) = pushed.expect("room").wake {
                                rings.add(outbox.doorbell(), ring);
                            }
                        }
                        rings.ring();
                    }
                })
            })
            .collect();
        for feeder in feeders {
            feeder.join().expect("feeder");
        }
        // Notices wait for the flusher: ring the doorbells with lines waiting every
        // millisecond, as the notice flusher does every 100. Every line must then reach its
        // writer's socket without any other ring (a lost wake-up fails here; closing would
        // wake everyone anyway).
        let deadline = Instant::now() + Duration::from_secs(10);
        let marks: Vec<u64> = outboxes.iter().map(|outbox| outbox.mark()).collect();
        let all_written = || {
            let zero = Duration::ZERO;
            (outboxes.iter().zip(&marks)).all(|(outbox, &mark)| outbox.wait_written(mark, zero))
        };
        while !all_written() {
            assert!(Instant::now() < deadline, "lines stuck in a queue");
            bells.ring_waiting(Duration::ZERO);
            std::thread::sleep(Duration::from_millis(1));
        }
        for outbox in &outboxes {
            outbox.close();
        }
        let expected: String = (0..LINES).map(|n| format!("{n}\n")).collect();
        for writer in writers {
            let sink = writer.join().expect("writer thread").expect("vec write");
            assert_eq!(String::from_utf8(sink).expect("utf-8"), expected);
        }
    }

    /// A socket that queues a notice for its own client while the writer is in `write`.
    struct NoticeDuringWrite {
        outbox: Arc<Outbox>,
        sent: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for NoticeDuringWrite {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let mut sent = self.sent.lock().expect("sink");
            if sent.is_empty() {
                let notice = Urgency::Within(Duration::from_secs(3600));
                self.outbox
                    .push_deferred(line("notice\n"), notice)
                    .expect("room");
            }
            sent.extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A notice queued while its writer writes rings nothing (the writer is awake); the
    /// writer then sleeps with it queued. The notice flusher's ring must bring it out.
    #[test]
    fn a_notice_queued_during_a_write_goes_out_at_the_flushers_ring() {
        let bells = Doorbells::new(1);
        let outbox = Arc::new(Outbox::with_doorbell(1000, Box::new(|| {}), bells.assign()));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let socket = NoticeDuringWrite {
            outbox: Arc::clone(&outbox),
            sent: Arc::clone(&sent),
        };
        let writer = {
            let outbox = Arc::clone(&outbox);
            std::thread::spawn(move || run_writer(&outbox, socket))
        };
        outbox.push(line("chat\n")).expect("room");
        let deadline = Instant::now() + Duration::from_secs(10);
        while outbox.mark() < 2 {
            assert!(
                Instant::now() < deadline,
                "the writer never wrote the chat line"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        while !outbox.wait_written(2, Duration::from_millis(5)) {
            assert!(Instant::now() < deadline, "the notice was never written");
            bells.ring_waiting(Duration::ZERO);
        }
        outbox.close();
        writer.join().expect("writer thread").expect("sink write");
        assert_eq!(*sent.lock().expect("sink"), b"chat\nnotice\n");
    }

    #[test]
    fn a_sender_writes_itself_only_to_a_sleeping_idle_writer_never_rung_nor_slow() {
        let pace = Duration::from_millis(4);
        let ago = |ms| Instant::now().checked_sub(Duration::from_millis(ms));
        // (writer asleep, wake requested, a sender writing, slow, last write) -> may write?
        let table = [
            (true, false, false, false, None, true), // never written: idle
            (true, false, false, false, ago(10), true), // last write 10 ms ago, pace 4
            (true, false, false, false, ago(1), false), // busy: it batches instead
            (false, false, false, false, None, false), // awake: it takes the line itself
            (true, true, false, false, None, false), // a ring is on its way
            (true, false, true, false, None, false), // another sender holds the socket
            (true, false, false, true, None, false), // its socket was once full
        ];
        for (asleep, rung, writing, slow, last_write, expected) in table {
            let (outbox, _) = counting_outbox(100);
            let mut queue = outbox.lock();
            queue.writer_waiting = asleep;
            queue.wake_requested = rung;
            queue.sender_writing = writing;
            queue.slow = slow;
            queue.last_write = last_write;
            let row = format!("asleep={asleep} rung={rung} writing={writing} slow={slow}");
            assert_eq!(
                queue.sender_may_write(pace),
                expected,
                "{row} {last_write:?}"
            );
        }
    }

    /// An outbox whose senders write to a sink of their own. Each write takes at most
    /// `takes` bytes, as a full socket times out after taking part; 0 means a `WouldBlock`.
    fn outbox_with_sender_write(takes: usize) -> (Arc<Outbox>, Arc<Mutex<Vec<u8>>>) {
        outbox_with_sender_write_and_doorbell(takes, Arc::new(Doorbell::new()))
    }

    fn outbox_with_sender_write_and_doorbell(
        takes: usize,
        doorbell: Arc<Doorbell>,
    ) -> (Arc<Outbox>, Arc<Mutex<Vec<u8>>>) {
        let by_senders = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&by_senders);
        let write: SenderWrite = Box::new(move |bytes: &[u8]| {
            if takes == 0 {
                return Err(ErrorKind::WouldBlock.into());
            }
            let n = bytes.len().min(takes);
            sink.lock().expect("sink").extend_from_slice(&bytes[..n]);
            Ok(n)
        });
        let outbox = Outbox::with_doorbell(1000, Box::new(|| {}), doorbell);
        let outbox = outbox.with_sender_write(write);
        (Arc::new(outbox), by_senders)
    }

    /// A writer thread writing into a `Vec`, which it returns when it stops.
    fn vec_writer(outbox: &Arc<Outbox>) -> std::thread::JoinHandle<std::io::Result<Vec<u8>>> {
        let outbox = Arc::clone(outbox);
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            run_writer(&outbox, &mut sink).map(|()| sink)
        })
    }

    fn wait_until_writer_sleeps(outbox: &Outbox) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !outbox.lock().writer_waiting {
            assert!(Instant::now() < deadline, "the writer never went to sleep");
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_sender_writes_chat_to_an_idle_writers_client_itself() {
        let (outbox, by_senders) = outbox_with_sender_write(usize::MAX);
        let writer = vec_writer(&outbox);
        wait_until_writer_sleeps(&outbox);
        let first = outbox.push_deferred(line("hi\n"), Urgency::Now);
        assert_eq!(first.map(|p| (p.write_through, p.wake)), Ok((true, None)));
        // Queued before that sender writes: it goes in the same write, with no ring.
        let second = outbox.push_deferred(line("again\n"), Urgency::Now);
        assert_eq!(second.map(|p| (p.write_through, p.wake)), Ok((false, None)));
        outbox.write_through(&mut Vec::new());
        assert_eq!(*by_senders.lock().expect("sink"), b"hi\nagain\n");
        assert!(
            outbox.wait_written(2, Duration::ZERO),
            "both lines count as written"
        );
        // Notices are never written by a sender: they wait to be batched.
        let notice = outbox.push_deferred(line("notice\n"), Urgency::Within(Duration::ZERO));
        assert_eq!(notice.map(|p| p.write_through), Ok(false));
        outbox.close();
        let by_writer = writer.join().expect("writer thread").expect("vec write");
        assert_eq!(by_writer, b"notice\n");
    }

    #[test]
    fn a_sender_write_cut_short_leaves_the_rest_to_the_writer_and_marks_the_client_slow() {
        for takes in [3, 0] {
            let (outbox, by_senders) = outbox_with_sender_write(takes);
            let writer = vec_writer(&outbox);
            wait_until_writer_sleeps(&outbox);
            let pushed = outbox.push_deferred(line("hello\n"), Urgency::Now);
            assert_eq!(pushed.map(|p| p.write_through), Ok(true), "takes {takes}");
            outbox.write_through(&mut Vec::new());
            assert!(
                outbox.wait_written(1, Duration::from_secs(10)),
                "takes {takes}: the writer never finished the line"
            );
            let again = outbox.push_deferred(line("again\n"), Urgency::Now);
            assert_eq!(
                again.map(|p| p.write_through),
                Ok(false),
                "takes {takes}: slow"
            );
            outbox.close();
            let by_writer = writer.join().expect("writer thread").expect("vec write");
            let (head, rest) = "hello\n".split_at(takes);
            assert_eq!(*by_senders.lock().expect("sink"), head.as_bytes());
            assert_eq!(
                by_writer,
                format!("{rest}again\n").as_bytes(),
                "takes {takes}"
            );
        }
    }

    /// A takeover queues a notice for the old connection, which a sender may write, and
    /// closes it: the writer must wait for that sender, then hang up.
    #[test]
    fn a_writer_closing_waits_for_the_senders_write_then_hangs_up() {
        let bells = Doorbells::new(1);
        let (outbox, by_senders) =
            outbox_with_sender_write_and_doorbell(usize::MAX, bells.assign());
        let (done, finished) = std::sync::mpsc::channel();
        let writer = vec_writer(&outbox);
        wait_until_writer_sleeps(&outbox);
        let pushed = outbox.push_deferred(line("taken over\n"), Urgency::Now);
        assert_eq!(pushed.map(|p| p.write_through), Ok(true));
        outbox.close_deferred();
        outbox.wake();
        // The writer has woken, found the sender holding the socket, and slept again with
        // the line queued (so its doorbell waits for a ring, which this one is).
        let deadline = Instant::now() + Duration::from_secs(10);
        while bells.ring_waiting(Duration::ZERO) == 0 {
            assert!(
                Instant::now() < deadline,
                "the writer did not leave the line to the sender"
            );
            std::thread::yield_now();
        }
        outbox.write_through(&mut Vec::new());
        std::thread::spawn(move || done.send(writer.join()));
        let joined = finished.recv_timeout(Duration::from_secs(10));
        let by_writer = joined
            .expect("the writer never stopped")
            .expect("writer thread");
        assert_eq!(by_writer.expect("vec write"), b"");
        assert_eq!(*by_senders.lock().expect("sink"), b"taken over\n");
    }

    #[test]
    fn hang_up_drops_queue_and_calls_transport() {
        let (outbox, hangups) = counting_outbox(100);
        outbox.push(line("never sent\n")).expect("room");
        outbox.hang_up();
        let mut written = Vec::new();
        run_writer(&outbox, &mut written).expect("vec write");
        assert!(written.is_empty());
        assert!(hangups.load(Ordering::SeqCst) >= 1);
    }
}
