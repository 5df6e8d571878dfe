//! A client's writer thread: it exists only while its client is behind.
//!
//! This module owns what happens once a client's kernel did not take everything a sender
//! wrote (see `outbox.rs`): a thread of the client's own takes the right to write, writes
//! the backlog with writes that may wait, and, once the queue has stayed empty for
//! [`WRITER_LINGER`](crate::limits::WRITER_LINGER), gives the right back to the senders and ends. It must not decide who
//! writes when a client keeps up; that is the outbox's rule.

use std::io::ErrorKind;
use std::sync::{Arc, PoisonError};
use std::time::Instant;

use super::{Outbox, State, Writer};
use crate::log;
use crate::stats;
use crate::threads::CLIENT_THREADS;
use crate::transport::Transport;

/// The writer thread writes at most this much per call, so that a client that reads, even
/// slowly, shows progress (at least 80 KB/s within [`WRITER_STUCK_AFTER`](crate::limits::WRITER_STUCK_AFTER)).
const WRITE_CHUNK: usize = 4 * 1024;

impl Outbox {
    /// The client fell behind: from now on its own thread writes, with writes that may
    /// wait. If no thread can be started (the server is at its thread budget), the client
    /// is cut rather than left with lines nobody writes.
    pub(super) fn start_writer_thread(self: &Arc<Self>) {
        {
            let mut queue = self.lock();
            queue.writer = Writer::Thread;
            // The client took bytes until now; senders may wait for it from here on.
            queue.last_progress = Some(Instant::now());
        }
        let outbox = Arc::clone(self);
        if let Err(e) = CLIENT_THREADS.spawn("client-writer", move || outbox.run_writer()) {
            log::warn(
                "writer_unavailable",
                &[("error", &e), ("action", &"disconnect")],
            );
            self.hang_up();
        }
    }

    /// The body of a client's writer thread: write the backlog with patient writes until
    /// the queue has stayed empty for [`WRITER_LINGER`](crate::limits::WRITER_LINGER), then
    /// give the right to write back to the senders and end. A client that fell behind once
    /// is likely to again soon, and starting a thread costs more than waking one.
    fn run_writer(&self) {
        if self.transport.set_patient(true).is_err() {
            self.hang_up();
            return;
        }
        let mut buf = Vec::new();
        while let Some(entries) = self.next_batch(&mut buf) {
            let result = buf
                .chunks(WRITE_CHUNK)
                .try_for_each(|chunk| self.write_chunk(chunk));
            if let Err(e) = result {
                log::debug("write_failed", &[("error", &e)]);
                self.hang_up();
                return;
            }
            let mut queue = self.lock();
            queue.wrote(entries, &[]);
            self.signal_progress(&queue);
            drop(queue);
            buf.clear();
        }
    }

    /// For the writer thread: one chunk of a batch, written patiently, then noted as
    /// progress, which senders waiting for this client look at.
    fn write_chunk(&self, chunk: &[u8]) -> std::io::Result<()> {
        write_all(&*self.transport, chunk)?;
        stats::record_bytes_out(chunk.len());
        let mut queue = self.lock();
        queue.last_progress = Some(Instant::now());
        self.signal_progress(&queue);
        Ok(())
    }

    /// For the writer thread: waits for lines and encodes them all into `buf`. `None` when
    /// the thread should end: the connection is closed, or nothing came for a while and the
    /// right to write went back to the senders.
    fn next_batch(&self, buf: &mut Vec<u8>) -> Option<u64> {
        let mut queue = self.lock();
        loop {
            if queue.state == State::Closed {
                return None;
            }
            if !queue.is_empty() {
                queue.writer = Writer::Thread;
                return Some(queue.take(&*self.transport, buf));
            }
            if queue.state == State::Closing {
                drop(queue);
                self.hang_up();
                return None;
            }
            queue.writer = Writer::ThreadAsleep;
            let (woken, timeout) = self
                .lines_queued
                .wait_timeout(queue, self.linger)
                .unwrap_or_else(PoisonError::into_inner);
            queue = woken;
            if timeout.timed_out() && queue.is_empty() && queue.state == State::Open {
                drop(queue);
                if self.give_back() {
                    return None;
                }
                queue = self.lock();
            }
        }
    }

    /// The writer thread lets go: its transport becomes impatient again *before* anyone
    /// else may write to it. False if a line came meanwhile and the thread must stay.
    fn give_back(&self) -> bool {
        if self.transport.set_patient(false).is_err() {
            self.hang_up();
            return true;
        }
        let mut queue = self.lock();
        if queue.is_empty() && queue.state == State::Open {
            queue.writer = Writer::Nobody;
            return true;
        }
        queue.writer = Writer::Thread;
        drop(queue);
        if self.transport.set_patient(true).is_err() {
            self.hang_up();
            return true;
        }
        false
    }
}

/// Writes all of `bytes` with the transport's patient writes.
fn write_all(transport: &dyn Transport, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match transport.write(bytes) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n.min(bytes.len())..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
