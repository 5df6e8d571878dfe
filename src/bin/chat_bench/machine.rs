//! The machine the bench runs on: its cores, the kernel settings that bound how many
//! clients any server can hold, how busy it is, and the pinning of bench and servers to
//! separate cores.
//!
//! This module only reads settings (`/proc`, `/sys`) and never changes one: the figures are
//! meant for the machine as it is, and a bench that raised `vm.max_map_count` would hide the
//! very limit a server must cope with.

use std::fs;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub struct Machine {
    pub cores: usize,
    pub kernel: String,
    /// The soft `ulimit -n` of the bench; servers it starts inherit it.
    pub fd_limit: usize,
    pub pid_max: usize,
    pub threads_max: usize,
    pub max_map_count: usize,
    pub threads_now: usize,
}

impl Machine {
    pub fn read() -> Machine {
        let cores = fs::read_to_string("/sys/devices/system/cpu/online")
            .ok()
            .map_or(1, |s| count_cpus(s.trim()));
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".into(), |s| s.trim().to_string());
        Machine {
            cores,
            kernel,
            fd_limit: own_fd_limit(),
            pid_max: read_number("/proc/sys/kernel/pid_max").unwrap_or(0),
            threads_max: read_number("/proc/sys/kernel/threads-max").unwrap_or(0),
            max_map_count: read_number("/proc/sys/vm/max_map_count").unwrap_or(0),
            threads_now: threads_on_machine(),
        }
    }

    pub fn line(&self) -> String {
        format!(
            "machine: {} cores, kernel {}, {} threads running",
            self.cores, self.kernel, self.threads_now
        )
    }

    /// The settings that bound a thread-per-client server, as the run found them.
    pub fn settings_line(&self) -> String {
        format!(
            "settings: vm.max_map_count {}, kernel.pid_max {}, kernel.threads-max {}, \
             ulimit -n {} (the bench changes none of them)",
            self.max_map_count, self.pid_max, self.threads_max, self.fd_limit
        )
    }

    /// Most clients the scale scenario can try: every client is a socket in the bench, so
    /// the bench's own descriptors bound it. What a server holds within that is the figure,
    /// so nothing here guesses at a server's threads or mappings per client.
    pub fn scale_limit(&self, wanted: usize) -> (usize, &'static str) {
        let by_fds = self.fd_limit.saturating_sub(FD_MARGIN);
        if by_fds < wanted {
            (by_fds, "the bench's ulimit -n")
        } else {
            (wanted, "requested")
        }
    }
}

/// Descriptors the bench keeps for itself (stdio, /proc reads, the stalled client).
const FD_MARGIN: usize = 64;

/// `0-1,3` -> 3.
pub fn count_cpus(list: &str) -> usize {
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
pub fn wait_for_quiet(limit: Duration) -> bool {
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

/// CPU time used so far by process `pid` (a number, or `self`), in seconds.
pub fn process_cpu_s(pid: &str) -> f64 {
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

/// Pins this process to CPU 0 and returns the CPU for servers, when there are two or more
/// cores and `taskset` exists, so server and load generator do not compete for one core.
pub fn pin(machine: &Machine) -> Option<usize> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        for (list, n) in [("0", 1), ("0-1", 2), ("0-3,6", 5), ("0,2,4-5", 4)] {
            assert_eq!(count_cpus(list), n, "{list}");
        }
    }

    #[test]
    fn the_scale_is_bounded_by_the_benchs_descriptors_only() {
        let machine = |fd_limit| Machine {
            cores: 2,
            kernel: String::new(),
            fd_limit,
            pid_max: 100,
            threads_max: 100,
            max_map_count: 100,
            threads_now: 90,
        };
        // (ulimit -n, wanted) -> (clients tried, bound); pid_max 100 bounds nothing
        let rows = [
            (20_000, 10_000, (10_000, "requested")),
            (1_024, 10_000, (960, "the bench's ulimit -n")),
        ];
        for (fds, wanted, expected) in rows {
            assert_eq!(machine(fds).scale_limit(wanted), expected, "{fds} {wanted}");
        }
    }
}
