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

/// A snapshot of a connection's sending and receiving state, for
/// diagnostics (the soak bench prints one per second with
/// `SOAK_UTP_STATS=1`). Durations are `None` before the first sample.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Diagnostics {
    /// Lifecycle state.
    pub state: State,
    /// The counters.
    pub stats: ConnectionStats,
    /// Congestion window, bytes.
    pub cwnd: usize,
    /// Slow-start threshold, bytes (`usize::MAX` before the first exit).
    pub ssthresh: usize,
    /// In slow start.
    pub slow_start: bool,
    /// Bytes sent and neither acknowledged nor declared lost.
    pub in_flight: usize,
    /// The window the peer last advertised, bytes.
    pub peer_window: usize,
    /// The window we advertise now (free receive buffer), bytes.
    pub our_window: usize,
    /// Bytes written by the application and not yet packetised.
    pub send_queue: usize,
    /// Bytes packetised and not yet acknowledged.
    pub unacked: usize,
    /// Packets in the send window (acknowledged ones leave it).
    pub sent_packets: usize,
    /// In-order bytes the application has not read yet.
    pub readable: usize,
    /// The retransmission timeout, backoff included.
    pub rto: std::time::Duration,
    /// Smoothed RTT.
    pub srtt: Option<std::time::Duration>,
    /// Smallest RTT seen.
    pub min_rtt: Option<std::time::Duration>,
    /// Latest RTT sample.
    pub latest_rtt: Option<std::time::Duration>,
    /// The queuing delay LEDBAT steers on (filtered current delay minus
    /// base delay, clamped to the latest RTT's excess over the smallest).
    pub queuing_delay: Option<std::time::Duration>,
    /// The unfiltered latest one-way delay sample minus the base delay.
    pub raw_queuing_delay: Option<std::time::Duration>,
    /// The steady queue the loss classifier reads.
    pub steady_queue: Option<std::time::Duration>,
    /// The classifier's peak of the steady queue (last 30–60 s).
    pub peak_queue: std::time::Duration,
    /// The classifier's floor of the steady queue (last 30–60 s): our own
    /// queue is measured from it.
    pub queue_floor: std::time::Duration,
    /// The RACK reordering window.
    pub reorder_window: std::time::Duration,
    /// The packet-count reordering threshold.
    pub reorder_threshold: usize,
    /// Consecutive RTO expiries without progress.
    pub consecutive_timeouts: u32,
    /// The largest UDP payload known to pass the path.
    pub path_mtu: u16,
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
