//! Splitting a byte stream into lines with a hard memory budget.
//!
//! This module owns framing: where one client line ends and the next begins (`\n`, with an
//! optional `\r` before it), and what happens to a line that is too long. It must not
//! interpret lines (that is `protocol.rs`) or know which transport the bytes come from, so a
//! TCP socket, a test's byte slice or a future WebSocket all read the same way.
//!
//! A `\n` always ends a line, even inside a telnet command or an escape sequence: those are
//! dropped line by line, by `clean_line`. (A TCP client's telnet commands never get here:
//! `telnet.rs` takes them out of the byte stream first, a `\n` inside one included.)
//!
//! The budget is the point: a client that sends a megabyte without a newline costs this
//! reader at most [`MAX_LINE_BYTES`] (plus one byte for a `\r`) and one read buffer, never
//! more.

use std::io::{self, ErrorKind, Read};
use std::time::Instant;

use crate::clean::clean_line;
use crate::limits::MAX_LINE_BYTES;

/// Size of one `read` call at first, into a buffer on the reading thread's stack: an idle
/// client, blocked in that read, holds no read buffer on the heap (at 1 KiB, one was a
/// sixteenth of an idle client's memory). A line longer than this is gathered over several
/// reads.
const READ_CHUNK: usize = 512;

/// Size of one `read` call after a read filled the small buffer: the client sends faster
/// than it is read (a paste, a flood). One read then brings up to a hundred short chat
/// lines instead of seven, and they go out together (`session.rs`, `Presence::burst`).
/// Back to the small buffer once a read does not fill this one.
const BUSY_READ_CHUNK: usize = 8 * 1024;

/// One unit of client input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A complete line, line ending removed, made safe by [`clean_line`].
    Text(String),
    /// A line longer than [`MAX_LINE_BYTES`]. Reported as soon as the limit is passed; the
    /// rest of that line, up to its `\n`, is read and thrown away.
    TooLong,
}

/// Where a session gets its lines from. A transport implements this; the session knows
/// nothing else about it.
pub trait LineSource {
    /// The next line, or `None` when the peer has finished sending.
    fn next_line(&mut self) -> io::Result<Option<Line>>;
    /// True if a whole line has already been read, so `next_line` returns without waiting
    /// for the peer. False when unsure.
    fn line_ready(&self) -> bool;
    /// After `deadline` reads fail with `TimedOut`; `None` lifts the deadline.
    fn set_deadline(&mut self, deadline: Option<Instant>);
}

/// Reads lines from any [`Read`] within the memory budget.
pub struct LineReader<R> {
    source: R,
    /// The bytes of the last read; those not consumed yet are `chunk[start..]`. Empty,
    /// without an allocation, while the reader waits for the client.
    chunk: Vec<u8>,
    start: usize,
    /// The last read filled its buffer: the next one reads [`BUSY_READ_CHUNK`].
    busy: bool,
    /// The line gathered so far (never longer than the limit plus a `\r`).
    partial: Vec<u8>,
    /// True while throwing away the rest of an over-long line.
    skipping: bool,
    finished: bool,
}

impl<R: Read> LineReader<R> {
    pub fn new(source: R) -> Self {
        LineReader {
            source,
            chunk: Vec::new(),
            start: 0,
            busy: false,
            partial: Vec::new(),
            skipping: false,
            finished: false,
        }
    }

    /// The transport underneath, e.g. to change its deadline.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.source
    }

    /// The next line; `Ok(None)` at end of stream. A last line without `\n` still counts.
    pub fn read_line(&mut self) -> io::Result<Option<Line>> {
        loop {
            if self.start < self.chunk.len() {
                if let Some(line) = self.take_buffered() {
                    return Ok(Some(line));
                }
                continue;
            }
            if self.finished {
                return Ok(None);
            }
            match self.fill() {
                Ok(0) => return Ok(self.finish()),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads the next bytes into `chunk`, everything before them being consumed. A quiet
    /// client's read lands on the stack and only what arrived is kept; a busy client's
    /// lands in a large buffer on the heap, kept while reads keep filling it.
    fn fill(&mut self) -> io::Result<usize> {
        self.start = 0;
        if self.busy {
            self.chunk.resize(BUSY_READ_CHUNK, 0);
            let read = self.source.read(&mut self.chunk);
            let n = *read.as_ref().unwrap_or(&0);
            self.chunk.truncate(n);
            self.busy = n == BUSY_READ_CHUNK;
            if !self.busy {
                self.chunk.shrink_to_fit();
            }
            return read;
        }
        self.chunk = Vec::new();
        let mut small = [0u8; READ_CHUNK];
        let n = self.source.read(&mut small)?;
        self.chunk.extend_from_slice(&small[..n]);
        self.busy = n == READ_CHUNK;
        Ok(n)
    }

    /// True if `read_line` can return a line from what is buffered, without a `read`. (While
    /// skipping the rest of a long line the first `\n` only ends the skip: say false.)
    pub fn line_ready(&self) -> bool {
        !self.skipping && self.chunk[self.start..].contains(&b'\n')
    }

    /// Consumes buffered bytes up to the next `\n` (or all of them) and returns a line if one
    /// is complete or has just become too long.
    fn take_buffered(&mut self) -> Option<Line> {
        let pending = &self.chunk[self.start..];
        let newline = pending.iter().position(|&b| b == b'\n');
        let piece_len = newline.unwrap_or(pending.len());
        let piece = &pending[..piece_len];
        self.start += newline.map_or(piece_len, |i| i + 1);

        if self.skipping {
            self.skipping = newline.is_none();
            return None;
        }
        // One byte of slack for the `\r` of a `\r\n` that may still follow.
        if self.partial.len() + piece.len() > MAX_LINE_BYTES + 1 {
            self.partial = Vec::new();
            self.skipping = newline.is_none();
            return Some(Line::TooLong);
        }
        if self.partial.is_empty() && newline.is_some() {
            // The whole line is in the buffer: no need to gather it first.
            return Some(finish_line(piece));
        }
        gather(&mut self.partial, piece);
        newline.is_some().then(|| self.complete_line())
    }

    fn complete_line(&mut self) -> Line {
        finish_line(&std::mem::take(&mut self.partial))
    }

    /// End of stream: a final unterminated line is delivered rather than lost.
    fn finish(&mut self) -> Option<Line> {
        self.finished = true;
        if self.skipping || self.partial.is_empty() {
            return None;
        }
        Some(self.complete_line())
    }
}

/// Appends `piece` to the line gathered so far. The buffer grows as a `Vec` does, doubling,
/// but never beyond the longest line it may hold, so the budget holds for its capacity too,
/// not only for its length. The caller has checked that `piece` fits.
fn gather(partial: &mut Vec<u8>, piece: &[u8]) {
    let needed = partial.len() + piece.len();
    if needed > partial.capacity() {
        let grown = (2 * partial.capacity()).min(MAX_LINE_BYTES + 1).max(needed);
        partial.reserve_exact(grown - partial.len());
    }
    partial.extend_from_slice(piece);
}

/// A line's bytes without their `\n` made into a [`Line`]: a `\r` before the `\n` is
/// dropped, the length checked, the text cleaned.
fn finish_line(bytes: &[u8]) -> Line {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    if bytes.len() > MAX_LINE_BYTES {
        return Line::TooLong;
    }
    Line::Text(clean_line(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` through a reader that returns at most `step` bytes per read, so every
    /// split point of the framing logic is exercised.
    fn lines(input: &[u8], step: usize) -> Vec<Line> {
        struct Trickle<'a>(&'a [u8], usize);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.1.min(buf.len()).min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut reader = LineReader::new(Trickle(input, step));
        let mut out = Vec::new();
        while let Some(line) = reader.read_line().expect("in-memory read") {
            out.push(line);
        }
        out
    }

    fn text(s: &str) -> Line {
        Line::Text(s.to_string())
    }

    #[test]
    fn framing_table() {
        let exact = "x".repeat(MAX_LINE_BYTES);
        let over = "x".repeat(MAX_LINE_BYTES + 1);
        let rows: Vec<(Vec<u8>, Vec<Line>)> = vec![
            (b"".to_vec(), vec![]),
            (b"a\n".to_vec(), vec![text("a")]),
            (b"a\r\nb\n".to_vec(), vec![text("a"), text("b")]),
            (b"\n\n".to_vec(), vec![text(""), text("")]),
            (b"no newline".to_vec(), vec![text("no newline")]),
            (b"lone\rcr\n".to_vec(), vec![text("lonecr")]),
            (b"cr at end\r".to_vec(), vec![text("cr at end")]),
            (b"nul\0\n".to_vec(), vec![text("nul")]),
            (b"\xfe\xff\n".to_vec(), vec![text("\u{FFFD}\u{FFFD}")]),
            // A `\n` ends the line even inside a telnet command or an escape sequence.
            (b"\xff\xfd\nhi\n".to_vec(), vec![text(""), text("hi")]),
            (
                b"\xff\xfa\x1f\nhi\xff\xf0\n".to_vec(),
                vec![text(""), text("hi")],
            ),
            (b"\x1b]0;t\nhi\x07\n".to_vec(), vec![text(""), text("hi")]),
            (b"\x1b[A~:lu:\r\n".to_vec(), vec![text("~:lu:")]),
            (format!("{exact}\n").into_bytes(), vec![text(&exact)]),
            (format!("{exact}\r\n").into_bytes(), vec![text(&exact)]),
            (
                format!("{over}\nok\n").into_bytes(),
                vec![Line::TooLong, text("ok")],
            ),
            (
                format!("{over}\r\nok\n").into_bytes(),
                vec![Line::TooLong, text("ok")],
            ),
            (over.into_bytes(), vec![Line::TooLong]),
        ];
        for (input, expected) in rows {
            for step in [1, 2, 3, 7, 1000, usize::MAX] {
                assert_eq!(lines(&input, step), expected, "input {input:?} step {step}");
            }
        }
    }

    /// What `line_ready` says before each `read_line`, for input arriving in the given reads.
    fn readiness(reads: &[&[u8]]) -> Vec<bool> {
        struct Reads<'a>(std::slice::Iter<'a, &'a [u8]>);
        impl Read for Reads<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let next = self.0.next().copied().unwrap_or_default();
                buf[..next.len()].copy_from_slice(next);
                Ok(next.len())
            }
        }
        let mut reader = LineReader::new(Reads(reads.iter()));
        let mut ready = vec![reader.line_ready()];
        while reader.read_line().expect("in-memory read").is_some() {
            ready.push(reader.line_ready());
        }
        ready
    }

    #[test]
    fn line_ready_only_when_a_whole_line_waits_in_the_buffer() {
        let long = [b'x'; 500];
        let rows: Vec<(Vec<&[u8]>, Vec<bool>)> = vec![
            // Nothing read yet; after the last line of a read, the next needs a read.
            (vec![b"a\n"], vec![false, false]),
            (vec![b"a\nb\nc\n"], vec![false, true, true, false]),
            // A partial line is not a line.
            (vec![b"a\nb", b"\n"], vec![false, false, false]),
            (vec![b"a\r\nb\r\n"], vec![false, true, false]),
            // A too-long line, its rest skipped up to its `\n`, then two lines in one read.
            (
                vec![&long[..], &long[..], &long[..100], b"x\nok\nmore\n"],
                vec![false, false, true, false],
            ),
        ];
        for (reads, expected) in rows {
            assert_eq!(readiness(&reads), expected, "reads {reads:?}");
        }
    }

    #[test]
    fn endless_line_is_reported_once() {
        let mut input = vec![b'y'; 1 << 20];
        input.extend_from_slice(b"\nafter\n");
        assert_eq!(lines(&input, 4096), vec![Line::TooLong, text("after")]);
    }

    /// Hands out `data` at most `step` bytes per read, with a `WouldBlock` after each piece,
    /// so the test gets control back between two reads and can look at what the reader holds.
    struct Pausing<'a> {
        data: &'a [u8],
        step: usize,
        paused: bool,
    }

    impl Read for Pausing<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.paused = !self.paused;
            if !self.paused && !self.data.is_empty() {
                return Err(ErrorKind::WouldBlock.into());
            }
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// The budget of the module header, checked after every read while a line too long
    /// arrives, so also at the last read before the limit is passed, when the reader holds
    /// the most.
    #[test]
    fn memory_stays_within_the_budget_up_to_the_moment_the_limit_is_passed() {
        let mut input = vec![b'y'; 3 * MAX_LINE_BYTES];
        input.extend_from_slice(b"\nafter\n");
        for step in [1, 7, 100, 1000, 5000, usize::MAX] {
            let mut reader = LineReader::new(Pausing {
                data: &input,
                step,
                paused: false,
            });
            let (mut got, mut most_gathered) = (Vec::new(), 0);
            loop {
                match reader.read_line() {
                    Ok(Some(line)) => got.push(line),
                    Ok(None) => break,
                    Err(e) => assert_eq!(e.kind(), ErrorKind::WouldBlock, "step {step}"),
                }
                let gathered = reader.partial.capacity();
                assert!(
                    gathered <= MAX_LINE_BYTES + 1,
                    "step {step}: {gathered} bytes held for one line"
                );
                assert!(reader.chunk.len() <= BUSY_READ_CHUNK, "step {step}");
                most_gathered = most_gathered.max(reader.partial.len());
            }
            assert_eq!(got, vec![Line::TooLong, text("after")], "step {step}");
            // The checks saw the reader one read short of the limit, at its fullest (the
            // first read is a small one; a read that fills it makes the next ones large).
            let piece = step.min(BUSY_READ_CHUNK);
            assert!(
                most_gathered + piece > MAX_LINE_BYTES + 1,
                "step {step}: saw at most {most_gathered} bytes gathered"
            );
        }
    }

    #[test]
    fn the_read_buffer_is_large_only_while_reads_fill_it_and_empty_while_waiting() {
        let line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrs\n";
        let paste: Vec<u8> = line.repeat(200); // 13,200 bytes: a small read, then large ones
        // (input, lines to read, bytes the last read took, next read large?)
        let rows: Vec<(&[u8], usize, usize, bool)> = vec![
            (b"hi\n", 1, 3, false),
            (&paste, 1, READ_CHUNK, true), // the first read filled the small buffer...
            (&paste, 7, READ_CHUNK, true), // (seven whole lines in it)
            (&paste, 8, BUSY_READ_CHUNK, true), // ...so the next is large, and filled it
            (&paste, 200, 13_200 - READ_CHUNK - BUSY_READ_CHUNK, false), // the rest: small again
        ];
        for (input, count, last_read, busy) in rows {
            let mut reader = LineReader::new(input);
            for _ in 0..count {
                let got = reader.read_line().ok().flatten();
                assert!(matches!(got, Some(Line::Text(_))), "{got:?}");
            }
            assert_eq!(reader.chunk.len(), last_read, "after {count} lines");
            assert_eq!(reader.busy, busy, "after {count} lines");
            assert!(reader.chunk.capacity() <= BUSY_READ_CHUNK);
        }
        // Everything consumed, the reader waits for the client with no buffer of its own.
        let mut reader = LineReader::new(&b"hi\n"[..]);
        reader.read_line().expect("in-memory read");
        assert_eq!(reader.read_line().expect("in-memory read"), None);
        assert_eq!(reader.chunk.capacity(), 0);
    }
}
