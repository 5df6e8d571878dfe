//! haproxy in front of the server, as docs/DEPLOY.md configures it: a certificate, a free
//! port, and a running haproxy killed when dropped (tests/proxy.rs, tests/browser.rs).

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::wait_for;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Debian installs haproxy in /usr/sbin, which is not on every user's PATH.
fn haproxy() -> Command {
    if have("haproxy") {
        Command::new("haproxy")
    } else {
        Command::new("/usr/sbin/haproxy")
    }
}

/// True if haproxy and openssl are here; otherwise `test` is skipped, or fails under CI,
/// whose `.ci/run` installs them.
pub fn here_or_skip(test: &str) -> bool {
    let here = installed();
    if !here {
        super::skip_or_fail(
            test,
            "PTCHAT_REQUIRE_HAPROXY",
            "haproxy and openssl are needed (.ci/run installs them)",
        );
    }
    here
}

/// True if haproxy and openssl (for the certificate) are installed.
pub fn installed() -> bool {
    let haproxy_here = haproxy()
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    haproxy_here && have("openssl")
}

/// A self-signed certificate for `localhost` and 127.0.0.1 and its key in one PEM file,
/// as haproxy's `crt` wants it. Returns the file's path.
pub fn make_certificate(dir: &Path) -> String {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl req");
    assert!(made.status.success(), "openssl req failed: {made:?}");
    let both = dir.join("chat.pem");
    let pem = [
        std::fs::read(&cert).expect("cert"),
        std::fs::read(&key).expect("key"),
    ]
    .concat();
    std::fs::write(&both, pem).expect("write chat.pem");
    both.display().to_string()
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A running haproxy; killed when dropped.
pub struct Haproxy {
    child: Child,
}

impl Haproxy {
    /// Checks `config`, starts haproxy with it, and waits until it accepts on every port
    /// in `ports`.
    pub fn start(dir: &Path, config: &str, ports: &[u16]) -> Haproxy {
        let file = dir.join("haproxy.cfg");
        std::fs::write(&file, config).expect("write haproxy.cfg");
        let checked = haproxy()
            .arg("-c")
            .arg("-f")
            .arg(&file)
            .output()
            .expect("run haproxy -c");
        assert!(checked.status.success(), "haproxy -c: {checked:?}");
        let child = haproxy()
            .arg("-db")
            .arg("-f")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy");
        let haproxy = Haproxy { child };
        for &port in ports {
            wait_for(&format!("haproxy to listen on {port}"), || {
                TcpStream::connect(("127.0.0.1", port)).ok()
            });
        }
        haproxy
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
