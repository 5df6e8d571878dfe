//! The chat protocol end to end: every command and reply, over real sockets, against the
//! real binary. See docs/PROTOCOL.md for the lines these tests expect.
//!
//! Proving that something was *not* delivered uses `expect_nothing_pending()`: the client
//! asks for help (answered only to itself) and the first line back must be that answer, so
//! anything queued earlier would show up first.

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, DEADLINE, Server};

/// The exact lines of `~:h:`.
const HELP: [&str; 7] = [
    "* Commands:",
    "*   TEXT              send TEXT to everyone online",
    "*   ~-@NAME: TEXT     send TEXT to everyone, marked for NAME",
    "*   ~->NAME: TEXT     send TEXT to NAME only (stored if NAME is offline)",
    "*   ~:lu:             list all users, online and offline",
    "*   ~:h:              show this help",
    "*   ~:q!:             sign out",
];

const GREETING: &str = "* Welcome to ptchat. Enter your name (1-24 letters, digits, _ or -):";

/// A signed-in connection read as raw bytes, to check exactly what reaches a terminal.
struct RawReceiver {
    reader: BufReader<TcpStream>,
}

impl RawReceiver {
    fn sign_in(server: &Server, name: &str, password: &str) -> RawReceiver {
        let mut stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
        stream
            .write_all(format!("{name}\n{password}\n").as_bytes())
            .expect("send sign-in");
        stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let mut receiver = RawReceiver {
            reader: BufReader::new(stream),
        };
        while !receiver.line().starts_with(b"* Welcome, ") {}
        receiver
    }

    /// The next line exactly as sent, `\n` included.
    fn line(&mut self) -> Vec<u8> {
        let mut bytes = Vec::new();
        self.reader
            .read_until(b'\n', &mut bytes)
            .expect("read raw line");
        assert_eq!(bytes.last(), Some(&b'\n'), "incomplete line {bytes:?}");
        bytes
    }
}

/// Waits until the server has logged the end of the connection from `client`.
fn expect_disconnect_logged(server: &Server, client: &Client) {
    let peer = client.stream.local_addr().expect("local addr");
    server.expect_log(&format!("disconnect peer={peer}"));
}

// ---- sign-in ---------------------------------------------------------------------------

#[test]
fn sign_in_flow_registers_then_recognises_an_account() {
    let server = Server::start();
    let mut first = server.connect();
    assert_eq!(first.next_line(), GREETING);
    first.send("alice");
    assert_eq!(
        first.next_line(),
        "* alice is a new account. Choose a password:"
    );
    first.send("");
    assert_eq!(
        first.next_line(),
        "! The password cannot be empty. Try again:"
    );
    first.send("secret");
    assert_eq!(
        first.next_line(),
        "* Welcome, alice! You are signed in. Type ~:h: for help."
    );
    first.send("~:q!:");
    first.expect("* Goodbye, alice.");
    first.expect_closed();

    let mut again = server.connect();
    assert_eq!(again.next_line(), GREETING);
    again.send("alice");
    assert_eq!(again.next_line(), "* Password for alice:");
    again.send("secret");
    assert_eq!(
        again.next_line(),
        "* Welcome, alice! You are signed in. Type ~:h: for help."
    );
    again.expect_nothing_pending();
}

#[test]
fn invalid_names_get_an_error_and_another_try() {
    let server = Server::start();
    let mut client = server.connect();
    client.expect(GREETING);
    let too_long = "n".repeat(25);
    let rows = [
        (
            "",
            "! Invalid name: a name needs at least one character. Try again:",
        ),
        (
            "a b",
            "! Invalid name: a name uses only letters, digits, '_' and '-'. Try again:",
        ),
        (
            "bad!",
            "! Invalid name: a name uses only letters, digits, '_' and '-'. Try again:",
        ),
        (
            "caf\u{e9}",
            "! Invalid name: a name uses only letters, digits, '_' and '-'. Try again:",
        ),
        (
            "~:lu:",
            "! Invalid name: a name uses only letters, digits, '_' and '-'. Try again:",
        ),
        (
            &too_long,
            "! Invalid name: a name has at most 24 characters. Try again:",
        ),
    ];
    for (name, error) in rows {
        client.send(name);
        assert_eq!(client.next_line(), error, "name {name:?}");
    }
    client.send(&"n".repeat(24));
    client.expect_containing("is a new account");
    client.send("pw");
    client.expect_containing("* Welcome, nnnn");
}

#[test]
fn wrong_password_gets_another_try() {
    let server = Server::start();
    server.sign_in("alice", "right").send("~:q!:");
    let mut client = server.connect();
    client.expect(GREETING);
    client.send("alice");
    client.expect("* Password for alice:");
    client.send("wrong");
    assert_eq!(
        client.next_line(),
        "! Wrong password (2 tries left). Try again:"
    );
    client.send("right");
    assert_eq!(
        client.next_line(),
        "* Welcome, alice! You are signed in. Type ~:h: for help."
    );
}

#[test]
fn three_wrong_passwords_close_the_connection() {
    let server = Server::start();
    let mut alice = server.sign_in("alice", "right");
    let mut client = server.connect();
    client.expect(GREETING);
    client.send("alice");
    client.expect("* Password for alice:");
    for left in ["2 tries", "1 try"] {
        client.send("wrong");
        assert_eq!(
            client.next_line(),
            format!("! Wrong password ({left} left). Try again:")
        );
    }
    client.send("wrong");
    assert_eq!(client.next_line(), "! Too many wrong passwords; goodbye.");
    client.expect_closed();
    // The real alice was never disturbed.
    alice.expect_nothing_pending();
}

#[test]
fn names_are_case_insensitive() {
    let server = Server::start();
    let [mut alice, mut bob] = server.sign_in_all([("Alice", "pw-a"), ("bob", "pw-b")]);

    // `alice` is the existing account `Alice`, not a new one.
    let mut other = server.connect();
    other.expect(GREETING);
    other.send("ALICE");
    assert_eq!(other.next_line(), "* Password for Alice:");
    other.send("not-pw-a");
    other.expect_containing("! Wrong password");
    other.shutdown();

    bob.send("~->alice: hi");
    bob.expect("* Private message delivered to Alice.");
    alice.expect("[private] bob: hi");
    bob.send("~-@aLiCe: look");
    alice.expect("[tagged] bob @Alice: look");
    bob.expect_nothing_pending();
}

#[test]
fn nothing_sent_before_sign_in_reaches_anyone() {
    let server = Server::start();
    let mut bob = server.sign_in("bob", "pw-b");
    let mut stranger = server.connect();
    stranger.expect(GREETING);
    for line in ["hello everyone", "~-@bob: hi", "~->bob: psst", "~:lu:"] {
        stranger.send(line);
        stranger.expect_containing("! Invalid name");
    }
    stranger.send("eve");
    stranger.expect("* eve is a new account. Choose a password:");
    stranger.shutdown();
    expect_disconnect_logged(&server, &stranger);
    // No text, no join and no leave notice for a sign-in that never finished.
    bob.expect_nothing_pending();
    bob.send("~:lu:");
    assert_eq!(bob.next_line(), "* Users: 1 (1 online)");
}

// ---- notices -----------------------------------------------------------------------------

#[test]
fn join_notice_reaches_everyone_already_online() {
    let server = Server::start();
    let [mut alice, mut bob] = server.sign_in_all([("alice", "pw-a"), ("bob", "pw-b")]);
    let mut carol = server.sign_in("carol", "pw-c");
    alice.expect("* carol joined.");
    bob.expect("* carol joined.");
    // Nobody hears their own join.
    carol.expect_nothing_pending();
    bob.expect_nothing_pending();
}

#[test]
fn quit_says_goodbye_closes_and_tells_the_others() {
    let server = Server::start();
    let [mut alice, mut bob] = server.sign_in_all([("alice", "pw-a"), ("bob", "pw-b")]);
    alice.send("~:q!:");
    assert_eq!(alice.next_line(), "* Goodbye, alice.");
    alice.expect_closed();
    bob.expect("* alice left.");
}

#[test]
fn plain_disconnect_tells_the_others() {
    let server = Server::start();
    let mut alice = server.sign_in("alice", "pw-a");
    let mut bob = server.sign_in("bob", "pw-b");
    // The welcome is queued just before the account goes online; the join notice proves
    // bob is online, so he cannot miss the leave notice.
    alice.expect("* bob joined.");
    alice.shutdown();
    drop(alice);
    bob.expect("* alice left.");
}

#[test]
fn second_sign_in_takes_over_without_a_leave_notice() {
    let server = Server::start();
    let [mut old, mut bob] = server.sign_in_all([("alice", "pw-a"), ("bob", "pw-b")]);
    let mut new = server.sign_in("alice", "pw-a");
    assert_eq!(
        old.next_line(),
        "* You signed in from another connection; closing this one."
    );
    old.expect_closed();
    expect_disconnect_logged(&server, &old);
    // The account never went offline: no leave, no join.
    bob.expect_nothing_pending();
    bob.send("~:lu:");
    assert_eq!(bob.next_line(), "* Users: 2 (2 online)");
    assert_eq!(bob.next_line(), "*   alice online");
    assert_eq!(bob.next_line(), "*   bob online");
    bob.send("still there?");
    new.expect("bob: still there?");
}

// ---- commands ----------------------------------------------------------------------------

#[test]
fn public_message_reaches_others_but_not_the_sender() {
    let server = Server::start();
    let [mut alice, mut bob] = server.sign_in_all([("alice", "pw-a"), ("bob", "pw-b")]);
    alice.send("hello everyone");
    bob.expect("alice: hello everyone");
    alice.expect_nothing_pending();
}

/// Lines that arrive in one read are delivered together as a burst (session.rs); that
/// must not change what anyone sees: every line, in order, each command after the public
/// lines before it, and the lines before a `~:q!:` before the leave notice.
#[test]
fn lines_sent_in_one_write_arrive_in_order_around_other_commands() {
    let server = Server::start();
    let [mut alice, mut bob, mut carol] =
        server.sign_in_all([("alice", "pw-a"), ("bob", "pw-b"), ("carol", "pw-c")]);
    // More public lines than one burst holds (2 KiB) and one small read brings (1 KiB), a
    // private line, a tagged one, more public lines, then quit: all in one write.
    let mut batch = String::new();
    for i in 0..400 {
        batch.push_str(&format!("line {i}\n"));
        if i == 200 {
            batch.push_str("~->bob: private after 200\n~-@carol: tagged after 200\n");
        }
    }
    batch.push_str("~:q!:\n");
    alice.send_raw(batch.as_bytes());
    let expected = |extra: &[&str]| {
        let mut lines: Vec<String> = (0..=200).map(|i| format!("alice: line {i}")).collect();
        lines.extend(extra.iter().map(|l| l.to_string()));
        lines.extend((201..400).map(|i| format!("alice: line {i}")));
        lines.push("* alice left.".to_string());
        lines
    };
    let bob_sees = expected(&[
        "[private] alice: private after 200",
        "alice @carol: tagged after 200",
    ]);
    let carol_sees = expected(&["[tagged] alice @carol: tagged after 200"]);
    for (reader, lines) in [(&mut bob, bob_sees), (&mut carol, carol_sees)] {
        for line in lines {
            assert_eq!(reader.next_line(), line);
        }
    }
    assert_eq!(alice.next_line(), "* Private message delivered to bob.");
    assert_eq!(alice.next_line(), "* Goodbye, alice.");
    alice.expect_closed();
}

#[test]
fn tagged_message_marks_only_the_targets_copy() {
    let server = Server::start();
    let [mut alice, mut bob, mut carol] =
        server.sign_in_all([("alice", "pw-a"), ("bob", "pw-b"), ("carol", "pw-c")]);
    alice.send("~-@bob: look at this");
    assert_eq!(bob.next_line(), "[tagged] alice @bob: look at this");
    assert_eq!(carol.next_line(), "alice @bob: look at this");
    alice.expect_nothing_pending();
    // No bell or other control byte marks the copy.
    assert!(!bob.seen.iter().any(|l| l.contains('\u{7}')));
}

#[test]
fn private_message_to_an_online_user_reaches_only_them() {
    let server = Server::start();
    let [mut alice, mut bob, mut carol] =
        server.sign_in_all([("alice", "pw-a"), ("bob", "pw-b"), ("carol", "pw-c")]);
    alice.send("~->bob: psst");
    assert_eq!(alice.next_line(), "* Private message delivered to bob.");
    assert_eq!(bob.next_line(), "[private] alice: psst");
    carol.expect_nothing_pending();
    alice.expect_nothing_pending();
}

#[test]
fn private_message_to_an_offline_user_is_delivered_at_next_sign_in() {
    let server = Server::start();
    let mut bob = server.sign_in("bob", "pw-b");
    bob.send("~:q!:");
    bob.expect_closed();
    let mut alice = server.sign_in("alice", "pw-a");
    alice.send("~->bob: first");
    assert_eq!(
        alice.next_line(),
        "* bob is offline; private message stored for their next sign-in."
    );
    alice.send("~->bob: second");
    alice.expect("* bob is offline; private message stored for their next sign-in.");

    let mut bob = server.connect();
    bob.sign_in("bob", "pw-b");
    assert_eq!(
        bob.next_line(),
        "* 2 private messages arrived while you were away:"
    );
    for text in ["first", "second"] {
        let line = bob.next_line();
        let stamp = line
            .strip_prefix("[private, sent ")
            .and_then(|rest| rest.strip_suffix(&format!("] alice: {text}")))
            .unwrap_or_else(|| panic!("unexpected stored line {line:?}"));
        // An RFC 3339 UTC time to the second: 2026-11-24T19:11:51Z.
        assert_eq!(stamp.len(), 20, "timestamp {stamp:?}");
        assert!(
            stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
            "{stamp:?}"
        );
    }
    bob.expect_nothing_pending();
    alice.expect("* bob joined.");

    // Delivered once: the next sign-in finds an empty mailbox.
    bob.send("~:q!:");
    bob.expect_closed();
    let mut bob = server.sign_in("bob", "pw-b");
    bob.expect_nothing_pending();
}

#[test]
fn list_users_shows_every_account_online_or_offline() {
    let server = Server::start();
    let mut bob = server.sign_in("bob", "pw-b");
    bob.send("~:q!:");
    bob.expect_closed();
    let [mut carol, mut alice] = server.sign_in_all([("Carol", "pw-c"), ("alice", "pw-a")]);
    alice.send("~:lu:");
    assert_eq!(alice.next_line(), "* Users: 3 (2 online)");
    assert_eq!(alice.next_line(), "*   alice online");
    assert_eq!(alice.next_line(), "*   bob offline");
    assert_eq!(alice.next_line(), "*   Carol online");
    alice.expect_nothing_pending();
    carol.expect_nothing_pending();
}

#[test]
fn help_lists_every_command() {
    let server = Server::start();
    let [mut alice, mut bob] = server.sign_in_all([("alice", "pw-a"), ("bob", "pw-b")]);
    alice.send("~:h:");
    for expected in HELP {
        assert_eq!(alice.next_line(), expected);
    }
    bob.expect_nothing_pending();
}

// ---- errors ------------------------------------------------------------------------------

#[test]
fn unknown_user_is_an_error_to_the_sender_only() {
    let server = Server::start();
    let [mut alice, mut bob] = server.sign_in_all([("alice", "pw-a"), ("bob", "pw-b")]);
    for line in ["~-@zed: hi", "~->zed: hi"] {
        alice.send(line);
        assert_eq!(
            alice.next_line(),
            "! Unknown user zed; nothing was sent.",
            "line {line:?}"
        );
    }
    bob.expect_nothing_pending();
    alice.expect_nothing_pending();
}

#[test]
fn malformed_commands_are_errors_to_the_sender_only() {
    const UNKNOWN: &str = "! Unknown command; type ~:h: for help.";
    const COLON: &str = "! Missing ':' after the name; use ~-@NAME: TEXT or ~->NAME: TEXT.";
    const EMPTY_NAME: &str = "! Bad user name: a name needs at least one character.";
    const BAD_CHAR: &str = "! Bad user name: a name uses only letters, digits, '_' and '-'.";
    const LONG_NAME: &str = "! Bad user name: a name has at most 24 characters.";
    const NO_TEXT: &str = "! Nothing to send after the name.";
    let long_tag = format!("~-@{}: hi", "b".repeat(25));
    let rows: Vec<(&str, &str)> = vec![
        ("~:", UNKNOWN),
        ("~::", UNKNOWN),
        ("~:lu", UNKNOWN),
        ("~:LU:", UNKNOWN),
        ("~:quit:", UNKNOWN),
        ("~:q!: bye", UNKNOWN),
        ("~:h: please", UNKNOWN),
        ("~-@", COLON),
        ("~-@bob", COLON),
        ("~-@bob hi", COLON),
        ("~-@: hi", EMPTY_NAME),
        ("~-@bo b: hi", BAD_CHAR),
        ("~-@bob!: hi", BAD_CHAR),
        (&long_tag, LONG_NAME),
        ("~-@bob:", NO_TEXT),
        ("~-@bob:   ", NO_TEXT),
        ("~->", COLON),
        ("~->bob", COLON),
        ("~->:", EMPTY_NAME),
        ("~->b\u{e9}b: hi", BAD_CHAR),
        ("~->bob:", NO_TEXT),
        ("~->bob: ", NO_TEXT),
    ];
    let server = Server::start();
    let [mut alice, mut bob] = server.sign_in_all([("alice", "pw-a"), ("bob", "pw-b")]);
    for (line, error) in rows {
        alice.send(line);
        assert_eq!(alice.next_line(), error, "line {line:?}");
    }
    bob.expect_nothing_pending();
    alice.expect_nothing_pending();
}

#[test]
fn empty_and_whitespace_lines_are_ignored() {
    let server = Server::start();
    let [mut alice, mut bob] = server.sign_in_all([("alice", "pw-a"), ("bob", "pw-b")]);
    alice.send_raw(b"\n   \n\t\n\r\n \t \r\n");
    alice.expect_nothing_pending();
    bob.expect_nothing_pending();
}

#[test]
fn over_long_line_is_refused_whole_and_the_connection_still_works() {
    let server = Server::start();
    let [mut alice, mut bob] = server.sign_in_all([("alice", "pw-a"), ("bob", "pw-b")]);
    const TOO_LONG: &str = "! Line too long (limit 1024 bytes); it was not sent.";

    // One byte over the limit, and a line far beyond it: one error each, nothing delivered.
    alice.send(&"x".repeat(1025));
    assert_eq!(alice.next_line(), TOO_LONG);
    alice.send(&"y".repeat(200_000));
    assert_eq!(alice.next_line(), TOO_LONG);
    alice.send(&format!("~->bob: {}", "z".repeat(1100)));
    assert_eq!(alice.next_line(), TOO_LONG);
    alice.expect_nothing_pending();
    bob.expect_nothing_pending();

    // Exactly at the limit is fine, and so is everything after.
    let at_limit = "w".repeat(1024);
    alice.send(&at_limit);
    assert_eq!(bob.next_line(), format!("alice: {at_limit}"));
    alice.send("still here");
    assert_eq!(bob.next_line(), "alice: still here");
}

// ---- bytes on the wire -------------------------------------------------------------------

#[test]
fn crlf_input_works_and_no_cr_is_forwarded() {
    let server = Server::start();
    let mut alice = server.connect();
    alice.send_raw(b"alice\r\npw-a\r\n");
    alice.expect("* Welcome, alice! You are signed in. Type ~:h: for help.");
    let mut bob = RawReceiver::sign_in(&server, "bob", "pw-b");
    alice.expect("* bob joined.");

    alice.send_raw(b"hello\r\n");
    assert_eq!(bob.line(), b"alice: hello\n");
    alice.send_raw(b"~-@bob: tagged\r\n");
    assert_eq!(bob.line(), b"[tagged] alice @bob: tagged\n");
    alice.send_raw(b"~->bob: private\r\n");
    assert_eq!(bob.line(), b"[private] alice: private\n");
    alice.expect("* Private message delivered to bob.");
    alice.send_raw(b"~:lu:\r\n");
    assert_eq!(alice.next_line(), "* Users: 2 (2 online)");
}

/// True for bytes and characters that must never reach a terminal: C0 except TAB and the
/// line's own `\n`, DEL, and C1 (U+0080-U+009F).
fn assert_terminal_safe(raw: &[u8]) {
    let (body, newline) = raw.split_at(raw.len() - 1);
    assert_eq!(newline, b"\n");
    for &b in body {
        assert!(
            b == b'\t' || (b >= 0x20 && b != 0x7f),
            "control byte {b:#04x} reached a receiver: {raw:?}"
        );
    }
    let text = std::str::from_utf8(body).expect("receiver got valid UTF-8");
    for c in text.chars() {
        assert!(
            !('\u{80}'..='\u{9f}').contains(&c),
            "C1 control {c:?} reached a receiver: {text:?}"
        );
    }
}

#[test]
fn control_bytes_never_reach_another_clients_socket() {
    let server = Server::start();
    let mut alice = server.sign_in("alice", "pw-a");
    let mut bob = RawReceiver::sign_in(&server, "bob", "pw-b");
    alice.expect("* bob joined.");

    // Every C0 byte but `\n`, DEL, every C1 character (UTF-8 encoded), and the usual
    // attacks: an ESC colour sequence, a bell, a carriage return that overwrites the line, a
    // window title. Controls are dropped, escape sequences whole; TAB is kept.
    let mut nasty: Vec<u8> = b"x".to_vec();
    nasty.extend((0x00u8..0x20).filter(|&b| b != b'\n'));
    nasty.push(0x7f);
    for c in '\u{80}'..='\u{9f}' {
        nasty.extend(c.to_string().as_bytes());
    }
    nasty.extend(b"\x1b[31mred\x1b[0m \x07bell \rfake: line\x1b]0;title\x07");
    let rows: [(&[u8], &str); 3] = [
        (b"", "alice: "),
        (b"~-@bob: ", "[tagged] alice @bob: "),
        (b"~->bob: ", "[private] alice: "),
    ];
    for (prefix, shown) in rows {
        let mut line = prefix.to_vec();
        line.extend(&nasty);
        line.push(b'\n');
        alice.send_raw(&line);
        let raw = bob.line();
        assert_terminal_safe(&raw);
        let text = String::from_utf8(raw).expect("valid UTF-8");
        assert_eq!(text, format!("{shown}x\tred bell fake: line\n"));
    }
}

#[test]
fn invalid_utf8_is_replaced_not_forwarded() {
    let server = Server::start();
    let mut alice = server.sign_in("alice", "pw-a");
    let mut bob = RawReceiver::sign_in(&server, "bob", "pw-b");
    alice.expect("* bob joined.");
    // (0xFF before a telnet command byte, 0xF0 to 0xFF, would be telnet: see tests/typos.rs.)
    alice.send_raw(b"bad \xfe\xff utf8 \xc3 caf\xc3\xa9 \xed\xa0\x80 end\n");
    let raw = bob.line();
    assert_terminal_safe(&raw);
    assert_eq!(
        String::from_utf8(raw).expect("valid UTF-8"),
        "alice: bad \u{FFFD}\u{FFFD} utf8 \u{FFFD} caf\u{e9} \u{FFFD}\u{FFFD}\u{FFFD} end\n"
    );
}

// ---- many clients, slow clients ----------------------------------------------------------

#[test]
fn twenty_clients_receive_one_broadcast() {
    let server = Server::start();
    let mut sender = server.sign_in("sender", "pw");
    let mut receivers: Vec<Client> = (0..20)
        .map(|i| server.sign_in(&format!("user{i:02}"), "pw"))
        .collect();
    // Every receiver is online once the sender has seen all 20 join notices (in any order).
    let mut joined = std::collections::BTreeSet::new();
    while joined.len() < 20 {
        let line = sender.next_line();
        if let Some(name) = line
            .strip_prefix("* ")
            .and_then(|l| l.strip_suffix(" joined."))
        {
            joined.insert(name.to_string());
        }
    }
    sender.send("one for all");
    for receiver in &mut receivers {
        receiver.expect("sender: one for all");
    }
    sender.expect_nothing_pending();
}

/// More clients than the server has writer doorbells (64, `limits::WRITER_DOORBELLS`), so
/// writers share them: a broadcast must still reach everyone, a private line must reach its
/// receiver (waking the others on that doorbell for nothing), and nobody may lose a wake-up
/// on the way, which the second broadcast checks.
#[test]
fn more_clients_than_doorbells_all_receive() {
    const RECEIVERS: usize = 80;
    let server = Server::start();
    let mut sender = server.sign_in("sender", "pw");
    // Doorbells are handed out in turn (the sender got the first): receivers i and i + 64
    // share one, so u010 shares with u074.
    let mut receivers: Vec<Client> = (0..RECEIVERS)
        .map(|i| server.sign_in(&format!("u{i:03}"), "pw"))
        .collect();
    for i in 0..RECEIVERS {
        sender.expect(&format!("* u{i:03} joined."));
    }
    sender.send("one for all");
    for receiver in &mut receivers {
        receiver.expect("sender: one for all");
    }
    sender.send("~->u010: just you");
    receivers[10].expect("[private] sender: just you");
    sender.send("and again");
    for receiver in &mut receivers {
        receiver.expect("sender: and again");
    }
    for (i, receiver) in receivers.iter().enumerate() {
        let privates = receiver.seen.iter().filter(|l| l.contains("just you"));
        assert_eq!(
            privates.count(),
            usize::from(i == 10),
            "u{i:03} saw {:?}",
            receiver.seen
        );
    }
}

/// A receiver on its own thread that checks every numbered line from `alice` arrives in
/// order, counting them in `progress`, until the `end` line. Returns the count and the
/// notices (`* ...` lines) seen in between.
fn spawn_in_order_reader(
    mut client: Client,
    progress: Arc<AtomicUsize>,
) -> thread::JoinHandle<(usize, Vec<String>)> {
    thread::spawn(move || {
        let mut expected = 0usize;
        let mut notices = Vec::new();
        loop {
            let line = client.next_line();
            if line == "alice: end" {
                return (expected, notices);
            }
            if line.starts_with("* ") {
                notices.push(line);
                continue;
            }
            let number = line
                .strip_prefix("alice: ")
                .and_then(|rest| rest.split(' ').next())
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or_else(|| panic!("unexpected line {line:?}"));
            assert_eq!(number, expected, "messages out of order or missing");
            expected += 1;
            progress.store(expected, Ordering::SeqCst);
        }
    })
}

/// Reads whatever is buffered for a client that stopped reading, until the server closes
/// the connection; returns everything it had been sent.
fn drain_until_closed(client: &mut Client) -> Vec<u8> {
    client
        .stream
        .set_read_timeout(Some(DEADLINE))
        .expect("timeout");
    let mut received = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match client.stream.read(&mut buf) {
            Ok(0) => return received,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("stalled client's connection still open after {DEADLINE:?}")
            }
            Err(_) => return received, // reset: also closed
        }
    }
}

/// Waits until every healthy receiver has counted `sent` messages. Polls tightly (this runs
/// once per batch, thousands of times), with the usual deadline.
fn wait_until_caught_up(progress: &[Arc<AtomicUsize>], sent: usize) {
    let deadline = Instant::now() + DEADLINE;
    while !progress.iter().all(|p| p.load(Ordering::SeqCst) == sent) {
        assert!(
            Instant::now() < deadline,
            "healthy receivers did not get {sent} messages within {DEADLINE:?}"
        );
        thread::sleep(Duration::from_micros(100));
    }
}

#[test]
fn stalled_client_is_dropped_while_healthy_receivers_get_everything() {
    // The smallest SendQ makes the server give up on a non-reading client soon after the
    // kernel's socket buffers for it are full.
    let server = Server::start_with(&["--sendq", "4096"]);
    let mut alice = server.sign_in("alice", "pw-a");
    let stalled = server.sign_in("carl", "pw-c");
    let mut bob = server.sign_in("bob", "pw-b");
    let dave = server.sign_in("dave", "pw-d");
    alice.expect("* dave joined.");
    bob.expect("* dave joined.");

    let progress: Vec<Arc<AtomicUsize>> = (0..2).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let readers = vec![
        spawn_in_order_reader(bob, Arc::clone(&progress[0])),
        spawn_in_order_reader(dave, Arc::clone(&progress[1])),
    ];

    // ~200-byte messages in batches. Each batch waits for the healthy receivers, so only
    // the stalled client falls behind. Keep going until the server drops it: at least
    // 5,000 messages (1 MB), at most 250,000 (50 MB, far beyond any loopback buffering; about 4 MB
    // was needed when measured).
    const BATCH: usize = 15;
    const MIN_MESSAGES: usize = 5_000;
    const MAX_MESSAGES: usize = 250_000;
    let padding = "p".repeat(186);
    let mut sent = 0;
    let mut dropped_at = None;
    while sent < MAX_MESSAGES {
        let mut batch = String::new();
        for i in sent..sent + BATCH {
            batch.push_str(&format!("{i:06} {padding}\n"));
        }
        alice.send_raw(batch.as_bytes());
        sent += BATCH;
        wait_until_caught_up(&progress, sent);
        if dropped_at.is_none() && server.log().contains("sendq_exceeded") {
            dropped_at = Some(sent);
            eprintln!("stalled client dropped after {sent} messages");
        }
        if dropped_at.is_some() && sent >= MIN_MESSAGES {
            break;
        }
    }
    // Once everyone has heard carl leave, one more batch, then the end marker.
    alice.expect("* carl left.");
    for i in sent..sent + BATCH {
        alice.send(&format!("{i:06} after the drop"));
    }
    sent += BATCH;
    alice.send("end");
    for reader in readers {
        let (got, notices) = reader.join().expect("reader thread");
        assert_eq!(got, sent, "a healthy receiver missed messages");
        assert_eq!(notices, ["* carl left."]);
    }
    assert!(
        dropped_at.is_some(),
        "stalled client not dropped after {sent} messages"
    );
    let log = server.expect_log("sendq_exceeded user=carl");
    assert!(
        !log.contains("sendq_exceeded user=bob") && !log.contains("sendq_exceeded user=dave"),
        "a healthy receiver was dropped:\n{log}"
    );
    // The server closed the stalled socket: after what the kernel had buffered comes EOF
    // (or a reset), and nothing sent after the drop ever reached it.
    let mut stalled = stalled;
    let received = drain_until_closed(&mut stalled);
    let text = String::from_utf8_lossy(&received);
    assert!(
        !text.contains("after the drop") && !text.contains("alice: end"),
        "the stalled client got messages sent after it was dropped"
    );
}
