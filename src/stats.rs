//! Server-wide counters for the periodic stats line in the log.
//!
//! This module owns a handful of atomic counters that any thread may bump without a lock.
//! It must not decide anything: the numbers are for operators, and nothing reads them to
//! change behaviour.

use std::sync::atomic::{AtomicU64, Ordering};

static CONNECTIONS_OPEN: AtomicU64 = AtomicU64::new(0);
static MESSAGES_RELAYED: AtomicU64 = AtomicU64::new(0);
static BYTES_OUT: AtomicU64 = AtomicU64::new(0);
static QUEUE_DROPS: AtomicU64 = AtomicU64::new(0);

/// A copy of all counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub connections: u64,
    pub messages_relayed: u64,
    pub bytes_out: u64,
    pub queue_drops: u64,
}

pub fn connection_opened() {
    CONNECTIONS_OPEN.fetch_add(1, Ordering::Relaxed);
}

pub fn connection_closed() {
    CONNECTIONS_OPEN.fetch_sub(1, Ordering::Relaxed);
}

/// One chat line handed to `receivers` outboxes.
pub fn record_relayed(receivers: usize) {
    MESSAGES_RELAYED.fetch_add(receivers as u64, Ordering::Relaxed);
}

pub fn record_bytes_out(bytes: usize) {
    BYTES_OUT.fetch_add(bytes as u64, Ordering::Relaxed);
}

/// A client disconnected because its outbound queue overflowed.
pub fn record_queue_drop() {
    QUEUE_DROPS.fetch_add(1, Ordering::Relaxed);
}

pub fn snapshot() -> Snapshot {
    Snapshot {
        connections: CONNECTIONS_OPEN.load(Ordering::Relaxed),
        messages_relayed: MESSAGES_RELAYED.load(Ordering::Relaxed),
        bytes_out: BYTES_OUT.load(Ordering::Relaxed),
        queue_drops: QUEUE_DROPS.load(Ordering::Relaxed),
    }
}
