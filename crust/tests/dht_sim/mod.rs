//! A simulated network of DHT engines for the tests and the bench: a map
//! from peer id to engine, a virtual clock, messages delivered after a
//! per-message latency (and optionally dropped), timers fired when due,
//! and optional malicious nodes that answer with junk.

// Shared by the tests and the bench, which each use part of it.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use crust::dht::{
    Config, Contact, Dht, Event, Key, LookupStats, Message, Output, PeerRecord, QueryId,
    SignedRecord,
};
use crust::{Endpoint, PeerId, SecretId};

/// The Unix time the simulation starts at.
pub const UNIX_START: u64 = 1_800_000_000;

/// SplitMix64 for the simulation's own choices.
pub struct SimRng(u64);

impl SimRng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }
    pub fn secret(&mut self) -> SecretId {
        let mut seed = [0u8; 32];
        for chunk in seed.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        SecretId::from_bytes(&seed)
    }
}

/// A message as sent: decoded, or (with [`Sim::wire`]) in its wire form.
enum Wire {
    Decoded(Message),
    Encoded(Vec<u8>),
}

enum Ev {
    Deliver {
        from: Contact,
        to: PeerId,
        message: Wire,
    },
    Timer(PeerId),
}

/// How a malicious node answers.
#[derive(Clone, Copy, Debug)]
pub enum Malice {
    /// `Value` with a record whose signature is wrong, `Nodes` with made-up
    /// contacts that do not exist.
    Junk,
    /// A `Value` with a 100 KiB record.
    Huge,
    /// Its own valid record, whatever was asked.
    WrongRecord,
}

pub struct Sim {
    pub now: Instant,
    start: Instant,
    pub nodes: HashMap<PeerId, Dht>,
    pub ids: Vec<PeerId>,
    contacts: HashMap<PeerId, Contact>,
    secrets: HashMap<PeerId, [u8; 32]>,
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    events: HashMap<u64, Ev>,
    scheduled: HashMap<PeerId, Instant>,
    seq: u64,
    pub rng: SimRng,
    pub latency: Duration,
    pub drop_rate: f64,
    pub malicious: HashMap<PeerId, Malice>,
    pub delivered: u64,
    /// Send every message through `Message::encode` and `decode` (slower
    /// in a debug build; on for the bench and the tests of hostile input).
    pub wire: bool,
    /// Bytes of all messages delivered in wire form.
    pub bytes: u64,
    /// Messages dropped because they did not decode.
    pub undecodable: u64,
    pub config: Config,
    pub reports: Vec<(PeerId, Event)>,
    rejected: usize,
}

impl Sim {
    pub fn new(seed: u64) -> Self {
        let config = Config {
            // Background maintenance far beyond the simulated time, so runs
            // measure lookups; a unit test covers refresh.
            refresh_interval: Duration::from_secs(24 * 3600),
            republish_interval: Duration::from_secs(24 * 3600),
            record_ttl: Duration::from_secs(48 * 3600),
            ..Config::default()
        };
        let now = Instant::now();
        Self {
            now,
            start: now,
            nodes: HashMap::new(),
            ids: Vec::new(),
            contacts: HashMap::new(),
            secrets: HashMap::new(),
            heap: BinaryHeap::new(),
            events: HashMap::new(),
            scheduled: HashMap::new(),
            seq: 0,
            rng: SimRng::new(seed),
            latency: Duration::from_millis(25),
            drop_rate: 0.0,
            malicious: HashMap::new(),
            delivered: 0,
            wire: false,
            bytes: 0,
            undecodable: 0,
            config,
            reports: Vec::new(),
            rejected: 0,
        }
    }

    fn push(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq)));
        self.events.insert(self.seq, ev);
    }

    fn schedule(&mut self, id: PeerId) {
        let Some(t) = self.nodes.get(&id).and_then(Dht::poll_timeout) else {
            return;
        };
        if self.scheduled.get(&id).is_some_and(|&s| s <= t) {
            return;
        }
        self.scheduled.insert(id, t);
        self.push(t, Ev::Timer(id));
    }

    fn outputs(&mut self, from: PeerId, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Send { to, message } => {
                    if self.drop_rate > 0.0 && self.rng.chance(self.drop_rate) {
                        continue;
                    }
                    // A one-way latency of 1x to 2x `latency`.
                    let jitter = self.rng.below(1000) as u32;
                    let at = self.now + self.latency + self.latency * jitter / 1000;
                    let from = self.contacts[&from].clone();
                    self.push(
                        at,
                        Ev::Deliver {
                            from,
                            to: to.id,
                            message: if self.wire {
                                Wire::Encoded(message.encode())
                            } else {
                                Wire::Decoded(message)
                            },
                        },
                    );
                }
                Output::Event(event) => self.reports.push((from, event)),
            }
        }
        self.schedule(from);
    }

    /// Adds a node and runs its bootstrap (via a random existing node) to
    /// the end.
    pub fn join(&mut self) -> PeerId {
        let secret = self.rng.secret();
        let id = secret.peer_id();
        self.secrets.insert(id, *secret.to_bytes());
        let n = self.ids.len() as u32;
        let endpoint = Endpoint::tcp(SocketAddr::from((Ipv4Addr::from(0x0a00_0000 + n), 5483)));
        let contact = Contact {
            id,
            endpoints: vec![endpoint],
        };
        let config = Config {
            rng_seed: self.rng.next_u64(),
            ..self.config.clone()
        };
        // Every node's Unix clock agrees with the simulation's.
        let unix_now = Duration::from_secs(UNIX_START) + (self.now - self.start);
        let mut dht = Dht::new(config, secret, self.now, unix_now);
        let seeds: Vec<Contact> = if self.ids.is_empty() {
            Vec::new()
        } else {
            let seed = self.ids[self.rng.below(self.ids.len())];
            vec![self.contacts[&seed].clone()]
        };
        let out = dht.bootstrap(self.now, &seeds);
        self.nodes.insert(id, dht);
        self.contacts.insert(id, contact);
        self.ids.push(id);
        self.outputs(id, out);
        self.run_until(|sim| sim.nodes[&id].lookups_in_progress() == 0);
        id
    }

    /// Takes one event off the queue; false when there is none.
    pub fn step(&mut self) -> bool {
        let Some(Reverse((at, seq))) = self.heap.pop() else {
            return false;
        };
        let Some(ev) = self.events.remove(&seq) else {
            return true;
        };
        self.now = self.now.max(at);
        match ev {
            Ev::Timer(id) => {
                if self.scheduled.get(&id) == Some(&at) {
                    self.scheduled.remove(&id);
                }
                let now = self.now;
                if let Some(node) = self.nodes.get_mut(&id) {
                    if node.poll_timeout().is_some_and(|t| t <= now) {
                        let out = node.handle_timeout(now);
                        self.outputs(id, out);
                    } else {
                        self.schedule(id);
                    }
                }
            }
            Ev::Deliver { from, to, message } => {
                self.delivered += 1;
                let message = match message {
                    Wire::Decoded(message) => message,
                    Wire::Encoded(bytes) => {
                        self.bytes += bytes.len() as u64;
                        match Message::decode(&bytes) {
                            Ok(message) => message,
                            Err(_) => {
                                self.undecodable += 1;
                                return true;
                            }
                        }
                    }
                };
                if let Some(&malice) = self.malicious.get(&to) {
                    self.misbehave(to, malice, &from, &message);
                    return true;
                }
                let now = self.now;
                if let Some(node) = self.nodes.get_mut(&to) {
                    let out = node.handle(now, &from, message);
                    self.outputs(to, out);
                }
            }
        }
        true
    }

    fn misbehave(&mut self, me: PeerId, malice: Malice, to: &Contact, message: &Message) {
        let (id, is_value) = match message {
            Message::FindValue { id, .. } => (*id, true),
            Message::FindNode { id, .. } => (*id, false),
            Message::Ping { id } => {
                let out = vec![Output::Send {
                    to: to.clone(),
                    message: Message::Pong { id: *id },
                }];
                self.outputs(me, out);
                return;
            }
            _ => return,
        };
        let reply = match (malice, is_value) {
            (Malice::Junk, true) => {
                let good = self.signed_record(me, 1);
                let mut signature = vec![0u8; 64];
                signature[0] = 1;
                Message::Value {
                    id,
                    record: SignedRecord::from_parts(good.body().to_vec(), signature),
                }
            }
            (Malice::Junk, false) => {
                let nodes = (0..20)
                    .map(|_| Contact::new(self.rng.secret().peer_id()))
                    .collect();
                Message::Nodes { id, nodes }
            }
            (Malice::Huge, _) => Message::Value {
                id,
                record: SignedRecord::from_parts(vec![7u8; 100 * 1024], vec![0u8; 64]),
            },
            (Malice::WrongRecord, _) => Message::Value {
                id,
                record: self.signed_record(me, 1),
            },
        };
        self.outputs(
            me,
            vec![Output::Send {
                to: to.clone(),
                message: reply,
            }],
        );
    }

    /// Steps until `done` holds or nothing is left to do (panics after a
    /// simulated hour, which would be a hung lookup).
    pub fn run_until(&mut self, mut done: impl FnMut(&Sim) -> bool) {
        let limit = self.now + Duration::from_secs(3600);
        while !done(self) {
            assert!(self.now < limit, "simulation did not settle");
            if !self.step() {
                break;
            }
        }
    }

    fn take_report(&mut self, node: PeerId, query: QueryId) -> Option<Event> {
        let pos = self.reports.iter().position(|(n, e)| {
            *n == node
                && match e {
                    Event::NodesFound { query: q, .. }
                    | Event::RecordFound { query: q, .. }
                    | Event::Published { query: q, .. } => *q == query,
                    _ => false,
                }
        })?;
        Some(self.reports.swap_remove(pos).1)
    }

    fn wait_for(&mut self, node: PeerId, query: QueryId) -> Event {
        loop {
            if let Some(e) = self.take_report(node, query) {
                let before = self.reports.len();
                self.reports
                    .retain(|(_, e)| !matches!(e, Event::RecordRejected { .. }));
                self.rejected += before - self.reports.len();
                return e;
            }
            assert!(self.step(), "queue ran dry before query {query:?} ended");
        }
    }

    /// `node` publishes its record (its endpoint, no rendezvous); returns
    /// to how many nodes it was sent.
    pub fn publish(&mut self, node: PeerId) -> usize {
        let endpoints = self.contacts[&node].endpoints.clone();
        let now = self.now;
        let (q, out) = self
            .nodes
            .get_mut(&node)
            .unwrap()
            .publish(now, endpoints, Vec::new())
            .unwrap();
        self.outputs(node, out);
        match self.wait_for(node, q) {
            Event::Published { stored_at, .. } => {
                // Let the stores arrive.
                let until = self.now + self.latency * 3;
                self.run_until(|s| s.now >= until);
                stored_at
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// A valid record of `node`'s, signed now.
    pub fn signed_record(&self, node: PeerId, version: u64) -> SignedRecord {
        let secret = SecretId::from_bytes(&self.secrets[&node]);
        PeerRecord {
            peer: node,
            version,
            issued_at: UNIX_START,
            ttl_secs: 3600 * 48,
            endpoints: self.contacts[&node].endpoints.clone(),
            rendezvous: Vec::new(),
        }
        .sign(&secret)
        .unwrap()
    }

    /// `node` looks up `peer`'s record.
    pub fn find(&mut self, node: PeerId, peer: PeerId) -> (Option<PeerRecord>, LookupStats) {
        let now = self.now;
        let (q, out) = self.nodes.get_mut(&node).unwrap().find_record(now, peer);
        self.outputs(node, out);
        match self.wait_for(node, q) {
            Event::RecordFound { record, stats, .. } => (record, stats),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// `node` looks up the k closest nodes to `target`.
    pub fn find_nodes(&mut self, node: PeerId, target: Key) -> (Vec<Contact>, LookupStats) {
        let now = self.now;
        let (q, out) = self.nodes.get_mut(&node).unwrap().start_lookup(now, target);
        self.outputs(node, out);
        match self.wait_for(node, q) {
            Event::NodesFound { closest, stats, .. } => (closest, stats),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Records refused (by anyone) since the last call.
    pub fn rejected_since_last(&mut self) -> usize {
        std::mem::take(&mut self.rejected)
    }

    /// The simulated time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Removes a node (it crashes: nothing is said).
    pub fn kill(&mut self, node: PeerId) {
        self.nodes.remove(&node);
        self.ids.retain(|id| *id != node);
    }

    /// A network of `n` nodes that joined one after another.
    pub fn network(seed: u64, n: usize) -> Self {
        let mut sim = Self::new(seed);
        for _ in 0..n {
            sim.join();
        }
        sim
    }

    pub fn endpoint_of(&self, node: PeerId) -> Endpoint {
        self.contacts[&node].endpoints[0]
    }
}

/// The median of `values` (sorted in place).
pub fn median(values: &mut [u32]) -> u32 {
    values.sort_unstable();
    values[values.len() / 2]
}

/// ⌈log2 n⌉.
pub fn ceil_log2(n: usize) -> u32 {
    usize::BITS - (n - 1).leading_zeros()
}
