//! The service over real loopback sockets.

// Test helpers panic on failure, like the tests.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{Node, config};
use crust::{
    ConnectError, Direction, Event, LostReason, PeerId, Priority, SecretId, SendError, Service,
};
use tokio::io::AsyncWriteExt as _;

#[tokio::test]
async fn two_services_connect_and_exchange_messages_both_ways() {
    let mut a = Node::start().await;
    let mut b = Node::start().await;
    let info = b.service.connect(a.id(), &[a.addr]).await.unwrap();
    assert_eq!(info.direction, Direction::Outgoing);
    assert_eq!(info.remote_addr, a.addr);
    let (b_id, a_id) = (b.id(), a.id());
    let seen = a
        .expect("connect", |e| match e {
            Event::ConnectSuccess { peer, info } => Some((peer, info)),
            _ => None,
        })
        .await;
    assert_eq!(seen.0, b_id);
    assert_eq!(seen.1.direction, Direction::Incoming);
    b.expect("connect", |e| {
        matches!(e, Event::ConnectSuccess { peer, .. } if peer == a_id).then_some(())
    })
    .await;

    for i in 0..50u32 {
        b.service
            .send(&a_id, format!("to a {i}").into_bytes(), Priority::NORMAL)
            .await
            .unwrap();
        a.service
            .send(&b_id, format!("to b {i}").into_bytes(), Priority::NORMAL)
            .await
            .unwrap();
    }
    for i in 0..50u32 {
        assert_eq!(a.message_from(b_id).await, format!("to a {i}").into_bytes());
        assert_eq!(b.message_from(a_id).await, format!("to b {i}").into_bytes());
    }
    // A message far larger than a frame.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7) as u8).collect();
    b.service
        .send(&a_id, big.clone(), Priority::LOWEST)
        .await
        .unwrap();
    assert_eq!(a.message_from(b_id).await, big);

    let peers = a.service.connected_peers().await;
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].0, b_id);
    // Keep-alives have measured a round trip by now or soon.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        a.service
            .connection_info(&b_id)
            .await
            .unwrap()
            .rtt
            .is_some()
    );
}

#[tokio::test]
async fn ten_services_connect_in_all_directions_and_talk() {
    const N: usize = 10;
    let mut nodes = Vec::new();
    for _ in 0..N {
        nodes.push(Node::start().await);
    }
    let ids: Vec<PeerId> = nodes.iter().map(Node::id).collect();
    let addrs: Vec<_> = nodes.iter().map(|n| n.addr).collect();
    // Half the pairs are dialled one way, half the other.
    let mut dials = Vec::new();
    for i in 0..N {
        for j in (i + 1)..N {
            let (from, to) = if (i + j) % 2 == 0 { (i, j) } else { (j, i) };
            let service = nodes[from].service.clone();
            let (id, addr) = (ids[to], addrs[to]);
            dials.push(tokio::spawn(
                async move { service.connect(id, &[addr]).await },
            ));
        }
    }
    for dial in dials {
        dial.await.unwrap().unwrap();
    }
    for (i, node) in nodes.iter().enumerate() {
        for (j, id) in ids.iter().enumerate() {
            if i != j {
                node.service
                    .send(id, format!("{i}->{j}").into_bytes(), Priority::NORMAL)
                    .await
                    .unwrap();
            }
        }
    }
    for (j, node) in nodes.iter_mut().enumerate() {
        let mut got = HashSet::new();
        while got.len() < N - 1 {
            let (from, data) = node
                .expect("messages", |e| match e {
                    Event::NewMessage { peer, data } => Some((peer, data)),
                    _ => None,
                })
                .await;
            let i = ids.iter().position(|id| *id == from).unwrap();
            assert_eq!(data, format!("{i}->{j}").as_bytes());
            assert!(got.insert(i), "duplicate message from {i}");
        }
        assert_eq!(node.service.connected_peers().await.len(), N - 1);
    }
}

#[tokio::test]
async fn simultaneous_dial_ends_with_one_connection_on_both_sides() {
    for round in 0..10 {
        let mut a = Node::start().await;
        let mut b = Node::start().await;
        let (a_id, b_id) = (a.id(), b.id());
        let (a_addr, b_addr) = ([a.addr], [b.addr]);
        let (ra, rb) = tokio::join!(
            a.service.connect(b_id, &b_addr),
            b.service.connect(a_id, &a_addr),
        );
        ra.unwrap();
        rb.unwrap();
        // Let the loser close on both sides.
        let events_a = a.drain(Duration::from_millis(700)).await;
        let events_b = b.drain(Duration::from_millis(700)).await;
        let pa = a.service.connected_peers().await;
        let pb = b.service.connected_peers().await;
        assert_eq!(pa.len(), 1, "round {round}");
        assert_eq!(pb.len(), 1, "round {round}");
        let (ia, ib) = (&pa[0].1, &pb[0].1);
        // The same TCP connection, seen from both ends.
        assert_eq!(ia.local_addr, ib.remote_addr, "round {round}");
        assert_eq!(ia.remote_addr, ib.local_addr, "round {round}");
        // It is the one dialled by the smaller id.
        let expected_dialler_is_a = a_id < b_id;
        assert_eq!(
            ia.direction == Direction::Outgoing,
            expected_dialler_is_a,
            "round {round}"
        );
        // Each side reported the peer once and never lost it.
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
        a.says(&mut b, b"still here").await;
    }
}

#[tokio::test]
async fn a_small_urgent_message_overtakes_a_large_one() {
    let cfg = crust::Config {
        channel: crust::ChannelConfig {
            max_message_len: 64 * 1024 * 1024,
            ..config().channel
        },
        send_queue_limit: 64 * 1024 * 1024,
        ..config()
    };
    let mut a = Node::start_with(cfg.clone(), SecretId::generate()).await;
    let b = Node::start_with(cfg, SecretId::generate()).await;
    b.service.connect(a.id(), &[a.addr]).await.unwrap();
    let b_id = b.id();
    // A's events are not read while B queues, so the big message fills the
    // socket buffers and the small one is queued behind it.
    let big = vec![0xabu8; 40 * 1024 * 1024];
    b.service
        .send(&a.id(), big.clone(), Priority::LOWEST)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    b.service
        .send(&a.id(), &b"urgent"[..], Priority::HIGHEST)
        .await
        .unwrap();
    let first = a.message_from(b_id).await;
    assert_eq!(first, &b"urgent"[..]);
    assert_eq!(a.message_from(b_id).await.len(), big.len());
}

#[tokio::test]
async fn connecting_to_the_wrong_id_fails_clearly() {
    let a = Node::start().await;
    let mut b = Node::start().await;
    let someone_else = SecretId::generate().peer_id();
    let error = b
        .service
        .connect(someone_else, &[a.addr])
        .await
        .unwrap_err();
    let ConnectError::Failed(attempts) = &error else {
        panic!("{error}")
    };
    assert!(error.to_string().contains("dialled"), "{error}");
    assert_eq!(attempts.len(), 1);
    b.expect("failure event", |e| {
        matches!(e, Event::ConnectFailure { peer, .. } if peer == someone_else).then_some(())
    })
    .await;
    assert!(b.service.connected_peers().await.is_empty());
    // Nothing listening: a refused connection.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    assert!(b.service.connect(a.id(), &[closed]).await.is_err());
    // One good address among bad ones is enough.
    b.service.connect(a.id(), &[closed, a.addr]).await.unwrap();
}

#[tokio::test]
async fn sending_to_a_stranger_or_too_much_is_refused() {
    let a = Node::start().await;
    let stranger = SecretId::generate().peer_id();
    assert_eq!(
        a.service
            .send(&stranger, &b"hi"[..], Priority::NORMAL)
            .await,
        Err(SendError::NotConnected(stranger))
    );
    let b = Node::start().await;
    a.service.connect(b.id(), &[b.addr]).await.unwrap();
    let too_big = vec![0u8; a.service.config().channel.max_message_len + 1];
    assert!(matches!(
        a.service.send(&b.id(), too_big, Priority::NORMAL).await,
        Err(SendError::TooLarge { .. })
    ));
}

#[tokio::test]
async fn disconnect_tells_the_peer_and_reports_nothing_locally() {
    let mut a = Node::start().await;
    let mut b = Node::start().await;
    b.service.connect(a.id(), &[a.addr]).await.unwrap();
    let b_id = b.id();
    assert!(b.service.disconnect(&a.id()).await);
    let reason = a
        .expect("lost", |e| match e {
            Event::LostPeer { peer, reason } if peer == b_id => Some(reason),
            _ => None,
        })
        .await;
    assert_eq!(reason, LostReason::PeerDisconnected);
    let events = b.drain(Duration::from_millis(300)).await;
    assert!(
        !events.iter().any(|e| matches!(e, Event::LostPeer { .. })),
        "{events:?}"
    );
    assert!(b.service.connected_peers().await.is_empty());
    assert!(!b.service.disconnect(&a.id()).await);
}

#[tokio::test]
async fn shutdown_is_reported_to_peers() {
    let mut a = Node::start().await;
    let b = Node::start().await;
    b.service.connect(a.id(), &[a.addr]).await.unwrap();
    let b_id = b.id();
    b.service.shutdown().await;
    let reason = a
        .expect("lost", |e| match e {
            Event::LostPeer { peer, reason } if peer == b_id => Some(reason),
            _ => None,
        })
        .await;
    assert_eq!(reason, LostReason::PeerShutdown);
    assert!(b.service.connect(a.id(), &[a.addr]).await.is_err());
}

#[tokio::test]
async fn a_silent_path_is_detected_by_keepalive() {
    // B reaches A through a proxy that we freeze: TCP stays open but
    // nothing passes, as when a NAT or a laptop lid cuts the path.
    let mut a = Node::start().await;
    let b = Node::start().await;
    let (proxy_addr, freeze_tx) = common::freezable_proxy(a.addr).await;
    b.service.connect(a.id(), &[proxy_addr]).await.unwrap();
    let b_id = b.id();
    a.expect("connect", |e| {
        matches!(e, Event::ConnectSuccess { .. }).then_some(())
    })
    .await;
    freeze_tx.send(true).unwrap();
    let started = tokio::time::Instant::now();
    let reason = a
        .expect("lost", |e| match e {
            Event::LostPeer { peer, reason } if peer == b_id => Some(reason),
            _ => None,
        })
        .await;
    assert_eq!(reason, LostReason::Timeout);
    // peer_timeout is 3 s in tests; allow the keep-alive period on top.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "lost too early"
    );
}

#[tokio::test]
async fn restart_bootstraps_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("bootstrap-cache.json");
    let mut a = Node::start().await;
    let b_secret = SecretId::generate();
    let b_cfg = crust::Config {
        bootstrap_cache: Some(cache.clone()),
        ..config()
    };
    let b = Node::start_with(b_cfg.clone(), b_secret.clone()).await;
    b.service.connect(a.id(), &[a.addr]).await.unwrap();
    b.service.shutdown().await;
    drop(b);
    let b_id = b_secret.peer_id();
    a.expect("lost", |e| {
        matches!(e, Event::LostPeer { peer, .. } if peer == b_id).then_some(())
    })
    .await;
    // The cache is written off the actor's thread; wait for it.
    let deadline = std::time::Instant::now() + common::PATIENCE;
    while !std::fs::read_to_string(&cache)
        .unwrap_or_default()
        .contains(&a.id().to_string())
    {
        assert!(std::time::Instant::now() < deadline, "cache never written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Restarted with no contacts: the cache alone finds A.
    let mut b = Node::start_with(b_cfg, b_secret).await;
    b.service.bootstrap().unwrap();
    let a_id = a.id();
    let (peer, addr) = b
        .expect("bootstrap", |e| match e {
            Event::BootstrapConnect { peer, addr } => Some((peer, addr)),
            _ => None,
        })
        .await;
    assert_eq!((peer, addr), (a_id, a.addr.into()));
    a.expect("bootstrap accept", |e| {
        matches!(e, Event::BootstrapAccept { peer, .. } if peer == b_id).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_damaged_cache_is_kept_aside_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("bootstrap-cache.json");
    std::fs::write(&cache, b"\x00\x01 this is not json").unwrap();
    let a = Node::start().await;
    let cfg = crust::Config {
        bootstrap_cache: Some(cache.clone()),
        ..config()
    };
    let mut b = Node::start_with(cfg, SecretId::generate()).await;
    assert!(dir.path().join("bootstrap-cache.json.bad").exists());
    b.service.bootstrap().unwrap();
    b.expect("bootstrap failed", |e| {
        matches!(e, Event::BootstrapFailed).then_some(())
    })
    .await;
    b.service.connect(a.id(), &[a.addr]).await.unwrap();
    let deadline = std::time::Instant::now() + common::PATIENCE;
    loop {
        let (reopened, error) = crust::BootstrapCache::open(&cache, 10);
        if error.is_none() && reopened.entries().iter().any(|e| e.id == a.id()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cache never rewritten"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn bootstrap_keeps_the_configured_number_of_connections() {
    let mut hubs = Vec::new();
    for _ in 0..5 {
        hubs.push(Node::start().await);
    }
    let cfg = crust::Config {
        bootstrap_contacts: hubs
            .iter()
            .map(|h| crust::Contact {
                id: Some(h.id()),
                addr: h.addr.into(),
            })
            .collect(),
        bootstrap_keep: 2,
        ..config()
    };
    let mut b = Node::start_with(cfg, SecretId::generate()).await;
    b.service.bootstrap().unwrap();
    let events = b.drain(Duration::from_secs(2)).await;
    let kept: HashMap<PeerId, crust::Endpoint> = events
        .iter()
        .filter_map(|e| match e {
            Event::BootstrapConnect { peer, addr } => Some((*peer, *addr)),
            _ => None,
        })
        .collect();
    assert_eq!(kept.len(), 2, "{events:?}");
    assert_eq!(b.service.connected_peers().await.len(), 2);
    assert!(!events.iter().any(|e| matches!(e, Event::BootstrapFailed)));
}

#[tokio::test]
async fn garbage_on_the_listener_does_not_disturb_real_peers() {
    let mut a = Node::start().await;
    let b = Node::start().await;
    b.service.connect(a.id(), &[a.addr]).await.unwrap();
    // Junk, an oversized handshake frame, and a half-open connection.
    let mut junk = tokio::net::TcpStream::connect(a.addr).await.unwrap();
    junk.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut oversized = tokio::net::TcpStream::connect(a.addr).await.unwrap();
    oversized.write_all(&[0xff, 0xff, 1, 2, 3]).await.unwrap();
    let _half_open = tokio::net::TcpStream::connect(a.addr).await.unwrap();
    b.says(&mut a, b"unaffected").await;
    let c = Node::start().await;
    c.service.connect(a.id(), &[a.addr]).await.unwrap();
    assert_eq!(a.service.connected_peers().await.len(), 2);
}

#[tokio::test]
async fn a_listener_on_a_taken_port_fails_clearly() {
    let a = Node::start().await;
    let cfg = crust::Config {
        listen: vec![a.addr],
        ..config()
    };
    let error = Service::start(cfg, SecretId::generate()).await.unwrap_err();
    assert!(error.to_string().contains(&a.addr.to_string()), "{error}");
}
