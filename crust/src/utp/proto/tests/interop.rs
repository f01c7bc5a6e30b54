//! One test per interoperability rule that libutp and libtorrent rely on,
//! checked on the bytes that go over the wire.

use std::time::{Duration, Instant};

use super::sim::{A_ADDR, B_ADDR, addr};
use crate::utp::proto::{
    Config, Connection, ConnectionError, Endpoint, EndpointConfig, Event, Header, Packet,
    PacketType, State, Transmit, encode,
};

fn header(p: &Transmit) -> Header {
    Packet::decode(&p.contents)
        .expect("own packets decode")
        .header
}

fn transmits(c: &mut Connection, now: Instant) -> Vec<Transmit> {
    std::iter::from_fn(|| c.poll_transmit(now)).collect()
}

fn events(c: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

/// Initiator `a` and acceptor `b` after the SYN and its STATE reply.
/// A large initial window lets tests put many packets in flight at once.
fn handshake(seed: u64) -> (Connection, Connection, Instant) {
    let now = Instant::now();
    let mut config = Config::default();
    config.initial_window_packets = 100;
    let mut a = Connection::connect(now, addr(B_ADDR), config.clone(), seed);
    let syn = a.poll_transmit(now).expect("syn");
    let mut b =
        Connection::accept(now, addr(A_ADDR), &syn.contents, config, seed + 1).expect("accept");
    let reply = b.poll_transmit(now).expect("syn reply");
    PEER_TS.set(header(&reply).timestamp);
    a.handle_datagram(now, &reply.contents).expect("decode");
    (a, b, now)
}

thread_local! {
    /// The acceptor's clock as last seen, so hand-made packets from "it"
    /// carry later timestamps than its real ones.
    static PEER_TS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

fn next_peer_ts() -> u32 {
    let ts = PEER_TS.get().wrapping_add(1);
    PEER_TS.set(ts);
    ts
}

fn state_packet(conn_id: u16, seq_nr: u16, ack_nr: u16, ts_diff: u32) -> Vec<u8> {
    let h = Header {
        ty: PacketType::State,
        conn_id,
        timestamp: next_peer_ts(),
        timestamp_diff: ts_diff,
        wnd_size: 1 << 20,
        seq_nr,
        ack_nr,
    };
    let mut out = Vec::new();
    encode(&h, None, &[], &mut out);
    out
}

#[test]
fn connection_ids_differ_by_one() {
    let now = Instant::now();
    let mut a = Connection::connect(now, addr(B_ADDR), Config::default(), 42);
    let syn = a.poll_transmit(now).expect("syn");
    let sh = header(&syn);
    assert_eq!(sh.ty, PacketType::Syn);
    // The SYN carries the initiator's recv_id; it sends with recv_id + 1.
    assert_eq!(sh.conn_id, a.recv_id());
    assert_eq!(a.send_id(), a.recv_id().wrapping_add(1));
    let mut b = Connection::accept(now, addr(A_ADDR), &syn.contents, Config::default(), 43)
        .expect("accept");
    assert_eq!(b.recv_id(), sh.conn_id.wrapping_add(1));
    assert_eq!(b.send_id(), sh.conn_id);
    let reply = b.poll_transmit(now).expect("reply");
    assert_eq!(header(&reply).conn_id, a.recv_id());
    a.handle_datagram(now, &reply.contents).expect("decode");
    a.write(b"x");
    let data = a.poll_transmit(now).expect("data");
    assert_eq!(header(&data).conn_id, b.recv_id());
}

#[test]
fn initial_sequence_numbers_are_random_and_seeded() {
    let now = Instant::now();
    let syn_seq = |seed| {
        let mut a = Connection::connect(now, addr(B_ADDR), Config::default(), seed);
        header(&a.poll_transmit(now).expect("syn")).seq_nr
    };
    let seqs: std::collections::HashSet<u16> = (0..20).map(syn_seq).collect();
    assert!(seqs.len() > 15, "{seqs:?}");
    assert_eq!(syn_seq(7), syn_seq(7));
}

#[test]
fn syn_reply_carries_next_seq_without_increment() {
    let now = Instant::now();
    let mut a = Connection::connect(now, addr(B_ADDR), Config::default(), 1);
    let syn = a.poll_transmit(now).expect("syn");
    let mut b =
        Connection::accept(now, addr(A_ADDR), &syn.contents, Config::default(), 2).expect("accept");
    let reply = b.poll_transmit(now).expect("reply");
    let rh = header(&reply);
    assert_eq!(rh.ty, PacketType::State);
    assert_eq!(rh.ack_nr, header(&syn).seq_nr);
    // The reply's seq_nr is the acceptor's next, unused sequence number.
    assert_eq!(rh.seq_nr, b.next_seq_nr());
    a.handle_datagram(now, &reply.contents).expect("decode");
    assert_eq!(a.state(), State::Connected);
    // So the initiator has received "up to seq_nr − 1".
    assert_eq!(a.ack_nr(), rh.seq_nr.wrapping_sub(1));
    a.write(b"hello");
    let data = a.poll_transmit(now).expect("data");
    let dh = header(&data);
    assert_eq!(dh.ack_nr, rh.seq_nr.wrapping_sub(1));
    assert_eq!(dh.seq_nr, header(&syn).seq_nr.wrapping_add(1));
    b.handle_datagram(now, &data.contents).expect("decode");
    b.write(b"world");
    let back = transmits(&mut b, now);
    let bd = back
        .iter()
        .map(header)
        .find(|h| h.ty == PacketType::Data)
        .expect("b data");
    // The acceptor's first DATA uses exactly the seq_nr it announced.
    assert_eq!(bd.seq_nr, rh.seq_nr);
    for t in &back {
        a.handle_datagram(now, &t.contents).expect("decode");
    }
    let mut buf = [0u8; 16];
    assert_eq!(a.read(&mut buf), Ok(5));
    assert_eq!(&buf[..5], b"world");
}

#[test]
fn accepts_libutp_style_reply_from_a_libutp_acceptor() {
    // A hand-built reply exactly as libutp sends it: STATE, conn_id = our
    // recv_id, seq_nr = its random ISN, ack_nr = our SYN's seq_nr.
    let now = Instant::now();
    let mut a = Connection::connect(now, addr(B_ADDR), Config::default(), 9);
    let syn = header(&a.poll_transmit(now).expect("syn"));
    a.handle_datagram(now, &state_packet(syn.conn_id, 5000, syn.seq_nr, 0))
        .expect("decode");
    assert_eq!(a.state(), State::Connected);
    a.write(b"x");
    let d = header(&a.poll_transmit(now).expect("data"));
    assert_eq!(
        (d.ty, d.ack_nr, d.conn_id),
        (PacketType::Data, 4999, syn.conn_id.wrapping_add(1))
    );
}

#[test]
fn resent_syn_keeps_its_sequence_number() {
    let now = Instant::now();
    let mut a = Connection::connect(now, addr(B_ADDR), Config::default(), 5);
    let first = header(&a.poll_transmit(now).expect("syn"));
    let t = a.poll_timeout().expect("syn timer");
    assert_eq!(t - now, Duration::from_secs(1));
    a.handle_timeout(t);
    let again = header(&a.poll_transmit(t).expect("resent syn"));
    assert_eq!(again.ty, PacketType::Syn);
    assert_eq!(again.seq_nr, first.seq_nr);
    // A fresh id: libutp drops a SYN whose id it has seen and never resends
    // its reply, so a lost reply could not be recovered under the old id.
    assert_ne!(again.conn_id, first.conn_id);
    assert_eq!(a.recv_id(), again.conn_id);
    assert_eq!(a.send_id(), again.conn_id.wrapping_add(1));
    // Backoff: the next try waits twice as long.
    assert_eq!(a.poll_timeout().expect("timer") - t, Duration::from_secs(2));
}

#[test]
fn connect_fails_after_syn_retries() {
    let now = Instant::now();
    let mut a = Connection::connect(now, addr(B_ADDR), Config::default(), 5);
    let mut t = now;
    let mut syns = 0;
    loop {
        syns += transmits(&mut a, t).len();
        let Some(next) = a.poll_timeout() else { break };
        t = next;
        a.handle_timeout(t);
    }
    assert_eq!(a.error(), Some(ConnectionError::ConnectTimedOut));
    // 1 + 2 + 4 + 8 seconds of backoff.
    assert_eq!(t - now, Duration::from_secs(15));
    assert_eq!(syns, 1 + Config::default().max_syn_retransmits as usize);
    assert!(events(&mut a).contains(&Event::Lost(ConnectionError::ConnectTimedOut)));
}

#[test]
fn resent_syn_reply_keeps_its_sequence_number() {
    let now = Instant::now();
    let mut a = Connection::connect(now, addr(B_ADDR), Config::default(), 11);
    let syn = a.poll_transmit(now).expect("syn");
    let mut b = Connection::accept(now, addr(A_ADDR), &syn.contents, Config::default(), 12)
        .expect("accept");
    let r1 = header(&b.poll_transmit(now).expect("reply"));
    // The reply was lost; the initiator resends its SYN.
    let later = now + Duration::from_secs(1);
    b.handle_datagram(later, &syn.contents).expect("decode");
    let r2 = header(&b.poll_transmit(later).expect("second reply"));
    assert_eq!(r2.ty, PacketType::State);
    assert_eq!(r2.seq_nr, r1.seq_nr);
    assert_eq!(r2.ack_nr, r1.ack_nr);
}

#[test]
fn acceptor_waits_for_initiators_first_data() {
    let (mut a, mut b, now) = handshake(21);
    assert_eq!(b.state(), State::SynRecv);
    assert_eq!(b.write(b"early"), 5);
    assert!(
        transmits(&mut b, now)
            .iter()
            .all(|t| header(t).ty != PacketType::Data)
    );
    a.write(b"first");
    for t in transmits(&mut a, now) {
        b.handle_datagram(now, &t.contents).expect("decode");
    }
    assert_eq!(b.state(), State::Connected);
    assert!(events(&mut b).contains(&Event::Connected));
    let out = transmits(&mut b, now);
    let data: Vec<_> = out
        .iter()
        .filter(|t| header(t).ty == PacketType::Data)
        .collect();
    assert_eq!(data.len(), 1);
    assert_eq!(
        Packet::decode(&data[0].contents).expect("decode").payload,
        b"early"
    );
}

#[test]
fn reset_for_unknown_connection_is_rate_limited() {
    let now = Instant::now();
    let mut ec = EndpointConfig::default();
    ec.reset_burst = 5;
    ec.resets_per_second = 2;
    let mut ep = Endpoint::new(ec, 1);
    let mut data = Vec::new();
    let h = Header {
        ty: PacketType::Data,
        conn_id: 777,
        timestamp: 0,
        timestamp_diff: 0,
        wnd_size: 0,
        seq_nr: 10,
        ack_nr: 20,
    };
    encode(&h, None, b"stray", &mut data);
    for _ in 0..100 {
        ep.handle_datagram(now, addr(A_ADDR), &data)
            .expect("decode");
    }
    let resets: Vec<_> = std::iter::from_fn(|| ep.poll_transmit(now)).collect();
    assert_eq!(resets.len(), 5);
    let rh = header(&resets[0]);
    assert_eq!((rh.ty, rh.conn_id, rh.ack_nr), (PacketType::Reset, 777, 10));
    // Tokens come back at the configured rate.
    let later = now + Duration::from_secs(1);
    for _ in 0..100 {
        ep.handle_datagram(later, addr(A_ADDR), &data)
            .expect("decode");
    }
    assert_eq!(std::iter::from_fn(|| ep.poll_transmit(later)).count(), 2);
    // Never answer a RESET with a RESET.
    let mut reset = Vec::new();
    encode(
        &Header {
            ty: PacketType::Reset,
            ..h
        },
        None,
        &[],
        &mut reset,
    );
    ep.handle_datagram(later + Duration::from_secs(10), addr(A_ADDR), &reset)
        .expect("decode");
    assert_eq!(ep.poll_transmit(later + Duration::from_secs(10)), None);
}

fn reset_with_id_offset(offset: i32) -> Option<ConnectionError> {
    let now = Instant::now();
    let mut a = Endpoint::new(EndpointConfig::default(), 3);
    let ha = a.connect(now, addr(B_ADDR));
    let syn = a.poll_transmit(now).expect("syn");
    let id = header(&syn).conn_id;
    let mut reset = Vec::new();
    let h = Header {
        ty: PacketType::Reset,
        conn_id: id.wrapping_add_signed(offset as i16),
        timestamp: 0,
        timestamp_diff: 0,
        wnd_size: 0,
        seq_nr: 1,
        ack_nr: header(&syn).seq_nr,
    };
    encode(&h, None, &[], &mut reset);
    a.handle_datagram(now, addr(B_ADDR), &reset)
        .expect("decode");
    a.connection(ha).and_then(|c| c.error())
}

#[test]
fn reset_accepted_for_id_and_neighbours() {
    assert_eq!(reset_with_id_offset(0), Some(ConnectionError::Reset));
    assert_eq!(reset_with_id_offset(1), Some(ConnectionError::Reset));
    assert_eq!(reset_with_id_offset(-1), Some(ConnectionError::Reset));
    assert_eq!(reset_with_id_offset(2), None);
}

#[test]
fn zero_timestamp_difference_is_no_sample() {
    // A reply without a delay sample, as libutp sends before it has one.
    let now = Instant::now();
    let mut a = Connection::connect(now, addr(B_ADDR), Config::default(), 31);
    let syn = header(&a.poll_transmit(now).expect("syn"));
    a.handle_datagram(now, &state_packet(syn.conn_id, 5000, syn.seq_nr, 0))
        .expect("decode");
    assert_eq!(a.queuing_delay(), None);
    a.handle_datagram(now, &state_packet(a.recv_id(), 1, 1, 0))
        .expect("decode");
    assert_eq!(a.queuing_delay(), None);
    a.handle_datagram(now, &state_packet(a.recv_id(), 1, 1, 5000))
        .expect("decode");
    assert_eq!(a.queuing_delay(), Some(Duration::ZERO));
    // A later 0 is still not a sample: it cannot lower the base delay.
    a.handle_datagram(now, &state_packet(a.recv_id(), 1, 1, 0))
        .expect("decode");
    for _ in 0..3 {
        a.handle_datagram(now, &state_packet(a.recv_id(), 1, 1, 9000))
            .expect("decode");
    }
    // 4 ms, less a few µs of drift correction: the hand-made packets'
    // timestamps advance faster than our clock.
    let qd = a.queuing_delay().expect("sample");
    assert!(
        qd > Duration::from_micros(3990) && qd <= Duration::from_micros(4000),
        "{qd:?}"
    );
}

#[test]
fn timestamp_difference_echoes_measured_delay() {
    let (mut a, mut b, now) = handshake(32);
    a.write(b"x");
    let d = a.poll_transmit(now).expect("data");
    let sent_ts = header(&d).timestamp;
    let later = now + Duration::from_millis(30);
    b.handle_datagram(later, &d.contents).expect("decode");
    b.write(b"y");
    let reply = transmits(&mut b, later).into_iter().next().expect("reply");
    let rh = header(&reply);
    // b measured our packet on its own clock; the echo is that difference.
    assert_eq!(rh.timestamp_diff, rh.timestamp.wrapping_sub(sent_ts));
}

/// `a` sends `n` one-packet writes; returns their transmits.
fn send_packets(a: &mut Connection, now: Instant, n: usize) -> Vec<Transmit> {
    let mut out = Vec::new();
    for i in 0..n {
        a.write(&[i as u8; 1000]);
        out.extend(transmits(a, now));
    }
    out
}

#[test]
fn three_duplicate_state_acks_trigger_fast_retransmit() {
    let (mut a, _b, now) = handshake(41);
    let sent = send_packets(&mut a, now, 6);
    assert_eq!(sent.len(), 6);
    let first = header(&sent[0]);
    let last_acked = first.seq_nr.wrapping_sub(1);
    let t = now + Duration::from_millis(20);
    // DATA packets repeating the ack do not count as duplicates.
    let mut data = Vec::new();
    let dh = Header {
        ty: PacketType::Data,
        conn_id: a.recv_id(),
        timestamp: 1,
        timestamp_diff: 0,
        wnd_size: 1 << 20,
        seq_nr: a.ack_nr().wrapping_add(1),
        ack_nr: last_acked,
    };
    encode(&dh, None, b"d", &mut data);
    a.handle_datagram(t, &data).expect("decode");
    for _ in 0..2 {
        a.handle_datagram(t, &state_packet(a.recv_id(), 0, last_acked, 0))
            .expect("decode");
    }
    assert!(
        transmits(&mut a, t)
            .iter()
            .all(|p| header(p).ty != PacketType::Data)
    );
    a.handle_datagram(t, &state_packet(a.recv_id(), 0, last_acked, 0))
        .expect("decode");
    let out = transmits(&mut a, t);
    let resent: Vec<_> = out
        .iter()
        .map(header)
        .filter(|h| h.ty == PacketType::Data)
        .collect();
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0].seq_nr, first.seq_nr);
    assert_eq!(a.stats().retransmits, 1);
}

#[test]
fn sack_evidence_triggers_fast_retransmit() {
    let (mut a, _b, now) = handshake(42);
    let sent = send_packets(&mut a, now, 6);
    let first = header(&sent[0]).seq_nr;
    let t = now + Duration::from_millis(20);
    // Packets 2, 3 and 4 arrived (bit i acknowledges ack_nr + 2 + i), so
    // the first is lost; 5 and 6 are not yet suspect.
    let h = Header {
        ty: PacketType::State,
        conn_id: a.recv_id(),
        timestamp: 1,
        timestamp_diff: 0,
        wnd_size: 1 << 20,
        seq_nr: 0,
        ack_nr: first.wrapping_sub(1),
    };
    let mut p = Vec::new();
    encode(&h, Some(&[0b0000_0111, 0, 0, 0]), &[], &mut p);
    a.handle_datagram(t, &p).expect("decode");
    // RACK: the first is lost once it has been out a reordering window
    // (here the 1 ms floor) longer than packet 4's round trip; the loss
    // timer fires then.
    assert!(
        transmits(&mut a, t)
            .iter()
            .all(|t| header(t).ty != PacketType::Data)
    );
    let t = a.poll_timeout().expect("loss timer");
    assert!(t <= now + Duration::from_millis(22), "{t:?}");
    a.handle_timeout(t);
    let resent: Vec<_> = transmits(&mut a, t)
        .iter()
        .map(header)
        .filter(|h| h.ty == PacketType::Data)
        .collect();
    assert_eq!(
        resent.iter().map(|h| h.seq_nr).collect::<Vec<_>>(),
        vec![first]
    );
    // One loss weighed as congestion; with no queue in the delay samples
    // it reads as random and costs no window.
    let stats = a.stats();
    assert_eq!(stats.window_cuts + stats.random_losses, 1, "{stats:?}");
}

#[test]
fn sack_longer_than_32_bits_is_understood() {
    let (mut a, _b, now) = handshake(43);
    let mut sent = Vec::new();
    for _ in 0..70 {
        a.write(&[1u8; 1000]);
        sent.extend(transmits(&mut a, now));
    }
    let n = sent.len();
    assert_eq!(n, 70);
    let first = header(&sent[0]).seq_nr;
    // A 96-bit SACK acknowledging only the last packet (bit n − 2 = 68).
    let mut mask = vec![0u8; 12];
    let bit = n - 2;
    mask[bit / 8] |= 1 << (bit % 8);
    let h = Header {
        ty: PacketType::State,
        conn_id: a.recv_id(),
        timestamp: 1,
        timestamp_diff: 0,
        wnd_size: 1 << 20,
        seq_nr: 0,
        ack_nr: first.wrapping_sub(1),
    };
    let mut p = Vec::new();
    encode(&h, Some(&mask), &[], &mut p);
    let before = a.bytes_in_flight();
    a.handle_datagram(now + Duration::from_millis(5), &p)
        .expect("decode");
    assert_eq!(a.bytes_in_flight(), before - 1000);
}

#[test]
fn keepalive_is_a_state_acking_ack_nr_minus_one() {
    let (mut a, _b, now) = handshake(51);
    let t = a.poll_timeout().expect("keepalive timer");
    assert_eq!(t - now, Duration::from_secs(29));
    a.handle_timeout(t);
    let k = header(&a.poll_transmit(t).expect("keepalive"));
    assert_eq!(k.ty, PacketType::State);
    assert_eq!(k.ack_nr, a.ack_nr().wrapping_sub(1));
    assert_eq!(a.poll_transmit(t), None);
}

#[test]
fn idle_connection_times_out_without_peer() {
    let (mut a, _b, now) = handshake(52);
    let mut t = now;
    while let Some(next) = a.poll_timeout() {
        t = next;
        a.handle_timeout(t);
        while a.poll_transmit(t).is_some() {}
    }
    assert_eq!(a.error(), Some(ConnectionError::IdleTimeout));
    assert_eq!(t - now, Config::default().idle_timeout);
}

#[test]
fn delayed_ack_waits_then_acks_every_second_packet() {
    let (mut a, mut b, now) = handshake(61);
    let p = send_packets(&mut a, now, 3);
    // One in-order packet: the ACK waits for the delayed-ACK timer.
    b.handle_datagram(now, &p[0].contents).expect("decode");
    assert_eq!(b.poll_transmit(now), None);
    let t = b.poll_timeout().expect("ack timer");
    assert_eq!(t - now, Config::default().delayed_ack);
    b.handle_timeout(t);
    assert_eq!(
        header(&b.poll_transmit(t).expect("delayed ack")).ack_nr,
        header(&p[0]).seq_nr
    );
    // A second unacknowledged packet is acked at once.
    b.handle_datagram(t, &p[1].contents).expect("decode");
    assert_eq!(b.poll_transmit(t), None);
    b.handle_datagram(t, &p[2].contents).expect("decode");
    assert_eq!(
        header(&b.poll_transmit(t).expect("immediate ack")).ack_nr,
        header(&p[2]).seq_nr
    );
}

#[test]
fn out_of_order_packet_is_acked_at_once_with_sack() {
    let (mut a, mut b, now) = handshake(62);
    let p = send_packets(&mut a, now, 3);
    b.handle_datagram(now, &p[0].contents).expect("decode");
    let _ = transmits(&mut b, now);
    b.handle_datagram(now, &p[2].contents).expect("decode");
    let ack = b.poll_transmit(now).expect("ack");
    let d = Packet::decode(&ack.contents).expect("decode");
    assert_eq!(d.header.ack_nr, header(&p[0]).seq_nr);
    assert_eq!(d.sack, Some(&[1u8, 0, 0, 0][..]));
}

#[test]
fn karn_an_ack_for_a_retransmitted_packet_gives_no_rtt_sample() {
    let (mut a, _b, now) = handshake(47);
    let sent = send_packets(&mut a, now, 1);
    let seq = header(&sent[0]).seq_nr;
    let rto = a.poll_timeout().expect("RTO armed");
    a.handle_timeout(rto);
    let resent = transmits(&mut a, rto);
    assert!(
        resent
            .iter()
            .map(header)
            .any(|h| h.ty == PacketType::Data && h.seq_nr == seq),
        "the packet was resent at the RTO"
    );
    let before = a.rtt();
    let t = rto + Duration::from_millis(10);
    a.handle_datagram(t, &state_packet(a.recv_id(), 0, seq, 0))
        .expect("decode");
    assert_eq!(a.rtt(), before, "an ambiguous ACK gave an RTT sample");
    // A packet sent once does give one.
    let sent = send_packets(&mut a, t, 1);
    let seq = header(&sent[0]).seq_nr;
    a.handle_datagram(
        t + Duration::from_millis(300),
        &state_packet(a.recv_id(), 0, seq, 0),
    )
    .expect("decode");
    assert_ne!(a.rtt(), before);
}
