//! The `Registry`: every account, who is online, and where each online user's lines go.
//!
//! This module owns every delivery decision: who receives a public, tagged or private
//! message, who hears that someone joined or left, when a message waits in a mailbox. It
//! lives behind one `Arc<Mutex<Registry>>`, and because every delivery happens under that
//! lock, all users see messages in the same order. (In a room of 1,000 or more, join and
//! leave notices are kept for up to the notice flusher's 100 ms tick and pushed together,
//! `Registry::flush_notices`; every other delivery pushes them first, so the order holds.)
//!
//! It must not do I/O. Its methods only look up, insert and push into [`Outbox`]es (memory
//! work); socket writes happen on each client's writer thread, file writes in `store.rs`,
//! password hashing in `password.rs`, all outside the lock. A client whose outbox overflows
//! is returned to the caller in a [`Delivery`], to be disconnected once the lock is released.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::doorbell::{Ring, Rings};
use crate::limits::{
    CROWDED_PATIENCE, MAILBOX_CAP, MAX_NOTICE_DELAY, MAX_WRITER_PACE, NOTICE_DELAY_PER_USER,
    NOTICE_FLUSH_INTERVAL, WRITER_PACE_PER_USER,
};
use crate::log;
use crate::outbox::{self, Outbox, PushError, Pushed, Urgency};
use crate::password::PasswordHash;
use crate::protocol::{Reply, name_key};
use crate::stats;

/// The registry as every client thread holds it.
pub type SharedRegistry = Arc<Mutex<Registry>>;

/// Locks the registry. A panicking client thread poisons the mutex; the registry's methods
/// leave it consistent at every `?` and every push, so the data is still good: recover it
/// rather than let one panic take every other client down with it.
pub fn lock(registry: &Mutex<Registry>) -> MutexGuard<'_, Registry> {
    registry.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Identifies one signed-in connection, so a stale connection (after a takeover) cannot sign
/// out the new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(u64);

/// A private message waiting for an offline user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// Unique and increasing across the server's life; the store uses it to delete the
    /// message once delivered.
    pub id: u64,
    pub from: String,
    pub to: String,
    /// Unix seconds when it was sent.
    pub sent_at: u64,
    pub text: String,
}

/// One registered user.
struct Account {
    /// The name as first registered (`Alice`); the map key is its lowercase form.
    name: String,
    password: PasswordHash,
    mailbox: VecDeque<Mail>,
}

/// A copy of one account, as the store writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountCopy {
    pub name: String,
    pub password: PasswordHash,
    pub mailbox: Vec<Mail>,
}

/// One signed-in connection.
struct Online {
    session: SessionId,
    outbox: Arc<Outbox>,
}

/// A join or leave notice, for the sessions online when it happened.
struct Notice {
    line: Arc<str>,
    /// The newest session online at the time: later sign-ins never saw it happen.
    as_of: SessionId,
    /// The session it is about (a join), which is not told.
    about: Option<SessionId>,
}

impl Notice {
    fn reaches(&self, session: SessionId) -> bool {
        session <= self.as_of && Some(session) != self.about
    }
}

/// Accounts, online users and their outboxes. See the module documentation.
#[derive(Default)]
pub struct Registry {
    /// Keyed by lowercase name; a `BTreeMap` so `~:lu:` comes out sorted.
    accounts: BTreeMap<String, Account>,
    /// Keyed by lowercase name; only signed-in users.
    online: HashMap<String, Online>,
    next_session: u64,
    next_mail_id: u64,
    /// Notices not pushed yet, oldest first (a large room only; see [`Registry::notice`]).
    notices: Vec<Notice>,
}

/// What one delivery leaves to do once the registry lock is released (each step is a
/// syscall, so none may happen under the lock): wake the writers that got lines, write to
/// the clients whose writers are idle, disconnect the clients whose outboxes overflowed,
/// and give the writers the CPU if some have fallen behind.
#[must_use = "call complete() once the registry lock is released"]
#[derive(Default)]
pub struct Delivery {
    /// Outboxes that overflowed, with their user's name for the log.
    overflowed: Vec<(String, Arc<Outbox>)>,
    /// Doorbells of the writers that sleep and must be woken for the new lines.
    to_wake: Rings,
    /// Outboxes over half full whose writers have fallen behind for want of the CPU.
    crowded: Vec<Arc<Outbox>>,
    /// Outboxes whose writers are idle: the caller writes their lines itself.
    write_through: Vec<Arc<Outbox>>,
}

impl Delivery {
    /// Finishes the delivery. Call with no lock held, on the thread of the client that
    /// caused the lines, so a fast sender is slowed down (by TCP, in the end) instead of
    /// its readers' queues overflowing. Wake-ups and cuts come first, since they are quick
    /// and let others proceed; then this thread's own writes to idle writers' clients
    /// (10,000 of them take a fifth of a second); the wait comes last.
    pub fn complete(self) {
        self.to_wake.ring();
        for (name, outbox) in self.overflowed {
            log::warn(
                "sendq_exceeded",
                &[("user", &name), ("action", &"disconnect")],
            );
            outbox.hang_up();
        }
        let mut buf = Vec::new();
        for outbox in &self.write_through {
            outbox.write_through(&mut buf);
        }
        let deadline = Instant::now() + CROWDED_PATIENCE;
        for outbox in &self.crowded {
            outbox.wait_uncrowded(deadline);
        }
    }

    fn note(&mut self, name: &str, outbox: &Arc<Outbox>, pushed: Result<Pushed, PushError>) {
        match pushed {
            Ok(Pushed {
                wake,
                crowded,
                write_through,
            }) => {
                if write_through {
                    self.write_through.push(Arc::clone(outbox));
                }
                if let Some(ring) = wake {
                    self.to_wake.add(outbox.doorbell(), ring);
                }
                if crowded {
                    self.crowded.push(Arc::clone(outbox));
                }
            }
            Err(PushError::Full) => self.overflowed.push((name.to_string(), Arc::clone(outbox))),
            Err(PushError::Closed) => {}
        }
    }
}

/// How long a join or leave notice may wait for its writer with `online` users: longer in
/// a larger room, where a storm of sign-ins would otherwise mean a storm of wake-ups.
pub fn notice_delay(online: usize) -> Duration {
    let online = u32::try_from(online).unwrap_or(u32::MAX);
    NOTICE_DELAY_PER_USER
        .saturating_mul(online)
        .min(MAX_NOTICE_DELAY)
}

/// How long writers pause after each write with `online` users (see
/// `outbox::set_writer_pace`): no pause in a small room, up to 60 ms in a large one.
pub fn writer_pace(online: usize) -> Duration {
    let online = u32::try_from(online).unwrap_or(u32::MAX);
    WRITER_PACE_PER_USER
        .saturating_mul(online)
        .min(MAX_WRITER_PACE)
}

/// Public lines from one sender, formatted as their receivers see them, to be delivered
/// together by [`Registry::public`]. The sender's thread gathers them before it takes the
/// lock; all of them then share one allocation, so a burst costs each receiver one queue
/// entry (one reference count, one slot), not one per line (docs/PERFORMANCE.md, change 20).
#[derive(Debug, Default)]
pub struct PublicBurst {
    text: String,
    lines: usize,
}

/// A [`PublicBurst`] made ready for the registry: `lines` whole lines in one shared string.
#[derive(Debug, Clone)]
pub struct PublicLines {
    text: Arc<str>,
    lines: usize,
}

impl PublicBurst {
    /// Appends the line `from` typed, as its receivers see it.
    pub fn add(&mut self, from: &str, text: &str) {
        use std::fmt::Write;
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, "{}", Reply::Public { from, text });
        self.lines += 1;
    }

    /// How many bytes the waiting lines take, as sent.
    pub fn bytes(&self) -> usize {
        self.text.len()
    }

    /// Empties the burst into one shared string for [`Registry::public`]; `None` if it was
    /// empty. It allocates, so call it before taking the registry lock.
    pub fn take(&mut self) -> Option<PublicLines> {
        if self.lines == 0 {
            return None;
        }
        let lines = PublicLines {
            text: Arc::from(self.text.as_str()),
            lines: std::mem::take(&mut self.lines),
        };
        self.text.clear();
        Some(lines)
    }
}

/// What signing in produced.
#[must_use]
pub struct SignedIn {
    /// The account's name as registered (the user may have typed it in another case).
    pub name: String,
    pub session: SessionId,
    /// True when an older connection of the same account was told and closed.
    pub took_over: bool,
    /// Messages that waited in the mailbox, oldest first. The caller delivers them and then
    /// deletes them from the store.
    pub mail: Vec<Mail>,
    pub delivery: Delivery,
}

/// The name is already registered (perhaps in another case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameTaken;

/// What became of a private message.
#[derive(Debug, PartialEq, Eq)]
pub enum PrivateOutcome {
    /// Pushed to the receiver's outbox.
    Delivered { to: String },
    /// Kept in the receiver's mailbox; the caller must make it durable before saying so.
    Stored(Mail),
}

/// Why a message could not be sent.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    UnknownUser,
    MailboxFull { to: String },
}

impl Registry {
    pub fn new() -> Self {
        Registry::default()
    }

    /// Number of registered accounts.
    pub fn account_count(&self) -> usize {
        self.accounts.len()
    }

    /// Number of signed-in users.
    pub fn online_count(&self) -> usize {
        self.online.len()
    }

    /// The account's registered name and password hash, if `name` is registered.
    pub fn find_account(&self, name: &str) -> Option<(String, PasswordHash)> {
        let account = self.accounts.get(&name_key(name))?;
        Some((account.name.clone(), account.password.clone()))
    }

    /// Registers `name`. Fails if the name (in any case) is taken.
    pub fn create_account(&mut self, name: &str, password: PasswordHash) -> Result<(), NameTaken> {
        let key = name_key(name);
        if self.accounts.contains_key(&key) {
            return Err(NameTaken);
        }
        let account = Account {
            name: name.to_string(),
            password,
            mailbox: VecDeque::new(),
        };
        self.accounts.insert(key, account);
        Ok(())
    }

    /// Undoes [`Registry::create_account`] when the account could not be made durable.
    pub fn remove_account(&mut self, name: &str) {
        let key = name_key(name);
        if !self.online.contains_key(&key) {
            self.accounts.remove(&key);
        }
    }

    /// Puts a loaded message back in its mailbox (used when loading the store).
    pub fn restore_mail(&mut self, mail: Mail) {
        self.note_mail_id(mail.id);
        if let Some(account) = self.accounts.get_mut(&name_key(&mail.to)) {
            account.mailbox.push_back(mail);
        }
    }

    /// Puts mail that could not be delivered back at the front of its mailbox, in order.
    pub fn return_mail(&mut self, mail: Vec<Mail>) {
        for m in mail.into_iter().rev() {
            if let Some(account) = self.accounts.get_mut(&name_key(&m.to)) {
                account.mailbox.push_front(m);
            }
        }
    }

    /// Welcomes `name`, marks it online with `outbox`, tells the others, and hands over its
    /// mailbox. If the account was already online, that older connection is told and closed
    /// instead. The welcome is queued under the same lock as going online, so a client that
    /// has seen it is sure to see every broadcast that follows.
    pub fn sign_in(&mut self, name: &str, outbox: Arc<Outbox>) -> Option<SignedIn> {
        let key = name_key(name);
        let account = self.accounts.get_mut(&key)?;
        let name = account.name.clone();
        let welcomed = outbox.push_deferred(Reply::Welcome { name: &name }.to_line(), Urgency::Now);
        if welcomed.is_err() {
            return None;
        }
        let mail: Vec<Mail> = account.mailbox.drain(..).collect();
        // A takeover: the old connection gets the notices kept so far before it is closed,
        // as it would have in a small room (the new one was not online when they happened).
        let mut delivery = if self.online.contains_key(&key) {
            self.flush_notices()
        } else {
            Delivery::default()
        };
        self.next_session += 1;
        let session = SessionId(self.next_session);
        let previous = self.online.insert(
            key.clone(),
            Online {
                session,
                outbox: Arc::clone(&outbox),
            },
        );
        let took_over = previous.is_some();
        outbox::set_writer_pace(writer_pace(self.online.len()));
        match previous {
            Some(old) => {
                // Best effort: a stalled old connection may not take the notice. Closing
                // only flags the old outbox; after the lock its writer, once woken, sends
                // the notice (or this thread writes it through, if that writer is idle),
                // then hangs up.
                let notice = Reply::TakenOver.to_line();
                let pushed = old.outbox.push_deferred(notice, Urgency::Now);
                delivery.note(&name, &old.outbox, pushed);
                old.outbox.close_deferred();
                delivery.to_wake.add(old.outbox.doorbell(), Ring::Urgent);
            }
            None => delivery = self.notice(Reply::Joined { name: &name }.to_line(), Some(session)),
        }
        delivery.note(&name, &outbox, welcomed);
        Some(SignedIn {
            name,
            session,
            took_over,
            mail,
            delivery,
        })
    }

    /// Takes `name` offline if `session` is still its connection, and tells the others.
    pub fn sign_out(&mut self, name: &str, session: SessionId) -> Delivery {
        let key = name_key(name);
        match self.online.get(&key) {
            Some(online) if online.session == session => {}
            _ => return Delivery::default(),
        }
        self.online.remove(&key);
        outbox::set_writer_pace(writer_pace(self.online.len()));
        self.notice(Reply::Left { name }.to_line(), None)
    }

    /// Sends public lines from `from` to every other online user, in order and together:
    /// a burst of lines costs each receiver one push (see `session.rs`, `Presence::burst`).
    /// The lines come formatted ([`PublicBurst::take`]), so no allocation happens under the
    /// lock.
    pub fn public(&mut self, from: &str, lines: &PublicLines) -> Delivery {
        let mut delivery = self.flush_notices();
        self.broadcast(&mut delivery, &name_key(from), lines);
        delivery
    }

    /// Sends a tagged line to every other online user; `to` gets a marked copy.
    pub fn tagged(&mut self, from: &str, to: &str, text: &str) -> Result<Delivery, SendError> {
        let to_key = name_key(to);
        let to_name = &self
            .accounts
            .get(&to_key)
            .ok_or(SendError::UnknownUser)?
            .name;
        let plain = Reply::Tagged {
            from,
            to: to_name,
            text,
            for_target: false,
        }
        .to_line();
        let marked = Reply::Tagged {
            from,
            to: to_name,
            text,
            for_target: true,
        }
        .to_line();
        let from_key = name_key(from);
        let mut delivery = self.flush_notices();
        let mut receivers = 0;
        for (key, online) in &self.online {
            if *key == from_key {
                continue;
            }
            let line = if *key == to_key { &marked } else { &plain };
            delivery.note(
                key,
                &online.outbox,
                online.outbox.push_deferred(Arc::clone(line), Urgency::Now),
            );
            receivers += 1;
        }
        stats::record_relayed(receivers);
        Ok(delivery)
    }

    /// Sends a private line to `to`, or keeps it in `to`'s mailbox while `to` is offline.
    pub fn private(
        &mut self,
        from: &str,
        to: &str,
        text: &str,
        now: u64,
    ) -> Result<(PrivateOutcome, Delivery), SendError> {
        let to_key = name_key(to);
        let account = self
            .accounts
            .get_mut(&to_key)
            .ok_or(SendError::UnknownUser)?;
        let to_name = account.name.clone();
        if self.online.contains_key(&to_key) {
            // Notices first: the receiver must not hear from someone not yet seen joining.
            let mut delivery = self.flush_notices();
            if let Some(online) = self.online.get(&to_key) {
                let line = Reply::Private { from, text }.to_line();
                let pushed = online.outbox.push_deferred(line, Urgency::Now);
                delivery.note(&to_name, &online.outbox, pushed);
                stats::record_relayed(1);
            }
            return Ok((PrivateOutcome::Delivered { to: to_name }, delivery));
        }
        if account.mailbox.len() >= MAILBOX_CAP {
            return Err(SendError::MailboxFull { to: to_name });
        }
        self.next_mail_id += 1;
        let mail = Mail {
            id: self.next_mail_id,
            from: from.to_string(),
            to: to_name,
            sent_at: now,
            text: text.to_string(),
        };
        account.mailbox.push_back(mail.clone());
        Ok((PrivateOutcome::Stored(mail), Delivery::default()))
    }

    /// Takes a stored message back out when it could not be made durable.
    pub fn unstore_mail(&mut self, mail: &Mail) {
        if let Some(account) = self.accounts.get_mut(&name_key(&mail.to)) {
            account.mailbox.retain(|m| m.id != mail.id);
        }
    }

    fn notice_urgency(&self) -> Urgency {
        Urgency::Within(notice_delay(self.online.len()))
    }

    /// Every registered user, sorted by name, with whether they are online.
    pub fn users(&self) -> Vec<(String, bool)> {
        self.accounts
            .iter()
            .map(|(key, account)| (account.name.clone(), self.online.contains_key(key)))
            .collect()
    }

    /// A copy of every account with its mailbox, for rewriting the store outside the lock.
    pub fn snapshot(&self) -> Vec<AccountCopy> {
        self.accounts
            .values()
            .map(|a| AccountCopy {
                name: a.name.clone(),
                password: a.password.clone(),
                mailbox: a.mailbox.iter().cloned().collect(),
            })
            .collect()
    }

    /// Keeps mail ids increasing past `id` (a delivered message seen while loading).
    pub fn note_mail_id(&mut self, id: u64) {
        self.next_mail_id = self.next_mail_id.max(id);
    }

    /// Pushes `lines` (chat) to every online user but `skip_key`, as one queue entry each.
    /// No allocation per receiver: each push clones the `Arc`, not the text.
    fn broadcast(&self, delivery: &mut Delivery, skip_key: &str, lines: &PublicLines) {
        let mut receivers = 0;
        // Skipped by outbox, not by name: comparing names read every user's name from
        // memory, a cache miss per user, and in a sign-in storm that was an eighth of the
        // server's time (docs/PERFORMANCE.md).
        let skip = self.online.get(skip_key).map(|o| Arc::as_ptr(&o.outbox));
        for (key, online) in &self.online {
            if Some(Arc::as_ptr(&online.outbox)) == skip {
                continue;
            }
            let pushed = online
                .outbox
                .push_deferred(Arc::clone(&lines.text), Urgency::Now);
            delivery.note(key, &online.outbox, pushed);
            receivers += 1;
        }
        stats::record_relayed(receivers * lines.lines);
    }

    /// Tells the others that someone joined (`about` is the new session) or left. In a room
    /// so large that a notice may wait for the notice flusher's tick anyway, the notice is
    /// kept until then (or until the next chat line, which must not overtake it): a storm
    /// of sign-ins then visits every user's outbox once per tick with all its joins,
    /// instead of once per join, each visit a few cache misses.
    fn notice(&mut self, line: Arc<str>, about: Option<SessionId>) -> Delivery {
        self.notices.push(Notice {
            line,
            as_of: SessionId(self.next_session),
            about,
        });
        if notice_delay(self.online.len()) >= NOTICE_FLUSH_INTERVAL {
            return Delivery::default();
        }
        self.flush_notices()
    }

    /// Pushes the notices kept so far, in order, each to the sessions it reaches. The
    /// notice flusher calls this every tick; every chat delivery calls it first.
    pub fn flush_notices(&mut self) -> Delivery {
        let mut delivery = Delivery::default();
        if self.notices.is_empty() {
            return delivery;
        }
        let notices = std::mem::take(&mut self.notices);
        let urgency = self.notice_urgency();
        let mut relayed = 0;
        for (key, online) in &self.online {
            let lines = notices
                .iter()
                .filter(|n| n.reaches(online.session))
                .map(|n| Arc::clone(&n.line))
                .inspect(|_| relayed += 1);
            let pushed = online.outbox.push_all_deferred(lines, urgency);
            delivery.note(key, &online.outbox, pushed);
        }
        stats::record_relayed(relayed);
        delivery
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Hangup;

    fn hash() -> PasswordHash {
        PasswordHash::for_tests()
    }

    fn outbox() -> Arc<Outbox> {
        let hangup: Hangup = Box::new(|| {});
        Arc::new(Outbox::new(1 << 16, hangup))
    }

    fn registry_with(names: &[&str]) -> Registry {
        let mut registry = Registry::new();
        for name in names {
            registry.create_account(name, hash()).expect("fresh name");
        }
        registry
    }

    #[test]
    fn notice_delay_and_writer_pace_grow_with_the_room_up_to_their_caps() {
        let ms = Duration::from_millis;
        let rows = [
            (0, ms(0)),
            (10, ms(1)),
            (1_000, ms(100)),
            (10_000, ms(1000)),
            (1 << 40, ms(1000)),
        ];
        for (online, expected) in rows {
            assert_eq!(notice_delay(online), expected, "{online} online");
        }
        let rows = [(0, ms(0)), (100, ms(6)), (1_000, ms(60)), (10_000, ms(60))];
        for (online, expected) in rows {
            assert_eq!(writer_pace(online), expected, "{online} online");
        }
    }

    /// Lines alice typed, ready for [`Registry::public`].
    fn public(texts: &[&str]) -> PublicLines {
        let mut burst = PublicBurst::default();
        for text in texts {
            burst.add("alice", text);
        }
        burst.take().expect("not empty")
    }

    #[test]
    fn a_public_burst_is_one_queue_entry_per_receiver_with_its_lines_in_order() {
        let mut burst = PublicBurst::default();
        assert!(burst.take().is_none(), "nothing gathered, nothing to send");
        burst.add("alice", "one");
        burst.add("alice", "two");
        assert_eq!(burst.bytes(), 22, "two lines as sent");
        let lines = burst.take().expect("two lines");
        assert_eq!(
            (lines.lines, burst.bytes()),
            (2, 0),
            "taking empties the burst"
        );
        assert_eq!(&*lines.text, "alice: one\nalice: two\n");
        burst.add("alice", "three");
        let next = burst.take().expect("one line");
        assert_eq!(
            (&*next.text, next.lines),
            ("alice: three\n", 1),
            "nothing left over"
        );

        let mut registry = registry_with(&["alice", "bob"]);
        sign_in(&mut registry, "alice");
        let bob = sign_in(&mut registry, "bob").0;
        let before = bob.mark();
        registry.public("alice", &lines).complete();
        assert_eq!(bob.mark(), before + 1, "one entry for the burst");
        let got = queued(&bob);
        assert_eq!(got[got.len() - 2..], ["alice: one", "alice: two"]);
    }

    /// Everything queued for `outbox` so far, line by line (closes it).
    fn queued(outbox: &Outbox) -> Vec<String> {
        outbox.close();
        let mut written = Vec::new();
        outbox::run_writer(outbox, &mut written).expect("vec write");
        let text = String::from_utf8(written).expect("UTF-8");
        text.lines().map(str::to_string).collect()
    }

    fn sign_in(registry: &mut Registry, name: &str) -> (Arc<Outbox>, SessionId) {
        let outbox = outbox();
        let session = sign_in_with(registry, name, &outbox);
        (outbox, session)
    }

    fn sign_in_with(registry: &mut Registry, name: &str, outbox: &Arc<Outbox>) -> SessionId {
        let signed_in = registry.sign_in(name, Arc::clone(outbox)).expect("account");
        signed_in.delivery.complete();
        signed_in.session
    }

    #[test]
    fn in_a_large_room_notices_wait_for_a_flush_and_reach_only_who_was_online() {
        // From 1,000 users online a notice may wait 100 ms, the flusher's tick, anyway;
        // alice is the 1,000th.
        let crowd: Vec<String> = (0..999).map(|i| format!("u{i:04}")).collect();
        let mut names: Vec<&str> = crowd.iter().map(String::as_str).collect();
        names.extend(["alice", "late"]);
        let mut registry = registry_with(&names);
        let first = sign_in(&mut registry, "u0000").0;
        for name in &crowd[1..] {
            let _ = sign_in(&mut registry, name);
        }
        assert!(
            registry.notices.is_empty(),
            "below 1,000 online: pushed at once"
        );

        let tail = |lines: Vec<String>, n: usize| lines[lines.len() - n..].to_vec();
        let before = first.mark();
        let alice = sign_in(&mut registry, "alice").0;
        let (late, late_session) = sign_in(&mut registry, "late");
        assert_eq!(first.mark(), before, "the joins wait");
        registry.public("alice", &public(&["hi"])).complete();
        registry.sign_out("late", late_session).complete();
        assert_eq!(
            first.mark(),
            before + 3,
            "chat took the joins along, the leave waits"
        );
        let (_, sent) = registry
            .private("alice", "u0000", "psst", 0)
            .expect("online");
        sent.complete();
        assert_eq!(
            first.mark(),
            before + 5,
            "a private line took the leave along"
        );
        let (late_again, late_again_session) = sign_in(&mut registry, "late");
        assert_eq!(first.mark(), before + 5);
        registry.flush_notices().complete(); // the notice flusher's tick
        assert_eq!(first.mark(), before + 6);
        // A takeover pushes what was kept to the old connection before closing it.
        registry.sign_out("late", late_again_session).complete();
        let old_u0001 = Arc::clone(&registry.online["u0001"].outbox);
        let _ = sign_in(&mut registry, "u0001");
        let old_saw = tail(queued(&old_u0001), 2);
        assert_eq!(old_saw[0], "* late left.");
        assert!(old_saw[1].contains("another connection"), "{old_saw:?}");
        drop(late_again);

        let first_saw = tail(queued(&first), 7);
        let expected = [
            "* alice joined.",
            "* late joined.",
            "alice: hi",
            "* late left.",
            "[private] alice: psst",
            "* late joined.",
            "* late left.",
        ];
        assert_eq!(first_saw, expected);
        // alice does not hear her own join, nor her own line.
        let alice_saw = queued(&alice);
        assert!(!alice_saw.contains(&"* alice joined.".to_string()));
        let alice_saw = tail(alice_saw, 4);
        let expected = [
            "* late joined.",
            "* late left.",
            "* late joined.",
            "* late left.",
        ];
        assert_eq!(alice_saw, expected);
        // late came after alice joined: he hears her line, not her join.
        let late_saw = queued(&late);
        assert!(late_saw[0].starts_with("* Welcome, late"), "{late_saw:?}");
        assert_eq!(late_saw[1..], ["alice: hi"]);
    }

    #[test]
    fn names_are_unique_ignoring_case() {
        let mut registry = registry_with(&["Alice"]);
        assert!(registry.create_account("alice", hash()).is_err());
        assert_eq!(
            registry.find_account("ALICE").map(|a| a.0),
            Some("Alice".into())
        );
    }

    #[test]
    fn private_to_offline_user_is_stored_then_handed_over_at_sign_in() {
        let mut registry = registry_with(&["alice", "bob"]);
        let (outcome, _) = registry
            .private("alice", "BOB", "hi", 7)
            .expect("known user");
        let PrivateOutcome::Stored(mail) = outcome else {
            panic!("bob is offline, expected Stored, got {outcome:?}");
        };
        assert_eq!(
            (mail.to.as_str(), mail.text.as_str(), mail.sent_at),
            ("bob", "hi", 7)
        );
        let signed_in = registry.sign_in("bob", outbox()).expect("account exists");
        assert_eq!(signed_in.mail, vec![mail]);
        signed_in.delivery.complete();
    }

    #[test]
    fn mailbox_is_capped() {
        let mut registry = registry_with(&["alice", "bob"]);
        for i in 0..MAILBOX_CAP {
            let (_, delivery) = registry
                .private("alice", "bob", &i.to_string(), 0)
                .expect("room");
            delivery.complete();
        }
        let full = registry.private("alice", "bob", "one more", 0);
        assert_eq!(
            full.err(),
            Some(SendError::MailboxFull { to: "bob".into() })
        );
    }

    #[test]
    fn unknown_receivers_are_errors() {
        let mut registry = registry_with(&["alice"]);
        assert_eq!(
            registry.private("alice", "zed", "x", 0).err(),
            Some(SendError::UnknownUser)
        );
        assert_eq!(
            registry.tagged("alice", "zed", "x").err(),
            Some(SendError::UnknownUser)
        );
    }

    #[test]
    fn stale_session_cannot_sign_out_the_new_one() {
        let mut registry = registry_with(&["alice"]);
        let first = registry.sign_in("alice", outbox()).expect("account");
        let second = registry.sign_in("alice", outbox()).expect("account");
        assert!(second.took_over);
        registry.sign_out("alice", first.session).complete();
        assert_eq!(registry.users(), vec![("alice".to_string(), true)]);
        registry.sign_out("alice", second.session).complete();
        assert_eq!(registry.users(), vec![("alice".to_string(), false)]);
    }

    #[test]
    fn overflowing_receiver_is_reported_not_waited_for() {
        let mut registry = registry_with(&["alice", "bob"]);
        let hangup: Hangup = Box::new(|| {});
        // Room for the welcome line (55 bytes), not for the message after it.
        let tiny = Arc::new(Outbox::new(64, hangup));
        sign_in(&mut registry, "alice");
        sign_in_with(&mut registry, "bob", &tiny);
        let delivery = registry.public("alice", &public(&["more than eight bytes"]));
        assert_eq!(delivery.overflowed.len(), 1);
        delivery.complete();
        assert!(tiny.is_aborted());
    }
}
