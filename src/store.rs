//! The durable store: accounts and stored private messages in one append-only text file.
//!
//! This module owns the data directory: its lock (one server per directory), the file format
//! (see docs/STORAGE.md), loading with torn-tail recovery, appending with `fsync`, and
//! compaction. It must not decide who may sign in or who receives what (that is the
//! registry), and it never runs under the registry lock. Lock order, to avoid deadlock:
//! the store's lock first, then the registry's, never the other way round.
//!
//! Every record is one line, `CHECKSUM KIND FIELDS...`, where CHECKSUM is the first 8 hex
//! digits of the SHA-256 of the rest of the line. A record is acknowledged to the client
//! only after `fdatasync` returns, so a crash loses nothing acknowledged; a crash mid-write
//! leaves at most one broken line at the end, which loading drops with a warning.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::crypto::{sha256, to_hex};
use crate::log;
use crate::password::PasswordHash;
use crate::registry::{self, AccountCopy, Mail, Registry};

const STORE_FILE: &str = "store.log";
const TEMP_FILE: &str = "store.log.tmp";
const LOCK_FILE: &str = "lock";
const HEADER: &str = "ptchat-store 1";

/// Compact while running once this many records are dead *and* they outnumber the live ones.
const COMPACT_MIN_DEAD: usize = 1000;

/// One line of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// `account NAME HASH`
    Account {
        name: String,
        password: PasswordHash,
    },
    /// `mail ID SENT_AT FROM TO TEXT...`
    Mail(Mail),
    /// `delivered ID`: the mail with this id was handed to its receiver.
    Delivered { id: u64 },
}

/// Why the store cannot be opened or written.
#[derive(Debug)]
pub enum StoreError {
    Io {
        path: PathBuf,
        source: io::Error,
    },
    /// Another process holds the data directory.
    Locked {
        path: PathBuf,
    },
    /// A damaged record that is not the last one: refusing to start beats silently
    /// dropping accounts.
    Corrupt {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            StoreError::Locked { path } => write!(
                f,
                "{}: data directory is in use by another chat_server (its lock file is held)",
                path.display()
            ),
            StoreError::Corrupt { path, line, reason } => write!(
                f,
                "{} line {line}: corrupted record ({reason}); refusing to start. \
                 Restore a backup or remove that line by hand.",
                path.display()
            ),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The open store. Appending goes through [`Store::writer`].
pub struct Store {
    dir: PathBuf,
    writer: Mutex<Writer>,
    /// Held for the life of the server: `File::try_lock` on it keeps a second server out.
    _lock: File,
}

/// The append side of the store, behind the store's own mutex.
pub struct Writer {
    dir: PathBuf,
    file: File,
    /// Bytes of whole records in the file: where a failed append is cut back to.
    len: u64,
    accounts: usize,
    /// Mail on disk without a `delivered` record, by id (so in send order). Kept here, not
    /// read from the registry, because the registry hands a mailbox to its owner before
    /// delivery is recorded: a compaction in between must still keep those messages.
    undelivered: BTreeMap<u64, Mail>,
    /// Records in the file that no longer describe anything (delivered mail and its marks).
    dead: usize,
    /// Set when a failed append could not be cut back: appending more would bury a broken
    /// record mid-file, so every later append fails instead.
    broken: bool,
}

impl Store {
    /// Opens (creating if needed) the data directory, loads it into a fresh [`Registry`],
    /// and rewrites the file without dead or torn records.
    pub fn open(dir: &Path) -> Result<(Store, Registry), StoreError> {
        create_dir(dir).map_err(io_error(dir))?;
        let lock = lock_dir(dir)?;
        let path = dir.join(STORE_FILE);
        let text = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_error(&path)(e)),
        };
        let records = parse_store(&text, &path)?;
        let registry = build_registry(records);
        let snapshot = registry.snapshot();
        let undelivered: BTreeMap<u64, Mail> = snapshot
            .iter()
            .flat_map(|account| &account.mailbox)
            .map(|mail| (mail.id, mail.clone()))
            .collect();
        let (file, len) =
            write_compacted(dir, &snapshot, undelivered.values()).map_err(io_error(dir))?;
        let writer = Writer {
            dir: dir.to_path_buf(),
            file,
            len,
            accounts: snapshot.len(),
            undelivered,
            dead: 0,
            broken: false,
        };
        let store = Store {
            dir: dir.to_path_buf(),
            writer: Mutex::new(writer),
            _lock: lock,
        };
        Ok((store, registry))
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the store's lock for appending. Hold it across the registry change that the
    /// records describe, so records reach the file in the order the registry saw them.
    pub fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Writer {
    /// Appends `records` and waits until they are on disk. Only then may the client be told.
    ///
    /// On failure the file is cut back to its last whole record, so a half-written line
    /// never ends up in the middle once later appends succeed (that would stop the next
    /// start). The caller undoes its registry change and tells the client.
    pub fn append(&mut self, records: &[Record]) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::other(
                "an earlier failed write could not be undone; restart the server",
            ));
        }
        let text: String = records.iter().map(encode).collect();
        let written = self
            .file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            let cut = self
                .file
                .set_len(self.len)
                .and_then(|()| self.file.sync_data());
            if cut.is_err() {
                self.broken = true;
            }
            return Err(e);
        }
        self.len += text.len() as u64;
        for record in records {
            self.note(record);
        }
        Ok(())
    }

    /// Keeps the counts and the undelivered mail in step with what the file now holds.
    fn note(&mut self, record: &Record) {
        match record {
            Record::Account { .. } => self.accounts += 1,
            Record::Mail(mail) => {
                self.undelivered.insert(mail.id, mail.clone());
            }
            Record::Delivered { id } => {
                // The mail record and this mark are both dead now.
                self.dead += 1 + usize::from(self.undelivered.remove(id).is_some());
            }
        }
    }

    /// True when dead records dominate the file.
    pub fn needs_compaction(&self) -> bool {
        let live = self.accounts + self.undelivered.len();
        self.dead >= COMPACT_MIN_DEAD && self.dead > live
    }

    /// Rewrites the file with only live records: the registry's accounts (the registry lock
    /// is taken only to copy them) and the mail this writer knows is undelivered.
    pub fn compact(&mut self, registry: &Mutex<Registry>) -> io::Result<()> {
        let accounts = registry::lock(registry).snapshot();
        let (file, len) = write_compacted(&self.dir, &accounts, self.undelivered.values())?;
        self.file = file;
        self.len = len;
        self.accounts = accounts.len();
        self.dead = 0;
        Ok(())
    }
}

/// Creates the data directory (mode 0700) if missing. A new directory's name lives in its
/// parent, so the parent is fsynced too: otherwise a power cut could forget the directory
/// along with every account written into it.
fn create_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

/// Keeps a second server off the same directory. The lock dies with the process, so a
/// crashed server never leaves a stale lock behind.
fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_error(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(StoreError::Locked { path }),
        Err(fs::TryLockError::Error(e)) => Err(io_error(&path)(e)),
    }
}

/// The checksum of one record's body: 8 hex digits of its SHA-256.
fn checksum(body: &str) -> String {
    to_hex(&sha256(body.as_bytes())[..4])
}

/// One record as a line, `\n` included.
pub fn encode(record: &Record) -> String {
    let body = match record {
        Record::Account { name, password } => format!("account {name} {password}"),
        Record::Mail(m) => format!("mail {} {} {} {} {}", m.id, m.sent_at, m.from, m.to, m.text),
        Record::Delivered { id } => format!("delivered {id}"),
    };
    format!("{} {body}\n", checksum(&body))
}

/// Parses one line (without `\n`); `Err` says what is wrong with it.
pub fn decode(line: &str) -> Result<Record, String> {
    let (sum, body) = line.split_once(' ').ok_or("no checksum")?;
    if sum != checksum(body) {
        return Err("checksum mismatch".into());
    }
    let (kind, rest) = body.split_once(' ').ok_or("no fields")?;
    match kind {
        "account" => {
            let (name, hash) = rest.split_once(' ').ok_or("account: missing hash")?;
            let password = PasswordHash::parse(hash).ok_or("account: bad password hash")?;
            Ok(Record::Account {
                name: name.to_string(),
                password,
            })
        }
        "mail" => {
            let mut fields = rest.splitn(5, ' ');
            let mut next = || fields.next().ok_or("mail: missing field");
            let id = next()?.parse().map_err(|_| "mail: bad id")?;
            let sent_at = next()?.parse().map_err(|_| "mail: bad time")?;
            let (from, to) = (next()?.to_string(), next()?.to_string());
            let text = next()?.to_string();
            Ok(Record::Mail(Mail {
                id,
                from,
                to,
                sent_at,
                text,
            }))
        }
        "delivered" => Ok(Record::Delivered {
            id: rest.parse().map_err(|_| "delivered: bad id")?,
        }),
        other => Err(format!("unknown record kind '{other}'")),
    }
}

/// Parses the whole file. A damaged *last* line is a torn write: dropped with a warning.
/// A damaged line anywhere else is corruption: an error naming the line.
fn parse_store(bytes: &[u8], path: &Path) -> Result<Vec<Record>, StoreError> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines: Vec<&str> = text.split('\n').collect();
    // A file that ends in '\n' splits into a final empty piece: not a record.
    if lines.last() == Some(&"") {
        lines.pop();
    }
    let mut records = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let number = index + 1;
        if index == 0 && *line == HEADER {
            continue;
        }
        match decode(line) {
            Ok(record) => records.push(record),
            Err(reason) if number == lines.len() => {
                log::warn(
                    "store_torn_tail",
                    &[
                        ("path", &path.display()),
                        ("line", &number),
                        ("reason", &reason),
                    ],
                );
            }
            Err(reason) => {
                let path = path.to_path_buf();
                return Err(StoreError::Corrupt {
                    path,
                    line: number,
                    reason,
                });
            }
        }
    }
    Ok(records)
}

/// Replays records into a registry: accounts, then mail not yet delivered.
fn build_registry(records: Vec<Record>) -> Registry {
    let mut registry = Registry::new();
    let delivered: std::collections::HashSet<u64> = records
        .iter()
        .filter_map(|r| match r {
            Record::Delivered { id } => Some(*id),
            _ => None,
        })
        .collect();
    for record in records {
        match record {
            Record::Account { name, password } => {
                let _ = registry.create_account(&name, password);
            }
            Record::Mail(mail) if !delivered.contains(&mail.id) => registry.restore_mail(mail),
            Record::Mail(mail) => registry.note_mail_id(mail.id),
            Record::Delivered { .. } => {}
        }
    }
    registry
}

/// Writes the accounts, then the undelivered mail in send order (after every account, so
/// each message follows its receiver's record), to a new file; fsyncs it, renames it over
/// the store and fsyncs the directory, so at every instant either the old or the new file
/// is complete. Returns the new file, open for appending, and its length.
fn write_compacted<'m>(
    dir: &Path,
    accounts: &[AccountCopy],
    mail: impl Iterator<Item = &'m Mail>,
) -> io::Result<(File, u64)> {
    let temp = dir.join(TEMP_FILE);
    let mut text = format!("{HEADER}\n");
    for account in accounts {
        let (name, password) = (account.name.clone(), account.password.clone());
        text.push_str(&encode(&Record::Account { name, password }));
    }
    for mail in mail {
        text.push_str(&encode(&Record::Mail(mail.clone())));
    }
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&temp)?;
    // `mode` applies only at creation; a leftover temp file may have other permissions.
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    drop(file);
    let path = dir.join(STORE_FILE);
    fs::rename(&temp, &path)?;
    File::open(dir)?.sync_all()?;
    let file = OpenOptions::new().append(true).open(&path)?;
    Ok((file, text.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Outbox;
    use crate::registry::PrivateOutcome;
    use crate::transport::MemoryTransport;
    use std::sync::Arc;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ptchat-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn mail(id: u64, text: &str) -> Record {
        Record::Mail(Mail {
            id,
            from: "alice".into(),
            to: "bob".into(),
            sent_at: 1_700_000_000,
            text: text.into(),
        })
    }

    #[test]
    fn every_record_kind_round_trips() {
        let rows = [
            Record::Account {
                name: "Alice".into(),
                password: PasswordHash::for_tests(),
            },
            mail(7, "hello: spaces  and\ttabs \u{e9}"),
            Record::Delivered { id: 7 },
        ];
        for record in rows {
            let line = encode(&record);
            assert!(line.ends_with('\n'));
            assert_eq!(decode(line.trim_end_matches('\n')), Ok(record));
        }
    }

    #[test]
    fn damaged_lines_are_rejected() {
        let good = encode(&mail(1, "hi"));
        let good = good.trim_end();
        let rows = [
            String::new(),
            "garbage".to_string(),
            good.replacen("hi", "ho", 1),
            good[..good.len() - 1].to_string(),
            format!("{} bogus 1", checksum("bogus 1")),
            format!("{} delivered x", checksum("delivered x")),
        ];
        for line in rows {
            assert!(decode(&line).is_err(), "{line:?}");
        }
    }

    #[test]
    fn accounts_and_mail_survive_reopen_and_delivered_mail_does_not() {
        let dir = temp_dir("reopen");
        {
            let (store, mut registry) = Store::open(&dir).expect("open");
            registry
                .create_account("alice", PasswordHash::for_tests())
                .expect("new");
            registry
                .create_account("bob", PasswordHash::for_tests())
                .expect("new");
            let (first, _) = registry.private("alice", "bob", "one", 1).expect("stored");
            let (second, _) = registry.private("alice", "bob", "two", 2).expect("stored");
            let (PrivateOutcome::Stored(first), PrivateOutcome::Stored(second)) = (first, second)
            else {
                panic!("bob is offline");
            };
            let mut writer = store.writer();
            let records = [
                Record::Account {
                    name: "alice".into(),
                    password: PasswordHash::for_tests(),
                },
                Record::Account {
                    name: "bob".into(),
                    password: PasswordHash::for_tests(),
                },
                Record::Mail(first.clone()),
                Record::Mail(second),
                Record::Delivered { id: first.id },
            ];
            writer.append(&records).expect("append");
        }
        let (_store, registry) = Store::open(&dir).expect("reopen");
        assert_eq!(registry.account_count(), 2);
        let bob_mail = &registry.snapshot()[1].mailbox;
        assert_eq!(
            bob_mail.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
            ["two"]
        );
        let mode = fs::metadata(dir.join(STORE_FILE))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn torn_tail_is_dropped_but_broken_middle_refuses() {
        let account = encode(&Record::Account {
            name: "a".into(),
            password: PasswordHash::for_tests(),
        });
        let torn = format!("{HEADER}\n{account}{}", &account[..20]);
        let records = parse_store(torn.as_bytes(), Path::new("x")).expect("torn tail loads");
        assert_eq!(records.len(), 1);

        let broken = format!("{HEADER}\n{account}bad line\n{account}");
        match parse_store(broken.as_bytes(), Path::new("x")) {
            Err(StoreError::Corrupt { line, .. }) => assert_eq!(line, 3),
            other => panic!("expected corruption at line 3, got {other:?}"),
        }
    }

    #[test]
    fn compaction_keeps_mail_handed_out_but_not_yet_marked_delivered() {
        let dir = temp_dir("inflight");
        {
            let (store, mut registry) = Store::open(&dir).expect("open");
            let password = PasswordHash::for_tests();
            registry
                .create_account("bob", password.clone())
                .expect("new");
            let (PrivateOutcome::Stored(stored), _) =
                registry.private("alice", "bob", "one", 1).expect("stored")
            else {
                panic!("bob is offline");
            };
            let mut writer = store.writer();
            let name = "bob".to_string();
            writer
                .append(&[Record::Account { name, password }, Record::Mail(stored)])
                .expect("append");
            // Signing in empties the registry's mailbox before delivery is recorded; a
            // compaction in that gap must not lose the message.
            let registry = Mutex::new(registry);
            let outbox = Arc::new(Outbox::new(1024, MemoryTransport::new(usize::MAX)));
            let signed_in = registry::lock(&registry).sign_in("bob", outbox);
            assert_eq!(signed_in.map(|s| s.mail.len()), Some(1));
            writer.compact(&registry).expect("compact");
        }
        let (_store, registry) = Store::open(&dir).expect("reopen");
        assert_eq!(
            registry.snapshot()[0].mailbox.len(),
            1,
            "mail survived compaction"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn delivered_mail_counts_as_dead_for_compaction() {
        let dir = temp_dir("dead");
        let (store, _registry) = Store::open(&dir).expect("open");
        let mut writer = store.writer();
        let mails: Vec<Record> = (1..=COMPACT_MIN_DEAD as u64)
            .map(|id| mail(id, "x"))
            .collect();
        writer.append(&mails).expect("append");
        assert!(!writer.needs_compaction());
        let marks: Vec<Record> = (1..=COMPACT_MIN_DEAD as u64 / 2)
            .map(|id| Record::Delivered { id })
            .collect();
        writer.append(&marks).expect("append");
        // 1000 dead records against 500 live ones.
        assert!(writer.needs_compaction());
        drop(writer);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_append_that_cannot_be_undone_stops_all_later_appends() {
        let dir = temp_dir("broken");
        let (store, _registry) = Store::open(&dir).expect("open");
        let mut writer = store.writer();
        // A read-only handle: the write fails, and so does cutting the file back.
        writer.file = File::open(dir.join(STORE_FILE)).expect("reopen read-only");
        let before = fs::read(dir.join(STORE_FILE)).expect("read");
        assert!(writer.append(&[mail(1, "lost")]).is_err());
        assert!(writer.broken);
        writer.file = OpenOptions::new()
            .append(true)
            .open(dir.join(STORE_FILE))
            .expect("reopen for append");
        assert!(writer.append(&[mail(2, "refused")]).is_err());
        assert_eq!(fs::read(dir.join(STORE_FILE)).expect("read"), before);
        drop(writer);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn second_open_of_the_same_directory_is_refused() {
        let dir = temp_dir("lock");
        let first = Store::open(&dir).expect("first open");
        assert!(matches!(Store::open(&dir), Err(StoreError::Locked { .. })));
        drop(first);
        assert!(Store::open(&dir).is_ok());
        let _ = fs::remove_dir_all(&dir);
    }
}
