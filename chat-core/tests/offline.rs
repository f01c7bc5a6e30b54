//! Delivery while one side is away, on loopback: bob leaves a message for
//! alice, who is offline, with alice's holder (a crust service running
//! `crust::mailbox`, as `crust-node --hold` does) and goes offline himself;
//! alice comes back, collects it from the holder, and it shows once. The
//! holder never holds the text.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_core::{Event, MessageState, NodeConfig};
use common::{Peer, befriend, open_with, receive};
use crust::mailbox::{Limits, Mailbox, Policy, unix_now};
use crust::{Config, Contact, Endpoint, Priority, SecretId, Service};

/// A holder on loopback: a crust service answering mailbox requests.
async fn holder() -> (Service, Arc<Mutex<Mailbox>>, Endpoint) {
    let mut config = Config {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        upnp: false,
        ..Config::default()
    };
    config.channel.network_id = common::NETWORK.into();
    let (service, mut events) = Service::start(config, SecretId::generate()).await.unwrap();
    let addr = service.listeners().await[0];
    let mailbox = Arc::new(Mutex::new(Mailbox::in_memory(
        Limits::default(),
        Policy::Open,
    )));
    let (svc, mb) = (service.clone(), mailbox.clone());
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let crust::Event::NewMessage { peer, data } = event {
                let reply = mb.lock().unwrap().handle(&peer, &data, unix_now());
                if let Some(reply) = reply {
                    let _ = svc.send(&peer, reply, Priority::NORMAL).await;
                }
            }
        }
    });
    (service, mailbox, addr)
}

/// A loopback config on a fixed port (TCP and UDP of one number), so a
/// restarted node is found where its friend last saw it.
fn fixed(port: u16) -> NodeConfig {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut config = NodeConfig::loopback(common::NETWORK);
    config.crust.listen = vec![addr];
    config.crust.utp = Some(addr);
    config
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config_with(port: u16, holder: &Service, addr: Endpoint) -> NodeConfig {
    let mut config = fixed(port);
    config.holders = vec![Contact {
        id: Some(holder.id()),
        addr,
    }];
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_left_with_a_holder_reaches_an_offline_friend_after_the_sender_left() {
    let root = tempfile::tempdir().unwrap();
    let (holder, mailbox, holder_addr) = holder().await;
    let (alice_port, bob_port) = (free_port(), free_port());
    let bob_dir = root.path().join("bob");
    drop(chat_core::Profile::create(&bob_dir, "bob", None).unwrap());
    let mut bob = open_with(&bob_dir, fixed(bob_port)).await;
    let alice_dir = root.path().join("alice");
    drop(chat_core::Profile::create(&alice_dir, "alice", None).unwrap());
    let mut alice = open_with(&alice_dir, config_with(alice_port, &holder, holder_addr)).await;
    befriend(&mut alice, &mut bob).await;
    let (alice_id, bob_id) = (alice.id(), bob.id());

    // A message both ways on the live session: alice's list of holders
    // reached bob before her ack did.
    let hello = bob.node.send(&alice_id, "hello").unwrap();
    delivered(&mut bob, hello.id).await;

    // Alice goes away; bob writes; the message is left with her holder.
    goes_offline(alice, &mut bob).await;
    let text = "left with your holder while you were away";
    let away = bob.node.send(&alice_id, text).unwrap();
    tokio::time::timeout(Duration::from_secs(20), async {
        while mailbox.lock().unwrap().usage(&alice_id).0 == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("bob deposited nothing");
    {
        // The holder has a box for alice from bob, but not the text.
        let (items, _) = mailbox
            .lock()
            .unwrap()
            .collect(&alice_id, unix_now(), usize::MAX);
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].from, bob_id);
        let blob = &items[0].blob;
        assert!(!blob.windows(text.len()).any(|w| w == text.as_bytes()));
    }
    // The sender goes offline too.
    bob.stop().await;

    // Alice is back: she collects from her holder, with bob still away.
    let mut alice = open_with(&alice_dir, config_with(alice_port, &holder, holder_addr)).await;
    let got = receive(&mut alice, bob_id, 1).await;
    assert_eq!(got, [text]);
    tokio::time::timeout(Duration::from_secs(20), async {
        while mailbox.lock().unwrap().usage(&alice_id).0 != 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("alice did not remove what she collected");

    // Bob comes back: his outbox sends the message again, alice keeps
    // the one copy and acknowledges it; bob sees it delivered.
    let mut bob = open_with(&bob_dir, fixed(bob_port)).await;
    delivered(&mut bob, away.id).await;
    let history = alice.node.history(&bob_id, None, 100).unwrap();
    let copies = history.messages.iter().filter(|m| m.text == text).count();
    assert_eq!(copies, 1, "shown twice");
    bob.stop().await;
    alice.stop().await;
    holder.shutdown().await;
}

/// `leaving` stops, and `watcher` sees it go offline.
async fn goes_offline(leaving: Peer, watcher: &mut Peer) {
    let id = leaving.id();
    leaving.stop().await;
    watcher
        .wait_for("offline", |e| {
            matches!(e, Event::ContactOffline { contact } if *contact == id).then_some(())
        })
        .await;
}

async fn delivered(peer: &mut Peer, id: chat_core::MessageId) {
    peer.wait_for("delivered", |e| {
        matches!(e, Event::MessageStateChanged { id: got, state: MessageState::Delivered, .. } if *got == id)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn holders_in_the_settings_are_checked_at_open() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("alice");
    drop(chat_core::Profile::create(&dir, "alice", None).unwrap());
    for bad in ["nope", "127.0.0.1:9"] {
        let mut profile = chat_core::Profile::open(&dir, None).unwrap();
        let mut settings = profile.settings().clone();
        settings.holders = vec![bad.to_owned()];
        profile.set_settings(settings).unwrap();
        let error = chat_core::Node::open(profile, NodeConfig::loopback(common::NETWORK))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, chat_core::OpenError::Holder { entry, .. } if entry == bad),
            "{error}"
        );
    }
    // A good one opens.
    let id = SecretId::generate().peer_id();
    let mut profile = chat_core::Profile::open(&dir, None).unwrap();
    let mut settings = profile.settings().clone();
    settings.holders = vec![format!("{id}@tcp:127.0.0.1:9")];
    profile.set_settings(settings).unwrap();
    let (node, _events) = chat_core::Node::open(profile, NodeConfig::loopback(common::NETWORK))
        .await
        .unwrap();
    node.shutdown().await;
}

/// Alice, Bob and their mutual friend Carol, befriended on fixed loopback
/// ports, Alice naming Carol as her holder: Bob has delivered a first
/// message to Alice, then Alice left and Bob saw her go offline.
struct MutualFriend {
    _root: tempfile::TempDir,
    dirs: Vec<std::path::PathBuf>,
    alice_port: u16,
    carol_port: u16,
    carol_contact: Contact,
    carol: Peer,
    bob: Peer,
    alice_id: chat_core::PeerId,
    bob_id: chat_core::PeerId,
}

impl MutualFriend {
    async fn alice_away() -> Self {
        let root = tempfile::tempdir().unwrap();
        let (alice_port, bob_port, carol_port) = (free_port(), free_port(), free_port());
        let mut dirs = Vec::new();
        for name in ["alice", "bob", "carol"] {
            let dir = root.path().join(name);
            drop(chat_core::Profile::create(&dir, name, None).unwrap());
            dirs.push(dir);
        }
        let mut carol = open_with(&dirs[2], fixed(carol_port)).await;
        let carol_contact = Contact {
            id: Some(carol.id()),
            addr: Endpoint::tcp(std::net::SocketAddr::from(([127, 0, 0, 1], carol_port))),
        };
        let mut alice = open_with(&dirs[0], alice_config(alice_port, carol_contact)).await;
        let mut bob = open_with(&dirs[1], fixed(bob_port)).await;
        befriend(&mut carol, &mut alice).await;
        befriend(&mut carol, &mut bob).await;
        befriend(&mut alice, &mut bob).await;
        let (alice_id, bob_id) = (alice.id(), bob.id());
        let hello = bob.node.send(&alice_id, "hello").unwrap();
        delivered(&mut bob, hello.id).await;

        goes_offline(alice, &mut bob).await;
        Self {
            _root: root,
            dirs,
            alice_port,
            carol_port,
            carol_contact,
            carol,
            bob,
            alice_id,
            bob_id,
        }
    }

    /// Alice back, with Carol as her holder.
    async fn alice_back(dirs: &[std::path::PathBuf], port: u16, carol: Contact) -> Peer {
        open_with(&dirs[0], alice_config(port, carol)).await
    }
}

fn alice_config(port: u16, holder: Contact) -> NodeConfig {
    let mut config = fixed(port);
    config.holders = vec![holder];
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutual_friends_chat_node_holds_mail_between_its_friends() {
    let MutualFriend {
        _root,
        dirs,
        alice_port,
        carol_contact,
        carol,
        bob,
        alice_id,
        bob_id,
        ..
    } = MutualFriend::alice_away().await;
    let text = "carol keeps this for you";
    bob.node.send(&alice_id, text).unwrap();
    // Bob deposits on his next tick (every 200 ms); 3 s is ample. Then he
    // leaves.
    tokio::time::sleep(Duration::from_secs(3)).await;
    bob.stop().await;

    let mut alice = MutualFriend::alice_back(&dirs, alice_port, carol_contact).await;
    let got = receive(&mut alice, bob_id, 1).await;
    assert_eq!(got, [text]);
    alice.stop().await;
    carol.stop().await;
}

/// A friend's chat node keeps the mail it holds in its profile: carol
/// holds bob's message for alice, restarts while both are away, and still
/// hands it over when alice comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_held_by_a_friends_chat_node_survives_its_restart() {
    let MutualFriend {
        _root,
        dirs,
        alice_port,
        carol_port,
        carol_contact,
        carol,
        bob,
        alice_id,
        bob_id,
    } = MutualFriend::alice_away().await;
    let text = "carol keeps this across her restart";
    bob.node.send(&alice_id, text).unwrap();
    // Carol's database has the box before anyone leaves.
    let held = dirs[2].join("held-mail.sqlite");
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if held.exists() {
                let mailbox = Mailbox::open(&held, Limits::default(), Policy::Open).unwrap();
                if mailbox.usage(&alice_id).0 == 1 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("carol holds nothing on disk");
    bob.stop().await;
    let carol = carol.stop().await;
    let carol = open_with(&carol, fixed(carol_port)).await;

    let mut alice = MutualFriend::alice_back(&dirs, alice_port, carol_contact).await;
    let got = receive(&mut alice, bob_id, 1).await;
    assert_eq!(got, [text]);
    alice.stop().await;
    carol.stop().await;
}
