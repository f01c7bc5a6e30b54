//! A DHT node that serves others and wants nothing for itself: what
//! `crust-node` runs, so public crust nodes form the DHT's stable core.
//!
//! [`Server`] drives the [`Dht`] engine over a crust [`Service`]: it
//! answers queries, keeps records others store with it (the engine checks
//! signature, version, size and expiry, and bounds how many it holds),
//! refreshes its buckets, and takes every peer that says it is reachable
//! into its routing table. It publishes no record and looks nothing up for
//! itself. Every connection gets a `Ping`, so both sides learn whether the
//! other is a server; a server met first starts a lookup of our own id,
//! which fills the table and makes us known to our neighbours.
//!
//! The owner feeds it in this order: [`Server::new`] after the service
//! started; then every service [`Event`] through [`Server::handle_event`]
//! (it takes the DHT's messages and says so, and watches connections come
//! and go), and in the same `select!`, [`Server::wait`] followed by
//! [`Server::woke`] (timers and dials). A message for a node we are not
//! connected to waits while the server dials it; connections it opened for
//! the DHT alone close after [`ServerConfig::idle`] unused. A peer whose
//! send queue is full misses the reply rather than stalling the owner's
//! loop. Broken DHT traffic is counted and dropped, never fatal.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::dials::Dials;
use super::engine::{Config, Dht, Event as DhtEvent, Output};
use super::envelope::Envelope;
use super::message::{Contact, MAX_CONTACT_ENDPOINTS, Message};
use super::mode::{Mode, reachable_endpoints};
use crate::{Endpoint, Event, PeerId, Priority, SecretId, Service};

/// How long a message may wait for room in the peer's send queue: not at
/// all (`tokio::time::timeout` polls the send once before it looks at the
/// clock, so it is queued when there is room). A peer that asks and never
/// reads loses its answers, as over UDP, instead of stalling the owner's
/// loop for every question it sends.
const SEND_WAIT: Duration = Duration::ZERO;
/// How often connections opened for the DHT alone are checked for idleness.
const IDLE_CHECK: Duration = Duration::from_secs(5);
/// How often the server logs what it holds (at `info`).
const REPORT_INTERVAL: Duration = Duration::from_secs(600);

/// How the server takes part.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Whether it lists its endpoints (see [`Mode`]); a public node is a
    /// [`Mode::Server`].
    pub mode: Mode,
    /// The engine's tunables (k, α, timeouts, refresh, record capacity).
    pub engine: Config,
    /// A connection opened only for the DHT is closed after this long
    /// unused.
    pub idle: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Server,
            engine: Config::default(),
            idle: Duration::from_secs(60),
        }
    }
}

/// What the server is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStatus {
    /// Whether it lists its endpoints now.
    pub serving: bool,
    /// Contacts in its routing table.
    pub table: usize,
    /// Records held for others.
    pub records_held: usize,
    /// DHT messages and records refused so far (malformed, oversized,
    /// forged, stale).
    pub rejected: u64,
}

/// What woke the server; pass it to [`Server::woke`].
#[derive(Debug)]
pub struct Wake(WakeKind);

#[derive(Debug)]
enum WakeKind {
    Timer,
    Dialled(PeerId, bool),
}

/// A DHT server over a crust service.
pub struct Server {
    dht: Dht,
    service: Service,
    config: ServerConfig,
    /// Our listeners (unspecified IPs are filled in by the receiver).
    listeners: Vec<Endpoint>,
    /// Connected peers and the IP each connection comes from.
    peers: HashMap<PeerId, Option<IpAddr>>,
    /// Dials for the DHT and the connections opened for it alone.
    dials: Dials,
    next_idle_check: Instant,
    next_report: Instant,
    rejected: u64,
    pings: u64,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("dht", &self.dht)
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server for `service`, whose identity is `secret` (the DHT id is
    /// the crust id).
    pub async fn new(config: ServerConfig, secret: SecretId, service: Service) -> Self {
        let now = Instant::now();
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let listeners = service.listeners().await;
        let dials = Dials::new(service.clone(), config.engine.request_timeout);
        Self {
            dht: Dht::new(config.engine.clone(), secret, now, unix),
            service,
            config,
            listeners,
            peers: HashMap::new(),
            dials,
            next_idle_check: now + IDLE_CHECK,
            next_report: now + REPORT_INTERVAL,
            rejected: 0,
            pings: 0,
        }
    }

    /// What it is doing.
    pub fn status(&self) -> ServerStatus {
        ServerStatus {
            serving: self.serving(),
            table: self.dht.table_len(),
            records_held: self.dht.records_held(),
            rejected: self.rejected,
        }
    }

    fn serving(&self) -> bool {
        self.config.mode.serves(&self.service.nat_report())
    }

    /// The endpoints we list: our listeners, then what UPnP or an
    /// endpoint-independent NAT maps to us.
    fn reachable(&self) -> Vec<Endpoint> {
        if !self.serving() {
            return Vec::new();
        }
        reachable_endpoints(
            self.listeners.clone(),
            &self.service.nat_report(),
            MAX_CONTACT_ENDPOINTS,
        )
    }

    /// Takes one service event. Returns `true` when it was DHT traffic
    /// (consumed here, whether valid or not); every other event is only
    /// watched and stays the caller's.
    pub async fn handle_event(&mut self, event: &Event) -> bool {
        match event {
            Event::NewMessage { peer, data } => match Envelope::decode(data) {
                Ok(Some(envelope)) => {
                    self.message(*peer, envelope).await;
                    true
                }
                Ok(None) => {
                    // The connection is in use for something else.
                    self.dials.used(peer);
                    false
                }
                Err(error) => {
                    self.rejected += 1;
                    tracing::debug!(%peer, %error, "refusing a DHT message");
                    true
                }
            },
            Event::BootstrapConnect { peer, addr } | Event::BootstrapAccept { peer, addr } => {
                self.connected(*peer, addr.addr.ip()).await;
                false
            }
            Event::ConnectSuccess { peer, info } => {
                self.connected(*peer, info.remote_addr.ip()).await;
                false
            }
            Event::ConnectionChanged { peer, info } => {
                self.peers.insert(*peer, Some(info.remote_addr.ip()));
                false
            }
            Event::LostPeer { peer, .. } => {
                self.peers.remove(peer);
                self.dials.lost(peer);
                false
            }
            Event::ListenerStarted(endpoint) => {
                if !self.listeners.contains(endpoint) {
                    self.listeners.push(*endpoint);
                }
                false
            }
            _ => false,
        }
    }

    /// Waits for a timer or a dial to end (cancel-safe).
    pub async fn wait(&mut self) -> Wake {
        let deadline = self
            .dht
            .poll_timeout()
            .map_or(self.next_idle_check, |t| t.min(self.next_idle_check));
        tokio::select! {
            (peer, ok) = self.dials.next_dial_end() => Wake(WakeKind::Dialled(peer, ok)),
            () = tokio::time::sleep_until(deadline.into()) => Wake(WakeKind::Timer),
        }
    }

    /// Does what [`wait`](Self::wait) woke us for.
    pub async fn woke(&mut self, wake: Wake) {
        match wake.0 {
            WakeKind::Dialled(peer, ok) => {
                for message in self.dials.dial_ended(peer, ok) {
                    self.send_now(&peer, &message).await;
                }
            }
            WakeKind::Timer => {
                let now = Instant::now();
                let out = self.dht.handle_timeout(now);
                self.run(out).await;
                if now >= self.next_idle_check {
                    self.next_idle_check = now + IDLE_CHECK;
                    self.close_idle(now).await;
                    if self.dht.table_len() == 0 {
                        // No server known yet: a first ping lost or
                        // answered late (a busy peer) is never repeated
                        // otherwise, so ask every connected peer again.
                        let peers: Vec<PeerId> = self.peers.keys().copied().collect();
                        for peer in peers {
                            self.ping(peer).await;
                        }
                    }
                }
                if now >= self.next_report {
                    self.next_report = now + REPORT_INTERVAL;
                    let status = self.status();
                    tracing::info!(
                        serving = status.serving,
                        table = status.table,
                        records = status.records_held,
                        refused = status.rejected,
                        "DHT"
                    );
                }
            }
        }
    }

    async fn close_idle(&mut self, now: Instant) {
        for peer in self.dials.take_idle(now, self.config.idle) {
            tracing::debug!(%peer, "closing an idle DHT connection");
            self.peers.remove(&peer);
            self.service.disconnect(&peer).await;
        }
    }

    /// A connection to `peer` opened: send what waits for it, and ping it
    /// so each side learns whether the other is a server.
    async fn connected(&mut self, peer: PeerId, ip: IpAddr) {
        self.peers.insert(peer, Some(ip));
        self.flush(peer).await;
        self.ping(peer).await;
    }

    /// Pings `peer`. Not a request the engine waits for: the answer only
    /// tells the engine (`handle_from`) whether the peer is a server.
    async fn ping(&mut self, peer: PeerId) {
        self.pings = self.pings.wrapping_add(1);
        self.send_now(&peer, &Message::Ping { id: self.pings })
            .await;
    }

    async fn message(&mut self, peer: PeerId, envelope: Envelope) {
        let now = Instant::now();
        self.dials.used(&peer);
        let remote = self.peers.get(&peer).copied().flatten();
        let endpoints = envelope.reachable_at(remote);
        let server = !endpoints.is_empty();
        let from = Contact {
            id: peer,
            endpoints,
        };
        let first = server && self.dht.table_len() == 0;
        let out = self.dht.handle_from(now, &from, server, envelope.message);
        self.run(out).await;
        if first && self.dht.table_len() > 0 {
            tracing::info!(%peer, "DHT: the first server we know; joining through it");
            // The first server we know: look ourselves up through it.
            let out = self.dht.bootstrap(now, &[]);
            self.run(out).await;
        }
    }

    async fn run(&mut self, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Send { to, message } => self.send(to, message).await,
                Output::Event(DhtEvent::RecordRejected { from, error }) => {
                    self.rejected += 1;
                    tracing::debug!(%from, %error, "DHT record refused");
                }
                Output::Event(event) => tracing::trace!(?event, "DHT"),
            }
        }
    }

    async fn send_now(&mut self, peer: &PeerId, message: &Message) -> bool {
        self.dials.used(peer);
        let bytes = Envelope {
            reachable: self.reachable(),
            message: message.clone(),
        }
        .encode();
        matches!(
            tokio::time::timeout(SEND_WAIT, self.service.send(peer, bytes, Priority::NORMAL)).await,
            Ok(Ok(()))
        )
    }

    async fn send(&mut self, to: Contact, message: Message) {
        if self.peers.contains_key(&to.id) {
            self.send_now(&to.id, &message).await;
        } else {
            self.dials.send_after_dial(to, message);
        }
    }

    async fn flush(&mut self, peer: PeerId) {
        for message in self.dials.take_waiting(&peer) {
            self.send_now(&peer, &message).await;
        }
    }
}
