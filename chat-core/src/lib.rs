//! chat-core: Crust Chat without a screen.
//!
//! Everything a user can do, once, for both front ends: a [`Profile`]
//! directory (identity key, optionally passphrase-sealed; settings;
//! `history.sqlite`), contacts added by [`Invite`] and friend request,
//! [`safety_code`]s, and messages that are written to disk before they are
//! sent, retried until acknowledged, deduplicated, and ordered by the
//! sender's sequence. [`Node`] ties it together over a `crust` service and
//! reports [`Event`]s.
//!
//! The parts, in the order a program meets them:
//! - `profile`: the directory, its lock, settings, export and [`import`];
//! - `keyfile`: the identity key file (Argon2id + ChaCha20-Poly1305);
//! - `store`: the SQLite history (WAL, migrations, FTS5 search, paging);
//! - `invite` and `safety`: contact exchange and verification;
//! - `proto`: the versioned, postcard-encoded messages between nodes;
//! - `node` and `actor`: the API handle and the task that runs sessions;
//! - [`headless`]: the node driven by text lines (JSON lines out), for
//!   scripts and tests.
//!
//! See [`Node`] for an example of two nodes chatting.

mod actor;
/// The command-line options every client takes.
pub mod cli;
mod dht_driver;
pub mod headless;
mod invite;
mod keyfile;
mod mailbox;
mod node;
mod profile;
mod proto;
mod safety;
mod seal;
mod store;
#[cfg(test)]
mod tests;
mod types;

/// A small Kademlia DHT (sans-IO) saying where peers can be reached: crust's
/// engine, which every chat node runs (`dht_driver`).
pub use crust::dht;
pub use crust::{
    ConnectionInfo, ConnectionPath, Direction, Endpoint, Mapping, NatReport, PeerId,
    PortAllocation, Transport, UpnpMapping, VERSION,
};
pub use dht_driver::{DhtConfig, DhtMode, DhtStatus, RecordLookup, SystemClock, WallClock};
pub use invite::{Invite, InviteError, QrMatrix};
pub use keyfile::KeyError;
pub use node::{Event, NetworkReport, Node, NodeConfig, NodeError, NodeEvents, OpenError};
pub use profile::{PROFILE_ENV, Profile, ProfileError, Settings, import};
pub use safety::safety_code;
pub use store::{SCHEMA_VERSION, StoreError};
pub use types::{
    Contact, ContactState, Cursor, FriendRequest, HistoryPage, MAX_TEXT_BYTES, Message, MessageId,
    MessageState, ParseMessageIdError, Presence, describe_path,
};

/// Fills `buf` from the operating system's random generator.
pub(crate) fn fill_random(buf: &mut [u8]) {
    // getrandom fails only where the OS has no entropy source at all; no
    // key, token or id can be made safely there.
    #[allow(clippy::expect_used)]
    getrandom::fill(buf).expect("the operating system's random generator failed");
}

/// Decoders of untrusted bytes, for the fuzz targets in `fuzz/`; not a
/// stable API.
#[doc(hidden)]
pub mod fuzzing {
    /// Decodes one chat protocol message (network bytes); never panics.
    pub fn wire_message(bytes: &[u8]) -> bool {
        crate::proto::Wire::decode(bytes).is_ok()
    }

    /// A sealed message as a holder hands it over (network bytes, from a
    /// holder that may be hostile): opening it fails cleanly. And `bytes`
    /// as a body sealed from one fixed identity to another opens to
    /// itself, and not with any one bit flipped (`flip` picks the bit).
    pub fn sealed_message(bytes: &[u8], flip: usize) {
        let me = crust::SecretId::from_bytes(&[3; 32]);
        let _ = crate::seal::open(&me, bytes);
        let sender = crust::SecretId::from_bytes(&[4; 32]);
        if let Some(sealed) = crate::seal::seal(&sender, &me.peer_id(), bytes) {
            assert_eq!(
                crate::seal::open(&me, &sealed).ok(),
                Some((sender.peer_id(), bytes.to_vec()))
            );
            let mut damaged = sealed;
            let bit = flip % (damaged.len() * 8);
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(crate::seal::open(&me, &damaged).is_err());
        }
    }

    /// Reads an identity key file's text (disk bytes) with an optional
    /// passphrase.
    pub fn key_file(text: &str, passphrase: Option<&str>) -> bool {
        crate::keyfile::open(text, passphrase).is_ok()
    }
}
