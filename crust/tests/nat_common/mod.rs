//! Two crust peers behind NATs in netsim, connected through a rendezvous
//! peer: the building block of the NAT matrix test and bench.
//!
//! Topology: two public hosts, `rendezvous` and `echo` (a second address
//! for echoes, so that a symmetric NAT shows itself), and two peers, each
//! behind a router of the asked kind (or the same router). Both peers
//! connect to both public hosts, wait for their NAT report, and then `a`
//! calls `connect_via(b, rendezvous)`.

#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crust::{
    ChannelConfig, Config, ConnectionPath, Event, NatReport, SecretId, Service, Transport,
};
use netsim::{Impairment, LinkConfig, NatPreset, Network, Topology};

pub const PORT: u16 = 5483;

/// True if netsim tests can run; prints why not and returns false, or
/// panics under `CI=true`.
pub fn prerequisites(tools: &[&str]) -> bool {
    netsim::prerequisites(tools)
}

pub fn has_tool(tool: &str) -> bool {
    netsim::has_program(tool)
}

/// What a peer sits behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// A netsim router with this preset.
    Nat(NatPreset),
    /// A real Linux router (nftables masquerade), with miniupnpd if `upnp`.
    Linux { upnp: bool },
}

impl Side {
    pub fn name(self) -> String {
        match self {
            Side::Nat(p) => format!("{p:?}").to_lowercase(),
            Side::Linux { upnp: true } => "linux+upnp".into(),
            Side::Linux { upnp: false } => "linux".into(),
        }
    }
}

/// The pair to connect.
#[derive(Debug, Clone, Copy)]
pub struct Pair {
    pub a: Side,
    pub b: Side,
    /// Both peers behind one router (`b` is ignored).
    pub same_nat: bool,
}

/// Link impairment of the run.
#[derive(Debug, Clone, Copy)]
pub struct Conditions {
    /// Round trip between the two peers.
    pub rtt: Duration,
    /// Loss along the path between the two peers, each way.
    pub loss: f64,
    /// After a relayed connection, how long after the start `a` waits for
    /// a direct one (`None`: it does not wait).
    pub direct_within: Option<Duration>,
}

/// What one attempt gave.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub result: Result<(ConnectionPath, Transport), String>,
    /// Time `connect_via` took.
    pub elapsed: Duration,
    /// How many `connect_via` calls it took (retries after failures).
    pub attempts: u32,
    pub report_a: NatReport,
    pub report_b: NatReport,
    /// `b` saw the connection and a message `a` sent on it.
    pub b_got_message: bool,
    /// The numbered messages `a` sent after connecting (one every
    /// [`STREAM_GAP`]), in the order `b` received them.
    pub b_sequence: Vec<u32>,
    /// `a`'s `ConnectionChanged` events for `b` while it sent them: path
    /// and transport of each new connection.
    pub a_changes: Vec<(ConnectionPath, Transport)>,
    /// Where `a` reached `b`, and `b`'s own (LAN) address.
    pub remote_addr: Option<SocketAddr>,
    pub b_ip: std::net::Ipv4Addr,
    /// From the start of `connect_via` to a direct (or hole-punched)
    /// connection, if there was one: at once, or after a relayed one
    /// within [`Conditions::direct_within`].
    pub direct_after: Option<Duration>,
    /// The path and transport of that direct connection.
    pub direct: Option<(ConnectionPath, Transport)>,
    /// `a`'s timing of that direct connection from the rendezvous signal
    /// (`ConnectionInfo::traversal`).
    pub direct_timing: Option<crust::TraversalTiming>,
    /// The routers' counters every [`SAMPLE_EVERY`] from the start of
    /// `connect_via` (`nat-a`, `nat-b`; `None` for a Linux router or the
    /// second side of a shared NAT).
    pub nat_samples: Vec<NatSample>,
}

/// The NAT counters at one moment of a run.
#[derive(Debug, Clone, Copy)]
pub struct NatSample {
    /// Since the start of `connect_via`.
    pub at: Duration,
    pub a: Option<netsim::NatStats>,
    pub b: Option<netsim::NatStats>,
}

/// Between two samples of the routers' counters.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(50);

impl Outcome {
    /// The most packets the router of side `b` (or `a`) translated
    /// outbound in any `window` between `from` and `to` after the start.
    pub fn max_out_in_window(
        &self,
        b: bool,
        window: Duration,
        from: Duration,
        to: Duration,
    ) -> Option<u64> {
        let pick = |s: &NatSample| if b { s.b } else { s.a };
        let samples: Vec<(Duration, u64)> = self
            .nat_samples
            .iter()
            .filter(|s| s.at >= from && s.at <= to)
            .filter_map(|s| pick(s).map(|n| (s.at, n.translated_out)))
            .collect();
        let mut most = None;
        for (i, (start, first)) in samples.iter().enumerate() {
            let Some((_, last)) = samples[i..]
                .iter()
                .take_while(|(t, _)| *t <= *start + window)
                .last()
            else {
                continue;
            };
            most = Some(most.unwrap_or(0).max(last - first));
        }
        most
    }
}

/// Numbered messages `a` sends after connecting.
pub const STREAM: u32 = 40;
/// Between them.
pub const STREAM_GAP: Duration = Duration::from_millis(25);

/// The peers' config in every NAT test: both transports on [`PORT`], short
/// keep-alive and timeouts.
pub fn test_config(upnp: bool) -> Config {
    Config {
        listen: vec![SocketAddr::from(([0, 0, 0, 0], PORT))],
        utp: Some(SocketAddr::from(([0, 0, 0, 0], PORT))),
        keepalive_interval: Duration::from_millis(500),
        peer_timeout: Duration::from_secs(5),
        dial_timeout: Duration::from_secs(3),
        punch_timeout: Duration::from_secs(10),
        upnp,
        upnp_lease: Duration::from_secs(600),
        channel: ChannelConfig {
            network_id: "crust-nat-tests".into(),
            handshake_timeout: Duration::from_secs(5),
            ..Default::default()
        },
        ..Config::default()
    }
}

fn side_router(t: &mut Topology, name: &str, side: Side) -> netsim::RouterId {
    match side {
        Side::Nat(preset) => {
            let r = t.router(name, preset);
            t.set_upnp(r, false);
            r
        }
        Side::Linux { upnp } => t.linux_router(name, None, upnp),
    }
}

/// Connects `a` to `b` through the rendezvous, retrying up to
/// `max_attempts` times.
pub fn run_pair(pair: Pair, conditions: Conditions, seed: u64, max_attempts: u32) -> Outcome {
    run_pair_with(pair, conditions, seed, max_attempts, |_| {})
}

/// [`run_pair`], with `tweak` applied to both peers' configuration.
pub fn run_pair_with(
    pair: Pair,
    conditions: Conditions,
    seed: u64,
    max_attempts: u32,
    tweak: fn(&mut Config),
) -> Outcome {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
    let config = |upnp: bool| {
        let mut config = test_config(upnp);
        tweak(&mut config);
        config
    };
    let mut t = Topology::new().seed(seed);
    // Each peer's link carries a quarter of the round trip each way, so the
    // path a–b has `rtt`; each link loses half of the path's loss.
    let leg = Impairment {
        loss: conditions.loss / 2.0,
        ..Impairment::none().latency(conditions.rtt / 4)
    };
    let rendezvous = t.public_host("rendezvous");
    let echo = t.public_host("echo");
    let ra = side_router(&mut t, "nat-a", pair.a);
    let rb = if pair.same_nat {
        ra
    } else {
        side_router(&mut t, "nat-b", pair.b)
    };
    let a = t.host("a", ra);
    let b = t.host("b", rb);
    t.set_link(a, LinkConfig::symmetric(leg.clone()));
    t.set_link(b, LinkConfig::symmetric(leg));
    let r_addr = SocketAddr::from((t.ip(rendezvous), PORT));
    let e_addr = SocketAddr::from((t.ip(echo), PORT));

    let keys: Vec<[u8; 32]> = (0..4u8)
        .map(|i| {
            let mut k = [0u8; 32];
            k[0] = i + 1;
            k[1..9].copy_from_slice(&seed.to_le_bytes());
            k
        })
        .collect();
    let id = |i: usize| SecretId::from_bytes(&keys[i]).peer_id();
    let (r_id, e_id, a_id, b_id) = (id(0), id(1), id(2), id(3));

    let done = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicU32::new(0));
    let connect_start: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let net = Network::start(&t).unwrap();

    let server = |key: [u8; 32], done: Arc<AtomicBool>| {
        move || async move {
            let (service, mut events) =
                Service::start(test_config(false), SecretId::from_bytes(&key))
                    .await
                    .unwrap();
            while !done.load(Ordering::Acquire) {
                let _ = tokio::time::timeout(Duration::from_millis(50), events.recv()).await;
            }
            service.shutdown().await;
        }
    };
    let r_task = net
        .spawn(rendezvous, server(keys[0], done.clone()))
        .unwrap();
    let e_task = net.spawn(echo, server(keys[1], done.clone())).unwrap();

    let upnp_b = matches!(pair.b, Side::Linux { upnp: true });
    let b_key = keys[3];
    let (b_done, b_ready) = (done.clone(), ready.clone());
    let b_config = config(upnp_b);
    let b_task = net
        .spawn(b, move || async move {
            let (service, mut events) = Service::start(b_config, SecretId::from_bytes(&b_key))
                .await
                .unwrap();
            join_network(&service, r_id, r_addr, e_id, e_addr).await;
            b_ready.fetch_add(1, Ordering::AcqRel);
            let mut got = false;
            let mut sequence = Vec::new();
            while !b_done.load(Ordering::Acquire) {
                if let Ok(Some(Event::NewMessage { peer, data })) =
                    tokio::time::timeout(Duration::from_millis(50), events.recv()).await
                    && peer == a_id
                {
                    got |= &data[..] == b"through the NAT";
                    if let Ok(n) = <[u8; 4]>::try_from(&data[..]) {
                        sequence.push(u32::from_be_bytes(n));
                    }
                }
            }
            let report = service.nat_report();
            service.shutdown().await;
            (got, sequence, report)
        })
        .unwrap();

    let upnp_a = matches!(pair.a, Side::Linux { upnp: true });
    let a_key = keys[2];
    let a_ready = ready.clone();
    let a_config = config(upnp_a);
    let a_start = connect_start.clone();
    let direct_within = conditions.direct_within;
    let a_task = net
        .spawn(a, move || async move {
            let (service, mut events) = Service::start(a_config, SecretId::from_bytes(&a_key))
                .await
                .unwrap();
            join_network(&service, r_id, r_addr, e_id, e_addr).await;
            let wait = Instant::now();
            while a_ready.load(Ordering::Acquire) == 0 && wait.elapsed() < Duration::from_secs(10) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let start = Instant::now();
            *a_start.lock().unwrap() = Some(start);
            let mut attempts = 0;
            let mut result = Err(String::from("not tried"));
            let mut remote = None;
            let mut traversal = None;
            while attempts < max_attempts {
                attempts += 1;
                match service.connect_via(b_id, r_id).await {
                    Ok(info) => {
                        traversal = info.traversal;
                        result = Ok((info.path, info.transport));
                        remote = Some(info.remote_addr);
                        break;
                    }
                    Err(e) => result = Err(e.to_string()),
                }
            }
            let elapsed = start.elapsed();
            let mut changes = Vec::new();
            let is_direct = |p: &ConnectionPath| !matches!(p, ConnectionPath::Relayed { .. });
            let mut direct = match &result {
                Ok((path, transport)) if is_direct(path) => Some((elapsed, (*path, *transport))),
                _ => None,
            };
            let mut timing = direct.and(traversal);
            if result.is_ok() {
                let _ = service
                    .send(&b_id, &b"through the NAT"[..], crust::Priority::NORMAL)
                    .await;
                // A stream of numbered messages, across any switch of path.
                for n in 0..STREAM {
                    let _ = service
                        .send(&b_id, n.to_be_bytes().to_vec(), crust::Priority::NORMAL)
                        .await;
                    tokio::time::sleep(STREAM_GAP).await;
                }
                // Time for them to arrive.
                tokio::time::sleep(Duration::from_millis(500)).await;
                while let Some(event) = events.try_recv() {
                    if let Event::ConnectionChanged { peer, info } = event
                        && peer == b_id
                    {
                        changes.push((info.path, info.transport));
                        if direct.is_none() && is_direct(&info.path) {
                            // Seen late: the time is an upper bound.
                            let at = info.connect_time.unwrap_or(start.elapsed());
                            direct = Some((at, (info.path, info.transport)));
                            timing = info.traversal;
                        }
                    }
                }
                // A relayed connection: does a direct one follow in time?
                if let Some(within) = direct_within {
                    while direct.is_none() && start.elapsed() < within {
                        let left = within.saturating_sub(start.elapsed());
                        if let Ok(Some(Event::ConnectionChanged { peer, info })) =
                            tokio::time::timeout(left, events.recv()).await
                            && peer == b_id
                            && is_direct(&info.path)
                        {
                            direct = Some((start.elapsed(), (info.path, info.transport)));
                            timing = info.traversal;
                        }
                    }
                }
            }
            let report = service.nat_report();
            service.shutdown().await;
            (
                result,
                elapsed,
                attempts,
                report,
                remote,
                changes,
                (direct, timing),
            )
        })
        .unwrap();

    let b_ip = t.ip(b);
    // The routers' counters, sampled while `a` works.
    let sampling = Arc::new(AtomicBool::new(true));
    let (result, elapsed, attempts, report_a, remote_addr, a_changes, direct, nat_samples) =
        std::thread::scope(|scope| {
            let sampler = scope.spawn(|| {
                let mut samples = Vec::new();
                while sampling.load(Ordering::Acquire) {
                    let start = *connect_start.lock().unwrap();
                    if let Some(start) = start {
                        let stats = net.stats();
                        samples.push(NatSample {
                            at: start.elapsed(),
                            a: stats.nat("nat-a").copied(),
                            b: if pair.same_nat {
                                None
                            } else {
                                stats.nat("nat-b").copied()
                            },
                        });
                    }
                    std::thread::sleep(SAMPLE_EVERY);
                }
                samples
            });
            let (result, elapsed, attempts, report_a, remote_addr, a_changes, direct) =
                a_task.join().unwrap();
            sampling.store(false, Ordering::Release);
            let samples = sampler.join().unwrap();
            (
                result,
                elapsed,
                attempts,
                report_a,
                remote_addr,
                a_changes,
                direct,
                samples,
            )
        });
    done.store(true, Ordering::Release);
    let (b_got_message, b_sequence, report_b) = b_task.join().unwrap();
    r_task.join().unwrap();
    e_task.join().unwrap();
    net.shutdown();
    Outcome {
        result,
        elapsed,
        attempts,
        report_a,
        report_b,
        b_got_message,
        b_sequence,
        a_changes,
        remote_addr,
        b_ip,
        direct_after: direct.0.map(|(at, _)| at),
        direct: direct.0.map(|(_, d)| d),
        direct_timing: direct.1,
        nat_samples,
    }
}

/// Connects to both public hosts and waits (briefly) for two echoes (and
/// the UPnP mapping, where the service asks for one).
pub async fn join_network(
    service: &Service,
    r_id: crust::PeerId,
    r_addr: SocketAddr,
    e_id: crust::PeerId,
    e_addr: SocketAddr,
) {
    // The public hosts start alongside us: retry until they listen.
    for (id, addr) in [(r_id, r_addr), (e_id, e_addr)] {
        for _ in 0..50 {
            if service.connect(id, &[addr]).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Two echoes, and the UPnP mapping where the gateway offers one: the
    // candidates a peer offers are what its report holds.
    let wants_upnp = service.config().upnp;
    let wait = Instant::now();
    while (service.nat_report().udp_observations.len() < 2
        || (wants_upnp && service.nat_report().upnp.is_none()))
        && wait.elapsed() < Duration::from_secs(6)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
