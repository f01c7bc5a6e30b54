//! Start-up to first frame with a 100,000-message history, and frame time
//! while scrolling through it.
//!
//! `cargo bench -p chat-tui --bench render` (add `-- quick` for 10,000
//! messages). The history is made through chat-core's public API: two
//! nodes on loopback befriend each other and exchange the messages, so the
//! profile is exactly what a user who chatted that much would have.

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use chat_core::{Event, MessageState, Node, NodeConfig, NodeEvents, Profile};

use chat_tui::{App, AppConfig, Zone};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

const NETWORK: &str = "chat-tui-bench";

async fn wait(events: &mut NodeEvents, mut pick: impl FnMut(&Event) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(e)) if pick(&e) => return,
            Ok(Some(_)) => {}
            _ => panic!("bench setup timed out"),
        }
    }
}

/// Alice and Bob exchange `total` messages of varied length; returns
/// Alice's profile directory.
async fn make_history(root: &Path, total: usize) {
    let alice_dir = root.join("alice");
    let bob_dir = root.join("bob");
    let alice = Profile::create(&alice_dir, "alice", None).unwrap();
    let bob = Profile::create(&bob_dir, "bob", None).unwrap();
    let (alice, mut alice_events) = Node::open(alice, NodeConfig::loopback(NETWORK))
        .await
        .unwrap();
    let (bob, mut bob_events) = Node::open(bob, NodeConfig::loopback(NETWORK))
        .await
        .unwrap();
    bob.add_contact(&alice.my_invite().unwrap(), "hi").unwrap();
    wait(&mut alice_events, |e| matches!(e, Event::FriendRequest(_))).await;
    alice.accept(&bob.id()).unwrap();
    wait(&mut bob_events, |e| {
        matches!(e, Event::FriendAccepted { .. })
    })
    .await;
    let words = [
        "coffee", "tomorrow", "station", "rope", "the", "a", "weekend", "train", "late", "ok",
        "see", "you", "there", "bring", "tea", "rain", "sun", "climbing", "maybe", "never",
    ];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut text = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let n = 2 + (seed % 40) as usize;
        (0..n)
            .map(|i| words[((seed >> (i % 50)) as usize + i) % words.len()])
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (a, b) = (alice.id(), bob.id());
    let (mut last_a, mut last_b) = (None, None);
    for i in 0..total {
        if i % 2 == 0 {
            last_a = Some(alice.send(&b, &text()).unwrap().id);
        } else {
            last_b = Some(bob.send(&a, &text()).unwrap().id);
        }
        if i % 5000 == 4999 {
            // Let deliveries catch up now and then.
            while alice_events.try_recv().is_some() {}
            while bob_events.try_recv().is_some() {}
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    for (node, id) in [(&alice, last_a.unwrap()), (&bob, last_b.unwrap())] {
        let peer = if node.id() == a { b } else { a };
        while node.message(&peer, &id).unwrap().unwrap().state < MessageState::Delivered {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    alice.shutdown().await;
    bob.shutdown().await;
}

fn stats(name: &str, mut samples: Vec<Duration>, goal: &str) {
    samples.sort();
    let n = samples.len();
    let mean = samples.iter().sum::<Duration>() / n as u32;
    let pct = |p: f64| samples[((n as f64 * p) as usize).min(n - 1)];
    println!(
        "{name:<44} n={n:<6} mean {:>8.3} ms  p50 {:>8.3} ms  p99 {:>8.3} ms  max {:>8.3} ms  (goal {goal})",
        mean.as_secs_f64() * 1e3,
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        samples[n - 1].as_secs_f64() * 1e3,
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let total = if quick { 10_000 } else { 100_000 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    let made = Instant::now();
    runtime.block_on(make_history(root.path(), total));
    println!(
        "history: {total} messages between two nodes, made in {:.1} s",
        made.elapsed().as_secs_f64()
    );
    let alice_dir = root.path().join("alice");

    for (width, height) in [(80u16, 24u16), (200, 60)] {
        // Start-up: open the profile and node, build the app (contacts,
        // newest page), draw the first frame.
        let mut startup = Vec::new();
        for _ in 0..10 {
            let (took, _) = runtime.block_on(async {
                let start = Instant::now();
                let profile = Profile::open(&alice_dir, None).unwrap();
                let (node, _events) = Node::open(profile, NodeConfig::loopback(NETWORK))
                    .await
                    .unwrap();
                let app = App::new(
                    Box::new(node.clone()),
                    AppConfig {
                        zone: Zone::Local,
                        upnp: false,
                        now_ms: 0,
                        size: (width, height),
                    },
                );
                let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
                terminal.draw(|f| chat_tui::render(&app, f)).unwrap();
                let took = start.elapsed();
                node.shutdown().await;
                (took, ())
            });
            startup.push(took);
        }
        stats(
            &format!("start-up to first frame, {width}x{height}"),
            startup,
            "< 150 ms",
        );

        // Scrolling: from the newest message to the oldest by PgUp, then
        // by single rows for a while, drawing every frame.
        runtime.block_on(async {
            let profile = Profile::open(&alice_dir, None).unwrap();
            let (node, _events) = Node::open(profile, NodeConfig::loopback(NETWORK))
                .await
                .unwrap();
            let mut app = App::new(
                Box::new(node.clone()),
                AppConfig {
                    zone: Zone::Local,
                    upnp: false,
                    now_ms: 0,
                    size: (width, height),
                },
            );
            let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
            terminal.draw(|f| chat_tui::render(&app, f)).unwrap();
            let key = |code| KeyEvent::new(code, KeyModifiers::NONE);
            let mut pages = Vec::new();
            let mut last_screen = String::new();
            loop {
                let start = Instant::now();
                app.on_key(key(KeyCode::PageUp));
                terminal.draw(|f| chat_tui::render(&app, f)).unwrap();
                pages.push(start.elapsed());
                if app.conversation().unwrap().older().is_none() {
                    // Everything is loaded: stop once the view stops moving.
                    let screen = terminal.backend().to_string();
                    if screen == last_screen {
                        break;
                    }
                    last_screen = screen;
                }
            }
            let mut rows = Vec::new();
            for i in 0..5_000 {
                let start = Instant::now();
                app.on_key(key(if i % 2000 < 1000 {
                    KeyCode::Down
                } else {
                    KeyCode::Up
                }));
                terminal.draw(|f| chat_tui::render(&app, f)).unwrap();
                rows.push(start.elapsed());
            }
            let loaded = app.conversation().unwrap().messages().len();
            stats(
                &format!("frame while paging up (PgUp), {width}x{height}"),
                pages,
                "< 5 ms",
            );
            stats(
                &format!("frame while scrolling by rows, {width}x{height}"),
                rows,
                "< 5 ms",
            );
            println!("  (messages loaded at the end: {loaded})");
            node.shutdown().await;
        });
    }
}
