//! The command line of `chat_server`: the startup line, `--bind`, a port already in use,
//! bad arguments, `--help` and `--version`. Exit codes: 0 for help and version, 1 when the
//! server cannot start, 2 for a command line that makes no sense.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::{DEADLINE, Server, TEST_FLAGS, TempDir, server_binary, skip_or_fail};

fn chat_server() -> assert_cmd::Command {
    assert_cmd::Command::new(server_binary())
}

fn output_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Server arguments with a private data directory, for starting outside the harness.
fn args_with_data_dir(dir: &TempDir, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = TEST_FLAGS.iter().map(|s| s.to_string()).collect();
    args.push("--data-dir".into());
    args.push(dir.path().display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[test]
fn startup_line_names_a_free_port_that_accepts_connections() {
    // `Server::start` passes port 0 and insists on exactly `Chat server started on port P.`
    let server = Server::start();
    assert_ne!(server.port, 0, "port 0 must be replaced by the real port");
    let mut client = server.connect();
    client.expect_containing("* Welcome to ptchat. Enter your name");
}

/// True if this machine can listen on the IPv6 loopback address at all.
fn ipv6_loopback_available() -> bool {
    TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_ok()
}

#[test]
fn bind_to_ipv6_loopback_and_wildcard() {
    if !ipv6_loopback_available() {
        skip_or_fail(
            "bind_to_ipv6_loopback_and_wildcard",
            "PTCHAT_REQUIRE_IPV6",
            "this machine has no IPv6 loopback (::1)",
        );
        return;
    }
    for bind in ["::1", "::"] {
        let dir = TempDir::new("cli-ipv6");
        let server = Server::spawn(&args_with_data_dir(&dir, &["--bind", bind, "0"]));
        let addr = SocketAddr::from((Ipv6Addr::LOCALHOST, server.port));
        let mut stream = TcpStream::connect(addr).expect("connect over IPv6 loopback");
        stream
            .set_read_timeout(Some(DEADLINE))
            .expect("read timeout");
        stream.write_all(b"alice\npw\n").expect("send sign-in");
        let mut lines = BufReader::new(stream).lines();
        let mut next = || lines.next().expect("a line").expect("read a line");
        assert!(
            next().starts_with("* Welcome to ptchat."),
            "{bind}: greeting"
        );
        assert_eq!(next(), "* alice is a new account. Choose a password:");
        assert_eq!(
            next(),
            "* Welcome, alice! You are signed in. Type ~:h: for help."
        );
    }
}

#[test]
fn port_in_use_is_one_line_on_stderr_and_exit_1() {
    let taken = TcpListener::bind(("127.0.0.1", 0)).expect("bind a port to occupy");
    let port = taken.local_addr().expect("local addr").port();
    let dir = TempDir::new("cli-in-use");
    let args = args_with_data_dir(&dir, &["--bind", "127.0.0.1", &port.to_string()]);
    // The issue asks for the failure within 2 s; past that the process is killed and the
    // exit-code check below fails.
    let output = chat_server()
        .args(&args)
        .timeout(Duration::from_secs(2))
        .output()
        .expect("run chat_server");
    let stderr = output_text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(output.stdout.is_empty(), "no startup line on failure");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line on stderr: {stderr:?}");
    let line = lines[0];
    for part in [
        "127.0.0.1",
        &format!("port {port}"),
        "address already in use",
        "choose another port",
    ] {
        assert!(line.contains(part), "{part:?} missing from {line:?}");
    }
}

#[test]
fn bad_arguments_print_usage_on_stderr_and_exit_2() {
    let rows: &[(&[&str], &str)] = &[
        (&["--frobnicate"], "unknown option '--frobnicate'"),
        (&["-p", "1"], "unknown option '-p'"),
        (&["70000"], "PORT: '70000' is out of range (0-65535)"),
        (&["99999"], "PORT: '99999' is out of range (0-65535)"),
        (&["not-a-port"], "PORT: 'not-a-port' is not a valid number"),
        (&["1", "2"], "unexpected argument '2'"),
        (&["--bind"], "--bind needs a value"),
        (
            &["--bind", "localhost"],
            "--bind: 'localhost' is not an IP address",
        ),
        (&["--rate", "-1"], "--rate: '-1' is not a valid number"),
    ];
    for (args, reason) in rows {
        let output = chat_server()
            .args(*args)
            .timeout(Duration::from_secs(10))
            .output()
            .expect("run chat_server");
        let stderr = output_text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "args {args:?}: {stderr}");
        assert!(
            stderr.starts_with(&format!("chat_server: {reason}\n")),
            "args {args:?}: {stderr}"
        );
        assert!(
            stderr.contains("Usage: chat_server [OPTIONS] [PORT]"),
            "args {args:?}: {stderr}"
        );
        assert!(output.stdout.is_empty(), "args {args:?}: nothing on stdout");
    }
}

#[test]
fn help_prints_usage_on_stdout_and_exits_0() {
    for flag in ["--help", "-h"] {
        let output = chat_server()
            .arg(flag)
            .timeout(Duration::from_secs(10))
            .output()
            .expect("run chat_server");
        assert_eq!(output.status.code(), Some(0), "{flag}");
        let stdout = output_text(&output.stdout);
        assert!(
            stdout.starts_with("Usage: chat_server [OPTIONS] [PORT]\n"),
            "{flag}: {stdout}"
        );
        for option in [
            "--bind ADDR",
            "--data-dir DIR",
            "--sendq BYTES",
            "--version",
        ] {
            assert!(stdout.contains(option), "{flag}: {option} missing");
        }
        assert!(output.stderr.is_empty(), "{flag}: nothing on stderr");
    }
}

#[test]
fn version_prints_the_version_and_exits_0() {
    for flag in ["--version", "-V"] {
        chat_server()
            .arg(flag)
            .timeout(Duration::from_secs(10))
            .assert()
            .success()
            .stdout(format!("chat_server {}\n", env!("CARGO_PKG_VERSION")))
            .stderr("");
    }
}
