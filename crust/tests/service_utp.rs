//! The service over uTP on real loopback sockets: the same secure channel
//! and the same events as over TCP, on the service's one UDP socket.

// Test helpers panic on failure, like the tests.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Node, config, config_with_utp};
use crust::{ConnectError, DialError, Direction, Endpoint, Event, Priority, SecretId, Transport};

async fn utp_node() -> Node {
    Node::start_with(config_with_utp(), SecretId::generate()).await
}

#[tokio::test]
async fn two_services_talk_over_utp() {
    let mut a = utp_node().await;
    let mut b = utp_node().await;
    let a_utp = Endpoint::utp(a.utp.unwrap());
    assert!(a.service.listeners().await.contains(&a_utp));
    let info = b.service.connect(a.id(), &[a_utp]).await.unwrap();
    assert_eq!(info.transport, Transport::Utp);
    assert_eq!(info.direction, Direction::Outgoing);
    assert_eq!(info.remote_addr, a_utp.addr);
    assert_eq!(info.local_addr, b.utp.unwrap());
    let b_id = b.id();
    let seen = a
        .expect("connect", |e| match e {
            Event::ConnectSuccess { peer, info } if peer == b_id => Some(info),
            _ => None,
        })
        .await;
    assert_eq!(seen.transport, Transport::Utp);
    assert_eq!(seen.direction, Direction::Incoming);

    let a_id = a.id();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    b.service
        .send(&a_id, big.clone(), Priority::LOWEST)
        .await
        .unwrap();
    for i in 0..20u32 {
        a.service
            .send(
                &b_id,
                format!("over utp {i}").into_bytes(),
                Priority::NORMAL,
            )
            .await
            .unwrap();
    }
    assert_eq!(a.message_from(b_id).await, big);
    for i in 0..20u32 {
        assert_eq!(
            b.message_from(a_id).await,
            format!("over utp {i}").as_bytes()
        );
    }
    // Keep-alives run over uTP too.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        b.service
            .connection_info(&a_id)
            .await
            .unwrap()
            .rtt
            .is_some()
    );
}

#[tokio::test]
async fn the_first_transport_to_finish_the_handshake_wins() {
    let a = utp_node().await;
    let b = utp_node().await;
    let info = b
        .service
        .connect(
            a.id(),
            &[Endpoint::tcp(a.addr), Endpoint::utp(a.utp.unwrap())],
        )
        .await
        .unwrap();
    // Either may win; what matters is one connection, on the transport the
    // info reports.
    let peers = b.service.connected_peers().await;
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].1.transport, info.transport);
}

#[tokio::test]
async fn a_wrong_id_over_utp_is_refused() {
    let a = utp_node().await;
    let b = utp_node().await;
    let stranger = SecretId::generate().peer_id();
    let error = b
        .service
        .connect(stranger, &[Endpoint::utp(a.utp.unwrap())])
        .await
        .unwrap_err();
    let ConnectError::Failed(attempts) = &error else {
        panic!("{error}")
    };
    assert!(matches!(attempts[0].1, DialError::Handshake(_)), "{error}");
    assert!(b.service.connected_peers().await.is_empty());
}

#[tokio::test]
async fn utp_needs_the_udp_socket() {
    let a = utp_node().await;
    let tcp_only = Node::start_with(config(), SecretId::generate()).await;
    let error = tcp_only
        .service
        .connect(a.id(), &[Endpoint::utp(a.utp.unwrap())])
        .await
        .unwrap_err();
    let ConnectError::Failed(attempts) = &error else {
        panic!("{error}")
    };
    assert!(matches!(attempts[0].1, DialError::TransportDisabled));
}

#[tokio::test]
async fn the_bootstrap_cache_remembers_the_transport() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("bootstrap-cache.json");
    let a = utp_node().await;
    let secret = SecretId::generate();
    let cfg = crust::Config {
        bootstrap_cache: Some(cache.clone()),
        ..config_with_utp()
    };
    let b = Node::start_with(cfg.clone(), secret.clone()).await;
    let a_utp = Endpoint::utp(a.utp.unwrap());
    b.service.connect(a.id(), &[a_utp]).await.unwrap();
    b.service.shutdown().await;
    drop(b);
    let deadline = std::time::Instant::now() + common::PATIENCE;
    while !std::fs::read_to_string(&cache)
        .unwrap_or_default()
        .contains(&a_utp.to_string())
    {
        assert!(std::time::Instant::now() < deadline, "cache never written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut b = Node::start_with(cfg, secret).await;
    b.service.bootstrap().unwrap();
    let (peer, addr) = b
        .expect("bootstrap", |e| match e {
            Event::BootstrapConnect { peer, addr } => Some((peer, addr)),
            _ => None,
        })
        .await;
    assert_eq!((peer, addr), (a.id(), a_utp));
}

/// A service that shuts down and exits at once still says goodbye over
/// uTP: uTP lives in user space, so the shutdown waits (briefly) for the
/// peers to acknowledge its last bytes before the socket's driver stops
/// with the last handle. Without that the goodbye died with the process
/// and the peer waited for its peer timeout (here a minute, longer than
/// the test waits) before it saw the peer gone.
#[tokio::test]
async fn a_service_that_shuts_down_and_exits_says_goodbye_over_utp() {
    let mut a = Node::start_with(
        crust::Config {
            peer_timeout: Duration::from_secs(60),
            ..config_with_utp()
        },
        SecretId::generate(),
    )
    .await;
    let b = utp_node().await;
    let b_id = b.id();
    let a_utp = Endpoint::utp(a.utp.unwrap());
    let info = b.service.connect(a.id(), &[a_utp]).await.unwrap();
    assert_eq!(info.transport, Transport::Utp);
    b.service.shutdown().await;
    // The process ends: every handle goes, and with them uTP's driver.
    drop(b);
    let reason = a
        .expect("b's goodbye", |e| match e {
            Event::LostPeer { peer, reason } if peer == b_id => Some(reason),
            _ => None,
        })
        .await;
    assert_eq!(reason, crust::LostReason::PeerShutdown);
}
