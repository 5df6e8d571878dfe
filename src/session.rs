//! One client's conversation with the server, from greeting to goodbye.
//!
//! This module owns the sign-in state machine (`AwaitName` -> `AwaitPassword` -> `SignedIn`)
//! and the execution of each [`Command`]. It reads lines from a [`LineSource`] and pushes
//! replies into the client's own [`Outbox`]; it never touches a socket, so any transport
//! (TCP today, WebSocket or UDP later) can drive it. Chat commands exist only in the
//! `SignedIn` state, so nothing typed before sign-in can reach another user.
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
use crate::limits::{ASKED_REPLY_WAIT, MAX_BURST_BYTES, MAX_PASSWORD_BYTES, MAX_PASSWORD_TRIES};
use crate::line_reader::{Line, LineSource};
use crate::log;
use crate::outbox::{Entry, Outbox, PushError};
use crate::password::PasswordHash;
use crate::protocol::{self, Command, ErrorReply, HELP, Reply, name_key};
use crate::ratelimit::TokenBucket;
use crate::registry::{self, Mail, PrivateOutcome, PublicBurst, SendError, SessionId};
use crate::shared::Shared;
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
enum State<'a> {
    AwaitName,
    AwaitPassword(Pending),
    SignedIn(Presence<'a>),
}

/// A name was given; its password is awaited.
struct Pending {
    /// The registered name and hash, or `None` when this sign-in creates the account.
    account: Option<(String, PasswordHash)>,
    /// The name as typed (used for a new account).
    typed: String,
    wrong_tries: u32,
}

/// Being signed in. Dropping it signs out and tells the others, whether the session ended
/// by `~:q!:`, a hang-up, an error or a panic: every exit takes the same path.
struct Presence<'a> {
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

impl Presence<'_> {
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
struct Session<'a> {
    shared: &'a Shared,
    peer: SocketAddr,
    outbox: &'a Arc<Outbox>,
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
    fn say(&self, reply: Reply) -> Result<(), Ending> {
        self.outbox
            .send(Entry::Lines(reply.to_line()))
            .map_err(|e| self.outbox_refused(e))
    }

    /// Sends replies the client asked for, a few KiB per queue entry, waiting for room if
    /// needed (outside all locks): only this client is delayed by its own long list.
    fn say_all_patiently<'r>(
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

    fn error(&self, error: ErrorReply) -> Result<(), Ending> {
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

    fn on_name(&self, text: &str) -> Result<State<'a>, Ending> {
        let typed = text.trim();
        if let Err(e) = protocol::validate_name(typed) {
            self.error(ErrorReply::InvalidName(e))?;
            return Ok(State::AwaitName);
        }
        let account = registry::lock(&self.shared.registry).find_account(typed);
        match &account {
            Some((name, _)) => self.say(Reply::AskPassword { name })?,
            None => self.say(Reply::AskNewPassword { name: typed })?,
        }
        let typed = typed.to_string();
        Ok(State::AwaitPassword(Pending {
            account,
            typed,
            wrong_tries: 0,
        }))
    }

    fn on_password(
        &self,
        mut pending: Pending,
        password: &str,
        lines: &mut dyn LineSource,
    ) -> Result<State<'a>, Ending> {
        if password.is_empty() {
            self.error(ErrorReply::EmptyPassword)?;
            return Ok(State::AwaitPassword(pending));
        }
        if password.len() > MAX_PASSWORD_BYTES {
            self.error(ErrorReply::PasswordTooLong)?;
            return Ok(State::AwaitPassword(pending));
        }
        let name = match &pending.account {
            None => match self.create_account(&pending.typed, password)? {
                Some(name) => name,
                None => return Ok(State::AwaitName),
            },
            Some((name, stored)) => {
                if self.check_password(name, stored, password) {
                    name.clone()
                } else {
                    pending.wrong_tries += 1;
                    return self.on_wrong_password(pending);
                }
            }
        };
        self.sign_in(name, lines).map(State::SignedIn)
    }

    /// Waits out the throttle delay, then checks the password (both outside every lock).
    fn check_password(&self, name: &str, stored: &PasswordHash, password: &str) -> bool {
        let (key, ip) = (name_key(name), self.peer.ip());
        let delay = self.shared.throttle.delay(&key, ip, Instant::now());
        if !delay.is_zero() {
            log::debug(
                "sign_in_delay",
                &[("peer", &self.peer), ("ms", &delay.as_millis())],
            );
            std::thread::sleep(delay);
        }
        let ok = self.shared.hasher.verify(stored, password);
        if ok {
            self.shared.throttle.record_success(&key);
        } else {
            self.shared
                .throttle
                .record_failure(&key, ip, Instant::now());
        }
        ok
    }

    fn on_wrong_password(&self, pending: Pending) -> Result<State<'a>, Ending> {
        let user = pending
            .account
            .as_ref()
            .map_or("", |(name, _)| name.as_str());
        let tries = pending.wrong_tries;
        log::warn(
            "sign_in_failed",
            &[("peer", &self.peer), ("user", &user), ("tries", &tries)],
        );
        if tries >= MAX_PASSWORD_TRIES {
            let _ = self.error(ErrorReply::TooManyTries);
            return Err(Ending::TooManyTries);
        }
        self.error(ErrorReply::WrongPassword {
            tries_left: MAX_PASSWORD_TRIES - tries,
        })?;
        Ok(State::AwaitPassword(pending))
    }

    /// Registers a new account durably. `Ok(None)`: the name was lost to a concurrent
    /// sign-up or could not be saved; the client was told and is asked for a name again.
    fn create_account(&self, name: &str, password: &str) -> Result<Option<String>, Ending> {
        let hash = match self.shared.hasher.hash(password) {
            Ok(hash) => hash,
            Err(e) => {
                log::error("random_salt_failed", &[("error", &e)]);
                self.error(ErrorReply::StoreFailed)?;
                return Ok(None);
            }
        };
        let mut writer = self.shared.store.writer();
        let created = registry::lock(&self.shared.registry).create_account(name, hash.clone());
        if created.is_err() {
            drop(writer);
            self.error(ErrorReply::NameJustTaken { name })?;
            return Ok(None);
        }
        let record = Record::Account {
            name: name.to_string(),
            password: hash,
        };
        if let Err(e) = writer.append(&[record]) {
            registry::lock(&self.shared.registry).remove_account(name);
            drop(writer);
            log::error("store_write_failed", &[("user", &name), ("error", &e)]);
            self.error(ErrorReply::StoreFailed)?;
            return Ok(None);
        }
        drop(writer);
        log::info("sign_up", &[("peer", &self.peer), ("user", &name)]);
        Ok(Some(name.to_string()))
    }

    /// Welcomes the user, puts them online, and delivers their stored mail.
    fn sign_in(&self, name: String, lines: &mut dyn LineSource) -> Result<Presence<'a>, Ending> {
        let signed_in =
            registry::lock(&self.shared.registry).sign_in(&name, Arc::clone(self.outbox));
        let Some(signed_in) = signed_in else {
            return Err(Ending::OutboxClosed);
        };
        signed_in.delivery.complete();
        lines.set_deadline(None);
        let presence = Presence {
            shared: self.shared,
            name,
            session: signed_in.session,
            burst: PublicBurst::default(),
        };
        let event = if signed_in.took_over {
            "takeover"
        } else {
            "sign_in"
        };
        log::info(event, &[("peer", &self.peer), ("user", &presence.name)]);
        self.deliver_mail(signed_in.mail)?;
        Ok(presence)
    }

    /// Hands stored messages to the user and deletes them durably once they were written
    /// to the connection. If the connection ends first they go back into the mailbox; a
    /// crash in between delivers them again rather than losing them.
    fn deliver_mail(&self, mail: Vec<Mail>) -> Result<(), Ending> {
        if mail.is_empty() {
            return Ok(());
        }
        let written = self.queue_mail(&mail).is_ok()
            && self
                .outbox
                .wait_written(self.outbox.mark(), ASKED_REPLY_WAIT);
        if !written {
            registry::lock(&self.shared.registry).return_mail(mail);
            return Err(Ending::OutboxClosed);
        }
        let done: Vec<Record> = mail
            .iter()
            .map(|m| Record::Delivered { id: m.id })
            .collect();
        let mut writer = self.shared.store.writer();
        if let Err(e) = writer.append(&done) {
            log::error(
                "store_write_failed",
                &[("what", &"delivered"), ("error", &e)],
            );
        } else if writer.needs_compaction()
            && let Err(e) = writer.compact(&self.shared.registry)
        {
            log::error("store_compaction_failed", &[("error", &e)]);
        }
        Ok(())
    }

    fn queue_mail(&self, mail: &[Mail]) -> Result<(), Ending> {
        let sent_at: Vec<String> = mail
            .iter()
            .map(|m| clock::rfc3339_secs(m.sent_at))
            .collect();
        let header = Reply::StoredHeader { count: mail.len() };
        let stored = mail.iter().zip(&sent_at).map(|(m, sent_at)| Reply::Stored {
            from: &m.from,
            sent_at,
            text: &m.text,
        });
        self.say_all_patiently(std::iter::once(header).chain(stored))
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
