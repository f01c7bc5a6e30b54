//! A friend who changed networks is found again through the DHT (netsim).
//!
//! Alice (public address) and Bob (behind a port-restricted cone NAT) are
//! friends and both go away. Alice comes back on another public address;
//! Bob comes back behind another, symmetric, NAT. Bob's dials to Alice's
//! old address fail, the seed they both join through forwards no
//! rendezvous, and nobody shares an invite again: Bob finds Alice only by
//! looking up her DHT record, which names her new address.
//!
//! Needs root and `ip` (network namespaces, TUN); skips without them,
//! except under `CI=true`.

#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chat_core::{DhtMode, Endpoint, Event, Node, NodeConfig, NodeEvents, PeerId, Profile};
use common::wait_on as wait;
use netsim::{NatPreset, Network, Topology};
use tokio::sync::oneshot;

const NETWORK: &str = "chat-core-dht-netsim";
const SEED_PORT: u16 = 40_000;
const ALICE_PORT: u16 = 40_001;

fn prerequisites() -> bool {
    netsim::prerequisites(&["ip"])
}

fn config(port: u16, mode: DhtMode, seed: Option<(PeerId, IpAddr)>) -> NodeConfig {
    let mut config = NodeConfig::loopback(NETWORK);
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    config.crust.listen = vec![addr];
    config.crust.utp = Some(addr);
    config.crust.dial_timeout = Duration::from_secs(3);
    config.crust.rendezvous = false;
    config.dht.mode = mode;
    if let Some((id, ip)) = seed {
        config.bootstrap = true;
        config.crust.bootstrap_contacts = vec![crust::Contact {
            id: Some(id),
            addr: Endpoint::tcp(SocketAddr::new(ip, SEED_PORT)),
        }];
    }
    config
}

async fn open(dir: &Path, config: NodeConfig) -> (Node, NodeEvents) {
    Node::open(Profile::open(dir, None).unwrap(), config)
        .await
        .unwrap()
}

async fn published(node: &Node) {
    for _ in 0..400 {
        let status = node.dht_status().await.unwrap();
        if status.published.is_some() && status.stored_at > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never published");
}

fn online(contact: PeerId) -> impl FnMut(&Event) -> Option<()> {
    move |e| matches!(e, Event::ContactOnline { contact: c, .. } if *c == contact).then_some(())
}

#[test]
fn a_friend_on_a_new_network_is_reached_through_the_dht() {
    if !prerequisites() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let dir = |name: &str| -> PathBuf {
        let dir = root.path().join(name);
        drop(Profile::create(&dir, name, None).unwrap());
        dir
    };
    let (seed_dir, alice_dir, bob_dir) = (dir("seed"), dir("alice"), dir("bob"));
    let seed_id = Profile::open(&seed_dir, None).unwrap().peer_id();

    let mut t = Topology::new().seed(23);
    let seed_host = t.public_host("seed");
    let a1 = t.public_host("alice-home");
    let a2 = t.public_host("alice-away");
    let nat1 = t.router("bob-home", NatPreset::PortRestrictedCone);
    let nat2 = t.router("bob-away", NatPreset::Symmetric);
    let b1 = t.host("bob-home-laptop", nat1);
    let b2 = t.host("bob-away-laptop", nat2);
    let seed_ip = IpAddr::V4(t.ip(seed_host));
    let a2_ip = IpAddr::V4(t.ip(a2));
    let net = Network::start(&t).unwrap();
    let seed = Some((seed_id, seed_ip));

    let (seed_stop, seed_stopped) = oneshot::channel::<()>();
    let (seed_up, seed_is_up) = std::sync::mpsc::channel::<()>();
    let seed_task = net
        .spawn(seed_host, move || async move {
            let (node, mut events) =
                open(&seed_dir, config(SEED_PORT, DhtMode::Server, None)).await;
            tokio::spawn(async move { while events.recv().await.is_some() {} });
            seed_up.send(()).unwrap();
            let _ = seed_stopped.await;
            node.shutdown().await;
        })
        .unwrap();
    seed_is_up.recv().unwrap();

    // At home: befriend.
    let (invite_tx, invite_rx) = oneshot::channel::<String>();
    let (accepted_tx, accepted_rx) = oneshot::channel::<()>();
    let alice_dir2 = alice_dir.clone();
    let alice_home = net
        .spawn(a1, move || async move {
            let (alice, mut events) =
                open(&alice_dir2, config(ALICE_PORT, DhtMode::Server, seed)).await;
            published(&alice).await;
            invite_tx
                .send(alice.my_invite().unwrap().to_string())
                .unwrap();
            let request = wait("alice", &mut events, |e| match e {
                Event::FriendRequest(r) => Some(r.from),
                _ => None,
            })
            .await;
            alice.accept(&request).unwrap();
            // Bob knows he is a friend before both leave.
            accepted_rx.await.unwrap();
            alice.shutdown().await;
            request
        })
        .unwrap();
    let bob_dir2 = bob_dir.clone();
    let bob_home = net
        .spawn(b1, move || async move {
            let (bob, mut events) = open(&bob_dir2, config(0, DhtMode::Client, seed)).await;
            let invite: chat_core::Invite = invite_rx.await.unwrap().parse().unwrap();
            bob.add_contact(&invite, "hi").unwrap();
            wait("bob", &mut events, |e| {
                matches!(e, Event::FriendAccepted { .. }).then_some(())
            })
            .await;
            accepted_tx.send(()).unwrap();
            bob.shutdown().await;
            invite.peer
        })
        .unwrap();
    let bob_id = alice_home.join().unwrap();
    let alice_id = bob_home.join().unwrap();

    // Away: Alice on a new address, Bob behind a new NAT.
    let (alice_ready, alice_is_ready) = oneshot::channel::<()>();
    let (bob_done, bob_is_done) = oneshot::channel::<()>();
    let alice_away = net
        .spawn(a2, move || async move {
            let (alice, mut events) =
                open(&alice_dir, config(ALICE_PORT, DhtMode::Server, seed)).await;
            published(&alice).await;
            alice_ready.send(()).unwrap();
            wait("alice away", &mut events, online(bob_id)).await;
            let text = wait("alice away", &mut events, |e| match e {
                Event::MessageReceived(m) => Some(m.text.clone()),
                _ => None,
            })
            .await;
            let _ = bob_is_done.await;
            alice.shutdown().await;
            text
        })
        .unwrap();
    let bob_away = net
        .spawn(b2, move || async move {
            alice_is_ready.await.unwrap();
            let (bob, mut events) = open(&bob_dir, config(0, DhtMode::Client, seed)).await;
            let stale = bob.contact(&alice_id).unwrap().addrs;
            assert!(!stale.iter().any(|e| e.addr.ip() == a2_ip), "{stale:?}");
            wait("bob away", &mut events, online(alice_id)).await;
            bob.send(&alice_id, "found you").unwrap();
            wait("bob away", &mut events, |e| {
                matches!(
                    e,
                    Event::MessageStateChanged {
                        state: chat_core::MessageState::Delivered,
                        ..
                    }
                )
                .then_some(())
            })
            .await;
            // By now Alice's hello has been read too: her new address is
            // known, whether the record or the DHT's routing table (a lookup
            // that asked Alice herself) brought Bob to her first.
            let known = bob.contact(&alice_id).unwrap().addrs;
            bob_done.send(()).unwrap();
            bob.shutdown().await;
            known
        })
        .unwrap();
    let known = bob_away.join().unwrap();
    // Bob learnt Alice's new address (he had only the old one).
    assert!(known.iter().any(|e| e.addr.ip() == a2_ip), "{known:?}");
    assert_eq!(alice_away.join().unwrap(), "found you");
    seed_stop.send(()).unwrap();
    seed_task.join().unwrap();
    net.shutdown();
}
