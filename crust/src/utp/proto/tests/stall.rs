//! CPU starvation: the receiver's driver preempted for hundreds of
//! milliseconds, several times, in the middle of a bulk transfer over a
//! lossy link (the soak bench under busy loops).

use std::time::Duration;

use super::sim::{LinkConfig, Pair};
use crate::utp::proto::{Config, ConnectionHandle, Diagnostics};

/// 20 Mbit/s, 10 ms each way with up to 2 ms of jitter, 1 % loss and
/// 0.5 % duplication each way, a 1 MiB queue: Reno's loss-limited rate
/// on this path is about 7 Mbit/s, so a sender that halves for every
/// random loss shows.
fn lossy_link() -> LinkConfig {
    LinkConfig {
        delay: Duration::from_millis(10),
        jitter: Duration::from_millis(2),
        loss: 0.01,
        duplicate: 0.005,
        rate: Some(2_500_000),
        queue_bytes: 1 << 20,
        ..LinkConfig::default()
    }
}

struct Bulk {
    pair: Pair,
    ha: ConnectionHandle,
    delivered: u64,
}

impl Bulk {
    fn new(seed: u64) -> Self {
        let mut pair = Pair::new(seed, Config::default(), lossy_link(), lossy_link());
        let (ha, _) = pair.connect();
        Self {
            pair,
            ha,
            delivered: 0,
        }
    }

    /// Runs until `until` (from the start), keeping the sender's buffer
    /// full and the receiver's empty; returns the goodput in Mbit/s.
    fn run_until(&mut self, until: Duration) -> f64 {
        let chunk = vec![0u8; 256 * 1024];
        let mut buf = vec![0u8; 1 << 20];
        let (ha, before, from) = (self.ha, self.delivered, self.pair.elapsed());
        let delivered = &mut self.delivered;
        let limit = until.saturating_sub(from);
        self.pair.drive_until(limit, |p| {
            if let Some(c) = p.a.connection_mut(ha) {
                while c.write(&chunk) == chunk.len() {}
            }
            while p.b.accept().is_some() {}
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
        let secs = (self.pair.elapsed() - from).as_secs_f64();
        (self.delivered - before) as f64 * 8.0 / 1e6 / secs
    }

    fn sender(&self) -> Diagnostics {
        self.pair.a.connection(self.ha).expect("a").diagnostics()
    }
}

/// Goodput before the stalls and long after them (past the loss
/// classifier's 30–60 s memory), with `b`'s driver stamping the datagrams
/// that arrived during each stall with the time it had woken up at
/// (`stale`) or with the time it got them.
fn before_and_after_stalls(seed: u64, stale: bool) -> (f64, f64, Diagnostics) {
    let mut bulk = Bulk::new(seed);
    bulk.run_until(Duration::from_secs(10));
    let before = bulk.run_until(Duration::from_secs(20));
    bulk.pair.b_stale_stamps = stale;
    for (at_ms, len_ms) in [(20_000, 300), (21_500, 200), (23_000, 500), (24_500, 400)] {
        bulk.pair
            .b_preemptions
            .push_back((Duration::from_millis(at_ms), Duration::from_millis(len_ms)));
    }
    bulk.run_until(Duration::from_secs(90));
    let after = bulk.run_until(Duration::from_secs(110));
    (before, after, bulk.sender())
}

#[test]
fn throughput_recovers_after_the_receiver_is_starved_of_cpu() {
    let (before, after, d) = before_and_after_stalls(21, false);
    eprintln!("before {before:.1} Mbit/s, after {after:.1}: {d:?}");
    assert!(
        after > before * 0.7,
        "before {before:.1}, after {after:.1}: {d:?}"
    );
}

#[test]
fn delay_samples_stamped_before_they_arrived_do_not_trap_the_sender() {
    // A driver that reads the clock when it wakes up and is then preempted
    // stamps what arrives meanwhile too early: those one-way delays are too
    // low, up to the length of the stall, and the base delay (a 10-minute
    // minimum) keeps them. Every later sample then reads as a standing
    // queue of that size. The loss classifier took that for congestion,
    // halved for every random loss, never built a queue again, and stayed
    // at Reno's loss-limited rate: the soak's fall from 50–100 to
    // 4–6 Mbit/s under busy loops.
    let (before, after, d) = before_and_after_stalls(21, true);
    eprintln!("before {before:.1} Mbit/s, after {after:.1}: {d:?}");
    assert!(
        after > before * 0.7,
        "before {before:.1}, after {after:.1}: {d:?}"
    );
}
