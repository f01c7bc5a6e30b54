//! uTP (BitTorrent BEP 29, "Micro Transport Protocol") for crust: reliable,
//! ordered byte streams over the service's one UDP socket, with LEDBAT
//! congestion control so bulk transfers yield to other traffic.
//!
//! - [`proto`] is the whole protocol as a sans-IO state machine (no sockets,
//!   no clock, seeded randomness), tested with a simulated pair.
//! - [`UtpSocket`] is the thin tokio driver around it: one UDP socket, many
//!   [`UtpStream`]s (`AsyncRead + AsyncWrite`), and a channel for every
//!   datagram that is not uTP (crust's own start with `b"CRST"`).
//!
//! ```ignore
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use crust::utp::{UtpSocket, proto::EndpointConfig};
//!
//! let (socket, _other) = UtpSocket::bind("127.0.0.1:0".parse().unwrap(), EndpointConfig::default()).await?;
//! let mut stream = socket.connect("127.0.0.1:4000".parse().unwrap()).await?;
//! stream.write_all(b"hello").await?; // the initiator speaks first
//! let mut reply = Vec::new();
//! stream.read_to_end(&mut reply).await?;
//! ```

#[cfg(test)]
mod libutp_interop;
pub mod proto;
mod socket;

pub use socket::{OtherDatagram, UtpSocket, UtpStream};
