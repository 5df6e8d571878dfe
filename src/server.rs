//! The TCP transport: the listening socket, the accept loop, and two threads per client.
//!
//! This module owns everything about sockets and threads: binding, admitting or refusing a
//! connection (`--max-clients`, `--max-per-ip`), surviving resource exhaustion, and wiring
//! each accepted socket to a session (reader thread) and an outbox (writer thread). It must
//! not know the protocol: it hands lines to `session.rs` and bytes from `outbox.rs`.
//!
//! ```text
//!   accept loop ──spawn──> reader thread: LineReader -> session::run -> registry (lock)
//!                                 │ spawns                          │ pushes Arc<str>
//!                                 v                                 v
//!                          writer thread  <─────────────────  Outbox (SendQ)
//!                          run_writer: one write() per batch -> the same socket
//! ```
//!
//! It also gives each outbox the socket's second way in, for a sender writing through to
//! an idle writer's client (`sender_write`: one `write` with a 1 ms timeout).
//!
//! Two background threads run beside them: the stats logger (one log line a minute) and the
//! notice flusher (wakes writers that sleep on batched join/leave notices).

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::limits::{
    ACCEPT_BACKOFF, CLIENT_THREAD_STACK, NOTICE_FLUSH_INTERVAL, SENDER_PATIENCE, STATS_INTERVAL,
    WRITE_TIMEOUT,
};
use crate::line_reader::{Line, LineReader, LineSource};
use crate::log;
use crate::outbox::{self, Hangup, Outbox};
use crate::protocol::{ErrorReply, Reply};
use crate::registry;
use crate::session;
use crate::shared::Shared;
use crate::stats;
use crate::store::{Store, StoreError};

/// Why the server could not start. `Display` is the one-line message for stderr.
#[derive(Debug)]
pub enum StartError {
    Bind { addr: SocketAddr, source: io::Error },
    Store(StoreError),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Bind { addr, source } => {
                let reason = match source.kind() {
                    ErrorKind::AddrInUse => "address already in use".to_string(),
                    ErrorKind::PermissionDenied => "permission denied".to_string(),
                    ErrorKind::AddrNotAvailable => "address not available".to_string(),
                    _ => source.to_string(),
                };
                let hint = match source.kind() {
                    ErrorKind::AddrInUse => {
                        "; another program listens there: stop it (see `ss -ltnp`) or choose another port"
                    }
                    ErrorKind::PermissionDenied => "; ports below 1024 need privileges",
                    _ => "",
                };
                let (ip, port) = (addr.ip(), addr.port());
                write!(
                    f,
                    "cannot listen on address {ip} port {port}: {reason}{hint}"
                )
            }
            StartError::Store(e) => write!(f, "cannot open the data directory: {e}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Bind { source, .. } => Some(source),
            StartError::Store(e) => Some(e),
        }
    }
}

/// A bound, loaded server, ready to accept.
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
    admission: Arc<Admission>,
}

impl Server {
    /// Opens the store (which refuses a second server on the same directory), then binds.
    pub fn bind(config: Config) -> Result<Server, StartError> {
        let (store, registry) = Store::open(&config.data_dir).map_err(StartError::Store)?;
        let addr = SocketAddr::new(config.bind, config.port);
        let listener =
            TcpListener::bind(addr).map_err(|source| StartError::Bind { addr, source })?;
        let admission = Arc::new(Admission::new(config.max_clients, config.max_per_ip));
        let shared = Arc::new(Shared::new(config, store, registry));
        Ok(Server {
            listener,
            shared,
            admission,
        })
    }

    /// The address actually bound (port 0 becomes a real port).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections forever.
    pub fn run(self) {
        self.log_start();
        spawn_stats_logger(Arc::clone(&self.shared));
        spawn_notice_flusher(Arc::clone(&self.shared));
        let mut reserve = open_reserve_fd();
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer),
                Err(e) => self.on_accept_error(&e, &mut reserve),
            }
        }
    }

    fn log_start(&self) {
        let config = &self.shared.config;
        let addr = self
            .local_addr()
            .map_or_else(|e| e.to_string(), |a| a.to_string());
        let accounts = registry::lock(&self.shared.registry).account_count();
        log::info(
            "start",
            &[
                ("addr", &addr),
                ("data_dir", &self.shared.store.dir().display()),
                ("accounts", &accounts),
                ("max_clients", &config.max_clients),
                ("max_per_ip", &config.max_per_ip),
                ("sign_in_timeout_s", &config.sign_in_timeout.as_secs()),
                ("rate", &config.rate_per_sec),
                ("burst", &config.rate_burst),
                ("sendq", &config.sendq_bytes),
                ("kdf_iterations", &config.kdf_iterations),
            ],
        );
        if config.kdf_iterations < crate::limits::DEFAULT_KDF_ITERATIONS {
            log::warn(
                "kdf_iterations_lowered",
                &[
                    ("iterations", &config.kdf_iterations),
                    ("note", &"insecure; for tests only"),
                ],
            );
        }
    }

    /// Out of descriptors (EMFILE/ENFILE) the pending connection cannot even be accepted,
    /// so `accept` would fail again at once and spin. The classic cure: keep one spare
    /// descriptor, free it, accept and close the connection, then take the spare back.
    ///
    /// Linux fails `accept` with EMFILE even when no connection is pending, so the accept
    /// below may wait for the next one, on the spare's slot. By the time it arrives, clients
    /// may have left: if the spare can be taken back as well, there is room, and the new
    /// connection is admitted instead of shed.
    fn on_accept_error(&self, e: &io::Error, reserve: &mut Option<File>) {
        log::error("accept_failed", &[("error", e)]);
        let out_of_fds = matches!(e.raw_os_error(), Some(23 | 24));
        if out_of_fds && reserve.take().is_some() {
            if let Ok((stream, peer)) = self.listener.accept() {
                *reserve = open_reserve_fd();
                if reserve.is_some() {
                    self.admit(stream, peer);
                    return;
                }
                log::warn(
                    "connection_shed",
                    &[("peer", &peer), ("reason", &"out of file descriptors")],
                );
                refuse(&stream, ErrorReply::ServerFull);
            }
            if reserve.is_none() {
                *reserve = open_reserve_fd();
            }
        }
        thread::sleep(ACCEPT_BACKOFF);
    }

    /// Applies the connection limits, then starts the client's threads.
    fn admit(&self, stream: TcpStream, peer: SocketAddr) {
        let ticket = match Admission::enter(&self.admission, peer.ip()) {
            Ok(ticket) => ticket,
            Err(refusal) => {
                log::warn(
                    "connection_refused",
                    &[("peer", &peer), ("reason", &refusal)],
                );
                refuse(&stream, refusal);
                return;
            }
        };
        let shared = Arc::clone(&self.shared);
        let stream = Arc::new(stream);
        let for_thread = Arc::clone(&stream);
        let spawned = thread::Builder::new()
            .name("client".into())
            .stack_size(CLIENT_THREAD_STACK)
            .spawn(move || serve_client(&shared, for_thread, peer, ticket));
        if let Err(e) = spawned {
            log::error("thread_spawn_failed", &[("peer", &peer), ("error", &e)]);
            refuse(&stream, ErrorReply::ServerFull);
            thread::sleep(ACCEPT_BACKOFF);
        }
    }
}

/// Sends a one-line refusal without ever blocking the accept loop, then closes.
fn refuse(stream: &TcpStream, why: ErrorReply) {
    let _ = stream.set_nonblocking(true);
    let _ = (&*stream).write_all(Reply::Error(why).to_line().as_bytes());
    let _ = stream.shutdown(Shutdown::Both);
}

fn open_reserve_fd() -> Option<File> {
    File::open("/dev/null").ok()
}

/// Body of a client's reader thread: start its writer, run its session, clean up. A panic
/// in the session is caught here, logged, and treated like any other ending; the guards in
/// `session.rs` have already signed the user out while unwinding.
fn serve_client(shared: &Shared, stream: Arc<TcpStream>, peer: SocketAddr, _ticket: Ticket) {
    stats::connection_opened();
    log::info("connect", &[("peer", &peer)]);
    // The writer already batches everything queued into one write; Nagle's algorithm
    // would only add delay on top of that.
    let _ = stream.set_nodelay(true);
    let hangup_stream = Arc::clone(&stream);
    let hangup: Hangup = Box::new(move || {
        let _ = hangup_stream.shutdown(Shutdown::Both);
    });
    // A peer that stops reading must not pin the writer thread forever.
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let doorbell = shared.doorbells.assign();
    let outbox = Outbox::with_doorbell(shared.config.sendq_bytes, hangup, doorbell)
        .with_sender_write(sender_write(Arc::clone(&stream)));
    let outbox = Arc::new(outbox);
    let writer = match spawn_writer(Arc::clone(&outbox), Arc::clone(&stream), peer) {
        Ok(writer) => writer,
        Err(e) => {
            log::error("thread_spawn_failed", &[("peer", &peer), ("error", &e)]);
            refuse(&stream, ErrorReply::ServerFull);
            stats::connection_closed();
            return;
        }
    };
    let mut lines = TcpLines::new(&stream);
    lines.set_deadline(Some(Instant::now() + shared.config.sign_in_timeout));
    let ran = panic::catch_unwind(AssertUnwindSafe(|| {
        session::run(shared, peer, &mut lines, &outbox)
    }));
    let reason = match &ran {
        Ok(ending) if outbox.is_aborted() => format!("{ending} (connection cut)"),
        Ok(ending) => ending.to_string(),
        Err(_) => "panic in session thread".to_string(),
    };
    if ran.is_err() {
        log::error("session_panicked", &[("peer", &peer)]);
    }
    outbox.close();
    let _ = writer.join();
    let _ = stream.shutdown(Shutdown::Both);
    stats::connection_closed();
    log::info("disconnect", &[("peer", &peer), ("reason", &reason)]);
}

fn spawn_writer(
    outbox: Arc<Outbox>,
    stream: Arc<TcpStream>,
    peer: SocketAddr,
) -> io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name("client-writer".into())
        .stack_size(CLIENT_THREAD_STACK)
        .spawn(move || {
            if let Err(e) = outbox::run_writer(&outbox, &*stream) {
                log::debug("write_failed", &[("peer", &peer), ("error", &e)]);
            }
        })
}

/// How a sender writes to this client itself (see `Outbox::write_through`): the socket's
/// write timeout, shared with the writer thread, is lowered to [`SENDER_PATIENCE`] for one
/// `write` and put back. Only whoever holds the socket (the outbox says who) changes it.
fn sender_write(stream: Arc<TcpStream>) -> outbox::SenderWrite {
    Box::new(move |bytes| {
        stream.set_write_timeout(Some(SENDER_PATIENCE))?;
        let written = loop {
            match (&*stream).write(bytes) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        written
    })
}

/// The sign-in deadline for a TCP socket: before each read the socket's read timeout is set
/// to the time left, so even a client trickling one byte at a time runs out of time.
struct Deadline<'a> {
    stream: &'a TcpStream,
    until: Option<Instant>,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(until) = self.until {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    ErrorKind::TimedOut,
                    "sign-in deadline passed",
                ));
            }
            self.stream.set_read_timeout(Some(left))?;
        }
        let mut stream = self.stream;
        stream.read(buf)
    }
}

/// A TCP socket as a [`LineSource`] for the session.
struct TcpLines<'a> {
    reader: LineReader<Deadline<'a>>,
}

impl<'a> TcpLines<'a> {
    fn new(stream: &'a TcpStream) -> Self {
        TcpLines {
            reader: LineReader::new(Deadline {
                stream,
                until: None,
            }),
        }
    }
}

impl LineSource for TcpLines<'_> {
    fn next_line(&mut self) -> io::Result<Option<Line>> {
        self.reader.read_line()
    }

    fn line_ready(&self) -> bool {
        self.reader.line_ready()
    }

    fn set_deadline(&mut self, deadline: Option<Instant>) {
        let source = self.reader.get_mut();
        source.until = deadline;
        if deadline.is_none() {
            let _ = source.stream.set_read_timeout(None);
        }
    }
}

/// Counts connections, in total and per address, to enforce the connection limits.
struct Admission {
    max_total: usize,
    /// 0 = no per-address limit.
    max_per_ip: usize,
    counts: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection; dropping it frees its place.
struct Ticket {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Admission {
    fn new(max_total: usize, max_per_ip: usize) -> Self {
        Admission {
            max_total,
            max_per_ip,
            counts: Mutex::new((0, HashMap::new())),
        }
    }

    fn enter(admission: &Arc<Admission>, ip: IpAddr) -> Result<Ticket, ErrorReply<'static>> {
        let mut counts = admission
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (total, per_ip) = &mut *counts;
        if *total >= admission.max_total {
            return Err(ErrorReply::ServerFull);
        }
        let here = per_ip.entry(ip).or_insert(0);
        if admission.max_per_ip != 0 && *here >= admission.max_per_ip {
            return Err(ErrorReply::TooManyFromAddress);
        }
        *here += 1;
        *total += 1;
        Ok(Ticket {
            admission: Arc::clone(admission),
            ip,
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut counts = self
            .admission
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (total, per_ip) = &mut *counts;
        *total -= 1;
        if let Some(here) = per_ip.get_mut(&self.ip) {
            *here -= 1;
            if *here == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// Runs `tick` every `interval` on a background thread named `name`, for as long as the
/// server runs. A failure to start it is logged, not fatal: chat works without it.
fn spawn_periodic(name: &'static str, interval: Duration, mut tick: impl FnMut() + Send + 'static) {
    let spawned = thread::Builder::new()
        .name(name.into())
        .stack_size(CLIENT_THREAD_STACK)
        .spawn(move || {
            loop {
                thread::sleep(interval);
                tick();
            }
        });
    if let Err(e) = spawned {
        log::error("thread_spawn_failed", &[("what", &name), ("error", &e)]);
    }
}

/// Every [`NOTICE_FLUSH_INTERVAL`], pushes the join and leave notices a large room kept
/// back (`Registry::flush_notices`), then rings the doorbells behind which notices have
/// waited longer than the notice delay (see `registry::notice_delay`), so no notice waits
/// much longer. It visits the doorbells, not the users, unless notices were kept: on a
/// server with 10,000 users, visiting every outbox ten times a second cost 5% of a core
/// even when idle.
fn spawn_notice_flusher(shared: Arc<Shared>) {
    spawn_periodic("notice-flusher", NOTICE_FLUSH_INTERVAL, move || {
        let (online, delivery) = {
            let mut registry = registry::lock(&shared.registry);
            (registry.online_count(), registry.flush_notices())
        };
        shared
            .doorbells
            .ring_waiting(registry::notice_delay(online));
        // Last: it may wait for writers short of CPU, which then only stretches the tick.
        delivery.complete();
    });
}

/// Logs one stats line per interval: users online, connections, traffic, queue drops.
fn spawn_stats_logger(shared: Arc<Shared>) {
    spawn_periodic("stats", STATS_INTERVAL, move || {
        let online = registry::lock(&shared.registry).online_count();
        let s = stats::snapshot();
        log::info(
            "stats",
            &[
                ("online", &online),
                ("connections", &s.connections),
                ("messages_relayed", &s.messages_relayed),
                ("bytes_out", &s.bytes_out),
                ("queue_drops", &s.queue_drops),
            ],
        );
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A client that stopped reading must not hold a sender for the writer's 30 s: the
    /// sender's write comes back short within its patience, and the socket's timeout is
    /// the writer's again afterwards.
    #[test]
    fn a_senders_write_to_a_client_that_stopped_reading_gives_up_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server_side, _) = listener.accept().expect("accept");
        let stream = Arc::new(server_side);
        stream
            .set_write_timeout(Some(WRITE_TIMEOUT))
            .expect("timeout");
        let write = sender_write(Arc::clone(&stream));
        let chunk = vec![b'x'; 64 << 10];
        let mut sent = 0;
        let short = loop {
            let started = Instant::now();
            match write(&chunk) {
                Ok(n) if n == chunk.len() => sent += n,
                Ok(_) => break started.elapsed(),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break started.elapsed(),
                Err(e) => panic!("write failed: {e}"),
            }
            assert!(
                sent < 256 << 20,
                "256 MiB taken by a client that never reads"
            );
        };
        assert!(
            short < WRITE_TIMEOUT / 2,
            "the full socket held the sender {short:?}"
        );
        assert_eq!(
            stream.write_timeout().expect("timeout"),
            Some(WRITE_TIMEOUT)
        );
        drop(client);
    }
}
