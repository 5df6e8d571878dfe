//! The PROXY protocol (HAProxy's, versions 1 and 2): how a trusted proxy names its client.
//!
//! A TLS terminator or load balancer in front of the server makes every connection come
//! from the proxy's own address. With the PROXY protocol the proxy begins each connection
//! with a short header that says whose connection it relays, so the per-address limits,
//! the sign-in throttle and the log see the client's address instead. The specification is
//! haproxy's `doc/proxy-protocol.txt` (Debian: /usr/share/doc/haproxy/proxy-protocol.txt.gz).
//!
//! This module owns which addresses may send such a header ([`AddressRange`], from
//! `--trusted-proxy`) and the header's syntax: [`parse`] is a pure function from the bytes
//! that arrived so far to "need more", "a header of N bytes" or the reason it is not one.
//! It must not touch a socket: `server.rs` peeks and reads, and decides what a refusal does.
//! A header is only ever believed from a listed address, never guessed at: anyone who may
//! send one can claim to be anyone.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::limits::{MAX_PROXY_V2_BODY_BYTES, PROXY_V1_MAX_BYTES};

/// The first 12 bytes of a version 2 header. The NUL and the lone `QUIT` make it mean
/// nothing to a line-based protocol, so no person types it by accident.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// A version 2 header's fixed part: signature, version and command, family, length.
const V2_HEAD_BYTES: usize = 16;

/// The longest header this module accepts, in bytes: the buffer a reader needs.
pub const MAX_HEADER_BYTES: usize = V2_HEAD_BYTES + MAX_PROXY_V2_BODY_BYTES;

/// The version of the protocol a header used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// One line of text: `PROXY TCP4 198.51.100.7 203.0.113.1 51234 8081\r\n`.
    V1,
    /// Binary: the signature, then addresses in network byte order, then optional TLVs.
    V2,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        })
    }
}

/// Whose connection the proxy says this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The proxy relays a client at this address and port.
    Client(SocketAddr),
    /// The proxy speaks for itself (v2 `LOCAL`, as in a health check) or cannot name the
    /// client (v1 `UNKNOWN`; a v2 family without an IP address, such as a Unix socket). The
    /// specification says to use the connection's own addresses then.
    Unknown,
}

/// A complete, valid header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: Version,
    pub source: Source,
    /// How many bytes at the start of the connection the header takes; what follows is
    /// the client's own data.
    pub len: usize,
}

/// What the bytes at the start of a connection amount to so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Every byte so far fits a header, which is not complete yet: read more.
    Incomplete,
    Complete(Header),
}

/// Why bytes are not a valid header. `Display` is the reason written to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Neither `PROXY ` nor the version 2 signature.
    NotAHeader,
    /// Version 1: no CRLF within the 107 bytes the specification allows.
    V1TooLong,
    /// Version 1: a CR or LF that is not part of the CRLF ending the line.
    V1LineEnd,
    /// Version 1: a protocol other than `TCP4`, `TCP6` or `UNKNOWN`.
    V1Protocol,
    /// Version 1: not exactly four fields separated by single spaces after the protocol.
    V1Fields,
    /// Version 1: an address that is not a canonical one of the protocol's family.
    V1Address,
    /// Version 1: a port that is not a decimal 0-65535 without leading zeros.
    V1Port,
    /// Version 2: a version other than 2.
    V2Version,
    /// Version 2: a command other than `LOCAL` (0) or `PROXY` (1).
    V2Command,
    /// Version 2: an address family or transport the specification does not define.
    V2Family,
    /// Version 2: more bytes announced than [`MAX_PROXY_V2_BODY_BYTES`].
    V2TooLong,
    /// Version 2: fewer bytes announced than the family's addresses need.
    V2AddressTooShort,
    /// Version 2: the TLVs after the addresses do not fill the announced length exactly.
    V2Tlv,
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reason = match self {
            HeaderError::NotAHeader => "no PROXY protocol header",
            HeaderError::V1TooLong => "v1 header without CRLF in its first 107 bytes",
            HeaderError::V1LineEnd => "v1 header with a CR or LF before its CRLF",
            HeaderError::V1Protocol => "v1 header with a protocol other than TCP4, TCP6, UNKNOWN",
            HeaderError::V1Fields => "v1 header without exactly 4 single-spaced fields",
            HeaderError::V1Address => "v1 header with an invalid address for its protocol",
            HeaderError::V1Port => "v1 header with an invalid port",
            HeaderError::V2Version => "v2 header with a version other than 2",
            HeaderError::V2Command => "v2 header with a command other than LOCAL or PROXY",
            HeaderError::V2Family => "v2 header with an undefined address family",
            HeaderError::V2TooLong => "v2 header longer than allowed",
            HeaderError::V2AddressTooShort => "v2 header too short for its addresses",
            HeaderError::V2Tlv => "v2 header with malformed TLVs",
        };
        f.write_str(reason)
    }
}

/// Parses the bytes that arrived at the start of a connection from a trusted proxy.
///
/// `Incomplete` promises that every byte given belongs to the header, so a reader may
/// consume them and wait for more; `Complete` says exactly how many bytes to consume. A
/// header is never longer than [`MAX_HEADER_BYTES`]: past that it is an error.
pub fn parse(bytes: &[u8]) -> Result<Parsed, HeaderError> {
    match bytes.first() {
        None => Ok(Parsed::Incomplete),
        Some(b'P') => parse_v1(bytes),
        Some(b'\r') => parse_v2(bytes),
        Some(_) => Err(HeaderError::NotAHeader),
    }
}

/// True when `first`, the first bytes of a connection, begin a PROXY header. Used on
/// connections from addresses that are *not* trusted, to refuse them rather than read the
/// header as a user's name. A person cannot send either start: a name has no space, and
/// nobody types a NUL.
pub fn starts_like_header(first: &[u8]) -> bool {
    first.starts_with(b"PROXY ") || first.starts_with(&V2_SIGNATURE)
}

/// Version 1: `PROXY <TCP4|TCP6> <src> <dst> <srcport> <dstport>\r\n`, or
/// `PROXY UNKNOWN` followed by anything up to the CRLF.
fn parse_v1(bytes: &[u8]) -> Result<Parsed, HeaderError> {
    let start = b"PROXY ";
    let known = bytes.len().min(start.len());
    if bytes[..known] != start[..known] {
        return Err(HeaderError::NotAHeader);
    }
    let window = &bytes[..bytes.len().min(PROXY_V1_MAX_BYTES)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        // A CR may only be the last byte so far, the first half of the CRLF.
        if window[..window.len() - 1].contains(&b'\r') {
            return Err(HeaderError::V1LineEnd);
        }
        if bytes.len() >= PROXY_V1_MAX_BYTES {
            return Err(HeaderError::V1TooLong);
        }
        return Ok(Parsed::Incomplete);
    };
    let line = match window[..lf].strip_suffix(b"\r") {
        Some(line) if !line.contains(&b'\r') => line,
        _ => return Err(HeaderError::V1LineEnd),
    };
    Ok(Parsed::Complete(Header {
        version: Version::V1,
        source: parse_v1_line(line)?,
        len: lf + 1,
    }))
}

/// The line of a version 1 header without its CRLF.
fn parse_v1_line(line: &[u8]) -> Result<Source, HeaderError> {
    let rest = &line[b"PROXY ".len()..];
    let (protocol, fields) = match rest.iter().position(|&b| b == b' ') {
        Some(space) => (&rest[..space], &rest[space + 1..]),
        None => (rest, &rest[rest.len()..]),
    };
    let want_v4 = match protocol {
        // The rest of an UNKNOWN line is to be ignored, whatever it holds.
        b"UNKNOWN" => return Ok(Source::Unknown),
        b"TCP4" => true,
        b"TCP6" => false,
        _ => return Err(HeaderError::V1Protocol),
    };
    let fields = std::str::from_utf8(fields).map_err(|_| HeaderError::V1Fields)?;
    let fields: Vec<&str> = fields.split(' ').collect();
    let [source, destination, source_port, destination_port] = fields[..] else {
        return Err(HeaderError::V1Fields);
    };
    let source = parse_v1_address(source, want_v4)?;
    parse_v1_address(destination, want_v4)?;
    let source_port = parse_v1_port(source_port)?;
    parse_v1_port(destination_port)?;
    Ok(Source::Client(SocketAddr::new(source, source_port)))
}

/// An address of the protocol's family. Rust's parsers are strict enough for the
/// specification: no leading zeros in IPv4, no zone or brackets in IPv6.
fn parse_v1_address(text: &str, want_v4: bool) -> Result<IpAddr, HeaderError> {
    let parsed = if want_v4 {
        text.parse::<Ipv4Addr>().map(IpAddr::V4)
    } else {
        text.parse::<Ipv6Addr>().map(IpAddr::V6)
    };
    parsed.map_err(|_| HeaderError::V1Address)
}

/// A port: decimal digits only, no sign, no leading zero (so nothing reads as octal).
fn parse_v1_port(text: &str) -> Result<u16, HeaderError> {
    let digits_only = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = text.len() > 1 && text.starts_with('0');
    if !digits_only || leading_zero {
        return Err(HeaderError::V1Port);
    }
    text.parse().map_err(|_| HeaderError::V1Port)
}

/// Version 2: the signature, a version-and-command byte, a family-and-transport byte, a
/// big-endian length, then that many bytes of addresses and TLVs.
fn parse_v2(bytes: &[u8]) -> Result<Parsed, HeaderError> {
    let known = bytes.len().min(V2_SIGNATURE.len());
    if bytes[..known] != V2_SIGNATURE[..known] {
        return Err(HeaderError::NotAHeader);
    }
    let Some(head) = bytes.get(..V2_HEAD_BYTES) else {
        return Ok(Parsed::Incomplete);
    };
    let (version, command, family) = (head[12] >> 4, head[12] & 0x0F, head[13]);
    let body_len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    if version != 2 {
        return Err(HeaderError::V2Version);
    }
    // LOCAL: the proxy's own connection; the family and addresses are to be ignored.
    let local = match command {
        0 => true,
        1 => false,
        _ => return Err(HeaderError::V2Command),
    };
    if !local && !matches!(family, 0x00 | 0x11 | 0x12 | 0x21 | 0x22 | 0x31 | 0x32) {
        return Err(HeaderError::V2Family);
    }
    if body_len > MAX_PROXY_V2_BODY_BYTES {
        return Err(HeaderError::V2TooLong);
    }
    let Some(body) = bytes.get(V2_HEAD_BYTES..V2_HEAD_BYTES + body_len) else {
        return Ok(Parsed::Incomplete);
    };
    let source = if local {
        Source::Unknown
    } else {
        parse_v2_source(family, body)?
    };
    Ok(Parsed::Complete(Header {
        version: Version::V2,
        source,
        len: V2_HEAD_BYTES + body_len,
    }))
}

/// The client's address in a version 2 `PROXY` body, and a check of the TLVs after it.
/// TCP over IPv4 (0x11) and IPv6 (0x21) name the client; the other defined families
/// (unspecified, UDP, Unix sockets) fall back to the connection's own address, as the
/// specification allows a receiver that does not support them.
fn parse_v2_source(family: u8, body: &[u8]) -> Result<Source, HeaderError> {
    let (address_len, source) = match family {
        0x11 => {
            let block = body.get(..12).ok_or(HeaderError::V2AddressTooShort)?;
            let ip: [u8; 4] = [block[0], block[1], block[2], block[3]];
            let port = u16::from_be_bytes([block[8], block[9]]);
            (12, SocketAddr::new(IpAddr::from(ip), port))
        }
        0x21 => {
            let block = body.get(..36).ok_or(HeaderError::V2AddressTooShort)?;
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&block[..16]);
            let port = u16::from_be_bytes([block[32], block[33]]);
            (36, SocketAddr::new(IpAddr::from(ip), port))
        }
        _ => return Ok(Source::Unknown),
    };
    check_tlvs(&body[address_len..])?;
    Ok(Source::Client(source))
}

/// TLVs (type, 2-byte length, value) must fill the rest of the body exactly. Their
/// contents (ALPN, SNI, TLS details, a CRC32C of the header) are not needed and not read.
fn check_tlvs(mut rest: &[u8]) -> Result<(), HeaderError> {
    while !rest.is_empty() {
        let [_, high, low, ..] = *rest else {
            return Err(HeaderError::V2Tlv);
        };
        let end = 3 + usize::from(u16::from_be_bytes([high, low]));
        rest = rest.get(end..).ok_or(HeaderError::V2Tlv)?;
    }
    Ok(())
}

/// One `--trusted-proxy` entry: an address, or a CIDR prefix such as `10.0.0.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressRange {
    network: IpAddr,
    prefix_len: u8,
}

impl AddressRange {
    /// Parses `ADDR` or `ADDR/LEN`. The error is the reason, for the usage message.
    pub fn parse(text: &str) -> Result<AddressRange, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("'{text}' is not an IP address or a prefix like 10.0.0.0/24"))?;
        let bits = max_prefix_len(network);
        let prefix_len = match prefix {
            None => bits,
            Some(digits) => digits
                .parse::<u8>()
                .ok()
                .filter(|len| *len <= bits && !digits.starts_with('+'))
                .ok_or_else(|| format!("'{text}': the prefix length must be 0-{bits}"))?,
        };
        let range = AddressRange {
            network,
            prefix_len,
        };
        if range.masked(network) != Some(bits_of(network)) {
            let masked = range.lowest();
            return Err(format!(
                "'{text}' has bits set after its /{prefix_len} prefix; did you mean {masked}/{prefix_len}?"
            ));
        }
        Ok(range.canonical())
    }

    /// True when `ip` (as an IPv4-mapped IPv6 address too) lies in this range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let same_family = ip.is_ipv4() == self.network.is_ipv4();
        same_family && self.masked(ip) == self.masked(self.network)
    }

    /// `ip`'s bits with everything after the prefix cleared, as a 128-bit number.
    fn masked(&self, ip: IpAddr) -> Option<u128> {
        let bits = max_prefix_len(ip);
        if bits != max_prefix_len(self.network) {
            return None;
        }
        let host_bits = u32::from(bits - self.prefix_len);
        let mask = u128::MAX.checked_shl(host_bits).unwrap_or(0);
        Some(bits_of(ip) & mask)
    }

    /// The first address of the range.
    fn lowest(&self) -> IpAddr {
        let masked = self.masked(self.network).unwrap_or(0);
        match self.network {
            // The mask of an IPv4 range keeps only the low 32 bits set.
            IpAddr::V4(_) => IpAddr::from(Ipv4Addr::from(masked as u32)),
            IpAddr::V6(_) => IpAddr::from(Ipv6Addr::from(masked)),
        }
    }

    /// An IPv4-mapped IPv6 range (`::ffff:10.0.0.0/120`) as the IPv4 range it means, since
    /// peers are compared in their canonical form.
    fn canonical(self) -> AddressRange {
        match self.network {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() && self.prefix_len >= 96 => {
                AddressRange {
                    network: v6.to_canonical(),
                    prefix_len: self.prefix_len - 96,
                }
            }
            _ => self,
        }
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix_len == max_prefix_len(self.network) {
            write!(f, "{}", self.network)
        } else {
            write!(f, "{}/{}", self.network, self.prefix_len)
        }
    }
}

/// True when `ip` lies in any of `ranges`.
pub fn is_trusted(ranges: &[AddressRange], ip: IpAddr) -> bool {
    ranges.iter().any(|range| range.contains(ip))
}

fn max_prefix_len(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// The address as a number, IPv4 in the low 32 bits.
fn bits_of(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(addr: &str) -> Result<Parsed, HeaderError> {
        complete_v1(Source::Client(addr.parse().expect("socket address")))
    }

    /// What a v1 row expects; the length is filled in from the row's input.
    fn complete_v1(source: Source) -> Result<Parsed, HeaderError> {
        Ok(Parsed::Complete(Header {
            version: Version::V1,
            source,
            len: 0,
        }))
    }

    /// Rows whose expected `len` is 0 expect the whole input up to and including its
    /// first `\n` (version 1), so the table need not count bytes.
    fn with_len(
        expected: Result<Parsed, HeaderError>,
        input: &[u8],
    ) -> Result<Parsed, HeaderError> {
        match expected {
            Ok(Parsed::Complete(mut header)) if header.len == 0 => {
                header.len = input
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(0, |lf| lf + 1);
                Ok(Parsed::Complete(header))
            }
            other => other,
        }
    }

    #[test]
    fn version_1_table() {
        let longest_unknown = format!(
            "PROXY UNKNOWN {0} {0} 65535 65535\r\n",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        );
        assert_eq!(longest_unknown.len(), PROXY_V1_MAX_BYTES);
        let one_too_long = format!("PROXY UNKNOWN {}\r\n", "x".repeat(92));
        assert_eq!(one_too_long.len(), PROXY_V1_MAX_BYTES + 1);
        let no_crlf_in_107 = "PROXY UNKNOWN ".to_string() + &"x".repeat(93);
        let rows: Vec<(&[u8], Result<Parsed, HeaderError>)> = vec![
            // Complete headers, as HAProxy sends them.
            (
                b"PROXY TCP4 198.51.100.7 203.0.113.1 51234 8081\r\n",
                client("198.51.100.7:51234"),
            ),
            (
                b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
                client("255.255.255.255:65535"),
            ),
            (b"PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n", client("0.0.0.0:0")),
            (
                b"PROXY TCP6 2001:db8::7 2001:db8::1 40001 8081\r\n",
                client("[2001:db8::7]:40001"),
            ),
            (
                b"PROXY TCP6 ::ffff:198.51.100.7 ::1 40001 8081\r\n",
                client("[::ffff:198.51.100.7]:40001"),
            ),
            (
                b"PROXY TCP6 FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF ::1 1 2\r\n",
                client("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:1"),
            ),
            // What follows the header is the client's, and not part of it.
            (
                b"PROXY TCP4 198.51.100.7 203.0.113.1 51234 8081\r\nalice\n",
                client("198.51.100.7:51234"),
            ),
            // UNKNOWN: health checks and clients the proxy cannot name.
            (b"PROXY UNKNOWN\r\n", complete_v1(Source::Unknown)),
            (
                b"PROXY UNKNOWN 198.51.100.7 203.0.113.1 51234 8081\r\n",
                complete_v1(Source::Unknown),
            ),
            (
                b"PROXY UNKNOWN anything \xff at all\r\n",
                complete_v1(Source::Unknown),
            ),
            (longest_unknown.as_bytes(), complete_v1(Source::Unknown)),
            // Not complete yet: every byte so far may still be a header.
            (b"", Ok(Parsed::Incomplete)),
            (b"P", Ok(Parsed::Incomplete)),
            (b"PROXY", Ok(Parsed::Incomplete)),
            (b"PROXY TCP4 198.51.100.7 203.0", Ok(Parsed::Incomplete)),
            (
                b"PROXY TCP4 198.51.100.7 203.0.113.1 51234 8081\r",
                Ok(Parsed::Incomplete),
            ),
            // Not a header at all: a person's name, or something else.
            (b"alice\n", Err(HeaderError::NotAHeader)),
            (b"PROXYalice\n", Err(HeaderError::NotAHeader)),
            (b"PRoXY TCP4\r\n", Err(HeaderError::NotAHeader)),
            (
                b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
                Err(HeaderError::NotAHeader),
            ),
            (b"GET / HTTP/1.1\r\n", Err(HeaderError::NotAHeader)),
            // Line ends: CRLF and nothing else.
            (
                b"PROXY TCP4 198.51.100.7 203.0.113.1 51234 8081\n",
                Err(HeaderError::V1LineEnd),
            ),
            (
                b"PROXY TCP4 198.51.100.7 203.0.113.1 51234 8081\rX",
                Err(HeaderError::V1LineEnd),
            ),
            (b"PROXY UNKNOWN\r\r\n", Err(HeaderError::V1LineEnd)),
            (b"PROXY UNKNOWN a\rb\r\n", Err(HeaderError::V1LineEnd)),
            (b"PROXY \n", Err(HeaderError::V1LineEnd)),
            // Too long: no CRLF within 107 bytes.
            (one_too_long.as_bytes(), Err(HeaderError::V1TooLong)),
            (no_crlf_in_107.as_bytes(), Err(HeaderError::V1TooLong)),
            // Protocols.
            (
                b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
                Err(HeaderError::V1Protocol),
            ),
            (
                b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
                Err(HeaderError::V1Protocol),
            ),
            (
                b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
                Err(HeaderError::V1Protocol),
            ),
            (b"PROXY UNKNOWNX\r\n", Err(HeaderError::V1Protocol)),
            (b"PROXY \r\n", Err(HeaderError::V1Protocol)),
            (
                b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
                Err(HeaderError::V1Protocol),
            ),
            // Fields: exactly four, single spaces.
            (b"PROXY TCP4\r\n", Err(HeaderError::V1Fields)),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
                Err(HeaderError::V1Fields),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
                Err(HeaderError::V1Fields),
            ),
            (
                b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
                Err(HeaderError::V1Fields),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
                Err(HeaderError::V1Fields),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1\t2\r\n",
                Err(HeaderError::V1Fields),
            ),
            (
                b"PROXY TCP4 1.2.3.\xff 5.6.7.8 1 2\r\n",
                Err(HeaderError::V1Fields),
            ),
            // Addresses: canonical, and of the protocol's family.
            (
                b"PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n",
                Err(HeaderError::V1Address),
            ),
            (
                b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
                Err(HeaderError::V1Address),
            ),
            (
                b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
                Err(HeaderError::V1Address),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8.9 1 2\r\n",
                Err(HeaderError::V1Address),
            ),
            (
                b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
                Err(HeaderError::V1Address),
            ),
            (
                b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
                Err(HeaderError::V1Address),
            ),
            (
                b"PROXY TCP6 ::1 1.2.3.4 1 2\r\n",
                Err(HeaderError::V1Address),
            ),
            (b"PROXY TCP6 [::1] ::1 1 2\r\n", Err(HeaderError::V1Address)),
            (
                b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
                Err(HeaderError::V1Address),
            ),
            (
                b"PROXY TCP6 1:2:3:4:5:6:7 ::1 1 2\r\n",
                Err(HeaderError::V1Address),
            ),
            (
                b"PROXY TCP4 localhost 5.6.7.8 1 2\r\n",
                Err(HeaderError::V1Address),
            ),
            // Ports: decimal 0-65535, no leading zero, no sign.
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
                Err(HeaderError::V1Port),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
                Err(HeaderError::V1Port),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
                Err(HeaderError::V1Port),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 +2\r\n",
                Err(HeaderError::V1Port),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
                Err(HeaderError::V1Port),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 0x10 2\r\n",
                Err(HeaderError::V1Port),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 99999999999 2\r\n",
                Err(HeaderError::V1Port),
            ),
        ];
        for (input, expected) in rows {
            let expected = with_len(expected, input);
            assert_eq!(
                parse(input),
                expected,
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    /// A version 2 header: signature, version 2 with `command`, `family`, then `body`.
    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut bytes = V2_SIGNATURE.to_vec();
        bytes.push(0x20 | command);
        bytes.push(family);
        bytes.extend_from_slice(&(body.len() as u16).to_be_bytes());
        bytes.extend_from_slice(body);
        bytes
    }

    fn v4_body(tlvs: &[u8]) -> Vec<u8> {
        let mut body = vec![198, 51, 100, 7, 203, 0, 113, 1];
        body.extend_from_slice(&51234u16.to_be_bytes());
        body.extend_from_slice(&8081u16.to_be_bytes());
        body.extend_from_slice(tlvs);
        body
    }

    fn v6_body(tlvs: &[u8]) -> Vec<u8> {
        let source: Ipv6Addr = "2001:db8::7".parse().expect("ipv6");
        let destination: Ipv6Addr = "2001:db8::1".parse().expect("ipv6");
        let mut body = source.octets().to_vec();
        body.extend_from_slice(&destination.octets());
        body.extend_from_slice(&40001u16.to_be_bytes());
        body.extend_from_slice(&8081u16.to_be_bytes());
        body.extend_from_slice(tlvs);
        body
    }

    fn complete_v2(source: Source, len: usize) -> Result<Parsed, HeaderError> {
        Ok(Parsed::Complete(Header {
            version: Version::V2,
            source,
            len,
        }))
    }

    #[test]
    fn version_2_table() {
        let v4 = Source::Client("198.51.100.7:51234".parse().expect("addr"));
        let v6 = Source::Client("[2001:db8::7]:40001".parse().expect("addr"));
        // ALPN "irc", an empty NOOP, and an SSL TLV with a version sub-TLV, as HAProxy's
        // `proxy-v2-options` may add; then a CRC32C TLV.
        let tlvs: &[u8] = &[
            0x01, 0, 3, b'i', b'r', b'c', // ALPN
            0x04, 0, 0, // NOOP
            0x20, 0, 13, 0x01, 0, 0, 0, 0, 0x21, 0, 5, b'T', b'L', b'S', b'v', b'3', // SSL
            0x03, 0, 4, 0xde, 0xad, 0xbe, 0xef, // CRC32C (not checked)
        ];
        let with_data = |mut header: Vec<u8>| {
            header.extend_from_slice(b"alice\n");
            header
        };
        let full = MAX_PROXY_V2_BODY_BYTES;
        let rows: Vec<(Vec<u8>, Result<Parsed, HeaderError>)> = vec![
            // PROXY over TCP, IPv4 and IPv6, with and without TLVs.
            (v2(1, 0x11, &v4_body(&[])), complete_v2(v4, 28)),
            (v2(1, 0x21, &v6_body(&[])), complete_v2(v6, 52)),
            (
                v2(1, 0x11, &v4_body(tlvs)),
                complete_v2(v4, 28 + tlvs.len()),
            ),
            (
                v2(1, 0x21, &v6_body(tlvs)),
                complete_v2(v6, 52 + tlvs.len()),
            ),
            (with_data(v2(1, 0x11, &v4_body(&[]))), complete_v2(v4, 28)),
            // LOCAL: a health check; family and body are ignored, but skipped.
            (v2(0, 0x00, &[]), complete_v2(Source::Unknown, 16)),
            (v2(0, 0x11, &v4_body(&[])), complete_v2(Source::Unknown, 28)),
            (v2(0, 0x77, &[1, 2, 3]), complete_v2(Source::Unknown, 19)),
            (
                with_data(v2(0, 0x00, &[])),
                complete_v2(Source::Unknown, 16),
            ),
            // Defined families without a TCP address fall back to the connection's own.
            (v2(1, 0x00, &[]), complete_v2(Source::Unknown, 16)),
            (v2(1, 0x12, &v4_body(&[])), complete_v2(Source::Unknown, 28)),
            (v2(1, 0x22, &v6_body(&[])), complete_v2(Source::Unknown, 52)),
            (v2(1, 0x31, &[0; 216]), complete_v2(Source::Unknown, 232)),
            (v2(1, 0x32, &[0; 216]), complete_v2(Source::Unknown, 232)),
            // The longest body allowed.
            (
                v2(
                    1,
                    0x11,
                    &v4_body(&[0x04, ((full - 15) >> 8) as u8, (full - 15) as u8])
                        .into_iter()
                        .chain(std::iter::repeat_n(0, full - 15))
                        .collect::<Vec<u8>>(),
                ),
                complete_v2(v4, 16 + full),
            ),
            // Not complete yet.
            (V2_SIGNATURE[..1].to_vec(), Ok(Parsed::Incomplete)),
            (V2_SIGNATURE[..5].to_vec(), Ok(Parsed::Incomplete)),
            (V2_SIGNATURE.to_vec(), Ok(Parsed::Incomplete)),
            (
                v2(1, 0x11, &v4_body(&[]))[..15].to_vec(),
                Ok(Parsed::Incomplete),
            ),
            (
                v2(1, 0x11, &v4_body(&[]))[..27].to_vec(),
                Ok(Parsed::Incomplete),
            ),
            (
                v2(1, 0x21, &v6_body(tlvs))[..60].to_vec(),
                Ok(Parsed::Incomplete),
            ),
            // Not the signature.
            (b"\r\n".to_vec(), Ok(Parsed::Incomplete)),
            (b"\r\nalice\n".to_vec(), Err(HeaderError::NotAHeader)),
            (
                b"\r\n\r\n\x00\r\nQUIT\r".to_vec(),
                Err(HeaderError::NotAHeader),
            ),
            (b"\r\n\r\n\x01".to_vec(), Err(HeaderError::NotAHeader)),
            // Version: only 2.
            (
                {
                    let mut h = v2(1, 0x11, &v4_body(&[]));
                    h[12] = 0x11;
                    h
                },
                Err(HeaderError::V2Version),
            ),
            (
                {
                    let mut h = v2(1, 0x11, &v4_body(&[]));
                    h[12] = 0x31;
                    h
                },
                Err(HeaderError::V2Version),
            ),
            // Commands: only LOCAL and PROXY.
            (v2(2, 0x11, &v4_body(&[])), Err(HeaderError::V2Command)),
            (v2(0x0F, 0x11, &v4_body(&[])), Err(HeaderError::V2Command)),
            // Families and transports the specification does not define.
            (v2(1, 0x13, &v4_body(&[])), Err(HeaderError::V2Family)),
            (v2(1, 0x41, &v4_body(&[])), Err(HeaderError::V2Family)),
            (v2(1, 0x10, &v4_body(&[])), Err(HeaderError::V2Family)),
            (v2(1, 0x01, &v4_body(&[])), Err(HeaderError::V2Family)),
            // Longer than allowed: refused from the 16-byte head, before reading the body.
            (
                {
                    let mut h = v2(1, 0x11, &[]);
                    h[14..16].copy_from_slice(&((full + 1) as u16).to_be_bytes());
                    h
                },
                Err(HeaderError::V2TooLong),
            ),
            (
                {
                    let mut h = v2(0, 0x00, &[]);
                    h[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
                    h
                },
                Err(HeaderError::V2TooLong),
            ),
            // Too short for the family's addresses.
            (
                v2(1, 0x11, &v4_body(&[])[..11]),
                Err(HeaderError::V2AddressTooShort),
            ),
            (v2(1, 0x11, &[]), Err(HeaderError::V2AddressTooShort)),
            (
                v2(1, 0x21, &v6_body(&[])[..35]),
                Err(HeaderError::V2AddressTooShort),
            ),
            (
                v2(1, 0x21, &v4_body(&[])),
                Err(HeaderError::V2AddressTooShort),
            ),
            // TLVs that do not fill the body exactly.
            (v2(1, 0x11, &v4_body(&[0x04])), Err(HeaderError::V2Tlv)),
            (v2(1, 0x11, &v4_body(&[0x04, 0])), Err(HeaderError::V2Tlv)),
            (
                v2(1, 0x11, &v4_body(&[0x01, 0, 4, b'i', b'r', b'c'])),
                Err(HeaderError::V2Tlv),
            ),
            (
                v2(1, 0x21, &v6_body(&[0x04, 0, 0, 0x01, 0xff, 0xff])),
                Err(HeaderError::V2Tlv),
            ),
        ];
        for (input, expected) in rows {
            assert_eq!(parse(&input), expected, "input {input:02x?}");
        }
    }

    /// A header that arrives in pieces: each prefix is `Incomplete`, the whole is the same
    /// header as when it arrives at once.
    #[test]
    fn every_prefix_of_a_header_is_incomplete() {
        let headers = [
            b"PROXY TCP6 2001:db8::7 2001:db8::1 40001 8081\r\n".to_vec(),
            b"PROXY UNKNOWN\r\n".to_vec(),
            v2(1, 0x21, &v6_body(&[0x04, 0, 2, 0, 0])),
            v2(0, 0x00, &[]),
        ];
        for header in headers {
            for cut in 0..header.len() {
                assert_eq!(
                    parse(&header[..cut]),
                    Ok(Parsed::Incomplete),
                    "{header:02x?} cut at {cut}"
                );
            }
            let Ok(Parsed::Complete(whole)) = parse(&header) else {
                panic!("{header:02x?} is a header");
            };
            assert_eq!(whole.len, header.len());
        }
    }

    #[test]
    fn starts_like_header_table() {
        let rows: [(&[u8], bool); 10] = [
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", true),
            (b"PROXY UNKNOWN\r\n", true),
            (b"PROXY ", true),
            (b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c", true),
            (b"\r\n\r\n\x00\r\nQUIT\n", true),
            // A name may start with PROXY; it cannot have a space.
            (b"PROXYfan\n", false),
            (b"PROXY", false),
            (b"alice\n", false),
            (b"\r\n\r\n", false),
            (b"", false),
        ];
        for (first, expected) in rows {
            assert_eq!(starts_like_header(first), expected, "{first:?}");
        }
    }

    #[test]
    fn address_range_table() {
        let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
        // (range, address, contained)
        let rows = [
            ("127.0.0.1", "127.0.0.1", true),
            ("127.0.0.1", "127.0.0.2", false),
            ("127.0.0.1", "::ffff:127.0.0.1", true),
            ("127.0.0.1", "::1", false),
            ("10.0.0.0/8", "10.255.1.2", true),
            ("10.0.0.0/8", "11.0.0.0", false),
            ("10.1.2.0/24", "10.1.2.255", true),
            ("10.1.2.0/24", "10.1.3.0", false),
            ("10.1.2.0/24", "::ffff:10.1.2.9", true),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("0.0.0.0/0", "2001:db8::1", false),
            ("::1", "::1", true),
            ("::1", "127.0.0.1", false),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
            ("::/0", "2001:db8::1", true),
            ("::ffff:10.1.2.0/120", "10.1.2.3", true),
            ("::ffff:10.1.2.0/120", "10.1.3.3", false),
            ("::ffff:10.1.2.3", "10.1.2.3", true),
        ];
        for (range, address, expected) in rows {
            let parsed = AddressRange::parse(range).expect(range);
            assert_eq!(
                parsed.contains(ip(address)),
                expected,
                "{range} contains {address}"
            );
        }
    }

    #[test]
    fn address_range_parse_table() {
        let rows: [(&str, Result<&str, &str>); 12] = [
            ("10.0.0.5", Ok("10.0.0.5")),
            ("10.0.0.0/24", Ok("10.0.0.0/24")),
            ("10.0.0.5/32", Ok("10.0.0.5")),
            ("2001:db8::/32", Ok("2001:db8::/32")),
            ("::ffff:10.0.0.0/104", Ok("10.0.0.0/8")),
            ("::ffff:10.0.0.5", Ok("10.0.0.5")),
            (
                "proxy.example.org",
                Err("'proxy.example.org' is not an IP address or a prefix like 10.0.0.0/24"),
            ),
            (
                "",
                Err("'' is not an IP address or a prefix like 10.0.0.0/24"),
            ),
            (
                "10.0.0.0/33",
                Err("'10.0.0.0/33': the prefix length must be 0-32"),
            ),
            (
                "10.0.0.0/+8",
                Err("'10.0.0.0/+8': the prefix length must be 0-32"),
            ),
            (
                "10.0.0.0/",
                Err("'10.0.0.0/': the prefix length must be 0-32"),
            ),
            (
                "10.0.0.5/8",
                Err("'10.0.0.5/8' has bits set after its /8 prefix; did you mean 10.0.0.0/8?"),
            ),
        ];
        for (text, expected) in rows {
            let got = AddressRange::parse(text).map(|range| range.to_string());
            let expected = expected.map(str::to_string).map_err(str::to_string);
            assert_eq!(got, expected, "{text:?}");
        }
    }
}
