//! How many clients this process can hold on this machine, read once at start.
//!
//! This module owns the arithmetic from the kernel's limits to two numbers: the most
//! clients to admit, and the most client threads to start (`threads.rs`). It reads
//! `/proc` at start ([`Machine::read`]) and derives the figures with a pure function
//! ([`Capacity::of`]) that tests drive with invented machines. It must not start threads
//! or refuse connections itself.
//!
//! Each client costs one descriptor and one thread, and a second thread while its client
//! is behind (`outbox.rs`). Every thread costs four memory mappings (its stack, the stack's
//! guard page, and Rust's signal stack with its guard page) and a process id. Running out
//! of descriptors or process ids only makes `accept` or a thread start fail, which the
//! server survives; running out of mappings does not: Rust's runtime aborts a thread that
//! cannot map its signal stack, and with it the process. So the limits are read before
//! anyone connects, and the server never goes near them.

use std::fmt;
use std::fs;

/// Memory mappings each thread adds (measured: 4.0 per thread, 2,000 threads).
const MAPS_PER_THREAD: u64 = 4;

/// Mappings kept free for everything else: the allocator's arenas, large buffers, files.
const SPARE_MAPS: u64 = 2_048;

/// Descriptors kept free for everything else: the store's files while it compacts, reading
/// `/proc`, the spare the accept loop keeps, a refused connection on its way out.
const SPARE_FDS: u64 = 16;

/// Process ids and threads kept free for the rest of the machine (a shell to log in with).
const SPARE_TASKS: u64 = 1_024;

/// Threads kept free under a per-user limit for this process's own (main, stats).
const SPARE_OWN_THREADS: u64 = 8;

/// Memory one thread may cost, resident and in the kernel: its touched stack pages, its
/// kernel stack and task structures.
const MEMORY_PER_THREAD: u64 = 64 * 1024;

/// Address space one thread reserves: its 64 KiB stack, guard pages and signal stack.
const ADDRESS_SPACE_PER_THREAD: u64 = 96 * 1024;

/// Of the thread budget, one thread in this many is kept for writer threads, so that one
/// client in four can fall behind at the same time.
const THREADS_PER_WRITER: u64 = 5;

/// The limits read from the kernel. `None`: not set, or not readable here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Machine {
    /// `RLIMIT_NOFILE` (soft), and the descriptors open now.
    pub open_files_limit: Option<u64>,
    pub open_files: u64,
    /// `RLIMIT_NPROC` (soft); it does not apply to root.
    pub processes_limit: Option<u64>,
    /// `kernel.pid_max` and `kernel.threads-max`, and the threads on the machine now.
    pub pid_max: Option<u64>,
    pub threads_max: Option<u64>,
    pub threads_on_machine: u64,
    /// Threads of this process now.
    pub own_threads: u64,
    /// `vm.max_map_count`, and this process's mappings now.
    pub max_map_count: Option<u64>,
    pub own_maps: u64,
    /// Memory available: `MemAvailable`, or the cgroup's `memory.max` if lower.
    pub memory_bytes: Option<u64>,
    /// `RLIMIT_AS` (soft), and the address space in use now.
    pub address_space_limit: Option<u64>,
    pub address_space: u64,
}

/// A kernel limit that can bind the number of clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    OpenFiles,
    Processes,
    PidMax,
    ThreadsMax,
    MapCount,
    Memory,
    AddressSpace,
}

impl Limit {
    /// How an operator raises it (docs/DEPLOY.md has the whole recipe).
    pub fn how_to_raise(self) -> &'static str {
        match self {
            Limit::OpenFiles => "raise `ulimit -n` (LimitNOFILE= in the systemd unit)",
            Limit::Processes => "raise `ulimit -u` (LimitNPROC= in the systemd unit)",
            Limit::PidMax => "sysctl -w kernel.pid_max=4194304",
            Limit::ThreadsMax => "sysctl -w kernel.threads-max=200000",
            Limit::MapCount => "sysctl -w vm.max_map_count=262144",
            Limit::Memory => "add memory, or raise the service's MemoryMax=",
            Limit::AddressSpace => "raise `ulimit -v` (LimitAS= in the systemd unit)",
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::OpenFiles => "open files (ulimit -n)",
            Limit::Processes => "processes per user (ulimit -u)",
            Limit::PidMax => "kernel.pid_max",
            Limit::ThreadsMax => "kernel.threads-max",
            Limit::MapCount => "vm.max_map_count",
            Limit::Memory => "memory",
            Limit::AddressSpace => "address space (ulimit -v)",
        })
    }
}

/// What the machine allows this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Most clients connected at once.
    pub clients: u64,
    /// Most client threads (readers and writers) alive at once.
    pub threads: u64,
    /// The limit that gives the smallest figure.
    pub bound_by: Limit,
}

impl Capacity {
    /// Derives the capacity from `machine`, for clients whose outbound queues may hold
    /// `sendq_bytes` each.
    pub fn of(machine: &Machine, sendq_bytes: u64) -> Capacity {
        let threads = thread_room(machine, sendq_bytes);
        let by_threads = threads.0 - threads.0 / THREADS_PER_WRITER;
        let by_fds = machine
            .open_files_limit
            .map(|limit| limit.saturating_sub(machine.open_files + SPARE_FDS));
        let (clients, bound_by) = match by_fds {
            Some(fds) if fds < by_threads => (fds, Limit::OpenFiles),
            _ => (by_threads, threads.1),
        };
        Capacity {
            clients,
            threads: threads.0,
            bound_by,
        }
    }
}

/// How many more threads the process may start, and the limit that says so.
fn thread_room(m: &Machine, sendq_bytes: u64) -> (u64, Limit) {
    let tasks = m.threads_on_machine + SPARE_TASKS;
    // Half a client's memory is its queue: count it on its reader thread.
    let memory_per_thread = MEMORY_PER_THREAD + sendq_bytes / 2;
    let rooms = [
        (
            m.processes_limit
                .map(|l| l.saturating_sub(m.own_threads + SPARE_OWN_THREADS)),
            Limit::Processes,
        ),
        (m.pid_max.map(|l| l.saturating_sub(tasks)), Limit::PidMax),
        (
            m.threads_max.map(|l| l.saturating_sub(tasks)),
            Limit::ThreadsMax,
        ),
        (
            m.max_map_count
                .map(|l| l.saturating_sub(m.own_maps + SPARE_MAPS) / MAPS_PER_THREAD),
            Limit::MapCount,
        ),
        (m.memory_bytes.map(|b| b / memory_per_thread), Limit::Memory),
        (
            m.address_space_limit.map(|l| {
                l.saturating_sub(m.address_space) / (ADDRESS_SPACE_PER_THREAD + sendq_bytes)
            }),
            Limit::AddressSpace,
        ),
    ];
    rooms
        .into_iter()
        .filter_map(|(room, limit)| Some((room?, limit)))
        .min_by_key(|(room, _)| *room)
        .unwrap_or((u64::MAX / 2, Limit::Memory))
}

impl Machine {
    /// Reads this process's limits and use from `/proc` (Linux). What cannot be read is
    /// `None` and does not bind.
    pub fn read() -> Machine {
        let limits = fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        let is_root = status_field(&status, "Uid:") == Some(0);
        Machine {
            open_files_limit: soft_limit(&limits, "Max open files"),
            open_files: count_entries("/proc/self/fd"),
            processes_limit: soft_limit(&limits, "Max processes").filter(|_| !is_root),
            pid_max: read_number("/proc/sys/kernel/pid_max"),
            threads_max: read_number("/proc/sys/kernel/threads-max"),
            threads_on_machine: threads_on_machine().unwrap_or(0),
            own_threads: status_field(&status, "Threads:").unwrap_or(1),
            max_map_count: read_number("/proc/sys/vm/max_map_count"),
            own_maps: fs::read_to_string("/proc/self/maps").map_or(0, |m| m.lines().count() as u64),
            memory_bytes: memory_available(),
            address_space_limit: soft_limit(&limits, "Max address space"),
            address_space: status_field(&status, "VmSize:").unwrap_or(0) * 1024,
        }
    }
}

fn read_number(path: &str) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn count_entries(dir: &str) -> u64 {
    fs::read_dir(dir).map_or(0, |entries| entries.count() as u64)
}

/// The soft limit in a `/proc/self/limits` row such as
/// `Max open files            20000                20000                files`;
/// `None` when unlimited or absent.
fn soft_limit(limits: &str, row: &str) -> Option<u64> {
    let rest = limits.lines().find_map(|line| line.strip_prefix(row))?;
    rest.split_whitespace().next()?.parse().ok()
}

/// The first number of a `/proc/self/status` field such as `Threads:\t3` or `Uid: 0 0 0 0`.
fn status_field(status: &str, field: &str) -> Option<u64> {
    let rest = status.lines().find_map(|line| line.strip_prefix(field))?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Threads on the whole machine: the `8/1234` field of `/proc/loadavg` counts them.
fn threads_on_machine() -> Option<u64> {
    let loadavg = fs::read_to_string("/proc/loadavg").ok()?;
    let field = loadavg.split_whitespace().nth(3)?;
    field.split_once('/')?.1.parse().ok()
}

/// `MemAvailable`, or less if this process's cgroup (v2) has a lower `memory.max`.
fn memory_available() -> Option<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo").ok()?;
    let available = status_field(&meminfo, "MemAvailable:").map(|kib| kib * 1024);
    let cgroup = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let group_limit = cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .and_then(|path| read_number(&format!("/sys/fs/cgroup{}/memory.max", path.trim())));
    match (available, group_limit) {
        (Some(a), Some(g)) => Some(a.min(g)),
        (a, g) => a.or(g),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The machine the project is developed on: 2 cores, 24 GiB, stock kernel settings.
    fn stock() -> Machine {
        Machine {
            open_files_limit: Some(20_000),
            open_files: 8,
            processes_limit: None,
            pid_max: Some(32_768),
            threads_max: Some(192_726),
            threads_on_machine: 150,
            own_threads: 1,
            max_map_count: Some(65_530),
            own_maps: 60,
            memory_bytes: Some(23 << 30),
            address_space_limit: None,
            address_space: 20 << 20,
        }
    }

    #[test]
    fn the_tightest_limit_binds_and_is_named() {
        let sendq = 64 * 1024;
        // (change to the stock machine, clients, threads, bound by)
        type Row = (fn(&mut Machine), u64, u64, Limit);
        let rows: Vec<Row> = vec![
            // (65,530 - 60 - 2,048) / 4 = 15,855 threads, four fifths of them for readers.
            (|_| {}, 12_684, 15_855, Limit::MapCount),
            (
                |m| m.max_map_count = Some(262_144),
                19_976,
                31_594,
                Limit::OpenFiles,
            ),
            (
                |m| {
                    m.max_map_count = Some(262_144);
                    m.open_files_limit = Some(100_000);
                },
                25_276,
                31_594,
                Limit::PidMax,
            ),
            (
                |m| m.open_files_limit = Some(1_024),
                1_000,
                15_855,
                Limit::OpenFiles,
            ),
            (
                |m| m.processes_limit = Some(2_000),
                1_593,
                1_991,
                Limit::Processes,
            ),
            (
                |m| m.threads_max = Some(5_000),
                3_061,
                3_826,
                Limit::ThreadsMax,
            ),
            // 1 GiB: 1 GiB / (64 KiB + 32 KiB) per thread.
            (
                |m| m.memory_bytes = Some(1 << 30),
                8_738,
                10_922,
                Limit::Memory,
            ),
            // 2 GiB of address space, 20 MiB of it in use, 160 KiB per thread.
            (
                |m| m.address_space_limit = Some(2 << 30),
                10_384,
                12_979,
                Limit::AddressSpace,
            ),
            (|m| m.max_map_count = Some(1_000), 0, 0, Limit::MapCount),
        ];
        for (change, clients, threads, bound_by) in rows {
            let mut machine = stock();
            change(&mut machine);
            let expected = Capacity {
                clients,
                threads,
                bound_by,
            };
            assert_eq!(Capacity::of(&machine, sendq), expected, "{machine:?}");
        }
    }

    #[test]
    fn nothing_readable_means_nothing_binds() {
        let capacity = Capacity::of(&Machine::default(), 0);
        assert!(capacity.clients > 1 << 40, "{capacity:?}");
    }

    #[test]
    fn proc_rows_are_read_as_the_kernel_writes_them() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             unlimited            unlimited            processes \n\
                      Max open files            20000                20000                files     \n";
        assert_eq!(soft_limit(limits, "Max open files"), Some(20_000));
        assert_eq!(soft_limit(limits, "Max processes"), None, "unlimited");
        assert_eq!(soft_limit(limits, "Max address space"), None, "absent");
        let status = "Name:\tchat_server\nUid:\t1000\t1000\t1000\t1000\nThreads:\t3\n";
        assert_eq!(status_field(status, "Threads:"), Some(3));
        assert_eq!(status_field(status, "Uid:"), Some(1_000));
    }

    #[test]
    fn this_machine_can_be_read() {
        let machine = Machine::read();
        assert!(
            machine.own_threads >= 1 && machine.own_maps > 0,
            "{machine:?}"
        );
        assert!(machine.max_map_count.is_some() && machine.pid_max.is_some());
    }
}
