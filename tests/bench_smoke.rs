//! Keeps the benchmark from rotting: `chat_bench --quick` runs every scenario at toy sizes
//! against the debug `chat_server` and must report exact delivery counts. It asserts no
//! speed (speed goals live in `make bench`, see docs/PERFORMANCE.md).

mod common;

use std::process::Command;

#[test]
fn quick_bench_runs_every_scenario_without_loss() {
    let dir = common::TempDir::new("bench");
    let json = dir.path().join("results.json");
    let out = Command::new(assert_cmd::cargo::cargo_bin!("chat_bench"))
        .arg("--quick")
        .arg("--server")
        .arg(common::server_binary())
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run chat_bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "chat_bench failed:\n{stdout}\n{stderr}"
    );
    for scenario in ["throughput", "latency", "scale", "slow_consumer"] {
        assert!(stdout.contains(scenario), "no {scenario} row in:\n{stdout}");
    }
    assert!(
        stdout.contains("machine: "),
        "no machine line in:\n{stdout}"
    );
    let figures = std::fs::read_to_string(&json).expect("JSON written");
    assert!(figures.contains("\"lost\": 0"), "{figures}");
}
