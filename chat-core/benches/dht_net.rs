//! The DHT over real crust connections, on loopback: every node a full
//! chat node (profile, SQLite history, crust service with TCP and uTP).
//!
//! `cargo bench -p chat-core --bench dht_net` runs everything; or pick:
//! - `-- lookup 200 1000`: a seed and N nodes join, publish their records,
//!   then 1,000 lookups of random records from random nodes (20 at a
//!   time): hops, lookup latency, requests per lookup, records found;
//! - `-- reconnect 10`: two friends in a 10-node network; (a) one restarts
//!   on new ports ("changed networks"), (b) both do while the other is
//!   away, so only the DHT can bring them together: time from the moved
//!   node's start until both see each other online, over R rounds.

#![allow(clippy::unwrap_used, clippy::print_stdout, missing_docs)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chat_core::{Endpoint, Event, Node, NodeConfig, NodeEvents, PeerId, Profile};

const NETWORK: &str = "chat-core-dht-bench";

fn config(seed: Option<(PeerId, &[Endpoint])>) -> NodeConfig {
    let mut config = NodeConfig::loopback(NETWORK);
    // Only the DHT brings nodes together: the seed forwards no
    // rendezvous.
    config.crust.rendezvous = false;
    if let Some((id, addrs)) = seed {
        config.bootstrap = true;
        config.crust.bootstrap_contacts = addrs
            .iter()
            .map(|addr| crust::Contact {
                id: Some(id),
                addr: *addr,
            })
            .collect();
    }
    config
}

fn create(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    drop(Profile::create(&dir, name, None).unwrap());
    dir
}

async fn open(dir: &Path, config: NodeConfig) -> (Node, NodeEvents) {
    Node::open(Profile::open(dir, None).unwrap(), config)
        .await
        .unwrap()
}

/// Opens a node whose events nobody reads (drained in the background).
async fn open_drained(dir: &Path, config: NodeConfig) -> Node {
    let (node, mut events) = open(dir, config).await;
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    node
}

async fn published(node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = node.dht_status().await.unwrap();
        if status.published.is_some() && status.stored_at > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "never published: {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn pct<T: Copy + Ord>(v: &mut [T], p: usize) -> T {
    v.sort_unstable();
    v[(v.len() * p / 100).min(v.len() - 1)]
}

struct Net {
    seed: Node,
    seed_addrs: Vec<Endpoint>,
    nodes: Vec<Node>,
}

async fn network(root: &Path, n: usize) -> Net {
    let seed = open_drained(&create(root, "seed"), config(None)).await;
    let seed_addrs = seed.network_report().await.listeners;
    let mut nodes = Vec::new();
    for i in 0..n {
        let dir = create(root, &format!("n{i}"));
        nodes.push(open_drained(&dir, config(Some((seed.id(), &seed_addrs)))).await);
    }
    for node in &nodes {
        published(node).await;
    }
    for node in &nodes {
        node.republish().unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for node in &nodes {
        published(node).await;
    }
    Net {
        seed,
        seed_addrs,
        nodes,
    }
}

async fn lookup(n: usize) {
    let root = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let net = network(root.path(), n).await;
    let join = t.elapsed();
    let ids: Vec<PeerId> = net.nodes.iter().map(Node::id).collect();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut rand = move |below: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % below as u64) as usize
    };
    let (mut hops, mut latency, mut messages) = (Vec::new(), Vec::new(), Vec::new());
    let (mut found, mut timed_out) = (0, 0);
    let lookups = 1000;
    let t = Instant::now();
    for _ in 0..lookups / 20 {
        let mut batch = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let me = rand(n);
            let mut target = rand(n);
            while target == me {
                target = rand(n);
            }
            let node = net.nodes[me].clone();
            let id = ids[target];
            batch.spawn(async move {
                let (record, stats) = node.find_record(&id).await.unwrap();
                (record.is_some_and(|r| r.peer == id), stats)
            });
        }
        for (ok, stats) in batch.join_all().await {
            found += usize::from(ok);
            timed_out += usize::from(stats.timed_out);
            hops.push(stats.hops);
            messages.push(stats.messages);
            latency.push(stats.elapsed);
        }
    }
    let total = t.elapsed();
    let mut table = Vec::new();
    for node in &net.nodes {
        table.push(node.dht_status().await.unwrap().table);
    }
    println!(
        "lookup n={n}: joined+published in {:.1} s; {lookups} lookups in {:.1} s; found {found}/{lookups}, timed out {timed_out}",
        join.as_secs_f64(),
        total.as_secs_f64()
    );
    println!(
        "  hops median {} p90 {} max {}; requests median {} p90 {}; latency median {:.1} ms p90 {:.1} ms max {:.1} ms; routing table median {}; RSS {:.0} MiB",
        pct(&mut hops, 50),
        pct(&mut hops, 90),
        pct(&mut hops, 100),
        pct(&mut messages, 50),
        pct(&mut messages, 90),
        pct(&mut latency, 50).as_secs_f64() * 1e3,
        pct(&mut latency, 90).as_secs_f64() * 1e3,
        pct(&mut latency, 100).as_secs_f64() * 1e3,
        pct(&mut table, 50),
        rss_mib()
    );
    for node in net.nodes {
        node.shutdown().await;
    }
    net.seed.shutdown().await;
}

async fn online(events: &mut NodeEvents, who: PeerId, what: &str) {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(60), events.recv())
            .await
            .unwrap_or_else(|_| panic!("{what}: not reconnected within 60 s"))
            .expect("node stopped");
        if std::env::var("DHT_BENCH_DEBUG").is_ok() {
            eprintln!("{what}: {event:?}");
        }
        if matches!(event, Event::ContactOnline { contact, .. } if contact == who) {
            return;
        }
    }
}

async fn reconnect(rounds: usize) {
    let root = tempfile::tempdir().unwrap();
    let net = network(root.path(), 10).await;
    let cfg = || config(Some((net.seed.id(), &net.seed_addrs)));
    let alice_dir = create(root.path(), "alice");
    let bob_dir = create(root.path(), "bob");
    let (mut alice, mut alice_events) = open(&alice_dir, cfg()).await;
    let (mut bob, mut bob_events) = open(&bob_dir, cfg()).await;
    let invite = alice.my_invite().unwrap();
    bob.add_contact(&invite, "hi").unwrap();
    let from = loop {
        if let Some(Event::FriendRequest(r)) = alice_events.recv().await {
            break r.from;
        }
    };
    alice.accept(&from).unwrap();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(60), bob_events.recv())
            .await
            .expect("not accepted within 60 s")
            .expect("node stopped");
        if matches!(event, Event::FriendAccepted { .. }) {
            break;
        }
    }
    let (alice_id, bob_id) = (alice.id(), bob.id());
    let (mut one, mut both) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        // (a) Bob changes networks: new ports, while Alice stays.
        bob.shutdown().await;
        drop(bob_events);
        let t = Instant::now();
        (bob, bob_events) = open(&bob_dir, cfg()).await;
        online(&mut bob_events, alice_id, "one moved: bob").await;
        online(&mut alice_events, bob_id, "one moved: alice").await;
        one.push(t.elapsed());
        // (b) Both move while the other is away.
        alice.shutdown().await;
        bob.shutdown().await;
        drop((alice_events, bob_events));
        (alice, alice_events) = open(&alice_dir, cfg()).await;
        published(&alice).await;
        let t = Instant::now();
        (bob, bob_events) = open(&bob_dir, cfg()).await;
        online(&mut bob_events, alice_id, "both moved: bob").await;
        online(&mut alice_events, bob_id, "both moved: alice").await;
        both.push(t.elapsed());
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "reconnect, one moved ({rounds} rounds): median {:.0} ms, max {:.0} ms",
        ms(pct(&mut one, 50)),
        ms(pct(&mut one, 100))
    );
    println!(
        "reconnect, both moved, found only through the DHT ({rounds} rounds): median {:.0} ms, max {:.0} ms",
        ms(pct(&mut both, 50)),
        ms(pct(&mut both, 100))
    );
    alice.shutdown().await;
    bob.shutdown().await;
    for node in net.nodes {
        node.shutdown().await;
    }
    net.seed.shutdown().await;
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        match args.first().map(String::as_str) {
            Some("lookup") => {
                let sizes: Vec<usize> = args[1..].iter().map(|a| a.parse().unwrap()).collect();
                for n in if sizes.is_empty() {
                    vec![200, 1000]
                } else {
                    sizes
                } {
                    lookup(n).await;
                }
            }
            Some("reconnect") => {
                reconnect(args.get(1).map_or(10, |a| a.parse().unwrap())).await;
            }
            _ => {
                lookup(200).await;
                lookup(1000).await;
                reconnect(10).await;
            }
        }
    });
}
