//! The scale scenario: sign in as many clients as asked, see how many the server holds and
//! what each costs it, then broadcast once a second to all of them.
//!
//! It asks for what it was told to (bounded only by the bench's own descriptors) and never
//! assumes how a server spends threads or memory per client: what the server held, and
//! whether it survived, are the figures. A server that dies here is reported with the
//! cost it had reached, read every 100 ms while the clients signed in.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::figures::{Figures, delivery_figures, latency_figures};
use crate::pool::{Gauge, Pool};
use crate::scenarios::send_on_schedule;
use crate::servers::{Target, proc_status};

/// How long the join notices of the sign-in storm may take to drain before the broadcast.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// What the server cost while it held `held` clients.
#[derive(Clone, Copy, Default)]
struct Cost {
    held: usize,
    rss_kib: u64,
    threads: u64,
}

impl Cost {
    /// None once the process has ended.
    fn of(pid: u32, held: usize) -> Option<Cost> {
        Some(Cost {
            held,
            rss_kib: proc_status(pid, "VmRSS:")?,
            threads: proc_status(pid, "Threads:")?,
        })
    }
}

/// Signs in `wanted` clients, within `sign_in_limit` (the clients signed in by then are
/// the figure), then broadcasts for `rounds` seconds.
pub fn scale(
    target: &Target,
    wanted: usize,
    rounds: u64,
    sign_in_limit: Duration,
) -> Result<Figures, String> {
    let base = Cost::of(target.pid(), 0).unwrap_or_default();
    let started = Instant::now();
    let pool = Pool::start(target, wanted, 1);
    let sampler = Sampler::start(target.pid(), pool.gauge());
    pool.wait_signed_in(sign_in_limit);
    let signed_in = pool.settle(Duration::from_secs(30));
    let mut f = Figures::default();
    f.num("attempted", wanted as f64);
    f.num("signed_in", signed_in as f64);
    f.num("sign_in_s", started.elapsed().as_secs_f64());
    f.text("stopped_by", stopped_by(target, &pool, wanted, signed_in));
    if target.exit().is_some() {
        return Ok(after_death(f, pool, base, sampler.fullest()));
    }
    // Let the join notices drain before measuring: a server may hold notices back for a
    // while in a large room, and a broadcast that also carries them measures them too.
    if !pool.wait_quiet(Duration::from_secs(1), DRAIN_LIMIT) {
        f.text("drain", "still receiving 60 s after the sign-ins");
    }
    let sampled = sampler.fullest();
    let held = pool.held();
    let Some(cost) = Cost::of(target.pid(), held) else {
        return Ok(after_death(f, pool, base, sampled));
    };
    f.num("held", held as f64);
    cost_figures(&mut f, base, cost);
    if held < 2 {
        let tally = pool.finish();
        return Err(format!("{held} clients held: {:?}", tally.first_error));
    }
    broadcast(&mut f, pool, held, rounds);
    Ok(f)
}

/// Why the sign-ins ended where they did (the first error says more).
fn stopped_by(target: &Target, pool: &Pool, wanted: usize, signed_in: usize) -> &'static str {
    if target.exit().is_some() {
        "server died"
    } else if signed_in >= wanted {
        "all signed in"
    } else if pool.failed() > 0 {
        "sign-in failed"
    } else {
        "time bound"
    }
}

/// One message a second from client 0, for `rounds` seconds, to every other client held.
fn broadcast(f: &mut Figures, pool: Pool, held: usize, rounds: u64) {
    let (sent, send_error) = send_on_schedule(&pool, 1, 1, rounds);
    let expected = sent * (held as u64 - 1);
    let in_time = pool.wait_delivered(expected, Instant::now() + Duration::from_secs(30));
    let mut tally = pool.finish();
    latency_figures(f, &mut tally);
    delivery_figures(f, &tally, expected, in_time);
    if let Some(e) = send_error {
        f.text("send_error", e);
    }
}

/// The figures of a server that died during the sign-ins: it holds nobody, and what it
/// cost is the last reading taken while it lived.
fn after_death(mut f: Figures, pool: Pool, base: Cost, last: Option<Cost>) -> Figures {
    f.num("held", 0.0);
    if let Some(last) = last {
        cost_figures(&mut f, base, last);
        f.num("cost_at_clients", last.held as f64);
    }
    if let Some(e) = pool.finish().first_error {
        f.text("first_error", e);
    }
    f
}

/// Resident memory and threads per client: the growth over the empty server, divided by
/// the clients held.
fn cost_figures(f: &mut Figures, base: Cost, cost: Cost) {
    let per_client = |grown: u64| grown as f64 / cost.held as f64;
    f.num("rss_mib", cost.rss_kib as f64 / 1024.0);
    f.num(
        "rss_kib_per_client",
        per_client(cost.rss_kib.saturating_sub(base.rss_kib)),
    );
    f.num(
        "threads_per_client",
        per_client(cost.threads.saturating_sub(base.threads)),
    );
}

/// Reads the server's cost every 100 ms while clients sign in.
///
/// It keeps the reading with the most threads, and of those the most clients: a server
/// that is being torn down (killed by a signal) may still show its memory while its
/// threads go, and its last reading would undercount them.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Option<Cost>>,
}

impl Sampler {
    fn start(pid: u32, gauge: Gauge) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let mut best: Option<Cost> = None;
            while !stopped.load(Ordering::Relaxed) {
                let Some(cost) = Cost::of(pid, gauge.held()) else {
                    break;
                };
                if best.is_none_or(|b| (cost.threads, cost.held) >= (b.threads, b.held)) {
                    best = Some(cost);
                }
                thread::sleep(Duration::from_millis(100));
            }
            best
        });
        Sampler { stop, handle }
    }

    /// The fullest reading taken while the server lived.
    fn fullest(self) -> Option<Cost> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().ok().flatten()
    }
}
