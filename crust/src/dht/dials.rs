//! The connections a DHT driver opens for itself.
//!
//! A message for a node we are not connected to waits while the node is
//! dialled at the endpoints its contact names; a connection opened for the
//! DHT alone is closed once it has been unused for a while. Both drivers
//! keep this bookkeeping here: [`Server`](super::Server) and chat-core's.
//! Everything is bounded: [`MAX_WAITING`] messages per node,
//! [`MAX_DIALS`] dials at once; past that a message is dropped and the
//! engine times its request out, as it would a lost datagram.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::message::{Contact, Message};
use crate::{PeerId, Service};

/// Messages waiting for one connection at most.
pub const MAX_WAITING: usize = 32;
/// Dials in progress at most.
pub const MAX_DIALS: usize = 16;

/// Dials for the DHT, the messages waiting for them, and the connections
/// opened for the DHT alone.
pub struct Dials {
    service: Service,
    /// How long one dial may take.
    timeout: Duration,
    /// Messages waiting for a connection being dialled.
    waiting: HashMap<PeerId, Vec<Message>>,
    /// Peers connected for the DHT alone, and when last used.
    dht_only: HashMap<PeerId, Instant>,
    dialling: HashSet<PeerId>,
    done_tx: mpsc::UnboundedSender<(PeerId, bool)>,
    done_rx: mpsc::UnboundedReceiver<(PeerId, bool)>,
}

impl std::fmt::Debug for Dials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dials")
            .field("dialling", &self.dialling.len())
            .field("dht_only", &self.dht_only.len())
            .finish_non_exhaustive()
    }
}

impl Dials {
    /// Dials over `service`, each given up after `timeout`.
    pub fn new(service: Service, timeout: Duration) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Self {
            service,
            timeout,
            waiting: HashMap::new(),
            dht_only: HashMap::new(),
            dialling: HashSet::new(),
            done_tx,
            done_rx,
        }
    }

    /// The connection to `peer` was used now: one opened for the DHT alone
    /// stays open while it is used.
    pub fn used(&mut self, peer: &PeerId) {
        if let Some(used) = self.dht_only.get_mut(peer) {
            *used = Instant::now();
        }
    }

    /// Treats the connection to `peer` as opened for one purpose: it is
    /// returned by [`take_idle`](Self::take_idle) once unused for long enough.
    pub fn close_when_idle(&mut self, peer: PeerId) {
        self.dht_only.entry(peer).or_insert_with(Instant::now);
    }

    /// Queues `message` for `to`, which we are not connected to, and dials
    /// it unless a dial is under way. Returns `false` if the message was
    /// dropped: no endpoints, its queue is full, or too many dials run.
    pub fn send_after_dial(&mut self, to: Contact, message: Message) -> bool {
        if to.endpoints.is_empty() {
            return false;
        }
        let dialling = self.dialling.contains(&to.id);
        if !dialling && self.dialling.len() >= MAX_DIALS {
            return false;
        }
        let queue = self.waiting.entry(to.id).or_default();
        if queue.len() >= MAX_WAITING {
            return false;
        }
        queue.push(message);
        if dialling {
            return true;
        }
        self.dialling.insert(to.id);
        self.dht_only.insert(to.id, Instant::now());
        let service = self.service.clone();
        let done = self.done_tx.clone();
        let timeout = self.timeout;
        tokio::spawn(async move {
            let ok = matches!(
                tokio::time::timeout(timeout, service.connect(to.id, &to.endpoints)).await,
                Ok(Ok(_))
            );
            let _ = done.send((to.id, ok));
        });
        true
    }

    /// Waits for a dial to end: the peer, and whether it connected
    /// (cancel-safe; pass the answer to [`dial_ended`](Self::dial_ended)).
    pub async fn next_dial_end(&mut self) -> (PeerId, bool) {
        match self.done_rx.recv().await {
            Some(end) => end,
            // Never: `self` holds a sender.
            None => std::future::pending().await,
        }
    }

    /// A dial ended: the messages to send now if it connected. If it did
    /// not, they are dropped (the engine times the requests out and notes
    /// the failure).
    pub fn dial_ended(&mut self, peer: PeerId, connected: bool) -> Vec<Message> {
        self.dialling.remove(&peer);
        if connected {
            self.take_waiting(&peer)
        } else {
            self.lost(&peer);
            Vec::new()
        }
    }

    /// The messages waiting for `peer`, now connected.
    pub fn take_waiting(&mut self, peer: &PeerId) -> Vec<Message> {
        self.waiting.remove(peer).unwrap_or_default()
    }

    /// The connection to `peer` is gone.
    pub fn lost(&mut self, peer: &PeerId) {
        self.dht_only.remove(peer);
        self.waiting.remove(peer);
    }

    /// The connections opened for the DHT alone (or marked with
    /// [`close_when_idle`](Self::close_when_idle)) and unused for `idle`:
    /// forgotten here, for the caller to close.
    pub fn take_idle(&mut self, now: Instant, idle: Duration) -> Vec<PeerId> {
        let peers: Vec<PeerId> = self
            .dht_only
            .iter()
            .filter(|(_, used)| now.duration_since(**used) >= idle)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in &peers {
            self.lost(peer);
        }
        peers
    }
}
