//! Protocol tests against a hand-driven peer: a bare crust service that
//! speaks chat-core's wire messages itself, so it can misbehave on purpose
//! (withhold acks, repeat messages) where a real node never would.

use std::time::Duration;

use crust::{Event as CrustEvent, Priority, SecretId};

use crate::proto::Wire;
use crate::{Event, Invite, MessageState, Node, NodeConfig, NodeEvents, Profile};

const NETWORK: &str = "chat-core-unit";

struct FakePeer {
    service: crust::Service,
    events: crust::Events,
}

impl FakePeer {
    async fn start() -> Self {
        let mut config = crust::Config {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            ..crust::Config::default()
        };
        config.channel.network_id = NETWORK.into();
        let (service, events) = crust::Service::start(config, SecretId::generate())
            .await
            .unwrap();
        Self { service, events }
    }

    async fn next_wire(&mut self) -> (crust::PeerId, Wire) {
        loop {
            let event = tokio::time::timeout(Duration::from_secs(20), self.events.recv())
                .await
                .expect("fake peer: nothing arrived")
                .expect("fake peer: service stopped");
            if let CrustEvent::NewMessage { peer, data } = event
                && !data.starts_with(crust::dht::MAGIC)
            {
                return (peer, Wire::decode(&data).unwrap());
            }
        }
    }

    async fn send(&self, to: &crust::PeerId, wire: Wire) {
        self.service
            .send(to, wire.encode(), Priority::HIGH)
            .await
            .unwrap();
    }
}

async fn wait(events: &mut NodeEvents, mut pick: impl FnMut(&Event) -> bool) {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(20), events.recv())
            .await
            .expect("node: timed out")
            .expect("node stopped");
        if pick(&event) {
            return;
        }
    }
}

/// A node, and a fake peer it befriended (the fake accepted at once).
async fn node_with_fake_friend(dir: &std::path::Path) -> (Node, NodeEvents, FakePeer) {
    let profile = Profile::create(dir, "alice", None).unwrap();
    let (node, mut events) = Node::open(profile, NodeConfig::loopback(NETWORK))
        .await
        .unwrap();
    let fake = FakePeer::start().await;
    let invite = Invite {
        peer: fake.service.id(),
        name: "fake".into(),
        addrs: fake.service.listeners().await,
        token: [0; 4],
    };
    node.add_contact(&invite, "hi").unwrap();
    let mut fake = fake;
    // The node says hello first; the fake answers as a friend.
    let (from, hello) = fake.next_wire().await;
    assert_eq!(from, node.id());
    assert!(
        matches!(hello, Wire::Hello { friend: false, .. }),
        "{hello:?}"
    );
    fake.send(
        &from,
        Wire::Hello {
            name: "fake".into(),
            addrs: vec![],
            friend: true,
        },
    )
    .await;
    wait(&mut events, |e| matches!(e, Event::FriendAccepted { .. })).await;
    (node, events, fake)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_is_never_acknowledged_is_sent_again_on_the_same_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (node, mut events, mut fake) = node_with_fake_friend(&dir.path().join("a")).await;
    let fake_id = fake.service.id();
    let sent = node.send(&fake_id, "are you storing this?").unwrap();
    let mut copies = 0;
    while copies < 2 {
        match fake.next_wire().await {
            (_, Wire::Chat { id, text, .. }) if id == sent.id.0 => {
                assert_eq!(text, "are you storing this?");
                copies += 1;
            }
            _ => {}
        }
    }
    assert_eq!(
        node.message(&fake_id, &sent.id).unwrap().unwrap().state,
        MessageState::Sent
    );
    fake.send(
        &node.id(),
        Wire::Ack {
            ids: vec![sent.id.0],
        },
    )
    .await;
    wait(&mut events, |e| {
        matches!(e, Event::MessageStateChanged { id, state: MessageState::Delivered, .. } if *id == sent.id)
    })
    .await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_and_reordered_messages_are_stored_once_in_sender_order_and_always_acked() {
    let dir = tempfile::tempdir().unwrap();
    let (node, mut events, mut fake) = node_with_fake_friend(&dir.path().join("a")).await;
    let (fake_id, me) = (fake.service.id(), node.id());
    let chat = |n: u8, seq: u64| Wire::Chat {
        id: [n; 16],
        seq,
        sent_at_ms: 0,
        text: format!("m{n}"),
    };
    // Arrival order 3, 1, 1, 2, 3: stored once each, shown 1, 2, 3.
    for (n, seq) in [(3, 3), (1, 1), (1, 1), (2, 2), (3, 3)] {
        fake.send(&me, chat(n, seq)).await;
    }
    let mut acked = Vec::new();
    while acked.len() < 5 {
        if let (_, Wire::Ack { ids }) = fake.next_wire().await {
            acked.extend(ids);
        }
    }
    acked.sort();
    assert_eq!(
        acked,
        [[1; 16], [1; 16], [2; 16], [3; 16], [3; 16]],
        "every copy is acked"
    );
    let mut received = Vec::new();
    while received.len() < 3 {
        if let Some(Event::MessageReceived(m)) = events.recv().await {
            received.push(m.text);
        }
    }
    received.sort();
    assert_eq!(received, ["m1", "m2", "m3"]);
    let history = node.history(&fake_id, None, 10).unwrap();
    let texts: Vec<_> = history.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["m1", "m2", "m3"]);
    // Nothing more was reported.
    tokio::time::sleep(Duration::from_millis(200)).await;
    while let Some(e) = events.try_recv() {
        assert!(
            !matches!(e, Event::MessageReceived(_)),
            "{e:?} reported twice"
        );
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_text_from_a_friend_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let (node, mut events, mut fake) = node_with_fake_friend(&dir.path().join("a")).await;
    let (fake_id, me) = (fake.service.id(), node.id());
    fake.service
        .send(&me, vec![1u8, 250, 250, 250], Priority::HIGH)
        .await
        .unwrap();
    fake.service
        .send(&me, vec![99u8, 0], Priority::HIGH)
        .await
        .unwrap();
    fake.send(
        &me,
        Wire::Chat {
            id: [9; 16],
            seq: 1,
            sent_at_ms: 0,
            text: "x".repeat(crate::MAX_TEXT_BYTES + 1),
        },
    )
    .await;
    fake.send(
        &me,
        Wire::Chat {
            id: [8; 16],
            seq: 2,
            sent_at_ms: 0,
            text: "fine".into(),
        },
    )
    .await;
    // The well-formed message after the bad ones still arrives, alone.
    let ack = loop {
        if let (_, ack @ Wire::Ack { .. }) = fake.next_wire().await {
            break ack;
        }
    };
    assert_eq!(ack, Wire::Ack { ids: vec![[8; 16]] });
    wait(
        &mut events,
        |e| matches!(e, Event::MessageReceived(m) if m.text == "fine"),
    )
    .await;
    assert_eq!(node.history(&fake_id, None, 10).unwrap().messages.len(), 1);
    node.shutdown().await;
}

/// The profile's `dht_mode` decides whether the node serves the DHT,
/// unless the node config (the clients' `--dht-mode`) says server or
/// client. On loopback crust finds no NAT report, so `auto` alone would be
/// a client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_profiles_dht_mode_applies_unless_the_config_says_otherwise() {
    use crate::DhtMode;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a");
    let mut profile = Profile::create(&path, "a", None).unwrap();
    let mut settings = profile.settings().clone();
    settings.dht_mode = DhtMode::Server;
    profile.set_settings(settings).unwrap();
    drop(profile);
    for (config_mode, server) in [(DhtMode::Auto, true), (DhtMode::Client, false)] {
        let profile = Profile::open(&path, None).unwrap();
        let mut config = NodeConfig::loopback(NETWORK);
        config.dht.mode = config_mode;
        let (node, _events) = Node::open(profile, config).await.unwrap();
        let status = node.dht_status().await.unwrap();
        assert_eq!(status.server, server, "config {config_mode}: {status:?}");
        node.shutdown().await;
    }
}

/// A DHT server that listens on all interfaces (a `crust-node` on a
/// public host says `tcp:0.0.0.0:PORT`) and reached us by bootstrapping
/// (no chat session, so the actor knows no address for it) enters our
/// routing table at the address its connection comes from; without that
/// address it would be a client nobody can dial, and a node that
/// bootstraps only from it would never publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_listening_on_all_interfaces_is_dialled_where_it_came_from() {
    use crust::dht::{Envelope, Message};
    let dir = tempfile::tempdir().unwrap();
    let profile = Profile::create(&dir.path().join("a"), "a", None).unwrap();
    let (node, _events) = Node::open(profile, NodeConfig::loopback(NETWORK))
        .await
        .unwrap();
    let node_addrs = node.network_report().await.listeners;
    let mut config = crust::Config {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        bootstrap_contacts: node_addrs
            .iter()
            .map(|addr| crust::Contact {
                id: Some(node.id()),
                addr: *addr,
            })
            .collect(),
        ..crust::Config::default()
    };
    config.channel.network_id = NETWORK.into();
    let (server, mut events) = crust::Service::start(config, SecretId::generate())
        .await
        .unwrap();
    let port = server.listeners().await[0].addr.port();
    server.bootstrap().unwrap();
    // Answer the node's ping as a server on 0.0.0.0.
    let ping = loop {
        let event = tokio::time::timeout(Duration::from_secs(20), events.recv())
            .await
            .expect("no ping from the node")
            .expect("service stopped");
        if let CrustEvent::NewMessage { data, .. } = event
            && let Ok(Some(Envelope {
                message: Message::Ping { id },
                ..
            })) = Envelope::decode(&data)
        {
            break id;
        }
    };
    let pong = Envelope {
        reachable: vec![crust::Endpoint::tcp(([0, 0, 0, 0], port).into())],
        message: Message::Pong { id: ping },
    };
    server
        .send(&node.id(), pong.encode(), Priority::NORMAL)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while node.dht_status().await.unwrap().table == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server never entered the table"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await;
    node.shutdown().await;
}
