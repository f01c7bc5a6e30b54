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
//! sequence number (the initiator acks `seq_nr − 1`); a duplicate SYN is
//! answered again with the same sequence number; a retried SYN keeps its
//! sequence number but takes a fresh connection id, because libutp drops a
//! SYN whose id it knows and never repeats its reply; the acceptor speaks
//! only after the initiator's first DATA; RESETs match ids ±1; a
//! `timestamp_difference` of 0 is not a sample; only STATE packets count as
//! duplicate ACKs, and the keep-alive acks `ack_nr − 1`.

mod recovery;
mod transmit;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::config::Config;
pub use super::event::{
    AcceptError, ConnectionError, ConnectionStats, Diagnostics, Event, ReadError, State, Transmit,
};
use super::ledbat::{Ledbat, queue_bound};
use super::packet::{DecodeError, HEADER_LEN, Header, Packet, PacketType, seq_lt, ts_lt};
use super::recv::{Inserted, RecvBuffer};
use super::rng::SplitMix64;
use super::rtt::RttEstimator;
use recovery::{Mtu, Rack, Sent};

const HALF_OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// SACKed packets sent later than a hole before it counts as lost; grows
/// when reordering fooled us.
const INITIAL_REORDER_THRESHOLD: usize = 3;
const MAX_REORDER_THRESHOLD: usize = 512;
/// The RACK reordering window grows to at most this many quarters of
/// min_rtt (and never past srtt).
const MAX_REO_WND_MULT: u32 = 16;

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
    /// Payload buffers of acknowledged packets, for the next ones.
    spare: Vec<Vec<u8>>,
    /// No packet before this index of `sent` needs resending, so
    /// `poll_resend` starts looking here: amortised O(1) per packet instead
    /// of a scan of the whole window.
    resend_from: usize,
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
    /// The UDP payload the route towards the peer carries, from the driver.
    interface_mtu: Option<u16>,
    /// The peer's crust hello: the largest datagram it can receive.
    peer_max_datagram: Option<u16>,
    dup_acks: u32,
    last_peer_ts: Option<u32>,
    reorder_threshold: usize,
    rack: Rack,
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
    rng: SplitMix64,
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
        c.peer_max_datagram = syn.crust_max_datagram;
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
            rng: SplitMix64::new(rng.next_u64()),
            seq_nr: isn,
            sent: VecDeque::new(),
            spare: Vec::new(),
            resend_from: 0,
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
            interface_mtu: None,
            peer_max_datagram: None,
            dup_acks: 0,
            last_peer_ts: None,
            reorder_threshold: INITIAL_REORDER_THRESHOLD,
            rack: Rack::default(),
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

    /// Initiator only, before the handshake: dial again under a new
    /// connection id; the sequence number stays the same (BEP 29 and the
    /// issue's "a resent SYN keeps its sequence number").
    ///
    /// Why not the same id, as libutp's own initiator does: libutp's
    /// acceptor (`utp_process_udp` in utp_internal.cpp) drops a SYN for
    /// which a socket keyed `(addr, id + 1)` exists ("rejected incoming
    /// connection, connection already exists") and never resends its STATE
    /// reply. Its half-open socket (`CS_SYN_RECV`) has no timer either:
    /// `rto_timeout` stays 0 until it sends DATA, which it cannot do before
    /// the initiator's first DATA. So once that reply is lost, every
    /// same-id SYN is ignored and the dial cannot succeed (libutp's own
    /// initiator has this bug against libutp). A new id is a new connection
    /// to libutp and is answered at once; the abandoned half-open socket is
    /// left to the application that accepted it. Acceptors that answer a repeated SYN
    /// (ours, libtorrent) lose nothing either way: our acceptor answers a
    /// duplicate SYN with the same id and the same `seq_nr`. Tested by
    /// `libutp_interop::our_initiator_to_libutp_with_two_percent_loss`
    /// and `proto::tests::interop`.
    pub(crate) fn renew_syn_id(&mut self, recv_id: u16) {
        if self.state == State::SynSent {
            self.recv_id = recv_id;
            self.send_id = recv_id.wrapping_add(1);
        }
    }

    /// Raises (or lowers) the largest UDP payload the path-MTU search may
    /// probe for, e.g. to what the local interface towards the peer
    /// carries; never below the floor. Call it before data flows.
    pub fn set_mtu_ceiling(&mut self, ceiling: u16) {
        let ceiling = ceiling.max(self.mtu.floor);
        self.mtu.max = ceiling;
        if self.mtu.probe_seq.is_none() {
            self.mtu.ceiling = ceiling;
        }
    }

    /// Tells the connection the largest UDP payload the local route towards
    /// the peer carries (the driver asks the OS). The path-MTU search then
    /// starts from it if `Config::mtu_from_interface` is on, or once the
    /// peer has announced crust's hello (both ends crust); it is capped at
    /// the peer's announced `max_datagram` and ours. Otherwise it is kept
    /// and unused, and the search stays under `Config::mtu_ceiling`.
    pub fn set_interface_mtu(&mut self, payload: u16) {
        self.interface_mtu = Some(payload);
        self.apply_interface_mtu();
    }

    fn apply_interface_mtu(&mut self) {
        let Some(iface) = self.interface_mtu else {
            return;
        };
        let negotiated = self.config.crust_hello && self.peer_max_datagram.is_some();
        if !(self.config.mtu_from_interface || negotiated) {
            return;
        }
        let mut ceiling = iface.min(self.config.max_datagram);
        if let Some(peer) = self.peer_max_datagram {
            ceiling = ceiling.min(peer);
        }
        self.set_mtu_ceiling(ceiling);
    }

    /// The peer announced crust's hello (and we announce ours): both ends
    /// are crust.
    pub fn peer_is_crust(&self) -> bool {
        self.config.crust_hello && self.peer_max_datagram.is_some()
    }

    /// `Config::mtu_from_interface` is on: the interface MTU is used
    /// whatever the peer is.
    pub fn forces_interface_mtu(&self) -> bool {
        self.config.mtu_from_interface
    }

    /// The largest UDP payload the path-MTU search may probe for now.
    pub fn mtu_ceiling(&self) -> u16 {
        self.mtu.max
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
        self.cc.queuing_delay(self.queue_bound())
    }

    /// How much queuing delay the latest RTT sample leaves room for.
    pub(super) fn queue_bound(&self) -> Option<Duration> {
        let latest = self.rtt.has_sample().then(|| self.rtt.latest());
        queue_bound(latest, self.rtt.min_rtt())
    }

    /// The largest UDP payload known to pass the path.
    pub fn path_mtu(&self) -> u16 {
        self.mtu.floor
    }

    /// Counters since the connection started.
    pub fn stats(&self) -> ConnectionStats {
        self.stats
    }

    /// A snapshot of the sending and receiving state, for diagnostics.
    pub fn diagnostics(&self) -> Diagnostics {
        let latest = self.rtt.has_sample().then(|| self.rtt.latest());
        let (raw_queuing_delay, steady_queue, peak_queue, queue_floor) =
            self.cc.delay_diagnostics(self.queue_bound());
        let (ssthresh, slow_start) = self.cc.slow_start_state();
        Diagnostics {
            state: self.state,
            stats: self.stats,
            cwnd: self.cc.window(),
            ssthresh: if ssthresh.is_finite() {
                ssthresh as usize
            } else {
                usize::MAX
            },
            slow_start,
            in_flight: self.in_flight,
            peer_window: self.peer_wnd,
            our_window: self.recv.window(),
            send_queue: self.send_queue.len(),
            unacked: self.unacked_bytes,
            sent_packets: self.sent.len(),
            readable: self.recv.readable(),
            rto: self.rtt.rto(),
            srtt: self.rtt.has_sample().then(|| self.rtt.srtt()),
            min_rtt: self.rtt.min_rtt(),
            latest_rtt: latest,
            queuing_delay: self.queuing_delay(),
            raw_queuing_delay,
            steady_queue,
            peak_queue,
            queue_floor,
            reorder_window: self.reorder_window(),
            reorder_threshold: self.reorder_threshold,
            consecutive_timeouts: self.consecutive_timeouts,
            path_mtu: self.mtu.floor,
        }
    }

    /// Why the connection died, if it did.
    pub fn error(&self) -> Option<ConnectionError> {
        self.error
    }

    /// Nothing of ours is left to deliver: every byte written has been
    /// acknowledged, and so has our FIN if we closed (or the connection is
    /// closed or dead). What a socket waits for before it stops.
    pub fn is_flushed(&self) -> bool {
        match self.state {
            State::Closed | State::Dead => true,
            _ => {
                self.send_queue.is_empty()
                    && self.unacked_bytes == 0
                    && (!self.closing || self.fin_acked)
            }
        }
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
            self.peer_max_datagram = p.crust_max_datagram;
            self.apply_interface_mtu();
            self.state = State::Connected;
            self.events.push_back(Event::Connected);
        }
        // A STATE that left the peer before one we already have is old news,
        // not a duplicate ack (ACKs get reordered too).
        let in_order = self
            .last_peer_ts
            .is_none_or(|last| !ts_lt(h.timestamp, last));
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
            self.rack.deadline,
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
        if self.rack.deadline.is_some_and(|d| now >= d) {
            self.detect_losses(now);
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
}
