//! SHA-1 (RFC 3174), written out because ptchat is std only and the WebSocket handshake
//! (RFC 6455, section 4.2.2) needs it: the server proves it read the client's key by
//! answering with the SHA-1 of that key and a fixed GUID.
//!
//! This module owns the hash function only. SHA-1 is broken for collision resistance, so it
//! must never be used for anything that needs security (passwords use SHA-256 in
//! `crypto.rs`); the handshake uses it as a checksum, which is all RFC 6455 asks of it. No
//! I/O, no incremental API: the handshake hashes 60 bytes at once.

/// Initial hash value H0..H4 (RFC 3174, section 6.1).
const H0: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];

const BLOCK_LEN: usize = 64;

/// The SHA-1 digest of `data`: 20 bytes.
pub fn sha1(data: &[u8]) -> [u8; 20] {
    let mut state = H0;
    let mut blocks = data.chunks_exact(BLOCK_LEN);
    for block in &mut blocks {
        compress(&mut state, block);
    }
    // Padding: 0x80, zeros, then the message length in bits as 8 big-endian bytes. If the
    // length does not fit after the leftover bytes it spills into a second block
    // (RFC 3174, section 4).
    let rest = blocks.remainder();
    let mut tail = [0u8; 2 * BLOCK_LEN];
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    let end = if rest.len() < BLOCK_LEN - 8 {
        BLOCK_LEN
    } else {
        2 * BLOCK_LEN
    };
    let bit_len = (data.len() as u64).wrapping_mul(8);
    tail[end - 8..end].copy_from_slice(&bit_len.to_be_bytes());
    for block in tail[..end].chunks_exact(BLOCK_LEN) {
        compress(&mut state, block);
    }

    let mut digest = [0u8; 20];
    for (out, word) in digest.chunks_exact_mut(4).zip(state) {
        out.copy_from_slice(&word.to_be_bytes());
    }
    digest
}

/// Processes one 64-byte block (RFC 3174, section 6.1, method 1).
fn compress(state: &mut [u32; 5], block: &[u8]) {
    debug_assert_eq!(block.len(), BLOCK_LEN);
    let mut w = [0u32; 80];
    for (word, bytes) in w.iter_mut().zip(block.chunks_exact(4)) {
        *word = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
    for t in 16..80 {
        w[t] = (w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16]).rotate_left(1);
    }

    let [mut a, mut b, mut c, mut d, mut e] = *state;
    for (t, word) in w.iter().enumerate() {
        // The round function and constant change every 20 steps (section 5).
        let (f, k) = match t {
            0..=19 => ((b & c) | (!b & d), 0x5A827999),
            20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
            40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
            _ => (b ^ c ^ d, 0xCA62C1D6),
        };
        let temp = a
            .rotate_left(5)
            .wrapping_add(f)
            .wrapping_add(e)
            .wrapping_add(*word)
            .wrapping_add(k);
        e = d;
        d = c;
        c = b.rotate_left(30);
        b = a;
        a = temp;
    }
    for (s, v) in state.iter_mut().zip([a, b, c, d, e]) {
        *s = s.wrapping_add(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::to_hex;

    #[test]
    fn rfc_3174_test_vectors() {
        // RFC 3174, section 7.3: TEST1 to TEST4 with their repeat counts.
        let test4 = b"0123456701234567012345670123456701234567012345670123456701234567".repeat(10);
        let million_a = vec![b'a'; 1_000_000];
        let rows: [(&[u8], &str); 4] = [
            (b"abc", "a9993e364706816aba3e25717850c26c9cd0d89d"),
            (
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
                "84983e441c3bd26ebaae4aa1f95129e5e54670f1",
            ),
            (&million_a, "34aa973cd4c4daa4f61eeb2bdbad27316534016f"),
            (&test4, "dea356a2cddd90c7a7ecedc5ebb563934f460452"),
        ];
        for (input, expected) in rows {
            assert_eq!(to_hex(&sha1(input)), expected, "{} bytes", input.len());
        }
    }

    #[test]
    fn padding_boundaries() {
        // Digests of n repeated 'a' bytes, computed with Python's hashlib.sha1; the lengths
        // straddle the points where the length field no longer fits in the last block.
        let rows = [
            (0, "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
            (55, "c1c8bbdc22796e28c0e15163d20899b65621d65a"),
            (56, "c2db330f6083854c99d4b5bfb6e8f29f201be699"),
            (57, "f08f24908d682555111be7ff6f004e78283d989a"),
            (63, "03f09f5b158a7a8cdad920bddc29b81c18a551f5"),
            (64, "0098ba824b5c16427bd7a1122a5a442a25ec644d"),
            (65, "11655326c708d70319be2610e8a57d9a5b959d3b"),
            (119, "ee971065aaa017e0632a8ca6c77bb3bf8b1dfc56"),
            (120, "f34c1488385346a55709ba056ddd08280dd4c6d6"),
        ];
        for (n, expected) in rows {
            assert_eq!(to_hex(&sha1(&vec![b'a'; n])), expected, "{n} bytes");
        }
    }
}
