//! The DHT over crust connections: drives the sans-IO [`Dht`] engine from
//! the node's actor.
//!
//! Every chat node takes part. Engine messages travel in crust's DHT
//! envelope ([`crust::dht::Envelope`], "CRDH") on the same authenticated
//! crust connections as chat (a peer's DHT identity is its crust identity,
//! so nobody can answer for another id), so chat nodes and `crust-node`s
//! (which run [`crust::dht::Server`]) form one DHT. Each one carries the
//! endpoints on which the sender takes connections: a node in server mode
//! (no NAT, a UPnP mapping, or configured so) lists them and enters the
//! routing tables of those it talks to; a node in client mode lists none
//! and is answered but never put in anyone's table, so no node hands out
//! an address nobody can dial.
//!
//! A message for a node we are not connected to waits while the driver
//! dials it (on the endpoints the routing table has); connections opened
//! only for the DHT are closed after [`DHT_IDLE`] without use. Lookups are
//! bounded by [`DhtConfig::lookup_timeout`].
//!
//! The node publishes its record (its endpoints and rendezvous peers) once
//! it knows a DHT server, again whenever those change, and the engine
//! re-signs it every half hour (records live two hours). Contacts that
//! cannot be reached at their last addresses are looked up
//! ([`DhtDriver::want_record`]); a record found gives the actor new
//! endpoints and rendezvous peers to dial.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crust::dht::{Dials, Envelope};
use crust::{Endpoint, PeerId, Priority};
use tokio::sync::oneshot;

use crate::dht::{
    Config, Contact, Dht, Event as DhtEvent, LookupStats, MAX_CONTACT_ENDPOINTS,
    MAX_RECORD_ENDPOINTS, MAX_RECORD_RENDEZVOUS, MAX_RENDEZVOUS_ENDPOINTS, Message, Output,
    PeerRecord, QueryId, RecordError, RendezvousPeer,
};
use crate::node::Reach;

/// A connection opened only for the DHT is closed after this long unused.
pub(crate) const DHT_IDLE: Duration = Duration::from_secs(60);
/// A wall clock that moved this much further (or less) than the monotonic
/// clock means the machine was suspended, or its clock was set.
const CLOCK_JUMP: Duration = Duration::from_secs(30);
/// A publication that reached nobody, fewer of the servers we know than
/// it could, or not the closest ones it learned of (they did not answer in
/// time: slow, busy, or not dialled within the request timeout), is tried
/// again after this long.
const PUBLISH_RETRY: Duration = Duration::from_secs(5);
/// How often in a row a publication that reached some servers but not all
/// it could is tried again (a request that timed out on a busy server
/// would otherwise leave the record with fewer holders until the next
/// republication, an hour later).
const PARTIAL_PUBLISH_RETRIES: u32 = 3;
/// Address changes are published after this long, so a burst of them is
/// one publication.
const PUBLISH_SETTLE: Duration = Duration::from_millis(300);
/// Our addresses are compared with the published ones at most this often
/// (besides on every crust event that may change them).
const ADDRESS_CHECK: Duration = Duration::from_secs(2);
/// With an empty routing table, crust bootstraps again this often.
const REBOOTSTRAP: Duration = Duration::from_secs(10);
/// How long a DHT message may wait for room in a peer's send queue: not
/// at all (the send is polled once, so it is queued when there is room).
/// A peer that asks and never reads loses its answers, as over UDP,
/// instead of stalling the node's actor for every question it sends.
const SEND_WAIT: Duration = Duration::ZERO;

/// The wall clock a node reads. Comparing it with the monotonic clock
/// (which stands still while the machine sleeps) is how the node notices a
/// suspend and resume; it also dates the node's DHT records.
/// [`SystemClock`] is the real one (`NodeConfig::default()`); a test puts
/// in one it can move, to play a suspend.
pub trait WallClock: Send + Sync + std::fmt::Debug {
    /// The time now.
    fn now(&self) -> SystemTime;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Whether this node offers itself as a DHT server (crust's
/// [`crust::dht::Mode`]).
pub use crust::dht::Mode as DhtMode;

/// How the node takes part in the DHT.
#[derive(Debug, Clone)]
pub struct DhtConfig {
    /// Server or client.
    pub mode: DhtMode,
    /// Longest a lookup may take.
    pub lookup_timeout: Duration,
    /// How long one DHT request waits for its answer.
    pub request_timeout: Duration,
    /// An unreachable contact's record is looked up at most this often.
    pub record_retry: Duration,
}

impl Default for DhtConfig {
    fn default() -> Self {
        Self {
            mode: DhtMode::Auto,
            lookup_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(2),
            record_retry: Duration::from_secs(60),
        }
    }
}

/// What the node's DHT is doing; see `Node::dht_status`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DhtStatus {
    /// Whether we offer ourselves as a server (are in others' tables).
    pub server: bool,
    /// Contacts in our routing table.
    pub table: usize,
    /// Records held for others.
    pub records_held: usize,
    /// The version of our record last published.
    pub published: Option<u64>,
    /// How many nodes our last publication reached.
    pub stored_at: usize,
    /// Records and messages from others refused so far (bad signature,
    /// stale, oversized, malformed).
    pub rejected: u64,
    /// Record lookups started so far for contacts we could not reach.
    pub lookups: u64,
}

/// A record lookup's answer: the record if a valid one was found, and how
/// the lookup went.
pub type RecordLookup = (Option<PeerRecord>, LookupStats);

/// Something the actor acts on.
#[derive(Debug)]
pub(crate) enum Found {
    /// A contact's record, looked up because it could not be reached.
    Record(PeerRecord),
}

/// What woke the driver.
#[derive(Debug)]
pub(crate) enum Wake {
    Timer,
    Dialled(PeerId, bool),
}

pub(crate) struct DhtDriver {
    dht: Dht,
    config: DhtConfig,
    service: crust::Service,
    /// Connected peers (any kind).
    connected: HashSet<PeerId>,
    /// Dials for the DHT and the connections opened for it alone.
    dials: Dials,
    /// Record lookups asked for by `Node::find_record`.
    replies: HashMap<QueryId, Vec<oneshot::Sender<RecordLookup>>>,
    /// Record lookups for contacts we cannot reach.
    for_reconnect: HashMap<QueryId, PeerId>,
    /// When each contact's record was last looked up.
    last_lookup: HashMap<PeerId, Instant>,
    publish_due: Option<Instant>,
    /// What the last publication was made from (before any shrinking).
    published: Option<(Vec<Endpoint>, Vec<Reach>)>,
    stored_at: usize,
    /// Partial publications retried in a row (see
    /// [`PARTIAL_PUBLISH_RETRIES`]).
    partial_retries: u32,
    rejected: u64,
    /// Our endpoints as last computed (told to peers when we are a
    /// server).
    endpoints: Vec<Endpoint>,
    /// Our endpoints when `addresses_changed` last looked.
    seen_endpoints: Option<Vec<Endpoint>>,
    /// When we last asked crust to bootstrap for want of DHT contacts.
    last_bootstrap: Instant,
    /// When the periodic address check last ran.
    last_address_check: Instant,
    /// Unix ms minus monotonic ms at the last check.
    clock_offset: i128,
    epoch: Instant,
    clock: Arc<dyn WallClock>,
    /// Record lookups started for unreachable contacts.
    lookups: u64,
}

impl std::fmt::Debug for DhtDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhtDriver")
            .field("dht", &self.dht)
            .finish_non_exhaustive()
    }
}

fn unix_ms(clock: &dyn WallClock) -> i128 {
    clock
        .now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i128)
}

/// Our rendezvous peers as our record names them, with where we reached
/// each.
fn record_rendezvous(rendezvous: &[Reach]) -> Vec<RendezvousPeer> {
    rendezvous
        .iter()
        .take(MAX_RECORD_RENDEZVOUS)
        .map(|(peer, endpoints)| {
            let mut endpoints = endpoints.clone();
            endpoints.truncate(MAX_RENDEZVOUS_ENDPOINTS);
            RendezvousPeer::new(*peer, endpoints)
        })
        .collect()
}

/// Makes `rendezvous` smaller when the record does not fit in
/// [`MAX_RECORD_BODY`](crate::dht::MAX_RECORD_BODY) (long IPv6 endpoints):
/// the last peer's endpoints go first, then the peer. False if nothing is
/// left to drop.
fn shrink(rendezvous: &mut Vec<RendezvousPeer>) -> bool {
    if let Some(last) = rendezvous
        .iter_mut()
        .rev()
        .find(|r| !r.endpoints.is_empty())
    {
        last.endpoints.pop();
        true
    } else {
        rendezvous.pop().is_some()
    }
}

impl DhtDriver {
    pub(crate) fn new(
        config: DhtConfig,
        secret: crust::SecretId,
        service: crust::Service,
        endpoints: Vec<Endpoint>,
        clock: Arc<dyn WallClock>,
    ) -> Self {
        let now = Instant::now();
        let mut seed = [0u8; 8];
        crate::fill_random(&mut seed);
        let engine = Config {
            lookup_timeout: config.lookup_timeout,
            request_timeout: config.request_timeout,
            rng_seed: u64::from_le_bytes(seed),
            ..Config::default()
        };
        let unix = Duration::from_millis(u64::try_from(unix_ms(&*clock)).unwrap_or(0));
        let dials = Dials::new(service.clone(), config.request_timeout);
        Self {
            dht: Dht::new(engine, secret, now, unix),
            config,
            service,
            connected: HashSet::new(),
            dials,
            replies: HashMap::new(),
            for_reconnect: HashMap::new(),
            last_lookup: HashMap::new(),
            publish_due: Some(now),
            published: None,
            stored_at: 0,
            partial_retries: 0,
            rejected: 0,
            endpoints,
            seen_endpoints: None,
            last_bootstrap: now,
            last_address_check: now,
            clock_offset: unix_ms(&*clock) - now.elapsed().as_millis() as i128,
            epoch: now,
            clock,
            lookups: 0,
        }
    }

    /// Whether we offer ourselves as a server now.
    fn server(&self) -> bool {
        self.config.mode.serves(&self.service.nat_report())
    }

    /// The endpoints our record names: our own (hints and listeners), then
    /// what UPnP or the NAT maps to us.
    fn record_endpoints(&self, own: Vec<Endpoint>) -> Vec<Endpoint> {
        crust::dht::reachable_endpoints(own, &self.service.nat_report(), MAX_RECORD_ENDPOINTS)
    }

    /// When [`wait`](Self::wait) has something to do, at the latest.
    fn deadline(&self) -> Option<Instant> {
        [self.dht.poll_timeout(), self.publish_due]
            .into_iter()
            .flatten()
            .min()
    }

    /// Waits for a timer or a dial to end (cancel-safe).
    pub(crate) async fn wait(&mut self) -> Wake {
        let deadline = self.deadline();
        tokio::select! {
            (peer, ok) = self.dials.next_dial_end() => Wake::Dialled(peer, ok),
            () = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            } => Wake::Timer,
        }
    }

    /// Handles what woke us; `own` is our endpoints, `rendezvous` our
    /// rendezvous peers and where we reached them.
    pub(crate) async fn woke(
        &mut self,
        wake: Wake,
        own: Vec<Endpoint>,
        rendezvous: Vec<Reach>,
    ) -> Vec<Found> {
        let now = Instant::now();
        let mut found = Vec::new();
        match wake {
            Wake::Dialled(peer, ok) => {
                if ok {
                    self.connected.insert(peer);
                }
                for message in self.dials.dial_ended(peer, ok) {
                    self.send_now(&peer, &message).await;
                }
            }
            Wake::Timer => {
                let out = self.dht.handle_timeout(now);
                self.run(out, &mut found).await;
            }
        }
        self.maybe_publish(now, own, rendezvous, &mut found).await;
        found
    }

    async fn maybe_publish(
        &mut self,
        now: Instant,
        own: Vec<Endpoint>,
        rendezvous: Vec<Reach>,
        found: &mut Vec<Found>,
    ) {
        if self.publish_due.is_none_or(|at| at > now) {
            return;
        }
        if self.dht.table_len() == 0 {
            // Nobody to store it with yet: the first server we meet
            // triggers it (`handle`).
            self.publish_due = None;
            return;
        }
        self.publish_due = None;
        let endpoints = self.record_endpoints(own);
        self.endpoints.clone_from(&endpoints);
        let mut named = record_rendezvous(&rendezvous);
        loop {
            match self.dht.publish(now, endpoints.clone(), named.clone()) {
                Ok((_, out)) => {
                    tracing::debug!(?endpoints, rendezvous = ?named, "publishing our DHT record");
                    self.published = Some((endpoints, rendezvous));
                    self.run(out, found).await;
                }
                Err(RecordError::TooLarge { .. }) if shrink(&mut named) => continue,
                Err(error) => tracing::warn!(%error, "cannot sign our DHT record"),
            }
            break;
        }
    }

    /// Our endpoints or rendezvous peers may have changed: publish again
    /// if they did. Returns whether we lost an endpoint since the last
    /// call (the network changed under us), whether or not anything was
    /// published yet.
    pub(crate) fn addresses_changed(&mut self, own: Vec<Endpoint>, rendezvous: &[Reach]) -> bool {
        let endpoints = self.record_endpoints(own);
        self.endpoints.clone_from(&endpoints);
        // Learning one more address (a NAT mapping) is not a move; losing
        // one is.
        let moved = self
            .seen_endpoints
            .replace(endpoints.clone())
            .is_some_and(|seen| seen.iter().any(|old| !endpoints.contains(old)));
        match &self.published {
            Some((e, r)) if *e == endpoints && r.as_slice() == rendezvous => {}
            Some(_) => self.publish_due = Some(Instant::now() + PUBLISH_SETTLE),
            None => {
                if self.publish_due.is_none() {
                    self.publish_due = Some(Instant::now() + PUBLISH_SETTLE);
                }
            }
        }
        moved
    }

    /// Whether the wall clock jumped against the monotonic one since the
    /// last call (a suspend and resume, or the clock was set); re-anchors
    /// the engine's Unix time if so.
    pub(crate) fn clock_jumped(&mut self) -> bool {
        let now = Instant::now();
        let unix = unix_ms(&*self.clock);
        let offset = unix - now.duration_since(self.epoch).as_millis() as i128;
        let jumped = (offset - self.clock_offset).unsigned_abs() > CLOCK_JUMP.as_millis();
        self.clock_offset = offset;
        if jumped {
            // The engine's clock reads `unix` at `now` from here on.
            self.dht
                .set_unix_time(now, Duration::from_millis(u64::try_from(unix).unwrap_or(0)));
        }
        jumped
    }

    /// The network changed under us: publish again soon and look contacts
    /// up again at once.
    pub(crate) fn network_changed(&mut self) {
        self.publish_due = Some(Instant::now() + PUBLISH_SETTLE);
        self.last_lookup.clear();
        // A lookup started on the old network may wait on nodes we can no
        // longer reach: start afresh (what it still finds is dropped).
        self.for_reconnect.clear();
    }

    /// Whether we know no DHT server and did not bootstrap for a while
    /// (the seeds were down when we started): bootstrap again.
    pub(crate) fn wants_bootstrap(&mut self) -> bool {
        let now = Instant::now();
        if self.dht.table_len() > 0 || now.duration_since(self.last_bootstrap) < REBOOTSTRAP {
            return false;
        }
        self.last_bootstrap = now;
        true
    }

    /// Whether the periodic address check is due (and marks it done).
    pub(crate) fn address_check_due(&mut self) -> bool {
        let now = Instant::now();
        if now.duration_since(self.last_address_check) < ADDRESS_CHECK {
            return false;
        }
        self.last_address_check = now;
        true
    }

    /// A connection to `peer` was opened for one purpose (a rendezvous):
    /// close it after [`DHT_IDLE`] unused, as one opened for the DHT.
    pub(crate) fn close_when_idle(&mut self, peer: PeerId) {
        self.dials.close_when_idle(peer);
    }

    /// Publish again now.
    pub(crate) fn republish(&mut self) {
        self.publish_due = Some(Instant::now());
    }

    /// A connection to `peer` opened: flush what waits for it and ping it,
    /// so each side learns whether the other is a server.
    pub(crate) async fn connected(&mut self, peer: PeerId) {
        self.connected.insert(peer);
        self.flush(peer).await;
        self.ping(peer).await;
    }

    /// Sends `peer` a `Ping`, which every DHT node answers: after a
    /// suspend or a network change, a connection that brings no answer is
    /// dead.
    pub(crate) async fn ping(&mut self, peer: PeerId) {
        let mut id = [0u8; 8];
        crate::fill_random(&mut id);
        self.send_now(
            &peer,
            &Message::Ping {
                id: u64::from_le_bytes(id),
            },
        )
        .await;
    }

    /// Pings every connected peer again, as on a new connection: with an
    /// empty routing table, a first ping lost or timed out would otherwise
    /// never be repeated.
    pub(crate) async fn reping_connected(&mut self) {
        let peers: Vec<PeerId> = self.connected.iter().copied().collect();
        for peer in peers {
            self.connected(peer).await;
        }
    }

    /// The connection to `peer` is gone.
    pub(crate) fn lost(&mut self, peer: &PeerId) {
        self.connected.remove(peer);
        self.dials.lost(peer);
    }

    /// DHT traffic (an [`Envelope`]) from `peer`; `remote_ip`, where its
    /// connection comes from, fills in an unspecified listener address
    /// (looked up when the caller does not know it).
    pub(crate) async fn message(
        &mut self,
        peer: PeerId,
        bytes: &[u8],
        remote_ip: Option<std::net::IpAddr>,
    ) -> Vec<Found> {
        let mut found = Vec::new();
        let (reachable, message) = match Envelope::decode(bytes) {
            Ok(Some(envelope)) => {
                let unspecified = envelope
                    .reachable
                    .iter()
                    .any(|e| e.addr.ip().is_unspecified());
                let remote_ip = match remote_ip {
                    None if unspecified => self
                        .service
                        .connection_info(&peer)
                        .await
                        .map(|info| info.remote_addr.ip()),
                    known => known,
                };
                (envelope.reachable_at(remote_ip), envelope.message)
            }
            Ok(None) => return found,
            Err(error) => {
                self.rejected += 1;
                tracing::debug!(%peer, %error, "ignoring a DHT message");
                return found;
            }
        };
        self.dials.used(&peer);
        let endpoints = reachable;
        let server = !endpoints.is_empty();
        let from = Contact {
            id: peer,
            endpoints,
        };
        let first_server = server && self.dht.table_len() == 0;
        let now = Instant::now();
        let out = self.dht.handle_from(now, &from, server, message);
        self.run(out, &mut found).await;
        if first_server && self.dht.table_len() > 0 && self.publish_due.is_none() {
            // The first server we know: time to tell the network where we
            // are (and, through the publication's lookup, fill the table).
            self.publish_due = Some(now + PUBLISH_SETTLE);
        }
        found
    }

    /// Looks up `peer`'s record for the caller.
    pub(crate) async fn find_record(&mut self, peer: PeerId, reply: oneshot::Sender<RecordLookup>) {
        let (q, out) = self.dht.find_record(Instant::now(), peer);
        self.replies.entry(q).or_default().push(reply);
        // Only the caller waits for this query: nothing is found for the
        // actor.
        let mut found = Vec::new();
        self.run(out, &mut found).await;
    }

    /// Looks up a contact we cannot reach, unless that was done within
    /// `record_retry`; the answer comes back as [`Found::Record`].
    pub(crate) async fn want_record(&mut self, peer: PeerId) -> Vec<Found> {
        let now = Instant::now();
        let mut found = Vec::new();
        if self
            .last_lookup
            .get(&peer)
            .is_some_and(|t| now.duration_since(*t) < self.config.record_retry)
            || self.for_reconnect.values().any(|p| *p == peer)
            || self.dht.table_len() == 0
        {
            return found;
        }
        self.last_lookup.insert(peer, now);
        self.lookups += 1;
        let (q, out) = self.dht.find_record(now, peer);
        self.for_reconnect.insert(q, peer);
        self.run(out, &mut found).await;
        found
    }

    /// Peers connected only for the DHT and unused for [`DHT_IDLE`].
    pub(crate) fn idle(&mut self) -> Vec<PeerId> {
        let idle = self.dials.take_idle(Instant::now(), DHT_IDLE);
        for peer in &idle {
            self.connected.remove(peer);
        }
        idle
    }

    pub(crate) fn status(&self) -> DhtStatus {
        DhtStatus {
            server: self.server(),
            table: self.dht.table_len(),
            records_held: self.dht.records_held(),
            published: self.dht.published_version(),
            stored_at: self.stored_at,
            rejected: self.rejected,
            lookups: self.lookups,
        }
    }

    async fn run(&mut self, outputs: Vec<Output>, found: &mut Vec<Found>) {
        for output in outputs {
            match output {
                Output::Send { to, message } => self.send(to, message).await,
                Output::Event(event) => self.event(event, found),
            }
        }
    }

    fn event(&mut self, event: DhtEvent, found: &mut Vec<Found>) {
        match event {
            DhtEvent::RecordFound {
                query,
                peer,
                record,
                stats,
            } => {
                tracing::debug!(%peer, found = record.is_some(), ?stats, "DHT record lookup");
                if let Some(replies) = self.replies.remove(&query) {
                    for reply in replies {
                        let _ = reply.send((record.clone(), stats));
                    }
                }
                if self.for_reconnect.remove(&query).is_some()
                    && let Some(record) = record
                {
                    found.push(Found::Record(record));
                }
            }
            DhtEvent::Published {
                stored_at,
                missed,
                stats,
                ..
            } => {
                // A server whose requests timed out (slow, busy, or one we
                // could not dial in time) may have left the table meanwhile
                // or never entered it (learned from another's answer): the
                // engine says how many of the closest it missed.
                let could = self.dht.table_len().min(Config::default().k);
                tracing::debug!(stored_at, missed, could, ?stats, "DHT record published");
                self.stored_at = stored_at;
                if stored_at == 0 {
                    self.publish_due = Some(Instant::now() + PUBLISH_RETRY);
                } else if (stored_at < could || missed > 0)
                    && self.partial_retries < PARTIAL_PUBLISH_RETRIES
                {
                    self.partial_retries += 1;
                    self.publish_due = Some(Instant::now() + PUBLISH_RETRY);
                } else {
                    self.partial_retries = 0;
                }
            }
            DhtEvent::RecordRejected { from, error } => {
                self.rejected += 1;
                tracing::debug!(%from, %error, "DHT record refused");
            }
            _ => {}
        }
    }

    fn wire(&self, message: &Message) -> Vec<u8> {
        let reachable = if self.server() {
            self.endpoints
                .iter()
                .take(MAX_CONTACT_ENDPOINTS)
                .copied()
                .collect()
        } else {
            Vec::new()
        };
        Envelope {
            reachable,
            message: message.clone(),
        }
        .encode()
    }

    async fn send_now(&mut self, peer: &PeerId, message: &Message) -> bool {
        self.dials.used(peer);
        let wire = self.wire(message);
        matches!(
            tokio::time::timeout(SEND_WAIT, self.service.send(peer, wire, Priority::NORMAL)).await,
            Ok(Ok(()))
        )
    }

    async fn send(&mut self, to: Contact, message: Message) {
        if self.connected.contains(&to.id) && self.send_now(&to.id, &message).await {
            return;
        }
        self.dials.send_after_dial(to, message);
    }

    async fn flush(&mut self, peer: PeerId) {
        for message in self.dials.take_waiting(&peer) {
            self.send_now(&peer, &message).await;
        }
    }
}
