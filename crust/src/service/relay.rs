//! Relayed connections: when no direct path works, the two peers run their
//! secure channel through the rendezvous peer.
//!
//! Each end turns an in-memory duplex pipe into `Relay` packets to the
//! relay and `Relayed` packets from it back into the pipe; the secure
//! channel (Noise XX, end to end) runs over the pipe's other half, so the
//! relay forwards only ciphertext. Order: the opener sends
//! `Signal::Relay { session }` through the rendezvous, then starts its
//! handshake as initiator over [`open`]'s stream; the other end's reader
//! sees the signal and calls [`accept`] before it reads the first relayed
//! bytes (signals travel on the control lane, which goes first).
//!
//! The relay side ([`forward`]) is bounded: at most
//! `Config::relay_circuits` circuits at once (idle ones expire), and each
//! packet waits for room in the target's send queue, which slows the
//! sender through its own connection instead of growing memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};
use tokio::sync::mpsc;

use super::{BoxedStream, ConnectionPath, Dialled, Direction, Inner, NatInput, Transport};
use crate::id::PeerId;
use crate::secure::SecureChannel;
use crate::wire::{Outgoing, Packet};

/// The lane relayed bytes travel on: the least urgent.
const RELAY_LANE: u8 = 15;
/// Bytes per relayed packet.
const CHUNK: usize = 16 * 1024;
/// In-memory pipe between the secure channel and the pump, each way.
const PIPE: usize = 64 * 1024;
/// Relayed packets waiting for the pipe before the reader waits.
const INBOX: usize = 64;
/// A circuit that carried nothing for this long no longer counts.
const CIRCUIT_IDLE: Duration = Duration::from_secs(60);
/// After our side of a circuit finished sending (its connection was
/// retired), bytes from the far side are still delivered until they pause
/// this long: the far side may still be finishing its last messages.
const CIRCUIT_LINGER: Duration = Duration::from_secs(5);

/// Where a relayed circuit ends on our side.
pub(super) type Circuits =
    std::sync::Mutex<std::collections::HashMap<(PeerId, u64), mpsc::Sender<Bytes>>>;
/// The circuits a relay carries, by (smaller id, larger id, session).
pub(super) type RelayTable =
    std::sync::Mutex<std::collections::HashMap<(PeerId, PeerId, u64), Instant>>;

/// Opens our end of circuit `session` to `peer` through `via`.
pub(super) fn open(inner: &Arc<Inner>, via: PeerId, peer: PeerId, session: u64) -> BoxedStream {
    let (ours, pump_end) = tokio::io::duplex(PIPE);
    let (tx, rx) = mpsc::channel(INBOX);
    inner
        .circuits
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert((peer, session), tx);
    tokio::spawn(pump(inner.clone(), via, peer, session, pump_end, rx));
    Box::new(ours)
}

/// The far end opened circuit `session` through `via` (the link whose
/// remote address and transport are `link`): run the accepting handshake
/// over it and hand the connection to the driver.
pub(super) fn accept(
    inner: &Arc<Inner>,
    via: PeerId,
    from: PeerId,
    session: u64,
    link: (std::net::SocketAddr, Transport),
) {
    let Ok(slot) = inner.handshake_slots.clone().try_acquire_owned() else {
        tracing::warn!(%from, "too many handshakes in progress; relayed circuit refused");
        return;
    };
    let stream = open(inner, via, from, session);
    let inner = inner.clone();
    tokio::spawn(async move {
        let _slot = slot;
        match SecureChannel::accept(stream, &inner.secret, &inner.config.channel).await {
            Ok(channel) if channel.remote() == from => {
                let (remote_addr, transport) = link;
                let dialled = Dialled {
                    channel,
                    transport,
                    remote_addr,
                    local_addr: remote_addr,
                    direction: Direction::Incoming,
                    path: ConnectionPath::Relayed { via },
                    started: None,
                };
                let _ = inner.nat.send(NatInput::Register(Box::new(dialled)));
            }
            Ok(channel) => tracing::warn!(
                claimed = %from, actual = %channel.remote(),
                "relayed handshake from another peer than announced"
            ),
            Err(e) => tracing::info!(%from, error = %e, "relayed handshake failed"),
        }
        inner
            .circuits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, tx| !tx.is_closed());
    });
}

/// Moves bytes between the pipe and the relay until both directions end:
/// a connection retired after a switch to a direct path closes its
/// sending side first, and what the far side still sends must arrive.
async fn pump(
    inner: Arc<Inner>,
    via: PeerId,
    peer: PeerId,
    session: u64,
    pipe: DuplexStream,
    mut inbox: mpsc::Receiver<Bytes>,
) {
    let (mut from_channel, mut to_channel) = tokio::io::split(pipe);
    let up_done = std::sync::atomic::AtomicBool::new(false);
    let up = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match from_channel.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let Some(queue) = inner.queue(&via) else {
                break;
            };
            let packet = Outgoing::control_owned(&Packet::Relay {
                to: peer,
                session,
                data: &buf[..n],
            });
            if queue
                .push(RELAY_LANE, packet, inner.config.send_queue_limit)
                .await
                .is_err()
            {
                break;
            }
        }
        up_done.store(true, std::sync::atomic::Ordering::Relaxed);
    };
    let down = async {
        loop {
            let data = match tokio::time::timeout(CIRCUIT_LINGER, inbox.recv()).await {
                Ok(Some(data)) => data,
                Ok(None) => break,
                Err(_) if up_done.load(std::sync::atomic::Ordering::Relaxed) => break,
                Err(_) => continue,
            };
            if to_channel.write_all(&data).await.is_err() {
                break;
            }
        }
    };
    tokio::join!(up, down);
    inner
        .circuits
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&(peer, session));
}

/// Relayed bytes arrived from `from` for our end of `session`.
pub(super) async fn deliver(inner: &Inner, from: PeerId, session: u64, data: Bytes) {
    let tx = inner
        .circuits
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&(from, session))
        .cloned();
    if let Some(tx) = tx {
        let _ = tx.send(data).await;
    }
}

/// As a relay: passes bytes from `from` on to `to`, if relaying is on, the
/// circuit fits and `to` is connected; otherwise drops them (the ends'
/// handshake or keep-alives then time out).
pub(super) async fn forward(inner: &Inner, from: PeerId, to: PeerId, session: u64, data: Bytes) {
    let max = inner.config.relay_circuits;
    if !inner.config.rendezvous || max == 0 || to == inner.id {
        return;
    }
    let key = if from < to {
        (from, to, session)
    } else {
        (to, from, session)
    };
    {
        let mut table = inner.relay_table.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if !table.contains_key(&key) {
            table.retain(|_, last| now.duration_since(*last) < CIRCUIT_IDLE);
            if table.len() >= max {
                tracing::debug!(%from, %to, "relay full; circuit refused");
                return;
            }
        }
        table.insert(key, now);
    }
    let Some(queue) = inner.queue(&to) else {
        return;
    };
    #[cfg(feature = "fault-injection")]
    let data = crate::faults::relayed(inner.id, data);
    let packet = Outgoing::control_owned(&Packet::Relayed {
        from,
        session,
        data: &data,
    });
    let _ = queue
        .push(RELAY_LANE, packet, inner.config.send_queue_limit)
        .await;
}
