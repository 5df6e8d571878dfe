//! One client's conversation with the server, from greeting to goodbye.
//!
//! This module owns the loop that reads a client's lines, the state machine they drive
//! (`AwaitName` -> `AwaitPassword` -> `SignedIn`), the rate limit, and the execution of each
//! [`Command`]. The steps before `SignedIn` are `sign_in.rs`'s. It reads lines from a
//! [`LineSource`] and pushes replies into the client's own [`Outbox`]; it never touches a
//! socket, so any transport (TCP, WebSocket, UDP) can drive it. Chat commands exist only in
//! the `SignedIn` state, so nothing typed before sign-in can reach another user, and being
//! signed in is a `Presence`, whose drop signs the user out on every way a session ends.
//!
//! Locks are taken in short, visible blocks, and every slow thing (hashing, sleeping before
//! a password check, fsync, waiting for room in the outbox, writing to other clients once a
//! delivery is decided) happens outside the registry lock. Public lines that arrive in one
//! read go out together, as one burst (`Presence::burst`). A client over its rate is made
//! to wait before its next line is read, so its lines arrive late but all of them arrive;
//! a UDP client cannot be made to wait, so its transport drops such lines instead and the
//! session takes every line it is given ([`Pacing::Upstream`], see `udp/inbound.rs`).

use std::fmt;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::clock;
use crate::limits::{ASKED_REPLY_WAIT, MAX_BURST_BYTES};
use crate::line_reader::{Line, LineSource};
use crate::log;
use crate::outbox::{Entry, Outbox, PushError};
use crate::protocol::{self, Command, ErrorReply, HELP, Reply};
use crate::ratelimit::TokenBucket;
use crate::registry::{self, PrivateOutcome, PublicBurst, SendError, SessionId};
use crate::shared::Shared;
use crate::sign_in::Pending;
use crate::store::Record;

/// Replies the client asked for are sent in entries of about this many bytes: one write
/// for a page of the user list, not one per line.
const REPLY_CHUNK_BYTES: usize = 4 * 1024;

/// Why a session ended; `Display` is the reason written to the log.
#[derive(Debug)]
pub enum Ending {
    Quit,
    /// The peer closed the connection (or it was cut: overflow, takeover).
    Hangup,
    TooManyTries,
    SignInTimeout,
    /// The client's own outbox refused a reply: it is not reading.
    OutboxClosed,
    ReadError(io::Error),
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ending::Quit => write!(f, "quit"),
            Ending::Hangup => write!(f, "hangup"),
            Ending::TooManyTries => write!(f, "too many wrong passwords"),
            Ending::SignInTimeout => write!(f, "sign-in timeout"),
            Ending::OutboxClosed => write!(f, "outbound queue closed"),
            Ending::ReadError(e) => write!(f, "read error: {e}"),
        }
    }
}

/// Where the conversation is.
pub(crate) enum State<'a> {
    AwaitName,
    AwaitPassword(Pending),
    SignedIn(Presence<'a>),
}

/// Being signed in. Dropping it signs out and tells the others, whether the session ended
/// by `~:q!:`, a hang-up, an error or a panic: every exit takes the same path.
pub(crate) struct Presence<'a> {
    shared: &'a Shared,
    name: String,
    session: SessionId,
    /// Public lines read but not yet delivered. Lines that arrived in one read go out
    /// together, once the next line would mean waiting for the client (or another kind of
    /// command comes, or [`MAX_BURST_BYTES`] gathered): one registry lock, one allocation
    /// and one queue entry per receiver for the burst instead of per line. No line waits
    /// for the network, so a burst adds no delay.
    burst: PublicBurst,
}

impl<'a> Presence<'a> {
    /// To be called the moment the registry has put `name` online (`sign_in.rs`), so that
    /// no way out of the session can leave them online.
    pub(crate) fn new(shared: &'a Shared, name: String, session: SessionId) -> Self {
        Presence {
            shared,
            name,
            session,
            burst: PublicBurst::default(),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    fn add_to_burst(&mut self, text: &str) {
        self.burst.add(&self.name, text);
        if self.burst.bytes() >= MAX_BURST_BYTES {
            self.send_burst();
        }
    }

    fn send_burst(&mut self) {
        let Some(lines) = self.burst.take() else {
            return;
        };
        let delivery = registry::lock(&self.shared.registry).public(&self.name, &lines);
        delivery.complete();
    }
}

impl Drop for Presence<'_> {
    fn drop(&mut self) {
        // Public lines already read still go out, before the leave notice: a client cut off
        // for flooding, say, sent some that passed.
        self.send_burst();
        let delivery = registry::lock(&self.shared.registry).sign_out(&self.name, self.session);
        delivery.complete();
    }
}

/// The per-connection context of the state machine.
pub(crate) struct Session<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) peer: SocketAddr,
    pub(crate) outbox: &'a Arc<Outbox>,
    bucket: TokenBucket,
    /// The client was told its lines are being slowed; not again until it has calmed down.
    told_slowed: bool,
}

/// How a session keeps its client to the rate limit (`--rate`, `--burst`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// A line over the rate waits, and the client's next lines wait unread meanwhile (TCP
    /// then slows the client down). Nothing is lost.
    Wait,
    /// The line source has already dropped the lines over the rate and told the client
    /// (UDP, which cannot make a client wait): the session takes every line as it comes.
    Upstream,
}

/// Runs one client's session to its end, with [`Pacing::Wait`]. `lines` should already
/// carry the sign-in deadline; it is lifted once the client signs in.
pub fn run(
    shared: &Shared,
    peer: SocketAddr,
    lines: &mut dyn LineSource,
    outbox: &Arc<Outbox>,
) -> Ending {
    run_paced(shared, peer, lines, outbox, Pacing::Wait)
}

/// [`run`], with the rate limit applied as `pacing` says.
pub fn run_paced(
    shared: &Shared,
    peer: SocketAddr,
    lines: &mut dyn LineSource,
    outbox: &Arc<Outbox>,
    pacing: Pacing,
) -> Ending {
    let now = Instant::now();
    let config = &shared.config;
    // A rate of 0 is no limit here: the line source applied it.
    let per_sec = match pacing {
        Pacing::Wait => config.rate_per_sec,
        Pacing::Upstream => 0,
    };
    let mut session = Session {
        shared,
        peer,
        outbox,
        bucket: TokenBucket::new(config.rate_burst, per_sec, now),
        told_slowed: false,
    };
    if session.say(Reply::Greeting).is_err() {
        return Ending::OutboxClosed;
    }
    let mut state = State::AwaitName;
    loop {
        if let State::SignedIn(presence) = &mut state
            && !lines.line_ready()
        {
            presence.send_burst();
        }
        let signed_in = matches!(state, State::SignedIn(_));
        let line = match lines.next_line() {
            Ok(Some(line)) => line,
            Ok(None) => return Ending::Hangup,
            Err(e) if is_timeout(&e) && !signed_in => {
                let secs = config.sign_in_timeout.as_secs();
                let _ = session.say(Reply::Error(ErrorReply::SignInTimeout { secs }));
                return Ending::SignInTimeout;
            }
            Err(e) => return Ending::ReadError(e),
        };
        // Cut meanwhile (taken over, queue overflowed, client gone): the rest of what
        // it sent is for nobody.
        if !outbox.is_open() {
            return Ending::Hangup;
        }
        if let Err(ending) = session.pace(&mut state) {
            return ending;
        }
        let text = match session.admit(line) {
            Ok(Some(text)) => text,
            Ok(None) => continue,
            Err(ending) => return ending,
        };
        state = match session.step(state, &text, lines) {
            Ok(next) => next,
            Err(ending) => return ending,
        };
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock)
}

impl<'a> Session<'a> {
    /// Sends one reply to this client. Our own outbox refusing means we are done.
    pub(crate) fn say(&self, reply: Reply) -> Result<(), Ending> {
        self.outbox
            .send(Entry::Lines(reply.to_line()))
            .map_err(|e| self.outbox_refused(e))
    }

    /// Sends replies the client asked for, a few KiB per queue entry, waiting for room if
    /// needed (outside all locks): only this client is delayed by its own long list.
    pub(crate) fn say_all_patiently<'r>(
        &self,
        replies: impl IntoIterator<Item = Reply<'r>>,
    ) -> Result<(), Ending> {
        use std::fmt::Write;
        let mut chunk = String::new();
        for reply in replies {
            // Writing to a String cannot fail.
            let _ = writeln!(chunk, "{reply}");
            if chunk.len() >= REPLY_CHUNK_BYTES {
                self.push_patiently(std::mem::take(&mut chunk))?;
            }
        }
        if chunk.is_empty() {
            return Ok(());
        }
        self.push_patiently(chunk)
    }

    fn push_patiently(&self, lines: String) -> Result<(), Ending> {
        self.outbox
            .push_wait(Entry::Lines(Arc::from(lines)), ASKED_REPLY_WAIT)
            .map_err(|e| self.outbox_refused(e))
    }

    /// Our own outbox refused a reply. Overflow here is the SendQ limit biting on a client
    /// that keeps asking without reading: logged like an overflow caused by others.
    fn outbox_refused(&self, e: PushError) -> Ending {
        if e == PushError::Full {
            log::warn(
                "sendq_exceeded",
                &[("peer", &self.peer), ("action", &"disconnect")],
            );
        }
        Ending::OutboxClosed
    }

    pub(crate) fn error(&self, error: ErrorReply) -> Result<(), Ending> {
        self.say(Reply::Error(error))
    }

    /// The rate limit: a line over the client's rate waits until the rate allows it, and
    /// meanwhile the client's next lines wait unread in its socket (TCP then slows the
    /// client down). The public lines already read go out first, and the client is told,
    /// once, that it is being slowed.
    fn pace(&mut self, state: &mut State) -> Result<(), Ending> {
        let now = Instant::now();
        if self.bucket.is_full(now) {
            self.told_slowed = false;
        }
        let wait = self.bucket.take(now);
        if wait.is_zero() {
            return Ok(());
        }
        if let State::SignedIn(presence) = state {
            presence.send_burst();
        }
        if !self.told_slowed {
            self.told_slowed = true;
            log::info("rate_limit", &[("peer", &self.peer), ("action", &"delay")]);
            let per_sec = self.shared.config.rate_per_sec;
            self.say(Reply::SlowedDown { per_sec })?;
        }
        std::thread::sleep(wait);
        Ok(())
    }

    /// Applies the line-length limit. `Ok(None)`: nothing to execute.
    fn admit(&self, line: Line) -> Result<Option<String>, Ending> {
        match line {
            Line::Text(text) => Ok(Some(text)),
            Line::TooLong => {
                log::debug("line_too_long", &[("peer", &self.peer)]);
                self.error(ErrorReply::LineTooLong)?;
                Ok(None)
            }
        }
    }

    /// Handles one line in the current state and returns the next state.
    fn step(
        &self,
        state: State<'a>,
        text: &str,
        lines: &mut dyn LineSource,
    ) -> Result<State<'a>, Ending> {
        match state {
            State::AwaitName => self.on_name(text),
            State::AwaitPassword(pending) => self.on_password(pending, text, lines),
            State::SignedIn(mut presence) => {
                self.on_command(&mut presence, text)?;
                Ok(State::SignedIn(presence))
            }
        }
    }

    fn on_command(&self, me: &mut Presence, text: &str) -> Result<(), Ending> {
        let command = match protocol::parse(text) {
            Ok(command) => command,
            Err(e) => return self.error(ErrorReply::Parse(e)),
        };
        // Whatever this command sends must come after the public lines before it.
        if !matches!(command, Command::Public { .. }) {
            me.send_burst();
        }
        match command {
            Command::Nothing => Ok(()),
            Command::Public { text } => {
                self.log_message("public", &me.name, "", &text);
                me.add_to_burst(&text);
                Ok(())
            }
            Command::Tagged { to, text } => {
                self.log_message("tagged", &me.name, &to, &text);
                let sent = registry::lock(&self.shared.registry).tagged(&me.name, &to, &text);
                match sent {
                    Ok(delivery) => {
                        delivery.complete();
                        Ok(())
                    }
                    Err(e) => self.send_error(e, &to),
                }
            }
            Command::Private { to, text } => self.private(me, &to, &text),
            Command::ListUsers => self.list_users(),
            Command::Help => {
                self.say_all_patiently(HELP.iter().map(|&line| Reply::HelpLine { line }))
            }
            Command::Quit => {
                self.say(Reply::Goodbye { name: &me.name })?;
                Err(Ending::Quit)
            }
            #[cfg(debug_assertions)]
            Command::Panic => panic!("~:panic!: asked for a panic (debug builds only)"),
        }
    }

    /// A private message. The store's lock is taken first (lock order: store, then
    /// registry) because an offline receiver's copy must be on disk before "stored" is said.
    fn private(&self, me: &Presence, to: &str, text: &str) -> Result<(), Ending> {
        self.log_message("private", &me.name, to, text);
        let mut writer = self.shared.store.writer();
        let now = clock::unix_now();
        let sent = registry::lock(&self.shared.registry).private(&me.name, to, text, now);
        let (outcome, delivery) = match sent {
            Ok(sent) => sent,
            Err(e) => {
                drop(writer);
                return self.send_error(e, to);
            }
        };
        let stored = match outcome {
            PrivateOutcome::Delivered { to } => {
                drop(writer);
                delivery.complete();
                return self.say(Reply::PrivateDelivered { to: &to });
            }
            PrivateOutcome::Stored(mail) => mail,
        };
        if let Err(e) = writer.append(&[Record::Mail(stored.clone())]) {
            registry::lock(&self.shared.registry).unstore_mail(&stored);
            drop(writer);
            log::error("store_write_failed", &[("what", &"mail"), ("error", &e)]);
            return self.error(ErrorReply::StoreFailed);
        }
        drop(writer);
        self.say(Reply::PrivateStored { to: &stored.to })
    }

    fn send_error(&self, error: SendError, to: &str) -> Result<(), Ending> {
        match error {
            SendError::UnknownUser => self.error(ErrorReply::UnknownUser { name: to }),
            SendError::MailboxFull { to } => self.error(ErrorReply::MailboxFull { name: &to }),
        }
    }

    /// `~:lu:`: copy the list under the lock, send it after releasing it.
    fn list_users(&self) -> Result<(), Ending> {
        let users = registry::lock(&self.shared.registry).users();
        let online = users.iter().filter(|(_, on)| *on).count();
        let header = Reply::UserListHeader {
            total: users.len(),
            online,
        };
        let entries = users.iter().map(|(name, online)| Reply::UserListEntry {
            name,
            online: *online,
        });
        self.say_all_patiently(std::iter::once(header).chain(entries))
    }

    /// Logs chat text only when the operator asked for it (`--log-messages`).
    fn log_message(&self, kind: &str, from: &str, to: &str, text: &str) {
        if log::log_messages() {
            log::info(
                "message",
                &[
                    ("kind", &kind),
                    ("from", &from),
                    ("to", &to),
                    ("text", &text),
                ],
            );
        }
    }
}
