//! HTTP/1.1, just enough to serve one page and one WebSocket upgrade on the chat port.
//!
//! One concept per file: `http/sniff.rs` tells a browser's request line from a chat user's
//! first line ([`sniff()`]); this file reads one request head within hard bounds
//! ([`read_head`], built on the pure [`parse_head`]); `http/response.rs` spells a response
//! ([`Response`]). Their public items are re-exported here, so a caller names `http::X`
//! whichever file holds it. The module must not decide what a path means (that is
//! `web.rs`) or know about WebSocket frames (`websocket.rs`).
//!
//! The bounds are the point, as in `line_reader.rs`: a client that sends an endless head
//! costs at most [`MAX_HEAD_BYTES`], and the bytes after the head (WebSocket frames a
//! client may send right behind its request) are handed back, never lost.

mod response;
mod sniff;

use std::fmt;
use std::io::{self, ErrorKind, Read};

use crate::limits::{MAX_HEAD_BYTES, MAX_HEADERS, MAX_REQUEST_LINE_BYTES};

pub use response::{
    Response, Status, bad_request, error, forbidden, method_not_allowed, not_found, page,
    upgrade_required,
};
pub use sniff::{SNIFF_BYTES, Sniff, read_sniff, sniff};

/// A parsed request head. Header names are compared ignoring case; values are kept as sent,
/// without surrounding spaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request target as sent, e.g. `/ws?x=1`.
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    headers: Vec<(String, String)>,
}

impl Request {
    /// The target's path: without the query, and without scheme and host if the client sent
    /// the absolute form (`http://host/ws`, which RFC 9112 section 3.2.2 says a server must
    /// accept).
    pub fn path(&self) -> &str {
        let mut target = self.target.as_str();
        for scheme in ["http://", "https://"] {
            if let Some(rest) = strip_prefix_ignore_case(target, scheme) {
                target = rest.find('/').map_or("/", |slash| &rest[slash..]);
            }
        }
        target.split('?').next().unwrap_or(target)
    }

    /// The value of header `name`. [`parse_head`] refuses a request that repeats one of the
    /// single-valued headers this server reads, so the first is the only one.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the client lets the connection stay open after the answer: HTTP/1.1 does
    /// unless it says `Connection: close`; HTTP/1.0 is always closed.
    pub fn allows_keep_alive(&self) -> bool {
        self.minor_version >= 1 && !self.has_token("Connection", "close")
    }

    /// Whether any `name` header lists `token` in its comma-separated value, ignoring case:
    /// `Connection: keep-alive, Upgrade` has the token `upgrade`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// Every header in the order received.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Headers a request may carry only once: two values would leave it open which one counts
/// (RFC 9112, section 3.2 for Host; RFC 6455, section 4.1 for the key).
const SINGLE_VALUED: &[&str] = &[
    "host",
    "origin",
    "content-length",
    "sec-websocket-key",
    "sec-websocket-version",
];

/// Why a request head is refused. Each maps to the status the client is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRequest {
    /// No blank line within [`MAX_HEAD_BYTES`].
    HeadTooLarge,
    /// More than [`MAX_HEADERS`] header lines.
    TooManyHeaders,
    /// A request line longer than [`MAX_REQUEST_LINE_BYTES`].
    RequestLineTooLong,
    /// Not `METHOD SP TARGET SP HTTP/x.y`, or a target that is not a path.
    BadRequestLine,
    /// `HTTP/x.y` other than 1.0 or 1.1.
    UnsupportedVersion,
    /// A header line that is not `name: value`, a folded line, or a control character.
    BadHeader,
    /// One of the single-valued headers (`SINGLE_VALUED`) given twice.
    RepeatedHeader,
}

impl BadRequest {
    /// The status to answer with before closing.
    pub fn status(self) -> Status {
        match self {
            BadRequest::HeadTooLarge | BadRequest::TooManyHeaders => Status::HeadersTooLarge,
            BadRequest::RequestLineTooLong => Status::UriTooLong,
            BadRequest::UnsupportedVersion => Status::VersionNotSupported,
            BadRequest::BadRequestLine | BadRequest::BadHeader | BadRequest::RepeatedHeader => {
                Status::BadRequest
            }
        }
    }
}

impl fmt::Display for BadRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            BadRequest::HeadTooLarge => "request head too large",
            BadRequest::TooManyHeaders => "too many header lines",
            BadRequest::RequestLineTooLong => "request line too long",
            BadRequest::BadRequestLine => "malformed request line",
            BadRequest::UnsupportedVersion => "unsupported HTTP version",
            BadRequest::BadHeader => "malformed header line",
            BadRequest::RepeatedHeader => "a single-valued header given twice",
        };
        f.write_str(what)
    }
}

/// Why [`read_head`] returned no request.
#[derive(Debug)]
pub enum HeadError {
    /// The read failed (e.g. `TimedOut` past the deadline), or the peer closed before the
    /// blank line (`UnexpectedEof`): there is nobody to answer.
    Io(io::Error),
    /// The request is malformed or too large: answer with its status, then close.
    Bad(BadRequest),
}

impl From<BadRequest> for HeadError {
    fn from(bad: BadRequest) -> Self {
        HeadError::Bad(bad)
    }
}

/// Reads one request head from `source`, at most [`MAX_HEAD_BYTES`] of it. Returns the
/// request and the bytes that arrived after its blank line (the start of WebSocket frames,
/// say), which the caller must read before reading `source` again; see [`Prefixed`].
///
/// `source` may deliver the head in pieces of any size, down to one byte per read.
pub fn read_head(source: &mut impl Read) -> Result<(Request, Vec<u8>), HeadError> {
    let mut buf = vec![0u8; MAX_HEAD_BYTES];
    let mut len = 0;
    let mut scan = HeadScan::default();
    let mut line_checked = false;
    loop {
        if let Some(end) = scan.feed(&buf[..len]) {
            let request = parse_head(&buf[..end])?;
            return Ok((request, buf[end..len].to_vec()));
        }
        // Refuse a malformed request line as soon as it is complete: a netcat user whose
        // first line was `GET lost` is answered at once, not when the deadline passes.
        if let (Some(line_end), false) = (scan.first_line_end, line_checked) {
            line_checked = true;
            let line = &buf[..line_end];
            parse_request_line(line.strip_suffix(b"\r").unwrap_or(line))?;
        }
        // Refuse an endless request line early, without waiting for the whole budget.
        if scan.first_line_end.is_none() && len > MAX_REQUEST_LINE_BYTES + 1 {
            return Err(BadRequest::RequestLineTooLong.into());
        }
        if len == buf.len() {
            return Err(BadRequest::HeadTooLarge.into());
        }
        match source.read(&mut buf[len..]) {
            Ok(0) => return Err(HeadError::Io(ErrorKind::UnexpectedEof.into())),
            Ok(n) => len += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(HeadError::Io(e)),
        }
    }
}

/// Finds the blank line that ends a head, looking at each byte once however the head is
/// split into reads. Lines end with LF, optionally after CR (RFC 9112, section 2.2).
#[derive(Default)]
struct HeadScan {
    scanned: usize,
    line_start: usize,
    first_line_end: Option<usize>,
}

impl HeadScan {
    /// Looks at the bytes of `buf` not seen before; returns the head's length, blank line
    /// included, once it is complete.
    fn feed(&mut self, buf: &[u8]) -> Option<usize> {
        while self.scanned < buf.len() {
            let i = self.scanned;
            self.scanned += 1;
            if buf[i] != b'\n' {
                continue;
            }
            let line = &buf[self.line_start..i];
            if self.first_line_end.is_none() {
                self.first_line_end = Some(i);
            } else if line.is_empty() || line == b"\r" {
                return Some(i + 1);
            }
            self.line_start = i + 1;
        }
        None
    }
}

/// Parses a complete request head: the request line, header lines, and the blank line
/// that ends them (each line ending in LF or CRLF). Pure, so every rule is a table row.
pub fn parse_head(head: &[u8]) -> Result<Request, BadRequest> {
    if head.len() > MAX_HEAD_BYTES {
        return Err(BadRequest::HeadTooLarge);
    }
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let (method, target, minor_version) = parse_request_line(lines.next().unwrap_or_default())?;
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.is_empty() {
            break;
        }
        if headers.len() == MAX_HEADERS {
            return Err(BadRequest::TooManyHeaders);
        }
        let (name, value) = parse_header_line(line)?;
        let single = SINGLE_VALUED.iter().any(|s| s.eq_ignore_ascii_case(&name));
        if single && headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(&name)) {
            return Err(BadRequest::RepeatedHeader);
        }
        headers.push((name, value));
    }
    Ok(Request {
        method,
        target,
        minor_version,
        headers,
    })
}

/// `METHOD SP TARGET SP HTTP/1.x` (RFC 9112, section 3), single spaces, a token for the
/// method, printable ASCII for the target, which starts with `/` or a scheme.
fn parse_request_line(line: &[u8]) -> Result<(String, String, u8), BadRequest> {
    if line.len() > MAX_REQUEST_LINE_BYTES {
        return Err(BadRequest::RequestLineTooLong);
    }
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BadRequest::BadRequestLine);
    };
    let target_ok = target.iter().all(|b| b.is_ascii_graphic())
        && (target.starts_with(b"/")
            || target.starts_with(b"http://")
            || target.starts_with(b"https://"));
    if !is_token(method) || !target_ok {
        return Err(BadRequest::BadRequestLine);
    }
    let minor_version = match version {
        b"HTTP/1.1" => 1,
        b"HTTP/1.0" => 0,
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            return Err(BadRequest::UnsupportedVersion);
        }
        _ => return Err(BadRequest::BadRequestLine),
    };
    // Token and graphic bytes are ASCII, so these conversions are lossless.
    Ok((
        String::from_utf8_lossy(method).into_owned(),
        String::from_utf8_lossy(target).into_owned(),
        minor_version,
    ))
}

/// `name: value` (RFC 9112, section 5): a token name with no space before the colon, the
/// value without surrounding spaces or tabs and without control characters other than TAB.
fn parse_header_line(line: &[u8]) -> Result<(String, String), BadRequest> {
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(BadRequest::BadHeader)?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    // A line starting with a space or tab is an obsolete folded continuation: refused,
    // as RFC 9112 section 5.2 allows, and caught here because a space is not a token byte.
    if !is_token(name) {
        return Err(BadRequest::BadHeader);
    }
    if value.iter().any(|&b| b != b'\t' && (b < 0x20 || b == 0x7f)) {
        return Err(BadRequest::BadHeader);
    }
    let value = value.trim_ascii();
    Ok((
        String::from_utf8_lossy(name).into_owned(),
        String::from_utf8_lossy(value).into_owned(),
    ))
}

/// A non-empty run of `tchar` (RFC 9110, section 5.6.2).
fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A reader that first yields bytes already taken from the stream (by [`sniff()`] or as the
/// leftover of [`read_head`]) and then reads the stream itself, so nothing a client sent
/// is lost when one reader hands the connection to the next.
pub struct Prefixed<R> {
    prefix: Vec<u8>,
    taken: usize,
    inner: R,
}

impl<R> Prefixed<R> {
    pub fn new(prefix: Vec<u8>, inner: R) -> Self {
        Prefixed {
            prefix,
            taken: 0,
            inner,
        }
    }

    /// The stream underneath, e.g. to change its deadline.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

impl<R: Read> Read for Prefixed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = &self.prefix[self.taken..];
        if rest.is_empty() {
            return self.inner.read(buf);
        }
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.taken += n;
        if self.taken == self.prefix.len() {
            self.prefix = Vec::new(); // give the memory back for the connection's life
            self.taken = 0;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `input` through a source that returns at most `step` bytes per read.
    fn read_in_steps(input: &[u8], step: usize) -> Result<(Request, Vec<u8>), HeadError> {
        struct Trickle<'a>(&'a [u8], usize);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.1.min(buf.len()).min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        read_head(&mut Trickle(input, step))
    }

    fn request(method: &str, target: &str, headers: &[(&str, &str)]) -> Request {
        Request {
            method: method.into(),
            target: target.into(),
            minor_version: 1,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn parse_head_table() {
        use BadRequest::*;
        let many: String = (0..MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let too_many = format!("{many}X-last: v\r\n");
        let long_target = format!("/{}", "a".repeat(MAX_REQUEST_LINE_BYTES));
        let rows: Vec<(String, Result<Request, BadRequest>)> = vec![
            (
                "GET / HTTP/1.1\r\nHost: a\r\n\r\n".into(),
                Ok(request("GET", "/", &[("Host", "a")])),
            ),
            // Bare LF line endings, spaces and tabs around values.
            (
                "GET /ws HTTP/1.1\nHost:a:80\nX:  \tv v \t\n\n".into(),
                Ok(request("GET", "/ws", &[("Host", "a:80"), ("X", "v v")])),
            ),
            (
                "GET / HTTP/1.1\r\n\r\n".into(),
                Ok(request("GET", "/", &[])),
            ),
            (
                "GET / HTTP/1.0\r\n\r\n".into(),
                Ok(Request {
                    minor_version: 0,
                    ..request("GET", "/", &[])
                }),
            ),
            (
                "POST /x?y=1 HTTP/1.1\r\nEmpty:\r\n\r\n".into(),
                Ok(request("POST", "/x?y=1", &[("Empty", "")])),
            ),
            (
                format!("GET / HTTP/1.1\r\n{many}\r\n"),
                Ok(request("GET", "/", &[]).with_numbered_headers(MAX_HEADERS)),
            ),
            // Request line.
            ("\r\n\r\n".into(), Err(BadRequestLine)),
            ("GET /\r\n\r\n".into(), Err(BadRequestLine)),
            ("GET  / HTTP/1.1\r\n\r\n".into(), Err(BadRequestLine)),
            ("GET / HTTP/1.1 \r\n\r\n".into(), Err(BadRequestLine)),
            ("GET / x HTTP/1.1\r\n\r\n".into(), Err(BadRequestLine)),
            ("G(T / HTTP/1.1\r\n\r\n".into(), Err(BadRequestLine)),
            ("GET ws HTTP/1.1\r\n\r\n".into(), Err(BadRequestLine)),
            ("GET /\x01 HTTP/1.1\r\n\r\n".into(), Err(BadRequestLine)),
            ("GET /\u{e9} HTTP/1.1\r\n\r\n".into(), Err(BadRequestLine)),
            ("GET / HTTP/1.1\rX\r\n\r\n".into(), Err(BadRequestLine)),
            ("GET / http/1.1\r\n\r\n".into(), Err(BadRequestLine)),
            ("GET / HTTP/11\r\n\r\n".into(), Err(BadRequestLine)),
            ("GET / HTTP/2.0\r\n\r\n".into(), Err(UnsupportedVersion)),
            ("GET / HTTP/1.2\r\n\r\n".into(), Err(UnsupportedVersion)),
            (
                format!("GET {long_target} HTTP/1.1\r\n\r\n"),
                Err(RequestLineTooLong),
            ),
            // Header lines.
            ("GET / HTTP/1.1\r\nNo colon\r\n\r\n".into(), Err(BadHeader)),
            ("GET / HTTP/1.1\r\n: v\r\n\r\n".into(), Err(BadHeader)),
            ("GET / HTTP/1.1\r\nHost : a\r\n\r\n".into(), Err(BadHeader)),
            (
                "GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n".into(),
                Err(BadHeader),
            ),
            ("GET / HTTP/1.1\r\nA: b\x00c\r\n\r\n".into(), Err(BadHeader)),
            ("GET / HTTP/1.1\r\nA: b\rc\r\n\r\n".into(), Err(BadHeader)),
            ("GET / HTTP/1.1\r\nA: b\x1bc\r\n\r\n".into(), Err(BadHeader)),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n".into(),
                Err(RepeatedHeader),
            ),
            (
                "GET / HTTP/1.1\r\nOrigin: a\r\nORIGIN: a\r\n\r\n".into(),
                Err(RepeatedHeader),
            ),
            (
                "GET / HTTP/1.1\r\nSec-WebSocket-Key: a\r\nSec-WebSocket-Key: b\r\n\r\n".into(),
                Err(RepeatedHeader),
            ),
            (
                format!("GET / HTTP/1.1\r\n{too_many}\r\n"),
                Err(TooManyHeaders),
            ),
        ];
        for (head, expected) in rows {
            assert_eq!(parse_head(head.as_bytes()), expected, "head {head:?}");
        }
    }

    impl Request {
        fn with_numbered_headers(mut self, n: usize) -> Request {
            self.headers = (0..n).map(|i| (format!("X-{i}"), "v".into())).collect();
            self
        }
    }

    #[test]
    fn header_lookup_ignores_case_and_finds_tokens() {
        let req = request(
            "GET",
            "/ws",
            &[
                ("Host", "example.org"),
                ("connection", "keep-alive, Upgrade"),
                ("Upgrade", "WebSocket"),
                ("X-List", "a"),
                ("x-list", "b,  c "),
            ],
        );
        let rows: Vec<(&str, Option<&str>)> = vec![
            ("host", Some("example.org")),
            ("HOST", Some("example.org")),
            ("Connection", Some("keep-alive, Upgrade")),
            ("x-list", Some("a")),
            ("Origin", None),
        ];
        for (name, expected) in rows {
            assert_eq!(req.header(name), expected, "{name}");
        }
        let tokens = [
            ("Connection", "upgrade", true),
            ("Connection", "keep-alive", true),
            ("Connection", "close", false),
            ("Connection", "Upgr", false),
            ("upgrade", "websocket", true),
            ("X-List", "c", true),
            ("X-List", "b", true),
            ("Host", "example", false),
        ];
        for (name, token, expected) in tokens {
            assert_eq!(req.has_token(name, token), expected, "{name} {token}");
        }
    }

    #[test]
    fn path_table() {
        let rows = [
            ("/", "/"),
            ("/ws", "/ws"),
            ("/ws?token=1", "/ws"),
            ("/?", "/"),
            ("/a/b?c?d", "/a/b"),
            ("http://example.org/ws?x", "/ws"),
            ("HTTP://example.org:8081", "/"),
            ("https://example.org/", "/"),
        ];
        for (target, expected) in rows {
            assert_eq!(request("GET", target, &[]).path(), expected, "{target}");
        }
    }

    #[test]
    fn read_head_in_any_pieces_returns_the_bytes_behind_it() {
        let head = b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n";
        let lf_head = b"GET / HTTP/1.1\nHost: a\n\n";
        // (input, head length, leftover)
        let rows: Vec<(Vec<u8>, &[u8], &[u8])> = vec![
            (head.to_vec(), head, b""),
            (
                [&head[..], b"\x81\x85frame"].concat(),
                head,
                b"\x81\x85frame",
            ),
            ([&head[..], b"\r\n"].concat(), head, b"\r\n"),
            (lf_head.to_vec(), lf_head, b""),
            (
                [&lf_head[..], b"GET / HTTP/1.1\n\n"].concat(),
                lf_head,
                b"GET / HTTP/1.1\n\n",
            ),
        ];
        for (input, head, leftover) in rows {
            let expected = parse_head(head).expect("row head is valid");
            for step in [1, 2, 3, 5, 17, 1000, usize::MAX] {
                let (request, rest) = read_in_steps(&input, step)
                    .unwrap_or_else(|e| panic!("step {step}: {e:?} for {input:?}"));
                assert_eq!(request, expected, "step {step}");
                // With small reads nothing past the head may be read yet; whatever was read
                // must be returned, in order.
                assert!(leftover.starts_with(&rest), "step {step}: {rest:?}");
                if step >= input.len() {
                    assert_eq!(rest, leftover, "step {step}");
                }
            }
        }
    }

    #[test]
    fn read_head_refusals() {
        let endless_line = [b"GET /".as_slice(), &[b'a'; 3 * MAX_REQUEST_LINE_BYTES]].concat();
        let endless_head: Vec<u8> = [
            b"GET / HTTP/1.1\r\n".as_slice(),
            &b"X-Long: ".repeat(MAX_HEAD_BYTES),
        ]
        .concat();
        let many_headers = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "a: b\r\n".repeat(MAX_HEADERS + 1)
        );
        // (input, expected refusal; None = the peer closed first)
        let rows: Vec<(Vec<u8>, Option<BadRequest>)> = vec![
            (endless_line, Some(BadRequest::RequestLineTooLong)),
            (endless_head, Some(BadRequest::HeadTooLarge)),
            (many_headers.into_bytes(), Some(BadRequest::TooManyHeaders)),
            (
                b"GET / HTTP/1.1\r\nno colon\r\n\r\n".to_vec(),
                Some(BadRequest::BadHeader),
            ),
            (b"GET /\r\n\r\n".to_vec(), Some(BadRequest::BadRequestLine)),
            // Refused before the head ends: nothing more will make it right.
            (b"GET lost\n".to_vec(), Some(BadRequest::BadRequestLine)),
            (
                b"GET / HTTP/3.0\r\n".to_vec(),
                Some(BadRequest::UnsupportedVersion),
            ),
            (b"".to_vec(), None),
            (b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec(), None),
        ];
        for (input, expected) in rows {
            for step in [1, 7, 4096, usize::MAX] {
                match (read_in_steps(&input, step), expected) {
                    (Err(HeadError::Bad(bad)), Some(want)) => assert_eq!(bad, want),
                    (Err(HeadError::Io(e)), None) => {
                        assert_eq!(e.kind(), ErrorKind::UnexpectedEof)
                    }
                    (got, _) => panic!("step {step}: {got:?}, expected {expected:?}"),
                }
            }
        }
    }

    #[test]
    fn read_head_stops_reading_once_the_budget_is_spent() {
        /// An endless stream of `x` that counts what it handed out.
        struct Endless(usize);
        impl Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                buf.fill(b'x');
                self.0 += buf.len();
                Ok(buf.len())
            }
        }
        let mut source = Endless(0);
        let got = read_head(&mut Prefixed::new(b"GET /".to_vec(), &mut source));
        assert!(matches!(
            got,
            Err(HeadError::Bad(BadRequest::RequestLineTooLong))
        ));
        assert!(source.0 <= MAX_HEAD_BYTES, "read {} bytes", source.0);
    }

    #[test]
    fn read_errors_are_passed_on() {
        struct TimesOut;
        impl Read for TimesOut {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(ErrorKind::TimedOut.into())
            }
        }
        let mut source = Prefixed::new(b"GET / HTTP/1.1\r\n".to_vec(), TimesOut);
        match read_head(&mut source) {
            Err(HeadError::Io(e)) => assert_eq!(e.kind(), ErrorKind::TimedOut),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn prefixed_yields_the_prefix_then_the_stream() {
        for step in [1, 2, 3, 100] {
            let mut reader = Prefixed::new(b"abc".to_vec(), &b"defg"[..]);
            let mut out = Vec::new();
            let mut buf = vec![0; step];
            loop {
                let n = reader.read(&mut buf).expect("in-memory read");
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            assert_eq!(out, b"abcdefg", "step {step}");
        }
    }

    #[test]
    fn bad_request_status_table() {
        let rows = [
            (BadRequest::HeadTooLarge, 431),
            (BadRequest::TooManyHeaders, 431),
            (BadRequest::RequestLineTooLong, 414),
            (BadRequest::BadRequestLine, 400),
            (BadRequest::UnsupportedVersion, 505),
            (BadRequest::BadHeader, 400),
            (BadRequest::RepeatedHeader, 400),
        ];
        for (bad, code) in rows {
            assert_eq!(bad.status().code(), code, "{bad:?}");
        }
    }
}
