//! What goes over the wire: the benchmark message, and how a client of each server kind
//! signs in, talks, and recognises what it hears.
//!
//! Every chat message the bench sends carries a marker, its sender, a sequence number and the
//! time it was scheduled (`#m SENDER SEQ MICROS xxx...`, 64 bytes), so each receiver can
//! check order and count loss and duplicates per sender, and measure latency from the
//! *scheduled* send time. ptchat relays it as `b7: #m ...`, ncat as `<user7> #m ...`,
//! ngircd as `:b7!~b7@127.0.0.1 PRIVMSG #chat :#m ...`. Pure functions, no I/O.

use crate::irc;
use crate::servers::Kind;

/// Length of every benchmark chat message, without the line ending and any protocol
/// framing around it.
pub const MESSAGE_BYTES: usize = 64;

/// One benchmark message, exactly [`MESSAGE_BYTES`] long, without a line ending.
pub fn message(sender: usize, seq: u64, scheduled_us: u64) -> String {
    let mut text = format!("#m {sender} {seq} {scheduled_us} ");
    while text.len() < MESSAGE_BYTES {
        text.push('x');
    }
    text
}

impl Kind {
    /// What client `id` sends right after connecting (ncat has no sign-in).
    pub fn sign_in(self, id: usize) -> String {
        match self {
            Kind::Ptchat => format!("b{id}\npw{id}\n"),
            Kind::Ncat => String::new(),
            Kind::Ngircd => irc::sign_in(&format!("b{id}")),
        }
    }

    /// The line that says `message` in the room.
    pub fn chat_line(self, message: &str) -> String {
        match self {
            Kind::Ptchat | Kind::Ncat => format!("{message}\n"),
            Kind::Ngircd => irc::privmsg(message),
        }
    }

    /// Whether `line` tells a client that it is signed in and in the room: ptchat's
    /// welcome, ncat's greeting, or the end of NAMES that confirms an IRC JOIN.
    pub fn signed_in_by(self, line: &[u8]) -> bool {
        match self {
            Kind::Ptchat => line.starts_with(b"* Welcome, "),
            Kind::Ncat => line.starts_with(b"<announce> already"),
            Kind::Ngircd => irc::ends_join(line),
        }
    }

    pub fn is_error(self, line: &[u8]) -> bool {
        match self {
            Kind::Ptchat | Kind::Ncat => line.starts_with(b"! "),
            Kind::Ngircd => irc::is_error(line),
        }
    }

    /// The message inside a relayed line, or None for lines that relay none. Bench names
    /// have no `#`, so in ptchat's and ncat's lines the first one starts the message.
    pub fn message_in(self, line: &[u8]) -> Option<&[u8]> {
        match self {
            Kind::Ptchat | Kind::Ncat => {
                let at = line.iter().position(|&b| b == b'#')?;
                Some(&line[at..])
            }
            Kind::Ngircd => irc::privmsg_text(line),
        }
    }

    /// What a client must answer to `line`, if anything (an IRC PING).
    pub fn answer_to(self, line: &[u8]) -> Option<String> {
        match self {
            Kind::Ptchat | Kind::Ncat => None,
            Kind::Ngircd => irc::pong(line),
        }
    }

    /// Sign-ins one shard keeps in flight at once, so the server's accept backlog never
    /// overflows (an overflowing backlog drops SYNs, and the client then waits a second to
    /// retry). ngircd's backlog is 10, fixed in its source; the others take 128 or more.
    pub fn sign_in_window(self, shards: usize) -> usize {
        match self {
            Kind::Ptchat | Kind::Ncat => 32,
            Kind::Ngircd => (8 / shards).max(2),
        }
    }
}

/// Parses `#m SENDER SEQ MICROS ...` (a message found by [`Kind::message_in`]).
pub fn parse_message(text: &[u8]) -> Option<(usize, u64, u64)> {
    let mut rest = text.strip_prefix(b"#m ")?;
    let sender = usize::try_from(take_decimal(&mut rest)?).ok()?;
    let seq = take_decimal(&mut rest)?;
    let scheduled = take_decimal(&mut rest)?;
    Some((sender, seq, scheduled))
}

/// The run of ASCII digits that starts `rest`, up to a space or the end, as a number (`None`
/// if empty, not digits, or too large); `rest` is left after the space. One pass, without
/// the UTF-8 check and searches of `str::parse`: the bench parses every line it receives.
fn take_decimal(rest: &mut &[u8]) -> Option<u64> {
    let mut n: u64 = 0;
    let mut len = 0;
    for &b in rest.iter().take_while(|&&b| b != b' ') {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        n = n.checked_mul(10)?.checked_add(u64::from(digit))?;
        len += 1;
    }
    if len == 0 {
        return None;
    }
    *rest = rest.get(len + 1..).unwrap_or_default();
    Some(n)
}

/// Where the first `\n` in `bytes` is, eight bytes at a time: a word with no newline byte
/// is skipped with one test (the "has a zero byte" trick on the word XOR newlines).
pub fn find_newline(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const NEWLINES: u64 = u64::from_ne_bytes([b'\n'; 8]);
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for word in &mut words {
        let x = u64::from_ne_bytes(<[u8; 8]>::try_from(word).unwrap_or_default()) ^ NEWLINES;
        if x.wrapping_sub(ONES) & !x & HIGHS != 0 {
            return word.iter().position(|&b| b == b'\n').map(|i| at + i);
        }
        at += 8;
    }
    let tail = words.remainder().iter().position(|&b| b == b'\n');
    tail.map(|i| at + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_64_bytes_and_parse_back_from_every_servers_relay() {
        let text = message(7, 42, 123_456);
        assert_eq!(text.len(), MESSAGE_BYTES);
        // (kind, line as the server relays it)
        let relayed = [
            (Kind::Ptchat, format!("b7: {text}")),
            (Kind::Ncat, format!("<user7> {text}")),
            (
                Kind::Ngircd,
                format!(":b7!~b7@127.0.0.1 PRIVMSG #chat :{text}"),
            ),
        ];
        for (kind, line) in relayed {
            let found = kind.message_in(line.as_bytes()).and_then(parse_message);
            assert_eq!(found, Some((7, 42, 123_456)), "{line}");
        }
    }

    #[test]
    fn only_well_formed_markers_parse() {
        type Parsed = Option<(usize, u64, u64)>;
        let rows: [(&[u8], Parsed); 7] = [
            (b"#m 1 2 3", Some((1, 2, 3))),
            (b"#m 1 2 3 xxxx", Some((1, 2, 3))),
            (b"#m 1 2x 3 xx", None),
            (b"#m 1  3 xx", None),
            (b"#m 1 2", None),
            (b"#m 1 99999999999999999999 3 x", None),
            (b"#chat :#m 1 2 3", None),
        ];
        for (text, expected) in rows {
            assert_eq!(
                parse_message(text),
                expected,
                "{}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn lines_without_a_message_carry_none() {
        let rows: [(Kind, &[u8]); 4] = [
            (Kind::Ptchat, b"* b1 joined."),
            (Kind::Ncat, b"<announce> 127.0.0.1 is connected as <user5>."),
            (Kind::Ngircd, b":b1!~b1@127.0.0.1 JOIN :#chat"),
            (Kind::Ngircd, b":srv 353 b1 = #chat :@b1 b2"),
        ];
        for (kind, line) in rows {
            let found = kind.message_in(line).and_then(parse_message);
            assert_eq!(found, None, "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn each_kind_says_a_message_in_its_own_framing() {
        let rows = [
            (Kind::Ptchat, "#m 1 2 3\n"),
            (Kind::Ncat, "#m 1 2 3\n"),
            (Kind::Ngircd, "PRIVMSG #chat :#m 1 2 3\r\n"),
        ];
        for (kind, line) in rows {
            assert_eq!(kind.chat_line("#m 1 2 3"), line, "{kind:?}");
        }
    }

    #[test]
    fn newlines_are_found_wherever_they_are() {
        for len in 0..40 {
            for at in 0..len {
                let mut bytes = vec![b'x'; len];
                bytes[at] = b'\n';
                if at + 3 < len {
                    bytes[at + 3] = b'\n';
                }
                assert_eq!(find_newline(&bytes), Some(at), "len {len}, newline at {at}");
            }
            assert_eq!(
                find_newline(&vec![0x8a; len]),
                None,
                "len {len}: no newline"
            );
        }
    }
}
