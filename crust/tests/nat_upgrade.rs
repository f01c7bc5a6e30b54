//! A relayed connection upgrades to a direct one on its own, and messages
//! streamed across the switch arrive once each and in order, through
//! netsim.
//!
//! Two peers behind port-restricted cone NATs, which punch through each
//! other easily; but host `a` first drops every packet to or from `b`'s
//! NAT (nftables in `a`'s namespace), so the traversal falls back to a
//! relayed circuit through the rendezvous. Once the first attempt is over
//! the test lifts the block: only the driver's upgrade retries
//! (`Config::relay_upgrade`, 1 s here) can find the direct path now, with
//! no call from the application.
//!
//! Needs root, /dev/net/tun and `nft`: without them each test prints why
//! and passes, except under `CI=true`, where a missing prerequisite fails
//! it.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)]

mod nat_common;

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crust::{Config, ConnectionPath, Event, PeerId, Priority, SecretId, Service, Transport};
use nat_common::{PORT, join_network, prerequisites};
use netsim::{Impairment, LinkConfig, NatPreset, Network, Topology};

/// How long the first traversal attempt may punch: the block is lifted
/// after it.
const PUNCH_TIMEOUT: Duration = Duration::from_secs(3);
/// Between two numbered messages of a stream.
const GAP: Duration = Duration::from_millis(5);
/// How long each side streams after it saw the direct connection.
const STREAM_AFTER: Duration = Duration::from_secs(1);
/// The latest a direct connection may come after the block is lifted.
const DIRECT_WITHIN: Duration = Duration::from_secs(12);

fn config() -> Config {
    Config {
        punch_timeout: PUNCH_TIMEOUT,
        relay_after: Duration::from_secs(1),
        relay_upgrade: Some(Duration::from_secs(1)),
        relay_upgrade_max: Duration::from_secs(2),
        ..nat_common::test_config(false)
    }
}

/// What one peer saw.
#[derive(Debug, Default)]
struct Seen {
    /// Paths of its `ConnectionChanged` events for the other peer, and
    /// when they came (since the start of `connect_via`).
    changes: Vec<(ConnectionPath, Transport, Duration)>,
    /// Numbered messages it sent, all accepted by `send`.
    sent: u32,
    /// The numbers it received, in order.
    received: Vec<u32>,
    lost_peer: bool,
}

impl Seen {
    fn direct_at(&self) -> Option<Duration> {
        self.changes
            .iter()
            .find(|(path, _, _)| !matches!(path, ConnectionPath::Relayed { .. }))
            .map(|(_, _, at)| *at)
    }
}

fn is_direct(path: &ConnectionPath) -> bool {
    !matches!(path, ConnectionPath::Relayed { .. })
}

/// Runs nft with `script` inside host `host`.
fn nft(net: &Network, host: netsim::HostId, script: &str) {
    let mut child = net
        .command(
            host,
            std::process::Command::new("nft")
                .args(["-f", "-"])
                .stdin(std::process::Stdio::piped()),
        )
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "nft failed on {script}");
}

/// The shared clock and flags of a run.
struct Run {
    /// When `a` called `connect_via`.
    start: Mutex<Option<Instant>>,
    /// Both peers joined the network.
    ready: AtomicU32,
    /// Peers done streaming.
    stopped: AtomicU32,
    /// The block is lifted.
    open: AtomicBool,
    done: AtomicBool,
}

/// One peer: connects (`a` through the rendezvous), then waits until it
/// has seen a direct connection for [`STREAM_AFTER`] or the run's time is
/// up, streaming numbered messages to the other meanwhile (if `stream`),
/// and records what it receives until both have stopped.
async fn peer(
    service: Service,
    mut events: crust::Events,
    other: PeerId,
    rendezvous: Option<PeerId>,
    stream: bool,
    run: Arc<Run>,
) -> Seen {
    let mut seen = Seen::default();
    if let Some(r) = rendezvous {
        let start = Instant::now();
        *run.start.lock().unwrap() = Some(start);
        let info = service.connect_via(other, r).await.unwrap();
        assert!(
            matches!(info.path, ConnectionPath::Relayed { via } if via == r),
            "with the block up the connection must be relayed: {info:?}"
        );
    }
    let start = loop {
        if let Some(start) = *run.start.lock().unwrap() {
            break start;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let deadline = start + PUNCH_TIMEOUT + DIRECT_WITHIN + Duration::from_secs(2);
    let mut connected = rendezvous.is_some();
    let mut next = 0u32;
    // Until the direct connection has carried the stream a while.
    let mut active = true;
    let mut tick = tokio::time::interval(GAP);
    let mut stopped_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if active {
            let direct_long_enough = seen
                .direct_at()
                .is_some_and(|at| start + at + STREAM_AFTER <= now);
            if direct_long_enough || now >= deadline {
                active = false;
            }
        }
        if !active && stopped_at.is_none() {
            stopped_at = Some(now);
            run.stopped.fetch_add(1, Ordering::AcqRel);
        }
        // Keep receiving until the other side stopped too, and a moment
        // longer for what it sent last.
        if run.stopped.load(Ordering::Acquire) == 2
            && stopped_at.is_some_and(|at| now >= at + Duration::from_millis(1500))
            || now >= deadline + Duration::from_secs(3)
        {
            break;
        }
        tokio::select! {
            _ = tick.tick(), if stream && active && connected => {
                service
                    .send(&other, next.to_be_bytes().to_vec(), Priority::NORMAL)
                    .await
                    .unwrap();
                next += 1;
                seen.sent = next;
            }
            event = tokio::time::timeout(Duration::from_millis(50), events.recv()) => {
                match event {
                    Ok(Some(Event::ConnectSuccess { peer, .. })) if peer == other => {
                        connected = true;
                    }
                    Ok(Some(Event::ConnectionChanged { peer, info })) if peer == other => {
                        let at = start.elapsed();
                        assert!(
                            !is_direct(&info.path) || run.open.load(Ordering::Acquire),
                            "a direct path while the block was up: {info:?}"
                        );
                        seen.changes.push((info.path, info.transport, at));
                    }
                    Ok(Some(Event::NewMessage { peer, data })) if peer == other => {
                        seen.received.push(u32::from_be_bytes(data[..].try_into().unwrap()));
                    }
                    // The other side shuts down when it is done.
                    Ok(Some(Event::LostPeer { peer, .. })) if peer == other && active => {
                        seen.lost_peer = true;
                    }
                    _ => {}
                }
            }
        }
    }
    service.shutdown().await;
    seen
}

/// Sets the network up, connects `a` to `b` relayed, lifts the block after
/// the first attempt and returns what `a` and `b` saw, and when the block
/// was lifted (since the start of `connect_via`).
fn relayed_then_open(seed: u64, stream: bool, relay_latency: Duration) -> (Seen, Seen, Duration) {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
    let mut t = Topology::new().seed(seed);
    let rendezvous = t.public_host("rendezvous");
    let echo = t.public_host("echo");
    let ra = t.router("nat-a", NatPreset::PortRestrictedCone);
    let rb = t.router("nat-b", NatPreset::PortRestrictedCone);
    t.set_upnp(ra, false);
    t.set_upnp(rb, false);
    let a = t.host("a", ra);
    let b = t.host("b", rb);
    let leg = Impairment::none().latency(Duration::from_millis(10));
    t.set_link(a, LinkConfig::symmetric(leg.clone()));
    t.set_link(b, LinkConfig::symmetric(leg));
    // A slower relay: what the old connection still carries at the switch
    // arrives after what the new one carries first, unless held.
    t.set_link(
        rendezvous,
        LinkConfig::symmetric(Impairment::none().latency(relay_latency)),
    );
    let r_addr = SocketAddr::from((t.ip(rendezvous), PORT));
    let e_addr = SocketAddr::from((t.ip(echo), PORT));
    let b_wan = t.wan_ip(rb);

    let keys: Vec<[u8; 32]> = (0..4u8)
        .map(|i| {
            let mut k = [0u8; 32];
            k[0] = i + 1;
            k[1..9].copy_from_slice(&seed.to_le_bytes());
            k[9] = 0x5a;
            k
        })
        .collect();
    let id = |i: usize| SecretId::from_bytes(&keys[i]).peer_id();
    let (r_id, e_id, a_id, b_id) = (id(0), id(1), id(2), id(3));

    let run = Arc::new(Run {
        start: Mutex::new(None),
        ready: AtomicU32::new(0),
        stopped: AtomicU32::new(0),
        open: AtomicBool::new(false),
        done: AtomicBool::new(false),
    });
    let net = Network::start(&t).unwrap();
    // `a` cannot reach `b`'s NAT, either way, over UDP or TCP.
    nft(
        &net,
        a,
        &format!(
            "add table ip block\n\
             add chain ip block out {{ type filter hook output priority 0 ; }}\n\
             add chain ip block in {{ type filter hook input priority 0 ; }}\n\
             add rule ip block out ip daddr {b_wan} drop\n\
             add rule ip block in ip saddr {b_wan} drop\n"
        ),
    );

    let server = |key: [u8; 32], run: Arc<Run>| {
        move || async move {
            let (service, mut events) = Service::start(config(), SecretId::from_bytes(&key))
                .await
                .unwrap();
            while !run.done.load(Ordering::Acquire) {
                let _ = tokio::time::timeout(Duration::from_millis(50), events.recv()).await;
            }
            service.shutdown().await;
        }
    };
    let r_task = net.spawn(rendezvous, server(keys[0], run.clone())).unwrap();
    let e_task = net.spawn(echo, server(keys[1], run.clone())).unwrap();
    let side = |key: [u8; 32], other: PeerId, rendezvous: Option<PeerId>, run: Arc<Run>| {
        move || async move {
            let (service, events) = Service::start(config(), SecretId::from_bytes(&key))
                .await
                .unwrap();
            join_network(&service, r_id, r_addr, e_id, e_addr).await;
            run.ready.fetch_add(1, Ordering::AcqRel);
            while run.ready.load(Ordering::Acquire) < 2 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            peer(service, events, other, rendezvous, stream, run).await
        }
    };
    let b_task = net
        .spawn(b, side(keys[3], a_id, None, run.clone()))
        .unwrap();
    let a_task = net
        .spawn(a, side(keys[2], b_id, Some(r_id), run.clone()))
        .unwrap();

    // Lift the block once the first attempt is over on both sides.
    let start = loop {
        if let Some(start) = *run.start.lock().unwrap() {
            break start;
        }
        assert!(!a_task.is_finished(), "a ended before connecting");
        std::thread::sleep(Duration::from_millis(10));
    };
    std::thread::sleep(
        (start + PUNCH_TIMEOUT + Duration::from_millis(500))
            .saturating_duration_since(Instant::now()),
    );
    run.open.store(true, Ordering::Release);
    nft(&net, a, "delete table ip block\n");
    let opened = start.elapsed();

    let seen_a = a_task.join().unwrap();
    let seen_b = b_task.join().unwrap();
    run.done.store(true, Ordering::Release);
    r_task.join().unwrap();
    e_task.join().unwrap();
    net.shutdown();
    (seen_a, seen_b, opened)
}

#[test]
fn a_relayed_connection_becomes_direct_on_its_own_once_a_path_opens() {
    if !prerequisites(&["nft"]) {
        return;
    }
    let (a, b, opened) = relayed_then_open(61, false, Duration::ZERO);
    for (name, seen) in [("a", &a), ("b", &b)] {
        assert!(!seen.lost_peer, "{name} lost the peer: {seen:?}");
        let at = seen
            .direct_at()
            .unwrap_or_else(|| panic!("{name} never went direct: {seen:?}"));
        assert!(
            at <= opened + DIRECT_WITHIN,
            "{name} went direct {at:?} after the start, the block was lifted at {opened:?}"
        );
        // The first switch goes direct, and the peer never falls back to
        // the relay (a second direct path, TCP beside uTP, may still
        // replace the first: one event per switch).
        assert!(is_direct(&seen.changes[0].0), "{name}: {:?}", seen.changes);
        assert!(
            seen.changes.iter().all(|(path, _, _)| is_direct(path)),
            "{name}: {:?}",
            seen.changes
        );
    }
}

#[test]
fn messages_streamed_both_ways_across_the_switch_arrive_once_and_in_order() {
    if !prerequisites(&["nft"]) {
        return;
    }
    let (a, b, _) = relayed_then_open(62, true, Duration::from_millis(40));
    for (name, seen, other) in [("a", &a, &b), ("b", &b, &a)] {
        assert!(!seen.lost_peer, "{name} lost the peer");
        assert!(
            seen.direct_at().is_some(),
            "{name} never went direct: {:?}",
            seen.changes
        );
        assert!(other.sent > 100, "{name}'s peer sent only {}", other.sent);
        let expected: Vec<u32> = (0..other.sent).collect();
        if seen.received != expected {
            let out_of_place = seen
                .received
                .iter()
                .enumerate()
                .find(|(i, n)| u32::try_from(*i).unwrap() != **n);
            panic!(
                "{name} received {} of {} messages; first out of place: {out_of_place:?}",
                seen.received.len(),
                other.sent
            );
        }
    }
}
