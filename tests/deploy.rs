//! Shipping: the systemd unit (its hardening, its limits, and `systemd-analyze verify`),
//! `make install` with DESTDIR and PREFIX, and the static binary from `make static`.
//!
//! The static binary is a release build, too slow to make inside `cargo test`, so `.ci/run`
//! runs `make static` before `make test`. Likewise the verify test needs `systemd-analyze`,
//! which `.ci/run` installs. Without them a test says on the terminal that it was skipped;
//! under CI (`CI=true`, or the `PTCHAT_REQUIRE_...` variable `.ci/run` sets) it fails.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;

use common::{Client, DEADLINE, TEST_FLAGS, TempDir, server_binary, skip_or_fail};

fn project_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn unit_file() -> String {
    fs::read_to_string(project_root().join("docs/chat_server.service")).expect("read unit file")
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(project_root())
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether `program` can be started at all (it may not be installed).
fn available(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

#[test]
fn unit_file_is_hardened_and_sized_for_many_clients() {
    let unit = unit_file();
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    let required = [
        "ExecStart=/usr/local/bin/chat_server --data-dir %S/chat_server 8081",
        "Restart=always",
        "DynamicUser=yes",
        "StateDirectory=chat_server",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "RestrictNamespaces=yes",
        "LockPersonality=yes",
        "MemoryDenyWriteExecute=yes",
        "SystemCallArchitectures=native",
        "LimitNOFILE=65536",
        "TasksMax=25000",
        "WantedBy=multi-user.target",
    ];
    for line in required {
        assert!(lines.contains(&line), "unit file lacks {line:?}");
    }
}

/// `systemd-analyze verify` exits 0 even for unknown keys and bad values; it only prints
/// them. So any output at all is a failure. It also insists that the ExecStart binary
/// exists, so a copy of the unit pointing at the binary under test is verified.
#[test]
fn unit_file_passes_systemd_analyze_verify() {
    if !available("systemd-analyze") {
        skip_or_fail(
            "unit_file_passes_systemd_analyze_verify",
            "PTCHAT_REQUIRE_SYSTEMD_ANALYZE",
            "systemd-analyze is not installed; the unit file was not verified",
        );
        return;
    }
    let dir = TempDir::new("unit");
    let unit = unit_file().replace(
        "/usr/local/bin/chat_server",
        &server_binary().display().to_string(),
    );
    let path = dir.path().join("chat_server.service");
    fs::write(&path, unit).expect("write unit copy");
    let out = run("systemd-analyze", &["verify", &path.display().to_string()]);
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "systemd-analyze verify failed: {said}"
    );
    assert_eq!(said, "", "systemd-analyze verify complained");
}

/// `make install` into a DESTDIR with PREFIX=/usr: the binary and the unit land where
/// systemd looks, with the right modes, and ExecStart follows PREFIX. The debug binary
/// stands in for the static one (STATIC_BIN=...), so this needs no release build.
#[test]
fn make_install_honours_destdir_and_prefix() {
    let dest = TempDir::new("destdir");
    let out = run(
        "make",
        &[
            "--no-print-directory",
            // The stand-in is never rebuilt, even if older than the sources.
            "--old-file",
            &server_binary().display().to_string(),
            "install",
            &format!("DESTDIR={}", dest.path().display()),
            "PREFIX=/usr",
            &format!("STATIC_BIN={}", server_binary().display()),
        ],
    );
    assert!(
        out.status.success(),
        "make install failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let bin = dest.path().join("usr/bin/chat_server");
    let unit = dest
        .path()
        .join("usr/lib/systemd/system/chat_server.service");
    let mode = |p: &Path| {
        fs::metadata(p)
            .expect("installed file")
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode(&bin), 0o755, "binary mode");
    assert_eq!(mode(&unit), 0o644, "unit mode");
    assert_eq!(
        fs::read(&bin).expect("installed binary"),
        fs::read(server_binary()).expect("built binary"),
        "installed binary is the one built"
    );
    let installed = fs::read_to_string(&unit).expect("installed unit");
    assert!(
        installed
            .lines()
            .any(|l| l == "ExecStart=/usr/bin/chat_server --data-dir %S/chat_server 8081"),
        "ExecStart follows PREFIX:\n{installed}"
    );
    let mut installed_files = Vec::new();
    collect_files(dest.path(), &mut installed_files);
    assert_eq!(
        installed_files.len(),
        2,
        "only two files: {installed_files:?}"
    );
}

/// The unit's own "check it" comment works as written once `make install` ran: the file it
/// names is where `make install` (default PREFIX) puts the unit, and that file passes the
/// check, given the binary its ExecStart names (here, the staged one).
#[test]
fn unit_file_check_comment_names_the_file_make_install_writes() {
    let unit = unit_file();
    let comment: Vec<&str> = unit.lines().take_while(|l| l.starts_with('#')).collect();
    assert!(
        comment.iter().any(|l| l.contains("after `make install`")),
        "the comment says to install first: {comment:#?}"
    );
    let checked = comment
        .iter()
        .find_map(|l| {
            l.trim_start_matches(['#', ' '])
                .strip_prefix("systemd-analyze verify ")
        })
        .unwrap_or_else(|| panic!("no systemd-analyze verify line in {comment:#?}"));
    let dest = TempDir::new("destdir-default");
    let out = run(
        "make",
        &[
            "--no-print-directory",
            "--old-file",
            &server_binary().display().to_string(),
            "install",
            &format!("DESTDIR={}", dest.path().display()),
            &format!("STATIC_BIN={}", server_binary().display()),
        ],
    );
    assert!(
        out.status.success(),
        "make install failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let installed = dest.path().join(checked.trim_start_matches('/'));
    assert!(
        installed.is_file(),
        "the comment checks {checked}, which make install did not write"
    );
    if !available("systemd-analyze") {
        skip_or_fail(
            "unit_file_check_comment_names_the_file_make_install_writes",
            "PTCHAT_REQUIRE_SYSTEMD_ANALYZE",
            "systemd-analyze is not installed; the installed unit was not verified",
        );
        return;
    }
    let binary = dest.path().join("usr/local/bin/chat_server");
    let staged = fs::read_to_string(&installed)
        .expect("installed unit")
        .replace("/usr/local/bin/chat_server", &binary.display().to_string());
    fs::write(&installed, staged).expect("point the unit at the staged binary");
    let out = run(
        "systemd-analyze",
        &["verify", &installed.display().to_string()],
    );
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success() && said.is_empty(), "verify: {said}");
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// The output of `make static`: statically linked by `file` and `ldd`, and a working
/// server (it starts, and a client signs up and is welcomed).
#[test]
fn static_binary_is_static_and_serves() {
    let bin = project_root().join("target/static/chat_server");
    if !bin.exists() {
        skip_or_fail(
            "static_binary_is_static_and_serves",
            "PTCHAT_REQUIRE_STATIC",
            &format!("{} is missing; run `make static`", bin.display()),
        );
        return;
    }
    let path = bin.display().to_string();

    let file = run("file", &["-L", &path]);
    let file = text(&file.stdout);
    assert!(
        file.contains("statically linked") || file.contains("static-pie linked"),
        "file: {file}"
    );
    let ldd = run("ldd", &[&path]);
    let ldd = format!("{}{}", text(&ldd.stdout), text(&ldd.stderr));
    assert!(
        ldd.contains("not a dynamic executable") || ldd.contains("statically linked"),
        "ldd: {ldd}"
    );
    let version = run(&path, &["--version"]);
    assert!(
        text(&version.stdout).starts_with("chat_server "),
        "--version: {:?}",
        version
    );

    let data = TempDir::new("static");
    let mut args: Vec<String> = TEST_FLAGS.iter().map(|s| s.to_string()).collect();
    args.extend([
        "--data-dir".into(),
        data.path().display().to_string(),
        "0".into(),
    ]);
    let mut server = KillOnDrop(
        Command::new(&bin)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start static chat_server"),
    );
    let stdout = server.0.stdout.take().expect("stdout piped");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
    });
    let started = rx
        .recv_timeout(DEADLINE)
        .expect("startup line from the static server");
    let port: u16 = started
        .strip_prefix("Chat server started on port ")
        .and_then(|rest| rest.strip_suffix('.'))
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("unexpected startup line {started:?}"));
    let mut client = Client::connect(port);
    client.sign_in("alice", "pw");
    assert!(
        client
            .seen
            .iter()
            .any(|l| l.starts_with("* Welcome, alice!")),
        "static server signed alice in: {:?}",
        client.seen
    );
}

/// A child process killed when the test ends, pass or fail.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
