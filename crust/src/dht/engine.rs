//! The sans-IO engine: [`Dht`] takes messages, timeouts and commands with
//! the current time and returns [`Output`]s (messages to send, events to
//! report). The driver feeds it in this order: [`Dht::new`], seed contacts
//! with [`Dht::bootstrap`], then for ever [`Dht::handle`] for each message
//! received, [`Dht::handle_timeout`] when [`Dht::poll_timeout`] says so,
//! and [`Dht::start_lookup`] / [`Dht::find_record`] / [`Dht::publish`] on
//! demand.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::rng::SplitMix64;
use crate::{Endpoint, PeerId, SecretId};

use super::key::Key;
use super::lookup::{Lookup, Purpose};
use super::message::{Contact, MAX_NODES_PER_REPLY, Message};
use super::record::{
    PeerRecord, RecordError, RecordStore, RendezvousPeer, SignedRecord, VerifiedRecord,
};
use super::routing::{Observed, RoutingTable};

/// Tunables; the defaults are Kademlia's.
#[derive(Debug, Clone)]
pub struct Config {
    /// Bucket size and lookup width.
    pub k: usize,
    /// Requests a lookup keeps outstanding at most.
    pub alpha: usize,
    /// How long a request waits for its reply.
    pub request_timeout: Duration,
    /// How long a whole lookup may take.
    pub lookup_timeout: Duration,
    /// Candidates further than this many hops from our table are not asked.
    pub max_hops: u32,
    /// Timeouts in a row after which a contact leaves the table.
    pub max_failures: u32,
    /// A bucket with no lookup for this long is refreshed.
    pub refresh_interval: Duration,
    /// Our own record is re-signed and published this often.
    pub republish_interval: Duration,
    /// Lifetime of the records we publish.
    pub record_ttl: Duration,
    /// Records held for others at most.
    pub store_capacity: usize,
    /// Seed of every random choice (request ids, refresh targets).
    pub rng_seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            k: 20,
            alpha: 3,
            request_timeout: Duration::from_secs(2),
            lookup_timeout: Duration::from_secs(20),
            max_hops: 16,
            max_failures: 2,
            refresh_interval: Duration::from_secs(15 * 60),
            republish_interval: Duration::from_secs(30 * 60),
            record_ttl: Duration::from_secs(2 * 3600),
            store_capacity: 4096,
            rng_seed: 0,
        }
    }
}

/// Names a lookup or publication in the events that end it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueryId(pub u64);

/// How a lookup went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupStats {
    /// For a record: the hop at which it was found (0 = held locally,
    /// 1 = a contact from our table had it). Otherwise the hop at which the
    /// closest node was found.
    pub hops: u32,
    /// Requests sent.
    pub messages: u32,
    /// From start to end.
    pub elapsed: Duration,
    /// Ended by the lookup timeout rather than by converging.
    pub timed_out: bool,
}

/// Something the driver should know.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A [`Dht::start_lookup`] ended.
    NodesFound {
        /// Which.
        query: QueryId,
        /// The target.
        target: Key,
        /// The k closest nodes that answered, closest first.
        closest: Vec<Contact>,
        /// How it went.
        stats: LookupStats,
    },
    /// A [`Dht::find_record`] ended.
    RecordFound {
        /// Which.
        query: QueryId,
        /// The peer looked up.
        peer: PeerId,
        /// Its record, if one valid record was found.
        record: Option<PeerRecord>,
        /// How it went.
        stats: LookupStats,
    },
    /// A [`Dht::publish`] reached its storers.
    Published {
        /// Which.
        query: QueryId,
        /// The version published.
        version: u64,
        /// How many nodes it was sent to.
        stored_at: usize,
        /// How many nodes among the k closest did not answer the lookup in
        /// time, so the record was not sent to them (a slow or busy node,
        /// or one gone): worth publishing again soon.
        missed: usize,
        /// How the lookup for the storers went.
        stats: LookupStats,
    },
    /// A peer sent a record that was refused (logged, not fatal).
    RecordRejected {
        /// Who sent it.
        from: PeerId,
        /// Why.
        error: RecordError,
    },
}

/// What the engine asks of its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send `message` to `to` (connecting on its endpoints if need be).
    Send {
        /// The recipient.
        to: Contact,
        /// What to send.
        message: Message,
    },
    /// Report this.
    Event(Event),
}

#[derive(Debug)]
enum PendingKind {
    Lookup(QueryId),
    EvictionPing { bucket: usize },
}

#[derive(Debug)]
struct Pending {
    to: PeerId,
    kind: PendingKind,
    deadline: Instant,
}

/// What our own record says, kept to re-sign it.
#[derive(Debug, Clone)]
struct Reach {
    endpoints: Vec<Endpoint>,
    rendezvous: Vec<RendezvousPeer>,
    version: u64,
}

/// A Kademlia node without I/O.
pub struct Dht {
    config: Config,
    secret: SecretId,
    me: PeerId,
    key: Key,
    table: RoutingTable,
    store: RecordStore,
    lookups: BTreeMap<QueryId, Lookup>,
    pending: HashMap<u64, Pending>,
    rng: SplitMix64,
    /// `now` and the Unix time then, to the millisecond.
    clock_base: (Instant, Duration),
    next_query: u64,
    next_maintenance: Instant,
    reach: Option<Reach>,
    next_republish: Option<Instant>,
}

impl std::fmt::Debug for Dht {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dht")
            .field("me", &self.me)
            .field("contacts", &self.table.len())
            .field("records", &self.store.len())
            .field("lookups", &self.lookups.len())
            .finish_non_exhaustive()
    }
}

impl Dht {
    /// A node with identity `secret`, at time `now`, when the Unix clock
    /// reads `unix_now` (since the epoch, to the millisecond: records carry
    /// Unix times and versions in milliseconds; the engine derives them
    /// from `now` from then on).
    pub fn new(config: Config, secret: SecretId, now: Instant, unix_now: Duration) -> Self {
        let me = secret.peer_id();
        let key = Key::from(me);
        Self {
            table: RoutingTable::new(key, config.k, now),
            store: RecordStore::new(key, config.store_capacity),
            rng: SplitMix64::new(
                config.rng_seed ^ u64::from_le_bytes(key.0[..8].try_into().unwrap_or_default()),
            ),
            next_maintenance: now + config.refresh_interval,
            config,
            secret,
            me,
            key,
            lookups: BTreeMap::new(),
            pending: HashMap::new(),
            clock_base: (now, unix_now),
            next_query: 0,
            reach: None,
            next_republish: None,
        }
    }

    /// Our peer id.
    pub fn id(&self) -> PeerId {
        self.me
    }

    /// How many contacts the routing table holds.
    pub fn table_len(&self) -> usize {
        self.table.len()
    }

    /// How many records are held for others.
    pub fn records_held(&self) -> usize {
        self.store.len()
    }

    /// Lookups in progress.
    pub fn lookups_in_progress(&self) -> usize {
        self.lookups.len()
    }

    /// The version of our own record last published, if any.
    pub fn published_version(&self) -> Option<u64> {
        self.reach.as_ref().map(|r| r.version)
    }

    /// Re-anchors the Unix clock (after a suspend, or when the system clock
    /// was corrected).
    pub fn set_unix_time(&mut self, now: Instant, unix_now: Duration) {
        self.clock_base = (now, unix_now);
    }

    /// The Unix time at `now`.
    fn unix_time(&self, now: Instant) -> Duration {
        let (base, unix) = self.clock_base;
        unix.saturating_add(now.saturating_duration_since(base))
    }

    /// The Unix time at `now`, in seconds.
    fn unix(&self, now: Instant) -> u64 {
        self.unix_time(now).as_secs()
    }

    /// Up to `n` contacts from our table closest to `target`.
    pub fn closest_known(&self, target: &Key, n: usize) -> Vec<Contact> {
        self.table.closest(target, n, None)
    }

    /// Adds `seeds` to the table and looks up our own id, which fills the
    /// buckets near us and tells our neighbours about us.
    pub fn bootstrap(&mut self, now: Instant, seeds: &[Contact]) -> Vec<Output> {
        let mut out = Vec::new();
        for seed in seeds {
            self.observe(now, seed, &mut out);
        }
        self.start(now, self.key, Purpose::Refresh, &mut out);
        out
    }

    /// Starts looking up the k nodes closest to `target`; ends with
    /// [`Event::NodesFound`].
    pub fn start_lookup(&mut self, now: Instant, target: Key) -> (QueryId, Vec<Output>) {
        let mut out = Vec::new();
        let q = self.start(now, target, Purpose::FindNode, &mut out);
        (q, out)
    }

    /// Starts looking up `peer`'s record; ends with [`Event::RecordFound`]
    /// (at once if we hold it).
    pub fn find_record(&mut self, now: Instant, peer: PeerId) -> (QueryId, Vec<Output>) {
        let mut out = Vec::new();
        let target = Key::from(peer);
        if let Some(record) = self
            .store
            .get(&target, self.unix(now))
            .map(|held| held.record.clone())
        {
            let q = self.new_query();
            out.push(Output::Event(Event::RecordFound {
                query: q,
                peer,
                record: Some(record),
                stats: LookupStats {
                    hops: 0,
                    messages: 0,
                    elapsed: Duration::ZERO,
                    timed_out: false,
                },
            }));
            return (q, out);
        }
        let q = self.start(now, target, Purpose::FindValue, &mut out);
        (q, out)
    }

    /// Signs a new version of our record saying we are reachable on
    /// `endpoints` and through `rendezvous`, keeps it, and stores it on the
    /// k nodes closest to us; ends with [`Event::Published`]. It is
    /// re-signed and published again every `republish_interval`. The
    /// version is the Unix time in milliseconds (or one more than the last,
    /// if greater), so it grows across restarts too, even within a second.
    pub fn publish(
        &mut self,
        now: Instant,
        endpoints: Vec<Endpoint>,
        rendezvous: Vec<RendezvousPeer>,
    ) -> Result<(QueryId, Vec<Output>), RecordError> {
        let last = self.reach.as_ref().map_or(0, |r| r.version);
        let unix_ms = u64::try_from(self.unix_time(now).as_millis()).unwrap_or(u64::MAX);
        let version = unix_ms.max(last.saturating_add(1));
        let record = PeerRecord {
            peer: self.me,
            version,
            issued_at: self.unix(now),
            ttl_secs: u32::try_from(self.config.record_ttl.as_secs()).unwrap_or(u32::MAX),
            endpoints: endpoints.clone(),
            rendezvous: rendezvous.clone(),
        };
        let signed = record.sign(&self.secret)?;
        self.store.insert(VerifiedRecord {
            record,
            signed: signed.clone(),
        })?;
        self.reach = Some(Reach {
            endpoints,
            rendezvous,
            version,
        });
        self.next_republish = Some(now + self.config.republish_interval);
        let mut out = Vec::new();
        let q = self.start(now, self.key, Purpose::Publish(signed), &mut out);
        Ok((q, out))
    }

    fn new_query(&mut self) -> QueryId {
        self.next_query += 1;
        QueryId(self.next_query)
    }

    fn start(
        &mut self,
        now: Instant,
        target: Key,
        purpose: Purpose,
        out: &mut Vec<Output>,
    ) -> QueryId {
        let q = self.new_query();
        self.table.touch(&target, now);
        let seeds = self.table.closest(&target, self.config.k, None);
        let lookup = Lookup::new(
            target,
            purpose,
            seeds,
            now,
            now + self.config.lookup_timeout,
            self.config.k,
        );
        self.lookups.insert(q, lookup);
        self.advance(now, q, out);
        q
    }

    /// Sends the lookup's next requests, or ends it.
    fn advance(&mut self, now: Instant, q: QueryId, out: &mut Vec<Output>) {
        let (k, alpha, max_hops) = (self.config.k, self.config.alpha, self.config.max_hops);
        let Some(lookup) = self.lookups.get_mut(&q) else {
            return;
        };
        let timed_out = now >= lookup.deadline;
        if !timed_out && !lookup.is_done(k, max_hops) {
            let target = lookup.target;
            let find_value = matches!(lookup.purpose, Purpose::FindValue);
            for contact in lookup.next(k, alpha, max_hops) {
                let id = self.rng.next_u64();
                let message = if find_value {
                    Message::FindValue { id, target }
                } else {
                    Message::FindNode { id, target }
                };
                self.pending.insert(
                    id,
                    Pending {
                        to: contact.id,
                        kind: PendingKind::Lookup(q),
                        deadline: now + self.config.request_timeout,
                    },
                );
                out.push(Output::Send {
                    to: contact,
                    message,
                });
            }
            if let Some(lookup) = self.lookups.get(&q)
                && !lookup.is_done(k, max_hops)
            {
                return;
            }
        }
        let Some(lookup) = self.lookups.remove(&q) else {
            return;
        };
        self.pending
            .retain(|_, p| !matches!(p.kind, PendingKind::Lookup(pq) if pq == q));
        let (closest, closest_hops) = lookup.closest_responded(k);
        let missed = lookup.failed_among_closest(k);
        let mut stats = LookupStats {
            hops: closest_hops,
            messages: lookup.messages,
            elapsed: now.saturating_duration_since(lookup.started),
            timed_out,
        };
        match lookup.purpose {
            Purpose::Refresh => {}
            Purpose::FindNode => out.push(Output::Event(Event::NodesFound {
                query: q,
                target: lookup.target,
                closest,
                stats,
            })),
            Purpose::FindValue => {
                let (record, hops) = match lookup.found {
                    Some((found, hops)) => (Some(found.record), hops),
                    None => (None, closest_hops),
                };
                stats.hops = hops;
                out.push(Output::Event(Event::RecordFound {
                    query: q,
                    peer: PeerId::from_bytes(lookup.target.0).unwrap_or(self.me),
                    record,
                    stats,
                }));
            }
            Purpose::Publish(signed) => {
                let version = self.reach.as_ref().map_or(0, |r| r.version);
                let stored_at = closest.len();
                for to in closest {
                    out.push(Output::Send {
                        to,
                        message: Message::Store {
                            record: signed.clone(),
                        },
                    });
                }
                out.push(Output::Event(Event::Published {
                    query: q,
                    version,
                    stored_at,
                    missed,
                    stats,
                }));
            }
        }
    }

    fn observe(&mut self, now: Instant, contact: &Contact, out: &mut Vec<Output>) {
        if let Observed::BucketFull { bucket, oldest } = self.table.observe(contact) {
            let id = self.rng.next_u64();
            self.pending.insert(
                id,
                Pending {
                    to: oldest.id,
                    kind: PendingKind::EvictionPing { bucket },
                    deadline: now + self.config.request_timeout,
                },
            );
            out.push(Output::Send {
                to: oldest,
                message: Message::Ping { id },
            });
        }
    }

    /// A message from `from` (authenticated by the transport; its endpoints
    /// as the driver knows them). Messages that break the wire bounds are
    /// dropped whole.
    pub fn handle(&mut self, now: Instant, from: &Contact, message: Message) -> Vec<Output> {
        self.handle_from(now, from, true, message)
    }

    /// Like [`handle`](Self::handle), saying whether the sender takes
    /// connections (a DHT server). A sender that does not (a client: behind
    /// a NAT, no mapped port) is answered but never enters the routing
    /// table, so no node hands out an address nobody can dial.
    pub fn handle_from(
        &mut self,
        now: Instant,
        from: &Contact,
        reachable: bool,
        message: Message,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        if message.check_bounds().is_err() || from.id == self.me {
            return out;
        }
        if reachable {
            self.observe(now, from, &mut out);
        }
        let reply = |message| Output::Send {
            to: from.clone(),
            message,
        };
        match message {
            Message::Ping { id } => out.push(reply(Message::Pong { id })),
            Message::FindNode { id, target } => {
                let nodes = self.table.closest(
                    &target,
                    self.config.k.min(MAX_NODES_PER_REPLY),
                    Some(&from.id),
                );
                out.push(reply(Message::Nodes { id, nodes }));
            }
            Message::FindValue { id, target } => {
                if let Some(held) = self.store.get(&target, self.unix(now)) {
                    out.push(reply(Message::Value {
                        id,
                        record: held.signed.clone(),
                    }));
                } else {
                    let nodes = self.table.closest(
                        &target,
                        self.config.k.min(MAX_NODES_PER_REPLY),
                        Some(&from.id),
                    );
                    out.push(reply(Message::Nodes { id, nodes }));
                }
            }
            Message::Store { record } => {
                if let Err(error) = self.accept_record(now, &record, None) {
                    out.push(Output::Event(Event::RecordRejected {
                        from: from.id,
                        error,
                    }));
                }
            }
            Message::Pong { id } => {
                if let Some(p) = self.take_pending(id, &from.id)
                    && let PendingKind::EvictionPing { bucket } = p.kind
                {
                    self.table.keep_oldest(bucket, &from.id);
                }
            }
            Message::Nodes { id, nodes } => {
                if let Some(Pending {
                    kind: PendingKind::Lookup(q),
                    ..
                }) = self.take_pending(id, &from.id)
                {
                    if let Some(lookup) = self.lookups.get_mut(&q)
                        && let Some(depth) = lookup.responded(&from.id)
                    {
                        for contact in nodes {
                            if contact.id != self.me {
                                lookup.add(contact, depth + 1);
                            }
                        }
                    }
                    self.advance(now, q, &mut out);
                }
            }
            Message::Value { id, record } => {
                if let Some(Pending {
                    kind: PendingKind::Lookup(q),
                    ..
                }) = self.take_pending(id, &from.id)
                {
                    let Some((target, wants_value)) = self
                        .lookups
                        .get(&q)
                        .map(|l| (l.target, matches!(l.purpose, Purpose::FindValue)))
                    else {
                        return out;
                    };
                    let accepted = if wants_value {
                        self.accept_record(now, &record, Some(target))
                    } else {
                        Err(RecordError::WrongKey)
                    };
                    match accepted {
                        Ok(verified) => {
                            if let Some(lookup) = self.lookups.get_mut(&q)
                                && let Some(depth) = lookup.responded(&from.id)
                            {
                                lookup.found = Some((verified, depth));
                            }
                        }
                        Err(error) => {
                            if let Some(lookup) = self.lookups.get_mut(&q) {
                                lookup.failed(&from.id);
                            }
                            out.push(Output::Event(Event::RecordRejected {
                                from: from.id,
                                error,
                            }));
                        }
                    }
                    self.advance(now, q, &mut out);
                }
            }
        }
        out
    }

    /// Verifies a record; one offered for storage is stored, one found by a
    /// lookup must be for its target.
    fn accept_record(
        &mut self,
        now: Instant,
        signed: &SignedRecord,
        lookup_target: Option<Key>,
    ) -> Result<VerifiedRecord, RecordError> {
        let record = signed.verify(self.unix(now))?;
        let verified = VerifiedRecord {
            record,
            signed: signed.clone(),
        };
        match lookup_target {
            Some(target) if verified.record.key() != target => Err(RecordError::WrongKey),
            Some(_) => Ok(verified),
            None => {
                if verified.record.peer == self.me {
                    // Our own record comes only from us.
                    return Err(RecordError::WrongKey);
                }
                self.store.insert(verified.clone())?;
                Ok(verified)
            }
        }
    }

    fn take_pending(&mut self, id: u64, from: &PeerId) -> Option<Pending> {
        match self.pending.get(&id) {
            Some(p) if p.to == *from => self.pending.remove(&id),
            _ => None,
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let requests = self.pending.values().map(|p| p.deadline);
        let lookups = self.lookups.values().map(|l| l.deadline);
        requests
            .chain(lookups)
            .chain(std::iter::once(self.next_maintenance))
            .chain(self.next_republish)
            .min()
    }

    /// Times out requests and lookups, refreshes stale buckets, purges
    /// expired records and republishes our own.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        let mut touched = Vec::new();
        for id in expired {
            let Some(p) = self.pending.remove(&id) else {
                continue;
            };
            match p.kind {
                PendingKind::EvictionPing { bucket } => self.table.replace_oldest(bucket, &p.to),
                PendingKind::Lookup(q) => {
                    self.table.note_failure(&p.to, self.config.max_failures);
                    if let Some(lookup) = self.lookups.get_mut(&q) {
                        lookup.failed(&p.to);
                        touched.push(q);
                    }
                }
            }
        }
        let late: Vec<QueryId> = self
            .lookups
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(q, _)| *q)
            .collect();
        touched.extend(late);
        touched.sort_unstable();
        touched.dedup();
        for q in touched {
            self.advance(now, q, &mut out);
        }
        if now >= self.next_maintenance {
            self.next_maintenance = now + self.config.refresh_interval / 4;
            self.store.purge(self.unix(now));
            for bucket in self.table.stale_buckets(now, self.config.refresh_interval) {
                let target = self.key.random_in_bucket(bucket, &mut self.rng);
                self.start(now, target, Purpose::Refresh, &mut out);
            }
        }
        if self.next_republish.is_some_and(|t| now >= t)
            && let Some(reach) = self.reach.clone()
        {
            match self.publish(now, reach.endpoints, reach.rendezvous) {
                Ok((_, more)) => out.extend(more),
                Err(_) => self.next_republish = Some(now + self.config.republish_interval),
            }
        }
        out
    }
}
