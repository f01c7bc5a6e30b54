//! The router probe against a real probe server on loopback (127.0.0.1
//! and 127.0.0.2, two addresses of one host): no NAT, so everything is
//! open; and a server that refuses bad address pairs.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use crust::probe::{
    Behaviour, Ports, ProbeConfig, ProbeServer, ServerError, SynAnswer, UdpReach, probe,
};

/// A server on two loopback addresses with free ports.
async fn server() -> ProbeServer {
    ProbeServer::start_on_loopback().await.unwrap()
}

#[tokio::test]
async fn probe_without_nat_finds_everything_open() {
    let server = server().await;
    let mut config = ProbeConfig::new(vec![server.primary()]);
    config.upnp = false;
    config.lifetime = vec![Duration::from_millis(200)];
    let report = probe(&config).await.unwrap();
    let f = &report.findings;
    assert_eq!(f.udp, UdpReach::Reachable);
    assert_eq!(f.behind_nat, Some(false), "{report}");
    assert_eq!(f.mapping, Some(Behaviour::EndpointIndependent));
    assert_eq!(f.filtering, Some(Behaviour::EndpointIndependent));
    assert_eq!(f.ports, Some(Ports::Preserved));
    assert_eq!(f.hairpinning, Some(true));
    assert_eq!(f.tcp.outgoing, Some(true));
    assert_eq!(f.tcp.port_preserved, Some(true));
    // Nothing listens on the stray port: the host itself answers RST.
    assert_eq!(f.tcp.unsolicited_syn, Some(SynAnswer::Rst));
    assert!(f.tcp.simultaneous_open.is_some());
    assert_eq!(f.cgnat, Some(false));
    assert_eq!(f.nat_class(), "none");
    let l = f.lifetime.unwrap();
    assert_eq!((l.at_least_secs, l.below_secs), (0, None));
    // Masked unless opted in: the address is not in what would be sent.
    let external = report.addresses.external_udp.unwrap();
    let masked = report.render_submission(false);
    assert!(!masked.contains(&external.to_string()), "{masked}");
    assert!(masked.contains("127.0.0.0/24"), "{masked}");
    assert!(!report.summary(false).contains(&external.to_string()));
    let shared = report.render_submission(true);
    assert!(shared.contains(&external.to_string()), "{shared}");
    assert!(report.summary(true).contains(&external.to_string()));
}

#[tokio::test]
async fn a_silent_server_means_udp_blocked() {
    // A bound socket that never answers.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut config = ProbeConfig::new(vec![silent.local_addr().unwrap()]);
    config.upnp = false;
    config.tcp = false;
    config.retransmit = Duration::from_millis(100);
    let report = probe(&config).await.unwrap();
    assert_eq!(report.findings.udp, UdpReach::Blocked);
    assert_eq!(report.findings.nat_class(), "udp_blocked");
}

#[tokio::test]
async fn server_needs_two_ips_and_two_ports() {
    let a: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    let same_ip: SocketAddr = "127.0.0.1:4001".parse().unwrap();
    let same_port: SocketAddr = "127.0.0.2:4000".parse().unwrap();
    for b in [same_ip, same_port] {
        assert!(matches!(
            ProbeServer::start(a, b).await,
            Err(ServerError::Addresses(..))
        ));
    }
}

#[tokio::test]
async fn server_ignores_junk_and_refuses_to_send_elsewhere() {
    use crust::probe::wire::{Change, Request, Response};
    let server = server().await;
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // Junk and short requests get no answer; a good one after them does.
    client.send_to(b"junk", server.primary()).await.unwrap();
    let short = &Request::Binding {
        txid: 1,
        change: Change::default(),
    }
    .encode()[..20];
    client.send_to(short, server.primary()).await.unwrap();
    // A SendTo aimed at another IP (127.0.0.3) is dropped.
    let elsewhere = Request::SendTo {
        txid: 2,
        change: Change::default(),
        target: "127.0.0.3:9".parse().unwrap(),
    };
    client
        .send_to(&elsewhere.encode(), server.primary())
        .await
        .unwrap();
    let good = Request::Binding {
        txid: 3,
        change: Change::default(),
    };
    client
        .send_to(&good.encode(), server.primary())
        .await
        .unwrap();
    let mut buf = [0u8; 128];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let answer = Response::decode(&buf[..n]).unwrap();
    assert_eq!(answer.txid(), 3, "only the good request is answered");
    match answer {
        Response::Binding { observed, .. } => {
            assert_eq!(observed, client.local_addr().unwrap())
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// The IPv6 step: a server on `[::1]` that answers binding requests makes
/// it "yes"; none makes it "no". Skipped where the host has no IPv6.
#[tokio::test]
async fn ipv6_is_tested_against_the_ipv6_server() {
    use crust::probe::wire::{Request, Response};
    let Ok(v6) = tokio::net::UdpSocket::bind("[::1]:0").await else {
        eprintln!("skipping: no IPv6 loopback");
        return;
    };
    let v6_addr = v6.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 256];
        while let Ok((n, from)) = v6.recv_from(&mut buf).await {
            if let Ok(Request::Binding { txid, .. }) = Request::decode(&buf[..n]) {
                let answer = Response::Binding {
                    txid,
                    observed: from,
                    origin: v6_addr,
                    other: v6_addr,
                };
                let _ = v6.send_to(&answer.encode(), from).await;
            }
        }
    });
    let server = server().await;
    let mut config = ProbeConfig::new(vec![server.primary()]);
    config.upnp = false;
    config.tcp = false;
    config.ipv6_server = Some(v6_addr);
    let report = probe(&config).await.unwrap();
    assert_eq!(report.findings.ipv6, Some(true));
    // A silent IPv6 address: no.
    let silent = std::net::UdpSocket::bind("[::1]:0").unwrap();
    config.ipv6_server = Some(silent.local_addr().unwrap());
    config.retransmit = Duration::from_millis(100);
    let report = probe(&config).await.unwrap();
    assert_eq!(report.findings.ipv6, Some(false));
}
