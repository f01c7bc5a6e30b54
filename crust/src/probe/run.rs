//! Executes a [`Plan`]: real sockets, the probe server's answers, into
//! [`Observations`], then [`classify`](super::classify::classify).
//!
//! Every request is retransmitted at most `attempts` times, so the traffic
//! is bounded (a few dozen datagrams of 80 bytes and a handful of TCP
//! connections), and every wait has a deadline, so the plan's budget bounds
//! the time.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::{TcpSocket, UdpSocket};

use super::classify::{Observations, UpnpSeen, classify};
use super::plan::{Plan, ProbeConfig, Step};
use super::report::{Addresses, Outcome, ProbeReport, Technique};
use super::wire::{Change, Request, Response, TcpOutcome};

/// How long the server keeps trying a simultaneous open.
pub(crate) const SIMULTANEOUS_WINDOW: Duration = Duration::from_secs(3);

/// Why a probe could not run at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// No server address given.
    #[error("no probe server given")]
    NoServer,
    /// A local socket could not be opened.
    #[error("cannot open a socket: {0}")]
    Socket(#[from] io::Error),
}

/// Runs the probe against `config`'s servers. UDP being blocked is a
/// finding, not an error.
pub async fn probe(config: &ProbeConfig) -> Result<ProbeReport, ProbeError> {
    if config.servers.is_empty() {
        return Err(ProbeError::NoServer);
    }
    let started = Instant::now();
    let plan = Plan::new(config);
    let mut o = Observations {
        local_ips: local_ips(&config.servers),
        ..Observations::default()
    };
    let mut p = Probe {
        config,
        primary: config.servers[0],
        other: None,
        next_txid: u64::from_be_bytes(random_bytes()),
    };
    let mut addresses = Addresses::default();
    let mut outcomes = Vec::new();
    for phase in &plan.phases {
        if phase.first() == Some(&Step::Mapping) {
            // Phase one counts mappings: one step after the other, each
            // knowing what the one before found (the answering server).
            for step in phase {
                let r = p.step(step.clone()).await?;
                r.apply(&mut o, &mut p, &mut addresses, &mut outcomes);
            }
            continue;
        }
        // The other phases' steps run concurrently; they fill disjoint
        // fields.
        let futures: Vec<_> = phase.iter().map(|step| p.step(step.clone())).collect();
        for r in futures_join(futures).await {
            r?.apply(&mut o, &mut p, &mut addresses, &mut outcomes);
        }
    }
    addresses.local = o.local_ips.clone();
    addresses.external_udp = o.mapping[0].or(o.port_samples.first().map(|s| s.1));
    let findings = classify(&o);
    Ok(ProbeReport {
        findings,
        addresses,
        outcomes,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// Polls futures together, returning their outputs in order.
async fn futures_join<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut set = Vec::with_capacity(futures.len());
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, f) in out.iter_mut().zip(set.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// The addresses we send from towards each server (asking the routing
/// table; nothing is sent), and the primary interface's.
fn local_ips(servers: &[SocketAddr]) -> Vec<IpAddr> {
    let mut ips = crate::nat::local_ips(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    for server in servers {
        let towards =
            std::net::UdpSocket::bind(SocketAddr::new(unspecified(*server), 0)).and_then(|s| {
                s.connect(server)?;
                s.local_addr()
            });
        if let Ok(local) = towards
            && !ips.contains(&local.ip())
        {
            ips.push(local.ip());
        }
    }
    ips
}

fn random_bytes() -> [u8; 8] {
    let mut b = [0; 8];
    // A fixed txid base only makes answers guessable, not wrong.
    let _ = getrandom::fill(&mut b);
    b
}

struct Probe<'a> {
    config: &'a ProbeConfig,
    primary: SocketAddr,
    /// The server's other address and port, learnt from its first answer.
    other: Option<SocketAddr>,
    next_txid: u64,
}

/// One step's result, applied to the observations after the phase.
enum StepResult {
    Mapping {
        primary: Option<SocketAddr>,
        other: Option<SocketAddr>,
        local_port: u16,
        seen: [Option<SocketAddr>; 3],
    },
    Ports(Vec<(u16, SocketAddr)>),
    Filtering(Option<(bool, bool)>),
    Hairpin(Option<bool>),
    Tcp(TcpSeen),
    Upnp(Option<UpnpSeen>),
    Ipv6(bool),
    Lifetime(Vec<(Duration, bool)>),
}

#[derive(Default)]
struct TcpSeen {
    mapping: Option<(SocketAddr, SocketAddr)>,
    unsolicited: Option<TcpOutcome>,
    simultaneous: Option<bool>,
}

impl StepResult {
    fn apply(
        self,
        o: &mut Observations,
        p: &mut Probe<'_>,
        addresses: &mut Addresses,
        outcomes: &mut Vec<Outcome>,
    ) {
        let mut outcome = |technique, success| {
            outcomes.push(Outcome {
                peer_nat: "none".into(),
                technique,
                success,
            })
        };
        match self {
            StepResult::Mapping {
                primary,
                other,
                local_port,
                seen,
            } => {
                if let Some(primary) = primary {
                    p.primary = primary;
                }
                p.other = other;
                o.mapping_local_port = local_port;
                o.mapping = seen;
            }
            StepResult::Ports(samples) => o.port_samples = samples,
            StepResult::Filtering(f) => o.filtering = f,
            StepResult::Hairpin(h) => o.hairpin = h,
            StepResult::Tcp(t) => {
                o.tcp_tried = true;
                o.tcp = t.mapping;
                o.tcp_unsolicited = t.unsolicited;
                o.tcp_simultaneous = t.simultaneous;
                addresses.external_tcp = t.mapping.map(|m| m.1);
                outcome(Technique::DirectOutbound, t.mapping.is_some());
                if let Some(s) = t.simultaneous {
                    outcome(Technique::TcpSimultaneousOpen, s);
                }
            }
            StepResult::Upnp(u) => {
                addresses.upnp_external = u.and_then(|u| u.external_ip);
                if let Some(r) = u.and_then(|u| u.reachable) {
                    outcome(Technique::Upnp, r);
                }
                o.upnp = Some(u);
            }
            StepResult::Ipv6(v) => o.ipv6 = Some(v),
            StepResult::Lifetime(l) => o.lifetime = l,
        }
    }
}

impl Probe<'_> {
    fn txid(&mut self) -> u64 {
        self.next_txid = self.next_txid.wrapping_add(1);
        self.next_txid
    }

    /// Runs one step. Takes what it needs from `self` up front so that the
    /// steps of a phase can run at once.
    fn step(
        &mut self,
        step: Step,
    ) -> impl std::future::Future<Output = io::Result<StepResult>> + use<> {
        let config = self.config.clone();
        let primary = self.primary;
        let other = self.other;
        // Each step gets its own block of transaction ids.
        let base = self.txid();
        self.next_txid = self.next_txid.wrapping_add(1 << 16);
        async move {
            let mut t = Txids(base);
            let ex = Exchange {
                retransmit: config.retransmit,
                attempts: config.attempts,
            };
            Ok(match step {
                Step::Mapping => mapping(&config, ex, &mut t).await?,
                Step::PortAllocation(n) => StepResult::Ports(ports(primary, n, ex, &mut t).await?),
                Step::Filtering => {
                    StepResult::Filtering(filtering(primary, other, ex, &mut t).await?)
                }
                Step::Hairpinning => StepResult::Hairpin(hairpin(primary, ex, &mut t).await?),
                Step::Tcp => StepResult::Tcp(tcp(&config, primary, other, ex, &mut t).await?),
                Step::Upnp => StepResult::Upnp(upnp(&config, primary, ex, &mut t).await?),
                Step::Ipv6(server) => StepResult::Ipv6(ipv6(server, ex, &mut t).await),
                Step::Lifetime(waits) => {
                    StepResult::Lifetime(lifetime(primary, waits, ex, &mut t).await?)
                }
            })
        }
    }
}

struct Txids(u64);

impl Txids {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        self.0
    }
}

#[derive(Clone, Copy)]
struct Exchange {
    retransmit: Duration,
    attempts: u32,
}

async fn udp_socket() -> io::Result<UdpSocket> {
    UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await
}

/// Sends `request` to `to` until a response with its txid arrives on
/// `socket` (from anywhere), at most `attempts` times.
async fn exchange(
    socket: &UdpSocket,
    to: SocketAddr,
    request: Request,
    ex: Exchange,
) -> io::Result<Option<Response>> {
    let bytes = request.encode();
    for _ in 0..ex.attempts {
        socket.send_to(&bytes, to).await?;
        if let Some(r) = wait_for(socket, request.txid(), ex.retransmit).await {
            return Ok(Some(r));
        }
    }
    Ok(None)
}

/// Waits up to `patience` for a response with `txid`; anything else is
/// ignored.
async fn wait_for(socket: &UdpSocket, txid: u64, patience: Duration) -> Option<Response> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut buf = [0u8; 256];
    loop {
        let received = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await;
        match received {
            Err(_) => return None,
            // ICMP errors surface as recv errors on Linux; keep waiting.
            Ok(Err(_)) => continue,
            Ok(Ok((n, _))) => {
                if let Ok(r) = Response::decode(&buf[..n])
                    && r.txid() == txid
                {
                    return Some(r);
                }
            }
        }
    }
}

async fn binding(
    socket: &UdpSocket,
    to: SocketAddr,
    change: Change,
    ex: Exchange,
    t: &mut Txids,
) -> io::Result<Option<(SocketAddr, SocketAddr)>> {
    let request = Request::Binding {
        txid: t.next(),
        change,
    };
    Ok(match exchange(socket, to, request, ex).await? {
        Some(Response::Binding {
            observed, other, ..
        }) => Some((observed, other)),
        _ => None,
    })
}

/// RFC 5780 4.3: the same socket seen from the primary address, the other
/// address, and the other address and port.
async fn mapping(config: &ProbeConfig, ex: Exchange, t: &mut Txids) -> io::Result<StepResult> {
    let socket = udp_socket().await?;
    let local_port = socket.local_addr()?.port();
    let mut seen = [None; 3];
    for &server in &config.servers {
        if let Some((observed, other)) = binding(&socket, server, Change::default(), ex, t).await? {
            seen[0] = Some(observed);
            let same_port = SocketAddr::new(other.ip(), server.port());
            seen[1] = binding(&socket, same_port, Change::default(), ex, t)
                .await?
                .map(|b| b.0);
            seen[2] = binding(&socket, other, Change::default(), ex, t)
                .await?
                .map(|b| b.0);
            return Ok(StepResult::Mapping {
                primary: Some(server),
                other: Some(other),
                local_port,
                seen,
            });
        }
    }
    Ok(StepResult::Mapping {
        primary: None,
        other: None,
        local_port,
        seen,
    })
}

/// Fresh sockets, one binding each, one after the other.
async fn ports(
    primary: SocketAddr,
    n: usize,
    ex: Exchange,
    t: &mut Txids,
) -> io::Result<Vec<(u16, SocketAddr)>> {
    let mut samples = Vec::new();
    for _ in 0..n {
        let socket = udp_socket().await?;
        let local = socket.local_addr()?.port();
        if let Some((observed, _)) = binding(&socket, primary, Change::default(), ex, t).await? {
            samples.push((local, observed));
        }
    }
    Ok(samples)
}

/// RFC 5780 4.4, on a socket that only ever talks to the primary address.
async fn filtering(
    primary: SocketAddr,
    other: Option<SocketAddr>,
    ex: Exchange,
    t: &mut Txids,
) -> io::Result<Option<(bool, bool)>> {
    if other.is_none() {
        return Ok(None);
    }
    let socket = udp_socket().await?;
    if binding(&socket, primary, Change::default(), ex, t)
        .await?
        .is_none()
    {
        return Ok(None);
    }
    let both = Change {
        ip: true,
        port: true,
    };
    let from_other = binding(&socket, primary, both, ex, t).await?.is_some();
    let port = Change {
        ip: false,
        port: true,
    };
    let from_other_port = from_other || binding(&socket, primary, port, ex, t).await?.is_some();
    Ok(Some((from_other, from_other_port)))
}

/// Two sockets send to each other's external address (both ways, so that
/// a filtering NAT has seen each socket send to the other first, as a
/// hole punch between two peers behind one NAT would).
async fn hairpin(primary: SocketAddr, ex: Exchange, t: &mut Txids) -> io::Result<Option<bool>> {
    let a = udp_socket().await?;
    let b = udp_socket().await?;
    let Some((external_a, _)) = binding(&a, primary, Change::default(), ex, t).await? else {
        return Ok(None);
    };
    let Some((external_b, _)) = binding(&b, primary, Change::default(), ex, t).await? else {
        return Ok(None);
    };
    let txid = t.next();
    // A response-shaped datagram, so that `wait_for` takes it.
    let bytes = Response::Tcp {
        txid,
        outcome: TcpOutcome::Connected,
    }
    .encode();
    for _ in 0..ex.attempts {
        // Some NATs answer hairpinned packets with ICMP; that is a "no".
        let _ = a.send_to(&bytes, external_b).await;
        let _ = b.send_to(&bytes, external_a).await;
        let (to_a, to_b) = tokio::join!(
            wait_for(&a, txid, ex.retransmit),
            wait_for(&b, txid, ex.retransmit)
        );
        if to_a.is_some() || to_b.is_some() {
            return Ok(Some(true));
        }
    }
    Ok(Some(false))
}

fn reusable_tcp(v6: bool) -> io::Result<TcpSocket> {
    let socket = if v6 {
        TcpSocket::new_v6()?
    } else {
        TcpSocket::new_v4()?
    };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    Ok(socket)
}

/// Outgoing TCP (the server says what it saw), the unsolicited SYN, then
/// simultaneous open from the same local port.
async fn tcp(
    config: &ProbeConfig,
    primary: SocketAddr,
    other: Option<SocketAddr>,
    ex: Exchange,
    t: &mut Txids,
) -> io::Result<TcpSeen> {
    let mut seen = TcpSeen::default();
    let socket = reusable_tcp(primary.is_ipv6())?;
    socket.bind(SocketAddr::new(unspecified(primary), 0))?;
    let local = socket.local_addr()?;
    let connected = tokio::time::timeout(config.tcp_timeout, socket.connect(primary)).await;
    let Ok(Ok(mut stream)) = connected else {
        return Ok(seen);
    };
    let mut buf = Vec::new();
    let read = tokio::time::timeout(config.tcp_timeout, async {
        use tokio::io::AsyncReadExt as _;
        (&mut stream).take(256).read_to_end(&mut buf).await
    })
    .await;
    let Some(external) = read
        .ok()
        .and_then(Result::ok)
        .and_then(|_| Response::decode(&buf).ok())
        .and_then(|r| match r {
            Response::Binding { observed, .. } => Some(observed),
            _ => None,
        })
    else {
        return Ok(seen);
    };
    let local = SocketAddr::new(
        stream.local_addr().map(|a| a.ip()).unwrap_or(local.ip()),
        local.port(),
    );
    seen.mapping = Some((local, external));
    if other.is_none() {
        return Ok(seen);
    }
    let control = udp_socket().await?;
    // A port nothing of ours maps: what the router does with a stray SYN.
    let stray = SocketAddr::new(
        external.ip(),
        if external.port() > 40000 {
            external.port() - 7919
        } else {
            external.port() + 7919
        },
    );
    let slow = Exchange {
        retransmit: config.tcp_timeout + ex.retransmit,
        attempts: 2,
    };
    let request = Request::TcpConnect {
        txid: t.next(),
        target: stray,
    };
    if let Some(Response::Tcp { outcome, .. }) = exchange(&control, primary, request, slow).await? {
        seen.unsolicited = Some(outcome);
    }
    seen.simultaneous = simultaneous(&control, primary, local, external, ex, t).await?;
    drop(stream);
    Ok(seen)
}

/// The server connects to `external` from a fresh port while we connect to
/// that port from `local`'s port: the SYNs cross.
async fn simultaneous(
    control: &UdpSocket,
    primary: SocketAddr,
    local: SocketAddr,
    external: SocketAddr,
    ex: Exchange,
    t: &mut Txids,
) -> io::Result<Option<bool>> {
    let request = Request::TcpSimultaneous {
        txid: t.next(),
        target: external,
    };
    let Some(Response::TcpReady { addr, .. }) = exchange(control, primary, request, ex).await?
    else {
        return Ok(None);
    };
    let deadline = tokio::time::Instant::now() + SIMULTANEOUS_WINDOW;
    while tokio::time::Instant::now() < deadline {
        let socket = reusable_tcp(addr.is_ipv6())?;
        socket.bind(SocketAddr::new(unspecified(addr), local.port()))?;
        // Short attempts: each sends a fresh SYN, so one of them meets the
        // server's own attempt (the kernel would wait a second before
        // sending the SYN again).
        let attempt = (tokio::time::Instant::now() + Duration::from_millis(400)).min(deadline);
        match tokio::time::timeout_at(attempt, socket.connect(addr)).await {
            Ok(Ok(_stream)) => return Ok(Some(true)),
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(_) => {}
        }
    }
    Ok(Some(false))
}

fn unspecified(like: SocketAddr) -> IpAddr {
    if like.is_ipv6() {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    }
}

/// Asks the gateway to map a socket, then the server to send to the
/// mapping from its other address.
async fn upnp(
    config: &ProbeConfig,
    primary: SocketAddr,
    ex: Exchange,
    t: &mut Txids,
) -> io::Result<Option<UpnpSeen>> {
    let timeout = config.upnp_timeout;
    let Ok(Ok(gateway)) =
        tokio::task::spawn_blocking(move || crate::nat::upnp::search(timeout)).await
    else {
        return Ok(None);
    };
    let socket = udp_socket().await?;
    let Some(ip) = crate::nat::local_ips(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
        .first()
        .copied()
    else {
        return Ok(Some(UpnpSeen {
            external_ip: None,
            mapped: None,
            reachable: None,
        }));
    };
    let request = crate::nat::upnp::Request {
        udp: Some(SocketAddr::new(ip, socket.local_addr()?.port())),
        tcp: None,
        lease: Duration::from_secs(60),
    };
    let gateway = std::sync::Arc::new(gateway);
    let gw = gateway.clone();
    let mapped = tokio::task::spawn_blocking(move || crate::nat::upnp::map(&gw, request, None))
        .await
        .ok();
    let external_ip = {
        let gw = gateway.clone();
        tokio::task::spawn_blocking(move || gw.get_external_ip().ok())
            .await
            .ok()
            .flatten()
    };
    let Some(Ok(mapping)) = mapped else {
        return Ok(Some(UpnpSeen {
            external_ip,
            mapped: None,
            reachable: None,
        }));
    };
    let mut reachable = None;
    if let Some(target) = mapping.udp {
        let control = udp_socket().await?;
        let request = Request::SendTo {
            txid: t.next(),
            change: Change {
                ip: true,
                port: true,
            },
            target,
        };
        let bytes = request.encode();
        let mut got = false;
        for _ in 0..ex.attempts {
            control.send_to(&bytes, primary).await?;
            if wait_for(&socket, request.txid(), ex.retransmit)
                .await
                .is_some()
            {
                got = true;
                break;
            }
        }
        reachable = Some(got);
    }
    let gw = gateway.clone();
    let m = mapping.clone();
    let _ = tokio::task::spawn_blocking(move || crate::nat::upnp::unmap(&gw, &m)).await;
    Ok(Some(UpnpSeen {
        external_ip: external_ip.or(Some(mapping.external_ip)),
        mapped: mapping.udp,
        reachable,
    }))
}

async fn ipv6(server: SocketAddr, ex: Exchange, t: &mut Txids) -> bool {
    let Ok(socket) = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).await else {
        return false;
    };
    matches!(
        binding(&socket, server, Change::default(), ex, t).await,
        Ok(Some(_))
    )
}

/// Mappings made at once, each tested after its idle time by a datagram
/// from the server's primary socket (which the mapping's filter admits).
async fn lifetime(
    primary: SocketAddr,
    waits: Vec<Duration>,
    ex: Exchange,
    t: &mut Txids,
) -> io::Result<Vec<(Duration, bool)>> {
    let mut tests = Vec::new();
    for wait in waits {
        let socket = udp_socket().await?;
        if let Some((external, _)) = binding(&socket, primary, Change::default(), ex, t).await? {
            tests.push((wait, socket, external, t.next()));
        }
    }
    let checks = tests
        .into_iter()
        .map(|(wait, socket, external, txid)| async move {
            tokio::time::sleep(wait).await;
            let control = udp_socket().await?;
            let bytes = Request::SendTo {
                txid,
                change: Change::default(),
                target: external,
            }
            .encode();
            for _ in 0..ex.attempts {
                control.send_to(&bytes, primary).await?;
                if wait_for(&socket, txid, ex.retransmit).await.is_some() {
                    return Ok::<_, io::Error>((wait, true));
                }
            }
            Ok((wait, false))
        });
    futures_join(checks.collect()).await.into_iter().collect()
}
