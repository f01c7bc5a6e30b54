//! [`Node`]: a running chat user — a profile, its history and a crust
//! service — and the [`Event`]s it reports.
//!
//! Order of calls: [`Node::open`] with an opened [`Profile`]; take events
//! from [`NodeEvents`] for as long as the node runs; call methods from any
//! task (the handle is cheap to clone); [`Node::shutdown`] to close the
//! connections and release the profile.
//!
//! Methods that only read or write the database run on the caller's thread
//! and return at once; whatever needs the network is handed to the node's
//! actor (`actor.rs`), which owns the crust events and the sessions.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crust::{ConnectionInfo, Endpoint, PeerId};
use tokio::sync::{mpsc, oneshot};

use crate::actor::{self, Command};
use crate::dht_driver::{
    DhtConfig, DhtDriver, DhtMode, DhtStatus, RecordLookup, SystemClock, WallClock,
};
use crate::invite::{Invite, truncate_utf8};
use crate::profile::{BOOTSTRAP_FILE, HISTORY_FILE, Profile, ProfileError, Settings};
use crate::store::{Store, StoreError};
use crate::types::{
    Contact, ContactState, Cursor, FriendRequest, HistoryPage, MAX_TEXT_BYTES, Message, MessageId,
    MessageState,
};

const TOKEN_KEY: &str = "request_token";

/// How a node runs. `NodeConfig::default()` takes listen addresses and
/// bootstrap peers from the profile's settings.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The crust service's settings. Empty `listen` and
    /// `bootstrap_contacts` are filled from the profile's settings; so is
    /// a missing `utp` socket address (when the settings have uTP on); a
    /// missing `bootstrap_cache` becomes the profile's `bootstrap.json`.
    pub crust: crust::Config,
    /// How often offline contacts are dialled again.
    pub reconnect_interval: Duration,
    /// Unacknowledged messages are sent again on a live connection after
    /// this long (a peer that failed to store them does not ack; the
    /// repeat is dropped by id if it had).
    pub resend_interval: Duration,
    /// Whether to bootstrap into the network at start.
    pub bootstrap: bool,
    /// Peers that hold mail for us while we are away (`ID@ENDPOINT`, the
    /// id required): our own `crust-node --hold`, or a friend's chat node.
    /// Friends are told of them and deposit sealed messages there when we
    /// are offline; we collect on connecting.
    pub holders: Vec<crust::Contact>,
    /// How the node takes part in the DHT.
    pub dht: DhtConfig,
    /// The wall clock ([`SystemClock`]; tests put in one they can move):
    /// when it jumps against the monotonic clock (a suspend and resume),
    /// the node checks every connection and reconnects.
    pub clock: Arc<dyn WallClock>,
}

impl Default for NodeConfig {
    /// Also turns crust's LAN discovery on (`crust.lan_discovery`): contacts
    /// on the same network are found and dialled with no server; set it to
    /// `None` to send and hear no beacons.
    fn default() -> Self {
        Self {
            crust: crust::Config {
                lan_discovery: Some(crust::LanDiscovery::default()),
                ..crust::Config::default()
            },
            reconnect_interval: Duration::from_secs(10),
            resend_interval: Duration::from_secs(30),
            bootstrap: true,
            holders: Vec::new(),
            dht: DhtConfig::default(),
            clock: Arc::new(SystemClock),
        }
    }
}

impl NodeConfig {
    /// Listens on 127.0.0.1 (any port) for TCP and uTP, no UPnP, redials every
    /// 200 ms, resends unacknowledged messages after 2 s, no bootstrap, on
    /// a network of its own name, a DHT server looking unreachable
    /// contacts up every second: for tests, examples and benchmarks on one
    /// machine.
    pub fn loopback(network_id: &str) -> Self {
        let mut crust = crust::Config {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            utp: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            // No router search from tests: their traffic stays on loopback.
            upnp: false,
            dial_timeout: Duration::from_secs(2),
            ..crust::Config::default()
        };
        crust.channel.network_id = network_id.to_owned();
        Self {
            crust,
            reconnect_interval: Duration::from_millis(200),
            resend_interval: Duration::from_secs(2),
            bootstrap: false,
            holders: Vec::new(),
            dht: DhtConfig {
                mode: DhtMode::Server,
                record_retry: Duration::from_secs(1),
                ..DhtConfig::default()
            },
            clock: Arc::new(SystemClock),
        }
    }
}

/// Something a node reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A new message arrived (never reported twice for one id).
    MessageReceived(Message),
    /// An outgoing message moved on: sent, delivered, read.
    MessageStateChanged {
        /// The conversation.
        contact: PeerId,
        /// The message.
        id: MessageId,
        /// Its new state.
        state: MessageState,
    },
    /// A contact connected; also reported again, without a
    /// `ContactOffline` before it, when the connection under an online
    /// contact is replaced (a duplicate connection resolved): the path may
    /// have changed, the contact never went offline.
    ContactOnline {
        /// Who.
        contact: PeerId,
        /// How.
        path: ConnectionInfo,
    },
    /// A contact disconnected.
    ContactOffline {
        /// Who.
        contact: PeerId,
    },
    /// The connection to a contact dropped and the node is dialling it
    /// again (with backoff, through the same paths: its addresses, then
    /// rendezvous peers); follows a `ContactOffline`. Ends with a
    /// `ContactOnline`, or with `ContactReconnectFailed` after the last
    /// quick attempt (the contact is then dialled at the usual reconnect
    /// interval). See [`Node::is_connecting`].
    ContactConnecting {
        /// Who.
        contact: PeerId,
    },
    /// The quick reconnection attempts after a drop all failed.
    ContactReconnectFailed {
        /// Who.
        contact: PeerId,
    },
    /// Someone asks to be our friend; see [`Node::accept`].
    FriendRequest(FriendRequest),
    /// A request we sent was accepted (or they asked us at the same time).
    FriendAccepted {
        /// Who.
        contact: PeerId,
    },
    /// A request we sent was declined.
    FriendDeclined {
        /// Who.
        contact: PeerId,
    },
    /// A new key claims to be a known contact. Loud on purpose: nothing
    /// addressed to the old key goes to the new one; the claim is a
    /// friend request from `new_key` that the user may accept after
    /// comparing safety codes.
    KeyChanged {
        /// The contact as we know them.
        contact: PeerId,
        /// The key now claiming to be them.
        new_key: PeerId,
    },
    /// A contact started or stopped typing.
    Typing {
        /// Who.
        contact: PeerId,
        /// Whether they are typing now.
        typing: bool,
    },
    /// Listening on this endpoint (a TCP listener, or crust's uTP socket).
    Listening {
        /// The bound endpoint.
        endpoint: crust::Endpoint,
    },
    /// Something went wrong in the background (a database write failed, a
    /// listener stopped); shown to the user, the node keeps running.
    Problem(String),
    /// The node's connectivity changed (a listener started or failed, a
    /// connection opened or closed, crust learnt something new about the
    /// NAT or UPnP): the same report as
    /// [`Node::network_report`], for the clients' network screens.
    NetworkChanged(NetworkReport),
}

/// A node's events, in order.
#[derive(Debug)]
pub struct NodeEvents {
    rx: mpsc::UnboundedReceiver<Event>,
}

impl NodeEvents {
    /// The next event; `None` once the node has shut down.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The history database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bootstrap entry in the settings is not `ID@IP:PORT` or `IP:PORT`.
    #[error("bad bootstrap peer {entry:?} in settings: {error}")]
    Bootstrap {
        /// The entry.
        entry: String,
        /// Why.
        error: crust::ParseContactError,
    },
    /// A holder entry in the settings is not `ID@ENDPOINT`.
    #[error("bad holder {entry:?} in settings: {reason}")]
    Holder {
        /// The entry.
        entry: String,
        /// Why.
        reason: String,
    },
    /// The network service (e.g. the listen port is taken).
    #[error(transparent)]
    Service(#[from] crust::ServiceError),
}

/// Why a node operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The node has shut down.
    #[error("the node has shut down")]
    Closed,
    /// No contact with this id.
    #[error("{0} is not a contact")]
    UnknownContact(PeerId),
    /// No pending friend request from this id.
    #[error("no friend request from {0}")]
    NoRequest(PeerId),
    /// That is our own id.
    #[error("that invite is our own")]
    OwnId,
    /// The contact declined our friend request; nothing can be sent.
    #[error("{0} declined our friend request")]
    Declined(PeerId),
    /// The text is longer than [`MAX_TEXT_BYTES`].
    #[error("message of {len} bytes is longer than the limit of {max} bytes")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The history database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The profile (export, settings).
    #[error(transparent)]
    Profile(#[from] ProfileError),
}

/// A summary of the node's connectivity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkReport {
    /// Our id.
    pub id: PeerId,
    /// Bound listeners (TCP, and uTP if crust runs it).
    pub listeners: Vec<crust::Endpoint>,
    /// The endpoints our invite carries.
    pub invite_addrs: Vec<Endpoint>,
    /// Every live connection (contacts and others), with its path
    /// (`info.path`: direct, hole-punched or relayed) and transport.
    pub connections: Vec<(PeerId, ConnectionInfo)>,
    /// What crust knows about the NAT in front of us: mapping and port
    /// allocation behaviour, external UDP address, UPnP mapping
    /// (`Mapping::Unknown` and no UPnP until it has found out).
    pub nat: crust::NatReport,
}

/// A peer and where to reach it (empty: not known).
pub(crate) type Reach = (PeerId, Vec<Endpoint>);

/// What the handle and the actor share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) id: PeerId,
    pub(crate) name: Mutex<String>,
    pub(crate) store: Mutex<Option<Store>>,
    pub(crate) online: Mutex<HashMap<PeerId, ConnectionInfo>>,
    /// Peers we joined the network through (crust bootstrap connections
    /// we made): rendezvous for hole punching to contacts.
    pub(crate) rendezvous: Mutex<Vec<PeerId>>,
    /// Where we reached each of `rendezvous` (what our record tells
    /// others, so they can reach it too).
    pub(crate) rendezvous_addrs: Mutex<HashMap<PeerId, Endpoint>>,
    /// The rendezvous peers each contact keeps connections to (as it told
    /// us, or its record says), with where to reach them if known.
    pub(crate) their_rendezvous: Mutex<HashMap<PeerId, Vec<Reach>>>,
    /// Contacts being reconnected after a drop.
    pub(crate) connecting: Mutex<std::collections::HashSet<PeerId>>,
    /// Bound TCP listeners and the uTP socket.
    pub(crate) listeners: Mutex<Vec<Endpoint>>,
    pub(crate) address_hints: Vec<Endpoint>,
    pub(crate) profile: Mutex<Option<Profile>>,
    /// Mail held for friends, our holders, deposits in flight.
    pub(crate) mail: Mutex<crate::mailbox::MailState>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// Runs `f` on the store, or fails if the node has shut down.
    pub(crate) fn with_store<T>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError>,
    ) -> Result<T, NodeError> {
        let guard = lock(&self.store);
        let store = guard.as_ref().ok_or(NodeError::Closed)?;
        Ok(f(store)?)
    }

    pub(crate) fn request_token(&self) -> Result<[u8; 4], NodeError> {
        self.with_store(|s| {
            Ok(s.meta(TOKEN_KEY)?
                .and_then(|v| <[u8; 4]>::try_from(v.as_slice()).ok())
                .unwrap_or_default())
        })
    }

    /// Our rendezvous peers and where we reached them, for our record.
    pub(crate) fn rendezvous_reach(&self) -> Vec<Reach> {
        let addrs = lock(&self.rendezvous_addrs);
        lock(&self.rendezvous)
            .iter()
            .map(|peer| (*peer, addrs.get(peer).copied().into_iter().collect()))
            .collect()
    }

    /// Our display name now.
    pub(crate) fn name(&self) -> String {
        lock(&self.name).clone()
    }

    /// Endpoints to tell others: hints, then listeners, TCP and uTP (an
    /// unspecified listener IP replaced by this machine's outgoing address
    /// when `resolve` is set; the receiver of a `Hello` fills it in
    /// itself).
    pub(crate) fn my_addrs(&self, resolve: bool) -> Vec<Endpoint> {
        let mut addrs = self.address_hints.clone();
        for endpoint in lock(&self.listeners).iter() {
            let addr = endpoint.addr;
            let endpoint = if resolve && addr.ip().is_unspecified() {
                match local_ip(addr.is_ipv6()) {
                    Some(ip) => Endpoint {
                        addr: SocketAddr::new(ip, addr.port()),
                        ..*endpoint
                    },
                    None => continue,
                }
            } else {
                *endpoint
            };
            if !addrs.contains(&endpoint) {
                addrs.push(endpoint);
            }
        }
        addrs
    }
}

/// The address this machine would use to reach the internet (no packet is
/// sent: connecting a UDP socket only picks a route).
fn local_ip(v6: bool) -> Option<IpAddr> {
    let (bind, probe): (SocketAddr, SocketAddr) = if v6 {
        (
            SocketAddr::from(([0u16; 8], 0)),
            "[2001:db8::1]:9".parse().ok()?,
        )
    } else {
        (
            SocketAddr::from(([0, 0, 0, 0], 0)),
            SocketAddr::from(([192, 0, 2, 1], 9)),
        )
    };
    let socket = UdpSocket::bind(bind).ok()?;
    socket.connect(probe).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// A running chat user. Cheap to clone; every clone drives the same node.
///
/// # Example: two nodes chat
///
/// ```
/// use chat_core::{Event, Node, NodeConfig, Profile};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let alice = Profile::create(&dir.path().join("alice"), "Alice", None)?;
/// let bob = Profile::create(&dir.path().join("bob"), "Bob", None)?;
/// let (alice, mut alice_events) = Node::open(alice, NodeConfig::loopback("doc-example")).await?;
/// let (bob, mut bob_events) = Node::open(bob, NodeConfig::loopback("doc-example")).await?;
///
/// // Alice gives Bob her invite (a `crust:` code, or its QR code); Bob
/// // sends a friend request with it, and Alice accepts.
/// let invite = alice.my_invite()?.to_string();
/// bob.add_contact(&invite.parse()?, "hi, it's Bob")?;
/// let request = loop {
///     if let Some(Event::FriendRequest(r)) = alice_events.recv().await { break r; }
/// };
/// alice.accept(&request.from)?;
///
/// // Bob can write at once: the message waits in his outbox until the
/// // friendship is confirmed, then is delivered and acknowledged.
/// let sent = bob.send(&alice.id(), "hello Alice")?;
/// let received = loop {
///     if let Some(Event::MessageReceived(m)) = alice_events.recv().await { break m; }
/// };
/// assert_eq!(received.text, "hello Alice");
/// assert_eq!(received.id, sent.id);
/// loop {
///     if let Some(Event::MessageStateChanged { state: chat_core::MessageState::Delivered, .. }) =
///         bob_events.recv().await { break; }
/// }
/// alice.shutdown().await;
/// bob.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Node {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    /// Taken at shutdown, so that no clone of the handle keeps crust's
    /// sockets (the uTP socket lives as long as the service) bound.
    service: Arc<Mutex<Option<crust::Service>>>,
}

impl Node {
    /// Opens the profile's history, starts the crust service, and starts
    /// dialling contacts. Must be called inside a tokio runtime.
    pub async fn open(
        profile: Profile,
        config: NodeConfig,
    ) -> Result<(Self, NodeEvents), OpenError> {
        let store = Store::open(&profile.dir().join(HISTORY_FILE))?;
        if store.meta(TOKEN_KEY)?.is_none() {
            let mut token = [0u8; 4];
            crate::fill_random(&mut token);
            store.set_meta(TOKEN_KEY, &token)?;
        }
        let settings = profile.settings().clone();
        let mut crust_config = config.crust.clone();
        if crust_config.listen.is_empty() {
            crust_config.listen = settings.listen.clone();
        }
        // The settings can switch UPnP off, never on against the config.
        crust_config.upnp &= settings.upnp;
        // The same for LAN discovery; and a node that listens on loopback
        // only cannot be reached from the LAN, so it announces nothing
        // there (nor do tests on loopback send anything off the machine).
        let loopback_only = crust_config.listen.iter().all(|a| a.ip().is_loopback());
        if !settings.lan_discovery || loopback_only {
            crust_config.lan_discovery = None;
        }
        if crust_config.utp.is_none() && settings.utp {
            crust_config.utp = settings
                .utp_listen
                .or_else(|| crust_config.listen.first().copied());
        }
        if crust_config.bootstrap_contacts.is_empty() {
            for entry in &settings.bootstrap {
                let contact = entry.parse().map_err(|error| OpenError::Bootstrap {
                    entry: entry.clone(),
                    error,
                })?;
                crust_config.bootstrap_contacts.push(contact);
            }
        }
        if crust_config.bootstrap_cache.is_none() {
            crust_config.bootstrap_cache = Some(profile.dir().join(BOOTSTRAP_FILE));
        }
        let mut holders = config.holders.clone();
        for entry in &settings.holders {
            let holder: crust::Contact =
                entry
                    .parse()
                    .map_err(|e: crust::ParseContactError| OpenError::Holder {
                        entry: entry.clone(),
                        reason: e.to_string(),
                    })?;
            if holder.id.is_none() {
                return Err(OpenError::Holder {
                    entry: entry.clone(),
                    reason: "the holder's id is required (ID@ENDPOINT)".into(),
                });
            }
            holders.push(holder);
        }
        let (service, crust_events) = start_service(crust_config, profile.secret()).await?;
        let profile_secret = profile.secret().clone();
        let listeners = service.listeners().await;
        let (held, held_problem) = crate::mailbox::open_held(profile.dir());
        let shared = Arc::new(Shared {
            id: profile.peer_id(),
            name: Mutex::new(settings.display_name.clone()),
            store: Mutex::new(Some(store)),
            online: Mutex::new(HashMap::new()),
            rendezvous: Mutex::new(Vec::new()),
            rendezvous_addrs: Mutex::new(HashMap::new()),
            their_rendezvous: Mutex::new(HashMap::new()),
            connecting: Mutex::new(std::collections::HashSet::new()),
            listeners: Mutex::new(listeners),
            address_hints: settings.address_hints.clone(),
            mail: Mutex::new(crate::mailbox::MailState::new(
                profile.secret(),
                &holders,
                held,
            )),
            profile: Mutex::new(Some(profile)),
        });
        if config.bootstrap {
            let _ = service.bootstrap();
        }
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        if let Some(problem) = held_problem {
            tracing::warn!("{problem}");
            let _ = events_tx.send(Event::Problem(problem));
        }
        let mut dht_config = config.dht.clone();
        // The profile decides unless the config says server or client.
        if dht_config.mode == DhtMode::Auto {
            dht_config.mode = settings.dht_mode;
        }
        let dht = DhtDriver::new(
            dht_config,
            profile_secret,
            service.clone(),
            shared.my_addrs(true),
            config.clock.clone(),
        );
        let commands = actor::spawn(
            shared.clone(),
            service.clone(),
            crust_events,
            events_tx,
            config.reconnect_interval,
            config.resend_interval,
            dht,
            config.bootstrap,
        );
        Ok((
            Self {
                shared,
                commands,
                service: Arc::new(Mutex::new(Some(service))),
            },
            NodeEvents { rx: events_rx },
        ))
    }

    fn command(&self, command: Command) -> Result<(), NodeError> {
        self.commands.send(command).map_err(|_| NodeError::Closed)
    }

    /// Our id.
    pub fn id(&self) -> PeerId {
        self.shared.id
    }

    /// Our display name.
    pub fn display_name(&self) -> String {
        self.shared.name()
    }

    /// Changes our display name at once: it is saved in the settings, our
    /// invite carries it, and connected contacts are told (others on their
    /// next connection). Cut to 64 bytes.
    pub fn set_display_name(&self, name: &str) -> Result<(), NodeError> {
        let name = truncate_utf8(name, 64).to_owned();
        {
            let mut profile = lock(&self.shared.profile);
            let profile = profile.as_mut().ok_or(NodeError::Closed)?;
            let mut settings = profile.settings().clone();
            settings.display_name = name.clone();
            profile.set_settings(settings)?;
        }
        *lock(&self.shared.name) = name;
        self.command(Command::HelloAll)
    }

    /// The profile's settings (changes take effect on the next start).
    pub fn settings(&self) -> Result<Settings, NodeError> {
        Ok(lock(&self.shared.profile)
            .as_ref()
            .ok_or(NodeError::Closed)?
            .settings()
            .clone())
    }

    /// Replaces the profile's settings and saves them.
    pub fn set_settings(&self, settings: Settings) -> Result<(), NodeError> {
        Ok(lock(&self.shared.profile)
            .as_mut()
            .ok_or(NodeError::Closed)?
            .set_settings(settings)?)
    }

    /// Seals the identity key with a new passphrase, or stores it in the
    /// clear with `None`; see [`Profile::change_passphrase`].
    pub fn change_passphrase(&self, new: Option<&str>) -> Result<(), NodeError> {
        Ok(lock(&self.shared.profile)
            .as_mut()
            .ok_or(NodeError::Closed)?
            .change_passphrase(new)?)
    }

    /// Writes the profile to one file; see [`Profile::export`].
    pub fn export(&self, to: &Path) -> Result<(), NodeError> {
        Ok(lock(&self.shared.profile)
            .as_ref()
            .ok_or(NodeError::Closed)?
            .export(to)?)
    }

    /// Our invite, with the current request token and address hints.
    pub fn my_invite(&self) -> Result<Invite, NodeError> {
        Ok(Invite {
            peer: self.shared.id,
            name: self.shared.name(),
            addrs: self.shared.my_addrs(true),
            token: self.shared.request_token()?,
        })
    }

    /// Chooses a new request token: requests made with older invites are
    /// ignored from now on (contacts are not affected). Returns the new
    /// invite.
    pub fn rotate_request_token(&self) -> Result<Invite, NodeError> {
        let old = self.shared.request_token()?;
        let mut token = old;
        while token == old {
            crate::fill_random(&mut token);
        }
        self.shared.with_store(|s| s.set_meta(TOKEN_KEY, &token))?;
        self.my_invite()
    }

    /// Sends a friend request to the invite's owner, with a short message
    /// (cut to 500 bytes). The request is retried on every connection
    /// until answered. Adding someone who already asked us accepts them.
    pub fn add_contact(&self, invite: &Invite, message: &str) -> Result<(), NodeError> {
        self.add_contact_inner(invite, message, None)
    }

    /// Like [`add_contact`](Self::add_contact), telling the peer that this
    /// (new) key replaces `old`, a key they knew us by. They are warned
    /// ([`Event::KeyChanged`]) and decide.
    pub fn add_contact_replacing(
        &self,
        invite: &Invite,
        message: &str,
        old: &PeerId,
    ) -> Result<(), NodeError> {
        self.add_contact_inner(invite, message, Some(old))
    }

    fn add_contact_inner(
        &self,
        invite: &Invite,
        message: &str,
        replaces: Option<&PeerId>,
    ) -> Result<(), NodeError> {
        if invite.peer == self.shared.id {
            return Err(NodeError::OwnId);
        }
        let message = truncate_utf8(message, 500);
        let peer = invite.peer;
        self.shared.with_store(|s| {
            s.batch(|s| {
                s.unblock(&peer)?;
                let asked_us = s.remove_request(&peer)?;
                let state = if asked_us {
                    ContactState::Friend
                } else {
                    ContactState::RequestSent
                };
                s.add_contact(
                    &peer,
                    &invite.name,
                    state,
                    &invite.addrs,
                    Some((&invite.token, message, replaces)),
                )?;
                if asked_us {
                    s.set_contact_state(&peer, ContactState::Friend)?;
                }
                Ok(())
            })
        })?;
        self.command(Command::Rehello(peer))?;
        self.command(Command::Dial(peer))
    }

    /// Pending friend requests, oldest first.
    pub fn requests(&self) -> Result<Vec<FriendRequest>, NodeError> {
        self.shared.with_store(Store::requests)
    }

    /// Accepts a friend request: the sender becomes a friend.
    pub fn accept(&self, from: &PeerId) -> Result<(), NodeError> {
        self.shared.with_store(|s| {
            s.batch(|s| {
                let Some(request) = s.request(from)? else {
                    return Ok(Err(NodeError::NoRequest(*from)));
                };
                s.add_contact(
                    from,
                    &request.name,
                    ContactState::Friend,
                    &request.addrs,
                    None,
                )?;
                s.set_contact_state(from, ContactState::Friend)?;
                s.remove_request(from)?;
                Ok(Ok(()))
            })
        })??;
        self.command(Command::Rehello(*from))?;
        self.command(Command::Dial(*from))
    }

    /// Declines a friend request (the sender is told, if connected). They
    /// may ask again; [`block`](Self::block) stops that.
    pub fn decline(&self, from: &PeerId) -> Result<(), NodeError> {
        if !self.shared.with_store(|s| s.remove_request(from))? {
            return Err(NodeError::NoRequest(*from));
        }
        self.command(Command::Decline(*from))
    }

    /// Blocks a peer: its requests and messages are dropped and its
    /// connections closed. A contact stays in the list (with history).
    pub fn block(&self, peer: &PeerId) -> Result<(), NodeError> {
        self.shared.with_store(|s| s.block(peer))?;
        self.command(Command::Disconnect(*peer))
    }

    /// Unblocks a peer.
    pub fn unblock(&self, peer: &PeerId) -> Result<(), NodeError> {
        self.shared.with_store(|s| s.unblock(peer).map(drop))
    }

    /// Blocked peers.
    pub fn blocked(&self) -> Result<Vec<PeerId>, NodeError> {
        self.shared.with_store(Store::blocked)
    }

    /// Every contact with presence, unread and undelivered counts, sorted
    /// by name.
    pub fn contacts(&self) -> Result<Vec<Contact>, NodeError> {
        let rows = self.shared.with_store(|s| {
            s.contacts()?
                .into_iter()
                .map(|row| {
                    let unread = s.unread_count(&row.id)?;
                    let undelivered = s.undelivered_count(&row.id)?;
                    Ok((row, unread, undelivered))
                })
                .collect::<Result<Vec<_>, StoreError>>()
        })?;
        let online = lock(&self.shared.online);
        let dialling = lock(&self.shared.connecting);
        Ok(rows
            .into_iter()
            .map(|(row, unread, undelivered)| {
                let presence = online.get(&row.id).cloned();
                let mut contact = row.into_contact(presence, unread, undelivered);
                if let crate::Presence::Offline { connecting, .. } = &mut contact.presence {
                    *connecting = dialling.contains(&contact.id);
                }
                contact
            })
            .collect())
    }

    /// One contact.
    pub fn contact(&self, peer: &PeerId) -> Result<Contact, NodeError> {
        self.contacts()?
            .into_iter()
            .find(|c| c.id == *peer)
            .ok_or(NodeError::UnknownContact(*peer))
    }

    /// Sets the name we show for a contact.
    pub fn rename(&self, peer: &PeerId, name: &str) -> Result<(), NodeError> {
        let name = truncate_utf8(name, 64);
        if self.shared.with_store(|s| s.rename_contact(peer, name))? {
            Ok(())
        } else {
            Err(NodeError::UnknownContact(*peer))
        }
    }

    /// Removes a contact and its conversation.
    pub fn remove(&self, peer: &PeerId) -> Result<(), NodeError> {
        if self.shared.with_store(|s| s.remove_contact(peer))? {
            Ok(())
        } else {
            Err(NodeError::UnknownContact(*peer))
        }
    }

    /// The safety code of our conversation with `peer`; see
    /// [`safety_code`](crate::safety_code).
    pub fn safety_code(&self, peer: &PeerId) -> String {
        crate::safety::safety_code(&self.shared.id, peer)
    }

    /// Marks a contact verified (after comparing safety codes) or not.
    pub fn set_verified(&self, peer: &PeerId, verified: bool) -> Result<(), NodeError> {
        if self.shared.with_store(|s| s.set_verified(peer, verified))? {
            Ok(())
        } else {
            Err(NodeError::UnknownContact(*peer))
        }
    }

    /// Writes a message to the outbox and starts delivering it. When this
    /// returns, the message is on disk: it will be delivered, across
    /// disconnections and restarts, until the contact acknowledges it.
    pub fn send(&self, to: &PeerId, text: &str) -> Result<Message, NodeError> {
        if text.len() > MAX_TEXT_BYTES {
            return Err(NodeError::TooLarge {
                len: text.len(),
                max: MAX_TEXT_BYTES,
            });
        }
        let message = self.shared.with_store(|s| {
            Ok(match s.contact_state(to)? {
                None => Err(NodeError::UnknownContact(*to)),
                Some(ContactState::Declined) => Err(NodeError::Declined(*to)),
                Some(_) => Ok(s.insert_outgoing(to, text)?),
            })
        })??;
        self.command(Command::Flush(*to))?;
        Ok(message)
    }

    /// Writes several messages to the outbox in one transaction (all or
    /// none) and starts delivering them, in order: what [`send`](Self::send)
    /// does for each, at the cost of one database commit instead of one
    /// per message. For pastes, scripts and bridges that have many lines
    /// at once. Nothing is written if any text is too large.
    pub fn send_many<S: AsRef<str>>(
        &self,
        to: &PeerId,
        texts: &[S],
    ) -> Result<Vec<Message>, NodeError> {
        if let Some(text) = texts.iter().find(|t| t.as_ref().len() > MAX_TEXT_BYTES) {
            return Err(NodeError::TooLarge {
                len: text.as_ref().len(),
                max: MAX_TEXT_BYTES,
            });
        }
        let messages = self.shared.with_store(|s| {
            Ok(match s.contact_state(to)? {
                None => Err(NodeError::UnknownContact(*to)),
                Some(ContactState::Declined) => Err(NodeError::Declined(*to)),
                Some(_) => Ok(s.batch(|s| {
                    texts
                        .iter()
                        .map(|t| s.insert_outgoing(to, t.as_ref()))
                        .collect::<Result<Vec<_>, _>>()
                })?),
            })
        })??;
        if !messages.is_empty() {
            self.command(Command::Flush(*to))?;
        }
        Ok(messages)
    }

    /// Tells a contact we started or stopped typing (not stored; dropped
    /// if they are offline).
    pub fn set_typing(&self, to: &PeerId, typing: bool) -> Result<(), NodeError> {
        self.command(Command::Typing(*to, typing))
    }

    /// Marks the conversation read and sends read receipts; returns how
    /// many messages were newly read.
    pub fn mark_read(&self, contact: &PeerId) -> Result<usize, NodeError> {
        let ids = self.shared.with_store(|s| s.mark_read(contact))?;
        if !ids.is_empty() {
            self.command(Command::Reads(*contact))?;
        }
        Ok(ids.len())
    }

    /// A page of the conversation with `contact`, oldest first, ending
    /// before `before` (or with the newest message).
    pub fn history(
        &self,
        contact: &PeerId,
        before: Option<Cursor>,
        limit: usize,
    ) -> Result<HistoryPage, NodeError> {
        self.shared
            .with_store(|s| s.history(contact, before, limit))
    }

    /// One message.
    pub fn message(&self, contact: &PeerId, id: &MessageId) -> Result<Option<Message>, NodeError> {
        self.shared.with_store(|s| s.message(contact, id))
    }

    /// Messages containing every word of `query` (prefixes match), newest
    /// first, in one conversation or all.
    pub fn search(
        &self,
        query: &str,
        contact: Option<&PeerId>,
        limit: usize,
    ) -> Result<Vec<Message>, NodeError> {
        self.shared.with_store(|s| s.search(query, contact, limit))
    }

    /// Listeners and live connections.
    pub async fn network_report(&self) -> NetworkReport {
        let service = lock(&self.service).clone();
        match service {
            Some(service) => network_report(&service, &self.shared).await,
            None => NetworkReport {
                id: self.shared.id,
                listeners: Vec::new(),
                invite_addrs: Vec::new(),
                connections: Vec::new(),
                nat: crust::NatReport::default(),
            },
        }
    }

    /// Whether the connection to `peer` dropped and the node is dialling it
    /// again right now (between [`Event::ContactConnecting`] and a
    /// `ContactOnline` or `ContactReconnectFailed`): a contact list shows
    /// such a contact as "connecting" rather than offline.
    pub fn is_connecting(&self, peer: &PeerId) -> bool {
        lock(&self.shared.connecting).contains(peer)
    }

    /// Looks `peer`'s record up in the DHT: where it said it can be
    /// reached (endpoints, rendezvous peers), if a valid record was found
    /// within the lookup timeout, and how the lookup went (hops,
    /// messages, time). The node does this by itself for contacts it
    /// cannot reach.
    pub async fn find_record(&self, peer: &PeerId) -> Result<RecordLookup, NodeError> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::FindRecord(*peer, reply))?;
        answer.await.map_err(|_| NodeError::Closed)
    }

    /// What the node's DHT is doing: server or client, routing table size,
    /// records held, our record's version.
    pub async fn dht_status(&self) -> Result<DhtStatus, NodeError> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::DhtStatus(reply))?;
        answer.await.map_err(|_| NodeError::Closed)
    }

    /// Publishes our DHT record again now (it is published by itself at
    /// start, when our addresses change, and every half hour).
    pub fn republish(&self) -> Result<(), NodeError> {
        self.command(Command::Republish)
    }

    /// Closes every connection, stops the node and releases the profile
    /// (another process may open it once this returns).
    pub async fn shutdown(&self) {
        let (reply, done) = oneshot::channel();
        if self.commands.send(Command::Shutdown(reply)).is_ok() {
            let _ = done.await;
        }
        lock(&self.service).take();
        lock(&self.shared.store).take();
        lock(&self.shared.profile).take();
    }
}

/// Starts crust. A uTP port still held for a moment by a service that
/// just shut down (its socket closes when the last handle is gone) is
/// tried again for up to two seconds, so a node can be reopened at once on
/// the same ports.
async fn start_service(
    config: crust::Config,
    secret: &crust::SecretId,
) -> Result<(crust::Service, crust::Events), crust::ServiceError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        match crust::Service::start(config.clone(), secret.clone()).await {
            Err(crust::ServiceError::Listen { addr, source })
                if source.kind() == std::io::ErrorKind::AddrInUse
                    && addr.transport == crust::Transport::Utp
                    && addr.addr.port() != 0
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

/// What [`Node::network_report`] and [`Event::NetworkChanged`] carry.
pub(crate) async fn network_report(service: &crust::Service, shared: &Shared) -> NetworkReport {
    NetworkReport {
        id: shared.id,
        listeners: service.listeners().await,
        invite_addrs: shared.my_addrs(true),
        connections: service.connected_peers().await,
        nat: service.nat_report(),
    }
}
