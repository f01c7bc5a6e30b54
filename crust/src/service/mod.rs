//! The service: one per application, holding every connection.
//!
//! [`Service::start`] binds the configured listeners and spawns the actor
//! (`actor.rs`) that owns the connection table. The returned [`Service`] is
//! a cheap handle; clones share one service, which shuts down when the last
//! handle is dropped or [`Service::shutdown`] is called. Everything the
//! service has to say arrives on [`Events`], in order per peer: a connect
//! event, then that peer's messages (with a `ConnectionChanged` whenever a
//! duplicate connection replaces the one in use), then `LostPeer`.
//!
//! When two connections to one peer exist (both sides dialled at once, one
//! side dialled over TCP and uTP at once, a restarted peer, a relayed
//! connection upgraded to a direct one), both sides end on the same one
//! without a `LostPeer` and without reordering messages; see `actor.rs`
//! for the rule and `order.rs` for the order.
//!
//! Sending bypasses the actor: [`Service::send`] encodes the message and
//! puts it in the peer's queue (`link.rs`), from which the connection's
//! writer task takes it chunk by chunk, most urgent lane first.

mod actor;
mod admission;
mod dial;
mod discovery;
mod link;
mod nat;
mod order;
mod relay;
mod upgrade;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::bootstrap_cache::BootstrapCache;
use crate::config::{Config, Endpoint};
use crate::id::{PeerId, SecretId};
use crate::nat::NatReport;
use crate::secure::{FrameError, HandshakeError, Intent};
use crate::utp::UtpSocket;
use crate::wire;
use actor::Command;
/// For `crate::fuzzing::lan_beacon`.
pub(crate) use discovery::Beacon as LanBeacon;
pub use discovery::LanDiscovery;
use link::PeerQueue;
pub(crate) use nat::NatInput;

/// How a connection is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Transport {
    /// A TCP connection.
    Tcp,
    /// A uTP connection over the service's UDP socket.
    Utp,
}

/// Who dialled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// We dialled the peer.
    Outgoing,
    /// The peer dialled us.
    Incoming,
}

/// Which way a connection found to the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectionPath {
    /// Dialled (or accepted) at an address that was reachable as it was.
    Direct,
    /// Through NATs opened by hole punching after a rendezvous.
    HolePunched,
    /// Through another peer, which forwards the (end-to-end encrypted)
    /// bytes.
    Relayed {
        /// The relaying peer.
        via: PeerId,
    },
}

/// What is known about a live connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The transport carrying it.
    pub transport: Transport,
    /// How the connection was found: direct, hole-punched or relayed.
    pub path: ConnectionPath,
    /// From the start of our attempt (dial, or traversal including the
    /// rendezvous) to the finished handshake; `None` for connections the
    /// peer made on its own.
    pub connect_time: Option<Duration>,
    /// The peer's address as we see it.
    pub remote_addr: SocketAddr,
    /// Our address on this connection.
    pub local_addr: SocketAddr,
    /// Who dialled.
    pub direction: Direction,
    /// The latest round-trip time measured by keep-alives.
    pub rtt: Option<Duration>,
    /// For a connection found by a traversal attempt (hole-punched, or a
    /// direct dial or relay of the attempt): its timing from the moment
    /// both sides started punching.
    pub traversal: Option<TraversalTiming>,
}

/// The timing of the traversal attempt that found a connection, from the
/// rendezvous signal: the moment our side started punching (the requester
/// half a measured round trip after sending `Sync`, the answerer when
/// `Sync` arrives), which is when both sides start together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraversalTiming {
    /// To the first packet from the peer on a path of the attempt (a probe
    /// or its ack, or a TCP connection established); `None` if none came
    /// before the connection (a relayed one, or one the peer's dial made).
    pub first_packet: Option<Duration>,
    /// To this connection's finished handshake.
    pub connected: Duration,
}

/// How urgent a message is: 0 is the most urgent, 14 the least.
///
/// A connection sends the next chunk of the most urgent message waiting, so
/// a small urgent message overtakes a large one after at most one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Priority(u8);

impl Priority {
    /// The most urgent.
    pub const HIGHEST: Self = Self(0);
    /// Urgent, such as interactive messages.
    pub const HIGH: Self = Self(2);
    /// The usual.
    pub const NORMAL: Self = Self(7);
    /// Bulk transfers.
    pub const LOWEST: Self = Self(14);

    /// A priority level, clamped to 0..=14.
    pub fn new(level: u8) -> Self {
        Self(level.min(Self::LOWEST.0))
    }

    /// The level, 0..=14.
    pub fn level(self) -> u8 {
        self.0
    }

    /// The frame lane: 0 is keep-alive and control, data uses 1..=15.
    fn lane(self) -> u8 {
        self.0 + 1
    }
}

impl Default for Priority {
    fn default() -> Self {
        Self::NORMAL
    }
}

/// Why a peer was lost.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LostReason {
    /// Nothing arrived for the configured peer timeout.
    Timeout,
    /// The peer said it is disconnecting.
    PeerDisconnected,
    /// The peer said it is shutting down.
    PeerShutdown,
    /// The connection closed without a goodbye (the peer process died, or
    /// the path broke).
    ConnectionClosed,
    /// The peer broke the protocol (tampered, oversized or malformed data);
    /// what it sent after the fault was discarded.
    ProtocolViolation(String),
    /// Reading from or writing to the connection failed.
    Io(String),
}

impl fmt::Display for LostReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("peer timed out"),
            Self::PeerDisconnected => f.write_str("peer disconnected"),
            Self::PeerShutdown => f.write_str("peer shut down"),
            Self::ConnectionClosed => f.write_str("connection closed without goodbye"),
            Self::ProtocolViolation(what) => write!(f, "protocol violation: {what}"),
            Self::Io(what) => write!(f, "i/o error: {what}"),
        }
    }
}

/// Something the service reports.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// A listener is accepting connections on this endpoint (a TCP
    /// listener, or the service's UDP socket for uTP).
    ListenerStarted(Endpoint),
    /// A listener could not start or stopped with an error.
    ListenerFailed {
        /// The endpoint it was meant for.
        endpoint: Endpoint,
        /// Why.
        error: String,
    },
    /// We joined the network through this peer.
    BootstrapConnect {
        /// The peer.
        peer: PeerId,
        /// Where we reached it.
        addr: Endpoint,
    },
    /// A peer joined the network through us.
    BootstrapAccept {
        /// The peer.
        peer: PeerId,
        /// Where it came from.
        addr: Endpoint,
    },
    /// No bootstrap candidate could be reached.
    BootstrapFailed,
    /// A connection to a peer is up (either side dialled).
    ConnectSuccess {
        /// The peer.
        peer: PeerId,
        /// How we are connected.
        info: ConnectionInfo,
    },
    /// A [`Service::connect`] failed.
    ConnectFailure {
        /// The peer we tried.
        peer: PeerId,
        /// Why.
        error: ConnectError,
    },
    /// A message arrived.
    NewMessage {
        /// From whom.
        peer: PeerId,
        /// The bytes, as sent.
        data: Bytes,
    },
    /// The connection carrying a peer's messages was replaced by another
    /// one to the same peer (a duplicate connection was resolved, or the
    /// one in use failed while another was open). The peer stayed
    /// connected: no `LostPeer` came before and no `ConnectSuccess` comes
    /// after. None queued is lost, and messages arrive in the order they
    /// were sent (per priority) across the switch.
    ConnectionChanged {
        /// The peer.
        peer: PeerId,
        /// The connection now in use.
        info: ConnectionInfo,
    },
    /// The last connection to a peer is gone.
    LostPeer {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: LostReason,
    },
    /// What we know about our addresses and NAT changed; also available
    /// from [`Service::nat_report`].
    NatReport(NatReport),
    /// A peer of our network announced itself on the LAN
    /// ([`Config::lan_discovery`]): dial `endpoints` to reach it (the
    /// handshake proves the id). Reported again when its endpoints change
    /// and now and then while it keeps announcing itself.
    LanPeer {
        /// The peer, as its signed beacon says.
        peer: PeerId,
        /// Its listeners, at the address its beacon came from.
        endpoints: Vec<Endpoint>,
    },
}

/// Why one address could not be dialled.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// The transport's connect did not finish in time.
    #[error("connect timed out")]
    Timeout,
    /// The transport's connect failed.
    #[error("{0}")]
    Io(Arc<std::io::Error>),
    /// The address is for uTP and this service has no UDP socket.
    #[error("uTP is not enabled on this service")]
    TransportDisabled,
    /// The secure handshake failed.
    #[error("handshake failed: {0}")]
    Handshake(Arc<HandshakeError>),
}

/// Why [`Service::connect`] failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// No address to dial.
    #[error("no addresses to dial")]
    NoAddresses,
    /// Every address failed.
    #[error("could not connect: {}", describe_attempts(.0))]
    Failed(Vec<(Endpoint, DialError)>),
    /// The service has shut down.
    #[error("the service has shut down")]
    Stopped,
    /// A connection through a rendezvous peer failed.
    #[error("NAT traversal failed: {0}")]
    Traversal(String),
}

fn describe_attempts(attempts: &[(Endpoint, DialError)]) -> String {
    attempts
        .iter()
        .map(|(addr, e)| format!("{addr}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why a message could not be queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// There is no connection to that peer.
    #[error("not connected to {0}")]
    NotConnected(PeerId),
    /// The message exceeds the configured maximum.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Why the service or a listener could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The endpoint.
        addr: Endpoint,
        /// Why.
        source: std::io::Error,
    },
    /// The service has shut down.
    #[error("the service has shut down")]
    Stopped,
}

type EventItem = (Event, Option<OwnedSemaphorePermit>);

/// The service's events, in order per peer.
///
/// Keep taking events: messages from a peer whose undelivered bytes exceed
/// [`Config::receive_buffer_limit`] pause that peer's connection until the
/// application catches up.
pub struct Events {
    rx: mpsc::UnboundedReceiver<EventItem>,
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("queued", &self.rx.len())
            .finish()
    }
}

impl Events {
    /// The next event; `None` once the service has shut down and every
    /// event was taken.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await.map(|(event, _permit)| event)
    }

    /// The next event if one is ready.
    pub fn try_recv(&mut self) -> Option<Event> {
        self.rx.try_recv().ok().map(|(event, _permit)| event)
    }
}

/// State shared by the handle, the actor and the connection tasks.
pub(crate) struct Inner {
    secret: SecretId,
    id: PeerId,
    config: Config,
    /// Keep-alive nonces are microseconds since this instant.
    epoch: Instant,
    queues: RwLock<HashMap<PeerId, Arc<PeerQueue>>>,
    events: mpsc::UnboundedSender<EventItem>,
    handshake_slots: Arc<Semaphore>,
    /// Incoming handshakes per source (`admission.rs`), on top of the slots.
    admission: admission::Admission,
    /// The service's UDP socket, carrying every uTP connection.
    utp: Option<UtpSocket>,
    /// To the NAT driver (`nat.rs`).
    nat: mpsc::UnboundedSender<NatInput>,
    /// The latest NAT report.
    nat_report: RwLock<NatReport>,
    /// Peers with a traversal attempt in progress, and its timing: a
    /// connection they make to us is hole-punched.
    punching: Mutex<HashMap<PeerId, Punching>>,
    /// Our ends of relayed circuits.
    circuits: relay::Circuits,
    /// Circuits we relay for others.
    relay_table: relay::RelayTable,
}

/// A traversal attempt in progress with a peer.
#[derive(Debug, Clone, Copy)]
struct Punching {
    /// When the attempt started (the rendezvous included).
    started: Instant,
    /// When we started punching.
    signal: Option<Instant>,
    /// When the first packet from the peer came on a path of the attempt.
    first_packet: Option<Instant>,
}

impl Punching {
    /// The timing of a connection registered now.
    fn timing(&self) -> Option<TraversalTiming> {
        let signal = self.signal?;
        Some(TraversalTiming {
            first_packet: self
                .first_packet
                .map(|at| at.saturating_duration_since(signal)),
            connected: signal.elapsed(),
        })
    }
}

impl Inner {
    /// A packet from `peer` came on a path of its traversal attempt.
    fn punch_heard(&self, peer: &PeerId) {
        let mut punching = self.punching.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = punching.get_mut(peer)
            && p.signal.is_some()
        {
            p.first_packet.get_or_insert_with(Instant::now);
        }
    }

    fn emit(&self, event: Event) {
        // The receiver may be gone; the service goes on regardless.
        let _ = self.events.send((event, None));
    }

    fn nat_report(&self) -> NatReport {
        self.nat_report
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn queue(&self, peer: &PeerId) -> Option<Arc<PeerQueue>> {
        self.queues
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(peer)
            .cloned()
    }
}

/// An id for one run of a service, nonzero and larger for a later run on
/// the same clock: microseconds since the Unix epoch, then 12 random bits
/// so two runs started in the same microsecond still differ.
fn new_session() -> u64 {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let mut random = [0u8; 2];
    // Without the OS generator the clock alone still tells runs apart.
    let _ = getrandom::fill(&mut random);
    let low = u64::from(u16::from_le_bytes(random) & 0x0fff);
    (u64::try_from(micros).unwrap_or(u64::MAX >> 12) << 12 | low).max(1)
}

/// A handle to a running service. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
    commands: mpsc::UnboundedSender<Command>,
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service")
            .field("id", &self.inner.id)
            .finish()
    }
}

impl Service {
    /// Starts a service with this identity: opens the bootstrap cache, binds
    /// `config.listen`, and spawns the actor on the current tokio runtime.
    pub async fn start(
        mut config: Config,
        secret: SecretId,
    ) -> Result<(Self, Events), ServiceError> {
        // A fresh run of this identity: peers that still hold a connection
        // to an earlier run tell it from ours by this (`actor.rs`).
        config.channel.session = new_session();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let utp = match config.utp {
            Some(addr) => {
                let (socket, others) =
                    UtpSocket::bind(addr, crate::utp::proto::EndpointConfig::default())
                        .await
                        .map_err(|source| ServiceError::Listen {
                            addr: Endpoint::utp(addr),
                            source,
                        })?;
                let bound = socket.local_addr().map_err(|source| ServiceError::Listen {
                    addr: Endpoint::utp(addr),
                    source,
                })?;
                Some((socket, (bound, others)))
            }
            None => None,
        };
        let (utp, utp_bound) = utp.unzip();
        let (utp_bound, datagrams) = utp_bound.unzip();
        let (nat_tx, nat_rx) = mpsc::unbounded_channel();
        // A damaged cache is logged by `open` and replaced by an empty one.
        let cache = config
            .bootstrap_cache
            .as_ref()
            .map(|path| BootstrapCache::open(path, config.bootstrap_cache_capacity).0);
        let handshake_slots = Arc::new(Semaphore::new(config.max_pending_handshakes.max(1)));
        let inner = Arc::new(Inner {
            id: secret.peer_id(),
            secret,
            epoch: Instant::now(),
            queues: RwLock::new(HashMap::new()),
            events: events_tx,
            handshake_slots: handshake_slots.clone(),
            admission: admission::Admission::new(
                handshake_slots,
                config.max_pending_handshakes_per_source,
            ),
            config,
            utp,
            nat: nat_tx.clone(),
            nat_report: RwLock::new(NatReport::default()),
            punching: Mutex::new(HashMap::new()),
            circuits: Mutex::new(HashMap::new()),
            relay_table: Mutex::new(HashMap::new()),
        });
        let commands = actor::spawn(inner.clone(), cache);
        nat::spawn(inner.clone(), commands.clone(), nat_tx, nat_rx, datagrams);
        discovery::spawn(&inner, &commands);
        let service = Self { inner, commands };
        if let Some(bound) = utp_bound {
            service.command(Command::ListenUtp { bound })?;
        }
        let mut tcp = Vec::new();
        for addr in service.inner.config.listen.clone() {
            tcp.push(service.start_listening(addr).await?);
        }
        // Outgoing TCP leaves from the listener's port (`nat::tcp`) as
        // soon as the report knows it, which the driver fills in soon;
        // dials made before that must not miss it.
        service
            .inner
            .nat_report
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .local_tcp
            .clone_from(&tcp);
        let _ = service.inner.nat.send(NatInput::Start { tcp });
        Ok((service, Events { rx: events_rx }))
    }

    /// Our identity.
    pub fn id(&self) -> PeerId {
        self.inner.id
    }

    /// The configuration the service runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Starts a TCP listener; returns the bound address (useful with port
    /// 0). Also reported as [`Event::ListenerStarted`].
    pub async fn start_listening(&self, addr: SocketAddr) -> Result<SocketAddr, ServiceError> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Listen { addr, reply })?;
        rx.await.map_err(|_| ServiceError::Stopped)?
    }

    /// Stops the listener bound to `addr`; returns whether there was one.
    pub async fn stop_listening(&self, addr: SocketAddr) -> bool {
        let (reply, rx) = oneshot::channel();
        self.command(Command::StopListening { addr, reply }).is_ok() && rx.await.unwrap_or(false)
    }

    /// The endpoints being listened on: TCP listeners, and the UDP socket
    /// for uTP if there is one.
    pub async fn listeners(&self) -> Vec<Endpoint> {
        let (reply, rx) = oneshot::channel();
        if self.command(Command::Listeners { reply }).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Dials the bootstrap cache's peers and the configured contacts
    /// concurrently, keeping up to `bootstrap_keep` connections. Results
    /// arrive as [`Event::BootstrapConnect`] for each connection kept, or
    /// one [`Event::BootstrapFailed`].
    pub fn bootstrap(&self) -> Result<(), ServiceError> {
        self.command(Command::Bootstrap)
    }

    /// Connects to `peer` at any of `addrs` (endpoints, or socket
    /// addresses meaning TCP), dialling them concurrently; the first to
    /// complete the handshake as `peer` wins. Returns at once if already
    /// connected. Success is also reported as [`Event::ConnectSuccess`],
    /// failure as [`Event::ConnectFailure`].
    pub async fn connect<A>(
        &self,
        peer: PeerId,
        addrs: &[A],
    ) -> Result<ConnectionInfo, ConnectError>
    where
        A: Into<Endpoint> + Copy,
    {
        let addrs: Vec<Endpoint> = addrs.iter().map(|a| (*a).into()).collect();
        if let Some(info) = self.connection_info(&peer).await {
            return Ok(info);
        }
        let late = Some(self.commands.clone());
        let result =
            match dial::dial_any(&self.inner, Some(peer), &addrs, Intent::Connect, late).await {
                Ok(dialled) => {
                    let (reply, rx) = oneshot::channel();
                    if self
                        .command(Command::Register {
                            dialled: Box::new(dialled),
                            reply: Some(reply),
                        })
                        .is_err()
                    {
                        return Err(ConnectError::Stopped);
                    }
                    rx.await.unwrap_or(Err(ConnectError::Stopped))
                }
                Err(error) => Err(error),
            };
        if let Err(error) = &result {
            self.inner.emit(Event::ConnectFailure {
                peer,
                error: error.clone(),
            });
        }
        result
    }

    /// Connects to `peer` through `rendezvous`, a peer both are connected
    /// to: it forwards each side's candidate addresses, both punch holes in
    /// their NATs at the same moment, and the first path to work wins (see
    /// [`ConnectionInfo::path`]). Returns at once if already connected.
    /// Success is also reported as [`Event::ConnectSuccess`], failure as
    /// [`Event::ConnectFailure`].
    ///
    /// If nothing direct works, the connection is relayed through
    /// `rendezvous` (end to end encrypted). It does not stay so: the
    /// attempt goes on punching until [`Config::punch_timeout`], and after
    /// that the service tries the whole traversal again now and then
    /// ([`Config::relay_upgrade`], backing off to
    /// [`Config::relay_upgrade_max`]) until a direct path replaces the
    /// circuit, announced by [`Event::ConnectionChanged`] — without a
    /// message lost or reordered.
    pub async fn connect_via(
        &self,
        peer: PeerId,
        rendezvous: PeerId,
    ) -> Result<ConnectionInfo, ConnectError> {
        if let Some(info) = self.connection_info(&peer).await {
            return Ok(info);
        }
        let (reply, rx) = oneshot::channel();
        let result = if self
            .inner
            .nat
            .send(NatInput::ConnectVia {
                peer,
                via: rendezvous,
                reply,
            })
            .is_err()
        {
            Err(ConnectError::Stopped)
        } else {
            rx.await.unwrap_or(Err(ConnectError::Stopped))
        };
        if let Err(error) = &result {
            self.inner.emit(Event::ConnectFailure {
                peer,
                error: error.clone(),
            });
        }
        result
    }

    /// What the service knows about its addresses and the NAT in front of
    /// it; [`Event::NatReport`] announces each change.
    pub fn nat_report(&self) -> NatReport {
        self.inner.nat_report()
    }

    /// Queues `data` for `peer`. Waits while the peer's queue is over
    /// [`Config::send_queue_limit`]. Delivery is in order per priority,
    /// also when another connection replaces the one in use
    /// ([`Event::ConnectionChanged`]: a duplicate resolved, or a relayed
    /// connection upgraded to a direct one, see
    /// [`Config::relay_upgrade`]): messages already queued move to the new
    /// one, none is lost, and the receiver delivers what the old one still
    /// carries before anything from the new one (waiting at most 5 s for
    /// an old connection that went silent). Messages still queued when the
    /// peer is lost are dropped. The bytes are not copied before they are
    /// encrypted.
    pub async fn send(
        &self,
        peer: &PeerId,
        data: impl Into<Bytes>,
        priority: Priority,
    ) -> Result<(), SendError> {
        let message = wire::Outgoing::data(data.into());
        let max = self.inner.config.channel.max_message_len;
        if message.len() > max {
            return Err(SendError::TooLarge {
                len: message.len(),
                max,
            });
        }
        let queue = self
            .inner
            .queue(peer)
            .ok_or(SendError::NotConnected(*peer))?;
        queue
            .push(priority.lane(), message, self.inner.config.send_queue_limit)
            .await
            .map_err(|_| SendError::NotConnected(*peer))
    }

    /// Closes the connection to `peer`, telling it why; no `LostPeer` is
    /// reported for a disconnect we asked for. Returns whether there was a
    /// connection.
    pub async fn disconnect(&self, peer: &PeerId) -> bool {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Disconnect { peer: *peer, reply })
            .is_ok()
            && rx.await.unwrap_or(false)
    }

    /// Every connected peer and how it is connected.
    pub async fn connected_peers(&self) -> Vec<(PeerId, ConnectionInfo)> {
        let (reply, rx) = oneshot::channel();
        if self.command(Command::Peers { reply }).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// How we are connected to `peer`, if we are.
    pub async fn connection_info(&self, peer: &PeerId) -> Option<ConnectionInfo> {
        self.connected_peers()
            .await
            .into_iter()
            .find_map(|(p, info)| (p == *peer).then_some(info))
    }

    /// A snapshot of every uTP connection on the service's UDP socket (peer
    /// address and state), for diagnostics; empty without uTP.
    pub fn utp_diagnostics(&self) -> Vec<(SocketAddr, crate::utp::proto::Diagnostics)> {
        self.inner
            .utp
            .as_ref()
            .map(UtpSocket::diagnostics)
            .unwrap_or_default()
    }

    /// Closes every connection and listener, telling peers we are shutting
    /// down. Other handles see the service as stopped.
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.command(Command::Shutdown { reply }).is_ok() {
            let _ = rx.await;
        }
    }

    fn command(&self, command: Command) -> Result<(), ServiceError> {
        self.commands
            .send(command)
            .map_err(|_| ServiceError::Stopped)
    }
}

/// What a dial or an accept produced, ready to be registered.
pub(crate) struct Dialled {
    channel: crate::secure::SecureChannel<BoxedStream>,
    transport: Transport,
    remote_addr: SocketAddr,
    local_addr: SocketAddr,
    direction: Direction,
    path: ConnectionPath,
    /// When our attempt started, if we made one.
    started: Option<Instant>,
}

/// A byte stream of any transport.
pub(crate) trait ByteStream:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send
{
}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> ByteStream for T {}

/// What a secure channel runs over: TCP or uTP, behind one type.
pub(crate) type BoxedStream = Box<dyn ByteStream>;

/// Maps a reader's failure to the reason reported for the lost peer.
fn lost_reason(error: &FrameError) -> LostReason {
    match error {
        FrameError::Closed | FrameError::Truncated => LostReason::ConnectionClosed,
        FrameError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            LostReason::ConnectionClosed
        }
        FrameError::Io(e) => LostReason::Io(e.to_string()),
        other => LostReason::ProtocolViolation(other.to_string()),
    }
}
