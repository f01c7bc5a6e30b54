//! `crust::utp::proto`: uTP (BitTorrent BEP 29) with LEDBAT congestion
//! control as a pure state machine, in the style of quinn-proto.
//!
//! Nothing here touches a socket, a clock or a global RNG: time comes in as
//! `now: Instant` arguments and every random choice derives from a caller's
//! seed. That makes loss, reordering and hours of traffic testable in
//! milliseconds, deterministically (see the simulated-pair tests).
//!
//! - [`Endpoint`] demultiplexes many connections on one socket, accepts SYNs
//!   (bounded accept queue and half-open table) and answers strays with a
//!   rate-limited RESET.
//! - [`Connection`] is one stream: `handle_datagram(now, bytes)`,
//!   `handle_timeout(now)`, `poll_transmit(now)`, `poll_timeout()`,
//!   `poll_event()`, and `write`/`read`/`close` for the application.
//! - [`Packet`] and [`encode`] are the wire format; [`Config`] the tunables,
//!   including the congestion controller ([`CongestionMode`]).
//!
//! The driver's loop: feed datagrams, run due timers, flush transmits, arm
//! the timer at `poll_timeout`, forward events. Transmits flagged
//! `dont_fragment` are path-MTU probes; report `EMSGSIZE` for them with
//! [`Endpoint::handle_transmit_too_large`].

mod config;
mod connection;
mod endpoint;
mod event;
mod ledbat;
mod packet;
mod recv;
use crate::rng;
mod rtt;

#[cfg(test)]
mod tests;

pub use config::{Config, CongestionMode, EndpointConfig};
pub use connection::{
    AcceptError, Connection, ConnectionError, ConnectionStats, Diagnostics, Event, ReadError,
    State, Transmit,
};
pub use endpoint::{ConnectionHandle, DatagramOutcome, Endpoint};
pub use packet::{
    DecodeError, EXT_BITS, EXT_CLOSE_REASON, EXT_CRUST, EXT_SACK, HEADER_LEN, Header, Packet,
    PacketType, VERSION, encode, encode_with, looks_like_utp,
};
