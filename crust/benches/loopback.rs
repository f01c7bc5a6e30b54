//! Loopback figures for the foundation, each beside its baseline from the
//! same run: bulk throughput (secure service vs raw TCP), round-trip time of
//! a 100-byte message, time to a usable connection, memory per idle
//! connection.
//!
//! Run: `cargo bench -p crust --bench loopback` (add `-- --quick` for a
//! shorter run). Results are printed as a Markdown table for BENCHMARKS.md.

// A benchmark panics on any failure, like a test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crust::{Config, Event, Events, PeerId, Priority, SecretId, Service};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const CHILD_ENV: &str = "CRUST_BENCH_IDLE_CLIENTS";

fn config() -> Config {
    Config {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        send_queue_limit: 32 * 1024 * 1024,
        receive_buffer_limit: 32 * 1024 * 1024,
        channel: crust::ChannelConfig {
            network_id: "crust-bench".into(),
            ..Default::default()
        },
        ..Config::default()
    }
}

async fn node() -> (Service, Events, SocketAddr) {
    let (service, mut events) = Service::start(config(), SecretId::generate())
        .await
        .unwrap();
    let addr = match events.recv().await {
        Some(Event::ListenerStarted(endpoint)) => endpoint.addr,
        other => panic!("{other:?}"),
    };
    (service, events, addr)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

// ---------------------------------------------------------------- throughput

async fn raw_tcp_throughput(total: usize) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0;
        while got < total {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got += n;
        }
    });
    let mut s = TcpStream::connect(addr).await.unwrap();
    let chunk = vec![0x5au8; 1024 * 1024];
    let start = Instant::now();
    let mut sent = 0;
    while sent < total {
        s.write_all(&chunk).await.unwrap();
        sent += chunk.len();
    }
    reader.await.unwrap();
    total as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e9
}

async fn secure_throughput(total: usize, message: usize) -> f64 {
    let (a, mut a_events, a_addr) = node().await;
    let (b, _b_events, _) = node().await;
    b.connect(a.id(), &[a_addr]).await.unwrap();
    let payload = bytes::Bytes::from(vec![0x5au8; message]);
    let count = total / message;
    let receiver = tokio::spawn(async move {
        let mut got = 0usize;
        while got < count * message {
            match a_events.recv().await {
                Some(Event::NewMessage { data, .. }) => got += data.len(),
                Some(_) => {}
                None => panic!("events ended"),
            }
        }
    });
    let start = Instant::now();
    for _ in 0..count {
        b.send(&a.id(), payload.clone(), Priority::NORMAL)
            .await
            .unwrap();
    }
    receiver.await.unwrap();
    (count * message) as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e9
}

// ---------------------------------------------------------------------- rtt

async fn raw_tcp_rtt(rounds: usize) -> Vec<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = [0u8; 100];
        while s.read_exact(&mut buf).await.is_ok() {
            s.write_all(&buf).await.unwrap();
        }
    });
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let mut buf = [7u8; 100];
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        s.write_all(&buf).await.unwrap();
        s.read_exact(&mut buf).await.unwrap();
        samples.push(start.elapsed());
    }
    samples.sort();
    samples
}

async fn secure_rtt(rounds: usize) -> Vec<Duration> {
    let (a, mut a_events, a_addr) = node().await;
    let (b, mut b_events, _) = node().await;
    b.connect(a.id(), &[a_addr]).await.unwrap();
    let echo = a.clone();
    tokio::spawn(async move {
        while let Some(event) = a_events.recv().await {
            if let Event::NewMessage { peer, data } = event {
                echo.send(&peer, data, Priority::HIGH).await.unwrap();
            }
        }
    });
    let a_id = a.id();
    let payload = bytes::Bytes::from_static(&[7u8; 100]);
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        b.send(&a_id, payload.clone(), Priority::HIGH)
            .await
            .unwrap();
        loop {
            if let Some(Event::NewMessage { .. }) = b_events.recv().await {
                break;
            }
        }
        samples.push(start.elapsed());
    }
    samples.sort();
    samples
}

// ------------------------------------------------------------- connect time

async fn raw_tcp_connect(rounds: usize) -> Vec<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            drop(s);
        }
    });
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        let s = TcpStream::connect(addr).await.unwrap();
        samples.push(start.elapsed());
        drop(s);
    }
    samples.sort();
    samples
}

async fn secure_connect(rounds: usize) -> Vec<Duration> {
    let (a, mut a_events, a_addr) = node().await;
    tokio::spawn(async move { while a_events.recv().await.is_some() {} });
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        // A fresh identity each time, so every connect is a new connection.
        let (b, _b_events) = Service::start(
            Config {
                listen: vec![],
                ..config()
            },
            SecretId::generate(),
        )
        .await
        .unwrap();
        let start = Instant::now();
        b.connect(a.id(), &[a_addr]).await.unwrap();
        samples.push(start.elapsed());
        b.shutdown().await;
    }
    samples.sort();
    samples
}

// ----------------------------------------------------------- idle memory

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Child process: `n` services, each connected to the parent's service, then
/// idle until stdin closes.
async fn idle_clients(spec: &str) {
    let mut parts = spec.split(',');
    let addr: SocketAddr = parts.next().unwrap().parse().unwrap();
    let id: PeerId = parts.next().unwrap().parse().unwrap();
    let n: usize = parts.next().unwrap().parse().unwrap();
    let mut keep = Vec::new();
    for _ in 0..n {
        let (s, e) = Service::start(
            Config {
                listen: vec![],
                ..config()
            },
            SecretId::generate(),
        )
        .await
        .unwrap();
        s.connect(id, &[addr]).await.unwrap();
        keep.push((s, e));
    }
    println!("connected");
    let mut line = String::new();
    let _ = tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut line)).await;
}

async fn idle_memory(n: usize) -> (f64, usize) {
    let (a, mut a_events, a_addr) = node().await;
    // Warm up the allocator and runtime with one connection and its events.
    let (warm, _we) = Service::start(
        Config {
            listen: vec![],
            ..config()
        },
        SecretId::generate(),
    )
    .await
    .unwrap();
    warm.connect(a.id(), &[a_addr]).await.unwrap();
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), a_events.recv()).await
    {
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_bytes();
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(exe)
        .env(CHILD_ENV, format!("{a_addr},{},{n}", a.id()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        line
    })
    .await
    .unwrap();
    assert_eq!(line.trim(), "connected");
    // Take the connect events so none are counted as buffered memory, then
    // let a few keep-alive rounds pass.
    let mut connected = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while connected < n && Instant::now() < deadline {
        if let Ok(Some(Event::ConnectSuccess { .. })) =
            tokio::time::timeout(Duration::from_millis(100), a_events.recv()).await
        {
            connected += 1;
        }
    }
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(6) {
        let _ = tokio::time::timeout(Duration::from_millis(100), a_events.recv()).await;
    }
    let peers = a.connected_peers().await.len();
    let after = rss_bytes();
    drop(child.stdin.take());
    let _ = child.wait();
    (
        (after.saturating_sub(before)) as f64 / peers.max(1) as f64,
        peers,
    )
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        runtime.block_on(idle_clients(&spec));
        return;
    }
    // `cargo bench` passes `--bench`; ignore it.
    let quick = std::env::args().any(|a| a == "--quick");
    let total = if quick { 256 << 20 } else { 2 << 30 };
    let rounds = if quick { 2_000 } else { 20_000 };
    let connects = if quick { 100 } else { 500 };
    let idle = if quick { 200 } else { 1000 };

    // `--throughput-only`: just the bulk figures, for profiling.
    if std::env::args().any(|a| a == "--throughput-only") {
        runtime.block_on(async {
            let raw = raw_tcp_throughput(total).await;
            let secure = secure_throughput(total, 1 << 20).await;
            let small = secure_throughput(total / 8, 16 * 1024).await;
            println!("raw {raw:.2} Gbit/s, 1 MiB {secure:.2} Gbit/s, 16 KiB {small:.2} Gbit/s");
        });
        return;
    }

    runtime.block_on(async {
        // Memory first, while the allocator holds nothing from bulk runs.
        let (per_conn, peers) = idle_memory(idle).await;
        let raw = raw_tcp_throughput(total).await;
        let secure = secure_throughput(total, 1 << 20).await;
        let secure_small = secure_throughput(total / 8, 16 * 1024).await;
        let raw_rtt = raw_tcp_rtt(rounds).await;
        let sec_rtt = secure_rtt(rounds).await;
        let raw_conn = raw_tcp_connect(connects).await;
        let sec_conn = secure_connect(connects).await;

        println!("| figure | crust (secure, via Service) | baseline (raw loopback TCP) | ratio / goal |");
        println!("|---|---|---|---|");
        println!(
            "| bulk throughput, 1 MiB messages, {} MiB | {secure:.2} Gbit/s | {raw:.2} Gbit/s | {:.0}% (goal ≥ 50%) |",
            total >> 20,
            secure / raw * 100.0
        );
        println!(
            "| bulk throughput, 16 KiB messages, {} MiB | {secure_small:.2} Gbit/s | {raw:.2} Gbit/s | {:.0}% |",
            (total / 8) >> 20,
            secure_small / raw * 100.0
        );
        println!(
            "| RTT, 100-byte message, p50 ({rounds} rounds) | {} | {} | goal p50 < 100 µs |",
            micros(percentile(&sec_rtt, 0.5)),
            micros(percentile(&raw_rtt, 0.5))
        );
        println!(
            "| RTT, 100-byte message, p99 | {} | {} | |",
            micros(percentile(&sec_rtt, 0.99)),
            micros(percentile(&raw_rtt, 0.99))
        );
        println!(
            "| connect → usable, p50 ({connects} connects) | {} | {} (TCP connect only) | goal < 2 ms |",
            micros(percentile(&sec_conn, 0.5)),
            micros(percentile(&raw_conn, 0.5))
        );
        println!(
            "| connect → usable, p99 | {} | {} | |",
            micros(percentile(&sec_conn, 0.99)),
            micros(percentile(&raw_conn, 0.99))
        );
        println!(
            "| memory per idle connection (accepting side, {peers} connections, RSS delta) | {:.1} KiB | – | goal < 64 KiB |",
            per_conn / 1024.0
        );
    });
}
