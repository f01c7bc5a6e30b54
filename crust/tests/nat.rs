//! NAT traversal on loopback: address echo and the NAT report, rendezvous
//! signalling through a third peer, and its failures. The netsim tests
//! (`nat_netsim.rs`, `nat_matrix.rs`) put real NATs in between.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Node, PATIENCE, config_with_utp};
use crust::{ConnectError, ConnectionPath, Event, Mapping, SecretId, Transport};

async fn wait_for_report(
    node: &mut Node,
    enough: impl Fn(&crust::NatReport) -> bool,
) -> crust::NatReport {
    tokio::time::timeout(PATIENCE, async {
        loop {
            match node.events.recv().await {
                Some(Event::NatReport(report)) if enough(&report) => return report,
                Some(_) => {}
                None => panic!("service stopped"),
            }
        }
    })
    .await
    .expect("no NAT report in time")
}

#[tokio::test]
async fn an_echo_over_udp_and_tcp_reports_no_nat_on_loopback() {
    let mut a = Node::start_with(config_with_utp(), SecretId::generate()).await;
    let b = Node::start_with(config_with_utp(), SecretId::generate()).await;
    a.service.connect(b.service.id(), &[b.addr]).await.unwrap();
    let report = wait_for_report(&mut a, |r| !r.udp_observations.is_empty()).await;
    let utp = a.utp.unwrap();
    assert_eq!(report.udp_external, Some(utp));
    assert_eq!(report.udp_observations[0].peer, b.service.id());
    assert_eq!(report.udp_observations[0].server, b.utp.unwrap());
    assert_eq!(report.mapping, Mapping::NoNat);
    assert_eq!(report.local_udp, vec![utp]);
    assert_eq!(report.local_tcp, vec![a.addr]);
    // The TCP echo: b saw our outgoing connection's address.
    assert_eq!(report.tcp_observed.len(), 1);
    assert_eq!(report.tcp_observed[0].ip(), a.addr.ip());
    assert_eq!(a.service.nat_report(), report);
}

#[tokio::test]
async fn two_peers_connect_through_a_rendezvous_peer() {
    let r = Node::start_with(config_with_utp(), SecretId::generate()).await;
    let a = Node::start_with(config_with_utp(), SecretId::generate()).await;
    let mut b = Node::start_with(config_with_utp(), SecretId::generate()).await;
    let r_id = r.service.id();
    a.service.connect(r_id, &[r.addr]).await.unwrap();
    b.service.connect(r_id, &[r.addr]).await.unwrap();
    // Let the echoes settle so both sides have candidates.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let info = a.service.connect_via(b.service.id(), r_id).await.unwrap();
    // On loopback every candidate works; either path may win.
    match (info.path, info.transport) {
        (ConnectionPath::HolePunched, Transport::Utp)
        | (ConnectionPath::Direct, Transport::Tcp) => {}
        other => panic!("unexpected path {other:?}"),
    }
    assert!(info.connect_time.is_some());
    let a_id = a.service.id();
    b.expect("a's connection", |e| match e {
        Event::ConnectSuccess { peer, .. } if peer == a_id => Some(()),
        _ => None,
    })
    .await;
    a.service
        .send(&b.service.id(), &b"hi"[..], crust::Priority::NORMAL)
        .await
        .unwrap();
    let got = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(Event::NewMessage { data, .. }) = b.events.recv().await {
                return data;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(&got[..], b"hi");
}

#[tokio::test]
async fn a_rendezvous_without_the_target_says_so() {
    let r = Node::start_with(config_with_utp(), SecretId::generate()).await;
    let a = Node::start_with(config_with_utp(), SecretId::generate()).await;
    let stranger = SecretId::generate().peer_id();
    a.service.connect(r.service.id(), &[r.addr]).await.unwrap();
    let err = a
        .service
        .connect_via(stranger, r.service.id())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ConnectError::Traversal(why) if why.contains("not connected")),
        "{err}"
    );
    // And a rendezvous we are not connected to.
    let err = a.service.connect_via(stranger, stranger).await.unwrap_err();
    assert!(matches!(err, ConnectError::Traversal(_)), "{err}");
}

#[tokio::test]
async fn a_peer_that_is_not_a_rendezvous_refuses_to_forward() {
    let mut config = config_with_utp();
    config.rendezvous = false;
    let r = Node::start_with(config, SecretId::generate()).await;
    let a = Node::start_with(config_with_utp(), SecretId::generate()).await;
    let b = Node::start_with(config_with_utp(), SecretId::generate()).await;
    a.service.connect(r.service.id(), &[r.addr]).await.unwrap();
    b.service.connect(r.service.id(), &[r.addr]).await.unwrap();
    let err = a
        .service
        .connect_via(b.service.id(), r.service.id())
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::Traversal(_)), "{err}");
    assert!(b.service.connection_info(&a.service.id()).await.is_none());
}

/// A peer with no listener and no UDP socket: it can only dial out, so
/// nothing direct can reach it or be reached from it.
async fn unreachable_peer() -> (crust::Service, crust::Events) {
    let config = crust::Config {
        listen: Vec::new(),
        utp: None,
        relay_after: Duration::from_millis(100),
        punch_timeout: Duration::from_secs(3),
        ..common::config()
    };
    crust::Service::start(config, SecretId::generate())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_relay_carries_the_connection_when_nothing_direct_works() {
    let r = Node::start_with(config_with_utp(), SecretId::generate()).await;
    let (a, _a_events) = unreachable_peer().await;
    let (b, mut b_events) = unreachable_peer().await;
    a.connect(r.service.id(), &[r.addr]).await.unwrap();
    b.connect(r.service.id(), &[r.addr]).await.unwrap();
    let info = a.connect_via(b.id(), r.service.id()).await.unwrap();
    assert_eq!(
        info.path,
        ConnectionPath::Relayed {
            via: r.service.id()
        }
    );
    // Both ways, in order, through the relay.
    for i in 0..20u8 {
        a.send(&b.id(), vec![i; 3000], crust::Priority::NORMAL)
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    let mut b_info = None;
    tokio::time::timeout(PATIENCE, async {
        while got.len() < 20 {
            match b_events.recv().await.unwrap() {
                Event::ConnectSuccess { info, .. } => b_info = Some(info),
                Event::NewMessage { data, .. } => got.push(data),
                _ => {}
            }
        }
    })
    .await
    .unwrap();
    for (i, data) in got.iter().enumerate() {
        assert_eq!(&data[..], &vec![i as u8; 3000][..]);
    }
    assert_eq!(
        b_info.unwrap().path,
        ConnectionPath::Relayed {
            via: r.service.id()
        }
    );
    b.send(&a.id(), &b"back"[..], crust::Priority::NORMAL)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_relay_with_no_capacity_relays_nothing() {
    let mut config = config_with_utp();
    config.relay_circuits = 0;
    let r = Node::start_with(config, SecretId::generate()).await;
    let (a, _a_events) = unreachable_peer().await;
    let (b, _b_events) = unreachable_peer().await;
    a.connect(r.service.id(), &[r.addr]).await.unwrap();
    b.connect(r.service.id(), &[r.addr]).await.unwrap();
    let err = a.connect_via(b.id(), r.service.id()).await.unwrap_err();
    assert!(matches!(err, ConnectError::Traversal(_)), "{err}");
    assert!(b.connection_info(&a.id()).await.is_none());
}
