//! SHA-256, HMAC-SHA256, PBKDF2-HMAC-SHA256, a constant-time comparison and hex encoding:
//! the few primitives the server needs to store and check passwords, written out because
//! ptchat is std only.
//!
//! This module owns byte-level algorithms only. It must not decide policy (iteration counts,
//! salt sizes, what a stored password record looks like), must not do I/O, and must not grow
//! into a general crypto library: anything not needed for password hashing stays out.

use std::hint::black_box;

/// SHA-256 round constants (FIPS 180-4, section 4.2.2).
const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// SHA-256 initial hash value (FIPS 180-4, section 5.3.3).
const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

const BLOCK_LEN: usize = 64;

/// Length of a SHA-256 digest, which is also the HMAC-SHA256 and PBKDF2 block size.
const DIGEST_LEN: usize = 32;

/// The SHA-256 hash of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(data);
    hasher.finalize()
}

/// Incremental SHA-256. `Clone` is what makes PBKDF2 affordable: a state that has already
/// absorbed a padded key is cloned instead of being rebuilt on every iteration.
#[derive(Clone)]
pub struct Sha256 {
    state: [u32; 8],
    /// Bytes not yet compressed; only the first `block_len` are meaningful.
    block: [u8; BLOCK_LEN],
    block_len: usize,
    /// Total bytes absorbed, for the length field of the final padding.
    total_len: u64,
}

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256 {
    pub fn new() -> Self {
        Sha256 {
            state: H0,
            block: [0; BLOCK_LEN],
            block_len: 0,
            total_len: 0,
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.total_len = self.total_len.wrapping_add(data.len() as u64);
        if self.block_len > 0 {
            let take = (BLOCK_LEN - self.block_len).min(data.len());
            self.block[self.block_len..self.block_len + take].copy_from_slice(&data[..take]);
            self.block_len += take;
            data = &data[take..];
            if self.block_len < BLOCK_LEN {
                return;
            }
            compress(&mut self.state, &self.block);
            self.block_len = 0;
        }
        // Whole blocks go straight from the caller's slice: no copy through `self.block`.
        let mut blocks = data.chunks_exact(BLOCK_LEN);
        for block in &mut blocks {
            compress(&mut self.state, block);
        }
        let rest = blocks.remainder();
        self.block[..rest.len()].copy_from_slice(rest);
        self.block_len = rest.len();
    }

    pub fn finalize(mut self) -> [u8; 32] {
        // Padding is 0x80, zeros, then the bit length in 8 bytes; if the length does not fit
        // after the leftover bytes it spills into a second block (FIPS 180-4, section 5.1.1).
        let bit_len = self.total_len.wrapping_mul(8);
        let n = self.block_len;
        let mut tail = [0u8; 2 * BLOCK_LEN];
        tail[..n].copy_from_slice(&self.block[..n]);
        tail[n] = 0x80;
        let end = if n < BLOCK_LEN - 8 {
            BLOCK_LEN
        } else {
            2 * BLOCK_LEN
        };
        tail[end - 8..end].copy_from_slice(&bit_len.to_be_bytes());
        for block in tail[..end].chunks_exact(BLOCK_LEN) {
            compress(&mut self.state, block);
        }
        let mut digest = [0u8; DIGEST_LEN];
        for (out, word) in digest.chunks_exact_mut(4).zip(self.state) {
            out.copy_from_slice(&word.to_be_bytes());
        }
        digest
    }
}

/// The SHA-256 compression function on one 64-byte block (FIPS 180-4, section 6.2.2).
fn compress(state: &mut [u32; 8], block: &[u8]) {
    debug_assert_eq!(block.len(), BLOCK_LEN);
    let mut w = [0u32; 64];
    for (word, bytes) in w.iter_mut().zip(block.chunks_exact(4)) {
        *word = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
    for t in 16..64 {
        let s0 = w[t - 15].rotate_right(7) ^ w[t - 15].rotate_right(18) ^ (w[t - 15] >> 3);
        let s1 = w[t - 2].rotate_right(17) ^ w[t - 2].rotate_right(19) ^ (w[t - 2] >> 10);
        w[t] = w[t - 16]
            .wrapping_add(s0)
            .wrapping_add(w[t - 7])
            .wrapping_add(s1);
    }

    let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
    for (k, w) in K.iter().zip(w) {
        let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
        let ch = (e & f) ^ (!e & g);
        let t1 = h
            .wrapping_add(s1)
            .wrapping_add(ch)
            .wrapping_add(*k)
            .wrapping_add(w);
        let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
        let maj = (a & b) ^ (a & c) ^ (b & c);
        let t2 = s0.wrapping_add(maj);
        h = g;
        g = f;
        f = e;
        e = d.wrapping_add(t1);
        d = c;
        c = b;
        b = a;
        a = t1.wrapping_add(t2);
    }
    for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
        *s = s.wrapping_add(v);
    }
}

/// HMAC-SHA256 (RFC 2104) of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let hmac = HmacKey::new(key);
    let mut inner = hmac.start();
    inner.update(message);
    hmac.finish(inner)
}

/// An HMAC key with its two padded-key blocks already absorbed, so that each MAC under the
/// same key costs two clones instead of two extra compressions.
struct HmacKey {
    inner: Sha256,
    outer: Sha256,
}

impl HmacKey {
    fn new(key: &[u8]) -> Self {
        // A key longer than a block is replaced by its hash (RFC 2104, section 2).
        let mut padded = [0u8; BLOCK_LEN];
        if key.len() > BLOCK_LEN {
            padded[..DIGEST_LEN].copy_from_slice(&sha256(key));
        } else {
            padded[..key.len()].copy_from_slice(key);
        }
        HmacKey {
            inner: Self::keyed(&padded, 0x36),
            outer: Self::keyed(&padded, 0x5c),
        }
    }

    fn keyed(padded: &[u8; BLOCK_LEN], pad: u8) -> Sha256 {
        let mut hasher = Sha256::new();
        hasher.update(&padded.map(|byte| byte ^ pad));
        hasher
    }

    /// A hasher ready to absorb the message.
    fn start(&self) -> Sha256 {
        self.inner.clone()
    }

    /// The MAC of whatever `inner` (from `start`) has absorbed.
    fn finish(&self, inner: Sha256) -> [u8; 32] {
        let mut outer = self.outer.clone();
        outer.update(&inner.finalize());
        outer.finalize()
    }

    fn mac(&self, message: &[u8]) -> [u8; 32] {
        let mut inner = self.start();
        inner.update(message);
        self.finish(inner)
    }
}

/// PBKDF2 (RFC 8018, section 5.2) with HMAC-SHA256, filling all of `out`.
///
/// Panics if `iterations` is 0: RFC 8018 requires at least one, and a zero count would mean a
/// caller bug that silently stores weak hashes.
pub fn pbkdf2_hmac_sha256(password: &[u8], salt: &[u8], iterations: u32, out: &mut [u8]) {
    assert!(iterations >= 1, "PBKDF2 needs at least one iteration");
    let prf = HmacKey::new(password);
    for (index, chunk) in out.chunks_mut(DIGEST_LEN).enumerate() {
        // Block numbers start at 1 and are 32-bit; 2^32 - 1 blocks is 128 GiB of output.
        let block_number = u32::try_from(index + 1).expect("PBKDF2 output too long");
        let block = pbkdf2_block(&prf, salt, iterations, block_number);
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
}

/// One PBKDF2 output block: T_i = U_1 ^ U_2 ^ ... ^ U_c.
fn pbkdf2_block(prf: &HmacKey, salt: &[u8], iterations: u32, block_number: u32) -> [u8; 32] {
    let mut first = prf.start();
    first.update(salt);
    first.update(&block_number.to_be_bytes());
    let mut u = prf.finish(first);
    let mut t = u;
    for _ in 1..iterations {
        u = prf.mac(&u);
        for (t_byte, u_byte) in t.iter_mut().zip(u) {
            *t_byte ^= u_byte;
        }
    }
    t
}

/// Whether `a` and `b` are equal, taking the same time wherever they differ, so that a
/// stored hash cannot be guessed byte by byte from response times. Lengths are not secret
/// (hash lengths are fixed), so a length mismatch returns at once.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    // `black_box` keeps the optimiser from turning the fold into an early-exit loop.
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| acc | black_box(x ^ y));
    black_box(diff) == 0
}

/// Lowercase hex, two digits per byte.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        hex.push(char::from(DIGITS[usize::from(byte >> 4)]));
        hex.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    hex
}

/// The bytes spelled by `s`, or `None` if it has odd length or a non-hex character.
/// Upper-case digits are accepted, since they spell the same bytes.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks_exact(2)
        .map(|pair| Some(hex_digit(pair[0])? << 4 | hex_digit(pair[1])?))
        .collect()
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        from_hex(&s.replace(' ', "")).expect("test vector is valid hex")
    }

    #[test]
    fn sha256_published_vectors() {
        // FIPS 180-2 appendix B.1, B.2, B.3 and RFC 6234 section 8.5 (TEST1, TEST2_1, TEST3,
        // TEST4); the empty string is the well-known digest listed in NIST's examples.
        let million_a = vec![b'a'; 1_000_000];
        let cases: [(&[u8], &str); 5] = [
            (
                b"abc",
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
            (
                b"",
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ),
            (
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
                "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
            ),
            (
                b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno\
                  ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
                "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1",
            ),
            (
                &million_a,
                "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                to_hex(&sha256(input)),
                expected,
                "input length {}",
                input.len()
            );
        }
    }

    #[test]
    fn sha256_padding_boundaries() {
        // Digests of n repeated 'a' bytes, computed with Python's hashlib.sha256; the lengths
        // straddle the points where the length field no longer fits in the last block.
        let cases = [
            (
                55,
                "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318",
            ),
            (
                56,
                "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a",
            ),
            (
                57,
                "f13b2d724659eb3bf47f2dd6af1accc87b81f09f59f2b75e5c0bed6589dfe8c6",
            ),
            (
                63,
                "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34",
            ),
            (
                64,
                "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb",
            ),
            (
                65,
                "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0",
            ),
            (
                111,
                "6374f73208854473827f6f6a3f43b1f53eaa3b82c21c1a6d69a2110b2a79baad",
            ),
            (
                112,
                "f54353008a2553262ecdc4a34749563ba0950e8b0fc8652780b0a614b99683c1",
            ),
            (
                119,
                "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb",
            ),
            (
                120,
                "2f3d335432c70b580af0e8e1b3674a7c020d683aa5f73aaaedfdc55af904c21c",
            ),
            (
                127,
                "c57e9278af78fa3cab38667bef4ce29d783787a2f731d4e12200270f0c32320a",
            ),
            (
                128,
                "6836cf13bac400e9105071cd6af47084dfacad4e5e302c94bfed24e013afb73e",
            ),
        ];
        for (n, expected) in cases {
            assert_eq!(to_hex(&sha256(&vec![b'a'; n])), expected, "{n} bytes");
        }
    }

    #[test]
    fn sha256_incremental_matches_one_shot() {
        let chunk_sizes = [1, 3, 7, 13, 55, 56, 63, 64, 65, 100];
        for len in 0..200 {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let expected = sha256(&data);
            for size in chunk_sizes {
                let mut hasher = Sha256::new();
                for chunk in data.chunks(size) {
                    hasher.update(chunk);
                }
                assert_eq!(
                    hasher.finalize(),
                    expected,
                    "length {len}, chunks of {size}"
                );
            }
        }
    }

    #[test]
    fn hmac_sha256_rfc4231() {
        // RFC 4231 section 4, test cases 1-7 (HMAC-SHA-256 rows). Case 5 is published
        // truncated to 128 bits, so only a prefix of the output is compared.
        let long_key = vec![0xaa; 131];
        let cases: [(&[u8], &[u8], &str); 7] = [
            (
                &[0x0b; 20],
                b"Hi There",
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                b"Jefe",
                b"what do ya want for nothing?",
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                &[0xaa; 20],
                &[0xdd; 50],
                "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
            ),
            (
                &hex("0102030405060708090a0b0c0d0e0f10111213141516171819"),
                &[0xcd; 50],
                "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
            ),
            (
                &[0x0c; 20],
                b"Test With Truncation",
                "a3b6167473100ee06e0c796c2955552b",
            ),
            (
                &long_key,
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
            (
                &long_key,
                b"This is a test using a larger than block-size key and a larger than \
                  block-size data. The key needs to be hashed before being used by the \
                  HMAC algorithm.",
                "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
            ),
        ];
        for (number, (key, message, expected)) in cases.into_iter().enumerate() {
            let expected = hex(expected);
            let mac = hmac_sha256(key, message);
            assert_eq!(&mac[..expected.len()], expected, "test case {}", number + 1);
        }
    }

    /// Runs PBKDF2 over each (password, salt, iterations, expected hex) row.
    fn check_pbkdf2(cases: &[(&[u8], &[u8], u32, &str)]) {
        for &(password, salt, iterations, expected) in cases {
            let expected = hex(expected);
            let mut out = vec![0u8; expected.len()];
            pbkdf2_hmac_sha256(password, salt, iterations, &mut out);
            assert_eq!(out, expected, "P={password:?} S={salt:?} c={iterations}");
        }
    }

    #[test]
    fn pbkdf2_rfc7914() {
        // RFC 7914 section 11, the two PBKDF2-HMAC-SHA256 vectors. The second runs 80,000
        // iterations and is the slowest test here (about a second in a debug build).
        check_pbkdf2(&[
            (
                b"passwd",
                b"salt",
                1,
                "55 ac 04 6e 56 e3 08 9f ec 16 91 c2 25 44 b6 05 \
                 f9 41 85 21 6d de 04 65 e6 8b 9d 57 c2 0d ac bc \
                 49 ca 9c cc f1 79 b6 45 99 16 64 b3 9d 77 ef 31 \
                 7c 71 b8 45 b1 e3 0b d5 09 11 20 41 d3 a1 97 83",
            ),
            (
                b"Password",
                b"NaCl",
                80_000,
                "4d dc d8 f6 0b 98 be 21 83 0c ee 5e f2 27 01 f9 \
                 64 1a 44 18 d0 4c 04 14 ae ff 08 87 6b 34 ab 56 \
                 a1 d4 25 a1 22 58 33 54 9a db 84 1b 51 c9 b3 17 \
                 6a 27 2b de bb a1 d0 78 47 8f 62 b3 97 f3 3c 8d",
            ),
        ]);
    }

    #[test]
    fn pbkdf2_matches_python_hashlib() {
        // Expected values from Python's hashlib.pbkdf2_hmac("sha256", P, S, c, dkLen). They
        // cover short and partial output blocks, an empty password and salt, NUL bytes, and a
        // password longer than a SHA-256 block.
        check_pbkdf2(&[
            (
                b"password",
                b"salt",
                1,
                "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b",
            ),
            (
                b"password",
                b"salt",
                2,
                "ae4d0c95af6b46d32d0adff928f06dd02a303f8ef3c251dfd6e2d85a95474c43",
            ),
            (
                b"password",
                b"salt",
                4096,
                "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a",
            ),
            (
                b"passwordPASSWORDpassword",
                b"saltSALTsaltSALTsaltSALTsaltSALTsalt",
                4096,
                "348c89dbcbd32b2f32d814b8116e84cf2b17347ebc1800181c4e2a1fb8dd53e1c635518c7dac47e9",
            ),
            (
                b"pass\0word",
                b"sa\0lt",
                4096,
                "89b69d0516f829893c696226650a8687",
            ),
            (
                b"",
                b"salt",
                3,
                "5ddf839afa2d5fb4be56e1a0f48917617559bef61ec122bfca1c7f75ac8f401d06",
            ),
            (&[b'k'; 100], b"", 10, "44"),
        ]);
    }

    #[test]
    #[should_panic(expected = "at least one iteration")]
    fn pbkdf2_rejects_zero_iterations() {
        pbkdf2_hmac_sha256(b"password", b"salt", 0, &mut [0u8; 32]);
    }

    #[test]
    fn constant_time_eq_cases() {
        let cases: [(&[u8], &[u8], bool); 7] = [
            (b"", b"", true),
            (b"a", b"a", true),
            (b"secret", b"secret", true),
            (b"secret", b"secreT", false),
            (b"secret", b"Secret", false),
            (b"secret", b"secret!", false),
            (b"", b"x", false),
        ];
        for (a, b, expected) in cases {
            assert_eq!(constant_time_eq(a, b), expected, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn hex_encoding() {
        let cases: [(&[u8], &str); 4] = [
            (b"", ""),
            (&[0x00], "00"),
            (&[0x01, 0xab, 0xff], "01abff"),
            (b"Hi", "4869"),
        ];
        for (bytes, text) in cases {
            assert_eq!(to_hex(bytes), text);
            assert_eq!(from_hex(text).as_deref(), Some(bytes));
        }
        let all_bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(from_hex(&to_hex(&all_bytes)), Some(all_bytes));
    }

    #[test]
    fn from_hex_input_checks() {
        let cases: [(&str, Option<&[u8]>); 7] = [
            ("ABCDEF", Some(&[0xab, 0xcd, 0xef])),
            ("aB", Some(&[0xab])),
            ("a", None),
            ("abc", None),
            ("zz", None),
            ("0x00", None),
            ("é", None),
        ];
        for (text, expected) in cases {
            assert_eq!(from_hex(text).as_deref(), expected, "{text:?}");
        }
    }
}
