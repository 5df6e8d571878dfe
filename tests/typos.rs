//! A stray keystroke or a typo never turns a command into a public message, over real
//! sockets against the real binary. The cases are the ones people were seen to send: a space
//! or tab before a command, `~>` for `~->`, an arrow or function key pressed first, Ctrl-L,
//! telnet's Ctrl-C (`IAC IP IAC DO TIMING-MARK`), a window title escape sequence.
//!
//! alice sends each case with bobby and carol online. carol, the third user, must receive
//! nothing from it: alice then sends a marker line, and it must be the next line carol gets
//! (one sender's lines arrive in order, so anything the case had sent would come first).
//! Where the case has an effect (a private message for bobby, alice's sign-out) it happens,
//! and where the line is no valid command alice gets the error. Telnet's Ctrl-C is answered
//! too (tests/telnet.rs checks the bytes): the answer comes ahead of alice's next line.

mod common;

use common::Server;

const NOT_A_COMMAND: &str =
    "! Unknown command; type ~:h: for help, or ~~ to send a line that begins with ~.";
const UNKNOWN: &str = "! Unknown command; type ~:h: for help.";
const DELIVERED: &str = "* Private message delivered to bobby.";
/// The server's answer to telnet's Ctrl-C, `IAC WONT TIMING-MARK` (FF FC 06), as it shows at
/// the start of the next line read as lossy UTF-8.
const CTRL_C_ANSWER: &str = "\u{FFFD}\u{FFFD}\u{6}";
/// The answers to a telnet client's offers `IAC WILL NAWS`, `IAC WILL TERMINAL-TYPE`:
/// `IAC DONT NAWS` (FF FE 1F), `IAC DONT TERMINAL-TYPE` (FF FE 18), shown the same way.
const OFFERS_ANSWER: &str = "\u{FFFD}\u{FFFD}\u{1f}\u{FFFD}\u{FFFD}\u{18}";

/// One line alice sends, and what each user must get from it.
struct Case {
    sent: &'static [u8],
    /// alice's next line: the error, or the delivery notice.
    alice: Option<&'static str>,
    /// bobby's next line: the private message.
    bobby: Option<&'static str>,
    /// The line bobby and carol both get before the marker: only for a real public line.
    public: Option<&'static str>,
    /// What alice gets ahead of her next line: the server's telnet answer, if any.
    answer: &'static str,
}

const fn private(sent: &'static [u8], shown: &'static str) -> Case {
    Case {
        sent,
        alice: Some(DELIVERED),
        bobby: Some(shown),
        public: None,
        answer: "",
    }
}

const fn refused(sent: &'static [u8], error: &'static str) -> Case {
    Case {
        sent,
        alice: Some(error),
        bobby: None,
        public: None,
        answer: "",
    }
}

const fn public(sent: &'static [u8], shown: &'static str) -> Case {
    Case {
        sent,
        alice: None,
        bobby: None,
        public: Some(shown),
        answer: "",
    }
}

/// `case`, sent after telnet's Ctrl-C, which the server answers.
const fn after_ctrl_c(case: Case) -> Case {
    Case {
        answer: CTRL_C_ANSWER,
        ..case
    }
}

#[test]
fn stray_keys_and_typos_never_reach_a_third_user() {
    let rows = [
        private(
            b" ~->bobby: leading space\n",
            "[private] alice: leading space",
        ),
        private(b"\t~->bobby: leading tab\n", "[private] alice: leading tab"),
        private(
            b"\x1b[A~->bobby: after an arrow key\n",
            "[private] alice: after an arrow key",
        ),
        private(
            b"\x1bOA~->bobby: after an arrow key in application mode\n",
            "[private] alice: after an arrow key in application mode",
        ),
        private(b"\x1b[15~~->bobby: after F5\n", "[private] alice: after F5"),
        after_ctrl_c(private(
            b"\xff\xf4\xff\xfd\x06~->bobby: after Ctrl-C in telnet\n",
            "[private] alice: after Ctrl-C in telnet",
        )),
        private(
            b"\x1b]0;title\x07~->bobby: after a title\n",
            "[private] alice: after a title",
        ),
        refused(b"~>bobby: typo arrow\n", NOT_A_COMMAND),
        refused(b" ~>bobby: typo arrow after a space\n", NOT_A_COMMAND),
        refused(b"~>\n", NOT_A_COMMAND),
        refused(b"~-\n", NOT_A_COMMAND),
        refused(b"~lu\n", NOT_A_COMMAND),
        refused(b"~ hello\n", NOT_A_COMMAND),
        refused(b"\x1b[B~lu\n", NOT_A_COMMAND),
        refused(b"~:q!\n", UNKNOWN),
        // What is meant as chat still arrives, cleaned.
        after_ctrl_c(public(
            b"\xff\xf4\xff\xfd\x06hello after Ctrl-C\n",
            "alice: hello after Ctrl-C",
        )),
        public(b"~~ starts with a tilde\n", "alice: ~ starts with a tilde"),
        public(b"    indented code\n", "alice:     indented code"),
    ];
    let server = Server::start();
    let [mut alice, mut bobby, mut carol] =
        server.sign_in_all([("alice", "pw-a"), ("bobby", "pw-b"), ("carol", "pw-c")]);
    for (i, case) in rows.iter().enumerate() {
        let sent = String::from_utf8_lossy(case.sent);
        alice.send_raw(case.sent);
        if let Some(reply) = case.alice {
            let expected = format!("{}{reply}", case.answer);
            assert_eq!(alice.next_line(), expected, "alice, after {sent:?}");
        } else if !case.answer.is_empty() {
            // An answer alone ends no line: the help reply brings it in.
            alice.send("~:h:");
            let expected = format!("{}* Commands:", case.answer);
            assert_eq!(alice.next_line(), expected, "alice, after {sent:?}");
            alice.expect_containing("sign out");
        }
        if let Some(line) = case.bobby {
            assert_eq!(bobby.next_line(), line, "bobby, after {sent:?}");
        }
        let marker = format!("marker {i}");
        alice.send(&marker);
        for (name, client) in [("bobby", &mut bobby), ("carol", &mut carol)] {
            if let Some(line) = case.public {
                assert_eq!(client.next_line(), line, "{name}, after {sent:?}");
            }
            assert_eq!(
                client.next_line(),
                format!("alice: {marker}"),
                "{name} received something from {sent:?}"
            );
        }
    }
    alice.expect_nothing_pending();

    // Ctrl-L before `~:q!:` signs alice out; the others see her leave, and nothing else.
    alice.send_raw(b"\x0c~:q!:\n");
    assert_eq!(alice.next_line(), "* Goodbye, alice.");
    alice.expect_closed();
    for client in [&mut bobby, &mut carol] {
        assert_eq!(client.next_line(), "* alice left.");
    }
    bobby.send("marker after the quit");
    assert_eq!(carol.next_line(), "bobby: marker after the quit");
}

/// The sign-in lines go through the same cleaning: a name typed after an arrow key, behind
/// a telnet client's option offers (refused ahead of the reply), is the name; a password
/// loses its control bytes but keeps its leading space.
#[test]
fn sign_in_lines_are_cleaned_the_same_way() {
    let server = Server::start();
    let mut dave = server.connect();
    dave.expect_containing("Enter your name");
    dave.send_raw(b"\xff\xfb\x1f\xff\xfb\x18\x1b[Adave\r\n");
    assert_eq!(
        dave.next_line(),
        format!("{OFFERS_ANSWER}* dave is a new account. Choose a password:")
    );
    dave.send_raw(b" secret\x0c\n");
    dave.expect("* Welcome, dave! You are signed in. Type ~:h: for help.");
    dave.send("~:q!:");
    dave.expect_closed();

    let mut again = server.connect();
    again.expect_containing("Enter your name");
    again.send("dave");
    again.expect("* Password for dave:");
    again.send("secret");
    assert_eq!(
        again.next_line(),
        "! Wrong password (2 tries left). Try again:"
    );
    again.send(" secret");
    again.expect("* Welcome, dave! You are signed in. Type ~:h: for help.");
}
