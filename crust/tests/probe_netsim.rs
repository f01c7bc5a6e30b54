//! The router probe behind every netsim NAT preset, a simulated UPnP IGD,
//! a home NAT behind a carrier-grade NAT, and a real Linux router with
//! `miniupnpd`: the probe's classification matches each router's
//! configuration; and the binding-lifetime test against a NAT whose UDP
//! mappings expire after 2 s idle. One network, all probes at once, so the whole test takes
//! about as long as one probe.
//!
//! Needs root and /dev/net/tun (and miniupnpd and nft for the Linux
//! router): without them it prints why and passes, except under `CI=true`,
//! where a missing prerequisite fails it.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)]

mod nat_common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crust::probe::{
    Behaviour, Findings, Ports, ProbeConfig, ProbeReport, ProbeServer, SynAnswer, UdpReach, probe,
};
use nat_common::prerequisites;
use netsim::{NatConfig, NatPreset, Network, Topology, Unsolicited};

const PORT: u16 = 3478;

fn check(name: &str, f: &Findings) {
    use Behaviour::*;
    let eim = Some(EndpointIndependent);
    let apd = Some(AddressAndPortDependent);
    let expect = |mapping, filtering, ports, hairpin| {
        assert_eq!(f.udp, UdpReach::Reachable, "{name}");
        assert_eq!(f.mapping, mapping, "{name}: mapping");
        assert_eq!(f.filtering, filtering, "{name}: filtering");
        assert_eq!(f.ports, ports, "{name}: ports");
        if let Some(h) = hairpin {
            assert_eq!(f.hairpinning, Some(h), "{name}: hairpinning");
        }
        assert_eq!(f.tcp.outgoing, Some(true), "{name}: TCP");
    };
    let preserved = Some(Ports::Preserved);
    match name {
        "open" => {
            expect(eim, Some(EndpointIndependent), preserved, Some(true));
            assert_eq!(f.behind_nat, Some(false), "{name}");
            assert_eq!(f.cgnat, Some(false), "{name}");
            // No NAT: the host's own kernel refuses the stray SYN.
            assert_eq!(f.tcp.unsolicited_syn, Some(SynAnswer::Rst), "{name}");
        }
        "full_cone" | "restricted_cone" | "port_restricted_cone" => {
            let filtering = match name {
                "full_cone" => EndpointIndependent,
                "restricted_cone" => AddressDependent,
                _ => AddressAndPortDependent,
            };
            expect(eim, Some(filtering), preserved, Some(true));
            assert_eq!(f.behind_nat, Some(true), "{name}");
            assert_eq!(f.tcp.unsolicited_syn, Some(SynAnswer::Dropped), "{name}");
            assert_eq!(f.upnp.present, Some(false), "{name}");
            // Whether the SYNs cross in time varies from run to run; that
            // the test ran does not.
            assert!(f.tcp.simultaneous_open.is_some(), "{name}");
        }
        "rst" => {
            expect(eim, apd, preserved, Some(true));
            assert_eq!(f.tcp.unsolicited_syn, Some(SynAnswer::Rst), "{name}");
        }
        "lifetime" => {
            expect(eim, apd, preserved, Some(true));
            let l = f.lifetime.unwrap();
            assert_eq!(
                (l.at_least_secs, l.below_secs),
                (1, Some(4)),
                "{name}: mappings idle 2 s expire"
            );
        }
        "symmetric" => {
            expect(apd, apd, Some(Ports::Sequential { delta: 1 }), Some(false));
            assert_eq!(f.tcp.simultaneous_open, Some(false), "{name}");
        }
        "symmetric_random" => expect(apd, apd, Some(Ports::Random), Some(false)),
        "cgnat" => {
            expect(eim, apd, Some(Ports::Random), Some(true));
            assert_eq!(f.cgnat, Some(true), "{name}: on a 100.64/10 LAN");
        }
        "udp_blocked" => {
            assert_eq!(f.udp, UdpReach::Blocked, "{name}");
            assert_eq!((f.mapping, f.filtering), (None, None), "{name}");
            assert_eq!(f.tcp.outgoing, Some(true), "{name}: TCP still works");
        }
        "upnp" => {
            expect(eim, Some(EndpointIndependent), preserved, Some(true));
            assert_eq!(f.upnp.present, Some(true), "{name}");
            assert_eq!(f.upnp.mapped, Some(true), "{name}");
            assert_eq!(f.upnp.reachable, Some(true), "{name}");
            assert_eq!(
                f.cgnat,
                Some(false),
                "{name}: the gateway's address is ours"
            );
        }
        "behind_cgnat" => {
            expect(eim, apd, Some(Ports::Random), None);
            assert_eq!(f.upnp.present, Some(true), "{name}");
            assert_eq!(
                f.upnp.reachable,
                Some(false),
                "{name}: the CGNAT is in the way"
            );
            assert_eq!(f.cgnat, Some(true), "{name}");
        }
        "linux" => {
            expect(eim, apd, preserved, None);
            assert_eq!(f.upnp.present, Some(true), "{name}: miniupnpd");
            assert_eq!(f.upnp.reachable, Some(true), "{name}");
        }
        other => panic!("no expectation for {other}"),
    }
}

#[test]
fn probe_classifies_every_router() {
    if !prerequisites(&[]) {
        return;
    }
    let linux = nat_common::has_tool("miniupnpd") && nat_common::has_tool("nft");
    if !linux {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "miniupnpd and nft are needed for the Linux router case"
        );
        eprintln!("skipping the Linux router case: miniupnpd or nft missing");
    }
    let mut t = Topology::new().seed(5);
    let srv = t.public_host_with_addrs("srv", 2);
    let mut clients = Vec::new();
    for preset in NatPreset::ALL {
        let r = t.router(preset.name(), preset);
        clients.push((preset.name(), t.host(&format!("pc-{}", preset.name()), r)));
    }
    let r = t.router("upnp-gw", NatPreset::FullCone);
    t.set_upnp(r, true);
    clients.push(("upnp", t.host("pc-upnp", r)));
    let r = t.router_with(
        "rst-gw",
        Some(NatConfig::port_restricted_cone().tcp_unsolicited(Unsolicited::Rst)),
        None,
        false,
    );
    clients.push(("rst", t.host("pc-rst", r)));
    let r = t.router_with(
        "short-gw",
        Some(NatConfig::port_restricted_cone().udp_timeout(Duration::from_secs(2))),
        None,
        false,
    );
    clients.push(("lifetime", t.host("pc-lifetime", r)));
    let carrier = t.router("carrier", NatPreset::Cgnat);
    let home = t.router_behind("home", NatPreset::PortRestrictedCone, carrier);
    t.set_upnp(home, true);
    clients.push(("behind_cgnat", t.host("pc-home", home)));
    if linux {
        let r = t.linux_router("linux-gw", None, true);
        clients.push(("linux", t.host("pc-linux", r)));
    }
    let addrs = t.addrs(srv);
    let primary = SocketAddr::from((addrs[0], PORT));
    let alternate = SocketAddr::from((addrs[1], PORT + 1));

    let net = Network::start(&t).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = {
        let done = done.clone();
        net.spawn(srv, move || async move {
            let server = ProbeServer::start(primary, alternate).await.unwrap();
            ready_tx.send(()).unwrap();
            while !done.load(Ordering::Acquire) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            drop(server);
        })
        .unwrap()
    };
    ready_rx.recv_timeout(Duration::from_secs(20)).unwrap();
    let tasks: Vec<_> = clients
        .iter()
        .map(|&(name, host)| {
            let task = net
                .spawn(host, move || async move {
                    let mut config = ProbeConfig::new(vec![primary]);
                    if name == "lifetime" {
                        config.lifetime = vec![Duration::from_secs(1), Duration::from_secs(4)];
                    }
                    probe(&config).await.unwrap()
                })
                .unwrap();
            (name, task)
        })
        .collect();
    let reports: BTreeMap<&str, ProbeReport> = tasks
        .into_iter()
        .map(|(name, task)| (name, task.join().unwrap()))
        .collect();
    done.store(true, Ordering::Release);
    server.join().unwrap();
    net.shutdown();
    for (name, report) in &reports {
        eprintln!("--- {name}\n{}\n", report.summary(true));
    }
    for (name, report) in &reports {
        check(name, &report.findings);
    }
}
