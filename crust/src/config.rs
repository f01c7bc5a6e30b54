//! Settings of a [`Service`](crate::Service); where a peer can be reached
//! ([`Endpoint`], `utp:IP:PORT`) and whom to dial there ([`Contact`],
//! `ID@utp:IP:PORT`).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::id::{ParsePeerIdError, PeerId};
use crate::secure::ChannelConfig;
use crate::service::{LanDiscovery, Transport};

/// How a service behaves. `Config::default()` suits a real deployment; tests
/// shorten the timers.
#[derive(Debug, Clone)]
pub struct Config {
    /// The secure channel: network id, handshake timeout, frame and message
    /// limits.
    pub channel: ChannelConfig,
    /// TCP addresses to listen on when the service starts.
    pub listen: Vec<SocketAddr>,
    /// Where to bind the service's UDP socket, which carries every uTP
    /// connection, incoming and outgoing; `None` for no uTP.
    pub utp: Option<SocketAddr>,
    /// Peers to bootstrap from besides those in the cache.
    pub bootstrap_contacts: Vec<Contact>,
    /// How many bootstrap connections to keep.
    pub bootstrap_keep: usize,
    /// Where the bootstrap cache lives; `None` keeps no cache.
    pub bootstrap_cache: Option<PathBuf>,
    /// Most peers the bootstrap cache remembers.
    pub bootstrap_cache_capacity: usize,
    /// A TCP connect must succeed within this time.
    pub dial_timeout: Duration,
    /// Most dials running at once during bootstrap.
    pub max_concurrent_dials: usize,
    /// A ping is sent this often on every connection.
    pub keepalive_interval: Duration,
    /// A peer silent for this long is reported lost.
    pub peer_timeout: Duration,
    /// Most incoming handshakes in progress at once; more are refused.
    pub max_pending_handshakes: usize,
    /// Most of those from one source (an IPv4 address or an IPv6 /64), so
    /// one host holding connections open without a word (slow-loris)
    /// cannot take every slot.
    pub max_pending_handshakes_per_source: usize,
    /// Bytes queued for one peer before `send` waits.
    pub send_queue_limit: usize,
    /// Bytes received from one peer and not yet taken from [`Events`]
    /// before reading from that peer pauses.
    ///
    /// [`Events`]: crate::Events
    pub receive_buffer_limit: usize,
    /// Ask a UPnP IGD gateway to forward our UDP and TCP ports (only when
    /// our address is a private one).
    pub upnp: bool,
    /// The lease asked for UPnP mappings; they are renewed at half of it.
    pub upnp_lease: Duration,
    /// Forward rendezvous signals between two peers connected to us.
    pub rendezvous: bool,
    /// How long a [`connect_via`](crate::Service::connect_via) attempt may
    /// take, rendezvous included.
    pub punch_timeout: Duration,
    /// As a rendezvous, most relayed circuits carried at once (0: relay
    /// nothing). Relayed bytes are the two ends' ciphertext.
    pub relay_circuits: usize,
    /// A traversal attempt opens a relayed circuit through the rendezvous
    /// if no direct path works this long after punching started.
    pub relay_after: Duration,
    /// A peer reachable only through a relayed circuit: after this long,
    /// a whole traversal attempt (fresh echoes, rendezvous through the
    /// relaying peer, punching, TCP) runs again, then after twice as long
    /// each time up to [`relay_upgrade_max`](Self::relay_upgrade_max)
    /// (each delay jittered by ±25%; a change of our network starts over),
    /// until a direct path replaces the circuit. The side with the smaller
    /// peer id drives the retries. `None`: never.
    pub relay_upgrade: Option<Duration>,
    /// The longest delay between two upgrade attempts.
    pub relay_upgrade_max: Duration,
    /// TCP hole punching (a simultaneous open from the listener's port)
    /// alongside UDP hole punching for uTP. Off, a traversal attempt
    /// punches for uTP only (and still dials the peer's TCP candidates).
    pub tcp_hole_punching: bool,
    /// Announce ourselves on the LAN and report peers that do
    /// ([`Event::LanPeer`](crate::Event::LanPeer)); `None` (the default)
    /// sends and hears no beacons.
    pub lan_discovery: Option<LanDiscovery>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            channel: ChannelConfig::default(),
            listen: Vec::new(),
            utp: None,
            bootstrap_contacts: Vec::new(),
            bootstrap_keep: 4,
            bootstrap_cache: None,
            bootstrap_cache_capacity: 200,
            dial_timeout: Duration::from_secs(10),
            max_concurrent_dials: 16,
            keepalive_interval: Duration::from_secs(5),
            peer_timeout: Duration::from_secs(20),
            max_pending_handshakes: 128,
            max_pending_handshakes_per_source: 16,
            send_queue_limit: 8 * 1024 * 1024,
            receive_buffer_limit: 4 * 1024 * 1024,
            upnp: true,
            upnp_lease: Duration::from_secs(3600),
            rendezvous: true,
            punch_timeout: Duration::from_secs(10),
            relay_circuits: 64,
            relay_after: Duration::from_secs(3),
            relay_upgrade: Some(Duration::from_secs(30)),
            relay_upgrade_max: Duration::from_secs(300),
            tcp_hole_punching: true,
            lan_discovery: None,
        }
    }
}

/// An address and the transport to reach it over. Written `tcp:IP:PORT`
/// or `utp:IP:PORT`; a bare `IP:PORT` means TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Endpoint {
    /// The transport.
    pub transport: Transport,
    /// The address.
    pub addr: SocketAddr,
}

impl Endpoint {
    /// A TCP endpoint.
    pub fn tcp(addr: SocketAddr) -> Self {
        Self {
            transport: Transport::Tcp,
            addr,
        }
    }

    /// A uTP endpoint.
    pub fn utp(addr: SocketAddr) -> Self {
        Self {
            transport: Transport::Utp,
            addr,
        }
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Self {
        Self::tcp(addr)
    }
}

impl From<&SocketAddr> for Endpoint {
    fn from(addr: &SocketAddr) -> Self {
        Self::tcp(*addr)
    }
}

impl From<&Endpoint> for Endpoint {
    fn from(endpoint: &Endpoint) -> Self {
        *endpoint
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.transport {
            Transport::Tcp => "tcp",
            Transport::Utp => "utp",
        };
        write!(f, "{scheme}:{}", self.addr)
    }
}

/// Why a string is not an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad address {0:?}: expected IP:PORT, tcp:IP:PORT or utp:IP:PORT")]
pub struct ParseEndpointError(String);

impl FromStr for Endpoint {
    type Err = ParseEndpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (transport, addr) = if let Some(rest) = s.strip_prefix("utp:") {
            (Transport::Utp, rest)
        } else if let Some(rest) = s.strip_prefix("tcp:") {
            (Transport::Tcp, rest)
        } else {
            (Transport::Tcp, s)
        };
        let addr = addr.parse().map_err(|_| ParseEndpointError(s.to_owned()))?;
        Ok(Self { transport, addr })
    }
}

impl From<Endpoint> for String {
    fn from(endpoint: Endpoint) -> Self {
        endpoint.to_string()
    }
}

impl TryFrom<String> for Endpoint {
    type Error = ParseEndpointError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// A peer to dial: an endpoint, and the id expected there if known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contact {
    /// The peer that must answer, or `None` to accept whoever does.
    pub id: Option<PeerId>,
    /// Where to dial.
    pub addr: Endpoint,
}

/// Why a string is not a contact.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseContactError {
    /// The part before `@` is not a peer id.
    #[error("bad peer id in contact: {0}")]
    PeerId(#[from] ParsePeerIdError),
    /// The address is not an endpoint.
    #[error("bad address in contact: {0}")]
    Addr(#[from] ParseEndpointError),
}

impl FromStr for Contact {
    type Err = ParseContactError;

    /// Parses `[ID@]ENDPOINT`, where an endpoint is `IP:PORT` (TCP),
    /// `tcp:IP:PORT` or `utp:IP:PORT`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (id, addr) = match s.split_once('@') {
            Some((id, addr)) => (Some(id.parse()?), addr),
            None => (None, s),
        };
        Ok(Self {
            id,
            addr: addr.parse()?,
        })
    }
}

impl fmt::Display for Contact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.id {
            Some(id) => write!(f, "{id}@{}", self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretId;

    #[test]
    fn endpoints_round_trip_through_text_and_json() {
        for text in ["tcp:127.0.0.1:1", "utp:[::1]:65535", "utp:192.0.2.7:5483"] {
            let endpoint: Endpoint = text.parse().unwrap();
            assert_eq!(endpoint.to_string(), text);
            let json = serde_json::to_string(&endpoint).unwrap();
            assert_eq!(serde_json::from_str::<Endpoint>(&json).unwrap(), endpoint);
        }
        assert!("utp:".parse::<Endpoint>().is_err());
        assert!("utp:1.2.3.4".parse::<Endpoint>().is_err());
    }

    #[test]
    fn contacts_parse_and_print() {
        let id = SecretId::generate().peer_id();
        let text = format!("{id}@utp:127.0.0.1:5483");
        let contact: Contact = text.parse().unwrap();
        assert_eq!(contact.id, Some(id));
        assert_eq!(
            contact.addr,
            Endpoint::utp("127.0.0.1:5483".parse().unwrap())
        );
        assert_eq!(contact.to_string(), text);
        let bare: Contact = "[::1]:9".parse().unwrap();
        assert_eq!(bare.id, None);
        assert_eq!(bare.addr.transport, Transport::Tcp);
        assert_eq!(bare.to_string(), "tcp:[::1]:9");
        assert!(matches!(
            format!("{id}@quic:1.2.3.4:5").parse::<Contact>(),
            Err(ParseContactError::Addr(_))
        ));
        assert!(matches!(
            "nope@1.2.3.4:5".parse::<Contact>(),
            Err(ParseContactError::PeerId(_))
        ));
        assert!(matches!(
            format!("{id}@1.2.3.4").parse::<Contact>(),
            Err(ParseContactError::Addr(_))
        ));
    }
}
