//! The probe server: four UDP sockets (two addresses × two ports) and a TCP
//! listener on the primary address and port, answering [`Request`]s.
//!
//! Start it with [`ProbeServer::start`]; it runs on the current tokio
//! runtime until dropped. It never sends to an address other than the one
//! a request came from (a `SendTo` or TCP target must be on the request's
//! source IP), answers are no larger than requests, and at most
//! [`MAX_TCP_TASKS`] TCP tests run at once, so it cannot be used to flood a
//! third party.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpSocket, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::run::SIMULTANEOUS_WINDOW;
use super::wire::{Request, Response, TcpOutcome};

/// TCP tests (connect-backs, simultaneous opens) running at once, at most.
pub const MAX_TCP_TASKS: usize = 32;
/// How long a connect-back waits for an answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The two addresses must differ in IP and in port (RFC 5780).
    #[error("a probe server needs two different IPs and two different ports, got {0} and {1}")]
    Addresses(SocketAddr, SocketAddr),
    /// A socket could not be bound.
    #[error("cannot bind {0}: {1}")]
    Bind(SocketAddr, io::Error),
}

/// A running probe server; stops when dropped.
#[derive(Debug)]
pub struct ProbeServer {
    primary: SocketAddr,
    alternate: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for ProbeServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

struct Shared {
    /// `[ip][port]`: index 0 primary, 1 alternate.
    sockets: [[Arc<UdpSocket>; 2]; 2],
    primary: SocketAddr,
    alternate: SocketAddr,
    tcp_tasks: Arc<Semaphore>,
}

impl ProbeServer {
    /// Binds `primary` and `alternate` (and the two crossed combinations)
    /// for UDP, `primary` for TCP, and starts answering.
    pub async fn start(primary: SocketAddr, alternate: SocketAddr) -> Result<Self, ServerError> {
        if primary.ip() == alternate.ip() || primary.port() == alternate.port() {
            return Err(ServerError::Addresses(primary, alternate));
        }
        let bind = |ip: IpAddr, port: u16| async move {
            let addr = SocketAddr::new(ip, port);
            UdpSocket::bind(addr)
                .await
                .map(Arc::new)
                .map_err(|e| ServerError::Bind(addr, e))
        };
        let (ips, ports) = (
            [primary.ip(), alternate.ip()],
            [primary.port(), alternate.port()],
        );
        let sockets = [
            [bind(ips[0], ports[0]).await?, bind(ips[0], ports[1]).await?],
            [bind(ips[1], ports[0]).await?, bind(ips[1], ports[1]).await?],
        ];
        let listener = TcpListener::bind(primary)
            .await
            .map_err(|e| ServerError::Bind(primary, e))?;
        let shared = Arc::new(Shared {
            sockets,
            primary,
            alternate,
            tcp_tasks: Arc::new(Semaphore::new(MAX_TCP_TASKS)),
        });
        let mut tasks = Vec::new();
        for i in 0..2 {
            for j in 0..2 {
                tasks.push(tokio::spawn(serve_udp(shared.clone(), i, j)));
            }
        }
        tasks.push(tokio::spawn(serve_tcp(shared, listener)));
        Ok(ProbeServer {
            primary,
            alternate,
            tasks,
        })
    }

    /// A server on two loopback addresses, 127.0.0.1 and 127.0.0.2, with
    /// free ports, for tests and for checking the probe on one machine
    /// (no NAT between them, so everything reads as open). Retries when a
    /// guessed port pair turns out to be taken; the last error if none
    /// works.
    pub async fn start_on_loopback() -> Result<Self, ServerError> {
        let mut last = None;
        for _ in 0..50 {
            let port = std::net::UdpSocket::bind("127.0.0.1:0")
                .and_then(|s| s.local_addr())
                .map_err(|e| ServerError::Bind(SocketAddr::from(([127, 0, 0, 1], 0)), e))?
                .port();
            let Some(next) = port.checked_add(1) else {
                continue;
            };
            let primary = SocketAddr::from(([127, 0, 0, 1], port));
            let alternate = SocketAddr::from(([127, 0, 0, 2], next));
            match ProbeServer::start(primary, alternate).await {
                Ok(server) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(ServerError::Addresses(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            SocketAddr::from(([127, 0, 0, 2], 0)),
        )))
    }

    /// The primary address (what clients are given).
    pub fn primary(&self) -> SocketAddr {
        self.primary
    }

    /// The alternate address.
    pub fn alternate(&self) -> SocketAddr {
        self.alternate
    }
}

async fn serve_udp(shared: Arc<Shared>, ip: usize, port: usize) {
    let socket = shared.sockets[ip][port].clone();
    let mut buf = [0u8; 512];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            // ICMP errors from earlier sends; nothing to do.
            Err(_) => continue,
        };
        match Request::decode(&buf[..n]) {
            Ok(request) => handle(&shared, ip, port, request, from).await,
            Err(e) => tracing::trace!(%from, error = %e, "probe server: bad request"),
        }
    }
}

async fn handle(shared: &Arc<Shared>, ip: usize, port: usize, request: Request, from: SocketAddr) {
    let pick = |change: super::wire::Change| {
        let i = if change.ip { 1 - ip } else { ip };
        let j = if change.port { 1 - port } else { port };
        shared.sockets[i][j].clone()
    };
    let other = SocketAddr::new(
        shared.sockets[1 - ip][1 - port]
            .local_addr()
            .map(|a| a.ip())
            .unwrap_or(shared.alternate.ip()),
        if port == 0 {
            shared.alternate.port()
        } else {
            shared.primary.port()
        },
    );
    match request {
        Request::Binding { txid, change } => {
            let socket = pick(change);
            let origin = socket.local_addr().unwrap_or(shared.primary);
            let answer = Response::Binding {
                txid,
                observed: from,
                origin,
                other,
            };
            let _ = socket.send_to(&answer.encode(), from).await;
        }
        Request::SendTo {
            txid,
            change,
            target,
        } => {
            if target.ip() != from.ip() {
                tracing::debug!(%from, %target, "probe server: refusing to send elsewhere");
                return;
            }
            let socket = pick(change);
            let origin = socket.local_addr().unwrap_or(shared.primary);
            let answer = Response::Binding {
                txid,
                observed: from,
                origin,
                other,
            };
            let _ = socket.send_to(&answer.encode(), target).await;
        }
        Request::TcpConnect { txid, target } | Request::TcpSimultaneous { txid, target } => {
            if target.ip() != from.ip() {
                tracing::debug!(%from, %target, "probe server: refusing to connect elsewhere");
                return;
            }
            let Ok(permit) = shared.tcp_tasks.clone().try_acquire_owned() else {
                return;
            };
            let reply = shared.sockets[ip][port].clone();
            let alt_ip = shared.alternate.ip();
            let simultaneous = matches!(request, Request::TcpSimultaneous { .. });
            tokio::spawn(async move {
                let outcome = if simultaneous {
                    simultaneous_open(alt_ip, target, txid, &reply, from).await
                } else {
                    connect_back(alt_ip, target).await
                };
                let _ = reply
                    .send_to(&Response::Tcp { txid, outcome }.encode(), from)
                    .await;
                drop(permit);
            });
        }
    }
}

fn tcp_socket(ip: IpAddr) -> io::Result<TcpSocket> {
    let socket = if ip.is_ipv6() {
        TcpSocket::new_v6()?
    } else {
        TcpSocket::new_v4()?
    };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    Ok(socket)
}

fn outcome_of(
    result: Result<io::Result<tokio::net::TcpStream>, tokio::time::error::Elapsed>,
) -> TcpOutcome {
    match result {
        Ok(Ok(_)) => TcpOutcome::Connected,
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => TcpOutcome::Refused,
        Ok(Err(_)) => TcpOutcome::Unreachable,
        Err(_) => TcpOutcome::TimedOut,
    }
}

async fn connect_back(from_ip: IpAddr, target: SocketAddr) -> TcpOutcome {
    let Ok(socket) = tcp_socket(from_ip) else {
        return TcpOutcome::Unreachable;
    };
    if socket.bind(SocketAddr::new(from_ip, 0)).is_err() {
        return TcpOutcome::Unreachable;
    }
    outcome_of(tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(target)).await)
}

/// Tells the client our port, then connects to it from that port again
/// and again until the SYNs cross or the window closes.
async fn simultaneous_open(
    from_ip: IpAddr,
    target: SocketAddr,
    txid: u64,
    reply: &UdpSocket,
    client: SocketAddr,
) -> TcpOutcome {
    let Ok(first) = tcp_socket(from_ip) else {
        return TcpOutcome::Unreachable;
    };
    if first.bind(SocketAddr::new(from_ip, 0)).is_err() {
        return TcpOutcome::Unreachable;
    }
    let Ok(addr) = first.local_addr() else {
        return TcpOutcome::Unreachable;
    };
    let ready = Response::TcpReady { txid, addr }.encode();
    let _ = reply.send_to(&ready, client).await;
    let deadline = tokio::time::Instant::now() + SIMULTANEOUS_WINDOW;
    let mut socket = Some(first);
    let mut last = TcpOutcome::TimedOut;
    while tokio::time::Instant::now() < deadline {
        let s = match socket.take() {
            Some(s) => s,
            None => match tcp_socket(from_ip).and_then(|s| s.bind(addr).map(|()| s)) {
                Ok(s) => s,
                Err(_) => return TcpOutcome::Unreachable,
            },
        };
        let attempt = tokio::time::timeout(Duration::from_millis(500), s.connect(target)).await;
        last = outcome_of(attempt);
        if last == TcpOutcome::Connected {
            // Hold it a moment so the client's side completes too.
            tokio::time::sleep(Duration::from_millis(200)).await;
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    last
}

async fn serve_tcp(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let Ok((mut stream, from)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let origin = stream.local_addr().unwrap_or(shared.primary);
        let answer = Response::Binding {
            txid: 0,
            observed: from,
            origin,
            other: shared.alternate,
        };
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                stream.write_all(&answer.encode()).await?;
                stream.shutdown().await
            })
            .await;
        });
    }
}
