//! A peer that restarts soon after connecting: its new run's connection
//! must take over at once, although the old one is younger than a
//! handshake timeout (the window in which two connections are treated as a
//! simultaneous dial) and not yet known dead.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::Node;
use crust::{Config, Event, Priority, SecretId};

/// Long timers: the old connection is not found dead (peer timeout) nor
/// out of the race window (handshake timeout) while the test runs, so
/// only knowing that the peer restarted can move its messages.
fn config() -> Config {
    let mut config = common::config();
    config.peer_timeout = Duration::from_secs(60);
    config.channel.handshake_timeout = Duration::from_secs(30);
    config
}

/// A secret whose id is smaller (`smaller`) or larger than `than`'s.
fn secret_ordered(than: crust::PeerId, smaller: bool) -> SecretId {
    loop {
        let secret = SecretId::generate();
        if (secret.peer_id() < than) == smaller {
            return secret;
        }
    }
}

/// B connects to A, vanishes (its connection goes silent, not closed) and
/// starts again with the same identity a moment later, dialling A.
async fn restart_within_the_race_window(b_leads: bool) {
    let mut a = Node::start_with(config(), SecretId::generate()).await;
    let seed = *secret_ordered(a.id(), b_leads).to_bytes();
    let b_id = SecretId::from_bytes(&seed).peer_id();

    let (proxy, freeze) = common::freezable_proxy(a.addr).await;
    let mut b_old = Node::start_with(config(), SecretId::from_bytes(&seed)).await;
    b_old.service.connect(a.id(), &[proxy]).await.unwrap();
    a.expect("B's first connection", |e| {
        matches!(e, Event::ConnectSuccess { peer, .. } if peer == b_id).then_some(())
    })
    .await;
    a.says(&mut b_old, b"before").await;

    // B's first run goes away without A hearing of it.
    freeze.send(true).unwrap();
    b_old.service.shutdown().await;
    drop(b_old);

    let mut b_new = Node::start_with(config(), SecretId::from_bytes(&seed)).await;
    b_new.service.connect(a.id(), &[a.addr]).await.unwrap();
    a.expect("B's new run to take over", |e| match e {
        Event::ConnectionChanged { peer, info } if peer == b_id => Some(info),
        Event::LostPeer { peer, .. } if peer == b_id => panic!("A lost B"),
        _ => None,
    })
    .await;
    // Messages flow both ways on the new connection, long before the old
    // one could be found dead.
    a.service
        .send(&b_id, &b"after"[..], Priority::NORMAL)
        .await
        .unwrap();
    assert_eq!(b_new.message_from(a.id()).await.as_ref(), b"after");
    b_new.says(&mut a, b"back").await;
    // And B's new run stays connected (A did not refuse it).
    let events = b_new.drain(Duration::from_millis(500)).await;
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::LostPeer { peer, .. } if *peer == a.id())),
        "B lost A: {events:?}"
    );
}

#[tokio::test]
async fn a_restarted_follower_takes_over_at_once() {
    restart_within_the_race_window(false).await;
}

#[tokio::test]
async fn a_restarted_leader_takes_over_at_once() {
    restart_within_the_race_window(true).await;
}
