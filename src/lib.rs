//! ptchat: a chat server for netcat clients, one thread per client, std only.
//!
//! Read the modules in this order to follow one message through the server:
//! `server` (sockets and threads) -> `line_reader` (framing) -> `session` (sign-in and
//! commands) -> `protocol` (syntax and replies) -> `registry` (who receives what, under the
//! one lock) -> `outbox` (the queue each writer thread drains to its socket) -> `doorbell`
//! (how a sleeping writer is woken). Around them: `store` and `password` make accounts
//! durable and safe, `throttle` and `ratelimit` slow abusers down, `limits` names every
//! number, `config` reads the command line, `log`, `stats` and `clock` serve the operator,
//! `crypto` holds SHA-256, HMAC and PBKDF2.
//! docs/ARCHITECTURE.md draws the whole picture.

#![forbid(unsafe_code)]

pub mod base64;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod doorbell;
pub mod http;
pub mod limits;
pub mod line_reader;
pub mod log;
pub mod outbox;
pub mod password;
pub mod protocol;
pub mod ratelimit;
pub mod registry;
pub mod server;
pub mod session;
pub mod sha1;
pub mod shared;
pub mod stats;
pub mod store;
pub mod throttle;
pub mod web;
pub mod websocket;
