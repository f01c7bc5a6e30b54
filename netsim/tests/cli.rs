//! The `netsim` binary end to end: `run` reports and exits with the hosts'
//! status; `up` keeps a network alive that `exec` joins.
// Helpers outside #[test] functions panic on failure too.
#![allow(clippy::unwrap_used, clippy::type_complexity)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_netsim");

#[test]
fn run_reports_hosts_and_counters_and_fails_when_a_host_fails() {
    if !common::prerequisites(&["ping"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.toml");
    std::fs::write(
        &path,
        r#"
        seed = 4
        [[router]]
        name = "nat"
        nat = "full_cone"
        [[host]]
        name = "inside"
        network = "nat"
        command = ["ping", "-c", "2", "-i", "0.2", "{outside}"]
        [[host]]
        name = "outside"
        command = ["sh", "-c", "echo my address is $NETSIM_IP_OUTSIDE; exit 3"]
        "#,
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["run", "--json"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a host failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["seed"], 4);
    let hosts = report["hosts"].as_array().unwrap();
    let inside = hosts.iter().find(|h| h["name"] == "inside").unwrap();
    let outside = hosts.iter().find(|h| h["name"] == "outside").unwrap();
    assert_eq!(inside["success"], true);
    assert!(inside["stdout"].as_str().unwrap().contains("2 received"));
    assert_eq!(outside["success"], false);
    assert_eq!(
        outside["stdout"].as_str().unwrap().trim(),
        "my address is 192.0.2.11"
    );
    let links = report["stats"]["links"].as_array().unwrap();
    let l = links.iter().find(|l| l["name"] == "inside").unwrap();
    assert_eq!(l["up"]["delivered"], 2);
    assert_eq!(l["down"]["delivered"], 2);
    assert_eq!(report["stats"]["nats"][0]["stats"]["translated_in"], 2);

    // The same file with a passing second host exits 0, in text form.
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("exit 3", "exit 0");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN).arg("run").arg(&path).output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("inside [ok]") && stdout.contains("outside [ok]"),
        "{stdout}"
    );
}

#[test]
fn up_then_exec_runs_programs_inside_hosts() {
    if !common::prerequisites(&["ping"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let path = dir.path().join("lab.toml");
    std::fs::write(
        &path,
        r#"
        [[router]]
        name = "gw"
        nat = "port_restricted_cone"
        [[host]]
        name = "pc"
        network = "gw"
        [[host]]
        name = "web"
        "#,
    )
    .unwrap();
    let mut up = Command::new(BIN)
        .arg("up")
        .arg(&path)
        .env("NETSIM_STATE_DIR", &state)
        .spawn()
        .unwrap();
    let file = state.join("lab.json");
    let t0 = Instant::now();
    while !file.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "netsim up did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let exec = |args: &[&str]| {
        Command::new(BIN)
            .args(["exec", "pc", "--"])
            .args(args)
            .env("NETSIM_STATE_DIR", &state)
            .output()
            .unwrap()
    };
    let addr = exec(&["ip", "-4", "-o", "addr", "show", "eth0"]);
    let ping = exec(&["ping", "-c", "1", "-W", "2", "192.0.2.11"]);
    let missing = Command::new(BIN)
        .args(["exec", "nobody", "--", "true"])
        .env("NETSIM_STATE_DIR", &state)
        .output()
        .unwrap();
    nix_kill(up.id());
    let status = up.wait().unwrap();
    assert!(
        String::from_utf8_lossy(&addr.stdout).contains("192.168.1.2/24"),
        "{addr:?}"
    );
    assert!(ping.status.success(), "{ping:?}");
    assert!(!missing.status.success());
    assert!(status.success());
    assert!(!file.exists(), "state file removed on exit");
}

fn nix_kill(pid: u32) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
}
