//! Chat soak (#11): two nodes on two netsim hosts exchange
//! `CHAT_SOAK_MESSAGES` messages (100,000 by default, half each way) while
//! the link between them flaps: every `CHAT_SOAK_UP_MS` (3000) of service
//! it goes dark for `CHAT_SOAK_DOWN_MS` (1500), by an nftables rule in one
//! host's namespace that drops everything. Passing means every message is
//! delivered exactly once, arrives in order per sender, and every sent
//! message reaches `Delivered`.
//!
//! `cargo bench -p chat-core --bench soak` as root, with `nft` installed.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a bench binary: failures should stop it

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("the chat soak needs netsim, which is Linux only");
}

#[cfg(target_os = "linux")]
fn main() {
    linux::main();
}

#[cfg(target_os = "linux")]
mod linux {
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::process::Command;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, mpsc};
    use std::time::{Duration, Instant};

    use chat_core::{Event, Invite, MessageState, Node, NodeConfig, NodeEvents, Profile};
    use netsim::{Impairment, LinkConfig, Network, Topology};

    const NETWORK: &str = "chat-soak";
    const PORT: u16 = 5483;
    const BATCH: usize = 100;

    fn env(name: &str, default: u64) -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.replace(['_', ','], "").parse().ok())
            .unwrap_or(default)
    }

    fn prerequisites() -> bool {
        netsim::prerequisites(&["nft"])
    }

    /// What one side saw.
    #[derive(Debug, Default)]
    struct Tally {
        received: u64,
        duplicates: u64,
        out_of_order: u64,
        delivered: u64,
    }

    async fn open(dir: PathBuf) -> (Node, NodeEvents) {
        let mut config = NodeConfig::loopback(NETWORK);
        config.crust.listen = vec![SocketAddr::from(([0, 0, 0, 0], PORT))];
        config.crust.utp = None;
        config.crust.dial_timeout = Duration::from_secs(2);
        config.reconnect_interval = Duration::from_millis(300);
        config.resend_interval = Duration::from_secs(2);
        Node::open(Profile::open(&dir, None).unwrap(), config)
            .await
            .unwrap()
    }

    /// Sends `n` messages ("<tag> <i>") and counts what arrives from the
    /// other side, until both are complete.
    async fn talk(
        node: &Node,
        events: &mut NodeEvents,
        peer: chat_core::PeerId,
        tag: &str,
        other: &str,
        n: u64,
        progress: Arc<AtomicU64>,
    ) -> Tally {
        let mut tally = Tally::default();
        let mut seen = vec![false; n as usize];
        let mut next = 0u64;
        let mut sent = 0u64;
        let deadline = Instant::now() + Duration::from_secs(3600);
        while (tally.received < n || tally.delivered < n) && Instant::now() < deadline {
            if sent < n {
                let texts: Vec<String> = (sent..(sent + BATCH as u64).min(n))
                    .map(|i| format!("{tag} {i}"))
                    .collect();
                node.send_many(&peer, &texts).unwrap();
                sent += texts.len() as u64;
            }
            // Drain what is there (waiting a little when all is sent).
            let wait = if sent < n {
                Duration::ZERO
            } else {
                Duration::from_millis(100)
            };
            loop {
                let event = match tokio::time::timeout(wait, events.recv()).await {
                    Ok(Some(e)) => e,
                    Ok(None) => panic!("{tag}: node stopped"),
                    Err(_) => break,
                };
                match event {
                    Event::MessageReceived(m) if m.contact == peer => {
                        let Some(i) = m
                            .text
                            .strip_prefix(other)
                            .and_then(|s| s.trim().parse::<u64>().ok())
                        else {
                            continue;
                        };
                        if i >= n || seen[i as usize] {
                            tally.duplicates += 1;
                            continue;
                        }
                        seen[i as usize] = true;
                        if i != next {
                            tally.out_of_order += 1;
                        }
                        next = i + 1;
                        tally.received += 1;
                        progress.fetch_add(1, Ordering::Relaxed);
                    }
                    Event::MessageStateChanged {
                        state: MessageState::Delivered,
                        ..
                    } => tally.delivered += 1,
                    _ => {}
                }
                if sent < n && wait.is_zero() {
                    // Keep sending between events.
                    tokio::task::yield_now().await;
                }
            }
        }
        tally
    }

    fn nft(net: &Network, host: netsim::HostId, args: &str) {
        let status = net
            .command(host, Command::new("nft").args(args.split(' ')))
            .and_then(|mut c| c.wait());
        assert!(status.is_ok_and(|s| s.success()), "nft {args}");
    }

    pub(super) fn main() {
        if !prerequisites() {
            return;
        }
        let total = env("CHAT_SOAK_MESSAGES", 100_000);
        let up = Duration::from_millis(env("CHAT_SOAK_UP_MS", 3000));
        let down = Duration::from_millis(env("CHAT_SOAK_DOWN_MS", 1500));
        let each = total / 2;
        println!(
            "chat soak: {} messages ({each} each way), link up {} ms / down {} ms",
            each * 2,
            up.as_millis(),
            down.as_millis()
        );

        let root = tempfile::tempdir().unwrap();
        let (a_dir, b_dir) = (root.path().join("a"), root.path().join("b"));
        drop(Profile::create(&a_dir, "a", None).unwrap());
        drop(Profile::create(&b_dir, "b", None).unwrap());

        let mut t = Topology::new().seed(5);
        let a = t.public_host("a");
        let b = t.public_host("b");
        let leg = Impairment::none().latency(Duration::from_millis(5));
        t.set_link(a, LinkConfig::symmetric(leg.clone()));
        t.set_link(b, LinkConfig::symmetric(leg));
        let net = Network::start(&t).unwrap();
        // The flapping switch: a table in b's namespace whose chains drop
        // everything while they hold a rule.
        nft(&net, b, "add table inet soak");
        nft(
            &net,
            b,
            "add chain inet soak in { type filter hook input priority 0 ; }",
        );
        nft(
            &net,
            b,
            "add chain inet soak out { type filter hook output priority 0 ; }",
        );

        let (invite_tx, invite_rx) = mpsc::channel::<Invite>();
        let (id_tx, id_rx) = mpsc::channel::<chat_core::PeerId>();
        let friends = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));

        let (a_friends, a_progress) = (friends.clone(), received.clone());
        let a_task = net
            .spawn(a, move || async move {
                let (node, mut events) = open(a_dir).await;
                invite_tx.send(node.my_invite().unwrap()).unwrap();
                let from = loop {
                    if let Some(Event::FriendRequest(r)) = events.recv().await {
                        break r.from;
                    }
                };
                node.accept(&from).unwrap();
                while !a_friends.load(Ordering::Acquire) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let tally = talk(&node, &mut events, from, "a", "b", each, a_progress).await;
                // Stay up until b has all its acknowledgements too.
                tokio::time::sleep(Duration::from_secs(3)).await;
                node.shutdown().await;
                tally
            })
            .unwrap();
        let (b_friends, b_progress) = (friends.clone(), received.clone());
        let b_task = net
            .spawn(b, move || async move {
                let (node, mut events) = open(b_dir).await;
                let invite = invite_rx.recv().unwrap();
                let a_id = invite.peer;
                node.add_contact(&invite, "soak").unwrap();
                loop {
                    if let Some(Event::FriendAccepted { .. }) = events.recv().await {
                        break;
                    }
                }
                id_tx.send(a_id).unwrap();
                b_friends.store(true, Ordering::Release);
                let tally = talk(&node, &mut events, a_id, "b", "a", each, b_progress).await;
                tokio::time::sleep(Duration::from_secs(3)).await;
                node.shutdown().await;
                tally
            })
            .unwrap();

        let _ = id_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("befriended");
        let start = Instant::now();
        let mut outages = 0;
        while !(a_task.is_finished() && b_task.is_finished()) {
            std::thread::sleep(up);
            if a_task.is_finished() && b_task.is_finished() {
                break;
            }
            nft(&net, b, "add rule inet soak in drop");
            nft(&net, b, "add rule inet soak out drop");
            outages += 1;
            std::thread::sleep(down);
            nft(&net, b, "flush chain inet soak in");
            nft(&net, b, "flush chain inet soak out");
            println!(
                "  {:>6.1} s: {} of {} received, {outages} outages",
                start.elapsed().as_secs_f64(),
                received.load(Ordering::Relaxed),
                each * 2
            );
        }
        let a_tally = a_task.join().unwrap();
        let b_tally = b_task.join().unwrap();
        let elapsed = start.elapsed();
        net.shutdown();
        let ok = |t: &Tally| {
            t.received == each && t.duplicates == 0 && t.out_of_order == 0 && t.delivered >= each
        };
        let passed = ok(&a_tally) && ok(&b_tally);
        println!(
            "chat soak {}: {} messages in {:.1} s ({:.0} msg/s) across {outages} outages; a saw {a_tally:?}; b saw {b_tally:?}",
            if passed { "PASS" } else { "FAIL" },
            a_tally.received + b_tally.received,
            elapsed.as_secs_f64(),
            (a_tally.received + b_tally.received) as f64 / elapsed.as_secs_f64()
        );
        if !passed {
            std::process::exit(1);
        }
    }
}
