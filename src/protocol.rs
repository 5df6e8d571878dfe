//! The chat protocol as pure functions: one client line in, one [`Command`] out; one
//! [`Reply`] in, one server line out.
//!
//! This module owns the syntax of everything that crosses the wire: the commands a signed-in
//! user may type, the rules for user names and the exact wording of every server line. It
//! must not clean untrusted bytes (that is `clean.rs`, whose output [`parse`] takes), do
//! I/O, touch the registry or keep state, so every rule here can be tested with a table of
//! `(input, expected)` rows.
//!
//! Server lines come in three shapes, so a person (or a script) can tell them apart:
//! `NAME: text` is chat, `* text` is a notice from the server, `! text` is an error. Names
//! cannot contain `*`, `!`, `[` or spaces, so chat can never pose as the server.

use std::fmt;
use std::sync::Arc;

use crate::limits::{MAX_LINE_BYTES, MAX_NAME_LEN};

/// [`parse`] takes what [`clean_line`] returns, so the two are at hand together here.
pub use crate::clean::clean_line;

/// What a signed-in user asked for with one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// An empty or whitespace-only line: ignored.
    Nothing,
    /// A plain line: sent to every other online user.
    Public { text: String },
    /// `~-@NAME: TEXT`: public, but NAME's copy is marked.
    Tagged { to: String, text: String },
    /// `~->NAME: TEXT`: only NAME receives it (or NAME's mailbox, if offline).
    Private { to: String, text: String },
    /// `~:lu:`: list every registered user and whether they are online.
    ListUsers,
    /// `~:h:`: list the commands.
    Help,
    /// `~:q!:`: sign out and close the connection.
    Quit,
    /// `~:panic!:`, debug builds only: panics the session thread, so tests can prove that a
    /// panic in one client's thread harms nobody else. Release builds parse it as unknown.
    #[cfg(debug_assertions)]
    Panic,
}

/// Why a line that looks like a command is not one. `Display` is the error line the user sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// `~:xyz:` or any other `~:` line that is not a known command.
    UnknownCommand,
    /// A line that begins with `~` but with no command's prefix: `~>bob: hi`, `~lu`,
    /// `~ hello`. It is refused rather than sent as chat, because it is far more often a
    /// mistyped command than a message (`~~` sends a message that begins with `~`).
    NotACommand,
    /// `~-@` or `~->` without the `:` that ends the name.
    MissingColon,
    /// The name in `~-@NAME:` / `~->NAME:` breaks the name rules.
    BadName(NameError),
    /// Nothing after `NAME:`.
    EmptyText,
}

/// Why a string is not a valid user name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong,
    BadCharacter,
}

/// Every command begins with this; a line that does is a command or an error, never chat.
const COMMAND_MARK: char = '~';
/// A public line that begins with `~` is typed with this in front: `~~x` sends `~x`.
const PREFIX_LITERAL: &str = "~~";
const PREFIX_COMMAND: &str = "~:";
const PREFIX_TAG: &str = "~-@";
const PREFIX_PRIVATE: &str = "~->";

/// Turns one cleaned line (no line ending, see [`clean_line`]) into a [`Command`].
///
/// A line that begins with `~` is a command: a mistyped one is an error to its sender, never
/// a public message, so a private message with a typo is not shown to everyone. A public line
/// that begins with `~` is typed as `~~`, and sent with the first `~` removed.
pub fn parse(line: &str) -> Result<Command, ParseError> {
    if line.trim().is_empty() {
        return Ok(Command::Nothing);
    }
    if line.starts_with(PREFIX_LITERAL) {
        let text = &line[COMMAND_MARK.len_utf8()..];
        return Ok(Command::Public {
            text: text.to_string(),
        });
    }
    if let Some(rest) = line.strip_prefix(PREFIX_TAG) {
        let (to, text) = parse_addressed(rest)?;
        return Ok(Command::Tagged { to, text });
    }
    if let Some(rest) = line.strip_prefix(PREFIX_PRIVATE) {
        let (to, text) = parse_addressed(rest)?;
        return Ok(Command::Private { to, text });
    }
    if line.starts_with(PREFIX_COMMAND) {
        return parse_keyword(line.trim_end());
    }
    if line.starts_with(COMMAND_MARK) {
        return Err(ParseError::NotACommand);
    }
    Ok(Command::Public {
        text: line.to_string(),
    })
}

fn parse_keyword(line: &str) -> Result<Command, ParseError> {
    match line {
        "~:lu:" => Ok(Command::ListUsers),
        "~:h:" => Ok(Command::Help),
        "~:q!:" => Ok(Command::Quit),
        #[cfg(debug_assertions)]
        "~:panic!:" => Ok(Command::Panic),
        _ => Err(ParseError::UnknownCommand),
    }
}

/// Splits `NAME: TEXT` (what follows `~-@` or `~->`). One space after the colon is
/// decoration, not text; surrounding whitespace of the name is forgiven.
fn parse_addressed(rest: &str) -> Result<(String, String), ParseError> {
    let (name, text) = rest.split_once(':').ok_or(ParseError::MissingColon)?;
    let name = name.trim();
    validate_name(name).map_err(ParseError::BadName)?;
    let text = text.strip_prefix(' ').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(ParseError::EmptyText);
    }
    Ok((name.to_string(), text.to_string()))
}

/// Checks the name rules: 1 to [`MAX_NAME_LEN`] characters of `[A-Za-z0-9_-]`.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(NameError::BadCharacter);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    Ok(())
}

/// The form of a name used for comparison: `Alice` and `alice` are the same user.
pub fn name_key(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// Every line the server sends. `Display` gives the line without its `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply<'a> {
    Greeting,
    AskPassword {
        name: &'a str,
    },
    AskNewPassword {
        name: &'a str,
    },
    Welcome {
        name: &'a str,
    },
    Joined {
        name: &'a str,
    },
    Left {
        name: &'a str,
    },
    Goodbye {
        name: &'a str,
    },
    TakenOver,
    Public {
        from: &'a str,
        text: &'a str,
    },
    /// A tagged message; `for_target` marks the copy sent to the tagged user.
    Tagged {
        from: &'a str,
        to: &'a str,
        text: &'a str,
        for_target: bool,
    },
    Private {
        from: &'a str,
        text: &'a str,
    },
    /// A private message kept while the receiver was offline.
    Stored {
        from: &'a str,
        sent_at: &'a str,
        text: &'a str,
    },
    StoredHeader {
        count: usize,
    },
    PrivateDelivered {
        to: &'a str,
    },
    PrivateStored {
        to: &'a str,
    },
    UserListHeader {
        total: usize,
        online: usize,
    },
    UserListEntry {
        name: &'a str,
        online: bool,
    },
    HelpLine {
        line: &'static str,
    },
    /// The client sends faster than its rate: its lines are read later, none are dropped.
    SlowedDown {
        per_sec: u32,
    },
    Error(ErrorReply<'a>),
}

/// Every error line. Each says what went wrong and, where useful, what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorReply<'a> {
    Parse(ParseError),
    InvalidName(NameError),
    UnknownUser { name: &'a str },
    EmptyPassword,
    PasswordTooLong,
    WrongPassword { tries_left: u32 },
    TooManyTries,
    NameJustTaken { name: &'a str },
    LineTooLong,
    ServerFull,
    TooManyFromAddress,
    SignInTimeout { secs: u64 },
    MailboxFull { name: &'a str },
    StoreFailed,
}

/// The lines of `~:h:`.
pub const HELP: &[&str] = &[
    "Commands:",
    "  TEXT              send TEXT to everyone online",
    "  ~-@NAME: TEXT     send TEXT to everyone, marked for NAME",
    "  ~->NAME: TEXT     send TEXT to NAME only (stored if NAME is offline)",
    "  ~:lu:             list all users, online and offline",
    "  ~:h:              show this help",
    "  ~:q!:             sign out",
];

impl Reply<'_> {
    /// The line as it goes on the wire: one shared allocation, `\n` included, so one
    /// message can be queued for many receivers without copying.
    pub fn to_line(&self) -> Arc<str> {
        Arc::from(format!("{self}\n"))
    }
}

impl fmt::Display for Reply<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Greeting => write!(
                f,
                "* Welcome to ptchat. Enter your name (1-{MAX_NAME_LEN} letters, digits, _ or -):"
            ),
            Reply::AskPassword { name } => write!(f, "* Password for {name}:"),
            Reply::AskNewPassword { name } => {
                write!(f, "* {name} is a new account. Choose a password:")
            }
            Reply::Welcome { name } => {
                write!(
                    f,
                    "* Welcome, {name}! You are signed in. Type ~:h: for help."
                )
            }
            Reply::Joined { name } => write!(f, "* {name} joined."),
            Reply::Left { name } => write!(f, "* {name} left."),
            Reply::Goodbye { name } => write!(f, "* Goodbye, {name}."),
            Reply::TakenOver => {
                write!(
                    f,
                    "* You signed in from another connection; closing this one."
                )
            }
            Reply::Public { from, text } => write!(f, "{from}: {text}"),
            Reply::Tagged {
                from,
                to,
                text,
                for_target,
            } => {
                let mark = if *for_target { "[tagged] " } else { "" };
                write!(f, "{mark}{from} @{to}: {text}")
            }
            Reply::Private { from, text } => write!(f, "[private] {from}: {text}"),
            Reply::Stored {
                from,
                sent_at,
                text,
            } => {
                write!(f, "[private, sent {sent_at}] {from}: {text}")
            }
            Reply::StoredHeader { count } => {
                let messages = if *count == 1 { "message" } else { "messages" };
                write!(
                    f,
                    "* {count} private {messages} arrived while you were away:"
                )
            }
            Reply::PrivateDelivered { to } => write!(f, "* Private message delivered to {to}."),
            Reply::PrivateStored { to } => write!(
                f,
                "* {to} is offline; private message stored for their next sign-in."
            ),
            Reply::UserListHeader { total, online } => {
                write!(f, "* Users: {total} ({online} online)")
            }
            Reply::UserListEntry { name, online } => {
                let state = if *online { "online" } else { "offline" };
                write!(f, "*   {name} {state}")
            }
            Reply::HelpLine { line } => write!(f, "* {line}"),
            Reply::SlowedDown { per_sec } => write!(
                f,
                "* You are sending more than {per_sec} lines a second: your lines now go out \
                 at that pace. None are dropped."
            ),
            Reply::Error(e) => write!(f, "! {e}"),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::UnknownCommand => write!(f, "Unknown command; type ~:h: for help."),
            ParseError::NotACommand => write!(
                f,
                "Unknown command; type ~:h: for help, or ~~ to send a line that begins with ~."
            ),
            ParseError::MissingColon => {
                write!(
                    f,
                    "Missing ':' after the name; use ~-@NAME: TEXT or ~->NAME: TEXT."
                )
            }
            ParseError::BadName(e) => write!(f, "Bad user name: {e}."),
            ParseError::EmptyText => write!(f, "Nothing to send after the name."),
        }
    }
}

impl std::error::Error for ParseError {}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => write!(f, "a name needs at least one character"),
            NameError::TooLong => write!(f, "a name has at most {MAX_NAME_LEN} characters"),
            NameError::BadCharacter => {
                write!(f, "a name uses only letters, digits, '_' and '-'")
            }
        }
    }
}

impl fmt::Display for ErrorReply<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorReply::Parse(e) => write!(f, "{e}"),
            ErrorReply::InvalidName(e) => write!(f, "Invalid name: {e}. Try again:"),
            ErrorReply::UnknownUser { name } => {
                write!(f, "Unknown user {name}; nothing was sent.")
            }
            ErrorReply::EmptyPassword => write!(f, "The password cannot be empty. Try again:"),
            ErrorReply::PasswordTooLong => write!(f, "That password is too long. Try again:"),
            ErrorReply::WrongPassword { tries_left } => {
                let tries = if *tries_left == 1 { "try" } else { "tries" };
                write!(f, "Wrong password ({tries_left} {tries} left). Try again:")
            }
            ErrorReply::TooManyTries => write!(f, "Too many wrong passwords; goodbye."),
            ErrorReply::NameJustTaken { name } => {
                write!(
                    f,
                    "{name} was registered by someone else just now. Enter your name:"
                )
            }
            ErrorReply::LineTooLong => write!(
                f,
                "Line too long (limit {MAX_LINE_BYTES} bytes); it was not sent."
            ),
            ErrorReply::ServerFull => write!(f, "Server full; try again later."),
            ErrorReply::TooManyFromAddress => {
                write!(
                    f,
                    "Too many connections from your address; try again later."
                )
            }
            ErrorReply::SignInTimeout { secs } => {
                write!(f, "Sign-in timed out after {secs} s; goodbye.")
            }
            ErrorReply::MailboxFull { name } => {
                write!(f, "{name}'s mailbox is full; your message was not stored.")
            }
            ErrorReply::StoreFailed => {
                write!(f, "The server could not save that; please try again later.")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(text: &str) -> Result<Command, ParseError> {
        Ok(Command::Public { text: text.into() })
    }
    fn tagged(to: &str, text: &str) -> Result<Command, ParseError> {
        Ok(Command::Tagged {
            to: to.into(),
            text: text.into(),
        })
    }
    fn private(to: &str, text: &str) -> Result<Command, ParseError> {
        Ok(Command::Private {
            to: to.into(),
            text: text.into(),
        })
    }

    #[test]
    fn parse_table() {
        use ParseError::*;
        let long_name = "a".repeat(MAX_NAME_LEN + 1);
        let long_tag = format!("~-@{long_name}: hi");
        let rows: Vec<(&str, Result<Command, ParseError>)> = vec![
            ("", Ok(Command::Nothing)),
            ("   ", Ok(Command::Nothing)),
            ("\t", Ok(Command::Nothing)),
            ("hello", public("hello")),
            ("  spaced  ", public("  spaced  ")),
            ("a ~ inside", public("a ~ inside")),
            // A line that begins with `~` is a command or an error, never chat...
            ("~", Err(NotACommand)),
            ("~ hello", Err(NotACommand)),
            ("~-", Err(NotACommand)),
            ("~>bobby: typo arrow", Err(NotACommand)),
            ("~-bobby: x", Err(NotACommand)),
            ("~=>bobby: x", Err(NotACommand)),
            ("~lu", Err(NotACommand)),
            ("~lu:", Err(NotACommand)),
            ("~h", Err(NotACommand)),
            ("~q!", Err(NotACommand)),
            ("~\u{e9}", Err(NotACommand)),
            // ...unless it begins with `~~`, which sends the rest from its second `~`.
            ("~~", public("~")),
            ("~~ hello", public("~ hello")),
            ("~~~", public("~~")),
            ("~~->bobby: x", public("~->bobby: x")),
            ("~~:q!:", public("~:q!:")),
            ("~:lu:", Ok(Command::ListUsers)),
            ("~:lu:  ", Ok(Command::ListUsers)),
            ("~:h:", Ok(Command::Help)),
            ("~:q!:", Ok(Command::Quit)),
            ("~:q!", Err(UnknownCommand)),
            ("~:lu", Err(UnknownCommand)),
            ("~:LU:", Err(UnknownCommand)),
            ("~:", Err(UnknownCommand)),
            ("~::", Err(UnknownCommand)),
            ("~:q!: bye", Err(UnknownCommand)),
            ("~:quit:", Err(UnknownCommand)),
            ("~-@bob: hi", tagged("bob", "hi")),
            ("~-@bob:hi", tagged("bob", "hi")),
            ("~-@bob:  two spaces", tagged("bob", " two spaces")),
            ("~-@ bob : hi", tagged("bob", "hi")),
            ("~-@Bob_1-x: a: b", tagged("Bob_1-x", "a: b")),
            ("~-@bob", Err(MissingColon)),
            ("~-@", Err(MissingColon)),
            ("~-@: hi", Err(BadName(NameError::Empty))),
            ("~-@bo b: hi", Err(BadName(NameError::BadCharacter))),
            ("~-@bob!: hi", Err(BadName(NameError::BadCharacter))),
            (&long_tag, Err(BadName(NameError::TooLong))),
            ("~-@bob:", Err(EmptyText)),
            ("~-@bob:   ", Err(EmptyText)),
            ("~->bob: hi", private("bob", "hi")),
            ("~->bob:hi there", private("bob", "hi there")),
            ("~->", Err(MissingColon)),
            ("~->:", Err(BadName(NameError::Empty))),
            ("~->bob", Err(MissingColon)),
            ("~->bob: ", Err(EmptyText)),
            ("~->b\u{e9}b: hi", Err(BadName(NameError::BadCharacter))),
        ];
        for (input, expected) in rows {
            assert_eq!(parse(input), expected, "input {input:?}");
        }
    }

    #[test]
    fn name_rules() {
        let ok = ["a", "Alice", "bob_2", "x-y", &"z".repeat(MAX_NAME_LEN)];
        for name in ok {
            assert_eq!(validate_name(name), Ok(()), "{name:?}");
        }
        let bad = [
            ("", NameError::Empty),
            ("a b", NameError::BadCharacter),
            ("*", NameError::BadCharacter),
            ("al!ce", NameError::BadCharacter),
            ("\u{e9}", NameError::BadCharacter),
            ("a\u{0}", NameError::BadCharacter),
            (&"z".repeat(MAX_NAME_LEN + 1), NameError::TooLong),
        ];
        for (name, err) in bad {
            assert_eq!(validate_name(name), Err(err), "{name:?}");
        }
        assert_eq!(name_key("AlIcE"), "alice");
    }

    /// Each way a command was seen to go public (issue 18), as the bytes arrive: the cleaned
    /// line is the command that was meant, or an error; never a public message.
    #[test]
    fn stray_keys_and_typos_never_make_a_command_public() {
        use ParseError::*;
        let rows: Vec<(&[u8], Result<Command, ParseError>)> = vec![
            (
                b" ~->bobby: leading space",
                private("bobby", "leading space"),
            ),
            (b"\t~->bobby: leading tab", private("bobby", "leading tab")),
            (b"\x1b[A~->bobby: arrow", private("bobby", "arrow")),
            (b"\x1bOA~->bobby: arrow", private("bobby", "arrow")),
            (b"\x1b[A ~-@bobby: arrow", tagged("bobby", "arrow")),
            (b"\x0c~:q!:", Ok(Command::Quit)),
            (
                b"\xff\xf4\xff\xfd\x06~->bobby: ctrl-c",
                private("bobby", "ctrl-c"),
            ),
            (b"\xff\xf4\xff\xfd\x06hello", public("hello")),
            (b"\x1b]0;title\x07~->bobby: osc", private("bobby", "osc")),
            (b"~>bobby: typo arrow", Err(NotACommand)),
            (b"~>", Err(NotACommand)),
            (b"~-", Err(NotACommand)),
            (b"~lu", Err(NotACommand)),
            (b"~:q!", Err(UnknownCommand)),
            (b"~ hello", Err(NotACommand)),
            (b" ~>bobby: x", Err(NotACommand)),
            (b"\x1b[B~lu", Err(NotACommand)),
            (b"~~hello", public("~hello")),
            (b"  ~~ tilde", public("~ tilde")),
            (b"\x1b[A~~->x", public("~->x")),
            (b"\x1b[A", Ok(Command::Nothing)),
            (b"\xff\xf4\xff\xfd\x06", Ok(Command::Nothing)),
        ];
        for (input, expected) in rows {
            assert_eq!(parse(&clean_line(input)), expected, "input {input:?}");
        }
    }

    #[test]
    fn reply_table() {
        let rows: Vec<(Reply, &str)> = vec![
            (
                Reply::Public {
                    from: "alice",
                    text: "hi",
                },
                "alice: hi",
            ),
            (
                Reply::Tagged {
                    from: "alice",
                    to: "bob",
                    text: "hi",
                    for_target: false,
                },
                "alice @bob: hi",
            ),
            (
                Reply::Tagged {
                    from: "alice",
                    to: "bob",
                    text: "hi",
                    for_target: true,
                },
                "[tagged] alice @bob: hi",
            ),
            (
                Reply::Private {
                    from: "alice",
                    text: "psst",
                },
                "[private] alice: psst",
            ),
            (Reply::Joined { name: "bob" }, "* bob joined."),
            (Reply::Left { name: "bob" }, "* bob left."),
            (
                Reply::UserListEntry {
                    name: "bob",
                    online: false,
                },
                "*   bob offline",
            ),
            (
                Reply::UserListEntry {
                    name: "bob",
                    online: true,
                },
                "*   bob online",
            ),
            (
                Reply::Error(ErrorReply::UnknownUser { name: "zed" }),
                "! Unknown user zed; nothing was sent.",
            ),
            (
                Reply::Error(ErrorReply::Parse(ParseError::UnknownCommand)),
                "! Unknown command; type ~:h: for help.",
            ),
            (
                Reply::Error(ErrorReply::Parse(ParseError::NotACommand)),
                "! Unknown command; type ~:h: for help, or ~~ to send a line that begins with ~.",
            ),
            (
                Reply::Error(ErrorReply::WrongPassword { tries_left: 2 }),
                "! Wrong password (2 tries left). Try again:",
            ),
            (
                Reply::Error(ErrorReply::WrongPassword { tries_left: 1 }),
                "! Wrong password (1 try left). Try again:",
            ),
            (
                Reply::StoredHeader { count: 1 },
                "* 1 private message arrived while you were away:",
            ),
            (
                Reply::StoredHeader { count: 2 },
                "* 2 private messages arrived while you were away:",
            ),
            (
                Reply::UserListHeader {
                    total: 1,
                    online: 1,
                },
                "* Users: 1 (1 online)",
            ),
        ];
        for (reply, expected) in rows {
            assert_eq!(reply.to_string(), expected);
            assert_eq!(&*reply.to_line(), format!("{expected}\n"));
        }
    }
}
