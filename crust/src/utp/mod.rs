//! uTP (BitTorrent BEP 29, "Micro Transport Protocol") for crust: reliable,
//! ordered byte streams over the service's one UDP socket, with LEDBAT
//! congestion control so bulk transfers yield to other traffic.
//!
//! [`proto`] is the whole protocol as a sans-IO state machine; a thin tokio
//! driver around it will live beside it in this module.

pub mod proto;
