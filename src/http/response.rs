//! HTTP responses: the statuses this server answers with, a response spelt as it goes on
//! the wire, and the few responses it sends (the page and the errors), every one with the
//! hardening headers.
//!
//! This file owns the bytes of a response. A response says `Connection: close` unless it is
//! a protocol switch or marked [`Response::keep_open`] (the page, see
//! `limits::HTTP_KEEP_ALIVE`). It must not read requests, decide which response a request
//! gets (that is `web.rs`) or write to a socket; header values come from this server, never
//! from a request.

/// Every status this server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    SwitchingProtocols,
    Ok,
    BadRequest,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    UriTooLong,
    UpgradeRequired,
    HeadersTooLarge,
    VersionNotSupported,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::SwitchingProtocols => 101,
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::Forbidden => 403,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::UriTooLong => 414,
            Status::UpgradeRequired => 426,
            Status::HeadersTooLarge => 431,
            Status::VersionNotSupported => 505,
        }
    }

    /// The reason phrase of RFC 9110 (RFC 6585 for 431).
    pub fn reason(self) -> &'static str {
        match self {
            Status::SwitchingProtocols => "Switching Protocols",
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::Forbidden => "Forbidden",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::UriTooLong => "URI Too Long",
            Status::UpgradeRequired => "Upgrade Required",
            Status::HeadersTooLarge => "Request Header Fields Too Large",
            Status::VersionNotSupported => "HTTP Version Not Supported",
        }
    }
}

/// One response: status, headers, body. [`Response::to_bytes`] adds `Content-Length` and
/// `Connection: close` to everything but a protocol switch or a response kept open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: Status,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    keep_open: bool,
}

impl Response {
    /// A response with no headers and no body.
    pub fn new(status: Status) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            keep_open: false,
        }
    }

    /// Leaves the connection open for another request (HTTP/1.1's default), instead of
    /// saying `Connection: close`.
    pub fn keep_open(mut self) -> Self {
        self.keep_open = true;
        self
    }

    /// Whether the connection stays open after this response.
    pub fn is_kept_open(&self) -> bool {
        self.keep_open
    }

    /// Adds a header. Values come from this server, never from a request, so they hold no
    /// line breaks.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn with_body(mut self, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self.with_header("Content-Type", content_type)
    }

    /// The value of header `name` (ignoring case), for tests and logs.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The response as it goes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\n",
            self.status.code(),
            self.status.reason()
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if self.status != Status::SwitchingProtocols {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
            if !self.keep_open {
                head.push_str("Connection: close\r\n");
            }
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// The headers every response from this server carries: no content sniffing (a
/// `text/plain` error never runs as a script), no framing by other sites, no referrer.
fn hardened(response: Response) -> Response {
    response
        .with_header("X-Content-Type-Options", "nosniff")
        .with_header("X-Frame-Options", "DENY")
        .with_header("Referrer-Policy", "no-referrer")
}

/// 200 with an HTML page, under the given Content-Security-Policy (see `web.rs`).
pub fn page(html: &str, content_security_policy: &str) -> Response {
    hardened(Response::new(Status::Ok))
        .with_header("Content-Security-Policy", content_security_policy)
        .with_header("Cache-Control", "no-cache")
        .with_body("text/html; charset=utf-8", html.as_bytes())
}

/// An error response with a one-line plain-text body, e.g. `404 Not Found`.
pub fn error(status: Status) -> Response {
    let body = format!("{} {}\n", status.code(), status.reason());
    hardened(Response::new(status)).with_body("text/plain; charset=utf-8", body)
}

/// 400: the request is malformed.
pub fn bad_request() -> Response {
    error(Status::BadRequest)
}

/// 403: the request is understood and refused (a WebSocket from another site's page).
pub fn forbidden() -> Response {
    error(Status::Forbidden)
}

/// 404: no such path.
pub fn not_found() -> Response {
    error(Status::NotFound)
}

/// 405: only GET is served; `Allow` says so (RFC 9110, section 15.5.6).
pub fn method_not_allowed() -> Response {
    error(Status::MethodNotAllowed).with_header("Allow", "GET")
}

/// 426: `/ws` without a WebSocket upgrade. `Upgrade` names the protocol to switch to and
/// `Sec-WebSocket-Version` the one version spoken (RFC 9110 section 15.5.22, RFC 6455
/// section 4.4).
pub fn upgrade_required() -> Response {
    error(Status::UpgradeRequired)
        .with_header("Upgrade", "websocket")
        .with_header("Sec-WebSocket-Version", "13")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(response: &Response) -> String {
        String::from_utf8(response.to_bytes()).expect("responses are UTF-8")
    }

    #[test]
    fn response_table() {
        let rows: Vec<(Response, &str, &[&str])> = vec![
            (
                not_found(),
                "HTTP/1.1 404 Not Found\r\n",
                &[
                    "Content-Type: text/plain; charset=utf-8",
                    "Content-Length: 14",
                ],
            ),
            (bad_request(), "HTTP/1.1 400 Bad Request\r\n", &[]),
            (forbidden(), "HTTP/1.1 403 Forbidden\r\n", &[]),
            (
                method_not_allowed(),
                "HTTP/1.1 405 Method Not Allowed\r\n",
                &["Allow: GET"],
            ),
            (
                upgrade_required(),
                "HTTP/1.1 426 Upgrade Required\r\n",
                &["Upgrade: websocket", "Sec-WebSocket-Version: 13"],
            ),
            (
                error(Status::HeadersTooLarge),
                "HTTP/1.1 431 Request Header Fields Too Large\r\n",
                &[],
            ),
            (
                page("<p>hi</p>", "default-src 'none'"),
                "HTTP/1.1 200 OK\r\n",
                &[
                    "Content-Type: text/html; charset=utf-8",
                    "Content-Length: 9",
                    "Content-Security-Policy: default-src 'none'",
                ],
            ),
        ];
        for (response, status_line, headers) in rows {
            let wire = text(&response);
            assert!(wire.starts_with(status_line), "{wire}");
            let (head, body) = wire.split_once("\r\n\r\n").expect("a blank line");
            let lines: Vec<&str> = head.split("\r\n").collect();
            for want in headers
                .iter()
                .chain(&["Connection: close", "X-Content-Type-Options: nosniff"])
            {
                assert!(lines.contains(want), "{want:?} missing in {wire}");
            }
            assert_eq!(body.as_bytes(), response.body());
            assert_eq!(
                response.header("content-length"),
                None,
                "added on the wire only"
            );
            let length = format!("Content-Length: {}", body.len());
            assert!(lines.contains(&length.as_str()), "{wire}");
        }
    }

    #[test]
    fn a_protocol_switch_has_no_length_and_stays_open() {
        let wire = text(&Response::new(Status::SwitchingProtocols).with_header("Upgrade", "x"));
        assert_eq!(
            wire,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"
        );
    }

    #[test]
    fn error_bodies_name_the_status() {
        assert_eq!(not_found().body(), b"404 Not Found\n");
        assert_eq!(forbidden().body(), b"403 Forbidden\n");
    }
}
