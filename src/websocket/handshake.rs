//! The WebSocket opening handshake (RFC 6455, section 4): which GETs of `/ws` become a
//! WebSocket, the `101` that says so, and the Origin policy that keeps other sites' pages
//! out ([`origin_allowed`], docs/SECURITY.md, "Origin").
//!
//! This file owns the checks on an upgrade request and the accept key. It must not read or
//! parse the request (`http.rs` did), decide what a path means (`web.rs`) or know anything
//! of frames: once the `101` is sent it has no part in the connection.

use std::fmt;

use crate::base64;
use crate::http::{self, Request, Response, Status};
use crate::sha1::sha1;

/// Appended to the client's key before hashing (RFC 6455, section 1.3).
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
