//! Deterministic fuzzing of everything that touches untrusted bytes before the registry:
//! the line reader (framing), `clean_line` (terminal safety) and `parse` (commands).
//!
//! A seeded SplitMix64 generator, written here so the crate keeps zero dependencies, makes
//! the same few hundred thousand inputs on every run: random bytes, near-miss commands
//! (`~-@`, `~->:`, `~::`, `~:lu`), huge names, names with bad characters, invalid UTF-8,
//! lone `\r`, NUL, C1 controls and lines around the length limit. A failure prints the seed
//! and case number, so it can be replayed. Each property is one the rest of the server
//! relies on:
//!
//! - `parse` is total: any string gives a command or an error, never a panic.
//! - `clean_line` leaves no control character except TAB.
//! - Every reply built from parsed text (public, tagged, private) is one line: no control
//!   byte except TAB before its final `\n`, so no client can forge a line, clear a screen or
//!   ring a bell on another user's terminal.
//! - `LineReader` matches a simple reference model on every stream, however the stream is
//!   split into reads, and never returns text longer than `MAX_LINE_BYTES` input bytes.

mod common;

use std::collections::HashMap;
use std::io::{self, Read};

use common::Rng;
use ptchat::limits::{MAX_LINE_BYTES, MAX_NAME_LEN};
use ptchat::line_reader::{Line, LineReader};
use ptchat::protocol::{self, Command, Reply, clean_line, validate_name};

const SEED: u64 = 0x7074_6368_6174_2134; // "ptchat!4"

/// Byte sequences that have broken parsers and terminals before.
const NASTY: &[&[u8]] = &[
    b"\0",
    b"\r",
    b"\r\r",
    b"\t",
    b"\x1b[2J",
    b"\x1b]0;pwned\x07",
    b"\x07",
    b"\x7f",
    b"\x08\x08\x08",
    b"\xc2\x85",         // U+0085 NEL, a C1 control in valid UTF-8
    b"\xc2\x9b31m",      // U+009B CSI, the one-byte escape some terminals obey
    b"\xe2\x80\xae",     // U+202E right-to-left override (not a control; allowed)
    b"\xff",             // never valid in UTF-8
    b"\xc0\xaf",         // overlong '/'
    b"\xed\xa0\x80",     // a surrogate half
    b"\xf4\x90\x80\x80", // beyond U+10FFFF
    b"\xe2\x82",         // truncated sequence
    b"\xf0\x9f\x98\x80", // an emoji, valid
    "é".as_bytes(),
    b" ",
    b":",
    b"::",
    b"@",
    b">",
    b"~",
];

/// Beginnings of real commands, whole and cut short.
const PREFIXES: &[&str] = &[
    "",
    "~",
    "~-",
    "~-@",
    "~->",
    "~:",
    "~::",
    "~:lu",
    "~:lu:",
    "~:lu::",
    "~:h",
    "~:h:",
    "~:q",
    "~:q!",
    "~:q!:",
    "~:panic!:",
    "~:LU:",
    " ~:lu:",
    "~->:",
    "~-@:",
    "~->>",
    "~-@@",
    "~- @",
];

const NAME_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-";

fn random_bytes(rng: &mut Rng, max_len: usize) -> Vec<u8> {
    let len = rng.below(max_len + 1);
    (0..len).map(|_| rng.next() as u8).collect()
}

/// A name that is valid, too long, empty, or spoiled by one bad character.
fn name_like(rng: &mut Rng) -> Vec<u8> {
    let len = match rng.below(40) {
        0..=5 => 0,
        6..=11 => MAX_NAME_LEN + rng.below(3),
        // Huge names are rarer: each costs thousands of bytes to clean and check.
        12 => MAX_NAME_LEN * 10 + rng.below(3000),
        _ => 1 + rng.below(MAX_NAME_LEN),
    };
    let mut name: Vec<u8> = (0..len).map(|_| rng.pick(NAME_CHARS)).collect();
    if rng.chance(3) {
        let at = rng.below(name.len() + 1);
        let bad = rng.pick(NASTY);
        name.splice(at..at, bad.iter().copied());
    }
    if rng.chance(5) {
        name.insert(0, b' ');
        name.push(b' ');
    }
    name
}

/// Text that mixes ordinary words with nasty bytes.
fn text_like(rng: &mut Rng) -> Vec<u8> {
    let mut text = Vec::new();
    for _ in 0..rng.below(6) {
        match rng.below(4) {
            0 => text.extend_from_slice(rng.pick(NASTY)),
            1 => text.extend_from_slice(&random_bytes(rng, 8)),
            _ => {
                text.extend_from_slice(rng.pick(&["hi", " ", "hello world", "", "a:b"]).as_bytes())
            }
        }
    }
    text
}

/// One generated line (no line ending of its own, though it may contain `\r` or `\n`
/// bytes when a nasty fragment puts them there).
fn one_input(rng: &mut Rng) -> Vec<u8> {
    // Long lines are rare here: in a debug build every checked byte costs, and the line
    // reader test below feeds plenty of them.
    match rng.below(40) {
        0..=7 => random_bytes(rng, 64),
        8 => random_bytes(rng, 2 * MAX_LINE_BYTES),
        9..=26 => {
            let mut line = rng.pick(PREFIXES).as_bytes().to_vec();
            line.extend(name_like(rng));
            line.extend_from_slice(rng.pick(&[":", ": ", "", " :", "::", ":  "]).as_bytes());
            line.extend(text_like(rng));
            line
        }
        27..=32 => {
            let mut line = rng.pick(PREFIXES).as_bytes().to_vec();
            line.extend(text_like(rng));
            line
        }
        33 => {
            // Lines right around the length limit, in bytes.
            let len = MAX_LINE_BYTES - 3 + rng.below(7);
            let fill = rng.pick(b"x\xff\0\r");
            vec![fill; len]
        }
        _ => text_like(rng),
    }
}

/// True if `s` holds a control character other than TAB: C0 (below 0x20), DEL, or C1
/// (U+0080..U+009F, encoded in UTF-8 as `C2 80`..`C2 9F`); `char::is_control` is exactly
/// these. Checked on bytes because a debug build decodes chars slowly.
fn has_forbidden_char(s: &str) -> bool {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if (b < 0x20 && b != b'\t') || b == 0x7f {
            return true;
        }
        if b == 0xc2 && i + 1 < bytes.len() && (0x80..=0x9f).contains(&bytes[i + 1]) {
            return true;
        }
        i += 1;
    }
    false
}

/// Fails the test with `why`; the caller's `case` closure names the input only on failure,
/// so the passing path does not pay for formatting a few hundred thousand descriptions.
fn ensure(ok: bool, case: &dyn Fn() -> String, why: &str) {
    if !ok {
        panic!("{}: {why}", case());
    }
}

/// The properties of one cleaned line: its parse, and every reply that can be built from it.
/// Returns what the line parsed as, so a test can prove its generator reaches every branch.
fn check_parsed(cleaned: &str, case: &dyn Fn() -> String) -> String {
    let parsed = protocol::parse(cleaned);
    let kind = match &parsed {
        Ok(Command::Tagged { .. }) => "Tagged".to_string(),
        Ok(Command::Private { .. }) => "Private".to_string(),
        Ok(Command::Public { .. }) => "Public".to_string(),
        Ok(other) => format!("{other:?}"),
        Err(e) => format!("{e:?}"),
    };
    let sender = "alice";
    let replies: Vec<Reply> = match &parsed {
        Ok(Command::Nothing) => {
            ensure(
                cleaned.trim().is_empty(),
                case,
                "Nothing for a non-blank line",
            );
            vec![]
        }
        Ok(Command::Public { text }) => {
            // `~~` sends the rest of the line from its second `~`.
            let sent = cleaned
                .strip_prefix('~')
                .filter(|rest| rest.starts_with('~'));
            ensure(
                text == sent.unwrap_or(cleaned),
                case,
                "public text must be the line as sent",
            );
            vec![Reply::Public { from: sender, text }]
        }
        Ok(Command::Tagged { to, text }) | Ok(Command::Private { to, text }) => {
            ensure(
                validate_name(to).is_ok(),
                case,
                "addressed to an invalid name",
            );
            ensure(!text.trim().is_empty(), case, "empty addressed text");
            vec![
                Reply::Tagged {
                    from: sender,
                    to,
                    text,
                    for_target: true,
                },
                Reply::Tagged {
                    from: sender,
                    to,
                    text,
                    for_target: false,
                },
                Reply::Private { from: sender, text },
                Reply::Stored {
                    from: sender,
                    sent_at: "2026-01-01T00:00:00Z",
                    text,
                },
            ]
        }
        Ok(_) => {
            ensure(
                cleaned.starts_with("~:"),
                case,
                "keyword command without ~:",
            );
            vec![]
        }
        // The error line itself goes back to the sender: it must be clean too.
        Err(e) => vec![Reply::Error(protocol::ErrorReply::Parse(e.clone()))],
    };
    for reply in replies {
        assert_one_clean_line(&reply.to_line(), case);
    }
    kind
}

fn assert_one_clean_line(line: &str, case: &dyn Fn() -> String) {
    let Some(body) = line.strip_suffix('\n') else {
        panic!("{}: reply without a final newline", case());
    };
    ensure(
        !has_forbidden_char(body),
        case,
        "control character in a reply",
    );
}

#[test]
fn parse_and_clean_line_hold_their_properties_on_generated_lines() {
    const CASES: usize = 300_000;
    let mut rng = Rng(SEED);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for n in 0..CASES {
        let raw = one_input(&mut rng);
        let case = || {
            let input = String::from_utf8_lossy(&raw);
            format!("seed {SEED:#x} case {n} input {input:?}")
        };
        let cleaned = clean_line(&raw);
        ensure(
            !has_forbidden_char(&cleaned),
            &case,
            "clean_line left a control char",
        );
        ensure(
            cleaned.chars().count() <= raw.len(),
            &case,
            "clean_line grew the line",
        );
        *seen.entry(check_parsed(&cleaned, &case)).or_insert(0) += 1;
    }
    // The generator must reach every outcome, or the properties above prove little.
    for kind in [
        "Nothing",
        "Public",
        "Tagged",
        "Private",
        "ListUsers",
        "Help",
        "Quit",
        "UnknownCommand",
        "MissingColon",
        "BadName(Empty)",
        "BadName(TooLong)",
        "BadName(BadCharacter)",
        "EmptyText",
    ] {
        let count = seen.get(kind).copied().unwrap_or(0);
        assert!(
            count >= 100,
            "only {count} inputs parsed as {kind}: {seen:?}"
        );
    }
}

#[test]
fn parse_is_total_even_on_uncleaned_strings() {
    // The session only parses cleaned lines, but parse must not rely on that to stay safe.
    const CASES: usize = 200_000;
    let mut rng = Rng(SEED ^ 1);
    for n in 0..CASES {
        let raw = one_input(&mut rng);
        let text = String::from_utf8_lossy(&raw);
        let parsed = protocol::parse(&text);
        if let Ok(Command::Tagged { to, .. } | Command::Private { to, .. }) = &parsed {
            assert!(
                validate_name(to).is_ok(),
                "case {n}: invalid name {to:?} accepted"
            );
        }
    }
}

/// A `Read` that hands out the stream in random-sized pieces, so every split point of the
/// framing logic (inside a `\r\n`, at the limit, mid-UTF-8) gets exercised.
struct Chunked<'a> {
    data: &'a [u8],
    rng: Rng,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let most = match self.rng.below(4) {
            0 => 1,
            1 => 1 + self.rng.below(8),
            _ => 1 + self.rng.below(4096),
        };
        let n = most.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// What the reader must return for `stream`: split at `\n`, drop one trailing `\r`, refuse
/// lines over the limit, keep a final line that has no `\n`.
fn reference_lines(stream: &[u8]) -> Vec<Line> {
    let mut pieces: Vec<&[u8]> = stream.split(|&b| b == b'\n').collect();
    if pieces.last().is_some_and(|p| p.is_empty()) {
        pieces.pop();
    }
    pieces
        .into_iter()
        .map(|piece| {
            let piece = piece.strip_suffix(b"\r").unwrap_or(piece);
            if piece.len() > MAX_LINE_BYTES {
                Line::TooLong
            } else {
                Line::Text(clean_line(piece))
            }
        })
        .collect()
}

#[test]
fn line_reader_matches_the_reference_model_on_generated_streams() {
    const STREAMS: usize = 6_000;
    let mut rng = Rng(SEED ^ 2);
    let mut lines_checked = 0;
    for n in 0..STREAMS {
        let mut stream = Vec::new();
        for _ in 0..1 + rng.below(12) {
            match rng.below(10) {
                0 => stream.extend(random_bytes(&mut rng, 3000)),
                1 => stream.extend(vec![b'y'; MAX_LINE_BYTES * (1 + rng.below(8))]),
                _ => stream.extend(one_input(&mut rng)),
            }
            let ending: &[u8] = rng.pick(&[b"\n", b"\r\n", b"\r", b"", b"\n\n"]);
            stream.extend_from_slice(ending);
        }
        let expected = reference_lines(&stream);
        let mut reader = LineReader::new(Chunked {
            data: &stream,
            rng: Rng(rng.next()),
        });
        let mut got = Vec::new();
        while let Some(line) = reader.read_line().expect("in-memory read cannot fail") {
            if let Line::Text(text) = &line {
                let case = || format!("seed {SEED:#x} stream {n} line {text:?}");
                ensure(
                    text.chars().count() <= MAX_LINE_BYTES,
                    &case,
                    "text over the limit",
                );
                ensure(!has_forbidden_char(text), &case, "control char in a line");
                check_parsed(text, &case);
            }
            got.push(line);
        }
        assert_eq!(
            got,
            expected,
            "seed {SEED:#x} stream {n}: {:?}",
            String::from_utf8_lossy(&stream)
        );
        lines_checked += got.len();
    }
    assert!(
        lines_checked > 30_000,
        "generator produced too few lines: {lines_checked}"
    );
}

#[test]
fn a_megabyte_without_newline_is_one_refusal() {
    let mut rng = Rng(SEED ^ 3);
    let mut stream: Vec<u8> = (0..1 << 20).map(|_| (rng.next() as u8) | 0x80).collect();
    stream.extend_from_slice(b"\nafter\n");
    let mut reader = LineReader::new(Chunked {
        data: &stream,
        rng: Rng(7),
    });
    let mut got = Vec::new();
    while let Some(line) = reader.read_line().expect("in-memory read") {
        got.push(line);
    }
    assert_eq!(got, vec![Line::TooLong, Line::Text("after".into())]);
}
