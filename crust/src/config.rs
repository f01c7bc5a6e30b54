//! Settings of a [`Service`](crate::Service), and the `ID@ADDR` contact form.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::id::{ParsePeerIdError, PeerId};
use crate::secure::ChannelConfig;

/// How a service behaves. `Config::default()` suits a real deployment; tests
/// shorten the timers.
#[derive(Debug, Clone)]
pub struct Config {
    /// The secure channel: network id, handshake timeout, frame and message
    /// limits.
    pub channel: ChannelConfig,
    /// TCP addresses to listen on when the service starts.
    pub listen: Vec<SocketAddr>,
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
    /// Bytes queued for one peer before `send` waits.
    pub send_queue_limit: usize,
    /// Bytes received from one peer and not yet taken from [`Events`]
    /// before reading from that peer pauses.
    ///
    /// [`Events`]: crate::Events
    pub receive_buffer_limit: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            channel: ChannelConfig::default(),
            listen: Vec::new(),
            bootstrap_contacts: Vec::new(),
            bootstrap_keep: 4,
            bootstrap_cache: None,
            bootstrap_cache_capacity: 200,
            dial_timeout: Duration::from_secs(10),
            max_concurrent_dials: 16,
            keepalive_interval: Duration::from_secs(5),
            peer_timeout: Duration::from_secs(20),
            max_pending_handshakes: 128,
            send_queue_limit: 8 * 1024 * 1024,
            receive_buffer_limit: 4 * 1024 * 1024,
        }
    }
}

/// A peer to dial: an address, and the id expected there if known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contact {
    /// The peer that must answer, or `None` to accept whoever does.
    pub id: Option<PeerId>,
    /// Where to dial.
    pub addr: SocketAddr,
}

/// Why a string is not a contact.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseContactError {
    /// The part before `@` is not a peer id.
    #[error("bad peer id in contact: {0}")]
    PeerId(#[from] ParsePeerIdError),
    /// The address is not `IP:PORT`.
    #[error("bad address in contact {0:?}: expected IP:PORT")]
    Addr(String),
}

impl FromStr for Contact {
    type Err = ParseContactError;

    /// Parses `ID@IP:PORT` or `IP:PORT`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (id, addr) = match s.split_once('@') {
            Some((id, addr)) => (Some(id.parse()?), addr),
            None => (None, s),
        };
        let addr = addr
            .parse()
            .map_err(|_| ParseContactError::Addr(addr.to_owned()))?;
        Ok(Self { id, addr })
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
    fn contacts_parse_and_print() {
        let id = SecretId::generate().peer_id();
        let text = format!("{id}@127.0.0.1:5483");
        let contact: Contact = text.parse().unwrap();
        assert_eq!(contact.id, Some(id));
        assert_eq!(contact.to_string(), text);
        let bare: Contact = "[::1]:9".parse().unwrap();
        assert_eq!(bare.id, None);
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
