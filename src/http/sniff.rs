//! The sniff: telling a browser's request line from a chat user's first line by the first
//! bytes a connection sends on the chat port.
//!
//! This file owns that one decision ([`sniff`], pure) and the bounded read behind it
//! ([`read_sniff`]). It must not parse the request (the rest of `http.rs` does) or greet
//! a chat user (`connection.rs`), and it must never read a byte more than the decision
//! needs: those bytes belong to whoever reads the connection next.

use std::io::{self, ErrorKind, Read};

/// How many first bytes [`sniff`] needs at most to decide: `OPTIONS ` is the longest method
/// with its space.
pub const SNIFF_BYTES: usize = 8;

/// The request methods [`sniff`] recognises (RFC 9110, section 9, and PATCH).
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// What a connection's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    /// They start with a method and a space: an HTTP request line.
    Http,
    /// They cannot start a request line: a chat user.
    Chat,
    /// Too few bytes to tell (none at all, or `GE`).
    Undecided,
}

/// Classifies the first bytes a connection sent. A user name never contains a space, so a
/// chat user's first line (the name) can never start like `GET `.
pub fn sniff(first: &[u8]) -> Sniff {
    let mut undecided = false;
    for method in METHODS {
        let start = format!("{method} ");
        if first.starts_with(start.as_bytes()) {
            return Sniff::Http;
        }
        undecided |= start.as_bytes().starts_with(first);
    }
    if undecided {
        Sniff::Undecided
    } else {
        Sniff::Chat
    }
}

/// Reads a new connection's first bytes until [`sniff`] decides, at most [`SNIFF_BYTES`].
/// The caller bounds the wait on `source` (a read timeout or deadline of
/// [`SNIFF_WAIT`](crate::limits::SNIFF_WAIT)): a
/// read that times out means the client is waiting to be greeted, so it is a chat user. So
/// is a client that closes at once. Returns the decision and the bytes read, which belong
/// to whoever reads the connection next (see [`Prefixed`](super::Prefixed)).
pub fn read_sniff(source: &mut impl Read) -> io::Result<(Sniff, Vec<u8>)> {
    let mut first = Vec::with_capacity(SNIFF_BYTES);
    let mut buf = [0u8; SNIFF_BYTES];
    loop {
        match sniff(&first) {
            Sniff::Undecided => {}
            decided => return Ok((decided, first)),
        }
        // Never more than the decision needs: the rest belongs to the next reader.
        let want = SNIFF_BYTES - first.len();
        match source.read(&mut buf[..want]) {
            Ok(0) => return Ok((Sniff::Chat, first)),
            Ok(n) => first.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
                return Ok((Sniff::Chat, first));
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniff_table() {
        let rows: Vec<(&[u8], Sniff)> = vec![
            (b"", Sniff::Undecided),
            (b"G", Sniff::Undecided),
            (b"GE", Sniff::Undecided),
            (b"GET", Sniff::Undecided),
            (b"GET ", Sniff::Http),
            (b"GET / HTTP/1.1\r\n", Sniff::Http),
            (b"OPTIONS", Sniff::Undecided),
            (b"OPTIONS * HTTP/1.1", Sniff::Http),
            (b"POST /", Sniff::Http),
            (b"P", Sniff::Undecided),
            (b"PA", Sniff::Undecided), // PATCH
            (b"PATCH ", Sniff::Http),
            (b"GET\n", Sniff::Chat),   // a user typing GET as a name
            (b"GETTER ", Sniff::Chat), // not a method
            (b"get / HTTP/1.1", Sniff::Chat),
            (b"alice\n", Sniff::Chat),
            (b"Gandalf\n", Sniff::Chat),
            (b"\n", Sniff::Chat),
            (b" GET ", Sniff::Chat),
            (b"\x16\x03\x01", Sniff::Chat), // a TLS ClientHello: not HTTP either
        ];
        for (first, expected) in rows {
            assert_eq!(
                sniff(first),
                expected,
                "{:?}",
                String::from_utf8_lossy(first)
            );
        }
        assert!(METHODS.iter().all(|m| m.len() < SNIFF_BYTES));
    }

    #[test]
    fn read_sniff_table() {
        /// Hands out its pieces one per read, then times out (a client gone quiet).
        struct Pieces(Vec<&'static [u8]>);
        impl Read for Pieces {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() {
                    return Err(ErrorKind::TimedOut.into());
                }
                let piece = self.0.remove(0);
                let n = piece.len().min(buf.len());
                buf[..n].copy_from_slice(&piece[..n]);
                if n < piece.len() {
                    self.0.insert(0, &piece[n..]);
                }
                Ok(n)
            }
        }
        // (what the client sends, one entry per read, the decision, the bytes taken: never
        // more than SNIFF_BYTES, and no read after the decision)
        type Reads = Vec<&'static [u8]>;
        let rows: Vec<(Reads, Sniff, &[u8])> = vec![
            (vec![], Sniff::Chat, b""),
            (vec![b"GET / HTTP/1.1\r\n\r\n"], Sniff::Http, b"GET / HT"),
            (vec![b"G", b"E", b"T", b" /"], Sniff::Http, b"GET /"),
            (vec![b"OPTIONS * HTTP/1.1\r\n"], Sniff::Http, b"OPTIONS "),
            (vec![b"alice\npw\n"], Sniff::Chat, b"alice\npw"),
            (vec![b"a", b"lice\n"], Sniff::Chat, b"a"),
            (vec![b"GE"], Sniff::Chat, b"GE"),
            (vec![b"GET\n"], Sniff::Chat, b"GET\n"),
            (vec![b"", b"GET "], Sniff::Chat, b""), // closed at once
        ];
        for (pieces, decision, taken) in rows {
            let label = format!("{pieces:?}");
            let (got, bytes) = read_sniff(&mut Pieces(pieces)).expect("in-memory read");
            assert_eq!((got, bytes.as_slice()), (decision, taken), "{label}");
        }
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(ErrorKind::ConnectionReset.into())
            }
        }
        assert!(read_sniff(&mut Broken).is_err());
    }
}
