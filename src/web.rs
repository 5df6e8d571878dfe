//! The web side of the chat port: the page a browser gets at `/`, and which requests become
//! a WebSocket at `/ws`.
//!
//! This module owns the routes and the page. The page is `src/web/index.html`, one
//! self-contained file embedded in the binary, so the static binary stays the whole
//! install. This module must not parse HTTP (`http.rs`), speak frames (`websocket.rs`) or
//! touch a socket: [`route`] turns a request into what to answer, and the caller sends it.

use std::sync::OnceLock;

use crate::base64;
use crate::crypto::sha256;
use crate::http::{self, Request, Response};
use crate::websocket;

/// The page, as built into the binary.
pub const PAGE: &str = include_str!("web/index.html");

/// Where the page is served.
pub const PAGE_PATH: &str = "/";

/// Where the page's WebSocket connects.
pub const SOCKET_PATH: &str = "/ws";

/// What to do with a request.
#[derive(Debug)]
pub enum Route {
    /// Send the page, then close the connection.
    Page(Response),
    /// Send the `101 Switching Protocols` response, then speak WebSocket on the connection:
    /// read it with `websocket::WsLines`, write server lines as text frames.
    Upgrade(Response),
    /// Send the error response, then close. `reason` is for the log.
    Refuse { response: Response, reason: String },
}

/// Decides what a request gets: `GET /` the page, `GET /ws` with a valid WebSocket upgrade
/// the switch, anything else an error status (see docs/PROTOCOL.md).
pub fn route(request: &Request) -> Route {
    let refuse = |response: Response, reason: String| Route::Refuse { response, reason };
    if request.method != "GET" {
        let reason = format!("method {}", request.method);
        return refuse(http::method_not_allowed(), reason);
    }
    match request.path() {
        PAGE_PATH => Route::Page(page_response(request.header("Host"))),
        SOCKET_PATH => match websocket::check_handshake(request) {
            Ok(accept) => Route::Upgrade(websocket::handshake_response(&accept)),
            Err(e) => refuse(e.response(), e.to_string()),
        },
        _ => refuse(http::not_found(), "no such path".into()),
    }
}

/// The page with its security headers. `host` is the request's `Host`, used to name the
/// page's own WebSocket in the policy when it is a plain `host[:port]`.
pub fn page_response(host: Option<&str>) -> Response {
    http::page(PAGE, &content_security_policy(host))
}

/// The page's Content-Security-Policy: nothing may load or run but the page's own inline
/// style and script (named by their SHA-256, so an injected `<script>` would not run even
/// if a bug let one in) and a WebSocket back to the same host and port. `'self'` already
/// allows `ws:` and `wss:` to the page's own host in CSP Level 3; the explicit
/// `ws://HOST wss://HOST` is for browsers that predate it.
pub fn content_security_policy(host: Option<&str>) -> String {
    static HASHES: OnceLock<(String, String)> = OnceLock::new();
    let (script, style) = HASHES.get_or_init(|| {
        (
            inline_hash(PAGE, "<script>", "</script>"),
            inline_hash(PAGE, "<style>", "</style>"),
        )
    });
    let mut connect = String::from("'self'");
    if let Some(host) = host.filter(|h| is_plain_host(h)) {
        connect.push_str(&format!(" ws://{host} wss://{host}"));
    }
    format!(
        "default-src 'none'; script-src {script}; style-src {style}; connect-src {connect}; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

/// `'sha256-BASE64'` of the text between the first `open` and the next `close` tag, the
/// form CSP uses to allow one inline block (CSP Level 2, section 4.2.4). Empty-handed
/// (`'none'`) if the page has no such block.
fn inline_hash(page: &str, open: &str, close: &str) -> String {
    let body = page
        .split_once(open)
        .and_then(|(_, rest)| rest.split_once(close))
        .map(|(body, _)| body);
    match body {
        Some(body) => format!("'sha256-{}'", base64::encode(&sha256(body.as_bytes()))),
        None => "'none'".into(),
    }
}

/// True for a Host header that can go into the policy as it is: a name or address and an
/// optional port, nothing that could end a directive or start a new one.
fn is_plain_host(host: &str) -> bool {
    !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(head: &str) -> Request {
        http::parse_head(head.as_bytes()).expect("test request parses")
    }

    const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

    #[test]
    fn route_table() {
        // (request head, status answered, whether the connection becomes a WebSocket)
        let rows: Vec<(String, u16, bool)> = vec![
            ("GET / HTTP/1.1\r\nHost: a:1\r\n\r\n".into(), 200, false),
            ("GET /?x=1 HTTP/1.1\r\nHost: a:1\r\n\r\n".into(), 200, false),
            ("GET / HTTP/1.0\r\n\r\n".into(), 200, false),
            (
                format!("GET /ws HTTP/1.1\r\nHost: a:1\r\n{UPGRADE}\r\n"),
                101,
                true,
            ),
            (
                format!("GET /ws HTTP/1.1\r\nHost: a:1\r\nOrigin: http://a:1\r\n{UPGRADE}\r\n"),
                101,
                true,
            ),
            (
                format!("GET /ws HTTP/1.1\r\nHost: a:1\r\nOrigin: http://b:1\r\n{UPGRADE}\r\n"),
                403,
                false,
            ),
            ("GET /ws HTTP/1.1\r\nHost: a:1\r\n\r\n".into(), 426, false),
            (format!("GET /ws HTTP/1.1\r\n{UPGRADE}\r\n"), 400, false),
            (
                format!("GET /ws HTTP/1.0\r\nHost: a:1\r\n{UPGRADE}\r\n"),
                400,
                false,
            ),
            (
                "GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n".into(),
                404,
                false,
            ),
            (
                "GET /favicon.ico HTTP/1.1\r\nHost: a\r\n\r\n".into(),
                404,
                false,
            ),
            ("GET /ws/ HTTP/1.1\r\nHost: a\r\n\r\n".into(), 404, false),
            ("POST / HTTP/1.1\r\nHost: a\r\n\r\n".into(), 405, false),
            ("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n".into(), 405, false),
            (
                format!("POST /ws HTTP/1.1\r\nHost: a:1\r\n{UPGRADE}\r\n"),
                405,
                false,
            ),
        ];
        for (head, status, upgrade) in rows {
            let (response, upgraded) = match route(&request(&head)) {
                Route::Page(response) => (response, false),
                Route::Upgrade(response) => (response, true),
                Route::Refuse { response, reason } => {
                    assert!(!reason.is_empty());
                    (response, false)
                }
            };
            assert_eq!(response.status.code(), status, "{head:?}");
            assert_eq!(upgraded, upgrade, "{head:?}");
        }
    }

    #[test]
    fn the_page_is_served_whole_with_its_policy() {
        let Route::Page(response) = route(&request("GET / HTTP/1.1\r\nHost: h:8081\r\n\r\n"))
        else {
            panic!("the page");
        };
        assert_eq!(response.body(), PAGE.as_bytes());
        assert_eq!(
            response.header("Content-Type"),
            Some("text/html; charset=utf-8")
        );
        let policy = response
            .header("Content-Security-Policy")
            .expect("a policy");
        assert!(policy.starts_with("default-src 'none'; script-src 'sha256-"));
        assert!(policy.contains("connect-src 'self' ws://h:8081 wss://h:8081;"));
        assert_eq!(response.header("X-Content-Type-Options"), Some("nosniff"));
    }

    #[test]
    fn policy_hashes_match_the_inline_blocks() {
        // Exactly one style and one script block, no attributes on their tags, nothing
        // loaded from elsewhere: the hashes then cover everything the page runs.
        for (open, close) in [("<script", "</script>"), ("<style", "</style>")] {
            assert_eq!(PAGE.matches(open).count(), 1, "{open}");
            assert_eq!(PAGE.matches(close).count(), 1, "{close}");
            assert!(PAGE.contains(&format!("{open}>")), "{open} has attributes");
        }
        for forbidden in [
            " src=",
            " href=",
            "onclick",
            "onload",
            "innerHTML",
            "style=\"",
        ] {
            assert!(!PAGE.contains(forbidden), "the page contains {forbidden:?}");
        }
        let (_, rest) = PAGE.split_once("<script>").expect("script");
        let (script, _) = rest.split_once("</script>").expect("script end");
        let hash = base64::encode(&sha256(script.as_bytes()));
        assert!(content_security_policy(None).contains(&format!("script-src 'sha256-{hash}';")));
        assert_eq!(inline_hash("<p>", "<script>", "</script>"), "'none'");
    }

    #[test]
    fn only_a_plain_host_goes_into_the_policy() {
        let rows = [
            (Some("chat.example.org"), true),
            (Some("chat.example.org:8081"), true),
            (Some("[::1]:8081"), true),
            (Some("a; script-src *"), false),
            (Some("a b"), false),
            (Some(""), false),
            (None, false),
        ];
        for (host, named) in rows {
            let policy = content_security_policy(host);
            assert_eq!(policy.contains("ws://"), named, "{host:?}: {policy}");
            assert_eq!(policy.matches("script-src").count(), 1, "{host:?}");
        }
    }

    #[test]
    fn the_page_has_the_labelled_controls_and_inserts_text_only() {
        for label in [
            "<label for=\"name\">Name</label>",
            "<label for=\"password\">Password</label>",
            "<label for=\"message\">Message</label>",
            "<button type=\"submit\">Sign in</button>",
            "<button id=\"send\" type=\"submit\" disabled>Send</button>",
            "<input id=\"password\" name=\"password\" type=\"password\"",
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        ] {
            assert!(PAGE.contains(label), "missing {label:?}");
        }
        for unsafe_sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
        ] {
            assert!(!PAGE.contains(unsafe_sink), "the page uses {unsafe_sink}");
        }
        assert!(PAGE.contains("\"/ws\""));
    }
}
