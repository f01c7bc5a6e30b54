//! The NAT driver: one task per service doing the I/O of NAT traversal.
//!
//! It owns crust's datagrams on the UDP socket (address echo, punching),
//! the observations behind the [`NatReport`], the UPnP task, and the
//! hole-punching sessions. Inputs arrive on one channel ([`NatInput`]):
//! from the actor (connections up and down, listeners), from link readers
//! (a peer's `Hello`, rendezvous signals) and from the handle
//! ([`Service::connect_via`](super::Service::connect_via)).
//!
//! A session, requester side (A) and answerer side (B), through a
//! rendezvous peer R connected to both:
//! 1. A → R → B: `Connect { session, candidates }`; A notes the time.
//! 2. B → R → A: `Accept { session, candidates }`; B waits for `Sync`.
//! 3. A → R → B: `Sync`; A starts punching half the measured round trip
//!    later, B on receipt, so both start at about the same moment.
//! 4. Both probe every candidate of the other ([`PunchPlan`]), answer each
//!    probe with an ack, and dial each other's TCP candidates, every packet
//!    paid for from the session's budget. The side with the smaller peer id
//!    dials uTP to the first address it hears the other from; the other
//!    side's uTP accept loop takes the connection. A random-port side facing
//!    an endpoint-independent one (the candidates' `MappingHint` says)
//!    probes from extra sockets and the other side sprays random ports (the
//!    birthday technique, `nat::punch`); the uTP connection then runs over
//!    the extra socket that first heard the peer.
//! 5. The session ends when the peer is connected, or at the deadline; its
//!    tasks are aborted and its extra sockets closed.
//!
//! A peer left on a relayed circuit gets the whole session again now and
//! then, driven by the smaller id, until a direct path replaces the circuit
//! ([`Upgrades`], `upgrade.rs`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::actor::Command;
use super::upgrade::{NetworkKey, Step, Upgrades};
use super::{ConnectError, ConnectionInfo, ConnectionPath, Event, Inner};
use crate::config::Endpoint;
use crate::id::PeerId;
use crate::nat::{
    self, Birthday, Budget, Datagram, NatReport, Observation, Probe, PunchPlan, UpnpMapping,
};
use crate::secure::Intent;
use crate::utp::{OtherDatagram, UtpSocket};
use crate::wire::{Candidates, Hello, MappingHint, Outgoing, Packet, Signal};

mod tcp_birthday;

/// Echo requests sent per peer before giving up on it.
const ECHO_TRIES: u32 = 4;
/// Between echo retries.
const ECHO_RETRY: Duration = Duration::from_millis(500);
/// Predicted ports offered for a sequential symmetric NAT.
const PREDICTED_PORTS: usize = 32;
/// Most punching sessions at once; more are refused.
const MAX_SESSIONS: usize = 8;
/// How long an answerer waits for `Sync`.
const SYNC_WAIT: Duration = Duration::from_secs(5);
/// Between rounds of echo requests to every connected peer: a NAT that
/// changed its mapping (a reboot, a new lease, a moved laptop) shows up in
/// the next `NatReport`.
const REECHO: Duration = Duration::from_secs(60);
/// Predicted TCP ports offered for a sequential symmetric NAT.
const PREDICTED_TCP_PORTS: u32 = 24;
/// Most TCP candidates of the peer punched at once (each is one socket
/// sending a SYN now and then, well under the probe rate cap).
const TCP_PUNCH_TARGETS: usize = 40;
/// Between tries of one TCP punch that was refused or timed out.
const TCP_PUNCH_RETRY: Duration = Duration::from_secs(1);
/// How long one TCP try waits for its connection: under the kernel's first
/// SYN retransmission (1 s), so each try is one SYN, paid for from the
/// attempt's budget.
const TCP_TRY: Duration = Duration::from_millis(900);
/// Tries of a plain TCP dial to one of the peer's candidates.
const TCP_DIAL_TRIES: u32 = 3;
/// Two sequential NATs: how long TCP waits for the UDP probes to take
/// their ports first (two rounds of up to 34 candidates at 100/s).
const SEQUENTIAL_TCP_DELAY: Duration = Duration::from_secs(1);
/// Most of the peer's external addresses the birthday technique aims at.
const BIRTHDAY_TARGETS: usize = 2;
/// How long the larger id waits for the initiator's first bytes on a
/// punched TCP connection before it takes the initiator's role itself.
const TCP_ROLE_WAIT: Duration = Duration::from_secs(1);

/// What the driver hears.
pub(crate) enum NatInput {
    /// The service's TCP listeners are up.
    Start { tcp: Vec<SocketAddr> },
    /// A peer's `Hello` arrived on a connection with this remote address.
    Hello {
        peer: PeerId,
        hello: Hello,
        remote: SocketAddr,
        transport: super::Transport,
    },
    /// A signal forwarded by the rendezvous peer `via`.
    Signal {
        via: PeerId,
        from: PeerId,
        signal: Signal,
    },
    /// A peer is connected (first link registered).
    Connected { peer: PeerId, info: ConnectionInfo },
    /// A peer's last link is gone.
    Lost { peer: PeerId },
    /// The application asks for a connection through a rendezvous peer.
    ConnectVia {
        peer: PeerId,
        via: PeerId,
        reply: oneshot::Sender<Result<ConnectionInfo, ConnectError>>,
    },
    /// A dial started by a session failed.
    DialFailed { session: u64 },
    /// A datagram on extra socket `socket` of a session (birthday, hard
    /// side).
    Extra {
        session: u64,
        socket: usize,
        bytes: Vec<u8>,
        from: SocketAddr,
    },
    /// The uTP connection over a session's winning extra socket failed.
    ExtraFailed { session: u64 },
    /// A session's task registered a direct (or hole-punched) connection
    /// to a peer we may reach only through a relay so far.
    Direct { peer: PeerId },
    /// UPnP mapped (or lost) our ports.
    Upnp(Option<UpnpMapping>),
    /// A relayed connection finished its handshake: register it.
    Register(Box<super::Dialled>),
    /// The service stops: remove UPnP mappings, end sessions.
    Shutdown { reply: oneshot::Sender<()> },
}

#[derive(Debug, PartialEq, Eq)]
enum Stage {
    /// Requester: `Connect` sent, waiting for `Accept`.
    AwaitingAccept,
    /// Answerer: `Accept` sent, waiting for `Sync`.
    AwaitingSync,
    /// Punching starts at `punch_at` (or has started).
    Punching,
}

struct Session {
    peer: PeerId,
    via: PeerId,
    stage: Stage,
    started: Instant,
    deadline: Instant,
    sent_connect_at: Instant,
    punch_at: Option<Instant>,
    plan: Option<PunchPlan>,
    theirs: Candidates,
    /// We dial uTP; the peer accepts.
    initiator: bool,
    dialling: bool,
    /// Requester: when to fall back to a relayed circuit.
    relay_at: Option<Instant>,
    reply: Option<oneshot::Sender<Result<ConnectionInfo, ConnectError>>>,
    /// Dials and TCP punches of this attempt, cancelled when it ends.
    tasks: Vec<tokio::task::AbortHandle>,
    /// Every packet of the attempt, UDP and TCP, is paid from here.
    budget: AttemptBudget,
    /// Birthday, hard side: the extra sockets, closed when the attempt
    /// ends (the winner lives on in its uTP connection).
    extra: Vec<UtpSocket>,
    /// The extra socket that first heard from the peer.
    extra_winner: Option<usize>,
    /// The birthday technique runs (TCP punching does not: a random-port
    /// NAT maps TCP at random too).
    birthday: bool,
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    fn new(
        peer: PeerId,
        via: PeerId,
        stage: Stage,
        now: Instant,
        deadline: Instant,
        theirs: Candidates,
        initiator: bool,
        reply: Option<oneshot::Sender<Result<ConnectionInfo, ConnectError>>>,
    ) -> Self {
        Self {
            peer,
            via,
            stage,
            started: now,
            deadline,
            sent_connect_at: now,
            punch_at: None,
            plan: None,
            theirs,
            initiator,
            dialling: false,
            relay_at: None,
            reply,
            tasks: Vec::new(),
            budget: AttemptBudget::new(now),
            extra: Vec::new(),
            extra_winner: None,
            birthday: false,
        }
    }
}

/// One attempt's packet budget: the driver's probes take slots directly;
/// TCP tries queue (in order) and the one at the head takes every other
/// slot at most, so UDP keeps at least half.
#[derive(Clone)]
struct AttemptBudget {
    budget: Arc<std::sync::Mutex<Budget>>,
    /// The earliest time of the next TCP slot.
    tcp: Arc<tokio::sync::Mutex<Instant>>,
}

impl AttemptBudget {
    fn new(start: Instant) -> Self {
        Self {
            budget: Arc::new(std::sync::Mutex::new(Budget::new(start))),
            tcp: Arc::new(tokio::sync::Mutex::new(start)),
        }
    }

    /// Waits for a slot for one TCP SYN: reserved at once (so the
    /// driver's probes cannot take them all), one TCP try at a time, every
    /// other slot at most.
    async fn tcp_slot(&self) {
        let mut tcp_next = self.tcp.lock().await;
        tokio::time::sleep_until((*tcp_next).into()).await;
        let slot = {
            let mut budget = lock(&self.budget);
            let slot = budget.reserve(Instant::now());
            *tcp_next = slot + 2 * budget.interval();
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }

    /// Waits for the next free slot, reserved at once: the birthday
    /// technique over TCP, which takes nearly every slot.
    async fn spray_slot(&self) {
        let slot = lock(&self.budget).reserve(Instant::now());
        tokio::time::sleep_until(slot.into()).await;
    }

    fn taken(&self) -> u64 {
        lock(&self.budget).taken()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

struct Echo {
    peer: PeerId,
    server: SocketAddr,
    tries: u32,
    next_at: Instant,
}

struct Driver {
    inner: Arc<Inner>,
    commands: mpsc::UnboundedSender<Command>,
    input_tx: mpsc::UnboundedSender<NatInput>,
    local_ips: Vec<IpAddr>,
    udp_local: Option<SocketAddr>,
    tcp_listen: Vec<SocketAddr>,
    observations: HashMap<PeerId, Observation>,
    tcp_observed: HashMap<PeerId, SocketAddr>,
    /// Echoes of outgoing TCP connections that left from the listener's
    /// port: what the NAT does with that port (`NatReport::tcp_mapping`).
    tcp_observations: HashMap<PeerId, Observation>,
    /// Connected peers and how (a relayed circuit rides on one of these).
    connected: HashMap<PeerId, ConnectionInfo>,
    upnp: Option<UpnpMapping>,
    upnp_task: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
    echoes: HashMap<u64, Echo>,
    /// Peers connected only through a relay: their sessions go on punching
    /// until their deadline, and a direct connection replaces the circuit.
    relayed_only: RelayedOnly,
    /// Connected peers' UDP sockets, echoed again every [`REECHO`].
    echo_servers: HashMap<PeerId, SocketAddr>,
    next_reecho: Instant,
    sessions: HashMap<u64, Session>,
    /// When to try again to upgrade our relayed peers (those with a
    /// larger id than ours) to a direct path.
    upgrades: Upgrades,
}

/// Spawns the driver.
pub(super) fn spawn(
    inner: Arc<Inner>,
    commands: mpsc::UnboundedSender<Command>,
    input_tx: mpsc::UnboundedSender<NatInput>,
    input: mpsc::UnboundedReceiver<NatInput>,
    datagrams: Option<mpsc::Receiver<OtherDatagram>>,
) {
    let udp_local = inner.utp.as_ref().and_then(|s| s.local_addr().ok());
    let bound_ip = udp_local
        .map(|a| a.ip())
        .or_else(|| inner.config.listen.first().map(|a| a.ip()))
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let upgrades = Upgrades::new(inner.config.relay_upgrade, inner.config.relay_upgrade_max);
    let driver = Driver {
        local_ips: nat::local_ips(bound_ip),
        inner,
        commands,
        input_tx,
        udp_local,
        tcp_listen: Vec::new(),
        observations: HashMap::new(),
        tcp_observed: HashMap::new(),
        tcp_observations: HashMap::new(),
        connected: HashMap::new(),
        upnp: None,
        upnp_task: None,
        echoes: HashMap::new(),
        relayed_only: RelayedOnly::default(),
        echo_servers: HashMap::new(),
        next_reecho: Instant::now() + REECHO,
        sessions: HashMap::new(),
        upgrades,
    };
    tokio::spawn(driver.run(input, datagrams));
}

impl Driver {
    async fn run(
        mut self,
        mut input: mpsc::UnboundedReceiver<NatInput>,
        mut datagrams: Option<mpsc::Receiver<OtherDatagram>>,
    ) {
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                msg = input.recv() => match msg {
                    None => break,
                    Some(NatInput::Shutdown { reply }) => {
                        self.shutdown().await;
                        let _ = reply.send(());
                        break;
                    }
                    Some(NatInput::Extra { session, socket, bytes, from }) => {
                        self.on_extra_datagram(session, socket, &bytes, from).await;
                    }
                    Some(msg) => self.on_input(msg),
                },
                Some((bytes, from)) = recv_datagram(&mut datagrams) => {
                    self.on_datagram(&bytes, from).await;
                }
                () = sleep_until(deadline) => {}
            }
            self.on_timers().await;
        }
        self.end_sessions("the service has shut down");
    }

    fn next_deadline(&self) -> Option<Instant> {
        let echoes = self.echoes.values().map(|e| e.next_at);
        let sessions = self.sessions.values().flat_map(|s| {
            let punch = match (&s.plan, s.punch_at) {
                (Some(plan), _) => plan.has_work().then(|| lock(&s.budget.budget).next_at()),
                (None, at) => at,
            };
            [Some(s.deadline), punch, s.relay_at].into_iter().flatten()
        });
        echoes
            .chain(sessions)
            .chain(Some(self.next_reecho))
            .chain(self.upgrades.next_at())
            .min()
    }

    fn on_input(&mut self, msg: NatInput) {
        match msg {
            NatInput::Start { tcp } => {
                self.tcp_listen = tcp;
                self.start_upnp();
                self.update_report();
            }
            NatInput::Hello {
                peer,
                hello,
                remote,
                transport,
            } => self.on_hello(peer, hello, remote, transport),
            NatInput::Signal { via, from, signal } => self.on_signal(via, from, signal),
            NatInput::Connected { peer, info } => {
                self.connected.insert(peer, info.clone());
                if let ConnectionPath::Relayed { via } = info.path {
                    // Answer the caller, but keep punching: a direct path
                    // found later replaces the circuit.
                    lock(&self.relayed_only).insert(peer);
                    self.schedule_upgrade(peer, via);
                    for s in self.sessions.values_mut().filter(|s| s.peer == peer) {
                        if let Some(reply) = s.reply.take() {
                            let _ = reply.send(Ok(info.clone()));
                        }
                    }
                    return;
                }
                lock(&self.relayed_only).remove(&peer);
                self.upgraded(&peer);
                self.end_sessions_with(peer, Some(&info));
            }
            NatInput::Direct { peer } => {
                self.upgraded(&peer);
                // Otherwise `Connected` follows and ends the sessions (with
                // the caller's answer).
                if lock(&self.relayed_only).remove(&peer) {
                    tracing::debug!(%peer, "a direct path replaces the relayed circuit");
                    self.end_sessions_with(peer, None);
                }
            }
            NatInput::Lost { peer } => {
                lock(&self.relayed_only).remove(&peer);
                if !self.sessions.values().any(|s| s.peer == peer) {
                    self.forget_punching(&peer);
                }
                self.upgrades.stop(&peer);
                self.connected.remove(&peer);
                // Echo answers from a peer we lost are still true, but an
                // answer can no longer be refreshed; keep them.
                self.echoes.retain(|_, e| e.peer != peer);
                self.echo_servers.remove(&peer);
            }
            NatInput::ConnectVia { peer, via, reply } => self.connect_via(peer, via, reply),
            NatInput::DialFailed { session } => {
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.dialling = false;
                }
            }
            NatInput::ExtraFailed { session } => {
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.extra_winner = None;
                }
            }
            // Handled in `run`, which can await.
            NatInput::Extra { .. } => {}
            NatInput::Upnp(mapping) => {
                self.upnp = mapping;
                self.update_report();
            }
            NatInput::Register(dialled) => {
                let _ = self.commands.send(Command::Register {
                    dialled,
                    reply: None,
                });
            }
            NatInput::Shutdown { .. } => {}
        }
    }

    /// The peer is connected (directly, if `info` is given, the caller's
    /// answer): its sessions end, and with them their tasks.
    fn end_sessions_with(&mut self, peer: PeerId, info: Option<&ConnectionInfo>) {
        let done: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.peer == peer)
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            if let Some(mut s) = self.sessions.remove(&id) {
                tracing::debug!(%peer, sent = s.plan.as_ref().map_or(0, PunchPlan::sent),
                            targets = s.plan.as_ref().map_or(0, PunchPlan::targets),
                            packets = s.budget.taken(), extra_sockets = s.extra.len(),
                            elapsed = ?s.started.elapsed(), "traversal session done");
                if let (Some(reply), Some(info)) = (s.reply.take(), info) {
                    let _ = reply.send(Ok(info.clone()));
                }
            }
        }
        // After `Direct` (no `info`) the actor may not have registered the
        // new connection yet, and it reads the attempt's timing from the
        // entry: the `Connected` that follows the registration forgets it.
        if info.is_some() {
            self.forget_punching(&peer);
        }
    }

    fn on_hello(
        &mut self,
        peer: PeerId,
        hello: Hello,
        remote: SocketAddr,
        transport: super::Transport,
    ) {
        match transport {
            super::Transport::Utp => {
                // The peer saw our UDP socket: an echo for free.
                self.observations.insert(
                    peer,
                    Observation {
                        peer,
                        server: remote,
                        observed: hello.observed,
                    },
                );
                self.update_report();
            }
            _ => {
                self.tcp_observed.insert(peer, hello.observed);
                // `Connected` came first, on the same channel.
                let from_listener = self.connected.get(&peer).is_some_and(|info| {
                    info.direction == super::Direction::Outgoing
                        && self
                            .tcp_listen
                            .iter()
                            .any(|l| l.port() == info.local_addr.port())
                });
                if from_listener {
                    let observation = Observation {
                        peer,
                        server: remote,
                        observed: hello.observed,
                    };
                    self.tcp_observations.insert(peer, observation);
                }
                self.update_report();
                if let (Some(port), Some(_)) = (hello.udp_port, self.udp_local) {
                    let server = SocketAddr::new(remote.ip(), port);
                    self.echo_servers.insert(peer, server);
                    self.request_echo(peer, server);
                }
            }
        }
    }

    fn request_echo(&mut self, peer: PeerId, server: SocketAddr) {
        if self.echoes.values().any(|e| e.peer == peer) {
            return;
        }
        self.echoes.insert(
            random_u64(),
            Echo {
                peer,
                server,
                tries: 0,
                next_at: Instant::now(),
            },
        );
    }

    async fn on_timers(&mut self) {
        let now = Instant::now();
        if self.next_reecho <= now {
            self.next_reecho = now + REECHO;
            let servers: Vec<_> = self.echo_servers.iter().map(|(p, s)| (*p, *s)).collect();
            for (peer, server) in servers {
                self.request_echo(peer, server);
            }
        }
        self.upgrade_steps(now);
        // Echo requests due.
        let mut due = Vec::new();
        self.echoes.retain(|nonce, e| {
            if e.next_at > now {
                return true;
            }
            if e.tries >= ECHO_TRIES {
                tracing::debug!(server = %e.server, "no echo answer");
                return false;
            }
            e.tries += 1;
            e.next_at = now + ECHO_RETRY;
            due.push((*nonce, e.server));
            true
        });
        for (nonce, server) in due {
            self.send(&Datagram::EchoRequest { nonce }, server, None)
                .await;
        }
        // Sessions: deadlines, punch starts, probes.
        let mut expired = Vec::new();
        let mut starting = Vec::new();
        for (id, s) in &self.sessions {
            if s.deadline <= now {
                expired.push(*id);
            } else if s.plan.is_none() && s.punch_at.is_some_and(|at| at <= now) {
                starting.push(*id);
            }
        }
        let ours = mapping_hint(&self.inner.nat_report());
        for id in starting {
            let birthday = self.start_birthday(id).await;
            let Some(s) = self.sessions.get_mut(&id) else {
                continue;
            };
            let peer = s.peer;
            self.note_signal(peer);
            let Some(s) = self.sessions.get_mut(&id) else {
                continue;
            };
            s.birthday = !matches!(birthday, Birthday::Off);
            let mut targets = s.theirs.udp.clone();
            let both_sequential = ours == MappingHint::SequentialPerDestination
                && s.theirs.mapping == MappingHint::SequentialPerDestination;
            if both_sequential {
                // Both sides predicted: see `stride_two`. TCP SYNs take
                // ports from the same allocator, so they wait until the
                // UDP probes have taken theirs.
                if s.initiator {
                    targets = stride_two(&targets, PREDICTED_PORTS);
                }
                if let Ok(mut tcp_next) = s.budget.tcp.try_lock() {
                    *tcp_next = Instant::now() + SEQUENTIAL_TCP_DELAY;
                }
                tracing::debug!(peer = %s.peer, stride = s.initiator,
                    "both NATs sequential: predicting both sides");
            }
            let plan = PunchPlan::new(&targets, birthday);
            s.plan = Some(if both_sequential {
                plan.first_round_twice()
            } else {
                plan
            });
            let birthday = s.birthday;
            // The birthday technique over TCP, where UDP's cannot run (see
            // `tcp_birthday`); it replaces the plain TCP punches.
            let tcp_birthday = if birthday || !self.inner.config.tcp_hole_punching {
                None
            } else {
                self.start_tcp_birthday(id)
            };
            // Plain dials and punches alternate, most promising candidate
            // first: they queue in this order for the budget's TCP slots.
            let dials = self.start_tcp_dials(id);
            let punches =
                if self.inner.config.tcp_hole_punching && !birthday && tcp_birthday.is_none() {
                    self.start_tcp_punch(id)
                } else {
                    Vec::new()
                };
            let mut handles: Vec<_> = tcp_birthday.into_iter().collect();
            let (mut dials, mut punches) = (dials.into_iter(), punches.into_iter());
            loop {
                let (dial, punch) = (dials.next(), punches.next());
                if dial.is_none() && punch.is_none() {
                    break;
                }
                for task in dial.into_iter().chain(punch) {
                    handles.push(tokio::spawn(task).abort_handle());
                }
            }
            if let Some(s) = self.sessions.get_mut(&id) {
                s.tasks.extend(handles);
            }
        }
        let now = Instant::now();
        let mut probes = Vec::new();
        for (id, s) in &mut self.sessions {
            if s.deadline <= now {
                continue;
            }
            if let Some(plan) = &mut s.plan {
                let mut budget = lock(&s.budget.budget);
                while let Some(probe) = plan.poll_probe(now, &mut budget) {
                    let socket = match probe {
                        Probe::Main { .. } => None,
                        Probe::Extra { socket, .. } => s.extra.get(socket).cloned(),
                    };
                    probes.push((*id, probe, socket));
                }
            }
        }
        let relays: Vec<u64> = self
            .sessions
            .iter_mut()
            .filter(|(_, s)| s.relay_at.is_some_and(|at| at <= now))
            .map(|(id, s)| {
                s.relay_at = None;
                *id
            })
            .collect();
        for id in relays {
            self.start_relay(id);
        }
        for (session, probe, socket) in probes {
            let punch = Datagram::Punch { session };
            match (probe, socket) {
                (Probe::Main { to, ttl }, _) => self.send(&punch, to, ttl).await,
                (Probe::Extra { to, .. }, Some(socket)) => {
                    if let Err(e) = socket.send_datagram(&punch.encode(), to).await {
                        tracing::trace!(%to, error = %e, "birthday probe not sent");
                    }
                }
                (Probe::Extra { .. }, None) => {}
            }
        }
        for id in expired {
            if let Some(mut s) = self.sessions.remove(&id) {
                tracing::info!(peer = %s.peer, sent = s.plan.as_ref().map_or(0, PunchPlan::sent),
                    packets = s.budget.taken(), extra_sockets = s.extra.len(),
                    stage = ?s.stage, "traversal attempt timed out");
                if let Some(reply) = s.reply.take() {
                    let _ = reply.send(Err(ConnectError::Traversal(format!(
                        "no path found within {:?}",
                        self.inner.config.punch_timeout
                    ))));
                }
                let peer = s.peer;
                if !self.sessions.values().any(|s| s.peer == peer) {
                    self.forget_punching(&peer);
                }
            }
        }
    }

    async fn on_datagram(&mut self, bytes: &[u8], from: SocketAddr) {
        let Some(datagram) = Datagram::decode(bytes) else {
            tracing::trace!(%from, len = bytes.len(), "ignoring an unknown datagram");
            return;
        };
        match datagram {
            Datagram::EchoRequest { nonce } => {
                self.send(
                    &Datagram::EchoResponse {
                        nonce,
                        observed: from,
                    },
                    from,
                    None,
                )
                .await;
            }
            Datagram::EchoResponse { nonce, observed } => {
                let Some(echo) = self.echoes.get(&nonce) else {
                    return;
                };
                if echo.server != from {
                    return;
                }
                let (peer, server) = (echo.peer, echo.server);
                self.echoes.remove(&nonce);
                self.observations.insert(
                    peer,
                    Observation {
                        peer,
                        server,
                        observed,
                    },
                );
                self.update_report();
            }
            Datagram::Punch { session } => {
                let Some(s) = self.sessions.get_mut(&session) else {
                    return;
                };
                if let Some(plan) = &mut s.plan {
                    plan.heard_from(from);
                }
                self.inner.punch_heard(&s.peer);
                self.send(&Datagram::PunchAck { session }, from, None).await;
                self.maybe_dial(session, from);
            }
            Datagram::PunchAck { session } => {
                if let Some(s) = self.sessions.get(&session) {
                    self.inner.punch_heard(&s.peer);
                }
                self.maybe_dial(session, from);
            }
        }
    }

    /// Decides the birthday technique's part in a session about to punch
    /// (see `nat::punch`) and, on the random-port side, opens the extra
    /// sockets, each forwarding what it hears as [`NatInput::Extra`].
    async fn start_birthday(&mut self, session: u64) -> Birthday {
        let ours = mapping_hint(&self.inner.nat_report());
        let Some(s) = self.sessions.get(&session) else {
            return Birthday::Off;
        };
        let mut public: Vec<SocketAddr> = s.theirs.udp.iter().copied().filter(is_public).collect();
        dedup(&mut public);
        match (ours, s.theirs.mapping) {
            (MappingHint::RandomPerDestination, MappingHint::EndpointIndependent) => {
                public.truncate(BIRTHDAY_TARGETS);
                if public.is_empty() {
                    return Birthday::Off;
                }
                let wanted = nat::BIRTHDAY_SOCKETS / public.len();
                let ip = self
                    .udp_local
                    .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
                let mut sockets = Vec::with_capacity(wanted);
                let mut tasks = Vec::with_capacity(wanted);
                for index in 0..wanted {
                    let bound = UtpSocket::bind(
                        SocketAddr::new(ip, 0),
                        crate::utp::proto::EndpointConfig::default(),
                    )
                    .await;
                    let (socket, mut datagrams) = match bound {
                        Ok(bound) => bound,
                        Err(e) => {
                            // Out of descriptors, say: go on with fewer.
                            tracing::info!(error = %e, opened = index,
                                "cannot open more birthday sockets");
                            break;
                        }
                    };
                    let input = self.input_tx.clone();
                    let forward = tokio::spawn(async move {
                        while let Some((bytes, from)) = datagrams.recv().await {
                            let extra = NatInput::Extra {
                                session,
                                socket: index,
                                bytes,
                                from,
                            };
                            if input.send(extra).is_err() {
                                break;
                            }
                        }
                    });
                    tasks.push(forward.abort_handle());
                    sockets.push(socket);
                }
                tracing::debug!(sockets = sockets.len(), targets = ?public,
                    "birthday technique: the random-port side");
                let count = sockets.len();
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.extra = sockets;
                    s.tasks.extend(tasks);
                }
                Birthday::hard(count, public)
            }
            (MappingHint::EndpointIndependent, MappingHint::RandomPerDestination) => {
                let mut ips: Vec<IpAddr> = public.iter().map(SocketAddr::ip).collect();
                ips.sort();
                ips.dedup();
                ips.truncate(BIRTHDAY_TARGETS);
                tracing::debug!(?ips, "birthday technique: the endpoint-independent side");
                Birthday::easy(ips, random_u64())
            }
            _ => Birthday::Off,
        }
    }

    /// A datagram on one of a session's extra sockets. The first to hear a
    /// probe or an ack of the session wins: it answers, and the uTP
    /// connection runs over it (the smaller id dials, the other accepts),
    /// since only that socket's mapping lets the peer in.
    async fn on_extra_datagram(
        &mut self,
        session: u64,
        index: usize,
        bytes: &[u8],
        from: SocketAddr,
    ) {
        let Some(datagram) = Datagram::decode(bytes) else {
            return;
        };
        let (Datagram::Punch { session: id } | Datagram::PunchAck { session: id }) = datagram
        else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        let Some(socket) = s.extra.get(index).cloned() else {
            return;
        };
        if id != session {
            return;
        }
        self.inner.punch_heard(&s.peer);
        if matches!(datagram, Datagram::Punch { .. }) {
            let ack = Datagram::PunchAck { session }.encode();
            if let Err(e) = socket.send_datagram(&ack, from).await {
                tracing::trace!(%from, error = %e, "birthday ack not sent");
            }
        }
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        if s.extra_winner.is_some() || direct(&self.inner, &self.relayed_only, &s.peer) {
            return;
        }
        s.extra_winner = Some(index);
        let (peer, started, initiator) = (s.peer, s.started, s.initiator);
        tracing::debug!(%peer, %from, socket = index, initiator, elapsed = ?started.elapsed(),
            "birthday: an extra socket reached the peer");
        let inner = self.inner.clone();
        let commands = self.commands.clone();
        let input = self.input_tx.clone();
        let task = tokio::spawn(async move {
            match extra_connection(&inner, peer, &socket, from, initiator).await {
                Ok(mut dialled) => {
                    dialled.started = Some(started);
                    let _ = commands.send(Command::Register {
                        dialled: Box::new(dialled),
                        reply: None,
                    });
                    let _ = input.send(NatInput::Direct { peer });
                }
                Err(e) => {
                    tracing::debug!(%peer, %from, error = %e, "uTP over the birthday socket failed");
                    let _ = input.send(NatInput::ExtraFailed { session });
                }
            }
        });
        if let Some(s) = self.sessions.get_mut(&session) {
            s.tasks.push(task.abort_handle());
        }
    }

    /// The initiator dials uTP to where it heard the peer from.
    fn maybe_dial(&mut self, session: u64, addr: SocketAddr) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        if !s.initiator || s.dialling || direct(&self.inner, &self.relayed_only, &s.peer) {
            return;
        }
        s.dialling = true;
        let (peer, started) = (s.peer, s.started);
        tracing::debug!(%peer, %addr, "punched: dialling uTP");
        let inner = self.inner.clone();
        let commands = self.commands.clone();
        let input = self.input_tx.clone();
        tokio::spawn(async move {
            match super::dial::dial(&inner, Some(peer), Endpoint::utp(addr), Intent::Connect).await
            {
                Ok(mut dialled) => {
                    dialled.path = ConnectionPath::HolePunched;
                    dialled.started = Some(started);
                    let _ = commands.send(Command::Register {
                        dialled: Box::new(dialled),
                        reply: None,
                    });
                    let _ = input.send(NatInput::Direct { peer });
                }
                Err(e) => {
                    tracing::debug!(%peer, %addr, error = %e, "punched uTP dial failed");
                    let _ = input.send(NatInput::DialFailed { session });
                }
            }
        });
    }

    /// Falls back to a relayed circuit through the rendezvous peer.
    fn start_relay(&mut self, session: u64) {
        let Some(s) = self.sessions.get(&session) else {
            return;
        };
        let (peer, via, started) = (s.peer, s.via, s.started);
        if self.inner.queue(&peer).is_some() {
            return;
        }
        let Some(link) = self.connected.get(&via).cloned() else {
            return;
        };
        tracing::debug!(%peer, %via, "no direct path yet: opening a relayed circuit");
        self.signal(via, peer, Signal::Relay { session });
        let stream = super::relay::open(&self.inner, via, peer, session);
        let inner = self.inner.clone();
        let commands = self.commands.clone();
        tokio::spawn(async move {
            let channel = crate::secure::SecureChannel::connect(
                stream,
                &inner.secret,
                &inner.config.channel,
                Some(peer),
                Intent::Connect,
            )
            .await;
            match channel {
                Ok(channel) => {
                    let dialled = super::Dialled {
                        channel,
                        transport: link.transport,
                        remote_addr: link.remote_addr,
                        local_addr: link.local_addr,
                        direction: super::Direction::Outgoing,
                        path: ConnectionPath::Relayed { via },
                        started: Some(started),
                    };
                    let _ = commands.send(Command::Register {
                        dialled: Box::new(dialled),
                        reply: None,
                    });
                }
                Err(e) => tracing::info!(%peer, %via, error = %e, "relayed handshake failed"),
            }
        });
    }

    /// `peer` is reachable only through `via`: the smaller id retries the
    /// upgrade to a direct path now and then (see `upgrade.rs`).
    fn schedule_upgrade(&mut self, peer: PeerId, via: PeerId) {
        if self.inner.id < peer {
            self.upgrades
                .relayed(peer, via, Instant::now(), random_u64());
        }
    }

    /// `peer` is reached other than through a relay.
    fn upgraded(&mut self, peer: &PeerId) {
        if let Some(attempts) = self.upgrades.stop(peer) {
            tracing::info!(%peer, attempts, "relayed connection upgraded to a direct path");
        }
    }

    /// Upgrade retries due: fresh echoes first, then the attempts.
    fn upgrade_steps(&mut self, now: Instant) {
        let Self {
            upgrades, sessions, ..
        } = self;
        let steps = upgrades.poll(now, &mut random_u64, |peer| {
            sessions.values().any(|s| s.peer == *peer)
        });
        for step in steps {
            match step {
                Step::Echo => {
                    let servers: Vec<_> = self.echo_servers.iter().map(|(p, s)| (*p, *s)).collect();
                    for (peer, server) in servers {
                        self.request_echo(peer, server);
                    }
                }
                Step::Start { peer, via, attempt } => self.start_upgrade(peer, via, attempt),
            }
        }
    }

    /// Runs a traversal attempt with a peer we reach only through `via`,
    /// as [`connect_via`](Self::connect_via) does but with nobody waiting
    /// for the answer; the relayed circuit stays until a direct path
    /// replaces it (no new circuit is opened: the peer is connected).
    fn start_upgrade(&mut self, peer: PeerId, via: PeerId, attempt: u32) {
        if !lock(&self.relayed_only).contains(&peer) || self.inner.queue(&peer).is_none() {
            self.upgrades.stop(&peer);
            return;
        }
        if self.inner.queue(&via).is_none() || self.sessions.len() >= MAX_SESSIONS / 2 {
            tracing::debug!(%peer, %via, attempt, "upgrade attempt skipped: relay gone or busy");
            return;
        }
        tracing::info!(%peer, %via, attempt, "trying to upgrade a relayed connection");
        self.request_traversal(peer, via, None);
    }

    /// Asks `peer`, through `via`, to start a traversal attempt with us
    /// (our candidates in a `Connect` signal), and waits for its answer in
    /// a new session; `reply`, if any, hears how the attempt ends.
    fn request_traversal(
        &mut self,
        peer: PeerId,
        via: PeerId,
        reply: Option<oneshot::Sender<Result<ConnectionInfo, ConnectError>>>,
    ) {
        let session = random_u64();
        let now = Instant::now();
        let candidates = self.candidates();
        self.signal(
            via,
            peer,
            Signal::Connect {
                session,
                candidates,
            },
        );
        self.sessions.insert(
            session,
            Session::new(
                peer,
                via,
                Stage::AwaitingAccept,
                now,
                now + self.inner.config.punch_timeout,
                Candidates::default(),
                self.inner.id < peer,
                reply,
            ),
        );
        self.note_punching(peer, now);
    }

    /// Direct TCP to the peer's listeners, alongside the punching.
    fn start_tcp_dials(&self, session: u64) -> Vec<TcpTask> {
        let Some(s) = self.sessions.get(&session) else {
            return Vec::new();
        };
        let (peer, started, deadline) = (s.peer, s.started, s.deadline);
        let mut tasks = Vec::new();
        for addr in self.tcp_targets(&s.theirs.tcp) {
            let inner = self.inner.clone();
            let commands = self.commands.clone();
            let input = self.input_tx.clone();
            let relayed = self.relayed_only.clone();
            let budget = s.budget.clone();
            let task: TcpTask = Box::pin(async move {
                if let Some(mut dialled) =
                    tcp_dial(&inner, &relayed, &budget, peer, addr, deadline).await
                {
                    // Registered even if another path won meanwhile: the
                    // peer may have taken this one (see `dial_any`).
                    dialled.started = Some(started);
                    let _ = commands.send(Command::Register {
                        dialled: Box::new(dialled),
                        reply: None,
                    });
                    let _ = input.send(NatInput::Direct { peer });
                }
            });
            tasks.push(task);
        }
        tasks
    }

    /// TCP hole punching: from our listener's port to each of the peer's
    /// TCP candidates, while the peer does the same towards ours (see
    /// `nat::tcp`). Both sides think they dialled, so the secure channel's
    /// roles go by peer id: the smaller id initiates. A refused or failed
    /// attempt is retried until the session ends.
    fn start_tcp_punch(&self, session: u64) -> Vec<TcpTask> {
        let Some(s) = self.sessions.get(&session) else {
            return Vec::new();
        };
        let (peer, started, deadline) = (s.peer, s.started, s.deadline);
        let budget = s.budget.clone();
        let listeners = self.inner.nat_report().local_tcp;
        let mut tasks = Vec::new();
        let targets = self.tcp_targets(&s.theirs.tcp);
        let targets = targets.into_iter().take(TCP_PUNCH_TARGETS);
        let targets =
            targets.filter_map(|addr| Some((nat::tcp::shared_port(&listeners, addr)?, addr)));
        for (local, addr) in targets {
            let inner = self.inner.clone();
            let commands = self.commands.clone();
            let input = self.input_tx.clone();
            let relayed = self.relayed_only.clone();
            let budget = budget.clone();
            let task: TcpTask = Box::pin(async move {
                let Some(stream) =
                    tcp_punch(&inner, &relayed, &budget, peer, local, addr, deadline).await
                else {
                    return;
                };
                let Some((stream, initiator)) = tcp_punch_role(&inner, peer, stream).await else {
                    return;
                };
                let ends = (addr, local);
                finish_punched_tcp(
                    &inner, &commands, &input, peer, stream, initiator, ends, started,
                )
                .await;
            });
            tasks.push(task);
        }
        tasks
    }

    /// The peer's TCP candidates, the most likely to connect first (see
    /// `nat::tcp::order_targets`).
    fn tcp_targets(&self, theirs: &[SocketAddr]) -> Vec<SocketAddr> {
        let report = self.inner.nat_report();
        let mut ours: Vec<IpAddr> = report.tcp_observed.iter().map(|a| a.ip()).collect();
        ours.extend(report.udp_observations.iter().map(|o| o.observed.ip()));
        ours.extend(report.udp_external.map(|a| a.ip()));
        ours.extend(report.upnp.as_ref().map(|m| m.external_ip));
        nat::tcp::order_targets(theirs, &ours)
    }

    fn connect_via(
        &mut self,
        peer: PeerId,
        via: PeerId,
        reply: oneshot::Sender<Result<ConnectionInfo, ConnectError>>,
    ) {
        if self.inner.queue(&via).is_none() {
            let _ = reply.send(Err(ConnectError::Traversal(format!(
                "not connected to the rendezvous peer {via}"
            ))));
            return;
        }
        if self.sessions.len() >= MAX_SESSIONS {
            let _ = reply.send(Err(ConnectError::Traversal(
                "too many traversal attempts in progress".into(),
            )));
            return;
        }
        self.request_traversal(peer, via, Some(reply));
    }

    fn on_signal(&mut self, via: PeerId, from: PeerId, signal: Signal) {
        let session = signal.session();
        let now = Instant::now();
        match signal {
            Signal::Connect { candidates, .. } => {
                if self.sessions.len() >= MAX_SESSIONS || self.sessions.contains_key(&session) {
                    self.signal(via, from, Signal::Refuse { session });
                    return;
                }
                let ours = self.candidates();
                self.signal(
                    via,
                    from,
                    Signal::Accept {
                        session,
                        candidates: ours,
                    },
                );
                self.sessions.insert(
                    session,
                    Session::new(
                        from,
                        via,
                        Stage::AwaitingSync,
                        now,
                        now + SYNC_WAIT.min(self.inner.config.punch_timeout),
                        candidates,
                        self.inner.id < from,
                        None,
                    ),
                );
                self.note_punching(from, now);
            }
            Signal::Accept { candidates, .. } => {
                let Some(s) = self.sessions.get_mut(&session) else {
                    return;
                };
                if s.peer != from || s.stage != Stage::AwaitingAccept {
                    return;
                }
                let rtt = now - s.sent_connect_at;
                s.theirs = candidates;
                s.stage = Stage::Punching;
                s.punch_at = Some(now + rtt / 2);
                s.relay_at = Some(now + rtt / 2 + self.inner.config.relay_after);
                tracing::debug!(peer = %from, ?rtt, "rendezvous answered; punching after rtt/2");
                let via = s.via;
                self.signal(via, from, Signal::Sync { session });
            }
            Signal::Sync { .. } => {
                let Some(s) = self.sessions.get_mut(&session) else {
                    return;
                };
                if s.peer != from || s.stage != Stage::AwaitingSync {
                    return;
                }
                s.stage = Stage::Punching;
                s.punch_at = Some(now);
                s.deadline = s.started + self.inner.config.punch_timeout;
            }
            // Taken by the link reader, which sets the circuit up at once.
            Signal::Relay { .. } => {}
            Signal::Refuse { .. } | Signal::Unreachable { .. } => {
                if let Some(mut s) = self.sessions.remove(&session)
                    && let Some(reply) = s.reply.take()
                {
                    let why = if matches!(signal, Signal::Refuse { .. }) {
                        "the peer refused the attempt".to_owned()
                    } else {
                        format!("the rendezvous peer is not connected to {from}")
                    };
                    let _ = reply.send(Err(ConnectError::Traversal(why)));
                }
            }
        }
    }

    /// Sends a signal to `to` through `via`.
    fn signal(&self, via: PeerId, to: PeerId, signal: Signal) {
        match self.inner.queue(&via) {
            Some(queue) => {
                queue.push_control(Outgoing::control_owned(&Packet::Forward { to, signal }))
            }
            None => tracing::debug!(%via, "rendezvous peer gone; signal dropped"),
        }
    }

    /// Our candidates, most promising first.
    fn candidates(&self) -> Candidates {
        let report = self.inner.nat_report();
        let mut udp = report.local_udp.clone();
        if let Some(m) = &report.upnp {
            udp.extend(m.udp);
        }
        udp.extend(report.udp_external);
        udp.extend(report.predicted_udp(PREDICTED_PORTS));
        dedup(&mut udp);
        let mut tcp = report.local_tcp.clone();
        if let Some(m) = &report.upnp {
            tcp.extend(m.tcp);
        }
        // Outgoing connections leave from the listener's port, so what
        // peers saw of them is the NAT's mapping of that port; and a
        // port-preserving NAT maps it to the same port on its address.
        tcp.extend(report.tcp_observed.iter().copied());
        if let Some(port) = report.local_tcp.first().map(|a| a.port()) {
            let mut ips: Vec<IpAddr> = report.tcp_observed.iter().map(|a| a.ip()).collect();
            ips.extend(report.udp_external.iter().map(|a| a.ip()));
            tcp.extend(ips.into_iter().map(|ip| SocketAddr::new(ip, port)));
        }
        // A sequential symmetric NAT maps the listener's port anew for the
        // punch: predict the next ports, as for UDP (the allocator is
        // usually shared by both protocols).
        if let (nat::Mapping::EndpointDependent, nat::PortAllocation::Sequential { delta }) =
            (report.mapping, report.port_allocation)
            && let Some(last) = report
                .udp_observations
                .iter()
                .map(|o| o.observed)
                .chain(report.tcp_observed.iter().copied())
                .max_by_key(|a| a.port())
        {
            tcp.extend((1..=PREDICTED_TCP_PORTS).filter_map(|k| {
                let port = u32::from(last.port()) + k * u32::from(delta);
                u16::try_from(port)
                    .ok()
                    .map(|p| SocketAddr::new(last.ip(), p))
            }));
        }
        tcp.retain(|a| !a.ip().is_unspecified() && a.port() != 0);
        dedup(&mut tcp);
        Candidates {
            udp,
            tcp,
            mapping: mapping_hint(&report),
            tcp_mapping: hint(report.tcp_mapping, report.tcp_port_allocation),
        }
    }

    /// A session with `peer` (already in `sessions`) started: its timing
    /// is kept unless another session with the peer runs.
    fn note_punching(&self, peer: PeerId, started: Instant) {
        let fresh = super::Punching {
            started,
            signal: None,
            first_packet: None,
        };
        let alone = self.sessions.values().filter(|s| s.peer == peer).count() <= 1;
        let mut punching = self
            .inner
            .punching
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if alone {
            punching.insert(peer, fresh);
        } else {
            punching.entry(peer).or_insert(fresh);
        }
    }

    /// We start punching towards `peer` now: the rendezvous signal, from
    /// which `TraversalTiming` counts.
    fn note_signal(&self, peer: PeerId) {
        let mut punching = self
            .inner
            .punching
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(p) = punching.get_mut(&peer) {
            p.signal.get_or_insert_with(Instant::now);
        }
    }

    fn forget_punching(&self, peer: &PeerId) {
        self.inner
            .punching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(peer);
    }

    fn update_report(&mut self) {
        let local_port = self.udp_local.map_or(0, |a| a.port());
        let mut observations: Vec<Observation> = self.observations.values().copied().collect();
        observations.sort_by_key(|o| (o.server, o.peer));
        let (mapping, port_allocation, udp_external) =
            nat::classify(&self.local_ips, local_port, &observations);
        let mut tcp_echoes: Vec<Observation> = self.tcp_observations.values().copied().collect();
        tcp_echoes.sort_by_key(|o| (o.server, o.peer));
        let tcp_port = self.tcp_listen.first().map_or(0, |a| a.port());
        let (tcp_mapping, tcp_port_allocation, _) =
            nat::classify(&self.local_ips, tcp_port, &tcp_echoes);
        let mut tcp_observed: Vec<SocketAddr> = self.tcp_observed.values().copied().collect();
        tcp_observed.sort();
        tcp_observed.dedup();
        let report = NatReport {
            local_udp: self
                .udp_local
                .map(|a| {
                    self.local_ips
                        .iter()
                        .map(|ip| SocketAddr::new(*ip, a.port()))
                        .collect()
                })
                .unwrap_or_default(),
            local_tcp: self
                .tcp_listen
                .iter()
                .flat_map(|a| {
                    let ips = if a.ip().is_unspecified() {
                        self.local_ips.clone()
                    } else {
                        vec![a.ip()]
                    };
                    ips.into_iter().map(|ip| SocketAddr::new(ip, a.port()))
                })
                .collect(),
            udp_observations: observations,
            udp_external,
            tcp_observed,
            mapping,
            port_allocation,
            tcp_mapping,
            tcp_port_allocation,
            upnp: self.upnp.clone(),
        };
        let changed = {
            let mut current = self
                .inner
                .nat_report
                .write()
                .unwrap_or_else(|p| p.into_inner());
            if *current == report {
                false
            } else {
                *current = report.clone();
                true
            }
        };
        if changed {
            let key = NetworkKey::of(&report);
            self.upgrades.network(key, Instant::now(), &mut random_u64);
            tracing::debug!(?report, "NAT report changed");
            self.inner.emit(Event::NatReport(report));
        }
    }

    fn start_upnp(&mut self) {
        let config = &self.inner.config;
        if !config.upnp || self.upnp_task.is_some() {
            return;
        }
        let Some(&ip) = self.local_ips.iter().find(|ip| nat::behind_nat(**ip)) else {
            return;
        };
        let request = nat::upnp::Request {
            udp: self.udp_local.map(|a| SocketAddr::new(ip, a.port())),
            tcp: self
                .tcp_listen
                .first()
                .map(|a| SocketAddr::new(ip, a.port())),
            lease: config.upnp_lease,
        };
        if request.udp.is_none() && request.tcp.is_none() {
            return;
        }
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(run_upnp(request, self.input_tx.clone(), stop_rx));
        self.upnp_task = Some((stop_tx, task));
    }

    async fn shutdown(&mut self) {
        if let Some((stop, task)) = self.upnp_task.take() {
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
        }
        self.end_sessions("the service has shut down");
    }

    fn end_sessions(&mut self, why: &str) {
        for (_, mut s) in self.sessions.drain() {
            if let Some(reply) = s.reply.take() {
                let _ = reply.send(Err(ConnectError::Traversal(why.to_owned())));
            }
        }
    }

    async fn send(&self, datagram: &Datagram, to: SocketAddr, ttl: Option<u32>) {
        let Some(socket) = &self.inner.utp else {
            return;
        };
        let bytes = datagram.encode();
        let sent = match ttl {
            Some(ttl) => socket.send_datagram_with_ttl(&bytes, to, ttl).await,
            None => socket.send_datagram(&bytes, to).await,
        };
        if let Err(e) = sent {
            tracing::trace!(%to, error = %e, "datagram not sent");
        }
    }
}

/// Connects from `local` to `remote` until it works, the peer is connected
/// another way, or `deadline`. Each try is one SYN, paid for from the
/// attempt's budget, and gives up before the kernel would send a second;
/// a failed or refused try (the far NAT or host answered our SYN with a
/// reset before its own SYN went out) is retried after a pause.
async fn tcp_punch(
    inner: &Inner,
    relayed: &RelayedOnly,
    budget: &AttemptBudget,
    peer: PeerId,
    local: SocketAddr,
    remote: SocketAddr,
    deadline: Instant,
) -> Option<tokio::net::TcpStream> {
    loop {
        budget.tcp_slot().await;
        if direct(inner, relayed, &peer) {
            return None;
        }
        let left = deadline.checked_duration_since(Instant::now())?;
        tracing::trace!(%local, %remote, "TCP punch try");
        match tokio::time::timeout(left.min(TCP_TRY), nat::tcp::connect_from(local, remote)).await {
            Ok(Ok(stream)) => {
                // The peer's SYN or SYN-ACK came: the first packet, before
                // the wait for the handshake's role (`tcp_punch_role`).
                inner.punch_heard(&peer);
                let _ = stream.set_nodelay(true);
                return Some(stream);
            }
            Ok(Err(e)) => tracing::trace!(%remote, error = %e, "TCP punch try failed"),
            Err(_) => tracing::trace!(%remote, "TCP punch try timed out"),
        }
        tokio::time::sleep(TCP_PUNCH_RETRY).await;
    }
}

/// A plain TCP dial, from an ephemeral port (it must not take the 4-tuple
/// of a TCP punch from the listener's port, whose handshake role goes by
/// peer id), to one of the peer's TCP candidates, and the handshake. At
/// most [`TCP_DIAL_TRIES`] tries of one SYN each, paid for from the
/// attempt's budget; a refusal ends it.
async fn tcp_dial(
    inner: &Inner,
    relayed: &RelayedOnly,
    budget: &AttemptBudget,
    peer: PeerId,
    addr: SocketAddr,
    deadline: Instant,
) -> Option<super::Dialled> {
    for _ in 0..TCP_DIAL_TRIES {
        budget.tcp_slot().await;
        if direct(inner, relayed, &peer) {
            return None;
        }
        let left = deadline.checked_duration_since(Instant::now())?;
        let stream =
            match tokio::time::timeout(left.min(TCP_TRY), tokio::net::TcpStream::connect(addr))
                .await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => return None,
                Ok(Err(e)) => {
                    tracing::trace!(%addr, error = %e, "TCP dial try failed");
                    tokio::time::sleep(TCP_PUNCH_RETRY).await;
                    continue;
                }
                Err(_) => continue,
            };
        inner.punch_heard(&peer);
        let _ = stream.set_nodelay(true);
        let local_addr = stream.local_addr().ok()?;
        let channel = crate::secure::SecureChannel::connect(
            Box::new(stream) as super::BoxedStream,
            &inner.secret,
            &inner.config.channel,
            Some(peer),
            Intent::Connect,
        )
        .await;
        return match channel {
            Ok(channel) => Some(super::Dialled {
                channel,
                transport: super::Transport::Tcp,
                remote_addr: addr,
                local_addr,
                direction: super::Direction::Outgoing,
                path: ConnectionPath::Direct,
                started: None,
            }),
            Err(e) => {
                tracing::debug!(%addr, error = %e, "TCP dial's handshake failed");
                None
            }
        };
    }
    None
}

/// The secure channel's role on a punched TCP connection. After a
/// simultaneous open both sides think they dialled: the smaller id
/// initiates. But a SYN may also have reached the peer's listener (its NAT
/// let it in before the peer's own SYN left), whose accept loop always
/// responds. So the larger id waits a moment for the peer's first bytes:
/// if they come it responds; if not, the other end is a listener and it
/// initiates after all.
async fn tcp_punch_role(
    inner: &Inner,
    peer: PeerId,
    stream: tokio::net::TcpStream,
) -> Option<(tokio::net::TcpStream, bool)> {
    if inner.id < peer {
        return Some((stream, true));
    }
    let mut first = [0u8; 1];
    match tokio::time::timeout(TCP_ROLE_WAIT, stream.peek(&mut first)).await {
        Err(_) => Some((stream, true)),
        Ok(Ok(0) | Err(_)) => None,
        Ok(Ok(_)) => Some((stream, false)),
    }
}

/// The handshake on a hole-punched TCP connection (`initiator`: ours is
/// the Noise initiator's role), and its registration if it reached `peer`.
/// `ends` are the remote and local addresses the connection is known by.
#[allow(clippy::too_many_arguments)]
async fn finish_punched_tcp(
    inner: &Inner,
    commands: &mpsc::UnboundedSender<Command>,
    input: &mpsc::UnboundedSender<NatInput>,
    peer: PeerId,
    stream: tokio::net::TcpStream,
    initiator: bool,
    (remote_addr, local_addr): (SocketAddr, SocketAddr),
    started: Instant,
) {
    inner.punch_heard(&peer);
    let stream: super::BoxedStream = Box::new(stream);
    let (secret, config) = (&inner.secret, &inner.config.channel);
    let channel = if initiator {
        crate::secure::SecureChannel::connect(stream, secret, config, Some(peer), Intent::Connect)
            .await
    } else {
        crate::secure::SecureChannel::accept(stream, secret, config).await
    };
    match channel {
        Ok(channel) if channel.remote() == peer => {
            tracing::debug!(%peer, %remote_addr, initiator, "TCP hole punched");
            let dialled = super::Dialled {
                channel,
                transport: super::Transport::Tcp,
                remote_addr,
                local_addr,
                // The initiator counts as the dialler on both sides, so
                // the duplicate rule agrees.
                direction: if initiator {
                    super::Direction::Outgoing
                } else {
                    super::Direction::Incoming
                },
                path: ConnectionPath::HolePunched,
                started: Some(started),
            };
            let _ = commands.send(Command::Register {
                dialled: Box::new(dialled),
                reply: None,
            });
            let _ = input.send(NatInput::Direct { peer });
        }
        Ok(channel) => tracing::debug!(%peer, actual = %channel.remote(),
            "TCP punch reached another peer"),
        Err(e) => tracing::debug!(%peer, %remote_addr, error = %e, "TCP punch handshake failed"),
    }
}

/// The first pause before searching for a UPnP gateway again, or retrying a
/// mapping that failed; it doubles up to [`UPNP_RETRY_MAX`]. A gateway may
/// answer late (a router still starting: netsim's miniupnpd under load
/// missed the one search of a service started beside it, so that peer
/// never had its mapping), or appear later (a laptop joins a network).
const UPNP_RETRY: Duration = Duration::from_secs(2);
/// The longest pause between two searches or mapping tries.
const UPNP_RETRY_MAX: Duration = Duration::from_secs(300);

/// Maps our ports, renews them at half the lease, removes them when told
/// to stop. No gateway: one debug line, and another search after a pause
/// that doubles up to [`UPNP_RETRY_MAX`].
async fn run_upnp(
    request: nat::upnp::Request,
    input: mpsc::UnboundedSender<NatInput>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut pause = UPNP_RETRY;
    let gateway = loop {
        let searched = tokio::task::spawn_blocking(|| nat::upnp::search(Duration::from_secs(1)));
        tokio::select! {
            found = searched => match found {
                Ok(Ok(gateway)) => break Arc::new(gateway),
                Ok(Err(e)) if pause == UPNP_RETRY => {
                    tracing::debug!(error = %e, "UPnP unavailable; searching again later");
                }
                Ok(Err(e)) => tracing::trace!(error = %e, "UPnP unavailable"),
                Err(_) => return,
            },
            _ = &mut stop => return,
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = &mut stop => return,
        }
        pause = (pause * 2).min(UPNP_RETRY_MAX);
    };
    let mut current: Option<UpnpMapping> = None;
    let mut pause = UPNP_RETRY;
    loop {
        let (gw, previous) = (gateway.clone(), current.clone());
        let mapped =
            tokio::task::spawn_blocking(move || nat::upnp::map(&gw, request, previous.as_ref()))
                .await;
        match mapped {
            Ok(Ok(mapping)) => {
                if current.as_ref() != Some(&mapping) {
                    tracing::info!(?mapping, "UPnP mapping");
                    let _ = input.send(NatInput::Upnp(Some(mapping.clone())));
                }
                current = Some(mapping);
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "UPnP mapping failed");
                if current.take().is_some() {
                    let _ = input.send(NatInput::Upnp(None));
                }
            }
            Err(_) => return,
        }
        // Renew well before the lease runs out; retry a failed mapping
        // sooner.
        let renew = (request.lease / 2).max(Duration::from_secs(1));
        let wait = if current.is_some() {
            pause = UPNP_RETRY;
            renew
        } else {
            let wait = pause.min(renew);
            pause = (pause * 2).min(UPNP_RETRY_MAX);
            wait
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = &mut stop => break,
        }
    }
    if let Some(mapping) = current {
        let _ = tokio::task::spawn_blocking(move || nat::upnp::unmap(&gateway, &mapping)).await;
    }
}

/// A TCP dial or punch of an attempt, spawned in the order the budget
/// should serve them.
type TcpTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Peers connected only through a relayed circuit.
type RelayedOnly = Arc<std::sync::Mutex<std::collections::HashSet<PeerId>>>;

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Connected to `peer` other than through a relay.
fn direct(inner: &Inner, relayed: &RelayedOnly, peer: &PeerId) -> bool {
    inner.queue(peer).is_some() && !lock(relayed).contains(peer)
}

async fn recv_datagram(
    datagrams: &mut Option<mpsc::Receiver<OtherDatagram>>,
) -> Option<OtherDatagram> {
    match datagrams {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

fn dedup(addrs: &mut Vec<SocketAddr>) {
    let mut seen = Vec::with_capacity(addrs.len());
    addrs.retain(|a| {
        let new = !seen.contains(a);
        seen.push(*a);
        new
    });
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // The OS's generator does not fail on supported platforms; a zero
    // session id would only be guessable, not wrong.
    let _ = getrandom::fill(&mut bytes);
    u64::from_le_bytes(bytes)
}

/// What our candidates say about our UDP mapping.
fn mapping_hint(report: &NatReport) -> MappingHint {
    hint(report.mapping, report.port_allocation)
}

/// What our candidates say about a mapping.
fn hint(mapping: nat::Mapping, ports: nat::PortAllocation) -> MappingHint {
    match (mapping, ports) {
        (nat::Mapping::EndpointIndependent, _) => MappingHint::EndpointIndependent,
        (nat::Mapping::EndpointDependent, nat::PortAllocation::Random) => {
            MappingHint::RandomPerDestination
        }
        (nat::Mapping::EndpointDependent, nat::PortAllocation::Sequential { .. }) => {
            MappingHint::SequentialPerDestination
        }
        _ => MappingHint::Unknown,
    }
}

/// An address another network can reach us at (not private, loopback or
/// unspecified): what the birthday technique aims at.
fn is_public(addr: &SocketAddr) -> bool {
    let ip = addr.ip();
    !nat::behind_nat(ip) && !ip.is_loopback() && !ip.is_unspecified() && addr.port() != 0
}

/// The uTP connection over a birthday socket that reached the peer at
/// `remote`: dialled by the initiator, accepted otherwise; then the
/// handshake, which must show `peer`.
async fn extra_connection(
    inner: &Inner,
    peer: PeerId,
    socket: &UtpSocket,
    remote: SocketAddr,
    initiator: bool,
) -> Result<super::Dialled, String> {
    let timeout = inner.config.dial_timeout;
    let stream = if initiator {
        tokio::time::timeout(timeout, socket.connect(remote)).await
    } else {
        tokio::time::timeout(timeout, socket.accept()).await
    };
    let stream = stream
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let remote_addr = stream.peer_addr().unwrap_or(remote);
    let stream: super::BoxedStream = Box::new(stream);
    let (secret, channel) = (&inner.secret, &inner.config.channel);
    let channel = if initiator {
        crate::secure::SecureChannel::connect(stream, secret, channel, Some(peer), Intent::Connect)
            .await
    } else {
        crate::secure::SecureChannel::accept(stream, secret, channel).await
    }
    .map_err(|e| e.to_string())?;
    if channel.remote() != peer {
        return Err(format!("reached {} instead", channel.remote()));
    }
    Ok(super::Dialled {
        channel,
        transport: super::Transport::Utp,
        remote_addr,
        local_addr: socket.local_addr().map_err(|e| e.to_string())?,
        direction: if initiator {
            super::Direction::Outgoing
        } else {
            super::Direction::Incoming
        },
        path: ConnectionPath::HolePunched,
        started: None,
    })
}

/// Two sequential symmetric NATs, each side predicting the other's next
/// ports: each new destination takes the next port of the sender's NAT, so
/// side A's k-th probe leaves from `a + k + sA` (`sA`: the mappings made
/// since the prediction — its other candidates, stray connections) and
/// side B's l-th from `b + l + sB`. If both aimed at consecutive ports,
/// they would meet only when `sA + sB` came to exactly the offsets the
/// predictions assumed. So one side (the smaller id) aims at every other
/// port: its k-th probe goes to `b + 2k − 1`, B's l-th to `a + l`, and
/// they meet at `k = sA + sB + 1`, `l = k + sA` (A's probe from
/// `a + k + sA` reaches B's mapping `b + 2k − 1`, made by B's probe
/// towards that very port), whatever the strays, as long as `l` stays
/// within the 32 predicted ports: `2·sA + sB ≤ 31`.
///
/// Takes the peer's UDP candidates, whose trailing run of `count`
/// predicted ports (one address, a constant step) becomes `count` ports
/// at twice the step from the first; the other candidates stay.
fn stride_two(udp: &[SocketAddr], count: usize) -> Vec<SocketAddr> {
    let n = udp.len();
    if n < 2 || count < 2 {
        return udp.to_vec();
    }
    let last = udp[n - 1];
    let step = i64::from(last.port()) - i64::from(udp[n - 2].port());
    if step <= 0 || udp[n - 2].ip() != last.ip() {
        return udp.to_vec();
    }
    let base = i64::from(last.port()) - step * count as i64;
    let predicted = |a: &SocketAddr| {
        let p = i64::from(a.port());
        a.ip() == last.ip() && p > base && p <= i64::from(last.port()) && (p - base) % step == 0
    };
    let mut out: Vec<SocketAddr> = udp.iter().copied().filter(|a| !predicted(a)).collect();
    out.extend((1..=count as i64).filter_map(|k| {
        u16::try_from(base + (2 * k - 1) * step)
            .ok()
            .map(|p| SocketAddr::new(last.ip(), p))
    }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_side_of_two_sequential_nats_aims_at_every_other_port() {
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let local: SocketAddr = "192.168.1.2:5483".parse().unwrap();
        let mut udp = vec![local, SocketAddr::new(ip, 2000)];
        udp.extend((1..=4).map(|k| SocketAddr::new(ip, 2000 + k)));
        let out = stride_two(&udp, 4);
        let ports: Vec<u16> = out.iter().map(SocketAddr::port).collect();
        assert_eq!(ports, [5483, 2000, 2001, 2003, 2005, 2007]);
        // A step of 3 doubles to 6.
        let mut udp = vec![SocketAddr::new(ip, 2000)];
        udp.extend((1..=3).map(|k| SocketAddr::new(ip, 2000 + 3 * k)));
        let ports: Vec<u16> = stride_two(&udp, 3).iter().map(SocketAddr::port).collect();
        assert_eq!(ports, [2000, 2003, 2009, 2015]);
        // Nothing predicted: unchanged.
        assert_eq!(stride_two(&[local], 32), vec![local]);
    }

    /// The arithmetic of `stride_two`, against a model of two sequential
    /// NATs with stray mappings on each side.
    #[test]
    fn the_stride_meets_whatever_the_strays() {
        for stray_a in 0..=10u16 {
            for stray_b in 0..=10u16 {
                let (a, b) = (10_000u16, 20_000u16);
                // A aims at b + 2k − 1, B at a + l; each new destination
                // takes the NAT's next port after the strays.
                let a_maps: Vec<(u16, u16)> = (1..=32u16)
                    .map(|k| (a + stray_a + k, b + 2 * k - 1))
                    .collect();
                let b_maps: Vec<(u16, u16)> =
                    (1..=32u16).map(|l| (b + stray_b + l, a + l)).collect();
                let met = a_maps
                    .iter()
                    .any(|(from, to)| b_maps.contains(&(*to, *from)));
                assert!(met, "strays {stray_a}, {stray_b}");
            }
        }
    }
}
