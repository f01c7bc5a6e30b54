//! crust: connections between peers, found by their public keys.
//!
//! A peer is known by its [`PeerId`], an Ed25519 public key. A
//! [`Service`] listens, dials, and keeps one encrypted, authenticated
//! connection per peer; the application talks to it through a cheap,
//! cloneable handle and hears from it through an [`Events`] channel.
//!
//! ```
//! use crust::{Config, Event, Priority, SecretId, Service};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let listening = Config {
//!     listen: vec!["127.0.0.1:0".parse()?],
//!     ..Config::default()
//! };
//! let (alice, mut alice_events) = Service::start(listening, SecretId::generate()).await?;
//! let (bob, _bob_events) = Service::start(Config::default(), SecretId::generate()).await?;
//!
//! // Bob dials Alice by her id and address; the handshake proves her id.
//! let alice_addr = alice.listeners().await[0];
//! bob.connect(alice.id(), &[alice_addr]).await?;
//! bob.send(&alice.id(), &b"hello"[..], Priority::NORMAL).await?;
//!
//! loop {
//!     match alice_events.recv().await {
//!         Some(Event::NewMessage { peer, data }) => {
//!             assert_eq!(peer, bob.id());
//!             assert_eq!(data, &b"hello"[..]);
//!             break;
//!         }
//!         Some(_) => {} // listener started, connect success, ...
//!         None => unreachable!("the service is still running"),
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The layers, bottom up:
//! - [`secure`]: Noise XX (`Noise_XX_25519_ChaChaPoly_BLAKE2s`) over any byte
//!   stream, then encrypted, length-prefixed, chunked frames;
//! - the wire messages a connection carries (data, keep-alive pings);
//! - [`Service`]: listeners, dialling, bootstrap, simultaneous-dial
//!   resolution, priorities, keep-alives, lost-peer detection;
//! - [`BootstrapCache`]: peers that accepted us before, dialled first on the
//!   next start;
//! - NAT traversal: address echo from connected peers and UPnP mappings
//!   ([`NatReport`], [`Service::nat_report`]), rendezvous through a peer
//!   connected to both sides and UDP hole punching for uTP
//!   ([`Service::connect_via`], [`ConnectionPath`]);
//! - [`utp`]: uTP (BEP 29 with LEDBAT), a sans-IO protocol core and its
//!   tokio driver, the transport for hole-punched connections;
//! - [`dht`]: a Kademlia DHT of signed peer records saying where a peer can
//!   be reached, a sans-IO engine that any crust peer can run.

mod bootstrap_cache;
mod config;
pub mod dht;
#[cfg(feature = "fault-injection")]
#[doc(hidden)]
pub mod faults;
mod fsutil;
/// Entry points of the fuzz targets in `fuzz/`: every decoder of untrusted
/// bytes. Not a stable API.
#[doc(hidden)]
pub mod fuzzing;
mod id;
pub mod mailbox;
mod nat;
pub mod probe;
mod rng;
pub mod secure;
mod service;
pub mod utp;
mod wire;

pub use bootstrap_cache::{BootstrapCache, CacheEntry, CacheError};
pub use config::{Config, Contact, Endpoint, ParseContactError, ParseEndpointError};
pub use id::{KeyFileError, ParsePeerIdError, PeerId, SecretId};
pub use nat::{Mapping, NatReport, Observation, PortAllocation, UpnpMapping};
pub use secure::{ChannelConfig, FrameError, HandshakeError, Intent};
pub use service::{
    ConnectError, ConnectionInfo, ConnectionPath, DialError, Direction, Event, Events,
    LanDiscovery, LostReason, Priority, SendError, Service, ServiceError, Transport,
    TraversalTiming,
};

/// crust's version and the commit it was built from, e.g. `0.1.0 (1a2b3c4d5e6f)`:
/// what the binaries print for `--version`. The commit is "unknown" outside a
/// git checkout unless `CRUST_BUILD_COMMIT` was set at build time.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("CRUST_BUILD_COMMIT"),
    ")"
);
