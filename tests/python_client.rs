//! `docs/examples/client.py` against the real server: it signs in from its arguments,
//! prints what others say while its user types, sends what its user types, and leaves
//! cleanly on `~:q!:`, on Ctrl-C, and when the server closes.
//!
//! The tests need `python3`. Without it they print `SKIPPED` and pass, except under CI
//! (`CI` set), where a missing `python3` is a failure: CI must run them.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{DEADLINE, Server};

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
