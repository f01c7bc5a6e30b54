//! LAN discovery on loopback: services that share a discovery port find
//! each other through beacons to `127.255.255.255` (the loopback
//! interface's broadcast address; nothing leaves the machine) and connect.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::{Node, PATIENCE, config_with_utp};
use crust::{Config, Endpoint, Event, Events, LanDiscovery, PeerId, SecretId};

/// A UDP port nobody on this machine uses right now.
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn discovering(port: u16) -> Config {
    Config {
        lan_discovery: Some(LanDiscovery {
            port,
            targets: vec![IpAddr::V4(Ipv4Addr::new(127, 255, 255, 255))],
            interval: Duration::from_millis(100),
            ..LanDiscovery::default()
        }),
        upnp: false,
        ..config_with_utp()
    }
}

/// Waits for a `LanPeer` about `peer`; other events are skipped, `LanPeer`s
/// about anyone else fail the test.
async fn lan_peer(events: &mut Events, peer: PeerId) -> Vec<Endpoint> {
    tokio::time::timeout(PATIENCE, async {
        loop {
            match events.recv().await {
                Some(Event::LanPeer {
                    peer: found,
                    endpoints,
                }) => {
                    assert_eq!(found, peer, "only the other service announces itself");
                    return endpoints;
                }
                Some(_) => {}
                None => panic!("service stopped"),
            }
        }
    })
    .await
    .expect("no LanPeer in time")
}

/// Waits for a `LanPeer` about `peer` that names every one of `expected`
/// (earlier reports may name fewer).
async fn lan_peer_with(events: &mut Events, peer: PeerId, expected: &[Endpoint]) -> Vec<Endpoint> {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let found = lan_peer(events, peer).await;
            if expected.iter().all(|e| found.contains(e)) {
                return found;
            }
        }
    })
    .await
    .expect("no LanPeer naming every endpoint in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_on_one_network_find_each_other_and_connect() {
    let port = free_udp_port();
    let mut a = Node::start_with(discovering(port), SecretId::generate()).await;
    let mut b = Node::start_with(discovering(port), SecretId::generate()).await;
    let a_id = a.service.id();
    let b_id = b.service.id();

    // A beacon sent while a service's listeners are still starting names
    // only some of them; the peer is reported again once they change, so
    // wait for the report that names both.
    let b_endpoints = [Endpoint::tcp(b.addr), Endpoint::utp(b.utp.unwrap())];
    let found = lan_peer_with(&mut a.events, b_id, &b_endpoints).await;
    let a_endpoints = [Endpoint::tcp(a.addr), Endpoint::utp(a.utp.unwrap())];
    lan_peer_with(&mut b.events, a_id, &a_endpoints).await;

    // The endpoints lead to the peer: the handshake proves its id.
    a.service.connect(b_id, &found).await.unwrap();
    a.service
        .send(&b_id, &b"found you"[..], crust::Priority::NORMAL)
        .await
        .unwrap();
    tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(Event::NewMessage { peer, data }) = b.events.recv().await {
                assert_eq!(peer, a_id);
                assert_eq!(data, &b"found you"[..]);
                break;
            }
        }
    })
    .await
    .unwrap();
    a.service.shutdown().await;
    b.service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_networks_and_services_with_discovery_off_stay_unseen() {
    let port = free_udp_port();
    let mut other_network = discovering(port);
    other_network.channel.network_id = "someone-else".into();
    let stranger = Node::start_with(other_network, SecretId::generate()).await;
    let silent = Node::start_with(
        Config {
            upnp: false,
            ..config_with_utp()
        },
        SecretId::generate(),
    )
    .await;
    let mut a = Node::start_with(discovering(port), SecretId::generate()).await;
    let mut b = Node::start_with(discovering(port), SecretId::generate()).await;

    // `lan_peer` fails on a LanPeer about anyone but `b`: neither the
    // stranger nor the silent service is reported, though the stranger's
    // beacons reach the same port.
    lan_peer(&mut a.events, b.service.id()).await;
    // A few more intervals: still nobody else.
    let quiet_until = tokio::time::Instant::now() + Duration::from_millis(600);
    while let Ok(Some(event)) = tokio::time::timeout_at(quiet_until, a.events.recv()).await {
        if let Event::LanPeer { peer, .. } = event {
            assert_eq!(peer, b.service.id());
        }
    }
    lan_peer(&mut b.events, a.service.id()).await;
    for node in [&a, &b, &stranger, &silent] {
        node.service.shutdown().await;
    }
}
