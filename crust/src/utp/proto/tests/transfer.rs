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
    assert!(c.stats().spurious_retransmits > 0);
}
