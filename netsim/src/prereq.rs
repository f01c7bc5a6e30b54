//! What a test or bench built on netsim needs from the machine, checked
//! once so every crate's netsim tests skip (or fail) the same way.

use std::path::Path;

/// True if netsim can run here: root (network namespaces and TUN devices),
/// `/dev/net/tun`, and every program in `tools` (e.g. `nft`,
/// `miniupnpd`) on `PATH` or in `/usr/sbin`/`/sbin`.
///
/// When something is missing it says what on stderr and returns false, so
/// the caller can skip; under `CI=true` it panics instead, because there a
/// skipped test would be a test that cannot fail.
pub fn prerequisites(tools: &[&str]) -> bool {
    let mut missing: Vec<String> = Vec::new();
    if !is_root() {
        missing.push("root (network namespaces and TUN devices)".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        missing.push("/dev/net/tun".into());
    }
    for tool in tools {
        if !has_program(tool) {
            missing.push(format!("the `{tool}` program"));
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

/// True if this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// True if `program` is on `PATH` or in `/usr/sbin` or `/sbin` (where
/// `nft` and `miniupnpd` live, often outside a user's `PATH`).
pub fn has_program(program: &str) -> bool {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()));
    on_path
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|dir| Path::new(dir).join(program).is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_is_found_on_the_path_and_a_made_up_one_is_not() {
        assert!(has_program("sh"));
        assert!(!has_program("no-such-program-netsim-prereq"));
    }
}
