//! A classroom on one host: students log in to one shell host (or one teacher's laptop)
//! and type `nc localhost 8081`, so every connection comes from 127.0.0.1. With the
//! default flags they are all admitted, an operator can still cap them, and one student's
//! wrong passwords do not slow the others down.

mod common;

use common::{Client, Server, TempDir};

const GREETING_START: &str = "* Welcome to ptchat.";
const TOO_MANY: &str = "! Too many connections from your address; try again later.";

/// A server with the default limits: unlike `Server::start`, whose `TEST_FLAGS` switch
/// `--max-per-ip` off, only hashing is made fast.
fn start_with_default_limits(dir: &TempDir) -> Server {
    let args: Vec<String> = ["--kdf-iterations", "1000", "--data-dir"]
        .iter()
        .map(|s| s.to_string())
        .chain([dir.path().display().to_string(), "0".to_string()])
        .collect();
    Server::spawn(&args)
}

fn greeted(server: &Server) -> Client {
    let mut client = server.connect();
    client.expect_line("greeting", |l| l.starts_with(GREETING_START));
    client
}

#[test]
fn thirty_loopback_clients_are_all_admitted_with_the_default_flags() {
    let dir = TempDir::new("classroom");
    let server = start_with_default_limits(&dir);
    // The default per-address limit is in force, just not for loopback.
    server.expect_log("max_per_ip=20 max_per_loopback=0 ");
    let mut class: Vec<Client> = (0..30)
        .map(|i| server.sign_in(&format!("student{i}"), "pw"))
        .collect();
    let last = class.last_mut().expect("30 students");
    last.send("~:lu:");
    last.expect("* Users: 30 (30 online)");
    assert!(
        !server.log().contains("connection_refused"),
        "log:\n{}",
        server.log()
    );
}

#[test]
fn max_per_loopback_caps_loopback_clients_when_set() {
    // --max-per-ip 1 does not apply to loopback; --max-per-loopback 3 does.
    let server = Server::start_with(&["--max-per-ip", "1", "--max-per-loopback", "3"]);
    let mut admitted: Vec<Client> = (0..3).map(|_| greeted(&server)).collect();
    let mut fourth = server.connect();
    assert_eq!(fourth.next_line(), TOO_MANY);
    fourth.expect_closed();
    let log = server.expect_log("connection_refused peer=127.0.0.1:");
    assert!(log.contains("Too many connections"), "log:\n{log}");

    // A freed place is reusable.
    admitted.pop().expect("three admitted").shutdown();
    common::wait_for("a place to be freed", || {
        let mut client = server.connect();
        let first = client.next_line();
        first.starts_with(GREETING_START).then_some(client)
    });
}

/// The local address of a client's socket, as the server logs it in `peer=`.
fn peer_of(client: &Client) -> String {
    client.stream.local_addr().expect("local addr").to_string()
}

#[test]
fn one_students_wrong_passwords_do_not_slow_another_students_sign_in() {
    let server = Server::start_with(&["--log-level", "debug"]);
    for (name, password) in [("alice", "pw-alice"), ("bob", "pw-bob")] {
        let mut client = server.sign_in(name, password);
        client.send("~:q!:");
        client.expect_closed();
    }

    // Alice mistypes her password three times and is sent away.
    let mut alice = server.connect();
    alice.send("alice");
    for reply in [
        "! Wrong password (2 tries left). Try again:",
        "! Wrong password (1 try left). Try again:",
        "! Too many wrong passwords; goodbye.",
    ] {
        alice.send("not-her-password");
        alice.expect(reply);
    }
    alice.expect_closed();

    // Her account is slowed down: the next check of it waits (and the log says so).
    let mut again = server.connect();
    let again_peer = peer_of(&again);
    again.send("alice");
    again.send("still-not-it");
    again.expect_containing("! Wrong password");
    server.expect_log(&format!("sign_in_delay peer={again_peer} "));

    // Bob, on the same address 127.0.0.1, signs in without waiting for her typos.
    let mut bob = server.connect();
    let bob_peer = peer_of(&bob);
    bob.sign_in("bob", "pw-bob");
    let log = server.expect_log(&format!("sign_in peer={bob_peer} user=bob"));
    assert!(
        !log.contains(&format!("sign_in_delay peer={bob_peer} ")),
        "bob's sign-in was delayed by alice's typos; log:\n{log}"
    );
}
