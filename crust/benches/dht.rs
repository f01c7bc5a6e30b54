//! DHT lookups in a simulated in-process network of 200, 1,000 and
//! 10,000 nodes: hops (goal: median under 6 at 10,000), requests sent,
//! simulated latency (each message takes 25-50 ms one way) and the wall
//! time of the engines' work; then again after 20 % of the nodes crashed.
//!
//! `cargo bench -p crust --bench dht` (all three sizes) or with sizes
//! as arguments: `cargo bench -p crust --bench dht -- 200 1000`.

#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../tests/dht_sim/mod.rs"]
mod dht_sim;

use std::time::Instant;

use dht_sim::Sim;

fn percentile<T: Copy + Ord>(values: &mut [T], p: usize) -> T {
    values.sort_unstable();
    values[(values.len() * p / 100).min(values.len() - 1)]
}

fn run(n: usize) {
    let wall = Instant::now();
    let mut sim = Sim::new(42);
    sim.wire = true;
    for _ in 0..n {
        sim.join();
    }
    let join_time = wall.elapsed();
    let joined_messages = sim.delivered;
    // Publishers: everyone up to 1,000 nodes, a random 1,000 beyond.
    let publishers: Vec<_> = if n <= 1000 {
        sim.ids.clone()
    } else {
        (0..1000).map(|_| sim.ids[sim.rng.below(n)]).collect()
    };
    let t = Instant::now();
    for &p in &publishers {
        sim.publish(p);
    }
    let publish_time = t.elapsed();
    let lookups = 1000;
    let mut hops = Vec::new();
    let mut messages = Vec::new();
    let mut latency = Vec::new();
    let mut found = 0u32;
    let t = Instant::now();
    for _ in 0..lookups {
        let me = sim.ids[sim.rng.below(n)];
        let target = publishers[sim.rng.below(publishers.len())];
        let (record, stats) = sim.find(me, target);
        found += u32::from(record.is_some_and(|r| r.peer == target));
        hops.push(stats.hops);
        messages.push(stats.messages);
        latency.push(stats.elapsed);
    }
    let lookup_time = t.elapsed();
    let rejected = sim.rejected_since_last();
    let median_hops = percentile(&mut hops, 50);
    println!(
        "dht n={n}: join {:.1?} ({} msgs), publish {} in {:.1?}; {lookups} lookups, {found} found: \
         hops median {median_hops} p90 {} max {}; requests median {} p90 {}; \
         simulated latency median {:.0?} p90 {:.0?}; engine wall time {:.0?}/lookup; \
         {rejected} records refused; simulated time {:.0?}; {} messages, {} bytes/message",
        join_time,
        joined_messages,
        publishers.len(),
        publish_time,
        percentile(&mut hops, 90),
        hops.iter().max().unwrap(),
        percentile(&mut messages, 50),
        percentile(&mut messages, 90),
        percentile(&mut latency, 50),
        percentile(&mut latency, 90),
        lookup_time / lookups,
        sim.elapsed(),
        sim.delivered,
        sim.bytes / sim.delivered.max(1),
    );
    if found < lookups {
        println!("  {} lookups did not find the record", lookups - found);
    }
    // A fifth of the nodes crash; the rest look up surviving records,
    // routing around the dead by timeouts (2 s per request).
    for _ in 0..n / 5 {
        let victim = sim.ids[sim.rng.below(sim.ids.len())];
        sim.kill(victim);
    }
    let survivors: Vec<_> = publishers
        .iter()
        .filter(|p| sim.nodes.contains_key(p))
        .copied()
        .collect();
    let (mut hops, mut latency, mut found) = (Vec::new(), Vec::new(), 0u32);
    for _ in 0..lookups {
        let me = sim.ids[sim.rng.below(sim.ids.len())];
        let target = survivors[sim.rng.below(survivors.len())];
        let (record, stats) = sim.find(me, target);
        found += u32::from(record.is_some_and(|r| r.peer == target));
        hops.push(stats.hops);
        latency.push(stats.elapsed);
    }
    println!(
        "  after 20 % churn: {lookups} lookups, {found} found: hops median {} p90 {}; \
         simulated latency median {:.0?} p90 {:.0?}",
        percentile(&mut hops, 50),
        percentile(&mut hops, 90),
        percentile(&mut latency, 50),
        percentile(&mut latency, 90),
    );
    if n >= 10_000 && median_hops >= 6 {
        println!("  goal missed: median {median_hops} hops at {n} nodes (goal < 6)");
    }
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![200, 1000, 10_000]
    } else {
        sizes
    };
    for n in sizes {
        run(n);
    }
}
