//! The sending side's reaction to feedback: acknowledgements (cumulative
//! and selective), duplicate ACKs, loss detection, retransmission timeouts,
//! spurious-retransmit undo and the path-MTU search.
//!
//! [`Connection::process_ack`] runs for every packet from the peer that
//! carries an `ack_nr`; [`Connection::on_rto`] when the retransmission timer
//! fires. Both only mark packets; `poll_transmit` resends them.

use std::time::{Duration, Instant};

use super::super::ledbat::RttInfo;
use super::super::packet::{HEADER_LEN, PacketType, seq_lt};
use super::{Connection, Event, MAX_REO_WND_MULT, MAX_REORDER_THRESHOLD, State};
use crate::utp::proto::connection::ConnectionError;

#[derive(Debug)]
pub(super) struct Sent {
    pub(super) seq: u16,
    pub(super) ty: PacketType,
    pub(super) payload: Vec<u8>,
    pub(super) sent_at: Option<Instant>,
    pub(super) transmissions: u32,
    /// Order of the last transmission, for SACK-based loss detection.
    pub(super) tx_order: u64,
    pub(super) need_resend: bool,
    pub(super) sacked: bool,
    pub(super) mtu_probe: bool,
    /// Declared lost by SACK or duplicate ACKs (not by the RTO).
    pub(super) fast_lost: bool,
}

impl Sent {
    pub(super) fn in_network(&self) -> bool {
        !self.sacked && !self.need_resend && self.sent_at.is_some()
    }
}

/// What acknowledgement bookkeeping needs from a [`Sent`] packet.
#[derive(Debug, Clone, Copy)]
pub(super) struct Delivered {
    pub(super) seq: u16,
    pub(super) len: usize,
    pub(super) sent_at: Option<Instant>,
    /// Karn: sent more than once, or marked for resending.
    pub(super) ambiguous: bool,
    /// Fast-retransmitted, at this time.
    pub(super) fast_resent_at: Option<Instant>,
    /// Order of its last transmission.
    pub(super) tx_order: u64,
    pub(super) mtu_probe: bool,
    pub(super) in_network: bool,
}

impl Delivered {
    pub(super) fn of(s: &Sent) -> Self {
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
            tx_order: s.tx_order,
            mtu_probe: s.mtu_probe,
            in_network: s.in_network(),
        }
    }
}

/// The smallest RACK reordering window: timer and clock granularity.
const MIN_REO_WND: Duration = Duration::from_millis(1);

/// RACK state: the latest-sent packet known delivered.
#[derive(Debug)]
pub(super) struct Rack {
    /// Its transmission order.
    pub(super) tx_order: u64,
    /// How long it took from its sending to its ack.
    pub(super) rtt: Option<Duration>,
    /// The reordering window in quarters of min_rtt.
    pub(super) reo_wnd_mult: u32,
    /// When the earliest packet not yet overdue becomes lost.
    pub(super) deadline: Option<Instant>,
}

impl Default for Rack {
    fn default() -> Self {
        Self {
            tx_order: 0,
            rtt: None,
            reo_wnd_mult: 1,
            deadline: None,
        }
    }
}

#[derive(Debug)]
pub(super) struct Mtu {
    pub(super) floor: u16,
    pub(super) ceiling: u16,
    pub(super) max: u16,
    pub(super) enabled: bool,
    pub(super) probe_seq: Option<u16>,
    pub(super) next_search: Option<Instant>,
}

impl Mtu {
    pub(super) fn searching(&self) -> bool {
        self.enabled && self.ceiling >= self.floor.saturating_add(16)
    }

    pub(super) fn probe_size(&self) -> u16 {
        self.floor + (self.ceiling - self.floor).div_ceil(2)
    }
}

impl Connection {
    pub(super) fn index_of(&self, seq: u16) -> Option<usize> {
        let front = self.sent.front()?.seq;
        let i = usize::from(seq.wrapping_sub(front));
        (i < self.sent.len()).then_some(i)
    }

    pub(super) fn process_ack(
        &mut self,
        now: Instant,
        ack_nr: u16,
        sack: Option<&[u8]>,
        is_state: bool,
    ) {
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
            self.resend_from = self.resend_from.saturating_sub(1);
            self.unacked_bytes -= s.payload.len();
            // Only a cumulative ack finishes our stream: a SACKed FIN still
            // has holes before it.
            if s.ty == PacketType::Fin {
                self.fin_acked = true;
            }
            if !s.sacked {
                bytes_acked += self.on_delivered(now, Delivered::of(&s), &mut rtt_sample);
            }
            self.recycle(s.payload);
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
        if newly_sacked > 0 || count > 0 {
            self.detect_losses(now);
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
    pub(super) fn on_delivered(
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
        // RACK (RFC 8985): remember the latest-sent packet known delivered
        // and how long it took. An ambiguous one counts only if its ack
        // cannot be for an earlier transmission (it took at least min_rtt).
        if let Some(at) = s.sent_at
            && s.tx_order > self.rack.tx_order
        {
            let rtt = now.saturating_duration_since(at);
            if !s.ambiguous || self.rtt.min_rtt().is_some_and(|m| rtt >= m) {
                self.rack.tx_order = s.tx_order;
                self.rack.rtt = Some(rtt);
            }
        }
        if s.mtu_probe && self.mtu.probe_seq == Some(s.seq) {
            self.mtu.probe_seq = None;
            self.mtu.floor = u16::try_from(s.len + HEADER_LEN)
                .unwrap_or(self.mtu.floor)
                .max(self.mtu.floor);
            self.cc.set_mss(self.mss());
            self.finish_mtu_search_if_done(now);
        }
        // No ack of the retransmission can come back sooner than a round
        // trip: an earlier one was for the original. (Three quarters of
        // min_rtt leaves a margin for a min_rtt measured a little high.)
        if let (Some(at), Some(min_rtt)) = (s.fast_resent_at, self.rtt.min_rtt())
            && now.saturating_duration_since(at) < min_rtt * 3 / 4
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

    pub(super) fn finish_mtu_search_if_done(&mut self, now: Instant) {
        if !self.mtu.searching() && self.mtu.enabled {
            self.mtu.next_search = Some(now + self.config.mtu_reprobe_interval);
        }
    }

    /// Time-based loss detection (RACK, RFC 8985): a packet in the network
    /// is lost once a packet sent after it has been delivered and it has
    /// been out for longer than that packet's round trip plus a reordering
    /// window (a quarter of min_rtt, doubled each time reordering fooled
    /// us, at most srtt, at least 1 ms). Packets not yet overdue arm the loss timer. Before
    /// any RTT sample, the packet-count rule of [`Self::detect_sack_losses`]
    /// applies.
    pub(super) fn detect_losses(&mut self, now: Instant) {
        self.rack.deadline = None;
        let (Some(rack_rtt), Some(_)) = (self.rack.rtt, self.rtt.min_rtt()) else {
            self.detect_sack_losses(now);
            return;
        };
        let reo_wnd = self.reorder_window();
        let mut lost = Vec::new();
        let mut next: Option<Instant> = None;
        for (i, s) in self.sent.iter().enumerate() {
            // Packets are first sent in sequence order and a resend only
            // raises tx_order, so past the first packet not yet sent, or
            // sent once at or after the RACK point, nothing else qualifies: the
            // scan covers the holes only, not the whole window.
            if s.transmissions == 0 || (s.transmissions == 1 && s.tx_order >= self.rack.tx_order) {
                break;
            }
            if !s.in_network() || s.tx_order >= self.rack.tx_order {
                continue;
            }
            let Some(at) = s.sent_at else { continue };
            let due = at + rack_rtt + reo_wnd;
            if now >= due {
                lost.push(i);
            } else {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        for i in lost {
            self.mark_lost(now, i);
        }
        self.rack.deadline = next;
    }

    /// RACK's reordering window: a quarter of min_rtt times the multiplier,
    /// at most srtt, at least [`MIN_REO_WND`].
    pub(super) fn reorder_window(&self) -> Duration {
        self.rtt.min_rtt().map_or(MIN_REO_WND, |min_rtt| {
            (min_rtt / 4 * self.rack.reo_wnd_mult)
                .min(self.rtt.srtt())
                .max(MIN_REO_WND)
        })
    }

    /// A packet is lost when `reorder_threshold` packets sent after its
    /// last transmission have been selectively acknowledged.
    pub(super) fn detect_sack_losses(&mut self, now: Instant) {
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
    pub(super) fn on_spurious_retransmit(&mut self) {
        self.reorder_threshold = (self.reorder_threshold * 2).min(MAX_REORDER_THRESHOLD);
        self.rack.reo_wnd_mult = (self.rack.reo_wnd_mult * 2).min(MAX_REO_WND_MULT);
        if self.cc.undo_last_cut() {
            self.stats.spurious_retransmits += 1;
        }
    }

    pub(super) fn mark_lost(&mut self, now: Instant, i: usize) {
        let s = &mut self.sent[i];
        if s.sacked || s.need_resend || s.sent_at.is_none() {
            return;
        }
        s.need_resend = true;
        self.resend_from = self.resend_from.min(i);
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
            // Within an RTT of the last cut a loss changes nothing (one cut
            // per RTT); otherwise the queue says whether it is congestion.
            if self.cc.may_cut(now, self.rtt.srtt()) {
                if !self.cc.loss_is_congestion(self.queue_bound()) {
                    self.stats.random_losses += 1;
                } else if self.cc.on_loss(now, self.rtt.srtt()) {
                    self.stats.window_cuts += 1;
                }
            }
        }
    }

    pub(super) fn on_rto(&mut self, now: Instant) {
        self.rto_deadline = None;
        self.rack.deadline = None;
        self.stats.timeouts += 1;
        if self.state == State::SynSent {
            let tries = self.sent.front().map_or(0, |s| s.transmissions);
            if tries > self.config.max_syn_retransmits {
                self.die(ConnectionError::ConnectTimedOut);
                return;
            }
            let id = self.rng.next_u16();
            self.renew_syn_id(id);
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
        self.resend_from = 0;
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
}
