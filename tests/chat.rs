//! The chat protocol end to end: every command and reply, over real sockets, against the
//! real binary. See docs/PROTOCOL.md for the lines these tests expect.

mod common;

use common::Server;

#[test]
fn public_message_reaches_others_but_not_the_sender() {
    let server = Server::start();
    let mut alice = server.sign_in("alice", "pw-a");
    let mut bob = server.sign_in("bob", "pw-b");
    alice.expect("* bob joined.");
    alice.send("hello everyone");
    bob.expect("alice: hello everyone");
    alice.expect_nothing_pending();
}
