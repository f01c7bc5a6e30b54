//! The receive side of a connection: reassembly of reordered packets, the
//! FIN's position in the stream, the advertised window and the selective-ACK
//! bitmask we send.
//!
//! Call [`RecvBuffer::insert`] for each DATA or FIN packet, [`RecvBuffer::read`]
//! when the application reads, and [`RecvBuffer::sack`] when building a STATE.
//! Memory is bounded: at most `capacity` bytes are held, in order or not, and
//! nothing further than `max_reorder` packets ahead is kept.

use std::collections::VecDeque;

use super::packet::seq_lt;

/// What happened to an inserted packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inserted {
    /// It was the next expected packet; the in-order point advanced.
    InOrder,
    /// Stored ahead of a gap.
    OutOfOrder,
    /// Already received (or before the stream start).
    Duplicate,
    /// No room, too far ahead, or past the FIN: dropped.
    Dropped,
}

#[derive(Debug)]
pub(crate) struct RecvBuffer {
    /// Last in-order sequence number received.
    ack_nr: u16,
    ready: VecDeque<u8>,
    /// Slot `i` holds packet `ack_nr + 2 + i`, matching SACK bit `i`.
    ooo: VecDeque<Option<Vec<u8>>>,
    ooo_bytes: usize,
    capacity: usize,
    max_reorder: u16,
    eof_seq: Option<u16>,
    eof_reached: bool,
}

impl RecvBuffer {
    /// `ack_nr` is the sequence number just before the first one expected.
    pub(crate) fn new(ack_nr: u16, capacity: usize, max_reorder: u16) -> Self {
        Self {
            ack_nr,
            ready: VecDeque::new(),
            ooo: VecDeque::new(),
            ooo_bytes: 0,
            capacity,
            max_reorder: max_reorder.clamp(1, 2000),
            eof_seq: None,
            eof_reached: false,
        }
    }

    pub(crate) fn ack_nr(&self) -> u16 {
        self.ack_nr
    }

    pub(crate) fn set_ack_nr(&mut self, ack_nr: u16) {
        self.ack_nr = ack_nr;
    }

    /// Free bytes to advertise.
    pub(crate) fn window(&self) -> usize {
        self.capacity
            .saturating_sub(self.ready.len() + self.ooo_bytes)
    }

    pub(crate) fn readable(&self) -> usize {
        self.ready.len()
    }

    pub(crate) fn has_gap(&self) -> bool {
        !self.ooo.is_empty()
    }

    /// Every byte up to the FIN has been received (it may not all be read).
    pub(crate) fn eof_reached(&self) -> bool {
        self.eof_reached
    }

    /// The application has read everything up to the FIN.
    pub(crate) fn finished(&self) -> bool {
        self.eof_reached && self.ready.is_empty()
    }

    pub(crate) fn insert(&mut self, seq: u16, payload: &[u8], fin: bool) -> Inserted {
        let next = self.ack_nr.wrapping_add(1);
        if seq_lt(seq, next) || self.eof_reached {
            return Inserted::Duplicate;
        }
        if let Some(eof) = self.eof_seq
            && (seq_lt(eof, seq) || (seq == eof && !fin))
        {
            return Inserted::Dropped;
        }
        let distance = seq.wrapping_sub(next);
        if distance > self.max_reorder
            || self.ready.len() + self.ooo_bytes + payload.len() > self.capacity
        {
            return Inserted::Dropped;
        }
        if fin {
            self.eof_seq = Some(seq);
        }
        if distance == 0 {
            self.ready.extend(payload);
            self.ack_nr = seq;
            self.advance();
            Inserted::InOrder
        } else {
            let slot = usize::from(distance - 1);
            if self.ooo.len() <= slot {
                self.ooo.resize(slot + 1, None);
            }
            if self.ooo[slot].is_some() {
                return Inserted::Duplicate;
            }
            self.ooo_bytes += payload.len();
            self.ooo[slot] = Some(payload.to_vec());
            Inserted::OutOfOrder
        }
    }

    /// Pulls packets that have become in-order out of the reorder slots.
    fn advance(&mut self) {
        loop {
            if self.eof_seq == Some(self.ack_nr) {
                self.eof_reached = true;
                self.ooo.clear();
                self.ooo_bytes = 0;
                return;
            }
            match self.ooo.pop_front() {
                Some(Some(data)) => {
                    self.ooo_bytes -= data.len();
                    self.ready.extend(data);
                    self.ack_nr = self.ack_nr.wrapping_add(1);
                }
                // The slot was for the packet now expected next.
                Some(None) | None => return,
            }
        }
    }

    pub(crate) fn read(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.ready.len());
        // Slice copies: a byte-by-byte drain costs more than the syscalls.
        let (front, back) = self.ready.as_slices();
        let from_front = n.min(front.len());
        buf[..from_front].copy_from_slice(&front[..from_front]);
        buf[from_front..n].copy_from_slice(&back[..n - from_front]);
        self.ready.drain(..n);
        n
    }

    /// The selective-ACK bitmask covering the whole reorder span, in
    /// multiples of 4 bytes; `None` without a gap.
    pub(crate) fn sack(&self) -> Option<Vec<u8>> {
        if self.ooo.is_empty() {
            return None;
        }
        let bytes = self.ooo.len().div_ceil(32) * 4;
        let mut mask = vec![0u8; bytes.min(252)];
        for (i, slot) in self.ooo.iter().enumerate().take(252 * 8) {
            if slot.is_some() {
                mask[i / 8] |= 1 << (i % 8);
            }
        }
        Some(mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(r: &mut RecvBuffer) -> Vec<u8> {
        let mut buf = vec![0; 1 << 16];
        let n = r.read(&mut buf);
        buf.truncate(n);
        buf
    }

    #[test]
    fn in_order_and_reordered_reassemble() {
        let mut r = RecvBuffer::new(65533, 1000, 64);
        assert_eq!(r.insert(65535, b"c", false), Inserted::OutOfOrder);
        assert_eq!(r.insert(1, b"e", false), Inserted::OutOfOrder);
        assert_eq!(r.sack(), Some(vec![0b101, 0, 0, 0]));
        assert_eq!(r.insert(65534, b"b", false), Inserted::InOrder);
        assert_eq!(r.ack_nr(), 65535);
        assert_eq!(r.insert(0, b"d", false), Inserted::InOrder);
        assert_eq!(r.ack_nr(), 1);
        assert_eq!(r.sack(), None);
        assert_eq!(drain(&mut r), b"bcde");
        assert_eq!(r.insert(1, b"e", false), Inserted::Duplicate);
    }

    #[test]
    fn fin_before_data_waits_for_the_gap() {
        let mut r = RecvBuffer::new(10, 1000, 64);
        assert_eq!(r.insert(13, b"", true), Inserted::OutOfOrder);
        assert_eq!(r.insert(12, b"y", false), Inserted::OutOfOrder);
        assert!(!r.eof_reached());
        assert_eq!(r.insert(14, b"late", false), Inserted::Dropped);
        assert_eq!(r.insert(11, b"x", false), Inserted::InOrder);
        assert!(r.eof_reached());
        assert_eq!(r.ack_nr(), 13);
        assert!(!r.finished());
        assert_eq!(drain(&mut r), b"xy");
        assert!(r.finished());
    }

    #[test]
    fn bounded_by_capacity_and_reorder_span() {
        let mut r = RecvBuffer::new(0, 10, 8);
        assert_eq!(r.insert(3, &[0; 8], false), Inserted::OutOfOrder);
        assert_eq!(r.insert(4, &[0; 8], false), Inserted::Dropped);
        assert_eq!(r.window(), 2);
        assert_eq!(r.insert(20, b"x", false), Inserted::Dropped);
    }

    #[test]
    fn sack_covers_long_reorder_span() {
        let mut r = RecvBuffer::new(0, 1 << 20, 1024);
        assert_eq!(r.insert(1000, b"x", false), Inserted::OutOfOrder);
        let mask = r.sack().unwrap();
        assert_eq!(mask.len(), 128);
        // seq 1000 = ack_nr + 2 + 998
        assert_eq!(mask[998 / 8], 1 << (998 % 8));
    }
}
