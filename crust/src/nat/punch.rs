//! The plan of one hole-punching attempt: which probe to send next, from
//! which socket, to where, with which TTL; and the attempt's packet budget.
//! Pure: time comes in, nothing is sent here.
//!
//! **The budget.** One [`Budget`] per attempt paces every packet the
//! attempt sends: UDP probes from the service's socket, from the birthday
//! sockets, and TCP SYNs (each TCP try takes a slot before it connects).
//! At most [`MAX_PACKETS_PER_SEC`] in all; cheap routers crash under
//! floods.
//!
//! **The plain plan.** Probes go round-robin over the peer's candidates.
//! The first round goes out with a low TTL: it opens our own NAT's mapping
//! and filter towards each candidate but dies before the far NAT, which
//! some routers would otherwise answer by blacklisting the flow; later
//! rounds use the normal TTL. Addresses we hear the peer from
//! (peer-reflexive: a symmetric NAT's fresh mapping) go to the front. The
//! number of distinct destinations — NAT sessions — is capped.
//!
//! **The birthday technique** (a random-port NAT against an
//! endpoint-independent one, see [`Birthday`]). The hard side opens
//! [`BIRTHDAY_SOCKETS`] extra sockets, each sending to the easy side's
//! external address: its NAT gives each a random port, and each such
//! mapping lets the easy side's address in. The easy side sends from its
//! socket to random ports of the hard side's address, each opening its
//! own filter for that port. When a probed port is one of the mapped
//! ones, the packets get through in one direction or the other. With `n`
//! sockets, `k` distinct probed ports and `R` = 64 512 possible ports the
//! chance of no match is `C(R−n, k) / C(R, k) ≈ (1 − n/R)^k`. Tailscale's
//! 256 sockets need k ≈ 985 for 98%: all of 10 s at 100 packets/s, with
//! nothing left for the rendezvous, the plain candidates and TCP. So the
//! hard side opens 288 (288 NAT sessions, plus a few of the service's own
//! socket, under the 300 the design allows): with the ≈ 947 random probes
//! the easy side gets into 10 s, (1 − 288/64 512)^947 ≈ 1.4%, so ≈ 98.6%
//! of attempts match.

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Probe rate cap per attempt, all packets together; cheap routers crash
/// under floods.
pub(crate) const MAX_PACKETS_PER_SEC: u32 = 100;
/// Most distinct destinations (NAT sessions) the plain plan opens.
pub(crate) const MAX_TARGETS: usize = 256;
/// TTL of the first round: past our own NAT (and a carrier's), short of the
/// far one on most paths.
pub(crate) const LOW_TTL: u32 = 3;
/// Extra sockets the random-port side opens: each is one NAT session.
pub(crate) const BIRTHDAY_SOCKETS: usize = 288;
/// Random ports the endpoint-independent side probes, at most, per attempt.
pub(crate) const BIRTHDAY_PROBES: usize = 1024;
/// The lowest port a NAT hands out (ports below are the privileged and
/// well-known ones).
pub(crate) const FIRST_NAT_PORT: u16 = 1024;
/// While the birthday technique runs, the plain plan gets one probe in
/// this many (after its first two rounds, which go first).
const PLAIN_SHARE: u64 = 32;

/// The pace of every packet of one attempt.
#[derive(Debug)]
pub(crate) struct Budget {
    next_at: Instant,
    interval: Duration,
    taken: u64,
}

impl Budget {
    /// A budget of [`MAX_PACKETS_PER_SEC`] starting at `start`.
    pub(crate) fn new(start: Instant) -> Self {
        Self {
            next_at: start,
            interval: Duration::from_secs(1) / MAX_PACKETS_PER_SEC,
            taken: 0,
        }
    }

    /// Takes a slot if one is due at `now`. A caller polled late catches
    /// up by one slot at most, so no second ever sees more than
    /// `MAX_PACKETS_PER_SEC + 1` slots.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        if now < self.next_at {
            return false;
        }
        let floor = now.checked_sub(self.interval).unwrap_or(now);
        self.next_at = self.next_at.max(floor) + self.interval;
        self.taken += 1;
        true
    }

    /// Reserves the first free slot from `now` on and returns its time: for
    /// a sender that waits for it (a TCP try), so the driver's probes
    /// cannot take every slot before it wakes.
    pub(crate) fn reserve(&mut self, now: Instant) -> Instant {
        let slot = self.next_at.max(now);
        self.next_at = slot + self.interval;
        self.taken += 1;
        slot
    }

    /// When the next slot is due.
    pub(crate) fn next_at(&self) -> Instant {
        self.next_at
    }

    /// Between two slots.
    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }

    /// Slots taken so far: packets sent by the attempt.
    pub(crate) fn taken(&self) -> u64 {
        self.taken
    }
}

/// The birthday technique's part in one attempt.
#[derive(Debug)]
pub(crate) enum Birthday {
    /// Not used: neither side has a random-port mapping, or neither has an
    /// endpoint-independent one.
    Off,
    /// We are the random-port side: `sockets` extra sockets each send to
    /// every one of `targets` (the easy side's external addresses), over
    /// and over.
    Hard {
        sockets: usize,
        targets: Vec<SocketAddr>,
        next: usize,
    },
    /// We are the endpoint-independent side: probe distinct random ports
    /// of `ips` (the hard side's external addresses), up to
    /// [`BIRTHDAY_PROBES`] in all.
    Easy {
        ips: Vec<IpAddr>,
        used: HashSet<(IpAddr, u16)>,
        rng: u64,
        sent: usize,
    },
}

impl Birthday {
    /// The easy side's part, with a seed for its random ports.
    pub(crate) fn easy(ips: Vec<IpAddr>, seed: u64) -> Self {
        Self::Easy {
            ips,
            used: HashSet::new(),
            // xorshift must not start at zero.
            rng: seed | 1,
            sent: 0,
        }
    }

    /// The hard side's part.
    pub(crate) fn hard(sockets: usize, targets: Vec<SocketAddr>) -> Self {
        Self::Hard {
            sockets,
            targets,
            next: 0,
        }
    }

    fn has_work(&self) -> bool {
        match self {
            Self::Off => false,
            Self::Hard {
                sockets, targets, ..
            } => *sockets > 0 && !targets.is_empty(),
            Self::Easy { ips, sent, .. } => !ips.is_empty() && *sent < BIRTHDAY_PROBES,
        }
    }

    fn next_probe(&mut self) -> Option<Probe> {
        match self {
            Self::Off => None,
            Self::Hard {
                sockets,
                targets,
                next,
            } => {
                if *sockets == 0 || targets.is_empty() {
                    return None;
                }
                let i = *next;
                *next = (*next + 1) % (*sockets * targets.len());
                Some(Probe::Extra {
                    socket: i / targets.len(),
                    to: targets[i % targets.len()],
                })
            }
            Self::Easy {
                ips,
                used,
                rng,
                sent,
            } => {
                if ips.is_empty() || *sent >= BIRTHDAY_PROBES {
                    return None;
                }
                let ip = ips[*sent % ips.len()];
                let span = u64::from(u16::MAX - FIRST_NAT_PORT) + 1;
                let port = loop {
                    // xorshift64: cheap, and good enough to spread probes.
                    *rng ^= *rng << 13;
                    *rng ^= *rng >> 7;
                    *rng ^= *rng << 17;
                    let port = FIRST_NAT_PORT + (*rng % span) as u16;
                    if used.insert((ip, port)) {
                        break port;
                    }
                };
                *sent += 1;
                Some(Probe::Main {
                    to: SocketAddr::new(ip, port),
                    ttl: None,
                })
            }
        }
    }
}

/// One probe to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// From the service's socket, with this TTL (`None`: the default).
    Main { to: SocketAddr, ttl: Option<u32> },
    /// From the attempt's extra socket number `socket` (birthday, hard
    /// side).
    Extra { socket: usize, to: SocketAddr },
}

/// One attempt's probing schedule.
#[derive(Debug)]
pub(crate) struct PunchPlan {
    targets: Vec<SocketAddr>,
    /// Addresses to probe before the next round-robin one.
    urgent: VecDeque<SocketAddr>,
    next: usize,
    round: u32,
    birthday: Birthday,
    sent: u64,
    /// Each first-round probe goes out twice in a row (see
    /// [`PunchPlan::first_round_twice`]); whether the current one has.
    first_round_twice: bool,
    repeated: bool,
}

impl PunchPlan {
    /// A plan over `targets` (deduplicated, in order, at most
    /// [`MAX_TARGETS`]), with the birthday technique's part.
    pub(crate) fn new(targets: &[SocketAddr], birthday: Birthday) -> Self {
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
            birthday,
            sent: 0,
            first_round_twice: false,
            repeated: false,
        }
    }

    /// Sends each first-round probe twice in a row. For two sequential
    /// NATs, whose meeting depends on the order in which the first round
    /// makes its mappings: a probe lost before our NAT would leave its
    /// mapping for the next round and shift the port of every later one.
    pub(crate) fn first_round_twice(mut self) -> Self {
        self.first_round_twice = true;
        self
    }

    /// Whether there is anything to probe.
    pub(crate) fn has_work(&self) -> bool {
        !self.targets.is_empty() || !self.urgent.is_empty() || self.birthday.has_work()
    }

    /// The next probe, if `budget` has a slot at `now`.
    pub(crate) fn poll_probe(&mut self, now: Instant, budget: &mut Budget) -> Option<Probe> {
        if !self.has_work() || !budget.try_take(now) {
            return None;
        }
        let plain_turn = self.round < 2 || self.sent.is_multiple_of(PLAIN_SHARE);
        let probe = if let Some(addr) = self.urgent.pop_front() {
            Probe::Main {
                to: addr,
                ttl: None,
            }
        } else if plain_turn || !self.birthday.has_work() {
            match self.next_plain() {
                Some(probe) => probe,
                None => self.birthday.next_probe()?,
            }
        } else {
            self.birthday.next_probe()?
        };
        self.sent += 1;
        Some(probe)
    }

    fn next_plain(&mut self) -> Option<Probe> {
        let addr = *self.targets.get(self.next)?;
        let ttl = (self.round == 0).then_some(LOW_TTL);
        if self.round == 0 && self.first_round_twice && !self.repeated {
            self.repeated = true;
            return Some(Probe::Main { to: addr, ttl });
        }
        self.repeated = false;
        self.next += 1;
        if self.next == self.targets.len() {
            self.next = 0;
            self.round += 1;
        }
        Some(Probe::Main { to: addr, ttl })
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

    /// Distinct destinations of the plain plan.
    pub(crate) fn targets(&self) -> usize {
        self.targets.len()
    }
}

/// The chance that the birthday technique finds a match: `sockets` mapped
/// ports among `range` possible ones, `probes` distinct ports probed.
#[cfg(test)]
pub(crate) fn birthday_success(sockets: u32, probes: u32, range: u32) -> f64 {
    // 1 − C(range − sockets, probes) / C(range, probes), as a product.
    let mut miss = 1.0f64;
    for i in 0..probes {
        let left = f64::from(range - i);
        miss *= (left - f64::from(sockets)).max(0.0) / left;
    }
    1.0 - miss
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([203, 0, 113, 1], port))
    }

    fn main(to: SocketAddr, ttl: Option<u32>) -> Option<Probe> {
        Some(Probe::Main { to, ttl })
    }

    #[test]
    fn round_robin_low_ttl_first_then_normal() {
        let t0 = Instant::now();
        let mut budget = Budget::new(t0);
        let mut plan = PunchPlan::new(&[addr(1), addr(2), addr(1)], Birthday::Off);
        assert_eq!(plan.targets(), 2);
        assert_eq!(
            plan.poll_probe(t0, &mut budget),
            main(addr(1), Some(LOW_TTL))
        );
        // Not yet due.
        assert_eq!(plan.poll_probe(t0, &mut budget), None);
        let t1 = budget.next_at();
        assert_eq!(t1 - t0, Duration::from_millis(10));
        assert_eq!(
            plan.poll_probe(t1, &mut budget),
            main(addr(2), Some(LOW_TTL))
        );
        let t2 = budget.next_at();
        assert_eq!(plan.poll_probe(t2, &mut budget), main(addr(1), None));
    }

    #[test]
    fn the_first_round_can_go_out_twice() {
        let t0 = Instant::now();
        let mut budget = Budget::new(t0);
        let mut plan = PunchPlan::new(&[addr(1), addr(2)], Birthday::Off).first_round_twice();
        let mut got = Vec::new();
        let mut now = t0;
        while got.len() < 6 {
            got.extend(plan.poll_probe(now, &mut budget));
            now += Duration::from_millis(10);
        }
        let low = Some(LOW_TTL);
        assert_eq!(
            got,
            [
                Probe::Main {
                    to: addr(1),
                    ttl: low
                },
                Probe::Main {
                    to: addr(1),
                    ttl: low
                },
                Probe::Main {
                    to: addr(2),
                    ttl: low
                },
                Probe::Main {
                    to: addr(2),
                    ttl: low
                },
                Probe::Main {
                    to: addr(1),
                    ttl: None
                },
                Probe::Main {
                    to: addr(2),
                    ttl: None
                },
            ]
        );
    }

    #[test]
    fn the_rate_stays_bounded_however_it_is_polled() {
        let t0 = Instant::now();
        let mut budget = Budget::new(t0);
        let targets: Vec<_> = (1..=50).map(addr).collect();
        let mut plan = PunchPlan::new(&targets, Birthday::Off);
        let mut now = t0;
        let end = t0 + Duration::from_secs(3);
        while now < end {
            while plan.poll_probe(now, &mut budget).is_some() {}
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

    /// UDP probes and TCP tries share one budget: together they stay
    /// within the cap in every one-second window.
    #[test]
    fn udp_and_tcp_together_stay_within_the_cap() {
        let t0 = Instant::now();
        let mut budget = Budget::new(t0);
        let targets: Vec<_> = (1..=50).map(addr).collect();
        let mut plan = PunchPlan::new(&targets, Birthday::easy(vec![addr(0).ip()], 7));
        let mut sent_at = Vec::new();
        let mut now = t0;
        // TCP tries reserve a slot, one at a time, at most every other one.
        let mut tcp_slot: Option<Instant> = None;
        let mut tcp_next = t0;
        while now < t0 + Duration::from_secs(5) {
            if tcp_slot.is_some_and(|slot| slot <= now) {
                sent_at.push(tcp_slot.take().unwrap());
            }
            if tcp_slot.is_none() && now >= tcp_next {
                let slot = budget.reserve(now);
                tcp_next = slot + 2 * budget.interval();
                tcp_slot = Some(slot);
            }
            while plan.poll_probe(now, &mut budget).is_some() {
                sent_at.push(now);
            }
            now += Duration::from_millis(3);
        }
        sent_at.extend(tcp_slot);
        sent_at.sort();
        assert_eq!(sent_at.len() as u64, budget.taken());
        for (i, start) in sent_at.iter().enumerate() {
            let in_window = sent_at[i..]
                .iter()
                .take_while(|t| **t < *start + Duration::from_secs(1))
                .count();
            assert!(
                in_window <= MAX_PACKETS_PER_SEC as usize + 1,
                "{in_window} packets in one second"
            );
        }
        assert!(sent_at.len() >= 450, "{}", sent_at.len());
    }

    #[test]
    fn sessions_are_capped_and_heard_addresses_jump_the_queue() {
        let t0 = Instant::now();
        let mut budget = Budget::new(t0);
        let targets: Vec<_> = (1..=1000).map(addr).collect();
        let mut plan = PunchPlan::new(&targets, Birthday::Off);
        assert_eq!(plan.targets(), MAX_TARGETS);
        plan.poll_probe(t0, &mut budget);
        plan.heard_from(addr(4242));
        let t1 = budget.next_at();
        assert_eq!(plan.poll_probe(t1, &mut budget), main(addr(4242), None));
        assert_eq!(plan.targets(), MAX_TARGETS);
        assert!(!PunchPlan::new(&[], Birthday::Off).has_work());
    }

    #[test]
    fn the_hard_side_cycles_its_sockets_over_the_targets() {
        let t0 = Instant::now();
        let mut budget = Budget::new(t0);
        let easy = addr(4000);
        let mut plan = PunchPlan::new(&[addr(1)], Birthday::hard(3, vec![easy]));
        let mut now = t0;
        let mut probes = Vec::new();
        while probes.len() < 12 {
            if let Some(p) = plan.poll_probe(now, &mut budget) {
                probes.push(p);
            }
            now += Duration::from_millis(10);
        }
        // The plain plan's first two rounds go first.
        assert_eq!(
            probes[0],
            Probe::Main {
                to: addr(1),
                ttl: Some(LOW_TTL)
            }
        );
        assert_eq!(
            probes[1],
            Probe::Main {
                to: addr(1),
                ttl: None
            }
        );
        let extra: Vec<usize> = probes
            .iter()
            .filter_map(|p| match p {
                Probe::Extra { socket, to } => {
                    assert_eq!(*to, easy);
                    Some(*socket)
                }
                Probe::Main { .. } => None,
            })
            .collect();
        assert_eq!(&extra[..6], &[0, 1, 2, 0, 1, 2]);
        assert!(extra.len() >= 8);
    }

    #[test]
    fn the_easy_side_probes_distinct_random_ports_up_to_its_cap() {
        let t0 = Instant::now();
        let mut budget = Budget::new(t0);
        let ip = addr(0).ip();
        let mut plan = PunchPlan::new(&[], Birthday::easy(vec![ip], 42));
        let mut ports = HashSet::new();
        let mut now = t0;
        for _ in 0..(BIRTHDAY_PROBES + 100) {
            if let Some(Probe::Main { to, ttl }) = plan.poll_probe(now, &mut budget) {
                assert_eq!(to.ip(), ip);
                assert_eq!(ttl, None);
                assert!(to.port() >= FIRST_NAT_PORT);
                assert!(ports.insert(to.port()), "port {} twice", to.port());
            }
            now += Duration::from_millis(10);
        }
        assert_eq!(ports.len(), BIRTHDAY_PROBES);
        assert!(!plan.has_work());
        // Spread over the range, not bunched.
        let low = ports.iter().filter(|p| **p < 33_000).count();
        assert!((350..=670).contains(&low), "{low}");
    }

    #[test]
    fn birthday_odds_match_the_published_figures() {
        let range = u32::from(u16::MAX - FIRST_NAT_PORT) + 1;
        // Tailscale's table: 256 sockets; 174 probes ≈ 50%, 1024 ≈ 98%.
        let half = birthday_success(256, 174, range);
        assert!((0.48..0.52).contains(&half), "{half}");
        let most = birthday_success(256, 1024, range);
        assert!((0.98..0.99).contains(&most), "{most}");
        assert_eq!(birthday_success(0, 1000, range), 0.0);
    }
}
