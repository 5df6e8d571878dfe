//! The slow-consumer scenario: the latency scenario at 1,000 users plus one client that
//! signs in and never reads again. The figures are the healthy clients' latency, whether
//! and when the server dropped the stalled client, and what the kernels on both ends held
//! for it.

use std::fs;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::figures::{Figures, delivery_figures, latency_figures};
use crate::now_us;
use crate::scenarios::{Sizes, send_on_schedule, signed_in_pool};
use crate::servers::{Target, proc_status};

/// Slow consumer: the latency scenario plus one client that signs in and never reads again.
pub fn slow_consumer(target: &Target, sizes: &Sizes) -> Result<Figures, String> {
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
    (&stream).write_all(target.kind.sign_in(id).as_bytes())?;
    // Byte by byte, so nothing after the line that completes the sign-in is consumed.
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
        if target
            .kind
            .signed_in_by(line.strip_suffix(b"\r").unwrap_or(&line))
        {
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
        let (mut dropped_at, mut peak) = (None, 0);
        while watching.load(Ordering::Relaxed) {
            let fds = fs::read_dir(&fd_dir).map_or(usize::MAX, |d| d.count());
            if dropped_at.is_none() && fds < fds_before {
                dropped_at = Some(now_us());
            }
            peak = peak.max(proc_status(pid, "VmRSS:").unwrap_or(0));
            thread::sleep(Duration::from_millis(50));
        }
        (dropped_at, peak)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
