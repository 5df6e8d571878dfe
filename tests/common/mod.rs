//! Test harness shared by the integration tests: start the real `chat_server` binary on
//! port 0 with its own temporary data directory, and talk to it over real sockets.
//!
//! Nothing here sleeps to "let things settle": every wait is for a condition, with a
//! deadline, so a test fails (never hangs) when the server misbehaves.

#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A WebSocket client, for the tests of the web page's protocol.
pub mod ws;

/// haproxy in front of the server, for the tests of docs/DEPLOY.md's TLS setups.
pub mod haproxy;

/// How long any single expectation may wait before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Flags that make the server fast and unlimited for functional tests. Tests of a limit
/// pass that limit's flag explicitly (later flags win).
pub const TEST_FLAGS: &[&str] = &[
    "--kdf-iterations",
    "1000",
    "--rate",
    "0",
    "--max-per-ip",
    "0",
];

/// The path of the binary under test.
pub fn server_binary() -> &'static Path {
    assert_cmd::cargo::cargo_bin!("chat_server")
}

/// A fresh, empty directory under the system temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("ptchat-test-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A running `chat_server`. Killed when dropped.
pub struct Server {
    pub child: Child,
    pub port: u16,
    /// Everything the server wrote to stderr so far (its log).
    log: Arc<Mutex<String>>,
    /// Kept alive for the server's life when the server owns its directory.
    _dir: Option<TempDir>,
}

impl Server {
    /// A server with [`TEST_FLAGS`] and a private data directory.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// A server with [`TEST_FLAGS`] followed by `extra` flags, and a private data directory.
    pub fn start_with(extra: &[&str]) -> Server {
        let dir = TempDir::new("server");
        let mut server = Server::start_in(dir.path(), extra);
        server._dir = Some(dir);
        server
    }

    /// A server on an existing data directory (for restart tests).
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Server {
        let mut args: Vec<String> = TEST_FLAGS.iter().map(|s| s.to_string()).collect();
        args.push("--data-dir".into());
        args.push(data_dir.display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push("0".into());
        Server::spawn(&args)
    }

    /// Starts the binary with exactly `args` and waits for its startup line.
    pub fn spawn(args: &[String]) -> Server {
        let mut command = Command::new(server_binary());
        command.args(args);
        Server::spawn_command(command)
    }

    /// Starts `command`, which must exec the binary in the end (e.g. `sh -c 'ulimit -n 64;
    /// exec "$0" "$@"' BINARY ARGS..`, so `pid()` is the server's), and waits for its
    /// startup line.
    pub fn spawn_command(mut command: Command) -> Server {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chat_server");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr piped");
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = match rx.recv_timeout(DEADLINE) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let log = log.lock().unwrap_or_else(|e| e.into_inner()).clone();
                panic!("server printed no startup line within {DEADLINE:?}; log:\n{log}");
            }
        };
        let port = line
            .strip_prefix("Chat server started on port ")
            .and_then(|rest| rest.strip_suffix('.'))
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("unexpected startup line {line:?}"));
        Server {
            child,
            port,
            log,
            _dir: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A new connection to this server.
    pub fn connect(&self) -> Client {
        Client::connect(self.port)
    }

    /// A connection that begins with a PROXY protocol v1 header naming `client`, for a
    /// server started with `--trusted-proxy 127.0.0.1`: how a test reaches the server from
    /// an address other than loopback (to which `--max-per-ip` does not apply).
    pub fn connect_from(&self, client: std::net::SocketAddr) -> Client {
        let family = if client.is_ipv4() { "TCP4" } else { "TCP6" };
        let destination = if client.is_ipv4() { "127.0.0.1" } else { "::1" };
        let mut connection = self.connect();
        connection.send_raw(
            format!(
                "PROXY {family} {} {destination} {} {}\r\n",
                client.ip(),
                client.port(),
                self.port
            )
            .as_bytes(),
        );
        connection
    }

    /// A connection that has signed in (registering the account if it is new).
    pub fn sign_in(&self, name: &str, password: &str) -> Client {
        let mut client = self.connect();
        client.sign_in(name, password);
        client
    }

    /// Signs in every `(name, password)` in order and waits until each client has seen
    /// the join notice of every client after it, so no later line can be mistaken for a
    /// leftover notice.
    pub fn sign_in_all<const N: usize>(&self, users: [(&str, &str); N]) -> [Client; N] {
        let mut clients: Vec<Client> = Vec::with_capacity(N);
        for (name, password) in users {
            let newcomer = self.sign_in(name, password);
            for earlier in &mut clients {
                earlier.expect(&format!("* {name} joined."));
            }
            clients.push(newcomer);
        }
        match clients.try_into() {
            Ok(all) => all,
            Err(_) => unreachable!("one client per user"),
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until the log contains `needle`.
    pub fn expect_log(&self, needle: &str) -> String {
        wait_for(&format!("log line containing {needle:?}"), || {
            let log = self.log();
            log.contains(needle).then_some(log)
        })
    }

    /// Kills the server with SIGKILL and waits for it to exit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A line from /proc/PID/status, e.g. `status_value("Threads")`.
    pub fn status_value(&self, key: &str) -> u64 {
        let status =
            fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in /proc status"))
    }

    pub fn threads(&self) -> u64 {
        self.status_value("Threads")
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_value("VmRSS")
    }

    pub fn open_fds(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `check` until it returns `Some`, or panics after [`DEADLINE`] naming `what`.
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {DEADLINE:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// One connection to the server, reading line by line with deadlines.
pub struct Client {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
    /// Every line received so far, for failure messages.
    pub seen: Vec<String>,
}

impl Client {
    pub fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to server");
        let reader = BufReader::new(stream.try_clone().expect("clone socket"));
        Client {
            stream,
            reader,
            seen: Vec::new(),
        }
    }

    /// Sends `line` followed by `\n`.
    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\n").as_bytes());
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to server");
    }

    /// The next line (without `\n`), or `None` if the server closed the connection or
    /// nothing arrived within `wait`.
    pub fn read_line_within(&mut self, wait: Duration) -> Option<String> {
        self.stream
            .set_read_timeout(Some(wait))
            .expect("set timeout");
        let mut bytes = Vec::new();
        match self.reader.read_until(b'\n', &mut bytes) {
            Ok(0) => None,
            Ok(_) if bytes.last() == Some(&b'\n') => {
                bytes.pop();
                let line = String::from_utf8_lossy(&bytes).into_owned();
                self.seen.push(line.clone());
                Some(line)
            }
            Ok(_) => None,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if !bytes.is_empty() {
                    panic!(
                        "partial line without newline: {:?}",
                        String::from_utf8_lossy(&bytes)
                    );
                }
                None
            }
            Err(_) => None,
        }
    }

    /// Waits for a line matching `want`, skipping others; returns it. Fails after the
    /// deadline, listing what arrived instead.
    pub fn expect_line(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "no line {what} within {DEADLINE:?}; received: {:#?}",
                    self.seen
                );
            }
            match self.read_line_within(left) {
                Some(line) if want(&line) => return line,
                Some(_) => {}
                None if Instant::now() < deadline => {
                    panic!(
                        "connection closed before a line {what}; received: {:#?}",
                        self.seen
                    )
                }
                None => {}
            }
        }
    }

    /// Waits for a line equal to `exact`.
    pub fn expect(&mut self, exact: &str) -> String {
        self.expect_line(&format!("equal to {exact:?}"), |l| l == exact)
    }

    /// Waits for a line containing `part`.
    pub fn expect_containing(&mut self, part: &str) -> String {
        self.expect_line(&format!("containing {part:?}"), |l| l.contains(part))
    }

    /// The very next line, which must arrive within the deadline.
    pub fn next_line(&mut self) -> String {
        match self.read_line_within(DEADLINE) {
            Some(line) => line,
            None => panic!(
                "no next line within {DEADLINE:?}; received: {:#?}",
                self.seen
            ),
        }
    }

    /// Signs in (or registers) as `name`, consuming lines up to the welcome.
    pub fn sign_in(&mut self, name: &str, password: &str) {
        self.send(name);
        self.send(password);
        self.expect_line("welcoming the user", |l| l.starts_with("* Welcome, "));
    }

    /// Waits until the server closes the connection (EOF or reset), failing after the
    /// deadline. Lines that arrive first are kept in `seen`.
    pub fn expect_closed(&mut self) {
        let deadline = Instant::now() + DEADLINE;
        self.stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let mut buf = [0u8; 4096];
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => self
                    .seen
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return,
            }
            if Instant::now() > deadline {
                panic!(
                    "connection still open after {DEADLINE:?}; received: {:#?}",
                    self.seen
                );
            }
        }
    }

    /// Proves that nothing was queued for this client before now: asks the server for a
    /// round trip (`~:h:` is answered only to us) and checks that the first line back is
    /// the start of that answer. Works only when signed in.
    pub fn expect_nothing_pending(&mut self) {
        self.send("~:h:");
        let line = self.next_line();
        assert_eq!(
            line, "* Commands:",
            "expected nothing before the help reply"
        );
        for _ in 1..7 {
            self.next_line();
        }
    }

    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// SplitMix64: a tiny seeded generator, so fuzz inputs and garbage are the same on every
/// run and a failure can be replayed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// True when a test must not skip for want of something on this machine (IPv6, a tool, a
/// release build): under CI, which sets `CI=true`, or when `require_var` is set, as
/// `.ci/run` does for what it installs or builds.
pub fn required(require_var: &str) -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true") || std::env::var_os(require_var).is_some()
}

/// Called by a test that cannot run here, just before it returns: fails it if it is
/// [`required`], else says on the terminal that it was skipped. The note goes to the process's
/// stderr directly, because the test harness hides what a passing test prints with
/// `println!` or `eprintln!`, and a skip nobody sees looks like a pass.
pub fn skip_or_fail(test: &str, require_var: &str, why: &str) {
    assert!(
        !required(require_var),
        "{test}: {why}; this test may not be skipped under CI (CI=true) or with {require_var} set"
    );
    let note = format!("\nSKIPPED {test}: {why} (set {require_var}=1 to make this a failure)\n");
    let _ = std::io::stderr().write_all(note.as_bytes());
}
