//! The scenarios that carry a load through a server, and their sizes: throughput (as fast
//! as the server takes it) and latency (an open-loop schedule). The scale and
//! slow-consumer scenarios build on these and live in `scale.rs` and `slow_consumer.rs`.
//!
//! A scenario gets a fresh server and returns its figures, or an error when it could not
//! carry the load at all (too few clients signed in). It must not judge the figures:
//! `report.rs` compares them.

use std::io;
use std::thread;
use std::time::{Duration, Instant};

use crate::figures::{Figures, delivery_figures, latency_figures};
use crate::machine::process_cpu_s;
use crate::now_us;
use crate::pool::{Pool, send_all};
use crate::servers::Target;
use crate::wire::message;

/// The size of each scenario. `full` is what the issue asks for; `quick` keeps the bench
/// binary from rotting without costing the test suite time.
pub struct Sizes {
    pub tp_clients: usize,
    pub tp_senders: usize,
    pub tp_messages: usize,
    /// Users online in the two runs of the latency scenario.
    pub lat_small_clients: usize,
    pub lat_clients: usize,
    pub lat_rate: u64,
    pub lat_secs: u64,
    pub scale_clients: usize,
    /// How long the scale scenario's clients may take to sign in.
    pub scale_sign_in: Duration,
    pub scale_rounds: u64,
    pub slow_secs: u64,
}

impl Sizes {
    pub fn full() -> Sizes {
        Sizes {
            tp_clients: 100,
            tp_senders: 10,
            tp_messages: 2_000,
            lat_small_clients: 100,
            lat_clients: 1_000,
            lat_rate: 200,
            lat_secs: 10,
            scale_clients: 10_000,
            scale_sign_in: Duration::from_secs(120),
            scale_rounds: 5,
            slow_secs: 10,
        }
    }

    pub fn quick() -> Sizes {
        Sizes {
            tp_clients: 10,
            tp_senders: 2,
            tp_messages: 100,
            lat_small_clients: 10,
            lat_clients: 20,
            lat_rate: 50,
            lat_secs: 1,
            scale_clients: 50,
            scale_sign_in: Duration::from_secs(30),
            scale_rounds: 2,
            slow_secs: 1,
        }
    }
}

/// Signs in `n` clients, or reports why not.
pub fn signed_in_pool(target: &Target, n: usize, senders: usize) -> Result<Pool, String> {
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

/// Throughput: senders write their messages as fast as the server takes them, 10 lines
/// per write; every other client must receive every message, in order.
pub fn throughput(target: &Target, sizes: &Sizes) -> Result<Figures, String> {
    let (n, senders, count) = (sizes.tp_clients, sizes.tp_senders, sizes.tp_messages);
    let pool = signed_in_pool(target, n, senders)?;
    let expected = (senders * count * (n - 1)) as u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    let cpu_before = target.cpu_s();
    let own_cpu_before = process_cpu_s("self");
    let start = now_us();
    let kind = target.kind;
    let writers: Vec<_> = (0..senders)
        .filter_map(|s| pool.stream(s))
        .enumerate()
        .map(|(s, stream)| {
            thread::spawn(move || {
                for first in (0..count as u64).step_by(10) {
                    let mut batch = String::new();
                    for seq in first..(first + 10).min(count as u64) {
                        batch.push_str(&kind.chat_line(&message(s, seq, now_us())));
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
pub fn send_on_schedule(
    pool: &Pool,
    senders: usize,
    rate: u64,
    secs: u64,
) -> (u64, Option<String>) {
    let streams: Vec<_> = (0..senders).filter_map(|s| pool.stream(s)).collect();
    if streams.is_empty() {
        return (0, Some("no sender is connected".into()));
    }
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
        let line = pool.kind().chat_line(&message(sender, seq, due));
        if let Err(e) = send_all(&streams[sender], line.as_bytes(), deadline) {
            return (k, Some(format!("sender {sender}: {e}")));
        }
    }
    (total, None)
}

/// Latency: `n` users online; `lat_rate` messages per second in total, spread over every
/// one of them, for `lat_secs`.
pub fn latency(target: &Target, n: usize, sizes: &Sizes) -> Result<Figures, String> {
    let pool = signed_in_pool(target, n, n)?;
    let cpu_before = target.cpu_s();
    let (sent, send_error) = send_on_schedule(&pool, n, sizes.lat_rate, sizes.lat_secs);
    let expected = sent * (n as u64 - 1);
    let in_time = pool.wait_delivered(expected, Instant::now() + Duration::from_secs(20));
    let cpu = target.cpu_s() - cpu_before;
    let mut tally = pool.finish();
    let mut f = Figures::default();
    f.num("users", n as f64);
    latency_figures(&mut f, &mut tally);
    f.num("server_cpu_s", cpu);
    delivery_figures(&mut f, &tally, expected, in_time);
    if let Some(e) = send_error {
        f.text("send_error", e);
    }
    Ok(f)
}
