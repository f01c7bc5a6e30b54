//! Bulk transfers through lossy, reordering, duplicating links.

use std::time::Duration;

use super::sim::{LinkConfig, Pair, transfer};
use crate::utp::proto::Config;

const MB: u64 = 1 << 20;

fn run(seed: u64, bytes: u64, back: u64, link: LinkConfig) {
    let mut pair = Pair::new(seed, Config::default(), link.clone(), link);
    let r = transfer(&mut pair, bytes, back, Duration::from_secs(3600));
    assert_eq!(r.b_received, bytes, "{r:?}");
    assert_eq!(r.a_received, back, "{r:?}");
    assert!(r.closed, "{r:?}");
}

#[test]
fn clean_link_small() {
    run(1, 10_000, 0, LinkConfig::default());
}

#[test]
fn clean_link_bidirectional() {
    run(2, 300_000, 200_000, LinkConfig::default());
}

#[test]
fn clean_link_many_mb() {
    run(3, 8 * MB, 0, LinkConfig::default());
}

#[test]
fn loss_one_percent() {
    run(4, 4 * MB, 0, LinkConfig::lossy(0.01));
}

#[test]
fn loss_five_percent_bidirectional() {
    run(5, 2 * MB, MB, LinkConfig::lossy(0.05));
}

#[test]
fn loss_ten_percent() {
    run(6, 2 * MB, 0, LinkConfig::lossy(0.10));
}

#[test]
fn heavy_reordering() {
    let link = LinkConfig {
        jitter: Duration::from_millis(40),
        ..LinkConfig::default()
    };
    run(7, 4 * MB, MB, link);
}

#[test]
fn reordering_duplication_and_loss() {
    let link = LinkConfig {
        jitter: Duration::from_millis(30),
        duplicate: 0.05,
        loss: 0.05,
        ..LinkConfig::default()
    };
    run(8, 3 * MB, MB, link);
}

#[test]
fn many_seeds_small_transfers_with_loss() {
    for seed in 100..140 {
        let link = LinkConfig {
            loss: (seed % 11) as f64 / 100.0,
            jitter: Duration::from_millis(seed % 17),
            ..LinkConfig::default()
        };
        run(seed, 50_000 + seed * 1000, seed * 500, link);
    }
}

#[test]
fn clean_bottleneck_is_filled() {
    let link = LinkConfig {
        rate: Some(12_500_000),
        queue_bytes: 1 << 20,
        ..LinkConfig::default()
    };
    let mut pair = Pair::new(9, Config::default(), link.clone(), link);
    let r = transfer(&mut pair, 8 * MB, 0, Duration::from_secs(3600));
    assert!(r.closed);
    // 8 MiB at 12.5 MB/s is 0.67 s; allow for the handshake and slow start.
    assert!(r.elapsed < Duration::from_millis(1000), "{:?}", r.elapsed);
}

#[test]
fn reordering_is_not_mistaken_for_loss_for_long() {
    let link = LinkConfig {
        jitter: Duration::from_millis(30),
        rate: Some(12_500_000),
        queue_bytes: 1 << 20,
        ..LinkConfig::default()
    };
    let mut pair = Pair::new(9, Config::default(), link.clone(), link);
    let r = transfer(&mut pair, 8 * MB, 0, Duration::from_secs(3600));
    assert!(r.closed);
    let c = pair
        .a
        .connection(crate::utp::proto::ConnectionHandle(1))
        .expect("a");
    eprintln!("{:?} {:?}", r.elapsed, c.stats());
    // RACK waits a quarter of min_rtt (growing when fooled) past a later
    // packet's round trip: 30 ms of jitter on a 20 ms path costs a few
    // spurious retransmits early on, not a stream of them.
    let stats = c.stats();
    assert!(stats.retransmits < 30, "{stats:?}");
}

/// The soak bench's path in miniature: 200 Mbit/s, 10 ms each way, a
/// 1 MiB queue, and the given jitter (which reorders), loss and
/// duplication each way. Returns (elapsed, sender's stats).
fn soak_like(
    seed: u64,
    jitter_ms: u64,
    loss: f64,
    duplicate: f64,
) -> (Duration, crate::utp::proto::ConnectionStats) {
    let link = LinkConfig {
        delay: Duration::from_millis(10),
        jitter: Duration::from_millis(jitter_ms),
        loss,
        duplicate,
        rate: Some(25_000_000),
        queue_bytes: 1 << 20,
        ..LinkConfig::default()
    };
    let mut pair = Pair::new(seed, Config::default(), link.clone(), link);
    let r = transfer(&mut pair, 8 * MB, 0, Duration::from_secs(3600));
    assert!(r.closed && r.b_received == 8 * MB, "{r:?}");
    let c = pair
        .a
        .connection(crate::utp::proto::ConnectionHandle(1))
        .expect("a");
    (r.elapsed, c.stats())
}

#[test]
fn random_loss_with_an_empty_queue_costs_little_throughput() {
    // 1% random loss each way. Before losses were told from congestion by
    // the queue, each one halved the window: 8 MiB took 15 times as long
    // as on the clean link (Reno's loss-limited rate). In virtual time.
    let (clean, _) = soak_like(11, 0, 0.0, 0.0);
    let (lossy, stats) = soak_like(11, 0, 0.01, 0.0);
    assert!(lossy < clean * 4, "{lossy:?} vs {clean:?}: {stats:?}");
    assert!(stats.random_losses > stats.window_cuts, "{stats:?}");
}

#[test]
fn the_soak_link_reordering_loss_and_duplicates_together() {
    // Jitter of 0–4 ms reorders dozens of packets at this rate; with 1%
    // loss and 1% duplication each way it took 22 times the clean time.
    let (clean, _) = soak_like(11, 0, 0.0, 0.0);
    for seed in [11, 12] {
        let (soak, stats) = soak_like(seed, 4, 0.01, 0.01);
        assert!(
            soak < clean * 10,
            "seed {seed}: {soak:?} vs {clean:?}: {stats:?}"
        );
    }
}

#[test]
fn reordering_alone_is_not_loss() {
    // RACK: a packet is lost only once it is overdue by a quarter of
    // min_rtt past a later packet's round trip; 4 ms of jitter on a 20 ms
    // path stays inside that window.
    let (clean, _) = soak_like(13, 0, 0.0, 0.0);
    let (jittery, stats) = soak_like(13, 4, 0.0, 0.0);
    assert!(stats.fast_losses <= 3, "{stats:?}");
    assert!(jittery < clean * 5 / 4, "{jittery:?} vs {clean:?}");
}

#[test]
fn an_overflowing_shallow_queue_is_still_congestion() {
    // A 64 KiB queue (2.6 ms at this rate) and no random loss: every drop
    // is our own overflow, at the queue's peak delay, and must halve the
    // window, or the drops would never stop.
    let link = LinkConfig {
        delay: Duration::from_millis(10),
        rate: Some(25_000_000),
        queue_bytes: 64 << 10,
        ..LinkConfig::default()
    };
    let mut pair = Pair::new(14, Config::default(), link.clone(), link);
    let r = transfer(&mut pair, 8 * MB, 0, Duration::from_secs(3600));
    assert!(r.closed && r.b_received == 8 * MB, "{r:?}");
    let c = pair
        .a
        .connection(crate::utp::proto::ConnectionHandle(1))
        .expect("a");
    let stats = c.stats();
    eprintln!("{:?} {stats:?}", r.elapsed);
    assert!(stats.window_cuts >= 1, "{stats:?}");
    assert!(stats.window_cuts >= stats.random_losses, "{stats:?}");
    // Drops stay rare: the window settles near the path's capacity.
    assert!(stats.retransmits * 50 < stats.packets_sent, "{stats:?}");
}
