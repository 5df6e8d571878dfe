//! The web side of the chat port, against the real binary over real sockets: telling a
//! browser from a netcat user, the HTTP answers and their bounds, every RFC 6455 case the
//! server must handle, and web users chatting with netcat users as users like any other.
//!
//! The WebSocket client is `tests/common/ws.rs`, written apart from the server's code so
//! that it cannot share the server's bugs.

mod common;

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::ws::{
    Frame, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_TEXT, WsClient, client_frame, upgrade_request,
};
use common::{DEADLINE, Server};

const GREETING: &str = "* Welcome to ptchat. Enter your name (1-24 letters, digits, _ or -):";

/// The page as built into the binary.
const PAGE: &str = include_str!("../src/web/index.html");

// ---- Helpers ----

/// Sends `request` on a new connection and reads the whole answer, until the server
/// closes. A reset after the answer (the server stopped reading an oversized request)
/// ends the answer like a close.
fn http_exchange(port: u16, request: &[u8]) -> String {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    send_then_read_all(stream, request)
}

fn send_then_read_all(mut stream: TcpStream, request: &[u8]) -> String {
    // The server may close before taking all of an oversized request: ignore that.
    let _ = stream.write_all(request);
    read_until_closed(&mut stream)
}

/// Everything the server sends until it closes, failing if it does not close in time.
fn read_until_closed(stream: &mut TcpStream) -> String {
    let deadline = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "the server did not close within {DEADLINE:?}; received {:?}",
            String::from_utf8_lossy(&got)
        );
        stream.set_read_timeout(Some(left)).expect("set timeout");
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break, // reset
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// The head of a response, as lines, and its body.
fn split_response(response: &str) -> (Vec<&str>, &str) {
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {response:?}"));
    (head.split("\r\n").collect(), body)
}

/// A GET of `path` as a browser sends it.
fn get(path: &str, port: u16) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: test\r\n\
         Accept: text/html\r\n\r\n"
    )
}

/// A GET of `path` from a client that wants the connection closed after the answer.
fn get_and_close(path: &str, port: u16) -> String {
    get(path, port).replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n")
}

/// One response read whole by its `Content-Length`, leaving the connection open.
fn read_response(stream: &mut TcpStream) -> String {
    let deadline = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or_else(|| panic!("no Content-Length in {head:?}"));
            if body.len() >= length {
                return text;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no whole response within {DEADLINE:?}: {text:?}"
        );
        stream.set_read_timeout(Some(left)).expect("set timeout");
        match stream.read(&mut chunk) {
            Ok(0) => panic!("closed after {text:?}"),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("read failed after {text:?}: {e}"),
        }
    }
}

/// A web user who has signed in as `name` (registering it if new).
fn web_user(server: &Server, name: &str, password: &str) -> WsClient {
    let mut ws = WsClient::connect(server.port);
    ws.expect_text(GREETING);
    ws.sign_in(name, password);
    ws
}

/// A web connection that has been greeted and has not signed in.
fn greeted_web_connection(server: &Server) -> WsClient {
    let mut ws = WsClient::connect(server.port);
    ws.expect_text(GREETING);
    ws
}

fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    client_frame(first, payload, Some([0x5a, 0x17, 0xc3, 0x02]))
}

/// A frame header that declares `len` bytes of payload and sends none of it.
fn declared(first: u8, len: u64) -> Vec<u8> {
    let mut header = vec![first, 0x80 | 127];
    header.extend_from_slice(&len.to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    header
}

/// Asserts that the last frame the client received is the close frame and that nothing
/// followed it before the server closed the connection.
fn assert_close_came_last(ws: &WsClient, code: Option<u16>) {
    match ws.seen.last() {
        Some(Frame::Close(got, _)) => assert_eq!(*got, code, "{:#?}", ws.seen),
        _ => panic!("the last frame is not a close: {:#?}", ws.seen),
    }
    let closes = ws
        .seen
        .iter()
        .filter(|f| matches!(f, Frame::Close(..)))
        .count();
    assert_eq!(closes, 1, "{:#?}", ws.seen);
}

// ---- Telling a browser from a netcat user ----

#[test]
fn a_silent_netcat_user_is_greeted_within_one_second() {
    let server = Server::start();
    for _ in 0..3 {
        let started = Instant::now();
        let mut nc = server.connect();
        let greeting = nc.read_line_within(Duration::from_secs(1));
        let waited = started.elapsed();
        assert_eq!(greeting.as_deref(), Some(GREETING), "after {waited:?}");
        assert!(waited < Duration::from_secs(1), "greeted after {waited:?}");
    }
}

#[test]
fn an_http_answer_never_has_chat_bytes_before_its_status_line() {
    let server = Server::start();
    let request = get_and_close("/", server.port);
    // However the request's first bytes are cut into packets, the answer is HTTP.
    for cut in [request.len(), 1, 2, 3, 4, 8] {
        let mut stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        for byte in request.as_bytes()[..cut].iter() {
            stream.write_all(&[*byte]).expect("send");
        }
        stream
            .write_all(&request.as_bytes()[cut..])
            .expect("send rest");
        let response = read_until_closed(&mut stream);
        assert!(
            response.starts_with("HTTP/1.1 200 OK\r\n"),
            "first {cut} bytes one by one: {:?}",
            &response[..response.len().min(200)]
        );
        assert_eq!(
            split_response(&response).1,
            PAGE,
            "first {cut} bytes one by one"
        );
    }
    // A connection that waited to be greeted is a chat user, whatever it says next: a
    // request line is then a name, and an invalid one.
    let mut late = server.connect();
    late.expect(GREETING);
    late.send("GET / HTTP/1.1");
    late.expect_line("an invalid name", |l| l.starts_with("! Invalid name"));
}

#[test]
fn a_name_that_starts_like_a_method_is_a_chat_user() {
    let server = Server::start();
    // Without a space after it, a method is a name like any other.
    for name in ["GET", "POST", "OPTIONSx", "DELETE-me"] {
        let mut nc = server.connect();
        nc.send(name);
        nc.expect(GREETING);
        nc.expect(&format!("* {name} is a new account. Choose a password:"));
    }
    // With a space, a netcat user's first line is taken for a request line: 400, closed.
    let response = http_exchange(server.port, b"GET lost\n");
    assert!(
        response.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{response}"
    );
}

// ---- HTTP ----

/// A browser reloads on the connection it already used, which the server knows is HTTP,
/// rather than on one it opened ahead and left silent (which the server greets as a chat
/// user after the sniff wait): so the page's connection stays open, and quiet.
#[test]
fn the_page_connection_stays_open_and_quiet_for_the_next_request() {
    let server = Server::start();
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    for reload in 0..3 {
        stream
            .write_all(get("/", server.port).as_bytes())
            .expect("send");
        let response = read_response(&mut stream);
        let (head, body) = split_response(&response);
        assert_eq!(head[0], "HTTP/1.1 200 OK", "request {reload}");
        assert!(!head.contains(&"Connection: close"), "{head:#?}");
        assert_eq!(body, PAGE);
        // Longer than the sniff wait: a chat greeting would have come by now.
        stream
            .set_read_timeout(Some(Duration::from_secs(1)))
            .expect("set timeout");
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!("the kept connection was not quiet: {other:?}"),
        }
    }
    // A client that asks for the close gets it.
    let response = send_then_read_all(stream, get_and_close("/", server.port).as_bytes());
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response:?}");
    assert!(response.contains("Connection: close\r\n"));
}

#[test]
fn get_slash_returns_the_page_with_its_security_headers() {
    let server = Server::start();
    let response = http_exchange(
        server.port,
        get_and_close("/?from=test", server.port).as_bytes(),
    );
    let (head, body) = split_response(&response);
    assert_eq!(head[0], "HTTP/1.1 200 OK");
    assert_eq!(body, PAGE, "the page as embedded");
    let length = format!("Content-Length: {}", PAGE.len());
    let port = server.port;
    let connect_src = format!("connect-src 'self' ws://127.0.0.1:{port} wss://127.0.0.1:{port};");
    for header in [
        "Content-Type: text/html; charset=utf-8",
        length.as_str(),
        "Connection: close",
        "X-Content-Type-Options: nosniff",
        "X-Frame-Options: DENY",
        "Referrer-Policy: no-referrer",
        "Cache-Control: no-cache",
    ] {
        assert!(head.contains(&header), "{header:?} missing in {head:#?}");
    }
    let policy = head
        .iter()
        .find_map(|l| l.strip_prefix("Content-Security-Policy: "))
        .expect("a Content-Security-Policy");
    assert!(policy.starts_with("default-src 'none'; script-src 'sha256-"));
    assert!(policy.contains(&connect_src), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    // The page has no external resources.
    for external in ["src=\"http", "href=\"http", "//cdn", "@import"] {
        assert!(!body.contains(external), "{external}");
    }
    server.expect_log("http peer=");
    server.expect_log("method=GET path=/ status=200");
}

#[test]
fn every_request_gets_its_status_and_the_connection_closes() {
    let server = Server::start();
    let port = server.port;
    let upgrade = |path: &str, extra: &[(&str, &str)]| {
        upgrade_request(&format!("127.0.0.1:{port}"), path, extra)
    };
    // (request, status line)
    let rows: Vec<(String, &str)> = vec![
        (get("/favicon.ico", port), "HTTP/1.1 404 Not Found"),
        (get("/index.html", port), "HTTP/1.1 404 Not Found"),
        (get("/ws/", port), "HTTP/1.1 404 Not Found"),
        (upgrade("/chat", &[]), "HTTP/1.1 404 Not Found"),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello".into(),
            "HTTP/1.1 405 Method Not Allowed",
        ),
        (
            "HEAD / HTTP/1.1\r\nHost: a\r\n\r\n".into(),
            "HTTP/1.1 405 Method Not Allowed",
        ),
        (get("/ws", port), "HTTP/1.1 426 Upgrade Required"),
        (
            upgrade("/ws", &[("Sec-WebSocket-Version", "8")]),
            "HTTP/1.1 426 Upgrade Required",
        ),
        (
            upgrade("/ws", &[("Origin", "http://evil.example")]),
            "HTTP/1.1 403 Forbidden",
        ),
        (
            upgrade("/ws", &[("Origin", "null")]),
            "HTTP/1.1 403 Forbidden",
        ),
        (
            upgrade("/ws", &[("Sec-WebSocket-Key", "short")]),
            "HTTP/1.1 400 Bad Request",
        ),
        (upgrade("/ws", &[("Host", "")]), "HTTP/1.1 400 Bad Request"),
        // Malformed: 400, as is anything else that is not a request head.
        ("GET /\r\n\r\n".into(), "HTTP/1.1 400 Bad Request"),
        ("GET  / HTTP/1.1\r\n\r\n".into(), "HTTP/1.1 400 Bad Request"),
        (
            "GET / HTTP/1.1\r\nNo colon here\r\n\r\n".into(),
            "HTTP/1.1 400 Bad Request",
        ),
        (
            "GET / HTTP/1.1\r\nHost : a\r\n\r\n".into(),
            "HTTP/1.1 400 Bad Request",
        ),
        (
            "GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n".into(),
            "HTTP/1.1 400 Bad Request",
        ),
        (
            "GET / HTTP/1.1\r\nA: b\x1b[31mc\r\n\r\n".into(),
            "HTTP/1.1 400 Bad Request",
        ),
        (
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".into(),
            "HTTP/1.1 400 Bad Request",
        ),
        (
            "GET / HTTP/2.0\r\n\r\n".into(),
            "HTTP/1.1 505 HTTP Version Not Supported",
        ),
    ];
    for (request, status_line) in rows {
        let response = http_exchange(port, request.as_bytes());
        let (head, body) = split_response(&response);
        assert_eq!(head[0], status_line, "{request:?}");
        assert!(head.contains(&"Connection: close"), "{request:?}: {head:?}");
        assert!(head.contains(&"X-Content-Type-Options: nosniff"));
        assert_eq!(body, format!("{}\n", &status_line["HTTP/1.1 ".len()..]));
    }
    // None of them disturbed the chat.
    let mut alice = server.sign_in("alice", "pw-a");
    let mut bob = server.sign_in("bob", "pw-b");
    alice.expect("* bob joined.");
    bob.send("still fine");
    alice.expect("bob: still fine");
}

#[test]
fn the_websocket_client_sees_each_refusal() {
    let server = Server::start();
    type Headers = Vec<(&'static str, &'static str)>;
    // (path, headers changed, the status line answered)
    let rows: Vec<(&str, Headers, &str)> = vec![
        (
            "/ws",
            vec![("Origin", "http://evil.example")],
            "HTTP/1.1 403 Forbidden",
        ),
        (
            "/ws",
            vec![("Upgrade", "")],
            "HTTP/1.1 426 Upgrade Required",
        ),
        (
            "/ws",
            vec![("Sec-WebSocket-Key", "short")],
            "HTTP/1.1 400 Bad Request",
        ),
        ("/chat", vec![], "HTTP/1.1 404 Not Found"),
    ];
    for (path, extra, status_line) in rows {
        match WsClient::connect_with(server.port, path, &extra) {
            Ok(_) => panic!("{path} {extra:?} was accepted"),
            Err(refused) => {
                assert_eq!(refused.status_line, status_line, "{extra:?}");
                assert!(
                    refused.response.contains("Connection: close"),
                    "{refused:?}"
                );
            }
        }
    }
    // The page's own origin, as a browser sends it, is accepted.
    let origin = format!("http://127.0.0.1:{}", server.port);
    let mut ws = WsClient::connect_with(server.port, "/ws", &[("Origin", &origin)])
        .unwrap_or_else(|refused| panic!("same origin refused: {refused:?}"));
    ws.expect_text(GREETING);
}

#[test]
fn request_heads_are_bounded_in_size_and_count() {
    let server = Server::start();
    let port = server.port;
    let big_header = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(9 * 1024));
    let many_headers = format!("GET / HTTP/1.1\r\n{}\r\n", "A: b\r\n".repeat(65));
    let long_line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(3000));
    // HTTP/1.0: the connection closes after the answer (a 65th header would say so).
    let just_under = format!("GET / HTTP/1.0\r\n{}\r\n", "A: b\r\n".repeat(64));
    let rows: Vec<(String, &str)> = vec![
        (big_header, "HTTP/1.1 431 Request Header Fields Too Large"),
        (many_headers, "HTTP/1.1 431 Request Header Fields Too Large"),
        (long_line, "HTTP/1.1 414 URI Too Long"),
        (just_under, "HTTP/1.1 200 OK"),
    ];
    for (request, status_line) in rows {
        let response = http_exchange(port, request.as_bytes());
        assert!(
            response.starts_with(&format!("{status_line}\r\n")),
            "{} bytes: {:?}",
            request.len(),
            &response[..response.len().min(100)]
        );
    }
    // A head that never ends costs the server 8 KiB: it answers 431 and closes while the
    // client is still sending.
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let writer = stream.try_clone().expect("clone");
    writer
        .set_write_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let sender = thread::spawn(move || {
        let mut writer = writer;
        let _ = writer.write_all(b"GET / HTTP/1.1\r\n");
        let endless =
            b"X-Endless: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".repeat(64);
        let mut sent = 0;
        while sent < 16 << 20 && writer.write_all(&endless).is_ok() {
            sent += endless.len();
        }
        sent
    });
    let response = send_then_read_all(stream, b"");
    let sent = sender.join().expect("sender");
    assert!(
        response.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{:?}",
        &response[..response.len().min(100)]
    );
    assert!(sent < 16 << 20, "the server read 16 MiB of one head");
}

#[test]
fn the_sign_in_timeout_applies_to_the_request_head() {
    let server = Server::start_with(&["--sign-in-timeout", "2"]);
    let started = Instant::now();
    let stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    let mut reader = stream.try_clone().expect("clone");
    // A slow client: a header line every 200 ms, never the blank line.
    let stop = Arc::new(AtomicBool::new(false));
    let trickler = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut stream = stream;
            let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n");
            let give_up = Instant::now() + DEADLINE;
            while !stop.load(Ordering::SeqCst) && Instant::now() < give_up {
                if stream.write_all(b"X-Slow: 1\r\n").is_err() {
                    break;
                }
                thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let response = read_until_closed(&mut reader);
    let waited = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    trickler.join().expect("trickler");
    assert_eq!(response, "", "nothing is answered to an unfinished head");
    assert!(
        waited >= Duration::from_millis(1500),
        "closed after {waited:?}, before the 2 s sign-in timeout"
    );
    server.expect_log("reason=\"http: no complete request within the sign-in timeout\"");
}

// ---- WebSocket (RFC 6455) ----

#[test]
fn each_protocol_violation_closes_with_its_rfc_code() {
    let server = Server::start();
    let max = "x".repeat(1024);
    // (what breaks the rules, the frames sent, the close code expected)
    let mut rows: Vec<(String, Vec<u8>, u16)> = vec![
        (
            "unmasked frame".into(),
            client_frame(0x81, b"hi", None),
            1002,
        ),
        ("binary message".into(), frame(0x82, b"\x00\x01"), 1003),
        ("invalid UTF-8".into(), frame(0x81, b"caf\xc3"), 1007),
        (
            "invalid UTF-8 across fragments".into(),
            [
                frame(OP_TEXT, b"caf\xe2\x82"),
                frame(0x80 | OP_CONTINUATION, b"("),
            ]
            .concat(),
            1007,
        ),
        (
            "a message over the line limit".into(),
            frame(0x81, format!("{max}x").as_bytes()),
            1009,
        ),
        (
            "fragments over the line limit".into(),
            [
                frame(OP_TEXT, max.as_bytes()),
                frame(0x80 | OP_CONTINUATION, b"x"),
            ]
            .concat(),
            1009,
        ),
        (
            "a length of 2^62 declared".into(),
            declared(0x81, 1 << 62),
            1009,
        ),
        (
            "a length with the top bit set".into(),
            declared(0x81, 1 << 63),
            1002,
        ),
        (
            "a ping over 125 bytes".into(),
            frame(0x89, &[b'p'; 126]),
            1002,
        ),
        (
            "a close over 125 bytes".into(),
            frame(0x88, &[b'c'; 126]),
            1002,
        ),
        ("a fragmented ping".into(), frame(OP_PING, b"p"), 1002),
        (
            "a continuation with nothing to continue".into(),
            frame(0x80 | OP_CONTINUATION, b"x"),
            1002,
        ),
        (
            "a new message inside a fragmented one".into(),
            [frame(OP_TEXT, b"a"), frame(0x81, b"b")].concat(),
            1002,
        ),
        (
            "a close with a one-byte payload".into(),
            frame(0x88, b"\x03"),
            1002,
        ),
        (
            "a close with code 1005".into(),
            frame(0x88, b"\x03\xed"),
            1002,
        ),
    ];
    for (bit, name) in [(0x40, "RSV1"), (0x20, "RSV2"), (0x10, "RSV3")] {
        rows.push((format!("{name} set"), frame(0x81 | bit, b"a"), 1002));
    }
    for opcode in [3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
        rows.push((
            format!("reserved opcode {opcode:#x}"),
            frame(0x80 | opcode, b""),
            1002,
        ));
    }
    for (what, bytes, code) in rows {
        let mut ws = greeted_web_connection(&server);
        ws.send_raw(&bytes);
        assert_eq!(ws.expect_close(), Some(code), "{what}");
        ws.expect_closed();
        assert_close_came_last(&ws, Some(code));
        server.expect_log(&format!("websocket close {code}"));
    }
    // The same after sign-in: the user leaves like one who hung up.
    let mut nc = server.sign_in("ncuser", "pw-n");
    let mut ws = web_user(&server, "webuser", "pw-w");
    nc.expect("* webuser joined.");
    ws.send_binary(b"\xff");
    assert_eq!(ws.expect_close(), Some(1003));
    ws.expect_closed();
    nc.expect("* webuser left.");
}

#[test]
fn pings_are_answered_also_between_fragments_and_fragments_join() {
    let server = Server::start();
    let mut nc = server.sign_in("ncuser", "pw-n");
    let mut ws = web_user(&server, "webuser", "pw-w");
    nc.expect("* webuser joined.");

    ws.send_ping(b"are you there");
    assert_eq!(ws.next_frame(), Frame::Pong(b"are you there".to_vec()));
    ws.send_ping(b"");
    assert_eq!(ws.next_frame(), Frame::Pong(Vec::new()));

    // A message in three fragments, a ping between two of them, and a character split
    // between fragments (é is two bytes).
    ws.send_frame(OP_TEXT, b"hel");
    ws.send_ping(b"between");
    ws.send_frame(OP_CONTINUATION, "lo caf\u{e9}".as_bytes().split_at(7).0);
    ws.send_frame(
        0x80 | OP_CONTINUATION,
        "lo caf\u{e9}".as_bytes().split_at(7).1,
    );
    assert_eq!(ws.next_frame(), Frame::Pong(b"between".to_vec()));
    nc.expect("webuser: hello caf\u{e9}");
    // Pongs from the client are ignored.
    ws.send_frame(0x8a, b"unsolicited");
    ws.send_text("after the pong");
    nc.expect("webuser: after the pong");
}

#[test]
fn the_close_handshake_is_completed_either_way() {
    let server = Server::start();
    let mut nc = server.sign_in("ncuser", "pw-n");
    // (the client's close: code and reason, the code the server must echo)
    let rows: Vec<(Option<u16>, &str, Option<u16>)> = vec![
        (Some(1000), "bye", Some(1000)),
        (Some(1001), "", Some(1001)),
        (Some(3000), "app", Some(3000)),
        (Some(4999), "", Some(4999)),
        (None, "", Some(1000)),
    ];
    for (code, reason, echoed) in rows {
        let mut ws = web_user(&server, "webuser", "pw-w");
        nc.expect("* webuser joined.");
        ws.send_close(code, reason);
        assert_eq!(ws.expect_close(), echoed, "{code:?}");
        ws.expect_closed();
        assert_close_came_last(&ws, echoed);
        nc.expect("* webuser left.");
    }
    // The server ends the session: the reason as the last text message, then a close.
    let mut ws = web_user(&server, "webuser", "pw-w");
    nc.expect("* webuser joined.");
    ws.send_text("~:q!:");
    ws.expect_text("* Goodbye, webuser.");
    assert_eq!(ws.expect_close(), Some(1000));
    ws.expect_closed();
    assert_close_came_last(&ws, Some(1000));
    nc.expect("* webuser left.");
    // Closing the TCP connection without a close frame is a hang-up, as for netcat.
    let ws = web_user(&server, "webuser", "pw-w");
    nc.expect("* webuser joined.");
    ws.shutdown();
    nc.expect("* webuser left.");
}

#[test]
fn frames_that_arrive_a_byte_at_a_time_work() {
    let server = Server::start();
    let mut nc = server.sign_in("ncuser", "pw-n");
    let mut ws = greeted_web_connection(&server);
    ws.stream.set_nodelay(true).expect("nodelay");
    let bytewise = |ws: &mut WsClient, text: &str| {
        for byte in frame(0x81, text.as_bytes()) {
            ws.send_raw(&[byte]);
        }
    };
    bytewise(&mut ws, "webuser");
    bytewise(&mut ws, "pw-w");
    ws.expect_text("* Welcome, webuser! You are signed in. Type ~:h: for help.");
    nc.expect("* webuser joined.");
    // A 16-bit length, a ping and a close, all a byte at a time.
    let long = "y".repeat(300);
    bytewise(&mut ws, &long);
    nc.expect(&format!("webuser: {long}"));
    for byte in frame(0x89, b"ping") {
        ws.send_raw(&[byte]);
    }
    assert_eq!(ws.next_frame(), Frame::Pong(b"ping".to_vec()));
    for byte in frame(0x80 | OP_CLOSE, b"\x03\xe8") {
        ws.send_raw(&[byte]);
    }
    assert_eq!(ws.expect_close(), Some(1000));
    ws.expect_closed();
}

#[test]
fn a_newline_inside_a_message_never_makes_a_second_line() {
    let server = Server::start();
    let mut nc = server.sign_in("ncuser", "pw-n");
    let mut ws = web_user(&server, "webuser", "pw-w");
    nc.expect("* webuser joined.");
    ws.send_text("one\n~:q!:\r\ntwo");
    nc.expect("webuser: one~:q!:two");
    ws.send_text("still here");
    nc.expect("webuser: still here");
}

#[test]
fn memory_stays_bounded_whatever_length_is_declared() {
    let server = Server::start();
    // Lengths of 64 MiB and 2^62 declared, each followed by 4 MiB: refused from the header,
    // before any of it is read.
    let rss_before = server.rss_kib();
    let sampler = PeakRss::sample(&server);
    for len in [64 << 20, 1 << 62] {
        let mut ws = greeted_web_connection(&server);
        ws.send_raw(&declared(0x81, len));
        let blaster = {
            let stream = ws.stream.try_clone().expect("clone");
            stream
                .set_write_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            thread::spawn(move || {
                let mut stream = stream;
                let chunk = vec![b'z'; 64 * 1024];
                for _ in 0..64 {
                    if stream.write_all(&chunk).is_err() {
                        break;
                    }
                }
            })
        };
        assert_eq!(ws.expect_close(), Some(1009), "declared {len}");
        ws.expect_closed();
        blaster.join().expect("blaster");
    }
    let peak = sampler.stop();
    eprintln!("websocket memory: declared lengths: RSS before {rss_before} KiB, peak {peak} KiB");
    // Measured (debug build): about 3 MiB before, and a few KiB more at the peak. A
    // server that buffered the 4 MiB sent after either header would fail this.
    assert!(
        peak < rss_before + 1536,
        "server RSS grew from {rss_before} KiB to {peak} KiB"
    );

    // Fifty connections each holding an unfinished message just under the limit, in
    // one-byte fragments: each holds one line, whatever the fragments add up to.
    const HOLDERS: u64 = 50;
    let rss_before = server.rss_kib();
    let sampler = PeakRss::sample(&server);
    let mut holders = Vec::new();
    for _ in 0..HOLDERS {
        let mut ws = greeted_web_connection(&server);
        let mut bytes = frame(OP_TEXT, b"h");
        for _ in 0..1022 {
            bytes.extend(frame(OP_CONTINUATION, b"h"));
        }
        ws.send_raw(&bytes);
        holders.push(ws);
    }
    // Prove the server has read them all: a ping behind each is answered.
    for ws in &mut holders {
        ws.send_ping(b"read?");
        assert_eq!(ws.next_frame(), Frame::Pong(b"read?".to_vec()));
    }
    let peak = sampler.stop();
    let per_connection = peak.saturating_sub(rss_before) / HOLDERS;
    eprintln!(
        "websocket memory: {HOLDERS} connections: RSS before {rss_before} KiB, peak {peak} KiB"
    );
    // Measured (debug build): about 30 KiB each, the thread's stack pages included.
    assert!(
        per_connection < 64,
        "each connection holding a message costs {per_connection} KiB"
    );
    // One more fragment takes each over the limit.
    for ws in &mut holders {
        ws.send_frame(0x80 | OP_CONTINUATION, b"hh");
        assert_eq!(ws.expect_close(), Some(1009));
    }
}

/// Samples the server's resident memory every 5 ms until stopped; keeps the peak.
struct PeakRss {
    peak: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    sampler: thread::JoinHandle<()>,
}

impl PeakRss {
    fn sample(server: &Server) -> PeakRss {
        let peak = Arc::new(AtomicU64::new(server.rss_kib()));
        let done = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (peak, done) = (Arc::clone(&peak), Arc::clone(&done));
            let status = format!("/proc/{}/status", server.pid());
            thread::spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    if let Some(kib) = vm_rss_kib(&status) {
                        peak.fetch_max(kib, Ordering::SeqCst);
                    }
                    thread::sleep(Duration::from_millis(5));
                }
            })
        };
        PeakRss {
            peak,
            done,
            sampler,
        }
    }

    fn stop(self) -> u64 {
        self.done.store(true, Ordering::SeqCst);
        self.sampler.join().expect("sampler");
        self.peak.load(Ordering::SeqCst)
    }
}

fn vm_rss_kib(status_path: &str) -> Option<u64> {
    let status = fs::read_to_string(status_path).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

// ---- A web user is a user like any other ----

#[test]
fn netcat_and_web_users_exchange_public_tagged_and_private_messages() {
    let server = Server::start();
    let [mut nc, mut third] = server.sign_in_all([("ncuser", "pw-n"), ("third", "pw-t")]);
    let mut ws = web_user(&server, "webuser", "pw-w");
    nc.expect("* webuser joined.");
    third.expect("* webuser joined.");

    // Public, both ways.
    ws.send_text("hello from the browser");
    nc.expect("webuser: hello from the browser");
    third.expect("webuser: hello from the browser");
    nc.send("hello from netcat");
    ws.expect_text("ncuser: hello from netcat");

    // Tagged, both ways: the one tagged sees the mark, the others the plain line.
    ws.send_text("~-@ncuser: look at this");
    nc.expect("[tagged] webuser @ncuser: look at this");
    third.expect("webuser @ncuser: look at this");
    nc.send("~-@webuser: and this");
    ws.expect_text("[tagged] ncuser @webuser: and this");
    third.expect("ncuser @webuser: and this");

    // Private, both ways: only the receiver sees it.
    ws.send_text("~->ncuser: psst");
    ws.expect_text("* Private message delivered to ncuser.");
    nc.expect("[private] webuser: psst");
    nc.send("~->webuser: secret");
    nc.expect("* Private message delivered to webuser.");
    ws.expect_text("[private] ncuser: secret");
    third.expect_nothing_pending();

    // Commands work the same.
    ws.send_text("~:lu:");
    ws.expect_text("* Users: 3 (3 online)");
    ws.expect_text("*   ncuser online");
    ws.expect_text("*   third online");
    ws.expect_text("*   webuser online");

    // Offline mail reaches a web user at the next sign-in.
    ws.send_text("~:q!:");
    ws.expect_text("* Goodbye, webuser.");
    nc.expect("* webuser left.");
    nc.send("~->webuser: while you were away");
    nc.expect("* webuser is offline; private message stored for their next sign-in.");
    let mut ws = web_user(&server, "WebUser", "pw-w");
    ws.expect_text("* 1 private message arrived while you were away:");
    ws.expect_text_where("the stored message", |t| {
        t.starts_with("[private, sent ") && t.ends_with("] ncuser: while you were away")
    });
}

#[test]
fn markup_reaches_the_other_side_as_the_same_text() {
    let server = Server::start();
    let mut nc = server.sign_in("ncuser", "pw-n");
    let mut ws = web_user(&server, "webuser", "pw-w");
    nc.expect("* webuser joined.");
    let markup = "<img src=x onerror=alert(1)>";
    ws.send_text(markup);
    nc.expect(&format!("webuser: {markup}"));
    nc.send(markup);
    ws.expect_text(&format!("ncuser: {markup}"));
    let script = "</script><script>alert(\"&amp;\")</script>";
    nc.send(script);
    ws.expect_text(&format!("ncuser: {script}"));
}

#[test]
fn signing_in_elsewhere_takes_over_a_web_session_with_a_clean_close() {
    let server = Server::start();
    let mut ws = web_user(&server, "dual", "pw-d");
    let mut nc = server.sign_in("dual", "pw-d");
    ws.expect_text("* You signed in from another connection; closing this one.");
    assert_eq!(ws.expect_close(), Some(1000));
    ws.expect_closed();
    assert_close_came_last(&ws, Some(1000));
    nc.send("~:lu:");
    nc.expect("* Users: 1 (1 online)");
    // And the other way round.
    let mut ws = web_user(&server, "dual", "pw-d");
    nc.expect("* You signed in from another connection; closing this one.");
    nc.expect_closed();
    ws.send_text("~:lu:");
    ws.expect_text("* Users: 1 (1 online)");
}

#[test]
fn the_sign_in_timeout_ends_a_silent_web_connection() {
    let server = Server::start_with(&["--sign-in-timeout", "2"]);
    let mut ws = greeted_web_connection(&server);
    ws.expect_text("! Sign-in timed out after 2 s; goodbye.");
    assert_eq!(ws.expect_close(), Some(1000));
    ws.expect_closed();
    server.expect_log("reason=\"sign-in timeout\"");
}

#[test]
fn a_wrong_password_three_times_ends_a_web_connection() {
    let server = Server::start();
    server.sign_in("owner", "right").send("~:q!:");
    let mut ws = greeted_web_connection(&server);
    ws.send_text("owner");
    ws.expect_text("* Password for owner:");
    for attempt in ["wrong1", "wrong2", "wrong3"] {
        ws.send_text(attempt);
    }
    ws.expect_text("! Too many wrong passwords; goodbye.");
    assert_eq!(ws.expect_close(), Some(1000));
    ws.expect_closed();
}

#[test]
fn a_web_user_is_paced_by_the_rate_limit() {
    let server = Server::start_with(&["--rate", "20", "--burst", "5"]);
    let mut nc = server.sign_in("ncuser", "pw-n");
    let mut ws = web_user(&server, "webuser", "pw-w");
    nc.expect("* webuser joined.");
    let mut burst = Vec::new();
    for i in 0..20 {
        burst.extend(frame(0x81, format!("line {i}").as_bytes()));
    }
    ws.send_raw(&burst);
    ws.expect_text(
        "* You are sending more than 20 lines a second: your lines now go out at that pace. \
         None are dropped.",
    );
    for i in 0..20 {
        nc.expect(&format!("webuser: line {i}"));
    }
    server.expect_log("action=delay");
}

#[test]
fn a_web_user_that_stops_reading_is_cut_at_its_sendq() {
    let server = Server::start_with(&["--sendq", "4096"]);
    let mut alice = server.sign_in("alice", "pw-a");
    let _bob = web_user(&server, "bob", "pw-b"); // bob never reads from here on
    alice.expect("* bob joined.");
    let line = format!("{}\n", "z".repeat(1000));
    let batch = line.repeat(64);
    let mut sent = 0;
    while !server.log().contains("sendq_exceeded") {
        assert!(sent < 64 << 20, "64 MiB sent and no sendq_exceeded");
        alice.send_raw(batch.as_bytes());
        sent += batch.len();
    }
    let log = server.expect_log("sendq_exceeded");
    assert!(log.contains("user=bob"), "{log}");
    alice.expect("* bob left.");
    alice.expect_nothing_pending();
    // The server carries on: a new web user chats with alice.
    let mut carol = web_user(&server, "carol", "pw-c");
    alice.expect("* carol joined.");
    carol.send_text("hi alice");
    alice.expect("carol: hi alice");
}

#[test]
fn a_web_user_and_a_netcat_user_see_the_same_order() {
    let server = Server::start();
    let [mut a, mut b] = server.sign_in_all([("a", "pw"), ("b", "pw")]);
    let mut ws = web_user(&server, "webuser", "pw-w");
    let mut watcher = server.sign_in("watcher", "pw");
    for nc in [&mut a, &mut b] {
        nc.expect("* webuser joined.");
        nc.expect("* watcher joined.");
    }
    ws.expect_text("* watcher joined.");
    // Three senders interleave; the web user and a netcat user see one and the same order.
    for i in 0..30 {
        a.send(&format!("a{i}"));
        b.send(&format!("b{i}"));
    }
    let web_order: Vec<String> = (0..60)
        .map(|_| {
            ws.expect_text_where("a chat line", |t| {
                t.starts_with("a: ") || t.starts_with("b: ")
            })
        })
        .collect();
    let nc_order: Vec<String> = (0..60)
        .map(|_| {
            watcher.expect_line("a chat line", |l| {
                l.starts_with("a: ") || l.starts_with("b: ")
            })
        })
        .collect();
    assert_eq!(web_order, nc_order);
}
