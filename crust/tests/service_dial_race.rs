//! Duplicate connections on real loopback sockets: both sides dial each
//! other at the same moment, over TCP, over uTP and over both at once. Each
//! side must end on the same single connection, never report the peer lost,
//! and deliver every message sent while the duplicates are resolved.

// Test helpers panic on failure, like the tests.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Node, config_with_utp};
use crust::{Endpoint, Event, PeerId, Priority, SecretId};

async fn node() -> Node {
    Node::start_with(config_with_utp(), SecretId::generate()).await
}

#[derive(Clone, Copy)]
enum Dial {
    Tcp,
    Utp,
    Both,
}

fn endpoints(node: &Node, how: Dial) -> Vec<Endpoint> {
    let (tcp, utp) = (Endpoint::tcp(node.addr), Endpoint::utp(node.utp.unwrap()));
    match how {
        Dial::Tcp => vec![tcp],
        Dial::Utp => vec![utp],
        Dial::Both => vec![tcp, utp],
    }
}

const MESSAGES: u32 = 300;

/// Sends `MESSAGES` numbered messages, a few at a time, so that some leave
/// before the duplicate is resolved and some after.
async fn send_numbered(service: crust::Service, to: PeerId) {
    for i in 0..MESSAGES {
        service
            .send(&to, i.to_be_bytes().to_vec(), Priority::NORMAL)
            .await
            .unwrap();
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// Collects events until every numbered message from `from` arrived (each
/// once), then for `settle` more.
async fn receive_numbered(node: &mut Node, from: PeerId, settle: Duration) -> Vec<Event> {
    let mut got = HashSet::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    while got.len() < MESSAGES as usize {
        let event = tokio::time::timeout_at(deadline, node.events.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {MESSAGES} messages arrived", got.len()))
            .unwrap();
        match event {
            Event::NewMessage { peer, data } if peer == from => {
                let i = u32::from_be_bytes(data[..].try_into().unwrap());
                assert!(got.insert(i), "message {i} arrived twice");
            }
            other => events.push(other),
        }
    }
    events.extend(node.drain(settle).await);
    events
}

async fn both_dial_at_once(how: Dial, rounds: usize) {
    for round in 0..rounds {
        let mut a = node().await;
        let mut b = node().await;
        let (a_id, b_id) = (a.id(), b.id());
        let (to_a, to_b) = (endpoints(&a, how), endpoints(&b, how));
        let (ra, rb) = tokio::join!(
            a.service.connect(b_id, &to_b),
            b.service.connect(a_id, &to_a),
        );
        ra.unwrap();
        rb.unwrap();
        // Messages both ways while the duplicates are being resolved.
        let sending_a = tokio::spawn(send_numbered(a.service.clone(), b_id));
        let sending_b = tokio::spawn(send_numbered(b.service.clone(), a_id));
        let settle = Duration::from_millis(800);
        let events_a = receive_numbered(&mut a, b_id, settle).await;
        let events_b = receive_numbered(&mut b, a_id, settle).await;
        sending_a.await.unwrap();
        sending_b.await.unwrap();

        // One connection on each side, and the same one.
        let pa = a.service.connected_peers().await;
        let pb = b.service.connected_peers().await;
        assert_eq!(pa.len(), 1, "round {round}");
        assert_eq!(pb.len(), 1, "round {round}");
        let (ia, ib) = (&pa[0].1, &pb[0].1);
        assert_eq!(ia.transport, ib.transport, "round {round}");
        assert_eq!(ia.local_addr, ib.remote_addr, "round {round}");
        assert_eq!(ia.remote_addr, ib.local_addr, "round {round}");
        assert_ne!(ia.direction, ib.direction, "round {round}");

        // The peer was reported once and never lost.
        for events in [&events_a, &events_b] {
            let connects = events
                .iter()
                .filter(|e| matches!(e, Event::ConnectSuccess { .. }))
                .count();
            assert_eq!(connects, 1, "round {round}: {events:?}");
            assert!(
                !events.iter().any(|e| matches!(e, Event::LostPeer { .. })),
                "round {round}: {events:?}"
            );
        }
        // The connection the last `ConnectionChanged` named (or the first
        // one) is the one in use.
        for (events, info) in [(&events_a, ia), (&events_b, ib)] {
            let last = events.iter().rev().find_map(|e| match e {
                Event::ConnectionChanged { info, .. } | Event::ConnectSuccess { info, .. } => {
                    Some(info)
                }
                _ => None,
            });
            assert_eq!(last.map(|i| i.remote_addr), Some(info.remote_addr));
        }

        // And it carries messages after the dust settled.
        a.says(&mut b, b"still here").await;
        b.says(&mut a, b"me too").await;
    }
}

#[tokio::test]
async fn both_dial_each_other_over_tcp_at_once() {
    both_dial_at_once(Dial::Tcp, 5).await;
}

#[tokio::test]
async fn both_dial_each_other_over_utp_at_once() {
    both_dial_at_once(Dial::Utp, 5).await;
}

#[tokio::test]
async fn both_dial_each_other_over_tcp_and_utp_at_once() {
    both_dial_at_once(Dial::Both, 5).await;
}

#[tokio::test]
async fn one_side_dials_over_tcp_and_utp_at_once() {
    for round in 0..5 {
        let mut a = node().await;
        let mut b = node().await;
        let (a_id, b_id) = (a.id(), b.id());
        b.service
            .connect(a_id, &endpoints(&a, Dial::Both))
            .await
            .unwrap();
        let sending = tokio::spawn(send_numbered(b.service.clone(), a_id));
        let events_a = receive_numbered(&mut a, b_id, Duration::from_millis(800)).await;
        sending.await.unwrap();
        let events_b = b.drain(Duration::from_millis(100)).await;
        for events in [&events_a, &events_b] {
            assert!(
                !events.iter().any(|e| matches!(e, Event::LostPeer { .. })),
                "round {round}: {events:?}"
            );
        }
        let pa = a.service.connected_peers().await;
        let pb = b.service.connected_peers().await;
        assert_eq!((pa.len(), pb.len()), (1, 1), "round {round}");
        assert_eq!(pa[0].1.local_addr, pb[0].1.remote_addr, "round {round}");
        assert_eq!(pa[0].1.transport, pb[0].1.transport, "round {round}");
    }
}
