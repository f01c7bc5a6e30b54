//! chat-core benchmarks: run with
//! `cargo bench -p chat-core --bench chat` (add `-- quick` for a short run).
//!
//! Measures, on loopback:
//! 1. idle node memory (RSS of this process with one idle node open);
//! 2. messages per second between two nodes, each persisted by the sender,
//!    stored by the receiver and acknowledged back;
//! 3. end-to-end latency, `Node::send` → `MessageReceived` at the peer;
//! 4. a history of 1,000,000 messages: open time, page-load time and
//!    full-text search time.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a bench binary: failures should stop it

use std::path::Path;
use std::time::{Duration, Instant};

use chat_core::{Event, MessageState, Node, NodeConfig, NodeEvents, PeerId, Profile};

const NETWORK: &str = "chat-core-bench";

async fn start(root: &Path, name: &str) -> (Node, NodeEvents) {
    let dir = root.join(name);
    drop(Profile::create(&dir, name, None).unwrap());
    Node::open(
        Profile::open(&dir, None).unwrap(),
        NodeConfig::loopback(NETWORK),
    )
    .await
    .unwrap()
}

async fn wait<T>(events: &mut NodeEvents, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(60), events.recv())
            .await
            .expect("bench stalled")
            .expect("node stopped");
        if let Some(found) = pick(&event) {
            return found;
        }
    }
}

async fn befriend(a: &Node, a_events: &mut NodeEvents, b: &Node, b_events: &mut NodeEvents) {
    b.add_contact(&a.my_invite().unwrap(), "bench").unwrap();
    let from = wait(a_events, |e| match e {
        Event::FriendRequest(r) => Some(r.from),
        _ => None,
    })
    .await;
    a.accept(&from).unwrap();
    wait(b_events, |e| {
        matches!(e, Event::FriendAccepted { .. }).then_some(())
    })
    .await;
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

const WORDS: &[&str] = &[
    "hello", "world", "coffee", "tomorrow", "meeting", "train", "garden", "music", "photo",
    "dinner", "weekend", "project", "router", "network", "birthday", "holiday", "kitchen",
    "bicycle", "mountain", "river", "library", "concert", "window", "summer", "winter", "question",
    "answer", "later", "maybe", "sure",
];

fn sentence(seed: &mut u64) -> String {
    let mut words = Vec::new();
    let n = 4 + (*seed % 8) as usize;
    for _ in 0..n {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        words.push(WORDS[(*seed >> 33) as usize % WORDS.len()]);
    }
    words.join(" ")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let root = tempfile::tempdir().unwrap();

    // 1. Idle memory: one node, nothing else allocated yet.
    let before = rss_kib();
    let idle = start(root.path(), "idle").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = rss_kib();
    println!(
        "idle node: RSS {:.1} MiB (process before the node: {:.1} MiB)",
        idle_rss as f64 / 1024.0,
        before as f64 / 1024.0
    );
    idle.0.shutdown().await;
    drop(idle);

    // 2. Throughput.
    let (a, mut a_events) = start(root.path(), "a").await;
    let (b, mut b_events) = start(root.path(), "b").await;
    befriend(&a, &mut a_events, &b, &mut b_events).await;
    let a_id = a.id();
    // Warm up the session.
    let m = b.send(&a_id, "warm up").unwrap();
    wait(&mut b_events, |e| matches!(e, Event::MessageStateChanged { id, state: MessageState::Delivered, .. } if *id == m.id).then_some(())).await;

    println!(
        "path between the two nodes: {}",
        b.contact(&a_id)
            .unwrap()
            .presence
            .path()
            .unwrap_or_default()
    );
    let n: usize = if quick { 5_000 } else { 50_000 };
    let texts: Vec<String> = {
        let mut seed = 1;
        (0..n).map(|_| sentence(&mut seed)).collect()
    };
    let started = Instant::now();
    let sender = b.clone();
    let send_task = tokio::spawn(async move {
        for text in &texts {
            sender.send(&a_id, text).unwrap();
            tokio::task::yield_now().await;
        }
        started.elapsed()
    });
    let mut delivered = 0;
    let mut received = 0;
    let receiver = tokio::spawn(async move {
        while received < n {
            if let Some(Event::MessageReceived(_)) = a_events.recv().await {
                received += 1;
            }
        }
        a_events
    });
    while delivered < n {
        wait(&mut b_events, |e| {
            matches!(
                e,
                Event::MessageStateChanged {
                    state: MessageState::Delivered,
                    ..
                }
            )
            .then_some(())
        })
        .await;
        delivered += 1;
    }
    let elapsed = started.elapsed();
    let send_elapsed = send_task.await.unwrap();
    let mut a_events = receiver.await.unwrap();
    println!(
        "throughput: {n} messages persisted, stored and acknowledged in {:.3} s = {:.0} msg/s (send() of all {n} returned after {:.3} s)",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        send_elapsed.as_secs_f64()
    );

    // 2b. Throughput with group commit: the same texts through
    // `send_many`, 100 messages per call (one outbox commit per call).
    let batch = 100;
    let texts: Vec<String> = {
        let mut seed = 2;
        (0..n).map(|_| sentence(&mut seed)).collect()
    };
    let started = Instant::now();
    let sender = b.clone();
    let send_task = tokio::spawn(async move {
        for chunk in texts.chunks(batch) {
            sender.send_many(&a_id, chunk).unwrap();
            tokio::task::yield_now().await;
        }
        started.elapsed()
    });
    let receiver = tokio::spawn(async move {
        let mut received = 0;
        while received < n {
            if let Some(Event::MessageReceived(_)) = a_events.recv().await {
                received += 1;
            }
        }
        a_events
    });
    let mut delivered = 0;
    while delivered < n {
        wait(&mut b_events, |e| {
            matches!(
                e,
                Event::MessageStateChanged {
                    state: MessageState::Delivered,
                    ..
                }
            )
            .then_some(())
        })
        .await;
        delivered += 1;
    }
    let elapsed = started.elapsed();
    let send_elapsed = send_task.await.unwrap();
    let mut a_events = receiver.await.unwrap();
    println!(
        "throughput, send_many of {batch}: {n} messages persisted, stored and acknowledged in {:.3} s = {:.0} msg/s (send_many of all returned after {:.3} s)",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        send_elapsed.as_secs_f64()
    );

    // 3. Latency, one message at a time.
    let rounds = if quick { 300 } else { 3_000 };
    let mut samples = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let t = Instant::now();
        b.send(&a_id, &format!("ping {i}")).unwrap();
        wait(&mut a_events, |e| {
            matches!(e, Event::MessageReceived(_)).then_some(())
        })
        .await;
        samples.push(t.elapsed());
        // Let the ack land so the next sample starts from quiet.
        wait(&mut b_events, |e| {
            matches!(
                e,
                Event::MessageStateChanged {
                    state: MessageState::Delivered,
                    ..
                }
            )
            .then_some(())
        })
        .await;
    }
    samples.sort();
    println!(
        "latency send → received ({rounds} samples): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        percentile(&samples, 0.50).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().unwrap().as_secs_f64() * 1e3
    );
    // The outbox write alone: sends to a contact that is offline.
    let b_id = b.id();
    b.shutdown().await;
    wait(&mut a_events, |e| {
        matches!(e, Event::ContactOffline { .. }).then_some(())
    })
    .await;
    let writes = if quick { 2_000 } else { 20_000 };
    let t = Instant::now();
    for i in 0..writes {
        a.send(&b_id, &format!("queued {i} for later")).unwrap();
    }
    let per_write = t.elapsed() / writes;
    println!(
        "outbox write (send() to an offline contact, {writes} writes): {:.1} µs each",
        per_write.as_secs_f64() * 1e6
    );
    a.shutdown().await;

    // 4. A history of a million messages with one contact.
    let total: usize = if quick { 100_000 } else { 1_000_000 };
    let dir = root.path().join("big");
    let peer = {
        let (node, _events) = start(root.path(), "big").await;
        let other = Profile::create(&root.path().join("other"), "other", None).unwrap();
        let invite = chat_core::Invite {
            peer: other.peer_id(),
            name: "other".into(),
            addrs: vec![],
            token: [0; 4],
        };
        node.add_contact(&invite, "").unwrap();
        node.shutdown().await;
        other.peer_id()
    };
    let fill = Instant::now();
    fill_history(&dir.join("history.sqlite"), &peer, total);
    println!(
        "(filled {total} messages in {:.1} s)",
        fill.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let profile = Profile::open(&dir, None).unwrap();
    let (node, _events) = Node::open(profile, NodeConfig::loopback(NETWORK))
        .await
        .unwrap();
    let open_time = t.elapsed();
    let t = Instant::now();
    let page = node.history(&peer, None, 50).unwrap();
    let newest_page = t.elapsed();
    // Page back 100 pages, then time one page there.
    let mut cursor = page.older;
    for _ in 0..100 {
        cursor = node.history(&peer, cursor, 50).unwrap().older;
    }
    let t = Instant::now();
    let deep = node.history(&peer, cursor, 50).unwrap();
    let deep_page = t.elapsed();
    assert_eq!(deep.messages.len(), 50);
    let t = Instant::now();
    let common = node.search("coffee tomorrow", None, 50).unwrap();
    let search_common = t.elapsed();
    let t = Instant::now();
    let rare = node.search("needle", None, 50).unwrap();
    let search_rare = t.elapsed();
    let t = Instant::now();
    let contacts = node.contacts().unwrap();
    let contacts_time = t.elapsed();
    println!(
        "history of {total}: open {:.1} ms; newest page (50) {:.2} ms; page 100 back {:.2} ms; \
         search 'coffee tomorrow' ({} hits shown) {:.2} ms; search 'needle' ({} hits) {:.2} ms; contact list with unread counts {:.2} ms ({} contact)",
        open_time.as_secs_f64() * 1e3,
        newest_page.as_secs_f64() * 1e3,
        deep_page.as_secs_f64() * 1e3,
        common.len(),
        search_common.as_secs_f64() * 1e3,
        rare.len(),
        search_rare.as_secs_f64() * 1e3,
        contacts_time.as_secs_f64() * 1e3,
        contacts.len(),
    );
    node.shutdown().await;
}

/// Writes `total` messages (half each way, every 10,000th containing
/// "needle") straight into the database, in the schema the node created,
/// and indexes them for search.
fn fill_history(path: &Path, peer: &PeerId, total: usize) {
    let mut conn = rusqlite::Connection::open(path).unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut stmt = tx
            .prepare(
                "INSERT INTO messages (contact, id, outgoing, seq, sent_at, received_at, body, state, read_reported)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, 3, 1)",
            )
            .unwrap();
        let mut seed = 7;
        for i in 0..total {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let mut text = sentence(&mut seed);
            if i % 10_000 == 0 {
                text.push_str(" needle");
            }
            stmt.execute(rusqlite::params![
                peer.as_bytes(),
                id,
                i % 2 == 0,
                i as i64 + 1,
                1_700_000_000_000i64 + i as i64,
                text
            ])
            .unwrap();
        }
    }
    tx.execute("UPDATE contacts SET clock = ?1", [total as i64])
        .unwrap();
    // What a running node's idle-time indexing would have done.
    tx.execute_batch(
        "INSERT INTO messages_fts (rowid, body) SELECT rowid, body FROM messages;
         UPDATE meta SET value = (SELECT max(rowid) FROM messages) WHERE key = 'fts_indexed';",
    )
    .unwrap();
    tx.commit().unwrap();
}
