//! Start-up to first frame: `crust-chat-gui` started 10 times under Xvfb
//! with software OpenGL (`LIBGL_ALWAYS_SOFTWARE=1`) and an existing
//! profile; each run prints when its first frame was painted (timed from
//! `main`) and quits. Also reports the wall time from spawn to that line.
//!
//! `cargo bench -p chat-gui --bench startup` (needs Xvfb; Debian: xvfb)

#![allow(clippy::unwrap_used, missing_docs)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 10;

fn main() {
    if Command::new("Xvfb")
        .arg("-help")
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        println!("startup: skipped, no Xvfb (Debian: xvfb)");
        return;
    }
    let n = (90..140)
        .find(|n| !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists())
        .unwrap();
    let display = format!(":{n}");
    let mut xvfb = Command::new("Xvfb")
        .args([&display, "-screen", "0", "1024x768x24", "-nolisten", "tcp"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let socket = format!("/tmp/.X11-unix/X{n}");
    while !Path::new(&socket).exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let home = tempfile::tempdir().unwrap();
    let profile = home.path().join("profile");
    drop(chat_core::Profile::create(&profile, "Bench", None).unwrap());
    let mut inside = Vec::new();
    let mut wall = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_crust-chat-gui"))
            .arg("--profile")
            .arg(&profile)
            .args(["--listen", "127.0.0.1:0", "--exit-after-first-frame"])
            .env("DISPLAY", &display)
            .env_remove("WAYLAND_DISPLAY")
            .env("HOME", home.path())
            .env("LIBGL_ALWAYS_SOFTWARE", "1")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        for line in stderr.lines() {
            let line = line.unwrap();
            if let Some(ms) = line
                .strip_prefix("first frame after ")
                .and_then(|r| r.strip_suffix(" ms"))
            {
                wall.push(start.elapsed().as_secs_f64() * 1000.0);
                inside.push(ms.parse::<f64>().unwrap());
            }
        }
        child.wait().unwrap();
    }
    let _ = xvfb.kill();
    let _ = xvfb.wait();
    assert_eq!(inside.len(), RUNS, "some runs printed no first frame");
    for (name, mut v) in [("from main", inside), ("from spawn", wall)] {
        v.sort_by(f64::total_cmp);
        println!(
            "start-up to first frame ({name}): median {:.1} ms, min {:.1} ms, max {:.1} ms over {RUNS} runs",
            v[RUNS / 2],
            v[0],
            v[RUNS - 1]
        );
    }
}
