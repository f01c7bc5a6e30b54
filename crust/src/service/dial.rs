//! Dialling: TCP connect plus handshake, to several addresses at once.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::{ConnectError, DialError, Dialled, Direction, Inner};
use crate::id::PeerId;
use crate::secure::{Intent, SecureChannel};

/// Dials one address and runs the handshake.
pub(super) async fn dial(
    inner: &Inner,
    expected: Option<PeerId>,
    addr: SocketAddr,
    intent: Intent,
) -> Result<Dialled, DialError> {
    let stream =
        match tokio::time::timeout(inner.config.dial_timeout, TcpStream::connect(addr)).await {
            Err(_) => return Err(DialError::Timeout),
            Ok(Err(e)) => return Err(DialError::Io(Arc::new(e))),
            Ok(Ok(stream)) => stream,
        };
    // Small messages (pings, chat) must not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let local_addr = stream
        .local_addr()
        .map_err(|e| DialError::Io(Arc::new(e)))?;
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
        remote_addr: addr,
        local_addr,
        direction: Direction::Outgoing,
    })
}

/// Dials every address concurrently and returns the first success; the
/// other attempts are cancelled.
pub(super) async fn dial_any(
    inner: &Arc<Inner>,
    expected: Option<PeerId>,
    addrs: &[SocketAddr],
    intent: Intent,
) -> Result<Dialled, ConnectError> {
    if addrs.is_empty() {
        return Err(ConnectError::NoAddresses);
    }
    let mut attempts = JoinSet::new();
    let mut unique = addrs.to_vec();
    unique.dedup();
    for addr in unique {
        let inner = inner.clone();
        attempts.spawn(async move { (addr, dial(&inner, expected, addr, intent).await) });
    }
    let mut failures = Vec::new();
    while let Some(joined) = attempts.join_next().await {
        match joined {
            Ok((_, Ok(dialled))) => return Ok(dialled),
            Ok((addr, Err(e))) => {
                tracing::debug!(%addr, error = %e, "dial failed");
                failures.push((addr, e));
            }
            Err(_) => {}
        }
    }
    Err(ConnectError::Failed(failures))
}
