//! Chat through a simulated NAT (netsim): alice is behind a
//! port-restricted cone NAT, bob has a public address. Bob cannot dial
//! alice, but her connection to him carries the whole conversation both
//! ways, and messages queued while bob is away are delivered when he is
//! back.
//!
//! Needs root and `ip` (network namespaces, TUN); skips without them,
//! except under `CI=true`.

#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use chat_core::{
    Event, FriendRequest, MessageState, Node, NodeConfig, NodeEvents, PeerId, Presence, Profile,
};
use common::wait_on as wait;
use netsim::{NatPreset, Topology};
use tokio::sync::{mpsc, oneshot};

const NETWORK: &str = "chat-core-netsim";
const BOB_PORT: u16 = 40_000;

fn prerequisites() -> bool {
    netsim::prerequisites(&["ip"])
}

async fn open(dir: &std::path::Path, listen: SocketAddr) -> (Node, NodeEvents) {
    let mut config = NodeConfig::loopback(NETWORK);
    config.crust.listen = vec![listen];
    // uTP on the UDP port of the same number (from the settings).
    config.crust.utp = None;
    config.crust.dial_timeout = Duration::from_secs(3);
    Node::open(Profile::open(dir, None).unwrap(), config)
        .await
        .unwrap()
}

#[test]
fn chat_through_a_nat_both_ways_and_offline_messages_arrive_later() {
    if !prerequisites() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let [alice_dir, bob_dir] = common::profiles(root.path(), ["alice", "bob"]);

    let mut t = Topology::new().seed(11);
    let home = t.router("home", NatPreset::PortRestrictedCone);
    let alice_host = t.host("alice", home);
    let alice_lan_ip = std::net::IpAddr::V4(t.ip(alice_host));
    t.public_host("bob");

    let (invite_tx, invite_rx) = oneshot::channel::<String>();
    // Bob tells alice when he is away and when he is back.
    let (bob_says, mut alice_hears) = mpsc::unbounded_channel::<&'static str>();
    let (alice_says, mut bob_hears) = mpsc::unbounded_channel::<&'static str>();

    let results = netsim::run(
        &t,
        [
            netsim::host(move || async move {
                let (alice, mut events) = open(&alice_dir, SocketAddr::from(([0, 0, 0, 0], 0))).await;
                let invite: chat_core::Invite = invite_rx.await.unwrap().parse().unwrap();
                let bob = invite.peer;
                alice.add_contact(&invite, "hi from behind a NAT").unwrap();
                wait("alice", &mut events, |e| matches!(e, Event::FriendAccepted { .. }).then_some(())).await;
                let m = alice.send(&bob, "can you hear me?").unwrap();
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
                assert_eq!(reply, "loud and clear");
                assert_eq!(alice_hears.recv().await, Some("away"));
                wait("alice", &mut events, |e| matches!(e, Event::ContactOffline { .. }).then_some(())).await;
                let queued: Vec<_> = (0..5).map(|i| alice.send(&bob, &format!("while you were away {i}")).unwrap()).collect();
                alice_says.send("queued").unwrap();
                for m in &queued {
                    loop {
                        if alice.message(&bob, &m.id).unwrap().unwrap().state >= MessageState::Delivered {
                            break;
                        }
                        wait("alice", &mut events, |e| matches!(e, Event::MessageStateChanged { .. }).then_some(())).await;
                    }
                }
                alice_says.send("receipts").unwrap();
                alice.shutdown().await;
                "alice done".to_owned()
            }),
            netsim::host(move || async move {
                let (bob, mut events) = open(&bob_dir, SocketAddr::from(([0, 0, 0, 0], BOB_PORT))).await;
                let invite = bob.my_invite().unwrap();
                assert!(!invite.addrs.is_empty() && !invite.addrs[0].addr.ip().is_unspecified(), "{invite:?}");
                invite_tx.send(invite.to_string()).unwrap();
                let request = wait("bob", &mut events, |e| match e {
                    Event::FriendRequest(r) => Some(r.clone()),
                    _ => None,
                })
                .await;
                assert_eq!(request.message, "hi from behind a NAT");
                bob.accept(&request.from).unwrap();
                // Bob sees alice through her NAT, not at her own address.
                let Presence::Online(path) = bob.contact(&request.from).unwrap().presence else {
                    panic!("alice not online at bob")
                };
                assert_ne!(path.remote_addr.ip(), alice_lan_ip, "no NAT between alice and bob?");
                let text = wait("bob", &mut events, |e| match e {
                    Event::MessageReceived(m) => Some(m.text.clone()),
                    _ => None,
                })
                .await;
                assert_eq!(text, "can you hear me?");
                let reply = bob.send(&request.from, "loud and clear").unwrap();
                wait("bob", &mut events, |e| {
                    matches!(e, Event::MessageStateChanged { id, state: MessageState::Delivered, .. } if *id == reply.id)
                        .then_some(())
                })
                .await;
                bob.shutdown().await;
                drop(events);
                bob_says.send("away").unwrap();
                assert_eq!(bob_hears.recv().await, Some("queued"));
                // Back on the same port: alice (behind the NAT) redials.
                let (bob, mut events) = open(&bob_dir, SocketAddr::from(([0, 0, 0, 0], BOB_PORT))).await;
                let mut got = Vec::new();
                while got.len() < 5 {
                    got.push(
                        wait("bob", &mut events, |e| match e {
                            Event::MessageReceived(m) => Some(m.text.clone()),
                            _ => None,
                        })
                        .await,
                    );
                }
                assert_eq!(got, (0..5).map(|i| format!("while you were away {i}")).collect::<Vec<_>>());
                // Stay until alice has her receipts.
                assert_eq!(bob_hears.recv().await, Some("receipts"));
                bob.shutdown().await;
                "bob done".to_owned()
            }),
        ],
    )
    .unwrap();
    assert_eq!(results, ["alice done".to_owned(), "bob done".to_owned()]);
}

/// The part of one NATed friend in `three_nodes_*`: befriend bob from the
/// invite, say `hello`, expect bob's answer, stay until bob is done.
async fn natted_friend(
    dir: std::path::PathBuf,
    name: &'static str,
    invite: oneshot::Receiver<String>,
    done: oneshot::Receiver<()>,
) -> String {
    let (node, mut events) = open(&dir, SocketAddr::from(([0, 0, 0, 0], 0))).await;
    let invite: chat_core::Invite = invite.await.unwrap().parse().unwrap();
    let bob = invite.peer;
    node.add_contact(&invite, &format!("{name} here")).unwrap();
    wait(name, &mut events, |e| {
        matches!(e, Event::FriendAccepted { .. }).then_some(())
    })
    .await;
    node.send(&bob, &format!("hello from {name}")).unwrap();
    let reply = wait(name, &mut events, |e| match e {
        Event::MessageReceived(m) => Some(m.text.clone()),
        _ => None,
    })
    .await;
    assert_eq!(reply, format!("hi {name}"));
    done.await.unwrap();
    node.shutdown().await;
    format!("{name} done")
}

#[test]
fn three_nodes_two_behind_different_nats_chat_with_a_public_one() {
    if !prerequisites() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let dirs: Vec<_> = ["alice", "carol", "bob"]
        .iter()
        .map(|name| {
            let dir = root.path().join(name);
            drop(Profile::create(&dir, name, None).unwrap());
            dir
        })
        .collect();
    let mut t = Topology::new().seed(12);
    let home = t.router("home", NatPreset::PortRestrictedCone);
    let office = t.router("office", NatPreset::Symmetric);
    let alice_host = t.host("alice", home);
    let carol_host = t.host("carol", office);
    let lan_ips = [t.ip(alice_host), t.ip(carol_host)].map(std::net::IpAddr::V4);
    t.public_host("bob");

    let (alice_invite_tx, alice_invite) = oneshot::channel::<String>();
    let (carol_invite_tx, carol_invite) = oneshot::channel::<String>();
    let (alice_done_tx, alice_done) = oneshot::channel::<()>();
    let (carol_done_tx, carol_done) = oneshot::channel::<()>();
    let [alice_dir, carol_dir, bob_dir]: [std::path::PathBuf; 3] = dirs.try_into().unwrap();

    let results = netsim::run(
        &t,
        [
            netsim::host(move || natted_friend(alice_dir, "alice", alice_invite, alice_done)),
            netsim::host(move || natted_friend(carol_dir, "carol", carol_invite, carol_done)),
            netsim::host(move || async move {
                let (bob, mut events) =
                    open(&bob_dir, SocketAddr::from(([0, 0, 0, 0], BOB_PORT))).await;
                let invite = bob.my_invite().unwrap().to_string();
                alice_invite_tx.send(invite.clone()).unwrap();
                carol_invite_tx.send(invite).unwrap();
                // Requests and greetings interleave: one friend may greet
                // bob before the other's request has arrived, so both kinds
                // of event are handled in one loop (a `wait` for one kind
                // would swallow the other).
                enum Seen {
                    Request(FriendRequest),
                    Message(PeerId, String),
                }
                let mut friends: Vec<(PeerId, String)> = Vec::new();
                let mut greeted = Vec::new();
                while friends.len() < 2 || greeted.len() < 2 {
                    let seen = wait("bob", &mut events, |e| match e {
                        Event::FriendRequest(r) => Some(Seen::Request(r.clone())),
                        Event::MessageReceived(m) => Some(Seen::Message(m.contact, m.text.clone())),
                        _ => None,
                    })
                    .await;
                    match seen {
                        Seen::Request(request) => {
                            bob.accept(&request.from).unwrap();
                            // Each friend is seen through its own NAT.
                            let Presence::Online(path) =
                                bob.contact(&request.from).unwrap().presence
                            else {
                                panic!("{} not online at bob", request.name)
                            };
                            assert!(
                                !lan_ips.contains(&path.remote_addr.ip()),
                                "no NAT in front of {}",
                                request.name
                            );
                            friends.push((request.from, request.name));
                        }
                        Seen::Message(from, text) => {
                            let name = &friends.iter().find(|(id, _)| *id == from).unwrap().1;
                            assert_eq!(text, format!("hello from {name}"));
                            let reply = bob.send(&from, &format!("hi {name}")).unwrap();
                            greeted.push(reply.id);
                        }
                    }
                }
                for id in greeted {
                    loop {
                        let delivered = friends.iter().any(|(f, _)| {
                            bob.message(f, &id)
                                .unwrap()
                                .is_some_and(|m| m.state >= MessageState::Delivered)
                        });
                        if delivered {
                            break;
                        }
                        wait("bob", &mut events, |e| {
                            matches!(e, Event::MessageStateChanged { .. }).then_some(())
                        })
                        .await;
                    }
                }
                alice_done_tx.send(()).unwrap();
                carol_done_tx.send(()).unwrap();
                bob.shutdown().await;
                "bob done".to_owned()
            }),
        ],
    )
    .unwrap();
    assert_eq!(
        results,
        ["alice done", "carol done", "bob done"].map(String::from)
    );
}

const RENDEZVOUS_PORT: u16 = 41_000;

/// One NATed friend in `two_nodes_behind_nats_*`: bootstraps to the
/// rendezvous, then waits until connected to it.
async fn open_bootstrapped(
    dir: &std::path::Path,
    rendezvous: crust::Contact,
) -> (Node, NodeEvents) {
    let mut config = NodeConfig::loopback(NETWORK);
    config.crust.listen = vec![SocketAddr::from(([0, 0, 0, 0], 0))];
    config.crust.utp = None;
    config.crust.dial_timeout = Duration::from_secs(3);
    let id = rendezvous.id.unwrap();
    config.crust.bootstrap_contacts = vec![rendezvous];
    config.bootstrap = true;
    let (node, events) = Node::open(Profile::open(dir, None).unwrap(), config)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !node
        .network_report()
        .await
        .connections
        .iter()
        .any(|(p, _)| *p == id)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "not connected to the rendezvous"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (node, events)
}

/// Alice and carol sit behind port-restricted cone NATs of their own; the
/// only public machine is a plain crust node both bootstrap to. Carol's
/// invite addresses are unreachable for alice, so chat-core meets her
/// through the rendezvous: the connection is hole-punched (or relayed),
/// and they befriend and chat both ways over it.
#[test]
fn two_nodes_behind_nats_meet_through_a_rendezvous_and_chat() {
    if !prerequisites() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let alice_dir = root.path().join("alice");
    let carol_dir = root.path().join("carol");
    drop(Profile::create(&alice_dir, "alice", None).unwrap());
    drop(Profile::create(&carol_dir, "carol", None).unwrap());

    let mut t = Topology::new().seed(13);
    let home = t.router("home", NatPreset::PortRestrictedCone);
    let office = t.router("office", NatPreset::PortRestrictedCone);
    t.host("alice", home);
    t.host("carol", office);
    let rv_host = t.public_host("rendezvous");
    let rv_secret = crust::SecretId::from_bytes(&[7; 32]);
    let rendezvous = crust::Contact {
        id: Some(rv_secret.peer_id()),
        addr: crust::Endpoint::tcp(SocketAddr::from((t.ip(rv_host), RENDEZVOUS_PORT))),
    };

    let rendezvous_for_carol = rendezvous;
    let (rv_up_tx, rv_up) = tokio::sync::watch::channel(false);
    let mut rv_up_carol = rv_up.clone();
    let mut rv_up_alice = rv_up;
    let (invite_tx, invite_rx) = oneshot::channel::<String>();
    let (alice_done_tx, alice_done) = oneshot::channel::<()>();
    let (carol_done_tx, carol_done) = oneshot::channel::<()>();

    let results = netsim::run(
        &t,
        [
            netsim::host(move || async move {
                rv_up_alice.wait_for(|up| *up).await.unwrap();
                let (alice, mut events) = open_bootstrapped(&alice_dir, rendezvous).await;
                let invite: chat_core::Invite = invite_rx.await.unwrap().parse().unwrap();
                let carol = invite.peer;
                alice
                    .add_contact(&invite, "hi from one NAT to another")
                    .unwrap();
                wait("alice", &mut events, |e| {
                    matches!(e, Event::FriendAccepted { contact } if *contact == carol)
                        .then_some(())
                })
                .await;
                let path = alice.contact(&carol).unwrap().presence.path().unwrap();
                assert!(
                    path.starts_with("hole-punched") || path.starts_with("relayed"),
                    "alice reaches carol by {path}"
                );
                let m = alice.send(&carol, "through the holes").unwrap();
                let reply = wait("alice", &mut events, |e| match e {
                    Event::MessageReceived(m) if m.contact == carol => Some(m.text.clone()),
                    _ => None,
                })
                .await;
                assert_eq!(reply, "loud and clear");
                while alice.message(&carol, &m.id).unwrap().unwrap().state < MessageState::Delivered
                {
                    wait("alice", &mut events, |e| {
                        matches!(e, Event::MessageStateChanged { .. }).then_some(())
                    })
                    .await;
                }
                alice_done_tx.send(()).unwrap();
                carol_done.await.unwrap();
                alice.shutdown().await;
                path
            }),
            netsim::host(move || async move {
                rv_up_carol.wait_for(|up| *up).await.unwrap();
                let (carol, mut events) = open_bootstrapped(&carol_dir, rendezvous_for_carol).await;
                invite_tx
                    .send(carol.my_invite().unwrap().to_string())
                    .unwrap();
                let request = wait("carol", &mut events, |e| match e {
                    Event::FriendRequest(r) => Some(r.clone()),
                    _ => None,
                })
                .await;
                assert_eq!(request.message, "hi from one NAT to another");
                carol.accept(&request.from).unwrap();
                let text = wait("carol", &mut events, |e| match e {
                    Event::MessageReceived(m) => Some(m.text.clone()),
                    _ => None,
                })
                .await;
                assert_eq!(text, "through the holes");
                let reply = carol.send(&request.from, "loud and clear").unwrap();
                while carol
                    .message(&request.from, &reply.id)
                    .unwrap()
                    .unwrap()
                    .state
                    < MessageState::Delivered
                {
                    wait("carol", &mut events, |e| {
                        matches!(e, Event::MessageStateChanged { .. }).then_some(())
                    })
                    .await;
                }
                let path = carol
                    .contact(&request.from)
                    .unwrap()
                    .presence
                    .path()
                    .unwrap();
                carol_done_tx.send(()).unwrap();
                carol.shutdown().await;
                path
            }),
            netsim::host(move || async move {
                let config = crust::Config {
                    listen: vec![SocketAddr::from(([0, 0, 0, 0], RENDEZVOUS_PORT))],
                    utp: Some(SocketAddr::from(([0, 0, 0, 0], RENDEZVOUS_PORT))),
                    upnp: false,
                    rendezvous: true,
                    channel: crust::ChannelConfig {
                        network_id: NETWORK.into(),
                        ..Default::default()
                    },
                    ..crust::Config::default()
                };
                let (service, _events) = crust::Service::start(config, rv_secret).await.unwrap();
                rv_up_tx.send(true).unwrap();
                alice_done.await.unwrap();
                service.shutdown().await;
                "rendezvous done".to_owned()
            }),
        ],
    )
    .unwrap();
    assert_eq!(results[2], "rendezvous done");
    for path in &results[..2] {
        assert!(
            path.starts_with("hole-punched") || path.starts_with("relayed"),
            "{results:?}"
        );
    }
    eprintln!("paths: {results:?}");
}
