//! The real `crust-node` binary in the DHT: chat nodes that bootstrap only
//! from crust-nodes, DHT clients as behind a NAT so the crust-nodes are the
//! only servers, publish their records there and find each other's;
//! two friends who both moved while the other was away meet again through
//! the records only the crust-nodes held; and a crust-node refuses garbage,
//! oversized, forged and stale records over a real connection and keeps
//! serving.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use chat_core::{Event, Node, NodeConfig, NodeEvents, PeerId, Profile};
use common::PATIENCE;
use common::process::{RunningNode, connected_to, start_node};
use crust::dht::{Envelope, Key, MAGIC, Message, PeerRecord, SignedRecord};
use crust::{Endpoint, Priority, SecretId};

/// crust-node's network in `common::process`.
const NETWORK: &str = "crust-tests";

struct Chat {
    node: Node,
    events: NodeEvents,
    dir: std::path::PathBuf,
}

impl Chat {
    /// A chat node on loopback whose only bootstrap peers are `seeds`, a
    /// DHT client as behind a NAT (so only crust-nodes serve the DHT);
    /// nothing but the DHT and crust-nodes is between it and others
    /// (rendezvous forwarding off).
    async fn open(dir: &Path, seeds: &[&RunningNode]) -> Chat {
        let mut config = NodeConfig::loopback(NETWORK);
        config.dht.mode = chat_core::DhtMode::Client;
        config.bootstrap = true;
        config.crust.rendezvous = false;
        config.crust.bootstrap_contacts = seeds
            .iter()
            .map(|seed| crust::Contact {
                id: Some(seed.id),
                addr: Endpoint::tcp(seed.addr),
            })
            .collect();
        let profile = Profile::open(dir, None).unwrap();
        let (node, events) = Node::open(profile, config).await.unwrap();
        Chat {
            node,
            events,
            dir: dir.to_owned(),
        }
    }

    async fn create(root: &Path, name: &str, seeds: &[&RunningNode]) -> Chat {
        let dir = root.join(name);
        drop(Profile::create(&dir, name, None).unwrap());
        Chat::open(&dir, seeds).await
    }

    fn id(&self) -> PeerId {
        self.node.id()
    }

    async fn listeners(&self) -> Vec<Endpoint> {
        self.node.network_report().await.listeners
    }

    async fn wait_for<T>(&mut self, what: &str, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => {
                    if let Some(found) = pick(&event) {
                        return found;
                    }
                }
                Ok(None) => panic!("events ended while waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}"),
            }
        }
    }

    async fn online(&mut self, contact: PeerId) {
        self.wait_for("a friend online", |e| match e {
            Event::ContactOnline { contact: c, .. } if *c == contact => Some(()),
            _ => None,
        })
        .await;
    }

    /// Waits until its record is stored with at least `storers` nodes.
    async fn published(&self, storers: usize) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let status = self.node.dht_status().await.unwrap();
            if status.published.is_some() && status.stored_at >= storers {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} never published: {status:?}",
                self.node.display_name()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) -> std::path::PathBuf {
        self.node.shutdown().await;
        self.dir
    }
}

/// Sends `message` to the crust-node in an envelope (as a DHT client) and
/// waits for its answer to it.
async fn ask(us: &mut common::Node, node: &RunningNode, message: Message) -> Message {
    let id = message.request_id();
    let envelope = Envelope {
        reachable: Vec::new(),
        message,
    };
    us.service
        .send(&node.id, envelope.encode(), Priority::NORMAL)
        .await
        .unwrap();
    let from = node.id;
    us.expect("a DHT answer", |e| match e {
        crust::Event::NewMessage { peer, data } if peer == from => {
            let reply = Envelope::decode(&data).unwrap()?.message;
            (reply.request_id() == id && !matches!(reply, Message::Ping { .. })).then_some(reply)
        }
        crust::Event::LostPeer { peer, reason } if peer == from => {
            panic!("the crust-node dropped us: {reason}")
        }
        _ => None,
    })
    .await
}

/// The record `node` holds for `peer`, if any.
async fn held(
    us: &mut common::Node,
    node: &RunningNode,
    peer: PeerId,
    id: u64,
) -> Option<PeerRecord> {
    match ask(
        us,
        node,
        Message::FindValue {
            id,
            target: Key::from(peer),
        },
    )
    .await
    {
        Message::Value { record, .. } => Some(record.verify(now_secs()).unwrap()),
        Message::Nodes { .. } => None,
        other => panic!("unexpected answer {other:?}"),
    }
}

/// Two chat nodes, each bootstrapping from a different crust-node (the two
/// crust-nodes know each other), publish their records to the crust-nodes
/// and find each other's. Then both go away and come back on new ports,
/// Alice first: Bob cannot dial her old address, and while both were away
/// only the crust-nodes held records, so Bob reaches Alice through the
/// record she published there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_nodes_meet_through_crust_nodes_alone() {
    let n1 = start_node(&["--no-rendezvous"]);
    let n1_contact = format!("{}@{}", n1.id, n1.addr);
    let n2 = start_node(&["--no-rendezvous", "--bootstrap", &n1_contact]);
    n1.wait_for_log("peer bootstrapped from us");
    // Each crust-node takes the other into its DHT table.
    n1.wait_for_log("the first server we know");
    n2.wait_for_log("the first server we know");
    let root = tempfile::tempdir().unwrap();
    let mut alice = Chat::create(root.path(), "alice", &[&n1]).await;
    let mut bob = Chat::create(root.path(), "bob", &[&n2]).await;
    let (alice_id, bob_id) = (alice.id(), bob.id());
    alice.published(2).await;
    bob.published(2).await;
    assert!(!alice.node.dht_status().await.unwrap().server);
    // A store is not acknowledged: the other's record may land on the
    // crust-nodes just after it counts it sent, so look again until then.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    for (who, looker, target) in [("alice", &alice, &bob), ("bob", &bob, &alice)] {
        let record = loop {
            let (record, stats) = looker.node.find_record(&target.id()).await.unwrap();
            if let Some(record) = record {
                break record;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{who} found nothing: {stats:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        for endpoint in target.listeners().await {
            assert!(record.endpoints.contains(&endpoint), "{record:?}");
        }
    }

    let invite = alice.node.my_invite().unwrap();
    bob.node.add_contact(&invite, "hi").unwrap();
    alice
        .wait_for("a friend request", |e| match e {
            Event::FriendRequest(r) if r.from == bob_id => Some(()),
            _ => None,
        })
        .await;
    alice.node.accept(&bob_id).unwrap();
    bob.wait_for("accepted", |e| {
        matches!(e, Event::FriendAccepted { contact } if *contact == alice_id).then_some(())
    })
    .await;
    let alice_old = alice.listeners().await;
    let alice_dir = alice.stop().await;
    let bob_dir = bob.stop().await;

    // Alice comes back on new ports and publishes to the crust-nodes.
    let mut alice = Chat::open(&alice_dir, &[&n1]).await;
    let alice_new = alice.listeners().await;
    assert!(alice_new.iter().all(|e| !alice_old.contains(e)));
    alice.published(2).await;
    // Both crust-nodes hold her new record (asked directly; a store is
    // not acknowledged, so it may land just after she counts it sent).
    let mut asker = connected_to(&n1).await;
    asker.service.connect(n2.id, &[n2.addr]).await.unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    for (i, node) in [&n1, &n2].into_iter().enumerate() {
        for query in 0.. {
            let record = held(&mut asker, node, alice_id, 100 * (i as u64 + 1) + query).await;
            let record = record.unwrap_or_else(|| panic!("crust-node {i} holds no record"));
            assert_eq!(record.peer, alice_id);
            if alice_new.iter().all(|e| record.endpoints.contains(e)) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "crust-node {i} holds an old record: {record:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Bob, back on new ports too, only knows Alice's old address.
    let mut bob = Chat::open(&bob_dir, &[&n2]).await;
    bob.online(alice_id).await;
    alice.online(bob_id).await;
    let sent = bob.node.send(&alice_id, "found you").unwrap();
    let got = alice
        .wait_for("the message", |e| match e {
            Event::MessageReceived(m) => Some(m.id),
            _ => None,
        })
        .await;
    assert_eq!(got, sent.id);
    let known = bob.node.contact(&alice_id).unwrap().addrs;
    assert!(alice_new.iter().any(|e| known.contains(e)), "{known:?}");
    alice.stop().await;
    bob.stop().await;
}

/// A crust-node on a real connection refuses DHT garbage, an oversized
/// record, a forged one and an older version of a record it holds; the
/// connection stays up, and it keeps answering with the true records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crust_node_refuses_garbage_and_forged_records() {
    let mut node = start_node(&[]);
    node.wait_for_log("serving the DHT (server mode)");
    let mut us = connected_to(&node).await;
    let honest = SecretId::generate();
    let victim = SecretId::generate().peer_id();
    let record = |secret: &SecretId, version: u64, port: u16| PeerRecord {
        peer: secret.peer_id(),
        version,
        issued_at: now_secs(),
        ttl_secs: 3600,
        endpoints: vec![Endpoint::tcp(([192, 0, 2, 1], port).into())],
        rendezvous: Vec::new(),
    };
    let store = |signed: SignedRecord| {
        Envelope {
            reachable: Vec::new(),
            message: Message::Store { record: signed },
        }
        .encode()
    };
    // The victim's id in a record signed by someone else.
    let evil = SecretId::generate();
    let mut body = record(&evil, 1, 9).sign(&evil).unwrap().body().to_vec();
    body[..32].copy_from_slice(victim.as_bytes());
    let forged = SignedRecord::from_parts(body, vec![7; 64]);

    let junk: Vec<Vec<u8>> = vec![
        [&MAGIC[..], &[0xff; 100][..]].concat(),
        [&MAGIC[..], &[1, 200, 200, 200][..]].concat(),
        [&MAGIC[..], &[1; 20_000][..]].concat(),
        store(SignedRecord::from_parts(vec![0; 4000], vec![0; 64])),
        store(forged),
        store(record(&honest, 2, 2).sign(&honest).unwrap()),
        store(record(&honest, 1, 1).sign(&honest).unwrap()),
    ];
    for bytes in junk {
        us.service
            .send(&node.id, bytes, Priority::NORMAL)
            .await
            .unwrap();
    }
    // Still connected and serving.
    assert_eq!(
        ask(&mut us, &node, Message::Ping { id: 1 }).await,
        Message::Pong { id: 1 }
    );
    assert_eq!(held(&mut us, &node, victim, 2).await, None);
    let kept = held(&mut us, &node, honest.peer_id(), 3).await.unwrap();
    assert_eq!(kept.version, 2, "the older version replaced the newer");
    assert_eq!(kept.endpoints, [Endpoint::tcp(([192, 0, 2, 1], 2).into())]);
    // A record from another network's clock (far future) is refused too.
    let mut future = record(&honest, 3, 3);
    future.issued_at += 10 * 24 * 3600;
    us.service
        .send(
            &node.id,
            store(future.sign(&honest).unwrap()),
            Priority::NORMAL,
        )
        .await
        .unwrap();
    let kept = held(&mut us, &node, honest.peer_id(), 4).await.unwrap();
    assert_eq!(kept.version, 2);
    assert!(
        node.child.try_wait().unwrap().is_none(),
        "crust-node exited"
    );
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
