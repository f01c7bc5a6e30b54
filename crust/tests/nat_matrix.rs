//! The fast subset of the NAT matrix: two peers behind NATs connect through
//! a rendezvous peer over links with 40 ms round trip and 1% loss. The whole
//! matrix is `cargo bench -p crust --bench nat_matrix` (as root).
//!
//! Needs root and /dev/net/tun: without them each test prints why and
//! passes, except under `CI=true`, where a missing prerequisite fails it.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)]

mod nat_common;

use std::time::Duration;

use crust::{ConnectionPath, Mapping, PortAllocation, Transport};
use nat_common::{Conditions, Pair, Side, prerequisites, run_pair_with};
use netsim::NatPreset;

const WAN: Conditions = Conditions {
    rtt: Duration::from_millis(40),
    loss: 0.01,
    direct_within: None,
};

fn connect(a: NatPreset, b: NatPreset, same_nat: bool, seed: u64) -> nat_common::Outcome {
    connect_with(a, b, same_nat, seed, |_| {})
}

fn connect_with(
    a: NatPreset,
    b: NatPreset,
    same_nat: bool,
    seed: u64,
    tweak: fn(&mut crust::Config),
) -> nat_common::Outcome {
    let pair = Pair {
        a: Side::Nat(a),
        b: Side::Nat(b),
        same_nat,
    };
    let outcome = run_pair_with(pair, WAN, seed, 2, tweak);
    eprintln!("{pair:?}: {:?} in {:?}", outcome.result, outcome.elapsed);
    assert!(outcome.result.is_ok(), "{pair:?}: {outcome:?}");
    assert!(
        outcome.b_got_message,
        "{pair:?}: the message did not arrive"
    );
    outcome
}

#[test]
fn port_restricted_cones_on_both_sides_punch_through() {
    if !prerequisites(&[]) {
        return;
    }
    // TCP hole punching off: uTP's punching alone (with it on, the two
    // race and either may win).
    let o = connect_with(
        NatPreset::PortRestrictedCone,
        NatPreset::PortRestrictedCone,
        false,
        1,
        |c| c.tcp_hole_punching = false,
    );
    assert_eq!(
        o.result.unwrap(),
        (ConnectionPath::HolePunched, Transport::Utp)
    );
    assert_eq!(o.report_a.mapping, Mapping::EndpointIndependent);
}

#[test]
fn a_sequential_symmetric_nat_reaches_a_full_cone() {
    if !prerequisites(&[]) {
        return;
    }
    let o = connect(NatPreset::Symmetric, NatPreset::FullCone, false, 2);
    // uTP punching, TCP punching, or a plain TCP dial to the full cone's
    // listener (its NAT maps the listener's port since our first dial).
    assert!(!matches!(
        o.result.unwrap().0,
        ConnectionPath::Relayed { .. }
    ));
    assert_eq!(o.report_a.mapping, Mapping::EndpointDependent);
}

#[test]
fn port_prediction_gets_a_sequential_symmetric_nat_through_a_port_restricted_one() {
    if !prerequisites(&[]) {
        return;
    }
    let o = connect(
        NatPreset::Symmetric,
        NatPreset::PortRestrictedCone,
        false,
        3,
    );
    assert_eq!(
        o.report_a.port_allocation,
        PortAllocation::Sequential { delta: 1 }
    );
    // Predicted ports, for UDP and for TCP: either may win (a plain TCP
    // dial that the NAT happens to map to a port the other side punched
    // towards counts as direct).
    assert!(!matches!(
        o.result.unwrap().0,
        ConnectionPath::Relayed { .. }
    ));
}

#[test]
fn two_sequential_symmetric_nats_predict_each_other() {
    if !prerequisites(&[]) {
        return;
    }
    let o = connect(NatPreset::Symmetric, NatPreset::Symmetric, false, 10);
    assert_eq!(
        o.result.unwrap(),
        (ConnectionPath::HolePunched, Transport::Utp)
    );
}

#[test]
fn two_peers_behind_the_same_nat_use_their_local_addresses() {
    if !prerequisites(&[]) {
        return;
    }
    let o = connect(NatPreset::Symmetric, NatPreset::Symmetric, true, 4);
    // The NAT does not hairpin: only the LAN address works.
    assert_eq!(o.remote_addr.unwrap().ip(), std::net::IpAddr::V4(o.b_ip));
}

#[test]
fn tcp_hole_punching_connects_a_udp_blocked_nat_to_a_port_restricted_one() {
    if !prerequisites(&[]) {
        return;
    }
    // No UDP at all on one side: a TCP simultaneous open from both
    // listeners' ports through both NATs.
    let o = connect(
        NatPreset::UdpBlocked,
        NatPreset::PortRestrictedCone,
        false,
        5,
    );
    assert_eq!(
        o.result.unwrap(),
        (ConnectionPath::HolePunched, Transport::Tcp)
    );
}

#[test]
fn with_random_ports_on_both_sides_the_rendezvous_relays() {
    if !prerequisites(&[]) {
        return;
    }
    let o = connect(
        NatPreset::SymmetricRandom,
        NatPreset::SymmetricRandom,
        false,
        6,
    );
    assert!(
        matches!(
            o.result.clone().unwrap(),
            (ConnectionPath::Relayed { .. }, _)
        ),
        "expected a relayed connection"
    );
    // Both sides punch UDP and TCP all along: together they stay within
    // the attempt's budget (100 packets/s), plus the connections' own
    // keep-alives and signalling.
    assert_within_budget(&o, false);
    assert_within_budget(&o, true);
}

/// What a router carries besides an attempt's probes, in one second, at
/// most: keep-alives both ways to two public hosts every 500 ms, their
/// acknowledgements, the rendezvous signalling.
const BACKGROUND_PER_SEC: u64 = 30;

/// In every second of the attempt before the relay (3 s in), the side's
/// router sends no more than the budget plus the background.
fn assert_within_budget(o: &nat_common::Outcome, b: bool) {
    let most = o
        .max_out_in_window(
            b,
            Duration::from_secs(1),
            Duration::from_millis(200),
            Duration::from_millis(2900),
        )
        .expect("the router's counters");
    eprintln!(
        "side {}: at most {most} packets out in one second",
        if b { 'b' } else { 'a' }
    );
    assert!(
        most <= 101 + BACKGROUND_PER_SEC,
        "{most} packets in one second from side {}",
        if b { 'b' } else { 'a' }
    );
}

/// Runs `easy` against a random-port NAT (`b`) for the birthday technique,
/// with the conditions of the goal (direct within 10 s): a match is ≈ 98%
/// likely, so a run without one gets a second run (another seed). Each
/// run must connect, deliver, classify both NATs as `check` says and keep
/// the packet budget. The runs, the last the one to judge.
fn birthday_runs(
    easy: NatPreset,
    check: impl Fn(&nat_common::Outcome),
) -> Vec<nat_common::Outcome> {
    let conditions = Conditions {
        direct_within: Some(Duration::from_secs(10)),
        ..WAN
    };
    let pair = Pair {
        a: Side::Nat(easy),
        b: Side::Nat(NatPreset::SymmetricRandom),
        same_nat: false,
    };
    let mut runs = Vec::new();
    for seed in [8, 9] {
        let o = run_pair_with(pair, conditions, seed, 1, |_| {});
        eprintln!(
            "seed {seed}: {:?}, direct {:?} after {:?}, {:?}",
            o.result, o.direct, o.direct_after, o.direct_timing
        );
        assert!(o.result.is_ok(), "{o:?}");
        assert!(o.b_got_message, "the message did not arrive");
        check(&o);
        assert_within_budget(&o, true);
        assert_within_budget(&o, false);
        let direct = o.direct;
        runs.push(o);
        if direct.is_some() {
            break;
        }
    }
    runs
}

/// The birthday technique: `b`'s NAT maps each destination to a random
/// port, `a`'s is endpoint-independent. `b` opens many sockets towards
/// `a`, `a` probes random ports of `b`'s address; the connection starts
/// relayed (3 s in) and moves to the uTP connection over the winning
/// socket. A match within 10 s is ≈ 98.6% likely, so a miss gets a second
/// run (another seed) before the test fails.
#[test]
fn the_birthday_technique_gets_a_random_port_nat_through_a_port_restricted_one() {
    if !prerequisites(&[]) {
        return;
    }
    let runs = birthday_runs(NatPreset::PortRestrictedCone, |o| {
        assert_eq!(o.report_b.mapping, Mapping::EndpointDependent);
        assert_eq!(o.report_b.port_allocation, PortAllocation::Random);
        assert_eq!(o.report_a.mapping, Mapping::EndpointIndependent);
    });
    let o = runs.last().unwrap();
    assert_eq!(
        o.direct,
        Some((ConnectionPath::HolePunched, Transport::Utp)),
        "no direct connection in two runs: {runs:?}"
    );
    // The whole stream arrived, across the switch.
    let mut got = o.b_sequence.clone();
    got.sort_unstable();
    assert_eq!(got, (0..nat_common::STREAM).collect::<Vec<_>>(), "lost");
}

/// The birthday technique over TCP: `a`'s router blocks UDP but maps TCP
/// endpoint-independently, `b`'s maps each TCP destination to a random
/// port. `b` opens listeners on fresh ports, each sending one SYN to `a`'s
/// listener mapping; `a` sends SYNs from its listener's port to random
/// ports of `b`'s address. A match within 10 s is ≈ 98% likely
/// (ARCHITECTURE.md), so a miss gets a second run (another seed) before
/// the test fails.
#[test]
fn the_birthday_technique_over_tcp_gets_a_random_port_nat_through_a_udp_blocking_one() {
    if !prerequisites(&[]) {
        return;
    }
    let runs = birthday_runs(NatPreset::UdpBlocked, |o| {
        assert_eq!(o.report_a.tcp_mapping, Mapping::EndpointIndependent);
        assert_eq!(o.report_b.tcp_mapping, Mapping::EndpointDependent);
        assert_eq!(o.report_b.tcp_port_allocation, PortAllocation::Random);
    });
    let o = runs.last().unwrap();
    // Hole-punched, or "direct" when `b`'s SYN came in through the hole
    // `a`'s probe opened and `a`'s listener accepted it (an incoming TCP
    // connection during an attempt counts as direct).
    assert!(
        matches!(
            o.direct,
            Some((
                ConnectionPath::HolePunched | ConnectionPath::Direct,
                Transport::Tcp
            ))
        ),
        "no direct connection in two runs: {runs:?}"
    );
    let timing = o.direct_timing.expect("the traversal's timing");
    // No first packet is seen for a connection our listener accepted.
    assert!(timing.first_packet.is_none_or(|f| f <= timing.connected));
    assert!(timing.connected <= o.direct_after.unwrap());
    let mut got = o.b_sequence.clone();
    got.sort_unstable();
    assert_eq!(got, (0..nat_common::STREAM).collect::<Vec<_>>(), "lost");
}

#[test]
fn a_relayed_connection_switches_to_direct_without_losing_a_message() {
    if !prerequisites(&[]) {
        return;
    }
    // The relay is tried at once, alongside the punching, so it usually
    // connects first; the punching goes on and a direct path replaces it.
    let o = connect_with(
        NatPreset::PortRestrictedCone,
        NatPreset::UdpBlocked,
        false,
        7,
        |c| c.relay_after = Duration::ZERO,
    );
    eprintln!("first {:?}, then {:?}", o.result, o.a_changes);
    let last = o.a_changes.last().map_or(o.result.clone().unwrap(), |c| *c);
    assert!(
        !matches!(last.0, ConnectionPath::Relayed { .. }),
        "still relayed: {o:?}"
    );
    if matches!(o.result.as_ref().unwrap().0, ConnectionPath::Relayed { .. }) {
        assert!(!o.a_changes.is_empty());
    }
    let mut got = o.b_sequence.clone();
    got.sort_unstable();
    assert_eq!(got, (0..nat_common::STREAM).collect::<Vec<_>>(), "lost");
    eprintln!("order as received: {:?}", o.b_sequence);
}
