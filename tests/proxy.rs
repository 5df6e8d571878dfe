//! The PROXY protocol from trusted proxies (`--trusted-proxy`, docs/DEPLOY.md): the
//! header's client address is used for the per-address limits and every log line; a
//! header from an address that is not listed, or a malformed one, closes the connection
//! with a log line; health checks are served quietly.
//!
//! The first tests write headers by hand over real sockets. The last ones run haproxy as
//! docs/DEPLOY.md configures it, terminating TLS in front of the server, with
//! `openssl s_client` as the user's client bound to 127.0.0.2 and 127.0.0.3, so that
//! their addresses differ from the proxy's (127.0.0.9) and from plain users' (127.0.0.1).

mod common;

use std::io::Write;
use std::net::{Ipv6Addr, Shutdown};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use common::haproxy::{self, Haproxy, free_port, make_certificate};
use common::{Client, DEADLINE, Server, TempDir, wait_for};

const GREETING_START: &str = "* Welcome to ptchat.";
const TOO_MANY: &str = "! Too many connections from your address; try again later.";

/// A version 1 header for a TCP over IPv4 client.
fn v1(source: &str, source_port: u16) -> Vec<u8> {
    format!("PROXY TCP4 {source} 127.0.0.1 {source_port} 8081\r\n").into_bytes()
}

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\x00\r\nQUIT\n";

/// A version 2 header: `command` (0 LOCAL, 1 PROXY), `family`, then `body`.
fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let mut header = V2_SIGNATURE.to_vec();
    header.extend_from_slice(&[0x20 | command, family]);
    header.extend_from_slice(&u16::try_from(body.len()).expect("short").to_be_bytes());
    header.extend_from_slice(body);
    header
}

/// A version 2 `PROXY` header for a TCP over IPv6 client, followed by two TLVs (ALPN and
/// a NOOP), as HAProxy's `proxy-v2-options` adds them.
fn v2_tcp6(source: Ipv6Addr, source_port: u16) -> Vec<u8> {
    let mut body = source.octets().to_vec();
    body.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
    body.extend_from_slice(&source_port.to_be_bytes());
    body.extend_from_slice(&8081u16.to_be_bytes());
    body.extend_from_slice(&[0x01, 0, 3, b'i', b'r', b'c', 0x04, 0, 2, 0, 0]);
    v2(1, 0x21, &body)
}

/// The local address of a client's socket: what the server sees as the proxy's address.
fn local(client: &Client) -> String {
    client.stream.local_addr().expect("local addr").to_string()
}

fn greeted(client: &mut Client) {
    client.expect_line("greeting", |l| l.starts_with(GREETING_START));
}

/// The log lines that contain `needle`.
fn lines_with(log: &str, needle: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_v1_header_from_a_trusted_proxy_names_the_client_in_every_log_line() {
    let server = Server::start_with(&["--trusted-proxy", "127.0.0.1"]);
    let mut alice = server.connect();
    let proxy_side = local(&alice);
    // The header and the client's first line in one write, as a proxy relays a client
    // that typed ahead: only the header may be taken from it.
    let mut first = v1("198.51.100.7", 40000);
    first.extend_from_slice(b"alice\npw-alice\n");
    alice.send_raw(&first);
    alice.expect_line("welcome", |l| l.starts_with("* Welcome, alice!"));
    alice.send("~:q!:");
    alice.expect("* Goodbye, alice.");

    let mut intruder = server.connect();
    intruder.send_raw(&v1("198.51.100.8", 40001));
    intruder.send("alice");
    intruder.send("wrong");
    intruder.expect_containing("! Wrong password");

    server.expect_log("sign_in_failed peer=198.51.100.8:40001 ");
    let log = server.expect_log("disconnect peer=198.51.100.7:40000 ");
    for expected in [
        format!("INFO connect peer=198.51.100.7:40000 proxy={proxy_side}"),
        "INFO sign_up peer=198.51.100.7:40000 user=alice".to_string(),
        "INFO sign_in peer=198.51.100.7:40000 user=alice".to_string(),
        format!("INFO disconnect peer=198.51.100.7:40000 proxy={proxy_side} reason=quit"),
    ] {
        assert!(log.contains(&expected), "no {expected:?} in log:\n{log}");
    }
    assert!(
        lines_with(&log, &format!("peer={proxy_side}")).is_empty(),
        "the proxy's address is logged as a peer:\n{log}"
    );
}

#[test]
fn a_v2_header_with_ipv6_and_tlvs_names_the_client() {
    let server = Server::start_with(&["--trusted-proxy", "127.0.0.1"]);
    let mut bob = server.connect();
    let mut first = v2_tcp6("2001:db8::7".parse().expect("ipv6"), 40002);
    first.extend_from_slice(b"bob\npw-bob\n");
    bob.send_raw(&first);
    bob.expect_line("welcome", |l| l.starts_with("* Welcome, bob!"));
    let log = server.expect_log("sign_in peer=[2001:db8::7]:40002 user=bob");
    assert!(
        log.contains(&format!(
            "connect peer=[2001:db8::7]:40002 proxy={}",
            local(&bob)
        )),
        "log:\n{log}"
    );
}

#[test]
fn a_header_that_arrives_one_byte_at_a_time_is_read_whole() {
    let server = Server::start_with(&["--trusted-proxy", "127.0.0.1"]);
    let headers = [
        (v1("198.51.100.9", 40003), "carol", "198.51.100.9:40003"),
        (
            v2_tcp6("2001:db8::9".parse().expect("ipv6"), 40004),
            "dave",
            "[2001:db8::9]:40004",
        ),
    ];
    for (header, name, peer) in headers {
        let mut client = server.connect();
        client.stream.set_nodelay(true).expect("nodelay");
        for byte in header {
            client.send_raw(&[byte]);
        }
        greeted(&mut client);
        client.sign_in(name, "pw");
        server.expect_log(&format!("sign_in peer={peer} user={name}"));
    }
}

#[test]
fn per_address_limits_count_the_address_in_the_header() {
    // --max-per-loopback 1 as well: if the proxy's own address (127.0.0.1) were counted,
    // the third connection would be refused.
    let server = Server::start_with(&[
        "--trusted-proxy",
        "127.0.0.1",
        "--max-per-ip",
        "1",
        "--max-per-loopback",
        "1",
    ]);
    let mut first = server.connect();
    first.send_raw(&v1("198.51.100.7", 1));
    greeted(&mut first);

    let mut second = server.connect();
    let proxy_side = local(&second);
    second.send_raw(&v1("198.51.100.7", 2));
    assert_eq!(second.next_line(), TOO_MANY);
    second.expect_closed();
    server.expect_log(&format!(
        "WARN connection_refused peer=198.51.100.7:2 proxy={proxy_side} reason="
    ));

    let mut third = server.connect();
    third.send_raw(&v1("198.51.100.8", 3));
    greeted(&mut third);
    third.sign_in("carol", "pw");
}

#[test]
fn health_checks_from_a_trusted_proxy_are_served_quietly() {
    let server = Server::start_with(&["--trusted-proxy", "127.0.0.1", "--log-level", "debug"]);
    let mut checks = Vec::new();
    // v1 UNKNOWN, v2 LOCAL, and HAProxy's v1 check, which names the proxy's own end.
    for header in [b"PROXY UNKNOWN\r\n".to_vec(), v2(0, 0x00, &[]), Vec::new()] {
        let mut check = server.connect();
        let header = if header.is_empty() {
            let own = check.stream.local_addr().expect("local addr");
            format!(
                "PROXY TCP4 127.0.0.1 127.0.0.1 {} {}\r\n",
                own.port(),
                server.port
            )
            .into_bytes()
        } else {
            header
        };
        check.send_raw(&header);
        greeted(&mut check);
        check.shutdown();
        checks.push(local(&check));
    }
    // A plain TCP check: connect, then close without a byte.
    let bare = server.connect();
    checks.push(local(&bare));
    bare.shutdown();

    // A real client after them, to know when the log has caught up.
    let mut alice = server.connect();
    alice.send_raw(&v1("198.51.100.7", 40005));
    alice.sign_in("alice", "pw");
    alice.send("~:q!:");
    alice.expect_closed();
    for peer in &checks {
        server.expect_log(&format!("DEBUG disconnect peer={peer} "));
    }
    let log = server.expect_log("INFO disconnect peer=198.51.100.7:40005 ");
    for peer in &checks[..3] {
        let connect = format!("DEBUG connect peer={peer} health_check=v");
        assert!(log.contains(&connect), "no {connect:?} in log:\n{log}");
    }
    let bare_line = format!(
        "DEBUG disconnect peer={} reason=\"closed before sending anything\"",
        checks[3]
    );
    assert!(log.contains(&bare_line), "no {bare_line:?} in log:\n{log}");
    for peer in &checks {
        let loud: Vec<String> = lines_with(&log, &format!("peer={peer} "))
            .into_iter()
            .filter(|l| !l.contains(" DEBUG "))
            .collect();
        assert!(
            loud.is_empty(),
            "health check logged above debug: {loud:#?}"
        );
    }
    assert!(
        lines_with(&log, " WARN ")
            .iter()
            .all(|l| l.contains("kdf_iterations_lowered"))
    );
}

#[test]
fn malformed_headers_from_a_trusted_proxy_close_the_connection_with_a_log_line() {
    let server = Server::start_with(&["--trusted-proxy", "127.0.0.1"]);
    let too_long = format!("PROXY UNKNOWN {}\r\n", "x".repeat(200));
    let mut huge_v2 = v2(1, 0x11, &[]);
    huge_v2[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
    let mut version_1_in_v2 = v2(1, 0x11, &[0; 12]);
    version_1_in_v2[12] = 0x11;
    // (what the "proxy" sends, the reason logged)
    let rows: Vec<(Vec<u8>, &str)> = vec![
        // A netcat user on the proxy's own address: no header.
        (b"alice\n".to_vec(), "no PROXY protocol header"),
        (
            b"PROXY TCP4 198.51.100.7 127.0.0.1 40000\r\n".to_vec(),
            "v1 header without exactly 4 single-spaced fields",
        ),
        (
            b"PROXY TCP4 198.51.100.7 127.0.0.1 40000 8081\n".to_vec(),
            "v1 header with a CR or LF before its CRLF",
        ),
        (
            b"PROXY TCP4 198.51.100.07 127.0.0.1 40000 8081\r\n".to_vec(),
            "v1 header with an invalid address for its protocol",
        ),
        (
            too_long.into_bytes(),
            "v1 header without CRLF in its first 107 bytes",
        ),
        (version_1_in_v2, "v2 header with a version other than 2"),
        (
            v2(1, 0x11, &[0; 4]),
            "v2 header too short for its addresses",
        ),
        (huge_v2, "v2 header longer than allowed"),
    ];
    for (bytes, reason) in rows {
        let mut client = server.connect();
        let peer = local(&client);
        client.send_raw(&bytes);
        client.expect_closed();
        assert!(client.seen.is_empty(), "{reason}: got {:?}", client.seen);
        server.expect_log(&format!(
            "WARN proxy_header_refused peer={peer} reason=\"{reason}\""
        ));
    }

    // Half a header, then the proxy gives up.
    let mut client = server.connect();
    let peer = local(&client);
    client.send_raw(b"PROXY TCP4 198.51");
    client.stream.shutdown(Shutdown::Write).expect("half close");
    client.expect_closed();
    server.expect_log(&format!(
        "WARN proxy_header_refused peer={peer} reason=\"closed in the middle of a PROXY header\""
    ));
}

#[test]
fn a_trusted_proxy_that_sends_no_header_is_cut_at_the_sign_in_timeout() {
    let server = Server::start_with(&["--trusted-proxy", "127.0.0.1", "--sign-in-timeout", "1"]);
    let mut silent = server.connect();
    let peer = local(&silent);
    silent.expect_closed();
    assert!(silent.seen.is_empty(), "got {:?}", silent.seen);
    server.expect_log(&format!(
        "WARN proxy_header_refused peer={peer} reason=\"no PROXY header within the sign-in timeout\""
    ));
}

const UNTRUSTED: &str = "reason=\"a PROXY header from an address that is not a --trusted-proxy\"";

#[test]
fn a_header_from_an_address_that_is_not_trusted_closes_the_connection() {
    let server = Server::start_with(&["--trusted-proxy", "127.0.0.9"]);
    for header in [
        v1("198.51.100.7", 40000),
        v2_tcp6(Ipv6Addr::LOCALHOST, 40001),
    ] {
        let mut spoofer = server.connect();
        let peer = local(&spoofer);
        spoofer.send_raw(&header);
        spoofer.expect_closed();
        assert!(spoofer.seen.is_empty(), "got {:?}", spoofer.seen);
        server.expect_log(&format!(
            "WARN proxy_header_refused peer={peer} {UNTRUSTED}"
        ));
    }
    // A netcat user, who sends nothing until greeted, is greeted; a name may start with
    // PROXY.
    let mut user = server.connect();
    let started = Instant::now();
    greeted(&mut user);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "greeting took {:?}",
        started.elapsed()
    );
    user.sign_in("PROXYfan", "pw");
    assert!(!server.log().contains("198.51.100.7"), "{}", server.log());
}

/// Stops a process with SIGSTOP, and continues it when dropped (even if the test fails).
struct Stopped(u32);

impl Stopped {
    fn stop(pid: u32) -> Stopped {
        let status = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -STOP failed");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

#[test]
fn without_trusted_proxies_a_header_that_came_with_the_connection_is_refused() {
    // No --trusted-proxy: the server only looks at what arrived with the connection. The
    // server is stopped while the connection is made and the header sent, so the header
    // is there when it accepts, as it is from a proxy on the same host.
    let server = Server::start();
    let stopped = Stopped::stop(server.pid());
    let mut forgot_the_flag = server.connect();
    let peer = local(&forgot_the_flag);
    forgot_the_flag.send_raw(&v1("198.51.100.7", 40000));
    drop(stopped);
    forgot_the_flag.expect_closed();
    assert!(
        forgot_the_flag.seen.is_empty(),
        "got {:?}",
        forgot_the_flag.seen
    );
    server.expect_log(&format!(
        "WARN proxy_header_refused peer={peer} {UNTRUSTED}"
    ));

    // Everyone else is served as before.
    server.sign_in("alice", "pw");
}

// ---- haproxy, as docs/DEPLOY.md configures it ----

/// The haproxy configuration of docs/DEPLOY.md (its `frontend` and `backend` sections,
/// with a test's ports and certificate): TLS on `tls_port`, the chat server behind it on
/// `chat_port`, connecting from 127.0.0.9, the one address the chat server trusts.
/// `server_options` end the `server` line: `send-proxy` (v1) or `send-proxy-v2`, `check`.
fn haproxy_config(pem: &str, tls_port: u16, chat_port: u16, server_options: &str) -> String {
    let sections = chat_sections("chat", pem, tls_port, chat_port, server_options);
    format!("global\n    maxconn 1000\n{sections}")
}

/// One frontend and its backend, named after `name`.
fn chat_sections(
    name: &str,
    pem: &str,
    tls_port: u16,
    chat_port: u16,
    server_options: &str,
) -> String {
    format!(
        "
frontend {name}_tls
    mode tcp
    option tcplog
    bind 127.0.0.1:{tls_port} ssl crt {pem}
    timeout client 1h
    default_backend {name}

backend {name}
    mode tcp
    timeout connect 5s
    timeout server 1h
    server chat 127.0.0.1:{chat_port} source 127.0.0.9 {server_options}
"
    )
}

/// A TLS client (`openssl s_client`) connected from `source` to haproxy on `port`.
struct TlsClient {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl TlsClient {
    fn connect(port: u16, source: &str) -> TlsClient {
        let mut child = Command::new("openssl")
            .args(["s_client", "-quiet", "-bind", source, "-connect"])
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start openssl s_client");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        TlsClient {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    fn send(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .expect("type into s_client");
    }

    fn expect(&mut self, want: &str) {
        self.expect_line(want, |l| l == want);
    }

    fn expect_line(&mut self, what: &str, want: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if want(&line) {
                        return;
                    }
                }
                Err(e) => panic!("no {what:?} through TLS ({e}); got {:#?}", self.seen),
            }
        }
    }

    /// Waits until the server closes the connection (s_client's output ends).
    fn expect_closed(&mut self) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("TLS connection still open; got {:#?}", self.seen)
                }
            }
        }
    }
}

impl Drop for TlsClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TLS user and a plain user chat through haproxy; the server logs the TLS user's own
/// address; `--max-per-loopback 1` (these are loopback addresses; `--max-per-ip` is the
/// same limit for others) refuses a second user from that address, not one from another.
fn tls_chat_through_haproxy(test: &str, send_proxy: &str) {
    if !haproxy::here_or_skip(test) {
        return;
    }
    let server = Server::start_with(&[
        "--trusted-proxy",
        "127.0.0.9",
        "--max-per-ip",
        "1",
        "--max-per-loopback",
        "1",
    ]);
    let dir = TempDir::new("haproxy");
    let pem = make_certificate(dir.path());
    let tls_port = free_port();
    let config = haproxy_config(&pem, tls_port, server.port, send_proxy);
    let _haproxy = Haproxy::start(dir.path(), &config, &[tls_port]);

    let mut bob = server.sign_in("bob", "pw-bob");
    let mut alice = TlsClient::connect(tls_port, "127.0.0.2");
    alice.expect_line("greeting", |l| l.starts_with(GREETING_START));
    alice.send("alice");
    alice.send("pw-alice");
    alice.expect("* Welcome, alice! You are signed in. Type ~:h: for help.");
    bob.expect("* alice joined.");
    alice.send("hi over tls");
    bob.expect("alice: hi over tls");
    bob.send("hi back");
    alice.expect("bob: hi back");
    let log = server.expect_log("INFO sign_in peer=127.0.0.2:");
    assert!(
        log.contains("INFO connect peer=127.0.0.2:") && log.contains(" proxy=127.0.0.9:"),
        "log:\n{log}"
    );

    let mut second = TlsClient::connect(tls_port, "127.0.0.2");
    second.expect(TOO_MANY);
    second.expect_closed();
    server.expect_log("WARN connection_refused peer=127.0.0.2:");

    let mut carol = TlsClient::connect(tls_port, "127.0.0.3");
    carol.expect_line("greeting", |l| l.starts_with(GREETING_START));
    carol.send("carol");
    carol.send("pw-carol");
    bob.expect("* carol joined.");
    server.expect_log("INFO sign_in peer=127.0.0.3:");
}

#[test]
fn haproxy_send_proxy_v1_terminating_tls_passes_the_clients_address() {
    tls_chat_through_haproxy(
        "haproxy_send_proxy_v1_terminating_tls_passes_the_clients_address",
        "send-proxy check",
    );
}

#[test]
fn haproxy_send_proxy_v2_with_tlvs_terminating_tls_passes_the_clients_address() {
    tls_chat_through_haproxy(
        "haproxy_send_proxy_v2_with_tlvs_terminating_tls_passes_the_clients_address",
        "send-proxy-v2 proxy-v2-options ssl,crc32c check",
    );
}

#[test]
fn haproxy_health_checks_v1_and_v2_are_served_quietly() {
    let test = "haproxy_health_checks_v1_and_v2_are_served_quietly";
    if !haproxy::here_or_skip(test) {
        return;
    }
    let server = Server::start_with(&["--trusted-proxy", "127.0.0.9", "--log-level", "debug"]);
    let dir = TempDir::new("haproxy-checks");
    let pem = make_certificate(dir.path());
    let (v1_port, v2_port) = (free_port(), free_port());
    // Two proxies in one: one checks with a v1 header, one with v2 (a LOCAL header).
    let config = haproxy_config(&pem, v1_port, server.port, "send-proxy check inter 100ms")
        + &chat_sections(
            "chat_v2",
            &pem,
            v2_port,
            server.port,
            "send-proxy-v2 check inter 100ms",
        );
    let _haproxy = Haproxy::start(dir.path(), &config, &[v1_port, v2_port]);
    let log = wait_for("a few health checks of each kind", || {
        let log = server.log();
        let checks = lines_with(&log, "DEBUG disconnect peer=127.0.0.9:").len();
        let both = log.contains("health_check=v1") && log.contains("health_check=v2");
        (both && checks >= 4).then_some(log)
    });
    let loud: Vec<String> = lines_with(&log, "peer=127.0.0.9:")
        .into_iter()
        .filter(|l| !l.contains(" DEBUG "))
        .collect();
    assert!(
        loud.is_empty(),
        "health checks logged above debug: {loud:#?}"
    );
    assert!(
        lines_with(&log, " WARN ")
            .iter()
            .all(|l| l.contains("kdf_iterations_lowered")),
        "log:\n{log}"
    );
}
