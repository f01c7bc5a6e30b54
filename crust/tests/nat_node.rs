//! The real `crust-node` binary as a rendezvous: two peers connected to it
//! connect to each other through it, and `--no-rendezvous` turns that off.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Node, config_with_utp};
use crust::{ConnectError, Event, PeerId, SecretId};

struct RunningNode {
    child: Child,
    id: PeerId,
    addr: SocketAddr,
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
        ])
        .args(["--network", "crust-tests", "--no-upnp"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("crust-node starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut id, mut addr) = (None, None);
    while id.is_none() || addr.is_none() {
        let line = lines
            .next()
            .expect("crust-node prints its id and address")
            .unwrap();
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
    }
}

async fn two_peers_on(node: &RunningNode) -> (Node, Node) {
    let a = Node::start_with(config_with_utp(), SecretId::generate()).await;
    let b = Node::start_with(config_with_utp(), SecretId::generate()).await;
    a.service.connect(node.id, &[node.addr]).await.unwrap();
    b.service.connect(node.id, &[node.addr]).await.unwrap();
    // The echoes from the node give both their candidates.
    tokio::time::sleep(Duration::from_millis(300)).await;
    (a, b)
}

#[tokio::test]
async fn crust_node_is_a_rendezvous() {
    let node = start_node(&[]);
    let (a, mut b) = two_peers_on(&node).await;
    let info = a.service.connect_via(b.id(), node.id).await.unwrap();
    assert!(info.connect_time.is_some());
    let a_id = a.id();
    b.expect("a's connection", |e| match e {
        Event::ConnectSuccess { peer, .. } if peer == a_id => Some(()),
        _ => None,
    })
    .await;
    // The node answered our echo, too.
    let report = a.service.nat_report();
    assert!(
        report.udp_observations.iter().any(|o| o.peer == node.id),
        "{report:?}"
    );
}

#[tokio::test]
async fn crust_node_with_no_rendezvous_forwards_nothing() {
    let node = start_node(&["--no-rendezvous"]);
    let (a, b) = two_peers_on(&node).await;
    let err = a.service.connect_via(b.id(), node.id).await.unwrap_err();
    assert!(matches!(err, ConnectError::Traversal(_)), "{err}");
}
