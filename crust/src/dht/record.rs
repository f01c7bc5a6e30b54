//! Peer records: where a peer can be reached, signed by that peer, with a
//! version and an expiry; and the bounded [`RecordStore`] a node keeps them
//! in.
//!
//! A [`PeerRecord`] is encoded with postcard into a body of at most
//! [`MAX_RECORD_BODY`] bytes and signed by the peer's identity key over a
//! fixed context string followed by the body ([`SignedRecord`]). Whoever
//! receives one calls [`SignedRecord::verify`] with the current Unix time
//! before believing or storing it.

use std::collections::HashMap;

use crate::{Endpoint, PeerId, SecretId};
use serde::{Deserialize, Serialize};

use super::key::Key;

/// Largest encoded record body accepted.
pub const MAX_RECORD_BODY: usize = 1024;
/// Most endpoints a record may list.
pub const MAX_RECORD_ENDPOINTS: usize = 8;
/// Most rendezvous peers a record may list.
pub const MAX_RECORD_RENDEZVOUS: usize = 8;
/// Most endpoints a record may give for one rendezvous peer.
pub const MAX_RENDEZVOUS_ENDPOINTS: usize = 2;
/// Longest lifetime a record may claim.
pub const MAX_RECORD_TTL_SECS: u32 = 7 * 24 * 3600;
/// How far a record's issue time may be ahead of our clock.
pub const MAX_CLOCK_SKEW_SECS: u64 = 600;

/// v2: rendezvous peers carry their endpoints.
const SIGNING_CONTEXT: &[u8] = b"crust-chat dht peer record v2\0";

/// Where a peer can be reached, as the peer itself says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// Whose record this is; it is stored under this id's key and must be
    /// signed by this id.
    #[serde(with = "peer_bytes")]
    pub peer: PeerId,
    /// Grows with every new record from the same peer; an older version
    /// never replaces a newer one.
    pub version: u64,
    /// When it was made, in seconds since the Unix epoch.
    pub issued_at: u64,
    /// How long after `issued_at` it stays valid, in seconds.
    pub ttl_secs: u32,
    /// Addresses the peer listens on (public, mapped or LAN).
    pub endpoints: Vec<Endpoint>,
    /// Peers it keeps connections to and that can introduce others to it
    /// (forward a rendezvous for hole punching, or relay), with where they
    /// take connections, so that a peer not connected to them yet can be.
    pub rendezvous: Vec<RendezvousPeer>,
}

/// A rendezvous peer as a record names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RendezvousPeer {
    /// Its id.
    #[serde(with = "peer_bytes")]
    pub peer: PeerId,
    /// Where it takes connections (at most [`MAX_RENDEZVOUS_ENDPOINTS`];
    /// empty if the publisher does not know).
    pub endpoints: Vec<Endpoint>,
}

impl RendezvousPeer {
    /// `peer`, reachable at `endpoints`.
    pub fn new(peer: PeerId, endpoints: Vec<Endpoint>) -> Self {
        Self { peer, endpoints }
    }
}

impl PeerRecord {
    /// The Unix time (seconds) at which it stops being valid.
    pub fn expires_at(&self) -> u64 {
        self.issued_at.saturating_add(u64::from(self.ttl_secs))
    }

    /// The key it is stored under.
    pub fn key(&self) -> Key {
        Key::from(self.peer)
    }

    /// Encodes and signs it with `secret`, which must be `self.peer`'s key.
    pub fn sign(&self, secret: &SecretId) -> Result<SignedRecord, RecordError> {
        if secret.peer_id() != self.peer {
            return Err(RecordError::BadSignature);
        }
        check_shape(self)?;
        let body = postcard::to_stdvec(self).map_err(|_| RecordError::Malformed("encoding"))?;
        if body.len() > MAX_RECORD_BODY {
            return Err(RecordError::TooLarge {
                len: body.len(),
                max: MAX_RECORD_BODY,
            });
        }
        let signature = secret.sign(&signed_bytes(&body)).to_vec();
        Ok(SignedRecord { body, signature })
    }
}

/// Why a record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The body is larger than [`MAX_RECORD_BODY`].
    #[error("record body is {len} bytes, the limit is {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The body does not decode, or breaks a limit on its fields.
    #[error("malformed record: {0}")]
    Malformed(&'static str),
    /// The signature is not the named peer's.
    #[error("record signature does not verify")]
    BadSignature,
    /// Its lifetime is over.
    #[error("record expired")]
    Expired,
    /// Issued further in the future than clocks plausibly disagree.
    #[error("record issued in the future")]
    FromTheFuture,
    /// We already hold this version or a newer one with other contents.
    #[error("record version {offered} is not newer than version {have}")]
    Stale {
        /// The version held.
        have: u64,
        /// The version offered.
        offered: u64,
    },
    /// Offered under a key other than its peer's.
    #[error("record is for another key")]
    WrongKey,
    /// The store is full of records closer to us than this one.
    #[error("record store is full")]
    StoreFull,
}

/// A record's encoded body and its signature, as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRecord {
    body: Vec<u8>,
    signature: Vec<u8>,
}

impl SignedRecord {
    /// A record from raw parts, unchecked (for tests and decoders; call
    /// [`verify`](Self::verify) before trusting it).
    pub fn from_parts(body: Vec<u8>, signature: Vec<u8>) -> Self {
        Self { body, signature }
    }

    /// The encoded body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Checks size, encoding, signature and lifetime at Unix time
    /// `unix_now` (seconds), and returns the record.
    pub fn verify(&self, unix_now: u64) -> Result<PeerRecord, RecordError> {
        if self.body.len() > MAX_RECORD_BODY {
            return Err(RecordError::TooLarge {
                len: self.body.len(),
                max: MAX_RECORD_BODY,
            });
        }
        let signature: [u8; 64] = self
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| RecordError::BadSignature)?;
        let (record, rest) = postcard::take_from_bytes::<PeerRecord>(&self.body)
            .map_err(|_| RecordError::Malformed("body does not decode"))?;
        if !rest.is_empty() {
            return Err(RecordError::Malformed("trailing bytes"));
        }
        check_shape(&record)?;
        if !record.peer.verify(&signed_bytes(&self.body), &signature) {
            return Err(RecordError::BadSignature);
        }
        if record.issued_at > unix_now.saturating_add(MAX_CLOCK_SKEW_SECS) {
            return Err(RecordError::FromTheFuture);
        }
        if record.expires_at() <= unix_now {
            return Err(RecordError::Expired);
        }
        Ok(record)
    }
}

fn check_shape(record: &PeerRecord) -> Result<(), RecordError> {
    if record.endpoints.len() > MAX_RECORD_ENDPOINTS {
        return Err(RecordError::Malformed("too many endpoints"));
    }
    if record.rendezvous.len() > MAX_RECORD_RENDEZVOUS {
        return Err(RecordError::Malformed("too many rendezvous peers"));
    }
    if record
        .rendezvous
        .iter()
        .any(|r| r.endpoints.len() > MAX_RENDEZVOUS_ENDPOINTS)
    {
        return Err(RecordError::Malformed(
            "too many endpoints for a rendezvous peer",
        ));
    }
    if record.ttl_secs > MAX_RECORD_TTL_SECS {
        return Err(RecordError::Malformed("ttl too long"));
    }
    Ok(())
}

fn signed_bytes(body: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(SIGNING_CONTEXT.len() + body.len());
    bytes.extend_from_slice(SIGNING_CONTEXT);
    bytes.extend_from_slice(body);
    bytes
}

/// A record that passed [`SignedRecord::verify`], with its signed form to
/// pass on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRecord {
    /// The decoded record.
    pub record: PeerRecord,
    /// Its signed form, byte for byte as received.
    pub signed: SignedRecord,
}

/// The records a node holds for others, bounded: when full, a record for a
/// key closer to us than the farthest one held replaces it, others are
/// refused (a Kademlia node is responsible for the keys near it).
#[derive(Debug)]
pub struct RecordStore {
    me: Key,
    capacity: usize,
    records: HashMap<Key, VerifiedRecord>,
}

impl RecordStore {
    /// An empty store for the node `me`, holding at most `capacity` records.
    pub fn new(me: Key, capacity: usize) -> Self {
        Self {
            me,
            capacity,
            records: HashMap::new(),
        }
    }

    /// Stores `record` unless a newer (or equally new, different) one is
    /// held or the store is full of closer keys. Storing the very record
    /// already held succeeds and changes nothing.
    pub fn insert(&mut self, record: VerifiedRecord) -> Result<(), RecordError> {
        let key = record.record.key();
        if let Some(held) = self.records.get(&key) {
            if held.signed == record.signed {
                return Ok(());
            }
            if held.record.version >= record.record.version {
                return Err(RecordError::Stale {
                    have: held.record.version,
                    offered: record.record.version,
                });
            }
        } else if self.records.len() >= self.capacity {
            let farthest = self
                .records
                .keys()
                .max_by_key(|k| self.me.distance(k))
                .copied();
            match farthest {
                Some(far) if self.me.distance(&key) < self.me.distance(&far) => {
                    self.records.remove(&far);
                }
                _ => return Err(RecordError::StoreFull),
            }
        }
        self.records.insert(key, record);
        Ok(())
    }

    /// The record held for `key`, if it is still valid at `unix_now`.
    pub fn get(&self, key: &Key, unix_now: u64) -> Option<&VerifiedRecord> {
        self.records
            .get(key)
            .filter(|r| r.record.expires_at() > unix_now)
    }

    /// Drops every record expired at `unix_now`.
    pub fn purge(&mut self, unix_now: u64) {
        self.records.retain(|_, r| r.record.expires_at() > unix_now);
    }

    /// How many records are held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// A peer id on the wire as its 32 raw bytes (not crust's base32 text),
/// checked to be a valid key on the way in.
pub(crate) mod peer_bytes {
    use crate::PeerId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(id: &PeerId, s: S) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(id.as_bytes(), s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PeerId, D::Error> {
        let bytes = <[u8; 32]>::deserialize(d)?;
        PeerId::from_bytes(bytes).map_err(serde::de::Error::custom)
    }
}
