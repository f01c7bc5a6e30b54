//! Hosts in namespaces, the router moving real packets, and the `run` API.
// Helpers outside #[test] functions panic on failure too.
#![allow(clippy::unwrap_used, clippy::type_complexity)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use netsim::{Impairment, LinkConfig, NatPreset, Network, Topology};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// UDP echo server that answers with the address it saw, `count` times.
async fn udp_reflector(port: u16, count: usize) -> Vec<SocketAddr> {
    let s = UdpSocket::bind(("0.0.0.0", port)).await.unwrap();
    let mut seen = Vec::new();
    let mut b = [0u8; 1500];
    while seen.len() < count {
        let (_, from) = s.recv_from(&mut b).await.unwrap();
        s.send_to(from.to_string().as_bytes(), from).await.unwrap();
        if !seen.contains(&from) {
            seen.push(from);
        }
    }
    seen
}

#[test]
fn udp_and_tcp_cross_a_nat_with_the_roadmap_api() {
    if !common::prerequisites(&[]) {
        return;
    }
    let mut t = Topology::new().seed(11);
    let nat = t.router("home", NatPreset::PortRestrictedCone);
    t.host("client", nat);
    let server = t.public_host("server");
    let server_ip = t.ip(server);
    let wan = t.wan_ip(nat);
    let [from_client, from_server] = netsim::run(
        &t,
        [
            netsim::host(move || async move {
                let s = UdpSocket::bind("0.0.0.0:40000").await.unwrap();
                let mut b = [0u8; 64];
                // Retry until the server has bound its socket.
                let n = loop {
                    s.send_to(b"hello", (server_ip, 7000)).await.unwrap();
                    if let Ok(r) =
                        tokio::time::timeout(Duration::from_millis(200), s.recv(&mut b)).await
                    {
                        break r.unwrap();
                    }
                };
                let seen = String::from_utf8_lossy(&b[..n]).to_string();
                // The listener was bound before the reflector answered.
                let mut c = TcpStream::connect((server_ip, 7001)).await.unwrap();
                c.write_all(&vec![7u8; 200_000]).await.unwrap();
                c.shutdown().await.unwrap();
                let mut back = String::new();
                c.read_to_string(&mut back).await.unwrap();
                vec![seen, back]
            }),
            netsim::host(|| async {
                let l = TcpListener::bind("0.0.0.0:7001").await.unwrap();
                let seen = udp_reflector(7000, 1).await;
                let (mut c, from) = l.accept().await.unwrap();
                let mut data = Vec::new();
                c.read_to_end(&mut data).await.unwrap();
                assert!(data.iter().all(|b| *b == 7));
                c.write_all(format!("{} {}", data.len(), from).as_bytes())
                    .await
                    .unwrap();
                vec![seen[0].to_string(), from.ip().to_string()]
            }),
        ],
    )
    .unwrap();
    // The server saw the NAT's address with the preserved port.
    assert_eq!(from_client[0], format!("{wan}:40000"));
    assert_eq!(from_server[0], format!("{wan}:40000"));
    assert!(from_client[1].starts_with("200000 "), "{}", from_client[1]);
    assert_eq!(from_server[1], wan.to_string());
}

#[test]
fn counters_latency_and_hosts_added_while_running() {
    if !common::prerequisites(&[]) {
        return;
    }
    let mut t = Topology::new().seed(3);
    let a = t.public_host("a");
    t.set_link(
        a,
        LinkConfig::symmetric(Impairment::none().latency(Duration::from_millis(20))),
    );
    let mut net = Network::start(&t).unwrap();
    let b = net.add_public_host("b").unwrap();
    let b_ip = net.host_addrs(b)[0];
    let server = net
        .spawn(b, || async {
            let s = UdpSocket::bind("0.0.0.0:9").await.unwrap();
            let mut buf = [0u8; 100];
            for _ in 0..10 {
                let (n, from) = s.recv_from(&mut buf).await.unwrap();
                s.send_to(&buf[..n], from).await.unwrap();
            }
        })
        .unwrap();
    let rtts = net
        .spawn(a, move || async move {
            let s = UdpSocket::bind("0.0.0.0:0").await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut rtts = Vec::new();
            let mut buf = [0u8; 100];
            for i in 0..10u8 {
                let t0 = std::time::Instant::now();
                s.send_to(&[i], (b_ip, 9)).await.unwrap();
                tokio::time::timeout(Duration::from_secs(5), s.recv(&mut buf))
                    .await
                    .unwrap()
                    .unwrap();
                rtts.push(t0.elapsed());
            }
            rtts
        })
        .unwrap()
        .join()
        .unwrap();
    server.join().unwrap();
    // 20 ms each way on a's link: every round trip takes at least 40 ms.
    assert!(
        rtts.iter().all(|r| *r >= Duration::from_millis(40)),
        "{rtts:?}"
    );
    let stats = net.shutdown();
    let la = stats.link("a").unwrap();
    assert_eq!(la.up.sent, 10);
    assert_eq!(la.up.delivered, 10);
    assert_eq!(la.down.delivered, 10);
    assert_eq!(stats.link("b").unwrap().down.delivered, 10);
}

/// Reads a pcap file: (link type, packets).
fn read_pcap(path: &std::path::Path) -> (u32, Vec<Vec<u8>>) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..4], &0xa1b2_c3d4u32.to_le_bytes());
    let linktype = u32::from_le_bytes([b[20], b[21], b[22], b[23]]);
    let mut at = 24;
    let mut pkts = Vec::new();
    while at + 16 <= b.len() {
        let len = u32::from_le_bytes([b[at + 8], b[at + 9], b[at + 10], b[at + 11]]) as usize;
        pkts.push(b[at + 16..at + 16 + len].to_vec());
        at += 16 + len;
    }
    assert_eq!(at, b.len(), "no trailing garbage");
    (linktype, pkts)
}

#[test]
fn pcap_per_link_holds_what_the_link_delivered() {
    if !common::prerequisites(&[]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut t = Topology::new().pcap(dir.path());
    let r = t.router("nat", NatPreset::FullCone);
    let a = t.host("a", r);
    let b = t.public_host("b");
    let (a_ip, b_ip, wan) = (t.ip(a), t.ip(b), t.wan_ip(r));
    let net = Network::start(&t).unwrap();
    let echo = net
        .spawn(b, || async {
            let s = UdpSocket::bind("0.0.0.0:7").await.unwrap();
            let mut buf = [0u8; 64];
            for _ in 0..3 {
                let (n, f) = s.recv_from(&mut buf).await.unwrap();
                s.send_to(&buf[..n], f).await.unwrap();
            }
        })
        .unwrap();
    net.spawn(a, move || async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s = UdpSocket::bind("0.0.0.0:5555").await.unwrap();
        let mut buf = [0u8; 64];
        for i in 0..3u8 {
            s.send_to(&[i; 10], (b_ip, 7)).await.unwrap();
            s.recv(&mut buf).await.unwrap();
        }
    })
    .unwrap()
    .join()
    .unwrap();
    echo.join().unwrap();
    let stats = net.shutdown();
    let (lt, host_link) = read_pcap(&dir.path().join("a.pcap"));
    assert_eq!(lt, 101, "LINKTYPE_RAW");
    let l = stats.link("a").unwrap();
    assert_eq!(host_link.len() as u64, l.up.delivered + l.down.delivered);
    assert_eq!(host_link.len(), 6);
    // On a's link the packets carry private addresses; on the router's
    // uplink the translated ones.
    let src = |p: &Vec<u8>| std::net::Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    assert_eq!(src(&host_link[0]), a_ip);
    let (_, uplink) = read_pcap(&dir.path().join("nat.pcap"));
    assert_eq!(uplink.len(), 6);
    assert_eq!(src(&uplink[0]), wan);
    assert_eq!(&uplink[0][28..], &[0u8; 10]);
}
