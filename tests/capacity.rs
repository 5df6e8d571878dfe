//! The server's capacity comes from the machine, never from an abort: started under a
//! limit it can read, it admits what that limit allows, refuses the rest with one line,
//! says in its log which limit binds and how to raise it, and goes on serving.

mod common;

use std::process::Command;

use common::{Client, Server, TEST_FLAGS, TempDir, server_binary};

const SERVER_FULL: &str = "! Server full; try again later.";

/// A server started by `sh`, with `limit` (a `ulimit` option such as `-n 40`) applied
/// to it first.
fn start_under_ulimit(limit: &str, dir: &TempDir) -> Server {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!("ulimit {limit} && exec \"$0\" \"$@\""))
        .arg(server_binary())
        .args(TEST_FLAGS)
        .arg("--data-dir")
        .arg(dir.path())
        .arg("0");
    Server::spawn_command(command)
}

/// The first log line containing `needle`, once there is one.
fn log_line(server: &Server, needle: &str) -> String {
    let log = server.expect_log(needle);
    let line = log.lines().find(|l| l.contains(needle));
    line.map(str::to_string).unwrap_or_default()
}

/// The `clients=N` figure of the server's `capacity` log line.
fn logged_capacity(server: &Server) -> usize {
    let line = log_line(server, " capacity ");
    let field = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("clients="))
        .unwrap_or_else(|| panic!("no clients= in {line:?}"));
    field.parse().expect("a number")
}

#[test]
fn a_tight_descriptor_limit_caps_the_clients_and_the_rest_get_one_line() {
    let dir = TempDir::new("nofile");
    let mut server = start_under_ulimit("-n 40", &dir);
    let capacity = logged_capacity(&server);
    let line = log_line(&server, " capacity ");
    assert!(line.contains("open files"), "{line}");
    assert!(line.contains("ulimit -n"), "says how to raise it: {line}");
    let warning = log_line(&server, "max_clients_lowered");
    assert!(warning.contains("asked=10000"), "{warning}");
    // Each client holds one descriptor; some are the server's own.
    assert!(
        (4..40).contains(&capacity),
        "capacity {capacity} under 40 descriptors"
    );

    let mut admitted: Vec<Client> = (0..capacity)
        .map(|i| server.sign_in(&format!("user{i}"), "pw"))
        .collect();
    for _ in 0..3 {
        let mut refused = server.connect();
        refused.expect(SERVER_FULL);
        refused.expect_closed();
    }
    server.expect_log("connection_refused");

    // Everyone admitted is served; one who leaves makes room for the next.
    admitted[0].send("still fine");
    admitted[1].expect("user0: still fine");
    let leaving = admitted.pop().expect("one admitted");
    leaving.shutdown();
    server.expect_log("disconnect");
    let mut newcomer = connect_when_room(&server);
    newcomer.sign_in("newcomer", "pw");
    newcomer.send("~:lu:");
    newcomer.expect_containing("* Users: ");
    assert!(
        server.child.try_wait().expect("wait").is_none(),
        "the server exited"
    );
}

/// Connects until the server greets rather than refuses: a departing client's place is
/// free once its thread has ended, a moment after its disconnect is logged.
fn connect_when_room(server: &Server) -> Client {
    common::wait_for("a free place", || {
        let mut client = server.connect();
        let first = client.next_line();
        (first != SERVER_FULL).then_some(client)
    })
}
