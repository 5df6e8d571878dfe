//! The server's log: one line per event on stderr, for people and for `journalctl`.
//!
//! Format: `2026-11-24T19:01:28.123Z INFO connect peer=127.0.0.1:5000 reason="..."`, that is
//! an RFC 3339 UTC timestamp, a level, an event name and `key=value` fields (values with
//! spaces or quotes are quoted). This module owns that format and the level filter; it must
//! not be called while the registry lock is held, since writing is a syscall.

use std::fmt::{self, Display, Write as _};
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::SystemTime;

use crate::clock;

/// How important an event is; lower levels are filtered out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "error" => Some(Level::Error),
            "warn" => Some(Level::Warn),
            "info" => Some(Level::Info),
            "debug" => Some(Level::Debug),
            _ => None,
        }
    }
}

impl Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
        })
    }
}

static MAX_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
static LOG_MESSAGES: AtomicBool = AtomicBool::new(false);

/// Sets the most detailed level that is written.
pub fn set_level(level: Level) {
    MAX_LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Whether chat text may be logged (`--log-messages`); off by default for privacy.
pub fn set_log_messages(on: bool) {
    LOG_MESSAGES.store(on, Ordering::Relaxed);
}

pub fn log_messages() -> bool {
    LOG_MESSAGES.load(Ordering::Relaxed)
}

pub fn enabled(level: Level) -> bool {
    level as u8 <= MAX_LEVEL.load(Ordering::Relaxed)
}

/// Room for a typical log line on the formatting thread's stack. A line formatted on the
/// heap leaves its freed buffer cached by the thread that freed it (glibc keeps a few per
/// size for each thread), and with 10,000 client threads those caches add up; the stack's
/// pages are there anyway. A longer line is formatted on the heap.
const LINE_CAPACITY: usize = 320;

/// Formats one log line (without the timestamp's source of truth, so it can be tested).
pub fn format_line(
    time: &dyn Display,
    level: Level,
    event: &str,
    fields: &[(&str, &dyn Display)],
) -> String {
    let mut line = String::new();
    let _ = write_line(&mut line, time, level, event, fields);
    line
}

/// Writes one log line to `out`. A value is written as it is if it is plain (no space,
/// quote, `=` or control character, not empty), else quoted and escaped as Rust's `{:?}`
/// does, so that every line splits back into its fields.
fn write_line(
    out: &mut impl fmt::Write,
    time: &dyn Display,
    level: Level,
    event: &str,
    fields: &[(&str, &dyn Display)],
) -> fmt::Result {
    write!(out, "{time} {level} {event}")?;
    for (key, value) in fields {
        let mut check = PlainCheck::default();
        // Formatting into the check cannot fail.
        let _ = write!(check, "{value}");
        if check.chars > 0 && check.plain {
            write!(out, " {key}={value}")?;
        } else {
            write!(out, " {key}=\"")?;
            write!(Escaped(&mut *out), "{value}")?;
            out.write_char('"')?;
        }
    }
    out.write_char('\n')
}

/// Looks at a value as it is formatted, keeping nothing: is it plain?
struct PlainCheck {
    chars: usize,
    plain: bool,
}

impl Default for PlainCheck {
    fn default() -> Self {
        PlainCheck {
            chars: 0,
            plain: true,
        }
    }
}

impl fmt::Write for PlainCheck {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.chars += s.len();
        self.plain &= s
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '"' && c != '=');
        Ok(())
    }
}

/// Writes through to `0`, escaping each character as `{:?}` does inside a string.
struct Escaped<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            match c {
                '"' => self.0.write_str("\\\"")?,
                '\'' => self.0.write_char('\'')?,
                c => write!(self.0, "{}", c.escape_debug())?,
            }
        }
        Ok(())
    }
}

/// A line being formatted into a buffer on the stack; fails once the buffer is full.
struct StackLine<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl fmt::Write for StackLine<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let room = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        room.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Writes one event if its level is enabled. Write errors are ignored: a server must not
/// stop serving because its log is gone.
pub fn event(level: Level, event: &str, fields: &[(&str, &dyn Display)]) {
    if !enabled(level) {
        return;
    }
    let time = clock::Rfc3339(SystemTime::now());
    let mut buf = [0u8; LINE_CAPACITY];
    let mut line = StackLine {
        buf: &mut buf,
        len: 0,
    };
    let mut stderr = std::io::stderr().lock();
    if write_line(&mut line, &time, level, event, fields).is_ok() {
        let _ = stderr.write_all(&line.buf[..line.len]);
    } else {
        let _ = stderr.write_all(format_line(&time, level, event, fields).as_bytes());
    }
}

pub fn error(name: &str, fields: &[(&str, &dyn Display)]) {
    event(Level::Error, name, fields)
}

pub fn warn(name: &str, fields: &[(&str, &dyn Display)]) {
    event(Level::Warn, name, fields)
}

pub fn info(name: &str, fields: &[(&str, &dyn Display)]) {
    event(Level::Info, name, fields)
}

pub fn debug(name: &str, fields: &[(&str, &dyn Display)]) {
    event(Level::Debug, name, fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_format_table() {
        let t = "2026-01-01T00:00:00.000Z";
        type Fields<'a> = Vec<(&'a str, &'a dyn Display)>;
        let rows: Vec<(Fields, &str)> = vec![
            (vec![], "2026-01-01T00:00:00.000Z INFO ev\n"),
            (
                vec![("peer", &"1.2.3.4:5")],
                "2026-01-01T00:00:00.000Z INFO ev peer=1.2.3.4:5\n",
            ),
            (vec![("n", &42)], "2026-01-01T00:00:00.000Z INFO ev n=42\n"),
            (
                vec![("reason", &"two words")],
                "2026-01-01T00:00:00.000Z INFO ev reason=\"two words\"\n",
            ),
            (
                vec![("empty", &"")],
                "2026-01-01T00:00:00.000Z INFO ev empty=\"\"\n",
            ),
            (
                vec![("evil", &"a\nb")],
                "2026-01-01T00:00:00.000Z INFO ev evil=\"a\\nb\"\n",
            ),
            (
                vec![("q", &"say \"hi\", it's \\ \u{1b}[2J")],
                "2026-01-01T00:00:00.000Z INFO ev q=\"say \\\"hi\\\", it's \\\\ \\u{1b}[2J\"\n",
            ),
        ];
        for (fields, expected) in rows {
            assert_eq!(format_line(&t, Level::Info, "ev", &fields), expected);
            let mut buf = [0u8; LINE_CAPACITY];
            let mut line = StackLine {
                buf: &mut buf,
                len: 0,
            };
            write_line(&mut line, &t, Level::Info, "ev", &fields).expect("fits");
            assert_eq!(&line.buf[..line.len], expected.as_bytes(), "on the stack");
        }
        // A line longer than the stack buffer does not fit there (the heap takes it).
        let long = "x".repeat(LINE_CAPACITY);
        let fields: Vec<(&str, &dyn Display)> = vec![("long", &long)];
        let mut buf = [0u8; LINE_CAPACITY];
        let mut line = StackLine {
            buf: &mut buf,
            len: 0,
        };
        assert!(write_line(&mut line, &t, Level::Info, "ev", &fields).is_err());
        assert!(format_line(&t, Level::Info, "ev", &fields).ends_with(&format!("long={long}\n")));
    }

    #[test]
    fn level_parse_and_order() {
        assert_eq!(Level::parse("warn"), Some(Level::Warn));
        assert_eq!(Level::parse("loud"), None);
        assert!(Level::Error < Level::Debug);
    }
}
