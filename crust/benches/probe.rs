//! Router-probe duration behind every netsim NAT preset (plus a simulated
//! UPnP IGD): one probe at a time against a probe server with two
//! addresses, `PROBE_RUNS` times each (default 3), printing min / median /
//! max of the probe's own duration and the classification.
//!
//! Goal: classification under 10 s. Run as root:
//! `cargo bench -p crust --bench probe`.
#![allow(clippy::unwrap_used)]

#[cfg(target_os = "linux")]
#[path = "../tests/nat_common/mod.rs"]
mod nat_common;

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("the probe bench needs netsim, which is Linux only");
}

#[cfg(target_os = "linux")]
fn main() {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use crust::probe::{ProbeConfig, ProbeServer, probe};
    use netsim::{NatPreset, Network, Topology};

    if !nat_common::prerequisites(&[]) {
        return;
    }
    let quick = !std::env::args().any(|a| a == "--bench");
    let runs: usize = std::env::var("PROBE_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if quick { 1 } else { 3 });
    let mut t = Topology::new().seed(5);
    let srv = t.public_host_with_addrs("srv", 2);
    let mut clients = Vec::new();
    for preset in NatPreset::ALL {
        let r = t.router(preset.name(), preset);
        clients.push((preset.name(), t.host(&format!("pc-{}", preset.name()), r)));
    }
    let r = t.router("upnp-gw", NatPreset::FullCone);
    t.set_upnp(r, true);
    clients.push(("full_cone+upnp", t.host("pc-upnp", r)));
    if quick {
        clients.truncate(2);
    }
    let addrs = t.addrs(srv);
    let primary = SocketAddr::from((addrs[0], 3478));
    let alternate = SocketAddr::from((addrs[1], 3479));
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
    println!("probe duration per preset, {runs} runs each (default ProbeConfig)");
    println!(
        "{:<22} {:>8} {:>8} {:>8}  class",
        "router", "min s", "median s", "max s"
    );
    for (name, host) in clients {
        let mut times = Vec::new();
        let mut class = String::new();
        for _ in 0..runs {
            let report = net
                .spawn(host, move || async move {
                    probe(&ProbeConfig::new(vec![primary])).await.unwrap()
                })
                .unwrap()
                .join()
                .unwrap();
            times.push(report.duration_ms as f64 / 1000.0);
            class = report.findings.nat_class();
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{name:<22} {:>8.2} {:>8.2} {:>8.2}  {class}",
            times[0],
            times[times.len() / 2],
            times[times.len() - 1]
        );
    }
    done.store(true, Ordering::Release);
    server.join().unwrap();
    net.shutdown();
}
