//! Dialling: a transport connect plus the handshake, to several endpoints at
//! once.

use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::{BoxedStream, ConnectError, DialError, Dialled, Direction, Inner, Transport};
use crate::config::Endpoint;
use crate::id::PeerId;
use crate::secure::{Intent, SecureChannel};

/// Opens the transport's byte stream to `endpoint`; returns it with our
/// local address.
async fn open(
    inner: &Inner,
    endpoint: Endpoint,
    share_port: bool,
) -> Result<(BoxedStream, std::net::SocketAddr), DialError> {
    let io = |e| DialError::Io(Arc::new(e));
    let timeout = inner.config.dial_timeout;
    match endpoint.transport {
        Transport::Tcp => {
            let stream =
                match tokio::time::timeout(timeout, connect_tcp(inner, endpoint.addr, share_port))
                    .await
                {
                    Err(_) => return Err(DialError::Timeout),
                    Ok(result) => result.map_err(io)?,
                };
            // Small messages (pings, chat) must not wait for Nagle.
            let _ = stream.set_nodelay(true);
            let local = stream.local_addr().map_err(io)?;
            Ok((Box::new(stream), local))
        }
        Transport::Utp => {
            let socket = inner.utp.as_ref().ok_or(DialError::TransportDisabled)?;
            let stream = match tokio::time::timeout(timeout, socket.connect(endpoint.addr)).await {
                Err(_) => return Err(DialError::Timeout),
                Ok(result) => result.map_err(io)?,
            };
            let local = socket.local_addr().map_err(io)?;
            Ok((Box::new(stream), local))
        }
    }
}

/// A TCP connection to `addr`, from the listener's port where that works
/// (so the NAT maps the listener's port and the peer's echo reveals the
/// mapping, see `nat::tcp`), else from an ephemeral port (the 4-tuple may
/// be taken, or in `TIME_WAIT` from an earlier connection).
async fn connect_tcp(
    inner: &Inner,
    addr: std::net::SocketAddr,
    share_port: bool,
) -> std::io::Result<TcpStream> {
    let listeners = if share_port {
        inner.nat_report().local_tcp
    } else {
        Vec::new()
    };
    if let Some(local) = crate::nat::tcp::shared_port(&listeners, addr) {
        match crate::nat::tcp::connect_from(local, addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Err(e),
            Err(e) => {
                tracing::trace!(%addr, %local, error = %e, "dial from the listener's port failed")
            }
        }
    }
    TcpStream::connect(addr).await
}

/// Dials one endpoint and runs the handshake.
pub(super) async fn dial(
    inner: &Inner,
    expected: Option<PeerId>,
    endpoint: Endpoint,
    intent: Intent,
) -> Result<Dialled, DialError> {
    dial_with(inner, expected, endpoint, intent, true).await
}

async fn dial_with(
    inner: &Inner,
    expected: Option<PeerId>,
    endpoint: Endpoint,
    intent: Intent,
    share_port: bool,
) -> Result<Dialled, DialError> {
    let started = std::time::Instant::now();
    let (stream, local_addr) = open(inner, endpoint, share_port).await?;
    let channel = SecureChannel::connect(
        stream,
        &inner.secret,
        &inner.config.channel,
        expected,
        intent,
    )
    .await
    .map_err(|e| DialError::Handshake(Arc::new(e)))?;
    Ok(Dialled {
        channel,
        transport: endpoint.transport,
        remote_addr: endpoint.addr,
        local_addr,
        direction: Direction::Outgoing,
        path: super::ConnectionPath::Direct,
        started: Some(started),
    })
}

/// Dials every endpoint concurrently and returns the first success.
///
/// With `late`, the other attempts go on in the background and each later
/// success is registered too: the peer may already have accepted it as a
/// connection (the initiator finishes the handshake first), so it is not
/// simply dropped; the actor's duplicate rule retires it on both sides.
/// Without `late`, the other attempts are cancelled.
pub(super) async fn dial_any(
    inner: &Arc<Inner>,
    expected: Option<PeerId>,
    endpoints: &[Endpoint],
    intent: Intent,
    late: Option<tokio::sync::mpsc::UnboundedSender<super::actor::Command>>,
) -> Result<Dialled, ConnectError> {
    if endpoints.is_empty() {
        return Err(ConnectError::NoAddresses);
    }
    let mut attempts = JoinSet::new();
    let mut unique = endpoints.to_vec();
    unique.sort_by_key(|e| (e.addr, e.transport as u8));
    unique.dedup();
    for endpoint in unique {
        let inner = inner.clone();
        attempts.spawn(async move { (endpoint, dial(&inner, expected, endpoint, intent).await) });
    }
    let mut failures = Vec::new();
    while let Some(joined) = attempts.join_next().await {
        match joined {
            Ok((_, Ok(dialled))) => {
                if let Some(late) = late
                    && !attempts.is_empty()
                {
                    tokio::spawn(async move {
                        while let Some(joined) = attempts.join_next().await {
                            if let Ok((_, Ok(dialled))) = joined {
                                let _ = late.send(super::actor::Command::Register {
                                    dialled: Box::new(dialled),
                                    reply: None,
                                });
                            }
                        }
                    });
                }
                return Ok(dialled);
            }
            Ok((endpoint, Err(e))) => {
                tracing::debug!(%endpoint, error = %e, "dial failed");
                failures.push((endpoint, e));
            }
            Err(_) => {}
        }
    }
    Err(ConnectError::Failed(failures))
}
