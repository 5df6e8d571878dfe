//! A web user's outbound side: the [`Transport`] that writes server lines to a browser as
//! WebSocket text frames, over the same TCP socket the session reads.
//!
//! This module owns what RFC 6455 asks of a server's outbound bytes beyond framing each
//! line: control frames (pong, close) queued in the same order as the data, never inside a
//! data frame ([`control_sink`]); nothing at all after a close frame (section 5.5.1); and a
//! close frame before the TCP connection is cut whenever one can go out without cutting
//! into a frame ([`Transport::hang_up`]). It must not decode client frames
//! (`websocket.rs`), queue lines or decide who writes (`outbox.rs`): writes, patience and
//! the shutdown are [`TcpTransport`]'s, wrapped.
//!
//! ```text
//!   session thread: WsLines ──pong/close──> control_sink ──Entry::Wire──┐
//!   session, senders: lines ──────────────────────────── Entry::Lines ──┤
//!                                                                      v
//!                     Outbox (one queue, one writer) ──> WsTransport::write ──> TcpTransport
//!                                                        (FrameCursor: where frames end,
//!                                                         and whether a close went out)
//! ```

use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::limits::SENDER_PATIENCE;
use crate::outbox::{Entry, Outbox};
use crate::transport::{TcpTransport, Transport};
use crate::websocket::{
    self, CLOSE_NORMAL, ControlSink, MAX_HEADER_LEN, OP_CLOSE, parse_frame_header,
};

/// A WebSocket client's transport: text frames out, over [`TcpTransport`].
pub struct WsTransport {
    tcp: TcpTransport,
    /// The same socket, for the one write that does not come from the outbox: the close
    /// frame of a hang-up.
    stream: Arc<TcpStream>,
    /// Where the bytes written so far stand among the frames. Locked for the whole of each
    /// write (only the holder of the outbox's right to write writes, so nobody waits for
    /// it but a hang-up, which only tries it): a hang-up that finds it taken knows that a
    /// frame is on its way out and writes no close frame into the middle of it.
    wire: Mutex<FrameCursor>,
}

impl WsTransport {
    /// Wraps `stream`, just after the `101 Switching Protocols` response: the next byte
    /// written starts a frame.
    pub fn new(stream: Arc<TcpStream>) -> io::Result<WsTransport> {
        Ok(WsTransport {
            tcp: TcpTransport::new(Arc::clone(&stream))?,
            stream,
            wire: Mutex::new(FrameCursor::default()),
        })
    }

    /// Never held by a thread that panicked mid-write in a way that matters: the cursor is
    /// updated after the write, in one step.
    fn lock_wire(&self) -> MutexGuard<'_, FrameCursor> {
        self.wire.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Transport for WsTransport {
    fn encode(&self, lines: &str, out: &mut Vec<u8>) {
        websocket::frame_lines(lines, out);
    }

    /// Writes like TCP, with one difference: bytes after a close frame are not sent but
    /// reported as written, so the outbox drains and closes as usual. Whoever queued a
    /// line behind the close (another user's chat, a pong) loses nothing the browser
    /// could still have read.
    fn write(&self, bytes: &[u8]) -> io::Result<usize> {
        let mut wire = self.lock_wire();
        if wire.closed {
            return Ok(bytes.len());
        }
        let mut probe = *wire;
        let until_close = probe.advance(bytes).unwrap_or(bytes.len());
        let written = self.tcp.write(&bytes[..until_close])?;
        wire.advance(&bytes[..written]);
        Ok(if wire.closed { bytes.len() } else { written })
    }

    fn set_patient(&self, patient: bool) -> io::Result<()> {
        self.tcp.set_patient(patient)
    }

    /// A close frame (1000) if none went out yet and one can go now, then the TCP
    /// shutdown. "Now" means: nobody is in the middle of a write, the last write ended
    /// at a frame boundary, and the socket takes the few bytes within a clock tick. So a
    /// session that ended by itself (its last line written, then the outbox closed) or a
    /// takeover ends with a clean close handshake, while a hang-up of a stalled client
    /// never waits for it and never breaks a frame.
    fn hang_up(&self) {
        if let Ok(mut wire) = self.wire.try_lock()
            && !wire.closed
            && wire.at_boundary()
        {
            let frame = websocket::close_frame(CLOSE_NORMAL, "");
            if self.stream.set_write_timeout(Some(SENDER_PATIENCE)).is_ok()
                && let Ok(n) = (&*self.stream).write(&frame)
            {
                wire.advance(&frame[..n]);
            }
            wire.closed = true;
        }
        self.tcp.hang_up();
    }
}

/// Where the control frames of a [`websocket::WsLines`] go: into the client's outbox, as
/// bytes already framed, behind whatever lines are queued and never inside one of them.
/// A pong that finds the outbox closed is dropped: the connection is ending anyway.
pub fn control_sink(outbox: Arc<Outbox>) -> ControlSink {
    Box::new(move |frame: Vec<u8>| {
        let _ = outbox.send(Entry::Wire(Arc::from(frame)));
    })
}

/// Follows the server's own frames as they are written, whatever the pieces: how much of
/// the current frame's header and payload is still to come, and whether a close frame has
/// gone out. Only the server's frames pass here, so every header parses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct FrameCursor {
    /// The current frame's header so far (empty between frames).
    header: [u8; MAX_HEADER_LEN],
    header_len: usize,
    opcode: u8,
    /// Payload bytes of the current frame still to come.
    payload_left: u64,
    /// A close frame has been written whole: nothing may follow it.
    closed: bool,
}

impl FrameCursor {
    /// True between frames.
    fn at_boundary(&self) -> bool {
        self.header_len == 0 && self.payload_left == 0
    }

    /// Moves past `bytes`. If a close frame ends within them, stops there and returns how
    /// many bytes it took to reach its end.
    fn advance(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut at = 0;
        while !self.closed {
            if self.payload_left > 0 {
                let n = self.payload_left.min((bytes.len() - at) as u64);
                at += n as usize;
                self.payload_left -= n;
                if self.payload_left > 0 {
                    return None; // `bytes` ended inside the payload
                }
                self.frame_done();
                continue;
            }
            // `bytes` ended between frames or inside a header: `?` says so.
            let &byte = bytes.get(at)?;
            self.header[self.header_len] = byte;
            self.header_len += 1;
            at += 1;
            if let Some((header, _)) = parse_frame_header(&self.header[..self.header_len]) {
                self.header_len = 0;
                self.opcode = header.opcode;
                self.payload_left = header.len;
                if self.payload_left == 0 {
                    self.frame_done();
                }
            }
        }
        Some(at)
    }

    fn frame_done(&mut self) {
        if self.opcode == OP_CLOSE {
            self.closed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::websocket::{close_frame, pong_frame, text_frame};
    use std::io::Read;
    use std::net::TcpListener;
    use std::time::Duration;

    /// The server's frames in every split: (bytes written in pieces, what the cursor says
    /// after all of them: at a boundary, closed, and where `advance` reported the close).
    #[test]
    fn frame_cursor_table() {
        let long = text_frame(&"x".repeat(300)); // 16-bit length
        let huge_header = [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]; // 65,536 bytes declared
        let close = close_frame(1000, "bye");
        type Row = (&'static str, Vec<u8>, bool, bool, Option<usize>);
        let rows: Vec<Row> = vec![
            ("nothing", vec![], true, false, None),
            ("one text", text_frame("hi"), true, false, None),
            ("empty text", text_frame(""), true, false, None),
            ("half a header", long[..3].to_vec(), false, false, None),
            ("header only", long[..4].to_vec(), false, false, None),
            ("in a payload", long[..50].to_vec(), false, false, None),
            ("a long frame", long.clone(), true, false, None),
            ("64-bit length", huge_header.to_vec(), false, false, None),
            (
                "text, pong, text",
                [text_frame("a"), pong_frame(b"p"), text_frame("b")].concat(),
                true,
                false,
                None,
            ),
            ("a close", close.clone(), true, true, Some(close.len())),
            (
                "text then close then text",
                [text_frame("a"), close.clone(), text_frame("b")].concat(),
                true,
                true,
                Some(3 + close.len()),
            ),
            (
                "empty close",
                close_frame(1000, "")[..2].to_vec(),
                false,
                false,
                None,
            ),
        ];
        for (name, bytes, boundary, closed, close_at) in rows {
            for step in [1, 2, 3, 7, usize::MAX] {
                let mut cursor = FrameCursor::default();
                let mut reported = None;
                let mut offset = 0;
                for piece in bytes.chunks(step.min(bytes.len().max(1))) {
                    if let Some(at) = cursor.advance(piece) {
                        reported.get_or_insert(offset + at);
                    }
                    offset += piece.len();
                }
                assert_eq!(cursor.at_boundary(), boundary, "{name}, step {step}");
                assert_eq!(cursor.closed, closed, "{name}, step {step}");
                assert_eq!(reported, close_at, "{name}, step {step}");
            }
        }
    }

    fn pair() -> (WsTransport, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server_side, _) = listener.accept().expect("accept");
        let transport = WsTransport::new(Arc::new(server_side)).expect("transport");
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        (transport, client)
    }

    fn read_all(mut client: TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        let _ = client.read_to_end(&mut got);
        got
    }

    #[test]
    fn nothing_follows_a_close_frame() {
        let (transport, client) = pair();
        let mut out = Vec::new();
        transport.encode("one\n", &mut out);
        out.extend(close_frame(1000, ""));
        transport.encode("after\n", &mut out);
        assert_eq!(transport.write(&out).expect("write"), out.len());
        // Later writes are swallowed, and the hang-up adds no second close.
        assert_eq!(transport.write(b"\x81\x01x").expect("write"), 3);
        transport.hang_up();
        let expected = [text_frame("one"), close_frame(1000, "")].concat();
        assert_eq!(read_all(client), expected);
    }

    #[test]
    fn a_hang_up_between_frames_sends_a_close_first() {
        let (transport, client) = pair();
        let mut out = Vec::new();
        transport.encode("goodbye\n", &mut out);
        assert_eq!(transport.write(&out).expect("write"), out.len());
        transport.hang_up();
        let expected = [text_frame("goodbye"), close_frame(1000, "")].concat();
        assert_eq!(read_all(client), expected);
    }

    #[test]
    fn a_hang_up_inside_a_frame_sends_no_close() {
        let (transport, client) = pair();
        let frame = text_frame("cut short");
        // A write the client's kernel took only part of, as a full socket would.
        transport.tcp.write(&frame[..4]).expect("write");
        transport.lock_wire().advance(&frame[..4]);
        transport.hang_up();
        assert_eq!(read_all(client), frame[..4]);
    }
}
