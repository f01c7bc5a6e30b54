//! Soak (#11): pushes `SOAK_BYTES` (1 GiB by default) over one connection
//! of each transport — TCP, uTP, hole-punched uTP, relayed — through
//! impaired netsim links (loss, duplication, jitter that reorders, a
//! bandwidth limit), checks every byte with SHA-256, samples the process's
//! RSS every second, and fails unless every byte arrives in order, memory
//! stays flat (at most 10 % above its level after warm-up) and the
//! connection never drops.
//!
//! "Flat" is judged on peaks: the highest RSS in the second half of the
//! bytes may be at most 10 % above the highest between 10 % and half of
//! them (warm-up). The send and receive queues are bounded
//! (`Config::send_queue_limit` and `receive_buffer_limit`, 12 MiB per
//! connection by default) but their fill comes and goes with the link,
//! which moves RSS by a few MiB either way on a process of 15–40 MiB; a
//! single sample at any point can land in a trough. A leak grows with the
//! bytes moved and lifts the second half's peak; a queue's fill does not.
//!
//! `cargo bench -p crust --bench soak` as root (netsim). Environment:
//! `SOAK_BYTES` per transport (`1GiB`, `32MiB`, `500000`; also the first
//! argument), `SOAK_TRANSPORTS` (comma list of `tcp,utp,punched,relayed`,
//! default all), `SOAK_RATE_MBIT` (default 200), `SOAK_LOSS` (per link
//! each way, default 0.005), `SOAK_UTP_STATS=1` (both peers print every
//! uTP connection's state once a second: window, flight, RTO, delays, loss
//! counters), `RUST_LOG`.

// A bench binary: a failed step should stop it loudly.
#![allow(clippy::unwrap_used)]

#[cfg(target_os = "linux")]
#[path = "../tests/nat_common/mod.rs"]
mod nat_common;

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("the soak needs netsim, which is Linux only");
}

#[cfg(target_os = "linux")]
fn main() {
    linux::main();
}

#[cfg(target_os = "linux")]
mod linux {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use crust::{
        ChannelConfig, Config, ConnectionPath, Endpoint, Event, PeerId, Priority, SecretId, Service,
    };
    use netsim::{Impairment, LinkConfig, NatPreset, Network, Topology};

    use super::nat_common;

    const PORT: u16 = 5483;
    /// Bytes per message.
    const CHUNK: usize = 64 * 1024;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Kind {
        Tcp,
        Utp,
        Punched,
        Relayed,
    }

    impl Kind {
        fn name(self) -> &'static str {
            match self {
                Kind::Tcp => "tcp",
                Kind::Utp => "utp",
                Kind::Punched => "punched",
                Kind::Relayed => "relayed",
            }
        }
    }

    /// What the receiving side saw.
    #[derive(Default)]
    struct Progress {
        received: AtomicU64,
        drops: AtomicU64,
        done: AtomicBool,
        digest: Mutex<Option<Vec<u8>>>,
        error: Mutex<Option<String>>,
    }

    fn parse_bytes(s: &str) -> Option<u64> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (n, unit) = s.split_at(split);
        let n: u64 = n.parse().ok()?;
        let mult = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kib" => 1 << 10,
            "m" | "mib" => 1 << 20,
            "g" | "gib" => 1 << 30,
            _ => return None,
        };
        n.checked_mul(mult)
    }

    fn rss_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    }

    /// The deterministic contents of the stream at `offset` (xorshift).
    fn fill(buf: &mut [u8], offset: u64) {
        let mut x = offset.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let bytes = x.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }

    /// The RSS peaks (KiB) from sample `early` (10 % of the bytes) to
    /// `warm` (half of them), and from `warm` to the end.
    fn envelope(rss: &[u64], early: usize, warm: usize) -> (u64, u64) {
        let peak = |from: usize, to: usize| {
            rss.get(from..to.max(from))
                .and_then(|w| w.iter().copied().max())
                .unwrap_or(0)
        };
        (peak(early, warm + 1), peak(warm, rss.len()))
    }

    /// A peer's settings; `kind` turns TCP hole punching off where the
    /// soak wants the hole-punched uTP path.
    fn config(kind: Kind) -> Config {
        Config {
            listen: vec![SocketAddr::from(([0, 0, 0, 0], PORT))],
            utp: Some(SocketAddr::from(([0, 0, 0, 0], PORT))),
            keepalive_interval: Duration::from_millis(500),
            peer_timeout: Duration::from_secs(10),
            dial_timeout: Duration::from_secs(5),
            punch_timeout: Duration::from_secs(10),
            upnp: false,
            tcp_hole_punching: kind != Kind::Punched,
            channel: ChannelConfig {
                network_id: "crust-soak".into(),
                ..Default::default()
            },
            ..Config::default()
        }
    }

    async fn join(service: &Service, public: &[(PeerId, SocketAddr)]) {
        for (id, addr) in public {
            for _ in 0..50 {
                if service.connect(*id, &[*addr]).await.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let wait = Instant::now();
        while service.nat_report().udp_observations.len() < public.len()
            && wait.elapsed() < Duration::from_secs(6)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// With `SOAK_UTP_STATS` set, prints `service`'s uTP connections
    /// once a second until `stop`.
    fn spawn_utp_stats(label: &'static str, service: Service, stop: Arc<AtomicBool>) {
        if std::env::var_os("SOAK_UTP_STATS").is_none() {
            return;
        }
        let start = Instant::now();
        tokio::spawn(async move {
            let mut last: std::collections::HashMap<
                SocketAddr,
                crust::utp::proto::ConnectionStats,
            > = Default::default();
            while !stop.load(Ordering::Acquire) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                for (peer, d) in service.utp_diagnostics() {
                    let prev = last.insert(peer, d.stats).unwrap_or_default();
                    let ms = |x: Option<Duration>| {
                        x.map_or_else(
                            || "-".to_owned(),
                            |d| format!("{:.1}", d.as_secs_f64() * 1e3),
                        )
                    };
                    let k = |b: usize| b / 1024;
                    eprintln!(
                        "  utp-stats {label} {:>6.1}s {peer} {:?} cwnd {}k{} ssthr {} flight {}k pwnd {}k ownd {}k sq {}k unacked {}k pkts {} readable {}k \
                         rto {} srtt {} min {} last {} qd {} raw {} steady {} peak {} floor {} reo {}/{} cto {} mtu {} \
                         | +sent {} +rtx {} +to {} +lost {} +cuts {} +rnd {} +spur {} +recv {}",
                        start.elapsed().as_secs_f64(),
                        d.state,
                        k(d.cwnd),
                        if d.slow_start { "(ss)" } else { "" },
                        if d.ssthresh == usize::MAX {
                            "inf".to_owned()
                        } else {
                            format!("{}k", k(d.ssthresh))
                        },
                        k(d.in_flight),
                        k(d.peer_window),
                        k(d.our_window),
                        k(d.send_queue),
                        k(d.unacked),
                        d.sent_packets,
                        k(d.readable),
                        ms(Some(d.rto)),
                        ms(d.srtt),
                        ms(d.min_rtt),
                        ms(d.latest_rtt),
                        ms(d.queuing_delay),
                        ms(d.raw_queuing_delay),
                        ms(d.steady_queue),
                        ms(Some(d.peak_queue)),
                        ms(Some(d.queue_floor)),
                        ms(Some(d.reorder_window)),
                        d.reorder_threshold,
                        d.consecutive_timeouts,
                        d.path_mtu,
                        d.stats.packets_sent.saturating_sub(prev.packets_sent),
                        d.stats.retransmits.saturating_sub(prev.retransmits),
                        d.stats.timeouts.saturating_sub(prev.timeouts),
                        d.stats.fast_losses.saturating_sub(prev.fast_losses),
                        d.stats.window_cuts.saturating_sub(prev.window_cuts),
                        d.stats.random_losses.saturating_sub(prev.random_losses),
                        d.stats
                            .spurious_retransmits
                            .saturating_sub(prev.spurious_retransmits),
                        d.stats
                            .packets_received
                            .saturating_sub(prev.packets_received),
                    );
                }
            }
        });
    }

    struct Run {
        kind: Kind,
        bytes: u64,
        elapsed: Duration,
        path: String,
        rss: Vec<u64>,
        warm: usize,
        early: usize,
        passed: bool,
        notes: Vec<String>,
    }

    fn run(kind: Kind, total: u64, rate_mbit: u64, loss: f64, seed: u64) -> Run {
        let mut t = Topology::new().seed(seed);
        // Each of the two peers' links: 5 ms each way, up to 2 ms of
        // jitter that reorders, `loss` and 0.5 % duplication, and the
        // bandwidth limit.
        let leg = Impairment::none()
            .latency(Duration::from_millis(5))
            .jitter(Duration::from_millis(2), true)
            .loss(loss)
            .duplicate(0.005)
            .rate(rate_mbit * 1_000_000, 512 * 1024);
        let rendezvous = t.public_host("rendezvous");
        let echo = t.public_host("echo");
        let (a, b) = match kind {
            Kind::Tcp | Kind::Utp => (t.public_host("a"), t.public_host("b")),
            Kind::Punched | Kind::Relayed => {
                // Port-restricted cones punch (uTP, with TCP hole punching
                // off below); random ports on both sides leave nothing to
                // punch, UDP or TCP, so the rendezvous relays.
                let preset = if kind == Kind::Punched {
                    NatPreset::PortRestrictedCone
                } else {
                    NatPreset::SymmetricRandom
                };
                let ra = t.router("nat-a", preset);
                let rb = t.router("nat-b", preset);
                t.set_upnp(ra, false);
                t.set_upnp(rb, false);
                (t.host("a", ra), t.host("b", rb))
            }
        };
        t.set_link(a, LinkConfig::symmetric(leg.clone()));
        t.set_link(b, LinkConfig::symmetric(leg));
        let r_addr = SocketAddr::from((t.ip(rendezvous), PORT));
        let e_addr = SocketAddr::from((t.ip(echo), PORT));
        let b_addr = SocketAddr::from((t.ip(b), PORT));
        let key = |i: u8| {
            let mut k = [i; 32];
            k[1..9].copy_from_slice(&seed.to_le_bytes());
            k
        };
        let id = |i: u8| SecretId::from_bytes(&key(i)).peer_id();
        let (r_id, e_id, a_id, b_id) = (id(1), id(2), id(3), id(4));
        let public = vec![(r_id, r_addr), (e_id, e_addr)];

        let net = Network::start(&t).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(Progress::default());
        let server = |k: [u8; 32], stop: Arc<AtomicBool>| {
            move || async move {
                let (service, mut events) =
                    Service::start(config(Kind::Tcp), SecretId::from_bytes(&k))
                        .await
                        .unwrap();
                while !stop.load(Ordering::Acquire) {
                    let _ = tokio::time::timeout(Duration::from_millis(50), events.recv()).await;
                }
                service.shutdown().await;
            }
        };
        let r_task = net.spawn(rendezvous, server(key(1), stop.clone())).unwrap();
        let e_task = net.spawn(echo, server(key(2), stop.clone())).unwrap();

        let (b_stop, b_progress, b_public) = (stop.clone(), progress.clone(), public.clone());
        let b_key = key(4);
        let b_task = net
            .spawn(b, move || async move {
                let (service, mut events) =
                    Service::start(config(kind), SecretId::from_bytes(&b_key))
                        .await
                        .unwrap();
                join(&service, &b_public).await;
                spawn_utp_stats("b", service.clone(), b_stop.clone());
                let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
                let mut received = 0u64;
                let mut connected = false;
                while !b_stop.load(Ordering::Acquire) {
                    let Ok(Some(event)) =
                        tokio::time::timeout(Duration::from_millis(50), events.recv()).await
                    else {
                        continue;
                    };
                    match event {
                        Event::NewMessage { peer, data } if peer == a_id => {
                            hasher.update(&data);
                            received += data.len() as u64;
                            b_progress.received.store(received, Ordering::Release);
                            if received >= total && !b_progress.done.load(Ordering::Acquire) {
                                *b_progress.digest.lock().unwrap() =
                                    Some(hasher.clone().finish().as_ref().to_vec());
                                b_progress.done.store(true, Ordering::Release);
                            }
                        }
                        Event::ConnectSuccess { peer, .. } if peer == a_id => {
                            if connected {
                                b_progress.drops.fetch_add(1, Ordering::AcqRel);
                            }
                            connected = true;
                        }
                        // Once every byte is in, a shuts down: that loss
                        // is the end of the run, not a drop.
                        Event::LostPeer { peer, reason }
                            if peer == a_id && !b_progress.done.load(Ordering::Acquire) =>
                        {
                            b_progress.drops.fetch_add(1, Ordering::AcqRel);
                            *b_progress.error.lock().unwrap() = Some(format!("lost: {reason}"));
                        }
                        _ => {}
                    }
                }
                service.shutdown().await;
            })
            .unwrap();

        let (a_stop, a_progress) = (stop.clone(), progress.clone());
        let a_key = key(3);
        let a_task = net
            .spawn(a, move || async move {
                let (service, _events) = Service::start(config(kind), SecretId::from_bytes(&a_key))
                    .await
                    .unwrap();
                join(&service, &public).await;
                spawn_utp_stats("a", service.clone(), a_stop.clone());
                // b joins alongside; give it the same time.
                tokio::time::sleep(Duration::from_millis(500)).await;
                let mut info = None;
                for _ in 0..5 {
                    let r = match kind {
                        Kind::Tcp => service.connect(b_id, &[Endpoint::tcp(b_addr)]).await,
                        Kind::Utp => service.connect(b_id, &[Endpoint::utp(b_addr)]).await,
                        Kind::Punched | Kind::Relayed => service.connect_via(b_id, r_id).await,
                    };
                    match r {
                        Ok(i) => {
                            info = Some(i);
                            break;
                        }
                        Err(e) => {
                            *a_progress.error.lock().unwrap() = Some(format!("connect: {e}"));
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                }
                let Some(info) = info else {
                    a_stop.store(true, Ordering::Release);
                    return (
                        None,
                        ring::digest::digest(&ring::digest::SHA256, b"")
                            .as_ref()
                            .to_vec(),
                    );
                };
                let path = match info.path {
                    ConnectionPath::Relayed { .. } => format!("Relayed over {:?}", info.transport),
                    p => format!("{p:?} over {:?}", info.transport),
                };
                let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
                let mut buf = vec![0u8; CHUNK];
                let mut sent = 0u64;
                while sent < total {
                    let n = CHUNK.min((total - sent) as usize);
                    fill(&mut buf[..n], sent);
                    hasher.update(&buf[..n]);
                    if let Err(e) = service
                        .send(
                            &b_id,
                            bytes::Bytes::copy_from_slice(&buf[..n]),
                            Priority::NORMAL,
                        )
                        .await
                    {
                        *a_progress.error.lock().unwrap() = Some(format!("send: {e}"));
                        break;
                    }
                    sent += n as u64;
                }
                // Keep the service up until b has everything.
                while !a_progress.done.load(Ordering::Acquire) && !a_stop.load(Ordering::Acquire) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let still = service.connection_info(&b_id).await;
                if still.as_ref().map(|i| (i.path, i.transport))
                    != Some((info.path, info.transport))
                {
                    a_progress.drops.fetch_add(1, Ordering::AcqRel);
                }
                service.shutdown().await;
                (Some(path), hasher.finish().as_ref().to_vec())
            })
            .unwrap();

        // Sample RSS every second until every byte arrived (or nothing
        // moved for a minute).
        let start = Instant::now();
        let mut rss = Vec::new();
        let mut early = None;
        let mut warm = None;
        let mut last = (0u64, Instant::now());
        let mut notes = Vec::new();
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let got = progress.received.load(Ordering::Acquire);
            rss.push(rss_kib());
            if early.is_none() && got >= total / 10 && rss.len() >= 2 {
                early = Some(rss.len() - 1);
            }
            if warm.is_none() && got >= total / 2 && rss.len() >= 2 {
                warm = Some(rss.len() - 1);
            }
            eprintln!(
                "  {}: {:>6.1} s {:>8.1} MiB {:>7.1} Mbit/s rss {} MiB",
                kind.name(),
                start.elapsed().as_secs_f64(),
                got as f64 / (1 << 20) as f64,
                (got - last.0) as f64 * 8.0 / 1e6 / last.1.elapsed().as_secs_f64(),
                rss.last().copied().unwrap_or(0) / 1024
            );
            if got != last.0 {
                last = (got, Instant::now());
            }
            if progress.done.load(Ordering::Acquire)
                || a_task.is_finished()
                    && got == last.0
                    && last.1.elapsed() > Duration::from_secs(5)
            {
                break;
            }
            if last.1.elapsed() > Duration::from_secs(60) {
                notes.push("stalled: nothing arrived for 60 s".to_owned());
                break;
            }
        }
        let elapsed = start.elapsed();
        stop.store(true, Ordering::Release);
        let (path, sent_digest) = a_task.join().unwrap();
        b_task.join().unwrap();
        r_task.join().unwrap();
        e_task.join().unwrap();
        net.shutdown();

        let received = progress.received.load(Ordering::Acquire);
        let digest = progress.digest.lock().unwrap().clone();
        let drops = progress.drops.load(Ordering::Acquire);
        let mut passed = true;
        if received != total {
            passed = false;
            notes.push(format!("received {received} of {total} bytes"));
        }
        if digest.as_deref() != Some(&sent_digest[..]) {
            passed = false;
            notes.push("SHA-256 mismatch".to_owned());
        }
        if drops > 0 {
            passed = false;
            notes.push(format!("{drops} connection drop(s)"));
        }
        if let Some(e) = progress.error.lock().unwrap().clone() {
            notes.push(e);
        }
        let warm = warm.unwrap_or(rss.len().saturating_sub(1));
        let early = early.unwrap_or(warm).min(warm);
        let (base, peak) = envelope(&rss, early, warm);
        if base > 0 && peak * 10 > base * 11 {
            passed = false;
            notes.push(format!(
                "RSS peaked at {peak} KiB in the second half, over {base} KiB in the first"
            ));
        }
        let expected = match kind {
            Kind::Tcp => "Direct over Tcp",
            Kind::Utp => "Direct over Utp",
            Kind::Punched => "HolePunched over Utp",
            Kind::Relayed => "Relayed",
        };
        if !path.as_deref().is_some_and(|p| p.starts_with(expected)) {
            passed = false;
            notes.push(format!("expected a {expected} connection"));
        }
        Run {
            kind,
            bytes: received,
            elapsed,
            path: path.unwrap_or_else(|| "no connection".into()),
            rss,
            warm,
            early,
            passed,
            notes,
        }
    }

    pub(super) fn main() {
        if !nat_common::prerequisites(&[]) {
            return;
        }
        if std::env::var_os("RUST_LOG").is_some() {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_writer(std::io::stderr)
                .init();
        }
        let arg = std::env::args().skip(1).find(|a| !a.starts_with('-'));
        let total = arg
            .or_else(|| std::env::var("SOAK_BYTES").ok())
            .map(|s| parse_bytes(&s).unwrap_or_else(|| panic!("SOAK_BYTES: cannot read {s:?}")))
            .unwrap_or(1 << 30);
        let rate: u64 = std::env::var("SOAK_RATE_MBIT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200);
        let loss: f64 = std::env::var("SOAK_LOSS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.005);
        let wanted =
            std::env::var("SOAK_TRANSPORTS").unwrap_or_else(|_| "tcp,utp,punched,relayed".into());
        let kinds: Vec<Kind> = [Kind::Tcp, Kind::Utp, Kind::Punched, Kind::Relayed]
            .into_iter()
            .filter(|k| wanted.split(',').any(|w| w.trim() == k.name()))
            .collect();
        println!(
            "soak: {} MiB per transport, links {rate} Mbit/s, 5 ms ± 2 ms (reordering), loss {:.2} %, duplication 0.5 % each way",
            total as f64 / (1 << 20) as f64,
            loss * 100.0
        );
        let mut failed = false;
        for (i, kind) in kinds.into_iter().enumerate() {
            let r = run(kind, total, rate, loss, 11 + i as u64);
            let secs = r.elapsed.as_secs_f64();
            let (base, peak) = envelope(&r.rss, r.early, r.warm);
            let (base, peak) = (base / 1024, peak / 1024);
            println!(
                "{:<8} {} {:>9.1} MiB in {:>6.1} s = {:>6.1} Mbit/s; path {}; RSS peak {} MiB in the first half (after 10 %), {} MiB in the second ({} samples){}",
                r.kind.name(),
                if r.passed { "PASS" } else { "FAIL" },
                r.bytes as f64 / (1 << 20) as f64,
                secs,
                r.bytes as f64 * 8.0 / 1e6 / secs,
                r.path,
                base,
                peak,
                r.rss.len(),
                if r.notes.is_empty() {
                    String::new()
                } else {
                    format!("; {}", r.notes.join("; "))
                }
            );
            failed |= !r.passed;
        }
        if failed {
            std::process::exit(1);
        }
    }
}
