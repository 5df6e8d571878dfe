//! The client pool: many clients of one server, signed in and read continuously by a few
//! *shard* threads, each owning many non-blocking sockets and reading them in a loop,
//! sleeping briefly only after a pass that found nothing.
//!
//! The load generator has to fit the same machine as the server: a thread-per-client
//! server spends threads per client, and `pid_max` bounds all threads together, so the
//! bench cannot spend one thread per socket too. This module owns the sockets and what the
//! receivers observed ([`Tally`]); what the scenarios do with them is in `scenarios.rs`,
//! and what each server kind says on the wire is in `wire.rs`.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::machine::process_cpu_s;
use crate::now_us;
use crate::servers::{Kind, Target};
use crate::wire::{find_newline, parse_message};

/// Pause after a pass over all sockets that read nothing, so idle shards do not spin.
const IDLE_PAUSE: Duration = Duration::from_micros(200);
/// While clients sign in, a signed-in socket receives only join notices; it is read at most
/// this often then, so a shard's passes go to the sign-ins in flight. Reading all of them
/// every pass (a syscall each, mostly finding nothing) took the bench's whole core with
/// 4,000 clients, and the bench, not the server, set the pace of the sign-ins.
const DRAIN_INTERVAL: Duration = Duration::from_millis(50);
/// Sockets owned by one shard thread (more clients means more shards).
const SOCKETS_PER_SHARD: usize = 2_500;

/// Writes all of `bytes` to a non-blocking socket, waiting for room until `deadline`.
pub fn send_all(stream: &TcpStream, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
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

/// What receivers observed. Shards fill one each; they are merged at the end.
#[derive(Default)]
pub struct Tally {
    /// Benchmark messages received (every copy, duplicates included).
    pub delivered: u64,
    /// Messages whose sequence number was not the sender's previous one plus one.
    pub out_of_order: u64,
    pub latencies_us: Vec<u64>,
    pub last_receipt_us: u64,
    /// Error lines from the server, and connections that failed or closed.
    pub errors: u64,
    pub first_error: Option<String>,
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
    /// Sign-ins each shard keeps in flight ([`Kind::sign_in_window`]).
    window: usize,
    signed_in: AtomicUsize,
    /// Clients that signed in and were disconnected later (a server that dies drops all).
    dropped: AtomicUsize,
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

/// Clients `0..n`, each signed in as `b<id>` ([`Kind::sign_in`]) and read continuously by
/// shard threads.
pub struct Pool {
    shared: Arc<PoolShared>,
    shards: Vec<JoinHandle<Tally>>,
    n: usize,
}

impl Pool {
    pub fn start(target: &Target, n: usize, senders: usize) -> Pool {
        let shard_count = n.div_ceil(SOCKETS_PER_SHARD).max(1);
        let shared = Arc::new(PoolShared {
            kind: target.kind,
            addr: target.addr,
            senders,
            streams: Mutex::new(vec![None; n]),
            window: target.kind.sign_in_window(shard_count),
            signed_in: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
            connected: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            delivered: AtomicU64::new(0),
            last_read_us: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            stop_connecting: AtomicBool::new(false),
            measuring: AtomicBool::new(false),
        });
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
    pub fn wait_signed_in(&self, limit: Duration) -> usize {
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
    pub fn settle(&self, limit: Duration) -> usize {
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

    pub fn kind(&self) -> Kind {
        self.shared.kind
    }

    /// A handle on [`Pool::held`] for another thread.
    pub fn gauge(&self) -> Gauge {
        Gauge(Arc::clone(&self.shared))
    }

    /// Connections that failed before their client signed in.
    pub fn failed(&self) -> usize {
        self.shared.failed.load(Ordering::Relaxed)
    }

    /// Clients signed in and still connected.
    pub fn held(&self) -> usize {
        self.gauge().held()
    }

    pub fn stream(&self, id: usize) -> Option<Arc<TcpStream>> {
        let streams = self
            .shared
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        streams.get(id).cloned().flatten()
    }

    /// Waits until no client has received anything for `quiet`, or `limit` passes. Returns
    /// whether it went quiet.
    pub fn wait_quiet(&self, quiet: Duration, limit: Duration) -> bool {
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
    pub fn wait_delivered(&self, expected: u64, deadline: Instant) -> bool {
        self.wait_delivered_own_cpu(expected, deadline).0
    }

    /// Like [`Pool::wait_delivered`], and also returns this process's CPU time (seconds)
    /// when the last message came, to the nearest wait: a server that loses messages
    /// keeps the bench waiting until `deadline`, and the waiting is not load.
    pub fn wait_delivered_own_cpu(&self, expected: u64, deadline: Instant) -> (bool, f64) {
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

    pub fn finish(self) -> Tally {
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

/// Reads how many clients a pool holds, from any thread.
pub struct Gauge(Arc<PoolShared>);

impl Gauge {
    pub fn held(&self) -> usize {
        let signed_in = self.0.signed_in.load(Ordering::Relaxed);
        signed_in.saturating_sub(self.0.dropped.load(Ordering::Relaxed))
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
            && pending < shared.window
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
    (&stream).write_all(shared.kind.sign_in(id).as_bytes())?;
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
                close(shared, conn, tally, pending, "was disconnected".into());
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
                close(shared, conn, tally, pending, e.to_string());
                break;
            }
        }
    }
    read_any
}

/// Records that the server closed `conn` (or it failed): a sign-in that failed, or a
/// client the server held and let go.
fn close(
    shared: &PoolShared,
    conn: &mut Conn,
    tally: &mut Tally,
    pending: &mut usize,
    why: String,
) {
    conn.open = false;
    tally.error(format!("client #{} {why}", conn.id));
    if conn.signed_in {
        shared.dropped.fetch_add(1, Ordering::Relaxed);
    } else {
        shared.failed.fetch_add(1, Ordering::Relaxed);
        *pending -= 1;
    }
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
    let kind = shared.kind;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if let Some(answer) = kind.answer_to(line) {
        let deadline = Instant::now() + Duration::from_secs(1);
        if let Err(e) = send_all(&conn.stream, answer.as_bytes(), deadline) {
            tally.error(format!(
                "client #{} could not answer the server: {e}",
                conn.id
            ));
        }
        return;
    }
    if !conn.signed_in {
        if kind.signed_in_by(line) {
            conn.signed_in = true;
            *pending -= 1;
            shared.signed_in.fetch_add(1, Ordering::Relaxed);
        } else if kind.is_error(line) {
            tally.error(String::from_utf8_lossy(line).into_owned());
        }
        return;
    }
    match kind.message_in(line).and_then(parse_message) {
        Some((sender, seq, scheduled)) => {
            tally.delivered += 1;
            tally.latencies_us.push(now.saturating_sub(scheduled));
            tally.last_receipt_us = now;
            check_order(shared, conn, tally, sender, seq);
        }
        None if kind.is_error(line) => tally.error(String::from_utf8_lossy(line).into_owned()),
        None => {}
    }
}

/// Counts a message out of order unless it is its sender's next sequence number.
fn check_order(shared: &PoolShared, conn: &mut Conn, tally: &mut Tally, sender: usize, seq: u64) {
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
}
