//! `chat_bench`: how many clients ptchat holds and how fast it relays, optionally side by
//! side with `ncat --chat` and the IRC daemon ngircd. `make bench` and `make bench-compare`
//! run it; docs/PERFORMANCE.md explains every figure it prints.
//!
//! This binary owns the load generator and the report. It talks to servers only over TCP and
//! reads their resource use from `/proc/PID`; it must not link server internals (the point
//! is to measure the binary a user runs), and it must not change the machine's settings
//! (no sysctl): it measures the machine as it is. It starts every server itself, one fresh
//! server per scenario, and kills it afterwards.
//!
//! The modules, in the order a run uses them: `machine` (settings, pinning), `servers` and
//! `ngircd` (starting each kind), `wire` and `irc` (what each kind's clients say), `pool`
//! (thousands of clients on a few threads), `scenarios`, `scale` and `slow_consumer` (the
//! loads), `figures`, `report` and `goals` (the tables and the JSON).

mod figures;
mod goals;
mod irc;
mod machine;
mod ngircd;
mod pool;
mod report;
mod scale;
mod scenarios;
mod servers;
mod slow_consumer;
mod wire;

use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant, SystemTime};

use figures::Figures;
use machine::{Machine, pin, wait_for_quiet};
use report::Results;
use scenarios::Sizes;
use servers::{Kind, Lab, Target};

/// Clients `ncat --chat` is asked to hold: it uses select(), limited to FD_SETSIZE = 1024
/// descriptors including its own.
const NCAT_MAX_CLIENTS: usize = 1_000;

/// Microseconds since the bench started; all send and receive times use this one clock.
pub fn now_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

struct Args {
    server: PathBuf,
    kinds: Vec<Kind>,
    quick: bool,
    json: PathBuf,
    scale_max: usize,
    sign_in_secs: Option<u64>,
    only: Option<String>,
}

const USAGE: &str = "usage: chat_bench [--server PATH] [--compare | --servers LIST] [--quick]
                  [--json PATH] [--scale-max N] [--sign-in-secs S] [--only SCENARIO]
  --server PATH    chat_server binary to measure (default: next to this binary)
  --compare        run every scenario against ptchat, `ncat --chat` and ngircd, in turn
  --servers LIST   the servers to run, comma-separated: ptchat, ncat, ngircd
  --quick          tiny sizes, a few seconds in all (for the smoke test)
  --json PATH      where to write the figures (default target/bench/results.json)
  --scale-max N    clients the scale scenario asks for (default 10000)
  --sign-in-secs S time the scale scenario's clients get to sign in (default 120)
  --only NAME      run one scenario: throughput, latency_100, latency, scale or slow_consumer
";

fn parse_args() -> Result<Args, String> {
    let here = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut args = Args {
        server: here.with_file_name("chat_server"),
        kinds: vec![Kind::Ptchat],
        quick: false,
        json: PathBuf::from("target/bench/results.json"),
        scale_max: 10_000,
        sign_in_secs: None,
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
            "--sign-in-secs" => {
                let secs = value()?.parse().map_err(|_| "bad --sign-in-secs")?;
                args.sign_in_secs = Some(secs);
            }
            "--only" => args.only = Some(value()?),
            "--compare" => args.kinds = Kind::ALL.to_vec(),
            "--servers" => args.kinds = parse_kinds(&value()?)?,
            "--quick" => args.quick = true,
            "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// `ptchat,ngircd` -> the kinds, in the order given.
fn parse_kinds(list: &str) -> Result<Vec<Kind>, String> {
    list.split(',')
        .map(|label| Kind::from_label(label.trim()).ok_or(format!("unknown server {label}")))
        .collect()
}

type Scenario<'a> = Box<dyn Fn(&Target) -> Result<Figures, String> + 'a>;

/// Every scenario, in run order, by the name the report and the JSON use.
fn scenarios(sizes: &Sizes) -> Vec<(&'static str, Scenario<'_>)> {
    vec![
        ("throughput", Box::new(|t| scenarios::throughput(t, sizes))),
        (
            "latency_100",
            Box::new(|t| scenarios::latency(t, sizes.lat_small_clients, sizes)),
        ),
        (
            "latency",
            Box::new(|t| scenarios::latency(t, sizes.lat_clients, sizes)),
        ),
        (
            "scale",
            Box::new(|t| {
                let n = match t.kind {
                    Kind::Ncat => sizes.scale_clients.min(NCAT_MAX_CLIENTS),
                    Kind::Ptchat | Kind::Ngircd => sizes.scale_clients,
                };
                scale::scale(t, n, sizes.scale_rounds, sizes.scale_sign_in)
            }),
        ),
        (
            "slow_consumer",
            Box::new(|t| slow_consumer::slow_consumer(t, sizes)),
        ),
    ]
}

/// Runs every scenario (or the one asked for) against every kind in turn, a fresh server
/// each time, after the machine has gone quiet (not in a quick run: its figures are not
/// read, and a test suite keeps the machine busy).
fn run_all(lab: &Lab, sizes: &Sizes, args: &Args) -> Results {
    let ncat_limit = sizes.scale_clients.max(sizes.lat_clients + 1);
    let mut results: Results = Vec::new();
    for (name, run) in &scenarios(sizes) {
        if args.only.as_deref().is_some_and(|only| only != *name) {
            continue;
        }
        let mut runs = Vec::new();
        for &kind in &args.kinds {
            if !args.quick && !wait_for_quiet(Duration::from_secs(30)) {
                eprintln!("note: the machine was still busy after 30 s; measuring anyway");
            }
            eprintln!("running {name} against {}...", kind.label());
            let figures = lab
                .start(kind, ncat_limit)
                .map_err(|e| format!("cannot start {}: {e}", kind.label()))
                .and_then(|target| with_fate(run(&target), &target));
            runs.push((kind, figures));
        }
        results.push((name, runs));
    }
    results
}

/// Adds whether the server outlived the scenario: a server that died is a figure (how it
/// ended, what it logged last), not a failure of the bench.
fn with_fate(result: Result<Figures, String>, target: &Target) -> Result<Figures, String> {
    let death = target.death();
    match (result, death) {
        (Ok(mut f), None) => {
            f.text("server_alive", "yes");
            Ok(f)
        }
        (Ok(mut f), Some((how, log))) => {
            f.text("server_alive", "no");
            f.text("server_exit", how);
            f.text("server_log_tail", log);
            Ok(f)
        }
        (Err(e), None) => Err(e),
        (Err(e), Some((how, log))) => Err(format!("{e}; the server died ({how}): {log}")),
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) if e.is_empty() => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprint!("chat_bench: {e}\n{USAGE}");
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
    println!("{}", machine.settings_line());
    println!("pinning: {pinned}");
    let sizes = sizes(&args, &machine);
    let lab = Lab {
        server: args.server.clone(),
        server_cpu,
        tmp: servers::bench_dir(),
        runs: AtomicUsize::new(0),
    };
    let results = run_all(&lab, &sizes, &args);
    let _ = fs::remove_dir_all(&lab.tmp);
    report_and_exit(&results, &args, &machine, &date, &pinned)
}

/// The sizes asked for on the command line, the scale bounded by the bench's descriptors.
fn sizes(args: &Args, machine: &Machine) -> Sizes {
    let wanted = if args.quick { 50 } else { args.scale_max };
    let (scale_n, bound) = machine.scale_limit(wanted);
    println!("scale scenario: asks for {scale_n} clients (bounded by {bound})");
    let mut sizes = if args.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    sizes.scale_clients = scale_n;
    if let Some(secs) = args.sign_in_secs {
        sizes.scale_sign_in = Duration::from_secs(secs);
    }
    sizes
}

fn report_and_exit(
    results: &Results,
    args: &Args,
    machine: &Machine,
    date: &str,
    pinned: &str,
) -> ExitCode {
    let verdicts = goals::verdicts(results, &args.kinds);
    println!();
    print!("{}", report::table(results, &args.kinds));
    println!();
    println!("{}", machine.line());
    println!("{}", machine.settings_line());
    print!("{}", goals::table(&verdicts, &args.kinds));
    let text = report::json(results, &verdicts, machine, date, pinned);
    if let Some(dir) = args.json.parent() {
        let _ = fs::create_dir_all(dir);
    }
    match fs::write(&args.json, text) {
        Ok(()) => println!("\nfigures written to {}", args.json.display()),
        Err(e) => eprintln!("chat_bench: cannot write {}: {e}", args.json.display()),
    }
    let failures = report::ptchat_failures(results);
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
    fn servers_are_listed_by_name() {
        // list -> kinds, or an error
        let rows: [(&str, Result<Vec<Kind>, ()>); 4] = [
            ("ptchat", Ok(vec![Kind::Ptchat])),
            ("ptchat,ngircd", Ok(vec![Kind::Ptchat, Kind::Ngircd])),
            ("ngircd, ncat", Ok(vec![Kind::Ngircd, Kind::Ncat])),
            ("ptchat,inspircd", Err(())),
        ];
        for (list, expected) in rows {
            assert_eq!(parse_kinds(list).map_err(|_| ()), expected, "{list}");
        }
    }
}
