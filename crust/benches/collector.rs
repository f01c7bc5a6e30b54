//! Collector ingestion: reports per second, two ways.
//!
//! 1. In process: `Collector::receive` (envelope, rate limit, validation)
//!    then `ReportStore::insert` into a fresh SQLite file, one report after
//!    the other (no batching), the way `crust-node --collector` does it.
//! 2. End to end: the real `crust-node --collector` on loopback; one tester
//!    connection sends reports as fast as crust takes them and counts the
//!    collector's answers.
//!
//! Goal: at least 1,000 reports per second.
//! Run: `cargo bench -p crust --bench collector`.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crust::probe::{
    Behaviour, Collector, Envelope, FORMAT_VERSION, Findings, Outcome, Ports, RateLimit,
    ReportStore, Submission, TcpFindings, Technique, UdpReach, UpnpFindings, predict,
};
use crust::{ChannelConfig, Config, Event, PeerId, Priority, SecretId, Service};

fn report(i: usize) -> String {
    let mut findings = Findings {
        udp: UdpReach::Reachable,
        behind_nat: Some(true),
        mapping: Some(Behaviour::EndpointIndependent),
        filtering: Some(if i.is_multiple_of(3) {
            Behaviour::AddressAndPortDependent
        } else {
            Behaviour::EndpointIndependent
        }),
        ports: Some(Ports::Preserved),
        hairpinning: Some(i.is_multiple_of(2)),
        lifetime: None,
        tcp: TcpFindings::default(),
        upnp: UpnpFindings::default(),
        cgnat: None,
        ipv6: Some(false),
        predicted: Vec::new(),
    };
    findings.predicted = predict(&findings);
    let s = Submission {
        version: FORMAT_VERSION,
        client: "bench".into(),
        findings,
        outcomes: vec![Outcome {
            peer_nat: "eim-apdf".into(),
            technique: Technique::UdpHolePunch,
            success: !i.is_multiple_of(4),
        }],
        network: Some("203.0.113.0/24".into()),
        addresses: None,
        duration_ms: 4000,
    };
    serde_json::to_string_pretty(&s).unwrap()
}

fn in_process(n: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let store = ReportStore::open(&dir.path().join("reports.db")).unwrap();
    let mut collector = Collector::new(RateLimit {
        burst: u32::MAX,
        every: Duration::from_secs(1),
    });
    let peers: Vec<PeerId> = (0..64).map(|_| SecretId::generate().peer_id()).collect();
    let messages: Vec<Vec<u8>> = (0..n)
        .map(|i| Envelope::Report { json: report(i) }.encode())
        .collect();
    let start = Instant::now();
    for (i, m) in messages.iter().enumerate() {
        let s = collector
            .receive(peers[i % peers.len()], Instant::now(), m)
            .unwrap()
            .unwrap();
        store.insert(1_700_000_000, &s).unwrap();
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    assert_eq!(store.count().unwrap(), n as u64);
    rate
}

fn end_to_end(n: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("reports.db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_crust-node"))
        .args([
            "--ephemeral",
            "--listen",
            "127.0.0.1:0",
            "--no-utp",
            "--no-upnp",
        ])
        .args(["--network", "crust-bench", "--collector-burst", "100000000"])
        .arg("--collector")
        .arg(&db)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut id, mut addr) = (None, None);
    while id.is_none() || addr.is_none() {
        let line = lines.next().unwrap().unwrap();
        if let Some(rest) = line.strip_prefix("peer id: ") {
            id = Some(rest.parse::<PeerId>().unwrap());
        }
        if let Some(rest) = line.strip_prefix("listening on tcp:") {
            addr = Some(rest.parse::<std::net::SocketAddr>().unwrap());
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    let (id, addr) = (id.unwrap(), addr.unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let rate = rt.block_on(async move {
        let config = Config {
            listen: vec![],
            channel: ChannelConfig {
                network_id: "crust-bench".into(),
                ..Default::default()
            },
            ..Config::default()
        };
        let (service, mut events) = Service::start(config, SecretId::generate()).await.unwrap();
        service.connect(id, &[addr]).await.unwrap();
        let messages: Vec<Vec<u8>> = (0..n)
            .map(|i| Envelope::Report { json: report(i) }.encode())
            .collect();
        let start = Instant::now();
        let sender = {
            let service = service.clone();
            tokio::spawn(async move {
                for m in messages {
                    service.send(&id, m, Priority::NORMAL).await.unwrap();
                }
            })
        };
        let mut accepted = 0;
        while accepted < n {
            match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
                Ok(Some(Event::NewMessage { data, .. })) => match Envelope::decode(&data) {
                    Ok(Some(Envelope::Accepted { .. })) => accepted += 1,
                    other => panic!("unexpected answer {other:?}"),
                },
                Ok(Some(_)) => {}
                other => panic!("collector went quiet after {accepted}: {other:?}"),
            }
        }
        let rate = n as f64 / start.elapsed().as_secs_f64();
        sender.await.unwrap();
        service.shutdown().await;
        rate
    });
    let _ = child.kill();
    let _ = child.wait();
    rate
}

fn main() {
    // `cargo test --benches` runs benches once with no arguments but
    // `--bench`; keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let n = if quick { 200 } else { 20_000 };
    let runs = if quick { 1 } else { 3 };
    println!(
        "collector ingestion, {n} reports of {} bytes of JSON each, {runs} runs",
        report(0).len()
    );
    for run in 0..runs {
        let a = in_process(n);
        let b = end_to_end(n);
        println!(
            "run {}: in process (validate + SQLite insert): {a:>8.0} reports/s; \
             end to end over crust (crust-node --collector): {b:>8.0} reports/s",
            run + 1
        );
    }
}
