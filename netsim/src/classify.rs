//! An RFC 5780-style NAT classifier: a probe server with two addresses and
//! two ports, and a client that works out, with real UDP sockets, the NAT in
//! front of it: mapping and filtering behaviour, port assignment and
//! hairpinning.
//!
//! Run [`serve_probes`] in a public host with two addresses, then
//! [`classify`] in the host behind the NAT. The server stops when it receives
//! the datagram `NSQUIT` (see [`stop_probes`]).
//!
//! Wire format (UDP): request `NSP1 | txid u64 | mode u8`, where mode 0 asks
//! for a reply from the same socket, 1 from the other port, 2 from the other
//! address and port; reply `NSR1 | txid u64 | observed ip (4) | port (2)`.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use serde::Serialize;
use tokio::net::UdpSocket;

use crate::nat::Dependence;

/// How the NAT picks external ports, as observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PortBehaviour {
    /// The external port equals the internal one.
    Preserving,
    /// Consecutive mappings differ by a constant delta.
    Sequential(i32),
    /// No pattern.
    Random,
}

/// What [`classify`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NatReport {
    /// Whether the mapped address differs from the local one.
    pub behind_nat: bool,
    /// Mapping behaviour.
    pub mapping: Dependence,
    /// Filtering behaviour.
    pub filtering: Dependence,
    /// Port assignment.
    pub ports: PortBehaviour,
    /// Whether a packet to one's own mapped address comes back in.
    pub hairpinning: bool,
    /// The first mapped address seen.
    pub mapped: SocketAddrV4,
}

/// Why classification failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClassifyError {
    /// No probe got an answer: UDP is blocked (or the server is down).
    #[error("no answer from the probe server: UDP blocked or server down")]
    UdpBlocked,
    /// A socket operation failed.
    #[error("probe socket: {0}")]
    Io(#[from] io::Error),
}

const QUIT: &[u8] = b"NSQUIT";

/// Serves probes on `addrs[0..2]` × `port, port + 1` until `NSQUIT` arrives.
pub async fn serve_probes(addrs: [Ipv4Addr; 2], port: u16) -> io::Result<()> {
    let mut socks = Vec::new();
    for a in addrs {
        for p in [port, port + 1] {
            socks.push(UdpSocket::bind((a, p)).await?);
        }
    }
    // Socket index: address * 2 + port offset.
    let socks = std::sync::Arc::new(socks);
    let (quit_tx, mut quit_rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut tasks = Vec::new();
    for i in 0..socks.len() {
        let socks = socks.clone();
        let quit_tx = quit_tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut buf = [0u8; 64];
            loop {
                let Ok((n, from)) = socks[i].recv_from(&mut buf).await else {
                    continue;
                };
                let msg = &buf[..n];
                if msg == QUIT {
                    let _ = quit_tx.send(()).await;
                    return;
                }
                if n != 13 || &msg[..4] != b"NSP1" {
                    continue;
                }
                let SocketAddr::V4(from4) = from else {
                    continue;
                };
                let reply_from = match msg[12] {
                    0 => i,
                    1 => i ^ 1,
                    _ => i ^ 3,
                };
                let mut out = Vec::with_capacity(18);
                out.extend_from_slice(b"NSR1");
                out.extend_from_slice(&msg[4..12]);
                out.extend_from_slice(&from4.ip().octets());
                out.extend_from_slice(&from4.port().to_be_bytes());
                let _ = socks[reply_from].send_to(&out, from).await;
            }
        }));
    }
    drop(quit_tx);
    let _ = quit_rx.recv().await;
    for t in tasks {
        t.abort();
    }
    Ok(())
}

/// Tells a probe server to stop.
pub async fn stop_probes(server: Ipv4Addr, port: u16) -> io::Result<()> {
    let s = UdpSocket::bind("0.0.0.0:0").await?;
    for _ in 0..3 {
        s.send_to(QUIT, (server, port)).await?;
    }
    Ok(())
}

async fn query(
    s: &UdpSocket,
    to: (Ipv4Addr, u16),
    mode: u8,
    tries: u32,
    wait: Duration,
) -> io::Result<Option<SocketAddrV4>> {
    let txid: u64 = rand_txid();
    let mut req = Vec::with_capacity(13);
    req.extend_from_slice(b"NSP1");
    req.extend_from_slice(&txid.to_be_bytes());
    req.push(mode);
    for _ in 0..tries {
        s.send_to(&req, to).await?;
        let deadline = tokio::time::Instant::now() + wait;
        let mut b = [0u8; 64];
        while let Ok(r) = tokio::time::timeout_at(deadline, s.recv_from(&mut b)).await {
            let (n, _) = r?;
            if n == 18 && &b[..4] == b"NSR1" && b[4..12] == txid.to_be_bytes() {
                let ip = Ipv4Addr::new(b[12], b[13], b[14], b[15]);
                return Ok(Some(SocketAddrV4::new(
                    ip,
                    u16::from_be_bytes([b[16], b[17]]),
                )));
            }
        }
    }
    Ok(None)
}

fn rand_txid() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    crate::fate::hash(&[
        t.as_nanos() as u64,
        N.fetch_add(1, Ordering::Relaxed),
        u64::from(std::process::id()),
    ])
}

async fn fresh() -> io::Result<UdpSocket> {
    UdpSocket::bind("0.0.0.0:0").await
}

fn local_port(s: &UdpSocket) -> io::Result<u16> {
    Ok(s.local_addr()?.port())
}

/// Classifies the NAT between this host and a probe server at
/// `server[0..2]`, ports `port` and `port + 1`.
pub async fn classify(server: [Ipv4Addr; 2], port: u16) -> Result<NatReport, ClassifyError> {
    let ok = (3, Duration::from_millis(300));
    let fail = (2, Duration::from_millis(250));
    let s = fresh().await?;
    let Some(m1) = query(&s, (server[0], port), 0, ok.0, ok.1).await? else {
        return Err(ClassifyError::UdpBlocked);
    };
    let probe = std::net::UdpSocket::bind("0.0.0.0:0")?;
    probe.connect((server[0], port))?;
    let local_ip = match probe.local_addr()? {
        SocketAddr::V4(a) => *a.ip(),
        SocketAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    };
    let behind_nat = *m1.ip() != local_ip;
    let m2 = query(&s, (server[1], port), 0, ok.0, ok.1).await?;
    let m3 = query(&s, (server[1], port + 1), 0, ok.0, ok.1).await?;
    let mapping = if Some(m1) == m2 && m2 == m3 {
        Dependence::EndpointIndependent
    } else if m2 == m3 {
        Dependence::AddressDependent
    } else {
        Dependence::AddressAndPortDependent
    };

    let f = fresh().await?;
    let filtering = if query(&f, (server[0], port), 2, fail.0, fail.1)
        .await?
        .is_some()
    {
        Dependence::EndpointIndependent
    } else if query(&f, (server[0], port), 1, fail.0, fail.1)
        .await?
        .is_some()
    {
        Dependence::AddressDependent
    } else {
        Dependence::AddressAndPortDependent
    };

    let mut locals = Vec::new();
    let mut mapped = Vec::new();
    for _ in 0..4 {
        let p = fresh().await?;
        locals.push(local_port(&p)?);
        let m = query(&p, (server[0], port), 0, ok.0, ok.1)
            .await?
            .ok_or(ClassifyError::UdpBlocked)?;
        mapped.push(m.port());
    }
    let ports = if locals == mapped {
        PortBehaviour::Preserving
    } else {
        let deltas: Vec<i32> = mapped
            .windows(2)
            .map(|w| i32::from(w[1]) - i32::from(w[0]))
            .collect();
        if deltas.iter().all(|d| *d == deltas[0]) && (1..=64).contains(&deltas[0].abs()) {
            PortBehaviour::Sequential(deltas[0])
        } else {
            PortBehaviour::Random
        }
    };

    let h1 = fresh().await?;
    let h2 = fresh().await?;
    let hm1 = query(&h1, (server[0], port), 0, ok.0, ok.1)
        .await?
        .ok_or(ClassifyError::UdpBlocked)?;
    let hm2 = query(&h2, (server[0], port), 0, ok.0, ok.1)
        .await?
        .ok_or(ClassifyError::UdpBlocked)?;
    // Open h1's filter towards h2's mapping first, so filtering alone does
    // not hide hairpinning.
    h1.send_to(b"open", hm2).await?;
    let mut hairpinning = false;
    for _ in 0..2 {
        h2.send_to(b"hairpin", hm1).await?;
        let mut b = [0u8; 16];
        let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
        while let Ok(r) = tokio::time::timeout_at(deadline, h1.recv_from(&mut b)).await {
            if r.is_ok_and(|(n, _)| &b[..n] == b"hairpin") {
                hairpinning = true;
                break;
            }
        }
        if hairpinning {
            break;
        }
    }
    Ok(NatReport {
        behind_nat,
        mapping,
        filtering,
        ports,
        hairpinning,
        mapped: m1,
    })
}
