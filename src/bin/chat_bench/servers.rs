//! The servers under test: which kinds there are, how each one is started on 127.0.0.1 and
//! a free port (pinned to the servers' CPU), what it costs (`/proc/PID`), and whether it
//! survived a scenario.
//!
//! Every scenario gets a fresh server, killed when its [`Target`] is dropped. A server
//! that dies during a scenario is a finding, not a bench error: [`Target::death`] says how
//! it ended and what it logged last. How each kind is spoken to lives in `wire.rs`; how
//! ngircd is configured in `ngircd.rs`.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::ngircd;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Ptchat,
    Ncat,
    Ngircd,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Ptchat, Kind::Ncat, Kind::Ngircd];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Ptchat => "ptchat",
            Kind::Ncat => "ncat",
            Kind::Ngircd => "ngircd",
        }
    }

    pub fn from_label(label: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.label() == label)
    }
}

/// A running server process, killed when dropped.
pub struct Target {
    pub kind: Kind,
    /// Behind a lock only so that `try_wait` works through the shared reference the
    /// scenarios hold.
    child: Mutex<Child>,
    pid: u32,
    pub addr: SocketAddr,
    dir: PathBuf,
}

/// Where servers run and how: the ptchat binary and the CPU to pin servers to.
pub struct Lab {
    pub server: PathBuf,
    pub server_cpu: Option<usize>,
    pub tmp: PathBuf,
    pub runs: AtomicUsize,
}

impl Lab {
    /// Starts a fresh `kind` server in its own directory. `max_clients` is what ncat is
    /// told to accept; ptchat and ngircd are given no client limit of their own.
    pub fn start(&self, kind: Kind, max_clients: usize) -> io::Result<Target> {
        let n = self.runs.fetch_add(1, Ordering::Relaxed);
        let dir = self.tmp.join(format!("{}-{n}", kind.label()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let command = self.pinned(self.program(kind));
        match kind {
            Kind::Ptchat => start_ptchat(command, dir),
            Kind::Ncat => start_ncat(command, dir, max_clients),
            Kind::Ngircd => ngircd::start(command, dir),
        }
    }

    fn program(&self, kind: Kind) -> OsString {
        match kind {
            Kind::Ptchat => self.server.clone().into_os_string(),
            Kind::Ncat => "ncat".into(),
            Kind::Ngircd => ngircd::program(),
        }
    }

    /// `program` run on the servers' CPU, through `taskset`, when there is one.
    fn pinned(&self, program: OsString) -> Command {
        match self.server_cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpu.to_string()]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }
}

impl Target {
    pub fn new(kind: Kind, child: Child, addr: SocketAddr, dir: PathBuf) -> Target {
        let pid = child.id();
        Target {
            kind,
            child: Mutex::new(child),
            pid,
            addr,
            dir,
        }
    }

    /// CPU seconds the server has used so far (user + system), from `/proc/PID/stat`.
    pub fn cpu_s(&self) -> f64 {
        crate::machine::process_cpu_s(&self.pid.to_string())
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn rss_kib(&self) -> u64 {
        proc_status(self.pid, "VmRSS:").unwrap_or(0)
    }

    pub fn open_fds(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.pid)).map_or(0, |d| d.count())
    }

    /// None while the server runs; once it has ended, how (exit status or signal).
    pub fn exit(&self) -> Option<String> {
        let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("unknown ({e})")),
        }
    }

    /// None while the server runs; once it has ended, how, and its last log lines.
    pub fn death(&self) -> Option<(String, String)> {
        let how = self.exit()?;
        Some((how, log_tail(&self.dir.join("server.log"), 3)))
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(PoisonError::into_inner);
        let _ = child.kill();
        let _ = child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A field of `/proc/PID/status` such as `VmRSS:` (KiB) or `Threads:`; None once the
/// process has ended (a zombie has no `VmRSS` line).
pub fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The last `n` non-empty lines of a log file, joined with ` | ` so they fit one cell.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// ptchat with the protections a benchmark would trip switched off, and no client limit of
/// its own below what the scale scenario asks for: the bench wants to see what the
/// process holds, not what a flag allows. It prints its port on stdout.
fn start_ptchat(mut command: Command, dir: PathBuf) -> io::Result<Target> {
    let data = dir.join("data");
    command
        .arg("--data-dir")
        .arg(&data)
        .args(["--rate", "0", "--max-per-ip", "0", "--max-clients", "20000"])
        .args(["--kdf-iterations", "1", "--bind", "127.0.0.1", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(dir.join("server.log"))?);
    let mut child = command.spawn()?;
    let mut first = String::new();
    if let Some(out) = child.stdout.take() {
        BufReader::new(out).read_line(&mut first)?;
    }
    let port = first
        .trim()
        .strip_prefix("Chat server started on port ")
        .and_then(|s| s.strip_suffix('.'))
        .and_then(|s| s.parse::<u16>().ok());
    let Some(port) = port else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(io::Error::other(format!(
            "chat_server did not start: {first:?}; see {}",
            dir.join("server.log").display()
        )));
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    Ok(Target::new(Kind::Ptchat, child, addr, dir))
}

/// `ncat --chat` cannot report a port it chose, so a free one is found first, then polled
/// until ncat accepts on it.
fn start_ncat(mut command: Command, dir: PathBuf, max_clients: usize) -> io::Result<Target> {
    let port = free_port()?;
    command
        .args(["--chat", "--listen", "127.0.0.1", &port.to_string()])
        .args(["--max-conns", &(max_clients + 1).to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(dir.join("server.log"))?);
    let child = command.spawn()?;
    let target = Target::new(
        Kind::Ncat,
        child,
        SocketAddr::from(([127, 0, 0, 1], port)),
        dir,
    );
    // Not by connecting: ncat 7.93 quits ("getpeername ... failed") when a client closes
    // before ncat has accepted it.
    wait_listening(&target, port)?;
    Ok(target)
}

/// A port nothing listens on right now (the kernel's pick for port 0, released again).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits up to 5 s until `target` listens on `port`; fails early if it exited.
pub fn wait_listening(target: &Target, port: u16) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !is_listening(port) {
        if let Some((how, log)) = target.death() {
            return Err(io::Error::other(format!(
                "{} exited at start ({how}): {log}",
                target.kind.label()
            )));
        }
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "{} did not start listening",
                target.kind.label()
            )));
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Whether something listens on 127.0.0.1:`port`, from `/proc/net/tcp` (state 0A).
fn is_listening(port: u16) -> bool {
    let wanted = format!("0100007F:{port:04X}");
    fs::read_to_string("/proc/net/tcp").is_ok_and(|table| {
        table.lines().any(|l| {
            let mut cols = l.split_whitespace().skip(1);
            cols.next() == Some(wanted.as_str()) && cols.nth(1) == Some("0A")
        })
    })
}

/// Where servers keep their data: tmpfs when there is one, because every sign-up appends
/// to ptchat's store with an fsync, and 10,000 fsyncs on a disk would measure the disk
/// (minutes of the scale scenario) instead of the chat server.
pub fn bench_dir() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    let base = if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    };
    base.join(format!("chat_bench-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tails_keep_the_last_lines_that_say_something() {
        let dir = std::env::temp_dir().join(format!("chat_bench-tail-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let log = dir.join("server.log");
        // (log text, lines kept) -> tail
        let rows = [
            ("a\nb\nc\nd\n", 3, "b | c | d"),
            ("a\n\n  \nb\n", 3, "a | b"),
            ("", 3, ""),
            ("only\n", 1, "only"),
        ];
        for (text, n, expected) in rows {
            fs::write(&log, text).expect("write");
            assert_eq!(log_tail(&log, n), expected, "{text:?}");
        }
        assert_eq!(log_tail(&dir.join("missing"), 3), "");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn kinds_are_named_on_the_command_line_by_their_labels() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_label(kind.label()), Some(kind));
        }
        assert_eq!(Kind::from_label("inspircd"), None);
    }
}
