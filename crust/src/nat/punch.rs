//! The plan of one hole-punching attempt: which candidate to probe next,
//! when, and with which TTL. Pure: time comes in, nothing is sent here.
//!
//! Probes go round-robin over the peer's candidates, one every
//! `1 / MAX_PACKETS_PER_SEC`. The first round goes out with a low TTL: it
//! opens our own NAT's mapping and filter towards each candidate but dies
//! before the far NAT, which some routers would otherwise answer by
//! blacklisting the flow; later rounds use the normal TTL. Addresses we
//! hear the peer from (peer-reflexive: a symmetric NAT's fresh mapping) go
//! to the front. The number of distinct destinations — NAT sessions — is
//! capped.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Probe rate cap per attempt; cheap routers crash under floods.
pub(crate) const MAX_PACKETS_PER_SEC: u32 = 100;
/// Most distinct destinations (NAT sessions) one attempt opens.
pub(crate) const MAX_TARGETS: usize = 256;
/// TTL of the first round: past our own NAT (and a carrier's), short of the
/// far one on most paths.
pub(crate) const LOW_TTL: u32 = 3;

/// One attempt's probing schedule.
#[derive(Debug)]
pub(crate) struct PunchPlan {
    targets: Vec<SocketAddr>,
    /// Addresses to probe before the next round-robin one.
    urgent: VecDeque<SocketAddr>,
    next: usize,
    round: u32,
    next_at: Instant,
    interval: Duration,
    sent: u64,
}

impl PunchPlan {
    /// A plan starting at `start` over `targets` (deduplicated, in order,
    /// at most [`MAX_TARGETS`]).
    pub(crate) fn new(start: Instant, targets: &[SocketAddr]) -> Self {
        let mut unique: Vec<SocketAddr> = Vec::new();
        for t in targets {
            if !unique.contains(t) && unique.len() < MAX_TARGETS {
                unique.push(*t);
            }
        }
        Self {
            targets: unique,
            urgent: VecDeque::new(),
            next: 0,
            round: 0,
            next_at: start,
            interval: Duration::from_secs(1) / MAX_PACKETS_PER_SEC,
            sent: 0,
        }
    }

    /// When the next probe is due; `None` with nothing to probe.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        (!self.targets.is_empty() || !self.urgent.is_empty()).then_some(self.next_at)
    }

    /// The next probe if it is due: where, and the TTL to set (`None` for
    /// the socket's default).
    pub(crate) fn poll_probe(&mut self, now: Instant) -> Option<(SocketAddr, Option<u32>)> {
        if now < self.next_at {
            return None;
        }
        let probe = if let Some(addr) = self.urgent.pop_front() {
            (addr, None)
        } else {
            let addr = *self.targets.get(self.next)?;
            let ttl = (self.round == 0).then_some(LOW_TTL);
            self.next += 1;
            if self.next == self.targets.len() {
                self.next = 0;
                self.round += 1;
            }
            (addr, ttl)
        };
        self.sent += 1;
        // Keep the pace when polled late, but catch up by one probe at most.
        let floor = now.checked_sub(self.interval).unwrap_or(now);
        self.next_at = self.next_at.max(floor) + self.interval;
        Some(probe)
    }

    /// The peer was heard from `addr`: probe it next with the normal TTL,
    /// and keep it among the targets if there is room.
    pub(crate) fn heard_from(&mut self, addr: SocketAddr) {
        if !self.urgent.contains(&addr) {
            self.urgent.push_back(addr);
        }
        if !self.targets.contains(&addr) && self.targets.len() < MAX_TARGETS {
            self.targets.insert(0, addr);
            self.next += usize::from(self.targets.len() > 1);
        }
    }

    /// Probes sent so far.
    pub(crate) fn sent(&self) -> u64 {
        self.sent
    }

    /// Distinct destinations.
    pub(crate) fn targets(&self) -> usize {
        self.targets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([203, 0, 113, 1], port))
    }

    #[test]
    fn round_robin_low_ttl_first_then_normal() {
        let t0 = Instant::now();
        let mut plan = PunchPlan::new(t0, &[addr(1), addr(2), addr(1)]);
        assert_eq!(plan.targets(), 2);
        assert_eq!(plan.poll_probe(t0), Some((addr(1), Some(LOW_TTL))));
        // Not yet due.
        assert_eq!(plan.poll_probe(t0), None);
        let t1 = plan.poll_timeout().unwrap();
        assert_eq!(t1 - t0, Duration::from_millis(10));
        assert_eq!(plan.poll_probe(t1), Some((addr(2), Some(LOW_TTL))));
        let t2 = plan.poll_timeout().unwrap();
        assert_eq!(plan.poll_probe(t2), Some((addr(1), None)));
    }

    #[test]
    fn the_rate_stays_bounded_however_it_is_polled() {
        let t0 = Instant::now();
        let targets: Vec<_> = (1..=50).map(addr).collect();
        let mut plan = PunchPlan::new(t0, &targets);
        let mut now = t0;
        let end = t0 + Duration::from_secs(3);
        while now < end {
            while plan.poll_probe(now).is_some() {}
            // A lazy caller: polled every 35 ms.
            now += Duration::from_millis(35);
        }
        assert!(
            plan.sent() <= 3 * u64::from(MAX_PACKETS_PER_SEC) + 1,
            "{}",
            plan.sent()
        );
        assert!(plan.sent() >= 3 * u64::from(MAX_PACKETS_PER_SEC) / 2);
    }

    #[test]
    fn sessions_are_capped_and_heard_addresses_jump_the_queue() {
        let t0 = Instant::now();
        let targets: Vec<_> = (1..=1000).map(addr).collect();
        let mut plan = PunchPlan::new(t0, &targets);
        assert_eq!(plan.targets(), MAX_TARGETS);
        plan.poll_probe(t0);
        plan.heard_from(addr(4242));
        let t1 = plan.poll_timeout().unwrap();
        assert_eq!(plan.poll_probe(t1), Some((addr(4242), None)));
        assert_eq!(plan.targets(), MAX_TARGETS);
        assert!(PunchPlan::new(t0, &[]).poll_timeout().is_none());
    }
}
