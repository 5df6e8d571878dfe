//! The proof that a UDP source address is real, and the one reply an unproven address gets.
//!
//! Anyone can send a datagram with someone else's source address. A server that answered
//! such a datagram at length, or signed its "sender" in and sent it the room's traffic,
//! would be an amplifier aimed at that someone. So before a session exists, an address
//! gets one short reply asking the user to type a code shown in it, and only an address
//! that sends the code back gets a session: it has shown that it receives what is sent to
//! it. The code works like a TCP SYN cookie: it is a keyed MAC of the address and a time
//! window, so checking it needs nothing remembered per address, and a flood of forged
//! datagrams costs no memory.
//!
//! This module owns the code, its time windows, the check and the reply's text and size.
//! It must not send or receive (the dispatcher in `udp.rs` does) and must not remember
//! anything about an address.

use std::fs::File;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::crypto::{constant_time_eq, hmac_sha256};
use crate::limits::{UDP_AMPLIFICATION, UDP_CODE_DIGITS};

/// The secret the codes are made with: random, made at start, never stored, so every code
/// dies with the process.
pub struct Key([u8; 32]);

impl Key {
    pub fn random() -> io::Result<Key> {
        let mut key = [0u8; 32];
        File::open("/dev/urandom")?.read_exact(&mut key)?;
        Ok(Key(key))
    }

    #[cfg(test)]
    pub fn from_bytes(key: [u8; 32]) -> Key {
        Key(key)
    }
}

/// Numbers the time windows of codes: window 0 starts when the server does.
pub struct Windows {
    start: Instant,
    length: Duration,
}

impl Windows {
    pub fn new(start: Instant, length: Duration) -> Windows {
        Windows { start, length }
    }

    /// The number of the window `now` falls in.
    pub fn at(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.start).as_millis();
        let window = elapsed / self.length.as_millis().max(1);
        u64::try_from(window).unwrap_or(u64::MAX)
    }
}

/// The code for `addr` in `window`: [`UDP_CODE_DIGITS`] decimal digits, from an
/// HMAC-SHA256 of the window, the IP address and the port. An IPv4 address and the same
/// address mapped into IPv6 (as a dual-stack socket reports it) get the same code.
pub fn code(key: &Key, addr: SocketAddr, window: u64) -> String {
    let mut message = Vec::with_capacity(48);
    message.extend_from_slice(b"ptchat udp code\0");
    message.extend_from_slice(&window.to_be_bytes());
    message.extend_from_slice(&canonical(addr.ip()).octets());
    message.extend_from_slice(&addr.port().to_be_bytes());
    let mac = hmac_sha256(&key.0, &message);
    let mut first = [0u8; 8];
    first.copy_from_slice(&mac[..8]);
    // 2^64 is over 10^11 times 10^8: the bias of the remainder is far below a guess's odds.
    let modulus = 10u64.pow(UDP_CODE_DIGITS as u32);
    format!(
        "{:0width$}",
        u64::from_be_bytes(first) % modulus,
        width = UDP_CODE_DIGITS
    )
}

fn canonical(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// What the first line of a datagram from an unproven address is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// The code of this address, of this window or the one before.
    Valid,
    /// Digits, but not a code this address may use now: a typo, or a code that expired.
    Wrong,
    /// Anything else: the user has not been asked for a code yet.
    NoCode,
}

/// Checks the first line of `datagram` from `addr`, in window `now`.
pub fn check(key: &Key, addr: SocketAddr, now: u64, datagram: &[u8]) -> Check {
    let typed = first_line(datagram).trim_ascii();
    if typed.len() < 4 || !typed.iter().all(u8::is_ascii_digit) {
        return Check::NoCode;
    }
    // Both codes are compared, in constant time, whichever matches.
    let current = constant_time_eq(typed, code(key, addr, now).as_bytes());
    let previous = now
        .checked_sub(1)
        .is_some_and(|before| constant_time_eq(typed, code(key, addr, before).as_bytes()));
    if current | previous {
        Check::Valid
    } else {
        Check::Wrong
    }
}

/// The datagram's bytes up to its first `\n` (all of it if there is none).
pub fn first_line(datagram: &[u8]) -> &[u8] {
    let end = datagram.iter().position(|&b| b == b'\n');
    &datagram[..end.unwrap_or(datagram.len())]
}

/// What follows the first line of `datagram`: lines sent along with the code, which the
/// new session reads as if they had come in a datagram of their own.
pub fn after_first_line(datagram: &[u8]) -> &[u8] {
    let end = datagram.iter().position(|&b| b == b'\n');
    end.map_or(&[], |i| &datagram[i + 1..])
}

/// Bytes of IP and UDP headers a datagram to or from `addr` carries on the wire: 20 + 8 for
/// IPv4 (also when a dual-stack socket shows it mapped into IPv6), 40 + 8 for IPv6.
pub fn header_bytes(addr: SocketAddr) -> usize {
    match addr.ip() {
        IpAddr::V4(_) => 28,
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => 28,
        IpAddr::V6(_) => 48,
    }
}

/// The largest reply payload allowed for a datagram of `payload` bytes: replies may be at
/// most [`UDP_AMPLIFICATION`] times the datagram they answer, both counted on the wire.
pub fn reply_room(payload: usize, header: usize) -> usize {
    (UDP_AMPLIFICATION * (payload + header)).saturating_sub(header)
}

/// Every reply before proof starts with one of these, so a server that receives one can
/// tell it from a person's first line and stay silent. Otherwise two servers, each
/// handed one forged datagram with the other's address, would answer each other forever.
const REPLY_STARTS: [&[u8]; 2] = [b"* ptchat:", b"! ptchat:"];

/// True if `datagram` is a reply a ptchat server sends before proof.
pub fn is_reply(datagram: &[u8]) -> bool {
    REPLY_STARTS.iter().any(|start| datagram.starts_with(start))
}

/// The reply to a datagram of `payload` bytes from an unproven address, carrying `code`:
/// the longest wording that fits [`reply_room`], or `None` if none does (then the datagram
/// gets no reply at all). The code is the only run of digits in it.
pub fn reply(check: &Check, code: &str, payload: usize, header: usize) -> Option<String> {
    let wordings = match check {
        Check::Wrong => [
            format!("! ptchat: that code is wrong or expired. Type {code} and press Enter.\n"),
            format!("! ptchat: wrong code; type {code}\n"),
        ],
        Check::NoCode | Check::Valid => [
            format!("* ptchat: to join over UDP, type the code {code} and press Enter.\n"),
            format!("* ptchat: type {code} to join.\n"),
        ],
    };
    let room = reply_room(payload, header);
    wordings.into_iter().find(|text| text.len() <= room)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::from_bytes([7; 32])
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    #[test]
    fn a_code_is_eight_digits_and_differs_by_key_window_address_and_port() {
        let here = addr("192.0.2.1:40000");
        let code = code(&key(), here, 5);
        assert_eq!(code.len(), UDP_CODE_DIGITS);
        assert!(code.bytes().all(|b| b.is_ascii_digit()), "{code}");
        let others = [
            super::code(&Key::from_bytes([8; 32]), here, 5),
            super::code(&key(), here, 6),
            super::code(&key(), addr("192.0.2.2:40000"), 5),
            super::code(&key(), addr("192.0.2.1:40001"), 5),
        ];
        for other in others {
            assert_ne!(code, other);
        }
        let mapped = addr("[::ffff:192.0.2.1]:40000");
        assert_eq!(
            code,
            super::code(&key(), mapped, 5),
            "same address, two spellings"
        );
    }

    #[test]
    fn check_table() {
        let (key, here) = (key(), addr("192.0.2.1:40000"));
        let now = 10;
        let code_at = |window| code(&key, here, window);
        let for_other_address = code(&key, addr("192.0.2.9:40000"), now);
        let for_other_port = code(&key, addr("192.0.2.1:40002"), now);
        let rows: Vec<(String, Check)> = vec![
            (format!("{}\n", code_at(now)), Check::Valid),
            (code_at(now), Check::Valid), // no newline: nc -u may send none
            (format!("  {}\r\n", code_at(now)), Check::Valid),
            (format!("{}\nalice\n", code_at(now)), Check::Valid),
            (format!("{}\n", code_at(now - 1)), Check::Valid), // previous window
            (format!("{}\n", code_at(now - 2)), Check::Wrong), // older: expired
            (format!("{}\n", code_at(now + 1)), Check::Wrong), // not yet
            (format!("{for_other_address}\n"), Check::Wrong),
            (format!("{for_other_port}\n"), Check::Wrong),
            (format!("{}9\n", code_at(now)), Check::Wrong),
            ("1234\n".into(), Check::Wrong),
            ("123\n".into(), Check::NoCode),
            ("alice\nsecret\nhello\n".into(), Check::NoCode),
            (format!("x{}\n", code_at(now)), Check::NoCode),
            (format!("alice\n{}\n", code_at(now)), Check::NoCode), // only the first line
            ("\n".into(), Check::NoCode),
            (String::new(), Check::NoCode),
        ];
        for (datagram, expected) in rows {
            assert_eq!(
                check(&key, here, now, datagram.as_bytes()),
                expected,
                "{datagram:?}"
            );
        }
        // Window 0 has no previous window.
        assert_eq!(check(&key, here, 0, code_at(0).as_bytes()), Check::Valid);
    }

    #[test]
    fn windows_are_numbered_from_the_start() {
        let start = Instant::now();
        let windows = Windows::new(start, Duration::from_secs(60));
        let rows = [(0, 0), (59_999, 0), (60_000, 1), (150_000, 2)];
        for (ms, window) in rows {
            assert_eq!(
                windows.at(start + Duration::from_millis(ms)),
                window,
                "{ms} ms"
            );
        }
    }

    /// The runs of 4 or more digits in `text`.
    fn digit_runs(text: &str) -> Vec<&str> {
        text.split(|c: char| !c.is_ascii_digit())
            .filter(|run| run.len() >= 4)
            .collect()
    }

    #[test]
    fn every_reply_fits_three_times_the_datagram_on_the_wire_and_shows_only_the_code() {
        let code = "01234567";
        for header in [28, 48] {
            for payload in 0..=200 {
                for check in [Check::NoCode, Check::Wrong] {
                    let reply = reply(&check, code, payload, header)
                        .unwrap_or_else(|| panic!("no reply to {payload} bytes"));
                    assert!(
                        reply.len() + header <= UDP_AMPLIFICATION * (payload + header),
                        "{} bytes out for {payload} in",
                        reply.len()
                    );
                    assert_eq!(digit_runs(&reply), [code], "{reply:?}");
                    assert!(is_reply(reply.as_bytes()), "{reply:?}");
                    assert!(reply.ends_with('\n'));
                }
            }
        }
        // The example: a two-byte line leaves 62 bytes.
        assert_eq!(reply_room(2, 28), 62);
        let short = reply(&Check::NoCode, code, 2, 28).expect("reply");
        assert!(short.len() <= 62, "{short:?}");
        // A datagram with room for the long wording gets it.
        let long = reply(&Check::NoCode, code, 20, 28).expect("reply");
        assert!(long.len() > short.len(), "{long:?}");
    }

    #[test]
    fn headers_are_counted_by_what_goes_on_the_wire() {
        let rows = [
            ("192.0.2.1:5000", 28),
            ("[::ffff:192.0.2.1]:5000", 28), // IPv4 through a dual-stack socket
            ("[2001:db8::1]:5000", 48),
        ];
        for (peer, bytes) in rows {
            assert_eq!(header_bytes(addr(peer)), bytes, "{peer}");
        }
    }

    #[test]
    fn no_wording_fits_no_reply() {
        // Only with headers smaller than any real one; the bound is checked, not assumed.
        assert_eq!(reply(&Check::NoCode, "01234567", 0, 4), None);
    }

    #[test]
    fn our_replies_are_recognised_and_a_persons_lines_are_not() {
        let rows: [(&[u8], bool); 6] = [
            (b"* ptchat: type 01234567 to join.\n", true),
            (b"! ptchat: wrong code; type 01234567\n", true),
            (b"hello\n", false),
            (b"* hello\n", false),
            (b"", false),
            (b"01234567\n", false),
        ];
        for (datagram, ours) in rows {
            assert_eq!(is_reply(datagram), ours, "{datagram:?}");
        }
    }

    #[test]
    fn lines_after_the_code_are_kept() {
        let rows: [(&[u8], &[u8]); 4] = [
            (b"01234567\nalice\npw\n", b"alice\npw\n"),
            (b"01234567\n", b""),
            (b"01234567", b""),
            (b"\n", b""),
        ];
        for (datagram, rest) in rows {
            assert_eq!(after_first_line(datagram), rest, "{datagram:?}");
        }
    }
}
