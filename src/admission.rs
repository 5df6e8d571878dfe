//! Who may connect: the connection limits, and the one-line refusal.
//!
//! This module owns the counts behind `--max-clients` (lowered at start to what the machine
//! allows, `capacity.rs`), `--max-per-ip` and `--max-per-loopback`: a [`Ticket`] holds a
//! connection's places and frees them when dropped, however the connection ends. It must
//! not accept sockets or read from them; `server.rs` and `arrival.rs` ask it.

use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, Shutdown, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};

use crate::protocol::{ErrorReply, Reply};

/// Sends a one-line refusal without ever blocking the accept loop, then closes.
pub fn refuse(stream: &TcpStream, why: ErrorReply) {
    let _ = stream.set_nonblocking(true);
    let _ = (&*stream).write_all(Reply::Error(why).to_line().as_bytes());
    let _ = stream.shutdown(Shutdown::Both);
}

/// Counts connections, in total and per address, to enforce the connection limits.
pub struct Admission {
    pub max_total: usize,
    /// 0 = no per-address limit.
    max_per_ip: usize,
    /// The same for loopback addresses, which are people on this machine.
    max_per_loopback: usize,
    counts: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection; dropping it frees its places.
pub struct Ticket {
    admission: Arc<Admission>,
    /// The address whose place it holds; `None` until a proxied client's address is known.
    ip: Option<IpAddr>,
}

impl Admission {
    pub fn new(max_total: usize, max_per_ip: usize, max_per_loopback: usize) -> Self {
        Admission {
            max_total,
            max_per_ip,
            max_per_loopback,
            counts: Mutex::new((0, HashMap::new())),
        }
    }

    /// Takes a place among all connections and, given an address, one of that address's.
    pub fn enter(
        admission: &Arc<Admission>,
        ip: Option<IpAddr>,
    ) -> Result<Ticket, ErrorReply<'static>> {
        let mut counts = admission
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (total, per_ip) = &mut *counts;
        if *total >= admission.max_total {
            return Err(ErrorReply::ServerFull);
        }
        let ip = ip.map(|ip| ip.to_canonical());
        if let Some(ip) = ip {
            admission.take_place(per_ip, ip)?;
        }
        *total += 1;
        Ok(Ticket {
            admission: Arc::clone(admission),
            ip,
        })
    }

    /// Takes one of `ip`'s places, if it has one left.
    fn take_place(
        &self,
        per_ip: &mut HashMap<IpAddr, usize>,
        ip: IpAddr,
    ) -> Result<(), ErrorReply<'static>> {
        // Everyone logged in to this machine, a class on one shell host, comes from
        // 127.0.0.1: many people, not one host hogging the server.
        let limit = if ip.is_loopback() {
            self.max_per_loopback
        } else {
            self.max_per_ip
        };
        let here = per_ip.entry(ip).or_insert(0);
        if limit != 0 && *here >= limit {
            return Err(ErrorReply::TooManyFromAddress);
        }
        *here += 1;
        Ok(())
    }
}

impl Ticket {
    /// Takes a place for `ip`, the address that a proxied connection's header named, on a
    /// ticket that holds no address's place yet.
    pub fn claim_address(&mut self, ip: IpAddr) -> Result<(), ErrorReply<'static>> {
        debug_assert!(self.ip.is_none(), "a ticket holds one address's place");
        let ip = ip.to_canonical();
        let mut counts = self
            .admission
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.admission.take_place(&mut counts.1, ip)?;
        self.ip = Some(ip);
        Ok(())
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut counts = self
            .admission
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (total, per_ip) = &mut *counts;
        *total -= 1;
        let Some(ip) = self.ip else {
            return;
        };
        if let Some(here) = per_ip.get_mut(&ip) {
            *here -= 1;
            if *here == 0 {
                per_ip.remove(&ip);
            }
        }
    }
}
