//! WebSocket (RFC 6455) for the web page: the opening handshake, frames from the server,
//! and client frames read as chat lines.
//!
//! One concept per file: `websocket/handshake.rs` decides which upgrade requests are
//! accepted, and from which pages ([`origin_allowed`]); `websocket/frames.rs` is the frame
//! format, pure: headers, the RFC's rules with their close codes, the server's frames; this
//! file reads a client's frames as lines. Their public items are re-exported here, so a
//! caller names `websocket::X` whichever file holds it.
//!
//! One text message is one protocol line, without a newline, in each direction. [`WsLines`]
//! is a [`LineSource`], so a session reads a browser exactly as it reads a netcat user.
//! This module must not interpret lines (`protocol.rs`), route paths (`web.rs`) or write to
//! a socket: the control frames it must send (pong, close) go to a callback, so that the
//! caller can queue them behind, never inside, a data frame being written.
//!
//! Every violation of the RFC closes the connection with the close code the RFC names
//! ([`Violation::close_code`]), and memory stays bounded whatever length a frame header
//! declares: a text message is at most [`MAX_LINE_BYTES`](crate::limits::MAX_LINE_BYTES),
//! refused from its header before any of it is buffered; a control frame at most 125 bytes.

mod frames;
mod handshake;

use std::io::{self, ErrorKind, Read};
use std::time::Instant;

use crate::clean::clean_line;
use crate::line_reader::{Line, LineSource};
use frames::is_control;

pub use frames::{
    CLOSE_GOING_AWAY, CLOSE_INVALID_DATA, CLOSE_NORMAL, CLOSE_POLICY_VIOLATION,
    CLOSE_PROTOCOL_ERROR, CLOSE_TOO_BIG, CLOSE_UNSUPPORTED_DATA, FrameHeader, MAX_HEADER_LEN,
    OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT, Violation, check_frame,
    close_frame, close_reply_code, frame_lines, parse_frame_header, pong_frame, text_frame,
};
pub use handshake::{
    HandshakeError, accept_key, check_handshake, handshake_response, origin_allowed,
};

/// Size of the read buffer. Enough for the longest chat line and its header in one read.
const READ_CHUNK: usize = 2 * 1024;

// Between reads the buffer keeps a partial header and reads behind it: it must hold one.
const _: () = assert!(MAX_HEADER_LEN < READ_CHUNK);

/// Where [`WsLines`] sends the control frames it must answer with (pong, close), already
/// framed. The caller queues them on the connection's outbound path, so that they never
/// cut into a data frame being written.
pub type ControlSink = Box<dyn FnMut(Vec<u8>) + Send>;

/// A frame whose header has been read and checked, while its payload arrives.
#[derive(Debug, Clone, Copy)]
struct Frame {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Payload bytes still to come.
    left: usize,
    /// Payload bytes already unmasked, for the mask's rotation.
    done: usize,
}

/// Reads client frames from any [`Read`] as chat lines: each text message is one
/// [`Line::Text`], cleaned by [`clean_line`] exactly like a TCP line.
///
/// - A `\n` or `\r` inside a message is not a line break: like every control character it
///   is dropped, so one message is always exactly one line and can never carry a second
///   command.
/// - Pings are answered with pongs, also between the fragments of a message; pongs are
///   ignored.
/// - A client's close is answered with a close (its code echoed, or 1000), then
///   `next_line` returns `Ok(None)`: the peer has finished.
/// - A violation is answered with a close carrying its code and reason, and `next_line`
///   returns an `InvalidData` error naming it once, then `Ok(None)`.
/// - End of stream without a close (the TCP connection dropped) returns `Ok(None)`.
///
/// Deadlines: [`LineSource::set_deadline`] calls the hook given to
/// [`WsLines::on_deadline`], which sets the deadline on the reader `R` (this module does not
/// know what `R` is). Without a hook deadlines are ignored. A read that times out leaves the
/// decoder's state intact, so a later call carries on where it stopped.
pub struct WsLines<R> {
    source: R,
    buf: Box<[u8]>,
    /// Unconsumed bytes are `buf[start..end]`; between calls they are at most a partial
    /// frame header.
    start: usize,
    end: usize,
    /// The frame whose payload is being read.
    frame: Option<Frame>,
    /// The text message so far (at most [`MAX_LINE_BYTES`](crate::limits::MAX_LINE_BYTES)).
    message: Vec<u8>,
    /// True while a fragmented message is open.
    in_message: bool,
    /// The payload of the control frame being read (at most 125 bytes).
    control: Vec<u8>,
    send_control: ControlSink,
    deadline_hook: Option<fn(&mut R, Option<Instant>)>,
    finished: bool,
}

/// What a completed frame means for the reader of lines.
enum Completed {
    Line(Line),
    Closed,
}

impl<R: Read> WsLines<R> {
    /// Reads frames from `source` (positioned just after the handshake: see
    /// `http::Prefixed` for bytes that arrived with the request) and sends pongs and closes
    /// to `send_control`.
    pub fn new(source: R, send_control: ControlSink) -> Self {
        WsLines {
            source,
            buf: vec![0; READ_CHUNK].into_boxed_slice(),
            start: 0,
            end: 0,
            frame: None,
            message: Vec::new(),
            in_message: false,
            control: Vec::new(),
            send_control,
            deadline_hook: None,
            finished: false,
        }
    }

    /// Sets how a deadline reaches the reader, e.g.
    /// `|r, deadline| r.get_mut().until = deadline`.
    pub fn on_deadline(mut self, hook: fn(&mut R, Option<Instant>)) -> Self {
        self.deadline_hook = Some(hook);
        self
    }

    /// The reader underneath.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.source
    }

    /// True once the stream has ended: closed by either side, broken, or dropped.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The next line; `Ok(None)` once the client closed or the stream ended.
    pub fn read_line(&mut self) -> io::Result<Option<Line>> {
        while !self.finished {
            match self.take_buffered() {
                Ok(Some(Completed::Line(line))) => return Ok(Some(line)),
                Ok(Some(Completed::Closed)) => self.finished = true,
                Ok(None) => self.fill()?,
                Err(violation) => return Err(self.fail(violation)),
            }
        }
        Ok(None)
    }

    /// Reads more bytes behind the unconsumed ones (at most a partial header).
    fn fill(&mut self) -> io::Result<()> {
        self.buf.copy_within(self.start..self.end, 0);
        (self.start, self.end) = (0, self.end - self.start);
        loop {
            match self.source.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.finished = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Consumes buffered bytes until a frame completes something for the caller or more
    /// bytes are needed (`Ok(None)`).
    fn take_buffered(&mut self) -> Result<Option<Completed>, Violation> {
        loop {
            let Some(mut frame) = self.frame else {
                let Some((header, used)) = parse_frame_header(&self.buf[self.start..self.end])
                else {
                    return Ok(None);
                };
                check_frame(&header, self.in_message, self.message.len())?;
                self.start += used;
                self.frame = Some(Frame {
                    fin: header.fin,
                    opcode: header.opcode,
                    mask: header.mask.unwrap_or_default(),
                    // check_frame capped the length at MAX_LINE_BYTES or 125.
                    left: header.len as usize,
                    done: 0,
                });
                continue;
            };
            let n = frame.left.min(self.end - self.start);
            let payload = &self.buf[self.start..self.start + n];
            let into = if is_control(frame.opcode) {
                &mut self.control
            } else {
                &mut self.message
            };
            into.extend(
                payload
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ frame.mask[(frame.done + i) % 4]),
            );
            self.start += n;
            frame.left -= n;
            frame.done += n;
            if frame.left > 0 {
                self.frame = Some(frame);
                return Ok(None);
            }
            self.frame = None;
            if let Some(completed) = self.complete(&frame)? {
                return Ok(Some(completed));
            }
        }
    }

    /// Acts on a frame whose payload is complete.
    fn complete(&mut self, frame: &Frame) -> Result<Option<Completed>, Violation> {
        match frame.opcode {
            OP_PING => {
                (self.send_control)(pong_frame(&self.control));
                self.control.clear();
                Ok(None)
            }
            OP_PONG => {
                self.control.clear();
                Ok(None)
            }
            OP_CLOSE => {
                let code = close_reply_code(&self.control)?;
                (self.send_control)(close_frame(code, ""));
                Ok(Some(Completed::Closed))
            }
            _ if !frame.fin => {
                self.in_message = true;
                Ok(None)
            }
            _ => {
                self.in_message = false;
                let message = std::mem::take(&mut self.message);
                // The whole message is checked, not each fragment: a character may be
                // split between two fragments.
                if std::str::from_utf8(&message).is_err() {
                    return Err(Violation::InvalidUtf8);
                }
                Ok(Some(Completed::Line(Line::Text(clean_line(&message)))))
            }
        }
    }

    /// Closes with the violation's code and turns it into the error `read_line` returns.
    fn fail(&mut self, violation: Violation) -> io::Error {
        self.finished = true;
        let code = violation.close_code();
        (self.send_control)(close_frame(code, &violation.to_string()));
        io::Error::new(
            ErrorKind::InvalidData,
            format!("websocket close {code}: {violation}"),
        )
    }

    /// True if a whole unfragmented text frame is buffered, so `read_line` returns without
    /// waiting. False when unsure (e.g. a ping comes first).
    pub fn line_ready(&self) -> bool {
        if self.finished || self.frame.is_some() || self.in_message {
            return false;
        }
        let pending = &self.buf[self.start..self.end];
        match parse_frame_header(pending) {
            Some((header, used)) => {
                header.fin
                    && header.opcode == OP_TEXT
                    && pending.len() - used >= header.len.min(u64::from(u32::MAX)) as usize
            }
            None => false,
        }
    }
}

impl<R: Read> LineSource for WsLines<R> {
    fn next_line(&mut self) -> io::Result<Option<Line>> {
        self.read_line()
    }

    fn line_ready(&self) -> bool {
        WsLines::line_ready(self)
    }

    fn set_deadline(&mut self, deadline: Option<Instant>) {
        if let Some(hook) = self.deadline_hook {
            hook(&mut self.source, deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::MAX_LINE_BYTES;
    use std::sync::{Arc, Mutex};

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A client frame with every field chosen by the test; `mask: None` sends it unmasked.
    fn raw(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut frame = vec![first];
        let mask_bit = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            len @ 0..=125 => frame.push(mask_bit | len as u8),
            len @ 126..=0xFFFF => {
                frame.push(mask_bit | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(mask_bit | 127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        if let Some(key) = mask {
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        frame
    }

    /// A masked client frame: `fin` plus `opcode`.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        raw(if fin { 0x80 } else { 0 } | opcode, payload, Some(MASK))
    }

    fn text(payload: &str) -> Vec<u8> {
        frame(true, OP_TEXT, payload.as_bytes())
    }

    fn close(code: u16, reason: &[u8]) -> Vec<u8> {
        frame(true, OP_CLOSE, &[&code.to_be_bytes(), reason].concat())
    }

    /// A header declaring `len` payload bytes, with none of them following.
    fn declared(opcode: u8, len: u64) -> Vec<u8> {
        let mut header = vec![0x80 | opcode, 0x80 | 127];
        header.extend_from_slice(&len.to_be_bytes());
        header.extend_from_slice(&MASK);
        header
    }

    /// A control frame the server sent, decoded for comparison.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Sent {
        Pong(Vec<u8>),
        Close(Option<u16>),
    }

    fn decode_sent(frame: &[u8]) -> Sent {
        let (header, used) = parse_frame_header(frame).expect("a whole frame");
        assert!(
            header.fin && header.rsv == 0 && header.mask.is_none(),
            "{frame:?}"
        );
        let payload = &frame[used..];
        assert_eq!(payload.len() as u64, header.len, "{frame:?}");
        match header.opcode {
            OP_PONG => Sent::Pong(payload.to_vec()),
            OP_CLOSE => Sent::Close(
                (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]])),
            ),
            op => panic!("unexpected opcode {op}"),
        }
    }

    /// A source that returns at most `step` bytes per read.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// The control frames a decoder sent, in order.
    type SentFrames = Arc<Mutex<Vec<Vec<u8>>>>;

    /// A decoder over `source` whose control frames land in the returned list.
    fn decoder<R: Read>(source: R) -> (WsLines<R>, SentFrames) {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&sent);
        let lines = WsLines::new(
            source,
            Box::new(move |frame| sink.lock().expect("test lock").push(frame)),
        );
        (lines, sent)
    }

    /// What reading `input` to its end gives: the lines, the control frames sent, and the
    /// error's message if reading ended with one.
    #[derive(Debug, PartialEq)]
    struct Outcome {
        lines: Vec<String>,
        sent: Vec<Sent>,
        failed: bool,
    }

    fn run(input: &[u8], step: usize) -> Outcome {
        let (mut lines, sent) = decoder(Trickle(input, step));
        let mut out = Vec::new();
        let failed = loop {
            match lines.next_line() {
                Ok(Some(Line::Text(text))) => out.push(text),
                Ok(Some(Line::TooLong)) => panic!("the decoder closes instead"),
                Ok(None) => break false,
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::InvalidData);
                    // After the error the stream is over.
                    assert!(matches!(lines.next_line(), Ok(None)));
                    break true;
                }
            }
        };
        let sent = sent
            .lock()
            .expect("test lock")
            .iter()
            .map(|f| decode_sent(f))
            .collect();
        Outcome {
            lines: out,
            sent,
            failed,
        }
    }

    fn lines_then(lines: &[&str], sent: Vec<Sent>, failed: bool) -> Outcome {
        Outcome {
            lines: lines.iter().map(|l| l.to_string()).collect(),
            sent,
            failed,
        }
    }

    /// Ended cleanly (end of stream or the client's close) with these lines and answers.
    fn ok(lines: &[&str], sent: Vec<Sent>) -> Outcome {
        lines_then(lines, sent, false)
    }

    /// Closed by the server with `code` after these lines.
    fn closed_with(lines: &[&str], code: u16) -> Outcome {
        lines_then(lines, vec![Sent::Close(Some(code))], true)
    }

    #[test]
    fn client_frame_table() {
        use Sent::*;
        let max = "x".repeat(MAX_LINE_BYTES);
        let half = "y".repeat(MAX_LINE_BYTES / 2);
        let ping = |p: &[u8]| frame(true, OP_PING, p);
        let rows: Vec<(&str, Vec<u8>, Outcome)> = vec![
            ("nothing", vec![], ok(&[], vec![])),
            ("one message", text("hello"), ok(&["hello"], vec![])),
            (
                "RFC 6455 5.7 masked Hello",
                b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58".to_vec(),
                ok(&["Hello"], vec![]),
            ),
            (
                "two messages",
                [text("a"), text("b")].concat(),
                ok(&["a", "b"], vec![]),
            ),
            ("empty message", text(""), ok(&[""], vec![])),
            (
                "UTF-8",
                text("caf\u{e9} \u{1F600}"),
                ok(&["caf\u{e9} \u{1F600}"], vec![]),
            ),
            ("tab kept", text("a\tb"), ok(&["a\tb"], vec![])),
            (
                "newline is not a line break",
                text("a\nb\r\n"),
                ok(&["ab"], vec![]),
            ),
            ("escape cleaned", text("\x1b[31mred"), ok(&["red"], vec![])),
            ("C1 cleaned", text("\u{9b}2J"), ok(&["2J"], vec![])),
            ("exactly the limit", text(&max), ok(&[&max], vec![])),
            // Fragments.
            (
                "fragmented",
                [
                    frame(false, OP_TEXT, b"hel"),
                    frame(true, OP_CONTINUATION, b"lo"),
                ]
                .concat(),
                ok(&["hello"], vec![]),
            ),
            (
                "three fragments, empty ones too",
                [
                    frame(false, OP_TEXT, b""),
                    frame(false, OP_CONTINUATION, b"a"),
                    frame(true, OP_CONTINUATION, b""),
                ]
                .concat(),
                ok(&["a"], vec![]),
            ),
            (
                "character split across fragments",
                [
                    frame(false, OP_TEXT, b"\xce"),
                    frame(true, OP_CONTINUATION, b"\xba"),
                ]
                .concat(),
                ok(&["\u{3ba}"], vec![]),
            ),
            (
                "fragments up to the limit",
                [
                    frame(false, OP_TEXT, half.as_bytes()),
                    frame(true, OP_CONTINUATION, half.as_bytes()),
                ]
                .concat(),
                ok(&[&(half.clone() + &half)], vec![]),
            ),
            // Ping and pong.
            (
                "ping",
                ping(b"are you there"),
                ok(&[], vec![Pong(b"are you there".to_vec())]),
            ),
            ("empty ping", ping(b""), ok(&[], vec![Pong(vec![])])),
            (
                "125-byte ping",
                ping(&[9; 125]),
                ok(&[], vec![Pong(vec![9; 125])]),
            ),
            (
                "ping between fragments",
                [
                    frame(false, OP_TEXT, b"hel"),
                    ping(b"p"),
                    frame(true, OP_CONTINUATION, b"lo"),
                ]
                .concat(),
                ok(&["hello"], vec![Pong(b"p".to_vec())]),
            ),
            (
                "pong ignored",
                [frame(true, OP_PONG, b"x"), text("a")].concat(),
                ok(&["a"], vec![]),
            ),
            // The closing handshake.
            (
                "close 1000",
                close(1000, b"bye"),
                ok(&[], vec![Close(Some(1000))]),
            ),
            (
                "close echoes 1001",
                close(1001, b""),
                ok(&[], vec![Close(Some(1001))]),
            ),
            (
                "close echoes 3000",
                close(3000, b""),
                ok(&[], vec![Close(Some(3000))]),
            ),
            (
                "close echoes 4999",
                close(4999, b""),
                ok(&[], vec![Close(Some(4999))]),
            ),
            (
                "close echoes 1014",
                close(1014, b""),
                ok(&[], vec![Close(Some(1014))]),
            ),
            (
                "empty close (1005) answered with 1000",
                frame(true, OP_CLOSE, b""),
                ok(&[], vec![Close(Some(1000))]),
            ),
            (
                "nothing is read after a close",
                [text("a"), close(1000, b""), text("b")].concat(),
                ok(&["a"], vec![Close(Some(1000))]),
            ),
            (
                "close between fragments",
                [frame(false, OP_TEXT, b"a"), close(1000, b"")].concat(),
                ok(&[], vec![Close(Some(1000))]),
            ),
            (
                "close of one byte",
                frame(true, OP_CLOSE, b"\x03"),
                closed_with(&[], 1002),
            ),
            ("close code 999", close(999, b""), closed_with(&[], 1002)),
            ("close code 1004", close(1004, b""), closed_with(&[], 1002)),
            ("close code 1005", close(1005, b""), closed_with(&[], 1002)),
            ("close code 1006", close(1006, b""), closed_with(&[], 1002)),
            ("close code 1015", close(1015, b""), closed_with(&[], 1002)),
            ("close code 2999", close(2999, b""), closed_with(&[], 1002)),
            ("close code 5000", close(5000, b""), closed_with(&[], 1002)),
            (
                "close reason not UTF-8",
                close(1000, b"\xff"),
                closed_with(&[], 1007),
            ),
            // Violations.
            ("unmasked", raw(0x81, b"hi", None), closed_with(&[], 1002)),
            (
                "unmasked after a good one",
                [text("a"), raw(0x81, b"hi", None)].concat(),
                closed_with(&["a"], 1002),
            ),
            (
                "unmasked ping",
                raw(0x89, b"", None),
                closed_with(&[], 1002),
            ),
            (
                "binary",
                frame(true, OP_BINARY, b"\x00\x01"),
                closed_with(&[], 1003),
            ),
            (
                "fragmented binary",
                frame(false, OP_BINARY, b"a"),
                closed_with(&[], 1003),
            ),
            (
                "invalid UTF-8",
                text_bytes(b"a\xffb"),
                closed_with(&[], 1007),
            ),
            (
                "overlong UTF-8",
                text_bytes(b"\xc0\xaf"),
                closed_with(&[], 1007),
            ),
            (
                "surrogate",
                text_bytes(b"\xed\xa0\x80"),
                closed_with(&[], 1007),
            ),
            (
                "truncated character",
                text_bytes(b"\xce"),
                closed_with(&[], 1007),
            ),
            (
                "invalid UTF-8 across fragments",
                [
                    frame(false, OP_TEXT, b"\xce"),
                    frame(true, OP_CONTINUATION, b"A"),
                ]
                .concat(),
                closed_with(&[], 1007),
            ),
            ("ping of 126 bytes", ping(&[0; 126]), closed_with(&[], 1002)),
            (
                "close of 126 bytes",
                close(1000, &[b'a'; 124]),
                closed_with(&[], 1002),
            ),
            (
                "fragmented ping",
                frame(false, OP_PING, b""),
                closed_with(&[], 1002),
            ),
            (
                "fragmented close",
                frame(false, OP_CLOSE, b""),
                closed_with(&[], 1002),
            ),
            ("RSV1", raw(0xc1, b"a", Some(MASK)), closed_with(&[], 1002)),
            ("RSV2", raw(0xa1, b"a", Some(MASK)), closed_with(&[], 1002)),
            ("RSV3", raw(0x91, b"a", Some(MASK)), closed_with(&[], 1002)),
            (
                "RSV on a ping",
                raw(0xc9, b"", Some(MASK)),
                closed_with(&[], 1002),
            ),
            (
                "continuation without a start",
                frame(true, OP_CONTINUATION, b"a"),
                closed_with(&[], 1002),
            ),
            (
                "continuation after a finished message",
                [text("a"), frame(true, OP_CONTINUATION, b"b")].concat(),
                closed_with(&["a"], 1002),
            ),
            (
                "text inside a fragmented message",
                [frame(false, OP_TEXT, b"a"), text("b")].concat(),
                closed_with(&[], 1002),
            ),
            (
                "binary inside a fragmented message",
                [frame(false, OP_TEXT, b"a"), frame(true, OP_BINARY, b"b")].concat(),
                closed_with(&[], 1002),
            ),
            // Too long: refused from the header, payload or not.
            (
                "one byte over",
                text(&format!("{max}x")),
                closed_with(&[], 1009),
            ),
            (
                "declared over, nothing sent",
                declared(OP_TEXT, 1025),
                closed_with(&[], 1009),
            ),
            (
                "declared 2^62",
                declared(OP_TEXT, 1 << 62),
                closed_with(&[], 1009),
            ),
            (
                "declared 2^63",
                declared(OP_TEXT, 1 << 63),
                closed_with(&[], 1002),
            ),
            (
                "fragments over the limit",
                [
                    frame(false, OP_TEXT, max.as_bytes()),
                    frame(true, OP_CONTINUATION, b"x"),
                ]
                .concat(),
                closed_with(&[], 1009),
            ),
            // Ends without a close.
            (
                "cut inside a header",
                text("hello")[..3].to_vec(),
                ok(&[], vec![]),
            ),
            (
                "cut inside a payload",
                text("hello")[..8].to_vec(),
                ok(&[], vec![]),
            ),
            (
                "cut inside a fragmented message",
                frame(false, OP_TEXT, b"a"),
                ok(&[], vec![]),
            ),
        ];
        for reserved in [3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
            let outcome = run(&frame(true, reserved, b""), usize::MAX);
            assert_eq!(outcome, closed_with(&[], 1002), "opcode {reserved}");
        }
        for (name, input, expected) in rows {
            for step in [1, 2, 3, 7, 100, usize::MAX] {
                assert_eq!(run(&input, step), expected, "{name}, {step} bytes per read");
            }
        }
    }

    fn text_bytes(payload: &[u8]) -> Vec<u8> {
        frame(true, OP_TEXT, payload)
    }

    #[test]
    fn violations_close_with_a_reason() {
        let (mut lines, sent) = decoder(&b"\x81\x02hi"[..]);
        let error = lines.next_line().expect_err("unmasked frame");
        assert_eq!(
            error.to_string(),
            "websocket close 1002: unmasked client frame"
        );
        let sent = sent.lock().expect("test lock");
        assert_eq!(sent[..], [close_frame(1002, "unmasked client frame")]);
    }

    #[test]
    fn memory_stays_bounded_whatever_the_header_declares() {
        // A declared exabyte is refused from the header alone, after reading 14 bytes.
        let mut input = declared(OP_TEXT, 1 << 60);
        input.extend(std::iter::repeat_n(b'x', 64 * 1024));
        let (mut lines, _) = decoder(&input[..]);
        assert!(lines.next_line().is_err());
        assert!(lines.message.capacity() == 0);
        // A stream of fragments at the limit never holds more than the limit.
        let piece = vec![b'z'; MAX_LINE_BYTES / 4];
        let mut input = frame(false, OP_TEXT, &piece);
        for _ in 0..100 {
            input.extend(frame(false, OP_CONTINUATION, &piece));
        }
        let (mut lines, _) = decoder(Trickle(&input, 1000));
        assert!(lines.next_line().is_err());
        assert!(lines.message.capacity() <= 2 * MAX_LINE_BYTES);
        assert!(lines.buf.len() == READ_CHUNK);
    }

    #[test]
    fn line_ready_only_when_a_whole_text_frame_is_buffered() {
        // (input, step, what line_ready says before each read_line until the end)
        let rows: Vec<(Vec<u8>, usize, Vec<bool>)> = vec![
            (text("a"), usize::MAX, vec![false, false]),
            (
                [text("a"), text("b")].concat(),
                usize::MAX,
                vec![false, true, false],
            ),
            (
                [text("a"), text("b")].concat(),
                8,
                vec![false, false, false],
            ),
            // A ping first: unsure, so false.
            (
                [text("a"), frame(true, OP_PING, b""), text("b")].concat(),
                usize::MAX,
                vec![false, false, false],
            ),
            // A fragment first: false.
            (
                [
                    text("a"),
                    frame(false, OP_TEXT, b"b"),
                    frame(true, OP_CONTINUATION, b"c"),
                ]
                .concat(),
                usize::MAX,
                vec![false, false, false],
            ),
        ];
        for (input, step, expected) in rows {
            let (mut lines, _) = decoder(Trickle(&input, step));
            let mut ready = vec![lines.line_ready()];
            while let Ok(Some(_)) = lines.next_line() {
                ready.push(lines.line_ready());
            }
            assert_eq!(ready, expected, "{input:?} step {step}");
        }
    }

    #[test]
    fn a_timed_out_read_leaves_the_decoder_able_to_go_on() {
        /// Yields its pieces one per read, with a timeout before each.
        struct Stutter(Vec<Vec<u8>>, bool);
        impl Read for Stutter {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.1 = !self.1;
                if self.1 {
                    return Err(ErrorKind::TimedOut.into());
                }
                if self.0.is_empty() {
                    return Ok(0);
                }
                let piece = self.0.remove(0);
                buf[..piece.len()].copy_from_slice(&piece);
                Ok(piece.len())
            }
        }
        let message = [
            frame(false, OP_TEXT, b"hel"),
            frame(true, OP_CONTINUATION, b"lo"),
        ]
        .concat();
        let pieces = message.chunks(3).map(|c| c.to_vec()).collect();
        let (mut lines, _) = decoder(Stutter(pieces, false));
        let mut got = Vec::new();
        let mut timeouts = 0;
        loop {
            match lines.next_line() {
                Ok(Some(Line::Text(t))) => got.push(t),
                Ok(other) => {
                    assert_eq!(other, None);
                    break;
                }
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::TimedOut);
                    timeouts += 1;
                }
            }
        }
        assert_eq!(got, ["hello"]);
        assert!(timeouts > 3);
    }

    #[test]
    fn set_deadline_goes_to_the_hook() {
        struct Clocked {
            until: Option<Instant>,
        }
        impl Read for Clocked {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Ok(0)
            }
        }
        let (lines, _) = decoder(Clocked { until: None });
        let mut lines = lines.on_deadline(|r, deadline| r.until = deadline);
        let when = Instant::now();
        LineSource::set_deadline(&mut lines, Some(when));
        assert_eq!(lines.get_mut().until, Some(when));
        LineSource::set_deadline(&mut lines, None);
        assert_eq!(lines.get_mut().until, None);
        // Without a hook, nothing happens (and nothing breaks).
        let (mut bare, _) = decoder(Clocked { until: None });
        LineSource::set_deadline(&mut bare, Some(when));
        assert_eq!(bare.get_mut().until, None);
        assert!(matches!(bare.next_line(), Ok(None)) && bare.is_finished());
    }

    #[test]
    fn replies_to_pings_and_closes_are_whole_frames_in_order() {
        let input = [
            frame(true, OP_PING, b"1"),
            text("a"),
            frame(true, OP_PING, b"2"),
            close(1000, b""),
        ]
        .concat();
        let (mut lines, sent) = decoder(&input[..]);
        assert_eq!(lines.next_line().ok(), Some(Some(Line::Text("a".into()))));
        assert_eq!(sent.lock().expect("test lock")[..], [pong_frame(b"1")]);
        assert_eq!(lines.next_line().ok(), Some(None));
        assert_eq!(
            sent.lock().expect("test lock")[..],
            [pong_frame(b"1"), pong_frame(b"2"), close_frame(1000, "")]
        );
    }
}
