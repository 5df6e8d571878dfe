//! The TCP side: the listening socket, the accept loop, and one thread per client.
//!
//! This module owns everything about accepting: binding, admitting or refusing a connection
//! (`--max-clients`, `--max-per-ip`, the machine's capacity), surviving resource exhaustion,
//! and running each accepted socket on its own thread. It must not know the protocols:
//! the client's thread hands the socket to `connection.rs`, which tells a netcat user from
//! a browser and runs the session; the session's replies reach the socket through the
//! client's `Outbox` (`outbox.rs`) and its transport (`transport.rs`, `ws_transport.rs`).
//!
//! ```text
//!   accept loop ──spawn──> client thread: arrive -> connection::open_session (chat or HTTP)
//!                            LineReader or WsLines -> session::run -> registry (lock)
//!                                                                      │ pushes lines
//!                          the client's Outbox <───────────────────────┘
//!                          written by the sender that found it idle, after the lock,
//!                          or by the client's writer thread while it has a backlog
//! ```
//!
//! Before a client's session starts, its thread runs the connection's preamble
//! (`arrival.rs`): the PROXY protocol header of a trusted proxy, then the per-address
//! admission (`admission.rs`) of a proxied client, whose address is known only then. Then
//! `connection.rs` looks at the client's own first bytes.
//!
//! One background thread runs beside them: the stats logger (one log line a minute). With
//! `--udp`, `udp.rs` binds a UDP socket on the same port number and runs its own dispatcher.

use std::fmt;
use std::fs::File;
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::admission::{Admission, Ticket, refuse};
use crate::arrival::arrive;
use crate::capacity::{Capacity, Machine};
use crate::config::Config;
use crate::connection;
use crate::limits::{ACCEPT_BACKOFF, CLIENT_THREAD_STACK, STATS_INTERVAL};
use crate::log;
use crate::protocol::ErrorReply;
use crate::proxy;
use crate::registry;
use crate::shared::Shared;
use crate::stats;
use crate::store::{Store, StoreError};
use crate::threads::CLIENT_THREADS;
use crate::udp;

/// Why the server could not start. `Display` is the one-line message for stderr.
#[derive(Debug)]
pub enum StartError {
    Bind { addr: SocketAddr, source: io::Error },
    Udp(udp::BindError),
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
            StartError::Udp(e) => write!(f, "{e}"),
            StartError::Store(e) => write!(f, "cannot open the data directory: {e}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Bind { source, .. } => Some(source),
            StartError::Udp(e) => Some(e),
            StartError::Store(e) => Some(e),
        }
    }
}

/// A bound, loaded server, ready to accept.
pub struct Server {
    listener: TcpListener,
    udp: Option<udp::Listener>,
    shared: Arc<Shared>,
    admission: Arc<Admission>,
    capacity: Capacity,
}

impl Server {
    /// Opens the store (which refuses a second server on the same directory), then binds.
    pub fn bind(config: Config) -> Result<Server, StartError> {
        let (store, registry) = Store::open(&config.data_dir).map_err(StartError::Store)?;
        let addr = SocketAddr::new(config.bind, config.port);
        let (listener, udp) = udp::bind_with_tcp(addr, config.udp).map_err(|e| match e {
            udp::BindError::Tcp(source) => StartError::Bind { addr, source },
            other => StartError::Udp(other),
        })?;
        let capacity = Capacity::of(&Machine::read(), config.sendq_bytes as u64);
        CLIENT_THREADS.set(usize::try_from(capacity.threads).unwrap_or(usize::MAX));
        let max_clients = usize::try_from(capacity.clients)
            .unwrap_or(usize::MAX)
            .min(config.max_clients);
        let admission = Arc::new(Admission::new(
            max_clients,
            config.max_per_ip,
            config.max_per_loopback,
        ));
        let shared = Arc::new(Shared::new(config, store, registry));
        Ok(Server {
            listener,
            udp,
            shared,
            admission,
            capacity,
        })
    }

    /// The address actually bound (port 0 becomes a real port).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The UDP port, with `--udp`: the TCP port's number.
    pub fn udp_port(&self) -> Option<u16> {
        self.udp.as_ref().map(udp::Listener::port)
    }

    /// Accepts connections forever.
    pub fn run(mut self) {
        self.log_start();
        spawn_stats_logger(Arc::clone(&self.shared));
        if let Some(udp) = self.udp.take() {
            let admission = Arc::clone(&self.admission);
            udp.start(Arc::clone(&self.shared), move |ip| {
                Admission::enter(&admission, Some(ip))
            });
        }
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
        let trusted_proxies = match &config.trusted_proxies[..] {
            [] => "none".to_string(),
            ranges => ranges
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join(","),
        };
        log::info(
            "start",
            &[
                ("addr", &addr),
                ("data_dir", &self.shared.store.dir().display()),
                ("accounts", &accounts),
                ("max_clients", &self.admission.max_total),
                ("max_per_ip", &config.max_per_ip),
                ("max_per_loopback", &config.max_per_loopback),
                ("trusted_proxies", &trusted_proxies),
                ("sign_in_timeout_s", &config.sign_in_timeout.as_secs()),
                ("rate", &config.rate_per_sec),
                ("burst", &config.rate_burst),
                ("sendq", &config.sendq_bytes),
                ("kdf_iterations", &config.kdf_iterations),
            ],
        );
        self.log_capacity();
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

    /// Says how many clients this machine lets the server hold, which kernel limit binds,
    /// and how to raise it; warns when `--max-clients` asked for more.
    fn log_capacity(&self) {
        let capacity = &self.capacity;
        let fields: [(&str, &dyn fmt::Display); 4] = [
            ("clients", &capacity.clients),
            ("threads", &capacity.threads),
            ("bound_by", &capacity.bound_by),
            ("raise", &capacity.bound_by.how_to_raise()),
        ];
        log::info("capacity", &fields);
        let asked = self.shared.config.max_clients;
        if asked > self.admission.max_total {
            log::warn(
                "max_clients_lowered",
                &[
                    ("asked", &asked),
                    ("max_clients", &self.admission.max_total),
                    ("bound_by", &capacity.bound_by),
                    ("raise", &capacity.bound_by.how_to_raise()),
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

    /// Applies the connection limits known at accept, then starts the client's thread. A
    /// trusted proxy's connection takes a place among all clients only: the address its
    /// places count against is its client's, read from its PROXY header in the client's
    /// thread ([`arrive`]), so that a slow proxy never holds up the accept loop.
    fn admit(&self, stream: TcpStream, peer: SocketAddr) {
        let from_proxy = proxy::is_trusted(&self.shared.config.trusted_proxies, peer.ip());
        let address = (!from_proxy).then_some(peer.ip());
        let ticket = match Admission::enter(&self.admission, address) {
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
        let spawned = CLIENT_THREADS.spawn("client", move || {
            serve_client(&shared, for_thread, peer, ticket)
        });
        if let Err(e) = spawned {
            log::error("thread_spawn_failed", &[("peer", &peer), ("error", &e)]);
            refuse(&stream, ErrorReply::ServerFull);
            thread::sleep(ACCEPT_BACKOFF);
        }
    }
}

fn open_reserve_fd() -> Option<File> {
    File::open("/dev/null").ok()
}

/// Body of a client's thread: the preamble (PROXY header, admission per address), then
/// the connection itself (`connection.rs`: a netcat user's chat, or the web page and its
/// WebSocket), then the log line that says why it ended.
fn serve_client(shared: &Shared, stream: Arc<TcpStream>, peer: SocketAddr, ticket: Ticket) {
    // The sign-in deadline starts now: reading a PROXY header, telling HTTP from chat and
    // reading a request head all count against it.
    let deadline = Instant::now() + shared.config.sign_in_timeout;
    let Some(arrival) = arrive(shared, &stream, peer, ticket, deadline) else {
        return;
    };
    stats::connection_opened();
    arrival.log("connect", &[]);
    let reason = connection::open_session(shared, stream, arrival.peer, deadline);
    stats::connection_closed();
    arrival.log("disconnect", &[("reason", &reason)]);
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
