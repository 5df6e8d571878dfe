//! The WebSocket frame format (RFC 6455, section 5): the header, the rules a client frame
//! must keep and the close code for each breach ([`Violation`]), and the frames the server
//! sends.
//!
//! Everything here is a pure function of bytes, so every rule is a table row. This file
//! must not read, buffer or write a stream: the reader of client frames (`WsLines`, in
//! `websocket.rs`) keeps the state these checks are given, and the caller writes the
//! frames. A header's declared length is checked here and never trusted to allocate.

use std::fmt;

use crate::limits::MAX_LINE_BYTES;

/// Normal closure: the client closed, or the server signs the user out.
pub const CLOSE_NORMAL: u16 = 1000;
/// The server is going away (shutting down).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// A frame breaks the protocol.
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// A data type the server does not accept: binary messages.
pub const CLOSE_UNSUPPORTED_DATA: u16 = 1003;
/// A text message or close reason that is not UTF-8.
pub const CLOSE_INVALID_DATA: u16 = 1007;
/// A message that breaks the server's policy (e.g. flooding).
pub const CLOSE_POLICY_VIOLATION: u16 = 1008;
/// A message longer than a chat line may be.
pub const CLOSE_TOO_BIG: u16 = 1009;

/// Longest payload of a control frame (RFC 6455, section 5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// Longest frame header: 2 bytes, 8 of extended length, 4 of mask.
pub const MAX_HEADER_LEN: usize = 14;

// Opcodes (RFC 6455, section 5.2).
pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

// ---- Frames from the server ----

/// One unmasked, unfragmented frame (servers never mask, RFC 6455 section 5.1).
fn encode_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 10);
    frame.push(0x80 | opcode); // FIN set, no reserved bits
    match payload.len() {
        len @ 0..=125 => frame.push(len as u8),
        len @ 126..=0xFFFF => {
            frame.push(126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    frame
}

/// A text message: one server line, without its `\n`.
pub fn text_frame(line: &str) -> Vec<u8> {
    encode_frame(OP_TEXT, line.as_bytes())
}

/// The answer to a ping: the same payload (at most 125 bytes, which the decoder enforces on
/// the ping; a longer one is cut here rather than sent as an illegal frame).
pub fn pong_frame(payload: &[u8]) -> Vec<u8> {
    encode_frame(OP_PONG, &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)])
}

/// A close frame with a status code and a reason, the reason cut (at a character boundary)
/// to fit the 125-byte limit of a control frame.
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode_frame(OP_CLOSE, &payload)
}

/// Frames every complete server line in `lines` (each ending in `\n`) as one text message
/// and appends the frames to `out`. Returns how many bytes of `lines` it used: a last line
/// without `\n` is left for the next call.
pub fn frame_lines(lines: &str, out: &mut Vec<u8>) -> usize {
    let mut used = 0;
    while let Some(newline) = lines[used..].find('\n') {
        out.extend_from_slice(&text_frame(&lines[used..used + newline]));
        used += newline + 1;
    }
    used
}

// ---- Frames from the client ----

/// A frame header as sent, before any check (RFC 6455, section 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    /// RSV1 to RSV3 as the low three bits; no extension is negotiated, so they must be 0.
    pub rsv: u8,
    pub opcode: u8,
    /// The masking key; clients must mask every frame.
    pub mask: Option<[u8; 4]>,
    /// The payload length as declared: never trusted to allocate.
    pub len: u64,
}

/// Parses the frame header at the start of `bytes`. `None` while more bytes are needed;
/// otherwise the header and its length in bytes (2 to 14).
pub fn parse_frame_header(bytes: &[u8]) -> Option<(FrameHeader, usize)> {
    let (&first, &second) = (bytes.first()?, bytes.get(1)?);
    let (len, mut used) = match second & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?])),
            4,
        ),
        127 => {
            let extended: [u8; 8] = bytes.get(2..10)?.try_into().ok()?;
            (u64::from_be_bytes(extended), 10)
        }
        short => (u64::from(short), 2),
    };
    let mask = if second & 0x80 != 0 {
        let key: [u8; 4] = bytes.get(used..used + 4)?.try_into().ok()?;
        used += 4;
        Some(key)
    } else {
        None
    };
    let header = FrameHeader {
        fin: first & 0x80 != 0,
        rsv: (first >> 4) & 0x07,
        opcode: first & 0x0f,
        mask,
        len,
    };
    Some((header, used))
}

/// Why the server closes a WebSocket. `Display` is the close frame's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// A client frame without a mask (RFC 6455, section 5.1).
    Unmasked,
    /// RSV1-3 set, with no extension negotiated (section 5.2).
    ReservedBits,
    /// Opcode 0x3-0x7 or 0xB-0xF (section 5.2).
    ReservedOpcode(u8),
    /// A 64-bit length with its most significant bit set (section 5.2).
    BadLength,
    /// A control frame with more than 125 bytes of payload (section 5.5).
    ControlTooLong,
    /// A control frame without FIN (section 5.5).
    FragmentedControl,
    /// A continuation frame with no message to continue (section 5.4).
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is unfinished (section 5.4).
    UnfinishedMessage,
    /// A binary message: chat is text.
    Binary,
    /// A text message longer than a chat line.
    TooLong,
    /// A text message or close reason that is not UTF-8 (section 8.1).
    InvalidUtf8,
    /// A close frame with a 1-byte payload (section 5.5.1).
    BadClosePayload,
    /// A close frame with a code no endpoint may send (section 7.4).
    BadCloseCode(u16),
}

impl Violation {
    /// The close code the server answers with (RFC 6455, section 7.4.1).
    pub fn close_code(self) -> u16 {
        match self {
            Violation::Binary => CLOSE_UNSUPPORTED_DATA,
            Violation::InvalidUtf8 => CLOSE_INVALID_DATA,
            Violation::TooLong => CLOSE_TOO_BIG,
            _ => CLOSE_PROTOCOL_ERROR,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Unmasked => write!(f, "unmasked client frame"),
            Violation::ReservedBits => write!(f, "reserved bits set"),
            Violation::ReservedOpcode(op) => write!(f, "reserved opcode {op:#x}"),
            Violation::BadLength => write!(f, "invalid payload length"),
            Violation::ControlTooLong => write!(f, "control frame over 125 bytes"),
            Violation::FragmentedControl => write!(f, "fragmented control frame"),
            Violation::UnexpectedContinuation => write!(f, "continuation without a message"),
            Violation::UnfinishedMessage => write!(f, "new message inside a fragmented one"),
            Violation::Binary => write!(f, "binary messages are not accepted"),
            Violation::TooLong => write!(f, "message over {MAX_LINE_BYTES} bytes"),
            Violation::InvalidUtf8 => write!(f, "text is not UTF-8"),
            Violation::BadClosePayload => write!(f, "close payload of one byte"),
            Violation::BadCloseCode(code) => write!(f, "invalid close code {code}"),
        }
    }
}

/// Checks a client frame header given the reader's state: whether a fragmented message is
/// open and how many bytes it already holds. Pure, so each RFC rule is a table row.
pub fn check_frame(
    header: &FrameHeader,
    in_message: bool,
    message_len: usize,
) -> Result<(), Violation> {
    if header.rsv != 0 {
        return Err(Violation::ReservedBits);
    }
    if header.mask.is_none() {
        return Err(Violation::Unmasked);
    }
    if header.len >> 63 != 0 {
        return Err(Violation::BadLength);
    }
    match header.opcode {
        OP_CLOSE | OP_PING | OP_PONG => {
            if !header.fin {
                return Err(Violation::FragmentedControl);
            }
            if header.len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(Violation::ControlTooLong);
            }
        }
        OP_TEXT | OP_BINARY | OP_CONTINUATION => {
            if header.opcode == OP_CONTINUATION && !in_message {
                return Err(Violation::UnexpectedContinuation);
            }
            if header.opcode != OP_CONTINUATION && in_message {
                return Err(Violation::UnfinishedMessage);
            }
            if header.opcode == OP_BINARY {
                return Err(Violation::Binary);
            }
            // Refused on the declared length, before a byte of the payload is buffered.
            if header.len > (MAX_LINE_BYTES - message_len) as u64 {
                return Err(Violation::TooLong);
            }
        }
        reserved => return Err(Violation::ReservedOpcode(reserved)),
    }
    Ok(())
}

/// The code to answer a client's close frame with: its own code echoed, or 1000 for an
/// empty close (which means "no status", 1005, a code that is never sent on the wire).
pub fn close_reply_code(payload: &[u8]) -> Result<u16, Violation> {
    match payload {
        [] => Ok(CLOSE_NORMAL),
        [_] => Err(Violation::BadClosePayload),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            // Codes a peer may send (section 7.4): the defined ones except 1004-1006 and
            // 1015, the IANA-registered 1012-1014, and the application range 3000-4999.
            if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
                return Err(Violation::BadCloseCode(code));
            }
            std::str::from_utf8(reason).map_err(|_| Violation::InvalidUtf8)?;
            Ok(code)
        }
    }
}

/// Ping, pong and close have the high bit of the opcode set (RFC 6455, section 5.5).
pub(super) fn is_control(opcode: u8) -> bool {
    opcode & 0x08 != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_frame_table() {
        // RFC 6455, section 5.7, for the first two; the rest by the length rules of 5.2.
        let rows: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (text_frame("Hello"), b"\x81\x05Hello".to_vec()),
            (pong_frame(b"Hello"), b"\x8a\x05Hello".to_vec()),
            (text_frame(""), b"\x81\x00".to_vec()),
            (close_frame(1000, ""), b"\x88\x02\x03\xe8".to_vec()),
            (close_frame(1002, "bad"), b"\x88\x05\x03\xeabad".to_vec()),
            (
                text_frame(&"a".repeat(126)),
                [b"\x81\x7e\x00\x7e".as_slice(), &[b'a'; 126]].concat(),
            ),
            (
                text_frame(&"a".repeat(65536)),
                [b"\x81\x7f\0\0\0\0\0\x01\0\0".as_slice(), &[b'a'; 65536]].concat(),
            ),
        ];
        for (got, expected) in rows {
            assert_eq!(got, expected);
        }
        assert_eq!(text_frame(&"a".repeat(125))[1], 125);
        assert_eq!(text_frame(&"a".repeat(65535))[1..4], [126, 0xff, 0xff]);
    }

    #[test]
    fn control_frames_are_cut_to_125_bytes() {
        assert_eq!(pong_frame(&[7; 200]).len(), 2 + 125);
        // A reason of two-byte characters is cut at a character boundary.
        let close = close_frame(1000, &"\u{e9}".repeat(100));
        assert_eq!(close[1], 2 + 122);
        assert!(std::str::from_utf8(&close[4..]).is_ok());
    }

    #[test]
    fn frame_lines_table() {
        let rows: Vec<(&str, Vec<&str>, usize)> = vec![
            ("", vec![], 0),
            ("a\n", vec!["a"], 2),
            (
                "* alice joined.\nbob: hi\n",
                vec!["* alice joined.", "bob: hi"],
                24,
            ),
            ("\n", vec![""], 1),
            ("done\npartial", vec!["done"], 5),
            ("partial", vec![], 0),
        ];
        for (lines, texts, used) in rows {
            let mut out = b"before".to_vec();
            assert_eq!(frame_lines(lines, &mut out), used, "{lines:?}");
            let expected: Vec<u8> = texts.iter().flat_map(|t| text_frame(t)).collect();
            assert_eq!(out, [b"before".as_slice(), &expected].concat(), "{lines:?}");
        }
    }

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    #[test]
    fn close_reply_code_table() {
        let rows: Vec<(&[u8], Result<u16, Violation>)> = vec![
            (b"", Ok(1000)),
            (b"\x03\xe8", Ok(1000)),
            (b"\x03\xe8bye", Ok(1000)),
            (b"\x03\xe9", Ok(1001)),
            (b"\x03\xea", Ok(1002)),
            (b"\x03\xeb", Ok(1003)),
            (b"\x03\xef", Ok(1007)),
            (b"\x03\xf3", Ok(1011)),
            (b"\x0b\xb8", Ok(3000)),
            (b"\x13\x87", Ok(4999)),
            (b"\x03", Err(Violation::BadClosePayload)),
            (b"\x00\x00", Err(Violation::BadCloseCode(0))),
            (b"\x03\xec", Err(Violation::BadCloseCode(1004))),
            (b"\x03\xed", Err(Violation::BadCloseCode(1005))),
            (b"\x03\xee", Err(Violation::BadCloseCode(1006))),
            (b"\x03\xf7", Err(Violation::BadCloseCode(1015))),
            (b"\x07\xd0", Err(Violation::BadCloseCode(2000))),
            (b"\x13\x88", Err(Violation::BadCloseCode(5000))),
            (b"\x03\xe8\xff", Err(Violation::InvalidUtf8)),
        ];
        for (payload, expected) in rows {
            assert_eq!(close_reply_code(payload), expected, "{payload:?}");
        }
    }

    #[test]
    fn frame_header_table() {
        let header = |fin, rsv, opcode, mask, len| FrameHeader {
            fin,
            rsv,
            opcode,
            mask,
            len,
        };
        type Parsed = Option<(FrameHeader, usize)>;
        let rows: Vec<(&[u8], Parsed)> = vec![
            (b"", None),
            (b"\x81", None),
            (b"\x81\x05", Some((header(true, 0, 1, None, 5), 2))),
            (b"\x01\x80\x01\x02\x03", None),
            (
                b"\x01\x80\x01\x02\x03\x04",
                Some((header(false, 0, 1, Some([1, 2, 3, 4]), 0), 6)),
            ),
            (b"\xf2\x7e\x01", None),
            (
                b"\xf2\x7e\x01\x00",
                Some((header(true, 7, 2, None, 256), 4)),
            ),
            (b"\x89\xfe\x00\x7e\x01\x02\x03", None),
            (
                b"\x89\xfe\x00\x7e\x01\x02\x03\x04",
                Some((header(true, 0, 9, Some([1, 2, 3, 4]), 126), 8)),
            ),
            (b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00", None),
            (
                b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00",
                Some((header(true, 0, 2, None, 65536), 10)),
            ),
            (
                b"\x82\xff\x80\x00\x00\x00\x00\x00\x00\x00\x09\x08\x07\x06",
                Some((header(true, 0, 2, Some([9, 8, 7, 6]), 1 << 63), 14)),
            ),
        ];
        for (bytes, expected) in rows {
            assert_eq!(parse_frame_header(bytes), expected, "{bytes:?}");
        }
    }

    #[test]
    fn check_frame_table() {
        use Violation::*;
        let h = |fin: bool, opcode: u8, len: u64| FrameHeader {
            fin,
            rsv: 0,
            opcode,
            mask: Some(MASK),
            len,
        };
        let max = MAX_LINE_BYTES as u64;
        // (header, in a fragmented message, bytes in it, expected)
        let rows: Vec<(FrameHeader, bool, usize, Result<(), Violation>)> = vec![
            (h(true, OP_TEXT, 5), false, 0, Ok(())),
            (h(true, OP_TEXT, max), false, 0, Ok(())),
            (h(true, OP_TEXT, max + 1), false, 0, Err(TooLong)),
            (
                h(true, OP_CONTINUATION, 10),
                true,
                MAX_LINE_BYTES - 10,
                Ok(()),
            ),
            (
                h(true, OP_CONTINUATION, 11),
                true,
                MAX_LINE_BYTES - 10,
                Err(TooLong),
            ),
            (
                h(true, OP_CONTINUATION, u64::MAX >> 1),
                true,
                0,
                Err(TooLong),
            ),
            (h(true, OP_TEXT, u64::MAX), false, 0, Err(BadLength)),
            (
                h(true, OP_CONTINUATION, 1),
                false,
                0,
                Err(UnexpectedContinuation),
            ),
            (h(true, OP_TEXT, 1), true, 1, Err(UnfinishedMessage)),
            (h(true, OP_BINARY, 1), true, 1, Err(UnfinishedMessage)),
            (h(true, OP_BINARY, 1), false, 0, Err(Binary)),
            (h(true, OP_PING, 125), true, MAX_LINE_BYTES, Ok(())),
            (h(true, OP_PING, 126), false, 0, Err(ControlTooLong)),
            (h(false, OP_PONG, 0), false, 0, Err(FragmentedControl)),
            (h(true, OP_CLOSE, 2), true, 5, Ok(())),
            (h(true, 0x3, 0), false, 0, Err(ReservedOpcode(3))),
            (h(true, 0xb, 0), false, 0, Err(ReservedOpcode(0xb))),
            (
                FrameHeader {
                    mask: None,
                    ..h(true, OP_TEXT, 1)
                },
                false,
                0,
                Err(Unmasked),
            ),
            (
                FrameHeader {
                    rsv: 4,
                    ..h(true, OP_TEXT, 1)
                },
                false,
                0,
                Err(ReservedBits),
            ),
        ];
        for (header, in_message, len, expected) in rows {
            assert_eq!(
                check_frame(&header, in_message, len),
                expected,
                "{header:?}"
            );
        }
        let codes = [
            (Binary, 1003),
            (InvalidUtf8, 1007),
            (TooLong, 1009),
            (Unmasked, 1002),
        ];
        for (violation, code) in codes {
            assert_eq!(violation.close_code(), code, "{violation:?}");
        }
    }
}
