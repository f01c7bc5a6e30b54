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
//! Between crust peers each message travels in an [`Envelope`], a crust
//! message that starts with [`MAGIC`] and says whether the sender is a DHT
//! server ([`Mode`]), so any crust peer can take part. Two drivers run the
//! engine: [`Server`] here, which serves others and wants nothing for
//! itself (`crust-node` runs it), and chat-core's, which also publishes
//! its node's record and looks friends up.
//!
//! The parts: `key` (key space, distance), `record` (records, their store),
//! `message` (wire format), `routing` (k-buckets), `lookup` (one iterative
//! lookup), `engine` (the node), `envelope` (on a crust connection),
//! `mode` (server or client), `dials` (connections a driver opens for the
//! DHT), `server` (the serving driver).

mod dials;
mod engine;
mod envelope;
mod key;
mod lookup;
mod message;
mod mode;
mod record;
mod routing;
mod server;

pub use dials::{Dials, MAX_DIALS, MAX_WAITING};
pub use engine::{Config, Dht, Event, LookupStats, Output, QueryId};
pub use envelope::{Envelope, MAGIC, MAX_ENVELOPE_BYTES};
pub use key::{Distance, Key};
pub use message::{
    Contact, MAX_CONTACT_ENDPOINTS, MAX_MESSAGE_BYTES, MAX_NODES_PER_REPLY, Message, MessageError,
    WIRE_VERSION,
};
pub use mode::{Mode, ParseModeError, reachable_endpoints};
pub use record::{
    MAX_CLOCK_SKEW_SECS, MAX_RECORD_BODY, MAX_RECORD_ENDPOINTS, MAX_RECORD_RENDEZVOUS,
    MAX_RECORD_TTL_SECS, MAX_RENDEZVOUS_ENDPOINTS, PeerRecord, RecordError, RecordStore,
    RendezvousPeer, SignedRecord, VerifiedRecord,
};
pub use server::{Server, ServerConfig, ServerStatus, Wake};
