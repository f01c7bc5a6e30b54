//! Delay-based congestion control: LEDBAT (RFC 6817) and LEDBAT++.
//!
//! The connection feeds in one-way delay samples as they arrive
//! ([`Ledbat::on_delay_sample`] from the peer's `timestamp_difference`,
//! [`Ledbat::on_reverse_delay_sample`] from our own measurement of the peer's
//! packets, used for clock-drift correction), then reports ACKs
//! ([`Ledbat::on_ack`]), losses ([`Ledbat::on_loss`]) and RTO expiries
//! ([`Ledbat::on_timeout`]). [`Ledbat::window`] is the congestion window in
//! bytes.
//!
//! Delays are differences of two unsynchronised clocks, so only their changes
//! mean anything: the queuing delay is the filtered current delay (minimum of
//! the last few samples) minus the base delay (minimum over about ten
//! one-minute buckets). All arithmetic on raw delays wraps.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::config::{Config, CongestionMode};
use super::packet::ts_lt;

const BUCKET: Duration = Duration::from_secs(60);
/// Length of one epoch of the queuing-delay peak (the peak is the larger of
/// this epoch's and the last one's).
const PEAK_EPOCH: Duration = Duration::from_secs(30);
/// Samples whose minimum is the steady queue the loss classifier looks at:
/// enough that jitter alone leaves it near zero.
const STEADY_FILTER: usize = 32;
/// A steady queue below this is no queue (clock and timer noise).
const MIN_STEADY_QUEUE_US: f64 = 1_000.0;
/// libutp never corrects more than this much drift at once.
const MAX_DRIFT_STEP: u32 = 10_000;

/// Wrapping minimum of two raw delay values.
fn wmin(a: u32, b: u32) -> u32 {
    if ts_lt(a, b) { a } else { b }
}

/// A sliding minimum of delay samples over minute buckets, plus a short
/// filter of the most recent samples.
#[derive(Debug, Clone)]
pub(crate) struct DelayHistory {
    buckets: VecDeque<u32>,
    max_buckets: usize,
    bucket_started: Option<Instant>,
    base: Option<u32>,
    recent: VecDeque<u32>,
    filter: usize,
}

impl DelayHistory {
    pub(crate) fn new(max_buckets: usize, filter: usize) -> Self {
        Self {
            buckets: VecDeque::new(),
            max_buckets: max_buckets.max(1),
            bucket_started: None,
            base: None,
            recent: VecDeque::new(),
            filter: filter.max(1),
        }
    }

    pub(crate) fn add_sample(&mut self, now: Instant, sample: u32) {
        match self.bucket_started {
            Some(started) if now.saturating_duration_since(started) < BUCKET => {
                if let Some(last) = self.buckets.back_mut() {
                    *last = wmin(*last, sample);
                }
            }
            _ => {
                self.buckets.push_back(sample);
                while self.buckets.len() > self.max_buckets {
                    self.buckets.pop_front();
                }
                self.bucket_started = Some(now);
            }
        }
        self.base = self.buckets.iter().copied().reduce(wmin);
        self.recent.push_back(sample);
        while self.recent.len() > self.filter {
            self.recent.pop_front();
        }
    }

    /// Adds `offset` to every stored sample (clock-drift correction).
    pub(crate) fn shift(&mut self, offset: u32) {
        for b in self.buckets.iter_mut().chain(self.recent.iter_mut()) {
            *b = b.wrapping_add(offset);
        }
        self.base = self.base.map(|b| b.wrapping_add(offset));
    }

    pub(crate) fn base(&self) -> Option<u32> {
        self.base
    }

    /// The newest sample minus the base delay, in microseconds.
    pub(crate) fn latest_queuing_delay(&self) -> Option<u32> {
        let base = self.base?;
        let latest = *self.recent.back()?;
        Some(if ts_lt(latest, base) {
            0
        } else {
            latest.wrapping_sub(base)
        })
    }

    /// Filtered current delay minus base delay, in microseconds.
    pub(crate) fn queuing_delay(&self) -> Option<u32> {
        let base = self.base?;
        let current = self.recent.iter().copied().reduce(wmin)?;
        Some(if ts_lt(current, base) {
            0
        } else {
            current.wrapping_sub(base)
        })
    }
}

/// The most queuing delay the latest RTT sample leaves room for: its
/// excess over the smallest RTT seen. Every queue on the path lengthens the
/// round trip, so a one-way queue longer than that is a clock artefact (a
/// base delay from a sample stamped before its datagram arrived), not a
/// queue. libutp clamps to the whole RTT; the excess is tighter and still
/// never binds on a real queue.
/// An RTT of zero is no sample (a clock that did not move).
pub(crate) fn queue_bound(latest: Option<Duration>, min: Option<Duration>) -> Option<Duration> {
    latest
        .filter(|l| !l.is_zero())
        .map(|l| l.saturating_sub(min.unwrap_or_default()))
}

/// What the connection knows about round trips when an ACK arrives.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RttInfo {
    /// Smoothed RTT.
    pub(crate) srtt: Duration,
    /// RTT of the newest sample (bounds the queuing delay).
    pub(crate) latest: Option<Duration>,
    /// Smallest RTT seen (LEDBAT++'s base for the dynamic gain).
    pub(crate) min: Option<Duration>,
}

#[derive(Debug, Clone, Copy)]
enum Slowdown {
    /// Waiting for the first slow start to end.
    NotScheduled,
    /// Next slowdown at this time.
    Scheduled(Instant),
    /// Window held at two packets until `until`; then slow start back to `saved`.
    Frozen {
        until: Instant,
        started: Instant,
        saved: f64,
    },
    /// Slow start after a freeze, begun at `started`.
    Ramping { started: Instant },
}

/// LEDBAT and LEDBAT++ window computation.
#[derive(Debug, Clone)]
pub(crate) struct Ledbat {
    mode: CongestionMode,
    target_us: f64,
    cwnd: f64,
    ssthresh: f64,
    slow_start: bool,
    mss: f64,
    ours: DelayHistory,
    /// The same samples with a long filter: the queue that persists
    /// through jitter (for telling random loss from congestion).
    steady: DelayHistory,
    theirs: DelayHistory,
    last_cut: Option<Instant>,
    /// Window, threshold and phase before the last loss cut.
    undo: Option<(f64, f64, bool)>,
    slowdown: Slowdown,
    /// Largest steady queue seen in the previous and the current epoch, µs.
    peak_qd_us: [f64; 2],
    /// Smallest steady queue seen in the previous and the current epoch,
    /// µs (infinite before any sample): the floor our own queue sits on.
    floor_qd_us: [f64; 2],
    peak_epoch: Option<Instant>,
}

impl Ledbat {
    pub(crate) fn new(config: &Config, mss: usize) -> Self {
        let mss = mss as f64;
        Self {
            mode: config.congestion,
            target_us: config.target().as_micros() as f64,
            cwnd: mss * f64::from(config.initial_window_packets.max(1)),
            ssthresh: f64::INFINITY,
            slow_start: true,
            mss,
            ours: DelayHistory::new(config.base_delay_history, config.delay_filter),
            steady: DelayHistory::new(config.base_delay_history, STEADY_FILTER),
            theirs: DelayHistory::new(config.base_delay_history, config.delay_filter),
            last_cut: None,
            undo: None,
            slowdown: Slowdown::NotScheduled,
            peak_qd_us: [0.0; 2],
            floor_qd_us: [f64::INFINITY; 2],
            peak_epoch: None,
        }
    }

    /// Congestion window in bytes.
    pub(crate) fn window(&self) -> usize {
        self.cwnd as usize
    }

    #[cfg(test)]
    pub(crate) fn in_slow_start(&self) -> bool {
        self.slow_start
    }

    pub(crate) fn set_mss(&mut self, mss: usize) {
        self.mss = mss as f64;
        self.cwnd = self.cwnd.max(self.min_cwnd());
    }

    fn min_cwnd(&self) -> f64 {
        2.0 * self.mss
    }

    /// The peer's `timestamp_difference`: how long our packet took to reach it,
    /// on the two unsynchronised clocks. Zero means "no sample" and is ignored
    /// by the caller.
    pub(crate) fn on_delay_sample(&mut self, now: Instant, delay: u32) {
        self.ours.add_sample(now, delay);
        self.steady.add_sample(now, delay);
    }

    /// Our own measurement of the peer's packets. If its base falls, the
    /// peer's clock runs slower than ours, and our base delay must rise by the
    /// same amount (libutp's drift correction).
    pub(crate) fn on_reverse_delay_sample(&mut self, now: Instant, delay: u32) {
        let before = self.theirs.base();
        self.theirs.add_sample(now, delay);
        if let (Some(before), Some(after)) = (before, self.theirs.base())
            && ts_lt(after, before)
        {
            let drift = before.wrapping_sub(after);
            if drift <= MAX_DRIFT_STEP {
                self.ours.shift(drift);
                self.steady.shift(drift);
            }
        }
    }

    /// Queuing delay, clamped to `bound` (see [`queue_bound`]).
    pub(crate) fn queuing_delay(&self, bound: Option<Duration>) -> Option<Duration> {
        let qd = Duration::from_micros(u64::from(self.ours.queuing_delay()?));
        Some(bound.map_or(qd, |b| qd.min(b)))
    }

    /// Slow-start threshold (infinite before the first exit) and whether
    /// slow start is on.
    pub(crate) fn slow_start_state(&self) -> (f64, bool) {
        (self.ssthresh, self.slow_start)
    }

    /// The latest sample minus the base delay, unfiltered, and the steady
    /// queue, its peak and its floor: what the loss classifier sees.
    pub(crate) fn delay_diagnostics(
        &self,
        bound: Option<Duration>,
    ) -> (Option<Duration>, Option<Duration>, Duration, Duration) {
        let raw = self.ours.latest_queuing_delay();
        let steady = self.steady_queue_us(bound);
        let peak = self.peak_qd_us[0].max(self.peak_qd_us[1]);
        (
            raw.map(|us| Duration::from_micros(u64::from(us))),
            steady.map(|us| Duration::from_micros(us as u64)),
            Duration::from_micros(peak as u64),
            Duration::from_micros(self.floor_us() as u64),
        )
    }

    #[cfg(test)]
    pub(crate) fn base_delay(&self) -> Option<u32> {
        self.ours.base()
    }

    /// `bytes_acked` newly acknowledged; `flight` bytes were in flight before
    /// the ACK.
    pub(crate) fn on_ack(&mut self, now: Instant, bytes_acked: usize, flight: usize, rtt: RttInfo) {
        let RttInfo {
            srtt: rtt,
            latest,
            min: min_rtt,
        } = rtt;
        if bytes_acked == 0 {
            return;
        }
        let acked = bytes_acked as f64;
        // Only a window that was actually used may grow (libtorrent).
        let saturated = flight as f64 + self.mss >= self.cwnd;
        let bound = queue_bound(latest, min_rtt);
        let qd = self
            .queuing_delay(bound)
            .map_or(0.0, |d| d.as_micros() as f64);
        self.note_peak(now, bound);
        let off_target = (self.target_us - qd) / self.target_us;
        match self.mode {
            CongestionMode::Ledbat => {
                if self.slow_start {
                    if qd > 0.9 * self.target_us {
                        self.exit_slow_start_on_delay(now, rtt);
                    } else if self.cwnd >= self.ssthresh {
                        self.exit_slow_start(now, rtt);
                    } else if saturated {
                        self.cwnd += acked;
                    }
                }
                if !self.slow_start {
                    if off_target >= 0.0 {
                        // RFC 6817: at most one MSS per RTT of growth.
                        if saturated {
                            self.cwnd += off_target.min(1.0) * acked * self.mss / self.cwnd;
                        }
                    } else {
                        // Over target the window shrinks by the fraction the
                        // delay is over per RTT, at most half per RTT: a
                        // multiplicative decrease (as in LEDBAT++), so a TCP
                        // flow filling the queue pushes us out within a few
                        // RTTs. libutp's off_target clamped to −1 gives only
                        // one MSS per RTT, too slow to yield to TCP.
                        self.cwnd += off_target.max(-0.5) * acked;
                    }
                }
            }
            CongestionMode::LedbatPlusPlus => {
                self.advance_slowdown(now, rtt);
                if matches!(self.slowdown, Slowdown::Frozen { .. }) {
                    return;
                }
                let gain = self.dynamic_gain(min_rtt);
                if self.slow_start {
                    if qd > 0.75 * self.target_us {
                        self.exit_slow_start_on_delay(now, rtt);
                    } else if self.cwnd >= self.ssthresh {
                        self.exit_slow_start(now, rtt);
                    } else if saturated {
                        self.cwnd += gain * acked;
                    }
                }
                if !self.slow_start {
                    if qd <= self.target_us {
                        if saturated {
                            self.cwnd += gain * acked * self.mss / self.cwnd;
                        }
                    } else {
                        // Per RTT: W += max(GAIN - W·(delay/target − 1), −W/2),
                        // spread over the ACKs of one window.
                        let per_rtt = (gain * self.mss - self.cwnd * (qd / self.target_us - 1.0))
                            .max(-self.cwnd / 2.0);
                        self.cwnd += per_rtt * acked / self.cwnd;
                    }
                }
            }
        }
        self.cwnd = self.cwnd.max(self.min_cwnd());
    }

    /// LEDBAT++: `GAIN = 1 / min(16, ⌈2·TARGET / base⌉)` with the base RTT.
    fn dynamic_gain(&self, min_rtt: Option<Duration>) -> f64 {
        let base_us = min_rtt.map_or(self.target_us, |r| (r.as_micros() as f64).max(1.0));
        1.0 / (2.0 * self.target_us / base_us).ceil().clamp(1.0, 16.0)
    }

    /// Leaves slow start because the queue grew: the window that produced
    /// the delay we see now was half the current one (it doubles every RTT
    /// and the delay signal is an RTT old), so go back to it rather than
    /// drain the overshoot at one packet per RTT.
    fn exit_slow_start_on_delay(&mut self, now: Instant, rtt: Duration) {
        self.cwnd = (self.cwnd / 2.0).max(self.min_cwnd());
        self.exit_slow_start(now, rtt);
    }

    fn exit_slow_start(&mut self, now: Instant, rtt: Duration) {
        self.slow_start = false;
        self.ssthresh = self.cwnd;
        if self.mode == CongestionMode::LedbatPlusPlus {
            self.slowdown = match self.slowdown {
                Slowdown::NotScheduled => Slowdown::Scheduled(now + rtt * 2),
                // The next slowdown comes after nine times this one's length,
                // capping the utilisation cost at about 10%.
                Slowdown::Ramping { started } => {
                    Slowdown::Scheduled(now + now.saturating_duration_since(started) * 9)
                }
                other => other,
            };
        }
    }

    fn advance_slowdown(&mut self, now: Instant, rtt: Duration) {
        match self.slowdown {
            Slowdown::Scheduled(at) if now >= at && !self.slow_start => {
                let saved = self.cwnd;
                self.cwnd = self.min_cwnd();
                self.slowdown = Slowdown::Frozen {
                    until: now + rtt * 2,
                    started: now,
                    saved,
                };
            }
            Slowdown::Frozen {
                until,
                started,
                saved,
            } if now >= until => {
                self.slow_start = true;
                self.ssthresh = saved;
                self.slowdown = Slowdown::Ramping { started };
            }
            _ => {}
        }
    }

    #[cfg(test)]
    pub(crate) fn in_slowdown(&self) -> bool {
        matches!(self.slowdown, Slowdown::Frozen { .. })
    }

    /// The steady queue (minimum of the last 32 samples minus the base),
    /// clamped to `bound` like the controller's, in µs.
    fn steady_queue_us(&self, bound: Option<Duration>) -> Option<f64> {
        let qd = u64::from(self.steady.queuing_delay()?);
        let qd = bound.map_or(qd, |b| qd.min(b.as_micros() as u64));
        Some(qd as f64)
    }

    fn note_peak(&mut self, now: Instant, bound: Option<Duration>) {
        if self
            .peak_epoch
            .is_none_or(|t| now.saturating_duration_since(t) >= PEAK_EPOCH)
        {
            self.peak_qd_us = [self.peak_qd_us[1], 0.0];
            self.floor_qd_us = [self.floor_qd_us[1], f64::INFINITY];
            self.peak_epoch = Some(now);
        }
        if let Some(qd) = self.steady_queue_us(bound) {
            self.peak_qd_us[1] = self.peak_qd_us[1].max(qd);
            self.floor_qd_us[1] = self.floor_qd_us[1].min(qd);
        }
    }

    /// The lowest the steady queue has been in the last 30–60 s (0 before
    /// any sample).
    fn floor_us(&self) -> f64 {
        let floor = self.floor_qd_us[0].min(self.floor_qd_us[1]);
        if floor.is_finite() { floor } else { 0.0 }
    }

    /// Whether a loss seen now should be read as congestion. A drop from a
    /// full queue comes when the queue is at its peak; a loss while our
    /// steady queue (the minimum of the last 32 delay samples, so jitter
    /// alone leaves it near zero) is under 1 ms, or less than half as deep
    /// as the deepest it has been in the last 30–60 s, and below half the
    /// target, is read as random (a lossy link: radio, a policer, netsim's
    /// `loss`) and costs no window. Without delay samples every loss is
    /// congestion. A queue that overflows under our own or a competing
    /// flow's load is at its peak then, so on shallow buffers (down to
    /// 1 ms) we still halve, and on deep ones the delay signal acts before
    /// any drop (RFC 6817's premise).
    ///
    /// "Our" queue is measured from its floor, the lowest the steady queue
    /// has been in the last 30–60 s, not from the base delay: a delay that
    /// never goes away is no queue we build or could drain. A base delay
    /// that is too low (a delay sample stamped before its datagram arrived,
    /// by a driver starved of CPU), a route that got longer, or a
    /// forwarding latency that stays would otherwise read as a standing
    /// queue at its peak: every random loss would halve the window, the
    /// window would never build a queue again to raise the peak, and the
    /// connection would stay at Reno's loss-limited rate for the ten
    /// minutes of base-delay history (the soak's fall under busy loops).
    pub(crate) fn loss_is_congestion(&self, bound: Option<Duration>) -> bool {
        let Some(qd) = self.steady_queue_us(bound) else {
            return true;
        };
        let floor = self.floor_us().min(qd);
        let own = qd - floor;
        let own_peak = (self.peak_qd_us[0].max(self.peak_qd_us[1]) - floor).max(0.0);
        own >= 0.5 * self.target_us || (own >= 0.5 * own_peak && own >= MIN_STEADY_QUEUE_US)
    }

    /// Whether a loss now could cut the window: not within an RTT of the
    /// last cut.
    pub(crate) fn may_cut(&self, now: Instant, rtt: Duration) -> bool {
        self.last_cut
            .is_none_or(|last| now.saturating_duration_since(last) >= rtt)
    }

    /// A packet was lost. Halves the window at most once per RTT; returns
    /// whether it did.
    pub(crate) fn on_loss(&mut self, now: Instant, rtt: Duration) -> bool {
        if let Some(last) = self.last_cut
            && now.saturating_duration_since(last) < rtt
        {
            return false;
        }
        self.last_cut = Some(now);
        self.undo = Some((self.cwnd, self.ssthresh, self.slow_start));
        self.cwnd = (self.cwnd / 2.0).max(self.min_cwnd());
        self.ssthresh = self.cwnd;
        if self.slow_start {
            self.exit_slow_start(now, rtt);
        }
        true
    }

    /// The last cut was for a packet that had only been reordered: restore
    /// the window it took away (once).
    pub(crate) fn undo_last_cut(&mut self) -> bool {
        let Some((cwnd, ssthresh, slow_start)) = self.undo.take() else {
            return false;
        };
        self.cwnd = self.cwnd.max(cwnd);
        self.ssthresh = ssthresh;
        self.slow_start = slow_start;
        true
    }

    /// The RTO fired: back to one packet and slow start (BEP 29, libutp).
    pub(crate) fn on_timeout(&mut self) {
        self.undo = None;
        self.ssthresh = (self.cwnd / 2.0).max(self.min_cwnd());
        self.cwnd = self.mss;
        self.slow_start = true;
    }
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;

    const MSS: usize = 1000;

    fn ledbat(mode: CongestionMode) -> Ledbat {
        let mut c = Config::default();
        c.congestion = mode;
        Ledbat::new(&c, MSS)
    }

    fn rtt() -> Duration {
        Duration::from_millis(50)
    }

    /// No smallest RTT: the queue is bounded by the whole latest RTT.
    fn info(srtt: Duration, latest: Option<Duration>) -> RttInfo {
        RttInfo {
            srtt,
            latest,
            min: None,
        }
    }

    /// Feeds one delay sample `qd_us` above a 10 ms base, 32 times (the
    /// steady filter's length), and one ACK so the peak sees it.
    fn settle(l: &mut Ledbat, now: Instant, qd_us: u32) {
        for _ in 0..STEADY_FILTER {
            l.on_delay_sample(now, 10_000 + qd_us);
        }
        l.on_ack(now, MSS, 0, info(rtt(), None));
    }

    #[test]
    fn a_loss_with_the_queue_far_below_its_peak_is_not_congestion() {
        let t0 = Instant::now();
        let mut l = ledbat(CongestionMode::Ledbat);
        // No delay samples yet: every loss is congestion.
        assert!(l.loss_is_congestion(None));
        settle(&mut l, t0, 0);
        // No steady queue (under 1 ms): random.
        assert!(!l.loss_is_congestion(None));
        // The queue reached 30 ms (a shallow buffer overflowing) ...
        settle(&mut l, t0, 30_000);
        assert!(l.loss_is_congestion(None));
        // ... and drained to 5 ms: a loss now is random.
        settle(&mut l, t0 + Duration::from_secs(1), 5_000);
        assert!(!l.loss_is_congestion(None));
        // Half the peak is congestion again.
        settle(&mut l, t0 + Duration::from_secs(2), 15_000);
        assert!(l.loss_is_congestion(None));
        // The peak is forgotten after one to two epochs of 30 s: a queue
        // that rises from 2 ms to 4 ms is ours again ...
        settle(&mut l, t0 + Duration::from_secs(40), 2_000);
        settle(&mut l, t0 + Duration::from_secs(70), 2_000);
        settle(&mut l, t0 + Duration::from_secs(71), 4_000);
        assert!(l.loss_is_congestion(None));
        // ... but 2 ms that never went away is no queue of ours.
        settle(&mut l, t0 + Duration::from_secs(72), 2_000);
        assert!(!l.loss_is_congestion(None));
    }

    #[test]
    fn a_delay_that_never_goes_away_is_no_queue_of_ours() {
        // A base delay 20 ms too low (a sample stamped before it arrived)
        // or a route 20 ms longer: every sample reads 20 ms of "queue",
        // with jitter on top. Once the classifier's memory has passed, a
        // loss at 20–21 ms is random; a queue we build on top still counts.
        let t0 = Instant::now();
        let mut l = ledbat(CongestionMode::Ledbat);
        for s in 0..70u64 {
            settle(
                &mut l,
                t0 + Duration::from_secs(s),
                20_000 + (s as u32 % 3) * 500,
            );
        }
        assert!(!l.loss_is_congestion(None));
        settle(&mut l, t0 + Duration::from_secs(71), 26_000);
        assert!(l.loss_is_congestion(None));
    }

    #[test]
    fn jitter_alone_is_no_steady_queue() {
        let t0 = Instant::now();
        let mut l = ledbat(CongestionMode::Ledbat);
        // Delays jumping between 0 and 4 ms: the short filter sees a few
        // ms at times, the steady queue stays 0, so a loss is random.
        for i in 0..200u32 {
            l.on_delay_sample(t0, 10_000 + (i * 7919) % 4_000);
            l.on_ack(t0, MSS, 0, info(rtt(), None));
        }
        assert!(!l.loss_is_congestion(None));
    }

    #[test]
    fn a_loss_at_half_the_target_is_congestion_whatever_the_peak() {
        let t0 = Instant::now();
        let mut l = ledbat(CongestionMode::Ledbat);
        settle(&mut l, t0, 0);
        settle(&mut l, t0, 400_000);
        settle(&mut l, t0, 60_000);
        // 60 ms is far below the 400 ms peak but over half of 100 ms.
        assert!(l.loss_is_congestion(None));
    }

    #[test]
    fn base_delay_is_sliding_minimum() {
        let t0 = Instant::now();
        let mut h = DelayHistory::new(10, 3);
        h.add_sample(t0, 5_000);
        h.add_sample(t0 + Duration::from_secs(1), 3_000);
        assert_eq!(h.base(), Some(3_000));
        // Ten minutes later the old minimum has slid out of the window.
        for m in 1..=11 {
            h.add_sample(t0 + Duration::from_secs(60 * m + 1), 8_000);
        }
        assert_eq!(h.base(), Some(8_000));
    }

    #[test]
    fn base_delay_tracks_route_change_downwards_at_once() {
        let t0 = Instant::now();
        let mut h = DelayHistory::new(10, 3);
        h.add_sample(t0, 50_000);
        h.add_sample(t0 + Duration::from_secs(5), 20_000);
        assert_eq!(h.base(), Some(20_000));
    }

    #[test]
    fn current_delay_is_min_of_recent_samples() {
        let t0 = Instant::now();
        let mut h = DelayHistory::new(10, 3);
        h.add_sample(t0, 1_000);
        for s in [9_000, 4_000, 30_000] {
            h.add_sample(t0, s);
        }
        // Base 1000; recent = [9000, 4000, 30000] -> 4000 - 1000.
        assert_eq!(h.queuing_delay(), Some(3_000));
    }

    #[test]
    fn raw_delays_wrap() {
        let t0 = Instant::now();
        let mut h = DelayHistory::new(10, 1);
        h.add_sample(t0, u32::MAX - 100);
        h.add_sample(t0, 400);
        assert_eq!(h.base(), Some(u32::MAX - 100));
        assert_eq!(h.queuing_delay(), Some(501));
    }

    #[test]
    fn clock_drift_shifts_our_base() {
        let t0 = Instant::now();
        let mut l = ledbat(CongestionMode::Ledbat);
        l.on_delay_sample(t0, 100_000);
        l.on_reverse_delay_sample(t0, 200_000);
        // Their clock runs slow by 5 ms: their base falls and ours rises to match.
        l.on_reverse_delay_sample(t0, 195_000);
        assert_eq!(l.base_delay(), Some(105_000));
        l.on_delay_sample(t0, 105_000);
        assert_eq!(l.queuing_delay(None), Some(Duration::ZERO));
        // A jump too large to be drift is not applied.
        l.on_reverse_delay_sample(t0, 100_000);
        assert_eq!(l.base_delay(), Some(105_000));
    }

    #[test]
    fn slow_start_doubles_until_delay_rises() {
        let t0 = Instant::now();
        let mut l = ledbat(CongestionMode::Ledbat);
        l.on_delay_sample(t0, 10_000);
        let w0 = l.window();
        l.on_ack(t0, w0, w0, info(rtt(), Some(rtt())));
        assert_eq!(l.window(), 2 * w0);
        assert!(l.in_slow_start());
        for _ in 0..3 {
            l.on_delay_sample(t0, 10_000 + 120_000);
        }
        let w = l.window();
        l.on_ack(t0, w, w, info(Duration::from_millis(300), Some(rtt() * 10)));
        assert!(!l.in_slow_start());
        assert!(l.window() <= w);
    }

    fn steady(mode: CongestionMode, qd_us: u32) -> (usize, usize) {
        let t0 = Instant::now();
        let mut l = ledbat(mode);
        l.on_delay_sample(t0, 1_000);
        l.on_loss(t0, rtt()); // leave slow start
        l.cwnd = 50.0 * MSS as f64;
        for _ in 0..3 {
            l.on_delay_sample(t0, 1_000 + qd_us);
        }
        let before = l.window();
        for i in 0..50 {
            let w = l.window();
            l.on_ack(
                t0 + Duration::from_millis(i),
                MSS,
                w,
                info(rtt(), Some(Duration::from_secs(1))),
            );
        }
        (before, l.window())
    }

    #[test]
    fn window_grows_below_target() {
        let (before, after) = steady(CongestionMode::Ledbat, 10_000);
        assert!(after > before, "{before} -> {after}");
    }

    #[test]
    fn window_shrinks_above_target() {
        let (before, after) = steady(CongestionMode::Ledbat, 180_000);
        assert!(after < before, "{before} -> {after}");
    }

    #[test]
    fn window_steady_at_target() {
        let (before, after) = steady(CongestionMode::Ledbat, 100_000);
        assert_eq!(before, after);
    }

    /// One RTT of ACKs (a window's worth, one MSS each) at queuing delay
    /// `qd_us`, from a 40-packet window: the window after.
    fn one_rtt_over_target(mode: CongestionMode, qd_us: u32) -> usize {
        let t0 = Instant::now();
        let mut l = ledbat(mode);
        l.on_delay_sample(t0, 1_000);
        l.on_loss(t0, rtt());
        l.cwnd = 40.0 * MSS as f64;
        for _ in 0..3 {
            l.on_delay_sample(t0, 1_000 + qd_us);
        }
        for i in 0..40 {
            let w = l.window();
            l.on_ack(
                t0 + Duration::from_millis(i),
                MSS,
                w,
                info(rtt(), Some(Duration::from_secs(1))),
            );
        }
        l.window()
    }

    #[test]
    fn far_over_target_the_window_halves_in_one_rtt() {
        // Three times the target (a TCP flow filling the queue): half the
        // window goes in one RTT, not one MSS as with off_target clamped
        // to −1.
        let after = one_rtt_over_target(CongestionMode::Ledbat, 300_000);
        assert_eq!(after, 20 * MSS);
        // Never more than half per RTT, however far over.
        let after = one_rtt_over_target(CongestionMode::Ledbat, 10_000_000);
        assert_eq!(after, 20 * MSS);
    }

    #[test]
    fn slightly_over_target_the_window_shrinks_in_proportion() {
        // 10% over target: 10% of the window per RTT.
        let after = one_rtt_over_target(CongestionMode::Ledbat, 110_000);
        assert!((35 * MSS..=37 * MSS).contains(&after), "{after}");
    }

    #[test]
    fn ledbat_pp_uses_60ms_target() {
        let (b, a) = steady(CongestionMode::LedbatPlusPlus, 80_000);
        assert!(a < b, "{b} -> {a}");
        let (b, a) = steady(CongestionMode::Ledbat, 80_000);
        assert!(a > b, "{b} -> {a}");
    }

    #[test]
    fn ledbat_pp_decrease_bounded_by_half_per_rtt() {
        let t0 = Instant::now();
        let mut l = ledbat(CongestionMode::LedbatPlusPlus);
        l.on_delay_sample(t0, 0);
        l.on_loss(t0, rtt());
        l.cwnd = 40.0 * MSS as f64;
        for _ in 0..3 {
            l.on_delay_sample(t0, 10_000_000);
        }
        let w = l.window();
        l.on_ack(t0, w, w, info(rtt(), Some(Duration::from_secs(100))));
        assert!(l.window() >= w / 2 - 1, "{w} -> {}", l.window());
    }

    #[test]
    fn ledbat_pp_dynamic_gain() {
        let l = ledbat(CongestionMode::LedbatPlusPlus);
        // target 60 ms, base 10 ms -> 1/12
        assert!((l.dynamic_gain(Some(Duration::from_millis(10))) - 1.0 / 12.0).abs() < 1e-9);
        assert!((l.dynamic_gain(Some(Duration::from_micros(100))) - 1.0 / 16.0).abs() < 1e-9);
        assert!((l.dynamic_gain(Some(Duration::from_millis(500))) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn ledbat_pp_periodic_slowdown() {
        let t0 = Instant::now();
        let mut l = ledbat(CongestionMode::LedbatPlusPlus);
        l.on_delay_sample(t0, 0);
        let mut now = t0;
        let step = Duration::from_millis(10);
        // Slow start until delay rises.
        for _ in 0..20 {
            now += step;
            let w = l.window();
            l.on_ack(now, w, w, info(rtt(), Some(rtt())));
        }
        for _ in 0..3 {
            l.on_delay_sample(now, 50_000);
        }
        now += step;
        let w = l.window();
        l.on_ack(now, MSS, w, info(rtt(), Some(rtt())));
        assert!(!l.in_slow_start());
        let before = l.window();
        assert!(before > 10 * MSS);
        // Two RTTs later the window is frozen at two packets...
        now += rtt() * 2;
        l.on_ack(now, MSS, before, info(rtt(), Some(rtt())));
        assert!(l.in_slowdown());
        assert_eq!(l.window(), 2 * MSS);
        now += rtt();
        l.on_ack(now, MSS, 2 * MSS, info(rtt(), Some(rtt())));
        assert_eq!(l.window(), 2 * MSS);
        // ...then released into slow start towards the old window (the
        // queue has drained meanwhile).
        for _ in 0..3 {
            l.on_delay_sample(now, 0);
        }
        now += rtt() * 2;
        l.on_ack(now, MSS, 2 * MSS, info(rtt(), Some(rtt())));
        assert!(!l.in_slowdown());
        assert!(l.in_slow_start());
    }

    #[test]
    fn loss_halves_once_per_rtt() {
        let t0 = Instant::now();
        let mut l = ledbat(CongestionMode::Ledbat);
        l.cwnd = 64.0 * MSS as f64;
        assert!(l.on_loss(t0, rtt()));
        assert_eq!(l.window(), 32 * MSS);
        assert!(!l.on_loss(t0 + rtt() / 2, rtt()));
        assert_eq!(l.window(), 32 * MSS);
        assert!(l.on_loss(t0 + rtt(), rtt()));
        assert_eq!(l.window(), 16 * MSS);
    }

    #[test]
    fn window_never_below_two_packets_except_after_timeout() {
        let t0 = Instant::now();
        let mut l = ledbat(CongestionMode::Ledbat);
        for i in 0..20 {
            l.on_loss(t0 + Duration::from_secs(i), rtt());
        }
        assert_eq!(l.window(), 2 * MSS);
        l.on_timeout();
        assert_eq!(l.window(), MSS);
        assert!(l.in_slow_start());
    }

    #[test]
    fn unsaturated_window_does_not_grow() {
        let t0 = Instant::now();
        let mut l = ledbat(CongestionMode::Ledbat);
        l.on_delay_sample(t0, 0);
        let w = l.window();
        l.on_ack(t0, MSS, MSS, info(rtt(), Some(rtt())));
        assert_eq!(l.window(), w);
    }
}
