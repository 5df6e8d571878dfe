//! Telnet's commands over real sockets against the real binary, read as raw bytes the way a
//! telnet client sees them. For Ctrl-C, telnet sends `IAC IP IAC DO TIMING-MARK` and then
//! throws away everything it receives until the server answers the DO: the server must
//! answer at once, with no newline to wait for, or that user stops seeing the chat. It
//! refuses every option (a DO with WONT, a WILL with DONT) and answers no refusal, so no
//! negotiation can loop.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use common::{DEADLINE, Server};
use ptchat::protocol::Reply;

/// One connection, its bytes compared exactly.
struct RawClient {
    stream: TcpStream,
    /// Bytes received and not yet expected.
    received: Vec<u8>,
}

impl RawClient {
    /// Connects and signs in as a new user `name`.
    fn sign_in(server: &Server, name: &str, password: &str) -> RawClient {
        let stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect to server");
        let mut client = RawClient {
            stream,
            received: Vec::new(),
        };
        client.expect(Reply::Greeting.to_line().as_bytes());
        client.send(format!("{name}\n").as_bytes());
        client.expect(Reply::AskNewPassword { name }.to_line().as_bytes());
        client.send(format!("{password}\n").as_bytes());
        client.expect(Reply::Welcome { name }.to_line().as_bytes());
        client
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to server");
    }

    /// Waits until the next bytes to arrive are `expected`, failing if others come first,
    /// or if they have not all come within the deadline.
    fn expect(&mut self, expected: &[u8]) {
        let deadline = Instant::now() + DEADLINE;
        let mut buf = [0; 4096];
        while self.received.len() < expected.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "waited {DEADLINE:?} for \"{}\"; received \"{}\"",
                expected.escape_ascii(),
                self.received.escape_ascii()
            );
            self.stream.set_read_timeout(Some(left)).expect("timeout");
            match self.stream.read(&mut buf) {
                Ok(0) => panic!(
                    "closed before \"{}\"; received \"{}\"",
                    expected.escape_ascii(),
                    self.received.escape_ascii()
                ),
                Ok(n) => self.received.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("read failed: {e}"),
            }
        }
        let next: Vec<u8> = self.received.drain(..expected.len()).collect();
        assert_eq!(
            next.escape_ascii().to_string(),
            expected.escape_ascii().to_string()
        );
    }
}

#[test]
fn ctrl_c_in_telnet_is_answered_at_once_and_the_chat_still_reaches_the_user() {
    let server = Server::start();
    let mut bob = server.sign_in("bob", "pw-b");
    let mut alice = RawClient::sign_in(&server, "alice", "pw-a");
    bob.expect("* alice joined.");

    // Ctrl-C, and no newline: the answer, `IAC WONT TIMING-MARK`, must come anyway.
    alice.send(b"\xff\xf4\xff\xfd\x06");
    alice.expect(b"\xff\xfc\x06");

    // alice's next line arrives clean, and bob's line reaches her, with nothing before it.
    alice.send(b"hello after Ctrl-C\n");
    assert_eq!(bob.next_line(), "alice: hello after Ctrl-C");
    bob.send("still reaching you?");
    alice.expect(b"bob: still reaching you?\n");

    // A second Ctrl-C is answered like the first: one answer per request.
    alice.send(b"\xff\xf4\xff\xfd\x06");
    alice.expect(b"\xff\xfc\x06");
    bob.send("and now?");
    alice.expect(b"bob: and now?\n");
}

#[test]
fn every_option_is_refused_and_no_refusal_is_answered() {
    let server = Server::start();
    let mut alice = RawClient::sign_in(&server, "alice", "pw-a");
    // WILL NAWS, DO ECHO, then the client's own refusals WONT SUPPRESS-GO-AHEAD and DONT
    // TERMINAL-TYPE, a subnegotiation nobody asked for, then a command in the same write.
    alice.send(
        b"\xff\xfb\x1f\xff\xfd\x01\xff\xfc\x03\xff\xfe\x18\xff\xfa\x18\x00vt100\xff\xf0~:h:\n",
    );
    // DONT NAWS and WONT ECHO, and then the help: WONT, DONT and SB got no answer.
    alice.expect(b"\xff\xfe\x1f\xff\xfc\x01");
    alice.expect(b"* Commands:\n");
}
