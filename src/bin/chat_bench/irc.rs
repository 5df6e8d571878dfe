//! The little of IRC (RFC 2812) the bench speaks: what a client sends to sign in and to talk
//! in `#chat`, and how the lines a server relays are taken apart.
//!
//! Pure functions on byte slices, no I/O. The bench parses every line it receives, so these
//! make no copies and no allocation except for the rare line that needs an answer (PING).

/// The one channel every bench client joins.
pub const CHANNEL: &str = "#chat";

/// What a client sends to sign in as `nick` and join [`CHANNEL`]. It counts as signed in
/// once the server ends the channel's NAMES list (see [`ends_join`]).
pub fn sign_in(nick: &str) -> String {
    format!("NICK {nick}\r\nUSER {nick} 0 * :{nick}\r\nJOIN {CHANNEL}\r\n")
}

/// `text` said in [`CHANNEL`].
pub fn privmsg(text: &str) -> String {
    format!("PRIVMSG {CHANNEL} :{text}\r\n")
}

/// An IRC line (without its CR LF) taken apart: `[:prefix ]COMMAND[ params]`.
#[derive(Debug, PartialEq, Eq)]
pub struct Line<'a> {
    pub prefix: &'a [u8],
    pub command: &'a [u8],
    pub params: &'a [u8],
}

pub fn split(line: &[u8]) -> Line<'_> {
    let (prefix, rest) = match line.strip_prefix(b":") {
        Some(tagged) => cut(tagged),
        None => (&b""[..], line),
    };
    let (command, params) = cut(rest);
    Line {
        prefix,
        command,
        params,
    }
}

/// `a b c` -> (`a`, `b c`).
fn cut(bytes: &[u8]) -> (&[u8], &[u8]) {
    match bytes.iter().position(|&b| b == b' ') {
        Some(at) => (&bytes[..at], &bytes[at + 1..]),
        None => (bytes, &b""[..]),
    }
}

/// The text of a `PRIVMSG #chat :text` line, or None for any other line.
pub fn privmsg_text(line: &[u8]) -> Option<&[u8]> {
    let line = split(line);
    if line.command != b"PRIVMSG" {
        return None;
    }
    let (target, text) = cut(line.params);
    if target != CHANNEL.as_bytes() {
        return None;
    }
    text.strip_prefix(b":")
}

/// Whether the line is the server's `366` (end of NAMES) for [`CHANNEL`], which a server
/// sends once the JOIN took effect: from then on the client receives what is said there.
pub fn ends_join(line: &[u8]) -> bool {
    let line = split(line);
    line.command == b"366" && {
        let (_me, rest) = cut(line.params);
        cut(rest).0 == CHANNEL.as_bytes()
    }
}

/// Whether the line reports an error: `ERROR` (the server closes the link) or a numeric
/// reply from 400 to 599 (a refused command: nickname in use, cannot send, channel full).
pub fn is_error(line: &[u8]) -> bool {
    let command = split(line).command;
    command == b"ERROR"
        || (command.len() == 3
            && command.iter().all(u8::is_ascii_digit)
            && (b'4'..=b'5').contains(&command[0]))
}

/// The answer to a `PING`: `PONG` with the same parameters (a server disconnects a client
/// that does not answer).
pub fn pong(line: &[u8]) -> Option<String> {
    let line = split(line);
    (line.command == b"PING").then(|| format!("PONG {}\r\n", String::from_utf8_lossy(line.params)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_into_prefix_command_and_params() {
        type Parts = (&'static [u8], &'static [u8], &'static [u8]);
        // line -> (prefix, command, params)
        let rows: [(&[u8], Parts); 5] = [
            (
                b":b1!~b1@127.0.0.1 PRIVMSG #chat :hi there",
                (b"b1!~b1@127.0.0.1", b"PRIVMSG", b"#chat :hi there"),
            ),
            (b"PING :srv", (b"", b"PING", b":srv")),
            (b"ERROR", (b"", b"ERROR", b"")),
            (b":srv 001 b1 :Welcome", (b"srv", b"001", b"b1 :Welcome")),
            (b"", (b"", b"", b"")),
        ];
        for (line, (prefix, command, params)) in rows {
            let expected = Line {
                prefix,
                command,
                params,
            };
            assert_eq!(split(line), expected, "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn only_what_is_said_in_the_channel_is_a_message() {
        let rows: [(&[u8], Option<&[u8]>); 7] = [
            (b":b1!~b1@h PRIVMSG #chat :#m 1 2 3 x", Some(b"#m 1 2 3 x")),
            (b":b1!~b1@h PRIVMSG #chat :", Some(b"")),
            (b":b1!~b1@h PRIVMSG #other :#m 1 2 3", None),
            (b":b1!~b1@h PRIVMSG b2 :#m 1 2 3", None),
            (b":b1!~b1@h NOTICE #chat :#m 1 2 3", None),
            (b":b1!~b1@h JOIN :#chat", None),
            (b":b1!~b1@h PRIVMSG #chat #m", None),
        ];
        for (line, text) in rows {
            assert_eq!(
                privmsg_text(line),
                text,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn a_join_is_confirmed_by_the_end_of_the_channels_names() {
        let rows: [(&[u8], bool); 5] = [
            (b":srv 366 b1 #chat :End of NAMES list", true),
            (b":srv 366 b1 #other :End of NAMES list", false),
            (b":srv 353 b1 = #chat :@b1", false),
            (b":b1!~b1@h JOIN :#chat", false),
            (b":b1!~b1@h PRIVMSG #chat :366 b1 #chat", false),
        ];
        for (line, ends) in rows {
            assert_eq!(ends_join(line), ends, "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn errors_are_error_lines_and_numerics_400_to_599() {
        let rows: [(&[u8], bool); 7] = [
            (b"ERROR :Closing connection", true),
            (b":srv 433 * b1 :Nickname already in use", true),
            (b":srv 404 b1 #chat :Cannot send to channel", true),
            (b":srv 366 b1 #chat :End of NAMES list", false),
            (b":srv 600 b1 :x", false),
            (b":b1!~b1@h PRIVMSG #chat :ERROR", false),
            (b":srv 40 b1 :x", false),
        ];
        for (line, error) in rows {
            assert_eq!(is_error(line), error, "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn pings_are_answered_with_the_same_token_and_nothing_else_is() {
        let rows: [(&[u8], Option<&str>); 3] = [
            (
                b"PING :bench.chat.invalid",
                Some("PONG :bench.chat.invalid\r\n"),
            ),
            (b":srv PING :tok", Some("PONG :tok\r\n")),
            (b":b1!~b1@h PRIVMSG #chat :PING", None),
        ];
        for (line, answer) in rows {
            assert_eq!(
                pong(line).as_deref(),
                answer,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn a_client_signs_in_joins_and_talks_in_crlf_lines() {
        assert_eq!(
            sign_in("b7"),
            "NICK b7\r\nUSER b7 0 * :b7\r\nJOIN #chat\r\n"
        );
        assert_eq!(privmsg("#m 1 2 3"), "PRIVMSG #chat :#m 1 2 3\r\n");
    }
}
