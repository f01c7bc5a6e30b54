//! One direction of a link as a pure function of time: a packet goes in with
//! `now`, and comes out as zero, one or two arrival times (lost, delivered,
//! duplicated). The pipeline, in order: MTU check, loss (random, then
//! Gilbert–Elliott bursts), bandwidth with a bounded tail-drop queue,
//! latency plus jitter (optionally without reordering), duplication.
//!
//! Every random draw comes from [`crate::fate`] keyed by the scenario seed, the
//! link direction, the packet's flow and its index in that flow.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::fate;
use crate::packet::Meta;

/// Gilbert–Elliott bursty loss: a two-state Markov chain per flow.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GilbertElliott {
    /// Probability of moving from the good to the bad state, per packet.
    pub p_good_to_bad: f64,
    /// Probability of moving from the bad to the good state, per packet.
    pub p_bad_to_good: f64,
    /// Loss probability while in the bad state.
    #[serde(default = "one")]
    pub loss_in_bad: f64,
    /// Loss probability while in the good state.
    #[serde(default)]
    pub loss_in_good: f64,
}

fn one() -> f64 {
    1.0
}

impl GilbertElliott {
    /// The long-run loss rate of this chain.
    pub fn mean_loss(&self) -> f64 {
        let pb = self.p_good_to_bad / (self.p_good_to_bad + self.p_bad_to_good);
        pb * self.loss_in_bad + (1.0 - pb) * self.loss_in_good
    }
}

/// What one direction of a link does to packets. The default is a perfect
/// link with a 1500-byte MTU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Impairment {
    /// Fixed one-way delay.
    #[serde(with = "duration_ms")]
    pub latency: Duration,
    /// Extra delay drawn uniformly from `[0, jitter]` per packet.
    #[serde(with = "duration_ms")]
    pub jitter: Duration,
    /// Whether jitter may reorder packets; if false a packet never overtakes
    /// the one sent before it on this direction.
    pub reorder: bool,
    /// Independent random loss probability.
    pub loss: f64,
    /// Bursty loss, applied after `loss`.
    pub burst_loss: Option<GilbertElliott>,
    /// Probability that a delivered packet is delivered twice.
    pub duplicate: f64,
    /// Bandwidth in bits per second; `None` is unlimited.
    pub rate_bps: Option<u64>,
    /// Bytes the queue in front of a rate-limited link holds before tail drop.
    pub queue_bytes: usize,
    /// Largest packet carried; bigger ones are dropped and answered with
    /// ICMP "fragmentation needed" (when DF is set).
    pub mtu: usize,
}

impl Default for Impairment {
    fn default() -> Self {
        Impairment {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            reorder: true,
            loss: 0.0,
            burst_loss: None,
            duplicate: 0.0,
            rate_bps: None,
            queue_bytes: 256 * 1024,
            mtu: 1500,
        }
    }
}

impl Impairment {
    /// A perfect link.
    pub fn none() -> Self {
        Self::default()
    }

    /// Sets the fixed latency.
    pub fn latency(mut self, d: Duration) -> Self {
        self.latency = d;
        self
    }

    /// Sets jitter and whether it may reorder.
    pub fn jitter(mut self, d: Duration, reorder: bool) -> Self {
        self.jitter = d;
        self.reorder = reorder;
        self
    }

    /// Sets random loss.
    pub fn loss(mut self, p: f64) -> Self {
        self.loss = p;
        self
    }

    /// Sets bursty loss.
    pub fn burst_loss(mut self, ge: GilbertElliott) -> Self {
        self.burst_loss = Some(ge);
        self
    }

    /// Sets duplication probability.
    pub fn duplicate(mut self, p: f64) -> Self {
        self.duplicate = p;
        self
    }

    /// Sets the bandwidth and queue size.
    pub fn rate(mut self, bits_per_sec: u64, queue_bytes: usize) -> Self {
        self.rate_bps = Some(bits_per_sec);
        self.queue_bytes = queue_bytes;
        self
    }

    /// Sets the MTU.
    pub fn mtu(mut self, mtu: usize) -> Self {
        self.mtu = mtu;
        self
    }
}

/// Both directions of a link. `up` carries packets from the host (or lower
/// router) towards the network it is attached to, `down` the other way.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinkConfig {
    /// Towards the network.
    pub up: Impairment,
    /// From the network.
    pub down: Impairment,
}

impl LinkConfig {
    /// The same impairment both ways.
    pub fn symmetric(i: Impairment) -> Self {
        LinkConfig {
            up: i.clone(),
            down: i,
        }
    }
}

pub(crate) mod duration_ms {
    //! Durations as (fractional) milliseconds in scenario files.
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        if !(ms.is_finite() && ms >= 0.0) {
            return Err(serde::de::Error::custom(
                "duration must be a non-negative number of milliseconds",
            ));
        }
        Ok(Duration::from_secs_f64(ms / 1000.0))
    }
}

/// Packet counters of one link direction. Read them at any time.
#[derive(Debug, Default)]
pub(crate) struct LinkCounters {
    /// Packets offered to the link.
    pub(crate) sent: AtomicU64,
    /// Packets delivered at the far end (duplicates count twice).
    pub(crate) delivered: AtomicU64,
    /// Bytes delivered at the far end.
    pub(crate) delivered_bytes: AtomicU64,
    /// Dropped by random or bursty loss.
    pub(crate) dropped_loss: AtomicU64,
    /// Dropped because the queue was full.
    pub(crate) dropped_queue: AtomicU64,
    /// Dropped because they exceeded the MTU.
    pub(crate) dropped_mtu: AtomicU64,
    /// Extra copies made by duplication.
    pub(crate) duplicated: AtomicU64,
}

/// The counters of one link direction at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LinkStats {
    /// Packets offered to the link.
    pub sent: u64,
    /// Packets delivered at the far end (duplicates count twice).
    pub delivered: u64,
    /// Bytes delivered at the far end.
    pub delivered_bytes: u64,
    /// Dropped by random or bursty loss.
    pub dropped_loss: u64,
    /// Dropped because the queue was full.
    pub dropped_queue: u64,
    /// Dropped because they exceeded the MTU.
    pub dropped_mtu: u64,
    /// Extra copies made by duplication.
    pub duplicated: u64,
}

impl LinkCounters {
    /// Takes a snapshot.
    pub(crate) fn snapshot(&self) -> LinkStats {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LinkStats {
            sent: r(&self.sent),
            delivered: r(&self.delivered),
            delivered_bytes: r(&self.delivered_bytes),
            dropped_loss: r(&self.dropped_loss),
            dropped_queue: r(&self.dropped_queue),
            dropped_mtu: r(&self.dropped_mtu),
            duplicated: r(&self.duplicated),
        }
    }
}

fn inc(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

/// What happened to one packet on one link direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Fate {
    /// Delivered after this delay, and maybe a second time.
    Delivered {
        /// One-way delay in nanoseconds.
        delay_ns: u64,
        /// Delay of the duplicate copy, if any.
        duplicate_ns: Option<u64>,
    },
    /// Lost to random or bursty loss.
    Lost,
    /// Dropped by a full queue.
    QueueFull,
    /// Too big for the MTU.
    TooBig,
}

/// The flow a packet belongs to, for keying its random draws.
pub(crate) fn flow_key(m: &Meta) -> u64 {
    fate::hash(&[
        u64::from(m.proto),
        u64::from(u32::from(m.src)),
        u64::from(u32::from(m.dst)),
        u64::from(m.sport) << 16 | u64::from(m.dport),
    ])
}

#[derive(Debug, Default, Clone, Copy)]
struct FlowState {
    index: u64,
    bad: bool,
}

/// One direction of a link.
#[derive(Debug)]
pub(crate) struct LinkDir {
    cfg: Impairment,
    key: u64,
    flows: HashMap<u64, FlowState>,
    /// When the transmitter finishes sending what is already queued.
    busy_until: Option<Instant>,
    /// Latest arrival handed out, for jitter without reordering.
    last_arrival: Option<Instant>,
    last_index: u64,
    pub(crate) counters: Arc<LinkCounters>,
}

impl LinkDir {
    pub(crate) fn new(cfg: Impairment, seed: u64, link_id: u64, up: bool) -> Self {
        LinkDir {
            cfg,
            key: fate::hash(&[seed, link_id, u64::from(up)]),
            flows: HashMap::new(),
            busy_until: None,
            last_arrival: None,
            last_index: 0,
            counters: Arc::new(LinkCounters::default()),
        }
    }

    pub(crate) fn mtu(&self) -> usize {
        self.cfg.mtu
    }

    /// Decides the fate of a packet of `len` bytes offered at `now`.
    pub(crate) fn offer(&mut self, now: Instant, len: usize, flow: u64) -> Fate {
        let c = &self.counters;
        inc(&c.sent, 1);
        let st = self.flows.entry(flow).or_default();
        let index = st.index;
        st.index += 1;
        self.last_index = index;
        let draw = |n: u64| fate::unit(fate::hash(&[self.key, flow, index, n]));
        if len > self.cfg.mtu {
            inc(&c.dropped_mtu, 1);
            return Fate::TooBig;
        }
        if self.cfg.loss > 0.0 && draw(1) < self.cfg.loss {
            inc(&c.dropped_loss, 1);
            return Fate::Lost;
        }
        if let Some(ge) = self.cfg.burst_loss {
            let flip = draw(2);
            let bad = if st.bad {
                flip >= ge.p_bad_to_good
            } else {
                flip < ge.p_good_to_bad
            };
            st.bad = bad;
            let p = if bad { ge.loss_in_bad } else { ge.loss_in_good };
            if p > 0.0 && draw(3) < p {
                inc(&c.dropped_loss, 1);
                return Fate::Lost;
            }
        }
        let mut depart = now;
        if let Some(rate) = self.cfg.rate_bps.filter(|r| *r > 0) {
            let start = self.busy_until.filter(|b| *b > now).unwrap_or(now);
            let backlog = start.duration_since(now);
            let backlog_bytes = (backlog.as_secs_f64() * rate as f64 / 8.0) as usize;
            if backlog_bytes + len > self.cfg.queue_bytes && backlog_bytes > 0 {
                inc(&c.dropped_queue, 1);
                return Fate::QueueFull;
            }
            let tx = Duration::from_nanos((len as u64 * 8).saturating_mul(1_000_000_000) / rate);
            depart = start + tx;
            self.busy_until = Some(depart);
        }
        let jitter = if self.cfg.jitter.is_zero() {
            Duration::ZERO
        } else {
            self.cfg.jitter.mul_f64(draw(4))
        };
        let mut arrival = depart + self.cfg.latency + jitter;
        if let (false, Some(last)) = (self.cfg.reorder, self.last_arrival) {
            arrival = arrival.max(last);
        }
        self.last_arrival = Some(self.last_arrival.map_or(arrival, |l| l.max(arrival)));
        let duplicate_ns = (self.cfg.duplicate > 0.0 && draw(5) < self.cfg.duplicate).then(|| {
            inc(&c.duplicated, 1);
            let extra = if self.cfg.jitter.is_zero() {
                Duration::ZERO
            } else {
                self.cfg.jitter.mul_f64(draw(6))
            };
            let second = (depart + self.cfg.latency + extra).max(arrival);
            second.duration_since(now).as_nanos() as u64
        });
        Fate::Delivered {
            delay_ns: arrival.duration_since(now).as_nanos() as u64,
            duplicate_ns,
        }
    }

    /// The index in its flow of the packet last offered.
    pub(crate) fn last_index(&self) -> u64 {
        self.last_index
    }

    pub(crate) fn count_delivered(&self, len: usize) {
        inc(&self.counters.delivered, 1);
        inc(&self.counters.delivered_bytes, len as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fates(cfg: &Impairment, seed: u64, n: u64) -> Vec<Fate> {
        let mut l = LinkDir::new(cfg.clone(), seed, 1, true);
        let now = Instant::now();
        (0..n)
            .map(|i| l.offer(now + Duration::from_millis(i), 100, 42))
            .collect()
    }

    #[test]
    fn same_seed_same_fates_other_seed_other_fates() {
        let cfg = Impairment::none()
            .loss(0.1)
            .jitter(Duration::from_millis(5), true)
            .duplicate(0.05);
        assert_eq!(fates(&cfg, 7, 2000), fates(&cfg, 7, 2000));
        assert_ne!(fates(&cfg, 7, 2000), fates(&cfg, 8, 2000));
    }

    #[test]
    fn loss_rates_match_configuration() {
        let n = 50_000;
        let lost = |cfg: &Impairment| {
            fates(cfg, 3, n)
                .iter()
                .filter(|f| **f == Fate::Lost)
                .count() as f64
                / n as f64
        };
        let r = lost(&Impairment::none().loss(0.05));
        assert!((r - 0.05).abs() < 0.005, "random loss {r}");
        let ge = GilbertElliott {
            p_good_to_bad: 0.01,
            p_bad_to_good: 0.25,
            loss_in_bad: 1.0,
            loss_in_good: 0.0,
        };
        let r = lost(&Impairment::none().burst_loss(ge));
        assert!(
            (r - ge.mean_loss()).abs() < 0.01,
            "burst loss {r} vs {}",
            ge.mean_loss()
        );
        // Bursts: losses come in runs averaging 1 / p_bad_to_good = 4 packets.
        let f = fates(&Impairment::none().burst_loss(ge), 3, n);
        let runs = f
            .windows(2)
            .filter(|w| w[0] != Fate::Lost && w[1] == Fate::Lost)
            .count();
        let mean_run = f.iter().filter(|x| **x == Fate::Lost).count() as f64 / runs as f64;
        assert!((3.0..5.0).contains(&mean_run), "mean burst {mean_run}");
    }

    #[test]
    fn jitter_without_reorder_keeps_order() {
        let cfg = Impairment::none()
            .latency(Duration::from_millis(10))
            .jitter(Duration::from_millis(20), false);
        let mut l = LinkDir::new(cfg, 1, 1, true);
        let t0 = Instant::now();
        let mut last = t0;
        for i in 0..1000 {
            let now = t0 + Duration::from_micros(100 * i);
            let Fate::Delivered { delay_ns, .. } = l.offer(now, 100, i) else {
                panic!()
            };
            let at = now + Duration::from_nanos(delay_ns);
            assert!(at >= last);
            assert!(delay_ns >= 10_000_000);
            last = at;
        }
    }

    #[test]
    fn rate_limit_spaces_packets_and_tail_drops() {
        // 8 Mbit/s: a 1000-byte packet takes 1 ms. Queue of 5000 bytes.
        let cfg = Impairment::none().rate(8_000_000, 5000);
        let mut l = LinkDir::new(cfg, 1, 1, true);
        let now = Instant::now();
        let f: Vec<Fate> = (0..10).map(|_| l.offer(now, 1000, 1)).collect();
        assert_eq!(
            f[0],
            Fate::Delivered {
                delay_ns: 1_000_000,
                duplicate_ns: None
            }
        );
        assert_eq!(
            f[4],
            Fate::Delivered {
                delay_ns: 5_000_000,
                duplicate_ns: None
            }
        );
        assert!(f[6..].iter().all(|x| *x == Fate::QueueFull), "{f:?}");
        assert_eq!(l.offer(now, 2000, 1), Fate::TooBig);
    }
}
