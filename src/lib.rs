//! ptchat: a chat server for netcat clients, one thread per client, std only.
//!
//! Read the modules in this order to follow one message through the server:
//! `server` (accepting, one thread per client; `admission` counts connections, `arrival`
//! reads a trusted proxy's header) -> `connection` (chat or web?) -> `telnet`
//! (telnet's commands out of the bytes, its options refused) -> `line_reader` (framing) ->
//! `clean` (what reaches other users' terminals) -> `session` (the loop, the rate limit, the
//! commands; `sign_in` for the steps before) -> `protocol` (syntax and replies) ->
//! `registry` (who receives what, under the one lock) -> `outbox` (each client's queue, and
//! who writes it once the lock is released; `delivery` is what a sender does then) ->
//! `transport` (the socket calls). Around them:
//! `store` and `password` make accounts durable and safe, `throttle` and `ratelimit` slow
//! abusers down, `capacity` and `threads` keep the server within the machine's limits,
//! `limits` names every number, `config` reads the command line, `log`, `stats` and `clock`
//! serve the operator, `crypto` holds SHA-256, HMAC and PBKDF2. The other ways in: `udp`
//! lets `nc -u` users into the same chat; on the chat port, `connection` tells a browser
//! from a netcat user (`http`'s sniff), and `http` (one request head; its responses),
//! `websocket` (the handshake; the frame format; client frames as lines), `ws_transport`
//! (lines out as frames) and `web` (the page and its routes), with `sha1` and `base64` for
//! the handshake, serve the web page.
//! docs/ARCHITECTURE.md draws the whole picture.

#![forbid(unsafe_code)]

pub mod admission;
pub mod arrival;
pub mod base64;
pub mod capacity;
pub mod clean;
pub mod clock;
pub mod config;
pub mod connection;
pub mod crypto;
pub mod delivery;
pub mod http;
pub mod limits;
pub mod line_reader;
pub mod log;
pub mod outbox;
pub mod password;
pub mod protocol;
pub mod proxy;
pub mod ratelimit;
pub mod registry;
pub mod server;
pub mod session;
pub mod sha1;
pub mod shared;
pub mod sign_in;
pub mod stats;
pub mod store;
pub mod telnet;
pub mod threads;
pub mod throttle;
pub mod transport;
pub mod udp;
pub mod web;
pub mod websocket;
pub mod ws_transport;
