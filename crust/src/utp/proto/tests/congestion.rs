//! LEDBAT behaviour through a simulated bottleneck with a deep queue.

use std::time::Duration;

use super::sim::{LinkConfig, Pair};
use crate::utp::proto::{Config, CongestionMode, ConnectionHandle};

/// 10 Mbit/s with a one-second queue: a loss-based sender would fill it.
fn bottleneck() -> LinkConfig {
    LinkConfig {
        delay: Duration::from_millis(10),
        rate: Some(1_250_000),
        queue_bytes: 1_250_000,
        ..LinkConfig::default()
    }
}

struct Run {
    pair: Pair,
    ha: ConnectionHandle,
    delivered: u64,
}

/// Starts an endless bulk transfer from `a` to `b`.
fn bulk(mode: CongestionMode, link: LinkConfig) -> Run {
    let mut config = Config::default();
    config.congestion = mode;
    let mut pair = Pair::new(77, config, link, LinkConfig::default());
    let (ha, _) = pair.connect();
    Run {
        pair,
        ha,
        delivered: 0,
    }
}

impl Run {
    /// Runs for `d` of virtual time, keeping the sender's buffer full and
    /// the receiver's empty.
    fn run(&mut self, d: Duration) {
        let chunk = vec![0u8; 256 * 1024];
        let mut buf = vec![0u8; 1 << 20];
        let ha = self.ha;
        let delivered = &mut self.delivered;
        self.pair.drive_until(d, |p| {
            if let Some(c) = p.a.connection_mut(ha) {
                while c.write(&chunk) == chunk.len() {}
            }
            while let Some(h) = p.b.accept() {
                let _ = h;
            }
            if let Some(c) = p.b.connection_mut(ConnectionHandle(1)) {
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    *delivered += n as u64;
                }
            }
            false
        });
    }

    /// Bottleneck queuing delays since the last call.
    fn take_queue_delays(&mut self) -> Vec<Duration> {
        std::mem::take(&mut self.pair.ab.stats.queue_delays)
    }

    fn cwnd(&self) -> usize {
        self.pair
            .a
            .connection(self.ha)
            .map_or(0, |c| c.congestion_window())
    }
}

fn mean(v: &[Duration]) -> Duration {
    v.iter().sum::<Duration>() / u32::try_from(v.len().max(1)).unwrap_or(u32::MAX)
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p) as usize]
}

#[test]
fn ledbat_keeps_queueing_delay_near_100ms_and_fills_the_link() {
    let mut r = bulk(CongestionMode::Ledbat, bottleneck());
    r.run(Duration::from_secs(5));
    r.take_queue_delays();
    let before = r.delivered;
    r.run(Duration::from_secs(20));
    let mut q = r.take_queue_delays();
    let goodput = (r.delivered - before) as f64 / 20.0;
    assert!(goodput > 0.8 * 1_250_000.0, "goodput {goodput}");
    let (avg, p95) = (mean(&q), percentile(&mut q, 0.95));
    assert!(avg > Duration::from_millis(50), "mean {avg:?}");
    assert!(avg <= Duration::from_millis(110), "mean {avg:?}");
    assert!(p95 <= Duration::from_millis(150), "p95 {p95:?}");
    // A loss-based sender would have overflowed the one-second queue.
    assert_eq!(r.pair.ab.stats.dropped, 0);
}

#[test]
fn ledbat_plus_plus_keeps_queueing_delay_near_60ms() {
    let mut r = bulk(CongestionMode::LedbatPlusPlus, bottleneck());
    r.run(Duration::from_secs(5));
    r.take_queue_delays();
    let before = r.delivered;
    r.run(Duration::from_secs(30));
    let mut q = r.take_queue_delays();
    let goodput = (r.delivered - before) as f64 / 30.0;
    let (avg, p95) = (mean(&q), percentile(&mut q, 0.95));
    assert!(avg <= Duration::from_millis(66), "mean {avg:?}");
    assert!(p95 <= Duration::from_millis(100), "p95 {p95:?}");
    // Periodic slowdowns cost at most about 10% (plus ramp-up).
    assert!(goodput > 0.7 * 1_250_000.0, "goodput {goodput}");
}

#[test]
fn ledbat_plus_plus_periodically_drains_the_queue() {
    let mut r = bulk(CongestionMode::LedbatPlusPlus, bottleneck());
    r.run(Duration::from_secs(5));
    r.take_queue_delays();
    r.run(Duration::from_secs(30));
    let q = r.take_queue_delays();
    // During a slowdown the window is two packets and the queue empties.
    let empty = q.iter().filter(|d| **d < Duration::from_millis(3)).count();
    assert!(empty > 10, "{empty} of {}", q.len());
}

fn shrink_under_standing_delay(mode: CongestionMode) -> (usize, usize) {
    let mut r = bulk(mode, bottleneck());
    r.run(Duration::from_secs(8));
    let before = r.cwnd();
    // Competing traffic now holds 200 ms of the queue: emulate it as extra
    // one-way delay the flow cannot drain.
    r.pair.ab.cfg.delay += Duration::from_millis(200);
    r.run(Duration::from_secs(5));
    let after = r.cwnd();
    // Still alive: LEDBAT keeps at least its minimum window.
    assert!(after >= 2 * 1200);
    (before, after)
}

#[test]
fn window_shrinks_when_delay_exceeds_target() {
    // RFC 6817: with off_target clamped at −1 the window falls by up to one
    // packet per RTT (here about 330 ms), steadily.
    let (before, after) = shrink_under_standing_delay(CongestionMode::Ledbat);
    assert!(after + 10 * 1200 < before, "{before} -> {after}");
}

#[test]
fn ledbat_plus_plus_shrinks_multiplicatively() {
    let (before, after) = shrink_under_standing_delay(CongestionMode::LedbatPlusPlus);
    assert!(after * 4 < before, "{before} -> {after}");
}

#[test]
fn lower_base_delay_is_adopted_at_once() {
    let mut link = bottleneck();
    link.delay = Duration::from_millis(60);
    let mut r = bulk(CongestionMode::Ledbat, link);
    r.run(Duration::from_secs(8));
    // The route gets shorter: the base delay falls with it, so the flow
    // does not mistake the old base for an empty queue.
    r.pair.ab.cfg.delay = Duration::from_millis(5);
    r.run(Duration::from_secs(5));
    r.take_queue_delays();
    r.run(Duration::from_secs(10));
    let q = r.take_queue_delays();
    // Had the old base stuck, the flow would aim at 100 + 55 ms.
    assert!(mean(&q) <= Duration::from_millis(130), "{:?}", mean(&q));
}

#[test]
fn slow_start_leaves_on_rising_delay_without_loss() {
    let mut r = bulk(CongestionMode::Ledbat, bottleneck());
    r.run(Duration::from_secs(3));
    let c = r.pair.a.connection(r.ha).expect("a");
    assert_eq!(c.stats().window_cuts, 0);
    assert_eq!(r.pair.ab.stats.dropped, 0);
    assert!(r.pair.ab.stats.max_queue_delay < Duration::from_millis(250));
}

fn throughput_with_skew(skew: f64) -> f64 {
    // A long path, so that the "queuing delay ≤ RTT" clamp does not hide
    // the drift.
    let link = LinkConfig {
        delay: Duration::from_millis(150),
        rate: Some(125_000),
        queue_bytes: 250_000,
        ..LinkConfig::default()
    };
    let mut config = Config::default();
    config.congestion = CongestionMode::Ledbat;
    let back = LinkConfig {
        delay: Duration::from_millis(150),
        ..LinkConfig::default()
    };
    let mut pair = Pair::new(5, config, link, back);
    pair.b_skew = skew;
    let (ha, _) = pair.connect();
    let mut r = Run {
        pair,
        ha,
        delivered: 0,
    };
    r.run(Duration::from_secs(90));
    let before = r.delivered;
    r.run(Duration::from_secs(30));
    (r.delivered - before) as f64 / 30.0
}

#[test]
fn clock_drift_is_corrected() {
    // The receiver's clock gains 2 ms per second: uncorrected, the one-way
    // delay would seem to grow by 180 ms in 90 s and starve the flow.
    let goodput = throughput_with_skew(2e-3);
    assert!(goodput > 0.8 * 125_000.0, "{goodput}");
    // And a slow receiver clock is harmless anyway.
    let goodput = throughput_with_skew(-2e-3);
    assert!(goodput > 0.8 * 125_000.0, "{goodput}");
}
