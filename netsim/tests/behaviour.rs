//! Hairpinning, mapping expiry, double NAT, ICMP translation, TCP resets and
//! path MTU, observed with real sockets.
// Helpers outside #[test] functions panic on failure too.
#![allow(clippy::unwrap_used, clippy::type_complexity)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use netsim::{Impairment, LinkConfig, NatConfig, NatPreset, Network, Topology, Unsolicited};
use tokio::net::UdpSocket;

async fn recv_within(s: &UdpSocket, ms: u64) -> Option<(Vec<u8>, SocketAddr)> {
    let mut b = [0u8; 2048];
    match tokio::time::timeout(Duration::from_millis(ms), s.recv_from(&mut b)).await {
        Ok(Ok((n, f))) => Some((b[..n].to_vec(), f)),
        _ => None,
    }
}

#[test]
fn hairpinning_on_and_off() {
    if !common::prerequisites(&[]) {
        return;
    }
    for on in [true, false] {
        let mut t = Topology::new();
        let r = t.router_with(
            "home",
            Some(NatConfig::full_cone().hairpinning(on)),
            None,
            false,
        );
        let ha = t.host("a", r);
        let hb = t.host("b", r);
        let s = t.public_host("s");
        let s_ip = t.ip(s);
        let wan = t.wan_ip(r);
        let net = Network::start(&t).unwrap();
        let got = net
            .spawn(ha, move || async move {
                let s = UdpSocket::bind("0.0.0.0:5000").await.unwrap();
                // Creates the mapping wan:5000 (nobody listens at s).
                s.send_to(b"map", (s_ip, 9)).await.unwrap();
                recv_within(&s, 1500).await.map(|(_, from)| from)
            })
            .unwrap();
        net.spawn(hb, move || async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let s = UdpSocket::bind("0.0.0.0:6000").await.unwrap();
            s.send_to(b"hp", (wan, 5000)).await.unwrap();
        })
        .unwrap()
        .join()
        .unwrap();
        let got = got.join().unwrap();
        let stats = net.shutdown();
        if on {
            assert_eq!(
                got,
                Some(SocketAddr::from((wan, 6000))),
                "hairpinned with the external source"
            );
            assert_eq!(stats.nat("home").unwrap().hairpinned, 1);
        } else {
            assert_eq!(got, None);
            assert_eq!(stats.hairpin_refused, 1);
        }
    }
}

#[test]
fn udp_mapping_expires_after_its_timeout() {
    if !common::prerequisites(&[]) {
        return;
    }
    let mut t = Topology::new();
    let r = t.router_with(
        "home",
        Some(NatConfig::full_cone().udp_timeout(Duration::from_millis(400))),
        None,
        false,
    );
    let c = t.host("c", r);
    let s = t.public_host("s");
    let s_ip = t.ip(s);
    let net = Network::start(&t).unwrap();
    let server = net
        .spawn(s, || async {
            let u = UdpSocket::bind("0.0.0.0:7").await.unwrap();
            let (_, from) = recv_within(&u, 3000).await.unwrap();
            u.send_to(b"early", from).await.unwrap();
            tokio::time::sleep(Duration::from_millis(800)).await;
            u.send_to(b"late", from).await.unwrap();
        })
        .unwrap();
    let got = net
        .spawn(c, move || async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let u = UdpSocket::bind("0.0.0.0:0").await.unwrap();
            u.send_to(b"hi", (s_ip, 7)).await.unwrap();
            let first = recv_within(&u, 1000).await.map(|x| x.0);
            let second = recv_within(&u, 1500).await.map(|x| x.0);
            (first, second)
        })
        .unwrap()
        .join()
        .unwrap();
    server.join().unwrap();
    assert_eq!(got, (Some(b"early".to_vec()), None));
    let stats = net.shutdown();
    assert_eq!(stats.nat("home").unwrap().mappings_expired, 1);
    assert_eq!(stats.nat("home").unwrap().dropped_filter, 1);
}

#[test]
fn double_nat_behind_a_carrier() {
    if !common::prerequisites(&[]) {
        return;
    }
    let mut t = Topology::new();
    let carrier = t.router("carrier", NatPreset::Cgnat);
    let home = t.router_behind("home", NatPreset::PortRestrictedCone, carrier);
    t.host("c", home);
    let s = t.public_host("s");
    let s_ip = t.ip(s);
    let carrier_wan = t.wan_ip(carrier);
    assert!(t.wan_ip(home).octets()[..2] == [100, 64]);
    let [client, server] = netsim::run(
        &t,
        [
            netsim::host(move || async move {
                let u = UdpSocket::bind("0.0.0.0:0").await.unwrap();
                for _ in 0..20 {
                    u.send_to(b"hi", (s_ip, 7)).await.unwrap();
                    if let Some((b, _)) = recv_within(&u, 200).await {
                        return String::from_utf8(b).unwrap();
                    }
                }
                String::new()
            }),
            netsim::host(|| async {
                let u = UdpSocket::bind("0.0.0.0:7").await.unwrap();
                let (_, from) = recv_within(&u, 5000).await.unwrap();
                u.send_to(from.to_string().as_bytes(), from).await.unwrap();
                from.to_string()
            }),
        ],
    )
    .unwrap();
    assert_eq!(client, server);
    assert!(server.starts_with(&format!("{carrier_wan}:")), "{server}");
}

#[test]
fn icmp_port_unreachable_is_translated_back_through_the_nat() {
    if !common::prerequisites(&[]) {
        return;
    }
    let mut t = Topology::new();
    let r = t.router("home", NatPreset::Symmetric);
    t.host("c", r);
    let s = t.public_host("s");
    let s_ip = t.ip(s);
    let net_t = t.clone();
    let net = Network::start(&net_t).unwrap();
    let c = net_t.host_id("c").unwrap();
    let err = net
        .spawn(c, move || async move {
            let u = UdpSocket::bind("0.0.0.0:0").await.unwrap();
            u.connect((s_ip, 9)).await.unwrap(); // nothing listens on s:9
            u.send(b"x").await.unwrap();
            let mut b = [0u8; 8];
            tokio::time::timeout(Duration::from_secs(2), u.recv(&mut b))
                .await
                .unwrap()
                .unwrap_err()
                .kind()
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(err, std::io::ErrorKind::ConnectionRefused);
    assert_eq!(net.shutdown().nat("home").unwrap().icmp_translated, 1);
}

#[test]
fn unsolicited_syn_is_reset_or_dropped_as_configured() {
    if !common::prerequisites(&[]) {
        return;
    }
    for (mode, refused) in [(Unsolicited::Rst, true), (Unsolicited::Drop, false)] {
        let mut t = Topology::new();
        let r = t.router_with(
            "home",
            Some(NatConfig::port_restricted_cone().tcp_unsolicited(mode)),
            None,
            false,
        );
        t.host("c", r);
        t.public_host("s");
        let wan = t.wan_ip(r);
        let [_, outcome] = netsim::run(
            &t,
            [
                netsim::host(|| async { None }),
                netsim::host(move || async move {
                    let r = tokio::time::timeout(
                        Duration::from_millis(800),
                        tokio::net::TcpStream::connect((wan, 80)),
                    )
                    .await;
                    Some(match r {
                        Ok(Err(e)) => e.kind() == std::io::ErrorKind::ConnectionRefused,
                        _ => false,
                    })
                }),
            ],
        )
        .unwrap();
        assert_eq!(outcome, Some(refused), "{mode:?}");
    }
}

#[test]
fn small_mtu_upstream_is_found_by_path_mtu_discovery() {
    if !common::prerequisites(&[]) {
        return;
    }
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut t = Topology::new();
    let r = t.router("home", NatPreset::PortRestrictedCone);
    t.set_router_link(r, LinkConfig::symmetric(Impairment::none().mtu(1000)));
    t.host("c", r);
    let s = t.public_host("s");
    let s_ip: Ipv4Addr = t.ip(s);
    let net_t = t.clone();
    let net = Network::start(&net_t).unwrap();
    let server = net
        .spawn(s, || async {
            let l = tokio::net::TcpListener::bind("0.0.0.0:80").await.unwrap();
            let (mut c, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 100_000];
            c.read_exact(&mut buf).await.unwrap();
            c.write_all(&buf).await.unwrap();
        })
        .unwrap();
    // Full-size (1500-byte) TCP segments with DF cannot cross the 1000-byte
    // link; only ICMP "fragmentation needed", translated back through the
    // NAT, lets the kernels shrink their segments and finish.
    let echoed = net
        .spawn(net_t.host_id("c").unwrap(), move || async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut c = tokio::net::TcpStream::connect((s_ip, 80)).await.unwrap();
            let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
            c.write_all(&data).await.unwrap();
            let mut back = vec![0u8; 100_000];
            tokio::time::timeout(Duration::from_secs(20), c.read_exact(&mut back))
                .await
                .unwrap()
                .unwrap();
            back == data
        })
        .unwrap()
        .join()
        .unwrap();
    server.join().unwrap();
    assert!(echoed);
    let stats = net.shutdown();
    let l = stats.link("home").unwrap();
    assert!(l.up.dropped_mtu > 0 && l.down.dropped_mtu > 0, "{l:?}");
    assert!(stats.nat("home").unwrap().icmp_translated > 0);
}

#[test]
fn nat_reboot_forgets_mappings_and_rebinds_ports() {
    if !common::prerequisites(&[]) {
        return;
    }
    let mut t = Topology::new();
    let r = t.router("home", NatPreset::Symmetric);
    let c = t.host("c", r);
    let s = t.public_host("s");
    let s_ip = t.ip(s);
    let net = Network::start(&t).unwrap();
    let server = net
        .spawn(s, || async {
            let u = UdpSocket::bind("0.0.0.0:7").await.unwrap();
            let mut seen = Vec::new();
            for _ in 0..2 {
                let (_, from) = recv_within(&u, 5000).await.unwrap();
                u.send_to(b"ack", from).await.unwrap();
                seen.push(from);
            }
            // Poke the first mapping after the reboot: it must be gone.
            u.send_to(b"stale", seen[0]).await.unwrap();
            seen
        })
        .unwrap();
    let client = |net: &Network| {
        net.spawn(c, move || async move {
            // Same local port both times.
            let u = loop {
                match UdpSocket::bind("0.0.0.0:6000").await {
                    Ok(u) => break u,
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            };
            u.send_to(b"hi", (s_ip, 7)).await.unwrap();
            let first = recv_within(&u, 2000).await.map(|x| x.0);
            let second = recv_within(&u, 500).await.map(|x| x.0);
            (first, second)
        })
        .unwrap()
        .join()
        .unwrap()
    };
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(client(&net).0, Some(b"ack".to_vec()));
    assert!(net.reboot_nat(r).unwrap());
    let (ack, stale) = client(&net);
    assert_eq!(ack, Some(b"ack".to_vec()));
    assert_eq!(stale, None, "the pre-reboot mapping no longer leads in");
    let seen = server.join().unwrap();
    assert_eq!(seen[0].ip(), seen[1].ip());
    assert_ne!(
        seen[0].port(),
        seen[1].port(),
        "a new mapping after the reboot"
    );
}
