//! The DHT over real crust connections: chat nodes on loopback, each with
//! its own crust service, joining through one seed node. (The 200-node
//! requirement is met by the engine in crust's `tests/dht.rs`, in a simulated
//! network; here 30 real nodes show the same over real connections.)

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use chat_core::dht::{Envelope, MAGIC, Message, PeerRecord};
use chat_core::{Event, NodeConfig, PeerId, Profile};
use common::Peer;

const PATIENCE: Duration = Duration::from_secs(60);

/// A config that joins through `seed` (a chat node taking DHT
/// connections).
fn joining(seed: &Peer, seed_addrs: &[chat_core::Endpoint]) -> NodeConfig {
    let mut config = NodeConfig::loopback(common::NETWORK);
    config.bootstrap = true;
    config.crust.bootstrap_contacts = seed_addrs
        .iter()
        .map(|addr| crust::Contact {
            id: Some(seed.id()),
            addr: *addr,
        })
        .collect();
    config
}

async fn start_with(root: &std::path::Path, name: &str, config: NodeConfig) -> Peer {
    let dir = root.join(name);
    drop(Profile::create(&dir, name, None).unwrap());
    common::open_with(&dir, config).await
}

/// Waits until `peer` has published its record to at least one node.
async fn published(peer: &Peer) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let status = peer.node.dht_status().await.unwrap();
        if status.published.is_some() && status.stored_at > 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never published: {status:?}",
            peer.node.display_name()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn listeners(peer: &Peer) -> Vec<chat_core::Endpoint> {
    peer.node.network_report().await.listeners
}

/// A seed (a DHT server, crust rendezvous forwarding off so nothing but
/// the DHT can bring two nodes together) and `n` nodes joined through it,
/// every record published.
async fn network(root: &std::path::Path, n: usize) -> (Peer, Vec<chat_core::Endpoint>, Vec<Peer>) {
    let mut config = NodeConfig::loopback(common::NETWORK);
    config.crust.rendezvous = false;
    let seed = start_with(root, "seed", config).await;
    let seed_addrs = listeners(&seed).await;
    let mut nodes = Vec::new();
    for i in 0..n {
        let mut config = joining(&seed, &seed_addrs);
        config.crust.rendezvous = false;
        nodes.push(start_with(root, &format!("n{i}"), config).await);
    }
    for node in &nodes {
        published(node).await;
    }
    // Records published while the network was still filling are stored
    // again now that every node is in it (a long-lived network does this
    // every half hour).
    for node in &nodes {
        node.node.republish().unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for node in &nodes {
        published(node).await;
    }
    (seed, seed_addrs, nodes)
}

/// 30 nodes on real connections: every node finds every other's record,
/// naming the endpoints it listens on, in few hops, within the lookup
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_is_found_over_real_connections() {
    const N: usize = 30;
    let root = tempfile::tempdir().unwrap();
    let (seed, _, nodes) = network(root.path(), N).await;
    let mut addrs = Vec::new();
    for node in &nodes {
        addrs.push(listeners(node).await);
    }
    let ids: Vec<PeerId> = nodes.iter().map(Peer::id).collect();
    let mut hops = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let mut lookups = tokio::task::JoinSet::new();
        for (j, id) in ids.iter().enumerate().filter(|(j, _)| *j != i) {
            let node = node.node.clone();
            let id = *id;
            lookups.spawn(async move { (j, node.find_record(&id).await.unwrap()) });
        }
        for (j, (record, stats)) in lookups.join_all().await {
            let record = record.unwrap_or_else(|| panic!("n{i} did not find n{j}: {stats:?}"));
            assert_eq!(record.peer, ids[j]);
            for endpoint in &addrs[j] {
                assert!(
                    record.endpoints.contains(endpoint),
                    "n{j}'s record lacks {endpoint}: {:?}",
                    record.endpoints
                );
            }
            assert!(!stats.timed_out);
            hops.push(stats.hops);
        }
    }
    hops.sort_unstable();
    let median = hops[hops.len() / 2];
    eprintln!(
        "{N} real nodes: {} lookups, median {median} hops, max {}",
        hops.len(),
        hops.last().unwrap()
    );
    assert!(median <= 5, "median {median} hops");
    for node in nodes {
        node.stop().await;
    }
    seed.stop().await;
}

/// Two friends both move (restart on new ports: new addresses) while the
/// other is away. Neither can dial the other's old addresses, and the seed
/// forwards no rendezvous: they find each other only through their DHT
/// records, without anyone re-sharing an invite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn friends_who_both_moved_find_each_other_through_the_dht() {
    let root = tempfile::tempdir().unwrap();
    let (seed, seed_addrs, others) = network(root.path(), 6).await;
    let mut config = joining(&seed, &seed_addrs);
    config.crust.rendezvous = false;
    let mut alice = start_with(root.path(), "alice", config.clone()).await;
    let mut bob = start_with(root.path(), "bob", config.clone()).await;
    common::befriend(&mut alice, &mut bob).await;
    let (alice_id, bob_id) = (alice.id(), bob.id());
    let alice_dir = alice.stop().await;
    let bob_dir = bob.stop().await;

    // Both come back on new ports.
    let mut alice = common::open_with(&alice_dir, config.clone()).await;
    published(&alice).await;
    let mut bob = common::open_with(&bob_dir, config).await;
    let bob_new = listeners(&bob).await;
    bob.wait_for("alice online", |e| match e {
        Event::ContactOnline { contact, .. } if *contact == alice_id => Some(()),
        _ => None,
    })
    .await;
    alice
        .wait_for("bob online", |e| match e {
            Event::ContactOnline { contact, .. } if *contact == bob_id => Some(()),
            _ => None,
        })
        .await;
    let sent = bob.node.send(&alice_id, "found you").unwrap();
    let got = alice
        .wait_for("message", |e| match e {
            Event::MessageReceived(m) => Some(m.clone()),
            _ => None,
        })
        .await;
    assert_eq!(got.id, sent.id);
    // Alice knows Bob's new addresses now (from his record or his hello).
    let known = alice.node.contact(&bob_id).unwrap().addrs;
    assert!(bob_new.iter().any(|a| known.contains(a)), "{known:?}");
    alice.stop().await;
    bob.stop().await;
    for node in others {
        node.stop().await;
    }
    seed.stop().await;
}

/// A hostile node on a real connection: it sends garbage, oversized and
/// forged records, and answers every lookup with a forged record and
/// made-up contacts. Everything it sends is refused, the honest node holds
/// no forged record, and lookups still find the true records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_dht_node_is_ignored() {
    let root = tempfile::tempdir().unwrap();
    let (seed, seed_addrs, nodes) = network(root.path(), 8).await;
    let victim = nodes[0].id();

    // The hostile node: a bare crust service that claims to be a DHT
    // server.
    let mut crust_config = NodeConfig::loopback(common::NETWORK).crust;
    crust_config.bootstrap_contacts.clear();
    let evil_secret = crust::SecretId::generate();
    let (evil, mut evil_events) = crust::Service::start(crust_config, evil_secret.clone())
        .await
        .unwrap();
    let evil_addrs = evil.listeners().await;
    let evil_id = evil.id();
    let forged = move || {
        // The victim's id, new addresses, signed by the wrong key.
        let record = PeerRecord {
            peer: evil_id,
            version: u64::MAX / 2,
            issued_at: now_secs(),
            ttl_secs: 3600,
            endpoints: vec!["127.0.0.1:9".parse().unwrap()],
            rendezvous: Vec::new(),
        };
        let signed = record.sign(&evil_secret).unwrap();
        let mut body = signed.body().to_vec();
        // Swap in the victim's id (the first 32 bytes of the body).
        body[..32].copy_from_slice(victim.as_bytes());
        chat_core::dht::SignedRecord::from_parts(body, vec![7; 64])
    };
    let reachable = evil_addrs.clone();
    let target = seed.id();
    evil.connect(target, &seed_addrs).await.unwrap();
    // Garbage, an oversized record, a forged one.
    let envelope = |message| {
        Envelope {
            reachable: reachable.clone(),
            message,
        }
        .encode()
    };
    let junk: Vec<Vec<u8>> = vec![
        [&MAGIC[..], &[0xff; 100]].concat(),
        [&MAGIC[..], &[1, 200, 200, 200]].concat(),
        envelope(Message::Store {
            record: chat_core::dht::SignedRecord::from_parts(vec![0; 4000], vec![0; 64]),
        }),
        envelope(Message::Store { record: forged() }),
    ];
    for bytes in junk {
        evil.send(&target, bytes, crust::Priority::NORMAL)
            .await
            .unwrap();
    }
    // Then it answers whatever it is asked with lies.
    let liar = {
        let evil = evil.clone();
        tokio::spawn(async move {
            while let Some(event) = evil_events.recv().await {
                let crust::Event::NewMessage { peer, data } = event else {
                    continue;
                };
                let Ok(Some(Envelope { message, .. })) = Envelope::decode(&data) else {
                    continue;
                };
                let reply = match message {
                    Message::FindValue { id, .. } => Message::Value {
                        id,
                        record: forged(),
                    },
                    Message::FindNode { id, .. } => Message::Nodes {
                        id,
                        nodes: (0..20u8)
                            .map(|i| chat_core::dht::Contact {
                                id: crust::SecretId::generate().peer_id(),
                                endpoints: vec![
                                    format!("127.0.0.1:{}", 1 + u16::from(i)).parse().unwrap(),
                                ],
                            })
                            .collect(),
                    },
                    Message::Ping { id } => Message::Pong { id },
                    _ => continue,
                };
                let reply = Envelope {
                    reachable: reachable.clone(),
                    message: reply,
                };
                let _ = evil
                    .send(&peer, reply.encode(), crust::Priority::NORMAL)
                    .await;
            }
        })
    };
    // Everyone meets the liar through the seed's table.
    for node in &nodes {
        let _ = evil.connect(node.id(), &listeners(node).await).await;
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while seed.node.dht_status().await.unwrap().rejected < 4 {
        assert!(tokio::time::Instant::now() < deadline, "junk not refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (i, node) in nodes.iter().enumerate().skip(1) {
        let (record, stats) = seed.node.find_record(&node.id()).await.unwrap();
        let record = record.unwrap_or_else(|| panic!("n{i} not found: {stats:?}"));
        assert_eq!(record.peer, node.id());
        let (record, stats) = node.node.find_record(&victim).await.unwrap();
        let record = record.unwrap_or_else(|| panic!("n{i} did not find the victim: {stats:?}"));
        for endpoint in listeners(&nodes[0]).await {
            assert!(record.endpoints.contains(&endpoint), "{record:?}");
        }
    }
    liar.abort();
    evil.shutdown().await;
    for node in nodes {
        node.stop().await;
    }
    seed.stop().await;
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
