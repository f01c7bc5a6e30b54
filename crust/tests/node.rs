//! The real `crust-node` binary: two of them find each other, and a killed
//! one is reported lost.

// Test helpers panic on failure, like the tests.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::Node;
use crust::{Event, LostReason, PeerId};

struct RunningNode {
    child: Child,
    id: PeerId,
    addr: SocketAddr,
    log: mpsc::Receiver<String>,
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_node(extra: &[&str]) -> RunningNode {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crust-node"))
        .args([
            "--ephemeral",
            "--listen",
            "127.0.0.1:0",
            "--utp",
            "127.0.0.1:0",
            "--network",
            "crust-tests",
        ])
        .args(["--keepalive", "0.5", "--peer-timeout", "3"])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("crust-node starts");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, log) = mpsc::channel();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        stdout
            .lines()
            .map_while(Result::ok)
            .for_each(|l| drop(tx.send(l)))
    });
    std::thread::spawn(move || {
        stderr
            .lines()
            .map_while(Result::ok)
            .for_each(|l| drop(tx2.send(l)))
    });
    let (mut id, mut addr) = (None, None);
    while id.is_none() || addr.is_none() {
        let line = log
            .recv_timeout(common::PATIENCE)
            .expect("crust-node prints its id and address");
        if let Some(rest) = line.strip_prefix("peer id: ") {
            id = Some(rest.parse().unwrap());
        }
        if let Some(rest) = line.strip_prefix("listening on tcp:") {
            addr = Some(rest.parse().unwrap());
        }
    }
    RunningNode {
        child,
        id: id.unwrap(),
        addr: addr.unwrap(),
        log,
    }
}

impl RunningNode {
    fn wait_for_log(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + common::PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("crust-node never logged {needle:?}"),
            }
        }
    }
}

#[test]
fn two_nodes_pointed_at_each_other_connect() {
    let first = start_node(&[]);
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

async fn connected_to(node: &RunningNode) -> Node {
    let mut us = Node::start().await;
    us.service.connect(node.id, &[node.addr]).await.unwrap();
    let id = node.id;
    us.expect("connect", |e| {
        matches!(e, Event::ConnectSuccess { peer, .. } if peer == id).then_some(())
    })
    .await;
    us
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
    let mut node = start_node(&[]);
    let mut us = connected_to(&node).await;
    node.child.kill().unwrap();
    let reason = lost_reason(&mut us, node.id).await;
    assert_eq!(reason, LostReason::ConnectionClosed);
}

#[cfg(unix)]
#[tokio::test]
async fn a_frozen_node_is_reported_lost_by_timeout() {
    let node = start_node(&[]);
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
