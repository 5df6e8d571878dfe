//! Accounts and mailboxes that last: restarts of the real binary on the same data
//! directory, `kill -9` at awkward moments, damaged store files, the directory lock, file
//! modes, the mailbox cap, compaction and the sign-in throttle. See docs/STORAGE.md for the
//! file format and the crash-safety argument these tests check.

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, DEADLINE, Server, TEST_FLAGS, TempDir, server_binary, wait_for};

fn store_path(dir: &Path) -> PathBuf {
    dir.join("store.log")
}

fn store_text(dir: &Path) -> String {
    fs::read_to_string(store_path(dir)).expect("read store.log")
}

/// Signs out politely and waits for the server to confirm, so the user is offline.
fn quit(client: &mut Client, name: &str) {
    client.send("~:q!:");
    client.expect(&format!("* Goodbye, {name}."));
    client.expect_closed();
}

/// Runs the binary on `data_dir` with the test flags and waits for it to exit on its own
/// (it must: these are start-up refusals). Returns its exit status and its stderr.
fn run_expecting_exit(data_dir: &Path) -> (ExitStatus, String) {
    let mut child = Command::new(server_binary())
        .args(TEST_FLAGS)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chat_server");
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll chat_server") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chat_server was expected to refuse to start, but still runs");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr piped")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    (status, stderr)
}

#[test]
fn restart_keeps_accounts_and_still_rejects_wrong_passwords() {
    let dir = TempDir::new("restart-accounts");
    let mut server = Server::start_in(dir.path(), &[]);
    server.sign_in("alice", "secret-a");
    server.kill();

    // A different cost for new hashes: old records keep (and are checked at) their own.
    let server = Server::start_in(dir.path(), &["--kdf-iterations", "2000"]);
    let mut wrong = server.connect();
    wrong.send("alice");
    wrong.expect("* Password for alice:");
    wrong.send("secret-b");
    wrong.expect("! Wrong password (2 tries left). Try again:");
    wrong.send("secret-a");
    wrong.expect("* Welcome, alice! You are signed in. Type ~:h: for help.");
    server.sign_in("bob", "secret-b");

    let text = store_text(dir.path());
    let account_line = |name: &str| {
        text.lines()
            .find(|l| l.contains(&format!(" account {name} ")))
            .unwrap_or_else(|| panic!("no account record for {name} in:\n{text}"))
            .to_string()
    };
    assert!(account_line("alice").contains(" pbkdf2-sha256$1000$"));
    assert!(account_line("bob").contains(" pbkdf2-sha256$2000$"));
    assert!(!text.contains("secret-"), "a password is stored in clear");
}

#[test]
fn restart_keeps_mail_for_offline_users_and_delivers_it_once() {
    let dir = TempDir::new("restart-mail");
    let mut server = Server::start_in(dir.path(), &[]);
    let [mut alice, mut bob] = server.sign_in_all([("alice", "pw-a"), ("bob", "pw-b")]);
    quit(&mut bob, "bob");
    alice.expect("* bob left.");
    alice.send("~->bob: first");
    alice.expect("* bob is offline; private message stored for their next sign-in.");
    alice.send("~->bob: second");
    alice.expect("* bob is offline; private message stored for their next sign-in.");
    // "stored" was said, so the messages are on disk: a crash now must not lose them.
    server.kill();

    let mut server = Server::start_in(dir.path(), &[]);
    let mut bob = server.sign_in("bob", "pw-b");
    bob.expect("* 2 private messages arrived while you were away:");
    for text in ["first", "second"] {
        let line = bob.next_line();
        assert!(
            line.starts_with("[private, sent ") && line.ends_with(&format!("Z] alice: {text}")),
            "{line:?}"
        );
    }
    // A round trip through bob's own session: it records delivery before reading on.
    bob.expect_nothing_pending();
    server.kill();

    let server = Server::start_in(dir.path(), &[]);
    let mut bob = server.sign_in("bob", "pw-b");
    bob.expect_nothing_pending();
}

#[test]
fn kill_9_right_after_many_sign_ups_loses_none_of_them() {
    const USERS: usize = 50;
    let dir = TempDir::new("kill9");
    let mut server = Server::start_in(dir.path(), &[]);
    let port = server.port;
    let signers: Vec<_> = (0..USERS)
        .map(|i| {
            thread::spawn(move || {
                let mut client = Client::connect(port);
                client.sign_in(&format!("user{i}"), &format!("pw-{i}"));
                client
            })
        })
        .collect();
    // Keep the connections open: the server is killed with its users still online.
    let _clients: Vec<Client> = signers
        .into_iter()
        .map(|t| t.join().expect("sign-up thread"))
        .collect();
    server.kill();

    let server = Server::start_in(dir.path(), &[]);
    server.expect_log(&format!("accounts={USERS}"));
    for i in 0..USERS {
        let mut client = server.connect();
        client.send(&format!("user{i}"));
        client.expect(&format!("* Password for user{i}:"));
        client.send(&format!("pw-{i}"));
        client.expect(&format!(
            "* Welcome, user{i}! You are signed in. Type ~:h: for help."
        ));
        if i == USERS - 1 {
            client.send("~:lu:");
            client.expect(&format!("* Users: {USERS} (1 online)"));
        }
        quit(&mut client, &format!("user{i}"));
    }
}

#[test]
fn torn_last_record_is_dropped_with_a_warning_and_the_rest_loads() {
    let dir = TempDir::new("torn");
    let mut server = Server::start_in(dir.path(), &[]);
    server.sign_in("alice", "pw-a");
    server.sign_in("bob", "pw-b");
    server.kill();

    // A power cut mid-append: half of a record, no newline.
    let text = store_text(dir.path());
    let last = text.lines().last().expect("a record");
    let torn = &last[..last.len() / 2];
    fs::write(store_path(dir.path()), format!("{text}{torn}")).expect("tear the tail");

    let server = Server::start_in(dir.path(), &[]);
    let warning = server.expect_log("store_torn_tail");
    assert!(warning.contains("WARN store_torn_tail"), "{warning}");
    server.sign_in("alice", "pw-a");
    server.sign_in("bob", "pw-b");
    // The start-up rewrite cut the fragment away: the file is whole records again.
    let text = store_text(dir.path());
    assert!(text.ends_with('\n'), "{text:?}");
    assert!(!text.contains(&format!("{torn}\n")), "{text:?}");
}

#[test]
fn corrupt_middle_record_refuses_to_start_and_names_the_line() {
    let dir = TempDir::new("corrupt");
    let mut server = Server::start_in(dir.path(), &[]);
    for name in ["alice", "bob", "carol"] {
        server.sign_in(name, "pw");
    }
    server.kill();

    // Line 1 is the header; line 3 is bob's account. Flip one character of it.
    let text = store_text(dir.path());
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    assert!(lines[2].contains(" account bob "), "{text}");
    lines[2] = lines[2].replacen("bob", "bib", 1);
    let damaged = lines.join("\n") + "\n";
    fs::write(store_path(dir.path()), &damaged).expect("damage line 3");

    let (status, stderr) = run_expecting_exit(dir.path());
    assert!(!status.success(), "started on a corrupt store: {stderr}");
    assert!(stderr.contains("store.log line 3"), "{stderr}");
    assert!(stderr.contains("refusing to start"), "{stderr}");
    // Nothing was "repaired" behind the operator's back.
    assert_eq!(store_text(dir.path()), damaged);
}

#[test]
fn second_server_on_a_locked_data_dir_exits_with_a_clear_error() {
    let dir = TempDir::new("locked");
    let server = Server::start_in(dir.path(), &[]);
    let (status, stderr) = run_expecting_exit(dir.path());
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("in use by another chat_server"), "{stderr}");
    // The first server is unharmed.
    server.sign_in("alice", "pw");
}

#[test]
fn delay_after_wrong_passwords_grows() {
    let server = Server::start();
    server.sign_in("alice", "right");
    // Four failures over two connections (three close a connection): the delay before
    // each check should be 0, base, 2x base, 4x base (docs/SECURITY.md).
    let mut waits = Vec::new();
    for tries in [3, 1] {
        let mut client = server.connect();
        client.send("alice");
        client.expect("* Password for alice:");
        for _ in 0..tries {
            let sent = Instant::now();
            client.send("wrong");
            client.expect_line("rejecting the password", |l| l.starts_with("! "));
            waits.push(sent.elapsed());
        }
    }
    let base = Duration::from_millis(250);
    assert!(waits[1] >= base, "{waits:?}");
    for pair in waits.windows(2) {
        assert!(pair[1] > pair[0], "delays did not grow: {waits:?}");
    }
    assert!(waits[3] >= base * 4, "{waits:?}");
    // Every failure is logged with the address it came from.
    let failures = |log: &str| log.matches("WARN sign_in_failed peer=127.0.0.1:").count();
    wait_for("four failures in the log", || {
        (failures(&server.log()) >= 4).then_some(())
    });
    assert_eq!(failures(&server.log()), 4, "{}", server.log());
}

#[test]
fn data_dir_and_files_holding_hashes_are_private() {
    let parent = TempDir::new("modes");
    let dir = parent.path().join("data");
    let server = Server::start_in(&dir, &[]);
    server.sign_in("alice", "pw");
    let mode = |path: &Path| fs::metadata(path).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "data directory");
    assert_eq!(mode(&dir.join("store.log")), 0o600, "store.log");
    assert_eq!(mode(&dir.join("lock")), 0o600, "lock");
    assert!(
        !dir.join("store.log.tmp").exists(),
        "temporary file left behind"
    );
}

#[test]
fn kdf_iterations_below_the_default_are_logged_as_insecure() {
    let server = Server::start();
    let line = server.expect_log("kdf_iterations_lowered");
    assert!(
        line.contains("WARN kdf_iterations_lowered iterations=1000"),
        "{line}"
    );
}

#[test]
fn full_mailbox_refuses_the_101st_message_and_drops_none() {
    const CAP: usize = 100;
    let dir = TempDir::new("mailbox-cap");
    let mut server = Server::start_in(dir.path(), &[]);
    let mut alice = server.sign_in("alice", "pw-a");
    let mut bob = server.sign_in("bob", "pw-b");
    quit(&mut bob, "bob");
    for n in 1..=CAP {
        alice.send(&format!("~->bob: note {n}"));
        alice.expect("* bob is offline; private message stored for their next sign-in.");
    }
    alice.send("~->bob: one too many");
    alice.expect("! bob's mailbox is full; your message was not stored.");
    server.kill();

    let server = Server::start_in(dir.path(), &[]);
    let mut bob = server.sign_in("bob", "pw-b");
    bob.expect(&format!(
        "* {CAP} private messages arrived while you were away:"
    ));
    for n in 1..=CAP {
        let line = bob.next_line();
        assert!(line.ends_with(&format!("] alice: note {n}")), "{line:?}");
    }
    bob.expect_nothing_pending();
}

#[test]
fn delivered_mail_is_compacted_away_at_restart() {
    let dir = TempDir::new("compaction");
    let mut server = Server::start_in(dir.path(), &[]);
    let mut alice = server.sign_in("alice", "pw-a");
    let mut bob = server.sign_in("bob", "pw-b");
    quit(&mut bob, "bob");
    let text = "x".repeat(200);
    for _ in 0..100 {
        alice.send(&format!("~->bob: {text}"));
        alice.expect("* bob is offline; private message stored for their next sign-in.");
    }
    let mut bob = server.sign_in("bob", "pw-b");
    bob.expect("* 100 private messages arrived while you were away:");
    for _ in 0..100 {
        let line = bob.next_line();
        assert!(line.ends_with(&text), "{line:?}");
    }
    bob.expect_nothing_pending();
    let before = store_text(dir.path());
    assert_eq!(before.matches(" delivered ").count(), 100, "{before}");
    server.kill();

    let server = Server::start_in(dir.path(), &[]);
    let after = wait_for("the start-up compaction", || {
        let after = store_text(dir.path());
        (!after.contains(" mail ")).then_some(after)
    });
    assert!(after.len() < before.len() / 10, "{after}");
    assert!(!after.contains(" delivered "), "{after}");
    let mut bob = server.sign_in("bob", "pw-b");
    bob.expect_nothing_pending();
    server.sign_in("alice", "pw-a");
}
