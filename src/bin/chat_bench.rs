//! `chat_bench`: how many clients ptchat holds and how fast it relays, optionally side by
//! side with `ncat --chat`. `make bench` and `make bench-compare` run it; docs/PERFORMANCE.md
//! explains every figure it prints.
//!
//! This file owns the load generator and the report. It talks to servers only over TCP and
//! reads their resource use from `/proc/PID/status`; it must not link server internals (the
//! point is to measure the binary a user runs). It starts every server itself, one fresh
//! server per scenario, and kills it afterwards.
//!
//! The load generator has to fit the same machine as the server: ptchat spends two threads
//! per client, and `pid_max` bounds all threads together, so the bench cannot spend one
//! thread per socket too. A few *shard* threads each own many non-blocking sockets and read
//! them in a loop, sleeping briefly only after a pass that found nothing.
//!
//! Every chat message the bench sends carries a marker, its sender, a sequence number and the
//! time it was scheduled (`#m SENDER SEQ MICROS xxx...`, 64 bytes), so each receiver can
//! check order and count loss and duplicates per sender, and measure latency from the
//! *scheduled* send time (open loop: a late send counts against the server, not hidden).

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

/// Length of every benchmark chat line, without its `\n`.
const MESSAGE_BYTES: usize = 64;
/// Sign-ins a shard keeps in flight at once, so the server's accept backlog never overflows
/// (an overflowing backlog drops SYNs, and the client then waits a second to retry).
const SIGN_IN_WINDOW: usize = 32;
/// Pause after a pass over all sockets that read nothing, so idle shards do not spin.
const IDLE_PAUSE: Duration = Duration::from_micros(200);
/// While clients sign in, a signed-in socket receives only join notices; it is read at most
/// this often then, so a shard's passes go to the sign-ins in flight. Reading all of them
/// every pass (a syscall each, mostly finding nothing) took the bench's whole core with
/// 4,000 clients, and the bench, not the server, set the pace of the sign-ins.
const DRAIN_INTERVAL: Duration = Duration::from_millis(50);
/// Sockets owned by one shard thread (more clients means more shards).
const SOCKETS_PER_SHARD: usize = 2_500;
/// Clients `ncat --chat` is asked to hold: it uses select(), limited to FD_SETSIZE = 1024
/// descriptors including its own.
const NCAT_MAX_CLIENTS: usize = 1_000;
/// Descriptors and threads kept free for everything else on the machine.
/// Time bound of the scale scenario's sign-in phase; the clients signed in by then are the
/// figure reported.
const SCALE_SIGN_IN_LIMIT: Duration = Duration::from_secs(120);
const FD_MARGIN: usize = 64;
const THREAD_MARGIN: usize = 1_024;

/// Microseconds since the bench started; all send and receive times use this one clock.
fn now_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

// ---------------------------------------------------------------------------------------
// Command line and sizes

struct Args {
    server: PathBuf,
    compare: bool,
    quick: bool,
    json: PathBuf,
    scale_max: usize,
    only: Option<String>,
}

const USAGE: &str =
    "usage: chat_bench [--server PATH] [--compare] [--quick] [--json PATH] [--scale-max N]
  --server PATH   chat_server binary to measure (default: next to this binary)
  --compare       run every scenario against `ncat --chat` too, alternating, with ratios
  --quick         tiny sizes, a few seconds in all (for the smoke test)
  --json PATH     where to write the figures (default target/bench/results.json)
  --scale-max N   most clients in the scale scenario (default 10000)
  --only NAME     run one scenario: throughput, latency, scale or slow_consumer
";

fn parse_args() -> Result<Args, String> {
    let here = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut args = Args {
        server: here.with_file_name("chat_server"),
        compare: false,
        quick: false,
        json: PathBuf::from("target/bench/results.json"),
        scale_max: 10_000,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--server" => args.server = PathBuf::from(value()?),
            "--json" => args.json = PathBuf::from(value()?),
            "--scale-max" => {
                args.scale_max = value()?.parse().map_err(|_| "bad --scale-max")?;
            }
            "--only" => args.only = Some(value()?),
            "--compare" => args.compare = true,
            "--quick" => args.quick = true,
            "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// The size of each scenario. `full` is what the issue asks for; `quick` keeps the bench
/// binary from rotting without costing the test suite time.
struct Sizes {
    tp_clients: usize,
    tp_senders: usize,
    tp_messages: usize,
    lat_clients: usize,
    lat_rate: u64,
    lat_secs: u64,
    scale_rounds: u64,
    slow_secs: u64,
}

impl Sizes {
    fn full() -> Sizes {
        Sizes {
            tp_clients: 100,
            tp_senders: 10,
            tp_messages: 2_000,
            lat_clients: 1_000,
            lat_rate: 200,
            lat_secs: 10,
            scale_rounds: 5,
            slow_secs: 10,
        }
    }

    fn quick() -> Sizes {
        Sizes {
            tp_clients: 10,
            tp_senders: 2,
            tp_messages: 100,
            lat_clients: 20,
            lat_rate: 50,
            lat_secs: 1,
            scale_rounds: 2,
            slow_secs: 1,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The machine

struct Machine {
    cores: usize,
    kernel: String,
    fd_limit: usize,
    pid_max: usize,
    threads_now: usize,
}

impl Machine {
    fn read() -> Machine {
        let cores = fs::read_to_string("/sys/devices/system/cpu/online")
            .ok()
            .map_or(1, |s| count_cpus(s.trim()));
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".into(), |s| s.trim().to_string());
        Machine {
            cores,
            kernel,
            fd_limit: own_fd_limit(),
            pid_max: read_number("/proc/sys/kernel/pid_max").unwrap_or(32_768),
            threads_now: threads_on_machine(),
        }
    }

    fn line(&self) -> String {
        format!(
            "machine: {} cores, kernel {}, ulimit -n {}, pid_max {}, {} threads running",
            self.cores, self.kernel, self.fd_limit, self.pid_max, self.threads_now
        )
    }

    /// Most clients the scale scenario can try, and what bounds it: the bench's descriptors
    /// (the server inherits the same limit), or the free thread ids (ptchat: 2 per client).
    fn scale_limit(&self, wanted: usize) -> (usize, &'static str) {
        let by_fds = self.fd_limit.saturating_sub(FD_MARGIN);
        let free_threads = self
            .pid_max
            .saturating_sub(self.threads_now + THREAD_MARGIN);
        let by_threads = free_threads / 2;
        let mut best = (wanted, "requested");
        if by_fds < best.0 {
            best = (by_fds, "ulimit -n");
        }
        if by_threads < best.0 {
            best = (by_threads, "pid_max (2 threads per client)");
        }
        best
    }
}

/// `0-1,3` -> 3.
fn count_cpus(list: &str) -> usize {
    list.split(',')
        .map(|range| match range.split_once('-') {
            Some((a, b)) => match (a.parse::<usize>(), b.parse::<usize>()) {
                (Ok(a), Ok(b)) if b >= a => b - a + 1,
                _ => 1,
            },
            None => 1,
        })
        .sum()
}

fn read_number(path: &str) -> Option<usize> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The soft `RLIMIT_NOFILE` of this process, from `/proc/self/limits`.
fn own_fd_limit() -> usize {
    let limits = fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1024)
}

/// Threads existing on the whole machine (the total in `/proc/loadavg`).
fn threads_on_machine() -> usize {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| {
            let field = s.split_whitespace().nth(3)?.to_string();
            field.split_once('/')?.1.parse().ok()
        })
        .unwrap_or(0)
}

/// CPU time (busy, total) of the whole machine so far, in clock ticks, from `/proc/stat`.
fn machine_cpu_ticks() -> Option<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    let total: u64 = ticks.iter().sum();
    let idle = ticks.get(3)? + ticks.get(4).unwrap_or(&0); // idle + iowait
    Some((total - idle, total))
}

/// Waits until the machine is idle (under 10% busy over half a second), at most
/// `limit`, so that one run does not measure the kernel still tearing down the previous
/// one (10,000 sockets and 20,000 threads take seconds to go). Returns whether it was.
fn wait_for_quiet(limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let Some((busy0, total0)) = machine_cpu_ticks() else {
            return false;
        };
        thread::sleep(Duration::from_millis(500));
        let Some((busy1, total1)) = machine_cpu_ticks() else {
            return false;
        };
        let elapsed = total1.saturating_sub(total0).max(1);
        if (busy1.saturating_sub(busy0)) * 10 < elapsed {
            return true;
        }
    }
    false
}

// ---------------------------------------------------------------------------------------
// Servers under test

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ptchat,
    Ncat,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Ptchat => "ptchat",
            Kind::Ncat => "ncat",
        }
    }
}

/// A running server process, killed when dropped.
struct Target {
    kind: Kind,
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

/// Where servers run and how: the ptchat binary and the CPU to pin servers to.
struct Lab {
    server: PathBuf,
    server_cpu: Option<usize>,
    tmp: PathBuf,
    runs: AtomicUsize,
}

impl Lab {
    fn start(&self, kind: Kind, max_clients: usize) -> io::Result<Target> {
        let n = self.runs.fetch_add(1, Ordering::Relaxed);
        let dir = self.tmp.join(format!("{}-{n}", kind.label()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let mut command = match self.server_cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpu.to_string()]);
                c
            }
            None => Command::new(match kind {
                Kind::Ptchat => self.server.as_os_str(),
                Kind::Ncat => "ncat".as_ref(),
            }),
        };
        if self.server_cpu.is_some() {
            command.arg(match kind {
                Kind::Ptchat => self.server.as_os_str(),
                Kind::Ncat => "ncat".as_ref(),
            });
        }
        match kind {
            Kind::Ptchat => self.start_ptchat(command, dir),
            Kind::Ncat => start_ncat(command, dir, max_clients),
        }
    }

    fn start_ptchat(&self, mut command: Command, dir: PathBuf) -> io::Result<Target> {
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
        Ok(Target {
            kind: Kind::Ptchat,
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        })
    }
}

/// `ncat --chat` cannot report a port it chose, so a free one is found first, then polled
/// until ncat accepts on it.
fn start_ncat(mut command: Command, dir: PathBuf, max_clients: usize) -> io::Result<Target> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    command
        .args(["--chat", "--listen", "127.0.0.1", &port.to_string()])
        .args(["--max-conns", &(max_clients + 1).to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(dir.join("server.log"))?);
    let child = command.spawn()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let target = Target {
        kind: Kind::Ncat,
        child,
        addr,
        dir,
    };
    // Not by connecting: ncat 7.93 quits ("getpeername ... failed") when a client closes
    // before ncat has accepted it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !is_listening(port) {
        if Instant::now() > deadline {
            return Err(io::Error::other("ncat --chat did not start listening"));
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(target)
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

impl Target {
    /// CPU seconds the server has used so far (user + system), from `/proc/PID/stat`.
    fn cpu_s(&self) -> f64 {
        process_cpu_s(&self.pid().to_string())
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A field of `/proc/PID/status` such as `VmRSS` (KiB) or `Threads`.
    fn status(&self, field: &str) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    fn rss_kib(&self) -> u64 {
        self.status("VmRSS:").unwrap_or(0)
    }

    fn threads(&self) -> u64 {
        self.status("Threads:").unwrap_or(0)
    }

    fn open_fds(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.pid())).map_or(0, |d| d.count())
    }
}

/// CPU time used so far by process `pid` (a number, or `self`), in seconds.
fn process_cpu_s(pid: &str) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        // Clock ticks; USER_HZ is 100 on every Linux architecture.
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------
// Messages

/// One benchmark chat line, exactly [`MESSAGE_BYTES`] long plus `\n`.
fn message(sender: usize, seq: u64, scheduled_us: u64) -> String {
    let mut line = format!("#m {sender} {seq} {scheduled_us} ");
    while line.len() < MESSAGE_BYTES {
        line.push('x');
    }
    line.push('\n');
    line
}

/// Parses `#m SENDER SEQ MICROS` anywhere in a received line (ptchat prefixes `name: `,
/// ncat prefixes `<userN> `).
fn parse_message(line: &[u8]) -> Option<(usize, u64, u64)> {
    // Names in the bench have no `#`: the first one starts the message.
    let at = line.iter().position(|&b| b == b'#')?;
    let mut rest = line[at..].strip_prefix(b"#m ")?;
    let sender = usize::try_from(take_decimal(&mut rest)?).ok()?;
    let seq = take_decimal(&mut rest)?;
    let scheduled = take_decimal(&mut rest)?;
    Some((sender, seq, scheduled))
}

/// The run of ASCII digits that starts `rest`, up to a space or the end, as a number (`None`
/// if empty, not digits, or too large); `rest` is left after the space. One pass, without
/// the UTF-8 check and searches of `str::parse`: the bench parses every line it receives.
fn take_decimal(rest: &mut &[u8]) -> Option<u64> {
    let mut n: u64 = 0;
    let mut len = 0;
    for &b in rest.iter().take_while(|&&b| b != b' ') {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        n = n.checked_mul(10)?.checked_add(u64::from(digit))?;
        len += 1;
    }
    if len == 0 {
        return None;
    }
    *rest = rest.get(len + 1..).unwrap_or_default();
    Some(n)
}

/// Where the first `\n` in `bytes` is, eight bytes at a time: a word with no newline byte
/// is skipped with one test (the "has a zero byte" trick on the word XOR newlines).
fn find_newline(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const NEWLINES: u64 = u64::from_ne_bytes([b'\n'; 8]);
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for word in &mut words {
        let x = u64::from_ne_bytes(<[u8; 8]>::try_from(word).unwrap_or_default()) ^ NEWLINES;
        if x.wrapping_sub(ONES) & !x & HIGHS != 0 {
            return word.iter().position(|&b| b == b'\n').map(|i| at + i);
        }
        at += 8;
    }
    let tail = words.remainder().iter().position(|&b| b == b'\n');
    tail.map(|i| at + i)
}

/// Writes all of `bytes` to a non-blocking socket, waiting for room until `deadline`.
fn send_all(stream: &TcpStream, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
    let mut stream = stream;
    while !bytes.is_empty() {
        match stream.write(bytes) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return Err(ErrorKind::TimedOut.into());
                }
                thread::sleep(Duration::from_micros(50));
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The client pool: shards of non-blocking sockets

/// What receivers observed. Shards fill one each; they are merged at the end.
#[derive(Default)]
struct Tally {
    /// Benchmark messages received (every copy, duplicates included).
    delivered: u64,
    /// Messages whose sequence number was not the sender's previous one plus one.
    out_of_order: u64,
    latencies_us: Vec<u64>,
    last_receipt_us: u64,
    /// `! ...` lines and connections that failed or closed.
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.delivered += other.delivered;
        self.out_of_order += other.out_of_order;
        self.latencies_us.extend(other.latencies_us);
        self.last_receipt_us = self.last_receipt_us.max(other.last_receipt_us);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn error(&mut self, what: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what);
        }
    }
}

/// What the shards share with the scenario driving them.
struct PoolShared {
    kind: Kind,
    addr: SocketAddr,
    /// Senders whose order is checked (message sender ids are `0..senders`).
    senders: usize,
    /// Every client's socket once connected, indexed by client id, for the senders.
    streams: Mutex<Vec<Option<Arc<TcpStream>>>>,
    signed_in: AtomicUsize,
    connected: AtomicUsize,
    failed: AtomicUsize,
    delivered: AtomicU64,
    /// When a shard last read anything (`now_us`), to see when the server has gone quiet.
    last_read_us: AtomicU64,
    stop: AtomicBool,
    /// Set after the first failed connection: the machine (or server) is at its limit.
    stop_connecting: AtomicBool,
    /// Set once the sign-ins are done: from then on every socket is read every pass, so a
    /// line's receipt time is when it arrived, not when the socket was next due.
    measuring: AtomicBool,
}

struct Conn {
    id: usize,
    stream: Arc<TcpStream>,
    unparsed: Vec<u8>,
    signed_in: bool,
    open: bool,
    /// Last sequence number seen per sender, -1 before the first.
    last_seq: Vec<i64>,
    /// Until the pool measures, a signed-in socket is not read before this
    /// ([`DRAIN_INTERVAL`]).
    next_read: Instant,
}

/// Clients `0..n`, each signed in (ptchat: `b<id>` with its own password; ncat: no sign-in)
/// and read continuously by shard threads.
struct Pool {
    shared: Arc<PoolShared>,
    shards: Vec<JoinHandle<Tally>>,
    n: usize,
}

impl Pool {
    fn start(target: &Target, n: usize, senders: usize) -> Pool {
        let shared = Arc::new(PoolShared {
            kind: target.kind,
            addr: target.addr,
            senders,
            streams: Mutex::new(vec![None; n]),
            signed_in: AtomicUsize::new(0),
            connected: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            delivered: AtomicU64::new(0),
            last_read_us: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            stop_connecting: AtomicBool::new(false),
            measuring: AtomicBool::new(false),
        });
        let shard_count = n.div_ceil(SOCKETS_PER_SHARD).max(1);
        let shards = (0..shard_count)
            .map(|s| {
                let ids: Vec<usize> = (s..n).step_by(shard_count).collect();
                let shared = Arc::clone(&shared);
                thread::spawn(move || run_shard(&shared, &ids))
            })
            .collect();
        Pool { shared, shards, n }
    }

    /// Waits until every client signed in, one failed, or `limit` passes; then also until
    /// sign-ins stop making progress. Returns how many are signed in. From then on the
    /// shards read every socket every pass (see [`DRAIN_INTERVAL`]).
    fn wait_signed_in(&self, limit: Duration) -> usize {
        let done = self.wait_for_sign_ins(limit);
        self.shared.measuring.store(true, Ordering::Relaxed);
        done
    }

    fn wait_for_sign_ins(&self, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let done = self.shared.signed_in.load(Ordering::Relaxed);
            let failed = self.shared.failed.load(Ordering::Relaxed);
            if done + failed >= self.n || Instant::now() > deadline {
                return done;
            }
            if failed > 0 {
                // At the limit: let the sign-ins already in flight finish, then stop.
                thread::sleep(Duration::from_secs(2));
                return self.shared.signed_in.load(Ordering::Relaxed);
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops connecting more clients and waits (up to `limit`) for the sign-ins in flight
    /// to finish, so the number signed in no longer changes. Returns that number.
    fn settle(&self, limit: Duration) -> usize {
        self.shared.stop_connecting.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + limit;
        loop {
            let connected = self.shared.connected.load(Ordering::Relaxed);
            let finished = self.shared.signed_in.load(Ordering::Relaxed)
                + self.shared.failed.load(Ordering::Relaxed);
            if finished >= connected || Instant::now() > deadline {
                return self.shared.signed_in.load(Ordering::Relaxed);
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn stream(&self, id: usize) -> Option<Arc<TcpStream>> {
        let streams = self
            .shared
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        streams.get(id).cloned().flatten()
    }

    /// Waits until no client has received anything for `quiet`, or `limit` passes. Returns
    /// whether it went quiet.
    fn wait_quiet(&self, quiet: Duration, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let quiet_us = quiet.as_micros() as u64;
        while now_us().saturating_sub(self.shared.last_read_us.load(Ordering::Relaxed)) < quiet_us {
            if Instant::now() > deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Waits until `expected` messages were received in total, or `deadline`.
    fn wait_delivered(&self, expected: u64, deadline: Instant) -> bool {
        self.wait_delivered_own_cpu(expected, deadline).0
    }

    /// Like [`Pool::wait_delivered`], and also returns this process's CPU time (seconds)
    /// when the last message came, to the nearest wait: a server that loses messages
    /// keeps the bench waiting until `deadline`, and the waiting is not load.
    fn wait_delivered_own_cpu(&self, expected: u64, deadline: Instant) -> (bool, f64) {
        let mut seen = 0;
        let mut cpu = process_cpu_s("self");
        loop {
            let delivered = self.shared.delivered.load(Ordering::Relaxed);
            if delivered != seen {
                (seen, cpu) = (delivered, process_cpu_s("self"));
            }
            if delivered >= expected || Instant::now() > deadline {
                return (delivered >= expected, cpu);
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    fn finish(self) -> Tally {
        self.shared.stop.store(true, Ordering::Relaxed);
        let mut total = Tally::default();
        for shard in self.shards {
            match shard.join() {
                Ok(tally) => total.merge(tally),
                Err(_) => total.error("a shard thread panicked".into()),
            }
        }
        total
    }
}

/// The body of a shard thread: connect and sign in its clients (a few at a time), and read
/// every socket it owns until told to stop.
fn run_shard(shared: &PoolShared, ids: &[usize]) -> Tally {
    let mut tally = Tally::default();
    let mut conns: Vec<Conn> = Vec::with_capacity(ids.len());
    let mut next = 0;
    let mut pending = 0;
    let mut scratch = vec![0u8; 64 * 1024];
    while !shared.stop.load(Ordering::Relaxed) {
        while next < ids.len()
            && pending < SIGN_IN_WINDOW
            && !shared.stop_connecting.load(Ordering::Relaxed)
        {
            match connect(shared, ids[next]) {
                Ok(conn) => {
                    shared.connected.fetch_add(1, Ordering::Relaxed);
                    pending += usize::from(!conn.signed_in);
                    conns.push(conn);
                }
                Err(e) => {
                    tally.error(format!("connect #{}: {e}", ids[next]));
                    shared.failed.fetch_add(1, Ordering::Relaxed);
                    shared.stop_connecting.store(true, Ordering::Relaxed);
                }
            }
            next += 1;
        }
        let before = tally.delivered;
        let mut read_any = false;
        let measuring = shared.measuring.load(Ordering::Relaxed);
        let now = Instant::now();
        for conn in conns.iter_mut().filter(|c| c.open) {
            if !measuring && conn.signed_in && now < conn.next_read {
                continue;
            }
            read_any |= read_conn(shared, conn, &mut scratch, &mut tally, &mut pending);
            conn.next_read = now + DRAIN_INTERVAL;
        }
        shared
            .delivered
            .fetch_add(tally.delivered - before, Ordering::Relaxed);
        if read_any {
            shared.last_read_us.fetch_max(now_us(), Ordering::Relaxed);
        } else {
            thread::sleep(IDLE_PAUSE);
        }
    }
    tally
}

fn connect(shared: &PoolShared, id: usize) -> io::Result<Conn> {
    let stream = TcpStream::connect_timeout(&shared.addr, Duration::from_secs(10))?;
    stream.set_nodelay(true)?;
    if shared.kind == Kind::Ptchat {
        (&stream).write_all(format!("b{id}\npw{id}\n").as_bytes())?;
    }
    stream.set_nonblocking(true)?;
    let stream = Arc::new(stream);
    let mut streams = shared
        .streams
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    streams[id] = Some(Arc::clone(&stream));
    Ok(Conn {
        id,
        stream,
        unparsed: Vec::new(),
        signed_in: false,
        open: true,
        last_seq: Vec::new(),
        next_read: Instant::now(),
    })
}

/// Reads what one socket has (a bounded number of reads, for fairness) and handles every
/// complete line. Returns whether anything was read.
fn read_conn(
    shared: &PoolShared,
    conn: &mut Conn,
    scratch: &mut [u8],
    tally: &mut Tally,
    pending: &mut usize,
) -> bool {
    let mut read_any = false;
    for _ in 0..4 {
        match (&*conn.stream).read(scratch) {
            Ok(0) => {
                conn.open = false;
                tally.error(format!("client #{} was disconnected", conn.id));
                if !conn.signed_in {
                    shared.failed.fetch_add(1, Ordering::Relaxed);
                    *pending -= 1;
                }
                break;
            }
            Ok(n) => {
                read_any = true;
                take_lines(shared, conn, &scratch[..n], tally, pending);
                if n < scratch.len() {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                conn.open = false;
                tally.error(format!("client #{}: {e}", conn.id));
                if !conn.signed_in {
                    shared.failed.fetch_add(1, Ordering::Relaxed);
                    *pending -= 1;
                }
                break;
            }
        }
    }
    read_any
}

/// Handles the complete lines in `chunk` (just read), the first one continuing what the
/// previous read left unfinished, and keeps the unfinished end for the next read. The bench
/// reads every line every server sends, so this path makes no copy of whole reads and no
/// byte-at-a-time search: it must not be what limits the throughput it measures.
fn take_lines(
    shared: &PoolShared,
    conn: &mut Conn,
    chunk: &[u8],
    tally: &mut Tally,
    pending: &mut usize,
) {
    let now = now_us();
    let mut rest = chunk;
    if !conn.unparsed.is_empty() {
        let Some(end) = find_newline(rest) else {
            conn.unparsed.extend_from_slice(rest);
            return;
        };
        let mut line = std::mem::take(&mut conn.unparsed);
        line.extend_from_slice(&rest[..end]);
        handle_line(shared, conn, &line, now, tally, pending);
        rest = &rest[end + 1..];
    }
    while let Some(end) = find_newline(rest) {
        handle_line(shared, conn, &rest[..end], now, tally, pending);
        rest = &rest[end + 1..];
    }
    conn.unparsed.extend_from_slice(rest);
}

/// One received line, without its `\n`, received at `now` (`now_us`).
fn handle_line(
    shared: &PoolShared,
    conn: &mut Conn,
    line: &[u8],
    now: u64,
    tally: &mut Tally,
    pending: &mut usize,
) {
    if !conn.signed_in {
        if line.starts_with(b"* Welcome, ") || line.starts_with(b"<announce> already") {
            conn.signed_in = true;
            *pending -= 1;
            shared.signed_in.fetch_add(1, Ordering::Relaxed);
        } else if line.starts_with(b"! ") {
            tally.error(String::from_utf8_lossy(line).into_owned());
        }
        return;
    }
    if let Some((sender, seq, scheduled)) = parse_message(line) {
        tally.delivered += 1;
        tally.latencies_us.push(now.saturating_sub(scheduled));
        tally.last_receipt_us = now;
        if conn.last_seq.is_empty() {
            conn.last_seq = vec![-1; shared.senders];
        }
        match conn.last_seq.get_mut(sender) {
            Some(last) if seq as i64 == *last + 1 => *last += 1,
            Some(last) => {
                tally.out_of_order += 1;
                *last = (*last).max(seq as i64);
            }
            None => tally.out_of_order += 1,
        }
    } else if line.starts_with(b"! ") {
        tally.error(String::from_utf8_lossy(line).into_owned());
    }
}

// ---------------------------------------------------------------------------------------
// Results

#[derive(Clone, PartialEq)]
enum Value {
    Num(f64),
    Text(String),
}

/// One scenario's figures against one server, in print order.
#[derive(Default)]
struct Figures(Vec<(&'static str, Value)>);

impl Figures {
    fn num(&mut self, key: &'static str, v: f64) {
        self.0.push((key, Value::Num(v)));
    }

    fn text(&mut self, key: &'static str, v: impl Into<String>) {
        self.0.push((key, Value::Text(v.into())));
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

/// Percentile of a sorted sample, in milliseconds.
fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn latency_figures(figures: &mut Figures, tally: &mut Tally) {
    tally.latencies_us.sort_unstable();
    let l = &tally.latencies_us;
    figures.num("p50_ms", percentile_ms(l, 50.0));
    figures.num("p99_ms", percentile_ms(l, 99.0));
    figures.num("max_ms", percentile_ms(l, 100.0));
}

/// Exact counts: what was expected, what arrived, what was lost or out of order.
fn delivery_figures(figures: &mut Figures, tally: &Tally, expected: u64, in_time: bool) {
    figures.num("expected", expected as f64);
    figures.num("delivered", tally.delivered as f64);
    figures.num("lost", expected.saturating_sub(tally.delivered) as f64);
    figures.num("out_of_order", tally.out_of_order as f64);
    figures.text(
        "in_time",
        if in_time {
            "yes"
        } else {
            "NO (time bound hit)"
        },
    );
    if let Some(e) = &tally.first_error {
        figures.text("first_error", e.clone());
    }
}

// ---------------------------------------------------------------------------------------
// Scenarios

/// Signs in `n` clients, or reports why not.
fn signed_in_pool(target: &Target, n: usize, senders: usize) -> Result<Pool, String> {
    let pool = Pool::start(target, n, senders);
    let done = pool.wait_signed_in(Duration::from_secs(60));
    if done < n {
        let tally = pool.finish();
        return Err(format!(
            "only {done} of {n} clients signed in ({})",
            tally.first_error.unwrap_or_default()
        ));
    }
    Ok(pool)
}

/// Scenario 1, throughput: senders write their messages as fast as the server takes them; every
/// other client must receive every message, in order.
fn throughput(target: &Target, sizes: &Sizes) -> Result<Figures, String> {
    let (n, senders, count) = (sizes.tp_clients, sizes.tp_senders, sizes.tp_messages);
    let pool = signed_in_pool(target, n, senders)?;
    let expected = (senders * count * (n - 1)) as u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    let cpu_before = target.cpu_s();
    let own_cpu_before = process_cpu_s("self");
    let start = now_us();
    let writers: Vec<_> = (0..senders)
        .filter_map(|s| pool.stream(s))
        .enumerate()
        .map(|(s, stream)| {
            thread::spawn(move || {
                for first in (0..count as u64).step_by(10) {
                    let mut batch = String::new();
                    for seq in first..(first + 10).min(count as u64) {
                        batch.push_str(&message(s, seq, now_us()));
                    }
                    send_all(&stream, batch.as_bytes(), deadline)?;
                }
                Ok::<(), io::Error>(())
            })
        })
        .collect();
    let mut send_error = None;
    for w in writers {
        if let Ok(Err(e)) = w.join() {
            send_error = Some(e.to_string());
        }
    }
    let (in_time, own_cpu) = pool.wait_delivered_own_cpu(expected, deadline);
    // A moment more, so duplicates beyond the expected count would be seen.
    thread::sleep(Duration::from_millis(100));
    let tally = pool.finish();
    let secs = tally.last_receipt_us.saturating_sub(start) as f64 / 1e6;
    let mut f = Figures::default();
    f.num("deliveries_per_s", tally.delivered as f64 / secs.max(1e-6));
    f.num("seconds", secs);
    f.num("server_cpu_s", target.cpu_s() - cpu_before);
    // As much as `seconds`: the load generator's core, not the server, set the pace.
    f.num("load_gen_cpu_s", own_cpu - own_cpu_before);
    delivery_figures(&mut f, &tally, expected, in_time);
    if let Some(e) = send_error {
        f.text("send_error", e);
    }
    Ok(f)
}

/// Open-loop sender: message `k` is due at `start + k / rate`, sent by client `k % senders`.
/// Returns how many were sent (all, unless a write failed).
fn send_on_schedule(pool: &Pool, senders: usize, rate: u64, secs: u64) -> (u64, Option<String>) {
    let streams: Vec<_> = (0..senders).filter_map(|s| pool.stream(s)).collect();
    let total = rate * secs;
    let interval_us = 1_000_000 / rate;
    let start = now_us() + 10_000;
    let deadline = Instant::now() + Duration::from_secs(secs + 30);
    for k in 0..total {
        let due = start + k * interval_us;
        let now = now_us();
        if due > now {
            thread::sleep(Duration::from_micros(due - now));
        }
        let sender = (k as usize) % streams.len();
        let seq = k / streams.len() as u64;
        let line = message(sender, seq, due);
        if let Err(e) = send_all(&streams[sender], line.as_bytes(), deadline) {
            return (k, Some(format!("sender {sender}: {e}")));
        }
    }
    (total, None)
}

/// Scenario 2, latency: `lat_rate` messages per second in total, spread over every client.
fn latency(target: &Target, sizes: &Sizes) -> Result<Figures, String> {
    let n = sizes.lat_clients;
    let pool = signed_in_pool(target, n, n)?;
    let cpu_before = target.cpu_s();
    let (sent, send_error) = send_on_schedule(&pool, n, sizes.lat_rate, sizes.lat_secs);
    let expected = sent * (n as u64 - 1);
    let in_time = pool.wait_delivered(expected, Instant::now() + Duration::from_secs(20));
    let cpu = target.cpu_s() - cpu_before;
    let mut tally = pool.finish();
    let mut f = Figures::default();
    latency_figures(&mut f, &mut tally);
    f.num("server_cpu_s", cpu);
    delivery_figures(&mut f, &tally, expected, in_time);
    if let Some(e) = send_error {
        f.text("send_error", e);
    }
    Ok(f)
}

/// Scenario 3, scale: as many clients as the machine allows, then one broadcast per second that must
/// reach all of them.
fn scale(target: &Target, wanted: usize, rounds: u64) -> Result<Figures, String> {
    let rss_base = target.rss_kib();
    let threads_base = target.threads();
    let started = Instant::now();
    let pool = Pool::start(target, wanted, 1);
    pool.wait_signed_in(SCALE_SIGN_IN_LIMIT);
    let held = pool.settle(Duration::from_secs(30));
    let sign_in_secs = started.elapsed().as_secs_f64();
    let mut f = Figures::default();
    f.num("attempted", wanted as f64);
    f.num("signed_in", held as f64);
    f.num("sign_in_s", sign_in_secs);
    if held < 2 {
        let tally = pool.finish();
        return Err(format!("{held} clients signed in: {:?}", tally.first_error));
    }
    // Let the join announcements drain before measuring: a server may hold notices back
    // for a while in a large room, and a broadcast that also carries them measures them too.
    if !pool.wait_quiet(Duration::from_secs(1), Duration::from_secs(30)) {
        f.text("drain", "still receiving 30 s after the sign-ins");
    }
    let rss = target.rss_kib();
    let threads = target.threads();
    f.num("rss_mib", rss as f64 / 1024.0);
    f.num(
        "rss_kib_per_client",
        rss.saturating_sub(rss_base) as f64 / held as f64,
    );
    f.num(
        "threads_per_client",
        threads.saturating_sub(threads_base) as f64 / held as f64,
    );
    let (sent, send_error) = match pool.stream(0) {
        Some(_) => send_on_schedule(&pool, 1, 1, rounds),
        None => (0, Some("client 0 did not connect".to_string())),
    };
    let expected = sent * (held as u64 - 1);
    let in_time = pool.wait_delivered(expected, Instant::now() + Duration::from_secs(30));
    let mut tally = pool.finish();
    latency_figures(&mut f, &mut tally);
    delivery_figures(&mut f, &tally, expected, in_time);
    if let Some(e) = send_error {
        f.text("send_error", e);
    }
    Ok(f)
}

/// Scenario 4, slow consumer: scenario 2 plus one client that signs in and never reads again.
fn slow_consumer(target: &Target, sizes: &Sizes) -> Result<Figures, String> {
    let n = sizes.lat_clients;
    let pool = signed_in_pool(target, n, n)?;
    let stalled = sign_in_and_stall(target, n).map_err(|e| format!("stalled client: {e}"))?;
    thread::sleep(Duration::from_millis(200));
    let rss_before = target.rss_kib();
    let fds_before = target.open_fds();
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = watch_for_drop(target, fds_before, Arc::clone(&watching));
    let started = now_us();
    let (sent, send_error) = send_on_schedule(&pool, n, sizes.lat_rate, sizes.slow_secs);
    let expected = sent * (n as u64 - 1);
    let in_time = pool.wait_delivered(expected, Instant::now() + Duration::from_secs(20));
    thread::sleep(Duration::from_millis(500));
    watching.store(false, Ordering::Relaxed);
    let (dropped_at, rss_peak) = watcher.join().unwrap_or((None, 0));
    let rss_after = target.rss_kib();
    let queues = stalled_queues(&stalled, target.addr);
    let mut tally = pool.finish();
    drop(stalled);
    let mut f = Figures::default();
    latency_figures(&mut f, &mut tally);
    match dropped_at {
        Some(t) => {
            f.text("stalled_dropped", "yes");
            f.num("dropped_after_s", t.saturating_sub(started) as f64 / 1e6);
        }
        None => f.text("stalled_dropped", "no"),
    }
    // Why a server could not have told: what the stalled client's kernel took and
    // acknowledged without its application reading, and what the server's kernel still holds.
    if let Some((unread, unacked)) = queues {
        f.num("stalled_unread_kib", unread as f64 / 1024.0);
        f.num("stalled_unacked_kib", unacked as f64 / 1024.0);
    }
    f.num("rss_before_mib", rss_before as f64 / 1024.0);
    f.num("rss_peak_mib", rss_peak as f64 / 1024.0);
    f.num("rss_after_mib", rss_after as f64 / 1024.0);
    delivery_figures(&mut f, &tally, expected, in_time);
    if let Some(e) = send_error {
        f.text("send_error", e);
    }
    Ok(f)
}

/// A client that signs in like the others and then never reads again.
fn sign_in_and_stall(target: &Target, id: usize) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(target.addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    if target.kind == Kind::Ptchat {
        (&stream).write_all(format!("b{id}\npw{id}\n").as_bytes())?;
    }
    let marker: &[u8] = match target.kind {
        Kind::Ptchat => b"* Welcome, ",
        Kind::Ncat => b"<announce> already",
    };
    // Byte by byte, so nothing after the welcome line is consumed.
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if (&stream).read(&mut byte)? == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        if byte[0] != b'\n' {
            line.push(byte[0]);
            continue;
        }
        if line.starts_with(marker) {
            return Ok(stream);
        }
        line.clear();
    }
}

/// For the stalled connection to `server`: the bytes its client's kernel received and
/// acknowledged but nobody read, and the bytes the server's kernel sent and still holds
/// (unacknowledged or unsent). Both ends are on this machine, so both are in
/// /proc/net/tcp. None once the connection is gone, or off Linux.
fn stalled_queues(stalled: &TcpStream, server: SocketAddr) -> Option<(u64, u64)> {
    let client = stalled.local_addr().ok()?;
    let table = fs::read_to_string("/proc/net/tcp").ok()?;
    let (_, unread) = tcp_queues(&table, client, server)?;
    let (unacked, _) = tcp_queues(&table, server, client)?;
    Some((unread, unacked))
}

/// The (tx_queue, rx_queue) of the IPv4 socket from `local` to `remote` in a
/// /proc/net/tcp table, whose rows read `sl: local remote state tx:rx ...`, addresses
/// as hex `ADDR:PORT`: the address is the network-order word printed as a native integer.
fn tcp_queues(table: &str, local: SocketAddr, remote: SocketAddr) -> Option<(u64, u64)> {
    let (local, remote) = (proc_net_addr(local)?, proc_net_addr(remote)?);
    table.lines().find_map(|row| {
        let mut fields = row.split_whitespace().skip(1);
        if fields.next()? != local || fields.next()? != remote {
            return None;
        }
        let (tx, rx) = fields.nth(1)?.split_once(':')?;
        let hex = |q| u64::from_str_radix(q, 16).ok();
        Some((hex(tx)?, hex(rx)?))
    })
}

fn proc_net_addr(addr: SocketAddr) -> Option<String> {
    match addr {
        SocketAddr::V4(v4) => {
            let ip = u32::from_ne_bytes(v4.ip().octets());
            Some(format!("{ip:08X}:{:04X}", v4.port()))
        }
        SocketAddr::V6(_) => None,
    }
}

/// Polls the server every 50 ms: when its open descriptors fall below `fds_before`, the
/// stalled client was dropped (nobody else leaves). Returns that time and the peak RSS.
fn watch_for_drop(
    target: &Target,
    fds_before: usize,
    watching: Arc<AtomicBool>,
) -> JoinHandle<(Option<u64>, u64)> {
    let pid = target.pid();
    thread::spawn(move || {
        let fd_dir = format!("/proc/{pid}/fd");
        let status = format!("/proc/{pid}/status");
        let (mut dropped_at, mut peak) = (None, 0);
        while watching.load(Ordering::Relaxed) {
            let fds = fs::read_dir(&fd_dir).map_or(usize::MAX, |d| d.count());
            if dropped_at.is_none() && fds < fds_before {
                dropped_at = Some(now_us());
            }
            let rss = fs::read_to_string(&status).ok().and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
                line.split_whitespace().nth(1)?.parse::<u64>().ok()
            });
            peak = peak.max(rss.unwrap_or(0));
            thread::sleep(Duration::from_millis(50));
        }
        (dropped_at, peak)
    })
}

// ---------------------------------------------------------------------------------------
// Report

/// Metrics compared between the servers, and whether the comparison needs both to have
/// carried the same load (the same `expected` deliveries): a p99 over 10,000 clients is no
/// comparison with one over the 778 that ncat took.
const RATIOS: &[(&str, &str, bool)] = &[
    ("throughput", "deliveries_per_s", true),
    // The servers' own cost, which the deliveries per second hide once the load
    // generator's core is what sets the pace (`load_gen_cpu_s`).
    ("throughput", "server_cpu_s", true),
    ("latency", "p50_ms", true),
    ("latency", "p99_ms", true),
    ("scale", "signed_in", false),
    ("scale", "p99_ms", true),
    ("slow_consumer", "p99_ms", true),
];

/// Whether every run of a scenario produced figures with the same `expected` count.
fn same_load(runs: &[(Kind, Result<Figures, String>)]) -> bool {
    let expected: Vec<Option<Value>> = runs
        .iter()
        .map(|(_, run)| run.as_ref().ok().and_then(|f| f.get("expected").cloned()))
        .collect();
    expected.windows(2).all(|pair| pair[0] == pair[1]) && expected.iter().all(Option::is_some)
}

fn show(v: Option<&Value>) -> String {
    match v {
        None => "-".into(),
        Some(Value::Text(t)) => t.clone(),
        Some(Value::Num(x)) if x.is_nan() => "n/a".into(),
        Some(Value::Num(x)) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{x:.0}"),
        Some(Value::Num(x)) if x.abs() >= 100.0 => format!("{x:.0}"),
        Some(Value::Num(x)) => format!("{x:.2}"),
    }
}

type Results = Vec<(&'static str, Vec<(Kind, Result<Figures, String>)>)>;

fn table(results: &Results, kinds: &[Kind]) -> String {
    let mut out = String::new();
    let _ = write!(out, "{:<14} {:<20}", "scenario", "figure");
    for k in kinds {
        let _ = write!(out, " {:>20}", k.label());
    }
    if kinds.len() == 2 {
        let _ = write!(out, " {:>14}", "ptchat/ncat");
    }
    out.push('\n');
    for (scenario, runs) in results {
        let mut keys: Vec<&'static str> = Vec::new();
        for (_, run) in runs {
            match run {
                Ok(f) => {
                    for (k, _) in &f.0 {
                        if !keys.contains(k) {
                            keys.push(k);
                        }
                    }
                }
                Err(_) if !keys.contains(&"error") => keys.push("error"),
                Err(_) => {}
            }
        }
        for key in keys {
            let _ = write!(out, "{scenario:<14} {key:<20}");
            let mut nums = Vec::new();
            for kind in kinds {
                let run = runs.iter().find(|(k, _)| k == kind).map(|(_, r)| r);
                let cell = match run {
                    Some(Ok(f)) => f.get(key).cloned(),
                    Some(Err(e)) if key == "error" => Some(Value::Text(e.clone())),
                    _ => None,
                };
                if let Some(Value::Num(x)) = cell {
                    nums.push(x);
                }
                let _ = write!(out, " {:>20}", show(cell.as_ref()));
            }
            let ratio = RATIOS.iter().find(|(s, k, _)| s == scenario && *k == key);
            let comparable =
                ratio.is_some_and(|(_, _, needs_same_load)| !needs_same_load || same_load(runs));
            if let (true, [a, b]) = (comparable, nums.as_slice()) {
                let _ = write!(out, " {:>14.2}", a / b);
            }
            out.push('\n');
        }
    }
    out
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json(results: &Results, machine: &Machine, date: &str, pinned: &str) -> String {
    let mut out = String::from("{\n");
    let _ = writeln!(out, "  \"date\": {},", json_string(date));
    let _ = writeln!(
        out,
        "  \"machine\": {{\"cores\": {}, \"kernel\": {}, \"ulimit_n\": {}, \"pid_max\": {}, \"pinning\": {}}},",
        machine.cores,
        json_string(&machine.kernel),
        machine.fd_limit,
        machine.pid_max,
        json_string(pinned)
    );
    out.push_str("  \"scenarios\": {\n");
    for (i, (scenario, runs)) in results.iter().enumerate() {
        let _ = writeln!(out, "    {}: {{", json_string(scenario));
        for (j, (kind, run)) in runs.iter().enumerate() {
            let _ = write!(out, "      {}: {{", json_string(kind.label()));
            let fields: Vec<String> = match run {
                Ok(f) => {
                    f.0.iter()
                        .map(|(k, v)| {
                            let v = match v {
                                Value::Num(x) if x.is_finite() => format!("{x}"),
                                Value::Num(_) => "null".into(),
                                Value::Text(t) => json_string(t),
                            };
                            format!("{}: {v}", json_string(k))
                        })
                        .collect()
                }
                Err(e) => vec![format!("\"error\": {}", json_string(e))],
            };
            out.push_str(&fields.join(", "));
            out.push('}');
            out.push_str(if j + 1 < runs.len() { ",\n" } else { "\n" });
        }
        out.push_str(if i + 1 < results.len() {
            "    },\n"
        } else {
            "    }\n"
        });
    }
    out.push_str("  }\n}\n");
    out
}

/// True when a ptchat run broke an exact count (loss, disorder, time bound) or failed.
fn ptchat_failed(results: &Results) -> Vec<String> {
    let mut failures = Vec::new();
    for (scenario, runs) in results {
        for (kind, run) in runs {
            if *kind != Kind::Ptchat {
                continue;
            }
            match run {
                Err(e) => failures.push(format!("{scenario}: {e}")),
                Ok(f) => {
                    for key in ["lost", "out_of_order"] {
                        if let Some(Value::Num(x)) = f.get(key)
                            && *x != 0.0
                        {
                            failures.push(format!("{scenario}: {key} = {x}"));
                        }
                    }
                }
            }
        }
    }
    failures
}

// ---------------------------------------------------------------------------------------

/// Where servers keep their data: tmpfs when there is one, because every sign-up appends
/// to the store with an fsync, and 10,000 fsyncs on a disk would measure the disk (minutes
/// of the scale scenario) instead of the chat server.
fn bench_dir() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    let base = if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    };
    base.join(format!("chat_bench-{}", std::process::id()))
}

/// Pins this process to CPU 0 and returns the CPU for servers, when there are two or more
/// cores and `taskset` exists, so server and load generator do not compete for one core.
fn pin(machine: &Machine) -> Option<usize> {
    if machine.cores < 2 {
        return None;
    }
    let own = std::process::id().to_string();
    let pinned = Command::new("taskset")
        .args(["-a", "-p", "-c", "0", &own])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    matches!(pinned, Ok(s) if s.success()).then_some(1)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprint!(
                "{}{USAGE}",
                if e.is_empty() {
                    e
                } else {
                    format!("chat_bench: {e}\n")
                }
            );
            return ExitCode::from(2);
        }
    };
    now_us();
    let machine = Machine::read();
    let server_cpu = pin(&machine);
    let pinned = match server_cpu {
        Some(cpu) => format!("servers on CPU {cpu}, load generator on CPU 0 (taskset)"),
        None => "not pinned (one core or no taskset)".to_string(),
    };
    let date = ptchat::clock::rfc3339(SystemTime::now());
    println!("chat_bench {date}");
    println!("{}", machine.line());
    println!("pinning: {pinned}");
    let sizes = if args.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    let scale_wanted = if args.quick { 50 } else { args.scale_max };
    let (scale_n, bound) = machine.scale_limit(scale_wanted);
    println!("scale scenario: up to {scale_n} clients (bounded by {bound})");
    let lab = Lab {
        server: args.server.clone(),
        server_cpu,
        tmp: bench_dir(),
        runs: AtomicUsize::new(0),
    };
    let kinds: &[Kind] = if args.compare {
        &[Kind::Ptchat, Kind::Ncat]
    } else {
        &[Kind::Ptchat]
    };
    type Scenario<'a> = Box<dyn Fn(&Target) -> Result<Figures, String> + 'a>;
    let scenarios: Vec<(&'static str, Scenario)> = vec![
        ("throughput", Box::new(|t| throughput(t, &sizes))),
        ("latency", Box::new(|t| latency(t, &sizes))),
        (
            "scale",
            Box::new(|t| {
                let n = if t.kind == Kind::Ncat {
                    scale_n.min(NCAT_MAX_CLIENTS)
                } else {
                    scale_n
                };
                scale(t, n, sizes.scale_rounds)
            }),
        ),
        ("slow_consumer", Box::new(|t| slow_consumer(t, &sizes))),
    ];
    let mut results: Results = Vec::new();
    for (name, run) in &scenarios {
        if args.only.as_deref().is_some_and(|only| only != *name) {
            continue;
        }
        let mut runs = Vec::new();
        for &kind in kinds {
            if !wait_for_quiet(Duration::from_secs(30)) {
                eprintln!("note: the machine was still busy after 30 s; measuring anyway");
            }
            eprintln!("running {name} against {}...", kind.label());
            let figures = lab
                .start(kind, scale_n.max(sizes.lat_clients + 1))
                .map_err(|e| format!("cannot start {}: {e}", kind.label()))
                .and_then(|target| run(&target));
            runs.push((kind, figures));
        }
        results.push((name, runs));
    }
    let _ = fs::remove_dir_all(&lab.tmp);
    println!();
    print!("{}", table(&results, kinds));
    let text = json(&results, &machine, &date, &pinned);
    if let Some(dir) = args.json.parent() {
        let _ = fs::create_dir_all(dir);
    }
    match fs::write(&args.json, text) {
        Ok(()) => println!("\nfigures written to {}", args.json.display()),
        Err(e) => eprintln!("chat_bench: cannot write {}: {e}", args.json.display()),
    }
    let failures = ptchat_failed(&results);
    for f in &failures {
        eprintln!("chat_bench: ptchat {f}");
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_compare_only_runs_that_carried_the_same_load() {
        let figures = |expected: f64, signed_in: f64, p99: f64| {
            let mut f = Figures::default();
            f.num("expected", expected);
            f.num("signed_in", signed_in);
            f.num("p99_ms", p99);
            Ok(f)
        };
        let results: Results = vec![
            (
                "scale",
                vec![
                    (Kind::Ptchat, figures(49995.0, 10000.0, 212.0)),
                    (Kind::Ncat, figures(3885.0, 778.0, 15.0)),
                ],
            ),
            (
                "slow_consumer",
                vec![
                    (Kind::Ptchat, figures(100.0, 10.0, 30.0)),
                    (Kind::Ncat, figures(100.0, 10.0, 60.0)),
                ],
            ),
        ];
        let printed = table(&results, &[Kind::Ptchat, Kind::Ncat]);
        let row = |scenario: &str, key: &str| {
            let prefix = format!("{scenario:<14} {key:<20}");
            let line = printed.lines().find(|l| l.starts_with(&prefix));
            line.map(|l| l.split_whitespace().skip(2).collect::<Vec<_>>())
        };
        // (scenario, figure) -> the cells after the two names: ptchat, ncat, ratio if any
        let expected_rows = [
            ("scale", "signed_in", vec!["10000", "778", "12.85"]),
            ("scale", "p99_ms", vec!["212", "15"]),
            ("slow_consumer", "p99_ms", vec!["30", "60", "0.50"]),
        ];
        for (scenario, key, cells) in expected_rows {
            assert_eq!(
                row(scenario, key),
                Some(cells),
                "{scenario} {key}\n{printed}"
            );
        }
    }

    #[test]
    fn tcp_queues_are_read_from_the_row_of_the_right_connection() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt
   0: 0100007F:9E61 00000000:0000 0A 00000000:00000000 00:00000000 00000000
   1: 0100007F:9E61 0100007F:EBA0 01 0000FF00:00000000 00:00000000 00000000
   2: 0100007F:EBA0 0100007F:9E61 01 00000000:0002298D 00:00000000 00000000
   3: 0200007F:EBA0 0100007F:9E61 01 00000007:00000009 00:00000000 00000000";
        let server: SocketAddr = "127.0.0.1:40545".parse().expect("addr");
        let client: SocketAddr = "127.0.0.1:60320".parse().expect("addr");
        let other: SocketAddr = "127.0.0.2:60320".parse().expect("addr");
        let v6: SocketAddr = "[::1]:60320".parse().expect("addr");
        // (local, remote) -> (tx_queue, rx_queue)
        let rows = [
            (server, client, Some((0xFF00, 0))),
            (client, server, Some((0, 0x2298D))),
            (other, server, Some((7, 9))),
            (server, other, None),
            (v6, server, None),
        ];
        for (local, remote, expected) in rows {
            assert_eq!(
                tcp_queues(table, local, remote),
                expected,
                "{local} -> {remote}"
            );
        }
    }

    #[test]
    fn messages_are_64_bytes_and_parse_back() {
        let line = message(7, 42, 123_456);
        assert_eq!(line.len(), MESSAGE_BYTES + 1);
        let received = format!("b7: {}", line.trim_end());
        assert_eq!(parse_message(received.as_bytes()), Some((7, 42, 123_456)));
        let ncat = format!("<user5> {}", line.trim_end());
        assert_eq!(parse_message(ncat.as_bytes()), Some((7, 42, 123_456)));
        assert_eq!(parse_message(b"* b1 joined."), None);
        assert_eq!(parse_message(b"b1: #m 1 2x 3 xx"), None);
        assert_eq!(parse_message(b"b1: #m 1  3 xx"), None, "an empty field");
        assert_eq!(parse_message(b"b1: #m 1 2"), None, "a field missing");
        assert_eq!(
            parse_message(b"b1: #m 1 2 3"),
            Some((1, 2, 3)),
            "no padding"
        );
        assert_eq!(parse_message(b"b1: #m 1 99999999999999999999 3 x"), None);
    }

    #[test]
    fn newlines_are_found_wherever_they_are() {
        for len in 0..40 {
            for at in 0..len {
                let mut bytes = vec![b'x'; len];
                bytes[at] = b'\n';
                if at + 3 < len {
                    bytes[at + 3] = b'\n';
                }
                assert_eq!(find_newline(&bytes), Some(at), "len {len}, newline at {at}");
            }
            assert_eq!(
                find_newline(&vec![0x8a; len]),
                None,
                "len {len}: no newline"
            );
        }
    }

    #[test]
    fn cpu_lists() {
        for (list, n) in [("0", 1), ("0-1", 2), ("0-3,6", 5), ("0,2,4-5", 4)] {
            assert_eq!(count_cpus(list), n, "{list}");
        }
    }

    #[test]
    fn percentiles() {
        let sample: Vec<u64> = (1..=100).map(|x| x * 1000).collect();
        assert_eq!(percentile_ms(&sample, 50.0), 50.0);
        assert_eq!(percentile_ms(&sample, 99.0), 99.0);
        assert_eq!(percentile_ms(&sample, 100.0), 100.0);
        assert!(percentile_ms(&[], 50.0).is_nan());
    }
}
