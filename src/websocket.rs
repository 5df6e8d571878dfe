//! WebSocket (RFC 6455) for the web page: the opening handshake, frames from the server,
//! and client frames read as chat lines.
//!
//! This module owns the WebSocket rules: which upgrade requests are accepted (and from which
//! pages, see [`origin_allowed`]), how a server line becomes a frame, and how client frames
//! become lines. One text message is one protocol line, without a newline, in each
//! direction. [`WsLines`] is a [`LineSource`], so a session reads a browser exactly as it
//! reads a netcat user. This module must not interpret lines (`protocol.rs`), route paths
//! (`web.rs`) or write to a socket: the control frames it must send (pong, close) go to a
//! callback, so that the caller can queue them behind, never inside, a data frame being
//! written.
//!
//! Every violation of the RFC closes the connection with the close code the RFC names
//! ([`Violation::close_code`]), and memory stays bounded whatever length a frame header
//! declares: a text message is at most [`MAX_LINE_BYTES`], refused from its header before
//! any of it is buffered; a control frame at most 125 bytes.

use std::fmt;
use std::io::{self, ErrorKind, Read};
use std::time::Instant;

use crate::base64;
use crate::clean::clean_line;
use crate::http::{self, Request, Response, Status};
use crate::limits::MAX_LINE_BYTES;
use crate::line_reader::{Line, LineSource};
use crate::sha1::sha1;

/// Appended to the client's key before hashing (RFC 6455, section 1.3).
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Normal closure: the client closed, or the server signs the user out.
pub const CLOSE_NORMAL: u16 = 1000;
/// The server is going away (shutting down).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// A frame breaks the protocol.
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// A data type the server does not accept: binary messages.
pub const CLOSE_UNSUPPORTED_DATA: u16 = 1003;
/// A text message or close reason that is not UTF-8.
pub const CLOSE_INVALID_DATA: u16 = 1007;
/// A message that breaks the server's policy (e.g. flooding).
pub const CLOSE_POLICY_VIOLATION: u16 = 1008;
/// A message longer than a chat line may be.
pub const CLOSE_TOO_BIG: u16 = 1009;

/// Longest payload of a control frame (RFC 6455, section 5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// Longest frame header: 2 bytes, 8 of extended length, 4 of mask.
pub const MAX_HEADER_LEN: usize = 14;

/// Size of the read buffer. Enough for the longest chat line and its header in one read.
const READ_CHUNK: usize = 2 * 1024;

// Between reads the buffer keeps a partial header and reads behind it: it must hold one.
const _: () = assert!(MAX_HEADER_LEN < READ_CHUNK);

// Opcodes (RFC 6455, section 5.2).
pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

// ---- The opening handshake ----

/// The `Sec-WebSocket-Accept` value for a client's `Sec-WebSocket-Key`: base64 of the SHA-1
/// of the key followed by the GUID (RFC 6455, section 4.2.2, step 5).
pub fn accept_key(key: &str) -> String {
    base64::encode(&sha1(format!("{key}{ACCEPT_GUID}").as_bytes()))
}

/// Why an upgrade request to `/ws` is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// Not HTTP/1.1 (RFC 6455, section 4.1: the handshake is an HTTP/1.1 GET).
    NotHttp11,
    /// No `Host` header.
    NoHost,
    /// `Upgrade: websocket` or `Connection: Upgrade` missing: a plain GET of `/ws`.
    NotAnUpgrade,
    /// `Sec-WebSocket-Version` other than 13.
    UnsupportedVersion,
    /// `Sec-WebSocket-Key` missing, or not base64 of 16 bytes.
    BadKey,
    /// The page that opened the socket is from another site (see [`origin_allowed`]).
    OriginRefused,
}

impl HandshakeError {
    /// The response to send before closing.
    pub fn response(self) -> Response {
        match self {
            HandshakeError::NotHttp11 | HandshakeError::NoHost | HandshakeError::BadKey => {
                http::bad_request()
            }
            HandshakeError::NotAnUpgrade | HandshakeError::UnsupportedVersion => {
                http::upgrade_required()
            }
            HandshakeError::OriginRefused => http::forbidden(),
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HandshakeError::NotHttp11 => "not HTTP/1.1",
            HandshakeError::NoHost => "no Host header",
            HandshakeError::NotAnUpgrade => "not a WebSocket upgrade",
            HandshakeError::UnsupportedVersion => "WebSocket version other than 13",
            HandshakeError::BadKey => "missing or malformed Sec-WebSocket-Key",
            HandshakeError::OriginRefused => "Origin of another site",
        })
    }
}

/// Checks a GET of `/ws` against RFC 6455, section 4.2.1, and the Origin policy. Returns
/// the `Sec-WebSocket-Accept` value to answer with ([`handshake_response`]).
pub fn check_handshake(request: &Request) -> Result<String, HandshakeError> {
    if request.minor_version != 1 {
        return Err(HandshakeError::NotHttp11);
    }
    let host = request.header("Host").ok_or(HandshakeError::NoHost)?;
    if !request.has_token("Upgrade", "websocket") || !request.has_token("Connection", "upgrade") {
        return Err(HandshakeError::NotAnUpgrade);
    }
    if request.header("Sec-WebSocket-Version") != Some("13") {
        return Err(HandshakeError::UnsupportedVersion);
    }
    let key = request
        .header("Sec-WebSocket-Key")
        .ok_or(HandshakeError::BadKey)?;
    if base64::decode(key).is_none_or(|nonce| nonce.len() != 16) {
        return Err(HandshakeError::BadKey);
    }
    if !origin_allowed(request.header("Origin"), host) {
        return Err(HandshakeError::OriginRefused);
    }
    Ok(accept_key(key))
}

/// The Origin policy for `/ws` (docs/SECURITY.md, "Origin"): no `Origin` header at all (a
/// program, not a browser: browsers always send one) or an `http` / `https` origin whose
/// host and port are the request's `Host`, i.e. the page this server served. Anything
/// else, `null` included, is a page on another site using a visitor's browser.
pub fn origin_allowed(origin: Option<&str>, host: &str) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    let (scheme, authority) = match origin.split_once("://") {
        Some((scheme, authority)) => (scheme.to_ascii_lowercase(), authority),
        None => return false,
    };
    let default_port = match scheme.as_str() {
        "http" => "80",
        "https" => "443",
        _ => return false,
    };
    // Browsers leave a default port out of both headers; spell it out on both sides, so
    // `Host: example.org:80` still matches `Origin: http://example.org`.
    match (
        with_port(authority, default_port),
        with_port(host, default_port),
    ) {
        (Some(a), Some(b)) => a.eq_ignore_ascii_case(&b),
        _ => false,
    }
}

/// `host:port` with the default port added if there is none; `None` if `authority` is
/// empty or has a path, user info or other characters no Host header has.
fn with_port(authority: &str, default_port: &str) -> Option<String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-._:[]".contains(c);
    if authority.is_empty() || !authority.chars().all(allowed) {
        return None;
    }
    // `[::1]:8081` or `[::1]`: the port follows the bracket, not the last colon.
    let port_start = match authority.rfind(']') {
        Some(bracket) => authority[bracket..].find(':').map(|i| bracket + i),
        None => authority.rfind(':'),
    };
    match port_start {
        Some(colon) if colon + 1 < authority.len() => Some(authority.to_string()),
        Some(_) => None,
        None => Some(format!("{authority}:{default_port}")),
    }
}

/// `101 Switching Protocols` with the accept value (RFC 6455, section 4.2.2, step 5). After
/// it the connection speaks frames.
pub fn handshake_response(accept: &str) -> Response {
    Response::new(Status::SwitchingProtocols)
        .with_header("Upgrade", "websocket")
        .with_header("Connection", "Upgrade")
        .with_header("Sec-WebSocket-Accept", accept)
}

// ---- Frames from the server ----

/// One unmasked, unfragmented frame (servers never mask, RFC 6455 section 5.1).
fn encode_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 10);
    frame.push(0x80 | opcode); // FIN set, no reserved bits
    match payload.len() {
        len @ 0..=125 => frame.push(len as u8),
        len @ 126..=0xFFFF => {
            frame.push(126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    frame
}

/// A text message: one server line, without its `\n`.
pub fn text_frame(line: &str) -> Vec<u8> {
    encode_frame(OP_TEXT, line.as_bytes())
}

/// The answer to a ping: the same payload (at most 125 bytes, which the decoder enforces on
/// the ping; a longer one is cut here rather than sent as an illegal frame).
pub fn pong_frame(payload: &[u8]) -> Vec<u8> {
    encode_frame(OP_PONG, &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)])
}

/// A close frame with a status code and a reason, the reason cut (at a character boundary)
/// to fit the 125-byte limit of a control frame.
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode_frame(OP_CLOSE, &payload)
}

/// Frames every complete server line in `lines` (each ending in `\n`) as one text message
/// and appends the frames to `out`. Returns how many bytes of `lines` it used: a last line
/// without `\n` is left for the next call.
pub fn frame_lines(lines: &str, out: &mut Vec<u8>) -> usize {
    let mut used = 0;
    while let Some(newline) = lines[used..].find('\n') {
        out.extend_from_slice(&text_frame(&lines[used..used + newline]));
        used += newline + 1;
    }
    used
}

// ---- Frames from the client ----

/// A frame header as sent, before any check (RFC 6455, section 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    /// RSV1 to RSV3 as the low three bits; no extension is negotiated, so they must be 0.
    pub rsv: u8,
    pub opcode: u8,
    /// The masking key; clients must mask every frame.
    pub mask: Option<[u8; 4]>,
    /// The payload length as declared: never trusted to allocate.
    pub len: u64,
}

/// Parses the frame header at the start of `bytes`. `None` while more bytes are needed;
/// otherwise the header and its length in bytes (2 to 14).
pub fn parse_frame_header(bytes: &[u8]) -> Option<(FrameHeader, usize)> {
    let (&first, &second) = (bytes.first()?, bytes.get(1)?);
    let (len, mut used) = match second & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?])),
            4,
        ),
        127 => {
            let extended: [u8; 8] = bytes.get(2..10)?.try_into().ok()?;
            (u64::from_be_bytes(extended), 10)
        }
        short => (u64::from(short), 2),
    };
    let mask = if second & 0x80 != 0 {
        let key: [u8; 4] = bytes.get(used..used + 4)?.try_into().ok()?;
        used += 4;
        Some(key)
    } else {
        None
    };
    let header = FrameHeader {
        fin: first & 0x80 != 0,
        rsv: (first >> 4) & 0x07,
        opcode: first & 0x0f,
        mask,
        len,
    };
    Some((header, used))
}

/// Why the server closes a WebSocket. `Display` is the close frame's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// A client frame without a mask (RFC 6455, section 5.1).
    Unmasked,
    /// RSV1-3 set, with no extension negotiated (section 5.2).
    ReservedBits,
    /// Opcode 0x3-0x7 or 0xB-0xF (section 5.2).
    ReservedOpcode(u8),
    /// A 64-bit length with its most significant bit set (section 5.2).
    BadLength,
    /// A control frame with more than 125 bytes of payload (section 5.5).
    ControlTooLong,
    /// A control frame without FIN (section 5.5).
    FragmentedControl,
    /// A continuation frame with no message to continue (section 5.4).
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is unfinished (section 5.4).
    UnfinishedMessage,
    /// A binary message: chat is text.
    Binary,
    /// A text message longer than a chat line.
    TooLong,
    /// A text message or close reason that is not UTF-8 (section 8.1).
    InvalidUtf8,
    /// A close frame with a 1-byte payload (section 5.5.1).
    BadClosePayload,
    /// A close frame with a code no endpoint may send (section 7.4).
    BadCloseCode(u16),
}

impl Violation {
    /// The close code the server answers with (RFC 6455, section 7.4.1).
    pub fn close_code(self) -> u16 {
        match self {
            Violation::Binary => CLOSE_UNSUPPORTED_DATA,
            Violation::InvalidUtf8 => CLOSE_INVALID_DATA,
            Violation::TooLong => CLOSE_TOO_BIG,
            _ => CLOSE_PROTOCOL_ERROR,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Unmasked => write!(f, "unmasked client frame"),
            Violation::ReservedBits => write!(f, "reserved bits set"),
            Violation::ReservedOpcode(op) => write!(f, "reserved opcode {op:#x}"),
            Violation::BadLength => write!(f, "invalid payload length"),
            Violation::ControlTooLong => write!(f, "control frame over 125 bytes"),
            Violation::FragmentedControl => write!(f, "fragmented control frame"),
            Violation::UnexpectedContinuation => write!(f, "continuation without a message"),
            Violation::UnfinishedMessage => write!(f, "new message inside a fragmented one"),
            Violation::Binary => write!(f, "binary messages are not accepted"),
            Violation::TooLong => write!(f, "message over {MAX_LINE_BYTES} bytes"),
            Violation::InvalidUtf8 => write!(f, "text is not UTF-8"),
            Violation::BadClosePayload => write!(f, "close payload of one byte"),
            Violation::BadCloseCode(code) => write!(f, "invalid close code {code}"),
        }
    }
}

/// Checks a client frame header given the reader's state: whether a fragmented message is
/// open and how many bytes it already holds. Pure, so each RFC rule is a table row.
pub fn check_frame(
    header: &FrameHeader,
    in_message: bool,
    message_len: usize,
) -> Result<(), Violation> {
    if header.rsv != 0 {
        return Err(Violation::ReservedBits);
    }
    if header.mask.is_none() {
        return Err(Violation::Unmasked);
    }
    if header.len >> 63 != 0 {
        return Err(Violation::BadLength);
    }
    match header.opcode {
        OP_CLOSE | OP_PING | OP_PONG => {
            if !header.fin {
                return Err(Violation::FragmentedControl);
            }
            if header.len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(Violation::ControlTooLong);
            }
        }
        OP_TEXT | OP_BINARY | OP_CONTINUATION => {
            if header.opcode == OP_CONTINUATION && !in_message {
                return Err(Violation::UnexpectedContinuation);
            }
            if header.opcode != OP_CONTINUATION && in_message {
                return Err(Violation::UnfinishedMessage);
            }
            if header.opcode == OP_BINARY {
                return Err(Violation::Binary);
            }
            // Refused on the declared length, before a byte of the payload is buffered.
            if header.len > (MAX_LINE_BYTES - message_len) as u64 {
                return Err(Violation::TooLong);
            }
        }
        reserved => return Err(Violation::ReservedOpcode(reserved)),
    }
    Ok(())
}

/// The code to answer a client's close frame with: its own code echoed, or 1000 for an
/// empty close (which means "no status", 1005, a code that is never sent on the wire).
pub fn close_reply_code(payload: &[u8]) -> Result<u16, Violation> {
    match payload {
        [] => Ok(CLOSE_NORMAL),
        [_] => Err(Violation::BadClosePayload),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            // Codes a peer may send (section 7.4): the defined ones except 1004-1006 and
            // 1015, the IANA-registered 1012-1014, and the application range 3000-4999.
            if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
                return Err(Violation::BadCloseCode(code));
            }
            std::str::from_utf8(reason).map_err(|_| Violation::InvalidUtf8)?;
            Ok(code)
        }
    }
}

/// Where [`WsLines`] sends the control frames it must answer with (pong, close), already
/// framed. The caller queues them on the connection's outbound path, so that they never
/// cut into a data frame being written.
pub type ControlSink = Box<dyn FnMut(Vec<u8>) + Send>;

/// A frame whose header has been read and checked, while its payload arrives.
#[derive(Debug, Clone, Copy)]
struct Frame {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Payload bytes still to come.
    left: usize,
    /// Payload bytes already unmasked, for the mask's rotation.
    done: usize,
}

/// Reads client frames from any [`Read`] as chat lines: each text message is one
/// [`Line::Text`], cleaned by [`clean_line`] exactly like a TCP line.
///
/// - A `\n` or `\r` inside a message is not a line break: like every control character it
///   is dropped, so one message is always exactly one line and can never carry a second
///   command.
/// - Pings are answered with pongs, also between the fragments of a message; pongs are
///   ignored.
/// - A client's close is answered with a close (its code echoed, or 1000), then
///   `next_line` returns `Ok(None)`: the peer has finished.
/// - A violation is answered with a close carrying its code and reason, and `next_line`
///   returns an `InvalidData` error naming it once, then `Ok(None)`.
/// - End of stream without a close (the TCP connection dropped) returns `Ok(None)`.
///
/// Deadlines: [`LineSource::set_deadline`] calls the hook given to
/// [`WsLines::on_deadline`], which sets the deadline on the reader `R` (this module does not
/// know what `R` is). Without a hook deadlines are ignored. A read that times out leaves the
/// decoder's state intact, so a later call carries on where it stopped.
pub struct WsLines<R> {
    source: R,
    buf: Box<[u8]>,
    /// Unconsumed bytes are `buf[start..end]`; between calls they are at most a partial
    /// frame header.
    start: usize,
    end: usize,
    /// The frame whose payload is being read.
    frame: Option<Frame>,
    /// The text message so far (at most [`MAX_LINE_BYTES`]).
    message: Vec<u8>,
    /// True while a fragmented message is open.
    in_message: bool,
    /// The payload of the control frame being read (at most 125 bytes).
    control: Vec<u8>,
    send_control: ControlSink,
    deadline_hook: Option<fn(&mut R, Option<Instant>)>,
    finished: bool,
}

/// What a completed frame means for the reader of lines.
enum Completed {
    Line(Line),
    Closed,
}

impl<R: Read> WsLines<R> {
    /// Reads frames from `source` (positioned just after the handshake: see
    /// `http::Prefixed` for bytes that arrived with the request) and sends pongs and closes
    /// to `send_control`.
    pub fn new(source: R, send_control: ControlSink) -> Self {
        WsLines {
            source,
            buf: vec![0; READ_CHUNK].into_boxed_slice(),
            start: 0,
            end: 0,
            frame: None,
            message: Vec::new(),
            in_message: false,
            control: Vec::new(),
            send_control,
            deadline_hook: None,
            finished: false,
        }
    }

    /// Sets how a deadline reaches the reader, e.g.
    /// `|r, deadline| r.get_mut().until = deadline`.
    pub fn on_deadline(mut self, hook: fn(&mut R, Option<Instant>)) -> Self {
        self.deadline_hook = Some(hook);
        self
    }

    /// The reader underneath.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.source
    }

    /// True once the stream has ended: closed by either side, broken, or dropped.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The next line; `Ok(None)` once the client closed or the stream ended.
    pub fn read_line(&mut self) -> io::Result<Option<Line>> {
        while !self.finished {
            match self.take_buffered() {
                Ok(Some(Completed::Line(line))) => return Ok(Some(line)),
                Ok(Some(Completed::Closed)) => self.finished = true,
                Ok(None) => self.fill()?,
                Err(violation) => return Err(self.fail(violation)),
            }
        }
        Ok(None)
    }

    /// Reads more bytes behind the unconsumed ones (at most a partial header).
    fn fill(&mut self) -> io::Result<()> {
        self.buf.copy_within(self.start..self.end, 0);
        (self.start, self.end) = (0, self.end - self.start);
        loop {
            match self.source.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.finished = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Consumes buffered bytes until a frame completes something for the caller or more
    /// bytes are needed (`Ok(None)`).
    fn take_buffered(&mut self) -> Result<Option<Completed>, Violation> {
        loop {
            let Some(mut frame) = self.frame else {
                let Some((header, used)) = parse_frame_header(&self.buf[self.start..self.end])
                else {
                    return Ok(None);
                };
                check_frame(&header, self.in_message, self.message.len())?;
                self.start += used;
                self.frame = Some(Frame {
                    fin: header.fin,
                    opcode: header.opcode,
                    mask: header.mask.unwrap_or_default(),
                    // check_frame capped the length at MAX_LINE_BYTES or 125.
                    left: header.len as usize,
                    done: 0,
                });
                continue;
            };
            let n = frame.left.min(self.end - self.start);
            let payload = &self.buf[self.start..self.start + n];
            let into = if is_control(frame.opcode) {
                &mut self.control
            } else {
                &mut self.message
            };
            into.extend(
                payload
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ frame.mask[(frame.done + i) % 4]),
            );
            self.start += n;
            frame.left -= n;
            frame.done += n;
            if frame.left > 0 {
                self.frame = Some(frame);
                return Ok(None);
            }
            self.frame = None;
            if let Some(completed) = self.complete(&frame)? {
                return Ok(Some(completed));
            }
        }
    }

    /// Acts on a frame whose payload is complete.
    fn complete(&mut self, frame: &Frame) -> Result<Option<Completed>, Violation> {
        match frame.opcode {
            OP_PING => {
                (self.send_control)(pong_frame(&self.control));
                self.control.clear();
                Ok(None)
            }
            OP_PONG => {
                self.control.clear();
                Ok(None)
            }
            OP_CLOSE => {
                let code = close_reply_code(&self.control)?;
                (self.send_control)(close_frame(code, ""));
                Ok(Some(Completed::Closed))
            }
            _ if !frame.fin => {
                self.in_message = true;
                Ok(None)
            }
            _ => {
                self.in_message = false;
                let message = std::mem::take(&mut self.message);
                // The whole message is checked, not each fragment: a character may be
                // split between two fragments.
                if std::str::from_utf8(&message).is_err() {
                    return Err(Violation::InvalidUtf8);
                }
                Ok(Some(Completed::Line(Line::Text(clean_line(&message)))))
            }
        }
    }

    /// Closes with the violation's code and turns it into the error `read_line` returns.
    fn fail(&mut self, violation: Violation) -> io::Error {
        self.finished = true;
        let code = violation.close_code();
        (self.send_control)(close_frame(code, &violation.to_string()));
        io::Error::new(
            ErrorKind::InvalidData,
            format!("websocket close {code}: {violation}"),
        )
    }

    /// True if a whole unfragmented text frame is buffered, so `read_line` returns without
    /// waiting. False when unsure (e.g. a ping comes first).
    pub fn line_ready(&self) -> bool {
        if self.finished || self.frame.is_some() || self.in_message {
            return false;
        }
        let pending = &self.buf[self.start..self.end];
        match parse_frame_header(pending) {
            Some((header, used)) => {
                header.fin
                    && header.opcode == OP_TEXT
                    && pending.len() - used >= header.len.min(u64::from(u32::MAX)) as usize
            }
            None => false,
        }
    }
}

fn is_control(opcode: u8) -> bool {
    opcode & 0x08 != 0
}

impl<R: Read> LineSource for WsLines<R> {
    fn next_line(&mut self) -> io::Result<Option<Line>> {
        self.read_line()
    }

    fn line_ready(&self) -> bool {
        WsLines::line_ready(self)
    }

    fn set_deadline(&mut self, deadline: Option<Instant>) {
        if let Some(hook) = self.deadline_hook {
            hook(&mut self.source, deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    // ---- Handshake ----

    #[test]
    fn rfc_6455_handshake_example() {
        // RFC 6455, section 1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    /// A browser's upgrade request to `host`, with `changes` applied: `(name, None)` drops
    /// a header, `(name, Some(v))` replaces or adds it.
    fn upgrade(changes: &[(&str, Option<&str>)]) -> Request {
        let mut headers = vec![
            ("Host", "chat.example.org:8081".to_string()),
            ("Upgrade", "websocket".into()),
            ("Connection", "keep-alive, Upgrade".into()),
            ("Sec-WebSocket-Version", "13".into()),
            ("Sec-WebSocket-Key", KEY.into()),
            ("Origin", "http://chat.example.org:8081".into()),
        ];
        for (name, value) in changes {
            headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            if let Some(v) = value {
                headers.push((name, v.to_string()));
            }
        }
        let head: String = headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}\r\n"))
            .collect();
        let head = format!("GET /ws HTTP/1.1\r\n{head}\r\n");
        http::parse_head(head.as_bytes()).expect("test request parses")
    }

    #[test]
    fn handshake_table() {
        use HandshakeError::*;
        let ok = Ok("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".to_string());
        type Changes = Vec<(&'static str, Option<&'static str>)>;
        let rows: Vec<(Changes, Result<String, HandshakeError>)> = vec![
            (vec![], ok.clone()),
            (vec![("Upgrade", Some("WebSocket"))], ok.clone()),
            (vec![("Connection", Some("Upgrade"))], ok.clone()),
            (vec![("Connection", Some("upgrade"))], ok.clone()),
            (vec![("Origin", None)], ok.clone()),
            (vec![("Host", None)], Err(NoHost)),
            (vec![("Upgrade", None)], Err(NotAnUpgrade)),
            (vec![("Upgrade", Some("h2c"))], Err(NotAnUpgrade)),
            (vec![("Connection", None)], Err(NotAnUpgrade)),
            (vec![("Connection", Some("keep-alive"))], Err(NotAnUpgrade)),
            (
                vec![("Sec-WebSocket-Version", None)],
                Err(UnsupportedVersion),
            ),
            (
                vec![("Sec-WebSocket-Version", Some("8"))],
                Err(UnsupportedVersion),
            ),
            (vec![("Sec-WebSocket-Key", None)], Err(BadKey)),
            (vec![("Sec-WebSocket-Key", Some(""))], Err(BadKey)),
            (
                vec![("Sec-WebSocket-Key", Some("not base64!"))],
                Err(BadKey),
            ),
            // Base64, but of 15 and 17 bytes.
            (
                vec![("Sec-WebSocket-Key", Some("AAAAAAAAAAAAAAAAAAAA"))],
                Err(BadKey),
            ),
            (
                vec![("Sec-WebSocket-Key", Some("AAAAAAAAAAAAAAAAAAAAAAA="))],
                Err(BadKey),
            ),
            (
                vec![("Origin", Some("http://evil.example:8081"))],
                Err(OriginRefused),
            ),
            (vec![("Origin", Some("null"))], Err(OriginRefused)),
        ];
        for (changes, expected) in rows {
            assert_eq!(check_handshake(&upgrade(&changes)), expected, "{changes:?}");
        }
        let mut old = upgrade(&[]);
        old.minor_version = 0;
        assert_eq!(check_handshake(&old), Err(NotHttp11));
    }

    #[test]
    fn handshake_error_responses() {
        use HandshakeError::*;
        let rows = [
            (NotHttp11, 400),
            (NoHost, 400),
            (BadKey, 400),
            (NotAnUpgrade, 426),
            (UnsupportedVersion, 426),
            (OriginRefused, 403),
        ];
        for (error, code) in rows {
            let response = error.response();
            assert_eq!(response.status.code(), code, "{error:?}");
            if code == 426 {
                assert_eq!(response.header("Sec-WebSocket-Version"), Some("13"));
            }
        }
    }

    #[test]
    fn origin_policy_table() {
        let rows: Vec<(Option<&str>, &str, bool)> = vec![
            (None, "chat.example.org:8081", true),
            (
                Some("http://chat.example.org:8081"),
                "chat.example.org:8081",
                true,
            ),
            (Some("https://chat.example.org"), "chat.example.org", true),
            (Some("http://chat.example.org"), "chat.example.org", true),
            (Some("http://chat.example.org"), "chat.example.org:80", true),
            (
                Some("https://chat.example.org:443"),
                "chat.example.org",
                true,
            ),
            (
                Some("HTTP://Chat.Example.ORG:8081"),
                "chat.example.org:8081",
                true,
            ),
            (Some("http://127.0.0.1:8081"), "127.0.0.1:8081", true),
            (Some("http://[::1]:8081"), "[::1]:8081", true),
            (Some("http://[::1]"), "[::1]:80", true),
            (Some("http://localhost:8081"), "127.0.0.1:8081", false),
            (
                Some("http://chat.example.org:8082"),
                "chat.example.org:8081",
                false,
            ),
            (
                Some("https://chat.example.org"),
                "chat.example.org:80",
                false,
            ),
            (
                Some("http://chat.example.org"),
                "chat.example.org:443",
                false,
            ),
            (Some("http://evil.example"), "chat.example.org", false),
            (
                Some("http://chat.example.org.evil.example"),
                "chat.example.org",
                false,
            ),
            (Some("null"), "chat.example.org", false),
            (Some(""), "chat.example.org", false),
            (Some("file://"), "chat.example.org", false),
            (Some("chrome-extension://abc"), "abc", false),
            (
                Some("http://user@chat.example.org"),
                "chat.example.org",
                false,
            ),
            (Some("http://chat.example.org/"), "chat.example.org", false),
            (Some("http://chat.example.org:"), "chat.example.org:", false),
            (Some("http://"), "", false),
        ];
        for (origin, host, expected) in rows {
            assert_eq!(
                origin_allowed(origin, host),
                expected,
                "{origin:?} {host:?}"
            );
        }
    }

    #[test]
    fn handshake_response_bytes() {
        let wire = handshake_response("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=").to_bytes();
        assert_eq!(
            String::from_utf8_lossy(&wire),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
    }

    // ---- Server frames ----

    #[test]
    fn server_frame_table() {
        // RFC 6455, section 5.7, for the first two; the rest by the length rules of 5.2.
        let rows: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (text_frame("Hello"), b"\x81\x05Hello".to_vec()),
            (pong_frame(b"Hello"), b"\x8a\x05Hello".to_vec()),
            (text_frame(""), b"\x81\x00".to_vec()),
            (close_frame(1000, ""), b"\x88\x02\x03\xe8".to_vec()),
            (close_frame(1002, "bad"), b"\x88\x05\x03\xeabad".to_vec()),
            (
                text_frame(&"a".repeat(126)),
                [b"\x81\x7e\x00\x7e".as_slice(), &[b'a'; 126]].concat(),
            ),
            (
                text_frame(&"a".repeat(65536)),
                [b"\x81\x7f\0\0\0\0\0\x01\0\0".as_slice(), &[b'a'; 65536]].concat(),
            ),
        ];
        for (got, expected) in rows {
            assert_eq!(got, expected);
        }
        assert_eq!(text_frame(&"a".repeat(125))[1], 125);
        assert_eq!(text_frame(&"a".repeat(65535))[1..4], [126, 0xff, 0xff]);
    }

    #[test]
    fn control_frames_are_cut_to_125_bytes() {
        assert_eq!(pong_frame(&[7; 200]).len(), 2 + 125);
        // A reason of two-byte characters is cut at a character boundary.
        let close = close_frame(1000, &"\u{e9}".repeat(100));
        assert_eq!(close[1], 2 + 122);
        assert!(std::str::from_utf8(&close[4..]).is_ok());
    }

    #[test]
    fn frame_lines_table() {
        let rows: Vec<(&str, Vec<&str>, usize)> = vec![
            ("", vec![], 0),
            ("a\n", vec!["a"], 2),
            (
                "* alice joined.\nbob: hi\n",
                vec!["* alice joined.", "bob: hi"],
                24,
            ),
            ("\n", vec![""], 1),
            ("done\npartial", vec!["done"], 5),
            ("partial", vec![], 0),
        ];
        for (lines, texts, used) in rows {
            let mut out = b"before".to_vec();
            assert_eq!(frame_lines(lines, &mut out), used, "{lines:?}");
            let expected: Vec<u8> = texts.iter().flat_map(|t| text_frame(t)).collect();
            assert_eq!(out, [b"before".as_slice(), &expected].concat(), "{lines:?}");
        }
    }

    // ---- Client frames ----

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A client frame with every field chosen by the test; `mask: None` sends it unmasked.
    fn raw(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut frame = vec![first];
        let mask_bit = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            len @ 0..=125 => frame.push(mask_bit | len as u8),
            len @ 126..=0xFFFF => {
                frame.push(mask_bit | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(mask_bit | 127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        if let Some(key) = mask {
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        frame
    }

    /// A masked client frame: `fin` plus `opcode`.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        raw(if fin { 0x80 } else { 0 } | opcode, payload, Some(MASK))
    }

    fn text(payload: &str) -> Vec<u8> {
        frame(true, OP_TEXT, payload.as_bytes())
    }

    fn close(code: u16, reason: &[u8]) -> Vec<u8> {
        frame(true, OP_CLOSE, &[&code.to_be_bytes(), reason].concat())
    }

    /// A header declaring `len` payload bytes, with none of them following.
    fn declared(opcode: u8, len: u64) -> Vec<u8> {
        let mut header = vec![0x80 | opcode, 0x80 | 127];
        header.extend_from_slice(&len.to_be_bytes());
        header.extend_from_slice(&MASK);
        header
    }

    /// A control frame the server sent, decoded for comparison.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Sent {
        Pong(Vec<u8>),
        Close(Option<u16>),
    }

    fn decode_sent(frame: &[u8]) -> Sent {
        let (header, used) = parse_frame_header(frame).expect("a whole frame");
        assert!(
            header.fin && header.rsv == 0 && header.mask.is_none(),
            "{frame:?}"
        );
        let payload = &frame[used..];
        assert_eq!(payload.len() as u64, header.len, "{frame:?}");
        match header.opcode {
            OP_PONG => Sent::Pong(payload.to_vec()),
            OP_CLOSE => Sent::Close(
                (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]])),
            ),
            op => panic!("unexpected opcode {op}"),
        }
    }

    /// A source that returns at most `step` bytes per read.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// A decoder over `source` whose control frames land in the returned list.
    /// The control frames a decoder sent, in order.
    type SentFrames = Arc<Mutex<Vec<Vec<u8>>>>;

    fn decoder<R: Read>(source: R) -> (WsLines<R>, SentFrames) {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&sent);
        let lines = WsLines::new(
            source,
            Box::new(move |frame| sink.lock().expect("test lock").push(frame)),
        );
        (lines, sent)
    }

    /// What reading `input` to its end gives: the lines, the control frames sent, and the
    /// error's message if reading ended with one.
    #[derive(Debug, PartialEq)]
    struct Outcome {
        lines: Vec<String>,
        sent: Vec<Sent>,
        failed: bool,
    }

    fn run(input: &[u8], step: usize) -> Outcome {
        let (mut lines, sent) = decoder(Trickle(input, step));
        let mut out = Vec::new();
        let failed = loop {
            match lines.next_line() {
                Ok(Some(Line::Text(text))) => out.push(text),
                Ok(Some(Line::TooLong)) => panic!("the decoder closes instead"),
                Ok(None) => break false,
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::InvalidData);
                    // After the error the stream is over.
                    assert!(matches!(lines.next_line(), Ok(None)));
                    break true;
                }
            }
        };
        let sent = sent
            .lock()
            .expect("test lock")
            .iter()
            .map(|f| decode_sent(f))
            .collect();
        Outcome {
            lines: out,
            sent,
            failed,
        }
    }

    fn lines_then(lines: &[&str], sent: Vec<Sent>, failed: bool) -> Outcome {
        Outcome {
            lines: lines.iter().map(|l| l.to_string()).collect(),
            sent,
            failed,
        }
    }

    /// Ended cleanly (end of stream or the client's close) with these lines and answers.
    fn ok(lines: &[&str], sent: Vec<Sent>) -> Outcome {
        lines_then(lines, sent, false)
    }

    /// Closed by the server with `code` after these lines.
    fn closed_with(lines: &[&str], code: u16) -> Outcome {
        lines_then(lines, vec![Sent::Close(Some(code))], true)
    }

    #[test]
    fn client_frame_table() {
        use Sent::*;
        let max = "x".repeat(MAX_LINE_BYTES);
        let half = "y".repeat(MAX_LINE_BYTES / 2);
        let ping = |p: &[u8]| frame(true, OP_PING, p);
        let rows: Vec<(&str, Vec<u8>, Outcome)> = vec![
            ("nothing", vec![], ok(&[], vec![])),
            ("one message", text("hello"), ok(&["hello"], vec![])),
            (
                "RFC 6455 5.7 masked Hello",
                b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58".to_vec(),
                ok(&["Hello"], vec![]),
            ),
            (
                "two messages",
                [text("a"), text("b")].concat(),
                ok(&["a", "b"], vec![]),
            ),
            ("empty message", text(""), ok(&[""], vec![])),
            (
                "UTF-8",
                text("caf\u{e9} \u{1F600}"),
                ok(&["caf\u{e9} \u{1F600}"], vec![]),
            ),
            ("tab kept", text("a\tb"), ok(&["a\tb"], vec![])),
            (
                "newline is not a line break",
                text("a\nb\r\n"),
                ok(&["ab"], vec![]),
            ),
            ("escape cleaned", text("\x1b[31mred"), ok(&["red"], vec![])),
            ("C1 cleaned", text("\u{9b}2J"), ok(&["2J"], vec![])),
            ("exactly the limit", text(&max), ok(&[&max], vec![])),
            // Fragments.
            (
                "fragmented",
                [
                    frame(false, OP_TEXT, b"hel"),
                    frame(true, OP_CONTINUATION, b"lo"),
                ]
                .concat(),
                ok(&["hello"], vec![]),
            ),
            (
                "three fragments, empty ones too",
                [
                    frame(false, OP_TEXT, b""),
                    frame(false, OP_CONTINUATION, b"a"),
                    frame(true, OP_CONTINUATION, b""),
                ]
                .concat(),
                ok(&["a"], vec![]),
            ),
            (
                "character split across fragments",
                [
                    frame(false, OP_TEXT, b"\xce"),
                    frame(true, OP_CONTINUATION, b"\xba"),
                ]
                .concat(),
                ok(&["\u{3ba}"], vec![]),
            ),
            (
                "fragments up to the limit",
                [
                    frame(false, OP_TEXT, half.as_bytes()),
                    frame(true, OP_CONTINUATION, half.as_bytes()),
                ]
                .concat(),
                ok(&[&(half.clone() + &half)], vec![]),
            ),
            // Ping and pong.
            (
                "ping",
                ping(b"are you there"),
                ok(&[], vec![Pong(b"are you there".to_vec())]),
            ),
            ("empty ping", ping(b""), ok(&[], vec![Pong(vec![])])),
            (
                "125-byte ping",
                ping(&[9; 125]),
                ok(&[], vec![Pong(vec![9; 125])]),
            ),
            (
                "ping between fragments",
                [
                    frame(false, OP_TEXT, b"hel"),
                    ping(b"p"),
                    frame(true, OP_CONTINUATION, b"lo"),
                ]
                .concat(),
                ok(&["hello"], vec![Pong(b"p".to_vec())]),
            ),
            (
                "pong ignored",
                [frame(true, OP_PONG, b"x"), text("a")].concat(),
                ok(&["a"], vec![]),
            ),
            // The closing handshake.
            (
                "close 1000",
                close(1000, b"bye"),
                ok(&[], vec![Close(Some(1000))]),
            ),
            (
                "close echoes 1001",
                close(1001, b""),
                ok(&[], vec![Close(Some(1001))]),
            ),
            (
                "close echoes 3000",
                close(3000, b""),
                ok(&[], vec![Close(Some(3000))]),
            ),
            (
                "close echoes 4999",
                close(4999, b""),
                ok(&[], vec![Close(Some(4999))]),
            ),
            (
                "close echoes 1014",
                close(1014, b""),
                ok(&[], vec![Close(Some(1014))]),
            ),
            (
                "empty close (1005) answered with 1000",
                frame(true, OP_CLOSE, b""),
                ok(&[], vec![Close(Some(1000))]),
            ),
            (
                "nothing is read after a close",
                [text("a"), close(1000, b""), text("b")].concat(),
                ok(&["a"], vec![Close(Some(1000))]),
            ),
            (
                "close between fragments",
                [frame(false, OP_TEXT, b"a"), close(1000, b"")].concat(),
                ok(&[], vec![Close(Some(1000))]),
            ),
            (
                "close of one byte",
                frame(true, OP_CLOSE, b"\x03"),
                closed_with(&[], 1002),
            ),
            ("close code 999", close(999, b""), closed_with(&[], 1002)),
            ("close code 1004", close(1004, b""), closed_with(&[], 1002)),
            ("close code 1005", close(1005, b""), closed_with(&[], 1002)),
            ("close code 1006", close(1006, b""), closed_with(&[], 1002)),
            ("close code 1015", close(1015, b""), closed_with(&[], 1002)),
            ("close code 2999", close(2999, b""), closed_with(&[], 1002)),
            ("close code 5000", close(5000, b""), closed_with(&[], 1002)),
            (
                "close reason not UTF-8",
                close(1000, b"\xff"),
                closed_with(&[], 1007),
            ),
            // Violations.
            ("unmasked", raw(0x81, b"hi", None), closed_with(&[], 1002)),
            (
                "unmasked after a good one",
                [text("a"), raw(0x81, b"hi", None)].concat(),
                closed_with(&["a"], 1002),
            ),
            (
                "unmasked ping",
                raw(0x89, b"", None),
                closed_with(&[], 1002),
            ),
            (
                "binary",
                frame(true, OP_BINARY, b"\x00\x01"),
                closed_with(&[], 1003),
            ),
            (
                "fragmented binary",
                frame(false, OP_BINARY, b"a"),
                closed_with(&[], 1003),
            ),
            (
                "invalid UTF-8",
                text_bytes(b"a\xffb"),
                closed_with(&[], 1007),
            ),
            (
                "overlong UTF-8",
                text_bytes(b"\xc0\xaf"),
                closed_with(&[], 1007),
            ),
            (
                "surrogate",
                text_bytes(b"\xed\xa0\x80"),
                closed_with(&[], 1007),
            ),
            (
                "truncated character",
                text_bytes(b"\xce"),
                closed_with(&[], 1007),
            ),
            (
                "invalid UTF-8 across fragments",
                [
                    frame(false, OP_TEXT, b"\xce"),
                    frame(true, OP_CONTINUATION, b"A"),
                ]
                .concat(),
                closed_with(&[], 1007),
            ),
            ("ping of 126 bytes", ping(&[0; 126]), closed_with(&[], 1002)),
            (
                "close of 126 bytes",
                close(1000, &[b'a'; 124]),
                closed_with(&[], 1002),
            ),
            (
                "fragmented ping",
                frame(false, OP_PING, b""),
                closed_with(&[], 1002),
            ),
            (
                "fragmented close",
                frame(false, OP_CLOSE, b""),
                closed_with(&[], 1002),
            ),
            ("RSV1", raw(0xc1, b"a", Some(MASK)), closed_with(&[], 1002)),
            ("RSV2", raw(0xa1, b"a", Some(MASK)), closed_with(&[], 1002)),
            ("RSV3", raw(0x91, b"a", Some(MASK)), closed_with(&[], 1002)),
            (
                "RSV on a ping",
                raw(0xc9, b"", Some(MASK)),
                closed_with(&[], 1002),
            ),
            (
                "continuation without a start",
                frame(true, OP_CONTINUATION, b"a"),
                closed_with(&[], 1002),
            ),
            (
                "continuation after a finished message",
                [text("a"), frame(true, OP_CONTINUATION, b"b")].concat(),
                closed_with(&["a"], 1002),
            ),
            (
                "text inside a fragmented message",
                [frame(false, OP_TEXT, b"a"), text("b")].concat(),
                closed_with(&[], 1002),
            ),
            (
                "binary inside a fragmented message",
                [frame(false, OP_TEXT, b"a"), frame(true, OP_BINARY, b"b")].concat(),
                closed_with(&[], 1002),
            ),
            // Too long: refused from the header, payload or not.
            (
                "one byte over",
                text(&format!("{max}x")),
                closed_with(&[], 1009),
            ),
            (
                "declared over, nothing sent",
                declared(OP_TEXT, 1025),
                closed_with(&[], 1009),
            ),
            (
                "declared 2^62",
                declared(OP_TEXT, 1 << 62),
                closed_with(&[], 1009),
            ),
            (
                "declared 2^63",
                declared(OP_TEXT, 1 << 63),
                closed_with(&[], 1002),
            ),
            (
                "fragments over the limit",
                [
                    frame(false, OP_TEXT, max.as_bytes()),
                    frame(true, OP_CONTINUATION, b"x"),
                ]
                .concat(),
                closed_with(&[], 1009),
            ),
            // Ends without a close.
            (
                "cut inside a header",
                text("hello")[..3].to_vec(),
                ok(&[], vec![]),
            ),
            (
                "cut inside a payload",
                text("hello")[..8].to_vec(),
                ok(&[], vec![]),
            ),
            (
                "cut inside a fragmented message",
                frame(false, OP_TEXT, b"a"),
                ok(&[], vec![]),
            ),
        ];
        for reserved in [3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
            let outcome = run(&frame(true, reserved, b""), usize::MAX);
            assert_eq!(outcome, closed_with(&[], 1002), "opcode {reserved}");
        }
        for (name, input, expected) in rows {
            for step in [1, 2, 3, 7, 100, usize::MAX] {
                assert_eq!(run(&input, step), expected, "{name}, {step} bytes per read");
            }
        }
    }

    fn text_bytes(payload: &[u8]) -> Vec<u8> {
        frame(true, OP_TEXT, payload)
    }

    #[test]
    fn violations_close_with_a_reason() {
        let (mut lines, sent) = decoder(&b"\x81\x02hi"[..]);
        let error = lines.next_line().expect_err("unmasked frame");
        assert_eq!(
            error.to_string(),
            "websocket close 1002: unmasked client frame"
        );
        let sent = sent.lock().expect("test lock");
        assert_eq!(sent[..], [close_frame(1002, "unmasked client frame")]);
    }

    #[test]
    fn close_reply_code_table() {
        let rows: Vec<(&[u8], Result<u16, Violation>)> = vec![
            (b"", Ok(1000)),
            (b"\x03\xe8", Ok(1000)),
            (b"\x03\xe8bye", Ok(1000)),
            (b"\x03\xe9", Ok(1001)),
            (b"\x03\xea", Ok(1002)),
            (b"\x03\xeb", Ok(1003)),
            (b"\x03\xef", Ok(1007)),
            (b"\x03\xf3", Ok(1011)),
            (b"\x0b\xb8", Ok(3000)),
            (b"\x13\x87", Ok(4999)),
            (b"\x03", Err(Violation::BadClosePayload)),
            (b"\x00\x00", Err(Violation::BadCloseCode(0))),
            (b"\x03\xec", Err(Violation::BadCloseCode(1004))),
            (b"\x03\xed", Err(Violation::BadCloseCode(1005))),
            (b"\x03\xee", Err(Violation::BadCloseCode(1006))),
            (b"\x03\xf7", Err(Violation::BadCloseCode(1015))),
            (b"\x07\xd0", Err(Violation::BadCloseCode(2000))),
            (b"\x13\x88", Err(Violation::BadCloseCode(5000))),
            (b"\x03\xe8\xff", Err(Violation::InvalidUtf8)),
        ];
        for (payload, expected) in rows {
            assert_eq!(close_reply_code(payload), expected, "{payload:?}");
        }
    }

    #[test]
    fn frame_header_table() {
        let header = |fin, rsv, opcode, mask, len| FrameHeader {
            fin,
            rsv,
            opcode,
            mask,
            len,
        };
        type Parsed = Option<(FrameHeader, usize)>;
        let rows: Vec<(&[u8], Parsed)> = vec![
            (b"", None),
            (b"\x81", None),
            (b"\x81\x05", Some((header(true, 0, 1, None, 5), 2))),
            (b"\x01\x80\x01\x02\x03", None),
            (
                b"\x01\x80\x01\x02\x03\x04",
                Some((header(false, 0, 1, Some([1, 2, 3, 4]), 0), 6)),
            ),
            (b"\xf2\x7e\x01", None),
            (
                b"\xf2\x7e\x01\x00",
                Some((header(true, 7, 2, None, 256), 4)),
            ),
            (b"\x89\xfe\x00\x7e\x01\x02\x03", None),
            (
                b"\x89\xfe\x00\x7e\x01\x02\x03\x04",
                Some((header(true, 0, 9, Some([1, 2, 3, 4]), 126), 8)),
            ),
            (b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00", None),
            (
                b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00",
                Some((header(true, 0, 2, None, 65536), 10)),
            ),
            (
                b"\x82\xff\x80\x00\x00\x00\x00\x00\x00\x00\x09\x08\x07\x06",
                Some((header(true, 0, 2, Some([9, 8, 7, 6]), 1 << 63), 14)),
            ),
        ];
        for (bytes, expected) in rows {
            assert_eq!(parse_frame_header(bytes), expected, "{bytes:?}");
        }
    }

    #[test]
    fn check_frame_table() {
        use Violation::*;
        let h = |fin: bool, opcode: u8, len: u64| FrameHeader {
            fin,
            rsv: 0,
            opcode,
            mask: Some(MASK),
            len,
        };
        let max = MAX_LINE_BYTES as u64;
        // (header, in a fragmented message, bytes in it, expected)
        let rows: Vec<(FrameHeader, bool, usize, Result<(), Violation>)> = vec![
            (h(true, OP_TEXT, 5), false, 0, Ok(())),
            (h(true, OP_TEXT, max), false, 0, Ok(())),
            (h(true, OP_TEXT, max + 1), false, 0, Err(TooLong)),
            (
                h(true, OP_CONTINUATION, 10),
                true,
                MAX_LINE_BYTES - 10,
                Ok(()),
            ),
            (
                h(true, OP_CONTINUATION, 11),
                true,
                MAX_LINE_BYTES - 10,
                Err(TooLong),
            ),
            (
                h(true, OP_CONTINUATION, u64::MAX >> 1),
                true,
                0,
                Err(TooLong),
            ),
            (h(true, OP_TEXT, u64::MAX), false, 0, Err(BadLength)),
            (
                h(true, OP_CONTINUATION, 1),
                false,
                0,
                Err(UnexpectedContinuation),
            ),
            (h(true, OP_TEXT, 1), true, 1, Err(UnfinishedMessage)),
            (h(true, OP_BINARY, 1), true, 1, Err(UnfinishedMessage)),
            (h(true, OP_BINARY, 1), false, 0, Err(Binary)),
            (h(true, OP_PING, 125), true, MAX_LINE_BYTES, Ok(())),
            (h(true, OP_PING, 126), false, 0, Err(ControlTooLong)),
            (h(false, OP_PONG, 0), false, 0, Err(FragmentedControl)),
            (h(true, OP_CLOSE, 2), true, 5, Ok(())),
            (h(true, 0x3, 0), false, 0, Err(ReservedOpcode(3))),
            (h(true, 0xb, 0), false, 0, Err(ReservedOpcode(0xb))),
            (
                FrameHeader {
                    mask: None,
                    ..h(true, OP_TEXT, 1)
                },
                false,
                0,
                Err(Unmasked),
            ),
            (
                FrameHeader {
                    rsv: 4,
                    ..h(true, OP_TEXT, 1)
                },
                false,
                0,
                Err(ReservedBits),
            ),
        ];
        for (header, in_message, len, expected) in rows {
            assert_eq!(
                check_frame(&header, in_message, len),
                expected,
                "{header:?}"
            );
        }
        let codes = [
            (Binary, 1003),
            (InvalidUtf8, 1007),
            (TooLong, 1009),
            (Unmasked, 1002),
        ];
        for (violation, code) in codes {
            assert_eq!(violation.close_code(), code, "{violation:?}");
        }
    }

    #[test]
    fn memory_stays_bounded_whatever_the_header_declares() {
        // A declared exabyte is refused from the header alone, after reading 14 bytes.
        let mut input = declared(OP_TEXT, 1 << 60);
        input.extend(std::iter::repeat_n(b'x', 64 * 1024));
        let (mut lines, _) = decoder(&input[..]);
        assert!(lines.next_line().is_err());
        assert!(lines.message.capacity() == 0);
        // A stream of fragments at the limit never holds more than the limit.
        let piece = vec![b'z'; MAX_LINE_BYTES / 4];
        let mut input = frame(false, OP_TEXT, &piece);
        for _ in 0..100 {
            input.extend(frame(false, OP_CONTINUATION, &piece));
        }
        let (mut lines, _) = decoder(Trickle(&input, 1000));
        assert!(lines.next_line().is_err());
        assert!(lines.message.capacity() <= 2 * MAX_LINE_BYTES);
        assert!(lines.buf.len() == READ_CHUNK);
    }

    #[test]
    fn line_ready_only_when_a_whole_text_frame_is_buffered() {
        // (input, step, what line_ready says before each read_line until the end)
        let rows: Vec<(Vec<u8>, usize, Vec<bool>)> = vec![
            (text("a"), usize::MAX, vec![false, false]),
            (
                [text("a"), text("b")].concat(),
                usize::MAX,
                vec![false, true, false],
            ),
            (
                [text("a"), text("b")].concat(),
                8,
                vec![false, false, false],
            ),
            // A ping first: unsure, so false.
            (
                [text("a"), frame(true, OP_PING, b""), text("b")].concat(),
                usize::MAX,
                vec![false, false, false],
            ),
            // A fragment first: false.
            (
                [
                    text("a"),
                    frame(false, OP_TEXT, b"b"),
                    frame(true, OP_CONTINUATION, b"c"),
                ]
                .concat(),
                usize::MAX,
                vec![false, false, false],
            ),
        ];
        for (input, step, expected) in rows {
            let (mut lines, _) = decoder(Trickle(&input, step));
            let mut ready = vec![lines.line_ready()];
            while let Ok(Some(_)) = lines.next_line() {
                ready.push(lines.line_ready());
            }
            assert_eq!(ready, expected, "{input:?} step {step}");
        }
    }

    #[test]
    fn a_timed_out_read_leaves_the_decoder_able_to_go_on() {
        /// Yields its pieces one per read, with a timeout before each.
        struct Stutter(Vec<Vec<u8>>, bool);
        impl Read for Stutter {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.1 = !self.1;
                if self.1 {
                    return Err(ErrorKind::TimedOut.into());
                }
                if self.0.is_empty() {
                    return Ok(0);
                }
                let piece = self.0.remove(0);
                buf[..piece.len()].copy_from_slice(&piece);
                Ok(piece.len())
            }
        }
        let message = [
            frame(false, OP_TEXT, b"hel"),
            frame(true, OP_CONTINUATION, b"lo"),
        ]
        .concat();
        let pieces = message.chunks(3).map(|c| c.to_vec()).collect();
        let (mut lines, _) = decoder(Stutter(pieces, false));
        let mut got = Vec::new();
        let mut timeouts = 0;
        loop {
            match lines.next_line() {
                Ok(Some(Line::Text(t))) => got.push(t),
                Ok(other) => {
                    assert_eq!(other, None);
                    break;
                }
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::TimedOut);
                    timeouts += 1;
                }
            }
        }
        assert_eq!(got, ["hello"]);
        assert!(timeouts > 3);
    }

    #[test]
    fn set_deadline_goes_to_the_hook() {
        struct Clocked {
            until: Option<Instant>,
        }
        impl Read for Clocked {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Ok(0)
            }
        }
        let (lines, _) = decoder(Clocked { until: None });
        let mut lines = lines.on_deadline(|r, deadline| r.until = deadline);
        let when = Instant::now();
        LineSource::set_deadline(&mut lines, Some(when));
        assert_eq!(lines.get_mut().until, Some(when));
        LineSource::set_deadline(&mut lines, None);
        assert_eq!(lines.get_mut().until, None);
        // Without a hook, nothing happens (and nothing breaks).
        let (mut bare, _) = decoder(Clocked { until: None });
        LineSource::set_deadline(&mut bare, Some(when));
        assert_eq!(bare.get_mut().until, None);
        assert!(matches!(bare.next_line(), Ok(None)) && bare.is_finished());
    }

    #[test]
    fn replies_to_pings_and_closes_are_whole_frames_in_order() {
        let input = [
            frame(true, OP_PING, b"1"),
            text("a"),
            frame(true, OP_PING, b"2"),
            close(1000, b""),
        ]
        .concat();
        let (mut lines, sent) = decoder(&input[..]);
        assert_eq!(lines.next_line().ok(), Some(Some(Line::Text("a".into()))));
        assert_eq!(sent.lock().expect("test lock")[..], [pong_frame(b"1")]);
        assert_eq!(lines.next_line().ok(), Some(None));
        assert_eq!(
            sent.lock().expect("test lock")[..],
            [pong_frame(b"1"), pong_frame(b"2"), close_frame(1000, "")]
        );
    }
}
