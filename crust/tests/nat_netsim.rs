//! What a peer behind a NAT learns about itself, through netsim: the
//! external address and the NAT's kind from echoes of two public peers, and
//! UPnP mappings from netsim's simulated IGD (made, reported, removed on
//! shutdown).
//!
//! Needs root and /dev/net/tun: without them each test prints why and
//! passes, except under `CI=true`, where a missing prerequisite fails it.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)]

mod nat_common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crust::{ChannelConfig, Config, Mapping, NatReport, PortAllocation, SecretId, Service};
use nat_common::{PORT, prerequisites};
use netsim::{NatPreset, Network, Topology};

fn config(upnp: bool) -> Config {
    Config {
        listen: vec![SocketAddr::from(([0, 0, 0, 0], PORT))],
        utp: Some(SocketAddr::from(([0, 0, 0, 0], PORT))),
        upnp,
        upnp_lease: Duration::from_secs(600),
        channel: ChannelConfig {
            network_id: "crust-nat-tests".into(),
            ..Default::default()
        },
        ..Config::default()
    }
}

/// A peer behind `preset` (with UPnP on the router if `upnp`) connects to
/// two public peers; returns its NAT report, the router's WAN address and
/// the router's port forwards while it ran and after it shut down.
struct Seen {
    report: NatReport,
    wan: std::net::Ipv4Addr,
    lan_ip: std::net::Ipv4Addr,
    forwards_running: usize,
    forwards_after: usize,
}

fn learn(
    preset: NatPreset,
    router_upnp: bool,
    upnp: bool,
    wait_for: fn(&NatReport) -> bool,
) -> Seen {
    let mut t = Topology::new().seed(11);
    let s1 = t.public_host("s1");
    let s2 = t.public_host("s2");
    let home = t.router("home", preset);
    t.set_upnp(home, router_upnp);
    let pc = t.host("pc", home);
    let addrs = [
        SocketAddr::from((t.ip(s1), PORT)),
        SocketAddr::from((t.ip(s2), PORT)),
    ];
    let (wan, lan_ip) = (t.wan_ip(home), t.ip(pc));
    let keys = [[1u8; 32], [2u8; 32], [3u8; 32]];
    let ids: Vec<_> = keys
        .iter()
        .map(|k| SecretId::from_bytes(k).peer_id())
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let net = Network::start(&t).unwrap();
    let mut servers = Vec::new();
    for (host, key) in [(s1, keys[0]), (s2, keys[1])] {
        let done = done.clone();
        servers.push(
            net.spawn(host, move || async move {
                let (service, _events) = Service::start(config(false), SecretId::from_bytes(&key))
                    .await
                    .unwrap();
                while !done.load(Ordering::Acquire) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                service.shutdown().await;
            })
            .unwrap(),
        );
    }
    let pc_key = keys[2];
    let (s1_id, s2_id) = (ids[0], ids[1]);
    let (report_tx, report_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let task = net
        .spawn(pc, move || async move {
            let (service, _events) = Service::start(config(upnp), SecretId::from_bytes(&pc_key))
                .await
                .unwrap();
            // The servers start alongside us: retry until they listen.
            for (id, addr) in [(s1_id, addrs[0]), (s2_id, addrs[1])] {
                let mut tries = 0;
                while let Err(e) = service.connect(id, &[addr]).await {
                    tries += 1;
                    assert!(tries < 50, "cannot reach {addr}: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            let start = Instant::now();
            let mut report = service.nat_report();
            while !wait_for(&report) && start.elapsed() < Duration::from_secs(20) {
                tokio::time::sleep(Duration::from_millis(50)).await;
                report = service.nat_report();
            }
            report_tx.send(report).unwrap();
            // Wait until the test has looked at the router.
            while stop_rx.try_recv().is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            service.shutdown().await;
        })
        .unwrap();
    let report = report_rx.recv().unwrap();
    let forwards_running = net.port_forwards(home).unwrap().len();
    stop_tx.send(()).unwrap();
    task.join().unwrap();
    let forwards_after = net.port_forwards(home).unwrap().len();
    done.store(true, Ordering::Release);
    for s in servers {
        s.join().unwrap();
    }
    net.shutdown();
    Seen {
        report,
        wan,
        lan_ip,
        forwards_running,
        forwards_after,
    }
}

fn two_echoes(r: &NatReport) -> bool {
    r.udp_observations.len() >= 2
}

#[test]
fn behind_a_port_restricted_cone_the_external_address_is_learnt() {
    if !prerequisites(&[]) {
        return;
    }
    let seen = learn(NatPreset::PortRestrictedCone, false, false, two_echoes);
    let r = &seen.report;
    assert_eq!(
        r.udp_external,
        Some(SocketAddr::from((seen.wan, PORT))),
        "{r:?}"
    );
    assert_eq!(r.mapping, Mapping::EndpointIndependent, "{r:?}");
    assert_eq!(r.port_allocation, PortAllocation::Preserved, "{r:?}");
    assert_eq!(r.local_udp, vec![SocketAddr::from((seen.lan_ip, PORT))]);
    // TCP echoes: both servers saw our connections leave from the
    // listener's port, which the NAT preserved.
    assert_eq!(
        r.tcp_observed,
        vec![SocketAddr::from((seen.wan, PORT))],
        "{r:?}"
    );
    assert!(r.upnp.is_none());
}

#[test]
fn a_sequential_symmetric_nat_is_recognised_and_its_ports_predicted() {
    if !prerequisites(&[]) {
        return;
    }
    let seen = learn(NatPreset::Symmetric, false, false, two_echoes);
    let r = &seen.report;
    assert_eq!(r.mapping, Mapping::EndpointDependent, "{r:?}");
    assert_eq!(
        r.port_allocation,
        PortAllocation::Sequential { delta: 1 },
        "{r:?}"
    );
    assert!(
        r.udp_observations
            .iter()
            .all(|o| o.observed.ip() == seen.wan)
    );
    let highest = r
        .udp_observations
        .iter()
        .map(|o| o.observed.port())
        .max()
        .unwrap();
    assert_eq!(
        r.predicted_udp(2),
        vec![
            SocketAddr::from((seen.wan, highest + 1)),
            SocketAddr::from((seen.wan, highest + 2))
        ]
    );
}

#[test]
fn a_random_symmetric_nat_is_recognised() {
    if !prerequisites(&[]) {
        return;
    }
    let seen = learn(NatPreset::SymmetricRandom, false, false, two_echoes);
    let r = &seen.report;
    assert_eq!(r.mapping, Mapping::EndpointDependent, "{r:?}");
    assert_eq!(r.port_allocation, PortAllocation::Random, "{r:?}");
    assert!(r.predicted_udp(4).is_empty());
}

#[test]
fn upnp_maps_both_ports_on_the_simulated_igd_and_removes_them_on_shutdown() {
    if !prerequisites(&[]) {
        return;
    }
    let seen = learn(NatPreset::Symmetric, true, true, |r| {
        r.upnp
            .as_ref()
            .is_some_and(|m| m.udp.is_some() && m.tcp.is_some())
    });
    let mapping = seen.report.upnp.clone().expect("a UPnP mapping");
    assert_eq!(mapping.external_ip, std::net::IpAddr::V4(seen.wan));
    assert_eq!(mapping.udp, Some(SocketAddr::from((seen.wan, PORT))));
    assert_eq!(mapping.tcp, Some(SocketAddr::from((seen.wan, PORT))));
    assert_eq!(seen.forwards_running, 2);
    assert_eq!(seen.forwards_after, 0, "mappings left after shutdown");
}

#[test]
fn without_upnp_in_the_config_no_mapping_is_asked_for() {
    if !prerequisites(&[]) {
        return;
    }
    // UPnP on the router, off in crust: wait for the echoes, then check.
    let seen = learn(NatPreset::PortRestrictedCone, true, false, two_echoes);
    assert!(seen.report.upnp.is_none());
    assert_eq!(seen.forwards_running, 0);
}
