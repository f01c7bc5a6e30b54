//! The real `crust-node` binary as a rendezvous: two peers connected to it
//! connect to each other through it, and `--no-rendezvous` turns that off.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::process::{RunningNode, start_node};
use common::{Node, config_with_utp};
use crust::{ConnectError, Event, SecretId};

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
