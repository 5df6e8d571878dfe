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
//! ([`arrive`]): the PROXY protocol header of a trusted proxy (`proxy.rs`), then the
//! per-address admission of a proxied client, whose address is known only then. Then
//! `connection.rs` looks at the client's own first bytes.
//!
//! One background thread runs beside them: the stats logger (one log line a minute). With
//! `--udp`, `udp.rs` binds a UDP socket on the same port number and runs its own dispatcher.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::capacity::{Capacity, Machine};
use crate::config::Config;
use crate::connection;
use crate::limits::{ACCEPT_BACKOFF, CLIENT_THREAD_STACK, PROXY_HEADER_WATCH, STATS_INTERVAL};
use crate::log::{self, Level};
use crate::protocol::{ErrorReply, Reply};
use crate::proxy::{self, HeaderError, Parsed, Source};
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

/// Sends a one-line refusal without ever blocking the accept loop, then closes.
fn refuse(stream: &TcpStream, why: ErrorReply) {
    let _ = stream.set_nonblocking(true);
    let _ = (&*stream).write_all(Reply::Error(why).to_line().as_bytes());
    let _ = stream.shutdown(Shutdown::Both);
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

/// A connection that passed its preamble, ready for its session.
struct Arrival {
    /// The client's address: from the PROXY header, or the socket's own.
    peer: SocketAddr,
    /// The trusted proxy the client came through.
    proxy: Option<SocketAddr>,
    /// The proxy's own connection, such as a health check every few seconds: its connect
    /// and disconnect are logged at debug, with the header version, so they do not bury
    /// the log. Its session's events (it may sign in like anyone) are logged as usual.
    proxy_own: Option<proxy::Version>,
    /// The connection's places in the limits; freed when the connection ends.
    ticket: Ticket,
}

impl Arrival {
    /// Logs `event` for this connection: its peer, the proxy it came through, then `extra`.
    fn log(&self, event: &str, extra: &[(&str, &dyn fmt::Display)]) {
        let mut fields: Vec<(&str, &dyn fmt::Display)> = vec![("peer", &self.peer)];
        if let Some(proxy) = &self.proxy {
            fields.push(("proxy", proxy));
        }
        if let Some(version) = &self.proxy_own {
            fields.push(("health_check", version));
        }
        fields.extend_from_slice(extra);
        let level = match self.proxy_own {
            Some(_) => Level::Debug,
            None => Level::Info,
        };
        log::event(level, event, &fields);
    }
}

/// The connection's preamble, everything between accept and greeting, in this order:
///
/// 1. **PROXY header.** A connection from a trusted proxy must begin with a PROXY
///    protocol header; its source becomes the connection's peer for the limits, the
///    throttle and every log line. Any other connection is looked at for one, and closed
///    if it sent one: only a listed proxy may name an address.
/// 2. **Admission per address**, for a proxied connection, now that its client's address
///    is known. (A direct connection was admitted per address in the accept loop, which
///    also counts every connection against `--max-clients`.)
/// 3. Then the rest: whatever else must look at the first bytes before the greeting
///    belongs here, after the header (which is not the client's data) and admission (so
///    that a refused client costs nothing more).
///
/// `None`: the connection was refused, closed and logged here.
fn arrive(
    shared: &Shared,
    stream: &TcpStream,
    socket_peer: SocketAddr,
    ticket: Ticket,
    deadline: Instant,
) -> Option<Arrival> {
    let trusted = &shared.config.trusted_proxies;
    if !proxy::is_trusted(trusted, socket_peer.ip()) {
        refuse_stray_header(stream, socket_peer, !trusted.is_empty())?;
        return Some(Arrival {
            peer: socket_peer,
            proxy: None,
            proxy_own: None,
            ticket,
        });
    }

    // 1. The PROXY header.
    let header = match read_proxy_header(stream, deadline) {
        Ok(header) => header,
        Err(failure) => {
            failure.log(socket_peer);
            return close(stream);
        }
    };
    let mut arrival = match header.source {
        Source::Client(client) if !same_endpoint(client, socket_peer) => Arrival {
            peer: client,
            proxy: Some(socket_peer),
            proxy_own: None,
            ticket,
        },
        // LOCAL, UNKNOWN, or the proxy naming its own end of the connection (HAProxy's
        // v1 health check): the proxy speaks for itself, as if there were no header.
        _ => Arrival {
            peer: socket_peer,
            proxy: None,
            proxy_own: Some(header.version),
            ticket,
        },
    };

    // 2. Admission per address.
    if let Err(refusal) = arrival.ticket.claim_address(arrival.peer.ip()) {
        let mut fields: Vec<(&str, &dyn fmt::Display)> = vec![("peer", &arrival.peer)];
        if let Some(proxy) = &arrival.proxy {
            fields.push(("proxy", proxy));
        }
        fields.push(("reason", &refusal));
        log::warn("connection_refused", &fields);
        refuse(stream, refusal);
        return None;
    }
    Some(arrival)
}

/// True when `a` and `b` are the same address and port, an IPv4 address and its
/// IPv4-mapped IPv6 form being the same.
fn same_endpoint(a: SocketAddr, b: SocketAddr) -> bool {
    a.ip().to_canonical() == b.ip().to_canonical() && a.port() == b.port()
}

/// Looks at the first bytes of a connection that is not from a trusted proxy, consuming
/// nothing, and closes it if they begin a PROXY header: a proxy the operator has not
/// listed (or someone posing as one) would otherwise be served under the proxy's address,
/// its header read as a user's name. `None`: closed and logged.
fn refuse_stray_header(stream: &TcpStream, peer: SocketAddr, watch: bool) -> Option<()> {
    let mut first = [0u8; 16];
    let reason = match first_bytes(stream, &mut first, watch) {
        Ok(n) if !proxy::starts_like_header(&first[..n]) => return Some(()),
        Ok(_) => {
            let reason = "a PROXY header from an address that is not a --trusted-proxy";
            log::warn(
                "proxy_header_refused",
                &[("peer", &peer), ("reason", &reason)],
            );
            return close(stream);
        }
        Err(e) => format!("socket setup failed: {e}"),
    };
    log::info("disconnect", &[("peer", &peer), ("reason", &reason)]);
    close(stream)
}

/// Closes a connection that the preamble refused; `None` for the caller to return.
fn close<T>(stream: &TcpStream) -> Option<T> {
    let _ = stream.shutdown(Shutdown::Both);
    None
}

/// Peeks at the first bytes of a connection; 0 if none came. Without `--trusted-proxy`
/// (`watch` false) it only looks at what arrived with the connection, so nobody waits;
/// with it, it waits up to `PROXY_HEADER_WATCH` for a first byte, which delays only a
/// client that sends nothing before its greeting, as a netcat user does. An error means
/// the socket could not be set up, and the connection is no use.
fn first_bytes(stream: &TcpStream, buf: &mut [u8], watch: bool) -> io::Result<usize> {
    let peeked = if watch {
        stream.set_read_timeout(Some(PROXY_HEADER_WATCH))?;
        stream.peek(buf)
    } else {
        stream.set_nonblocking(true)?;
        let peeked = stream.peek(buf);
        stream.set_nonblocking(false)?;
        peeked
    };
    // Nothing yet, or a read error that the session's first read will meet again.
    Ok(peeked.unwrap_or(0))
}

/// Why a trusted proxy's connection did not begin with a valid PROXY header.
#[derive(Debug)]
enum HeaderFailure {
    Invalid(HeaderError),
    /// Closed before sending anything: a plain TCP health check.
    ClosedAtOnce,
    ClosedPartway,
    TimedOut,
    Io(io::Error),
}

impl fmt::Display for HeaderFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderFailure::Invalid(e) => write!(f, "{e}"),
            HeaderFailure::ClosedAtOnce => write!(f, "closed before sending anything"),
            HeaderFailure::ClosedPartway => write!(f, "closed in the middle of a PROXY header"),
            HeaderFailure::TimedOut => write!(f, "no PROXY header within the sign-in timeout"),
            HeaderFailure::Io(e) => write!(f, "read error: {e}"),
        }
    }
}

impl HeaderFailure {
    /// A connection that closes at once is a health check, logged at debug; the rest is a
    /// misconfigured proxy, or someone on its address, and worth a warning.
    fn log(&self, peer: SocketAddr) {
        let fields: [(&str, &dyn fmt::Display); 2] = [("peer", &peer), ("reason", self)];
        match self {
            HeaderFailure::ClosedAtOnce => log::debug("disconnect", &fields),
            _ => log::warn("proxy_header_refused", &fields),
        }
    }
}

/// Reads the PROXY header that a trusted proxy's connection begins with, consuming exactly
/// its bytes: what the client sent after it, often in the same packet, stays for the
/// session. Bounded in bytes (`proxy::MAX_HEADER_BYTES`) and in time (`deadline`).
///
/// Each round peeks at what arrived; `proxy::parse` says whether that is a whole header.
/// If it is not yet, every byte so far belongs to the header, so they are consumed, and
/// the next peek waits for more instead of returning the same bytes again.
fn read_proxy_header(
    stream: &TcpStream,
    deadline: Instant,
) -> Result<proxy::Header, HeaderFailure> {
    // On the heap: a kilobyte in this frame would deepen every client thread's stack.
    let mut buf = vec![0u8; proxy::MAX_HEADER_BYTES];
    // The header's bytes consumed so far, kept at the start of `buf`.
    let mut consumed = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeaderFailure::TimedOut);
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(HeaderFailure::Io)?;
        // `parse` is never `Incomplete` at `MAX_HEADER_BYTES`, so there is room to peek.
        let peeked = match stream.peek(&mut buf[consumed..]) {
            Ok(0) if consumed == 0 => return Err(HeaderFailure::ClosedAtOnce),
            Ok(0) => return Err(HeaderFailure::ClosedPartway),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(HeaderFailure::TimedOut);
            }
            Err(e) if consumed == 0 && e.kind() == ErrorKind::ConnectionReset => {
                return Err(HeaderFailure::ClosedAtOnce);
            }
            Err(e) => return Err(HeaderFailure::Io(e)),
        };
        let seen = consumed + peeked;
        let parsed = proxy::parse(&buf[..seen]).map_err(HeaderFailure::Invalid)?;
        let end = match parsed {
            Parsed::Complete(header) => header.len,
            Parsed::Incomplete => seen,
        };
        // Those bytes arrived already: reading them does not wait.
        (&*stream)
            .read_exact(&mut buf[consumed..end])
            .map_err(HeaderFailure::Io)?;
        consumed = end;
        if let Parsed::Complete(header) = parsed {
            return Ok(header);
        }
    }
}

/// Counts connections, in total and per address, to enforce the connection limits.
struct Admission {
    max_total: usize,
    /// 0 = no per-address limit.
    max_per_ip: usize,
    /// The same for loopback addresses, which are people on this machine.
    max_per_loopback: usize,
    counts: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection; dropping it frees its places.
struct Ticket {
    admission: Arc<Admission>,
    /// The address whose place it holds; `None` until a proxied client's address is known.
    ip: Option<IpAddr>,
}

impl Admission {
    fn new(max_total: usize, max_per_ip: usize, max_per_loopback: usize) -> Self {
        Admission {
            max_total,
            max_per_ip,
            max_per_loopback,
            counts: Mutex::new((0, HashMap::new())),
        }
    }

    /// Takes a place among all connections and, given an address, one of that address's.
    fn enter(
        admission: &Arc<Admission>,
        ip: Option<IpAddr>,
    ) -> Result<Ticket, ErrorReply<'static>> {
        let mut counts = admission
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (total, per_ip) = &mut *counts;
        if *total >= admission.max_total {
            return Err(ErrorReply::ServerFull);
        }
        let ip = ip.map(|ip| ip.to_canonical());
        if let Some(ip) = ip {
            admission.take_place(per_ip, ip)?;
        }
        *total += 1;
        Ok(Ticket {
            admission: Arc::clone(admission),
            ip,
        })
    }

    /// Takes one of `ip`'s places, if it has one left.
    fn take_place(
        &self,
        per_ip: &mut HashMap<IpAddr, usize>,
        ip: IpAddr,
    ) -> Result<(), ErrorReply<'static>> {
        // Everyone logged in to this machine, a class on one shell host, comes from
        // 127.0.0.1: many people, not one host hogging the server.
        let limit = if ip.is_loopback() {
            self.max_per_loopback
        } else {
            self.max_per_ip
        };
        let here = per_ip.entry(ip).or_insert(0);
        if limit != 0 && *here >= limit {
            return Err(ErrorReply::TooManyFromAddress);
        }
        *here += 1;
        Ok(())
    }
}

impl Ticket {
    /// Takes a place for `ip`, the address that a proxied connection's header named, on a
    /// ticket that holds no address's place yet.
    fn claim_address(&mut self, ip: IpAddr) -> Result<(), ErrorReply<'static>> {
        debug_assert!(self.ip.is_none(), "a ticket holds one address's place");
        let ip = ip.to_canonical();
        let mut counts = self
            .admission
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.admission.take_place(&mut counts.1, ip)?;
        self.ip = Some(ip);
        Ok(())
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
        let Some(ip) = self.ip else {
            return;
        };
        if let Some(here) = per_ip.get_mut(&ip) {
            *here -= 1;
            if *here == 0 {
                per_ip.remove(&ip);
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
