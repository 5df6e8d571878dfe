//! Base64 (RFC 4648, section 4: the standard alphabet, with `=` padding), written out
//! because ptchat is std only. The WebSocket handshake needs both directions: decoding the
//! client's `Sec-WebSocket-Key` to check it is 16 bytes, encoding the `Sec-WebSocket-Accept`
//! answer, and the page's Content-Security-Policy hashes.
//!
//! This module owns the encoding only. Decoding is strict, because its one caller checks
//! untrusted input: no whitespace, no missing padding, no URL-safe alphabet, and no
//! non-zero bits in the last character's unused part (RFC 4648, section 3.5), so every byte
//! string has exactly one accepted spelling.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// `bytes` in base64, padded with `=` to a multiple of 4 characters.
pub fn encode(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        // Three bytes are 24 bits: four 6-bit characters. A short last group is padded
        // with zero bits, and the characters that carry none of its bits become `=`.
        let b = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let bits = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                let index = (bits >> (18 - 6 * i)) & 0x3f;
                text.push(char::from(ALPHABET[index as usize]));
            } else {
                text.push('=');
            }
        }
    }
    text
}

/// The bytes spelled by `text`, or `None` if it is not canonical padded base64.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let text = text.as_bytes();
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let mut bytes = Vec::with_capacity(text.len() / 4 * 3);
    let groups = text.len() / 4;
    for (n, group) in text.chunks_exact(4).enumerate() {
        // `=` may only end the last group: `xx==` or `xxx=`.
        let padding = group.iter().rev().take_while(|&&c| c == b'=').count();
        if padding > 2 || (padding > 0 && n + 1 != groups) {
            return None;
        }
        let mut bits = 0u32;
        for &c in &group[..4 - padding] {
            bits = bits << 6 | u32::from(sextet(c)?);
        }
        bits <<= 6 * padding;
        let decoded = [(bits >> 16) as u8, (bits >> 8) as u8, bits as u8];
        let kept = 3 - padding;
        // The bits the padding stands for must be zero, or two spellings would decode alike.
        if decoded[kept..].iter().any(|&b| b != 0) {
            return None;
        }
        bytes.extend_from_slice(&decoded[..kept]);
    }
    Some(bytes)
}

/// The 6-bit value of one base64 character.
fn sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_4648_test_vectors() {
        // RFC 4648, section 10.
        let rows: [(&[u8], &str); 7] = [
            (b"", ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
        ];
        for (bytes, text) in rows {
            assert_eq!(encode(bytes), text, "encode {bytes:?}");
            assert_eq!(decode(text).as_deref(), Some(bytes), "decode {text:?}");
        }
    }

    #[test]
    fn every_byte_value_and_length_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        for len in 0..all.len() {
            let bytes = &all[all.len() - len..];
            assert_eq!(
                decode(&encode(bytes)).as_deref(),
                Some(bytes),
                "{len} bytes"
            );
        }
        assert!(encode(&[0xfb, 0xff]).contains('+') && encode(&[0xff, 0xff]).contains('/'));
    }

    #[test]
    fn invalid_input_is_refused() {
        let rows = [
            "Zg",           // padding missing
            "Zg=",          // not a multiple of 4
            "Zm9",          // not a multiple of 4
            "Z===",         // three padding characters
            "====",         // nothing but padding
            "Zg==Zg==",     // padding in the middle
            "Zm=v",         // `=` inside a group
            "Zm9v\n",       // whitespace
            "Zm 9",         // whitespace
            "Zh==",         // `h` leaves non-zero bits where the padding is
            "Zm9=",         // `9` likewise
            "Zm-v",         // URL-safe alphabet
            "Zm_v",         // URL-safe alphabet
            "Zm\u{e9}Zg==", // not ASCII
            "dGhlIHNhbXBsZSBub25jZR==",
        ];
        for text in rows {
            assert_eq!(decode(text), None, "{text:?}");
        }
    }
}
