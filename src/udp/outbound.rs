//! How lines reach a UDP client: whole lines packed into datagrams, sent with `send_to`.
//!
//! This module owns [`UdpTransport`], the UDP implementation of the outbox's
//! [`Transport`], and the packing rule: as many whole lines as fit in
//! [`UDP_MAX_DATAGRAM`] bytes go in one datagram, so no reply is ever fragmented and no line
//! is cut between two datagrams unless it is longer than one datagram by itself. It must
//! not queue lines (that is the outbox) or read anything (that is `inbound.rs`).
//!
//! UDP cannot push back. A write never waits for the client and never comes back short: a
//! datagram the kernel refuses is lost, alone, and the lines in the other datagrams still go
//! out. So the outbox never needs a writer thread for a UDP client.

use std::io::{self, ErrorKind};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

use super::inbound::Inlet;
use crate::limits::UDP_MAX_DATAGRAM;
use crate::log;
use crate::transport::Transport;

/// One UDP client's outbound side: the server's one socket, and the client's address.
pub struct UdpTransport {
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    /// The session's inbound side, which a hang-up ends.
    inlet: Inlet,
}

impl UdpTransport {
    pub fn new(socket: Arc<UdpSocket>, peer: SocketAddr, inlet: Inlet) -> UdpTransport {
        UdpTransport {
            socket,
            peer,
            inlet,
        }
    }

    fn send(&self, datagram: &[u8]) -> io::Result<usize> {
        loop {
            match self.socket.send_to(datagram, self.peer) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }
}

impl Transport for UdpTransport {
    /// Lines go as they are; the packing happens in `write`, which sees them all at once.
    fn encode(&self, lines: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(lines.as_bytes());
    }

    /// Sends all of `bytes` as packed datagrams. A datagram the kernel refuses (its send
    /// buffer stayed full for the socket's send timeout, the route is gone) is lost alone.
    fn write(&self, bytes: &[u8]) -> io::Result<usize> {
        if self.inlet.is_hung_up() {
            return Err(ErrorKind::BrokenPipe.into());
        }
        for datagram in Packed::new(bytes, UDP_MAX_DATAGRAM) {
            if let Err(e) = self.send(datagram) {
                log::debug(
                    "udp_send_failed",
                    &[
                        ("peer", &self.peer),
                        ("bytes", &datagram.len()),
                        ("error", &e),
                    ],
                );
            }
        }
        Ok(bytes.len())
    }

    /// A UDP write never waits for the client, so there is nothing to switch.
    fn set_patient(&self, _patient: bool) -> io::Result<()> {
        Ok(())
    }

    /// Ends the session: its thread's next read finds the inbox closed.
    fn hang_up(&self) {
        self.inlet.hang_up();
    }
}

/// `bytes` cut into datagrams of at most `max` bytes, each holding as many whole lines as
/// fit. A line longer than `max` by itself is the one exception: it goes in pieces of `max`
/// bytes (cut between characters, so each piece is valid UTF-8 if the line is), and its
/// last piece may carry the lines that follow. A terminal shows the pieces as one line,
/// since only the last ends in `\n`.
pub struct Packed<'a> {
    rest: &'a [u8],
    max: usize,
}

impl<'a> Packed<'a> {
    /// `max` must leave room for a whole character: at least 4 bytes.
    pub fn new(bytes: &'a [u8], max: usize) -> Packed<'a> {
        Packed {
            rest: bytes,
            max: max.max(4),
        }
    }
}

impl<'a> Iterator for Packed<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let mut end = 0;
        while end < self.rest.len() {
            let line_end = self.rest[end..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(self.rest.len(), |i| end + i + 1);
            if line_end > self.max {
                break;
            }
            end = line_end;
        }
        if end == 0 {
            end = char_boundary_at_or_before(self.rest, self.max);
        }
        let (datagram, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(datagram)
    }
}

/// The largest cut `<= max` (and `< bytes.len()`) that falls between two UTF-8 characters;
/// `max` itself if there is none (the bytes are not UTF-8 there).
fn char_boundary_at_or_before(bytes: &[u8], max: usize) -> usize {
    let is_continuation = |b: u8| b & 0b1100_0000 == 0b1000_0000;
    (1..=max)
        .rev()
        .find(|&cut| !is_continuation(bytes[cut]))
        .unwrap_or(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(bytes: &str, max: usize) -> Vec<&str> {
        Packed::new(bytes.as_bytes(), max)
            .map(|d| std::str::from_utf8(d).expect("pieces are cut between characters"))
            .collect()
    }

    #[test]
    fn packing_table() {
        let rows: Vec<(&str, usize, Vec<&str>)> = vec![
            ("", 10, vec![]),
            ("a\n", 10, vec!["a\n"]),
            ("a\nb\nc\n", 10, vec!["a\nb\nc\n"]),
            // Exactly full, then one byte over.
            ("1234\n6789\n", 10, vec!["1234\n6789\n"]),
            ("1234\n67890\n", 10, vec!["1234\n", "67890\n"]),
            ("aaa\nbbb\nccc\nddd\n", 8, vec!["aaa\nbbb\n", "ccc\nddd\n"]),
            // A line longer than a datagram: pieces of the maximum, the last one packed
            // with what follows.
            ("0123456789abc\nz\n", 6, vec!["012345", "6789ab", "c\nz\n"]),
            // Cut between characters (é is two bytes), never inside one.
            ("ééééé\n", 5, vec!["éé", "éé", "é\n"]),
            ("ab€€\n", 4, vec!["ab", "€", "€\n"]),
        ];
        for (bytes, max, expected) in rows {
            assert_eq!(pack(bytes, max), expected, "{bytes:?} in {max}");
        }
    }

    /// The rule on every cut of a long mixed text: no datagram over the size, the pieces
    /// add up to the input, and every datagram ends at a line's end unless it holds a
    /// piece of a line longer than a datagram.
    #[test]
    fn no_datagram_is_over_the_size_and_no_line_that_fits_is_cut() {
        let mut text = String::new();
        for i in 0..300 {
            let len = (i * 37) % 1500;
            text.push_str(&"ü".repeat(len / 2));
            text.push('\n');
        }
        let datagrams = pack(&text, UDP_MAX_DATAGRAM);
        assert_eq!(datagrams.concat(), text);
        let mut in_long_line = false;
        for datagram in &datagrams {
            assert!(
                datagram.len() <= UDP_MAX_DATAGRAM,
                "{} bytes",
                datagram.len()
            );
            let ends_a_line = datagram.ends_with('\n');
            if !ends_a_line {
                // Only a line too long for one datagram may be cut.
                let cut_line = datagram.rsplit('\n').next().unwrap_or_default();
                assert!(
                    in_long_line || cut_line.len() == datagram.len(),
                    "a line that fits was cut"
                );
                assert!(
                    datagram.len() > UDP_MAX_DATAGRAM - 4,
                    "a piece is a full datagram"
                );
            }
            in_long_line = !ends_a_line;
        }
        // Every line that fits a datagram is whole in one of them.
        let lines_fitting = text
            .split_inclusive('\n')
            .filter(|line| line.len() <= UDP_MAX_DATAGRAM);
        for line in lines_fitting {
            assert!(
                datagrams
                    .iter()
                    .any(|d| d.split_inclusive('\n').any(|l| l == line)),
                "line of {} bytes not whole in any datagram",
                line.len()
            );
        }
    }
}
