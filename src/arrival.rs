//! A connection's preamble, between accept and greeting: whom it is really from.
//!
//! This module owns the steps a client's thread runs before its connection is served: the
//! PROXY protocol header a trusted proxy must send (`proxy.rs` parses it), the refusal of
//! a header from anyone else, and the admission of a proxied client's own address, known
//! only then. It must not serve the connection (`connection.rs`) or count connections
//! itself (`admission.rs`).

use std::fmt;
use std::io::{self, ErrorKind, Read};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Instant;

use crate::admission::{Ticket, refuse};
use crate::limits::PROXY_HEADER_WATCH;
use crate::log::{self, Level};
use crate::proxy::{self, HeaderError, Parsed, Source};
use crate::shared::Shared;

/// A connection that passed its preamble, ready for its session.
pub struct Arrival {
    /// The client's address: from the PROXY header, or the socket's own.
    pub peer: SocketAddr,
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
    pub fn log(&self, event: &str, extra: &[(&str, &dyn fmt::Display)]) {
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
pub fn arrive(
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
