//! The UDP side (`--udp`): `nc -u` users in the same chat as TCP users, safe against forged
//! source addresses.
//!
//! This module owns the UDP socket, the dispatcher thread that reads it, the table of
//! proven addresses and the start of each UDP session's thread. It must not know the chat
//! protocol: each session runs the ordinary `session::run_paced`, reading lines from its
//! inbox (`inbound.rs`) and replying through its outbox over a `UdpTransport`
//! (`outbound.rs`). Before an address has proved it is real (`proof.rs`) nothing is kept
//! for it: a datagram from it gets one short reply, or a session if it carries the code.
//!
//! ```text
//!   dispatcher thread: recv_from ─┬─ proven address ──> its Inlet (bounded, never waited on)
//!                                 │                        │
//!                                 ├─ valid code ──spawn──> session thread: UdpLines ->
//!                                 │   (admission)          session::run_paced -> Outbox ->
//!                                 │                        UdpTransport: send_to, packed
//!                                 └─ anything else: one reply of at most 3x its size,
//!                                    nothing remembered
//! ```

mod inbound;
mod outbound;
mod proof;

use std::collections::HashMap;
use std::fmt;
use std::io::{self, ErrorKind};
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Instant;

use crate::limits::{ACCEPT_BACKOFF, CLIENT_THREAD_STACK, SENDER_PATIENCE, UDP_LOWEST_REPLY_PORT};
use crate::line_reader::LineSource;
use crate::log;
use crate::outbox::Outbox;
use crate::protocol::{ErrorReply, Reply};
use crate::session::{self, Pacing};
use crate::shared::Shared;
use crate::stats;
use crate::threads::CLIENT_THREADS;
use inbound::{Arrival, Delivered, Inlet, Timing, UdpLines};
use outbound::UdpTransport;
use proof::{Check, Key, Windows};

/// Large enough for any UDP datagram (at most 65,507 bytes of payload over IPv4).
const RECEIVE_BUFFER: usize = 64 * 1024;

/// How often to pick another port when the system gave TCP one that UDP cannot have.
const BIND_TRIES: usize = 20;

/// Why the listening sockets could not be made.
#[derive(Debug)]
pub enum BindError {
    Tcp(io::Error),
    Udp { addr: SocketAddr, source: io::Error },
    Key(io::Error),
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindError::Tcp(e) => write!(f, "{e}"),
            BindError::Udp { addr, source } => {
                let (ip, port) = (addr.ip(), addr.port());
                write!(f, "cannot listen for UDP on address {ip} port {port}: ")?;
                match source.kind() {
                    ErrorKind::AddrInUse => write!(
                        f,
                        "address already in use; another program uses that UDP port: stop it \
                         (see `ss -lunp`) or choose another port"
                    ),
                    _ => write!(f, "{source}"),
                }
            }
            BindError::Key(e) => write!(f, "cannot read /dev/urandom for the UDP code key: {e}"),
        }
    }
}

impl std::error::Error for BindError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BindError::Tcp(e) | BindError::Udp { source: e, .. } | BindError::Key(e) => Some(e),
        }
    }
}

/// A bound UDP socket with its code key, ready to [`start`](Listener::start).
pub struct Listener {
    socket: UdpSocket,
    key: Key,
    port: u16,
}

/// Binds the TCP listener on `addr` and, if `udp`, a UDP socket on the same port number.
/// When the system picks the port (port 0) it may pick one that is free for TCP and taken
/// for UDP; then both are bound again on another.
pub fn bind_with_tcp(
    addr: SocketAddr,
    udp: bool,
) -> Result<(TcpListener, Option<Listener>), BindError> {
    let mut tries = 0;
    loop {
        let tcp = TcpListener::bind(addr).map_err(BindError::Tcp)?;
        if !udp {
            return Ok((tcp, None));
        }
        let port = tcp.local_addr().map_err(BindError::Tcp)?.port();
        let udp_addr = SocketAddr::new(addr.ip(), port);
        match UdpSocket::bind(udp_addr) {
            Ok(socket) => {
                let key = Key::random().map_err(BindError::Key)?;
                return Ok((tcp, Some(Listener { socket, key, port })));
            }
            Err(e)
                if addr.port() == 0 && e.kind() == ErrorKind::AddrInUse && tries < BIND_TRIES =>
            {
                tries += 1;
            }
            Err(source) => {
                return Err(BindError::Udp {
                    addr: udp_addr,
                    source,
                });
            }
        }
    }
}

impl Listener {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the dispatcher thread. `admit` applies the connection limits shared with TCP
    /// (`--max-clients`, `--max-per-ip`) to a proven address; the session holds what it
    /// returns until it ends.
    pub fn start<T, A>(self, shared: Arc<Shared>, admit: A)
    where
        T: Send + 'static,
        A: Fn(IpAddr) -> Result<T, ErrorReply<'static>> + Send + 'static,
    {
        // A send that finds the socket's buffer full waits this long, then that datagram
        // is lost: nobody else waits for one slow path.
        if let Err(e) = self.socket.set_write_timeout(Some(SENDER_PATIENCE)) {
            log::warn("udp_socket_setup_failed", &[("error", &e)]);
        }
        let config = &shared.config;
        log::info(
            "udp_start",
            &[
                ("port", &self.port),
                ("idle_s", &config.udp_idle.as_secs()),
                ("code_window_s", &config.udp_code_window.as_secs()),
            ],
        );
        let windows = Windows::new(Instant::now(), config.udp_code_window);
        let udp = Arc::new(Udp {
            socket: Arc::new(self.socket),
            key: self.key,
            windows,
            shared,
            sessions: Mutex::new(HashMap::new()),
        });
        let spawned = thread::Builder::new()
            .name("udp".into())
            .stack_size(CLIENT_THREAD_STACK)
            .spawn(move || udp.dispatch(&admit));
        if let Err(e) = spawned {
            log::error("thread_spawn_failed", &[("what", &"udp"), ("error", &e)]);
        }
    }
}

/// What the dispatcher and every UDP session thread share.
struct Udp {
    socket: Arc<UdpSocket>,
    key: Key,
    windows: Windows,
    shared: Arc<Shared>,
    /// The proven addresses, each with its session's inbox. Only the dispatcher adds; a
    /// session removes its own entry as it ends ([`Slot`]).
    sessions: Mutex<HashMap<SocketAddr, Inlet>>,
}

impl Udp {
    /// Held for a lookup, an insert or a removal, never across a syscall (a delivery may
    /// wake the session's thread: it happens after the lookup, on a clone of the inlet).
    fn sessions(&self) -> MutexGuard<'_, HashMap<SocketAddr, Inlet>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The dispatcher thread: reads every datagram and sends each where it belongs.
    fn dispatch<T, A>(self: Arc<Self>, admit: &A)
    where
        T: Send + 'static,
        A: Fn(IpAddr) -> Result<T, ErrorReply<'static>>,
    {
        let mut buf = vec![0u8; RECEIVE_BUFFER];
        loop {
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) => self.on_datagram(&buf[..n], from, admit),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    log::error("udp_receive_failed", &[("error", &e)]);
                    thread::sleep(ACCEPT_BACKOFF);
                }
            }
        }
    }

    fn on_datagram<T, A>(self: &Arc<Self>, datagram: &[u8], from: SocketAddr, admit: &A)
    where
        T: Send + 'static,
        A: Fn(IpAddr) -> Result<T, ErrorReply<'static>>,
    {
        let session = self.sessions().get(&from).cloned();
        if let Some(inlet) = session {
            if inlet.deliver(datagram) == Delivered::Dropped {
                log::debug("udp_inbox_full", &[("peer", &from)]);
            }
            return;
        }
        if !may_answer(from, datagram) {
            return;
        }
        let window = self.windows.at(Instant::now());
        match proof::check(&self.key, from, window, datagram) {
            Check::Valid => self.open(from, datagram, admit),
            check => self.ask_for_code(from, datagram.len(), &check, window),
        }
    }

    /// The one reply an unproven address gets: the code, within the size bound.
    fn ask_for_code(&self, to: SocketAddr, payload: usize, check: &Check, window: u64) {
        let code = proof::code(&self.key, to, window);
        let header = proof::header_bytes(to);
        if let Some(reply) = proof::reply(check, &code, payload, header) {
            self.send(to, reply.as_bytes());
        }
        log::debug("udp_code_asked", &[("peer", &to), ("bytes_in", &payload)]);
    }

    /// `peer` proved its address: admits it and starts its session thread. The lines that
    /// came after the code are the session's first input.
    fn open<T, A>(self: &Arc<Self>, peer: SocketAddr, datagram: &[u8], admit: &A)
    where
        T: Send + 'static,
        A: Fn(IpAddr) -> Result<T, ErrorReply<'static>>,
    {
        let ticket = match admit(peer.ip()) {
            Ok(ticket) => ticket,
            Err(refusal) => {
                log::warn(
                    "connection_refused",
                    &[("peer", &peer), ("via", &"udp"), ("reason", &refusal)],
                );
                self.send(peer, Reply::Error(refusal).to_line().as_bytes());
                return;
            }
        };
        let code = String::from_utf8_lossy(proof::first_line(datagram).trim_ascii()).into_owned();
        let first = proof::after_first_line(datagram).to_vec();
        let (inlet, receiver) = inbound::inbox();
        self.sessions().insert(peer, inlet.clone());
        let slot = Slot {
            udp: Arc::clone(self),
            peer,
        };
        let spawned = CLIENT_THREADS.spawn("udp-client", move || {
            let _ticket = ticket;
            slot.serve(inlet, receiver, code, &first);
        });
        // A refused spawn dropped the slot and the ticket: the address is unproven again.
        if let Err(e) = spawned {
            log::error(
                "thread_spawn_failed",
                &[("peer", &peer), ("via", &"udp"), ("error", &e)],
            );
            let full = Reply::Error(ErrorReply::ServerFull).to_line();
            self.send(peer, full.as_bytes());
        }
    }

    /// One datagram, best effort: one the kernel refuses is lost alone.
    fn send(&self, to: SocketAddr, datagram: &[u8]) {
        if let Err(e) = self.socket.send_to(datagram, to) {
            log::debug("udp_send_failed", &[("peer", &to), ("error", &e)]);
        }
    }
}

/// Whether an unproven datagram may get a reply at all. Not from a well-known port, nor
/// when it is itself a server's reply (see [`UDP_LOWEST_REPLY_PORT`] and
/// [`proof::is_reply`]): either could start two servers answering each other forever. Nor
/// to an address no one can own.
fn may_answer(from: SocketAddr, datagram: &[u8]) -> bool {
    let ip = from.ip();
    let nobody = ip.is_unspecified()
        || ip.is_multicast()
        || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    from.port() >= UDP_LOWEST_REPLY_PORT && !nobody && !proof::is_reply(datagram)
}

/// One UDP session's place in the table of proven addresses. Dropping it, when the session
/// ends (a panic included) or its thread could not start, takes the address out.
struct Slot {
    udp: Arc<Udp>,
    peer: SocketAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.udp.sessions().remove(&self.peer);
    }
}

impl Slot {
    /// Body of a UDP session's thread: the ordinary session over this address's inbox and
    /// a UDP transport, then the outbox closed as for TCP. A panic is caught and logged;
    /// the guards in `session.rs` have signed the user out while unwinding.
    fn serve(self, inlet: Inlet, receiver: Receiver<Arrival>, code: String, first: &[u8]) {
        let (peer, shared) = (self.peer, &*self.udp.shared);
        let config = &shared.config;
        stats::connection_opened();
        log::info("connect", &[("peer", &peer), ("via", &"udp")]);
        let socket = Arc::clone(&self.udp.socket);
        let transport = UdpTransport::new(socket, peer, inlet.clone());
        let outbox = Arc::new(Outbox::new(config.sendq_bytes, Arc::new(transport)));
        let timing = Timing {
            idle: config.udp_idle,
            rate_per_sec: config.rate_per_sec,
            burst: config.rate_burst,
        };
        let mut lines = UdpLines::new(receiver, &inlet, Arc::clone(&outbox), timing, code, first);
        lines.set_deadline(Some(Instant::now() + config.sign_in_timeout));
        let ran = panic::catch_unwind(AssertUnwindSafe(|| {
            session::run_paced(shared, peer, &mut lines, &outbox, Pacing::Upstream)
        }));
        let reason = match ran {
            Ok(_) if lines.ended_idle() => "idle timeout".to_string(),
            Ok(ending) => ending.to_string(),
            Err(_) => {
                log::error("session_panicked", &[("peer", &peer)]);
                "panic in session thread".to_string()
            }
        };
        // The last lines (a goodbye) go out, then the session's inbox is closed.
        outbox.finish(Ok(outbox.close()), &mut Vec::new());
        drop(self);
        stats::connection_closed();
        log::info(
            "disconnect",
            &[("peer", &peer), ("via", &"udp"), ("reason", &reason)],
        );
    }
}
