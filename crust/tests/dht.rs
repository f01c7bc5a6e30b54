//! The DHT engine in a simulated network of hundreds of in-process nodes
//! (see `dht_sim`): records found, hop counts, churn, message loss and
//! malicious nodes.

#![allow(clippy::unwrap_used)]

mod dht_sim;

use crust::dht::Key;
use dht_sim::{Malice, Sim, ceil_log2, median};

const N: usize = 200;

/// Every node publishes, then each node looks up the records of the next
/// node and of 9 random others (2,000 lookups over all 200 records; all
/// 40,000 pairs would take a minute in a debug build): all are found, the
/// right ones, within ⌈log2 n⌉ hops at the median.
#[test]
fn every_record_is_found_in_log_n_hops() {
    let mut sim = Sim::network(1, N);
    for i in 0..N {
        let id = sim.ids[i];
        assert!(sim.publish(id) >= 10, "too few storers");
    }
    let mut hops = Vec::new();
    for i in 0..N {
        let me = sim.ids[i];
        let mut targets = vec![sim.ids[(i + 1) % N]];
        while targets.len() < 10 {
            let t = sim.ids[sim.rng.below(N)];
            if t != me && !targets.contains(&t) {
                targets.push(t);
            }
        }
        for target in targets {
            let (record, stats) = sim.find(me, target);
            let record =
                record.unwrap_or_else(|| panic!("{me:?} did not find {target:?}: {stats:?}"));
            assert_eq!(record.peer, target);
            assert_eq!(record.endpoints, vec![sim.endpoint_of(target)]);
            assert!(!stats.timed_out);
            hops.push(stats.hops);
        }
    }
    let median = median(&mut hops);
    let max = *hops.iter().max().unwrap();
    eprintln!("{N} nodes: median {median} hops, max {max}");
    assert!(median <= ceil_log2(N), "median {median} hops");
}

/// Node lookups converge on the true k closest nodes.
#[test]
fn node_lookups_find_the_true_closest() {
    let mut sim = Sim::network(2, N);
    for round in 0..50 {
        let me = sim.ids[round * 3];
        let target = Key([round as u8; 32]);
        let (closest, stats) = sim.find_nodes(me, target);
        let mut truth: Vec<_> = sim.ids.iter().filter(|id| **id != me).copied().collect();
        truth.sort_by_key(|id| target.distance(&Key::from(id)));
        let found: Vec<_> = closest.iter().map(|c| c.id).collect();
        assert_eq!(found.len(), 20);
        // The 10 closest at least must all be there.
        for id in &truth[..10] {
            assert!(
                found.contains(id),
                "round {round}: missed a close node; {stats:?}"
            );
        }
        assert!(stats.hops <= ceil_log2(N));
    }
}

/// After a fifth of the nodes crash, the others still find each other's
/// records (routing around the dead by timeouts).
#[test]
fn churn_of_a_fifth_does_not_break_lookups() {
    let mut sim = Sim::network(3, N);
    for i in 0..N {
        let id = sim.ids[i];
        sim.publish(id);
    }
    for _ in 0..N / 5 {
        let victim = sim.ids[sim.rng.below(sim.ids.len())];
        sim.kill(victim);
    }
    let alive = sim.ids.clone();
    assert_eq!(alive.len(), N - N / 5);
    let mut timed_out = 0;
    for i in 0..alive.len() {
        let me = alive[i];
        for j in [1, 17, 53] {
            let target = alive[(i + j) % alive.len()];
            let (record, stats) = sim.find(me, target);
            assert_eq!(record.map(|r| r.peer), Some(target), "{stats:?}");
            timed_out += u32::from(stats.timed_out);
        }
    }
    assert_eq!(timed_out, 0);
}

/// With 10 % of messages lost, lookups still succeed (messages in wire
/// form).
#[test]
fn lookups_survive_message_loss() {
    let mut sim = Sim::network(4, N);
    for i in 0..N {
        let id = sim.ids[i];
        sim.publish(id);
    }
    sim.drop_rate = 0.10;
    sim.wire = true;
    for i in 0..N {
        let me = sim.ids[i];
        let target = sim.ids[(i + 101) % N];
        let (record, stats) = sim.find(me, target);
        assert_eq!(record.map(|r| r.peer), Some(target), "{stats:?}");
    }
}

/// Thirty nodes turn malicious after joining and answering lookups with
/// records that do not verify, 100 KiB records, records for the wrong key,
/// or made-up contacts: the junk is dropped and every honest record is
/// still found.
#[test]
fn malicious_nodes_do_not_break_lookups() {
    let mut sim = Sim::network(5, N);
    for i in 0..N {
        let id = sim.ids[i];
        sim.publish(id);
    }
    sim.wire = true;
    let malice = [Malice::Junk, Malice::Huge, Malice::WrongRecord];
    for i in 0..30 {
        let bad = sim.ids[i * 6];
        sim.malicious.insert(bad, malice[i % 3]);
    }
    let honest: Vec<_> = sim
        .ids
        .iter()
        .filter(|id| !sim.malicious.contains_key(id))
        .copied()
        .collect();
    let mut rejected = 0;
    for i in 0..honest.len() {
        let me = honest[i];
        for j in [1, 29, 83] {
            let target = honest[(i + j) % honest.len()];
            let (record, stats) = sim.find(me, target);
            let record = record.unwrap_or_else(|| panic!("not found: {stats:?}"));
            assert_eq!(record.peer, target);
            assert_eq!(record.endpoints, vec![sim.endpoint_of(target)]);
        }
        rejected += sim.rejected_since_last();
    }
    assert!(rejected > 0, "the malicious nodes were never asked");
    assert!(sim.undecodable > 0, "the huge records never arrived");
}
