//! UPnP IGD on the simulated NAT router, driven by the miniupnpc client:
//! SSDP discovery, AddPortMapping, listing, DeletePortMapping, and the
//! mapping's effect on real traffic.

// Helpers outside #[test] functions panic on failure too.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use netsim::{HostId, NatPreset, Network, Topology};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn upnpc(net: &Network, host: HostId, args: &[&str]) -> (bool, String) {
    // -i: miniupnpc calls an IGD whose WAN address is in a reserved
    // (documentation) range "not connected" and stops without it.
    let out = net
        .command(
            host,
            Command::new("upnpc")
                .arg("-i")
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .unwrap()
        .wait_with_output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn reachable(net: &Network, from: HostId, to: (std::net::Ipv4Addr, u16)) -> bool {
    net.spawn(from, move || async move {
        match tokio::time::timeout(Duration::from_millis(700), TcpStream::connect(to)).await {
            Ok(Ok(mut c)) => {
                let mut s = String::new();
                c.read_to_string(&mut s).await.is_ok() && s == "mapped"
            }
            _ => false,
        }
    })
    .unwrap()
    .join()
    .unwrap()
}

#[test]
fn simulated_igd_maps_lists_and_deletes_ports() {
    if !common::prerequisites(&["upnpc"]) {
        return;
    }
    let mut t = Topology::new();
    let r = t.router("home", NatPreset::PortRestrictedCone);
    t.set_upnp(r, true);
    let pc = t.host("pc", r);
    let web = t.public_host("web");
    let wan = t.wan_ip(r);
    let pc_ip = t.ip(pc).to_string();
    let net = Network::start(&t).unwrap();
    let server = net
        .spawn(pc, || async {
            let l = TcpListener::bind("0.0.0.0:8080").await.unwrap();
            loop {
                let (mut c, from) = l.accept().await.unwrap();
                if from.ip().is_loopback() {
                    return; // the test is done
                }
                c.write_all(b"mapped").await.unwrap();
            }
        })
        .unwrap();
    assert!(
        !reachable(&net, web, (wan, 18080)),
        "filtered before the mapping"
    );

    let (ok, out) = upnpc(
        &net,
        pc,
        &["-e", "netsim test", "-a", &pc_ip, "8080", "18080", "TCP"],
    );
    assert!(ok, "{out}");
    assert!(out.contains(&format!("ExternalIPAddress = {wan}")), "{out}");
    assert!(out.contains("is redirected to internal"), "{out}");
    let forwards = net.port_forwards(r).unwrap();
    assert_eq!(forwards.len(), 1);
    assert_eq!(
        (forwards[0].protocol, forwards[0].external_port),
        ("tcp", 18080)
    );
    assert!(
        reachable(&net, web, (wan, 18080)),
        "mapped port reachable from the internet"
    );

    // A conflicting mapping to another client is refused.
    let (_, out) = upnpc(&net, pc, &["-a", "192.168.1.99", "9000", "18080", "TCP"]);
    assert!(out.contains("718") || out.contains("Conflict"), "{out}");

    let (ok, out) = upnpc(&net, pc, &["-l"]);
    assert!(
        ok && out.contains("18080") && out.contains("netsim test"),
        "{out}"
    );

    let (ok, out) = upnpc(&net, pc, &["-d", "18080", "TCP"]);
    assert!(ok, "{out}");
    assert!(net.port_forwards(r).unwrap().is_empty());
    assert!(
        !reachable(&net, web, (wan, 18080)),
        "filtered again after deletion"
    );

    net.spawn(pc, || async {
        TcpStream::connect(("127.0.0.1", 8080)).await.unwrap();
    })
    .unwrap()
    .join()
    .unwrap();
    server.join().unwrap();
}

/// The client crust uses, igd-next, against the simulated IGD: search,
/// external address, AddAnyPortMapping, AddPortMapping, removal.
#[test]
fn igd_next_client_works_against_the_simulated_igd() {
    if !common::prerequisites(&[]) {
        return;
    }
    let mut t = Topology::new();
    let r = t.router("home", NatPreset::Symmetric);
    t.set_upnp(r, true);
    let pc = t.host("pc", r);
    let wan = t.wan_ip(r);
    let pc_ip = t.ip(pc);
    let net = Network::start(&t).unwrap();
    let result = net
        .spawn(pc, move || async move {
            tokio::task::spawn_blocking(move || {
                // SSDP is one UDP datagram each way; like real clients,
                // ask again if no answer came (a loaded CI machine can be
                // slow to schedule the router thread).
                let mut found = Err(String::new());
                for _ in 0..3 {
                    let mut opts = igd_next::SearchOptions::default();
                    opts.timeout = Some(Duration::from_secs(3));
                    found = igd_next::search_gateway(opts).map_err(|e| format!("search: {e}"));
                    if found.is_ok() {
                        break;
                    }
                }
                let gw = found?;
                let ext = gw
                    .get_external_ip()
                    .map_err(|e| format!("external ip: {e}"))?;
                let local = std::net::SocketAddr::from((pc_ip, 4000));
                let any = gw
                    .add_any_port(igd_next::PortMappingProtocol::UDP, local, 600, "crust")
                    .map_err(|e| format!("add any: {e}"))?;
                gw.add_port(
                    igd_next::PortMappingProtocol::TCP,
                    24000,
                    local,
                    600,
                    "crust",
                )
                .map_err(|e| format!("add: {e}"))?;
                gw.remove_port(igd_next::PortMappingProtocol::TCP, 24000)
                    .map_err(|e| format!("remove: {e}"))?;
                Ok::<_, String>((ext, any))
            })
            .await
            .unwrap()
        })
        .unwrap()
        .join()
        .unwrap();
    let (ext, any) = result.unwrap();
    assert_eq!(ext, std::net::IpAddr::V4(wan));
    let forwards = net.port_forwards(r).unwrap();
    assert_eq!(forwards.len(), 1, "{forwards:?}");
    assert_eq!(
        (forwards[0].protocol, forwards[0].external_port),
        ("udp", any)
    );
    assert_eq!(
        forwards[0].internal,
        std::net::SocketAddrV4::new(pc_ip, 4000)
    );
}
