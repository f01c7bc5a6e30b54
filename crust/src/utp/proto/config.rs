//! Tunables for connections and the endpoint. Build a [`Config`] (the
//! defaults follow libutp and libtorrent where they agree), optionally change
//! fields, and hand it to [`Endpoint::new`](super::Endpoint::new) or
//! [`Connection::connect`](super::Connection::connect).

use std::time::Duration;

/// Which delay-based congestion controller a connection runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CongestionMode {
    /// RFC 6817 LEDBAT as uTP deploys it: 100 ms target, gain 1.
    #[default]
    Ledbat,
    /// LEDBAT++: 60 ms target, dynamic gain, multiplicative decrease and
    /// periodic slowdowns.
    LedbatPlusPlus,
}

/// Per-connection configuration.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Congestion controller.
    pub congestion: CongestionMode,
    /// Queuing-delay target; `None` means the mode's default (100 ms or 60 ms).
    pub target_delay: Option<Duration>,
    /// Bytes the application may queue for sending (including unacked bytes).
    pub send_buffer: usize,
    /// Bytes of receive buffer advertised to the peer (in-order plus reordered).
    pub recv_buffer: usize,
    /// The most packets held out of order; also bounds the SACK we send.
    pub max_reorder: u16,
    /// UDP payload size that is always safe; packets start at this size.
    pub mtu_floor: u16,
    /// Largest UDP payload to probe for (interface MTU minus IP/UDP headers).
    pub mtu_ceiling: u16,
    /// Probe the path MTU upward from the floor.
    pub mtu_probing: bool,
    /// Let the driver raise `mtu_ceiling` to what the local interface
    /// towards the peer carries (as libtorrent seeds its search): 65507 on
    /// loopback, 8972 on a jumbo-frame LAN; the DF probes then find what the
    /// path really passes. This forces it for every peer; without it the
    /// same happens only when the peer is crust (see `crust_hello`). Off by
    /// default: other implementations read into fixed buffers (libutp-rs2:
    /// 16 KiB), so a probe above that would be truncated at every resend.
    pub mtu_from_interface: bool,
    /// Announce crust's hello extension in the SYN and in the SYN reply:
    /// "crust, and I can receive datagrams of `max_datagram` bytes". When
    /// both ends announce it, the path-MTU search starts from the route's
    /// MTU, capped at the smaller of the two `max_datagram`s; against any
    /// other implementation nothing changes. On by default.
    pub crust_hello: bool,
    /// The largest UDP payload this end can receive, announced in the hello
    /// (crust's driver reads into 64 KiB buffers).
    pub max_datagram: u16,
    /// Redo MTU discovery this often.
    pub mtu_reprobe_interval: Duration,
    /// RTO before any RTT sample (also the SYN's).
    pub initial_rto: Duration,
    /// RFC 6298's lower bound (BEP 29 uses 500 ms).
    pub min_rto: Duration,
    /// Upper bound of the backed-off RTO.
    pub max_rto: Duration,
    /// Retransmissions of a SYN before the connect fails.
    pub max_syn_retransmits: u32,
    /// Consecutive RTO expiries on an established connection before it dies.
    pub max_timeouts: u32,
    /// How long an ACK may be held back hoping to piggyback or coalesce.
    pub delayed_ack: Duration,
    /// Send an ACK at once after this many unacknowledged data packets.
    pub ack_every: u32,
    /// Send a keep-alive after this long without sending anything.
    pub keepalive_interval: Duration,
    /// Give up after this long without hearing from the peer.
    pub idle_timeout: Duration,
    /// How long a cleanly closed connection stays to re-ACK a resent FIN.
    pub linger: Duration,
    /// Initial congestion window in packets.
    pub initial_window_packets: u32,
    /// Number of one-minute buckets of base-delay history (RFC 6817 BASE_HISTORY).
    pub base_delay_history: usize,
    /// Number of recent delay samples whose minimum is the current delay.
    pub delay_filter: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            congestion: CongestionMode::Ledbat,
            target_delay: None,
            send_buffer: 1 << 20,
            recv_buffer: 1 << 20,
            max_reorder: 1024,
            mtu_floor: 1232,
            mtu_ceiling: 1472,
            mtu_probing: true,
            mtu_from_interface: false,
            crust_hello: true,
            max_datagram: 65507,
            mtu_reprobe_interval: Duration::from_secs(30 * 60),
            initial_rto: Duration::from_secs(1),
            min_rto: Duration::from_millis(500),
            max_rto: Duration::from_secs(60),
            max_syn_retransmits: 3,
            max_timeouts: 7,
            delayed_ack: Duration::from_millis(10),
            ack_every: 2,
            keepalive_interval: Duration::from_secs(29),
            idle_timeout: Duration::from_secs(65),
            linger: Duration::from_secs(3),
            initial_window_packets: 4,
            base_delay_history: 10,
            delay_filter: 3,
        }
    }
}

impl Config {
    /// The effective queuing-delay target.
    pub fn target(&self) -> Duration {
        self.target_delay.unwrap_or(match self.congestion {
            CongestionMode::Ledbat => Duration::from_millis(100),
            CongestionMode::LedbatPlusPlus => Duration::from_millis(60),
        })
    }
}

/// Configuration of an [`Endpoint`](super::Endpoint).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EndpointConfig {
    /// Configuration given to every connection.
    pub connection: Config,
    /// Accept incoming SYNs at all.
    pub accept_incoming: bool,
    /// Connections accepted but not yet taken by [`Endpoint::accept`](super::Endpoint::accept).
    pub accept_queue: usize,
    /// Incoming connections that have not yet received their first DATA.
    pub max_half_open: usize,
    /// RESETs sent to unknown connections: burst size.
    pub reset_burst: u32,
    /// RESETs sent to unknown connections: sustained rate per second.
    pub resets_per_second: u32,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            connection: Config::default(),
            accept_incoming: true,
            accept_queue: 128,
            max_half_open: 64,
            reset_burst: 20,
            resets_per_second: 10,
        }
    }
}
