//! Crash tests: a node in a real process (`src/bin/crash_peer.rs`) is
//! killed with SIGKILL mid-send or mid-receive and restarted; nothing it
//! accepted is lost and nothing is stored twice.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use chat_core::{Event, MessageState, PeerId};
use common::{NETWORK, befriend, open, start};

const COUNT: usize = 300;

fn crash_peer() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_chat-core-crash-peer"))
}

/// A child process killed (SIGKILL) when dropped, even if the test fails.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns the peer; its stdout lines arrive on the returned channel.
fn spawn(args: &[&str]) -> (Proc, mpsc::Receiver<String>) {
    let mut child = Command::new(crash_peer())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run chat-core-crash-peer");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (Proc(child), rx)
}

fn next_line(rx: &mpsc::Receiver<String>) -> String {
    rx.recv_timeout(Duration::from_secs(30))
        .expect("crash_peer said nothing for 30 s")
}

fn kill(child: Proc) {
    drop(child); // SIGKILL on Unix
}

fn texts_from(dir: &Path, peer: &PeerId) -> Vec<String> {
    // Read the history through a node opened briefly on the profile.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let p = open(dir).await;
        let mut texts = Vec::new();
        let mut before = None;
        loop {
            let page = p.node.history(peer, before, 500).unwrap();
            let mut chunk: Vec<String> = page
                .messages
                .iter()
                .filter(|m| !m.outgoing)
                .map(|m| m.text.clone())
                .collect();
            chunk.extend(texts);
            texts = chunk;
            match page.older {
                Some(c) => before = Some(c),
                None => break,
            }
        }
        p.stop().await;
        texts
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_killed_mid_send_loses_nothing_it_accepted_and_duplicates_nothing() {
    let root = tempfile::tempdir().unwrap();
    let mut receiver = start(root.path(), "receiver").await;
    let mut sender = start(root.path(), "sender").await;
    befriend(&mut receiver, &mut sender).await;
    let receiver_id = receiver.id();
    let sender_id = sender.id();
    let sender_dir = sender.stop().await;
    let args = [
        "send",
        sender_dir.to_str().unwrap(),
        NETWORK,
        &receiver_id.to_string(),
        &COUNT.to_string(),
    ];

    // Kill it twice in the middle of sending, then let it finish.
    // `accepted` counts messages the process reported as accepted; one
    // more may have been stored just before a kill, before it could say so.
    let mut accepted = 0usize;
    let accepted_at =
        |line: &str| -> usize { line.strip_prefix("accepted ").unwrap().parse().unwrap() };
    for kill_after in [40usize, 90] {
        let (child, lines) = tokio::task::block_in_place(|| spawn(&args));
        tokio::task::block_in_place(|| {
            let mut first = true;
            while accepted < kill_after {
                let n = accepted_at(&next_line(&lines));
                if first {
                    assert!(
                        n == accepted || n == accepted + 1,
                        "resumed at {n}, expected {accepted}"
                    );
                    first = false;
                } else {
                    assert_eq!(n, accepted, "messages out of order");
                }
                accepted = n + 1;
            }
            kill(child);
            // What it printed before dying was accepted too.
            while let Ok(line) = lines.recv_timeout(Duration::from_secs(5)) {
                accepted = accepted_at(&line) + 1;
            }
        });
    }
    let (child, lines) = tokio::task::block_in_place(|| spawn(&args));
    tokio::task::block_in_place(|| {
        let mut first = true;
        loop {
            let line = next_line(&lines);
            if line == "done" {
                break;
            }
            let n = accepted_at(&line);
            let slack = usize::from(first);
            assert!(
                n >= accepted && n <= accepted + slack,
                "message {n} after {accepted}"
            );
            first = false;
            accepted = n + 1;
        }
    });
    assert_eq!(accepted, COUNT);

    // Every message arrives exactly once, whatever was in flight at the kills.
    let mut seen = std::collections::HashSet::new();
    while seen.len() < COUNT {
        let text = receiver
            .wait_for("messages", |e| match e {
                Event::MessageReceived(m) if m.contact == sender_id => Some(m.text.clone()),
                _ => None,
            })
            .await;
        assert!(seen.insert(text.clone()), "{text} reported twice");
    }
    tokio::task::block_in_place(|| kill(child));
    let dir = receiver.stop().await;
    let texts = tokio::task::spawn_blocking(move || texts_from(&dir, &sender_id))
        .await
        .unwrap();
    let expected: Vec<String> = (0..COUNT).map(|i| format!("msg {i}")).collect();
    assert_eq!(
        texts, expected,
        "history in sender order, each message once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_killed_mid_receive_stores_everything_exactly_once() {
    let root = tempfile::tempdir().unwrap();
    let mut receiver = start(root.path(), "receiver").await;
    let mut sender = start(root.path(), "sender").await;
    befriend(&mut receiver, &mut sender).await;
    let receiver_id = receiver.id();
    let sender_id = sender.id();
    let receiver_dir = receiver.stop().await;
    let args = ["receive", receiver_dir.to_str().unwrap(), NETWORK];

    let (child, lines) = tokio::task::block_in_place(|| spawn(&args));
    let sent: Vec<_> = (0..COUNT)
        .map(|i| sender.node.send(&receiver_id, &format!("msg {i}")).unwrap())
        .collect();
    // Kill the receiver once it has stored a few dozen.
    tokio::task::block_in_place(|| {
        let mut got = 0;
        while got < 30 {
            if next_line(&lines).starts_with("received ") {
                got += 1;
            }
        }
        kill(child);
    });
    let (child, _lines) = tokio::task::block_in_place(|| spawn(&args));
    for m in &sent {
        loop {
            let state = sender
                .node
                .message(&receiver_id, &m.id)
                .unwrap()
                .unwrap()
                .state;
            if state >= MessageState::Delivered {
                break;
            }
            sender
                .wait_for("a delivery", |e| {
                    matches!(
                        e,
                        Event::MessageStateChanged {
                            state: MessageState::Delivered,
                            ..
                        }
                    )
                    .then_some(())
                })
                .await;
        }
    }
    tokio::task::block_in_place(|| kill(child));
    sender.stop().await;
    let texts = tokio::task::spawn_blocking(move || texts_from(&receiver_dir, &sender_id))
        .await
        .unwrap();
    let expected: Vec<String> = (0..COUNT).map(|i| format!("msg {i}")).collect();
    assert_eq!(texts, expected);
}
