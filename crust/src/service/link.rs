//! One connection's tasks, and the per-peer send queue they share.
//!
//! A peer has one [`PeerQueue`] for as long as it is connected, even if the
//! connection under it is replaced (simultaneous dial). Each connection
//! ("link") runs two tasks: [`run_writer`] takes chunks from the queue, most
//! urgent lane first, while its link is the queue's active one; [`run_reader`]
//! turns frames into events, data in the order the peer's `DeliveryOrder`
//! keeps across links (`order.rs`). A link that is no longer active finishes the
//! messages it started and then only sends keep-alives (it may become active
//! again); a retired link finishes what it started, says
//! `Close(Superseded)`, and stops writing.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, Semaphore};

use super::order::DeliveryOrder;
use super::{Event, Inner, LostReason};
use crate::id::PeerId;
use crate::secure::frame::LANES;
use crate::secure::{SecureReader, SecureWriter};
use crate::wire::{self, CONTROL_LANE, CloseReason, Incoming, Outgoing, Packet};

/// Identifies one link among all of a service's links.
pub(super) type LinkId = u64;

/// The queue has been closed: the peer is gone.
#[derive(Debug)]
pub(super) struct QueueClosed;

#[derive(Default)]
struct QueueState {
    lanes: [VecDeque<Outgoing>; LANES],
    /// Data bytes queued (control messages are not counted).
    bytes: usize,
    /// The link whose writer takes from the queue.
    active: Option<LinkId>,
    /// Links told to close at once, and why.
    closing: HashMap<LinkId, CloseReason>,
    /// Links told to finish what they started and close with `Superseded`.
    retiring: HashSet<LinkId>,
    closed: bool,
    /// Data messages taken by writers so far, and the link that took the
    /// last one: a link taking one after another did says `After` first
    /// (`order.rs`).
    taken: u64,
    last_taker: Option<LinkId>,
}

/// Messages waiting to be sent to one peer.
#[derive(Default)]
pub(super) struct PeerQueue {
    state: Mutex<QueueState>,
    /// Wakes writers: new data, a new active link, a close.
    wake: Notify,
    /// Wakes senders waiting for room.
    space: Notify,
}

impl PeerQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues an encoded data message on `lane`, waiting while more than
    /// `limit` bytes are queued (a message larger than `limit` waits for an
    /// empty queue).
    pub(super) async fn push(
        &self,
        lane: u8,
        message: Outgoing,
        limit: usize,
    ) -> Result<(), QueueClosed> {
        loop {
            let space = self.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            {
                let mut state = self.lock();
                if state.closed {
                    return Err(QueueClosed);
                }
                if state.bytes == 0 || state.bytes + message.len() <= limit {
                    state.bytes += message.len();
                    state.lanes[usize::from(lane)].push_back(message);
                    drop(state);
                    self.wake.notify_waiters();
                    return Ok(());
                }
            }
            space.await;
        }
    }

    /// Queues a control message; never waits.
    pub(super) fn push_control(&self, message: Outgoing) {
        let mut state = self.lock();
        if !state.closed {
            state.lanes[usize::from(CONTROL_LANE)].push_back(message);
            drop(state);
            self.wake.notify_waiters();
        }
    }

    /// Makes `link` the one whose writer sends the queue; the previous
    /// active link finishes what it started and then idles.
    pub(super) fn set_active(&self, link: LinkId) {
        self.lock().active = Some(link);
        self.wake.notify_waiters();
    }

    /// Tells `link`'s writer to finish the messages it started, say
    /// `Close(Superseded)` and stop; it takes no new message.
    pub(super) fn retire(&self, link: LinkId) {
        self.lock().retiring.insert(link);
        self.wake.notify_waiters();
    }

    /// Tells `link`'s writer to say `reason` and stop at once.
    pub(super) fn close_link(&self, link: LinkId, reason: CloseReason) {
        self.lock().closing.insert(link, reason);
        self.wake.notify_waiters();
    }

    /// The peer is gone: queued messages are dropped, senders fail.
    pub(super) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.lanes = Default::default();
        state.bytes = 0;
        drop(state);
        self.wake.notify_waiters();
        self.space.notify_waiters();
    }
}

/// What the actor and a link's two tasks share.
pub(super) struct LinkCtl {
    /// Latest keep-alive round trip in microseconds; 0 before the first.
    rtt_micros: AtomicU64,
    dead: AtomicBool,
    dead_notify: Notify,
}

impl LinkCtl {
    pub(super) fn new() -> Self {
        Self {
            rtt_micros: AtomicU64::new(0),
            dead: AtomicBool::new(false),
            dead_notify: Notify::new(),
        }
    }

    pub(super) fn rtt(&self) -> Option<Duration> {
        match self.rtt_micros.load(Ordering::Relaxed) {
            0 => None,
            micros => Some(Duration::from_micros(micros)),
        }
    }

    /// Ends the link's reader (its writer ends through the queue).
    pub(super) fn kill(&self) {
        self.dead.store(true, Ordering::Release);
        self.dead_notify.notify_waiters();
    }

    async fn killed(&self) {
        loop {
            let notified = self.dead_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.dead.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// How a link's reader ended.
#[derive(Debug)]
pub(super) enum ReaderEnd {
    /// The peer said `Close`.
    PeerClosed(CloseReason),
    /// The link failed or went silent.
    Lost(LostReason),
    /// We ended it.
    Killed,
}

/// Reads frames until the link ends, turning data into events.
/// Data waits for its turn in `order` (see `order.rs`).
pub(super) async fn run_reader<R: AsyncRead + Unpin>(
    mut reader: SecureReader<R>,
    (peer, link): (PeerId, LinkId),
    (remote, transport): (std::net::SocketAddr, super::Transport),
    inner: Arc<Inner>,
    queue: Arc<PeerQueue>,
    ctl: Arc<LinkCtl>,
    order: &DeliveryOrder,
) -> ReaderEnd {
    let budget = Arc::new(Semaphore::new(inner.config.receive_buffer_limit.max(1)));
    let timeout = inner.config.peer_timeout;
    loop {
        let received = tokio::select! {
            received = tokio::time::timeout(timeout, reader.recv()) => received,
            () = ctl.killed() => return ReaderEnd::Killed,
        };
        let (lane, message) = match received {
            Err(_) => return ReaderEnd::Lost(LostReason::Timeout),
            Ok(Err(e)) => return ReaderEnd::Lost(super::lost_reason(&e)),
            Ok(Ok(received)) => received,
        };
        let malformed =
            |what: &str| ReaderEnd::Lost(LostReason::ProtocolViolation(what.to_owned()));
        match wire::decode(message) {
            None => return malformed("undecodable message"),
            Some(Incoming::Data(_)) if lane == CONTROL_LANE => {
                return malformed("data on the control lane");
            }
            Some(Incoming::After { sent }) => {
                tokio::select! {
                    () = order.after(link, sent, super::order::HOLD) => {}
                    () = ctl.killed() => return ReaderEnd::Killed,
                }
            }
            Some(Incoming::Data(data)) => {
                // Bounded by the budget so a slow application slows the
                // sender instead of growing memory.
                let want = u32::try_from(data.len().min(inner.config.receive_buffer_limit.max(1)))
                    .unwrap_or(u32::MAX);
                let permit = tokio::select! {
                    permit = budget.clone().acquire_many_owned(want) => permit.ok(),
                    () = ctl.killed() => return ReaderEnd::Killed,
                };
                let _ = inner
                    .events
                    .send((Event::NewMessage { peer, data }, permit));
                order.delivered();
            }
            Some(Incoming::Ping { nonce }) => {
                queue.push_control(Outgoing::control(&Packet::Pong { nonce }))
            }
            Some(Incoming::Pong { nonce }) => {
                let now = u64::try_from(inner.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
                if let Some(rtt) = now.checked_sub(nonce) {
                    ctl.rtt_micros.store(rtt.max(1), Ordering::Relaxed);
                }
            }
            Some(Incoming::Close(reason)) => return ReaderEnd::PeerClosed(reason),
            Some(Incoming::Hello(hello)) => {
                let _ = inner.nat.send(super::NatInput::Hello {
                    peer,
                    hello,
                    remote,
                    transport,
                });
            }
            Some(Incoming::Forward { to, signal }) => forward(&inner, &queue, peer, to, signal),
            Some(Incoming::Forwarded {
                from,
                signal: wire::Signal::Relay { session },
            }) => {
                // Set up before the next frame, which may be its first bytes.
                super::relay::accept(&inner, peer, from, session, (remote, transport));
            }
            Some(Incoming::Forwarded { from, signal }) => {
                let _ = inner.nat.send(super::NatInput::Signal {
                    via: peer,
                    from,
                    signal,
                });
            }
            Some(Incoming::Relay { to, session, data }) => {
                tokio::select! {
                    () = super::relay::forward(&inner, peer, to, session, data) => {}
                    () = ctl.killed() => return ReaderEnd::Killed,
                }
            }
            Some(Incoming::Relayed {
                from,
                session,
                data,
            }) => {
                tokio::select! {
                    () = super::relay::deliver(&inner, from, session, data) => {}
                    () = ctl.killed() => return ReaderEnd::Killed,
                }
            }
        }
    }
}

/// Rendezvous: passes a signal from `from` on to `to`, or tells `from` that
/// `to` cannot be reached through us.
fn forward(inner: &Inner, queue: &PeerQueue, from: PeerId, to: PeerId, signal: wire::Signal) {
    let target = (inner.config.rendezvous && to != inner.id)
        .then(|| inner.queue(&to))
        .flatten();
    match target {
        Some(target) => {
            target.push_control(Outgoing::control_owned(&Packet::Forwarded { from, signal }))
        }
        None => queue.push_control(Outgoing::control_owned(&Packet::Forwarded {
            from: to,
            signal: wire::Signal::Unreachable {
                session: signal.session(),
            },
        })),
    }
}

/// Write this much before flushing: about one full frame, so an urgent
/// message waits behind at most one chunk of a large one.
const FLUSH_AT: usize = 60 * 1024;

/// Sends the queue's messages while `link` is active; then finishes what it
/// started, says `Close` and shuts the write direction.
pub(super) async fn run_writer<W: AsyncWrite + Unpin>(
    mut writer: SecureWriter<W>,
    link: LinkId,
    inner: Arc<Inner>,
    queue: Arc<PeerQueue>,
    ctl: Arc<LinkCtl>,
) {
    let mut in_progress: [Option<(Outgoing, usize)>; LANES] = Default::default();
    let interval = inner.config.keepalive_interval;
    let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let close_reason = loop {
        let wake = queue.wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();

        // Fill the output with chunks, most urgent lane first.
        let mut close_now = None;
        let mut retiring = false;
        while writer.pending() < FLUSH_AT {
            let mut popped = false;
            let mut after = None;
            let next = {
                let mut state = queue.lock();
                if let Some(reason) = state.closing.remove(&link) {
                    close_now = Some(reason);
                    None
                } else {
                    retiring = state.closed || state.retiring.contains(&link);
                    let active = state.active == Some(link) && !retiring;
                    (0..LANES).find(|&lane| {
                        if in_progress[lane].is_some() {
                            return true;
                        }
                        if !active {
                            return false;
                        }
                        match state.lanes[lane].pop_front() {
                            Some(message) => {
                                if lane != usize::from(CONTROL_LANE) {
                                    state.bytes -= message.len();
                                    if state.last_taker != Some(link) {
                                        after = Some(state.taken);
                                        state.last_taker = Some(link);
                                    }
                                    state.taken += 1;
                                }
                                in_progress[lane] = Some((message, 0));
                                popped = true;
                                true
                            }
                            None => false,
                        }
                    })
                }
            };
            if popped {
                queue.space.notify_waiters();
            }
            if let Some(sent) = after {
                writer.push_message(CONTROL_LANE, &wire::encode(&Packet::After { sent }));
            }
            let Some(lane) = next else { break };
            let Some((message, offset)) = &mut in_progress[lane] else {
                break;
            };
            let total = message.len();
            let parts = message.slices(*offset, writer.chunk_len(*offset, total));
            // Lanes are below 16 by construction.
            writer.push_chunk(lane as u8, *offset, total, &parts);
            *offset += parts[0].len() + parts[1].len();
            let fin = *offset >= total;
            if fin {
                in_progress[lane] = None;
            }
        }
        if let Some(reason) = close_now {
            break Some(reason);
        }
        if ctl.dead.load(Ordering::Acquire) {
            break None;
        }
        if writer.pending() > 0 {
            if let Err(e) = writer.flush().await {
                tracing::debug!(error = %e, "write failed");
                ctl.kill();
                break None;
            }
            continue;
        }
        if retiring && in_progress.iter().all(Option::is_none) {
            break Some(CloseReason::Superseded);
        }
        tokio::select! {
            () = &mut wake => {}
            _ = keepalive.tick() => {
                let nonce = u64::try_from(inner.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
                writer.push_message(CONTROL_LANE, &wire::encode(&Packet::Ping { nonce }));
            }
            // Checked at the top: a close request takes precedence.
            () = ctl.killed() => {}
        }
    };
    {
        let mut state = queue.lock();
        state.retiring.remove(&link);
        state.closing.remove(&link);
    }
    if let Some(reason) = close_reason {
        writer.push_message(CONTROL_LANE, &wire::encode(&Packet::Close(reason)));
        if let Err(e) = writer.shutdown().await {
            tracing::debug!(error = %e, "closing write failed");
        }
    }
}
