//! The operator's log, read the way an operator (or a log shipper) would: every line is
//! `TIMESTAMP LEVEL event key=value...`, the events carry the fields that make them useful,
//! chat text stays out unless `--log-messages` asks for it, and `--log-level` filters.
//!
//! The line format is checked by a small hand-written parser ([`parse`]), not a regex crate:
//! the only dev-dependency is `assert_cmd`.

mod common;

use common::{Client, Server};

/// One parsed log line. Quoted values are kept as written (with their quotes).
#[derive(Debug)]
struct LogLine {
    level: String,
    event: String,
    fields: Vec<(String, String)>,
}

impl LogLine {
    fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (ERROR|WARN|INFO|DEBUG) [a-z_]+( key=value)*$`,
/// where a value is either plain (non-empty, no space, `"` or `=`) or a quoted string with
/// backslash escapes. Returns why the line does not match.
fn parse(line: &str) -> Result<LogLine, String> {
    let (time, rest) = line.split_once(' ').ok_or("no space after the timestamp")?;
    check_timestamp(time)?;
    let (level, rest) = rest.split_once(' ').ok_or("no space after the level")?;
    if !["ERROR", "WARN", "INFO", "DEBUG"].contains(&level) {
        return Err(format!("unknown level {level:?}"));
    }
    let (event, mut rest) = rest.split_once(' ').unwrap_or((rest, ""));
    if !is_name(event) {
        return Err(format!("bad event name {event:?}"));
    }
    let mut fields = Vec::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').ok_or("field without '='")?;
        if !is_name(key) {
            return Err(format!("bad field name {key:?}"));
        }
        let (value, after) = split_value(after)?;
        fields.push((key.to_string(), value.to_string()));
        rest = match after.strip_prefix(' ') {
            Some(next) if !next.is_empty() => next,
            Some(_) => return Err("trailing space".into()),
            None if after.is_empty() => after,
            None => return Err(format!("junk after value {value:?}")),
        };
    }
    Ok(LogLine {
        level: level.to_string(),
        event: event.to_string(),
        fields,
    })
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, digit by digit.
fn check_timestamp(time: &str) -> Result<(), String> {
    const SHAPE: &str = "dddd-dd-ddTdd:dd:dd.dddZ";
    let ok = time.len() == SHAPE.len()
        && time.chars().zip(SHAPE.chars()).all(|(c, s)| match s {
            'd' => c.is_ascii_digit(),
            _ => c == s,
        });
    if ok {
        Ok(())
    } else {
        Err(format!("bad timestamp {time:?}"))
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c == '_')
}

/// Splits one value off the front of `s`: a quoted string up to its closing quote, or a
/// plain word up to the next space.
fn split_value(s: &str) -> Result<(&str, &str), String> {
    if s.starts_with('"') {
        let mut escaped = false;
        for (i, c) in s.char_indices().skip(1) {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => return Ok((&s[..=i], &s[i + 1..])),
                c if c.is_control() => return Err("raw control character in value".into()),
                _ => {}
            }
        }
        return Err(format!("unterminated quoted value {s:?}"));
    }
    let end = s.find(' ').unwrap_or(s.len());
    let value = &s[..end];
    if value.is_empty() || value.contains(['"', '=']) {
        return Err(format!("bad plain value {value:?}"));
    }
    Ok((value, &s[end..]))
}

/// Parses every line of a log, failing the test on the first malformed one.
fn parse_all(log: &str) -> Vec<LogLine> {
    log.lines()
        .map(|line| parse(line).unwrap_or_else(|why| panic!("malformed log line {line:?}: {why}")))
        .collect()
}

fn local_peer(client: &Client) -> String {
    client.stream.local_addr().expect("local addr").to_string()
}

/// Finds the one event `event` whose `peer` is `peer`.
fn event_for<'a>(lines: &'a [LogLine], event: &str, peer: &str) -> &'a LogLine {
    lines
        .iter()
        .find(|l| l.event == event && l.field("peer") == Some(peer))
        .unwrap_or_else(|| panic!("no {event} line for peer {peer}; log: {lines:#?}"))
}

#[test]
fn parser_accepts_the_format_and_rejects_near_misses() {
    let good = [
        "2026-11-24T19:11:45.259Z INFO start",
        "2026-11-24T19:11:45.259Z INFO sign_up peer=127.0.0.1:36948 user=alice",
        "2026-11-24T19:11:45.259Z WARN note reason=\"two words\" empty=\"\" esc=\"a\\\"b\"",
    ];
    for line in good {
        assert!(
            parse(line).is_ok(),
            "{line:?} should parse: {:?}",
            parse(line)
        );
    }
    let bad = [
        "2026-11-24 19:11:45.259Z INFO start",
        "2026-11-24T19:11:45Z INFO start",
        "2026-11-24T19:11:45.259Z info start",
        "2026-11-24T19:11:45.259Z INFO Start",
        "2026-11-24T19:11:45.259Z INFO start peer",
        "2026-11-24T19:11:45.259Z INFO start peer=",
        "2026-11-24T19:11:45.259Z INFO start peer=a b",
        "2026-11-24T19:11:45.259Z INFO start reason=\"open",
        "2026-11-24T19:11:45.259Z INFO start user=alice ",
    ];
    for line in bad {
        assert!(parse(line).is_err(), "{line:?} should be rejected");
    }
}

/// Sign-up, a message, a failed sign-in and two disconnects: every line well formed, each
/// event with its fields, and no chat text anywhere.
#[test]
fn events_carry_their_fields_and_no_chat_text_by_default() {
    let server = Server::start();
    let [mut alice, mut bob] = server.sign_in_all([("alice", "pw-a"), ("bob", "pw-b")]);
    alice.send("public secret 7d1f");
    bob.expect("alice: public secret 7d1f");
    alice.send("~->bob: private secret 93ac");
    bob.expect("[private] alice: private secret 93ac");

    let mut intruder = server.connect();
    intruder.send("alice");
    intruder.send("not-her-password");
    intruder.expect_containing("! Wrong password");
    intruder.shutdown();
    alice.send("~:q!:");
    alice.expect("* Goodbye, alice.");
    alice.expect_closed();
    let (alice_peer, bob_peer, intruder_peer) =
        (local_peer(&alice), local_peer(&bob), local_peer(&intruder));

    server.expect_log(&format!("disconnect peer={alice_peer} reason=quit"));
    let log = server.expect_log(&format!("disconnect peer={intruder_peer} reason="));
    let lines = parse_all(&log);

    let start = lines
        .iter()
        .find(|l| l.event == "start")
        .expect("start line");
    for key in [
        "addr",
        "data_dir",
        "max_clients",
        "max_per_ip",
        "rate",
        "sendq",
    ] {
        assert!(
            start.field(key).is_some(),
            "start line lacks {key}: {start:?}"
        );
    }
    assert!(
        start
            .field("addr")
            .is_some_and(|a| a.ends_with(&format!(":{}", server.port))),
        "start addr names the port: {start:?}"
    );

    // (event, level, peer, fields it must carry besides the peer)
    type Row<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)]);
    let rows: [Row; 7] = [
        ("connect", "INFO", &alice_peer, &[]),
        ("sign_up", "INFO", &alice_peer, &[("user", "alice")]),
        ("sign_in", "INFO", &alice_peer, &[("user", "alice")]),
        ("sign_up", "INFO", &bob_peer, &[("user", "bob")]),
        (
            "sign_in_failed",
            "WARN",
            &intruder_peer,
            &[("user", "alice")],
        ),
        ("disconnect", "INFO", &alice_peer, &[("reason", "quit")]),
        ("connect", "INFO", &intruder_peer, &[]),
    ];
    for (event, level, peer, fields) in rows {
        let line = event_for(&lines, event, peer);
        assert_eq!(line.level, level, "{line:?}");
        for (key, value) in fields {
            assert_eq!(
                line.field(key),
                Some(*value),
                "{event} for {peer}: {line:?}"
            );
        }
    }
    let intruder_gone = event_for(&lines, "disconnect", &intruder_peer);
    assert!(intruder_gone.field("reason").is_some(), "{intruder_gone:?}");

    for secret in ["7d1f", "93ac", "not-her-password", "pw-a", "pw-b"] {
        assert!(
            !log.contains(secret),
            "{secret:?} leaked into the log:\n{log}"
        );
    }
}

#[test]
fn log_messages_flag_records_chat_text() {
    let server = Server::start_with(&["--log-messages"]);
    let [mut alice, mut bob] = server.sign_in_all([("alice", "pw-a"), ("bob", "pw-b")]);
    alice.send("public words 5e2b");
    bob.expect("alice: public words 5e2b");
    alice.send("~->bob: private words 0c4a");
    bob.expect("[private] alice: private words 0c4a");

    server.expect_log("5e2b");
    let log = server.expect_log("0c4a");
    let lines = parse_all(&log);
    let texts: Vec<&LogLine> = lines.iter().filter(|l| l.event == "message").collect();
    for (needle, line) in ["5e2b", "0c4a"].iter().zip(&texts) {
        assert_eq!(line.field("from"), Some("alice"), "{line:?}");
        assert!(
            line.field("text").is_some_and(|t| t.contains(needle)),
            "{line:?}"
        );
    }
    assert_eq!(texts.len(), 2, "one message line per chat line: {texts:#?}");
    assert!(!log.contains("pw-a"), "passwords are never logged:\n{log}");
}

/// Each level shows its own and more severe lines only. The session makes events at every
/// level: info (connect, sign_up), warn (sign_in_failed), debug (the throttle delay before a
/// second wrong password) and error (a panicking session, debug builds only). The error
/// comes last, so once it is in the log every earlier line has been read too.
#[test]
fn log_level_filters_less_severe_lines() {
    type Row = (
        &'static str,
        &'static [&'static str],
        &'static [&'static str],
    );
    let rows: [Row; 4] = [
        ("error", &["session_panicked"], &["WARN", "INFO", "DEBUG"]),
        (
            "warn",
            &["session_panicked", "sign_in_failed"],
            &["INFO", "DEBUG"],
        ),
        (
            "info",
            &["session_panicked", "sign_in_failed", "sign_up"],
            &["DEBUG"],
        ),
        (
            "debug",
            &["session_panicked", "sign_in_delay", "sign_up"],
            &[],
        ),
    ];
    for (level, shown, hidden) in rows {
        let server = Server::start_with(&["--log-level", level]);
        let mut alice = server.sign_in("alice", "pw-a");
        let mut intruder = server.connect();
        intruder.send("alice");
        for _ in 0..2 {
            intruder.send("wrong");
            intruder.expect_containing("! Wrong password");
        }
        alice.send("~:panic!:");
        alice.expect_closed();
        let log = server.expect_log("session_panicked");
        let lines = parse_all(&log);
        for event in shown {
            assert!(
                lines.iter().any(|l| l.event == *event),
                "--log-level {level} should show {event}:\n{log}"
            );
        }
        for hidden_level in hidden {
            assert!(
                lines.iter().all(|l| l.level != *hidden_level),
                "--log-level {level} should hide {hidden_level} lines:\n{log}"
            );
        }
    }
}
