//! uTP figures (issue 4), each beside its baseline from the same run:
//!
//! 1. loopback bulk throughput, one stream: `crust::utp` vs kernel TCP vs
//!    `librqbit-utp` (its default options);
//! 2. through netsim, 50 ms RTT, 1% random loss on the data direction,
//!    100 Mbit/s bottleneck with a one-BDP queue: goodput of uTP vs TCP
//!    CUBIC (set per socket; the goal's baseline) and TCP BBR (this kernel's
//!    default); every netsim TCP flow not marked BBR is CUBIC;
//! 3. through netsim, 20 Mbit/s bottleneck with a 1 s queue and 20 ms base
//!    RTT: queueing delay added by uTP alone (LEDBAT, LEDBAT++) vs TCP alone,
//!    measured by a UDP echo probe every 50 ms across the same bottleneck;
//!    then TCP's share of the link when it starts beside a running uTP flow;
//! 4. CPU time per GiB (user + sys of the whole process, both ends, during
//!    the loopback transfers) and memory per idle connection (RSS delta of a
//!    child process holding many idle connections, both ends).
//!
//! Run as root (netsim needs it): `cargo bench -p crust --bench utp`, add
//! `-- --quick` for a short run, `-- --no-netsim` for loopback and memory
//! only, `-- --only=loopback,memory,wan,delay,share` for just those
//! sections. Results are printed as Markdown tables.

// A benchmark panics on any failure, like a test.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crust::utp::UtpSocket;
use crust::utp::proto::{CongestionMode, EndpointConfig};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

const CHILD_ENV: &str = "CRUST_UTP_BENCH_IDLE";
const MIB: f64 = 1024.0 * 1024.0;
const CHUNK: usize = 256 * 1024;

fn endpoint_config(mode: CongestionMode) -> EndpointConfig {
    let mut c = EndpointConfig::default();
    c.connection.congestion = mode;
    c
}

/// CPU seconds (user + system) of this process's live threads, to the
/// nanosecond (`/proc/self/task/*/schedstat`); the loopback runtime's threads
/// live through all transfers. Falls back to `/proc/self/stat` (100 Hz).
fn cpu_seconds() -> f64 {
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        let ns: u64 = tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum();
        if ns > 0 {
            return ns as f64 / 1e9;
        }
    }
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime is field 14, stime field 15.
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

// ------------------------------------------------------------ 1. loopback

async fn pump<W: AsyncWrite + Unpin>(w: &mut W, total: usize) -> std::io::Result<()> {
    let chunk = vec![0x5au8; CHUNK];
    let mut sent = 0;
    while sent < total {
        let n = (total - sent).min(CHUNK);
        w.write_all(&chunk[..n]).await?;
        sent += n;
    }
    w.flush().await
}

async fn drain<R: AsyncRead + Unpin>(r: &mut R, total: usize, progress: &AtomicU64) {
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0;
    while got < total {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                got += n;
                progress.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Transport {
    Tcp,
    Crust,
    Librqbit,
    /// crust with its hello off (`Config::crust_hello = false`): the MTU
    /// search stays Ethernet-sized (1472-byte datagrams), as it does towards
    /// libutp or any other implementation. The default (`Crust`) announces
    /// the hello on both ends, so its DF probes find loopback's 64 KiB MTU.
    CrustNoHello,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "kernel TCP",
            Transport::Crust => {
                "crust::utp (LEDBAT, defaults: both ends crust, 64 KiB packets on loopback)"
            }
            Transport::Librqbit => "librqbit-utp 0.7",
            Transport::CrustNoHello => {
                "crust::utp (LEDBAT, hello off: Ethernet-sized packets, as towards libutp)"
            }
        }
    }
}

/// One loopback transfer: MiB/s, CPU seconds, or `Err(bytes received)` if
/// it stalled.
struct Transfer {
    mib_s: f64,
    cpu_per_gib: f64,
    stalled_at: Option<u64>,
}

async fn loopback_transfer(t: Transport, total: usize, limit: Duration) -> Transfer {
    let progress = Arc::new(AtomicU64::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let (rx, tx) = match t {
        Transport::Tcp => {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let p = progress.clone();
            let rx = tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                drain(&mut s, total, &p).await;
            });
            let d = done.clone();
            let tx = tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                let _ = pump(&mut s, total).await;
                d.notified().await;
            });
            (rx, tx)
        }
        Transport::Crust | Transport::CrustNoHello => {
            let mut config = endpoint_config(CongestionMode::Ledbat);
            config.connection.crust_hello = t == Transport::Crust;
            let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
            let (server, _o1) = UtpSocket::bind(loopback, config.clone()).await.unwrap();
            let (client, _o2) = UtpSocket::bind(loopback, config).await.unwrap();
            let addr = server.local_addr().unwrap();
            let p = progress.clone();
            let rx = tokio::spawn(async move {
                let mut s = server.accept().await.unwrap();
                drain(&mut s, total, &p).await;
            });
            let d = done.clone();
            let tx = tokio::spawn(async move {
                let mut s = client.connect(addr).await.unwrap();
                let _ = pump(&mut s, total).await;
                // Keep the socket and stream alive until everything arrived.
                d.notified().await;
                if let Some(stats) = s.stats() {
                    eprintln!(
                        "  sender: path MTU {:?}, {} packets, {} retransmits, {} MTU probes, {} timeouts",
                        s.path_mtu(),
                        stats.packets_sent,
                        stats.retransmits,
                        stats.mtu_probes,
                        stats.timeouts
                    );
                }
                drop(s);
            });
            (rx, tx)
        }
        Transport::Librqbit => {
            let server = librqbit_utp::UtpSocketUdp::new_udp("127.0.0.1:0".parse().unwrap())
                .await
                .unwrap();
            let client = librqbit_utp::UtpSocketUdp::new_udp("127.0.0.1:0".parse().unwrap())
                .await
                .unwrap();
            let addr = server.bind_addr();
            let p = progress.clone();
            let rx = tokio::spawn(async move {
                let mut s = server.accept().await.unwrap();
                drain(&mut s, total, &p).await;
            });
            let d = done.clone();
            let tx = tokio::spawn(async move {
                let mut s = client.connect(addr).await.unwrap();
                let _ = pump(&mut s, total).await;
                d.notified().await;
                drop(s);
            });
            (rx, tx)
        }
    };
    let finished = tokio::time::timeout(limit, rx).await.is_ok();
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    done.notify_one();
    let _ = tokio::time::timeout(Duration::from_secs(2), tx).await;
    let got = progress.load(Ordering::Relaxed);
    Transfer {
        mib_s: got as f64 / MIB / secs,
        cpu_per_gib: cpu / (got.max(1) as f64 / (1u64 << 30) as f64),
        stalled_at: (!finished || got < total as u64).then_some(got),
    }
}

struct LoopbackResult {
    transport: Transport,
    mib_s: f64,
    /// Median over the rounds of this transport's speed over kernel TCP's
    /// in the same round: steadier than the ratio of medians when the
    /// machine's load swings between rounds.
    vs_tcp_same_round: f64,
    cpu_per_gib: f64,
    stalls: Vec<u64>,
    runs: usize,
}

fn loopback(quick: bool) -> Vec<LoopbackResult> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let total = if quick { 128 << 20 } else { 512 << 20 };
    let runs = if quick { 1 } else { 5 };
    let limit = Duration::from_secs(if quick { 30 } else { 60 });
    let transports = [
        Transport::Tcp,
        Transport::Crust,
        Transport::Librqbit,
        Transport::CrustNoHello,
    ];
    let mut results: Vec<LoopbackResult> = transports
        .iter()
        .map(|&t| LoopbackResult {
            transport: t,
            mib_s: 0.0,
            vs_tcp_same_round: 0.0,
            cpu_per_gib: 0.0,
            stalls: Vec::new(),
            runs,
        })
        .collect();
    let mut speeds = vec![Vec::new(); transports.len()];
    let mut cpus = vec![Vec::new(); transports.len()];
    // Interleave the transports so background load hits all of them alike.
    for _ in 0..runs {
        for (i, &t) in transports.iter().enumerate() {
            let r = runtime.block_on(loopback_transfer(t, total, limit));
            eprintln!(
                "loopback {}: {:.0} MiB/s, {:.2} CPU s/GiB{}",
                t.name(),
                r.mib_s,
                r.cpu_per_gib,
                r.stalled_at
                    .map(|b| format!(", STALLED after {b} bytes"))
                    .unwrap_or_default()
            );
            speeds[i].push(r.mib_s);
            cpus[i].push(r.cpu_per_gib);
            results[i].stalls.extend(r.stalled_at);
        }
    }
    for (i, r) in results.iter_mut().enumerate() {
        let mut ratios: Vec<f64> = speeds[i]
            .iter()
            .zip(&speeds[0])
            .map(|(ours, tcp)| ours / tcp)
            .collect();
        r.vs_tcp_same_round = median(&mut ratios);
    }
    for (i, r) in results.iter_mut().enumerate() {
        r.mib_s = median(&mut speeds[i]);
        r.cpu_per_gib = median(&mut cpus[i]);
    }
    results
}

// ------------------------------------------------------- 4. idle memory

fn idle_child(spec: &str) {
    let (kind, n) = spec.split_once(',').unwrap();
    let n: usize = n.parse().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut keep_utp = Vec::new();
        let mut keep_tcp = Vec::new();
        let (server, _o1) = UtpSocket::bind(loopback, EndpointConfig::default())
            .await
            .unwrap();
        let (client, _o2) = UtpSocket::bind(loopback, EndpointConfig::default())
            .await
            .unwrap();
        let listener = TcpListener::bind(loopback).await.unwrap();
        let before = rss_bytes();
        for _ in 0..n {
            let mut byte = [0u8; 1];
            if kind == "utp" {
                let mut a = client.connect(server.local_addr().unwrap()).await.unwrap();
                a.write_all(b"x").await.unwrap();
                let mut b = server.accept().await.unwrap();
                b.read_exact(&mut byte).await.unwrap();
                keep_utp.push((a, b));
            } else {
                let mut a = TcpStream::connect(listener.local_addr().unwrap())
                    .await
                    .unwrap();
                a.write_all(b"x").await.unwrap();
                let (mut b, _) = listener.accept().await.unwrap();
                b.read_exact(&mut byte).await.unwrap();
                keep_tcp.push((a, b));
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = rss_bytes();
        println!("{}", after.saturating_sub(before) as f64 / n as f64);
    });
}

/// Bytes of RSS per idle connection (both ends) in a fresh child process.
fn idle_memory(kind: &str, n: usize) -> Option<f64> {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, format!("{kind},{n}"))
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "idle {kind} child failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

// ---------------------------------------------------------- 2, 3. netsim

const UTP_PORT: u16 = 5000;
const TCP_PORT: u16 = 5001;
const ECHO_PORT: u16 = 5002;

#[derive(Clone, Copy, Debug)]
struct Flow {
    start: f64,
    stop: f64,
}

#[derive(Clone, Copy, Debug)]
struct Plan {
    utp: Option<(Flow, CongestionMode)>,
    tcp: Option<Flow>,
    /// The sender's TCP congestion control.
    tcp_cc: &'static str,
    probe: bool,
    total: f64,
}

#[derive(Default)]
struct HostOut {
    /// Receiver: (seconds since t0, uTP bytes, TCP bytes) every 100 ms.
    samples: Vec<(f64, u64, u64)>,
    /// Sender: (seconds since t0 the probe was sent, RTT in ms).
    probes: Vec<(f64, f64)>,
    errors: Vec<String>,
}

fn at(t0: Instant, secs: f64) -> tokio::time::Instant {
    tokio::time::Instant::from_std(t0 + Duration::from_secs_f64(secs))
}

async fn count_into<R: AsyncRead + Unpin>(mut r: R, counter: Arc<AtomicU64>) {
    let mut buf = vec![0u8; CHUNK];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            return;
        }
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// The kernel default here is BBR, which ignores random loss and keeps the
/// queue short; the goals compare with CUBIC. A network namespace may not
/// make CUBIC its default (it is not in `tcp_allowed_congestion_control`),
/// but root may pick it per socket.
fn set_congestion_control(s: &TcpStream, name: &str) -> Option<String> {
    let sock = socket2::SockRef::from(s);
    let set = sock.set_tcp_congestion(name.as_bytes());
    let now = sock.tcp_congestion().unwrap_or_default();
    (set.is_err() || !now.starts_with(name.as_bytes())).then(|| {
        format!(
            "TCP congestion control is {:?}, not {name} ({set:?})",
            String::from_utf8_lossy(&now)
        )
    })
}

async fn receiver_host(plan: Plan, t0: Instant) -> HostOut {
    let utp = Arc::new(AtomicU64::new(0));
    let tcp = Arc::new(AtomicU64::new(0));
    let any: SocketAddr = (Ipv4Addr::UNSPECIFIED, UTP_PORT).into();
    let mode = plan.utp.map_or(CongestionMode::Ledbat, |(_, m)| m);
    let (usock, _other) = UtpSocket::bind(any, endpoint_config(mode)).await.unwrap();
    let counter = utp.clone();
    let accept_utp = tokio::spawn(async move {
        while let Ok(s) = usock.accept().await {
            tokio::spawn(count_into(s, counter.clone()));
        }
    });
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, TCP_PORT))
        .await
        .unwrap();
    let counter = tcp.clone();
    let accept_tcp = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(count_into(s, counter.clone()));
        }
    });
    let echo = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, ECHO_PORT))
        .await
        .unwrap();
    let echo_task = tokio::spawn(async move {
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = echo.recv_from(&mut buf).await {
            let _ = echo.send_to(&buf[..n], from).await;
        }
    });
    let mut out = HostOut::default();
    let mut tick = tokio::time::interval_at(at(t0, 0.0), Duration::from_millis(100));
    loop {
        let now = tick.tick().await;
        let t = now.into_std().saturating_duration_since(t0).as_secs_f64();
        out.samples
            .push((t, utp.load(Ordering::Relaxed), tcp.load(Ordering::Relaxed)));
        if t > plan.total + 0.5 {
            break;
        }
    }
    accept_utp.abort();
    accept_tcp.abort();
    echo_task.abort();
    out
}

async fn send_until<W: AsyncWrite + Unpin>(w: &mut W, deadline: tokio::time::Instant) -> String {
    let chunk = vec![0x5au8; 64 * 1024];
    match tokio::time::timeout_at(deadline, async {
        loop {
            w.write_all(&chunk).await?;
        }
    })
    .await
    {
        Ok(Err::<(), std::io::Error>(e)) => format!("write failed: {e}"),
        _ => String::new(),
    }
}

async fn sender_host(plan: Plan, t0: Instant, dst: Ipv4Addr) -> HostOut {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    if let Some((flow, mode)) = plan.utp {
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at(t0, flow.start)).await;
            let any: SocketAddr = (Ipv4Addr::UNSPECIFIED, 0).into();
            let (sock, _other) = UtpSocket::bind(any, endpoint_config(mode)).await.unwrap();
            match sock.connect((dst, UTP_PORT).into()).await {
                Ok(mut s) => {
                    let e = send_until(&mut s, at(t0, flow.stop)).await;
                    if !e.is_empty() {
                        errors.lock().unwrap().push(format!("uTP {e}"));
                    }
                }
                Err(e) => errors.lock().unwrap().push(format!("uTP connect: {e}")),
            }
        }));
    }
    if let Some(flow) = plan.tcp {
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at(t0, flow.start)).await;
            match TcpStream::connect((dst, TCP_PORT)).await {
                Ok(mut s) => {
                    if let Some(e) = set_congestion_control(&s, plan.tcp_cc) {
                        errors.lock().unwrap().push(e);
                    }
                    let e = send_until(&mut s, at(t0, flow.stop)).await;
                    if !e.is_empty() {
                        errors.lock().unwrap().push(format!("TCP {e}"));
                    }
                }
                Err(e) => errors.lock().unwrap().push(format!("TCP connect: {e}")),
            }
        }));
    }
    let probes = Arc::new(Mutex::new(Vec::new()));
    if plan.probe {
        let sock = Arc::new(UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await.unwrap());
        sock.connect((dst, ECHO_PORT)).await.unwrap();
        let (s2, p2) = (sock.clone(), probes.clone());
        let recv = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok(n) = s2.recv(&mut buf).await {
                if n >= 8 {
                    let sent = f64::from_le_bytes(buf[..8].try_into().unwrap());
                    let now = t0.elapsed().as_secs_f64();
                    p2.lock().unwrap().push((sent, (now - sent) * 1000.0));
                }
            }
        });
        let mut tick = tokio::time::interval_at(at(t0, 0.0), Duration::from_millis(50));
        loop {
            tick.tick().await;
            let t = t0.elapsed().as_secs_f64();
            if t > plan.total {
                break;
            }
            let _ = sock.send(&t.to_le_bytes()).await;
        }
        // Let the last probes come back.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        recv.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    let probes = std::mem::take(&mut *probes.lock().unwrap());
    let errors = std::mem::take(&mut *errors.lock().unwrap());
    HostOut {
        samples: Vec::new(),
        probes,
        errors,
    }
}

/// Runs `plan` between two public hosts; the sender's uplink is the
/// bottleneck `up`, the return path has `down`'s delay only.
fn run_plan(
    plan: Plan,
    up: netsim::Impairment,
    down: netsim::Impairment,
) -> Result<(HostOut, HostOut), String> {
    let mut t = netsim::Topology::new().seed(4);
    let sender = t.public_host("sender");
    let receiver = t.public_host("receiver");
    t.set_link(sender, netsim::LinkConfig { up, down });
    let dst = t.ip(receiver);
    let t0 = Instant::now() + Duration::from_secs(2);
    let [s, r] = netsim::run(
        &t,
        [
            netsim::host(move || sender_host(plan, t0, dst)),
            netsim::host(move || receiver_host(plan, t0)),
        ],
    )
    .map_err(|e| e.to_string())?;
    Ok((s, r))
}

/// Bytes received in `[from, to]` seconds, column `col` (1 = uTP, 2 = TCP).
fn bytes_between(samples: &[(f64, u64, u64)], col: usize, from: f64, to: f64) -> u64 {
    let value = |t: f64| {
        let s = samples
            .iter()
            .rev()
            .find(|s| s.0 <= t)
            .copied()
            .unwrap_or((0.0, 0, 0));
        if col == 1 { s.1 } else { s.2 }
    };
    value(to) - value(from)
}

/// The longest time (s) in `[from, to]` during which `col` did not grow.
fn longest_stall(samples: &[(f64, u64, u64)], col: usize, from: f64, to: f64) -> f64 {
    let mut longest: f64 = 0.0;
    let mut since: Option<(f64, u64)> = None;
    for s in samples.iter().filter(|s| s.0 >= from && s.0 <= to) {
        let v = if col == 1 { s.1 } else { s.2 };
        match since {
            Some((t, last)) if v == last => longest = longest.max(s.0 - t),
            _ => since = Some((s.0, v)),
        }
    }
    longest
}

fn mbit(bytes: u64, secs: f64) -> f64 {
    bytes as f64 * 8.0 / secs / 1e6
}

struct Wan {
    utp_mbit: f64,
    tcp_mbit: f64,
    bbr_mbit: f64,
    utp_stall: f64,
    errors: Vec<String>,
}

fn lossy_wan(quick: bool) -> Result<Wan, String> {
    let secs = if quick { 8.0 } else { 20.0 };
    let queue = 625_000; // one BDP at 100 Mbit/s and 50 ms
    let up = netsim::Impairment {
        latency: Duration::from_millis(25),
        loss: 0.01,
        rate_bps: Some(100_000_000),
        queue_bytes: queue,
        ..Default::default()
    };
    let down = netsim::Impairment {
        latency: Duration::from_millis(25),
        ..Default::default()
    };
    let flow = Flow {
        start: 0.0,
        stop: secs,
    };
    let mut errors = Vec::new();
    let utp_plan = Plan {
        utp: Some((flow, CongestionMode::Ledbat)),
        tcp: None,
        tcp_cc: "cubic",
        probe: false,
        total: secs,
    };
    let (s, r) = run_plan(utp_plan, up.clone(), down.clone())?;
    errors.extend(s.errors);
    errors.extend(r.errors);
    let utp_mbit = mbit(bytes_between(&r.samples, 1, 0.0, secs), secs);
    let utp_stall = longest_stall(&r.samples, 1, 1.0, secs);
    let tcp_plan = Plan {
        utp: None,
        tcp: Some(flow),
        ..utp_plan
    };
    let (s, r) = run_plan(tcp_plan, up.clone(), down.clone())?;
    errors.extend(s.errors);
    errors.extend(r.errors);
    let tcp_mbit = mbit(bytes_between(&r.samples, 2, 0.0, secs), secs);
    // The kernel's default here, BBR, which does not back off on random loss.
    let bbr_plan = Plan {
        tcp_cc: "bbr",
        ..tcp_plan
    };
    let (s, r) = run_plan(bbr_plan, up, down)?;
    errors.extend(s.errors);
    errors.extend(r.errors);
    let bbr_mbit = mbit(bytes_between(&r.samples, 2, 0.0, secs), secs);
    Ok(Wan {
        utp_mbit,
        tcp_mbit,
        bbr_mbit,
        utp_stall,
        errors,
    })
}

fn bottleneck() -> (netsim::Impairment, netsim::Impairment) {
    let up = netsim::Impairment {
        latency: Duration::from_millis(10),
        rate_bps: Some(20_000_000),
        queue_bytes: 2_500_000, // 1 s at 20 Mbit/s
        ..Default::default()
    };
    let down = netsim::Impairment {
        latency: Duration::from_millis(10),
        ..Default::default()
    };
    (up, down)
}

struct Delay {
    label: String,
    base_ms: f64,
    median_ms: f64,
    p95_ms: f64,
    mbit: f64,
    errors: Vec<String>,
}

/// Queueing delay added by one flow alone (`None` = TCP).
fn delay_alone(mode: Option<CongestionMode>, quick: bool) -> Result<Delay, String> {
    let (start, stop) = if quick { (1.0, 11.0) } else { (1.0, 25.0) };
    let flow = Flow { start, stop };
    let plan = Plan {
        utp: mode.map(|m| (flow, m)),
        tcp: mode.is_none().then_some(flow),
        tcp_cc: "cubic",
        probe: true,
        total: stop,
    };
    let (up, down) = bottleneck();
    let (s, r) = run_plan(plan, up, down)?;
    let mut base: Vec<f64> = s
        .probes
        .iter()
        .filter(|p| p.0 < start)
        .map(|p| p.1)
        .collect();
    let base_ms = base.iter().copied().fold(f64::INFINITY, f64::min);
    let _ = median(&mut base);
    // Steady state: skip the first 5 s (slow start, base-delay learning).
    let mut added: Vec<f64> = s
        .probes
        .iter()
        .filter(|p| p.0 >= start + 5.0 && p.0 < stop)
        .map(|p| p.1 - base_ms)
        .collect();
    let col = if mode.is_some() { 1 } else { 2 };
    let label = match mode {
        Some(CongestionMode::Ledbat) => "uTP LEDBAT alone",
        Some(CongestionMode::LedbatPlusPlus) => "uTP LEDBAT++ alone",
        None => "kernel TCP (CUBIC) alone",
    };
    Ok(Delay {
        label: label.into(),
        base_ms,
        median_ms: median(&mut added),
        p95_ms: percentile(&mut added, 0.95),
        mbit: mbit(
            bytes_between(&r.samples, col, start + 5.0, stop),
            stop - start - 5.0,
        ),
        errors: [s.errors, r.errors].concat(),
    })
}

struct Share {
    mode: CongestionMode,
    tcp_mbit: f64,
    utp_mbit: f64,
    utp_after_2s_mbit: f64,
    utp_before_mbit: f64,
    window: f64,
    errors: Vec<String>,
}

/// uTP runs alone, then a TCP flow starts beside it for `window` seconds.
fn tcp_beside_utp(mode: CongestionMode, quick: bool) -> Result<Share, String> {
    let window = if quick { 10.0 } else { 20.0 };
    let utp_start = 0.5;
    let tcp_start = if quick { 6.0 } else { 10.0 };
    let stop = tcp_start + window;
    let plan = Plan {
        utp: Some((
            Flow {
                start: utp_start,
                stop,
            },
            mode,
        )),
        tcp: Some(Flow {
            start: tcp_start,
            stop,
        }),
        tcp_cc: "cubic",
        probe: false,
        total: stop,
    };
    let (up, down) = bottleneck();
    let (s, r) = run_plan(plan, up, down)?;
    Ok(Share {
        mode,
        tcp_mbit: mbit(bytes_between(&r.samples, 2, tcp_start, stop), window),
        utp_mbit: mbit(bytes_between(&r.samples, 1, tcp_start, stop), window),
        utp_after_2s_mbit: mbit(
            bytes_between(&r.samples, 1, tcp_start + 2.0, stop),
            window - 2.0,
        ),
        utp_before_mbit: mbit(
            bytes_between(&r.samples, 1, tcp_start - 3.0, tcp_start),
            3.0,
        ),
        window,
        errors: [s.errors, r.errors].concat(),
    })
}

// -------------------------------------------------------------------- main

fn verdict(ok: bool) -> &'static str {
    if ok { "yes" } else { "**no**" }
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        idle_child(&spec);
        return;
    }
    // `cargo bench` passes `--bench`; ignore it.
    let quick = std::env::args().any(|a| a == "--quick");
    let skip_netsim = std::env::args().any(|a| a == "--no-netsim");
    // `--only=loopback,memory,wan,delay,share`: run just those sections.
    let only: Option<Vec<String>> = std::env::args()
        .find_map(|a| a.strip_prefix("--only=").map(str::to_owned))
        .map(|list| list.split(',').map(str::to_owned).collect());
    let run = |section: &str| only.as_ref().is_none_or(|o| o.iter().any(|s| s == section));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "uTP benchmarks ({}), load average at start: {}",
        if quick { "quick" } else { "full" },
        load.trim()
    );

    // 1 and the CPU half of 4.
    if run("loopback") {
        report_loopback(quick);
    }

    // The memory half of 4.
    if run("memory") {
        report_memory(quick);
    }

    if skip_netsim {
        return;
    }

    if run("wan") {
        report_wan(quick);
    }
    if run("delay") {
        report_delay(quick);
    }
    if run("share") {
        report_share(quick);
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("\nload average at end: {}", load.trim());
}

fn report_loopback(quick: bool) {
    let lb = loopback(quick);
    let tcp = lb[0].mib_s;
    println!("\n### 1. Loopback bulk throughput, one stream\n");
    println!(
        "| transport | MiB/s (median) | vs kernel TCP (medians) | vs kernel TCP (median of same-round ratios) | CPU s per GiB (both ends) | stalls |"
    );
    println!("|---|---|---|---|---|---|");
    for r in &lb {
        println!(
            "| {} | {:.0} | {:.1}% | {:.1}% | {:.2} | {} of {} |",
            r.transport.name(),
            r.mib_s,
            r.mib_s / tcp * 100.0,
            r.vs_tcp_same_round * 100.0,
            r.cpu_per_gib,
            r.stalls.len(),
            r.runs
        );
    }
    let ours = &lb[1];
    println!(
        "\nDefault settings (both ends crust): ≥40% of TCP: {} (medians), {} (same-round ratios); ahead of librqbit-utp: {}",
        verdict(ours.mib_s >= 0.4 * tcp),
        verdict(ours.vs_tcp_same_round >= 0.4),
        verdict(ours.mib_s > lb[2].mib_s)
    );
    let plain = &lb[3];
    println!(
        "Hello off (Ethernet-sized packets, as towards libutp): ≥40% of TCP: {}; ahead of librqbit-utp: {}",
        verdict(plain.mib_s >= 0.4 * tcp),
        verdict(plain.mib_s > lb[2].mib_s)
    );
}

fn report_memory(quick: bool) {
    let n = if quick { 200 } else { 1000 };
    let utp_mem = idle_memory("utp", n);
    let tcp_mem = idle_memory("tcp", n);
    let show = |m: Option<f64>| m.map_or("not measured".into(), |b| format!("{:.1}", b / 1024.0));
    println!("\n### 4. Memory per idle connection ({n} connections, both ends, RSS delta)\n");
    println!("| transport | KiB per connection |");
    println!("|---|---|");
    println!("| crust::utp | {} |", show(utp_mem));
    println!(
        "| kernel TCP | {} (user space only; kernel socket memory is not in RSS) |",
        show(tcp_mem)
    );
}

fn report_wan(quick: bool) {
    println!("\n### 2. netsim: 50 ms RTT, 1% loss (data direction), 100 Mbit/s, 625 kB queue\n");
    match lossy_wan(quick) {
        Ok(w) => {
            println!("| flow | goodput Mbit/s | vs TCP | longest uTP stall |");
            println!("|---|---|---|---|");
            println!(
                "| crust::utp (LEDBAT) | {:.1} | {:.0}% | {:.1} s |",
                w.utp_mbit,
                w.utp_mbit / w.tcp_mbit * 100.0,
                w.utp_stall
            );
            println!("| kernel TCP (CUBIC) | {:.1} | 100% | |", w.tcp_mbit);
            println!(
                "| kernel TCP (BBR, this kernel's default) | {:.1} | {:.0}% | |",
                w.bbr_mbit,
                w.bbr_mbit / w.tcp_mbit * 100.0
            );
            println!(
                "\nGoal ≥90% of TCP CUBIC: {}; of TCP BBR: {}",
                verdict(w.utp_mbit >= 0.9 * w.tcp_mbit),
                verdict(w.utp_mbit >= 0.9 * w.bbr_mbit)
            );
            for e in w.errors {
                println!("- error: {e}");
            }
        }
        Err(e) => println!("not measured: {e}"),
    }
}

fn report_delay(quick: bool) {
    println!("\n### 3. netsim: 20 Mbit/s bottleneck, 1 s (2.5 MB) queue, 20 ms base RTT\n");
    println!(
        "| flow alone | base RTT ms | added delay median ms | p95 ms | goodput Mbit/s | goal |"
    );
    println!("|---|---|---|---|---|---|");
    for (mode, goal) in [
        (Some(CongestionMode::Ledbat), Some(110.0)),
        (Some(CongestionMode::LedbatPlusPlus), Some(66.0)),
        (None, None),
    ] {
        match delay_alone(mode, quick) {
            Ok(d) => {
                let g = goal.map_or("(baseline)".to_string(), |g: f64| {
                    format!("≤{g:.0} ms: {}", verdict(d.median_ms <= g))
                });
                println!(
                    "| {} | {:.1} | {:.0} | {:.0} | {:.1} | {} |",
                    d.label, d.base_ms, d.median_ms, d.p95_ms, d.mbit, g
                );
                for e in d.errors {
                    println!("| error: {e} | | | | | |");
                }
            }
            Err(e) => println!("| {mode:?} | not measured: {e} | | | | |"),
        }
    }
}

fn report_share(quick: bool) {
    println!(
        "| uTP mode | uTP before TCP Mbit/s | TCP Mbit/s (share of 20) | uTP Mbit/s | uTP from TCP start + 2 s | TCP ≥85% |"
    );
    println!("|---|---|---|---|---|---|");
    for mode in [CongestionMode::Ledbat, CongestionMode::LedbatPlusPlus] {
        match tcp_beside_utp(mode, quick) {
            Ok(s) => {
                let share = s.tcp_mbit / 20.0 * 100.0;
                println!(
                    "| {:?} | {:.1} | {:.1} ({:.0}%, over {:.0} s) | {:.1} | {:.1} | {} |",
                    s.mode,
                    s.utp_before_mbit,
                    s.tcp_mbit,
                    share,
                    s.window,
                    s.utp_mbit,
                    s.utp_after_2s_mbit,
                    verdict(share >= 85.0)
                );
                for e in s.errors {
                    println!("| error: {e} | | | | | |");
                }
            }
            Err(e) => println!("| {mode:?} | not measured: {e} | | | | |"),
        }
    }
}
