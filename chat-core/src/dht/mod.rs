//! A small Kademlia DHT that says where peers can be reached, without I/O.
//!
//! Keys are crust peer ids (Ed25519 public keys, 256 bits) compared by XOR
//! distance. Each node keeps 256 k-buckets (k = 20) of contacts in
//! least-recently-seen order and pings a full bucket's oldest contact
//! before replacing it. Lookups are iterative: ask the α = 3 closest
//! unasked candidates, merge the closer nodes they name, stop when the k
//! closest have all answered, a record was found, or the lookup's time is
//! up. Values are [`PeerRecord`]s: signed by their peer, versioned,
//! expiring, at most [`MAX_RECORD_BODY`] bytes.
//!
//! The engine, [`Dht`], is a state machine: the driver passes in the time,
//! received [`Message`]s and commands, and carries out the returned
//! [`Output`]s (messages to send over crust, [`Event`]s to report). See
//! `engine` for the order of calls, and `tests/dht.rs` for a simulated
//! network of hundreds of nodes.
//!
//! The parts: `key` (key space, distance), `record` (records, their store),
//! `message` (wire format), `routing` (k-buckets), `lookup` (one iterative
//! lookup), `engine` (the node).

mod engine;
mod key;
mod lookup;
mod message;
mod record;
mod routing;

pub use engine::{Config, Dht, Event, LookupStats, Output, QueryId};
pub use key::{Distance, Key};
pub use message::{
    Contact, MAX_CONTACT_ENDPOINTS, MAX_MESSAGE_BYTES, MAX_NODES_PER_REPLY, Message, MessageError,
    WIRE_VERSION,
};
pub use record::{
    MAX_CLOCK_SKEW_SECS, MAX_RECORD_BODY, MAX_RECORD_ENDPOINTS, MAX_RECORD_RENDEZVOUS,
    MAX_RECORD_TTL_SECS, PeerRecord, RecordError, RecordStore, SignedRecord, VerifiedRecord,
};
