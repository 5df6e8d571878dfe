//! How bytes reach one client: the [`Transport`] trait, and its TCP implementation.
//!
//! This module owns the outbound socket calls for one connection: a write, the switch
//! between a write that may not wait and one that may, and hanging up. It must not queue
//! lines or decide who writes when: that is `outbox.rs`, which hands this module bytes
//! already in the wire format. A WebSocket or UDP client implements the same trait
//! (`ws_transport.rs`, `udp/outbound.rs`), so the outbox, the registry and the session
//! never see a socket.

use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;

use crate::limits::{SENDER_PATIENCE, WRITE_TIMEOUT};

/// One client's outbound side, as the outbox uses it.
pub trait Transport: Send + Sync {
    /// Appends `lines` (one or more whole lines, each ending in `\n`) to `out` in this
    /// transport's wire format: as they are for TCP, one frame per line for WebSocket.
    fn encode(&self, lines: &str, out: &mut Vec<u8>);

    /// One write of as much of `bytes` as the client takes. Impatient (the default, for a
    /// sender writing to someone else's client) it waits at most one clock tick for room
    /// and may take nothing (`WouldBlock` or `TimedOut`); patient (the client's own writer
    /// thread) it waits up to `WRITE_TIMEOUT` before the client counts as dead.
    fn write(&self, bytes: &[u8]) -> io::Result<usize>;

    /// Switches [`Transport::write`] between impatient and patient. Only whoever holds
    /// the right to write (see `outbox.rs`) calls it.
    fn set_patient(&self, patient: bool) -> io::Result<()>;

    /// Cuts the connection now. Wakes the client's reader, which then ends its session.
    fn hang_up(&self);
}

/// A TCP client. The reader thread reads from the same socket (`&TcpStream` is both `Read`
/// and `Write`); the send timeout (`SO_SNDTIMEO`) only affects writes.
pub struct TcpTransport {
    stream: Arc<TcpStream>,
}

impl TcpTransport {
    /// Wraps `stream`, impatient at first: nobody has fallen behind yet.
    pub fn new(stream: Arc<TcpStream>) -> io::Result<TcpTransport> {
        // Each write already carries everything queued; Nagle's algorithm would only add
        // delay on top of that.
        stream.set_nodelay(true)?;
        let transport = TcpTransport { stream };
        transport.set_patient(false)?;
        Ok(transport)
    }
}

impl Transport for TcpTransport {
    fn encode(&self, lines: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(lines.as_bytes());
    }

    fn write(&self, bytes: &[u8]) -> io::Result<usize> {
        loop {
            match (&*self.stream).write(bytes) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    fn set_patient(&self, patient: bool) -> io::Result<()> {
        let timeout = if patient {
            WRITE_TIMEOUT
        } else {
            SENDER_PATIENCE
        };
        self.stream.set_write_timeout(Some(timeout))
    }

    fn hang_up(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// A transport for unit tests: keeps what is written in memory, and takes at most `room`
/// bytes in all (a client that stops reading once its buffers are full).
#[cfg(test)]
pub struct MemoryTransport {
    written: std::sync::Mutex<Vec<u8>>,
    room: std::sync::atomic::AtomicUsize,
    hung_up: std::sync::atomic::AtomicBool,
    /// Writes the writer thread made (patient) and senders made (impatient).
    patient_writes: std::sync::atomic::AtomicUsize,
    patient: std::sync::atomic::AtomicBool,
}

#[cfg(test)]
impl MemoryTransport {
    pub fn new(room: usize) -> Arc<MemoryTransport> {
        Arc::new(MemoryTransport {
            written: std::sync::Mutex::new(Vec::new()),
            room: std::sync::atomic::AtomicUsize::new(room),
            hung_up: std::sync::atomic::AtomicBool::new(false),
            patient_writes: std::sync::atomic::AtomicUsize::new(0),
            patient: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Everything written so far, as lines.
    pub fn lines(&self) -> Vec<String> {
        let written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&written)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Everything written so far.
    pub fn text(&self) -> String {
        let written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&written).into_owned()
    }

    /// The client reads: `bytes` more fit.
    pub fn make_room(&self, bytes: usize) {
        self.room
            .fetch_add(bytes, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn is_hung_up(&self) -> bool {
        self.hung_up.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn patient_writes(&self) -> usize {
        self.patient_writes
            .load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[cfg(test)]
impl Transport for MemoryTransport {
    fn encode(&self, lines: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(lines.as_bytes());
    }

    fn write(&self, bytes: &[u8]) -> io::Result<usize> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.hung_up.load(SeqCst) {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let patient = self.patient.load(SeqCst);
        if patient {
            self.patient_writes.fetch_add(1, SeqCst);
        }
        // A patient write waits for room (up to 10 s, then the client counts as dead).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while patient && self.room.load(SeqCst) == 0 && !self.hung_up.load(SeqCst) {
            if std::time::Instant::now() > deadline {
                return Err(io::ErrorKind::TimedOut.into());
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if self.hung_up.load(SeqCst) {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let n = bytes.len().min(self.room.load(SeqCst));
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.room.fetch_sub(n, SeqCst);
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        written.extend_from_slice(&bytes[..n]);
        Ok(n)
    }

    fn set_patient(&self, patient: bool) -> io::Result<()> {
        self.patient
            .store(patient, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    fn hang_up(&self) {
        self.hung_up
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;
    use std::net::TcpListener;
    use std::time::Instant;

    /// A client that never reads must not hold an impatient writer: the write comes back
    /// short within a few clock ticks, never after the patient timeout.
    #[test]
    fn an_impatient_write_to_a_client_that_stopped_reading_gives_up_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server_side, _) = listener.accept().expect("accept");
        let transport = TcpTransport::new(Arc::new(server_side)).expect("transport");
        let chunk = vec![b'x'; 64 << 10];
        let mut sent = 0;
        let short = loop {
            let started = Instant::now();
            match transport.write(&chunk) {
                Ok(n) if n == chunk.len() => sent += n,
                Ok(_) => break started.elapsed(),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    break started.elapsed();
                }
                Err(e) => panic!("write failed: {e}"),
            }
            assert!(
                sent < 256 << 20,
                "256 MiB taken by a client that never reads"
            );
        };
        assert!(
            short < WRITE_TIMEOUT / 2,
            "the full socket held the writer {short:?}"
        );
        drop(client);
    }
}
