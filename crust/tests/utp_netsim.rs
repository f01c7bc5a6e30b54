//! uTP over real sockets through netsim's virtual internet: links with loss,
//! delay, jitter that reorders, duplication, and a port-restricted cone NAT.
//! Every transfer is checked byte for byte; nothing here asserts speed.
//!
//! Needs root and /dev/net/tun: without them each test prints why and passes,
//! except under `CI=true`, where a missing prerequisite fails it.
#![cfg(target_os = "linux")]
// Test helpers panic on failure, like the tests.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crust::utp::UtpSocket;
use crust::utp::proto::EndpointConfig;
use netsim::{HostId, Impairment, LinkConfig, NatPreset, Network, Topology};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PORT: u16 = 4000;
/// Far above what any transfer here needs; a hang fails instead of blocking.
const LIMIT: Duration = Duration::from_secs(60);

/// True if the test can run; see the module docs.
fn prerequisites() -> bool {
    netsim::prerequisites(&[])
}

fn payload(len: usize, salt: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(salt).wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

/// What one transfer saw.
struct Transfer {
    /// The bytes the server received.
    received: Vec<u8>,
    /// The client's address as the server saw it.
    client_seen_as: SocketAddr,
    /// The largest UDP payload the client's connection found to pass.
    client_path_mtu: u16,
    stats: netsim::Stats,
}

/// Sends `data` from `client` to `server` (listening on `server_ip:PORT`)
/// over uTP; both sides then close, and each waits for the other's FIN.
fn transfer(t: &Topology, client: HostId, server: HostId, data: Vec<u8>) -> Transfer {
    let server_ip = t.ip(server);
    let net = Network::start(t).unwrap();
    let rx = net
        .spawn(server, || async {
            let (socket, _) = UtpSocket::bind(
                SocketAddr::from(([0, 0, 0, 0], PORT)),
                EndpointConfig::default(),
            )
            .await
            .unwrap();
            let mut stream = tokio::time::timeout(LIMIT, socket.accept())
                .await
                .expect("accepted in time")
                .unwrap();
            let peer = stream.peer_addr().unwrap();
            let mut got = Vec::new();
            tokio::time::timeout(LIMIT, stream.read_to_end(&mut got))
                .await
                .expect("received in time")
                .unwrap();
            stream.shutdown().await.unwrap();
            // The client acknowledges our FIN and exits; a lost final ack
            // only costs the client a resent FIN, so don't insist here.
            let _ = tokio::time::timeout(Duration::from_secs(5), stream.closed()).await;
            (got, peer)
        })
        .unwrap();
    let client_path_mtu = net
        .spawn(client, move || async move {
            let (socket, _) = UtpSocket::bind(
                SocketAddr::from(([0, 0, 0, 0], 0)),
                EndpointConfig::default(),
            )
            .await
            .unwrap();
            // A SYN sent before the server binds is simply resent.
            let mut stream = tokio::time::timeout(
                LIMIT,
                socket.connect(SocketAddr::new(IpAddr::V4(server_ip), PORT)),
            )
            .await
            .expect("connected in time")
            .unwrap();
            tokio::time::timeout(LIMIT, async {
                stream.write_all(&data).await.unwrap();
                stream.shutdown().await.unwrap();
                let mut reply = Vec::new();
                stream.read_to_end(&mut reply).await.unwrap();
                assert!(reply.is_empty());
                // Every byte and our FIN acknowledged, the server's FIN received.
                stream.closed().await.unwrap();
            })
            .await
            .expect("sent and closed in time");
            stream.path_mtu().unwrap()
        })
        .unwrap()
        .join()
        .unwrap();
    let (received, client_seen_as) = rx.join().unwrap();
    let stats = net.shutdown();
    Transfer {
        received,
        client_seen_as,
        client_path_mtu,
        stats,
    }
}

fn assert_same(got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "length");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("first difference at byte {i}");
    }
}

/// Two public hosts; `imp` applies to the client's link in both directions.
fn two_hosts(seed: u64, imp: Impairment) -> (Topology, HostId, HostId) {
    let mut t = Topology::new().seed(seed);
    let client = t.public_host("client");
    let server = t.public_host("server");
    t.set_link(client, LinkConfig::symmetric(imp));
    (t, client, server)
}

#[test]
fn several_megabytes_arrive_intact_over_a_lossy_link() {
    if !prerequisites() {
        return;
    }
    let (t, client, server) = two_hosts(
        11,
        Impairment::none()
            .latency(Duration::from_millis(2))
            .loss(0.05),
    );
    let data = payload(4 << 20, 1);
    let r = transfer(&t, client, server, data.clone());
    assert_same(&r.received, &data);
    let link = r.stats.link("client").unwrap();
    assert!(link.up.dropped_loss > 0 && link.down.dropped_loss > 0);
}

#[test]
fn several_megabytes_arrive_intact_over_a_40ms_rtt_link_that_reorders() {
    if !prerequisites() {
        return;
    }
    // 20 ms each way plus up to 5 ms of jitter that may reorder.
    let (t, client, server) = two_hosts(
        12,
        Impairment::none()
            .latency(Duration::from_millis(20))
            .jitter(Duration::from_millis(5), true),
    );
    let data = payload(4 << 20, 2);
    let r = transfer(&t, client, server, data.clone());
    assert_same(&r.received, &data);
}

#[test]
fn several_megabytes_arrive_intact_over_a_link_that_duplicates() {
    if !prerequisites() {
        return;
    }
    let (t, client, server) = two_hosts(
        13,
        Impairment::none()
            .latency(Duration::from_millis(2))
            .duplicate(0.05),
    );
    let data = payload(4 << 20, 3);
    let r = transfer(&t, client, server, data.clone());
    assert_same(&r.received, &data);
    let link = r.stats.link("client").unwrap();
    assert!(link.up.duplicated > 0 && link.down.duplicated > 0);
}

#[test]
fn a_transfer_survives_loss_delay_reordering_and_duplication_at_once() {
    if !prerequisites() {
        return;
    }
    let (t, client, server) = two_hosts(
        14,
        Impairment::none()
            .latency(Duration::from_millis(20))
            .jitter(Duration::from_millis(5), true)
            .loss(0.02)
            .duplicate(0.02),
    );
    let data = payload(2 << 20, 4);
    let r = transfer(&t, client, server, data.clone());
    assert_same(&r.received, &data);
    let link = r.stats.link("client").unwrap();
    assert!(link.up.dropped_loss + link.down.dropped_loss > 0);
    assert!(link.up.duplicated + link.down.duplicated > 0);
}

#[test]
fn a_client_behind_a_port_restricted_cone_nat_reaches_a_public_host() {
    if !prerequisites() {
        return;
    }
    let mut t = Topology::new().seed(15);
    let home = t.router("home", NatPreset::PortRestrictedCone);
    let client = t.host("client", home);
    let server = t.public_host("server");
    t.set_link(
        client,
        LinkConfig::symmetric(
            Impairment::none()
                .latency(Duration::from_millis(5))
                .loss(0.01),
        ),
    );
    let wan = t.wan_ip(home);
    let data = payload(4 << 20, 5);
    let r = transfer(&t, client, server, data.clone());
    assert_same(&r.received, &data);
    // The server only ever saw the NAT's public side.
    assert_eq!(r.client_seen_as.ip(), IpAddr::V4(wan));
}

#[test]
fn a_transfer_through_a_path_with_a_small_mtu_arrives_intact() {
    if !prerequisites() {
        return;
    }
    // The server's link carries at most 1400-byte packets: below uTP's
    // 1472-byte ceiling, above its 1232-byte floor. The client's own
    // interface is larger, so its too-big packets die on the path and ICMP
    // "fragmentation needed" goes back to the client's kernel.
    let mut t = Topology::new().seed(16);
    let client = t.public_host("client");
    let server = t.public_host("server");
    t.set_link(
        client,
        LinkConfig::symmetric(Impairment::none().latency(Duration::from_millis(2))),
    );
    t.set_link(server, LinkConfig::symmetric(Impairment::none().mtu(1400)));
    let data = payload(2 << 20, 6);
    let r = transfer(&t, client, server, data.clone());
    assert_same(&r.received, &data);
    let down = r.stats.link("server").unwrap().down;
    println!("server downlink: {down:?}");
    // MTU probes leave with "don't fragment" (IP_PMTUDISC_PROBE): one
    // too big dies at the link instead of arriving as fragments, so the
    // search settles at or below the path's 1372-byte UDP payload (1400
    // minus 28 bytes of IP and UDP header), above the 1232-byte floor it
    // started from. Resent probes and all other packets may be fragmented,
    // so only the first send of each probe too big dies, never packet
    // after packet.
    let mtu = r.client_path_mtu;
    println!("client path MTU: {mtu}");
    assert!((1232..=1372).contains(&mtu), "path MTU {mtu}");
    assert!(mtu > 1372 - 16, "the search stopped short: {mtu}");
    assert!(
        down.dropped_mtu <= 10,
        "{} packets died on the MTU",
        down.dropped_mtu
    );
}
