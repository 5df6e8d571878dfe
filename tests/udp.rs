//! UDP (`--udp`): `nc -u` users in the same chat as TCP users, and no session, account or
//! traffic for a forged source address. One test drives the real `nc -u` (netcat-openbsd,
//! which `.ci/run` installs); the rest use `std::net::UdpSocket` clients.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{DEADLINE, Server, TEST_FLAGS, server_binary, skip_or_fail, wait_for};

/// Bytes of IPv4 and UDP headers on the wire, for the 3x bound.
const HEADERS: usize = 28;

/// The largest reply payload the 3x bound allows for a datagram of `payload` bytes.
fn reply_bound(payload: usize) -> usize {
    3 * (payload + HEADERS) - HEADERS
}

/// The code in a reply: the only run of four or more digits in it.
fn code_in(reply: &str) -> String {
    let runs: Vec<&str> = reply
        .split(|c: char| !c.is_ascii_digit())
        .filter(|run| run.len() >= 4)
        .collect();
    assert_eq!(runs.len(), 1, "not exactly one code in {reply:?}");
    runs[0].to_string()
}

/// A UDP user: one socket, its datagrams, and the lines they carry.
struct UdpClient {
    socket: UdpSocket,
    server: SocketAddr,
    /// Bytes received but not yet returned as lines (a piece of a long line, say).
    unread: Vec<u8>,
    /// Every datagram received so far, for failure messages.
    seen: Vec<String>,
}

impl UdpClient {
    fn new(port: u16) -> UdpClient {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP client");
        UdpClient {
            socket,
            server: SocketAddr::from(([127, 0, 0, 1], port)),
            unread: Vec::new(),
            seen: Vec::new(),
        }
    }

    fn send(&self, datagram: &[u8]) {
        self.socket
            .send_to(datagram, self.server)
            .expect("send a datagram");
    }

    fn send_line(&self, line: &str) {
        self.send(format!("{line}\n").as_bytes());
    }

    /// The next datagram, if one comes within `wait`.
    fn datagram_within(&mut self, wait: Duration) -> Option<Vec<u8>> {
        self.socket
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .expect("set timeout");
        let mut buf = vec![0u8; 65536];
        match self.socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                assert_eq!(from, self.server, "a datagram from a stranger");
                buf.truncate(n);
                self.seen.push(String::from_utf8_lossy(&buf).into_owned());
                Some(buf)
            }
            Err(_) => None,
        }
    }

    /// The next datagram, which must come within the deadline.
    fn datagram(&mut self) -> Vec<u8> {
        match self.datagram_within(DEADLINE) {
            Some(datagram) => datagram,
            None => panic!("no datagram within {DEADLINE:?}; seen: {:#?}", self.seen),
        }
    }

    /// The next datagram as text.
    fn reply(&mut self) -> String {
        String::from_utf8(self.datagram()).expect("UTF-8 reply")
    }

    /// The next line, however the datagrams cut it, within `wait`.
    fn line_within(&mut self, wait: Duration) -> Option<String> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(end) = self.unread.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.unread.drain(..=end).collect();
                let text = String::from_utf8(line[..end].to_vec()).expect("UTF-8 line");
                return Some(text);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let datagram = self.datagram_within(left)?;
            self.unread.extend_from_slice(&datagram);
        }
    }

    /// Waits for a line matching `want`, skipping others.
    fn expect_line(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.line_within(left) {
                Some(line) if want(&line) => return line,
                Some(_) => {}
                None => panic!("no line {what} within {DEADLINE:?}; seen: {:#?}", self.seen),
            }
        }
    }

    fn expect(&mut self, exact: &str) -> String {
        self.expect_line(&format!("equal to {exact:?}"), |l| l == exact)
    }

    fn expect_containing(&mut self, part: &str) -> String {
        self.expect_line(&format!("containing {part:?}"), |l| l.contains(part))
    }

    /// Says hello and gets the code; returns the reply it came in.
    fn ask_for_code(&mut self) -> String {
        self.send(b"hi\n");
        let reply = self.reply();
        assert!(reply.starts_with("* ptchat:"), "{reply:?}");
        reply
    }

    /// Proves the address: hello, the code back, the greeting.
    fn prove(&mut self) {
        let code = code_in(&self.ask_for_code());
        self.send_line(&code);
        self.expect_containing("Welcome to ptchat. Enter your name");
    }

    /// Proves the address and signs in (registering the account if it is new).
    fn sign_in(&mut self, name: &str, password: &str) {
        self.prove();
        self.send_line(name);
        self.expect_line("asking for a password", |l| l.contains("assword"));
        self.send_line(password);
        self.expect_line("welcoming the user", |l| l.starts_with("* Welcome, "));
    }

    /// Like `expect_nothing_pending` of a TCP client: `~:h:` is answered only to us, so if
    /// its first line is the next line, nothing else was queued for us before it.
    fn expect_nothing_pending(&mut self) {
        self.send_line("~:h:");
        let line = self
            .line_within(DEADLINE)
            .unwrap_or_else(|| panic!("no help reply; seen {:#?}", self.seen));
        assert_eq!(
            line, "* Commands:",
            "expected nothing before the help reply"
        );
        for _ in 1..7 {
            self.line_within(DEADLINE).expect("the rest of the help");
        }
    }
}

fn udp_server(extra: &[&str]) -> Server {
    let mut flags = vec!["--udp"];
    flags.extend_from_slice(extra);
    Server::start_with(&flags)
}

#[test]
fn the_startup_lines_announce_udp_on_the_tcp_ports_number() {
    let dir = common::TempDir::new("udp-start");
    let mut child = Command::new(server_binary())
        .args(TEST_FLAGS)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--udp", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chat_server");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx.recv_timeout(DEADLINE).expect("first startup line");
    let second = rx.recv_timeout(DEADLINE).expect("second startup line");
    let _ = child.kill();
    let _ = child.wait();
    let port = first
        .strip_prefix("Chat server started on port ")
        .and_then(|rest| rest.strip_suffix('.'))
        .unwrap_or_else(|| panic!("first line {first:?}"));
    assert_eq!(second, format!("UDP on port {port}."));
}

#[test]
fn a_udp_port_in_use_is_a_clear_startup_error() {
    let taken = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    let port = taken.local_addr().expect("address").port().to_string();
    let dir = common::TempDir::new("udp-taken");
    let output = Command::new(server_binary())
        .args(TEST_FLAGS)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--bind", "127.0.0.1", "--udp", &port])
        .output()
        .expect("run chat_server");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "chat_server: cannot listen for UDP on address 127.0.0.1 port {port}: address \
             already in use"
        )),
        "{stderr}"
    );
    assert!(output.stdout.is_empty(), "a startup line was printed");
}

/// Real `nc -u`, driven like a person: one line at a time, each after the reply before it.
struct Netcat {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Netcat {
    /// `nc -u` to the port, or `None` if OpenBSD netcat is not installed.
    fn start(port: u16) -> Option<Netcat> {
        let help = Command::new("nc").arg("-h").output().ok()?;
        let text = String::from_utf8_lossy(&help.stderr).into_owned()
            + &String::from_utf8_lossy(&help.stdout);
        if !text.contains("OpenBSD netcat") {
            return None;
        }
        let mut child = Command::new("nc")
            .args(["-u", "127.0.0.1", &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Some(Netcat {
            child,
            lines,
            seen: Vec::new(),
        })
    }

    fn type_line(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .expect("write to nc");
        stdin.flush().expect("flush");
    }

    fn expect_line(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if want(&line) {
                        return line;
                    }
                }
                Err(_) => panic!("nc printed no line {what}; it printed {:#?}", self.seen),
            }
        }
    }

    fn expect(&mut self, exact: &str) -> String {
        self.expect_line(&format!("equal to {exact:?}"), |l| l == exact)
    }

    /// The next line nc prints, if it prints one within `wait`.
    fn line_within(&mut self, wait: Duration) -> Option<String> {
        let line = self.lines.recv_timeout(wait).ok()?;
        self.seen.push(line.clone());
        Some(line)
    }
}

impl Drop for Netcat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn nc_u_signs_in_with_the_code_chats_lists_sends_privately_and_quits() {
    let server = udp_server(&[]);
    let Some(mut nc) = Netcat::start(server.port) else {
        skip_or_fail(
            "nc_u_signs_in_with_the_code_chats_lists_sends_privately_and_quits",
            "PTCHAT_REQUIRE_NETCAT",
            "OpenBSD netcat (nc) is not installed; apt-get install netcat-openbsd",
        );
        return;
    };
    let mut dave = server.sign_in("dave", "pw-d");
    nc.type_line("hello?");
    let prompt = nc.expect_line("with the code", |l| l.starts_with("* ptchat:"));
    nc.type_line(&code_in(&prompt));
    nc.expect_line("greeting", |l| l.contains("Enter your name"));
    nc.type_line("carol");
    nc.expect("* carol is a new account. Choose a password:");
    nc.type_line("pw-c");
    nc.expect("* Welcome, carol! You are signed in. Type ~:h: for help.");
    dave.expect("* carol joined.");

    nc.type_line("hello from nc");
    dave.expect("carol: hello from nc");
    dave.send("hello from tcp");
    nc.expect("dave: hello from tcp");

    nc.type_line("~:lu:");
    nc.expect("* Users: 2 (2 online)");
    nc.expect("*   carol online");
    nc.expect("*   dave online");

    nc.type_line("~->dave: psst");
    nc.expect("* Private message delivered to dave.");
    dave.expect("[private] carol: psst");
    dave.send("~->carol: back at you");
    nc.expect("[private] dave: back at you");

    nc.type_line("~:q!:");
    nc.expect("* Goodbye, carol.");
    dave.expect("* carol left.");
    // Whatever nc sends next comes from an address that must prove itself again (once the
    // session's thread has ended: a line that reaches it first goes nowhere).
    let prompt = wait_for("a new code", || {
        nc.type_line("still here?");
        nc.line_within(Duration::from_millis(200))
    });
    assert!(prompt.starts_with("* ptchat:"), "{prompt:?}");
    dave.expect_nothing_pending();
}

#[test]
fn a_udp_user_and_a_tcp_user_chat_both_ways() {
    let server = udp_server(&[]);
    let mut bob = server.sign_in("bob", "pw-b");
    let mut alice = UdpClient::new(server.port);
    alice.sign_in("alice", "pw-a");
    bob.expect("* alice joined.");

    bob.send("hello udp");
    alice.expect("bob: hello udp");
    alice.send_line("hello tcp");
    bob.expect("alice: hello tcp");
    // Several lines in one datagram: each is a line, in order.
    alice.send(b"one\ntwo\nthree");
    for line in ["alice: one", "alice: two", "alice: three"] {
        bob.expect(line);
    }
    // None of it came back to alice.
    alice.expect_nothing_pending();

    // A line longer than a datagram (each 0xFE becomes a 3-byte U+FFFD) arrives whole, in
    // datagrams of at most 1,200 bytes, cut between characters.
    let mut raw = vec![0xFE; 500];
    raw.push(b'\n');
    bob.send_raw(&raw);
    let expected = format!("bob: {}", "\u{FFFD}".repeat(500));
    let mut line = Vec::new();
    while !line.ends_with(b"\n") {
        let datagram = alice.datagram();
        assert!(datagram.len() <= 1200, "{} bytes", datagram.len());
        assert!(
            std::str::from_utf8(&datagram).is_ok(),
            "cut inside a character"
        );
        line.extend_from_slice(&datagram);
    }
    assert_eq!(
        String::from_utf8(line).expect("UTF-8"),
        format!("{expected}\n")
    );

    alice.send_line("~:q!:");
    alice.expect("* Goodbye, alice.");
    bob.expect("* alice left.");
}

#[test]
fn a_forged_datagram_with_name_password_and_message_gets_one_small_reply_and_nothing_else() {
    let server = udp_server(&[]);
    let mut bob = server.sign_in("bob", "pw-b");
    let threads_before = server.threads();
    // What a forger would send, hoping to sign in and speak in one go.
    let forged = b"mallory\nsecret\nhello everyone\n";
    let mut victim = UdpClient::new(server.port);
    victim.send(forged);
    let reply = victim.reply();
    assert!(
        reply.len() <= reply_bound(forged.len()),
        "{} bytes answered {} bytes: {reply:?}",
        reply.len(),
        forged.len()
    );
    assert!(reply.starts_with("* ptchat:"), "{reply:?}");
    code_in(&reply);
    // Exactly one reply: the next datagram answers the next one sent, a two-byte line,
    // whose bound (62 bytes) only the short wording fits.
    victim.send(b"x\n");
    let next = victim.reply();
    assert!(next.len() <= reply_bound(2), "{next:?}");
    assert_eq!(reply_bound(2), 62);

    bob.send("~:lu:");
    bob.expect("* Users: 1 (1 online)");
    bob.expect("*   bob online");
    bob.expect_nothing_pending();
    assert_eq!(
        server.threads(),
        threads_before,
        "a thread was started for the forged address"
    );
    assert!(!server.log().contains("via=udp"), "{}", server.log());
}

#[test]
fn a_wrong_code_gets_one_short_reply_and_no_session() {
    let server = udp_server(&[]);
    let mut alice = UdpClient::new(server.port);
    let code = code_in(&alice.ask_for_code());
    let last = code.as_bytes()[code.len() - 1] - b'0';
    let wrong = format!("{}{}", &code[..code.len() - 1], (last + 1) % 10);
    alice.send_line(&wrong);
    let reply = alice.reply();
    assert!(reply.starts_with("! ptchat:"), "{reply:?}");
    assert!(reply.len() <= reply_bound(wrong.len() + 1), "{reply:?}");
    // The reply carries a code that works, and the greeting comes only then.
    alice.send_line(&code_in(&reply));
    let greeting = alice.reply();
    assert!(greeting.contains("Enter your name"), "{greeting:?}");
}

#[test]
fn an_expired_code_gets_one_short_reply_and_no_session() {
    let server = udp_server(&["--udp-code-window", "1"]);
    let mut alice = UdpClient::new(server.port);
    let old = code_in(&alice.ask_for_code());
    // The code lives one to two windows: after two seconds it is dead, whatever the phase.
    thread::sleep(Duration::from_millis(2100));
    alice.send_line(&old);
    let mut reply = alice.reply();
    assert!(reply.starts_with("! ptchat:"), "{reply:?}");
    assert!(reply.len() <= reply_bound(old.len() + 1), "{reply:?}");
    assert_ne!(code_in(&reply), old, "an expired code was shown again");
    // The fresh code works (if this machine is so slow that it expires too, the reply
    // carries a fresher one).
    let greeting = wait_for("the greeting", || {
        alice.send_line(&code_in(&reply));
        let next = alice.reply();
        if next.contains("Enter your name") {
            return Some(next);
        }
        assert!(next.starts_with("! ptchat:"), "{next:?}");
        reply = next;
        None
    });
    assert!(greeting.starts_with("* Welcome to ptchat."), "{greeting:?}");
}

#[test]
fn a_silent_session_is_warned_then_closed_and_others_see_it_leave() {
    let server = udp_server(&["--udp-idle", "4"]);
    let mut bob = server.sign_in("bob", "pw-b");
    let mut alice = UdpClient::new(server.port);
    alice.sign_in("alice", "pw-a");
    bob.expect("* alice joined.");
    alice.expect_containing("Still there? This UDP session closes in 2 s");
    // Enter keeps the session: the timer starts again, so a second warning comes.
    alice.send(b"\n");
    alice.expect_containing("Still there?");
    bob.expect_nothing_pending();
    alice.expect(
        "* Nothing from you for 4 s: this UDP session is closed. Type a line to start again.",
    );
    bob.expect("* alice left.");
    server.expect_log("idle timeout");
}

#[test]
fn lines_over_the_rate_are_dropped_and_the_count_told_is_true() {
    let server = udp_server(&["--rate", "2", "--burst", "4"]);
    let mut bob = server.sign_in("bob", "pw-b");
    let mut alice = UdpClient::new(server.port);
    alice.sign_in("alice", "pw-a");
    bob.expect("* alice joined.");
    let lines: Vec<String> = (0..10).map(|i| format!("m{i}\n")).collect();
    alice.send(lines.concat().as_bytes());
    let notice = alice.expect_containing("! Slow down:");
    let dropped: usize = notice
        .strip_prefix("! Slow down: ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{notice:?}"));
    assert!((1..10).contains(&dropped), "{notice:?}");
    // A marker, sent until the rate lets it through, ends what bob gets from the burst.
    let mut got = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    'marker: loop {
        assert!(Instant::now() < deadline, "the marker never passed");
        alice.send_line("marker");
        while let Some(line) = bob.read_line_within(Duration::from_millis(700)) {
            if line == "alice: marker" {
                break 'marker;
            }
            got.push(line);
        }
    }
    let expected: Vec<String> = (0..10 - dropped).map(|i| format!("alice: m{i}")).collect();
    assert_eq!(got, expected, "told {dropped} dropped");
}

#[test]
fn a_sign_in_elsewhere_takes_over_a_udp_session_and_its_address_must_prove_itself_again() {
    let server = udp_server(&[]);
    let mut bob = server.sign_in("bob", "pw-b");
    let mut alice = UdpClient::new(server.port);
    alice.sign_in("alice", "pw-a");
    bob.expect("* alice joined.");
    let _alice_by_tcp = server.sign_in("alice", "pw-a");
    alice.expect("* You signed in from another connection; closing this one.");
    // Once the old session's thread has ended, the address gets a code again.
    let address = alice.socket.local_addr().expect("local address");
    server.expect_log(&format!("disconnect peer={address}"));
    alice.send_line("anyone?");
    let prompt = alice.reply();
    assert!(prompt.starts_with("* ptchat:"), "{prompt:?}");
    bob.expect_nothing_pending();
}

#[test]
fn udp_sessions_count_against_the_per_address_limit_shared_with_tcp() {
    // Loopback addresses have their own cap (`--max-per-ip` does not apply to them).
    let server = udp_server(&["--max-per-loopback", "1"]);
    let tcp = server.connect();
    let mut alice = UdpClient::new(server.port);
    let code = code_in(&alice.ask_for_code());
    alice.send_line(&code);
    assert_eq!(
        alice.reply(),
        "! Too many connections from your address; try again later.\n"
    );
    drop(tcp);
    let greeting = wait_for("room for the UDP session", || {
        alice.send_line(&code);
        let reply = String::from_utf8(alice.datagram()).expect("UTF-8");
        reply.contains("Enter your name").then_some(reply)
    });
    assert!(greeting.starts_with("* Welcome to ptchat."), "{greeting:?}");
}

/// At most this many handshakes at once, so the server's socket buffer never overflows and
/// no handshake datagram needs sending again (UDP would drop what does not fit).
struct Gate {
    open: Mutex<usize>,
    freed: Condvar,
}

impl Gate {
    fn pass<T>(&self, f: impl FnOnce() -> T) -> T {
        let mut open = self.open.lock().expect("gate");
        while *open == 0 {
            open = self.freed.wait(open).expect("gate");
        }
        *open -= 1;
        drop(open);
        let result = f();
        *self.open.lock().expect("gate") += 1;
        self.freed.notify_one();
        result
    }
}

/// The soft limit on open files of this process.
fn open_files_limit() -> (u64, u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_default();
    let mut numbers = line.split_whitespace().filter_map(|w| {
        w.parse::<u64>()
            .ok()
            .or((w == "unlimited").then_some(u64::MAX))
    });
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0))
}

const THOUSAND: &str = "a_thousand_udp_sessions_sign_in_and_one_broadcast_reaches_them_all";

/// A thousand sessions means a thousand threads in the server, one socket each here.
#[test]
fn a_thousand_udp_sessions_sign_in_and_one_broadcast_reaches_them_all() {
    const SESSIONS: usize = 1000;
    let (soft, hard) = open_files_limit();
    let needed = SESSIONS as u64 + 200;
    if soft < needed {
        if hard < needed || std::env::var_os("PTCHAT_UDP_RAISED").is_some() {
            skip_or_fail(THOUSAND, "PTCHAT_REQUIRE_FILES", "ulimit -n is below 1,200");
            return;
        }
        // Runs this test alone in a child whose soft limit is raised to the hard one.
        let exe = std::env::current_exe().expect("test binary");
        let status = Command::new("sh")
            .arg("-c")
            .arg("ulimit -n \"$(ulimit -Hn)\" && exec \"$0\" \"$@\"")
            .arg(exe)
            .args(["--exact", THOUSAND, "--nocapture"])
            .env("PTCHAT_UDP_RAISED", "1")
            .status()
            .expect("run the test again");
        assert!(status.success(), "{THOUSAND} failed with ulimit -n raised");
        return;
    }
    let started = Instant::now();
    let server = udp_server(&["--kdf-iterations", "1"]);
    let port = server.port;
    let gate = Arc::new(Gate {
        open: Mutex::new(32),
        freed: Condvar::new(),
    });
    let signed_in = Arc::new(AtomicUsize::new(0));
    let reached = Arc::new(AtomicUsize::new(0));
    // Milliseconds since `started` of the last datagram any client received.
    let last_heard = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..SESSIONS)
        .map(|i| {
            let (gate, signed_in) = (Arc::clone(&gate), Arc::clone(&signed_in));
            let (reached, last_heard) = (Arc::clone(&reached), Arc::clone(&last_heard));
            thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || {
                    let mut client = UdpClient::new(port);
                    gate.pass(|| sign_in_in_one_datagram(&mut client, &format!("u{i}")));
                    signed_in.fetch_add(1, Ordering::SeqCst);
                    wait_for_broadcast(&mut client, started, &last_heard);
                    reached.fetch_add(1, Ordering::SeqCst);
                })
                .expect("client thread")
        })
        .collect();
    let long = Duration::from_secs(120);
    wait_until(long, "every session signed in", || {
        signed_in.load(Ordering::SeqCst) == SESSIONS
    });
    let signed_in_after = started.elapsed();
    // The join notices (about half a million datagrams) have all arrived when the clients
    // have heard nothing for a while; the broadcast then finds every socket buffer empty.
    wait_until(long, "the join notices to end", || {
        let heard = Duration::from_millis(last_heard.load(Ordering::SeqCst));
        started.elapsed() > heard + Duration::from_millis(300)
    });
    let mut bob = server.sign_in("bob", "pw-b");
    bob.send("hello all");
    wait_until(long, "the broadcast reached every session", || {
        reached.load(Ordering::SeqCst) == SESSIONS
    });
    for client in clients {
        client.join().expect("client thread");
    }
    let line = format!(
        "\n{SESSIONS} UDP sessions signed in after {signed_in_after:.1?}; one broadcast \
         reached them all after {:.1?}\n",
        started.elapsed()
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
}

fn wait_until(limit: Duration, what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Proves the address with a hello, then sends the code, the name and the password in one
/// datagram: the lines after the code are the new session's first input.
fn sign_in_in_one_datagram(client: &mut UdpClient, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let prompt = loop {
        assert!(Instant::now() < deadline, "{name}: no code");
        client.send(b"hi\n");
        if let Some(reply) = client.datagram_within(Duration::from_secs(2)) {
            break String::from_utf8(reply).expect("UTF-8");
        }
    };
    let code = code_in(&prompt);
    client.send(format!("{code}\n{name}\npw\n").as_bytes());
    client.expect_line("welcoming the user", |l| l.starts_with("* Welcome, "));
}

fn wait_for_broadcast(client: &mut UdpClient, started: Instant, last_heard: &AtomicU64) {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut seen_join = HashSet::new();
    loop {
        assert!(Instant::now() < deadline, "no broadcast");
        let Some(line) = client.line_within(Duration::from_secs(1)) else {
            continue;
        };
        let now = started.elapsed().as_millis() as u64;
        last_heard.fetch_max(now, Ordering::SeqCst);
        if line == "bob: hello all" {
            return;
        }
        assert!(
            line.starts_with("* u") && line.ends_with(" joined.") && seen_join.insert(line.clone()),
            "unexpected line {line:?}"
        );
    }
}
