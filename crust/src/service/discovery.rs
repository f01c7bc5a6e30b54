//! LAN discovery: peers on one network find each other with no server.
//!
//! When [`Config::lan_discovery`](crate::Config::lan_discovery) is set, the
//! service binds a UDP socket on a well-known port (shared by every service
//! on the machine: `SO_REUSEADDR`/`SO_REUSEPORT`, so each of them hears every
//! broadcast) and sends a beacon to the configured broadcast addresses every
//! [`LanDiscovery::interval`]. A beacon carries the sender's peer id, its
//! network id and its listening ports, and is signed with the sender's
//! identity key. A beacon heard from another peer of our network becomes an
//! [`Event::LanPeer`](crate::Event::LanPeer) with the endpoints at the
//! beacon's source address; the application dials them if it wants that
//! peer, and the handshake proves the id.
//!
//! What a forged beacon can do: the signature stops anyone from announcing
//! an id whose key they lack, but a beacon replayed from another address
//! (signatures carry no address) only makes us try a handshake there, which
//! fails on the id. Work is bounded: beacons are at most
//! [`MAX_BEACON`] bytes, at most [`VERIFY_PER_SECOND`] are checked per
//! second (the rest are dropped unread), the table of peers seen holds at
//! most [`MAX_SEEN`], and a peer is reported again only when its endpoints
//! change or after [`REPORT_AGAIN`] beacon intervals.
//!
//! Beacons go from a socket of their own rather than the uTP socket:
//! receivers must listen on a port known in advance, and a socket bound to
//! one unicast address (as uTP sockets often are) never sees broadcasts.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Weak;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::actor::Command;
use super::{Event, Inner, Transport};
use crate::config::Endpoint;
use crate::id::PeerId;

const MAGIC: &[u8; 4] = b"CRLD";
const VERSION: u8 = 1;
/// Longest beacon accepted (and the receive buffer).
pub(crate) const MAX_BEACON: usize = 512;
/// Beacons checked per second at most; the rest are dropped.
pub(crate) const VERIFY_PER_SECOND: u32 = 64;
/// Peers remembered at most (the oldest is forgotten first).
pub(crate) const MAX_SEEN: usize = 256;
/// A peer whose endpoints did not change is reported again after this many
/// beacon intervals.
pub(crate) const REPORT_AGAIN: u32 = 6;
/// Ports announced at most per transport.
const MAX_PORTS: usize = 8;
/// Longest network id a beacon carries (as the handshake's limit).
const MAX_NETWORK_ID: usize = 64;

/// Settings of LAN discovery (see [`Config::lan_discovery`]).
///
/// [`Config::lan_discovery`]: crate::Config::lan_discovery
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanDiscovery {
    /// The UDP port every peer listens on for beacons and sends them to.
    pub port: u16,
    /// Where the discovery socket binds (the unspecified address: a socket
    /// bound to a unicast address does not receive broadcasts).
    pub bind: IpAddr,
    /// Addresses beacons are sent to, each at `port`: the limited broadcast
    /// address by default (it leaves through the interface of the default
    /// route); a subnet's broadcast address (`192.168.1.255`) reaches a LAN
    /// that is not the default route's, `127.255.255.255` other services on
    /// this machine only.
    pub targets: Vec<IpAddr>,
    /// How often a beacon is sent.
    pub interval: Duration,
}

impl Default for LanDiscovery {
    fn default() -> Self {
        Self {
            port: 5391,
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            targets: vec![IpAddr::V4(Ipv4Addr::BROADCAST)],
            interval: Duration::from_secs(5),
        }
    }
}

/// What a beacon says, signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Body {
    network: String,
    peer: [u8; 32],
    tcp: Vec<u16>,
    utp: Vec<u16>,
}

/// A beacon: `CRLD`, a version byte, the postcard body, a 64-byte Ed25519
/// signature over everything before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Beacon {
    pub(crate) network: String,
    pub(crate) peer: PeerId,
    pub(crate) tcp: Vec<u16>,
    pub(crate) utp: Vec<u16>,
}

impl Beacon {
    pub(crate) fn encode(&self, secret: &crate::id::SecretId) -> Vec<u8> {
        let body = Body {
            network: self.network.clone(),
            peer: *self.peer.as_bytes(),
            tcp: self.tcp.iter().copied().take(MAX_PORTS).collect(),
            utp: self.utp.iter().copied().take(MAX_PORTS).collect(),
        };
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        // Serialising this type cannot fail.
        out.extend(postcard::to_allocvec(&body).unwrap_or_default());
        let signature = secret.sign(&out);
        out.extend_from_slice(&signature);
        out
    }

    /// `None` for anything but a well-formed beacon of this version signed
    /// by the id it names.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() > MAX_BEACON {
            return None;
        }
        let (signed, signature) = bytes.split_at_checked(bytes.len().checked_sub(64)?)?;
        let rest = signed.strip_prefix(MAGIC)?;
        let (&version, body) = rest.split_first()?;
        if version != VERSION {
            return None;
        }
        let (body, trailing): (Body, _) = postcard::take_from_bytes(body).ok()?;
        if !trailing.is_empty()
            || body.network.len() > MAX_NETWORK_ID
            || body.tcp.len() > MAX_PORTS
            || body.utp.len() > MAX_PORTS
        {
            return None;
        }
        let peer = PeerId::from_bytes(body.peer).ok()?;
        let signature: &[u8; 64] = signature.try_into().ok()?;
        peer.verify(signed, signature).then_some(Self {
            network: body.network,
            peer,
            tcp: body.tcp,
            utp: body.utp,
        })
    }

    /// The endpoints announced, at the address the beacon came from.
    pub(crate) fn endpoints(&self, ip: IpAddr) -> Vec<Endpoint> {
        let tcp = self
            .tcp
            .iter()
            .map(|&port| Endpoint::tcp(SocketAddr::new(ip, port)));
        let utp = self
            .utp
            .iter()
            .map(|&port| Endpoint::utp(SocketAddr::new(ip, port)));
        let mut all: Vec<Endpoint> = tcp.chain(utp).filter(|e| e.addr.port() != 0).collect();
        all.dedup();
        all
    }
}

/// Opens the discovery socket: bound to `bind:port`, shared with other
/// services on the machine, allowed to broadcast.
fn open_socket(settings: &LanDiscovery) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr = SocketAddr::new(settings.bind, settings.port);
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
    socket.set_reuse_port(true)?;
    socket.set_broadcast(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Starts discovery for the service if its config asks for it. A socket
/// that cannot be opened is reported as a failed listener.
pub(crate) fn spawn(inner: &std::sync::Arc<Inner>, commands: &mpsc::UnboundedSender<Command>) {
    let Some(settings) = inner.config.lan_discovery.clone() else {
        return;
    };
    let socket = match open_socket(&settings) {
        Ok(socket) => socket,
        Err(e) => {
            tracing::warn!(port = settings.port, error = %e, "LAN discovery cannot start");
            inner.emit(Event::ListenerFailed {
                endpoint: Endpoint {
                    transport: Transport::Utp,
                    addr: SocketAddr::new(settings.bind, settings.port),
                },
                error: format!("LAN discovery: {e}"),
            });
            return;
        }
    };
    let driver = Driver {
        inner: std::sync::Arc::downgrade(inner),
        commands: commands.downgrade(),
        settings,
        seen: HashMap::new(),
        budget: VERIFY_PER_SECOND,
        budget_since: Instant::now(),
    };
    tokio::spawn(driver.run(socket));
}

struct Seen {
    endpoints: Vec<Endpoint>,
    reported: Instant,
}

struct Driver {
    inner: Weak<Inner>,
    commands: mpsc::WeakUnboundedSender<Command>,
    settings: LanDiscovery,
    seen: HashMap<PeerId, Seen>,
    /// Beacons that may still be checked in the current second.
    budget: u32,
    budget_since: Instant,
}

impl Driver {
    async fn run(mut self, socket: UdpSocket) {
        let interval = self.settings.interval.max(Duration::from_millis(10));
        let mut beacon = tokio::time::interval(interval);
        beacon.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Notices a stopped service even while nothing arrives.
        let mut check = tokio::time::interval(Duration::from_millis(500));
        let mut buf = vec![0u8; MAX_BEACON + 1];
        loop {
            tokio::select! {
                _ = beacon.tick() => {
                    if !self.send_beacon(&socket).await {
                        break;
                    }
                }
                _ = check.tick() => {
                    if !self.running() {
                        break;
                    }
                }
                received = socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => self.on_datagram(&buf[..len], from),
                    Err(e) => tracing::trace!(error = %e, "LAN discovery: receive failed"),
                },
            }
        }
        tracing::debug!("LAN discovery stopped");
    }

    fn running(&self) -> bool {
        self.inner.strong_count() > 0
            && self
                .commands
                .upgrade()
                .is_some_and(|commands| !commands.is_closed())
    }

    /// Sends a beacon to every target; false once the service is gone.
    async fn send_beacon(&self, socket: &UdpSocket) -> bool {
        let Some(commands) = self.commands.upgrade() else {
            return false;
        };
        let (reply, rx) = oneshot::channel();
        if commands.send(Command::Listeners { reply }).is_err() {
            return false;
        }
        drop(commands);
        let Ok(listeners) = rx.await else {
            return false;
        };
        let Some(inner) = self.inner.upgrade() else {
            return false;
        };
        let ports = |transport| {
            let mut ports: Vec<u16> = listeners
                .iter()
                .filter(|e| e.transport == transport && !e.addr.ip().is_ipv6())
                .map(|e| e.addr.port())
                .collect();
            ports.dedup();
            ports
        };
        let beacon = Beacon {
            network: inner.config.channel.network_id.clone(),
            peer: inner.id,
            tcp: ports(Transport::Tcp),
            utp: ports(Transport::Utp),
        };
        let bytes = beacon.encode(&inner.secret);
        drop(inner);
        for &target in &self.settings.targets {
            let to = SocketAddr::new(target, self.settings.port);
            if let Err(e) = socket.send_to(&bytes, to).await {
                tracing::debug!(%to, error = %e, "LAN discovery: beacon not sent");
            }
        }
        true
    }

    fn on_datagram(&mut self, bytes: &[u8], from: SocketAddr) {
        let now = Instant::now();
        if now.duration_since(self.budget_since) >= Duration::from_secs(1) {
            self.budget = VERIFY_PER_SECOND;
            self.budget_since = now;
        }
        if self.budget == 0 {
            return;
        }
        self.budget -= 1;
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        let Some(beacon) = Beacon::decode(bytes) else {
            tracing::trace!(%from, len = bytes.len(), "LAN discovery: not a beacon");
            return;
        };
        if beacon.peer == inner.id || beacon.network != inner.config.channel.network_id {
            return;
        }
        let endpoints = beacon.endpoints(from.ip());
        if endpoints.is_empty() {
            return;
        }
        let again = self.settings.interval * REPORT_AGAIN;
        if let Some(seen) = self.seen.get_mut(&beacon.peer) {
            if seen.endpoints == endpoints && now.duration_since(seen.reported) < again {
                return;
            }
            seen.endpoints = endpoints.clone();
            seen.reported = now;
        } else {
            if self.seen.len() >= MAX_SEEN
                && let Some(oldest) = self
                    .seen
                    .iter()
                    .min_by_key(|(_, s)| s.reported)
                    .map(|(peer, _)| *peer)
            {
                self.seen.remove(&oldest);
            }
            self.seen.insert(
                beacon.peer,
                Seen {
                    endpoints: endpoints.clone(),
                    reported: now,
                },
            );
        }
        tracing::debug!(peer = %beacon.peer, ?endpoints, "LAN discovery: peer found");
        inner.emit(Event::LanPeer {
            peer: beacon.peer,
            endpoints,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::SecretId;

    fn beacon(secret: &SecretId) -> Beacon {
        Beacon {
            network: "crust".into(),
            peer: secret.peer_id(),
            tcp: vec![4000],
            utp: vec![4001],
        }
    }

    #[test]
    fn beacons_round_trip_and_forgeries_are_refused() {
        let secret = SecretId::generate();
        let b = beacon(&secret);
        let bytes = b.encode(&secret);
        assert_eq!(Beacon::decode(&bytes), Some(b.clone()));
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        assert_eq!(
            b.endpoints(ip),
            vec![
                Endpoint::tcp("192.0.2.9:4000".parse().unwrap()),
                Endpoint::utp("192.0.2.9:4001".parse().unwrap())
            ]
        );
        // Any flipped byte breaks it.
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert_eq!(Beacon::decode(&bad), None, "byte {i}");
        }
        // Someone else's key cannot sign for this id.
        let mallory = SecretId::generate();
        assert_eq!(Beacon::decode(&b.encode(&mallory)), None);
        // Truncated, extended, empty.
        assert_eq!(Beacon::decode(&bytes[..bytes.len() - 1]), None);
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Beacon::decode(&longer), None);
        assert_eq!(Beacon::decode(b""), None);
        assert_eq!(Beacon::decode(&[0u8; MAX_BEACON + 1]), None);
    }

    #[test]
    fn too_many_ports_are_cut_on_encode() {
        let secret = SecretId::generate();
        let mut b = beacon(&secret);
        b.tcp = (1..100).collect();
        let decoded = Beacon::decode(&b.encode(&secret)).unwrap();
        assert_eq!(decoded.tcp.len(), MAX_PORTS);
    }
}
