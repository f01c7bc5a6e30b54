//! What a connection reports to its driver and application: transmits,
//! events, errors, counters and the lifecycle state.

use std::fmt;
use std::net::SocketAddr;

use super::packet::DecodeError;

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// The uTP packet.
    pub contents: Vec<u8>,
    /// Set the IP "don't fragment" bit: this is a path-MTU probe. If the
    /// socket refuses it as too large (`EMSGSIZE`), report that with
    /// [`Connection::handle_mtu_probe_rejected`](super::Connection::handle_mtu_probe_rejected).
    pub dont_fragment: bool,
}

/// Something the application should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The handshake completed (initiator: SYN acknowledged; acceptor: the
    /// initiator's first DATA arrived).
    Connected,
    /// New bytes can be read.
    Readable,
    /// Send-buffer space freed after a short write.
    Writable,
    /// The peer closed its direction: after the buffered bytes, reads end.
    PeerFinished,
    /// Both directions finished cleanly.
    Closed,
    /// The connection died.
    Lost(ConnectionError),
}

/// Why a connection died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The peer sent RESET (during connect: refused).
    Reset,
    /// The SYN was never answered.
    ConnectTimedOut,
    /// Too many consecutive retransmission timeouts.
    TimedOut,
    /// Nothing heard from the peer for the idle timeout.
    IdleTimeout,
    /// The local application aborted it.
    Aborted,
}

impl fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Reset => "connection reset by peer",
            Self::ConnectTimedOut => "connect timed out",
            Self::TimedOut => "connection timed out",
            Self::IdleTimeout => "connection idle for too long",
            Self::Aborted => "connection aborted",
        })
    }
}

impl std::error::Error for ConnectionError {}

/// Why [`Connection::read`](super::Connection::read) returned no bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadError {
    /// Nothing to read yet; wait for [`Event::Readable`].
    Blocked,
    /// The connection died before the stream ended.
    Lost(ConnectionError),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Blocked => f.write_str("no data ready"),
            Self::Lost(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ReadError {}

/// Why a SYN could not start a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AcceptError {
    /// The datagram does not decode.
    Decode(DecodeError),
    /// It decodes, but is not a SYN.
    NotSyn,
}

impl fmt::Display for AcceptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Decode(e) => write!(f, "{e}"),
            Self::NotSyn => f.write_str("not a syn packet"),
        }
    }
}

impl std::error::Error for AcceptError {}

/// Counters for tests, logs and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionStats {
    /// Datagrams sent, of every type.
    pub packets_sent: u64,
    /// DATA, FIN and SYN packets sent again.
    pub retransmits: u64,
    /// Retransmission timeouts that fired.
    pub timeouts: u64,
    /// Packets declared lost by duplicate ACKs or SACK.
    pub fast_losses: u64,
    /// Times the congestion window was halved.
    pub window_cuts: u64,
    /// Path-MTU probes sent.
    pub mtu_probes: u64,
    /// Losses that could have cut the window (none in the last RTT) but
    /// were not read as congestion: the queue was far below its recent
    /// peak and below half the target.
    pub random_losses: u64,
    /// Loss cuts undone because the "lost" packet was only reordered.
    pub spurious_retransmits: u64,
    /// Datagrams received.
    pub packets_received: u64,
}

/// Connection lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Initiator: SYN sent, waiting for the STATE reply.
    SynSent,
    /// Acceptor: SYN answered, waiting for the initiator's first DATA.
    SynRecv,
    /// Data flows (either side may have sent or received a FIN).
    Connected,
    /// Both FINs acknowledged; lingering to re-ACK a resent FIN.
    Closed,
    /// Gone: reset, timed out, or finished lingering.
    Dead,
}
