//! Presence while crust resolves duplicate connections: two nodes that
//! befriend dial each other (and over TCP and uTP at once), so crust keeps
//! one connection and closes the others. The contact must never be reported
//! offline meanwhile, and every message sent across the switch arrives.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::collections::HashSet;
use std::time::Duration;

use std::net::SocketAddr;

use chat_core::{Event, MessageState, NodeConfig, PeerId, Presence, Profile};
use common::Peer;

const PATIENCE: Duration = Duration::from_secs(20);

/// Takes `peer`'s events into `log` until `done` says so.
async fn pump(peer: &mut Peer, log: &mut Vec<Event>, mut done: impl FnMut(&Peer, &Event) -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let event = tokio::time::timeout_at(deadline, peer.events.recv())
            .await
            .expect("timed out")
            .expect("node stopped");
        let finished = done(peer, &event);
        log.push(event);
        if finished {
            return;
        }
    }
}

fn offline_reports(log: &[Event], contact: PeerId) -> usize {
    log.iter()
        .filter(|e| matches!(e, Event::ContactOffline { contact: c } if *c == contact))
        .count()
}

/// A loopback config on fixed ports (TCP and UDP of the same number), so a
/// restarted node is found at the addresses its contacts know.
fn fixed_port_config() -> NodeConfig {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut config = NodeConfig::loopback(common::NETWORK);
    config.crust.listen = vec![addr];
    config.crust.utp = Some(addr);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_never_flaps_offline_while_connections_are_switched() {
    const MESSAGES: usize = 30;
    let root = tempfile::tempdir().unwrap();
    for round in 0..4 {
        let (config_a, config_b) = (fixed_port_config(), fixed_port_config());
        let (dir_a, dir_b) = (
            root.path().join(format!("a{round}")),
            root.path().join(format!("b{round}")),
        );
        drop(Profile::create(&dir_a, "a", None).unwrap());
        drop(Profile::create(&dir_b, "b", None).unwrap());
        let mut a = common::open_with(&dir_a, config_a.clone()).await;
        let mut b = common::open_with(&dir_b, config_b.clone()).await;
        common::befriend(&mut a, &mut b).await;
        let (a_id, b_id) = (a.id(), b.id());
        a.stop().await;
        b.stop().await;

        // Both come back at once on the same addresses and dial each other
        // at once, over TCP and uTP: crust sees up to four connections and
        // keeps one.
        let (mut a, mut b) = tokio::join!(
            common::open_with(&dir_a, config_a),
            common::open_with(&dir_b, config_b)
        );
        let (mut log_a, mut log_b) = (Vec::new(), Vec::new());
        pump(
            &mut a,
            &mut log_a,
            |_, e| matches!(e, Event::ContactOnline { contact, .. } if *contact == b_id),
        )
        .await;
        pump(
            &mut b,
            &mut log_b,
            |_, e| matches!(e, Event::ContactOnline { contact, .. } if *contact == a_id),
        )
        .await;

        // Messages both ways, right while duplicates are resolved.
        let sent_a: Vec<_> = (0..MESSAGES)
            .map(|i| a.node.send(&b_id, &format!("a{i}")).unwrap().id)
            .collect();
        let sent_b: Vec<_> = (0..MESSAGES)
            .map(|i| b.node.send(&a_id, &format!("b{i}")).unwrap().id)
            .collect();
        for (peer, log, from, sent) in [
            (&mut a, &mut log_a, b_id, &sent_a),
            (&mut b, &mut log_b, a_id, &sent_b),
        ] {
            let mut received = HashSet::new();
            let mut delivered = HashSet::new();
            pump(peer, log, |_, e| {
                match e {
                    Event::MessageReceived(m) if m.contact == from => {
                        assert!(received.insert(m.text.clone()), "{} twice", m.text);
                    }
                    Event::MessageStateChanged { id, state, .. }
                        if *state >= MessageState::Delivered && sent.contains(id) =>
                    {
                        delivered.insert(*id);
                    }
                    _ => {}
                }
                received.len() == MESSAGES && delivered.len() == MESSAGES
            })
            .await;
        }
        // A little longer: a late duplicate is closed within this.
        for (peer, log) in [(&mut a, &mut log_a), (&mut b, &mut log_b)] {
            let until = tokio::time::Instant::now() + Duration::from_millis(700);
            while let Ok(Some(event)) = tokio::time::timeout_at(until, peer.events.recv()).await {
                log.push(event);
            }
        }

        assert_eq!(offline_reports(&log_a, b_id), 0, "round {round}: {log_a:?}");
        assert_eq!(offline_reports(&log_b, a_id), 0, "round {round}: {log_b:?}");
        let switches = [&log_a, &log_b].map(|log| {
            log.iter()
                .filter(|e| matches!(e, Event::ContactOnline { .. }))
                .count()
                - 1
        });
        eprintln!("round {round}: connection switches seen by a, b: {switches:?}");
        for (peer, other) in [(&a, b_id), (&b, a_id)] {
            assert!(matches!(
                peer.node.contact(&other).unwrap().presence,
                Presence::Online(_)
            ));
        }
        // Both ends see one connection, the same one.
        let (ra, rb) = (a.node.network_report().await, b.node.network_report().await);
        let to_b: Vec<_> = ra.connections.iter().filter(|(p, _)| *p == b_id).collect();
        let to_a: Vec<_> = rb.connections.iter().filter(|(p, _)| *p == a_id).collect();
        assert_eq!((to_b.len(), to_a.len()), (1, 1), "round {round}");
        assert_eq!(to_b[0].1.local_addr, to_a[0].1.remote_addr, "round {round}");
        assert_eq!(to_b[0].1.transport, to_a[0].1.transport, "round {round}");
        a.stop().await;
        b.stop().await;
    }
}

/// When a friend's connection drops, the node shows it as connecting and
/// dials it again with backoff, without waiting for the (here: hour-long)
/// reconnect interval. Bob comes back knowing only a wrong address for
/// alice, so the connection that returns is alice's reconnection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_friend_is_reconnected_with_backoff_and_shown_connecting() {
    let root = tempfile::tempdir().unwrap();
    let mut config_a = fixed_port_config();
    config_a.reconnect_interval = Duration::from_secs(3600);
    let config_b = fixed_port_config();
    let (dir_a, dir_b) = (root.path().join("alice"), root.path().join("bob"));
    drop(Profile::create(&dir_a, "alice", None).unwrap());
    drop(Profile::create(&dir_b, "bob", None).unwrap());
    let mut a = common::open_with(&dir_a, config_a).await;
    let mut b = common::open_with(&dir_b, config_b.clone()).await;
    common::befriend(&mut a, &mut b).await;
    let (a_id, b_id) = (a.id(), b.id());
    let dir_b = b.stop().await;

    let mut log = Vec::new();
    pump(
        &mut a,
        &mut log,
        |_, e| matches!(e, Event::ContactOffline { contact } if *contact == b_id),
    )
    .await;
    pump(
        &mut a,
        &mut log,
        |_, e| matches!(e, Event::ContactConnecting { contact } if *contact == b_id),
    )
    .await;
    assert!(a.node.is_connecting(&b_id));
    // The contact list says so too: offline, but being dialled.
    assert!(matches!(
        a.node.contact(&b_id).unwrap().presence,
        Presence::Offline {
            connecting: true,
            ..
        }
    ));

    // Bob forgets where alice is, and comes back where he was.
    let db = rusqlite::Connection::open(dir_b.join("history.sqlite")).unwrap();
    let changed = db
        .execute(
            "UPDATE contacts SET addrs = 'tcp:127.0.0.1:9' WHERE peer = ?1",
            [a_id.as_bytes().as_slice()],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(db);
    let mut b = common::open_with(&dir_b, config_b).await;

    // Online again, and no longer connecting.
    pump(&mut a, &mut log, |peer, e| {
        matches!(e, Event::ContactOnline { contact, .. } if *contact == b_id)
            && !peer.node.is_connecting(&b_id)
            && matches!(
                peer.node.contact(&b_id).unwrap().presence,
                Presence::Online(_)
            )
    })
    .await;
    assert!(
        !log.iter()
            .any(|e| matches!(e, Event::ContactReconnectFailed { .. })),
        "{log:?}"
    );
    let m = a.node.send(&b_id, "welcome back").unwrap();
    assert_eq!(common::receive(&mut b, a_id, 1).await, ["welcome back"]);
    a.wait_for("delivered", |e| {
        matches!(e, Event::MessageStateChanged { id, state: MessageState::Delivered, .. } if *id == m.id)
            .then_some(())
    })
    .await;
    a.stop().await;
    b.stop().await;
}
