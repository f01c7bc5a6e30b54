//! The real binary in a real (virtual) X server: `crust-chat-gui` starts
//! with a test profile under `Xvfb`, draws its first frame with software
//! OpenGL, and a screenshot is saved to
//! `target/tmp/chat-gui-xvfb.{xwd,png}` for CI to keep.
//!
//! Needs `Xvfb` and `xwd` (Debian: xvfb, x11-apps) and `xwdtopnm` (netpbm);
//! skipped with a message when they are missing, except under `CI=true`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

/// Kills a child we started when the test ends, however it ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts Xvfb on a free display number; returns it and the server.
fn start_xvfb() -> (String, Reaped) {
    for n in 90..140 {
        if Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
            || Path::new(&format!("/tmp/.X{n}-lock")).exists()
        {
            continue;
        }
        let display = format!(":{n}");
        let server = Command::new("Xvfb")
            .args([&display, "-screen", "0", "1024x768x24", "-nolisten", "tcp"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut server = Reaped(server);
        let socket = PathBuf::from(format!("/tmp/.X11-unix/X{n}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if socket.exists() {
                return (display, server);
            }
            if server.0.try_wait().unwrap().is_some() {
                break; // lost a race for the display; try the next
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("could not start Xvfb on any display from :90 to :139");
}

/// Distinct colours in a binary PPM (P6) image.
fn distinct_colours(ppm: &[u8]) -> usize {
    // Header: "P6" WS width WS height WS maxval single-WS, then pixels.
    let mut fields = 0;
    let mut i = 0;
    while fields < 4 {
        while ppm[i].is_ascii_whitespace() {
            i += 1;
        }
        if ppm[i] == b'#' {
            while ppm[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        while !ppm[i].is_ascii_whitespace() {
            i += 1;
        }
        fields += 1;
    }
    let pixels = &ppm[i + 1..];
    let mut seen = std::collections::HashSet::new();
    for p in pixels.chunks_exact(3) {
        seen.insert((p[0], p[1], p[2]));
    }
    seen.len()
}

#[test]
fn the_binary_draws_its_window_under_xvfb_and_a_screenshot_is_saved() {
    let missing: Vec<_> = ["Xvfb", "xwd", "xwdtopnm", "pnmtopng"]
        .into_iter()
        .filter(|t| !on_path(t))
        .collect();
    if !missing.is_empty() {
        let message = format!("missing {missing:?} (Debian: xvfb x11-apps netpbm)");
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and {message}"
        );
        eprintln!("skipped: {message}");
        return;
    }
    let (display, _xvfb) = start_xvfb();
    let home = tempfile::tempdir().unwrap();
    let profile = home.path().join("profile");
    drop(chat_core::Profile::create(&profile, "Xvfb", None).unwrap());

    let child = Command::new(env!("CARGO_BIN_EXE_crust-chat-gui"))
        .arg("--profile")
        .arg(&profile)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--no-upnp",
            "--report-first-frame",
        ])
        .env("DISPLAY", &display)
        .env_remove("WAYLAND_DISPLAY")
        .env("HOME", home.path())
        .env("XDG_DATA_HOME", home.path().join("data"))
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .env("LIBGL_ALWAYS_SOFTWARE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Reaped(child);
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let mut output = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                let first = line.starts_with("first frame after");
                output.push(line);
                if first {
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                panic!("crust-chat-gui exited before its first frame: {output:#?}")
            }
        }
        assert!(
            Instant::now() < deadline,
            "no first frame within 30 s: {output:#?}"
        );
    }
    // Let the worker open the profile and the main screen appear.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "crust-chat-gui quit: {output:#?}"
    );

    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let xwd = out_dir.join("chat-gui-xvfb.xwd");
    let status = Command::new("xwd")
        .args(["-root", "-silent", "-display", &display, "-out"])
        .arg(&xwd)
        .status()
        .unwrap();
    assert!(status.success(), "xwd failed");
    let ppm = Command::new("xwdtopnm")
        .arg(&xwd)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(ppm.status.success(), "xwdtopnm failed");
    let png = Command::new("pnmtopng")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let png = {
        let mut png = png;
        std::io::Write::write_all(png.stdin.as_mut().unwrap(), &ppm.stdout).unwrap();
        drop(png.stdin.take());
        png.wait_with_output().unwrap()
    };
    assert!(png.status.success(), "pnmtopng failed");
    let png_path = out_dir.join("chat-gui-xvfb.png");
    std::fs::write(&png_path, &png.stdout).unwrap();
    eprintln!("screenshot: {}", png_path.display());
    // An empty X root is one colour; the window has text, panels, an icon.
    let colours = distinct_colours(&ppm.stdout);
    assert!(
        colours > 20,
        "the screenshot has {colours} colours: no window drawn?"
    );
}
