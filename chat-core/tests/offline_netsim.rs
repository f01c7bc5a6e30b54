//! Delivery through a trusted holder in netsim: alice (behind a NAT) names
//! a holder on a public host; bob (public) writes to her while she is
//! away, leaves the message with her holder and goes offline himself;
//! alice comes back and collects it, with bob still gone.
//!
//! Needs root and `ip` (network namespaces, TUN); skips without them,
//! except under `CI=true`.

#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use chat_core::{Event, MessageState, Node, NodeConfig, NodeEvents, Profile};
use common::wait_on as wait;
use crust::mailbox::{Limits, Mailbox, Policy, unix_now};
use crust::{Config, Contact, Endpoint, PeerId, Priority, SecretId, Service};
use netsim::{NatPreset, Topology};
use tokio::sync::{mpsc, oneshot};

const NETWORK: &str = "chat-core-offline-netsim";
const HOLDER_PORT: u16 = 45_000;
const BOB_PORT: u16 = 45_001;
const TEXT: &str = "left with your holder while you were away";

async fn open(dir: &std::path::Path, port: u16, holders: Vec<Contact>) -> (Node, NodeEvents) {
    let mut config = NodeConfig::loopback(NETWORK);
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    config.crust.listen = vec![addr];
    config.crust.utp = Some(addr);
    config.crust.dial_timeout = Duration::from_secs(3);
    config.holders = holders;
    Node::open(Profile::open(dir, None).unwrap(), config)
        .await
        .unwrap()
}

#[test]
fn an_offline_message_reaches_its_recipient_through_a_holder_after_the_sender_left() {
    if !netsim::prerequisites(&["ip"]) {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let [alice_dir, bob_dir] = common::profiles(root.path(), ["alice", "bob"]);

    let mut t = Topology::new().seed(31);
    let home = t.router("home", NatPreset::PortRestrictedCone);
    t.host("alice", home);
    let holder_host = t.public_host("holder");
    let holder_ip = t.ip(holder_host);
    t.public_host("bob");
    let holder_secret = SecretId::generate();
    let holder_contact = Contact {
        id: Some(holder_secret.peer_id()),
        addr: Endpoint::tcp(SocketAddr::from((holder_ip, HOLDER_PORT))),
    };

    let (invite_tx, invite_rx) = oneshot::channel::<String>();
    let (alice_says, mut bob_hears) = mpsc::unbounded_channel::<&'static str>();
    let (bob_says, mut alice_hears) = mpsc::unbounded_channel::<&'static str>();
    let (held_tx, mut held_rx) = mpsc::unbounded_channel::<(PeerId, usize)>();
    let (done_tx, done_rx) = oneshot::channel::<()>();

    let results = netsim::run(
        &t,
        [
            netsim::host(move || async move {
                let (alice, mut events) = open(&alice_dir, 0, vec![holder_contact]).await;
                let invite: chat_core::Invite = invite_rx.await.unwrap().parse().unwrap();
                let bob = invite.peer;
                alice.add_contact(&invite, "hi").unwrap();
                wait("alice", &mut events, |e| matches!(e, Event::FriendAccepted { .. }).then_some(())).await;
                // Bob's hello message is acknowledged after alice told him
                // her holders (in order on one connection).
                wait("alice", &mut events, |e| matches!(e, Event::MessageReceived(_)).then_some(())).await;
                alice.shutdown().await;
                drop(events);
                alice_says.send("away").unwrap();
                assert_eq!(alice_hears.recv().await, Some("gone"));

                // Back, with bob gone: the holder has it.
                let (alice, mut events) = open(&alice_dir, 0, vec![holder_contact]).await;
                let got = wait("alice", &mut events, |e| match e {
                    Event::MessageReceived(m) if m.contact == bob => Some(m.text.clone()),
                    _ => None,
                })
                .await;
                assert_eq!(got, TEXT);
                alice.shutdown().await;
                done_tx.send(()).unwrap();
                "alice done".to_owned()
            }),
            netsim::host(move || async move {
                // The holder: a crust service keeping mail, as
                // `crust-node --hold` does.
                let mut config = Config {
                    listen: vec![SocketAddr::from(([0, 0, 0, 0], HOLDER_PORT))],
                    upnp: false,
                    ..Config::default()
                };
                config.channel.network_id = NETWORK.into();
                let (service, mut events) = Service::start(config, holder_secret).await.unwrap();
                let mut mailbox = Mailbox::in_memory(Limits::default(), Policy::Open);
                let mut done = done_rx;
                let mut reported = false;
                loop {
                    tokio::select! {
                        event = events.recv() => {
                            let Some(crust::Event::NewMessage { peer, data }) = event else { continue };
                            if let Some(reply) = mailbox.handle(&peer, &data, unix_now()) {
                                let _ = service.send(&peer, reply, Priority::NORMAL).await;
                            }
                            if !reported && let crust::mailbox::Message::Deposit { recipient, .. } =
                                crust::mailbox::Message::decode(&data).unwrap().unwrap_or(crust::mailbox::Message::Collect)
                            {
                                let (items, _) = mailbox.collect(&recipient, unix_now(), usize::MAX);
                                let leaks = items.iter().any(|i| i.blob.windows(TEXT.len()).any(|w| w == TEXT.as_bytes()));
                                assert!(!leaks, "the holder can read the text");
                                held_tx.send((recipient, items.len())).unwrap();
                                reported = true;
                            }
                        }
                        _ = &mut done => break,
                    }
                }
                service.shutdown().await;
                "holder done".to_owned()
            }),
            netsim::host(move || async move {
                let (bob, mut events) = open(&bob_dir, BOB_PORT, Vec::new()).await;
                invite_tx.send(bob.my_invite().unwrap().to_string()).unwrap();
                let request = wait("bob", &mut events, |e| match e {
                    Event::FriendRequest(r) => Some(r.clone()),
                    _ => None,
                })
                .await;
                let alice = request.from;
                bob.accept(&alice).unwrap();
                let hello = bob.send(&alice, "hello").unwrap();
                wait("bob", &mut events, |e| {
                    matches!(e, Event::MessageStateChanged { id, state: MessageState::Delivered, .. } if *id == hello.id)
                        .then_some(())
                })
                .await;
                assert_eq!(bob_hears.recv().await, Some("away"));
                wait("bob", &mut events, |e| matches!(e, Event::ContactOffline { contact } if *contact == alice).then_some(())).await;
                bob.send(&alice, TEXT).unwrap();
                let (recipient, count) = held_rx.recv().await.unwrap();
                assert_eq!((recipient, count), (alice, 1));
                // The sender leaves before the recipient is back.
                bob.shutdown().await;
                bob_says.send("gone").unwrap();
                "bob done".to_owned()
            }),
        ],
    )
    .unwrap();
    assert_eq!(
        results,
        [
            "alice done".to_owned(),
            "holder done".to_owned(),
            "bob done".to_owned()
        ]
    );
}
