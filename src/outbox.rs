//! The outbound queue of one client (an IRC server's "SendQ"), and who writes it.
//!
//! This module owns the only path from the server to a client's transport, and one rule:
//! **whoever queues a line for a client that nobody is writing to becomes its writer.**
//! A sender pushes under the registry lock (memory work only) and, once it has released
//! the lock, writes that client's queue itself with a write that never waits for the
//! client. Whatever the client's kernel does not take at once stays queued, and the
//! client's own writer thread, started for that backlog, writes it with writes that may
//! wait. Lines queued while someone is writing simply join the queue, and that writer
//! takes them before it lets go. A queue past its byte budget means the client stopped
//! reading: it is cut, never waited for.
//!
//! So in a quiet room the sender's thread does all the writing (no wake-up, no second
//! thread), a slow client costs a second thread only while it is behind, and a stalled one
//! can delay nobody: its lines pile up in its own queue until it is cut.
//!
//! One wait remains, the other way round: a sender whose line finds a queue over half
//! full while someone writes it to a client that still takes bytes waits, with no lock
//! held, until the queue is below half again ([`Outbox::wait_uncrowded`]). A client that
//! reads, however slowly, then slows its senders down (TCP slows theirs) instead of being
//! cut; one that has stopped reading holds a sender once, for at most
//! [`WRITER_STUCK_AFTER`].
//!
//! The writer thread is in `outbox/writer.rs`; what a sender does after the registry lock
//! (write its claims, wake, cut, wait) is a [`Delivery`](crate::delivery::Delivery). This
//! module must not know users, the registry or the protocol: it moves whole lines
//! (`Arc<str>`, shared by every receiver of a broadcast) and asks the [`Transport`] to
//! encode and write them. Its locks are per client and never held across a syscall.

mod writer;

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::limits::{WRITER_LINGER, WRITER_STUCK_AFTER};
use crate::stats;
use crate::transport::Transport;

/// Entries an empty queue keeps room for (see `Queue::take`).
const QUEUE_KEEP_ENTRIES: usize = 8;

/// What may be queued for a client.
#[derive(Debug, Clone)]
pub enum Entry {
    /// One or more whole lines, each ending in `\n`, encoded by the transport on the way out.
    Lines(Arc<str>),
    /// Bytes already in the transport's wire format (a WebSocket pong, say), which must
    /// not be written in the middle of a line's frame.
    Wire(Arc<[u8]>),
}

impl Entry {
    fn len(&self) -> usize {
        match self {
            Entry::Lines(text) => text.len(),
            Entry::Wire(bytes) => bytes.len(),
        }
    }
}

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The queue is over its byte budget: the client stopped reading. The outbox is now
    /// closed; whoever pushed must call [`Outbox::hang_up`] once it holds no lock.
    Full,
    /// The connection is closing or closed; the line is dropped.
    Closed,
}

/// What a push leaves for the pusher to do once it holds no lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Pushed {
    /// Someone is writing this queue already and takes the line along.
    Queued,
    /// Nobody was writing: the pusher is now this client's writer and must call
    /// [`Outbox::write_queue`].
    Claimed,
    /// The client's writer thread is asleep waiting for lines: call [`Outbox::wake`].
    Wake,
    /// Queued, but the queue is over half full while someone is writing it to a client
    /// that reads: the pusher should wait for that writer ([`Outbox::wait_uncrowded`])
    /// before it sends more, or fast senders overflow the queue of a client that reads.
    Crowded,
}

/// Who has the right to write to the transport. Exactly one party at a time, so lines are
/// never interleaved and never reordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    Nobody,
    /// A thread that pushed a line (a sender, or the client's own session) writes once it
    /// holds no lock.
    Sender,
    /// The client's writer thread, writing a backlog.
    Thread,
    /// The writer thread, its backlog written, waiting up to [`WRITER_LINGER`] for more.
    ThreadAsleep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// No more lines; what is queued is written, then the connection is closed.
    Closing,
    /// Closed: nothing more is written.
    Closed,
}

struct Queue {
    entries: VecDeque<Entry>,
    /// Encoded bytes that a write left unwritten: they go before every entry.
    rest: Vec<u8>,
    /// Entries that `rest` completes once written.
    rest_entries: u64,
    /// Bytes waiting (entries and rest), counted against the budget.
    bytes: usize,
    state: State,
    writer: Writer,
    /// Entries ever queued, and entries ever written: together they tell a session when
    /// something it queued has really left (see [`Outbox::wait_written`]).
    pushed: u64,
    written: u64,
    /// Threads in [`Outbox::push_wait`], [`Outbox::wait_written`] or
    /// [`Outbox::wait_uncrowded`], so a write signals them only when someone waits (a
    /// signal is a syscall).
    waiters: usize,
    /// When the client's kernel last took bytes from a write, by anyone.
    last_progress: Option<Instant>,
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.rest.is_empty()
    }

    /// Over half of `limit_bytes` while someone writes it and the client still takes
    /// bytes: another sender will write it once it gets to it, or the client's writer
    /// thread is writing to a client that reads, just not as fast as lines come.
    fn is_crowded(&self, limit_bytes: usize) -> bool {
        if self.bytes <= limit_bytes / 2 {
            return false;
        }
        match self.writer {
            Writer::Sender => true,
            Writer::Thread => self
                .last_progress
                .is_some_and(|at| at.elapsed() < WRITER_STUCK_AFTER),
            Writer::Nobody | Writer::ThreadAsleep => false,
        }
    }

    fn append(&mut self, entry: Entry) {
        self.bytes += entry.len();
        self.pushed += 1;
        self.entries.push_back(entry);
    }

    /// Encodes everything queued into `buf` for one write. Returns the entries it holds.
    fn take(&mut self, transport: &dyn Transport, buf: &mut Vec<u8>) -> u64 {
        buf.append(&mut self.rest);
        let entries = std::mem::take(&mut self.rest_entries) + self.entries.len() as u64;
        for entry in self.entries.drain(..) {
            match entry {
                Entry::Lines(text) => transport.encode(&text, buf),
                Entry::Wire(bytes) => buf.extend_from_slice(&bytes),
            }
        }
        // A queue that grew in a burst (a sign-in storm's notices) lets its buffer go, or
        // it would keep that capacity for the rest of the connection; a small one is kept
        // for the next lines rather than freed and allocated again each time.
        if self.entries.capacity() > QUEUE_KEEP_ENTRIES {
            self.entries = VecDeque::new();
        }
        self.bytes = 0;
        entries
    }

    /// After a write of a batch of `entries`: what it left unwritten goes first next time.
    fn wrote(&mut self, entries: u64, unwritten: &[u8]) {
        if unwritten.is_empty() {
            self.written += entries;
        } else {
            self.rest.extend_from_slice(unwritten);
            self.rest_entries = entries;
            self.bytes += unwritten.len();
        }
    }
}

/// A bounded, byte-counted queue of lines for one client, and the right to write them.
pub struct Outbox {
    queue: Mutex<Queue>,
    /// Signalled for the writer thread when a line arrives while it sleeps.
    lines_queued: Condvar,
    /// Signalled for [`Outbox::push_wait`] and [`Outbox::wait_written`]: a write happened
    /// or the connection closed.
    progress: Condvar,
    limit_bytes: usize,
    transport: Arc<dyn Transport>,
    /// How long the writer thread waits for more lines before it ends ([`WRITER_LINGER`]).
    linger: Duration,
}

impl Outbox {
    /// An open outbox holding at most `limit_bytes` of unwritten lines for `transport`.
    pub fn new(limit_bytes: usize, transport: Arc<dyn Transport>) -> Outbox {
        Outbox {
            queue: Mutex::new(Queue {
                entries: VecDeque::new(),
                rest: Vec::new(),
                rest_entries: 0,
                bytes: 0,
                state: State::Open,
                writer: Writer::Nobody,
                pushed: 0,
                written: 0,
                waiters: 0,
                last_progress: None,
            }),
            lines_queued: Condvar::new(),
            progress: Condvar::new(),
            limit_bytes,
            transport,
            linger: WRITER_LINGER,
        }
    }

    /// Never held across a syscall, so a poisoned queue is still consistent: recover it.
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `entry`; memory work only, so it may be called under the registry lock. On
    /// overflow the outbox closes itself (see [`PushError::Full`]).
    pub fn push(&self, entry: Entry) -> Result<Pushed, PushError> {
        let mut queue = self.lock();
        if queue.state != State::Open {
            return Err(PushError::Closed);
        }
        if queue.bytes + entry.len() > self.limit_bytes {
            queue.state = State::Closed;
            stats::record_queue_drop();
            return Err(PushError::Full);
        }
        queue.append(entry);
        let pushed = claim(&mut queue);
        if pushed == Pushed::Queued && queue.is_crowded(self.limit_bytes) {
            return Ok(Pushed::Crowded);
        }
        Ok(pushed)
    }

    /// Queues `entry` and does what the push asks at once: for a thread that holds no lock,
    /// such as a session answering its own client. `Err` means this client is gone.
    pub fn send(self: &Arc<Self>, entry: Entry) -> Result<(), PushError> {
        let pushed = self.push(entry);
        self.finish(pushed, &mut Vec::new());
        pushed.map(|_| ())
    }

    /// Does what a push left to do (see [`Pushed`]), with no lock held.
    pub fn finish(self: &Arc<Self>, pushed: Result<Pushed, PushError>, buf: &mut Vec<u8>) {
        match pushed {
            Ok(Pushed::Queued | Pushed::Crowded) | Err(PushError::Closed) => {}
            Ok(Pushed::Claimed) => self.write_queue(buf),
            Ok(Pushed::Wake) => self.wake(),
            Err(PushError::Full) => self.hang_up(),
        }
    }

    /// Queues `entry`, waiting up to `patience` for room, then does what the push asks.
    /// For replies the client asked for (a long user list, its stored messages): they may
    /// wait for the client, since only that client is delayed. Never under the registry
    /// lock.
    pub fn push_wait(self: &Arc<Self>, entry: Entry, patience: Duration) -> Result<(), PushError> {
        let deadline = Instant::now() + patience;
        let mut queue = self.lock();
        loop {
            if queue.state != State::Open {
                return Err(PushError::Closed);
            }
            // A line bigger than the whole budget is let through alone rather than never.
            if queue.bytes + entry.len() <= self.limit_bytes || queue.is_empty() {
                queue.append(entry);
                let pushed = claim(&mut queue);
                drop(queue);
                self.finish(Ok(pushed), &mut Vec::new());
                return Ok(());
            }
            if Instant::now() >= deadline {
                drop(queue);
                stats::record_queue_drop();
                self.hang_up();
                return Err(PushError::Full);
            }
            queue = self.wait_for_progress(queue, deadline);
        }
    }

    /// For whoever a push made this client's writer ([`Pushed::Claimed`]), with no lock
    /// held: writes everything queued, again while more arrives, each time with one write
    /// that does not wait for the client. Then gives the right to write back, or, if the
    /// client's kernel did not take it all, hands the rest to the client's writer thread.
    /// `buf` is scratch space, left empty.
    pub fn write_queue(self: &Arc<Self>, buf: &mut Vec<u8>) {
        let mut queue = self.lock();
        loop {
            if queue.state == State::Closed || queue.is_empty() {
                queue.writer = Writer::Nobody;
                let closing = queue.state == State::Closing;
                drop(queue);
                if closing {
                    self.hang_up();
                }
                return;
            }
            let entries = queue.take(&*self.transport, buf);
            drop(queue);
            let taken = match self.transport.write(buf) {
                Ok(n) => n.min(buf.len()),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => 0,
                Err(_) => {
                    buf.clear();
                    self.hang_up();
                    return;
                }
            };
            stats::record_bytes_out(taken);
            let behind = taken < buf.len();
            queue = self.lock();
            queue.wrote(entries, &buf[taken..]);
            buf.clear();
            self.signal_progress(&queue);
            if behind {
                drop(queue);
                self.start_writer_thread();
                return;
            }
        }
    }

    /// Wakes the threads waiting for a write to happen, if there are any: a signal is a
    /// syscall, so it is skipped when nobody waits. Called holding the queue's lock.
    fn signal_progress(&self, queue: &Queue) {
        if queue.waiters > 0 {
            self.progress.notify_all();
        }
    }

    /// Wakes the writer thread for lines a push queued ([`Pushed::Wake`]).
    pub fn wake(&self) {
        self.lines_queued.notify_one();
    }

    /// Stop accepting lines: what is queued is written, then the connection is closed.
    /// Memory work only (may be called under the registry lock); returns what the caller
    /// must do once it holds no lock, as a push does: if nobody was writing, the caller
    /// becomes the writer that closes it.
    pub fn close(&self) -> Pushed {
        let mut queue = self.lock();
        if queue.state != State::Open {
            return Pushed::Queued;
        }
        queue.state = State::Closing;
        claim(&mut queue)
    }

    /// Drop everything and cut the connection now. Performs a syscall: never call it while
    /// holding the registry lock.
    pub fn hang_up(&self) {
        let writer_asleep = {
            let mut queue = self.lock();
            queue.state = State::Closed;
            queue.entries.clear();
            queue.rest.clear();
            queue.bytes = 0;
            queue.writer == Writer::ThreadAsleep
        };
        self.progress.notify_all();
        if writer_asleep {
            self.wake();
        }
        self.transport.hang_up();
    }

    /// True once the outbox is closed for good (overflow, hang-up, or closed and written).
    pub fn is_closed(&self) -> bool {
        self.lock().state == State::Closed
    }

    /// True while lines are still accepted: not closing (a takeover closes the old
    /// connection's outbox before its last line is out) and not closed.
    pub fn is_open(&self) -> bool {
        self.lock().state == State::Open
    }

    /// Waits until the queue is no longer crowded (see [`Pushed::Crowded`]), its client
    /// stops taking bytes, or `deadline` passes. For a sender after a delivery, with no
    /// lock held: only that sender waits, and TCP slows its own client down.
    pub fn wait_uncrowded(&self, deadline: Instant) {
        let mut queue = self.lock();
        while queue.state == State::Open && queue.is_crowded(self.limit_bytes) {
            let stuck_at = queue.last_progress.map(|at| at + WRITER_STUCK_AFTER);
            let until = stuck_at.map_or(deadline, |at| at.min(deadline));
            if Instant::now() >= deadline {
                return;
            }
            queue = self.wait_for_progress(queue, until);
        }
    }

    /// A mark for "everything queued so far", to pass to [`Outbox::wait_written`].
    pub fn mark(&self) -> u64 {
        self.lock().pushed
    }

    /// Waits until every entry queued before `mark` was written to the transport. False if
    /// the connection ended first or `patience` ran out. Used before deleting stored mail,
    /// so a message is never deleted while it could still be lost in the queue.
    pub fn wait_written(&self, mark: u64, patience: Duration) -> bool {
        let deadline = Instant::now() + patience;
        let mut queue = self.lock();
        loop {
            if queue.written >= mark {
                return true;
            }
            if queue.state == State::Closed || Instant::now() >= deadline {
                return false;
            }
            queue = self.wait_for_progress(queue, deadline);
        }
    }

    /// Sleeps until a write happens or `deadline` passes, counted among the waiters.
    fn wait_for_progress<'q>(
        &self,
        mut queue: MutexGuard<'q, Queue>,
        deadline: Instant,
    ) -> MutexGuard<'q, Queue> {
        queue.waiters += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let (mut queue, _) = self
            .progress
            .wait_timeout(queue, left)
            .unwrap_or_else(PoisonError::into_inner);
        queue.waiters -= 1;
        queue
    }

    /// Gives up a claim that cannot be written now (the claimer is unwinding from a panic):
    /// the lines stay queued for the next push, which claims them again.
    pub(crate) fn abandon(&self) {
        let mut queue = self.lock();
        if queue.writer == Writer::Sender {
            queue.writer = Writer::Nobody;
        }
    }
}

/// After a line was queued: who writes it. Nobody writing means the pusher writes.
fn claim(queue: &mut Queue) -> Pushed {
    match queue.writer {
        Writer::Nobody => {
            queue.writer = Writer::Sender;
            Pushed::Claimed
        }
        Writer::ThreadAsleep => {
            queue.writer = Writer::Thread;
            Pushed::Wake
        }
        Writer::Sender | Writer::Thread => Pushed::Queued,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::Delivery;
    use crate::transport::MemoryTransport;

    fn lines(s: &str) -> Entry {
        Entry::Lines(Arc::from(s))
    }

    /// An outbox of `limit` bytes whose client takes `room` bytes before it stops reading.
    fn new_outbox(limit: usize, room: usize) -> (Arc<Outbox>, Arc<MemoryTransport>) {
        let transport = MemoryTransport::new(room);
        let mut outbox = Outbox::new(limit, transport.clone());
        outbox.linger = Duration::from_millis(50);
        (Arc::new(outbox), transport)
    }

    /// Waits, with a deadline, until `done` holds.
    fn eventually(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "never happened: {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn the_first_push_claims_the_queue_and_later_ones_ride_along() {
        let (outbox, client) = new_outbox(1000, usize::MAX);
        assert_eq!(outbox.push(lines("a\n")), Ok(Pushed::Claimed));
        assert_eq!(
            outbox.push(lines("b\n")),
            Ok(Pushed::Queued),
            "a writer is on its way"
        );
        assert!(client.lines().is_empty(), "nothing written under the lock");
        outbox.write_queue(&mut Vec::new());
        assert_eq!(client.lines(), ["a", "b"]);
        assert_eq!(
            outbox.push(lines("c\n")),
            Ok(Pushed::Claimed),
            "given back after writing"
        );
        outbox.write_queue(&mut Vec::new());
        assert_eq!(client.lines(), ["a", "b", "c"]);
        assert_eq!(
            client.patient_writes(),
            0,
            "no writer thread for a client that reads"
        );
    }

    #[test]
    fn what_the_client_does_not_take_goes_to_its_writer_thread_in_order() {
        let (outbox, client) = new_outbox(1000, 5);
        outbox.send(lines("first\n")).expect("open");
        assert_eq!(client.text(), "first", "5 bytes of 6 taken");
        assert_eq!(
            outbox.push(lines("second\n")),
            Ok(Pushed::Queued),
            "the writer has it"
        );
        client.make_room(1000);
        eventually("the backlog is written", || client.lines().len() == 2);
        assert_eq!(client.lines(), ["first", "second"]);
        assert!(client.patient_writes() > 0, "written by the writer thread");
        // Once idle for its linger, the writer gives the client back to the senders.
        eventually("the writer gives back", || {
            outbox.lock().writer == Writer::Nobody
        });
        assert_eq!(outbox.push(lines("third\n")), Ok(Pushed::Claimed));
        outbox.write_queue(&mut Vec::new());
        assert_eq!(client.lines(), ["first", "second", "third"]);
    }

    #[test]
    fn a_sleeping_writer_is_woken_for_new_lines() {
        let (outbox, client) = new_outbox(1000, 0);
        let long = Outbox::new(1000, client.clone());
        let outbox = {
            drop(outbox);
            Arc::new(long) // lingers 10 s: asleep, not gone, when the next line comes
        };
        outbox.send(lines("one\n")).expect("open");
        client.make_room(1000);
        eventually("the writer sleeps", || {
            outbox.lock().writer == Writer::ThreadAsleep
        });
        assert_eq!(outbox.push(lines("two\n")), Ok(Pushed::Wake));
        outbox.wake();
        eventually("the writer wrote again", || client.lines().len() == 2);
        assert_eq!(client.lines(), ["one", "two"]);
        outbox.hang_up();
    }

    #[test]
    fn a_queue_past_its_budget_is_cut_not_waited_for() {
        let (outbox, client) = new_outbox(10, 0);
        assert_eq!(outbox.push(lines("12345")), Ok(Pushed::Claimed));
        assert_eq!(outbox.push(lines("12345")), Ok(Pushed::Crowded));
        assert_eq!(outbox.push(lines("x")), Err(PushError::Full));
        assert!(outbox.is_closed());
        assert_eq!(outbox.push(lines("x")), Err(PushError::Closed));
        let mut delivery = Delivery::default();
        delivery.note("bob", &outbox, Err(PushError::Full));
        delivery.complete();
        assert!(client.is_hung_up());
    }

    #[test]
    fn a_sender_waits_for_a_crowded_queue_while_its_client_reads_but_not_once_it_stalls() {
        // Over half full under another sender's claim: that sender writes it soon.
        let (claimed, _) = new_outbox(100, usize::MAX);
        assert_eq!(claimed.push(lines(&"a".repeat(40))), Ok(Pushed::Claimed));
        assert_eq!(claimed.push(lines(&"b".repeat(20))), Ok(Pushed::Crowded));
        let writer = {
            let claimed = Arc::clone(&claimed);
            std::thread::spawn(move || {
                eventually("the sender waits", || claimed.lock().waiters == 1);
                claimed.write_queue(&mut Vec::new());
            })
        };
        let started = Instant::now();
        claimed.wait_uncrowded(started + Duration::from_secs(10));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "released by the write"
        );
        writer.join().expect("writer");

        // A writer thread whose client has taken nothing for a while: not waited for.
        let (stalled, _) = new_outbox(100, 0);
        stalled.send(lines(&"c".repeat(40))).expect("open");
        eventually("the writer took the line", || stalled.lock().bytes == 0);
        stalled.lock().last_progress = Instant::now().checked_sub(WRITER_STUCK_AFTER * 2);
        for _ in 0..3 {
            assert_eq!(stalled.push(lines(&"d".repeat(20))), Ok(Pushed::Queued));
        }
        let started = Instant::now();
        stalled.wait_uncrowded(started + Duration::from_secs(10));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "waited for a stalled client"
        );
        // The same queue whose client just took bytes is waited for.
        stalled.lock().last_progress = Some(Instant::now());
        assert!(stalled.lock().is_crowded(100));
        stalled.hang_up();
    }

    #[test]
    fn a_queue_that_grew_in_a_burst_lets_its_buffer_go_once_written() {
        let (outbox, client) = new_outbox(1 << 20, usize::MAX);
        assert_eq!(outbox.push(lines("0\n")), Ok(Pushed::Claimed));
        for i in 1..100 {
            assert_eq!(outbox.push(lines(&format!("{i}\n"))), Ok(Pushed::Queued));
        }
        assert!(outbox.lock().entries.capacity() >= 100);
        outbox.write_queue(&mut Vec::new());
        assert_eq!(client.lines().len(), 100);
        assert!(outbox.lock().entries.capacity() <= QUEUE_KEEP_ENTRIES);
    }

    #[test]
    fn a_close_writes_what_is_queued_then_hangs_up() {
        let (outbox, client) = new_outbox(1000, usize::MAX);
        assert_eq!(outbox.push(lines("bye\n")), Ok(Pushed::Claimed));
        assert_eq!(outbox.close(), Pushed::Queued, "the claimer closes it");
        assert_eq!(outbox.push(lines("late\n")), Err(PushError::Closed));
        outbox.write_queue(&mut Vec::new());
        assert_eq!(client.lines(), ["bye"]);
        assert!(client.is_hung_up() && outbox.is_closed());

        let (idle, client) = new_outbox(1000, usize::MAX);
        assert_eq!(
            idle.close(),
            Pushed::Claimed,
            "nobody writes: the closer does"
        );
        idle.finish(Ok(Pushed::Claimed), &mut Vec::new());
        assert!(client.is_hung_up());
    }

    #[test]
    fn an_asked_reply_waits_for_room_and_the_writer_makes_it() {
        let (outbox, client) = new_outbox(10, 0);
        // The first line goes to the writer thread, which waits for room to write it; the
        // second waits in the queue, and leaves no room for the third.
        outbox.send(lines("12345678\n")).expect("open");
        eventually("the writer took the first line", || {
            outbox.lock().bytes == 0
        });
        outbox.send(lines("ABCDEFGH\n")).expect("open");
        let asker = {
            let outbox = Arc::clone(&outbox);
            std::thread::spawn(move || {
                outbox.push_wait(lines("abcdefgh\n"), Duration::from_secs(10))
            })
        };
        eventually("the asker waits", || outbox.lock().waiters == 1);
        client.make_room(1000);
        assert_eq!(asker.join().expect("asker"), Ok(()));
        let mark = outbox.mark();
        assert!(outbox.wait_written(mark, Duration::from_secs(10)));
        assert_eq!(client.lines(), ["12345678", "ABCDEFGH", "abcdefgh"]);
    }

    #[test]
    fn a_delivery_dropped_without_completing_gives_its_claims_up() {
        let (queue, client) = new_outbox(1000, usize::MAX);
        let mut delivery = Delivery::default();
        delivery.note("bob", &queue, queue.push(lines("a\n")));
        drop(delivery);
        assert_eq!(
            queue.push(lines("b\n")),
            Ok(Pushed::Claimed),
            "claimable again"
        );
        queue.write_queue(&mut Vec::new());
        assert_eq!(client.lines(), ["a", "b"], "nothing lost");
    }
}
