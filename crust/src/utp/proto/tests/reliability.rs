//! Teardown, timers, windows and path MTU, driven through the simulated pair.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::sim::{A_ADDR, B_ADDR, LinkConfig, Pair, addr, transfer};
use crate::utp::proto::{
    Config, ConnectionError, ConnectionHandle, DatagramOutcome, DecodeError, Endpoint,
    EndpointConfig, Event, Packet, PacketType, ReadError, State,
};

fn ty(d: &[u8]) -> Option<PacketType> {
    Packet::decode(d).ok().map(|p| p.header.ty)
}

#[test]
fn fin_overtaking_data_still_ends_stream_after_all_bytes() {
    let mut pair = Pair::new(
        1,
        Config::default(),
        LinkConfig::default(),
        LinkConfig::default(),
    );
    let (ha, hb) = pair.connect();
    // Hold back the a->b DATA packets so the FIN overtakes them.
    pair.ab.cfg.jitter = Duration::ZERO;
    let c = pair.a.connection_mut(ha).expect("a");
    c.write(&[5u8; 3000]);
    c.close();
    let mut out = Vec::new();
    while let Some(t) = pair.a.poll_transmit(pair.now) {
        out.push(t);
    }
    let fin = out
        .iter()
        .position(|t| ty(&t.contents) == Some(PacketType::Fin))
        .expect("fin sent");
    let now = pair.now;
    pair.b
        .handle_datagram(now, addr(A_ADDR), &out[fin].contents)
        .expect("decode");
    for (i, t) in out.iter().enumerate().rev() {
        if i != fin {
            pair.b
                .handle_datagram(now, addr(A_ADDR), &t.contents)
                .expect("decode");
        }
    }
    let b = pair.b.connection_mut(hb).expect("b");
    let mut buf = vec![0u8; 10_000];
    assert_eq!(b.read(&mut buf), Ok(3000));
    assert_eq!(b.read(&mut buf), Ok(0));
}

#[test]
fn lost_fin_is_resent_and_both_sides_close() {
    let mut pair = Pair::new(
        2,
        Config::default(),
        LinkConfig::default(),
        LinkConfig::default(),
    );
    let mut fins = 0;
    pair.ab.drop_next.push(Box::new(move |d| {
        if ty(d) == Some(PacketType::Fin) && fins == 0 {
            fins += 1;
            return true;
        }
        false
    }));
    let r = transfer(&mut pair, 5000, 5000, Duration::from_secs(60));
    assert!(r.closed, "{r:?}");
    assert_eq!((r.a_received, r.b_received), (5000, 5000));
    assert_eq!(pair.ab.stats.dropped, 1);
}

#[test]
fn closed_connection_lingers_then_drains() {
    let mut pair = Pair::new(
        3,
        Config::default(),
        LinkConfig::default(),
        LinkConfig::default(),
    );
    let r = transfer(&mut pair, 100, 100, Duration::from_secs(60));
    assert!(r.closed);
    assert!(pair.a_events.iter().any(|(_, e)| *e == Event::Closed));
    assert!(pair.b_events.iter().any(|(_, e)| *e == Event::Closed));
    assert!(pair.a_events.iter().any(|(_, e)| *e == Event::PeerFinished));
    pair.drive_until(Duration::from_secs(30), |_| false);
    assert!(pair.a.poll_timeout().is_none() && pair.b.poll_timeout().is_none());
}

#[test]
fn rto_backs_off_and_connection_dies_after_max_timeouts() {
    let mut config = Config::default();
    config.idle_timeout = Duration::from_secs(3600);
    let mut pair = Pair::new(4, config, LinkConfig::default(), LinkConfig::default());
    let (ha, _hb) = pair.connect();
    pair.a.connection_mut(ha).expect("a").write(b"x");
    pair.flush();
    // Now the path goes dead.
    pair.ab.cfg.loss = 1.0;
    pair.ba.cfg.loss = 1.0;
    let mut sends = Vec::new();
    let mut last_sent = pair.ab.stats.sent;
    pair.drive_until(Duration::from_secs(3600), |p| {
        if p.ab.stats.sent > last_sent {
            last_sent = p.ab.stats.sent;
            sends.push(p.elapsed());
        }
        p.a.connection(ha).is_some_and(|c| c.state() == State::Dead)
    });
    let c = pair.a.connection(ha).expect("a");
    assert_eq!(c.error(), Some(ConnectionError::TimedOut));
    let gaps: Vec<Duration> = sends.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(
        gaps.len(),
        Config::default().max_timeouts as usize - 1,
        "{gaps:?}"
    );
    for w in gaps.windows(2) {
        assert!(
            w[1] == w[0] * 2 || w[1] == Config::default().max_rto,
            "{gaps:?}"
        );
    }
    assert!(gaps[0] >= Duration::from_millis(500), "{gaps:?}");
}

#[test]
fn rto_never_below_500ms_on_fast_path() {
    let link = LinkConfig {
        delay: Duration::from_micros(50),
        ..LinkConfig::default()
    };
    let mut pair = Pair::new(5, Config::default(), link.clone(), link);
    let (ha, _) = pair.connect();
    pair.a.connection_mut(ha).expect("a").write(&[0u8; 100_000]);
    pair.drive_until(Duration::from_secs(5), |p| {
        p.a.connection(ha).is_some_and(|c| c.is_send_idle())
    });
    let c = pair.a.connection(ha).expect("a");
    assert!(c.rtt() < Duration::from_millis(5));
    assert_eq!(c.rto(), Duration::from_millis(500));
}

#[test]
fn zero_window_stalls_without_dying_and_resumes() {
    let mut config = Config::default();
    config.recv_buffer = 20_000;
    let mut pair = Pair::new(6, config, LinkConfig::default(), LinkConfig::default());
    let (ha, hb) = pair.connect();
    pair.a.connection_mut(ha).expect("a").write(&[9u8; 200_000]);
    // The receiver does not read for ten minutes of virtual time.
    pair.drive_until(Duration::from_secs(600), |_| false);
    let a = pair.a.connection(ha).expect("a");
    assert_eq!(a.state(), State::Connected, "{:?}", a.error());
    let b = pair.b.connection_mut(hb).expect("b");
    let mut buf = vec![0u8; 1 << 20];
    let first = b.read(&mut buf).expect("data");
    assert!(first <= 20_000 && first > 0, "{first}");
    let mut total = first;
    let done = pair.drive_until(Duration::from_secs(600), |p| {
        let b = p.b.connection_mut(hb).expect("b");
        while let Ok(n) = b.read(&mut buf) {
            total += n;
        }
        total == 200_000
    });
    assert!(done, "{total}");
}

#[test]
fn zero_window_probe_recovers_a_lost_window_update() {
    let mut config = Config::default();
    config.recv_buffer = 10_000;
    let mut pair = Pair::new(7, config, LinkConfig::default(), LinkConfig::default());
    let (ha, hb) = pair.connect();
    pair.a.connection_mut(ha).expect("a").write(&[1u8; 50_000]);
    pair.drive_until(Duration::from_secs(5), |_| false);
    // Every STATE from b is lost while the application drains its buffer.
    pair.ba
        .drop_next
        .push(Box::new(|d| ty(d) == Some(PacketType::State)));
    let mut buf = vec![0u8; 1 << 20];
    let mut total = pair
        .b
        .connection_mut(hb)
        .expect("b")
        .read(&mut buf)
        .expect("data");
    pair.drive_until(Duration::from_secs(1), |_| false);
    pair.ba.drop_next.clear();
    let done = pair.drive_until(Duration::from_secs(600), |p| {
        let b = p.b.connection_mut(hb).expect("b");
        while let Ok(n) = b.read(&mut buf) {
            total += n;
        }
        total == 50_000
    });
    assert!(done, "{total}");
}

#[test]
fn mtu_probing_finds_the_path_mtu() {
    let link = LinkConfig {
        mtu: 1400,
        ..LinkConfig::default()
    };
    let mut pair = Pair::new(8, Config::default(), link.clone(), link);
    let r = transfer(&mut pair, 3 << 20, 0, Duration::from_secs(600));
    assert!(r.closed);
    let c = pair.a.connection(ConnectionHandle(1)).expect("a");
    assert!(
        c.path_mtu() <= 1400 && c.path_mtu() > 1400 - 16,
        "{}",
        c.path_mtu()
    );
    assert!(c.stats().mtu_probes >= 3);
    // Lost probes are not congestion.
    assert_eq!(c.stats().window_cuts, 0);
}

#[test]
fn mtu_probe_rejected_locally_lowers_the_ceiling() {
    let now = Instant::now();
    let mut config = Config::default();
    config.initial_window_packets = 10;
    let mut ec = EndpointConfig::default();
    ec.connection = config;
    let mut a = Endpoint::new(ec.clone(), 1);
    let mut b = Endpoint::new(ec, 2);
    let ha = a.connect(now, addr(B_ADDR));
    let syn = a.poll_transmit(now).expect("syn");
    b.handle_datagram(now, addr(A_ADDR), &syn.contents)
        .expect("decode");
    let reply = b.poll_transmit(now).expect("reply");
    a.handle_datagram(now, addr(B_ADDR), &reply.contents)
        .expect("decode");
    a.connection_mut(ha).expect("a").write(&[0u8; 100_000]);
    let out: Vec<_> = std::iter::from_fn(|| a.poll_transmit(now)).collect();
    let probe = out
        .iter()
        .find(|t| t.dont_fragment)
        .expect("a probe once the window allows");
    assert!(probe.contents.len() > 1232);
    // The socket says EMSGSIZE.
    a.handle_transmit_too_large(now, probe);
    let resent = a.poll_transmit(now).expect("resend");
    let (rp, pp) = (
        Packet::decode(&resent.contents).expect("decode"),
        Packet::decode(&probe.contents).expect("decode"),
    );
    assert_eq!(
        (rp.header.seq_nr, rp.payload),
        (pp.header.seq_nr, pp.payload)
    );
    assert!(!resent.dont_fragment);
    let c = a.connection(ha).expect("a");
    assert_eq!(c.path_mtu(), 1232);
    assert_eq!(c.stats().window_cuts, 0);
}

#[test]
fn half_open_table_and_accept_queue_are_bounded() {
    let now = Instant::now();
    let mut ec = EndpointConfig::default();
    ec.max_half_open = 8;
    ec.accept_queue = 100;
    let mut b = Endpoint::new(ec, 1);
    let mut refused = 0;
    for port in 0..100u16 {
        let mut a = Endpoint::new(EndpointConfig::default(), u64::from(port));
        let remote = std::net::SocketAddr::from(([127, 0, 0, 1], 2000 + port));
        a.connect(now, addr(B_ADDR));
        let syn = a.poll_transmit(now).expect("syn");
        if b.handle_datagram(now, remote, &syn.contents) == Ok(DatagramOutcome::Refused) {
            refused += 1;
        }
    }
    // The table stays at its bound: each SYN past it pushes out the
    // oldest half-open entry rather than being refused (a flood must not
    // lock real peers out), and only the newest eight remain.
    assert_eq!(b.half_open_count(), 8);
    assert_eq!(b.connection_count(), 8);
    assert_eq!(refused, 0);
    // Half-open connections expire, freeing the table.
    let later = now + Duration::from_secs(11);
    b.handle_timeout(later);
    assert_eq!(b.half_open_count(), 0);
    assert_eq!(b.connection_count(), 0);
    assert_eq!(b.accept(), None);
}

#[test]
fn a_real_peer_gets_in_during_a_syn_flood() {
    // A flood of SYNs that never send DATA (spoofed sources) fills the
    // half-open table; a real initiator's SYN still gets an answer, and
    // its first DATA, a round trip later (a few more flood SYNs later),
    // completes the connection.
    let now = Instant::now();
    let mut ec = EndpointConfig::default();
    ec.max_half_open = 8;
    let mut b = Endpoint::new(ec, 1);
    let mut flood_port = 0u16;
    let mut flood = |b: &mut Endpoint, n: u16| {
        for _ in 0..n {
            flood_port += 1;
            let mut a = Endpoint::new(EndpointConfig::default(), u64::from(flood_port));
            a.connect(now, addr(B_ADDR));
            let syn = a.poll_transmit(now).expect("syn");
            let from = std::net::SocketAddr::from(([10, 0, 0, 1], flood_port));
            let _ = b.handle_datagram(now, from, &syn.contents);
            while b.poll_transmit(now).is_some() {}
        }
    };
    flood(&mut b, 100);
    let real = std::net::SocketAddr::from(([127, 0, 0, 1], 5000));
    let mut a = Endpoint::new(EndpointConfig::default(), 999);
    let h = a.connect(now, addr(B_ADDR));
    let syn = a.poll_transmit(now).expect("syn");
    assert!(matches!(
        b.handle_datagram(now, real, &syn.contents),
        Ok(DatagramOutcome::Incoming(_))
    ));
    let reply = b.poll_transmit(now).expect("reply");
    flood(&mut b, 5);
    a.handle_datagram(now, addr(B_ADDR), &reply.contents)
        .expect("decode");
    a.connection_mut(h).expect("a").write(b"hello");
    let data = a.poll_transmit(now).expect("data");
    b.handle_datagram(now, real, &data.contents)
        .expect("decode");
    let accepted = b.accept().expect("the real peer is accepted");
    let mut buf = [0u8; 16];
    let n = b
        .connection_mut(accepted)
        .expect("b")
        .read(&mut buf)
        .expect("read");
    assert_eq!(&buf[..n], b"hello");
    assert!(b.half_open_count() <= 8);
    flood(&mut b, 100);
    assert!(b.half_open_count() <= 8);
    assert!(
        b.connection(accepted).is_some(),
        "an accepted connection is never evicted"
    );
}

#[test]
fn accept_queue_is_bounded() {
    let now = Instant::now();
    let mut ec = EndpointConfig::default();
    ec.accept_queue = 3;
    let mut b = Endpoint::new(ec, 1);
    let mut established = 0;
    let mut refused = 0;
    for port in 0..5u16 {
        let from = std::net::SocketAddr::from(([127, 0, 0, 1], 3000 + port));
        let mut a = Endpoint::new(EndpointConfig::default(), u64::from(port));
        let h = a.connect(now, addr(B_ADDR));
        let syn = a.poll_transmit(now).expect("syn");
        if b.handle_datagram(now, from, &syn.contents) == Ok(DatagramOutcome::Refused) {
            refused += 1;
            continue;
        }
        let reply = b.poll_transmit(now).expect("reply");
        a.handle_datagram(now, addr(B_ADDR), &reply.contents)
            .expect("decode");
        a.connection_mut(h).expect("a").write(b"x");
        let data = a.poll_transmit(now).expect("data");
        b.handle_datagram(now, from, &data.contents)
            .expect("decode");
        established += 1;
    }
    assert_eq!((established, refused), (3, 2));
    // Nobody accepted yet: a half-open connection is never offered.
    assert!(b.accept().is_some());
    assert!(b.accept().is_some());
    assert!(b.accept().is_some());
    assert_eq!(b.accept(), None);
}

#[test]
fn half_open_connection_is_not_offered_to_accept() {
    let now = Instant::now();
    let mut a = Endpoint::new(EndpointConfig::default(), 1);
    let mut b = Endpoint::new(EndpointConfig::default(), 2);
    a.connect(now, addr(B_ADDR));
    let syn = a.poll_transmit(now).expect("syn");
    b.handle_datagram(now, addr(A_ADDR), &syn.contents)
        .expect("decode");
    assert_eq!(b.accept(), None);
    assert_eq!(b.half_open_count(), 1);
}

#[test]
fn malformed_datagrams_are_rejected_without_side_effects() {
    let now = Instant::now();
    let mut b = Endpoint::new(EndpointConfig::default(), 1);
    assert_eq!(
        b.handle_datagram(now, addr(A_ADDR), b"short"),
        Err(DecodeError::TooShort)
    );
    assert_eq!(
        b.handle_datagram(now, addr(A_ADDR), &[0x42; 20]),
        Err(DecodeError::BadVersion(2))
    );
    assert_eq!(
        b.handle_datagram(now, addr(A_ADDR), &[0x71; 20]),
        Err(DecodeError::BadType(7))
    );
    let mut bad_ext = vec![0x41, 1];
    bad_ext.resize(20, 0);
    bad_ext.extend_from_slice(&[0, 200, 1, 2]);
    assert_eq!(
        b.handle_datagram(now, addr(A_ADDR), &bad_ext),
        Err(DecodeError::TruncatedExtension)
    );
    assert_eq!(b.poll_transmit(now), None);
    assert_eq!(b.connection_count(), 0);
}

#[test]
fn duplicate_syn_is_routed_to_the_existing_connection() {
    let now = Instant::now();
    let mut a = Endpoint::new(EndpointConfig::default(), 1);
    let mut b = Endpoint::new(EndpointConfig::default(), 2);
    a.connect(now, addr(B_ADDR));
    let syn = a.poll_transmit(now).expect("syn");
    let first = b
        .handle_datagram(now, addr(A_ADDR), &syn.contents)
        .expect("decode");
    let again = b
        .handle_datagram(now, addr(A_ADDR), &syn.contents)
        .expect("decode");
    let DatagramOutcome::Incoming(h) = first else {
        panic!("{first:?}")
    };
    assert_eq!(again, DatagramOutcome::Connection(h));
    assert_eq!(b.connection_count(), 1);
}

#[test]
fn many_connections_share_one_endpoint() {
    let mut pair = Pair::new(
        9,
        Config::default(),
        LinkConfig::lossy(0.02),
        LinkConfig::lossy(0.02),
    );
    let handles: Vec<_> = (0..20)
        .map(|_| pair.a.connect(pair.now, addr(B_ADDR)))
        .collect();
    for h in &handles {
        let c = pair.a.connection_mut(*h).expect("a");
        c.write(&h.0.to_be_bytes());
        c.write(&[h.0 as u8; 20_000]);
        c.close();
    }
    let mut got = std::collections::HashMap::new();
    let mut accepted = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let done = pair.drive_until(Duration::from_secs(120), |p| {
        while let Some(h) = p.b.accept() {
            accepted.push(h);
        }
        for h in &accepted {
            let c = p.b.connection_mut(*h).expect("b");
            while let Ok(n) = c.read(&mut buf) {
                if n == 0 {
                    c.close();
                    break;
                }
                got.entry(*h)
                    .or_insert_with(Vec::new)
                    .extend_from_slice(&buf[..n]);
            }
        }
        got.len() == 20 && got.values().all(|v| v.len() == 20_008)
    });
    assert!(done);
    for v in got.values() {
        let id = u64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
        assert!(v[8..].iter().all(|b| *b == id as u8));
    }
}

#[test]
fn read_reports_loss_after_reset() {
    let mut pair = Pair::new(
        10,
        Config::default(),
        LinkConfig::default(),
        LinkConfig::default(),
    );
    let (ha, hb) = pair.connect();
    pair.a.connection_mut(ha).expect("a").write(b"abc");
    pair.drive_until(Duration::from_millis(100), |_| false);
    pair.b.connection_mut(hb).expect("b").abort();
    pair.b.remove(hb);
    pair.a.connection_mut(ha).expect("a").write(b"more");
    pair.drive_until(Duration::from_secs(2), |p| {
        p.a.connection(ha).is_some_and(|c| c.state() == State::Dead)
    });
    let a = pair.a.connection_mut(ha).expect("a");
    assert_eq!(a.error(), Some(ConnectionError::Reset));
    let mut buf = [0u8; 8];
    assert_eq!(
        a.read(&mut buf),
        Err(ReadError::Lost(ConnectionError::Reset))
    );
}

fn impairment() -> impl Strategy<Value = (u64, LinkConfig, LinkConfig, u64, u64)> {
    let link =
        (0.0f64..0.12, 0u64..40, 0.0f64..0.1, 1u64..60).prop_map(|(loss, jitter, dup, delay)| {
            LinkConfig {
                loss,
                jitter: Duration::from_millis(jitter),
                duplicate: dup,
                delay: Duration::from_millis(delay),
                ..LinkConfig::default()
            }
        });
    (
        any::<u64>(),
        link.clone(),
        link,
        0u64..150_000,
        0u64..50_000,
    )
}

proptest! {
    // Seeded, and no regression files written next to the sources: a
    // failure prints its case, which a plain test can pin.
    #![proptest_config(ProptestConfig {
        cases: 48,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x75_7450),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_impairments_deliver_intact((seed, ab, ba, up, down) in impairment()) {
        // At 12% loss each way a SYN round trip fails one time in four;
        // give the handshake enough tries that it is not what we test.
        let mut config = Config::default();
        config.max_syn_retransmits = 10;
        let mut pair = Pair::new(seed, config, ab, ba);
        let r = transfer(&mut pair, up, down, Duration::from_secs(3600));
        prop_assert_eq!(r.b_received, up);
        prop_assert_eq!(r.a_received, down);
        prop_assert!(r.closed);
    }

    #[test]
    fn garbage_to_a_live_connection_never_panics(seed in any::<u64>(), junk in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 1..40)) {
        let mut pair = Pair::new(seed, Config::default(), LinkConfig::default(), LinkConfig::default());
        let (ha, _) = pair.connect();
        let id = pair.a.connection(ha).expect("a").recv_id().to_be_bytes();
        for mut j in junk {
            if j.len() >= 4 {
                // Aim some at the live connection id.
                j[0] = (j[0] & 0xf0) | 1;
                j[2] = id[0];
                j[3] = id[1];
            }
            let _ = pair.a.handle_datagram(pair.now, addr(B_ADDR), &j);
            let _ = pair.b.handle_datagram(pair.now, addr(A_ADDR), &j);
            pair.step();
        }
    }
}
