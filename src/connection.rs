//! What an admitted TCP connection is, and serving it on its own thread: a netcat user's
//! chat, or a browser's HTTP request (the page, an error, or the page's WebSocket).
//!
//! This module owns the steps between admission and the session: the sniff (is it HTTP or
//! chat?), reading the one request head, sending the answer, and building the line source
//! and the transport each kind of client needs before it runs the same `session::run`. It
//! must not accept or admit connections (`server.rs`), parse HTTP or frames (`http.rs`,
//! `websocket.rs`), route paths (`web.rs`) or know the chat protocol (`session.rs`).
//!
//! ```text
//!   admitted socket ── sniff: first bytes within SNIFF_WAIT (limits.rs)
//!     ├─ not a request line, or nothing: chat over TCP
//!     │    LineReader(first bytes + socket) ─> session::run ─> Outbox(TcpTransport)
//!     └─ "GET " ...: HTTP, the head read under the sign-in deadline, then web::route
//!          ├─ the page: answered, and the connection kept for the next request
//!          ├─ an error status: one response, then close
//!          └─ 101 to /ws: WebSocket
//!               WsLines(bytes behind the head + socket) ─> session::run ─> Outbox(WsTransport)
//! ```
//!
//! The sign-in deadline (`--sign-in-timeout`) runs from the connection's start and covers
//! all of it: the sniff, the request head, and the sign-in over TCP or WebSocket.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use crate::http::{self, HeadError, Prefixed, Response, Sniff};
use crate::limits::{HTTP_KEEP_ALIVE, HTTP_LINGER, HTTP_LINGER_BYTES, SNIFF_WAIT, WRITE_TIMEOUT};
use crate::line_reader::{Line, LineReader, LineSource};
use crate::log;
use crate::outbox::{Entry, Outbox};
use crate::session;
use crate::shared::Shared;
use crate::telnet;
use crate::transport::TcpTransport;
use crate::web::{self, Route};
use crate::websocket::WsLines;
use crate::ws_transport::{self, WsTransport};

/// Serves one admitted connection to its end; returns why it ended, for the log.
/// `deadline` is the end of the sign-in time, counted from the connection's start.
pub fn open_session(
    shared: &Shared,
    stream: Arc<TcpStream>,
    peer: SocketAddr,
    deadline: Instant,
) -> String {
    // A netcat user waits to be greeted and a browser speaks first: wait a moment for the
    // first bytes before anything is sent, so an HTTP answer never follows a greeting.
    let sniff_until = deadline.min(Instant::now() + SNIFF_WAIT);
    let (kind, first) = match http::read_sniff(&mut Deadline::new(&stream, Some(sniff_until))) {
        Ok(sniffed) => sniffed,
        Err(e) => return format!("read error: {e}"),
    };
    match kind {
        Sniff::Http => serve_http(shared, stream, peer, first, deadline),
        Sniff::Chat | Sniff::Undecided => serve_chat(shared, stream, peer, first, deadline),
    }
}

/// A netcat (or telnet, or TLS-terminated) chat user: lines over TCP. `first` holds the
/// bytes the sniff read, the start of the first line.
fn serve_chat(
    shared: &Shared,
    stream: Arc<TcpStream>,
    peer: SocketAddr,
    first: Vec<u8>,
    deadline: Instant,
) -> String {
    let transport = match TcpTransport::new(Arc::clone(&stream)) {
        Ok(transport) => transport,
        Err(e) => return format!("socket setup failed: {e}"),
    };
    let outbox = Arc::new(Outbox::new(shared.config.sendq_bytes, Arc::new(transport)));
    let source = Prefixed::new(first, Deadline::new(&stream, Some(deadline)));
    let mut lines = TcpLines::new(source, &outbox);
    let reason = run_session(shared, peer, &mut lines, &outbox);
    // The last lines (a goodbye) are written, then the connection is closed, by whoever
    // writes to this client: this thread, or its writer thread.
    outbox.finish(Ok(outbox.close()), &mut Vec::new());
    reason
}

/// A browser: requests, each read whole, each answered. The first must arrive within the
/// sign-in deadline; after the page the connection stays open for the next (a reload)
/// for up to `HTTP_KEEP_ALIVE`. An error closes it; an upgrade to `/ws` turns it into a
/// WebSocket.
fn serve_http(
    shared: &Shared,
    stream: Arc<TcpStream>,
    peer: SocketAddr,
    first: Vec<u8>,
    deadline: Instant,
) -> String {
    let mut source = Prefixed::new(first, Deadline::new(&stream, Some(deadline)));
    let mut answered = 0;
    loop {
        let (request, leftover) = match http::read_head(&mut source) {
            Ok(read) => read,
            // Closed, or the time passed, before a head ended: nobody to answer.
            Err(HeadError::Io(_)) if answered > 0 => return format!("http: {answered} answered"),
            Err(HeadError::Io(e))
                if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) =>
            {
                return "http: no complete request within the sign-in timeout".into();
            }
            Err(HeadError::Io(e)) => return format!("http: no complete request: {e}"),
            Err(HeadError::Bad(bad)) => {
                let response = http::error(bad.status());
                log_http(peer, None, &response);
                answer_and_close(&stream, &response);
                return format!("http {}: {bad}", response.status.code());
            }
        };
        let response = match web::route(&request) {
            Route::Page(response) if request.allows_keep_alive() => response.keep_open(),
            Route::Page(response) => response,
            Route::Refuse { response, reason } => {
                log_http(peer, Some(&request), &response);
                answer_and_close(&stream, &response);
                return format!("http {}: {reason}", response.status.code());
            }
            Route::Upgrade(response) => {
                log_http(peer, Some(&request), &response);
                if let Err(e) = answer(&stream, &response) {
                    return format!("write error: {e}");
                }
                // On a kept connection the sign-in time starts with this request.
                let sign_in_by = match answered {
                    0 => deadline,
                    _ => Instant::now() + shared.config.sign_in_timeout,
                };
                return serve_websocket(shared, stream, peer, leftover, sign_in_by);
            }
        };
        log_http(peer, Some(&request), &response);
        if !response.is_kept_open() {
            answer_and_close(&stream, &response);
            return format!("http {}", response.status.code());
        }
        if let Err(e) = answer(&stream, &response) {
            return format!("write error: {e}");
        }
        answered += 1;
        let idle_until = Instant::now() + HTTP_KEEP_ALIVE;
        source = Prefixed::new(leftover, Deadline::new(&stream, Some(idle_until)));
    }
}

/// The page's WebSocket: the same session as a netcat user's, reading text messages as
/// lines and writing lines as text frames. `leftover` holds the frames (if any) that
/// arrived behind the request head.
fn serve_websocket(
    shared: &Shared,
    stream: Arc<TcpStream>,
    peer: SocketAddr,
    leftover: Vec<u8>,
    deadline: Instant,
) -> String {
    let transport = match WsTransport::new(Arc::clone(&stream)) {
        Ok(transport) => transport,
        Err(e) => return format!("socket setup failed: {e}"),
    };
    let outbox = Arc::new(Outbox::new(shared.config.sendq_bytes, Arc::new(transport)));
    // Pongs and close frames join the same queue as the lines, so that one never lands
    // inside a text frame being written.
    let mut lines = WsLines::new(
        Prefixed::new(leftover, Deadline::new(&stream, Some(deadline))),
        ws_transport::control_sink(Arc::clone(&outbox)),
    )
    .on_deadline(|source, until| source.get_mut().set_until(until));
    let reason = run_session(shared, peer, &mut lines, &outbox);
    // As for TCP: the last line goes out, then the transport's hang-up sends the close
    // frame (unless the decoder already answered the client's own) and closes.
    outbox.finish(Ok(outbox.close()), &mut Vec::new());
    reason
}

/// Runs the session and says why it ended, for the log. A panic in the session is caught
/// here, logged, and treated like any other ending; the guards in `session.rs` have already
/// signed the user out while unwinding.
fn run_session(
    shared: &Shared,
    peer: SocketAddr,
    lines: &mut dyn LineSource,
    outbox: &Arc<Outbox>,
) -> String {
    let ran = panic::catch_unwind(AssertUnwindSafe(|| {
        session::run(shared, peer, lines, outbox)
    }));
    match ran {
        Ok(ending) if outbox.is_closed() => format!("{ending} (connection cut)"),
        Ok(ending) => ending.to_string(),
        Err(_) => {
            log::error("session_panicked", &[("peer", &peer)]);
            "panic in session thread".to_string()
        }
    }
}

/// One `http` log line per answer: who asked for what, and the status.
fn log_http(peer: SocketAddr, request: Option<&http::Request>, response: &Response) {
    let code = response.status.code();
    match request {
        Some(request) => log::info(
            "http",
            &[
                ("peer", &peer),
                ("method", &request.method),
                ("path", &request.path()),
                ("status", &code),
            ],
        ),
        None => log::info("http", &[("peer", &peer), ("status", &code)]),
    }
}

/// Writes a whole response, waiting for the client as long as any write may.
fn answer(stream: &TcpStream, response: &Response) -> io::Result<()> {
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let mut writer = stream;
    writer.write_all(&response.to_bytes())
}

/// Answers, then closes the connection the way HTTP servers do: stop sending, read and
/// drop what the client still sends (briefly, see `HTTP_LINGER`), then close. Closing with
/// unread bytes would make the kernel reset the connection, which can destroy the answer
/// before the client has read it: a 431 for a head the server stopped reading, say.
fn answer_and_close(stream: &TcpStream, response: &Response) {
    if answer(stream, response).is_ok() {
        let _ = stream.shutdown(Shutdown::Write);
        let until = Instant::now() + HTTP_LINGER;
        let mut reader = Deadline::new(stream, Some(until));
        // On the heap: two kilobytes in this frame, maybe inlined into its callers', would
        // deepen every client thread's stack (its touched pages stay resident).
        let mut sink = vec![0u8; 2048];
        let mut dropped = 0;
        while dropped < HTTP_LINGER_BYTES {
            match reader.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(n) => dropped += n,
            }
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// Reads from a TCP socket until a deadline: before each read the socket's read timeout is
/// set to the time left, so even a client trickling one byte at a time runs out of time.
/// Without a deadline, reads wait as long as the client likes.
struct Deadline<'a> {
    stream: &'a TcpStream,
    until: Option<Instant>,
}

impl<'a> Deadline<'a> {
    fn new(stream: &'a TcpStream, until: Option<Instant>) -> Self {
        Deadline { stream, until }
    }

    /// Moves the deadline; `None` lifts it, and with it the socket's read timeout.
    fn set_until(&mut self, until: Option<Instant>) {
        self.until = until;
        if until.is_none() {
            let _ = self.stream.set_read_timeout(None);
        }
    }
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(until) = self.until {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(ErrorKind::TimedOut, "deadline passed"));
            }
            self.stream.set_read_timeout(Some(left))?;
        }
        let mut stream = self.stream;
        stream.read(buf)
    }
}

/// A TCP socket as a [`LineSource`] for the session, starting with the sniffed bytes,
/// telnet's commands taken out.
struct TcpLines<'a> {
    reader: LineReader<telnet::Filter<Prefixed<Deadline<'a>>, TelnetAnswer<'a>>>,
}

/// Sends telnet's refusals to the client, through its outbox so one never lands inside
/// another line. A refused send means the client is gone; the session finds out itself.
type TelnetAnswer<'a> = Box<dyn FnMut(&[u8]) + 'a>;

impl<'a> TcpLines<'a> {
    fn new(source: Prefixed<Deadline<'a>>, outbox: &'a Arc<Outbox>) -> Self {
        let answer: TelnetAnswer<'a> = Box::new(move |refusals: &[u8]| {
            let _ = outbox.send(Entry::Wire(Arc::from(refusals)));
        });
        TcpLines {
            reader: LineReader::new(telnet::Filter::new(source, answer)),
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
        self.reader
            .get_mut()
            .get_mut()
            .get_mut()
            .set_until(deadline);
    }
}
