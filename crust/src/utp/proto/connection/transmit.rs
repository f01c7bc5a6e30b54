//! Building what goes on the wire: retransmissions first, then new data
//! (packetised lazily, within the congestion and receive windows, with
//! path-MTU probes), then the FIN, then ACKs and keep-alives.
//!
//! [`Connection::poll_transmit`] is the entry point; the rest are its steps.

use std::time::Instant;

use super::super::packet::{self, HEADER_LEN, Header, PacketType};
use super::recovery::Sent;
use super::{Connection, State, Transmit};

/// Buffers a connection keeps for reuse.
const SPARE_BUFFERS: usize = 16;

impl Connection {
    pub(super) fn push_sent(&mut self, ty: PacketType, payload: Vec<u8>) -> usize {
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

    /// A buffer for a packet's payload or a datagram: a recycled one, when
    /// one is big enough. Loopback packets are 64 KiB, and allocating and
    /// freeing one per packet made glibc hand the heap's top back to the OS
    /// and fault it in again, packet after packet: the first transfer of a
    /// process ran at a third of the speed of the next ones (the next
    /// ones found the allocator's thresholds raised).
    fn spare_buffer(&mut self, size: usize) -> Vec<u8> {
        match self.spare.pop() {
            Some(mut v) if v.capacity() >= size => {
                v.clear();
                v
            }
            // Room for a header and extensions too, so that the buffer can
            // carry a whole datagram next time.
            _ => Vec::with_capacity(size.max(self.mss() + HEADER_LEN + 64)),
        }
    }

    /// Keeps a buffer (an acknowledged packet's payload, or a sent
    /// datagram the driver hands back) for the next packet; a few, so an
    /// idle connection holds little.
    pub(crate) fn recycle(&mut self, buffer: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS && buffer.capacity() >= self.mss() {
            self.spare.push(buffer);
        }
    }

    /// Whether [`Self::recycle`] would keep another buffer.
    pub(crate) fn wants_buffers(&self) -> bool {
        self.spare.len() < SPARE_BUFFERS
    }

    pub(super) fn window(&self) -> usize {
        self.cc.window().min(self.peer_wnd)
    }

    pub(super) fn maybe_window_update(&mut self) {
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

    pub(super) fn poll_resend(&mut self, now: Instant) -> Option<Transmit> {
        let Some(i) = (self.resend_from..self.sent.len()).find(|&i| self.sent[i].need_resend)
        else {
            self.resend_from = self.sent.len();
            return None;
        };
        self.resend_from = i;
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
        self.resend_from = i + 1;
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

    pub(super) fn poll_new_data(&mut self, now: Instant) -> Option<Transmit> {
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
        // Slice copies: collecting a `VecDeque<u8>` drain goes byte by byte.
        let mut payload = self.spare_buffer(size);
        let (front, back) = self.send_queue.as_slices();
        let from_front = size.min(front.len());
        payload.extend_from_slice(&front[..from_front]);
        payload.extend_from_slice(&back[..size - from_front]);
        self.send_queue.drain(..size);
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
    pub(super) fn build(
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
        // crust's hello rides on the SYN, and on the acceptor's SYN reply
        // when the SYN had one (other initiators never see it).
        let hello = (self.config.crust_hello
            && (ty == PacketType::Syn
                || (ty == PacketType::State
                    && self.state == State::SynRecv
                    && self.peer_max_datagram.is_some())))
        .then_some(self.config.max_datagram);
        let mut contents = self.spare_buffer(HEADER_LEN + 64 + payload.len());
        packet::encode_with(&header, sack, hello, payload, &mut contents);
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
