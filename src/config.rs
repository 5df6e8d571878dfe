//! The command line: `chat_server [OPTIONS] [PORT]` turned into a [`Config`].
//!
//! This module owns every flag, its default and its usage text. Parsing is a pure function
//! from the argument list to an [`Action`], so it is tested with a table and never exits the
//! process itself; `main.rs` decides what to print and which exit code to use.

use std::fmt;
use std::net::IpAddr;
use std::num::IntErrorKind;
use std::path::PathBuf;
use std::time::Duration;

use crate::limits;
use crate::log::Level;
use crate::proxy::AddressRange;

/// Everything the server needs to know at start.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub port: u16,
    pub bind: IpAddr,
    pub data_dir: PathBuf,
    pub kdf_iterations: u32,
    pub max_clients: usize,
    /// 0 means no per-address limit. Not applied to loopback addresses.
    pub max_per_ip: usize,
    /// The per-address limit for loopback addresses (127.0.0.0/8, ::1); 0 means none.
    pub max_per_loopback: usize,
    /// Proxies whose connections begin with a PROXY protocol header naming the client.
    pub trusted_proxies: Vec<AddressRange>,
    pub sign_in_timeout: Duration,
    /// Lines per second after the burst; 0 turns rate limiting off.
    pub rate_per_sec: u32,
    pub rate_burst: u32,
    pub sendq_bytes: usize,
    pub log_level: Level,
    pub log_messages: bool,
    /// Also listen on UDP, on the TCP port's number (`udp.rs`).
    pub udp: bool,
    /// A UDP session silent this long ends.
    pub udp_idle: Duration,
    /// One time window of UDP codes; a code lives one to two windows.
    pub udp_code_window: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            port: 8081,
            bind: IpAddr::from([0, 0, 0, 0]),
            data_dir: PathBuf::from("ptchat-data"),
            kdf_iterations: limits::DEFAULT_KDF_ITERATIONS,
            max_clients: limits::DEFAULT_MAX_CLIENTS,
            max_per_ip: limits::DEFAULT_MAX_PER_IP,
            max_per_loopback: limits::DEFAULT_MAX_PER_LOOPBACK,
            trusted_proxies: Vec::new(),
            sign_in_timeout: limits::DEFAULT_SIGN_IN_TIMEOUT,
            rate_per_sec: limits::DEFAULT_RATE_PER_SEC,
            rate_burst: limits::DEFAULT_RATE_BURST,
            sendq_bytes: limits::DEFAULT_SENDQ_BYTES,
            log_level: Level::Info,
            log_messages: false,
            udp: false,
            udp_idle: limits::DEFAULT_UDP_IDLE,
            udp_code_window: limits::DEFAULT_UDP_CODE_WINDOW,
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Serve(Config),
    Help,
    Version,
}

/// A command line that makes no sense; `Display` is the one-line reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

pub const USAGE: &str = "\
Usage: chat_server [OPTIONS] [PORT]

A chat server for netcat clients. Connect with: nc HOST PORT

Arguments:
  PORT                     TCP port to listen on (default 8081; 0 picks a free one)

Options:
  --bind ADDR              address to listen on (default 0.0.0.0; :: for IPv6)
  --data-dir DIR           where accounts and stored messages live (default ./ptchat-data)
  --kdf-iterations N       PBKDF2 iterations for new passwords (default 600000;
                           lower is insecure, for tests and benchmarks only)
  --max-clients N          simultaneous connections (default 10000)
  --max-per-ip N           simultaneous connections per address, 0 = no limit (default 20);
                           loopback addresses have their own limit, below
  --max-per-loopback N     simultaneous connections per loopback address (127.0.0.0/8,
                           ::1), 0 = no limit (default 0: everyone logged in to this
                           machine, such as students on one shell host, shares 127.0.0.1)
  --trusted-proxy ADDR     a proxy (HAProxy, ...) that names its clients with a PROXY
                           protocol header, v1 or v2; its connections must begin with one.
                           An address or a prefix (10.0.0.0/24); repeat the option or
                           separate addresses with commas. See docs/DEPLOY.md
  --sign-in-timeout SECS   time allowed to sign in (default 60)
  --rate N                 lines per second per client after the burst, 0 = off (default 5)
  --burst N                lines a client may send at once (default 20)
  --sendq BYTES            outbound queue per client; a client that falls this far
                           behind is disconnected (default 262144)
  --log-level LEVEL        error, warn, info or debug (default info)
  --log-messages           also log message text (off by default, for privacy)
  --udp                    also listen on UDP, same port number (nc -u HOST PORT)
  --udp-idle SECS          end a UDP session silent this long (default 300)
  --udp-code-window SECS   a UDP code is valid for one to two of these (default 60)
  -h, --help               show this help
  -V, --version            show the version
";

/// Parses the arguments after the program name.
pub fn parse_args<S: AsRef<str>>(args: &[S]) -> Result<Action, UsageError> {
    let mut config = Config::default();
    let mut port = None;
    let mut args = args.iter().map(AsRef::as_ref);
    while let Some(arg) = args.next() {
        match arg {
            "-h" | "--help" => return Ok(Action::Help),
            "-V" | "--version" => return Ok(Action::Version),
            "--log-messages" => config.log_messages = true,
            "--udp" => config.udp = true,
            flag if flag.starts_with("--") => {
                let (name, inline) = match flag.split_once('=') {
                    Some((name, value)) => (name, Some(value)),
                    None => (flag, None),
                };
                // An unknown flag is reported as unknown, not as missing its value.
                if !VALUE_FLAGS.contains(&name) {
                    return Err(UsageError(format!("unknown option '{name}'")));
                }
                let value = match inline {
                    Some(value) => value,
                    None => args
                        .next()
                        .ok_or_else(|| UsageError(format!("{name} needs a value")))?,
                };
                apply_flag(&mut config, name, value)?;
            }
            short if short.starts_with('-') => {
                return Err(UsageError(format!("unknown option '{short}'")));
            }
            positional if port.is_none() => port = Some(parse_number(positional, "PORT")?),
            extra => return Err(UsageError(format!("unexpected argument '{extra}'"))),
        }
    }
    if let Some(port) = port {
        config.port = port;
    }
    Ok(Action::Serve(config))
}

/// Every flag that takes a value; [`apply_flag`] handles exactly these.
const VALUE_FLAGS: &[&str] = &[
    "--bind",
    "--data-dir",
    "--kdf-iterations",
    "--max-clients",
    "--max-per-ip",
    "--max-per-loopback",
    "--trusted-proxy",
    "--sign-in-timeout",
    "--rate",
    "--burst",
    "--sendq",
    "--log-level",
    "--udp-idle",
    "--udp-code-window",
];

fn apply_flag(config: &mut Config, name: &str, value: &str) -> Result<(), UsageError> {
    match name {
        "--bind" => {
            config.bind = value
                .parse()
                .map_err(|_| UsageError(format!("--bind: '{value}' is not an IP address")))?;
        }
        "--data-dir" if value.is_empty() => {
            return Err(UsageError("--data-dir needs a value".into()));
        }
        "--data-dir" => config.data_dir = PathBuf::from(value),
        "--kdf-iterations" => {
            config.kdf_iterations = parse_number(value, name)?;
            if config.kdf_iterations == 0 {
                return Err(UsageError("--kdf-iterations must be at least 1".into()));
            }
        }
        "--max-clients" => config.max_clients = parse_number(value, name)?,
        "--max-per-ip" => config.max_per_ip = parse_number(value, name)?,
        "--max-per-loopback" => config.max_per_loopback = parse_number(value, name)?,
        "--trusted-proxy" => {
            for item in value.split(',').map(str::trim) {
                let range =
                    AddressRange::parse(item).map_err(|e| UsageError(format!("{name}: {e}")))?;
                config.trusted_proxies.push(range);
            }
        }
        "--sign-in-timeout" => {
            let secs: u64 = parse_number(value, name)?;
            config.sign_in_timeout = Duration::from_secs(secs.max(1));
        }
        "--rate" => config.rate_per_sec = parse_number(value, name)?,
        "--burst" => config.rate_burst = parse_number::<u32>(value, name)?.max(1),
        "--sendq" => config.sendq_bytes = parse_number::<usize>(value, name)?.max(1024),
        "--udp-idle" => config.udp_idle = parse_seconds(value, name)?,
        "--udp-code-window" => config.udp_code_window = parse_seconds(value, name)?,
        "--log-level" => {
            config.log_level = Level::parse(value).ok_or_else(|| {
                UsageError(format!(
                    "--log-level: '{value}' is not error, warn, info or debug"
                ))
            })?;
        }
        _ => return Err(UsageError(format!("unknown option '{name}'"))),
    }
    Ok(())
}

/// A number of seconds, at least one: a window or a timeout of zero would mean "never".
fn parse_seconds(value: &str, what: &str) -> Result<Duration, UsageError> {
    let secs: u64 = parse_number(value, what)?;
    if secs == 0 {
        return Err(UsageError(format!("{what} must be at least 1")));
    }
    Ok(Duration::from_secs(secs))
}

/// An unsigned number for a flag or the port: "out of range" for digits too large for it,
/// "not a valid number" for anything else.
fn parse_number<T: Number>(value: &str, what: &str) -> Result<T, UsageError> {
    let out_of_range = || UsageError(format!("{what}: '{value}' is out of range (0-{})", T::MAX));
    match value.parse::<u64>() {
        Ok(n) => T::try_from(n).map_err(|_| out_of_range()),
        Err(e) if *e.kind() == IntErrorKind::PosOverflow => Err(out_of_range()),
        Err(_) => Err(UsageError(format!(
            "{what}: '{value}' is not a valid number"
        ))),
    }
}

/// The unsigned integer types a flag can hold, with their largest value for the error line.
trait Number: TryFrom<u64> {
    const MAX: u64;
}

impl Number for u16 {
    const MAX: u64 = u16::MAX as u64;
}

impl Number for u32 {
    const MAX: u64 = u32::MAX as u64;
}

impl Number for u64 {
    const MAX: u64 = u64::MAX;
}

impl Number for usize {
    const MAX: u64 = usize::MAX as u64;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(f: impl FnOnce(&mut Config)) -> Result<Action, UsageError> {
        let mut config = Config::default();
        f(&mut config);
        Ok(Action::Serve(config))
    }

    fn error(message: &str) -> Result<Action, UsageError> {
        Err(UsageError(message.into()))
    }

    fn ranges(texts: &[&str]) -> Vec<AddressRange> {
        texts
            .iter()
            .map(|text| AddressRange::parse(text).expect(text))
            .collect()
    }

    /// The usage text names the defaults the server really uses.
    #[test]
    fn usage_text_states_the_real_defaults() {
        let rows: Vec<(&str, String)> = vec![
            (
                "--kdf-iterations",
                limits::DEFAULT_KDF_ITERATIONS.to_string(),
            ),
            ("--max-clients", limits::DEFAULT_MAX_CLIENTS.to_string()),
            ("--max-per-ip", limits::DEFAULT_MAX_PER_IP.to_string()),
            (
                "--sign-in-timeout",
                limits::DEFAULT_SIGN_IN_TIMEOUT.as_secs().to_string(),
            ),
            ("--rate", limits::DEFAULT_RATE_PER_SEC.to_string()),
            ("--burst", limits::DEFAULT_RATE_BURST.to_string()),
            ("--sendq", limits::DEFAULT_SENDQ_BYTES.to_string()),
            ("--udp-idle", limits::DEFAULT_UDP_IDLE.as_secs().to_string()),
            (
                "--udp-code-window",
                limits::DEFAULT_UDP_CODE_WINDOW.as_secs().to_string(),
            ),
        ];
        for (flag, default) in rows {
            let start = USAGE.find(&format!("  {flag} ")).expect(flag);
            let entry = &USAGE[start..];
            let end = entry[3..].find("\n  -").map_or(entry.len(), |e| e + 3);
            assert!(
                entry[..end].contains(&format!("(default {default}")),
                "{flag}: {:?}",
                &entry[..end]
            );
        }
    }

    #[test]
    fn argument_table() {
        let rows: Vec<(&[&str], Result<Action, UsageError>)> = vec![
            (&[], serve(|_| {})),
            (&["9000"], serve(|c| c.port = 9000)),
            (&["0"], serve(|c| c.port = 0)),
            (&["--help"], Ok(Action::Help)),
            (&["-h"], Ok(Action::Help)),
            (&["9000", "--version"], Ok(Action::Version)),
            (
                &["--bind", "::"],
                serve(|c| c.bind = "::".parse().expect("ipv6")),
            ),
            (
                &["--bind=127.0.0.1", "5"],
                serve(|c| {
                    c.bind = [127, 0, 0, 1].into();
                    c.port = 5;
                }),
            ),
            (
                &["--data-dir", "/tmp/x"],
                serve(|c| c.data_dir = "/tmp/x".into()),
            ),
            (
                &["--kdf-iterations", "10"],
                serve(|c| c.kdf_iterations = 10),
            ),
            (
                &["--max-per-ip", "0", "--rate", "0"],
                serve(|c| {
                    c.max_per_ip = 0;
                    c.rate_per_sec = 0;
                }),
            ),
            (
                &["--log-level", "debug", "--log-messages"],
                serve(|c| {
                    c.log_level = Level::Debug;
                    c.log_messages = true;
                }),
            ),
            (
                &["--sign-in-timeout", "5"],
                serve(|c| c.sign_in_timeout = Duration::from_secs(5)),
            ),
            (&["--sendq", "4096"], serve(|c| c.sendq_bytes = 4096)),
            (&["--udp"], serve(|c| c.udp = true)),
            (
                &["--udp", "--udp-idle", "90", "--udp-code-window=5"],
                serve(|c| {
                    c.udp = true;
                    c.udp_idle = Duration::from_secs(90);
                    c.udp_code_window = Duration::from_secs(5);
                }),
            ),
            (&["--udp-idle", "0"], error("--udp-idle must be at least 1")),
            (
                &["--udp-code-window", "x"],
                error("--udp-code-window: 'x' is not a valid number"),
            ),
            (&["--udp-idle"], error("--udp-idle needs a value")),
            (&["--udp=1"], error("unknown option '--udp'")),
            (&["65535"], serve(|c| c.port = 65535)),
            (&["65536"], error("PORT: '65536' is out of range (0-65535)")),
            (&["99999"], error("PORT: '99999' is out of range (0-65535)")),
            (
                &["99999999999999999999999"],
                error("PORT: '99999999999999999999999' is out of range (0-65535)"),
            ),
            (&["abc"], error("PORT: 'abc' is not a valid number")),
            (&["-1"], error("unknown option '-1'")),
            (&["8o81"], error("PORT: '8o81' is not a valid number")),
            (&[""], error("PORT: '' is not a valid number")),
            (
                &["--rate", "4294967296"],
                error("--rate: '4294967296' is out of range (0-4294967295)"),
            ),
            (&["1", "2"], error("unexpected argument '2'")),
            (&["--bind"], error("--bind needs a value")),
            (
                &["--bind", "localhost"],
                error("--bind: 'localhost' is not an IP address"),
            ),
            (
                &["--frobnicate", "1"],
                error("unknown option '--frobnicate'"),
            ),
            (&["-p", "1"], error("unknown option '-p'")),
            (&["--frobnicate"], error("unknown option '--frobnicate'")),
            (&["--frob=1"], error("unknown option '--frob'")),
            (&["--data-dir="], error("--data-dir needs a value")),
            (
                &["--kdf-iterations", "0"],
                error("--kdf-iterations must be at least 1"),
            ),
            (
                &["--rate", "-1"],
                error("--rate: '-1' is not a valid number"),
            ),
            (
                &["--log-level", "loud"],
                error("--log-level: 'loud' is not error, warn, info or debug"),
            ),
            (
                &["--max-per-loopback", "30"],
                serve(|c| c.max_per_loopback = 30),
            ),
            (
                &["--max-per-loopback", "x"],
                error("--max-per-loopback: 'x' is not a valid number"),
            ),
            (
                &["--trusted-proxy", "127.0.0.9"],
                serve(|c| c.trusted_proxies = ranges(&["127.0.0.9"])),
            ),
            (
                &[
                    "--trusted-proxy",
                    "10.0.0.5,10.1.0.0/16",
                    "--trusted-proxy=::1, 2001:db8::/32",
                ],
                serve(|c| {
                    c.trusted_proxies =
                        ranges(&["10.0.0.5", "10.1.0.0/16", "::1", "2001:db8::/32"]);
                }),
            ),
            (
                &["--trusted-proxy", "haproxy.local"],
                error(
                    "--trusted-proxy: 'haproxy.local' is not an IP address or a prefix like 10.0.0.0/24",
                ),
            ),
            (
                &["--trusted-proxy", "10.0.0.5,"],
                error("--trusted-proxy: '' is not an IP address or a prefix like 10.0.0.0/24"),
            ),
            (
                &["--trusted-proxy", "10.0.0.5/8"],
                error(
                    "--trusted-proxy: '10.0.0.5/8' has bits set after its /8 prefix; did you mean 10.0.0.0/8?",
                ),
            ),
            (&["--trusted-proxy"], error("--trusted-proxy needs a value")),
        ];
        for (args, expected) in rows {
            assert_eq!(parse_args(args), expected, "args {args:?}");
        }
    }
}
