//! What reaches other users' terminals: the cleaning of every untrusted client line.
//!
//! This module owns [`clean_line`], which turns the raw bytes of one line into text that is
//! safe to show on anyone's terminal and means what the person typed: telnet commands,
//! terminal escape sequences and control bytes are dropped, invalid UTF-8 is replaced. It
//! must not frame lines (that is `line_reader.rs`), interpret them (`protocol.rs`), know
//! telnet's syntax (`telnet.rs`), do I/O or keep state, so every rule here can be tested
//! with a table of `(input, expected)` rows.

use std::borrow::Cow;

use crate::telnet;

/// Turns the raw bytes of one client line into the text the person meant, safe to show on
/// anyone's terminal. Every line goes through it: names and passwords too.
///
/// The steps, in this order because each works on what the one before left:
///
/// 1. Telnet commands are dropped ([`telnet::strip`]): telnet sends them for Ctrl-C, say,
///    and they would otherwise prefix the next line. This works on bytes, before UTF-8
///    decoding, because a telnet command starts with byte 0xFF, which is not UTF-8. (A TCP
///    client's commands were taken out, and answered, as they arrived: see
///    `telnet::Filter`. This step is for lines that come where no answer can go, a UDP
///    datagram say. On a TCP line the only 0xFF left is a data byte, never part of UTF-8
///    text, which this step drops or keeps to be replaced like any invalid byte.)
/// 2. Terminal escape sequences are dropped whole, and every other control byte but TAB
///    ([`strip_terminal_controls`]): an arrow key pressed before a command sends `ESC [ A`,
///    and Ctrl-L sends a form feed; neither should turn the command into chat.
/// 3. Invalid UTF-8 becomes U+FFFD; C1 controls (U+0080-U+009F, which some terminals obey
///    like escape sequences) are dropped.
/// 4. Whitespace before a `~` is dropped, so a command typed after a stray space or tab is
///    still a command. Other lines keep theirs: a pasted block of code keeps its indentation,
///    and a password its leading spaces.
///
/// No control character but TAB survives, so no client can send escape sequences, bells or
/// carriage returns to another user's terminal.
pub fn clean_line(bytes: &[u8]) -> String {
    // Most lines need no change: copy them whole rather than char by char.
    if let Ok(text) = std::str::from_utf8(bytes)
        && !text.chars().any(is_forbidden_char)
    {
        return command_start(text).to_owned();
    }
    let bytes = telnet::strip(bytes);
    let bytes = strip_terminal_controls(&bytes);
    let text: String = String::from_utf8_lossy(&bytes)
        .chars()
        .filter(|&c| !is_forbidden_char(c))
        .collect();
    match command_start(&text) {
        start if start.len() == text.len() => text,
        start => start.to_owned(),
    }
}

/// `text` without the whitespace before a leading `~`; any other line unchanged.
fn command_start(text: &str) -> &str {
    let trimmed = text.trim_start();
    if trimmed.starts_with('~') {
        trimmed
    } else {
        text
    }
}

const ESC: u8 = 0x1B;
const BEL: u8 = 0x07;

/// Drops terminal escape sequences whole, and every other C0 control byte and DEL; keeps
/// TAB. The sequences are those keys and terminals send (ECMA-48):
///
/// - CSI, `ESC [` parameters, intermediates and a final byte: arrows (`ESC [ A`), function
///   keys (`ESC [ 1 5 ~`); also the Linux console's `ESC [ [ A` for F1;
/// - SS3 and SS2, `ESC O` or `ESC N` and one character: arrows in application mode
///   (`ESC O A`), F1 (`ESC O P`);
/// - OSC, DCS, SOS, PM and APC, `ESC ]`, `ESC P`, `ESC X`, `ESC ^` or `ESC _`, up to a BEL or
///   `ESC \`: a window title (`ESC ] 0;title BEL`);
/// - two-byte sequences such as `ESC 7` or Alt+x (`ESC x`), with any intermediates
///   (`ESC ( B`).
///
/// A sequence cut short by the end of the line is dropped as far as it goes; an ESC that
/// starts none of these is dropped alone.
pub fn strip_terminal_controls(bytes: &[u8]) -> Cow<'_, [u8]> {
    if !bytes.iter().any(|&b| is_control_byte(b)) {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            ESC => i += escape_len(&bytes[i..]),
            b if is_control_byte(b) => i += 1,
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

/// A C0 control byte other than TAB, or DEL.
fn is_control_byte(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7F
}

/// The length of the escape sequence at the start of `rest`, which begins with ESC.
fn escape_len(rest: &[u8]) -> usize {
    let len = match rest.get(1) {
        Some(b'[') => csi_len(rest),
        Some(b']' | b'P' | b'X' | b'^' | b'_') => string_sequence_len(rest),
        Some(b'O' | b'N') if rest.get(2).is_some_and(|b| (0x20..=0x7E).contains(b)) => 3,
        Some(0x20..=0x2F) => {
            let intermediates = rest[1..].iter().take_while(|b| (0x20..=0x2F).contains(*b));
            let end = 1 + intermediates.count();
            end + usize::from(rest.get(end).is_some_and(|b| (0x30..=0x7E).contains(b)))
        }
        Some(0x30..=0x7E) => 2,
        _ => 1,
    };
    len.min(rest.len())
}

/// `ESC [`, parameter bytes (0x30-0x3F), intermediate bytes (0x20-0x2F), a final byte
/// (0x40-0x7E).
fn csi_len(rest: &[u8]) -> usize {
    if rest.get(2) == Some(&b'[') {
        // The Linux console's F1-F5: `ESC [ [ A` to `ESC [ [ E`.
        return 3 + usize::from(rest.get(3).is_some_and(|b| (0x40..=0x7E).contains(b)));
    }
    let mut i = 2;
    while rest.get(i).is_some_and(|b| (0x30..=0x3F).contains(b)) {
        i += 1;
    }
    while rest.get(i).is_some_and(|b| (0x20..=0x2F).contains(b)) {
        i += 1;
    }
    i + usize::from(rest.get(i).is_some_and(|b| (0x40..=0x7E).contains(b)))
}

/// An OSC or other string sequence: through its BEL or `ESC \`, or to the end of the line.
fn string_sequence_len(rest: &[u8]) -> usize {
    let mut i = 2;
    while i < rest.len() {
        match rest[i] {
            BEL => return i + 1,
            ESC if rest.get(i + 1) == Some(&b'\\') => return i + 2,
            _ => i += 1,
        }
    }
    rest.len()
}

/// True for characters that must never reach another user's terminal.
pub fn is_forbidden_char(c: char) -> bool {
    c != '\t' && c.is_control()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_line_table() {
        let rows: Vec<(&[u8], &str)> = vec![
            (b"plain", "plain"),
            (b"", ""),
            (b"tab\tkept", "tab\tkept"),
            ("caf\u{e9} \u{1F600}".as_bytes(), "caf\u{e9} \u{1F600}"),
            // Control bytes are dropped, not shown.
            (b"bell\x07", "bell"),
            (b"nul\x00", "nul"),
            (b"cr\rx", "crx"),
            (b"del\x7f", "del"),
            (b"\x0c~:q!:", "~:q!:"),
            (b"back\x08\x08space", "backspace"),
            // C1 controls too, in UTF-8; the same bytes alone are not UTF-8.
            (b"c1 \xc2\x9b31m", "c1 31m"),
            (b"c1 \xc2\x85next", "c1 next"),
            (b"raw \x9b31m", "raw \u{FFFD}31m"),
            (b"bad \xfe utf8", "bad \u{FFFD} utf8"),
            (b"cut \xe2\x82", "cut \u{FFFD}"),
            // Escape sequences go whole: CSI...
            (b"\x1b[31mred\x1b[0m", "red"),
            (b"\x1b[A~->bobby: x", "~->bobby: x"),
            (b"\x1b[1;5D\x1b[15~\x1b[?25lword", "word"),
            (b"\x1b[[A~:h:", "~:h:"),
            (b"cut \x1b[12", "cut "),
            (b"bad \x1b[1\x07x", "bad x"),
            // ...SS3 and two-byte sequences...
            (b"\x1bOA\x1bOP~:lu:", "~:lu:"),
            (b"\x1bx\x1b7\x1b(Bok", "ok"),
            (b"\x1b\x1b[Aalt-arrow", "alt-arrow"),
            (b"\x1b", ""),
            (b"\x1b\xc3\xa9", "\u{e9}"),
            // ...OSC and other string sequences, to BEL or ESC \, or the line's end.
            (b"\x1b]0;title\x07~->bobby: x", "~->bobby: x"),
            (b"\x1b]0;title\x1b\\after", "after"),
            (b"\x1bP1$r\x1b\\dcs", "dcs"),
            (b"before\x1b]0;never ends", "before"),
            // Telnet commands go whole (RFC 854): Ctrl-C in telnet, option offers, SB.
            (b"\xff\xf4\xff\xfd\x06hello", "hello"),
            (b"\xff\xf4\xff\xfd\x06~->bobby: x", "~->bobby: x"),
            (b"\xff\xfb\x1f\xff\xfb\x18\xff\xfd\x03name", "name"),
            (b"\xff\xfa\x1f\x00\x50\x00\x18\xff\xf0x", "x"),
            (b"\xff\xfa\x18\x00xterm\xff\xff\xff\xf0y", "y"),
            (b"\xff\xfa\x18 cut", ""),
            (b"x\xff\xf1y", "xy"),
            (b"cut \xff\xfd", "cut "),
            // IAC IAC is a data byte 0xFF; an IAC before data is not telnet. Neither is UTF-8.
            (b"\xff\xffy", "\u{FFFD}y"),
            (b"\xff\xff\xfb\x01", "\u{FFFD}\u{FFFD}"),
            (b"x\xffy", "x\u{FFFD}y"),
            (b"x\xff", "x\u{FFFD}"),
            // Telnet goes first: an escape sequence split by a telnet command is still one.
            (b"\x1b\xff\xf1[A~:h:", "~:h:"),
            // Whitespace before a `~` goes; any other line keeps its own.
            (b" ~->bobby: x", "~->bobby: x"),
            (b"\t~->bobby: x", "~->bobby: x"),
            (b" \t \x1b[A ~:q!:", "~:q!:"),
            ("\u{3000}~:lu:".as_bytes(), "~:lu:"),
            (b"    indented code", "    indented code"),
            (b"\tfn main() {}", "\tfn main() {}"),
            (b"  two ~ later", "  two ~ later"),
            (b"   ", "   "),
        ];
        for (input, expected) in rows {
            assert_eq!(clean_line(input), expected, "input {input:?}");
        }
    }
}
