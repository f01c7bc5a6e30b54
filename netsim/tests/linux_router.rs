//! The real Linux router: kernel nftables masquerade and the real
//! `miniupnpd`, with a UPnP port mapping made from a LAN host by `upnpc`.

// Helpers outside #[test] functions panic on failure too.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use netsim::{Network, Topology};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[test]
fn linux_router_masquerades_and_miniupnpd_maps_a_port() {
    if !common::prerequisites(&["nft", "miniupnpd", "upnpc"]) {
        return;
    }
    let mut t = Topology::new();
    let r = t.linux_router("kernel-gw", None, true);
    let pc = t.host("pc", r);
    let web = t.public_host("web");
    let wan = t.wan_ip(r);
    let pc_ip = t.ip(pc);
    let web_ip = t.ip(web);
    let net = Network::start(&t).unwrap();

    // Outbound: the public host sees the router's WAN address.
    let seen = net
        .spawn(web, || async {
            let l = TcpListener::bind("0.0.0.0:80").await.unwrap();
            let (mut c, from) = l.accept().await.unwrap();
            c.write_all(b"hi").await.unwrap();
            from.ip()
        })
        .unwrap();
    let got = net
        .spawn(pc, move || async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut c = TcpStream::connect((web_ip, 80)).await.unwrap();
            let mut b = [0u8; 2];
            c.read_exact(&mut b).await.unwrap();
            b
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(&got, b"hi");
    assert_eq!(seen.join().unwrap(), wan);

    // Unsolicited inbound is dropped by the stateful filter.
    let unsolicited = net
        .spawn(web, move || async move {
            tokio::time::timeout(Duration::from_millis(500), TcpStream::connect((wan, 18080)))
                .await
                .is_ok_and(|r| r.is_ok())
        })
        .unwrap()
        .join()
        .unwrap();
    assert!(!unsolicited);

    // The LAN host asks miniupnpd (found by SSDP) for a mapping.
    let listener = net
        .spawn(pc, || async {
            let l = TcpListener::bind("0.0.0.0:8080").await.unwrap();
            let (mut c, _) = tokio::time::timeout(Duration::from_secs(20), l.accept())
                .await
                .unwrap()
                .unwrap();
            c.write_all(b"mapped").await.unwrap();
        })
        .unwrap();
    // miniupnpd needs a moment to start listening.
    let mut ok = false;
    let mut last = String::new();
    for _ in 0..10 {
        let out = net
            .command(
                pc,
                std::process::Command::new("upnpc")
                    // -i: miniupnpc calls an IGD whose WAN address is in a
                    // reserved (documentation) range "not connected".
                    .args([
                        "-i",
                        "-e",
                        "netsim",
                        "-a",
                        &pc_ip.to_string(),
                        "8080",
                        "18080",
                        "TCP",
                    ])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped()),
            )
            .unwrap()
            .wait_with_output()
            .unwrap();
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() && last.contains("is redirected to internal") {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(ok, "upnpc failed: {last}");
    assert!(
        last.contains(&format!("ExternalIPAddress = {wan}")),
        "{last}"
    );
    let reply = net
        .spawn(web, move || async move {
            let mut c = TcpStream::connect((wan, 18080)).await.unwrap();
            let mut s = String::new();
            c.read_to_string(&mut s).await.unwrap();
            s
        })
        .unwrap()
        .join()
        .unwrap();
    listener.join().unwrap();
    assert_eq!(reply, "mapped");
    let mut nft = net
        .router_command(
            r,
            std::process::Command::new("nft")
                .args(["list", "chain", "inet", "filter", "prerouting_miniupnpd"])
                .stdout(std::process::Stdio::piped()),
        )
        .unwrap();
    let mut rules = String::new();
    std::io::Read::read_to_string(nft.stdout.as_mut().unwrap(), &mut rules).unwrap();
    nft.wait().unwrap();
    assert!(rules.contains("18080"), "{rules}");
}

/// igd-next, the client crust uses, against the real miniupnpd.
#[test]
fn igd_next_client_works_against_real_miniupnpd() {
    if !common::prerequisites(&["nft", "miniupnpd"]) {
        return;
    }
    let mut t = Topology::new();
    let r = t.linux_router("real-gw", None, true);
    let pc = t.host("pc", r);
    let wan = t.wan_ip(r);
    let pc_ip = t.ip(pc);
    let net = Network::start(&t).unwrap();
    let result = net
        .spawn(pc, move || async move {
            tokio::task::spawn_blocking(move || {
                let mut last = String::new();
                // miniupnpd may still be starting: retry the search.
                for _ in 0..10 {
                    let mut opts = igd_next::SearchOptions::default();
                    opts.timeout = Some(Duration::from_secs(1));
                    match igd_next::search_gateway(opts) {
                        Ok(gw) => {
                            let ext = gw
                                .get_external_ip()
                                .map_err(|e| format!("external ip: {e}"))?;
                            let local = std::net::SocketAddr::from((pc_ip, 4000));
                            gw.add_port(
                                igd_next::PortMappingProtocol::UDP,
                                19090,
                                local,
                                600,
                                "crust",
                            )
                            .map_err(|e| format!("add: {e}"))?;
                            return Ok(ext);
                        }
                        Err(e) => last = e.to_string(),
                    }
                }
                Err(format!("search: {last}"))
            })
            .await
            .unwrap()
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(result.unwrap(), std::net::IpAddr::V4(wan));
    let out = net
        .router_command(
            r,
            std::process::Command::new("nft")
                .args(["list", "chain", "inet", "filter", "prerouting_miniupnpd"])
                .stdout(std::process::Stdio::piped()),
        )
        .unwrap()
        .wait_with_output()
        .unwrap();
    let rules = String::from_utf8_lossy(&out.stdout);
    assert!(
        rules.contains("19090") && rules.contains(&pc_ip.to_string()),
        "{rules}"
    );
}
