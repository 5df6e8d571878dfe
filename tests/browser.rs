//! A real browser uses the page: headless Chromium, driven through its DevTools protocol
//! (CDP) the way a person would use it. It finds the controls by their labels, types a name
//! and a password, clicks "Sign in", types a line and presses Enter, and a netcat user
//! receives the line; the netcat user answers, and the answer appears on the page as text.
//! A screenshot of the page is saved as `target/browser/chat.png` for people to look at
//! (and Chromium's own messages as `chat.log` beside it).
//!
//! Two more runs go through haproxy configured as docs/DEPLOY.md shows, terminating TLS:
//! the page over `https://` and its WebSocket over `wss://` on the same port, once with
//! haproxy in TCP mode (the chat's own setup) and once in HTTP mode.
//!
//! CDP is JSON over a WebSocket: the test speaks it with the std-only client of
//! `tests/common/ws.rs`, builds each command by hand and reads only the fields it needs.
//!
//! Chromium (Debian package `chromium`) must be installed. Without it the test prints
//! SKIPPED and passes, except under CI or with `PTCHAT_REQUIRE_CHROMIUM` set (`.ci/run`
//! installs it), where it fails.
//!
//! The browser gets a fresh profile and loads the page once: Chromium connects ahead of
//! time to a site it has seen, and sends a request on such a connection seconds later,
//! which the server, having greeted the silent connection as a netcat user, cannot serve
//! (docs/PROTOCOL.md, "Telling a browser from a netcat user").

mod common;

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::haproxy::{self, Haproxy};
use common::ws::{Frame, OP_CONTINUATION, OP_TEXT, WsClient};
use common::{DEADLINE, Server, TempDir, skip_or_fail, wait_for};

const REQUIRE_VAR: &str = "PTCHAT_REQUIRE_CHROMIUM";

#[test]
fn chromium_signs_in_and_chats_with_a_netcat_user() {
    let started = Instant::now();
    if !chromium_here("chromium_signs_in_and_chats_with_a_netcat_user") {
        return;
    }
    let server = Server::start();
    let page_url = format!("http://127.0.0.1:{}/", server.port);
    let screenshot = chat_through_the_page(&server, &page_url, &[], "chat.png");
    eprintln!(
        "browser test: {:?}, screenshot {}",
        started.elapsed(),
        screenshot.display()
    );
}

/// docs/DEPLOY.md's haproxy sections as they are (TCP mode, TLS terminated, PROXY header):
/// the page over https:// and its WebSocket over wss://, through the same port.
#[test]
fn chromium_uses_https_and_wss_through_haproxy_in_tcp_mode() {
    let test = "chromium_uses_https_and_wss_through_haproxy_in_tcp_mode";
    if !chromium_here(test) || !haproxy::here_or_skip(test) {
        return;
    }
    through_haproxy(
        |pem, tls_port, chat_port| {
            format!(
                "
frontend chat_tls
    mode tcp
    option tcplog
    bind 127.0.0.1:{tls_port} ssl crt {pem}
    timeout client 1h
    default_backend chat

backend chat
    mode tcp
    timeout connect 5s
    timeout server 1h
    server chat 127.0.0.1:{chat_port} source 127.0.0.9 send-proxy check
"
            )
        },
        "chat-haproxy-tcp.png",
    );
}

/// docs/DEPLOY.md's `mode http` frontend for the page: haproxy connects to the server only
/// once a request has arrived, and relays the WebSocket after the upgrade.
#[test]
fn chromium_uses_https_and_wss_through_haproxy_in_http_mode() {
    let test = "chromium_uses_https_and_wss_through_haproxy_in_http_mode";
    if !chromium_here(test) || !haproxy::here_or_skip(test) {
        return;
    }
    through_haproxy(
        |pem, tls_port, chat_port| {
            format!(
                "
frontend web_tls
    mode http
    option httplog
    bind 127.0.0.1:{tls_port} ssl crt {pem}
    timeout client 1h
    timeout http-request 10s
    default_backend web

backend web
    mode http
    timeout connect 5s
    timeout server 1h
    timeout tunnel 1h
    server chat 127.0.0.1:{chat_port} source 127.0.0.9 send-proxy
"
            )
        },
        "chat-haproxy-http.png",
    );
}

/// Starts a server trusting 127.0.0.9, haproxy with the sections `config` writes (given the
/// certificate, haproxy's port and the server's port), and chats through the page at
/// `https://127.0.0.1:PORT/`; the server's log must name the browser's own address.
fn through_haproxy(config: impl Fn(&str, u16, u16) -> String, screenshot: &str) {
    let started = Instant::now();
    let server = Server::start_with(&["--trusted-proxy", "127.0.0.9"]);
    let dir = TempDir::new("haproxy-web");
    let pem = haproxy::make_certificate(dir.path());
    let tls_port = haproxy::free_port();
    let config = format!(
        "global\n    maxconn 1000\n{}",
        config(&pem, tls_port, server.port)
    );
    let _haproxy = Haproxy::start(dir.path(), &config, &[tls_port]);
    let page_url = format!("https://127.0.0.1:{tls_port}/");
    let shot = chat_through_the_page(
        &server,
        &page_url,
        &["--ignore-certificate-errors"],
        screenshot,
    );
    let log = server.log();
    for expected in [
        "INFO http peer=127.0.0.1:",
        "method=GET path=/ status=200",
        "method=GET path=/ws status=101",
        "INFO sign_in peer=127.0.0.1:",
    ] {
        assert!(log.contains(expected), "no {expected:?} in log:\n{log}");
    }
    // The web user is logged under the browser's own address, with haproxy's beside it.
    let web_peer = log
        .lines()
        .find_map(|l| {
            l.split("INFO sign_in peer=")
                .nth(1)?
                .strip_suffix(" user=webuser")
        })
        .unwrap_or_else(|| panic!("no sign-in of webuser in log:\n{log}"));
    let connect = format!("INFO connect peer={web_peer} proxy=127.0.0.9:");
    assert!(log.contains(&connect), "no {connect:?} in log:\n{log}");
    eprintln!(
        "browser test through haproxy: {:?}, screenshot {}",
        started.elapsed(),
        shot.display()
    );
}

/// A netcat user signs in; Chromium loads `page_url` and, as a person would, signs in as
/// webuser, sends a line the netcat user receives and shows the netcat user's answer as
/// text. Saves a screenshot as `target/browser/SCREENSHOT` and returns its path.
fn chat_through_the_page(
    server: &Server,
    page_url: &str,
    chromium_flags: &[&str],
    screenshot: &str,
) -> PathBuf {
    let mut nc = server.sign_in("ncuser", "nc-pass");
    let output = output_dir();
    let log = output.join(Path::new(screenshot).with_extension("log"));
    let chromium = Chromium::start(&log, chromium_flags);
    let mut page = chromium.open(page_url);
    page.wait_for_js(
        "the page to load",
        "location.href + ' ' + document.readyState",
        &format!("{page_url} complete"),
    );
    page.wait_for_js(
        "the page to be ready",
        "document.querySelector('[role=status]').textContent",
        "Not connected.",
    );

    // Sign in as a person would: type into the fields labelled Name and Password, click
    // the button that says Sign in.
    page.type_into("Name", "webuser");
    page.type_into("Password", "web-pass");
    page.click_button("Sign in");
    page.wait_for_text("* Welcome, webuser! You are signed in. Type ~:h: for help.");
    nc.expect("* webuser joined.");
    page.wait_for_js(
        "the status line to say who is signed in",
        "document.querySelector('[role=status]').textContent",
        "Signed in as webuser.",
    );

    // A line typed on the page, sent with Enter, reaches the netcat user.
    page.type_into("Message", "hello from chromium");
    page.press_enter();
    nc.expect("webuser: hello from chromium");

    // A line from the netcat user appears on the page, as text: markup stays characters.
    nc.send("hello from netcat <img src=x onerror=alert(1)>");
    page.wait_for_text("ncuser: hello from netcat <img src=x onerror=alert(1)>");
    let images = page.evaluate("String(document.querySelectorAll('img').length)");
    assert_eq!(images, "0", "the line became markup");

    // The netcat user is in the page's user list.
    page.wait_for_js(
        "the user list",
        "[...document.querySelectorAll('#users button')].map(b => b.textContent).join(',')",
        "ncuseronline,webuseronline",
    );

    let path = output.join(screenshot);
    page.screenshot(&path);
    path
}

fn chromium_here(test: &str) -> bool {
    let here = chromium_installed();
    if !here {
        skip_or_fail(
            test,
            REQUIRE_VAR,
            "chromium is not installed (Debian package `chromium`)",
        );
    }
    here
}

fn chromium_installed() -> bool {
    Command::new("chromium")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `target/browser/`, next to the test binaries (`target/debug/deps/`).
fn output_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the test binary is under target/PROFILE/deps/");
    let dir = target.join("browser");
    fs::create_dir_all(&dir).expect("create target/browser");
    dir
}

/// A headless Chromium with a fresh profile, in its own process group; killed (the whole
/// group, by its id) and its profile removed when dropped.
struct Chromium {
    child: Child,
    /// The DevTools port and the browser's own endpoint, from `DevToolsActivePort`.
    port: u16,
    browser_path: String,
    _profile: TempDir,
}

impl Chromium {
    /// Starts Chromium with `extra_flags`; its own messages go to `log`.
    fn start(log: &Path, extra_flags: &[&str]) -> Chromium {
        let profile = TempDir::new("chromium");
        let log = File::create(log).expect("create Chromium's log file");
        let child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=900,600",
                "--remote-debugging-port=0",
            ])
            .args(extra_flags)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start chromium");
        let mut chromium = Chromium {
            child,
            port: 0,
            browser_path: String::new(),
            _profile: profile,
        };
        let active_port = chromium._profile.path().join("DevToolsActivePort");
        let (port, browser_path) = wait_for("chromium's DevToolsActivePort", || {
            let text = fs::read_to_string(&active_port).ok()?;
            let mut lines = text.lines();
            let port = lines.next()?.trim().parse().ok()?;
            let path = lines.next()?.trim().to_string();
            Some((port, path))
        });
        chromium.port = port;
        chromium.browser_path = browser_path;
        chromium
    }

    /// Opens a new tab at `url` and connects to it.
    fn open(&self, url: &str) -> Cdp {
        let mut browser = Cdp::connect(self.port, &self.browser_path);
        let reply = browser.call(
            "Target.createTarget",
            &format!("{{\"url\":{}}}", json_string(url)),
        );
        let target = string_field(&reply, "targetId").expect("a targetId");
        Cdp::connect(self.port, &format!("/devtools/page/{target}"))
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // The group is Chromium's own (process_group(0) above): its id is Chromium's pid.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One DevTools connection (the browser's or a page's): commands out, replies in.
struct Cdp {
    ws: WsClient,
    next_id: u64,
}

impl Cdp {
    fn connect(port: u16, path: &str) -> Cdp {
        let ws = WsClient::connect_with(port, path, &[])
            .unwrap_or_else(|refused| panic!("DevTools refused {path}: {refused:?}"));
        Cdp { ws, next_id: 1 }
    }

    /// Sends `method` with `params` (a JSON object) and returns the reply, skipping events.
    /// An error reply fails the test.
    fn call(&mut self, method: &str, params: &str) -> String {
        let reply = self.call_raw(method, params);
        assert!(!reply.contains("\"error\":{"), "{method} failed: {reply}");
        reply
    }

    /// [`Cdp::call`], error replies included.
    fn call_raw(&mut self, method: &str, params: &str) -> String {
        let id = self.next_id;
        self.next_id += 1;
        let command = format!("{{\"id\":{id},\"method\":\"{method}\",\"params\":{params}}}");
        self.ws.send_text(&command);
        let reply_start = format!("{{\"id\":{id},");
        let deadline = Instant::now() + DEADLINE;
        loop {
            let message = self.next_message(deadline, method);
            if message.starts_with(&reply_start) {
                return message;
            }
        }
    }

    /// The next whole text message, joining fragments.
    fn next_message(&mut self, deadline: Instant, waiting_for: &str) -> String {
        let mut fragments: Vec<u8> = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.ws.read_frame_within(left) {
                Some(Frame::Text(text)) if fragments.is_empty() => return text,
                Some(Frame::Odd { first, payload, .. })
                    if first & 0x80 == 0 && matches!(first & 0x0f, OP_TEXT | OP_CONTINUATION) =>
                {
                    fragments.extend(payload);
                }
                Some(Frame::Odd { first, payload, .. })
                    if first & 0x0f == OP_CONTINUATION && !fragments.is_empty() =>
                {
                    fragments.extend(payload);
                    return String::from_utf8(fragments).expect("CDP speaks UTF-8");
                }
                Some(Frame::Ping(_) | Frame::Pong(_)) => {}
                other => panic!("waiting for the reply to {waiting_for}: got {other:?}"),
            }
        }
    }

    /// Evaluates `expression` in the page; returns its value as a string.
    fn evaluate(&mut self, expression: &str) -> String {
        self.try_evaluate(expression)
            .unwrap_or_else(|reply| panic!("{expression} failed: {reply}"))
    }

    /// [`Cdp::evaluate`], or the reply if the expression threw or could not run (while a
    /// page loads, say).
    fn try_evaluate(&mut self, expression: &str) -> Result<String, String> {
        let params = format!(
            "{{\"expression\":{},\"returnByValue\":true}}",
            json_string(&format!("String({expression})"))
        );
        let reply = self.call_raw("Runtime.evaluate", &params);
        if reply.contains("\"exceptionDetails\"") || reply.contains("\"error\":{") {
            return Err(reply);
        }
        string_field(&reply, "value").ok_or(reply)
    }

    /// Polls `expression` until it evaluates to `want`.
    fn wait_for_js(&mut self, what: &str, expression: &str, want: &str) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let got = self.try_evaluate(expression);
            if got.as_deref() == Ok(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {DEADLINE:?}: {expression} is {got:?}, not {want:?}; \
                 the page shows: {}",
                self.evaluate("document.body.innerText")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the message list shows `line` as one of its items, as text.
    fn wait_for_text(&mut self, line: &str) {
        let expression = format!(
            "[...document.querySelectorAll('[role=log] li')].some(li => li.textContent.endsWith({}))",
            json_string(line)
        );
        self.wait_for_js(&format!("line {line:?} on the page"), &expression, "true");
    }

    /// Focuses the control whose label says `label` and types `text` into it.
    fn type_into(&mut self, label: &str, text: &str) {
        let focus = format!(
            "(() => {{ const label = [...document.querySelectorAll('label')]\
               .find(l => l.textContent.trim() === {label}); \
               if (!label || !label.control) return 'no control labelled ' + {label}; \
               if (label.control.disabled) return 'disabled'; \
               label.control.focus(); \
               return document.activeElement === label.control ? 'focused' : 'not focused'; }})()",
            label = json_string(label)
        );
        assert_eq!(
            self.evaluate(&focus),
            "focused",
            "the control labelled {label}"
        );
        self.call(
            "Input.insertText",
            &format!("{{\"text\":{}}}", json_string(text)),
        );
        assert_eq!(self.evaluate("document.activeElement.value"), text);
    }

    /// Clicks, with the mouse, the middle of the button whose text is `text`.
    fn click_button(&mut self, text: &str) {
        let find = format!(
            "(() => {{ const b = [...document.querySelectorAll('button')]\
               .find(b => b.textContent.trim() === {text} && b.offsetParent !== null); \
               if (!b) return 'none'; const r = b.getBoundingClientRect(); \
               return (r.x + r.width / 2) + ',' + (r.y + r.height / 2); }})()",
            text = json_string(text)
        );
        let at = self.evaluate(&find);
        let (x, y) = at
            .split_once(',')
            .unwrap_or_else(|| panic!("no visible button {text:?}: {at}"));
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                &format!(
                    "{{\"type\":\"{kind}\",\"x\":{x},\"y\":{y},\"button\":\"left\",\"clickCount\":1}}"
                ),
            );
        }
    }

    fn press_enter(&mut self) {
        for kind in ["keyDown", "keyUp"] {
            let text = if kind == "keyDown" {
                ",\"text\":\"\\r\""
            } else {
                ""
            };
            self.call(
                "Input.dispatchKeyEvent",
                &format!(
                    "{{\"type\":\"{kind}\",\"key\":\"Enter\",\"code\":\"Enter\",\
                     \"windowsVirtualKeyCode\":13,\"nativeVirtualKeyCode\":13{text}}}"
                ),
            );
        }
    }

    /// Saves a PNG of the page at `path`.
    fn screenshot(&mut self, path: &Path) {
        let reply = self.call("Page.captureScreenshot", "{\"format\":\"png\"}");
        let data = string_field(&reply, "data").expect("screenshot data");
        let png = ptchat::base64::decode(&data).expect("screenshot is base64");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
        fs::write(path, png).expect("write the screenshot");
    }
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The first string value of `"key":` in a JSON text, unescaped. Enough for CDP replies,
/// whose keys of interest appear once.
fn string_field(json: &str, key: &str) -> Option<String> {
    let start = json.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let mut out = String::new();
    let mut chars = json[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                'u' => {
                    let code: String = chars.by_ref().take(4).collect();
                    let unit = u32::from_str_radix(&code, 16).ok()?;
                    // A character outside the BMP comes as a surrogate pair.
                    let c = if (0xd800..0xdc00).contains(&unit) {
                        let low: String = chars.by_ref().skip(2).take(4).collect();
                        let low = u32::from_str_radix(&low, 16).ok()?;
                        char::from_u32(0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00))?
                    } else {
                        char::from_u32(unit)?
                    };
                    out.push(c);
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

#[test]
fn json_helpers_round_trip() {
    let rows = [
        "plain",
        "quote \" and backslash \\",
        "line\nbreak\tand\rreturn",
        "<img src=x onerror=alert(1)>",
        "caf\u{e9} \u{1f600}",
        "\u{1}",
    ];
    for text in rows {
        let json = format!(
            "{{\"id\":1,\"result\":{{\"value\":{}}}}}",
            json_string(text)
        );
        assert_eq!(
            string_field(&json, "value").as_deref(),
            Some(text),
            "{json}"
        );
    }
    // As Chromium escapes: \u for controls, a surrogate pair outside the BMP, \/ .
    let chromium = r#"{"value":"a\u0001b \ud83d\ude00 \/x"}"#;
    assert_eq!(
        string_field(chromium, "value").as_deref(),
        Some("a\u{1}b \u{1f600} /x")
    );
    assert_eq!(string_field("{\"other\":\"x\"}", "value"), None);
}

/// Chromium opens connections ahead of need and sends a request on one seconds later; the
/// server greets such a silent connection as a netcat user after its sniff wait, and it
/// can serve no page any more. A reload must still show the page: Chromium prefers the
/// connection it already used, which the server keeps open (`HTTP_KEEP_ALIVE`).
#[test]
fn reloading_the_page_shows_it_again() {
    if !chromium_here("reloading_the_page_shows_it_again") {
        return;
    }
    let server = Server::start();
    let page_url = format!("http://127.0.0.1:{}/", server.port);
    let chromium = Chromium::start(&output_dir().join("reloads.log"), &[]);
    let mut page = chromium.open(&page_url);
    page.wait_for_js("the page", "document.title", "ptchat");
    for reload in 1..=4 {
        // A person's pause, longer than the sniff wait: any connection Chromium opened
        // ahead and left silent has been greeted as a chat user by now.
        std::thread::sleep(Duration::from_secs(1));
        // A mark on this document: the reloaded one has none.
        page.evaluate("window.beforeReload = true");
        page.call_raw("Page.reload", "{}");
        page.wait_for_js(
            &format!("the page again after reload {reload}"),
            "window.beforeReload === undefined && document.readyState === 'complete' \
             && document.title",
            "ptchat",
        );
    }
    let served = server.log().matches("path=/ status=200").count();
    assert_eq!(served, 5, "{}", server.log());
}
