//! A simulated pair of endpoints joined by two impaired one-way links, on a
//! virtual clock that jumps straight to the next event.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::utp::proto::rng::SplitMix64;
use crate::utp::proto::{
    Config, ConnectionHandle, DatagramOutcome, Endpoint, EndpointConfig, Event, ReadError, State,
    Transmit,
};

/// How one direction of the path treats packets. Every decision comes from a
/// seeded generator.
#[derive(Debug, Clone)]
pub(crate) struct LinkConfig {
    pub(crate) delay: Duration,
    /// Uniform extra delay per packet; large values reorder heavily.
    pub(crate) jitter: Duration,
    pub(crate) loss: f64,
    pub(crate) duplicate: f64,
    /// Bottleneck rate in bytes per second.
    pub(crate) rate: Option<u64>,
    /// Bottleneck queue in bytes (tail drop).
    pub(crate) queue_bytes: usize,
    /// Largest datagram that passes; larger "don't fragment" ones vanish.
    pub(crate) mtu: usize,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            delay: Duration::from_millis(10),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            rate: None,
            queue_bytes: usize::MAX,
            mtu: 1500,
        }
    }
}

impl LinkConfig {
    pub(crate) fn lossy(loss: f64) -> Self {
        Self {
            loss,
            ..Self::default()
        }
    }
}

#[derive(Debug, Default, Clone)]
pub(crate) struct LinkStats {
    pub(crate) sent: u64,
    pub(crate) dropped: u64,
    pub(crate) max_queue_delay: Duration,
    /// Queuing delay samples of the bottleneck, one per packet.
    pub(crate) queue_delays: Vec<Duration>,
}

/// Decides, per datagram, whether a scripted loss drops it.
pub(crate) type DropRule = Box<dyn FnMut(&[u8]) -> bool>;

pub(crate) struct Link {
    pub(crate) cfg: LinkConfig,
    rng: SplitMix64,
    queue: BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>>,
    order: u64,
    busy_until: Option<Instant>,
    pub(crate) stats: LinkStats,
    /// Drop the next packets matching this predicate (scripted loss).
    pub(crate) drop_next: Vec<DropRule>,
}

impl Link {
    pub(crate) fn new(cfg: LinkConfig, seed: u64) -> Self {
        Self {
            cfg,
            rng: SplitMix64::new(seed),
            queue: BinaryHeap::new(),
            order: 0,
            busy_until: None,
            stats: LinkStats::default(),
            drop_next: Vec::new(),
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.rng.next_u64() as f64 / u64::MAX as f64) < p
    }

    pub(crate) fn send(&mut self, now: Instant, t: Transmit) {
        self.stats.sent += 1;
        let mut scripted = false;
        for f in &mut self.drop_next {
            if f(&t.contents) {
                scripted = true;
            }
        }
        if scripted
            || (t.dont_fragment && t.contents.len() > self.cfg.mtu)
            || self.chance(self.cfg.loss)
        {
            self.stats.dropped += 1;
            return;
        }
        let mut depart = now;
        if let Some(rate) = self.cfg.rate {
            let start = self.busy_until.map_or(now, |b| b.max(now));
            let backlog = start.saturating_duration_since(now);
            let backlog_bytes = (backlog.as_secs_f64() * rate as f64) as usize;
            if backlog_bytes + t.contents.len() > self.cfg.queue_bytes {
                self.stats.dropped += 1;
                return;
            }
            self.stats.max_queue_delay = self.stats.max_queue_delay.max(backlog);
            self.stats.queue_delays.push(backlog);
            depart = start + Duration::from_secs_f64(t.contents.len() as f64 / rate as f64);
            self.busy_until = Some(depart);
        }
        let copies = if self.chance(self.cfg.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter = if self.cfg.jitter.is_zero() {
                Duration::ZERO
            } else {
                Duration::from_nanos(self.rng.next_u64() % self.cfg.jitter.as_nanos() as u64)
            };
            self.order += 1;
            self.queue.push(Reverse((
                depart + self.cfg.delay + jitter,
                self.order,
                t.contents.clone(),
            )));
        }
    }

    fn next_time(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((t, _, _))| *t)
    }

    fn pop_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.next_time()? <= now {
            self.queue.pop().map(|Reverse((_, _, d))| d)
        } else {
            None
        }
    }
}

pub(crate) const A_ADDR: &str = "127.0.0.1:1001";
pub(crate) const B_ADDR: &str = "127.0.0.1:1002";

pub(crate) fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

/// Two endpoints, `a` (initiator) and `b` (acceptor), and the links between.
pub(crate) struct Pair {
    pub(crate) now: Instant,
    pub(crate) start: Instant,
    pub(crate) a: Endpoint,
    pub(crate) b: Endpoint,
    pub(crate) ab: Link,
    pub(crate) ba: Link,
    pub(crate) a_events: Vec<(ConnectionHandle, Event)>,
    pub(crate) b_events: Vec<(ConnectionHandle, Event)>,
    /// `b`'s clock runs this much fast (1e-3 = 1000 ppm).
    pub(crate) b_skew: f64,
    /// What the "OS" says the route towards the peer carries, told to every
    /// connection as the driver does (`Connection::set_interface_mtu`).
    pub(crate) interface_mtu: Option<u16>,
    /// `b`'s driver is preempted (CPU starvation) at these offsets from
    /// `start`, for these lengths, in order: it has just woken up, handled
    /// what had arrived, and runs nothing more until the preemption ends.
    pub(crate) b_preemptions: std::collections::VecDeque<(Duration, Duration)>,
    /// How `b`'s driver stamps the datagrams that arrived while it was
    /// preempted: with the time it woke up, before they arrived (what
    /// crust's driver did before it read the clock after each receive
    /// call), or else with the time it got them.
    pub(crate) b_stale_stamps: bool,
}

impl Pair {
    pub(crate) fn new(seed: u64, config: Config, ab: LinkConfig, ba: LinkConfig) -> Self {
        Self::with_configs(seed, config.clone(), config, ab, ba)
    }

    /// A pair whose two ends are configured differently.
    pub(crate) fn with_configs(
        seed: u64,
        a_config: Config,
        b_config: Config,
        ab: LinkConfig,
        ba: LinkConfig,
    ) -> Self {
        let mut a_ec = EndpointConfig::default();
        a_ec.connection = a_config;
        let mut b_ec = EndpointConfig::default();
        b_ec.connection = b_config;
        let now = Instant::now();
        Self {
            now,
            start: now,
            a: Endpoint::new(a_ec, seed),
            b: Endpoint::new(b_ec, seed ^ 0x5555_aaaa_5555_aaaa),
            ab: Link::new(ab, seed.wrapping_mul(3) ^ 1),
            ba: Link::new(ba, seed.wrapping_mul(7) ^ 2),
            a_events: Vec::new(),
            b_events: Vec::new(),
            b_skew: 0.0,
            interface_mtu: None,
            b_preemptions: std::collections::VecDeque::new(),
            b_stale_stamps: false,
        }
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Sends everything both sides want to send.
    pub(crate) fn flush(&mut self) {
        while let Some(t) = self.a.poll_transmit(self.now) {
            assert_eq!(t.destination, addr(B_ADDR));
            self.ab.send(self.now, t);
        }
        if self.b_preempted().is_none() {
            let b_now = self.b_clock();
            while let Some(t) = self.b.poll_transmit(b_now) {
                assert_eq!(t.destination, addr(A_ADDR));
                self.ba.send(self.now, t);
            }
        }
        while let Some(e) = self.a.poll_event() {
            self.a_events.push(e);
        }
        while let Some(e) = self.b.poll_event() {
            self.b_events.push(e);
        }
    }

    /// The start and end of the preemption `b` is in now, if any.
    fn b_preempted(&self) -> Option<(Instant, Instant)> {
        let &(at, len) = self.b_preemptions.front()?;
        let (from, to) = (self.start + at, self.start + at + len);
        (self.now >= from && self.now < to).then_some((from, to))
    }

    /// Flushes, jumps the clock to the next event and handles it. Returns
    /// false when nothing at all is scheduled.
    pub(crate) fn step(&mut self) -> bool {
        self.flush();
        let b_events = match self.b_preempted() {
            Some((_, to)) => [Some(to), None, None],
            None => [
                self.ab.next_time(),
                self.b.poll_timeout().map(|t| self.true_time_of_b_clock(t)),
                self.b_preemptions
                    .front()
                    .map(|(at, _)| self.start + *at)
                    .filter(|t| *t > self.now),
            ],
        };
        let next = [self.ba.next_time(), self.a.poll_timeout()]
            .into_iter()
            .chain(b_events)
            .flatten()
            .min();
        let Some(next) = next else { return false };
        self.now = self.now.max(next);
        let mut b_now = self.b_clock();
        if self.b_preempted().is_none() {
            if let Some(&(at, len)) = self.b_preemptions.front()
                && self.now >= self.start + at + len
            {
                // The preemption is over: what arrived meanwhile is handled
                // now, stamped with the time the driver had woken up at.
                self.b_preemptions.pop_front();
                if self.b_stale_stamps {
                    let woke = self.now;
                    self.now = self.start + at;
                    b_now = self.b_clock();
                    self.now = woke;
                }
            }
            while let Some(d) = self.ab.pop_due(self.now) {
                let outcome = self
                    .b
                    .handle_datagram(b_now, addr(A_ADDR), &d)
                    .expect("valid datagram");
                if let (DatagramOutcome::Incoming(h), Some(mtu)) = (outcome, self.interface_mtu)
                    && let Some(c) = self.b.connection_mut(h)
                {
                    c.set_interface_mtu(mtu);
                }
            }
            self.b.handle_timeout(b_now);
        }
        while let Some(d) = self.ba.pop_due(self.now) {
            self.a
                .handle_datagram(self.now, addr(B_ADDR), &d)
                .expect("valid datagram");
        }
        self.a.handle_timeout(self.now);
        self.flush();
        true
    }

    /// `b`'s view of the current time.
    pub(crate) fn b_clock(&self) -> Instant {
        self.start + (self.now - self.start).mul_f64(1.0 + self.b_skew)
    }

    /// The true time at which `b`'s clock shows `t` (rounded up, so that
    /// handling it at that time makes progress).
    fn true_time_of_b_clock(&self, t: Instant) -> Instant {
        let local = t.saturating_duration_since(self.start);
        self.start + local.div_f64(1.0 + self.b_skew) + Duration::from_micros(1)
    }

    /// Steps until `done` or the virtual deadline; returns whether `done`.
    pub(crate) fn drive_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&mut Self) -> bool,
    ) -> bool {
        let deadline = self.now + limit;
        loop {
            if done(self) {
                return true;
            }
            if self.now >= deadline || !self.step() {
                return done(self);
            }
        }
    }

    /// Connects `a` to `b` and runs the handshake up to the acceptor's
    /// STATE reply reaching `a`. Returns the two handles.
    pub(crate) fn connect(&mut self) -> (ConnectionHandle, ConnectionHandle) {
        let ha = self.a.connect(self.now, addr(B_ADDR));
        if let Some(mtu) = self.interface_mtu {
            self.a.connection_mut(ha).expect("a").set_interface_mtu(mtu);
        }
        let ok = self.drive_until(Duration::from_secs(600), |p| {
            p.a.connection(ha)
                .is_some_and(|c| c.state() != State::SynSent)
        });
        let a = self.a.connection(ha).expect("a");
        assert!(
            ok && a.state() == State::Connected,
            "handshake did not complete"
        );
        // `b` only offers it to `accept` after the first DATA; tests reach
        // the half-open connection directly.
        let hb = self
            .b
            .find(addr(A_ADDR), a.send_id())
            .expect("b has the connection");
        (ha, hb)
    }
}

/// Deterministic stream contents.
pub(crate) fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 9).wrapping_mul(7)) as u8
}

/// Outcome of [`transfer`].
#[derive(Debug)]
pub(crate) struct TransferReport {
    pub(crate) elapsed: Duration,
    pub(crate) a_received: u64,
    pub(crate) b_received: u64,
    pub(crate) closed: bool,
}

/// Sends `ab_bytes` from `a` to `b` and `ba_bytes` back, both closing when
/// done, checking every byte. Fails on corruption; reports what arrived.
pub(crate) fn transfer(
    pair: &mut Pair,
    ab_bytes: u64,
    ba_bytes: u64,
    limit: Duration,
) -> TransferReport {
    let (ha, hb) = pair.connect();
    let mut sent = [0u64; 2];
    let mut received = [0u64; 2];
    let mut eof = [false; 2];
    let mut buf = vec![0u8; 64 * 1024];
    let mut chunk = vec![0u8; 64 * 1024];
    let totals = [ab_bytes, ba_bytes];
    let closed = pair.drive_until(limit, |p| {
        while p.b.accept().is_some() {}
        for side in 0..2 {
            let (ep, h, peer_total) = if side == 0 {
                (&mut p.a, ha, ba_bytes)
            } else {
                (&mut p.b, hb, ab_bytes)
            };
            let Some(c) = ep.connection_mut(h) else {
                continue;
            };
            // Write as much as fits.
            while sent[side] < totals[side] {
                let n = (totals[side] - sent[side])
                    .min(chunk.len() as u64)
                    .min(c.send_capacity() as u64) as usize;
                if n == 0 {
                    break;
                }
                for (k, b) in chunk[..n].iter_mut().enumerate() {
                    *b = pattern(sent[side] + k as u64);
                }
                let w = c.write(&chunk[..n]);
                sent[side] += w as u64;
                if w < n {
                    break;
                }
            }
            if sent[side] == totals[side] {
                c.close();
            }
            loop {
                match c.read(&mut buf) {
                    Ok(0) => {
                        eof[side] = true;
                        break;
                    }
                    Ok(n) => {
                        for (k, b) in buf[..n].iter().enumerate() {
                            let i = received[side] + k as u64;
                            assert_eq!(*b, pattern(i), "corrupt byte {i} on side {side}");
                        }
                        received[side] += n as u64;
                        assert!(received[side] <= peer_total, "too many bytes");
                    }
                    Err(ReadError::Blocked) => break,
                    Err(ReadError::Lost(e)) => panic!("side {side} lost: {e}"),
                }
            }
        }
        let state = |ep: &Endpoint, h| ep.connection(h).map(|c| c.state());
        eof == [true, true]
            && matches!(state(&p.a, ha), Some(State::Closed | State::Dead))
            && matches!(state(&p.b, hb), Some(State::Closed | State::Dead))
    });
    TransferReport {
        elapsed: pair.elapsed(),
        a_received: received[0],
        b_received: received[1],
        closed,
    }
}
