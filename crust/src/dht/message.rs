//! What DHT nodes say to each other: [`Message`], encoded as one version
//! byte followed by postcard, and decoded with hard bounds (total size,
//! contacts per reply, endpoints per contact, record size) so a hostile
//! peer cannot make a node allocate or work much.

use crate::{Endpoint, PeerId};
use serde::{Deserialize, Serialize};

use super::key::Key;
use super::record::{MAX_RECORD_BODY, SignedRecord, peer_bytes};

/// The wire format's version byte.
pub const WIRE_VERSION: u8 = 1;
/// Largest encoded message accepted.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024;
/// Most contacts one `Nodes` reply may carry.
pub const MAX_NODES_PER_REPLY: usize = 20;
/// Most endpoints a contact may carry.
pub const MAX_CONTACT_ENDPOINTS: usize = 4;

/// A node as the routing table knows it: its id and where to dial it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// Its peer id (the crust identity the connection authenticates).
    #[serde(with = "peer_bytes")]
    pub id: PeerId,
    /// Addresses to dial it on (may be empty when it is reached through a
    /// connection it opened).
    pub endpoints: Vec<Endpoint>,
}

impl Contact {
    /// A contact with no known endpoints.
    pub fn new(id: PeerId) -> Self {
        Self {
            id,
            endpoints: Vec::new(),
        }
    }

    /// Its key.
    pub fn key(&self) -> Key {
        Key::from(self.id)
    }
}

/// One DHT message. Requests carry an id their reply repeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Are you there?
    Ping {
        /// Request id.
        id: u64,
    },
    /// Yes.
    Pong {
        /// The request's id.
        id: u64,
    },
    /// Which nodes do you know closest to `target`?
    FindNode {
        /// Request id.
        id: u64,
        /// The key looked up.
        target: Key,
    },
    /// These (the reply to `FindNode`, or to `FindValue` without a record).
    Nodes {
        /// The request's id.
        id: u64,
        /// Up to k contacts, closest first.
        nodes: Vec<Contact>,
    },
    /// Do you hold the record for `target`? If not, who is closer?
    FindValue {
        /// Request id.
        id: u64,
        /// The key looked up.
        target: Key,
    },
    /// The record asked for.
    Value {
        /// The request's id.
        id: u64,
        /// The record.
        record: SignedRecord,
    },
    /// Keep this record (sent to the k closest nodes to its key).
    Store {
        /// The record.
        record: SignedRecord,
    },
}

/// Why bytes are not a DHT message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// Longer than [`MAX_MESSAGE_BYTES`].
    #[error("dht message is {0} bytes, the limit is {MAX_MESSAGE_BYTES}")]
    TooLarge(usize),
    /// Empty, or an unknown version byte.
    #[error("unknown dht wire version")]
    Version,
    /// Does not decode, or breaks a bound.
    #[error("malformed dht message: {0}")]
    Malformed(&'static str),
}

impl Message {
    /// The message's bytes: [`WIRE_VERSION`], then postcard.
    pub fn encode(&self) -> Vec<u8> {
        let out = vec![WIRE_VERSION];
        // Serializing plain data into a Vec cannot fail.
        match postcard::to_extend(self, out) {
            Ok(bytes) => bytes,
            Err(_) => vec![WIRE_VERSION],
        }
    }

    /// Decodes and bounds-checks a message from the network.
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(MessageError::TooLarge(bytes.len()));
        }
        let (&version, rest) = bytes.split_first().ok_or(MessageError::Version)?;
        if version != WIRE_VERSION {
            return Err(MessageError::Version);
        }
        let (message, trailing) = postcard::take_from_bytes::<Message>(rest)
            .map_err(|_| MessageError::Malformed("does not decode"))?;
        if !trailing.is_empty() {
            return Err(MessageError::Malformed("trailing bytes"));
        }
        message.check_bounds()?;
        Ok(message)
    }

    /// The limits [`decode`](Self::decode) enforces, for messages that
    /// arrive already decoded (as in in-process tests).
    pub fn check_bounds(&self) -> Result<(), MessageError> {
        match self {
            Message::Nodes { nodes, .. } => {
                if nodes.len() > MAX_NODES_PER_REPLY {
                    return Err(MessageError::Malformed("too many contacts"));
                }
                if nodes
                    .iter()
                    .any(|c| c.endpoints.len() > MAX_CONTACT_ENDPOINTS)
                {
                    return Err(MessageError::Malformed("too many endpoints"));
                }
            }
            Message::Value { record, .. } | Message::Store { record }
                if record.body().len() > MAX_RECORD_BODY =>
            {
                return Err(MessageError::Malformed("record too large"));
            }
            _ => {}
        }
        Ok(())
    }

    /// The request id it carries, if any (`Store` has none).
    pub fn request_id(&self) -> Option<u64> {
        match self {
            Message::Ping { id }
            | Message::Pong { id }
            | Message::FindNode { id, .. }
            | Message::Nodes { id, .. }
            | Message::FindValue { id, .. }
            | Message::Value { id, .. } => Some(*id),
            Message::Store { .. } => None,
        }
    }
}
