//! Reconnecting after the network changes under a node, or the machine
//! sleeps (netsim).
//!
//! - A node loses its address (another takes its place, as when a laptop
//!   joins another network): every contact is reconnected from the new
//!   address at once, not after the dead connections time out.
//! - A node is suspended while its friend moves away and the connection
//!   between them dies without a word; on resume (a jump of the wall
//!   clock) the node publishes its record again, finds the dead connection
//!   by pinging it, looks the friend up again and reaches it at its new
//!   address.
//!
//! Every node's peer timeout is a minute, far longer than the tests wait:
//! what reconnects them is the node noticing the change, never crust
//! timing a silent connection out.
//!
//! Needs root and `ip` (network namespaces, TUN); skips without them,
//! except under `CI=true`.

#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chat_core::{
    DhtMode, Endpoint, Event, MessageState, Node, NodeConfig, NodeEvents, PeerId, Profile,
};
use common::{MovableClock, profiles, wait_on as wait};
use netsim::{NatPreset, Network, Topology};
use tokio::sync::oneshot;

const NETWORK: &str = "chat-core-reconnect-netsim";
const PORT: u16 = 40_000;
/// Longer than any test waits: a dead connection is never found by it.
const PEER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a test gives a node to reconnect after the change.
const RECONNECT_BOUND: Duration = Duration::from_secs(20);
/// Crust takes a new connection over a live one only once that one is
/// older than the handshake timeout (10 s by default; shorter here so the
/// tests need not wait that long before changing the network).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

fn prerequisites() -> bool {
    netsim::prerequisites(&["ip"])
}

fn config(mode: DhtMode, seed: Option<(PeerId, IpAddr)>) -> NodeConfig {
    let mut config = NodeConfig::loopback(NETWORK);
    let addr = SocketAddr::from(([0, 0, 0, 0], PORT));
    config.crust.listen = vec![addr];
    config.crust.utp = Some(addr);
    config.crust.dial_timeout = Duration::from_secs(3);
    config.crust.peer_timeout = PEER_TIMEOUT;
    config.crust.channel.handshake_timeout = HANDSHAKE_TIMEOUT;
    config.crust.rendezvous = false;
    config.dht.mode = mode;
    // Only a change of network sends a node looking again.
    config.dht.record_retry = Duration::from_secs(120);
    if let Some((id, ip)) = seed {
        config.bootstrap = true;
        config.crust.bootstrap_contacts = vec![crust::Contact {
            id: Some(id),
            addr: Endpoint::tcp(SocketAddr::new(ip, PORT)),
        }];
    }
    config
}

async fn open(dir: &Path, config: NodeConfig) -> (Node, NodeEvents) {
    Node::open(Profile::open(dir, None).unwrap(), config)
        .await
        .unwrap()
}

/// A public DHT server (a chat node in server mode) that everyone
/// bootstraps from, running until [`Seed::stop`].
struct Seed {
    stop: oneshot::Sender<()>,
    task: netsim::HostTask<()>,
}

impl Seed {
    /// Starts it on `host` from the profile in `dir`; returns once it runs.
    fn start(net: &Network, host: netsim::HostId, dir: std::path::PathBuf) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let (up, is_up) = std::sync::mpsc::channel::<()>();
        let task = net
            .spawn(host, move || async move {
                let (node, mut events) = open(&dir, config(DhtMode::Server, None)).await;
                tokio::spawn(async move { while events.recv().await.is_some() {} });
                up.send(()).unwrap();
                let _ = stopped.await;
                node.shutdown().await;
            })
            .unwrap();
        is_up.recv().unwrap();
        Self { stop, task }
    }

    fn stop(self) {
        self.stop.send(()).unwrap();
        self.task.join().unwrap();
    }
}

/// Waits until `deadline` for the first event `pick` accepts.
async fn before<T>(
    who: &str,
    deadline: tokio::time::Instant,
    events: &mut NodeEvents,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> T {
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(e)) => {
                if let Some(found) = pick(&e) {
                    return found;
                }
            }
            Ok(None) => panic!("{who}: node stopped"),
            Err(_) => panic!("{who}: timed out"),
        }
    }
}

fn online(contact: PeerId) -> impl FnMut(&Event) -> Option<SocketAddr> {
    move |e| match e {
        Event::ContactOnline { contact: c, path } if *c == contact => Some(path.remote_addr),
        _ => None,
    }
}

fn delivered(e: &Event) -> Option<()> {
    matches!(
        e,
        Event::MessageStateChanged {
            state: MessageState::Delivered,
            ..
        }
    )
    .then_some(())
}

/// A friend of the node in `dir` (friends with it already): runs until
/// told to stop, and returns the texts it received.
fn friend_host(
    net: &Network,
    host: netsim::HostId,
    dir: std::path::PathBuf,
    invite_tx: oneshot::Sender<String>,
    stop: oneshot::Receiver<()>,
    want: usize,
) -> netsim::HostTask<Vec<String>> {
    net.spawn(host, move || async move {
        let (node, mut events) = open(&dir, config(DhtMode::Server, None)).await;
        invite_tx
            .send(node.my_invite().unwrap().to_string())
            .unwrap();
        let request = wait("friend", &mut events, |e| match e {
            Event::FriendRequest(r) => Some(r.from),
            _ => None,
        })
        .await;
        node.accept(&request).unwrap();
        let mut texts = Vec::new();
        while texts.len() < want {
            texts.push(
                wait("friend", &mut events, |e| match e {
                    Event::MessageReceived(m) => Some(m.text.clone()),
                    _ => None,
                })
                .await,
            );
        }
        let _ = stop.await;
        node.shutdown().await;
        texts
    })
    .unwrap()
}

#[test]
fn every_contact_is_reconnected_when_the_address_changes() {
    if !prerequisites() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let [alice_dir, carol_dir, bob_dir] = profiles(root.path(), ["alice", "carol", "bob"]);
    let mut t = Topology::new().seed(31);
    let alice_host = t.public_host("alice");
    let carol_host = t.public_host("carol");
    // Bob's machine has two addresses; it starts on the first and loses
    // it.
    let bob_host = t.public_host_with_addrs("bob", 2);
    let [old_ip, new_ip] = <[std::net::Ipv4Addr; 2]>::try_from(t.addrs(bob_host)).unwrap();
    let net = Network::start(&t).unwrap();

    let (alice_invite, alice_invite_rx) = oneshot::channel();
    let (carol_invite, carol_invite_rx) = oneshot::channel();
    let (alice_stop, alice_stopped) = oneshot::channel();
    let (carol_stop, carol_stopped) = oneshot::channel();
    let alice = friend_host(&net, alice_host, alice_dir, alice_invite, alice_stopped, 2);
    let carol = friend_host(&net, carol_host, carol_dir, carol_invite, carol_stopped, 2);

    let (ready, is_ready) = std::sync::mpsc::channel::<()>();
    let (moved, has_moved) = oneshot::channel::<()>();
    let bob = net
        .spawn(bob_host, move || async move {
            let (bob, mut events) = open(&bob_dir, config(DhtMode::Server, None)).await;
            let mut friends = Vec::new();
            for invite in [
                alice_invite_rx.await.unwrap(),
                carol_invite_rx.await.unwrap(),
            ] {
                let invite: chat_core::Invite = invite.parse().unwrap();
                bob.add_contact(&invite, "hi").unwrap();
                friends.push(invite.peer);
            }
            let mut accepted = Vec::new();
            while accepted.len() < friends.len() {
                accepted.push(
                    wait("bob", &mut events, |e| match e {
                        Event::FriendAccepted { contact } => Some(*contact),
                        _ => None,
                    })
                    .await,
                );
            }
            for friend in &friends {
                bob.send(friend, "before").unwrap();
                wait("bob", &mut events, delivered).await;
            }
            // Every connection leaves from the old address (a uTP one names
            // the socket's unspecified address: whichever transport won
            // the dial race).
            let report = bob.network_report().await;
            assert!(
                report.connections.iter().all(|(_, info)| {
                    let ip = info.local_addr.ip();
                    ip == IpAddr::V4(old_ip) || ip.is_unspecified()
                }),
                "{:?}",
                report.connections
            );
            tokio::time::sleep(HANDSHAKE_TIMEOUT).await;
            ready.send(()).unwrap();
            has_moved.await.unwrap();
            let deadline = tokio::time::Instant::now() + RECONNECT_BOUND;
            let mut back = Vec::new();
            while back.len() < friends.len() {
                // A connection not from the old address (a uTP one names
                // the socket's unspecified address).
                let (who, _) = before("bob", deadline, &mut events, |e| match e {
                    Event::ContactOnline { contact, path }
                        if path.local_addr.ip() != IpAddr::V4(old_ip) =>
                    {
                        Some((*contact, path.remote_addr))
                    }
                    _ => None,
                })
                .await;
                if !back.contains(&who) {
                    back.push(who);
                }
            }
            for friend in &friends {
                bob.send(friend, "after").unwrap();
                before("bob", deadline, &mut events, delivered).await;
            }
            let report = bob.network_report().await;
            for (peer, info) in &report.connections {
                let ip = info.local_addr.ip();
                assert!(
                    ip == IpAddr::V4(new_ip) || ip.is_unspecified(),
                    "{peer} still on {ip}"
                );
            }
            bob.shutdown().await;
        })
        .unwrap();
    is_ready.recv().unwrap();
    let status = net
        .command(
            bob_host,
            std::process::Command::new("ip").args([
                "addr",
                "del",
                &format!("{old_ip}/24"),
                "dev",
                "eth0",
            ]),
        )
        .unwrap()
        .wait()
        .unwrap();
    assert!(status.success());
    moved.send(()).unwrap();
    bob.join().unwrap();
    alice_stop.send(()).unwrap();
    carol_stop.send(()).unwrap();
    assert_eq!(alice.join().unwrap(), ["before", "after"]);
    assert_eq!(carol.join().unwrap(), ["before", "after"]);
    net.shutdown();
}

#[test]
fn a_resume_finds_a_connection_that_died_silently_and_reaches_the_friend_again() {
    if !prerequisites() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let [seed_dir, alice_dir, bob_dir] = profiles(root.path(), ["seed", "alice", "bob"]);
    let seed_id = Profile::open(&seed_dir, None).unwrap().peer_id();
    let mut t = Topology::new().seed(37);
    let seed_host = t.public_host("seed");
    let alice_home = t.public_host("alice-home");
    let alice_away = t.public_host("alice-away");
    // Behind a NAT, so only Bob can open a connection between them.
    let nat = t.router("bob-home", NatPreset::PortRestrictedCone);
    let bob_host = t.host("bob-laptop", nat);
    let seed = Some((seed_id, IpAddr::V4(t.ip(seed_host))));
    let away_ip = IpAddr::V4(t.ip(alice_away));
    let bob_wan = t.wan_ip(nat);
    let net = Network::start(&t).unwrap();

    let seed_node = Seed::start(&net, seed_host, seed_dir);

    // Alice at home, friends with Bob.
    let (invite_tx, invite_rx) = oneshot::channel::<String>();
    let (leave, left) = oneshot::channel::<()>();
    let alice_dir2 = alice_dir.clone();
    let home = net
        .spawn(alice_home, move || async move {
            let (alice, mut events) = open(&alice_dir2, config(DhtMode::Server, seed)).await;
            invite_tx
                .send(alice.my_invite().unwrap().to_string())
                .unwrap();
            let bob = wait("alice", &mut events, |e| match e {
                Event::FriendRequest(r) => Some(r.from),
                _ => None,
            })
            .await;
            alice.accept(&bob).unwrap();
            left.await.unwrap();
            // Alice's machine vanishes without a word to Bob: nothing
            // goes from here to his NAT any more, not even her goodbye or
            // a reset.
            alice.shutdown().await;
            bob
        })
        .unwrap();

    let clock = Arc::new(MovableClock::default());
    // Bob's clock runs two minutes behind while he "sleeps"; the resume
    // puts it right (within the skew DHT records allow).
    clock.offset_ms.store(-120_000, Ordering::SeqCst);
    let bob_clock = clock.clone();
    let (asleep, is_asleep) = std::sync::mpsc::channel::<()>();
    let (resume, resumed) = oneshot::channel::<()>();
    let bob = net
        .spawn(bob_host, move || async move {
            let mut config = config(DhtMode::Client, seed);
            config.clock = bob_clock.clone();
            let (bob, mut events) = open(&bob_dir, config).await;
            let invite: chat_core::Invite = invite_rx.await.unwrap().parse().unwrap();
            let alice = invite.peer;
            bob.add_contact(&invite, "hi").unwrap();
            wait("bob", &mut events, |e| {
                matches!(e, Event::FriendAccepted { .. }).then_some(())
            })
            .await;
            let before_sleep = loop {
                let status = bob.dht_status().await.unwrap();
                if status.published.is_some() && status.stored_at > 0 {
                    break status;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            asleep.send(()).unwrap();
            resumed.await.unwrap();
            // The machine wakes: its wall clock is two minutes ahead of
            // where the monotonic clock left it.
            bob_clock.offset_ms.store(0, Ordering::SeqCst);
            let deadline = tokio::time::Instant::now() + RECONNECT_BOUND;
            before("bob", deadline, &mut events, |e| {
                matches!(e, Event::ContactOffline { contact } if *contact == alice).then_some(())
            })
            .await;
            let at = before("bob", deadline, &mut events, online(alice)).await;
            bob.send(&alice, "back").unwrap();
            before("bob", deadline, &mut events, delivered).await;
            let after = bob.dht_status().await.unwrap();
            bob.shutdown().await;
            (at, before_sleep, after)
        })
        .unwrap();
    is_asleep.recv().unwrap();

    // Alice's home drops everything for Bob, then Alice leaves.
    let status = net
        .command(
            alice_home,
            std::process::Command::new("ip").args([
                "route",
                "add",
                "blackhole",
                &format!("{bob_wan}/32"),
            ]),
        )
        .unwrap()
        .wait()
        .unwrap();
    assert!(status.success());
    leave.send(()).unwrap();
    let bob_id = home.join().unwrap();

    // Alice on another network, published there.
    let (away_stop, away_stopped) = oneshot::channel::<()>();
    let (published, is_published) = std::sync::mpsc::channel::<()>();
    let away = net
        .spawn(alice_away, move || async move {
            let (alice, mut events) = open(&alice_dir, config(DhtMode::Server, seed)).await;
            loop {
                let status = alice.dht_status().await.unwrap();
                if status.published.is_some() && status.stored_at > 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            published.send(()).unwrap();
            let text = wait("alice away", &mut events, |e| match e {
                Event::MessageReceived(m) if m.contact == bob_id => Some(m.text.clone()),
                _ => None,
            })
            .await;
            let _ = away_stopped.await;
            alice.shutdown().await;
            text
        })
        .unwrap();
    is_published.recv().unwrap();
    resume.send(()).unwrap();
    let (at, before_sleep, after) = bob.join().unwrap();
    assert_eq!(at.ip(), away_ip, "Bob reached Alice at {at}");
    // The resume published Bob's record again and looked Alice up again.
    assert!(
        after.published > before_sleep.published,
        "{before_sleep:?} {after:?}"
    );
    assert!(
        after.lookups > before_sleep.lookups,
        "{before_sleep:?} {after:?}"
    );
    away_stop.send(()).unwrap();
    assert_eq!(away.join().unwrap(), "back");
    seed_node.stop();
    net.shutdown();
}

/// Bob moves behind a port-restricted NAT and keeps a connection to a
/// public rendezvous peer that Alice (behind a symmetric NAT) has never
/// met.
/// His record names that peer and where it is: Alice finds the record,
/// connects to the rendezvous, and the two punch holes through it. Neither
/// can dial the other, and the one node both know (the DHT seed) forwards
/// no rendezvous.
#[test]
fn a_contact_is_reached_through_a_rendezvous_its_record_names() {
    if !prerequisites() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let [seed_dir, alice_dir, bob_dir] = profiles(root.path(), ["seed", "alice", "bob"]);
    let seed_id = Profile::open(&seed_dir, None).unwrap().peer_id();
    let mut t = Topology::new().seed(41);
    let seed_host = t.public_host("seed");
    let rendezvous_host = t.public_host("rendezvous");
    // Symmetric: her record names no mapping of hers, so Bob cannot dial
    // her, nor open his NAT for her by dialling it at the same moment as
    // she dials his.
    let alice_nat = t.router("alice-home", NatPreset::Symmetric);
    let alice_host = t.host("alice-laptop", alice_nat);
    let bob_public = t.public_host("bob-office");
    let bob_nat = t.router("bob-home", NatPreset::PortRestrictedCone);
    let bob_host = t.host("bob-laptop", bob_nat);
    let seed = Some((seed_id, IpAddr::V4(t.ip(seed_host))));
    let rendezvous_addr = SocketAddr::new(IpAddr::V4(t.ip(rendezvous_host)), PORT);
    let net = Network::start(&t).unwrap();

    let seed_node = Seed::start(&net, seed_host, seed_dir);

    // A public crust peer that forwards rendezvous (as crust-node does).
    let (rendezvous_stop, rendezvous_stopped) = oneshot::channel::<()>();
    let (rendezvous_up, rendezvous_is_up) = std::sync::mpsc::channel::<PeerId>();
    let rendezvous_task = net
        .spawn(rendezvous_host, move || async move {
            let mut config = crust::Config {
                listen: vec![SocketAddr::from(([0, 0, 0, 0], PORT))],
                utp: Some(SocketAddr::from(([0, 0, 0, 0], PORT))),
                upnp: false,
                ..crust::Config::default()
            };
            config.channel.network_id = NETWORK.into();
            let (service, mut events) = crust::Service::start(config, crust::SecretId::generate())
                .await
                .unwrap();
            tokio::spawn(async move { while events.recv().await.is_some() {} });
            rendezvous_up.send(service.id()).unwrap();
            let _ = rendezvous_stopped.await;
            service.shutdown().await;
        })
        .unwrap();
    let rendezvous_id = rendezvous_is_up.recv().unwrap();

    let node_config = move |mode, bootstrap: Vec<crust::Contact>| {
        let mut config = config(mode, seed);
        config.crust.bootstrap_contacts.extend(bootstrap);
        config.dht.record_retry = Duration::from_secs(1);
        config
    };

    // Bob at the office (public), befriended by Alice.
    let (invite_tx, invite_rx) = oneshot::channel::<String>();
    let (accepted_tx, accepted_rx) = oneshot::channel::<()>();
    let bob_dir2 = bob_dir.clone();
    let office = net
        .spawn(bob_public, move || async move {
            let (bob, mut events) = open(&bob_dir2, node_config(DhtMode::Server, Vec::new())).await;
            invite_tx
                .send(bob.my_invite().unwrap().to_string())
                .unwrap();
            let alice = wait("bob", &mut events, |e| match e {
                Event::FriendRequest(r) => Some(r.from),
                _ => None,
            })
            .await;
            bob.accept(&alice).unwrap();
            // Alice knows she is a friend before Bob leaves.
            accepted_rx.await.unwrap();
            bob.shutdown().await;
        })
        .unwrap();

    let (bob_home, bob_is_home) = oneshot::channel::<()>();
    let alice = net
        .spawn(alice_host, move || async move {
            let (alice, mut events) =
                open(&alice_dir, node_config(DhtMode::Client, Vec::new())).await;
            let invite: chat_core::Invite = invite_rx.await.unwrap().parse().unwrap();
            let bob = invite.peer;
            alice.add_contact(&invite, "hi").unwrap();
            wait("alice", &mut events, |e| {
                matches!(e, Event::FriendAccepted { .. }).then_some(())
            })
            .await;
            accepted_tx.send(()).unwrap();
            wait("alice", &mut events, |e| {
                matches!(e, Event::ContactOffline { contact } if *contact == bob).then_some(())
            })
            .await;
            bob_is_home.await.unwrap();
            let never_met = alice
                .network_report()
                .await
                .connections
                .iter()
                .all(|(peer, _)| *peer != rendezvous_id);
            let deadline = tokio::time::Instant::now() + RECONNECT_BOUND;
            let path = before("alice", deadline, &mut events, |e| match e {
                Event::ContactOnline { contact, path } if *contact == bob => Some(path.path),
                _ => None,
            })
            .await;
            let met = alice
                .network_report()
                .await
                .connections
                .iter()
                .any(|(peer, _)| *peer == rendezvous_id);
            alice.send(&bob, "through the rendezvous").unwrap();
            wait("alice", &mut events, delivered).await;
            alice.shutdown().await;
            (never_met, path, met)
        })
        .unwrap();
    office.join().unwrap();

    // Bob at home, behind his NAT, keeping a connection to the
    // rendezvous.
    let (bob_stop, bob_stopped) = oneshot::channel::<()>();
    let bob = net
        .spawn(bob_host, move || async move {
            let rendezvous = crust::Contact {
                id: Some(rendezvous_id),
                addr: Endpoint::tcp(rendezvous_addr),
            };
            let (bob, mut events) =
                open(&bob_dir, node_config(DhtMode::Client, vec![rendezvous])).await;
            loop {
                let status = bob.dht_status().await.unwrap();
                if status.published.is_some() && status.stored_at > 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            bob_home.send(()).unwrap();
            let text = wait("bob", &mut events, |e| match e {
                Event::MessageReceived(m) => Some(m.text.clone()),
                _ => None,
            })
            .await;
            let _ = bob_stopped.await;
            bob.shutdown().await;
            text
        })
        .unwrap();
    let (never_met, path, met) = alice.join().unwrap();
    bob_stop.send(()).unwrap();
    assert_eq!(bob.join().unwrap(), "through the rendezvous");
    assert!(never_met, "Alice knew the rendezvous before");
    assert!(met, "Alice never connected to the rendezvous");
    assert_eq!(path, chat_core::ConnectionPath::HolePunched);
    rendezvous_stop.send(()).unwrap();
    rendezvous_task.join().unwrap();
    seed_node.stop();
    net.shutdown();
}
