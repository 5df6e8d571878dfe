//! ngircd (Debian package `ngircd`) as a server under test: the configuration file the
//! bench writes for it and how it is started.
//!
//! The configuration raises every limit ngircd lets a configuration raise, so that the
//! figures measure its relaying and not its defences against a flood: a benchmark's clients
//! all come from 127.0.0.1 and send faster than any person. This module must not make
//! ngircd faster than a real deployment could be (no patched binary, no build options).

use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::servers::{self, Kind, Target};

/// Where Debian installs the daemon (`/usr/sbin` is not on every user's PATH).
const DEBIAN_PATH: &str = "/usr/sbin/ngircd";

/// The ngircd binary to run: Debian's, else whatever `ngircd` the PATH finds.
pub fn program() -> OsString {
    if Path::new(DEBIAN_PATH).exists() {
        DEBIAN_PATH.into()
    } else {
        "ngircd".into()
    }
}

/// Starts ngircd in the foreground with a configuration written into `dir`, listening on
/// 127.0.0.1 and a free port; its console log goes to `dir/server.log`.
pub fn start(mut command: Command, dir: PathBuf) -> io::Result<Target> {
    let port = servers::free_port()?;
    // ngircd reads every *.conf in IncludeDir; an empty one keeps /etc/ngircd out.
    let include = dir.join("conf.d");
    fs::create_dir_all(&include)?;
    let config = dir.join("ngircd.conf");
    fs::write(&config, config_text(port, &include))?;
    let log = File::create(dir.join("server.log"))?;
    command
        .arg("--nodaemon")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let child = command.spawn()?;
    let target = Target::new(
        Kind::Ngircd,
        child,
        SocketAddr::from(([127, 0, 0, 1], port)),
        dir,
    );
    servers::wait_listening(&target, port)?;
    Ok(target)
}

/// The configuration (ngircd.conf(5)). What it cannot switch off, because ngircd 26 fixes
/// it at compile time (src/ngircd/conn.c, defines.h):
/// - a client's commands are handled at most 3 per pass of the main loop, and its socket is
///   read again only once fewer than 512 bytes of its commands wait: a fast sender is paced
///   by the loop, not refused;
/// - a client whose unsent output would pass 32 KiB is disconnected ("Write buffer space
///   exhausted"): a receiver that falls behind is cut, which shows as `lost`;
/// - the listening socket's backlog is 10, so a burst of connections waits for SYN
///   retransmits (the bench keeps few sign-ins in flight for it, see `wire.rs`);
/// - penalties of 10 s or more (failed passwords; the bench sends none) stay;
/// - every connection is logged to the console, here `server.log` on tmpfs.
fn config_text(port: u16, include: &Path) -> String {
    format!(
        "[Global]
Name = bench.chat.invalid
Info = chat_bench
Listen = 127.0.0.1
Ports = {port}
MotdPhrase = chat_bench
[Limits]
# No limit on connections in all, per IP (every bench client is 127.0.0.1), or channels.
MaxConnections = 0
MaxConnectionsIP = 0
MaxJoins = 0
# 0 switches the per-command penalty and the flood throttle off (ngircd.conf(5)).
MaxPenaltyTime = 0
# Idle bench clients are never pinged (they would answer, but the PINGs would add load).
PingTimeout = 86400
PongTimeout = 86400
[Options]
# No lookups per connection: PAM, DNS and IDENT would each cost a subprocess or a query.
PAM = no
DNS = no
Ident = no
IncludeDir = {}
",
        include.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_lifts_every_limit_a_configuration_can() {
        let text = config_text(6999, Path::new("/tmp/x/conf.d"));
        for line in [
            "Listen = 127.0.0.1",
            "Ports = 6999",
            "MaxConnections = 0",
            "MaxConnectionsIP = 0",
            "MaxJoins = 0",
            "MaxPenaltyTime = 0",
            "PingTimeout = 86400",
            "PAM = no",
            "DNS = no",
            "Ident = no",
            "IncludeDir = /tmp/x/conf.d",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }
}
