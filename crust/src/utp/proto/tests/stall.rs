//! CPU starvation: the receiver's driver preempted for hundreds of
//! milliseconds, several times, in the middle of a bulk transfer over a
//! lossy link (the soak bench under busy loops).

use std::time::Duration;

use super::sim::{LinkConfig, Pair};
use crate::utp::proto::{Config, ConnectionHandle, Diagnostics};

/// 10 Mbit/s, 20 ms each way with up to 2 ms of jitter, 1 % loss and
/// 0.5 % duplication each way, a 512 KiB queue: Reno's loss-limited rate
/// on this path is about 3.4 Mbit/s, so a sender that halves for every
/// random loss shows.
fn lossy_link() -> LinkConfig {
    LinkConfig {
        delay: Duration::from_millis(20),
        jitter: Duration::from_millis(2),
        loss: 0.01,
        duplicate: 0.005,
        rate: Some(1_250_000),
        queue_bytes: 512 << 10,
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
/// that arrived during each stall with the time it had woken up at.
fn before_and_after_stalls(seed: u64) -> (f64, f64, Diagnostics) {
    let mut bulk = Bulk::new(seed);
    bulk.run_until(Duration::from_secs(5));
    let before = bulk.run_until(Duration::from_secs(12));
    bulk.pair.b_stale_stamps = true;
    for (at_ms, len_ms) in [(12_000, 300), (13_500, 200), (15_000, 500), (16_500, 400)] {
        bulk.pair
            .b_preemptions
            .push_back((Duration::from_millis(at_ms), Duration::from_millis(len_ms)));
    }
    bulk.run_until(Duration::from_secs(78));
    let after = bulk.run_until(Duration::from_secs(88));
    (before, after, bulk.sender())
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
    let (before, after, d) = before_and_after_stalls(21);
    eprintln!("before {before:.1} Mbit/s, after {after:.1}: {d:?}");
    assert!(
        after > before * 0.7,
        "before {before:.1}, after {after:.1}: {d:?}"
    );
}
