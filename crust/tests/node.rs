//! The real `crust-node` binary: two of them find each other, and a killed
//! one is reported lost.

// Test helpers panic on failure, like the tests.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::Node;
use common::process::{connected_to, start_node};
use crust::{Event, LostReason, PeerId};

/// Keep-alives every half second and a peer lost after 3 s of silence, so a
/// frozen node is noticed well within the tests' patience.
const QUICK_TIMEOUTS: &[&str] = &["--keepalive", "0.5", "--peer-timeout", "3"];

#[test]
fn two_nodes_pointed_at_each_other_connect() {
    let first = start_node(QUICK_TIMEOUTS);
    let contact = format!("{}@{}", first.id, first.addr);
    let second = start_node(&["--bootstrap", &contact]);
    let line = second.wait_for_log("bootstrapped");
    assert!(line.contains(&first.id.to_string()), "{line}");
    let line = first.wait_for_log("peer bootstrapped from us");
    assert!(line.contains(&second.id.to_string()), "{line}");
}

#[test]
fn a_bad_flag_value_is_a_clear_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_crust-node"))
        .args(["--ephemeral", "--bootstrap", "not-a-contact"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--bootstrap"), "{stderr}");
}

async fn lost_reason(us: &mut Node, id: PeerId) -> LostReason {
    us.expect("lost peer", |e| match e {
        Event::LostPeer { peer, reason } if peer == id => Some(reason),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn a_killed_node_is_reported_lost() {
    let mut node = start_node(QUICK_TIMEOUTS);
    let mut us = connected_to(&node).await;
    node.child.kill().unwrap();
    let reason = lost_reason(&mut us, node.id).await;
    assert_eq!(reason, LostReason::ConnectionClosed);
}

#[cfg(unix)]
#[tokio::test]
async fn a_frozen_node_is_reported_lost_by_timeout() {
    let node = start_node(QUICK_TIMEOUTS);
    let mut us = connected_to(&node).await;
    // SIGSTOP: the process is alive and its sockets open, but it answers
    // nothing, like a hung machine.
    let status = Command::new("kill")
        .args(["-STOP", &node.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let reason = lost_reason(&mut us, node.id).await;
    let _ = Command::new("kill")
        .args(["-CONT", &node.child.id().to_string()])
        .status();
    assert_eq!(reason, LostReason::Timeout);
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[test]
fn a_node_keeps_running_when_its_stdout_is_closed() {
    // `crust-node | head -1`: the reader goes away before the banner (id,
    // listeners, contacts) is written.
    let mut child = Command::new(env!("CARGO_BIN_EXE_crust-node"))
        .args([
            "--ephemeral",
            "--listen",
            "127.0.0.1:0",
            "--utp",
            "127.0.0.1:0",
        ])
        .args(["--network", "crust-tests", "--no-upnp"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    // The banner comes right after the listeners are bound; a node that dies
    // of it is gone long before this.
    std::thread::sleep(Duration::from_secs(2));
    let status = child.try_wait().unwrap();
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    assert!(
        status.is_none(),
        "crust-node exited ({status:?}): {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
