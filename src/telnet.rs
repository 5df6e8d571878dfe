//! Telnet, as a server that speaks none of its options: the commands a telnet client mixes
//! into its bytes are taken out, and every option it asks for is refused (RFC 854, 855).
//!
//! This module owns telnet's command syntax. [`Filter`] sits between a TCP socket and the
//! `LineReader`: it removes the commands from the bytes as they arrive, however the reads
//! split them, and hands its refusals to a callback during the read that brought the
//! request, not when the next line ends. [`strip`] removes them from one line that came
//! where nobody can answer (`clean.rs` uses it). The module must not frame lines, clean
//! text or write to a socket: the server routes the refusals through the client's outbox,
//! so one never lands inside another line.
//!
//! Why answer at all: for Ctrl-C, telnet sends `IAC IP IAC DO TIMING-MARK` and then throws
//! away everything it receives until the server answers the DO. A server that drops the
//! command in silence leaves that user deaf to the chat. Refusing is the whole answer a
//! server without options owes: `IAC DO x` gets `IAC WONT x`, `IAC WILL x` gets `IAC DONT
//! x`, and `WONT` and `DONT`, which only confirm what is already so, get nothing, so two
//! parties can never answer each other in a loop.

use crate::limits::MAX_SUBNEGOTIATION_BYTES;
use std::borrow::Cow;
use std::io::{self, Read};

/// "Interpret as command": the byte that starts every telnet command; `IAC IAC` is the data
/// byte 0xFF.
const IAC: u8 = 0xFF;
/// `IAC DONT x`: "please stop using option x" (and our refusal of `IAC WILL x`).
const DONT: u8 = 0xFE;
/// `IAC DO x`: "please start using option x".
const DO: u8 = 0xFD;
/// `IAC WONT x`: "I will not use option x" (and our refusal of `IAC DO x`).
const WONT: u8 = 0xFC;
/// `IAC WILL x`: "I want to use option x".
const WILL: u8 = 0xFB;
/// `IAC SB x ... IAC SE`: a subnegotiation of option x.
const SB: u8 = 0xFA;
/// The two-byte commands run from SE (0xF0, the end of a subnegotiation) to GA (0xF9), with
/// IP (0xF4, Ctrl-C) among them.
const SE: u8 = 0xF0;
const GA: u8 = 0xF9;

/// Where the decoder is in the byte stream. A command cut by the end of one read goes on
/// in the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    #[default]
    Data,
    /// After `IAC`: a command byte comes next.
    Command,
    /// After `IAC WILL`, `WONT`, `DO` or `DONT` (the verb kept here): the option comes next.
    Option(u8),
    /// Inside `IAC SB`, `seen` bytes in; `after_iac` if the last one was an `IAC`.
    Subnegotiation { seen: usize, after_iac: bool },
}

/// What one byte turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decoded {
    /// Part of a command.
    Nothing,
    /// A data byte.
    Data(u8),
    /// The `IAC` before this byte started no command: both are data, left to the cleaning.
    NotACommand(u8),
    /// A request for an option, and its refusal to send back.
    Refused([u8; 3]),
}

/// The telnet state machine, one byte at a time.
#[derive(Debug, Default)]
struct Decoder {
    state: State,
}

impl Decoder {
    fn feed(&mut self, byte: u8) -> Decoded {
        let (next, decoded) = match (self.state, byte) {
            (State::Data, IAC) => (State::Command, Decoded::Nothing),
            (State::Data, _) => (State::Data, Decoded::Data(byte)),
            (State::Command, IAC) => (State::Data, Decoded::Data(IAC)),
            (State::Command, SB) => (subnegotiation(0, false), Decoded::Nothing),
            (State::Command, WILL..=DONT) => (State::Option(byte), Decoded::Nothing),
            (State::Command, SE..=GA) => (State::Data, Decoded::Nothing),
            (State::Command, _) => (State::Data, Decoded::NotACommand(byte)),
            (State::Option(verb), option) => (State::Data, refusal(verb, option)),
            (
                State::Subnegotiation {
                    after_iac: true, ..
                },
                SE,
            ) => (State::Data, Decoded::Nothing),
            (State::Subnegotiation { seen, after_iac }, _) => {
                // Inside, `IAC IAC` is a data byte of the subnegotiation, like any other.
                let after_iac = !after_iac && byte == IAC;
                (subnegotiation(seen + 1, after_iac), Decoded::Nothing)
            }
        };
        self.state = next;
        decoded
    }

    /// The end of the stream: an `IAC` that ended it started no command, so it is data.
    /// Any other command cut short is dropped as far as it went.
    fn finish(&mut self) -> Option<u8> {
        let state = std::mem::take(&mut self.state);
        (state == State::Command).then_some(IAC)
    }
}

/// Inside a subnegotiation, unless it has gone on too long to be one.
fn subnegotiation(seen: usize, after_iac: bool) -> State {
    if seen >= MAX_SUBNEGOTIATION_BYTES {
        return State::Data;
    }
    State::Subnegotiation { seen, after_iac }
}

/// What a server without options answers to `IAC verb option`.
fn refusal(verb: u8, option: u8) -> Decoded {
    match verb {
        DO => Decoded::Refused([IAC, WONT, option]),
        WILL => Decoded::Refused([IAC, DONT, option]),
        // WONT and DONT confirm what is already so: answering them could start a loop.
        _ => Decoded::Nothing,
    }
}

/// Removes telnet commands from one line's bytes that arrived where no answer can go (a
/// UDP datagram, say): `IAC` with its command byte (`IAC IP`, which telnet sends for
/// Ctrl-C), `IAC WILL/WONT/DO/DONT` with their option byte, `IAC SB ... IAC SE`. `IAC IAC`
/// is one data byte 0xFF. A command cut short by the end of the line is dropped as far as it
/// goes; an `IAC` before anything else is not telnet and stays.
pub fn strip(bytes: &[u8]) -> Cow<'_, [u8]> {
    if !bytes.contains(&IAC) {
        return Cow::Borrowed(bytes);
    }
    let mut decoder = Decoder::default();
    let mut out = Vec::with_capacity(bytes.len());
    for &byte in bytes {
        match decoder.feed(byte) {
            Decoded::Data(byte) => out.push(byte),
            Decoded::NotACommand(byte) => out.extend([IAC, byte]),
            Decoded::Nothing | Decoded::Refused(_) => {}
        }
    }
    out.extend(decoder.finish());
    Cow::Owned(out)
}

/// A [`Read`] that passes on the data of a telnet byte stream and refuses every option the
/// client asks for: the refusals of one read go to `answer` together, before the read
/// returns.
pub struct Filter<R, F> {
    source: R,
    decoder: Decoder,
    /// A data byte decoded but not yet returned, for lack of room (see [`Filter::decode`]).
    held: Option<u8>,
    answer: F,
}

impl<R: Read, F: FnMut(&[u8])> Filter<R, F> {
    pub fn new(source: R, answer: F) -> Self {
        Filter {
            source,
            decoder: Decoder::default(),
            held: None,
            answer,
        }
    }

    /// The reader underneath, e.g. to change its deadline.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.source
    }

    /// Decodes `buf[from..end]` in place: the data moves to the front of `buf`, and its
    /// length is returned with the refusals to send. Data never overtakes the bytes still to
    /// decode, since a command gives up its place and `IAC IAC` gives one byte for two. The
    /// one exception is an `IAC` that ended the last read and turns out to be data, with the
    /// byte after it: two bytes out for one in. [`Read::read`] leaves a byte of room for it
    /// (`from` is 1); a buffer of one byte has none, so the second is held for the next read.
    fn decode(&mut self, buf: &mut [u8], from: usize, end: usize) -> (usize, Vec<u8>) {
        let mut refusals = Vec::new();
        let mut len = 0;
        for i in from..end {
            match self.decoder.feed(buf[i]) {
                Decoded::Nothing => {}
                Decoded::Data(byte) => {
                    buf[len] = byte;
                    len += 1;
                }
                Decoded::NotACommand(byte) => {
                    buf[len] = IAC;
                    len += 1;
                    if len <= i {
                        buf[len] = byte;
                        len += 1;
                    } else {
                        self.held = Some(byte);
                    }
                }
                Decoded::Refused(refusal) => refusals.extend_from_slice(&refusal),
            }
        }
        (len, refusals)
    }
}

impl<R: Read, F: FnMut(&[u8])> Read for Filter<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if let Some(byte) = self.held.take() {
            buf[0] = byte;
            return Ok(1);
        }
        loop {
            // Room for an IAC that ended the last read, should it be data (see `decode`).
            let from = usize::from(self.decoder.state == State::Command && buf.len() > 1);
            let got = self.source.read(&mut buf[from..])?;
            if got == 0 {
                let Some(byte) = self.decoder.finish() else {
                    return Ok(0);
                };
                buf[0] = byte;
                return Ok(1);
            }
            // Most reads hold no command at all: they pass as they came.
            if self.decoder.state == State::Data && !buf[..got].contains(&IAC) {
                return Ok(got);
            }
            let (len, refusals) = self.decode(buf, from, from + got);
            if !refusals.is_empty() {
                (self.answer)(&refusals);
            }
            // Only commands came (Ctrl-C without a newline, say): they are answered, so
            // waiting for more now keeps nobody waiting. Returning 0 would mean the end.
            if len > 0 {
                return Ok(len);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out the given reads one by one, then the end of the stream.
    struct Reads(Vec<Vec<u8>>);

    impl Read for Reads {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Ok(0);
            }
            let next = &mut self.0[0];
            let n = next.len().min(buf.len());
            buf[..n].copy_from_slice(&next[..n]);
            next.drain(..n);
            if next.is_empty() {
                self.0.remove(0);
            }
            Ok(n)
        }
    }

    /// Everything a [`Filter`] returns for `reads`, read `size` bytes at a time, and the
    /// refusals it answered, one entry per call.
    fn filter(reads: Vec<Vec<u8>>, size: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut answered = Vec::new();
        let mut filter = Filter::new(Reads(reads), |bytes: &[u8]| answered.push(bytes.to_vec()));
        let (mut data, mut buf) = (Vec::new(), vec![0; size]);
        loop {
            match filter.read(&mut buf).expect("in-memory read") {
                0 => break,
                n => data.extend_from_slice(&buf[..n]),
            }
        }
        drop(filter);
        (data, answered)
    }

    /// Every way `input` can arrive: in one read, cut once at every byte, a byte per read.
    fn splits(input: &[u8]) -> Vec<Vec<Vec<u8>>> {
        let mut all = vec![
            vec![input.to_vec()],
            input.iter().map(|&b| vec![b]).collect(),
        ];
        for cut in 1..input.len() {
            all.push(vec![input[..cut].to_vec(), input[cut..].to_vec()]);
        }
        all
    }

    #[test]
    fn filter_table() {
        // The longest subnegotiation taken whole, and one that never ends.
        let sub = |len: usize, end: &[u8]| [&b"\xff\xfa"[..], &vec![b'a'; len], end].concat();
        let (longest_sub, endless_sub) = (
            sub(MAX_SUBNEGOTIATION_BYTES - 2, b"\xff\xf0ok\n"),
            sub(MAX_SUBNEGOTIATION_BYTES, b"ok\n"),
        );
        // (input, data passed on, refusals sent back)
        let rows: Vec<(&[u8], &[u8], &[u8])> = vec![
            (b"hello\n", b"hello\n", b""),
            (b"", b"", b""),
            // Ctrl-C: IAC IP, then IAC DO TIMING-MARK, answered WONT; no newline needed.
            (b"\xff\xf4\xff\xfd\x06", b"", b"\xff\xfc\x06"),
            (b"\xff\xf4\xff\xfd\x06hi\n", b"hi\n", b"\xff\xfc\x06"),
            // WILL is answered DONT; WONT and DONT never, so nothing can loop.
            (b"\xff\xfb\x1fx", b"x", b"\xff\xfe\x1f"),
            (b"\xff\xfc\x01\xff\xfe\x03x", b"x", b""),
            (
                b"\xff\xfb\x1f\xff\xfb\x18\xff\xfd\x03name\r\n",
                b"name\r\n",
                b"\xff\xfe\x1f\xff\xfe\x18\xff\xfc\x03",
            ),
            // The option byte is any byte, a `\n` or an IAC too: it ends no line.
            (b"\xff\xfd\nhi\n", b"hi\n", b"\xff\xfc\n"),
            (b"\xff\xfd\xffhi", b"hi", b"\xff\xfc\xff"),
            // Every two-byte command: SE, NOP, DM, BRK, IP, AO, AYT, EC, EL, GA.
            (
                b"a\xff\xf0\xff\xf1\xff\xf2\xff\xf3\xff\xf4\xff\xf5\xff\xf6\xff\xf7\xff\xf8\xff\xf9b",
                b"ab",
                b"",
            ),
            // Subnegotiations go whole, a `\n` inside too (a window 10 columns wide), and
            // `IAC IAC` inside is theirs.
            (b"\xff\xfa\x18\x00xterm\xff\xf0x", b"x", b""),
            (b"\xff\xfa\x1f\x00\x0a\x00\x18\xff\xf0z\n", b"z\n", b""),
            (b"\xff\xfa\x18\x00\xff\xff\xff\xf0y", b"y", b""),
            (b"\xff\xfa\x18\xff\xff\xf0still inside\xff\xf0y", b"y", b""),
            (b"\xff\xfa\x18\xff\x01still inside\xff\xf0y", b"y", b""),
            (&longest_sub, b"ok\n", b""),
            (&endless_sub, b"ok\n", b""),
            // IAC IAC is the data byte 0xFF; an IAC before a byte that is no command is data
            // with it, left for the cleaning to show as U+FFFD.
            (b"a\xff\xffb", b"a\xffb", b""),
            (b"\xff\xff\xfb\x01", b"\xff\xfb\x01", b""),
            (b"x\xffy", b"x\xffy", b""),
            (b"bad \xfe\xff utf8", b"bad \xfe\xff utf8", b""),
            (b"x\xff", b"x\xff", b""),
            // A command cut by the end of the stream is dropped as far as it went.
            (b"cut\xff\xfd", b"cut", b""),
            (b"cut\xff\xfa\x18", b"cut", b""),
        ];
        for (input, data, refusals) in rows {
            assert_eq!(&*strip(input), data, "strip {input:?}");
            for reads in splits(input) {
                for size in [1, 2, 3, 512] {
                    let (got, answered) = filter(reads.clone(), size);
                    let context = format!("input {input:?} in reads {reads:?} of {size}");
                    assert_eq!(got, data, "{context}");
                    assert_eq!(answered.concat(), refusals, "{context}");
                }
            }
        }
    }

    /// The refusals of one read go out together, and before the read returns: a client
    /// waiting for its answer is never kept waiting for a line to end.
    #[test]
    fn refusals_are_answered_during_the_read_that_brought_them() {
        /// One read of `data`, then "nothing yet" (a read timeout) for ever.
        struct ThenWait(Option<&'static [u8]>);
        impl Read for ThenWait {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let Some(data) = self.0.take() else {
                    return Err(io::ErrorKind::WouldBlock.into());
                };
                buf[..data.len()].copy_from_slice(data);
                Ok(data.len())
            }
        }
        let mut answered = Vec::new();
        let offers = b"\xff\xfb\x1f\xff\xfb\x18\xff\xf4\xff\xfd\x06";
        let mut filter = Filter::new(ThenWait(Some(offers)), |bytes: &[u8]| {
            answered.push(bytes.to_vec())
        });
        let read = filter.read(&mut [0; 64]);
        assert_eq!(read.map_err(|e| e.kind()), Err(io::ErrorKind::WouldBlock));
        assert_eq!(
            answered,
            vec![b"\xff\xfe\x1f\xff\xfe\x18\xff\xfc\x06".to_vec()]
        );
    }
}
