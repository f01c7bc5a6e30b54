//! One uTP connection as a pure state machine.
//!
//! Create it with [`Connection::connect`] (initiator) or
//! [`Connection::accept`] (acceptor, from the peer's SYN), or let an
//! [`Endpoint`](super::Endpoint) do both. Then, in a loop:
//!
//! 1. feed every datagram from the peer to [`Connection::handle_datagram`];
//! 2. when the instant from [`Connection::poll_timeout`] passes, call
//!    [`Connection::handle_timeout`];
//! 3. send everything [`Connection::poll_transmit`] returns, until `None`;
//! 4. drain [`Connection::poll_event`].
//!
//! The application moves bytes with [`Connection::write`],
//! [`Connection::read`] and [`Connection::close`] at any time; call
//! `poll_transmit` afterwards.
//!
//! Interoperability with libutp and libtorrent decides several details, each
//! noted where it is implemented: the SYN's STATE reply carries our *next*
//! sequence number, the acceptor speaks only after the initiator's first DATA,
//! RESETs match ids ±1, and a `timestamp_difference` of 0 is not a sample.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::config::Config;
use super::ledbat::{Ledbat, RttInfo};
use super::packet::{self, DecodeError, HEADER_LEN, Header, Packet, PacketType, seq_lt};
use super::recv::{Inserted, RecvBuffer};
use super::rng::SplitMix64;
use super::rtt::RttEstimator;

const HALF_OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// SACKed packets sent later than a hole before it counts as lost; grows
/// when reordering fooled us.
const INITIAL_REORDER_THRESHOLD: usize = 3;
const MAX_REORDER_THRESHOLD: usize = 512;

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// The uTP packet.
    pub contents: Vec<u8>,
    /// Set the IP "don't fragment" bit: this is a path-MTU probe. If the
    /// socket refuses it as too large (`EMSGSIZE`), report that with
    /// [`Connection::handle_mtu_probe_rejected`].
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

/// Why [`Connection::read`] returned no bytes.
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

#[derive(Debug)]
struct Sent {
    seq: u16,
    ty: PacketType,
    payload: Vec<u8>,
    sent_at: Option<Instant>,
    transmissions: u32,
    /// Order of the last transmission, for SACK-based loss detection.
    tx_order: u64,
    need_resend: bool,
    sacked: bool,
    mtu_probe: bool,
    /// Declared lost by SACK or duplicate ACKs (not by the RTO).
    fast_lost: bool,
}

impl Sent {
    fn in_network(&self) -> bool {
        !self.sacked && !self.need_resend && self.sent_at.is_some()
    }
}

/// What acknowledgement bookkeeping needs from a [`Sent`] packet.
#[derive(Debug, Clone, Copy)]
struct Delivered {
    seq: u16,
    len: usize,
    sent_at: Option<Instant>,
    /// Karn: sent more than once, or marked for resending.
    ambiguous: bool,
    /// Fast-retransmitted, at this time.
    fast_resent_at: Option<Instant>,
    mtu_probe: bool,
    in_network: bool,
}

impl Delivered {
    fn of(s: &Sent) -> Self {
        Self {
            seq: s.seq,
            len: s.payload.len(),
            sent_at: s.sent_at,
            ambiguous: s.transmissions != 1 || s.need_resend,
            fast_resent_at: s
                .fast_lost
                .then_some(s.sent_at)
                .flatten()
                .filter(|_| s.transmissions > 1),
            mtu_probe: s.mtu_probe,
            in_network: s.in_network(),
        }
    }
}

#[derive(Debug)]
struct Mtu {
    floor: u16,
    ceiling: u16,
    max: u16,
    enabled: bool,
    probe_seq: Option<u16>,
    next_search: Option<Instant>,
}

impl Mtu {
    fn searching(&self) -> bool {
        self.enabled && self.ceiling >= self.floor.saturating_add(16)
    }

    fn probe_size(&self) -> u16 {
        self.floor + (self.ceiling - self.floor).div_ceil(2)
    }
}

/// A uTP connection; see the module docs for the call order.
#[derive(Debug)]
pub struct Connection {
    config: Config,
    remote: SocketAddr,
    state: State,
    initiator: bool,
    recv_id: u16,
    send_id: u16,
    epoch: Instant,
    ts_offset: u32,
    /// Next sequence number to send.
    seq_nr: u16,
    sent: VecDeque<Sent>,
    in_flight: usize,
    unacked_bytes: usize,
    tx_counter: u64,
    send_queue: VecDeque<u8>,
    recv: RecvBuffer,
    peer_wnd: usize,
    reply_micro: u32,
    rtt: RttEstimator,
    cc: Ledbat,
    mtu: Mtu,
    dup_acks: u32,
    last_peer_ts: Option<u32>,
    reorder_threshold: usize,
    ack_now: bool,
    unacked_packets: u32,
    ack_deadline: Option<Instant>,
    keepalive_due: bool,
    last_sent: Instant,
    last_recv: Instant,
    rto_deadline: Option<Instant>,
    consecutive_timeouts: u32,
    zero_window_deadline: Option<Instant>,
    zero_window_probe: bool,
    closing: bool,
    fin_queued: bool,
    fin_acked: bool,
    peer_finished_reported: bool,
    linger_deadline: Option<Instant>,
    error: Option<ConnectionError>,
    write_blocked: bool,
    last_advertised: usize,
    events: VecDeque<Event>,
    peer_syn_seq: u16,
    stats: ConnectionStats,
}

impl Connection {
    /// Starts a connection to `remote`: queues a SYN with a random connection
    /// id and initial sequence number drawn from `seed`.
    pub fn connect(now: Instant, remote: SocketAddr, config: Config, seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed);
        let recv_id = rng.next_u16();
        Self::connect_with_id(now, remote, config, recv_id, &mut rng)
    }

    pub(crate) fn connect_with_id(
        now: Instant,
        remote: SocketAddr,
        config: Config,
        recv_id: u16,
        rng: &mut SplitMix64,
    ) -> Self {
        let isn = rng.next_u16();
        let mut c = Self::new(
            now,
            remote,
            config,
            rng,
            true,
            recv_id,
            recv_id.wrapping_add(1),
            isn,
            0,
        );
        c.state = State::SynSent;
        c.push_sent(PacketType::Syn, Vec::new());
        c
    }

    /// Answers the peer's SYN (already received in `syn`): the connection
    /// starts in [`State::SynRecv`] with a STATE reply queued.
    pub fn accept(
        now: Instant,
        remote: SocketAddr,
        syn: &[u8],
        config: Config,
        seed: u64,
    ) -> Result<Self, AcceptError> {
        let packet = Packet::decode(syn).map_err(AcceptError::Decode)?;
        let mut rng = SplitMix64::new(seed);
        Self::accept_packet(now, remote, &packet, config, &mut rng)
    }

    pub(crate) fn accept_packet(
        now: Instant,
        remote: SocketAddr,
        syn: &Packet<'_>,
        config: Config,
        rng: &mut SplitMix64,
    ) -> Result<Self, AcceptError> {
        if syn.header.ty != PacketType::Syn {
            return Err(AcceptError::NotSyn);
        }
        let id = syn.header.conn_id;
        let isn = rng.next_u16();
        let mut c = Self::new(
            now,
            remote,
            config,
            rng,
            false,
            id.wrapping_add(1),
            id,
            isn,
            syn.header.seq_nr,
        );
        c.state = State::SynRecv;
        c.peer_syn_seq = syn.header.seq_nr;
        c.note_timestamps(now, &syn.header);
        c.peer_wnd = syn.header.wnd_size as usize;
        c.ack_now = true;
        Ok(c)
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        now: Instant,
        remote: SocketAddr,
        config: Config,
        rng: &mut SplitMix64,
        initiator: bool,
        recv_id: u16,
        send_id: u16,
        isn: u16,
        ack_nr: u16,
    ) -> Self {
        let floor = config.mtu_floor.max(HEADER_LEN as u16 + 64);
        let max = config.mtu_ceiling.max(floor);
        let mss = usize::from(floor) - HEADER_LEN;
        let recv = RecvBuffer::new(ack_nr, config.recv_buffer, config.max_reorder);
        Self {
            remote,
            state: State::SynSent,
            initiator,
            recv_id,
            send_id,
            epoch: now,
            ts_offset: rng.next_u32(),
            seq_nr: isn,
            sent: VecDeque::new(),
            in_flight: 0,
            unacked_bytes: 0,
            tx_counter: 0,
            send_queue: VecDeque::new(),
            last_advertised: recv.window(),
            recv,
            peer_wnd: mss,
            reply_micro: 0,
            rtt: RttEstimator::new(config.initial_rto, config.min_rto, config.max_rto),
            cc: Ledbat::new(&config, mss),
            mtu: Mtu {
                floor,
                ceiling: max,
                max,
                enabled: config.mtu_probing,
                probe_seq: None,
                next_search: None,
            },
            dup_acks: 0,
            last_peer_ts: None,
            reorder_threshold: INITIAL_REORDER_THRESHOLD,
            ack_now: false,
            unacked_packets: 0,
            ack_deadline: None,
            keepalive_due: false,
            last_sent: now,
            last_recv: now,
            rto_deadline: None,
            consecutive_timeouts: 0,
            zero_window_deadline: None,
            zero_window_probe: false,
            closing: false,
            fin_queued: false,
            fin_acked: false,
            peer_finished_reported: false,
            linger_deadline: None,
            error: None,
            write_blocked: false,
            events: VecDeque::new(),
            peer_syn_seq: 0,
            stats: ConnectionStats::default(),
            config,
        }
    }

    // ----- accessors -----

    /// Lifecycle state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The peer's address.
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// Our connection id: the `connection_id` of packets addressed to us.
    pub fn recv_id(&self) -> u16 {
        self.recv_id
    }

    /// The peer's connection id: what we put in our packets (except the SYN).
    pub fn send_id(&self) -> u16 {
        self.send_id
    }

    /// The sequence number our next DATA or FIN will carry.
    pub fn next_seq_nr(&self) -> u16 {
        self.seq_nr
    }

    /// The last in-order sequence number received from the peer.
    pub fn ack_nr(&self) -> u16 {
        self.recv.ack_nr()
    }

    /// The congestion window in bytes.
    pub fn congestion_window(&self) -> usize {
        self.cc.window()
    }

    /// Bytes sent and neither acknowledged nor declared lost.
    pub fn bytes_in_flight(&self) -> usize {
        self.in_flight
    }

    /// The smoothed round-trip time (the initial RTO before any sample).
    pub fn rtt(&self) -> Duration {
        self.rtt.srtt()
    }

    /// The current retransmission timeout, backoff included.
    pub fn rto(&self) -> Duration {
        self.rtt.rto()
    }

    /// The filtered one-way queuing delay LEDBAT is steering on.
    pub fn queuing_delay(&self) -> Option<Duration> {
        self.cc
            .queuing_delay(Some(self.rtt.latest()).filter(|_| self.rtt.has_sample()))
    }

    /// The largest UDP payload known to pass the path.
    pub fn path_mtu(&self) -> u16 {
        self.mtu.floor
    }

    /// Counters since the connection started.
    pub fn stats(&self) -> ConnectionStats {
        self.stats
    }

    /// Why the connection died, if it did.
    pub fn error(&self) -> Option<ConnectionError> {
        self.error
    }

    /// The state machine has nothing left to do: it died or finished lingering.
    pub fn is_drained(&self) -> bool {
        self.state == State::Dead
    }

    /// Bytes `write` would accept now.
    pub fn send_capacity(&self) -> usize {
        if self.closing || self.state == State::Dead || self.state == State::Closed {
            return 0;
        }
        self.config
            .send_buffer
            .saturating_sub(self.send_queue.len() + self.unacked_bytes)
    }

    /// Everything written has been sent and acknowledged.
    pub fn is_send_idle(&self) -> bool {
        self.send_queue.is_empty() && self.unacked_bytes == 0
    }

    // ----- application side -----

    /// Queues bytes for sending; returns how many fit in the send buffer
    /// (0 when full, closing or dead: a short write is back-pressure).
    pub fn write(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.send_capacity());
        self.send_queue.extend(&data[..n]);
        if n < data.len() {
            self.write_blocked = true;
        }
        n
    }

    /// Reads in-order bytes. `Ok(0)` (for a non-empty `buf`) means the peer
    /// finished its stream and everything has been read.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, ReadError> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.recv.read(buf);
        if n > 0 {
            self.maybe_window_update();
            return Ok(n);
        }
        if self.recv.finished() {
            return Ok(0);
        }
        match self.error {
            Some(e) => Err(ReadError::Lost(e)),
            None => Err(ReadError::Blocked),
        }
    }

    /// Finishes our direction: a FIN follows the queued bytes. Reading goes
    /// on until the peer's FIN.
    pub fn close(&mut self) {
        self.closing = true;
    }

    /// Drops the connection at once. The peer learns of it from the RESET
    /// the endpoint sends to its next packet.
    pub fn abort(&mut self) {
        if self.state != State::Dead {
            self.die(ConnectionError::Aborted);
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ----- network side -----

    /// Handles one datagram from the peer.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) -> Result<(), DecodeError> {
        let packet = Packet::decode(datagram)?;
        self.handle_packet(now, &packet);
        Ok(())
    }

    /// The socket refused the last "don't fragment" probe as too large
    /// (`EMSGSIZE`, or an ICMP "fragmentation needed"). It counts as the
    /// probe's loss, not as congestion.
    pub fn handle_mtu_probe_rejected(&mut self, now: Instant) {
        if let Some(seq) = self.mtu.probe_seq
            && let Some(i) = self.index_of(seq)
        {
            self.mark_lost(now, i);
        }
    }

    pub(crate) fn handle_packet(&mut self, now: Instant, p: &Packet<'_>) {
        if self.state == State::Dead {
            return;
        }
        let h = &p.header;
        self.last_recv = now;
        self.stats.packets_received += 1;
        if h.ty == PacketType::Reset {
            if self.state == State::Closed || self.only_fin_unacked() {
                // The peer had everything and stopped lingering before our
                // FIN's ack got through: that is a clean close.
                if self.state != State::Closed {
                    self.events.push_back(Event::Closed);
                }
                self.state = State::Dead;
            } else {
                self.die(ConnectionError::Reset);
            }
            return;
        }
        if h.ty == PacketType::Syn {
            // A resent SYN: our reply was lost. Answer again, same seq_nr.
            if !self.initiator && h.seq_nr == self.peer_syn_seq {
                self.ack_now = true;
            }
            return;
        }
        self.note_timestamps(now, h);
        self.peer_wnd = h.wnd_size as usize;
        if self.state == State::SynSent {
            let syn_seq = self.seq_nr.wrapping_sub(1);
            if h.ty != PacketType::State || h.ack_nr != syn_seq {
                return;
            }
            // libutp/libtorrent: the reply's seq_nr is the acceptor's next
            // sequence number, not yet used, so we have received up to seq−1.
            self.recv.set_ack_nr(h.seq_nr.wrapping_sub(1));
            self.state = State::Connected;
            self.events.push_back(Event::Connected);
        }
        // A STATE that left the peer before one we already have is old news,
        // not a duplicate ack (ACKs get reordered too).
        let in_order = self
            .last_peer_ts
            .is_none_or(|last| !packet::ts_lt(h.timestamp, last));
        if in_order {
            self.last_peer_ts = Some(h.timestamp);
        }
        self.process_ack(now, h.ack_nr, p.sack, h.ty == PacketType::State && in_order);
        if matches!(h.ty, PacketType::Data | PacketType::Fin) {
            self.process_data(now, h, p.payload);
        }
        self.check_closed(now);
    }

    fn note_timestamps(&mut self, now: Instant, h: &Header) {
        self.reply_micro = self.timestamp(now).wrapping_sub(h.timestamp);
        self.cc.on_reverse_delay_sample(now, self.reply_micro);
        // timestamp_difference 0 means the peer has no sample yet.
        if h.timestamp_diff != 0 {
            self.cc.on_delay_sample(now, h.timestamp_diff);
        }
    }

    fn process_data(&mut self, now: Instant, h: &Header, payload: &[u8]) {
        if self.state == State::SynRecv {
            // Any DATA or FIN after the SYN proves the initiator got our
            // reply, even one that overtook the first (as in libutp).
            if seq_lt(h.seq_nr, self.peer_syn_seq.wrapping_add(1)) {
                self.ack_now = true;
                return;
            }
            self.state = State::Connected;
            self.events.push_back(Event::Connected);
        }
        if self.state == State::Closed {
            self.ack_now = true;
            return;
        }
        let before = self.recv.readable();
        let fin = h.ty == PacketType::Fin;
        match self.recv.insert(h.seq_nr, payload, fin) {
            Inserted::InOrder if !fin && !self.recv.has_gap() => {
                self.unacked_packets += 1;
                if self.unacked_packets >= self.config.ack_every {
                    self.ack_now = true;
                } else if self.ack_deadline.is_none() {
                    self.ack_deadline = Some(now + self.config.delayed_ack);
                }
            }
            // Gaps, duplicates, drops and FINs are acknowledged at once so the
            // sender learns fast (SACK, window, end of stream).
            _ => self.ack_now = true,
        }
        if self.recv.readable() > before {
            self.events.push_back(Event::Readable);
        }
        if self.recv.eof_reached() && !self.peer_finished_reported {
            self.peer_finished_reported = true;
            self.events.push_back(Event::PeerFinished);
        }
    }

    fn index_of(&self, seq: u16) -> Option<usize> {
        let front = self.sent.front()?.seq;
        let i = usize::from(seq.wrapping_sub(front));
        (i < self.sent.len()).then_some(i)
    }

    fn process_ack(&mut self, now: Instant, ack_nr: u16, sack: Option<&[u8]>, is_state: bool) {
        let Some(front) = self.sent.front().map(|s| s.seq) else {
            return;
        };
        let last_acked = front.wrapping_sub(1);
        // Ignore acks for packets we never sent (or long gone).
        if seq_lt(ack_nr, last_acked) || !seq_lt(ack_nr, self.seq_nr) {
            return;
        }
        let flight_before = self.in_flight;
        let mut bytes_acked = 0;
        let mut rtt_sample = None;
        let count = usize::from(ack_nr.wrapping_sub(last_acked));
        for _ in 0..count {
            let Some(s) = self.sent.pop_front() else {
                break;
            };
            self.unacked_bytes -= s.payload.len();
            // Only a cumulative ack finishes our stream: a SACKed FIN still
            // has holes before it.
            if s.ty == PacketType::Fin {
                self.fin_acked = true;
            }
            if !s.sacked {
                bytes_acked += self.on_delivered(now, Delivered::of(&s), &mut rtt_sample);
            }
        }
        let mut newly_sacked = 0;
        if let Some(mask) = sack {
            for (byte_i, byte) in mask.iter().enumerate() {
                for bit in 0..8 {
                    if byte & (1 << bit) == 0 {
                        continue;
                    }
                    let seq = ack_nr
                        .wrapping_add(2)
                        .wrapping_add((byte_i * 8 + bit) as u16);
                    let Some(i) = self.index_of(seq) else {
                        continue;
                    };
                    if self.sent[i].sacked || self.sent[i].sent_at.is_none() {
                        continue;
                    }
                    let info = Delivered::of(&self.sent[i]);
                    self.sent[i].sacked = true;
                    self.sent[i].need_resend = false;
                    newly_sacked += 1;
                    bytes_acked += self.on_delivered(now, info, &mut rtt_sample);
                }
            }
        }
        if let Some(sample) = rtt_sample {
            self.rtt.on_sample(sample);
        }
        if count > 0 || self.peer_wnd < self.mss() {
            // Progress, or a live peer whose window is closed: not a dead path.
            self.consecutive_timeouts = 0;
        }
        if count > 0 {
            self.dup_acks = 0;
            self.rtt.on_progress();
        } else if is_state && newly_sacked == 0 && !self.sent.is_empty() {
            // Only STATE packets count as duplicate acks (libutp): DATA
            // repeats ack_nr legitimately, and the 29 s keep-alive acks
            // ack_nr − 1.
            self.dup_acks += 1;
            if self.dup_acks == 3
                && let Some(s) = self.sent.front()
                && !s.sacked
                && !s.need_resend
            {
                self.mark_lost(now, 0);
            }
        }
        if newly_sacked > 0 {
            self.detect_sack_losses(now);
        }
        if bytes_acked > 0 {
            let info = RttInfo {
                srtt: self.rtt.srtt(),
                latest: self.rtt.has_sample().then(|| self.rtt.latest()),
                min: self.rtt.min_rtt(),
            };
            self.cc.on_ack(now, bytes_acked, flight_before, info);
        }
        if count > 0 || newly_sacked > 0 {
            self.rto_deadline = (!self.sent.is_empty()).then(|| now + self.rtt.rto());
        }
        if self.write_blocked && self.send_capacity() > 0 {
            self.write_blocked = false;
            self.events.push_back(Event::Writable);
        }
    }

    /// Bookkeeping for one packet the peer has; returns the bytes newly
    /// delivered that were counted in flight.
    fn on_delivered(
        &mut self,
        now: Instant,
        s: Delivered,
        rtt_sample: &mut Option<Duration>,
    ) -> usize {
        // Karn: only packets sent once (and not since marked for resending)
        // give an RTT sample.
        if !s.ambiguous
            && let Some(at) = s.sent_at
        {
            *rtt_sample = Some(now.saturating_duration_since(at));
        }
        if s.mtu_probe && self.mtu.probe_seq == Some(s.seq) {
            self.mtu.probe_seq = None;
            self.mtu.floor = u16::try_from(s.len + HEADER_LEN)
                .unwrap_or(self.mtu.floor)
                .max(self.mtu.floor);
            self.cc.set_mss(self.mss());
            self.finish_mtu_search_if_done(now);
        }
        if let (Some(at), Some(min_rtt)) = (s.fast_resent_at, self.rtt.min_rtt())
            && now.saturating_duration_since(at) < min_rtt / 2
        {
            self.on_spurious_retransmit();
        }
        if s.in_network {
            self.in_flight -= s.len;
            s.len
        } else {
            0
        }
    }

    fn finish_mtu_search_if_done(&mut self, now: Instant) {
        if !self.mtu.searching() && self.mtu.enabled {
            self.mtu.next_search = Some(now + self.config.mtu_reprobe_interval);
        }
    }

    /// A packet is lost when three packets sent after its last transmission
    /// have been selectively acknowledged.
    fn detect_sack_losses(&mut self, now: Instant) {
        let mut orders: Vec<u64> = self
            .sent
            .iter()
            .filter(|s| s.sacked)
            .map(|s| s.tx_order)
            .collect();
        let k = self.reorder_threshold;
        if orders.len() < k {
            return;
        }
        let (_, kth, _) = orders.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
        let kth = *kth;
        let lost: Vec<usize> = self
            .sent
            .iter()
            .enumerate()
            .filter(|(_, s)| s.in_network() && s.tx_order < kth)
            .map(|(i, _)| i)
            .collect();
        for i in lost {
            self.mark_lost(now, i);
        }
    }

    /// An ACK for a retransmitted packet came back sooner than any round
    /// trip could: the original arrived, it was only reordered. Tolerate
    /// more reordering from now on and take back the window cut.
    fn on_spurious_retransmit(&mut self) {
        self.reorder_threshold = (self.reorder_threshold * 2).min(MAX_REORDER_THRESHOLD);
        if self.cc.undo_last_cut() {
            self.stats.spurious_retransmits += 1;
        }
    }

    fn mark_lost(&mut self, now: Instant, i: usize) {
        let s = &mut self.sent[i];
        if s.sacked || s.need_resend || s.sent_at.is_none() {
            return;
        }
        s.need_resend = true;
        self.in_flight -= s.payload.len();
        if s.mtu_probe && self.mtu.probe_seq == Some(s.seq) {
            // A lost probe lowers the ceiling; it says nothing about congestion.
            let size = u16::try_from(s.payload.len() + HEADER_LEN).unwrap_or(u16::MAX);
            self.mtu.probe_seq = None;
            self.mtu.ceiling = size.saturating_sub(1).max(self.mtu.floor);
            self.finish_mtu_search_if_done(now);
        } else {
            s.fast_lost = true;
            self.stats.fast_losses += 1;
            if self.cc.on_loss(now, self.rtt.srtt()) {
                self.stats.window_cuts += 1;
            }
        }
    }

    /// We have the peer's whole stream and it has ours, except perhaps the
    /// FIN itself.
    fn only_fin_unacked(&self) -> bool {
        self.recv.eof_reached()
            && self.fin_queued
            && self.send_queue.is_empty()
            && self
                .sent
                .iter()
                .all(|s| s.ty == PacketType::Fin || s.sacked)
    }

    fn check_closed(&mut self, now: Instant) {
        if self.state == State::Connected && self.fin_acked && self.recv.eof_reached() {
            self.state = State::Closed;
            self.linger_deadline = Some(now + self.config.linger.max(self.rtt.rto() * 3));
            self.rto_deadline = None;
            self.events.push_back(Event::Closed);
        }
    }

    fn die(&mut self, error: ConnectionError) {
        self.state = State::Dead;
        self.error = Some(error);
        self.events.push_back(Event::Lost(error));
    }

    /// When [`Connection::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Dead => return None,
            State::Closed => {
                return self
                    .linger_deadline
                    .into_iter()
                    .chain(self.ack_deadline)
                    .min();
            }
            _ => {}
        }
        let idle = match self.state {
            State::SynSent => None,
            _ => Some(self.last_recv + self.idle_timeout()),
        };
        // With packets in flight the RTO watches the path; keep-alives are
        // for quiet connections (NAT bindings, idle timeouts).
        let keepalive = (self.state == State::Connected && self.sent.is_empty())
            .then(|| self.last_sent + self.config.keepalive_interval);
        [
            self.rto_deadline,
            self.ack_deadline,
            self.zero_window_deadline,
            idle,
            keepalive,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs the timers that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Dead => return,
            State::Closed if self.linger_deadline.is_some_and(|d| now >= d) => {
                self.state = State::Dead;
                return;
            }
            _ => {}
        }
        if self.ack_deadline.is_some_and(|d| now >= d) {
            self.ack_deadline = None;
            self.ack_now = true;
        }
        if self.state == State::Closed {
            return;
        }
        if self.state != State::SynSent && now >= self.last_recv + self.idle_timeout() {
            self.die(ConnectionError::IdleTimeout);
            return;
        }
        if self.rto_deadline.is_some_and(|d| now >= d) {
            self.on_rto(now);
            if self.state == State::Dead {
                return;
            }
        }
        if self.zero_window_deadline.is_some_and(|d| now >= d) {
            self.zero_window_deadline = None;
            self.zero_window_probe = true;
            self.rtt.on_timeout();
        }
        if self.state == State::Connected
            && self.sent.is_empty()
            && now >= self.last_sent + self.config.keepalive_interval
        {
            self.keepalive_due = true;
        }
    }

    fn on_rto(&mut self, now: Instant) {
        self.rto_deadline = None;
        self.stats.timeouts += 1;
        if self.state == State::SynSent {
            let tries = self.sent.front().map_or(0, |s| s.transmissions);
            if tries > self.config.max_syn_retransmits {
                self.die(ConnectionError::ConnectTimedOut);
                return;
            }
        } else {
            self.consecutive_timeouts += 1;
            if self.consecutive_timeouts > self.config.max_timeouts {
                self.die(ConnectionError::TimedOut);
                return;
            }
            self.cc.on_timeout();
        }
        self.rtt.on_timeout();
        self.dup_acks = 0;
        for i in 0..self.sent.len() {
            let s = &mut self.sent[i];
            if s.in_network() {
                s.need_resend = true;
                s.fast_lost = false;
                self.in_flight -= s.payload.len();
                if s.mtu_probe && self.mtu.probe_seq == Some(s.seq) {
                    let size = u16::try_from(s.payload.len() + HEADER_LEN).unwrap_or(u16::MAX);
                    self.mtu.probe_seq = None;
                    self.mtu.ceiling = size.saturating_sub(1).max(self.mtu.floor);
                }
            }
        }
        self.finish_mtu_search_if_done(now);
    }

    /// A half-open acceptor gives up sooner, so a SYN flood cannot hold the
    /// half-open table for long.
    fn idle_timeout(&self) -> Duration {
        match self.state {
            State::SynRecv => self.config.idle_timeout.min(HALF_OPEN_TIMEOUT),
            _ => self.config.idle_timeout,
        }
    }

    fn mss(&self) -> usize {
        usize::from(self.mtu.floor) - HEADER_LEN
    }

    fn timestamp(&self, now: Instant) -> u32 {
        (now.saturating_duration_since(self.epoch).as_micros() as u32).wrapping_add(self.ts_offset)
    }

    fn push_sent(&mut self, ty: PacketType, payload: Vec<u8>) -> usize {
        self.unacked_bytes += payload.len();
        self.sent.push_back(Sent {
            seq: self.seq_nr,
            ty,
            payload,
            sent_at: None,
            transmissions: 0,
            tx_order: 0,
            need_resend: true,
            sacked: false,
            mtu_probe: false,
            fast_lost: false,
        });
        self.seq_nr = self.seq_nr.wrapping_add(1);
        self.sent.len() - 1
    }

    fn window(&self) -> usize {
        self.cc.window().min(self.peer_wnd)
    }

    fn maybe_window_update(&mut self) {
        let now_wnd = self.recv.window();
        let mss = self.mss();
        let grown = now_wnd.saturating_sub(self.last_advertised);
        if (self.last_advertised < 2 * mss && now_wnd >= 2 * mss)
            || grown >= self.config.recv_buffer / 4
        {
            self.ack_now = true;
        }
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if self.state == State::Dead {
            return None;
        }
        if let Some(t) = self.poll_resend(now) {
            return Some(t);
        }
        if self.state == State::Connected
            && let Some(t) = self.poll_new_data(now)
        {
            return Some(t);
        }
        if self.ack_now || self.keepalive_due {
            let ack_nr = if self.ack_now {
                self.recv.ack_nr()
            } else {
                // libutp's keep-alive: a STATE acking ack_nr − 1, which the
                // peer ignores as old and never counts as a duplicate ack.
                self.recv.ack_nr().wrapping_sub(1)
            };
            let sack = self.recv.sack();
            return Some(self.build(
                now,
                PacketType::State,
                self.seq_nr,
                ack_nr,
                sack.as_deref(),
                &[],
                false,
            ));
        }
        None
    }

    fn poll_resend(&mut self, now: Instant) -> Option<Transmit> {
        let i = self.sent.iter().position(|s| s.need_resend)?;
        let len = self.sent[i].payload.len();
        let first = self.sent[i].transmissions == 0;
        // Everything waits for the window, except that an empty pipe may
        // always take one packet and the oldest hole is retransmitted at once
        // (fast retransmit), as TCP does.
        let fast_retransmit = !first && i == 0;
        if self.in_flight > 0 && self.in_flight + len > self.window() && !fast_retransmit {
            return None;
        }
        if self.rto_deadline.is_none() {
            self.rto_deadline = Some(now + self.rtt.rto());
        }
        self.tx_counter += 1;
        let s = &mut self.sent[i];
        s.need_resend = false;
        s.sent_at = Some(now);
        s.transmissions += 1;
        s.tx_order = self.tx_counter;
        if s.transmissions > 1 {
            self.stats.retransmits += 1;
        }
        self.in_flight += len;
        let (ty, seq) = (s.ty, s.seq);
        // A probe that went missing is resent fragmentable: its bytes cannot
        // be split without renumbering the stream.
        let dont_fragment = s.mtu_probe && s.transmissions == 1;
        let payload = std::mem::take(&mut self.sent[i].payload);
        let conn_id = if ty == PacketType::Syn {
            self.recv_id
        } else {
            self.send_id
        };
        let ack_nr = if ty == PacketType::Syn {
            0
        } else {
            self.recv.ack_nr()
        };
        let mut t = self.build(now, ty, seq, ack_nr, None, &payload, dont_fragment);
        if ty == PacketType::Syn {
            // The SYN carries our recv_id (BEP 29); rewrite the id field.
            t.contents[2..4].copy_from_slice(&conn_id.to_be_bytes());
        }
        self.sent[i].payload = payload;
        Some(t)
    }

    fn poll_new_data(&mut self, now: Instant) -> Option<Transmit> {
        if self.send_queue.is_empty() {
            if self.closing && !self.fin_queued {
                self.fin_queued = true;
                self.push_sent(PacketType::Fin, Vec::new());
                return self.poll_resend(now);
            }
            return None;
        }
        let mss = self.mss();
        let window = self.window();
        let allowed = window.saturating_sub(self.in_flight);
        let mut size = mss.min(self.send_queue.len());
        let mut probe = false;
        if self.mtu.enabled
            && self.mtu.probe_seq.is_none()
            && !self.mtu.searching()
            && self.mtu.next_search.is_some_and(|t| now >= t)
        {
            self.mtu.next_search = None;
            self.mtu.ceiling = self.mtu.max;
        }
        if self.mtu.searching()
            && self.mtu.probe_seq.is_none()
            && self.cc.window() > 3 * usize::from(self.mtu.floor)
        {
            let probe_payload = usize::from(self.mtu.probe_size()) - HEADER_LEN;
            if self.send_queue.len() >= probe_payload
                && allowed >= probe_payload
                && self.peer_wnd >= probe_payload
            {
                size = probe_payload;
                probe = true;
            }
        }
        if allowed < size {
            if self.in_flight == 0 && (allowed > 0 || self.zero_window_probe) {
                // Never stall with an empty pipe: send what the window allows,
                // or one probe into a zero window.
                size = size.min(allowed.max(1));
                self.zero_window_probe = false;
            } else {
                if self.in_flight == 0 && self.zero_window_deadline.is_none() {
                    self.zero_window_deadline = Some(now + self.rtt.rto());
                }
                return None;
            }
        }
        self.zero_window_deadline = None;
        let payload: Vec<u8> = self.send_queue.drain(..size).collect();
        // Queued bytes move into the unacked count inside push_sent.
        let i = self.push_sent(PacketType::Data, payload);
        if probe {
            self.sent[i].mtu_probe = true;
            self.mtu.probe_seq = Some(self.sent[i].seq);
            self.stats.mtu_probes += 1;
        }
        self.poll_resend(now)
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        &mut self,
        now: Instant,
        ty: PacketType,
        seq_nr: u16,
        ack_nr: u16,
        sack: Option<&[u8]>,
        payload: &[u8],
        dont_fragment: bool,
    ) -> Transmit {
        let wnd = self.recv.window();
        let header = Header {
            ty,
            conn_id: self.send_id,
            timestamp: self.timestamp(now),
            timestamp_diff: self.reply_micro,
            wnd_size: u32::try_from(wnd).unwrap_or(u32::MAX),
            seq_nr,
            ack_nr,
        };
        let mut contents = Vec::new();
        packet::encode(&header, sack, payload, &mut contents);
        self.last_sent = now;
        self.last_advertised = wnd;
        self.stats.packets_sent += 1;
        self.keepalive_due = false;
        if ack_nr == self.recv.ack_nr() {
            self.ack_now = false;
            self.ack_deadline = None;
            self.unacked_packets = 0;
        }
        Transmit {
            destination: self.remote,
            contents,
            dont_fragment,
        }
    }
}
