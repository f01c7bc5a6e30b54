//! LAN discovery in netsim: two friends on one LAN, with no bootstrap peer
//! and no internet (the LAN's router leads nowhere), both restart on new
//! ports, so the addresses each has for the other are stale. Only their
//! LAN beacons bring them together again, and they chat.
//!
//! Needs root and `ip` (network namespaces, TUN); skips without them,
//! except under `CI=true`.

#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use chat_core::{Event, MessageState, Node, NodeConfig, NodeEvents, Profile};
use common::wait_on as wait;
use netsim::{NatPreset, Topology};
use tokio::sync::{mpsc, oneshot};

const NETWORK: &str = "chat-core-lan";

fn prerequisites() -> bool {
    netsim::prerequisites(&["ip"])
}

/// A node listening on `port` (TCP and uTP), beaconing to the LAN's
/// broadcast address five times a second, with no bootstrap.
async fn open(dir: &std::path::Path, port: u16, discovery: bool) -> (Node, NodeEvents) {
    let mut config = NodeConfig::loopback(NETWORK);
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    config.crust.listen = vec![addr];
    config.crust.utp = Some(addr);
    config.crust.dial_timeout = Duration::from_secs(2);
    config.reconnect_interval = Duration::from_secs(1);
    if discovery {
        config.crust.lan_discovery = Some(crust::LanDiscovery {
            targets: vec![IpAddr::V4(Ipv4Addr::BROADCAST)],
            interval: Duration::from_millis(200),
            ..crust::LanDiscovery::default()
        });
    }
    Node::open(Profile::open(dir, None).unwrap(), config)
        .await
        .unwrap()
}

#[test]
fn friends_on_one_lan_with_no_server_find_each_other_and_chat() {
    if !prerequisites() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let [alice_dir, bob_dir] = common::profiles(root.path(), ["alice", "bob"]);

    // One LAN behind a router, and nothing beyond it.
    let mut t = Topology::new().seed(21);
    let lan = t.router("lan", NatPreset::FullCone);
    t.host("alice", lan);
    t.host("bob", lan);

    let (invite_tx, invite_rx) = oneshot::channel::<String>();
    let (alice_says, mut bob_hears) = mpsc::unbounded_channel::<&'static str>();
    let (bob_says, mut alice_hears) = mpsc::unbounded_channel::<&'static str>();

    let results = netsim::run(
        &t,
        [
            netsim::host(move || async move {
                // Become friends (through bob's invite), then go away.
                let (alice, mut events) = open(&alice_dir, 41_001, false).await;
                let invite: chat_core::Invite = invite_rx.await.unwrap().parse().unwrap();
                let bob = invite.peer;
                alice.add_contact(&invite, "hi").unwrap();
                wait("alice", &mut events, |e| matches!(e, Event::FriendAccepted { .. }).then_some(())).await;
                alice.shutdown().await;
                drop(events);
                alice_says.send("down").unwrap();
                assert_eq!(alice_hears.recv().await, Some("down"));

                // Back on another port; bob too: neither's stored
                // addresses for the other work any more.
                let (alice, mut events) = open(&alice_dir, 42_001, true).await;
                wait("alice", &mut events, |e| matches!(e, Event::ContactOnline { contact, .. } if *contact == bob).then_some(())).await;
                let m = alice.send(&bob, "found you on the LAN").unwrap();
                wait("alice", &mut events, |e| {
                    matches!(e, Event::MessageStateChanged { id, state: MessageState::Delivered, .. } if *id == m.id)
                        .then_some(())
                })
                .await;
                let reply = wait("alice", &mut events, |e| match e {
                    Event::MessageReceived(m) => Some(m.text.clone()),
                    _ => None,
                })
                .await;
                assert_eq!(reply, "no server needed");
                alice_says.send("done").unwrap();
                assert_eq!(alice_hears.recv().await, Some("done"));
                alice.shutdown().await;
                "alice done".to_owned()
            }),
            netsim::host(move || async move {
                let (bob, mut events) = open(&bob_dir, 41_002, false).await;
                invite_tx.send(bob.my_invite().unwrap().to_string()).unwrap();
                let request = wait("bob", &mut events, |e| match e {
                    Event::FriendRequest(r) => Some(r.clone()),
                    _ => None,
                })
                .await;
                let alice = request.from;
                bob.accept(&alice).unwrap();
                assert_eq!(bob_hears.recv().await, Some("down"));
                bob.shutdown().await;
                drop(events);
                bob_says.send("down").unwrap();

                let (bob, mut events) = open(&bob_dir, 42_002, true).await;
                let text = wait("bob", &mut events, |e| match e {
                    Event::MessageReceived(m) => Some(m.text.clone()),
                    _ => None,
                })
                .await;
                assert_eq!(text, "found you on the LAN");
                let reply = bob.send(&alice, "no server needed").unwrap();
                wait("bob", &mut events, |e| {
                    matches!(e, Event::MessageStateChanged { id, state: MessageState::Delivered, .. } if *id == reply.id)
                        .then_some(())
                })
                .await;
                assert_eq!(bob_hears.recv().await, Some("done"));
                bob_says.send("done").unwrap();
                bob.shutdown().await;
                "bob done".to_owned()
            }),
        ],
    )
    .unwrap();
    assert_eq!(results, ["alice done".to_owned(), "bob done".to_owned()]);
}
