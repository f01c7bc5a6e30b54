//! Link impairment measured from inside hosts: loss rate, latency and jitter
//! distribution, bandwidth, and fates that repeat under one seed.
// Helpers outside #[test] functions panic on failure too.
#![allow(clippy::unwrap_used, clippy::type_complexity)]

mod common;

use std::time::{Duration, Instant};

use netsim::{GilbertElliott, Impairment, LinkConfig, Network, Topology};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

/// Sends `n` numbered datagrams from a fixed port over a link with `imp` on
/// the sender's uplink; returns the sequence numbers received (in order of
/// arrival) and the link counters.
fn blast(imp: Impairment, seed: u64, n: u32) -> (Vec<u32>, netsim::LinkStats) {
    blast_logged(imp, seed, n, None)
}

fn blast_logged(
    imp: Impairment,
    seed: u64,
    n: u32,
    log: Option<&std::path::Path>,
) -> (Vec<u32>, netsim::LinkStats) {
    let mut t = Topology::new().seed(seed);
    if let Some(p) = log {
        t = t.fate_log(p);
    }
    let a = t.public_host("sender");
    let b = t.public_host("receiver");
    t.set_link(
        a,
        LinkConfig {
            up: imp,
            down: Impairment::none(),
        },
    );
    let b_ip = t.ip(b);
    let net = Network::start(&t).unwrap();
    let rx = net
        .spawn(b, || async {
            let s = UdpSocket::bind("0.0.0.0:9000").await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            while let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(500), s.recv(&mut buf)).await
            {
                if n == 4 {
                    got.push(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
                }
            }
            got
        })
        .unwrap();
    net.spawn(a, move || async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let s = UdpSocket::bind("0.0.0.0:9001").await.unwrap();
        for i in 0..n {
            s.send_to(&i.to_be_bytes(), (b_ip, 9000)).await.unwrap();
            if i % 20 == 19 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    })
    .unwrap()
    .join()
    .unwrap();
    let got = rx.join().unwrap();
    let stats = net.shutdown();
    (got, stats.link("sender").unwrap().up)
}

#[test]
fn random_and_bursty_loss_rates_are_as_configured() {
    if !common::prerequisites(&[]) {
        return;
    }
    let n = 4000;
    let (got, st) = blast(Impairment::none().loss(0.1), 1, n);
    let rate = 1.0 - got.len() as f64 / f64::from(n);
    assert!((rate - 0.1).abs() < 0.02, "random loss {rate}");
    assert_eq!(st.dropped_loss as usize, n as usize - got.len());
    let ge = GilbertElliott {
        p_good_to_bad: 0.02,
        p_bad_to_good: 0.2,
        loss_in_bad: 1.0,
        loss_in_good: 0.0,
    };
    let n = 12_000;
    let (got, st) = blast(Impairment::none().burst_loss(ge), 1, n);
    let rate = 1.0 - got.len() as f64 / f64::from(n);
    assert_eq!(st.dropped_loss as usize, n as usize - got.len());
    assert!(
        (rate - ge.mean_loss()).abs() < 0.03,
        "burst loss {rate} vs {}",
        ge.mean_loss()
    );
    // Losses come in bursts: count gaps and their mean length.
    let mut gaps = Vec::new();
    for w in got.windows(2) {
        if w[1] > w[0] + 1 {
            gaps.push(w[1] - w[0] - 1);
        }
    }
    let mean = f64::from(gaps.iter().sum::<u32>()) / gaps.len() as f64;
    assert!(mean > 3.0, "mean burst length {mean} (expected about 5)");
}

#[test]
fn same_seed_same_fates_different_seed_different_fates() {
    if !common::prerequisites(&[]) {
        return;
    }
    let imp = Impairment::none().loss(0.2).duplicate(0.05);
    let (a, _) = blast(imp.clone(), 42, 600);
    let (b, _) = blast(imp.clone(), 42, 600);
    let (c, _) = blast(imp, 43, 600);
    let set = |v: &Vec<u32>| {
        let mut v = v.clone();
        v.sort();
        v
    };
    assert_eq!(
        set(&a),
        set(&b),
        "same seed, same packets lost and duplicated"
    );
    assert_ne!(set(&a), set(&c));
    assert!(set(&a).windows(2).any(|w| w[0] == w[1]), "some duplicates");
}

#[test]
fn latency_and_jitter_distribution() {
    if !common::prerequisites(&[]) {
        return;
    }
    for reorder in [true, false] {
        let mut t = Topology::new().seed(2);
        let a = t.public_host("a");
        let b = t.public_host("b");
        t.set_link(
            a,
            LinkConfig {
                up: Impairment::none()
                    .latency(Duration::from_millis(10))
                    .jitter(Duration::from_millis(10), reorder),
                down: Impairment::none(),
            },
        );
        let b_ip = t.ip(b);
        let [rtts, order] = netsim::run(
            &t,
            [
                netsim::host(move || async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let s = UdpSocket::bind("0.0.0.0:0").await.unwrap();
                    let mut rtts = Vec::new();
                    let mut buf = [0u8; 8];
                    for i in 0..200u32 {
                        let t0 = Instant::now();
                        s.send_to(&i.to_be_bytes(), (b_ip, 7)).await.unwrap();
                        tokio::time::timeout(Duration::from_secs(2), s.recv(&mut buf))
                            .await
                            .unwrap()
                            .unwrap();
                        rtts.push(t0.elapsed().as_secs_f64() * 1000.0);
                    }
                    // A burst of 200 back-to-back packets to see reordering.
                    for i in 0..200u32 {
                        s.send_to(&(1000 + i).to_be_bytes(), (b_ip, 7))
                            .await
                            .unwrap();
                    }
                    rtts
                }),
                netsim::host(|| async {
                    let s = UdpSocket::bind("0.0.0.0:7").await.unwrap();
                    let mut buf = [0u8; 8];
                    let mut order = Vec::new();
                    for _ in 0..400 {
                        let (n, f) = s.recv_from(&mut buf).await.unwrap();
                        let v = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                        if v < 1000 {
                            s.send_to(&buf[..n], f).await.unwrap();
                        } else {
                            order.push(f64::from(v));
                        }
                    }
                    order
                }),
            ],
        )
        .unwrap();
        let mean = rtts.iter().sum::<f64>() / rtts.len() as f64;
        let min = rtts.iter().cloned().fold(f64::MAX, f64::min);
        // One-way 10 ms + U(0, 10) ms: RTT at least 10 ms, mean near 15 ms.
        assert!(min >= 10.0, "min {min}");
        assert!((13.5..20.0).contains(&mean), "mean {mean}");
        let below_15 = rtts.iter().filter(|r| **r < 15.3).count();
        assert!(
            (60..140).contains(&below_15),
            "about half below the median: {below_15}"
        );
        let reordered = order.windows(2).filter(|w| w[1] < w[0]).count();
        if reorder {
            assert!(reordered > 10, "jitter reorders: {reordered}");
        } else {
            assert_eq!(reordered, 0, "jitter without reordering keeps order");
        }
    }
}

#[test]
fn bandwidth_limit_and_bounded_queue() {
    if !common::prerequisites(&[]) {
        return;
    }
    let mut t = Topology::new();
    let a = t.public_host("a");
    let b = t.public_host("b");
    // 40 Mbit/s towards b, a 64 KB queue.
    t.set_link(
        b,
        LinkConfig {
            up: Impairment::none(),
            down: Impairment::none().rate(40_000_000, 64 * 1024),
        },
    );
    let b_ip = t.ip(b);
    let net = Network::start(&t).unwrap();
    let rx = net
        .spawn(b, || async {
            let l = tokio::net::TcpListener::bind("0.0.0.0:80").await.unwrap();
            let (mut c, _) = l.accept().await.unwrap();
            let t0 = Instant::now();
            let mut total = 0usize;
            let mut buf = vec![0u8; 65536];
            loop {
                let n = c.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                total += n;
            }
            total as f64 * 8.0 / t0.elapsed().as_secs_f64()
        })
        .unwrap();
    net.spawn(a, move || async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut c = tokio::net::TcpStream::connect((b_ip, 80)).await.unwrap();
        c.write_all(&vec![1u8; 6_000_000]).await.unwrap();
    })
    .unwrap()
    .join()
    .unwrap();
    let bps = rx.join().unwrap();
    let stats = net.shutdown();
    assert!(bps < 40_000_000.0 * 1.05, "goodput {bps} above the limit");
    assert!(
        bps > 40_000_000.0 * 0.6,
        "goodput {bps} far below the limit"
    );
    assert!(
        stats.link("b").unwrap().down.dropped_queue > 0,
        "TCP filled the queue and lost packets to tail drop"
    );
}

#[test]
fn fate_logs_are_identical_across_runs_with_one_seed() {
    if !common::prerequisites(&[]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let imp = Impairment::none()
        .loss(0.1)
        .duplicate(0.05)
        .jitter(Duration::from_millis(3), true);
    let run = |seed: u64, i: usize| {
        let p = dir.path().join(format!("fates-{seed}-{i}.jsonl"));
        blast_logged(imp.clone(), seed, 300, Some(&p));
        let text = std::fs::read_to_string(&p).unwrap();
        // The sender's uplink only: other links carry nothing random here.
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| l.contains("\"link\":\"sender\""))
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    };
    let first = run(42, 0);
    assert_eq!(first.len(), 300);
    assert!(first.iter().any(|l| l.contains("\"fate\":\"lost\"")));
    assert!(
        first
            .iter()
            .any(|l| l.contains("\"duplicate_ns\":") && !l.contains("\"duplicate_ns\":null"))
    );
    for i in 1..3 {
        assert_eq!(run(42, i), first, "run {i} differs under the same seed");
    }
    assert_ne!(run(43, 0), first);
}
