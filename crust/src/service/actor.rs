//! The actor that owns the connection table.
//!
//! It receives [`Command`]s from handles and [`Internal`] notices from its
//! own tasks (accepted and bootstrap connections, links that ended), and is
//! the only place that decides which connection to a peer is kept and which
//! lifecycle events are emitted.
//!
//! Several connections to one peer (both sides dialled at once, or one side
//! dialled over TCP and uTP at once, or the peer restarted): the side with
//! the smaller peer id, the *leader*, decides which one is kept. It prefers
//! a direct or hole-punched connection to a relayed one, then the newest
//! connection, except in a race: while the kept connection is
//! younger than a handshake timeout, a newcomer replaces it only if the
//! leader dialled the newcomer and not the kept one (so a simultaneous dial
//! keeps the connection dialled by the smaller id, and a dial over TCP and
//! uTP at once keeps the first to finish). The
//! leader retires every other connection: its writer finishes the messages
//! it started and says `Close(Superseded)`. The *follower* applies the same
//! preference to choose where it sends meanwhile (predicting the leader's
//! choice), but never closes a connection on its own: it only retires one
//! the leader superseded (finishing what it started there and saying
//! `Close(Superseded)` in turn), and then sends on its best remaining
//! connection — or, if none is left, waits one handshake timeout for the
//! leader's choice to arrive. So both sides end on the same connection,
//! the peer stays connected throughout (no `LostPeer`, one
//! `ConnectionChanged` per switch), and messages queued but not yet
//! started move to the new connection. No message is lost, and none is
//! reordered: a connection that takes over says how many messages came
//! before, and the receiver waits for those (`order.rs`).
//!
//! A restart is told apart from a race: each run of a service has its own
//! session (a start time, `ChannelConfig::session`) that the handshake
//! carries. A connection from a later run of the peer replaces the kept
//! one at once, whatever its age and whoever dialled it, and both sides
//! drop the earlier run's connections on their own (they are dead, or
//! about to be; its messages in flight are lost with it); the new run's
//! messages are ordered on their own. A connection from an earlier run
//! (a handshake that finished late) is refused.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use super::link::{self, LinkCtl, LinkId, PeerQueue, ReaderEnd};
use super::order::DeliveryOrder;
use super::{
    BoxedStream, ConnectError, ConnectionInfo, ConnectionPath, Dialled, Direction, Event, Inner,
    LostReason, NatInput, ServiceError, Transport,
};
use crate::bootstrap_cache::BootstrapCache;
use crate::config::Endpoint;
use crate::id::PeerId;
use crate::secure::{Intent, SecureChannel};
use crate::utp::UtpSocket;
use crate::wire::CloseReason;

/// Requests from handles.
pub(super) enum Command {
    Listen {
        addr: SocketAddr,
        reply: oneshot::Sender<Result<SocketAddr, ServiceError>>,
    },
    StopListening {
        addr: SocketAddr,
        reply: oneshot::Sender<bool>,
    },
    /// Start accepting uTP connections on the service's UDP socket.
    ListenUtp {
        bound: SocketAddr,
    },
    Listeners {
        reply: oneshot::Sender<Vec<Endpoint>>,
    },
    Bootstrap,
    Register {
        dialled: Box<Dialled>,
        reply: Option<oneshot::Sender<Result<ConnectionInfo, ConnectError>>>,
    },
    Disconnect {
        peer: PeerId,
        reply: oneshot::Sender<bool>,
    },
    Peers {
        reply: oneshot::Sender<Vec<(PeerId, ConnectionInfo)>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// Notices from the actor's own tasks.
enum Internal {
    Accepted(Dialled),
    BootstrapDialled(Dialled),
    BootstrapDone {
        reached: usize,
    },
    LinkEnded {
        peer: PeerId,
        link: LinkId,
        end: ReaderEnd,
    },
}

struct LinkEntry {
    id: LinkId,
    info: ConnectionInfo,
    /// Who dialled this link.
    dialler: PeerId,
    /// When it was registered.
    since: Instant,
    /// Told to finish and close: never chosen again.
    retiring: bool,
    ctl: Arc<LinkCtl>,
}

/// How a newcomer's run of the peer compares with the table's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    /// The same run (or one side said nothing): the usual rules.
    Same,
    /// The peer restarted: the newcomer is its new run.
    Later,
    /// A connection from a run the peer already left behind.
    Earlier,
}

fn compare_runs(ours: u64, newcomer: u64) -> Run {
    if ours == 0 || newcomer == 0 || ours == newcomer {
        Run::Same
    } else if newcomer > ours {
        Run::Later
    } else {
        Run::Earlier
    }
}

struct PeerEntry {
    queue: Arc<PeerQueue>,
    current: LinkId,
    /// Keeps the peer's messages in order across its links.
    order: Arc<DeliveryOrder>,
    links: Vec<LinkEntry>,
    /// The peer's run (`SecureChannel::remote_session`) its links belong
    /// to; 0 if it said none.
    session: u64,
    /// Set when the current link was superseded by the peer and we wait for
    /// its replacement until this instant.
    replacement_deadline: Option<Instant>,
}

impl PeerEntry {
    fn current(&self) -> Option<&LinkEntry> {
        self.links.iter().find(|l| l.id == self.current)
    }
}

struct Actor {
    inner: Arc<Inner>,
    internal_tx: mpsc::UnboundedSender<Internal>,
    peers: HashMap<PeerId, PeerEntry>,
    listeners: HashMap<SocketAddr, JoinHandle<()>>,
    cache: Option<Arc<Mutex<BootstrapCache>>>,
    next_link: LinkId,
    bootstrap_kept: usize,
    bootstrap_running: bool,
    /// The UDP socket's address, once its uTP accept loop runs.
    utp_bound: Option<SocketAddr>,
    /// The uTP accept loop: stopped first on shutdown, like the TCP
    /// listeners, so no peer finishes a handshake with a service going
    /// away (the dialler would report a connection that dies at once).
    utp_accept: Option<JoinHandle<()>>,
    tasks: JoinSet<()>,
}

/// Spawns the actor; returns the sender for commands.
pub(super) fn spawn(
    inner: Arc<Inner>,
    cache: Option<BootstrapCache>,
) -> mpsc::UnboundedSender<Command> {
    let (commands_tx, commands_rx) = mpsc::unbounded_channel();
    let (internal_tx, internal_rx) = mpsc::unbounded_channel();
    let actor = Actor {
        inner,
        internal_tx,
        peers: HashMap::new(),
        listeners: HashMap::new(),
        cache: cache.map(|c| Arc::new(Mutex::new(c))),
        next_link: 1,
        bootstrap_kept: 0,
        bootstrap_running: false,
        utp_bound: None,
        utp_accept: None,
        tasks: JoinSet::new(),
    };
    tokio::spawn(actor.run(commands_rx, internal_rx));
    commands_tx
}

impl Actor {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut internal: mpsc::UnboundedReceiver<Internal>,
    ) {
        let mut shutdown_reply = None;
        loop {
            let deadline = self
                .peers
                .values()
                .filter_map(|p| p.replacement_deadline)
                .min();
            tokio::select! {
                command = commands.recv() => match command {
                    None => break,
                    Some(Command::Shutdown { reply }) => {
                        shutdown_reply = Some(reply);
                        break;
                    }
                    Some(command) => self.on_command(command).await,
                },
                Some(notice) = internal.recv() => self.on_internal(notice),
                () = sleep_until(deadline) => self.expire_replacements(),
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {}
            }
        }
        self.shutdown().await;
        if let Some(reply) = shutdown_reply {
            let _ = reply.send(());
        }
    }

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::Listen { addr, reply } => {
                let _ = reply.send(self.listen(addr).await);
            }
            Command::StopListening { addr, reply } => {
                let stopped = match self.listeners.remove(&addr) {
                    Some(task) => {
                        task.abort();
                        true
                    }
                    None => false,
                };
                let _ = reply.send(stopped);
            }
            Command::ListenUtp { bound } => self.listen_utp(bound),
            Command::Listeners { reply } => {
                let mut endpoints: Vec<Endpoint> =
                    self.listeners.keys().copied().map(Endpoint::tcp).collect();
                endpoints.extend(self.utp_bound.map(Endpoint::utp));
                let _ = reply.send(endpoints);
            }
            Command::Bootstrap => self.start_bootstrap(),
            Command::Register { dialled, reply } => {
                let result = self.register(*dialled, false);
                if let Some(reply) = reply {
                    let _ = reply.send(result.ok_or(ConnectError::Stopped));
                }
            }
            Command::Disconnect { peer, reply } => {
                let known = match self.peers.remove(&peer) {
                    Some(entry) => {
                        self.drop_peer(&peer, entry, CloseReason::Disconnect);
                        true
                    }
                    None => false,
                };
                let _ = reply.send(known);
            }
            Command::Peers { reply } => {
                let peers = self
                    .peers
                    .iter()
                    .filter_map(|(id, entry)| {
                        let link = entry.current()?;
                        let mut info = link.info.clone();
                        info.rtt = link.ctl.rtt();
                        Some((*id, info))
                    })
                    .collect();
                let _ = reply.send(peers);
            }
            Command::Shutdown { .. } => {}
        }
    }

    fn on_internal(&mut self, notice: Internal) {
        match notice {
            Internal::Accepted(dialled) => {
                self.register(dialled, false);
            }
            Internal::BootstrapDialled(dialled) => {
                if self.bootstrap_kept >= self.inner.config.bootstrap_keep {
                    // Enough bootstrap connections; say goodbye politely.
                    let (reader, writer) = dialled.channel.split();
                    drop(reader);
                    self.tasks.spawn(async move {
                        let mut writer = writer;
                        writer.push_message(
                            crate::wire::CONTROL_LANE,
                            &crate::wire::encode(&crate::wire::Packet::Close(
                                CloseReason::Disconnect,
                            )),
                        );
                        let _ = writer.shutdown().await;
                    });
                    return;
                }
                if self.register(dialled, true).is_some() {
                    self.bootstrap_kept += 1;
                }
            }
            Internal::BootstrapDone { reached } => {
                self.bootstrap_running = false;
                if reached == 0 {
                    self.inner.emit(Event::BootstrapFailed);
                }
            }
            Internal::LinkEnded { peer, link, end } => self.link_ended(peer, link, end),
        }
    }

    async fn listen(&mut self, addr: SocketAddr) -> Result<SocketAddr, ServiceError> {
        let listener = match crate::nat::tcp::listen(addr) {
            Ok(listener) => listener,
            Err(source) => {
                self.inner.emit(Event::ListenerFailed {
                    endpoint: Endpoint::tcp(addr),
                    error: source.to_string(),
                });
                return Err(ServiceError::Listen {
                    addr: Endpoint::tcp(addr),
                    source,
                });
            }
        };
        let bound = listener
            .local_addr()
            .map_err(|source| ServiceError::Listen {
                addr: Endpoint::tcp(addr),
                source,
            })?;
        let inner = self.inner.clone();
        let internal = self.internal_tx.clone();
        let task = tokio::spawn(accept_loop(listener, bound, inner, internal));
        self.listeners.insert(bound, task);
        tracing::info!(%bound, "listening on tcp");
        self.inner
            .emit(Event::ListenerStarted(Endpoint::tcp(bound)));
        Ok(bound)
    }

    fn listen_utp(&mut self, bound: SocketAddr) {
        let Some(socket) = self.inner.utp.clone() else {
            return;
        };
        self.utp_bound = Some(bound);
        self.utp_accept = Some(tokio::spawn(utp_accept_loop(
            socket,
            self.inner.clone(),
            self.internal_tx.clone(),
        )));
        tracing::info!(%bound, "listening on utp");
        self.inner
            .emit(Event::ListenerStarted(Endpoint::utp(bound)));
    }

    fn start_bootstrap(&mut self) {
        if self.bootstrap_running {
            return;
        }
        self.bootstrap_running = true;
        let mut candidates: Vec<(Option<PeerId>, Vec<Endpoint>)> = Vec::new();
        if let Some(cache) = &self.cache {
            let cache = cache.lock().unwrap_or_else(|p| p.into_inner());
            for entry in cache.entries() {
                candidates.push((Some(entry.id), entry.addrs.clone()));
            }
        }
        for contact in &self.inner.config.bootstrap_contacts {
            let known = candidates.iter().any(|(id, addrs)| {
                contact.id.is_some() && *id == contact.id && addrs.contains(&contact.addr)
            });
            if !known {
                candidates.push((contact.id, vec![contact.addr]));
            }
        }
        candidates.retain(|(id, _)| *id != Some(self.inner.id));
        let inner = self.inner.clone();
        let internal = self.internal_tx.clone();
        self.tasks.spawn(async move {
            let limit = Arc::new(tokio::sync::Semaphore::new(
                inner.config.max_concurrent_dials.max(1),
            ));
            let mut dials = JoinSet::new();
            for (id, addrs) in candidates {
                let (inner, limit) = (inner.clone(), limit.clone());
                dials.spawn(async move {
                    let _slot = limit.acquire_owned().await.ok()?;
                    super::dial::dial_any(&inner, id, &addrs, Intent::Bootstrap, None)
                        .await
                        .ok()
                });
            }
            let mut reached = 0;
            while let Some(joined) = dials.join_next().await {
                if let Ok(Some(dialled)) = joined {
                    reached += 1;
                    let _ = internal.send(Internal::BootstrapDialled(dialled));
                }
            }
            let _ = internal.send(Internal::BootstrapDone { reached });
        });
    }

    /// Adds an established connection; returns its info, or `None` if it
    /// lost a simultaneous-dial contest and was closed.
    fn register(&mut self, dialled: Dialled, bootstrap: bool) -> Option<ConnectionInfo> {
        let Dialled {
            channel,
            transport,
            remote_addr,
            local_addr,
            direction,
            path,
            started,
        } = dialled;
        let peer = channel.remote();
        let session = channel.remote_session();
        if let Some(entry) = self.peers.get(&peer)
            && compare_runs(entry.session, session) == Run::Earlier
        {
            // The peer restarted and this connection comes from its earlier
            // run (a handshake finished late): not a connection to keep.
            tracing::debug!(%peer, "refusing a connection from an earlier run of the peer");
            let (reader, writer) = channel.split();
            drop(reader);
            self.tasks.spawn(async move {
                let mut writer = writer;
                writer.push_message(
                    crate::wire::CONTROL_LANE,
                    &crate::wire::encode(&crate::wire::Packet::Close(CloseReason::Disconnect)),
                );
                let _ = writer.shutdown().await;
            });
            return None;
        }
        // A connection made while a traversal attempt with the peer runs
        // came through the holes it punched (or its direct dials).
        let punch_start = self
            .inner
            .punching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&peer)
            .copied();
        let traversal = punch_start.and_then(|p| p.timing());
        let punch_start = punch_start.map(|p| p.started);
        let (path, started) = match (path, punch_start) {
            (ConnectionPath::Direct, Some(at)) if transport == Transport::Utp => {
                (ConnectionPath::HolePunched, Some(at))
            }
            (ConnectionPath::Direct, Some(at)) => (ConnectionPath::Direct, Some(at)),
            (path, _) => (path, started),
        };
        let intent = channel.intent();
        let dialler = match direction {
            Direction::Outgoing => self.inner.id,
            Direction::Incoming => peer,
        };
        let endpoint = Endpoint {
            transport,
            addr: remote_addr,
        };
        let info = ConnectionInfo {
            transport,
            path,
            connect_time: started.map(|at| at.elapsed()),
            remote_addr,
            local_addr,
            direction,
            rtt: None,
            traversal,
        };
        if direction == Direction::Outgoing {
            self.record_in_cache(peer, endpoint);
        }
        let id = self.next_link;
        self.next_link += 1;
        let ctl = Arc::new(LinkCtl::new());
        let link = LinkEntry {
            id,
            info: info.clone(),
            dialler,
            since: Instant::now(),
            retiring: false,
            ctl: ctl.clone(),
        };

        let leader = self.inner.id < peer;
        let handshake_timeout = self.inner.config.channel.handshake_timeout;
        let (queue, wins, is_new_peer) = match self.peers.get_mut(&peer) {
            None => {
                let queue = Arc::new(PeerQueue::default());
                self.inner
                    .queues
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(peer, queue.clone());
                self.peers.insert(
                    peer,
                    PeerEntry {
                        queue: queue.clone(),
                        current: id,
                        order: Arc::default(),
                        links: Vec::new(),
                        session,
                        replacement_deadline: None,
                    },
                );
                (queue, true, true)
            }
            Some(entry) if compare_runs(entry.session, session) == Run::Later => {
                // The peer restarted: its earlier run's links are dead (or
                // about to be), whatever their age, and its new run counts
                // its messages from 0. They go at once, and the new run's
                // messages are ordered on their own.
                tracing::info!(%peer, "the peer restarted: dropping its earlier connections");
                for old in entry.links.iter_mut() {
                    old.retiring = true;
                    entry.queue.close_link(old.id, CloseReason::Disconnect);
                    old.ctl.kill();
                    entry.order.close(old.id);
                }
                entry.session = session;
                entry.order = Arc::default();
                (entry.queue.clone(), true, false)
            }
            Some(entry) => {
                let wins = match entry.current() {
                    // The current link already ended or was superseded by
                    // the peer; any new one replaces it.
                    None => true,
                    Some(current) if current.retiring => true,
                    // A path of our own beats a relayed circuit.
                    Some(current) if relayed(&current.info) != relayed(&info) => {
                        relayed(&current.info)
                    }
                    // An older link may be stale (the peer restarted and
                    // the old path is not known dead yet): the newer wins.
                    Some(current) if current.since.elapsed() >= handshake_timeout => true,
                    // Two fresh links: a race. One the leader dialled beats
                    // one the follower dialled (a simultaneous dial keeps
                    // the connection dialled by the smaller id); otherwise
                    // the first stays (one side dialled over two
                    // transports).
                    Some(current) => {
                        let leader_id = if leader { self.inner.id } else { peer };
                        dialler == leader_id && current.dialler != leader_id
                    }
                };
                (entry.queue.clone(), wins, false)
            }
        };

        let (reader, writer) = channel.split();
        let inner = self.inner.clone();
        self.tasks.spawn(link::run_writer(
            writer,
            id,
            inner.clone(),
            queue.clone(),
            ctl.clone(),
        ));
        let entry = self.peers.get_mut(&peer)?;
        // A link replaced because it may be stale (the peer restarted, or
        // moved) is likely dead: the new one's data does not wait for it.
        let stale = entry
            .current()
            .filter(|c| !c.retiring && relayed(&c.info) == relayed(&info))
            .filter(|c| c.since.elapsed() >= handshake_timeout)
            .map(|c| c.id);
        entry.links.push(link);
        entry.order.open(id);
        if wins {
            entry.current = id;
            entry.replacement_deadline = None;
            queue.set_active(id);
            if let Some(stale) = stale {
                entry.order.close(stale);
            }
        }
        if leader {
            // The leader decides: every other link goes.
            let current = entry.current;
            for other in entry.links.iter_mut() {
                if other.id != current && !other.retiring {
                    tracing::debug!(%peer, link = other.id, "closing a duplicate connection");
                    other.retiring = true;
                    queue.retire(other.id);
                }
            }
        }
        if wins && !is_new_peer {
            tracing::info!(%peer, %remote_addr, ?direction, ?path, "connection replaced");
            self.inner.emit(Event::ConnectionChanged {
                peer,
                info: info.clone(),
            });
            // The NAT driver tracks which peers are reachable only through
            // a relay.
            let _ = self.inner.nat.send(NatInput::Connected {
                peer,
                info: info.clone(),
            });
        }
        if is_new_peer {
            let event = match (direction, intent, bootstrap) {
                (Direction::Outgoing, _, true) => Event::BootstrapConnect {
                    peer,
                    addr: endpoint,
                },
                (Direction::Incoming, Intent::Bootstrap, _) => Event::BootstrapAccept {
                    peer,
                    addr: endpoint,
                },
                _ => Event::ConnectSuccess {
                    peer,
                    info: info.clone(),
                },
            };
            tracing::info!(%peer, %remote_addr, ?direction, ?path, "connected");
            self.inner.emit(event);
            let _ = self.inner.nat.send(NatInput::Connected {
                peer,
                info: info.clone(),
            });
            // Address echo over the secure channel, and where our UDP
            // socket is for echoes over UDP; a relayed circuit's addresses
            // are the relay's, so it has nothing to echo.
            let hello = crate::wire::Hello {
                observed: remote_addr,
                udp_port: self.utp_bound.map(|a| a.port()),
            };
            if !matches!(path, ConnectionPath::Relayed { .. }) {
                queue.push_control(crate::wire::Outgoing::control_owned(
                    &crate::wire::Packet::Hello(hello),
                ));
            }
        }
        // The reader starts after the connect event, so the peer's messages
        // always follow it.
        let internal = self.internal_tx.clone();
        let remote = (remote_addr, transport);
        let order = self.peers.get(&peer)?.order.clone();
        self.tasks.spawn(async move {
            let end = link::run_reader(reader, (peer, id), remote, inner, queue, ctl, &order).await;
            order.close(id);
            let _ = internal.send(Internal::LinkEnded {
                peer,
                link: id,
                end,
            });
        });
        if wins {
            Some(info)
        } else {
            self.peers.get(&peer)?.current().map(|l| l.info.clone())
        }
    }

    fn link_ended(&mut self, peer: PeerId, link: LinkId, end: ReaderEnd) {
        let leader = self.inner.id < peer;
        let Some(entry) = self.peers.get_mut(&peer) else {
            return;
        };
        let Some(position) = entry.links.iter().position(|l| l.id == link) else {
            return;
        };
        let ended = entry.links.remove(position);
        if matches!(end, ReaderEnd::PeerClosed(CloseReason::Superseded)) {
            // The peer dropped this link: finish what we started on it
            // (the peer still reads it) and say goodbye.
            if !ended.retiring {
                entry.queue.retire(link);
            }
        } else {
            // Make sure the writer stops too.
            entry.queue.close_link(link, CloseReason::Disconnect);
            ended.ctl.kill();
        }
        if entry.current != link {
            return;
        }
        if let ReaderEnd::Killed = end {
            return;
        }
        // Another live link takes over, the newest first.
        if let Some(next) = entry
            .links
            .iter()
            .filter(|l| !l.retiring)
            .max_by_key(|l| l.id)
        {
            let (next_id, info) = (next.id, next.info.clone());
            entry.current = next_id;
            entry.replacement_deadline = None;
            entry.queue.set_active(next_id);
            if leader {
                for other in entry.links.iter_mut() {
                    if other.id != next_id && !other.retiring {
                        other.retiring = true;
                        entry.queue.retire(other.id);
                    }
                }
            }
            tracing::info!(%peer, remote = %info.remote_addr, "connection replaced");
            let _ = self.inner.nat.send(NatInput::Connected {
                peer,
                info: info.clone(),
            });
            self.inner.emit(Event::ConnectionChanged { peer, info });
            return;
        }
        let lost = match end {
            ReaderEnd::Killed => return,
            ReaderEnd::PeerClosed(CloseReason::Superseded) => {
                // The peer's choice is still on its way; wait for it.
                if entry.replacement_deadline.is_none() {
                    entry.replacement_deadline =
                        Some(Instant::now() + self.inner.config.channel.handshake_timeout);
                }
                return;
            }
            ReaderEnd::PeerClosed(CloseReason::Disconnect) => LostReason::PeerDisconnected,
            ReaderEnd::PeerClosed(CloseReason::Shutdown) => LostReason::PeerShutdown,
            ReaderEnd::Lost(reason) => reason,
        };
        // Links still closing after a switch go with it.
        if let Some(entry) = self.peers.remove(&peer) {
            self.drop_peer(&peer, entry, CloseReason::Disconnect);
        }
        tracing::info!(%peer, reason = %lost, "peer lost");
        self.inner.emit(Event::LostPeer { peer, reason: lost });
    }

    fn expire_replacements(&mut self) {
        let now = Instant::now();
        let expired: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, e)| e.replacement_deadline.is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for peer in expired {
            if let Some(entry) = self.peers.remove(&peer) {
                self.drop_peer(&peer, entry, CloseReason::Disconnect);
                self.inner.emit(Event::LostPeer {
                    peer,
                    reason: LostReason::ConnectionClosed,
                });
            }
        }
    }

    /// Closes every link of a peer already removed from the table.
    fn drop_peer(&self, peer: &PeerId, entry: PeerEntry, reason: CloseReason) {
        for link in &entry.links {
            entry.queue.close_link(link.id, reason);
        }
        self.forget(peer, &entry);
        // Readers end once the peer closes its side or the timeout passes;
        // don't wait for that.
        for link in &entry.links {
            link.ctl.kill();
        }
    }

    fn forget(&self, peer: &PeerId, entry: &PeerEntry) {
        let _ = self.inner.nat.send(NatInput::Lost { peer: *peer });
        self.inner
            .queues
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(peer);
        entry.queue.close();
    }

    fn record_in_cache(&self, peer: PeerId, endpoint: Endpoint) {
        let Some(cache) = &self.cache else { return };
        cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record_success(peer, endpoint, SystemTime::now());
        let cache = cache.clone();
        // Written off the actor's thread; the lock orders concurrent saves
        // and each writes the latest state.
        tokio::task::spawn_blocking(move || {
            let cache = cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = cache.save() {
                tracing::warn!(error = %e, "could not save the bootstrap cache");
            }
        });
    }

    async fn shutdown(&mut self) {
        // No new connections from here on.
        for (_, task) in self.listeners.drain() {
            task.abort();
        }
        if let Some(task) = self.utp_accept.take() {
            task.abort();
        }
        // UPnP mappings go first, while the network is still ours.
        let (reply, done) = oneshot::channel();
        if self.inner.nat.send(NatInput::Shutdown { reply }).is_ok() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(4), done).await;
        }
        let peers: Vec<(PeerId, PeerEntry)> = self.peers.drain().collect();
        for (peer, entry) in peers {
            self.drop_peer(&peer, entry, CloseReason::Shutdown);
        }
        // Let writers say goodbye, briefly.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
        // TCP delivers what the writers wrote after we are gone (the
        // kernel's job); uTP's driver stops with us, so wait, briefly,
        // until the peers acknowledged it.
        if let Some(socket) = &self.inner.utp
            && !socket.flush(UTP_FLUSH).await
        {
            tracing::debug!("shutdown: a uTP peer did not acknowledge our last bytes");
        }
    }
}

/// How long a shutdown waits for uTP peers to acknowledge the last bytes
/// (a goodbye, the messages the writers finished): a few round trips on
/// any path worth using, and no longer than a user would wait.
const UTP_FLUSH: std::time::Duration = std::time::Duration::from_secs(1);

fn relayed(info: &ConnectionInfo) -> bool {
    matches!(info.path, ConnectionPath::Relayed { .. })
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

async fn accept_loop(
    listener: TcpListener,
    bound: SocketAddr,
    inner: Arc<Inner>,
    internal: mpsc::UnboundedSender<Internal>,
) {
    loop {
        let (stream, remote_addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off, go on.
                tracing::warn!(%bound, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let ticket = match inner.admission.admit(remote_addr.ip()) {
            Ok(ticket) => ticket,
            Err(refusal) => {
                tracing::warn!(%remote_addr, "{refusal}; refusing connection");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let local_addr = stream.local_addr().unwrap_or(bound);
        let accepted = Accepted {
            stream: Box::new(stream),
            transport: Transport::Tcp,
            remote_addr,
            local_addr,
        };
        tokio::spawn(accepted.handshake(ticket, inner.clone(), internal.clone()));
    }
}

/// Accepts uTP connections on the service's UDP socket.
async fn utp_accept_loop(
    socket: UtpSocket,
    inner: Arc<Inner>,
    internal: mpsc::UnboundedSender<Internal>,
) {
    let local_addr = socket
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    loop {
        let stream = match socket.accept().await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "uTP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(remote_addr) = stream.peer_addr() else {
            continue;
        };
        let ticket = match inner.admission.admit(remote_addr.ip()) {
            Ok(ticket) => ticket,
            Err(refusal) => {
                tracing::warn!(%remote_addr, "{refusal}; refusing uTP connection");
                continue;
            }
        };
        let accepted = Accepted {
            stream: Box::new(stream),
            transport: Transport::Utp,
            remote_addr,
            local_addr,
        };
        tokio::spawn(accepted.handshake(ticket, inner.clone(), internal.clone()));
    }
}

/// An incoming byte stream before its handshake.
struct Accepted {
    stream: BoxedStream,
    transport: Transport,
    remote_addr: SocketAddr,
    local_addr: SocketAddr,
}

impl Accepted {
    /// Runs the responder's handshake, holding its admission ticket
    /// meanwhile, and hands a success to the actor.
    async fn handshake(
        self,
        _ticket: super::admission::Ticket,
        inner: Arc<Inner>,
        internal: mpsc::UnboundedSender<Internal>,
    ) {
        let Self {
            stream,
            transport,
            remote_addr,
            local_addr,
        } = self;
        match SecureChannel::accept(stream, &inner.secret, &inner.config.channel).await {
            Ok(channel) => {
                let _ = internal.send(Internal::Accepted(Dialled {
                    channel,
                    transport,
                    remote_addr,
                    local_addr,
                    direction: Direction::Incoming,
                    path: ConnectionPath::Direct,
                    started: None,
                }));
            }
            Err(e) => {
                tracing::info!(%remote_addr, ?transport, error = %e, "incoming handshake failed")
            }
        }
    }
}
