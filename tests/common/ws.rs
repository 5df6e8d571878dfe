//! A small WebSocket client for the integration tests (RFC 6455, std only): connect and
//! handshake like a browser, send masked frames of any kind (including broken ones, and
//! arbitrary raw bytes), and read the server's frames with deadlines.
//!
//! It is written apart from `src/websocket.rs` on purpose: a test client that shared the
//! server's code would agree with the server's bugs. The handshake uses the fixed key of
//! RFC 6455 section 1.3, whose answer is known, so the check needs no SHA-1 here.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use super::DEADLINE;

/// The key of RFC 6455, section 1.3, and the accept value every server must answer it with.
pub const TEST_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const TEST_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// A frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// The close code (none for an empty close) and reason.
    Close(Option<u16>, String),
    /// Anything a server should not send: a fragment, a masked frame, reserved bits or
    /// opcodes, a text that is not UTF-8. Kept raw so a test can say what was wrong.
    Odd {
        first: u8,
        masked: bool,
        payload: Vec<u8>,
    },
}

/// The upgrade request a browser sends for `path`, plus `extra` headers (e.g. `Origin`).
/// A header in `extra` with an empty value removes the default one of that name.
pub fn upgrade_request(host: &str, path: &str, extra: &[(&str, &str)]) -> String {
    let defaults = [
        ("Host", host),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", TEST_KEY),
        ("Sec-WebSocket-Version", "13"),
    ];
    let mut request = format!("GET {path} HTTP/1.1\r\n");
    for (name, value) in defaults {
        if !extra.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    for (name, value) in extra {
        if !value.is_empty() {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    request.push_str("\r\n");
    request
}

/// A masked client frame. `mask` is the masking key; `None` sends the frame unmasked,
/// which a server must refuse.
pub fn client_frame(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
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
    match mask {
        Some(key) => {
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => frame.extend_from_slice(payload),
    }
    frame
}

/// Parses one server frame at the start of `bytes`: `None` while incomplete, else the
/// frame and how many bytes it took.
pub fn parse_server_frame(bytes: &[u8]) -> Option<(Frame, usize)> {
    let (first, second) = (*bytes.first()?, *bytes.get(1)?);
    let (len, mut used) = match second & 0x7f {
        126 => (
            u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?]) as usize,
            4,
        ),
        127 => {
            let len = u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?);
            (usize::try_from(len).ok()?, 10)
        }
        short => (usize::from(short), 2),
    };
    let masked = second & 0x80 != 0;
    let mask = if masked {
        let key: [u8; 4] = bytes.get(used..used + 4)?.try_into().ok()?;
        used += 4;
        key
    } else {
        [0; 4]
    };
    let end = used.checked_add(len)?;
    let payload: Vec<u8> = bytes
        .get(used..end)?
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect();
    let odd = || Frame::Odd {
        first,
        masked,
        payload: payload.clone(),
    };
    // A well-formed server frame: FIN set, no reserved bits, unmasked.
    if first & 0xf0 != 0x80 || masked {
        return Some((odd(), end));
    }
    let frame = match first & 0x0f {
        OP_TEXT => match String::from_utf8(payload.clone()) {
            Ok(text) => Frame::Text(text),
            Err(_) => odd(),
        },
        OP_BINARY => Frame::Binary(payload),
        OP_PING => Frame::Ping(payload),
        OP_PONG => Frame::Pong(payload),
        OP_CLOSE if payload.is_empty() => Frame::Close(None, String::new()),
        OP_CLOSE if payload.len() >= 2 => Frame::Close(
            Some(u16::from_be_bytes([payload[0], payload[1]])),
            String::from_utf8_lossy(&payload[2..]).into_owned(),
        ),
        _ => odd(),
    };
    Some((frame, end))
}

/// One WebSocket connection, reading frames with deadlines.
pub struct WsClient {
    pub stream: TcpStream,
    /// Bytes received and not yet parsed into frames.
    pending: Vec<u8>,
    /// Every frame received so far, for failure messages.
    pub seen: Vec<Frame>,
    /// Changes the masking key for every frame, so tests cover more than one key.
    next_mask: u32,
    /// True once the server closed the TCP connection.
    pub eof: bool,
}

/// What the server answered an upgrade request with, when it was not `101`.
#[derive(Debug)]
pub struct Refused {
    /// The status line, e.g. `HTTP/1.1 403 Forbidden`.
    pub status_line: String,
    /// The whole response as received (head and body) until the server closed.
    pub response: String,
}

impl WsClient {
    /// Connects to `127.0.0.1:port`, upgrades `/ws` with no `Origin` (as a program does),
    /// and checks the `101` answer. Panics if the server refuses.
    pub fn connect(port: u16) -> WsClient {
        match WsClient::connect_with(port, "/ws", &[]) {
            Ok(client) => client,
            Err(refused) => panic!("upgrade refused: {refused:?}"),
        }
    }

    /// Connects and sends [`upgrade_request`]`(host, path, extra)`. `Ok` if the server
    /// switched protocols with the right accept value, `Err` with its answer otherwise.
    pub fn connect_with(
        port: u16,
        path: &str,
        extra: &[(&str, &str)],
    ) -> Result<WsClient, Refused> {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to server");
        let host = format!("127.0.0.1:{port}");
        WsClient::handshake(stream, &upgrade_request(&host, path, extra))
    }

    /// Sends `request` on `stream` and reads the answer's head; bytes after it are kept as
    /// the start of the first frames.
    pub fn handshake(mut stream: TcpStream, request: &str) -> Result<WsClient, Refused> {
        stream
            .write_all(request.as_bytes())
            .expect("send upgrade request");
        stream
            .set_read_timeout(Some(DEADLINE))
            .expect("set timeout");
        let mut received = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => {
                    let response = String::from_utf8_lossy(&received).into_owned();
                    let status_line = response.lines().next().unwrap_or_default().to_string();
                    return Err(Refused {
                        status_line,
                        response,
                    });
                }
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
        let accept_line = format!("sec-websocket-accept: {}", TEST_ACCEPT.to_ascii_lowercase());
        let switched = head.starts_with("HTTP/1.1 101 ")
            && head
                .lines()
                .any(|l| l.trim().to_ascii_lowercase() == accept_line);
        if !switched {
            // Read the rest (the body), until the server closes, for the test to inspect.
            stream
                .set_read_timeout(Some(Duration::from_millis(500)))
                .expect("set timeout");
            let _ = stream.read_to_end(&mut received);
            let response = String::from_utf8_lossy(&received).into_owned();
            let status_line = response.lines().next().unwrap_or_default().to_string();
            return Err(Refused {
                status_line,
                response,
            });
        }
        Ok(WsClient {
            stream,
            pending: received[head_end..].to_vec(),
            seen: Vec::new(),
            next_mask: 0x37fa_213d,
            eof: false,
        })
    }

    fn mask(&mut self) -> [u8; 4] {
        // xorshift32: a different key each frame, the same on every run.
        let mut x = self.next_mask;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.next_mask = x;
        x.to_be_bytes()
    }

    /// Sends one masked frame; `first` is FIN, RSV and opcode as one byte (e.g.
    /// `0x80 | OP_TEXT`).
    pub fn send_frame(&mut self, first: u8, payload: &[u8]) {
        let mask = self.mask();
        self.send_raw(&client_frame(first, payload, Some(mask)));
    }

    pub fn send_text(&mut self, text: &str) {
        self.send_frame(0x80 | OP_TEXT, text.as_bytes());
    }

    pub fn send_binary(&mut self, bytes: &[u8]) {
        self.send_frame(0x80 | OP_BINARY, bytes);
    }

    pub fn send_ping(&mut self, payload: &[u8]) {
        self.send_frame(0x80 | OP_PING, payload);
    }

    /// A close frame with `code` and `reason`, or an empty one for `None`.
    pub fn send_close(&mut self, code: Option<u16>, reason: &str) {
        let mut payload = Vec::new();
        if let Some(code) = code {
            payload.extend_from_slice(&code.to_be_bytes());
            payload.extend_from_slice(reason.as_bytes());
        }
        self.send_frame(0x80 | OP_CLOSE, &payload);
    }

    /// Sends bytes as they are: broken frames, one byte at a time, anything.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to server");
    }

    /// The next frame, or `None` if nothing arrived within `wait` or the server closed
    /// (then `eof` is set).
    pub fn read_frame_within(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = Instant::now() + wait;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.pending) {
                self.pending.drain(..used);
                self.seen.push(frame.clone());
                return Some(frame);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.eof {
                return None;
            }
            self.stream
                .set_read_timeout(Some(left))
                .expect("set timeout");
            match self.stream.read(&mut chunk) {
                Ok(0) => self.eof = true,
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => self.eof = true,
            }
        }
    }

    /// The very next frame, which must arrive within the deadline.
    pub fn next_frame(&mut self) -> Frame {
        match self.read_frame_within(DEADLINE) {
            Some(frame) => frame,
            None => panic!("no frame within {DEADLINE:?}; received: {:#?}", self.seen),
        }
    }

    /// Waits for a text message matching `want`, skipping other text messages; returns it.
    /// Any other frame (a close, say) fails the test.
    pub fn expect_text_where(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_frame_within(left) {
                Some(Frame::Text(text)) if want(&text) => return text,
                Some(Frame::Text(_)) => {}
                other => panic!("no text {what}; got {other:?} after {:#?}", self.seen),
            }
        }
    }

    /// Waits for a text message equal to `exact`.
    pub fn expect_text(&mut self, exact: &str) -> String {
        self.expect_text_where(&format!("equal to {exact:?}"), |t| t == exact)
    }

    /// Waits for a text message containing `part`.
    pub fn expect_text_containing(&mut self, part: &str) -> String {
        self.expect_text_where(&format!("containing {part:?}"), |t| t.contains(part))
    }

    /// Waits for a close frame, skipping text messages; returns its code.
    pub fn expect_close(&mut self) -> Option<u16> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_frame_within(left) {
                Some(Frame::Close(code, _)) => return code,
                Some(Frame::Text(_)) => {}
                other => panic!("no close frame; got {other:?} after {:#?}", self.seen),
            }
        }
    }

    /// Waits until the server closes the TCP connection; frames that arrive first are
    /// kept in `seen`.
    pub fn expect_closed(&mut self) {
        let deadline = Instant::now() + DEADLINE;
        while !self.eof {
            if Instant::now() > deadline {
                panic!(
                    "connection still open after {DEADLINE:?}; received: {:#?}",
                    self.seen
                );
            }
            self.read_frame_within(Duration::from_millis(100));
        }
    }

    /// Signs in (or registers) as `name`, consuming messages up to the welcome.
    pub fn sign_in(&mut self, name: &str, password: &str) {
        self.send_text(name);
        self.send_text(password);
        self.expect_text_where("welcoming the user", |t| t.starts_with("* Welcome, "));
    }

    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}
