//! `docs/examples/client.py` against the real server: it signs in from its arguments,
//! prints what others say while its user types, sends what its user types, and leaves
//! cleanly on `~:q!:`, on Ctrl-C, and when the server closes.
//!
//! The tests need `python3`. Without it they print `SKIPPED` and pass, except under CI
//! (`CI` set), where a missing `python3` is a failure: CI must run them.
//!
//! This file also holds the self-check of the WebSocket test client (`tests/common/ws.rs`)
//! against the library's own handshake and decoder over a real socket, until the server
//! serves `/ws` and the web tests can use the client against the server itself.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::ws::{Frame, OP_CONTINUATION, OP_TEXT, WsClient};
use common::{DEADLINE, Server};
use ptchat::http::{self, Prefixed, Sniff};
use ptchat::line_reader::{Line, LineSource};
use ptchat::web::{self, Route};
use ptchat::websocket::{self, WsLines};

/// True if `python3` runs. Panics under CI if it does not: there the tests must run.
fn python_available() -> bool {
    let found = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install python3 to run docs/examples/client.py"
        );
        eprintln!("SKIPPED python client test: python3 is not installed");
    }
    found
}

/// The example client, running against `port`, with its output read line by line.
struct PythonClient {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Everything it printed so far (stdout and stderr), for failure messages.
    seen: Arc<Mutex<Vec<String>>>,
}

impl PythonClient {
    fn start(port: u16, args: &[&str]) -> PythonClient {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/examples/client.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg("127.0.0.1")
            .arg(port.to_string())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start python3");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout piped");
        let stderr = child.stderr.take().expect("stderr piped");
        for (stream, to_channel) in [
            (Box::new(stdout) as Box<dyn Read + Send>, Some(tx)),
            (Box::new(stderr), None),
        ] {
            let seen = Arc::clone(&seen);
            thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    seen.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(line.clone());
                    if let Some(tx) = &to_channel {
                        let _ = tx.send(line);
                    }
                }
            });
        }
        let stdin = child.stdin.take();
        PythonClient {
            child,
            stdin,
            lines,
            seen,
        }
    }

    /// Types `line` into the client.
    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .expect("write to the client's stdin");
        stdin.flush().expect("flush the client's stdin");
    }

    /// Waits until the client prints `exact` on stdout.
    fn expect(&mut self, exact: &str) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == exact => return,
                Ok(_) => {}
                Err(_) => panic!(
                    "the client printed no {exact:?} within {DEADLINE:?}; it printed: {:#?}",
                    self.seen.lock().unwrap_or_else(|e| e.into_inner())
                ),
            }
        }
    }

    /// Waits for the client to exit on its own.
    fn wait_for_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the client") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "the client did not exit within {DEADLINE:?}; it printed: {:#?}",
                    self.seen.lock().unwrap_or_else(|e| e.into_inner())
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGINT, as Ctrl-C at a terminal does.
    fn interrupt(&self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }
}

impl Drop for PythonClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn python_client_chats_both_ways_and_exits_0_after_quit() {
    if !python_available() {
        return;
    }
    let server = Server::start();
    let mut nc = server.sign_in("ncuser", "nc-pass");
    let mut py = PythonClient::start(server.port, &["--name", "pyuser", "--password", "py-pass"]);
    py.expect("* pyuser is a new account. Choose a password:");
    py.expect("* Welcome, pyuser! You are signed in. Type ~:h: for help.");
    nc.expect("* pyuser joined.");

    py.type_line("hello from python");
    nc.expect("pyuser: hello from python");
    // Printed while the Python user types nothing: the reader thread does not wait for
    // the keyboard.
    nc.send("hi python");
    py.expect("ncuser: hi python");

    py.type_line("~:q!:");
    py.expect("* Goodbye, pyuser.");
    let status = py.wait_for_exit();
    assert_eq!(status.code(), Some(0), "{status:?}");
    nc.expect("* pyuser left.");
}

#[test]
fn python_client_signs_out_on_ctrl_c_and_on_end_of_input() {
    if !python_available() {
        return;
    }
    let server = Server::start();
    let mut nc = server.sign_in("ncuser", "nc-pass");
    for leave_by_interrupt in [true, false] {
        let mut py = PythonClient::start(server.port, &["--name", "pyuser", "--password", "pw"]);
        py.expect("* Welcome, pyuser! You are signed in. Type ~:h: for help.");
        nc.expect("* pyuser joined.");
        if leave_by_interrupt {
            py.interrupt();
        } else {
            py.stdin = None; // closes its stdin: the end of input
        }
        py.expect("* Goodbye, pyuser.");
        let status = py.wait_for_exit();
        assert_eq!(
            status.code(),
            Some(0),
            "interrupt {leave_by_interrupt}: {status:?}"
        );
        nc.expect("* pyuser left.");
    }
}

#[test]
fn python_client_asks_again_after_a_wrong_password_and_exits_1_when_the_server_closes() {
    if !python_available() {
        return;
    }
    let server = Server::start();
    server.sign_in("pyuser", "right").send("~:q!:");
    let mut py = PythonClient::start(server.port, &["--name", "pyuser", "--password", "wrong"]);
    py.expect("! Wrong password (2 tries left). Try again:");
    // The password from the arguments is used once; the retry is read from the keyboard
    // (here a pipe).
    py.type_line("still wrong");
    py.expect("! Wrong password (1 try left). Try again:");
    py.type_line("wrong again");
    py.expect("! Too many wrong passwords; goodbye.");
    let status = py.wait_for_exit();
    assert_eq!(status.code(), Some(1), "{status:?}");
}

// ---- The WebSocket test client against the library's side of the protocol ----

/// Serves one connection the way the chat port will: sniff the first bytes, read the
/// request head, route it, and on an upgrade echo every line back as `echo: LINE` until
/// the stream ends. Returns the port and a channel that reports how reading ended.
fn echo_server() -> (u16, Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    let (tx, ended) = mpsc::channel();
    thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        let _ = tx.send(serve(stream));
    });
    (port, ended)
}

fn serve(stream: TcpStream) -> String {
    // Sniff: read until the first bytes decide, as the server will before greeting.
    stream
        .set_read_timeout(Some(http::SNIFF_WAIT))
        .expect("set timeout");
    let (decision, first) = http::read_sniff(&mut &stream).expect("sniff");
    assert_eq!(decision, Sniff::Http);
    stream
        .set_read_timeout(Some(DEADLINE))
        .expect("set timeout");
    let (request, leftover) = match http::read_head(&mut Prefixed::new(first, &stream)) {
        Ok(read) => read,
        Err(e) => return format!("bad head: {e:?}"),
    };
    let mut writer = &stream;
    let response = match web::route(&request) {
        Route::Upgrade(response) => response,
        Route::Page(response) | Route::Refuse { response, .. } => {
            let _ = writer.write_all(&response.to_bytes());
            return format!("answered {}", response.status.code());
        }
    };
    writer.write_all(&response.to_bytes()).expect("write 101");
    // Control frames and data frames share one writer, under one lock, so a pong never
    // lands inside a text frame.
    let shared = Arc::new(Mutex::new(stream.try_clone().expect("clone")));
    let control = Arc::clone(&shared);
    let mut lines = WsLines::new(
        Prefixed::new(leftover, &stream),
        Box::new(move |frame| {
            let _ = control.lock().expect("writer lock").write_all(&frame);
        }),
    );
    let ending = loop {
        match lines.next_line() {
            Ok(Some(Line::Text(text))) => {
                let mut frames = Vec::new();
                websocket::frame_lines(&format!("echo: {text}\n"), &mut frames);
                let _ = shared.lock().expect("writer lock").write_all(&frames);
            }
            Ok(Some(Line::TooLong)) => break "too long".to_string(),
            Ok(None) => break "end".to_string(),
            Err(e) => break e.to_string(),
        }
    };
    let _ = stream.shutdown(std::net::Shutdown::Both);
    ending
}

#[test]
fn ws_test_client_round_trips_through_the_library_side() {
    let (port, ended) = echo_server();
    let mut ws = WsClient::connect(port);
    ws.send_text("hello");
    ws.expect_text("echo: hello");
    ws.send_ping(b"are you there");
    assert_eq!(ws.next_frame(), Frame::Pong(b"are you there".to_vec()));
    // A fragmented message with a ping between its fragments.
    ws.send_frame(OP_TEXT, b"frag");
    ws.send_ping(b"p");
    ws.send_frame(0x80 | OP_CONTINUATION, b"ments");
    assert_eq!(ws.next_frame(), Frame::Pong(b"p".to_vec()));
    ws.expect_text("echo: fragments");
    // A newline inside a message does not split it; a frame sent a byte at a time.
    let raw = common::ws::client_frame(0x81, "one\nline".as_bytes(), Some([1, 2, 3, 4]));
    for byte in raw {
        ws.send_raw(&[byte]);
    }
    ws.expect_text("echo: oneline");
    ws.send_close(Some(1000), "bye");
    assert_eq!(ws.expect_close(), Some(1000));
    ws.expect_closed();
    assert_eq!(ended.recv_timeout(DEADLINE).expect("server done"), "end");
}

#[test]
fn ws_test_client_sees_the_library_close_codes() {
    // (what the client sends, the close code it must get back)
    let rows: Vec<(Vec<u8>, u16)> = vec![
        (common::ws::client_frame(0x82, b"\x00", Some([9; 4])), 1003),
        (common::ws::client_frame(0x81, b"hi", None), 1002),
        (common::ws::client_frame(0x81, b"\xff", Some([9; 4])), 1007),
        (
            common::ws::client_frame(0x81, &[b'x'; 1025], Some([9; 4])),
            1009,
        ),
        (
            common::ws::client_frame(0x89, &[0; 126], Some([9; 4])),
            1002,
        ),
        (common::ws::client_frame(0xc1, b"a", Some([9; 4])), 1002),
    ];
    for (frame, code) in rows {
        let (port, ended) = echo_server();
        let mut ws = WsClient::connect(port);
        ws.send_raw(&frame);
        assert_eq!(ws.expect_close(), Some(code), "{frame:?}");
        ws.expect_closed();
        let ending = ended.recv_timeout(DEADLINE).expect("server done");
        assert!(
            ending.starts_with(&format!("websocket close {code}")),
            "{ending}"
        );
    }
}

#[test]
fn ws_test_client_reports_a_refused_upgrade() {
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
        let (port, _ended) = echo_server();
        match WsClient::connect_with(port, path, &extra) {
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
}
