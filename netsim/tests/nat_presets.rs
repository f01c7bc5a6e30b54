//! Every NAT preset, checked with real sockets from hosts: the RFC 5780
//! classifier over UDP, and TCP mapping/filtering/unsolicited-SYN behaviour.
// Helpers outside #[test] functions panic on failure too.
#![allow(clippy::unwrap_used, clippy::type_complexity)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use netsim::{Dependence, NatPreset, PortBehaviour, Topology};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};

const PROBE_PORT: u16 = 3478;

fn expected(
    p: NatPreset,
) -> Option<(
    bool,
    Dependence,
    Dependence,
    fn(PortBehaviour) -> bool,
    bool,
)> {
    use Dependence::*;
    let preserving = |b| b == PortBehaviour::Preserving;
    let sequential = |b| b == PortBehaviour::Sequential(1);
    let random = |b| b == PortBehaviour::Random;
    Some(match p {
        NatPreset::Open => (
            false,
            EndpointIndependent,
            EndpointIndependent,
            preserving,
            true,
        ),
        NatPreset::FullCone => (
            true,
            EndpointIndependent,
            EndpointIndependent,
            preserving,
            true,
        ),
        NatPreset::RestrictedCone => (
            true,
            EndpointIndependent,
            AddressDependent,
            preserving,
            true,
        ),
        NatPreset::PortRestrictedCone => (
            true,
            EndpointIndependent,
            AddressAndPortDependent,
            preserving,
            true,
        ),
        NatPreset::Symmetric => (
            true,
            AddressAndPortDependent,
            AddressAndPortDependent,
            sequential,
            false,
        ),
        NatPreset::SymmetricRandom => (
            true,
            AddressAndPortDependent,
            AddressAndPortDependent,
            random,
            false,
        ),
        NatPreset::Cgnat => (
            true,
            EndpointIndependent,
            AddressAndPortDependent,
            random,
            true,
        ),
        NatPreset::UdpBlocked => return None,
    })
}

#[test]
fn classifier_agrees_with_every_preset() {
    if !common::prerequisites(&[]) {
        return;
    }
    let mut t = Topology::new().seed(5);
    let server = t.public_host_with_addrs("probe-server", 2);
    let addrs = t.addrs(server);
    let addrs = [addrs[0], addrs[1]];
    let mut clients = Vec::new();
    for p in NatPreset::ALL {
        let r = t.router(&format!("r-{}", p.name()), p);
        clients.push((p, t.host(&format!("c-{}", p.name()), r)));
    }
    let net = netsim::Network::start(&t).unwrap();
    let srv = net
        .spawn(server, move || netsim::serve_probes(addrs, PROBE_PORT))
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let tasks: Vec<_> = clients
        .iter()
        .map(|(p, h)| {
            (
                *p,
                net.spawn(*h, move || netsim::classify(addrs, PROBE_PORT))
                    .unwrap(),
            )
        })
        .collect();
    let mut failures = Vec::new();
    for (p, task) in tasks {
        let got = task.join().unwrap();
        match (expected(p), got) {
            (None, Err(netsim::ClassifyError::UdpBlocked)) => {}
            (Some((nat, m, f, ports, hp)), Ok(r))
                if r.behind_nat == nat
                    && r.mapping == m
                    && r.filtering == f
                    && ports(r.ports)
                    && r.hairpinning == hp => {}
            (_, got) => failures.push(format!("{}: {got:?}", p.name())),
        }
    }
    net.spawn(server, move || netsim::stop_probes(addrs[0], PROBE_PORT))
        .unwrap()
        .join()
        .unwrap()
        .unwrap();
    srv.join().unwrap().unwrap();
    assert!(failures.is_empty(), "misclassified: {failures:#?}");
}

/// A TCP server that writes back the address it saw and closes.
async fn tcp_reflector(ip: Ipv4Addr, port: u16, conns: usize) {
    let l = TcpListener::bind((ip, port)).await.unwrap();
    for _ in 0..conns {
        let (mut c, from) = l.accept().await.unwrap();
        c.write_all(from.to_string().as_bytes()).await.unwrap();
    }
}

fn reuse_socket(local_port: u16) -> TcpSocket {
    let s = TcpSocket::new_v4().unwrap();
    s.set_reuseaddr(true).unwrap();
    s.set_reuseport(true).unwrap();
    s.bind(SocketAddr::from(([0, 0, 0, 0], local_port)))
        .unwrap();
    s
}

async fn observed(local_port: u16, to: (Ipv4Addr, u16)) -> SocketAddr {
    let mut c = reuse_socket(local_port).connect(to.into()).await.unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).await.unwrap();
    s.parse().unwrap()
}

/// TCP: mapping from one local port towards three servers, and whether an
/// unsolicited SYN from the server's other address reaches a listener on the
/// mapped port, for each cone/symmetric preset.
#[test]
fn tcp_mapping_and_filtering_per_preset() {
    if !common::prerequisites(&[]) {
        return;
    }
    use Dependence::*;
    let cases = [
        // (preset, mapping, SYN from a contacted address's other port, from another address)
        (NatPreset::FullCone, EndpointIndependent, (true, true)),
        (
            NatPreset::RestrictedCone,
            EndpointIndependent,
            (true, false),
        ),
        (
            NatPreset::PortRestrictedCone,
            EndpointIndependent,
            (false, false),
        ),
        (
            NatPreset::Symmetric,
            AddressAndPortDependent,
            (false, false),
        ),
    ];
    let mut t = Topology::new().seed(9);
    let server = t.public_host_with_addrs("tcp-server", 2);
    let sa = t.addrs(server);
    let (a1, a2) = (sa[0], sa[1]);
    let stranger = t.public_host("stranger");
    let mut clients = Vec::new();
    for (p, _, _) in cases {
        let r = t.router(&format!("t-{}", p.name()), p);
        clients.push(t.host(&format!("tc-{}", p.name()), r));
    }
    let n = cases.len();
    let net = netsim::Network::start(&t).unwrap();
    let srv = net
        .spawn(server, move || async move {
            tokio::join!(
                tcp_reflector(a1, 80, n),
                tcp_reflector(a2, 80, n),
                tcp_reflector(a2, 81, n)
            );
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let tasks: Vec<_> = clients
        .iter()
        .map(|h| {
            net.spawn(*h, move || async move {
                let listener = reuse_socket(45000).listen(8).unwrap();
                let m1 = observed(45000, (a1, 80)).await;
                let m2 = observed(45000, (a2, 80)).await;
                let m3 = observed(45000, (a2, 81)).await;
                (m1, m2, m3, listener)
            })
            .unwrap()
        })
        .collect();
    let results: Vec<_> = tasks.into_iter().map(|t| t.join().unwrap()).collect();
    srv.join().unwrap();
    for ((p, mapping, _), (m1, m2, m3, _)) in cases.iter().zip(&results) {
        let got = if m1 == m2 && m2 == m3 {
            EndpointIndependent
        } else {
            AddressAndPortDependent
        };
        assert_eq!(got, *mapping, "{}: {m1} {m2} {m3}", p.name());
    }
    // Unsolicited SYNs to each client's first mapping (made towards a1:80),
    // from a1's other ports and from a host never contacted; the clients
    // keep listening on port 45000.
    let mapped: Vec<SocketAddr> = results.iter().map(|r| r.0).collect();
    let listeners: Vec<_> = results.into_iter().map(|r| r.3).collect();
    let knock = |from: Ipv4Addr, targets: Vec<SocketAddr>| async move {
        let mut out = Vec::new();
        for (i, m) in targets.into_iter().enumerate() {
            let s = TcpSocket::new_v4().unwrap();
            s.bind(SocketAddr::from((from, 9000 + i as u16))).unwrap();
            let r = tokio::time::timeout(Duration::from_millis(700), s.connect(m)).await;
            out.push(matches!(r, Ok(Ok(_))));
        }
        out
    };
    let stranger_ip = t.ip(stranger);
    let m2 = mapped.clone();
    let other_port = net
        .spawn(server, move || knock(a1, m2))
        .unwrap()
        .join()
        .unwrap();
    let other_addr = net
        .spawn(stranger, move || knock(stranger_ip, mapped))
        .unwrap()
        .join()
        .unwrap();
    drop(listeners);
    for (((p, _, reachable), a), b) in cases.iter().zip(other_port).zip(other_addr) {
        assert_eq!(
            (a, b),
            *reachable,
            "{}: which unsolicited TCP SYNs reached the host",
            p.name()
        );
    }
}

/// UDP blocked: UDP gets nowhere, TCP works.
#[test]
fn udp_blocked_preset_passes_tcp_only() {
    if !common::prerequisites(&[]) {
        return;
    }
    let mut t = Topology::new();
    let r = t.router("blocker", NatPreset::UdpBlocked);
    t.host("inside", r);
    let s = t.public_host("outside");
    let s_ip = t.ip(s);
    let [inside, _] = netsim::run(&t, [
        netsim::host(move || async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let u = tokio::net::UdpSocket::bind("0.0.0.0:0").await.unwrap();
            let mut got_udp = false;
            for _ in 0..3 {
                u.send_to(b"u", (s_ip, 53)).await.unwrap();
                let mut b = [0u8; 8];
                if tokio::time::timeout(Duration::from_millis(200), u.recv(&mut b)).await.is_ok() {
                    got_udp = true;
                }
            }
            let tcp_ok = tokio::net::TcpStream::connect((s_ip, 80)).await.is_ok();
            let _ = tokio::net::TcpStream::connect((s_ip, 81)).await; // ends the server
            (got_udp, tcp_ok)
        }),
        netsim::host(|| async {
            let u = tokio::net::UdpSocket::bind("0.0.0.0:53").await.unwrap();
            let l = TcpListener::bind("0.0.0.0:80").await.unwrap();
            let l2 = TcpListener::bind("0.0.0.0:81").await.unwrap();
            let echo = async {
                let mut b = [0u8; 8];
                loop {
                    let (n, f) = u.recv_from(&mut b).await.unwrap();
                    u.send_to(&b[..n], f).await.unwrap();
                }
            };
            tokio::select! { _ = echo => {}, _ = async { l.accept().await.unwrap(); l2.accept().await.unwrap(); } => {} }
            (false, false)
        }),
    ])
    .unwrap();
    assert_eq!(inside, (false, true));
}
