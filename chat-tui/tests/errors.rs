//! What a user sees when the program cannot start: a profile in use, a
//! port taken, a wrong passphrase — a clear sentence, no error dump, a
//! non-zero exit, and the terminal never switched to the chat screen.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn crust_chat(args: &[&str], stdin: &str) -> Output {
    // No LAN beacons from tests: their traffic stays on this machine.
    let mut child = Command::new(env!("CARGO_BIN_EXE_crust-chat"))
        .arg("--no-lan")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_clean(out: &Output) {
    let err = stderr(out);
    assert!(!out.status.success(), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("Error {") && !err.contains("Os {"),
        "{err}"
    );
    // Never entered the alternate screen.
    assert!(!String::from_utf8_lossy(&out.stdout).contains("\x1b[?1049h"));
}

#[test]
fn a_profile_in_use_is_refused_with_a_clear_message() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("p");
    let _held = chat_core::Profile::create(&dir, "alice", None).unwrap();
    let out = crust_chat(
        &[
            "--profile",
            dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        "",
    );
    assert_clean(&out);
    assert!(
        stderr(&out).contains("is open in another crust-chat"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_taken_port_is_refused_with_a_clear_message() {
    let root = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = root.path().join("p");
    let out = crust_chat(&["--profile", dir.to_str().unwrap(), "--listen", &addr], "");
    assert_clean(&out);
    assert!(stderr(&out).contains("port is taken"), "{}", stderr(&out));
    // The profile was created on the way and opens next time.
    assert!(chat_core::Profile::exists(&dir));
}

#[test]
fn a_wrong_passphrase_is_asked_again_then_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("p");
    drop(chat_core::Profile::create(&dir, "alice", Some("right horse")).unwrap());
    let out = crust_chat(
        &[
            "--profile",
            dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        "wrong\nstill wrong\nnope\n",
    );
    assert_clean(&out);
    let err = stderr(&out);
    assert!(err.contains("Passphrase for"), "{err}");
    assert_eq!(err.matches("Wrong passphrase.").count(), 2, "{err}");
    assert!(err.contains("giving up"), "{err}");
}

#[test]
fn logs_go_to_the_log_file_not_the_screen() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("p");
    let log = root.path().join("chat.log");
    let _held = chat_core::Profile::create(&dir, "alice", None).unwrap();
    let out = crust_chat(
        &[
            "--profile",
            dir.to_str().unwrap(),
            "--log-file",
            log.to_str().unwrap(),
        ],
        "",
    );
    assert_clean(&out);
    assert!(log.exists());
    assert!(!stderr(&out).contains("INFO"));
}

#[test]
fn headless_mode_answers_commands_on_stdout() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("p");
    let out = crust_chat(
        &[
            "--headless",
            "--profile",
            dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--name",
            "robot",
        ],
        "id\ninvite\nquit\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout.contains(r#""event":"id""#) && stdout.contains("robot"),
        "{stdout}"
    );
    assert!(stdout.contains("crust:"), "{stdout}");
    assert!(stdout.contains(r#""event":"bye""#), "{stdout}");
    // Nothing but JSON lines on stdout: no screen drawing.
    assert!(stdout.lines().all(|l| l.starts_with('{')), "{stdout}");
}
