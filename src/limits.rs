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
/// disconnected when this much is waiting for it (after what its kernel holds, often as
/// much again). ngircd uses 32 KiB, IRC daemons ~100 KB to 1 MB. It must hold what ten
/// flooding senders add while their writers catch up: half of it, plus one
/// [`MAX_BURST_BYTES`] each (see `outbox::Pushed::Crowded`).
pub const DEFAULT_SENDQ_BYTES: usize = 256 * 1024;

/// How long a reply the user asked for (`~:lu:`, stored messages) may wait for room in that
/// user's own queue before the user is treated as stalled.
pub const ASKED_REPLY_WAIT: Duration = Duration::from_secs(10);

/// How long a write to someone else's client may wait for room in that client's socket,
/// that is, as little as the kernel allows: it rounds up to one clock tick (4 ms with
/// `CONFIG_HZ=250`, and up to 8 ms were measured here). Only a client whose socket
/// buffers are full makes a sender wait, and then only once: from then on its own writer
/// thread writes to it (see `outbox.rs`).
pub const SENDER_PATIENCE: Duration = Duration::from_millis(1);

/// How long a client's writer thread stays after its backlog is written, waiting for
/// more, before it ends and senders write to that client again. A client that fell behind
/// once is likely to again soon; starting a thread costs more than waking one.
pub const WRITER_LINGER: Duration = Duration::from_secs(10);

/// A client whose kernel has taken nothing for this long, while its writer thread writes,
/// has stopped reading: senders no longer wait for it (see `outbox::Pushed::Crowded`), and
/// its queue fills until it is cut. A stalled client thus holds a sender once, this long.
pub const WRITER_STUCK_AFTER: Duration = Duration::from_millis(50);

/// A telnet subnegotiation longer than this is no telnet: real ones (a terminal type, a
/// window size) take a few dozen bytes, and a client may send one only for an option the
/// server agreed to, which this server never does. Past this many bytes the decoder stops
/// swallowing (`telnet.rs`), so a stray `IAC SB` costs a client this much of its input, not
/// the rest of its connection.
pub const MAX_SUBNEGOTIATION_BYTES: usize = 256;

/// The longest a sender waits after a delivery for the writers of queues over half full
/// (see `outbox::Pushed::Crowded`). Without the wait, ten senders writing as fast as TCP
/// allows to a hundred clients overflowed 85 of their queues within 50 ms (throughput
/// scenario, docs/PERFORMANCE.md).
pub const CROWDED_PATIENCE: Duration = Duration::from_millis(100);

/// Join and leave notices go to everyone while fewer users than this are online. Each
/// notice costs one write per user online, so a storm of N sign-ins costs N x N writes;
/// in a larger room the notices would be most of the traffic, and they stop (`~:lu:` still
/// tells who is online). Twitch's chat does the same from 1,000 users.
pub const MAX_ROOM_FOR_NOTICES: usize = 1_000;

/// Public lines from one client that arrived in one read are delivered together, as one
/// queue entry per receiver (see `session.rs`, `Presence::burst`), until the burst holds
/// this many bytes: one write per receiver for a paste instead of one per line, as much
/// as a busy client's read brings. At 2 KiB, the throughput scenario made four times the
/// writes and ptchat fell to 0.72 of ncat's deliveries per second (docs/PERFORMANCE.md).
pub const MAX_BURST_BYTES: usize = 8 * 1024;

/// Stack size of each client thread, in bytes. A client costs one thread (two while it has
/// a backlog); with 10,000 clients the default 2 MiB stack would reserve 20 GiB of address
/// space. The code on these threads is shallow (no recursion, buffers on the heap), and
/// only touched pages become resident, so 64 KiB is ample.
pub const CLIENT_THREAD_STACK: usize = 64 * 1024;

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

/// Messages kept for one offline user. When full, the sender is told; nothing is dropped.
pub const MAILBOX_CAP: usize = 100;

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

/// Largest datagram sent to a UDP client, in bytes of payload. With the 28 bytes of IPv4 and
/// UDP headers (48 for IPv6) it stays below 1,280 bytes, the smallest MTU IPv6 allows, so no
/// reply is ever fragmented on the way; QUIC chose 1,200 for the same reason.
pub const UDP_MAX_DATAGRAM: usize = 1200;

/// Before an address has proved it is real, a reply may be at most this many times the size
/// of the datagram it answers, both counted on the wire (payload plus headers): a forged
/// source gets a victim at most three bytes for each byte the forger sent. QUIC's limit too.
pub const UDP_AMPLIFICATION: usize = 3;

/// Digits in the code that proves a UDP address (about 26.6 bits, near the 24 bits of MAC
/// in a TCP SYN cookie); short enough to type, long enough that guessing blind is slow.
pub const UDP_CODE_DIGITS: usize = 8;

/// Default length of one time window of UDP codes. A code is accepted in the window it was
/// made in and the next, so it lives between one and two windows.
pub const DEFAULT_UDP_CODE_WINDOW: Duration = Duration::from_secs(60);

/// Default time a UDP session may stay silent before it ends. UDP has no hang-up: a client
/// that closed `nc` just stops sending, and this is how the server notices.
pub const DEFAULT_UDP_IDLE: Duration = Duration::from_secs(5 * 60);

/// How long before the idle end a UDP session is warned (half the idle time if that is
/// shorter), so a user who is reading, not typing, can keep the session with one Enter.
pub const UDP_IDLE_WARNING: Duration = Duration::from_secs(30);

/// Datagrams that may wait for one UDP session's thread. The dispatcher never waits for a
/// session: a datagram that finds the queue full is dropped and counted.
pub const UDP_INBOX_DATAGRAMS: usize = 64;

/// Bytes that may wait for one UDP session's thread, as the SendQ bounds the other way. The
/// largest datagram (65,507 bytes) fits an empty inbox.
pub const UDP_INBOX_BYTES: usize = 64 * 1024;

/// A UDP user whose lines were dropped is told so at most this often.
pub const UDP_DROP_NOTICE_INTERVAL: Duration = Duration::from_secs(1);

/// Datagrams from a source port below this get no reply before proof. Well-known services
/// live there (echo on 7, chargen on 19, DNS on 53) and some answer every datagram, so a
/// reply to a forged one could start an endless ping-pong between two servers.
pub const UDP_LOWEST_REPLY_PORT: u16 = 1024;

/// Default maximum simultaneous connections from one loopback address (127.0.0.0/8, ::1);
/// 0 = no limit. `--max-per-ip` does not apply to loopback: everyone logged in to the
/// server's own machine (students on one shell host, a class on the teacher's laptop)
/// arrives from 127.0.0.1, and they are many people, not one host hogging the server.
pub const DEFAULT_MAX_PER_LOOPBACK: usize = 0;

/// Failed passwords from one address that the sign-in throttle lets pass without a delay
/// for the address (each account still has its own). A classroom on one shell host, every
/// student on 127.0.0.1, fits in it when a whole class mistypes at once.
pub const ADDRESS_FAILURE_BURST: u32 = 30;

/// After that burst, the rate at which an address may keep failing: one failure per this
/// long (30 a minute). People mistype far less often, each account's own delay slows a
/// person long before this, but guessing across many accounts goes faster.
pub const ADDRESS_FAILURE_INTERVAL: Duration = Duration::from_secs(2);

/// Longest version 1 PROXY protocol header, CRLF included (fixed by the specification:
/// `PROXY UNKNOWN` with two full IPv6 addresses and ports).
pub const PROXY_V1_MAX_BYTES: usize = 107;

/// Longest part after the 16-byte head of a version 2 PROXY header (addresses and TLVs)
/// that is accepted. The format allows 65,535; addresses take at most 216 bytes (Unix
/// sockets), and HAProxy's TLVs (ALPN, SNI, TLS details, a unique id) fit in the rest.
pub const MAX_PROXY_V2_BODY_BYTES: usize = 1024;

/// How long a connection that is not from a trusted proxy is watched for a PROXY header
/// before it is greeted, when `--trusted-proxy` is set (without it the server looks only
/// at what arrived with the connection, without waiting). A proxy sends its header as soon
/// as it connects; a netcat user sends nothing until greeted, so this delays their
/// greeting, and nobody else's, by this much at most.
pub const PROXY_HEADER_WATCH: Duration = Duration::from_millis(100);

// ---- The web page on the chat port (`connection.rs`, `http.rs`) ----

/// How long the server waits for a new connection's first bytes before it greets it as a
/// chat user. A browser sends its request at once, together with the last packet of the TCP
/// handshake, so it arrives within milliseconds even through a TLS terminator; a netcat user
/// sends nothing until greeted, so each waits this long for the greeting (well within the
/// promised one second).
pub const SNIFF_WAIT: Duration = Duration::from_millis(300);

/// Longest request head, in bytes: request line, headers and the blank line. Browsers send
/// well under 2 KiB to a server that sets no cookies; 8 KiB is the common server default
/// (nginx, Node.js started there).
pub const MAX_HEAD_BYTES: usize = 8 * 1024;

/// Most header lines in one request. A browser's WebSocket upgrade has about 15; the cap
/// keeps a head of thousands of tiny headers from costing a thousand allocations.
pub const MAX_HEADERS: usize = 64;

/// Longest request line, in bytes, without its line ending. This server's paths are `/` and
/// `/ws`; the cap only has to be generous for query strings a browser may add.
pub const MAX_REQUEST_LINE_BYTES: usize = 2048;

/// After an HTTP error response, what the client still sends (the rest of an oversized
/// head, a body) is read and thrown away for up to this long before the socket is closed.
/// Closing with unread bytes makes the kernel send a reset, which can destroy the response
/// before the client has read it; Apache's lingering close waits 2 s for the same reason.
pub const HTTP_LINGER: Duration = Duration::from_secs(1);

/// ...and at most this many bytes: a client that keeps sending is cut anyway.
pub const HTTP_LINGER_BYTES: usize = 64 * 1024;

/// How long a connection that fetched the page stays open for the browser's next request.
/// Browsers open connections before they need them (preconnect) and send a request on one
/// seconds later; such a silent connection is greeted as a chat user after [`SNIFF_WAIT`]
/// and cannot serve a page any more. Chromium reuses a connection it has already used
/// before an unused one, so a reload goes to this kept-open connection instead. Five
/// minutes, as long as Chromium keeps a used connection.
pub const HTTP_KEEP_ALIVE: Duration = Duration::from_secs(5 * 60);
