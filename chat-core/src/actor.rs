//! The node's actor: owns the crust events and the chat sessions.
//!
//! The loop takes a command, a tick, or a crust event. Crust events are
//! handled in batches: every event already waiting is applied to the
//! database in one transaction, and only after it commits are acks sent
//! and events reported — so an ack never leaves before the message it
//! acknowledges is on disk, and thousands of messages cost one commit.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crust::{Endpoint, Event as CrustEvent, LostReason, PeerId, Priority};
use tokio::sync::{mpsc, oneshot};

use crate::dht_driver::{DhtDriver, DhtStatus, Found, RecordLookup};
use crate::node::{Event, Reach, Shared, lock};
use crate::proto::Wire;
use crate::store::{Store, StoreError};
use crate::types::{
    ContactState, FriendRequest, MAX_TEXT_BYTES, Message, MessageId, MessageState, now_ms,
};

/// Most crust events applied in one transaction.
const BATCH: usize = 1024;
/// The first quick reconnection attempt after a drop comes this long after
/// it; each next one twice as long after the previous one.
const RECONNECT_FIRST: Duration = Duration::from_millis(250);
/// Quick reconnection attempts after a drop.
const RECONNECT_ATTEMPTS: u32 = 6;
/// Most rendezvous peers kept per contact (and told to contacts).
const MAX_RENDEZVOUS: usize = 8;
/// Most ids in one `Ack` or `Read`.
const IDS_PER_MESSAGE: usize = 1024;
/// How often the wall clock is compared with the monotonic one (a
/// suspend and resume shows as a jump), and our addresses are looked at.
const WATCH: Duration = Duration::from_secs(1);
/// After a suspend or a network change, a contact's connection that
/// brings nothing back this long after a ping is taken for dead.
const PROBE_TIMEOUT: Duration = Duration::from_secs(4);

/// What the handle asks of the actor.
#[derive(Debug)]
pub(crate) enum Command {
    /// Send whatever is queued for this contact, if in session.
    Flush(PeerId),
    /// Dial this contact now.
    Dial(PeerId),
    /// Our relationship changed: say hello again and act on it.
    Rehello(PeerId),
    /// Our name changed: say hello again to everyone connected.
    HelloAll,
    /// Tell the peer its request was declined.
    Decline(PeerId),
    /// Close connections to a blocked peer.
    Disconnect(PeerId),
    /// Send typing state.
    Typing(PeerId, bool),
    /// Send unreported read receipts.
    Reads(PeerId),
    /// Look a peer's record up in the DHT.
    FindRecord(PeerId, oneshot::Sender<RecordLookup>),
    /// Report the DHT's state.
    DhtStatus(oneshot::Sender<DhtStatus>),
    /// Publish our DHT record again now.
    Republish,
    /// Stop.
    Shutdown(oneshot::Sender<()>),
}

/// A connected peer.
#[derive(Debug, Default)]
struct Session {
    /// What the peer's last `Hello` said: whether it sees us as a friend.
    peer_says_friend: Option<bool>,
    /// When everything unacknowledged was last sent, or an ack last
    /// arrived: the peer is stalled if neither happened for the resend
    /// interval while messages wait for an ack.
    last_progress: Option<Instant>,
}

/// Work to do once the batch's transaction has committed.
#[derive(Debug)]
enum Action {
    Send(PeerId, Wire),
    Flush {
        peer: PeerId,
        all: bool,
    },
    Reads(PeerId),
    Disconnect(PeerId),
    /// The connection to this contact dropped: dial it again soon.
    Reconnect(PeerId),
    Emit(Event),
    /// A contact announced itself on the LAN at these endpoints: dial them.
    DialLan(PeerId, Vec<Endpoint>),
    /// A mailbox message (`crate::mailbox`) for this peer.
    Mail(PeerId, Vec<u8>),
    /// Connectivity changed: emit a fresh network report.
    ReportNetwork,
    /// DHT traffic from a peer (a `crust::dht::Envelope`'s bytes).
    Dht(PeerId, bytes::Bytes),
    /// A connection opened (for the DHT: ping it, flush what waits).
    DhtConnected(PeerId),
    /// A connection closed.
    DhtLost(PeerId),
    /// Our addresses or rendezvous peers may have changed.
    AddressesChanged,
    /// A bootstrap connection (made or accepted) is to a contact: start a
    /// session on it as on a `ConnectSuccess`.
    ContactByBootstrap(PeerId),
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn spawn(
    shared: Arc<Shared>,
    service: crust::Service,
    events: crust::Events,
    out: mpsc::UnboundedSender<Event>,
    reconnect_interval: Duration,
    resend_interval: Duration,
    dht: DhtDriver,
    bootstrap: bool,
) -> mpsc::UnboundedSender<Command> {
    let (commands_tx, commands) = mpsc::unbounded_channel();
    let (dial_done_tx, dial_done) = mpsc::unbounded_channel();
    let actor = Actor {
        shared,
        service,
        events,
        commands,
        out,
        sessions: HashMap::new(),
        dialling: HashSet::new(),
        reconnecting: HashMap::new(),
        dial_done_tx,
        dial_done,
        resend_interval,
        dht,
        redial_after: HashSet::new(),
        bootstrap,
        probing: HashMap::new(),
        changing_network: false,
    };
    tokio::spawn(actor.run(reconnect_interval));
    commands_tx
}

struct Actor {
    shared: Arc<Shared>,
    service: crust::Service,
    events: crust::Events,
    commands: mpsc::UnboundedReceiver<Command>,
    out: mpsc::UnboundedSender<Event>,
    sessions: HashMap<PeerId, Session>,
    dialling: HashSet<PeerId>,
    /// Contacts whose connection dropped: attempts made, next attempt.
    reconnecting: HashMap<PeerId, (u32, Instant)>,
    /// A dial ended: the peer, and the rendezvous peers it connected to
    /// only for that dial.
    dial_done_tx: mpsc::UnboundedSender<(PeerId, Vec<PeerId>)>,
    dial_done: mpsc::UnboundedReceiver<(PeerId, Vec<PeerId>)>,
    resend_interval: Duration,
    /// The DHT over our connections.
    dht: DhtDriver,
    /// Contacts to dial again as soon as the dial in progress ends (their
    /// record named new addresses meanwhile).
    redial_after: HashSet<PeerId>,
    /// Whether the node bootstraps (again after a network change).
    bootstrap: bool,
    /// Contacts pinged after a suspend or a network change, and when their
    /// connection counts as dead if nothing came from them.
    probing: HashMap<PeerId, Instant>,
    /// Set while `network_changed` runs (what it does may report another
    /// change).
    changing_network: bool,
}

impl Actor {
    async fn run(mut self, reconnect_interval: Duration) {
        let mut tick = tokio::time::interval(reconnect_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watch = tokio::time::interval(WATCH.min(reconnect_interval));
        watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown(reply)) => {
                        self.service.shutdown().await;
                        let _ = reply.send(());
                        return;
                    }
                    Some(command) => {
                        if self.commands_batch(command).await {
                            return;
                        }
                    }
                    None => break,
                },
                event = self.events.recv() => match event {
                    Some(event) => self.crust_events(event).await,
                    None => break,
                },
                Some((peer, opened)) = self.dial_done.recv() => {
                    // Connections opened to rendezvous peers only for this
                    // dial close once unused, as DHT-only ones do.
                    for rendezvous in opened {
                        self.dht.close_when_idle(rendezvous);
                    }
                    self.dialling.remove(&peer);
                    if self.redial_after.remove(&peer) {
                        self.dial(peer);
                    }
                }
                wake = self.dht.wait() => {
                    let own = self.shared.my_addrs(true);
                    let rendezvous = self.shared.rendezvous_reach();
                    let found = self.dht.woke(wake, own, rendezvous).await;
                    self.found(found);
                }
                () = sleep_until(self.reconnecting.values().map(|(_, at)| *at).min()) => {
                    self.reconnect_due().await;
                }
                () = sleep_until(self.probing.values().min().copied()) => {
                    self.probes_due().await;
                }
                _ = watch.tick() => {
                    if self.dht.clock_jumped() {
                        tracing::info!("the wall clock jumped (suspend and resume?): reconnecting");
                        self.network_changed().await;
                    }
                    // An address change crust did not report (a new DHCP
                    // lease on the same interface) shows here.
                    if self.dht.address_check_due() {
                        self.run_actions(vec![Action::AddressesChanged]).await;
                    }
                }
                _ = tick.tick() => {
                    self.close_idle_dht().await;
                    if self.dht.wants_bootstrap() {
                        // No DHT server known: ask the peers we are
                        // connected to again (crust reports nothing new
                        // for them, and a first ping can time out on a
                        // busy peer), and bootstrap again.
                        self.dht.reping_connected().await;
                        if self.bootstrap {
                            let _ = self.service.bootstrap();
                        }
                    }
                    self.redial();
                    self.look_up_unreachable().await;
                    self.resend_unacknowledged().await;
                    let online: HashSet<PeerId> = self.sessions.keys().copied().collect();
                    crate::mailbox::tick(&self.service, &self.shared, &online);
                    // Keep search fast: index text while the node is idle.
                    self.store(Store::index_pending);
                }
            }
        }
        self.service.shutdown().await;
    }

    /// Whether we are connected to `peer` and its `Hello` called us a
    /// friend: only then do chat messages flow.
    fn in_friend_session(&self, peer: &PeerId) -> bool {
        self.sessions.get(peer).and_then(|s| s.peer_says_friend) == Some(true)
    }

    fn emit(&self, event: Event) {
        let _ = self.out.send(event);
    }

    fn problem(&self, what: &str, error: &dyn std::fmt::Display) {
        tracing::warn!("{what}: {error}");
        self.emit(Event::Problem(format!("{what}: {error}")));
    }

    fn store<T>(&self, f: impl FnOnce(&Store) -> Result<T, StoreError>) -> Option<T> {
        let guard = lock(&self.shared.store);
        let store = guard.as_ref()?;
        match f(store) {
            Ok(value) => Some(value),
            Err(e) => {
                drop(guard);
                self.problem("history database", &e);
                None
            }
        }
    }

    fn contact_state(&self, peer: &PeerId) -> Option<ContactState> {
        self.store(|s| s.contact_state(peer)).flatten()
    }

    fn hello(&self, peer: &PeerId) -> Wire {
        Wire::Hello {
            name: self.shared.name(),
            addrs: self.shared.my_addrs(false),
            friend: self.contact_state(peer) == Some(ContactState::Friend),
        }
    }

    /// Handles `first` and every command already waiting, sending each
    /// contact's outbox once however many messages were queued meanwhile.
    /// Returns true after a shutdown.
    async fn commands_batch(&mut self, first: Command) -> bool {
        let mut flushes: Vec<PeerId> = Vec::new();
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Flush(peer) => {
                    if !flushes.contains(&peer) {
                        flushes.push(peer);
                    }
                }
                Command::Shutdown(reply) => {
                    self.service.shutdown().await;
                    let _ = reply.send(());
                    return true;
                }
                other => {
                    // Keep the order of flushes relative to other commands.
                    for peer in flushes.drain(..) {
                        self.flush(peer, false).await;
                    }
                    self.command(other).await;
                }
            }
            if flushes.len() < 64 {
                next = self.commands.try_recv().ok();
            }
        }
        for peer in flushes {
            self.flush(peer, false).await;
        }
        false
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Flush(peer) => self.flush(peer, false).await,
            Command::Dial(peer) => self.dial(peer),
            Command::Rehello(peer) => {
                if let Some(session) = self.sessions.get(&peer) {
                    let their = session.peer_says_friend;
                    let mut actions = vec![Action::Send(peer, self.hello(&peer))];
                    if let Some(friend) = their {
                        self.store(|s| {
                            s.batch(|s| {
                                after_hello(s, &self.shared, &peer, friend, &mut actions)?;
                                Ok(())
                            })
                        });
                    }
                    self.run_actions(actions).await;
                }
            }
            Command::HelloAll => {
                let peers: Vec<PeerId> = self.sessions.keys().copied().collect();
                for peer in peers {
                    let hello = self.hello(&peer);
                    self.send(&peer, &hello).await;
                }
            }
            Command::Decline(peer) => {
                self.send(&peer, &Wire::Decline).await;
            }
            Command::Disconnect(peer) => {
                self.service.disconnect(&peer).await;
            }
            Command::Typing(peer, typing) => {
                if self.in_friend_session(&peer)
                    && self.contact_state(&peer) == Some(ContactState::Friend)
                {
                    self.send(&peer, &Wire::Typing { typing }).await;
                }
            }
            Command::Reads(peer) => self.send_reads(peer).await,
            Command::FindRecord(peer, reply) => self.dht.find_record(peer, reply).await,
            Command::DhtStatus(reply) => {
                let _ = reply.send(self.dht.status());
            }
            Command::Republish => self.dht.republish(),
            Command::Shutdown(_) => {}
        }
    }

    /// Makes the reconnection attempts that are due.
    async fn reconnect_due(&mut self) {
        let now = Instant::now();
        let mut look_up = Vec::new();
        let due: Vec<PeerId> = self
            .reconnecting
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in due {
            if self.sessions.contains_key(&peer) {
                self.stop_reconnecting(&peer, false);
                continue;
            }
            let Some((attempts, at)) = self.reconnecting.get_mut(&peer) else {
                continue;
            };
            if *attempts >= RECONNECT_ATTEMPTS {
                self.stop_reconnecting(&peer, true);
                continue;
            }
            *at = now + RECONNECT_FIRST * 2u32.pow(*attempts);
            *attempts += 1;
            if *attempts == 2 {
                // The first redial failed: ask the DHT where it is now.
                look_up.push(peer);
            }
            // A dial still running from the previous attempt counts.
            self.dial(peer);
        }
        for peer in look_up {
            let found = self.dht.want_record(peer).await;
            self.found(found);
        }
    }

    /// Contacts not connected, not being dialled quickly: look up their
    /// records (each at most once per `DhtConfig::record_retry`).
    async fn look_up_unreachable(&mut self) {
        let Some(contacts) = self.store(Store::contacts) else {
            return;
        };
        for contact in contacts {
            if contact.state != ContactState::Declined
                && !self.sessions.contains_key(&contact.id)
                && !self.reconnecting.contains_key(&contact.id)
            {
                let found = self.dht.want_record(contact.id).await;
                self.found(found);
            }
        }
    }

    /// Records found for contacts we could not reach: remember their new
    /// endpoints and rendezvous peers, and dial them.
    fn found(&mut self, found: Vec<Found>) {
        for Found::Record(record) in found {
            let peer = record.peer;
            if self.sessions.contains_key(&peer) {
                continue;
            }
            let Some(Some(contact)) = self.store(|s| s.contact(&peer)) else {
                continue;
            };
            let mut addrs = record.endpoints.clone();
            for old in contact.addrs {
                if !addrs.contains(&old) {
                    addrs.push(old);
                }
            }
            addrs.truncate(16);
            self.store(|s| s.set_addrs(&peer, &addrs));
            let rendezvous: Vec<Reach> = record
                .rendezvous
                .iter()
                .map(|r| (r.peer, r.endpoints.clone()))
                .filter(|(r, _)| *r != peer && *r != self.shared.id)
                .take(MAX_RENDEZVOUS)
                .collect();
            if !rendezvous.is_empty() {
                lock(&self.shared.their_rendezvous).insert(peer, rendezvous);
            }
            tracing::info!(%peer, endpoints = ?record.endpoints, "found a contact's record: dialling");
            if self.dialling.contains(&peer) {
                self.redial_after.insert(peer);
            } else {
                self.dial(peer);
            }
        }
    }

    /// The network under us changed (new addresses, a resume): drop the
    /// connections that cannot have survived, bootstrap again, publish our
    /// record again, look contacts up again, dial every offline friend
    /// now, and ping the contacts still connected (a connection can die
    /// without a word: a peer gone during a suspend, a new network behind
    /// the same local address), dropping those that stay silent.
    async fn network_changed(&mut self) {
        if self.changing_network {
            return;
        }
        self.changing_network = true;
        self.dht.network_changed();
        // A connection from an address this machine no longer has is
        // dead, though TCP may call it established for many minutes.
        let stale: Vec<PeerId> = self
            .service
            .connected_peers()
            .await
            .into_iter()
            .filter(|(_, info)| !is_local_address(info.local_addr.ip()))
            .map(|(peer, _)| peer)
            .collect();
        if !stale.is_empty() {
            tracing::info!(
                ?stale,
                "connections from an address we no longer have: dropping"
            );
        }
        self.drop_dead(stale).await;
        if self.bootstrap {
            let _ = self.service.bootstrap();
        }
        if let Some(contacts) = self.store(Store::contacts) {
            let now = Instant::now();
            for contact in contacts {
                if contact.state == ContactState::Declined {
                    continue;
                }
                if self.sessions.contains_key(&contact.id) {
                    self.dht.ping(contact.id).await;
                    self.probing
                        .entry(contact.id)
                        .or_insert(now + PROBE_TIMEOUT);
                } else if contact.state == ContactState::Friend {
                    self.reconnecting.insert(contact.id, (0, now));
                    if lock(&self.shared.connecting).insert(contact.id) {
                        self.emit(Event::ContactConnecting {
                            contact: contact.id,
                        });
                    }
                }
            }
        }
        self.changing_network = false;
    }

    /// Contacts pinged by `network_changed` that sent nothing back in
    /// time: their connections are dead.
    async fn probes_due(&mut self) {
        let now = Instant::now();
        let dead: Vec<PeerId> = self
            .probing
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in &dead {
            self.probing.remove(peer);
        }
        if !dead.is_empty() {
            tracing::info!(
                ?dead,
                "no answer on these connections since the network changed: dropping"
            );
        }
        self.drop_dead(dead).await;
    }

    /// Closes connections known to be dead and goes on as if crust had
    /// reported them lost (contacts are dialled again).
    async fn drop_dead(&mut self, peers: Vec<PeerId>) {
        for peer in peers {
            if self.service.disconnect(&peer).await {
                Box::pin(self.crust_events(CrustEvent::LostPeer {
                    peer,
                    reason: LostReason::Timeout,
                }))
                .await;
            }
        }
    }

    /// Closes connections opened only for the DHT (or for one rendezvous)
    /// and idle since.
    async fn close_idle_dht(&mut self) {
        for peer in self.dht.idle() {
            let contact = self.store(|s| s.contact(&peer)).flatten().is_some();
            let relaying = lock(&self.shared.online).values().any(
                |info| matches!(info.path, crust::ConnectionPath::Relayed { via } if via == peer),
            );
            if contact || relaying || lock(&self.shared.rendezvous).contains(&peer) {
                continue;
            }
            if self.service.disconnect(&peer).await {
                self.sessions.remove(&peer);
                lock(&self.shared.online).remove(&peer);
            }
            self.dht.lost(&peer);
        }
    }

    fn stop_reconnecting(&mut self, peer: &PeerId, failed: bool) {
        if self.reconnecting.remove(peer).is_some() {
            lock(&self.shared.connecting).remove(peer);
            if failed {
                self.emit(Event::ContactReconnectFailed { contact: *peer });
            }
        }
    }

    /// Dials every contact that is offline and not already being dialled.
    fn redial(&mut self) {
        let Some(contacts) = self.store(Store::contacts) else {
            return;
        };
        for contact in contacts {
            if contact.state != ContactState::Declined {
                self.dial(contact.id);
            }
        }
    }

    /// Dials a contact at endpoints it announced on the LAN (the
    /// handshake proves its id).
    fn dial_at(&mut self, peer: PeerId, endpoints: Vec<Endpoint>) {
        if self.sessions.contains_key(&peer) || !self.dialling.insert(peer) {
            return;
        }
        let service = self.service.clone();
        let done = self.dial_done_tx.clone();
        tokio::spawn(async move {
            if let Err(e) = service.connect(peer, &endpoints).await {
                tracing::debug!(%peer, error = %e, "LAN dial failed");
            }
            let _ = done.send((peer, Vec::new()));
        });
    }

    fn dial(&mut self, peer: PeerId) {
        if self.sessions.contains_key(&peer) || self.dialling.contains(&peer) {
            return;
        }
        let Some(Some(contact)) = self.store(|s| s.contact(&peer)) else {
            return;
        };
        let via = self.rendezvous_for(&peer);
        if contact.addrs.is_empty() && via.is_empty() {
            return;
        }
        self.dialling.insert(peer);
        let service = self.service.clone();
        let done = self.dial_done_tx.clone();
        // Every address and transport at once: the first to finish the
        // handshake carries the session, and crust resolves any duplicate
        // without reporting the peer lost.
        let endpoints = contact.addrs.clone();
        tokio::spawn(async move {
            // Success arrives as a crust event; failure is retried on the
            // next tick.
            let direct = !endpoints.is_empty() && service.connect(peer, &endpoints).await.is_ok();
            let mut opened = Vec::new();
            if !direct {
                opened = via_rendezvous(&service, peer, via).await;
            }
            let _ = done.send((peer, opened));
        });
    }

    /// Rendezvous peers to try for `peer`, with where to reach each if we
    /// know: those it keeps, then our own.
    fn rendezvous_for(&self, peer: &PeerId) -> Vec<Reach> {
        let mut via: Vec<Reach> = lock(&self.shared.their_rendezvous)
            .get(peer)
            .cloned()
            .unwrap_or_default();
        for (own, addrs) in self.shared.rendezvous_reach() {
            match via.iter_mut().find(|(r, _)| *r == own) {
                Some((_, known)) if known.is_empty() => *known = addrs,
                Some(_) => {}
                None => via.push((own, addrs)),
            }
        }
        via.retain(|(r, _)| r != peer && *r != self.shared.id);
        via
    }

    async fn send(&self, peer: &PeerId, wire: &Wire) -> bool {
        self.service
            .send(peer, wire.encode(), Priority::HIGH)
            .await
            .is_ok()
    }

    /// Sends the outbox (everything unacknowledged if `all`, else only
    /// what was never sent on this connection) in sequence order.
    async fn flush(&mut self, peer: PeerId, all: bool) {
        if !self.in_friend_session(&peer) {
            return;
        }
        if all && let Some(session) = self.sessions.get_mut(&peer) {
            session.last_progress = Some(Instant::now());
        }
        let Some(outbox) = self.store(|s| s.outbox(&peer, !all)) else {
            return;
        };
        let mut sent: Vec<&Message> = Vec::with_capacity(outbox.len());
        for message in &outbox {
            let wire = Wire::Chat {
                id: message.id.0,
                seq: message.seq,
                sent_at_ms: message.sent_at_ms,
                text: message.text.clone(),
            };
            if !self.send(&peer, &wire).await {
                break;
            }
            sent.push(message);
        }
        let changed = self
            .store(|s| {
                s.batch(|s| {
                    let mut changed = Vec::new();
                    for m in &sent {
                        if s.advance_state(&peer, &m.id, MessageState::Sent)? {
                            changed.push(m.id);
                        }
                    }
                    Ok(changed)
                })
            })
            .unwrap_or_default();
        for id in changed {
            self.emit(Event::MessageStateChanged {
                contact: peer,
                id,
                state: MessageState::Sent,
            });
        }
    }

    async fn send_reads(&self, peer: PeerId) {
        if !self.in_friend_session(&peer) {
            return;
        }
        let Some(ids) = self.store(|s| s.unreported_reads(&peer)) else {
            return;
        };
        for chunk in ids.chunks(IDS_PER_MESSAGE) {
            let wire = Wire::Read {
                ids: chunk.iter().map(|id| id.0).collect(),
            };
            if !self.send(&peer, &wire).await {
                return;
            }
            self.store(|s| s.batch(|s| s.reads_reported(&peer, chunk)));
        }
    }

    /// Sends unacknowledged messages again to friends whose connection made
    /// no progress (no full send, no ack) for the resend interval.
    async fn resend_unacknowledged(&mut self) {
        let due: Vec<PeerId> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                s.last_progress
                    .is_some_and(|t| t.elapsed() >= self.resend_interval)
            })
            .map(|(peer, _)| *peer)
            .collect();
        for peer in due {
            if self
                .store(|s| s.outbox(&peer, false))
                .is_some_and(|o| !o.is_empty())
            {
                self.flush(peer, true).await;
            } else if let Some(session) = self.sessions.get_mut(&peer) {
                session.last_progress = Some(Instant::now());
            }
        }
    }

    async fn run_actions(&mut self, actions: Vec<Action>) {
        // One report per batch, after everything it reports on.
        let last_report = actions
            .iter()
            .rposition(|a| matches!(a, Action::ReportNetwork));
        for (i, action) in actions.into_iter().enumerate() {
            match action {
                Action::Send(peer, wire) => {
                    self.send(&peer, &wire).await;
                }
                Action::Flush { peer, all } => self.flush(peer, all).await,
                Action::Reads(peer) => self.send_reads(peer).await,
                Action::Disconnect(peer) => {
                    self.service.disconnect(&peer).await;
                }
                // Back already (a connection in the same batch).
                Action::Reconnect(peer) if self.sessions.contains_key(&peer) => {}
                Action::Reconnect(peer) => {
                    self.reconnecting
                        .insert(peer, (0, Instant::now() + RECONNECT_FIRST));
                    lock(&self.shared.connecting).insert(peer);
                    self.emit(Event::ContactConnecting { contact: peer });
                }
                Action::Emit(event) => self.emit(event),
                Action::DialLan(peer, endpoints) => self.dial_at(peer, endpoints),
                Action::Mail(peer, bytes) => {
                    if let Err(e) = self.service.send(&peer, bytes, Priority::NORMAL).await {
                        tracing::debug!(%peer, error = %e, "mailbox message not sent");
                    }
                }
                Action::Dht(peer, bytes) => {
                    let remote_ip = lock(&self.shared.online)
                        .get(&peer)
                        .map(|info| info.remote_addr.ip());
                    let found = self.dht.message(peer, &bytes, remote_ip).await;
                    self.found(found);
                }
                Action::DhtConnected(peer) => self.dht.connected(peer).await,
                Action::ContactByBootstrap(peer) => {
                    if !self.sessions.contains_key(&peer)
                        && let Some(info) = self.service.connection_info(&peer).await
                    {
                        Box::pin(self.crust_events(CrustEvent::ConnectSuccess { peer, info }))
                            .await;
                    }
                }
                Action::DhtLost(peer) => self.dht.lost(&peer),
                Action::AddressesChanged => {
                    let own = self.shared.my_addrs(true);
                    let rendezvous = self.shared.rendezvous_reach();
                    if self.dht.addresses_changed(own, &rendezvous) {
                        tracing::info!("our addresses changed: reconnecting");
                        Box::pin(self.network_changed()).await;
                    }
                }
                Action::ReportNetwork if Some(i) != last_report => {}
                Action::ReportNetwork => {
                    let report = crate::node::network_report(&self.service, &self.shared).await;
                    self.emit(Event::NetworkChanged(report));
                }
            }
        }
    }

    /// Applies `first` and every crust event already waiting in one
    /// transaction, then acts.
    async fn crust_events(&mut self, first: CrustEvent) {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match self.events.try_recv() {
                Some(event) => batch.push(event),
                None => break,
            }
        }
        if !self.probing.is_empty() {
            // Anything from a pinged peer (its answer or not) shows its
            // connection alive; a new or lost connection ends the question.
            for event in &batch {
                if let CrustEvent::NewMessage { peer, .. }
                | CrustEvent::ConnectionChanged { peer, .. }
                | CrustEvent::ConnectSuccess { peer, .. }
                | CrustEvent::LostPeer { peer, .. } = event
                {
                    self.probing.remove(peer);
                }
            }
        }
        let mut actions = Vec::new();
        let mut acks: Vec<(PeerId, Vec<[u8; 16]>)> = Vec::new();
        let shared = self.shared.clone();
        let sessions = &mut self.sessions;
        let result = {
            let guard = lock(&shared.store);
            match guard.as_ref() {
                None => return,
                Some(store) => store.batch(|s| {
                    for event in batch {
                        apply(s, &shared, sessions, event, &mut actions, &mut acks)?;
                    }
                    Ok(())
                }),
            }
        };
        if let Err(e) = result {
            // Nothing was stored, so nothing is acknowledged: the peers
            // will send again on the next connection.
            self.problem("history database", &e);
            return;
        }
        for (peer, ids) in acks {
            for chunk in ids.chunks(IDS_PER_MESSAGE) {
                self.send(
                    &peer,
                    &Wire::Ack {
                        ids: chunk.to_vec(),
                    },
                )
                .await;
            }
        }
        self.run_actions(actions).await;
    }
}

/// Applies one crust event to the database, collecting what to do after
/// the commit.
fn apply(
    s: &Store,
    shared: &Shared,
    sessions: &mut HashMap<PeerId, Session>,
    event: CrustEvent,
    actions: &mut Vec<Action>,
    acks: &mut Vec<(PeerId, Vec<[u8; 16]>)>,
) -> Result<(), StoreError> {
    match event {
        CrustEvent::ListenerStarted(endpoint) => {
            // TCP listeners and the uTP socket alike: contacts are told of
            // both and dial both.
            {
                let mut listeners = lock(&shared.listeners);
                if !listeners.contains(&endpoint) {
                    listeners.push(endpoint);
                }
            }
            actions.push(Action::Emit(Event::Listening { endpoint }));
            actions.push(Action::ReportNetwork);
            actions.push(Action::AddressesChanged);
        }
        CrustEvent::ListenerFailed { endpoint, error } => {
            lock(&shared.listeners).retain(|e| *e != endpoint);
            actions.push(Action::Emit(Event::Problem(format!(
                "listener {endpoint} failed: {error}"
            ))));
            actions.push(Action::ReportNetwork);
            actions.push(Action::AddressesChanged);
        }
        CrustEvent::ConnectSuccess { peer, info } => {
            if s.is_blocked(&peer)? {
                actions.push(Action::Disconnect(peer));
                return Ok(());
            }
            lock(&shared.online).insert(peer, info.clone());
            lock(&shared.connecting).remove(&peer);
            sessions.insert(peer, Session::default());
            actions.push(Action::ReportNetwork);
            let contact = s.contact(&peer)?;
            if contact.is_some() {
                s.set_last_seen(&peer, now_ms())?;
            }
            online_and_hello(actions, shared, peer, info, contact.as_ref());
            let rendezvous = lock(&shared.rendezvous).clone();
            if !rendezvous.is_empty() {
                actions.push(Action::Send(peer, rendezvous_message(&rendezvous)));
            }
            // Mail: collect what our holder keeps for us.
            if let Some(bytes) = crate::mailbox::on_connect(shared, &peer) {
                actions.push(Action::Mail(peer, bytes));
            }
            actions.push(Action::DhtConnected(peer));
        }
        CrustEvent::BootstrapConnect { peer, addr } => {
            if !sessions.contains_key(&peer) && s.contact(&peer)?.is_some() {
                // A contact reached through the bootstrap cache (it
                // accepted us once): chat on this connection.
                actions.push(Action::ContactByBootstrap(peer));
            }
            // A rendezvous for hole punching: tell everyone in session (and,
            // in our record, where we reached it).
            lock(&shared.rendezvous_addrs).insert(peer, addr);
            let rendezvous = {
                let mut rendezvous = lock(&shared.rendezvous);
                if !rendezvous.contains(&peer) {
                    rendezvous.push(peer);
                }
                rendezvous.clone()
            };
            for session in sessions.keys() {
                actions.push(Action::Send(*session, rendezvous_message(&rendezvous)));
            }
            actions.push(Action::ReportNetwork);
            actions.push(Action::AddressesChanged);
            actions.push(Action::DhtConnected(peer));
        }
        CrustEvent::BootstrapAccept { peer, .. } => {
            if !sessions.contains_key(&peer) && s.contact(&peer)?.is_some() {
                // A contact that bootstraps from us (we are in its cache):
                // its dial returns this connection, so chat on it.
                actions.push(Action::ContactByBootstrap(peer));
            } else {
                actions.push(Action::DhtConnected(peer));
            }
        }
        CrustEvent::ConnectionChanged { peer, info } => {
            // Crust replaced the connection under a connected peer: no
            // offline, a new path. The peer may have restarted behind it
            // (its old connection not yet known dead), so say hello again;
            // crust lost nothing, so nothing is resent.
            if !sessions.contains_key(&peer) {
                return Ok(());
            }
            lock(&shared.online).insert(peer, info.clone());
            actions.push(Action::ReportNetwork);
            let contact = s.contact(&peer)?;
            online_and_hello(actions, shared, peer, info, contact.as_ref());
        }
        CrustEvent::LostPeer { peer, reason } => {
            tracing::debug!(%peer, %reason, "lost peer");
            lock(&shared.online).remove(&peer);
            let was_rendezvous = {
                let mut rendezvous = lock(&shared.rendezvous);
                let before = rendezvous.len();
                rendezvous.retain(|r| *r != peer);
                rendezvous.len() != before
            };
            lock(&shared.rendezvous_addrs).remove(&peer);
            actions.push(Action::ReportNetwork);
            actions.push(Action::DhtLost(peer));
            if was_rendezvous {
                actions.push(Action::AddressesChanged);
            }
            if sessions.remove(&peer).is_some() && s.contact(&peer)?.is_some() {
                s.set_last_seen(&peer, now_ms())?;
                actions.push(Action::Emit(Event::ContactOffline { contact: peer }));
                if s.contact_state(&peer)? == Some(ContactState::Friend) {
                    actions.push(Action::Reconnect(peer));
                }
            }
        }
        CrustEvent::NewMessage { peer, data } if data.starts_with(crust::dht::MAGIC) => {
            // DHT traffic, on any connection (a bootstrap connection to a
            // crust-node or another chat node, or a contact's).
            if !s.is_blocked(&peer)? {
                actions.push(Action::Dht(peer, data));
            }
        }
        CrustEvent::NewMessage { peer, .. } if !sessions.contains_key(&peer) => {
            // A bootstrap connection (no chat session): only the DHT
            // speaks on it.
        }
        CrustEvent::NewMessage { peer, data } => {
            if s.is_blocked(&peer)? {
                return Ok(());
            }
            if data.starts_with(crust::mailbox::MAGIC) {
                let mut replies = Vec::new();
                let delivered = crate::mailbox::on_message(s, shared, &peer, &data, &mut replies)?;
                for (sender, wire) in delivered {
                    message(s, shared, sessions, sender, wire, actions, acks)?;
                }
                actions.extend(replies.into_iter().map(|(p, b)| Action::Mail(p, b)));
                return Ok(());
            }
            match Wire::decode(&data) {
                Ok(wire) => message(s, shared, sessions, peer, wire, actions, acks)?,
                Err(e) => tracing::debug!(%peer, "ignoring message: {e}"),
            }
        }
        CrustEvent::NatReport(_) => {
            actions.push(Action::ReportNetwork);
            actions.push(Action::AddressesChanged);
        }
        CrustEvent::LanPeer { peer, endpoints } => {
            // A contact on our LAN: dial it there, with no server between.
            if !sessions.contains_key(&peer) && !s.is_blocked(&peer)? && s.contact(&peer)?.is_some()
            {
                tracing::debug!(%peer, ?endpoints, "contact found on the LAN");
                actions.push(Action::DialLan(peer, endpoints));
            }
        }
        other => tracing::debug!(?other, "crust event"),
    }
    Ok(())
}

fn message(
    s: &Store,
    shared: &Shared,
    sessions: &mut HashMap<PeerId, Session>,
    peer: PeerId,
    wire: Wire,
    actions: &mut Vec<Action>,
    acks: &mut Vec<(PeerId, Vec<[u8; 16]>)>,
) -> Result<(), StoreError> {
    let remote_ip = lock(&shared.online)
        .get(&peer)
        .map(|info| info.remote_addr.ip());
    let fix_addrs = |addrs: Vec<Endpoint>| -> Vec<Endpoint> {
        addrs
            .into_iter()
            .take(16)
            .map(|e| match remote_ip {
                Some(ip) if e.addr.ip().is_unspecified() => Endpoint {
                    addr: SocketAddr::new(ip, e.addr.port()),
                    ..e
                },
                _ => e,
            })
            .collect()
    };
    match wire {
        Wire::Hello { addrs, friend, .. } => {
            if let Some(session) = sessions.get_mut(&peer) {
                session.peer_says_friend = Some(friend);
            }
            if s.contact(&peer)?.is_some() {
                let addrs = fix_addrs(addrs);
                if !addrs.is_empty() {
                    s.set_addrs(&peer, &addrs)?;
                }
                after_hello(s, shared, &peer, friend, actions)?;
                // Who holds mail for us, for a friend.
                if let Some(wire) = crate::mailbox::holders_wire(s, shared, &peer)? {
                    actions.push(Action::Send(peer, wire));
                }
            }
        }
        Wire::Request {
            token,
            name,
            message,
            addrs,
            replaces,
        } => {
            let name = crate::invite::truncate_utf8(&name, 64).to_owned();
            let message = crate::invite::truncate_utf8(&message, 500).to_owned();
            match s.contact_state(&peer)? {
                Some(ContactState::Friend) => {
                    actions.push(Action::Send(
                        peer,
                        Wire::Hello {
                            name: shared.name(),
                            addrs: shared.my_addrs(false),
                            friend: true,
                        },
                    ));
                }
                Some(ContactState::RequestSent) => {
                    // Both asked: that is mutual consent.
                    becomes_friend(s, shared, &peer, actions)?;
                }
                Some(ContactState::Declined) | None => {
                    let current = s
                        .meta("request_token")?
                        .and_then(|v| <[u8; 4]>::try_from(v.as_slice()).ok())
                        .unwrap_or_default();
                    if token != current {
                        tracing::debug!(%peer, "dropping a friend request with an old or wrong token");
                        return Ok(());
                    }
                    let replaces = replaces.and_then(|b| PeerId::from_bytes(b).ok());
                    let request = FriendRequest {
                        from: peer,
                        name,
                        message,
                        addrs: fix_addrs(addrs),
                        received_at_ms: now_ms(),
                        replaces,
                    };
                    if s.add_request(&request)? {
                        if let Some(old) = replaces.filter(|old| *old != peer)
                            && s.contact(&old)?.is_some()
                        {
                            actions.push(Action::Emit(Event::KeyChanged {
                                contact: old,
                                new_key: peer,
                            }));
                        }
                        actions.push(Action::Emit(Event::FriendRequest(request)));
                    }
                }
            }
        }
        Wire::Decline => {
            if s.contact_state(&peer)? == Some(ContactState::RequestSent) {
                s.set_contact_state(&peer, ContactState::Declined)?;
                actions.push(Action::Emit(Event::FriendDeclined { contact: peer }));
            }
        }
        Wire::Chat {
            id,
            seq,
            sent_at_ms,
            text,
        } => {
            if s.contact_state(&peer)? != Some(ContactState::Friend) {
                return Ok(());
            }
            if text.len() > MAX_TEXT_BYTES {
                tracing::debug!(%peer, "dropping an oversized message");
                return Ok(());
            }
            if let Some(m) = s.insert_incoming(&peer, MessageId(id), seq, sent_at_ms, &text)? {
                actions.push(Action::Emit(Event::MessageReceived(m)));
            }
            // Acknowledge repeats too: the first ack may have been lost.
            match acks.iter_mut().find(|(p, _)| *p == peer) {
                Some((_, ids)) => ids.push(id),
                None => acks.push((peer, vec![id])),
            }
        }
        Wire::Ack { ids } => {
            if let Some(session) = sessions.get_mut(&peer) {
                session.last_progress = Some(Instant::now());
            }
            state_changes(s, &peer, &ids, MessageState::Delivered, actions)?;
        }
        Wire::Read { ids } => state_changes(s, &peer, &ids, MessageState::Read, actions)?,
        Wire::Holders { holders } => crate::mailbox::learn_holders(s, &peer, holders)?,
        Wire::Rendezvous { peers } => {
            if s.contact(&peer)?.is_some() {
                let peers: Vec<Reach> = peers
                    .iter()
                    .filter_map(|bytes| PeerId::from_bytes(*bytes).ok())
                    .filter(|r| *r != peer && *r != shared.id)
                    .take(MAX_RENDEZVOUS)
                    .map(|r| (r, Vec::new()))
                    .collect();
                lock(&shared.their_rendezvous).insert(peer, peers);
            }
        }
        Wire::Dht { .. } => {
            tracing::debug!(%peer, "ignoring a DHT message in the retired chat format");
        }
        Wire::Typing { typing } => {
            if s.contact_state(&peer)? == Some(ContactState::Friend) {
                actions.push(Action::Emit(Event::Typing {
                    contact: peer,
                    typing,
                }));
            }
        }
    }
    Ok(())
}

fn state_changes(
    s: &Store,
    peer: &PeerId,
    ids: &[[u8; 16]],
    state: MessageState,
    actions: &mut Vec<Action>,
) -> Result<(), StoreError> {
    for id in ids {
        let id = MessageId(*id);
        if s.advance_state(peer, &id, state)? {
            actions.push(Action::Emit(Event::MessageStateChanged {
                contact: *peer,
                id,
                state,
            }));
        }
    }
    Ok(())
}

/// What follows the peer's `Hello` (or our own change of heart while
/// connected), given whether the peer sees us as a friend.
fn after_hello(
    s: &Store,
    shared: &Shared,
    peer: &PeerId,
    peer_says_friend: bool,
    actions: &mut Vec<Action>,
) -> Result<(), StoreError> {
    let Some(contact) = s.contact(peer)? else {
        return Ok(());
    };
    match contact.state {
        ContactState::Friend if peer_says_friend => {
            actions.push(Action::Flush {
                peer: *peer,
                all: true,
            });
            actions.push(Action::Reads(*peer));
        }
        ContactState::Friend | ContactState::Declined => {}
        ContactState::RequestSent if peer_says_friend => becomes_friend(s, shared, peer, actions)?,
        ContactState::RequestSent => {
            actions.push(Action::Send(
                *peer,
                Wire::Request {
                    token: contact.request_token.unwrap_or_default(),
                    name: shared.name(),
                    message: contact.request_message,
                    addrs: shared.my_addrs(false),
                    replaces: contact.replaces.map(|p| *p.as_bytes()),
                },
            ));
        }
    }
    Ok(())
}

/// Our request was accepted (or crossed theirs): we are friends now.
fn becomes_friend(
    s: &Store,
    shared: &Shared,
    peer: &PeerId,
    actions: &mut Vec<Action>,
) -> Result<(), StoreError> {
    s.set_contact_state(peer, ContactState::Friend)?;
    s.remove_request(peer)?;
    actions.push(Action::Emit(Event::FriendAccepted { contact: *peer }));
    actions.push(Action::Send(
        *peer,
        Wire::Hello {
            name: shared.name(),
            addrs: shared.my_addrs(false),
            friend: true,
        },
    ));
    actions.push(Action::Flush {
        peer: *peer,
        all: true,
    });
    actions.push(Action::Reads(*peer));
    Ok(())
}

/// Connects to `peer` through one of the rendezvous peers `via` (crust
/// punches holes in both NATs, or relays): first those we are connected
/// to, then those we know where to reach, connecting to them first.
/// Returns the rendezvous peers it connected to for this.
async fn via_rendezvous(service: &crust::Service, peer: PeerId, via: Vec<Reach>) -> Vec<PeerId> {
    let connected: HashSet<PeerId> = service
        .connected_peers()
        .await
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    let (now, later): (Vec<_>, Vec<_>) = via.into_iter().partition(|(r, _)| connected.contains(r));
    let mut opened = Vec::new();
    for (rendezvous, addrs) in now.into_iter().chain(later) {
        if !connected.contains(&rendezvous) {
            if addrs.is_empty() {
                continue;
            }
            match service.connect(rendezvous, &addrs).await {
                Ok(_) => opened.push(rendezvous),
                Err(e) => {
                    tracing::debug!(%peer, %rendezvous, error = %e, "rendezvous not reached");
                    continue;
                }
            }
        }
        match service.connect_via(peer, rendezvous).await {
            Ok(info) => {
                tracing::info!(%peer, %rendezvous, path = ?info.path, "connected through a rendezvous");
                break;
            }
            Err(e) => tracing::debug!(%peer, %rendezvous, error = %e, "rendezvous failed"),
        }
    }
    opened
}

/// Our rendezvous peers, as told to a contact.
/// A connection to `peer` is up over `info` (new, or replacing another):
/// a contact is reported online, and everyone gets our hello (name,
/// addresses, and whether we count them a friend).
fn online_and_hello(
    actions: &mut Vec<Action>,
    shared: &Shared,
    peer: PeerId,
    info: crust::ConnectionInfo,
    contact: Option<&crate::store::ContactRow>,
) {
    if contact.is_some() {
        actions.push(Action::Emit(Event::ContactOnline {
            contact: peer,
            path: info,
        }));
    }
    actions.push(Action::Send(
        peer,
        Wire::Hello {
            name: shared.name(),
            addrs: shared.my_addrs(false),
            friend: contact.is_some_and(|c| c.state == ContactState::Friend),
        },
    ));
}

fn rendezvous_message(peers: &[PeerId]) -> Wire {
    Wire::Rendezvous {
        peers: peers
            .iter()
            .take(MAX_RENDEZVOUS)
            .map(|p| *p.as_bytes())
            .collect(),
    }
}

/// Whether `ip` is still one of this machine's addresses (binding to an
/// address it does not have fails). An IPv6 link-local address (which
/// needs its interface to bind) is taken to be.
fn is_local_address(ip: std::net::IpAddr) -> bool {
    let link_local = matches!(ip, std::net::IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
    ip.is_unspecified()
        || ip.is_loopback()
        || link_local
        || std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
