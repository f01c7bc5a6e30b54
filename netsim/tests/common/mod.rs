//! Shared test helpers: prerequisite checks that skip, or fail under CI=true.

#![allow(dead_code, unreachable_pub)]

use std::process::Command;

/// True if the test can run. Prints why not and returns false when a
/// prerequisite is missing, except under `CI=true`, where it panics.
pub fn prerequisites(tools: &[&str]) -> bool {
    let mut missing = Vec::new();
    if !nix_is_root() {
        missing.push("root (network namespaces and TUN devices)".to_owned());
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        missing.push("/dev/net/tun".to_owned());
    }
    for t in std::iter::once(&"ip").chain(tools) {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {t}"))
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            missing.push(format!("the `{t}` program"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("missing prerequisites: {}", missing.join(", "));
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg} (CI=true: a missing prerequisite is a failure)");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}
