//! crust: connections between peers, found by their public keys.
//!
//! A peer is known by its [`PeerId`], an Ed25519 public key. A
//! [`Service`] listens, dials, and keeps one encrypted, authenticated
//! connection per peer; the application talks to it through a cheap,
//! cloneable handle and hears from it through an [`Events`] channel.
//!
//! The layers, bottom up:
//! - [`secure`]: Noise XX (`Noise_XX_25519_ChaChaPoly_BLAKE2s`) over any byte
//!   stream, then encrypted, length-prefixed, chunked frames;
//! - the wire messages a connection carries (data, keep-alive pings);
//! - [`Service`]: listeners, dialling, bootstrap, simultaneous-dial
//!   resolution, priorities, keep-alives, lost-peer detection;
//! - [`BootstrapCache`]: peers that accepted us before, dialled first on the
//!   next start.

mod bootstrap_cache;
mod config;
mod fsutil;
mod id;
pub mod secure;
mod service;
mod wire;

pub use bootstrap_cache::{BootstrapCache, CacheEntry, CacheError};
pub use config::{Config, Contact, ParseContactError};
pub use id::{KeyFileError, ParsePeerIdError, PeerId, SecretId};
pub use secure::{ChannelConfig, FrameError, HandshakeError, Intent};
pub use service::{
    ConnectError, ConnectionInfo, Direction, Event, Events, LostReason, Priority, SendError,
    Service, ServiceError, Transport,
};
