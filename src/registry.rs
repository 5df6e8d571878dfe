//! The `Registry`: every account, who is online, and where each online user's lines go.
//!
//! This module owns every delivery decision: who receives a public, tagged or private
//! message, who hears that someone joined or left, when a message waits in a mailbox. It
//! lives behind one `Arc<Mutex<Registry>>`, and because every line is queued under that
//! lock, all users see messages in the same order.
//!
//! It must not do I/O. Its methods only look up, insert and push into [`Outbox`]es (memory
//! work), and return a [`Delivery`]: what the caller does once the lock is released, such
//! as writing to the clients nobody was writing to (`outbox.rs`). File writes happen in
//! `store.rs`, password hashing in `password.rs`, all outside the lock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::delivery::Delivery;
use crate::limits::{MAILBOX_CAP, MAX_ROOM_FOR_NOTICES};
use crate::outbox::{Entry, Outbox};
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

/// Accounts, online users and their outboxes. See the module documentation.
#[derive(Default)]
pub struct Registry {
    /// Keyed by lowercase name; a `BTreeMap` so `~:lu:` comes out sorted.
    accounts: BTreeMap<String, Account>,
    /// Keyed by lowercase name; only signed-in users.
    online: HashMap<String, Online>,
    next_session: u64,
    next_mail_id: u64,
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
        let welcome = Entry::Lines(Reply::Welcome { name: &name }.to_line());
        let welcomed = outbox.push(welcome);
        if welcomed.is_err() {
            return None;
        }
        let mail: Vec<Mail> = account.mailbox.drain(..).collect();
        // The newcomer's welcome is written first.
        let mut delivery = Delivery::for_receivers(self.online.len());
        delivery.note(&name, &outbox, welcomed);
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
        match previous {
            Some(old) => {
                // Best effort: a stalled old connection may not take the notice. Whoever
                // writes the old queue closes that connection once the notice is out.
                let notice = Entry::Lines(Reply::TakenOver.to_line());
                let pushed = old.outbox.push(notice);
                delivery.note(&name, &old.outbox, pushed);
                let closed = old.outbox.close();
                delivery.note(&name, &old.outbox, Ok(closed));
            }
            None => {
                let joined = Reply::Joined { name: &name }.to_line();
                self.notice(&mut delivery, joined, &key);
            }
        }
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
        let mut delivery = Delivery::for_receivers(self.online.len());
        self.notice(&mut delivery, Reply::Left { name }.to_line(), &key);
        delivery
    }

    /// Sends public lines from `from` to every other online user, in order and together:
    /// a burst of lines costs each receiver one push (see `session.rs`, `Presence::burst`).
    /// The lines come formatted ([`PublicBurst::take`]), so no allocation happens under the
    /// lock.
    pub fn public(&mut self, from: &str, lines: &PublicLines) -> Delivery {
        let mut delivery = Delivery::for_receivers(self.online.len());
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
        let mut delivery = Delivery::for_receivers(self.online.len());
        let mut receivers = 0;
        for (key, online) in &self.online {
            if *key == from_key {
                continue;
            }
            let line = if *key == to_key { &marked } else { &plain };
            let pushed = online.outbox.push(Entry::Lines(Arc::clone(line)));
            delivery.note(key, &online.outbox, pushed);
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
        if let Some(online) = self.online.get(&to_key) {
            let mut delivery = Delivery::default();
            let line = Reply::Private { from, text }.to_line();
            let pushed = online.outbox.push(Entry::Lines(line));
            delivery.note(&to_name, &online.outbox, pushed);
            stats::record_relayed(1);
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
            let pushed = online.outbox.push(Entry::Lines(Arc::clone(&lines.text)));
            delivery.note(key, &online.outbox, pushed);
            receivers += 1;
        }
        stats::record_relayed(receivers * lines.lines);
    }

    /// Tells every online user but `about_key` (the one who joined) that someone joined or
    /// left, while the room is small enough for notices (see [`MAX_ROOM_FOR_NOTICES`]).
    fn notice(&self, delivery: &mut Delivery, line: Arc<str>, about_key: &str) {
        if self.online.len() >= MAX_ROOM_FOR_NOTICES {
            return;
        }
        let mut receivers = 0;
        for (key, online) in &self.online {
            if key == about_key {
                continue;
            }
            let pushed = online.outbox.push(Entry::Lines(Arc::clone(&line)));
            delivery.note(key, &online.outbox, pushed);
            receivers += 1;
        }
        stats::record_relayed(receivers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::MemoryTransport;

    fn hash() -> PasswordHash {
        PasswordHash::for_tests()
    }

    /// An outbox whose client reads everything, and what it received.
    fn outbox() -> (Arc<Outbox>, Arc<MemoryTransport>) {
        let transport = MemoryTransport::new(usize::MAX);
        let outbox = Arc::new(Outbox::new(1 << 16, transport.clone()));
        (outbox, transport)
    }

    fn registry_with(names: &[&str]) -> Registry {
        let mut registry = Registry::new();
        for name in names {
            registry.create_account(name, hash()).expect("fresh name");
        }
        registry
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
        let (bob, bob_saw) = sign_in(&mut registry, "bob");
        let before = bob.mark();
        registry.public("alice", &lines).complete();
        assert_eq!(bob.mark(), before + 1, "one entry for the burst");
        let got = bob_saw.lines();
        assert_eq!(got[got.len() - 2..], ["alice: one", "alice: two"]);
    }

    fn sign_in(registry: &mut Registry, name: &str) -> (Arc<Outbox>, Arc<MemoryTransport>) {
        let (outbox, transport) = outbox();
        sign_in_with(registry, name, &outbox);
        (outbox, transport)
    }

    fn sign_in_with(registry: &mut Registry, name: &str, outbox: &Arc<Outbox>) -> SessionId {
        let signed_in = registry.sign_in(name, Arc::clone(outbox)).expect("account");
        signed_in.delivery.complete();
        signed_in.session
    }

    #[test]
    fn joins_and_leaves_reach_the_others_until_the_room_is_too_large_for_notices() {
        let mut registry = registry_with(&["alice", "bob", "carol"]);
        let (_, alice_saw) = sign_in(&mut registry, "alice");
        let (bob, bob_saw) = sign_in(&mut registry, "bob");
        let bob_session = sign_in_with(&mut registry, "bob", &bob);
        registry.sign_out("bob", bob_session).complete();
        assert_eq!(
            alice_saw.lines()[1..],
            ["* bob joined.", "* bob left."],
            "a takeover is no join"
        );
        assert_eq!(bob_saw.lines().len(), 3, "{:?}", bob_saw.lines());
        assert!(!bob_saw.lines().contains(&"* bob joined.".to_string()));

        // Fill the room to the limit: the next join and leave are not announced.
        let crowd: Vec<String> = (0..MAX_ROOM_FOR_NOTICES).map(|i| format!("u{i}")).collect();
        for name in &crowd[..MAX_ROOM_FOR_NOTICES - 1] {
            registry.create_account(name, hash()).expect("fresh");
            let _ = sign_in(&mut registry, name);
        }
        let heard = alice_saw.lines().len();
        assert_eq!(registry.online_count(), MAX_ROOM_FOR_NOTICES);
        let (_, carol_session) = {
            let (outbox, _) = outbox();
            let session = sign_in_with(&mut registry, "carol", &outbox);
            (outbox, session)
        };
        registry.sign_out("carol", carol_session).complete();
        assert_eq!(alice_saw.lines().len(), heard, "no notices in a large room");
        registry
            .public("alice", &public(&["still here"]))
            .complete();
        assert_eq!(alice_saw.lines().len(), heard, "her own line is not echoed");
    }

    #[test]
    fn a_takeover_tells_the_old_connection_then_closes_it() {
        let mut registry = registry_with(&["alice"]);
        let (old, old_saw) = sign_in(&mut registry, "alice");
        let (new, new_saw) = outbox();
        let signed_in = registry
            .sign_in("alice", Arc::clone(&new))
            .expect("account");
        assert!(signed_in.took_over);
        signed_in.delivery.complete();
        let old_lines = old_saw.lines();
        assert!(old_lines[1].contains("another connection"), "{old_lines:?}");
        assert!(old.is_closed() && old_saw.is_hung_up());
        assert!(!new.is_closed());
        assert!(new_saw.lines()[0].starts_with("* Welcome, alice"));
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
        let signed_in = registry.sign_in("bob", outbox().0).expect("account exists");
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
        let first = registry.sign_in("alice", outbox().0).expect("account");
        let second = registry.sign_in("alice", outbox().0).expect("account");
        assert!(second.took_over);
        registry.sign_out("alice", first.session).complete();
        assert_eq!(registry.users(), vec![("alice".to_string(), true)]);
        registry.sign_out("alice", second.session).complete();
        assert_eq!(registry.users(), vec![("alice".to_string(), false)]);
    }

    #[test]
    fn overflowing_receiver_is_cut_not_waited_for() {
        let mut registry = registry_with(&["alice", "bob"]);
        // bob's client takes nothing, and his queue has room for the welcome line (55
        // bytes), not for a message of 70.
        let stalled = MemoryTransport::new(0);
        let tiny = Arc::new(Outbox::new(64, stalled.clone()));
        sign_in(&mut registry, "alice");
        let signed_in = registry.sign_in("bob", Arc::clone(&tiny)).expect("account");
        // bob's welcome, claimed by this thread: the write finds no room, and the backlog
        // goes to a writer thread of bob's, which waits for room.
        signed_in.delivery.complete();
        registry
            .public("alice", &public(&[&"x".repeat(70)]))
            .complete();
        assert!(tiny.is_closed() && stalled.is_hung_up());
    }
}
