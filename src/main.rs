//! `chat_server`: the binary. Parses the command line, starts the server, reports failure.
//!
//! Try it with two terminals:
//!
//! ```text
//! $ chat_server 8081            # prints: Chat server started on port 8081.
//! $ nc 127.0.0.1 8081           # terminal 1: enter a name, then a password
//! $ nc 127.0.0.1 8081           # terminal 2: the same, then type a line
//! ```
//!
//! This file must stay thin: everything else lives in the library (`src/lib.rs`).

use std::io::Write;
use std::process::ExitCode;

use ptchat::config::{self, Action, USAGE};
use ptchat::log;
use ptchat::server::Server;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match config::parse_args(&args) {
        Ok(Action::Serve(config)) => config,
        Ok(Action::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Action::Version) => {
            println!("chat_server {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("chat_server: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    log::set_level(config.log_level);
    log::set_log_messages(config.log_messages);
    install_panic_logger();
    let server = match Server::bind(config) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("chat_server: {e}");
            return ExitCode::from(1);
        }
    };
    let port = match server.local_addr() {
        Ok(addr) => addr.port(),
        Err(e) => {
            eprintln!("chat_server: cannot read the bound address: {e}");
            return ExitCode::from(1);
        }
    };
    println!("Chat server started on port {port}.");
    if let Some(port) = server.udp_port() {
        println!("UDP on port {port}.");
    }
    let _ = std::io::stdout().flush();
    server.run();
    ExitCode::SUCCESS
}

/// Panics become one log line in the usual format instead of a multi-line dump.
fn install_panic_logger() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        let location = info.location().map(|l| l.to_string()).unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        log::error(
            "panic",
            &[("thread", &name), ("at", &location), ("message", &message)],
        );
    }));
}
