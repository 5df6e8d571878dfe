//! Every limit of the server in one place, each with its unit and its reason.
//!
//! This module owns numbers only. Anything an operator may change is the *default* of a
//! command-line flag (see `config.rs`); the rest are fixed by the protocol. docs/PROTOCOL.md
//! and docs/SECURITY.md repeat these values: change them together.

use std::time::Duration;

/// Longest line a client may send, in bytes, without its `\n` (or `\r\n`). A longer line is
/// refused whole, and the reader never buffers more than this, so a line that never ends
/// costs at most this much memory.
pub const MAX_LINE_BYTES: usize = 1024;

/// Longest user name, in characters (names are ASCII, so also bytes).
pub const MAX_NAME_LEN: usize = 24;

/// Longest password, in bytes. Long enough for any passphrase; short enough that hashing
/// cost does not depend on what an attacker sends.
pub const MAX_PASSWORD_BYTES: usize = 256;

/// Wrong passwords allowed on one connection before it is closed.
pub const MAX_PASSWORD_TRIES: u32 = 3;

/// Default outbound queue (SendQ) per client, in bytes. A client that stops reading is
/// disconnected when this much is waiting for it. ngircd uses 32 KiB, IRC daemons ~100 KB.
pub const DEFAULT_SENDQ_BYTES: usize = 64 * 1024;

/// How long a reply the user asked for (`~:lu:`, stored messages) may wait for room in that
/// user's own queue before the user is treated as stalled.
pub const ASKED_REPLY_WAIT: Duration = Duration::from_secs(10);

/// How often the notice flusher pushes the notices a large room kept back (see
/// `Registry::flush_notices`) and wakes writers that sleep on join or leave notices.
pub const NOTICE_FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// How long a join or leave notice may wait for its writer, per user online (see
/// `registry::notice_delay`). A join goes to every user, so a storm of N sign-ins costs
/// N x N deliveries; letting notices gather for longer in a larger room keeps the wake-ups
/// per second (each a syscall, and on Linux a walk of a futex hash bucket shared by all
/// sleeping writers) about constant: 10 users: 1 ms, 1,000 users: 100 ms.
pub const NOTICE_DELAY_PER_USER: Duration = Duration::from_micros(100);

/// How long each writer pauses after a write, per user online (see `outbox::set_writer_pace`),
/// so that in a large room a writer batches the chat lines that arrive meanwhile: 100 users:
/// 6 ms, 1,000 users and more: 60 ms. Chat is delayed by at most that much. All writers
/// together then make at most about 16,700 writes a second, whatever the room's size. At
/// 20 µs per user, 1,000 users receiving 200 lines/s kept one core 95% busy with writes and
/// timer wake-ups, and any hiccup left the server behind (p99 from 54 ms to 2 s); at 40 µs
/// it was 55 to 67% busy on a good day, but 90 to 100% on a slower one (p99 70 ms to 2 s);
/// at 60 µs, 62 to 68% on that slower day and p99 steady at 63 ms (docs/PERFORMANCE.md,
/// change 21).
pub const WRITER_PACE_PER_USER: Duration = Duration::from_micros(60);

/// The longest pause of a writer after a write, however large the room.
pub const MAX_WRITER_PACE: Duration = Duration::from_millis(60);

/// How many doorbells the writers share (see `doorbell.rs`). With up to this many clients
/// each writer has its own; beyond, a broadcast costs at most this many wake-up syscalls
/// instead of one per user, and a private line wakes about clients / 64 writers. Each wake
/// syscall walks a futex hash bucket holding a sixteenth of all sleeping writers, so a
/// broadcast's walks grow with this number: with 256, ringing a broadcast to 6,000 users
/// took a fifth of the server's time for it; 32 cut that broadcast's CPU by 15% but woke
/// eight times as many writers for each sign-in's own lines (docs/PERFORMANCE.md).
pub const WRITER_DOORBELLS: usize = 64;

/// The longest a join or leave notice waits, however large the room.
pub const MAX_NOTICE_DELAY: Duration = Duration::from_secs(1);

/// How long a sender waits for a client's kernel to take a line the sender writes itself
/// (see `outbox::Outbox::write_through`). Only a client whose socket buffers are full makes
/// it wait, and then only once: from then on its own writer thread writes to it. The
/// kernel rounds it up to its clock tick (1 to 4 ms).
pub const SENDER_PATIENCE: Duration = Duration::from_millis(1);

/// How long one socket write may block before the peer is declared dead. Without it a
/// half-open connection could pin its writer thread forever.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Default time a connection gets to sign in before it is closed.
pub const DEFAULT_SIGN_IN_TIMEOUT: Duration = Duration::from_secs(60);

/// Default maximum number of simultaneous connections (signed in or not).
pub const DEFAULT_MAX_CLIENTS: usize = 10_000;

/// Default maximum simultaneous connections from one IP address.
pub const DEFAULT_MAX_PER_IP: usize = 20;

/// Default message-rate bucket: this many lines at once...
pub const DEFAULT_RATE_BURST: u32 = 20;

/// ...then this many lines per second. 0 turns rate limiting off.
pub const DEFAULT_RATE_PER_SEC: u32 = 5;

/// Lines dropped for flooding, in a row without a pause, before the client is disconnected.
pub const MAX_FLOOD_STRIKES: u32 = 50;

/// Public lines from one client are delivered together as one burst, one queue entry per
/// receiver (see `session.rs`, `Presence::burst`), until the burst holds this many bytes.
/// Bounds that entry well under the SendQ: a burst is at most this plus one line, so ten
/// senders flooding at once add at most 31 KiB to a queue that was under half full, below
/// the 64 KiB at which it overflows (`outbox::Outbox::wait_uncrowded`). At 8 KiB, the most
/// a busy client's read brings (`line_reader.rs`), they overflowed it.
pub const MAX_BURST_BYTES: usize = 2 * 1024;

/// The longest a sender waits after a delivery for the writers that fell behind only for
/// want of the CPU (`outbox::Outbox::wait_uncrowded`). Without the wait, ten senders
/// writing as fast as TCP allows left 99 writers unscheduled long enough to overflow a
/// 64 KiB queue of a client that read fine (docs/PERFORMANCE.md).
pub const CROWDED_PATIENCE: Duration = Duration::from_millis(100);

/// Messages kept for one offline user. When full, the sender is told; nothing is dropped.
pub const MAILBOX_CAP: usize = 100;

/// Stack size of each per-client thread, in bytes. Every client costs two threads (reader and
/// writer); with 10,000 clients that is 20,000 stacks. The default 2 MiB stack would reserve
/// 40 GiB of address space; the code on these threads is shallow (no recursion, buffers on
/// the heap), and only touched pages become resident, so 64 KiB is ample.
pub const CLIENT_THREAD_STACK: usize = 64 * 1024;

/// Pause after `accept` fails for lack of resources (file descriptors, memory), so an
/// exhausted server sheds load instead of spinning at 100% CPU.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// First delay after a failed password, doubled per further failure, up to the cap.
pub const LOGIN_DELAY_BASE: Duration = Duration::from_millis(250);

/// Longest delay imposed before a password attempt.
pub const LOGIN_DELAY_CAP: Duration = Duration::from_secs(8);

/// How long failures are remembered per account and per address.
pub const LOGIN_FAILURE_MEMORY: Duration = Duration::from_secs(15 * 60);

/// Default PBKDF2-HMAC-SHA256 iterations; see docs/SECURITY.md for why this number.
pub const DEFAULT_KDF_ITERATIONS: u32 = 600_000;

/// Interval of the periodic stats line in the log.
pub const STATS_INTERVAL: Duration = Duration::from_secs(60);
