//! Records the git commit the binaries were built from, for `--version`
//! and the clients' About screens (`crust::VERSION`). Outside a git checkout
//! (a crates.io download, a source tarball) the commit reads "unknown", or
//! whatever `CRUST_BUILD_COMMIT` says, which packagers may set.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=CRUST_BUILD_COMMIT");
    let commit = std::env::var("CRUST_BUILD_COMMIT").ok().or_else(git_commit);
    println!(
        "cargo:rustc-env=CRUST_BUILD_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
}

/// The short hash of HEAD, asking cargo to rerun when HEAD moves. Only files
/// that exist are watched: a missing one would make cargo rerun every build.
fn git_commit() -> Option<String> {
    let git_dir = Command::new("git")
        .args(["rev-parse", "--absolute-git-dir"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())?;
    let git_dir = Path::new(&git_dir);
    let head = git_dir.join("HEAD");
    let mut watched = vec![head.clone(), git_dir.join("packed-refs")];
    if let Ok(text) = std::fs::read_to_string(&head)
        && let Some(reference) = text.strip_prefix("ref: ")
    {
        watched.push(git_dir.join(reference.trim()));
    }
    for path in watched.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|c| !c.is_empty())
}
