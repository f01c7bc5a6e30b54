//! End to end: two real `crust-chat` processes on loopback, each in its own
//! tmux session, driven with `send-keys` and read with `capture-pane`.
//! They exchange invites (one pastes the other's code), accept, chat both
//! ways and show delivery states.
//!
//! Skips without tmux, except under CI=true.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(90);

struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    fn start(&self, session: &str, command: &str) {
        let out = self.run(&[
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            "100",
            "-y",
            "30",
            command,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Keep the pane after the program exits, to read what it printed.
        self.run(&["set-option", "-t", session, "remain-on-exit", "on"]);
    }

    fn capture(&self, session: &str) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", session]).stdout)
            .into_owned()
    }

    fn keys(&self, session: &str, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", session];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    fn type_text(&self, session: &str, text: &str) {
        self.run(&["send-keys", "-t", session, "-l", text]);
    }

    /// A bracketed paste, as a terminal does it.
    fn paste(&self, session: &str, text: &str) {
        self.run(&["set-buffer", "-b", "crust-chat-test", text]);
        self.run(&[
            "paste-buffer",
            "-p",
            "-d",
            "-b",
            "crust-chat-test",
            "-t",
            session,
        ]);
    }

    fn wait_for(&self, session: &str, what: &str, found: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let screen = self.capture(session);
            if found(&screen) {
                return screen;
            }
            if Instant::now() > deadline {
                panic!("{session}: timed out waiting for {what}; the screen:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn wait_text(&self, session: &str, text: &str) -> String {
        self.wait_for(session, text, |s| s.contains(text))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

fn tmux_available() -> bool {
    let found = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "tmux is required under CI=true (.ci/run installs it)"
        );
        eprintln!("skipping: tmux is not installed");
    }
    found
}

fn command_line(profile: &Path, name: &str) -> String {
    format!(
        "{} --profile {} --listen 127.0.0.1:0 --no-upnp --name {name}",
        env!("CARGO_BIN_EXE_crust-chat"),
        profile.display()
    )
}

/// The invite code from a screen showing the "My invite" popup: the row
/// holding `crust:` and the rows under it, in the same columns, up to the
/// first empty one.
fn invite_code(screen: &str) -> String {
    let rows: Vec<Vec<char>> = screen.lines().map(|l| l.chars().collect()).collect();
    let Some((first, col)) = rows.iter().enumerate().find_map(|(i, row)| {
        let text: String = row.iter().collect();
        text.find("crust:")
            .map(|byte| (i, text[..byte].chars().count()))
    }) else {
        return String::new();
    };
    let mut code = String::new();
    for row in &rows[first..] {
        let part: String = row.iter().skip(col).take_while(|c| **c != '│').collect();
        let part = part.trim();
        if part.is_empty() {
            break;
        }
        code.push_str(part);
    }
    code
}

#[test]
fn two_clients_befriend_and_chat_under_tmux() {
    if !tmux_available() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let tmux = Tmux {
        socket: format!("crust-chat-test-{}", std::process::id()),
    };
    tmux.start("a", &command_line(&root.path().join("alice"), "alice"));
    tmux.start("b", &command_line(&root.path().join("bob"), "bob"));
    tmux.wait_text("a", "Welcome to Crust Chat");
    tmux.wait_text("b", "Welcome to Crust Chat");
    assert!(tmux.capture("a").contains("alice ·"));

    // Both show their invites; bob pastes alice's.
    tmux.keys("b", &["F3"]);
    tmux.wait_text("b", "My invite");
    tmux.keys("b", &["Escape"]);
    tmux.keys("a", &["F3"]);
    let screen = tmux.wait_text("a", "crust:");
    let code = invite_code(&screen);
    assert!(code.len() > 60, "no code on:\n{screen}");
    tmux.keys("a", &["Escape"]);

    tmux.keys("b", &["F4"]);
    tmux.wait_text("b", "Add a contact");
    tmux.paste("b", &code);
    tmux.keys("b", &["Enter"]);
    tmux.wait_text("b", "request sent");
    // Bob writes at once: queued until alice accepts.
    tmux.type_text("b", "hello from bob");
    tmux.keys("b", &["Enter"]);
    tmux.wait_text("b", "bob: hello from bob");

    tmux.wait_text("a", "Requests (1)");
    tmux.type_text("a", "/accept");
    tmux.keys("a", &["Enter"]);
    tmux.wait_text("a", "bob: hello from bob");
    tmux.wait_text("b", "✓✓ bob: hello from bob");

    tmux.type_text("a", "hi bob, got it");
    tmux.keys("a", &["Enter"]);
    tmux.wait_text("b", "alice: hi bob, got it");
    tmux.wait_text("a", "✓✓ alice: hi bob, got it");
    tmux.wait_for("a", "bob online", |s| s.contains("● bob"));

    // Multi-line by Ctrl+J; a pasted text keeps its lines and is not sent
    // until Enter.
    tmux.type_text("b", "two");
    tmux.keys("b", &["C-j"]);
    tmux.type_text("b", "lines");
    tmux.keys("b", &["Enter"]);
    tmux.wait_text("a", "bob: two");
    tmux.wait_text("a", "      lines");

    eprintln!("alice's screen:\n{}", tmux.capture("a"));
    eprintln!("bob's screen:\n{}", tmux.capture("b"));

    // Ctrl+C leaves; the terminal is restored (tmux's pane shows the shell
    // status instead of the alternate screen).
    tmux.keys("a", &["C-c"]);
    tmux.keys("b", &["C-c"]);
    tmux.wait_for("a", "exit", |s| {
        !s.contains("Crust Chat") && !s.contains("F3 invite")
    });
    tmux.wait_for("b", "exit", |s| !s.contains("F3 invite"));
}
