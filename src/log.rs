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

/// Room for a typical log line, so formatting one allocates once.
const LINE_CAPACITY: usize = 256;

/// Formats one log line (without the timestamp's source of truth, so it can be tested).
pub fn format_line(
    time: &str,
    level: Level,
    event: &str,
    fields: &[(&str, &dyn Display)],
) -> String {
    // One allocation for the whole line: each freed buffer stays cached by the thread that
    // freed it, and with 10,000 client threads those caches add up.
    let mut line = String::with_capacity(LINE_CAPACITY);
    let _ = write!(line, "{time} {level} {event}");
    for (key, value) in fields {
        let _ = write!(line, " {key}=");
        let start = line.len();
        let _ = write!(line, "{value}");
        let plain = line.len() > start
            && line[start..]
                .chars()
                .all(|c| !c.is_whitespace() && !c.is_control() && c != '"' && c != '=');
        if !plain {
            let value = line.split_off(start);
            let _ = write!(line, "{value:?}");
        }
    }
    line.push('\n');
    line
}

/// Writes one event if its level is enabled. Write errors are ignored: a server must not
/// stop serving because its log is gone.
pub fn event(level: Level, event: &str, fields: &[(&str, &dyn Display)]) {
    if !enabled(level) {
        return;
    }
    let line = format_line(&clock::rfc3339(SystemTime::now()), level, event, fields);
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
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
        ];
        for (fields, expected) in rows {
            assert_eq!(format_line(t, Level::Info, "ev", &fields), expected);
        }
    }

    #[test]
    fn level_parse_and_order() {
        assert_eq!(Level::parse("warn"), Some(Level::Warn));
        assert_eq!(Level::parse("loud"), None);
        assert!(Level::Error < Level::Debug);
    }
}
