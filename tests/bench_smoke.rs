//! Keeps the benchmark from rotting: `chat_bench --quick` runs every scenario at toy sizes
//! against the debug `chat_server`, and against ngircd over IRC when ngircd is installed,
//! and must report exact delivery counts. It asserts no speed (speed goals live in
//! `make bench`, see docs/PERFORMANCE.md).

mod common;

use std::path::Path;
use std::process::{Command, Output};

const SCENARIOS: [&str; 5] = [
    "throughput",
    "latency_100",
    "latency",
    "scale",
    "slow_consumer",
];

/// Runs `chat_bench --quick` with `extra` arguments; returns its output and JSON figures.
fn quick_bench(extra: &[&str]) -> (Output, String) {
    let dir = common::TempDir::new("bench");
    let json = dir.path().join("results.json");
    let out = Command::new(assert_cmd::cargo::cargo_bin!("chat_bench"))
        .arg("--quick")
        .arg("--server")
        .arg(common::server_binary())
        .arg("--json")
        .arg(&json)
        .args(extra)
        .output()
        .expect("run chat_bench");
    let figures = std::fs::read_to_string(&json).unwrap_or_default();
    (out, figures)
}

fn assert_succeeded(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "chat_bench failed:\n{stdout}\n{stderr}"
    );
    stdout
}

#[test]
fn quick_bench_runs_every_scenario_without_loss() {
    let (out, figures) = quick_bench(&[]);
    let stdout = assert_succeeded(&out);
    for scenario in SCENARIOS {
        assert!(stdout.contains(scenario), "no {scenario} row in:\n{stdout}");
    }
    for line in ["machine: ", "settings: vm.max_map_count ", "target figure"] {
        assert!(stdout.contains(line), "no {line:?} line in:\n{stdout}");
    }
    let runs = SCENARIOS.len();
    assert_eq!(figures.matches("\"lost\": 0,").count(), runs, "{figures}");
    assert_eq!(
        figures.matches("\"server_alive\": \"yes\"").count(),
        runs,
        "{figures}"
    );
}

/// ngircd speaks IRC: this drives the bench's IRC mode (NICK, USER, JOIN #chat, PRIVMSG)
/// through every scenario. Without ngircd installed it cannot run, and says so on the
/// terminal (written to stderr directly, which the test harness does not capture).
#[test]
fn quick_bench_drives_ngircd_over_irc_without_loss() {
    let installed = Path::new("/usr/sbin/ngircd").exists()
        || Command::new("sh")
            .args(["-c", "command -v ngircd"])
            .output()
            .is_ok_and(|o| o.status.success());
    if !installed {
        common::skip_or_fail(
            "quick_bench_drives_ngircd_over_irc_without_loss",
            "PTCHAT_REQUIRE_NGIRCD",
            "ngircd is not installed (apt-get install ngircd)",
        );
        return;
    }
    let (out, figures) = quick_bench(&["--servers", "ptchat,ngircd"]);
    let stdout = assert_succeeded(&out);
    assert!(
        stdout.contains("ptchat/ngircd"),
        "no ratio column:\n{stdout}"
    );
    assert!(!figures.contains("\"error\""), "{figures}");
    let runs = 2 * SCENARIOS.len();
    assert_eq!(figures.matches("\"lost\": 0,").count(), runs, "{figures}");
    assert_eq!(
        figures.matches("\"ngircd\": {\"").count(),
        SCENARIOS.len(),
        "{figures}"
    );
}
