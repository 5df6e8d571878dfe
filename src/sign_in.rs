//! Signing in: from the name a client types to being online, welcomed, with its stored mail.
//!
//! This module owns the steps of a session before its client is signed in: the name (and
//! its rules), the password (checked after the throttle's delay, never more than
//! [`MAX_PASSWORD_TRIES`] times), the creation of a new account (durable before it is
//! used), and the sign-in itself, which welcomes the user and hands over the private
//! messages stored for them. It ends by returning the `Presence` that keeps the user
//! online until the session ends. It must not execute chat commands or pace the client
//! (that is `session.rs`, which calls these steps), and it must not hold the registry lock
//! while hashing, sleeping or writing to disk.

use std::sync::Arc;
use std::time::Instant;

use crate::clock;
use crate::limits::{ASKED_REPLY_WAIT, MAX_PASSWORD_BYTES, MAX_PASSWORD_TRIES};
use crate::line_reader::LineSource;
use crate::log;
use crate::password::PasswordHash;
use crate::protocol::{self, ErrorReply, Reply, name_key};
use crate::registry::{self, Mail};
use crate::session::{Ending, Presence, Session, State};
use crate::store::Record;

/// A name was given; its password is awaited.
pub(crate) struct Pending {
    /// The registered name and hash, or `None` when this sign-in creates the account.
    account: Option<(String, PasswordHash)>,
    /// The name as typed (used for a new account).
    typed: String,
    wrong_tries: u32,
}

impl<'a> Session<'a> {
    /// The first line: the name to sign in (or sign up) as.
    pub(crate) fn on_name(&self, text: &str) -> Result<State<'a>, Ending> {
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

    /// The line after the name: its password, or the new account's.
    pub(crate) fn on_password(
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
        // Online from here on: the guard signs the user out on every exit, a panic included.
        let presence = Presence::new(self.shared, name, signed_in.session);
        signed_in.delivery.complete();
        lines.set_deadline(None);
        let event = if signed_in.took_over {
            "takeover"
        } else {
            "sign_in"
        };
        log::info(event, &[("peer", &self.peer), ("user", &presence.name())]);
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
}
