//! crust's hello extension: announced in the SYN and the SYN reply, and
//! only when both ends announce it does the path-MTU search start from the
//! route's MTU (capped at both ends' `max_datagram`).

use std::time::{Duration, Instant};

use super::sim::{A_ADDR, B_ADDR, LinkConfig, Pair, addr, transfer};
use crate::utp::proto::{Config, ConnectionHandle, Endpoint, EndpointConfig, Packet, PacketType};

/// A jumbo-frame path: 9000-byte MTU, so 8972 bytes of UDP payload.
const JUMBO: u16 = 8972;

fn jumbo_link() -> LinkConfig {
    LinkConfig {
        mtu: usize::from(JUMBO),
        ..LinkConfig::default()
    }
}

/// Runs a 3 MiB transfer a → b over a jumbo path whose "OS" reports
/// `JUMBO`; returns (a's path MTU, b's ceiling, a is-crust, b is-crust).
fn run(a_config: Config, b_config: Config) -> (u16, u16, bool, bool) {
    let mut pair = Pair::with_configs(7, a_config, b_config, jumbo_link(), jumbo_link());
    pair.interface_mtu = Some(JUMBO);
    let r = transfer(&mut pair, 3 << 20, 0, Duration::from_secs(600));
    assert!(r.closed && r.b_received == 3 << 20, "{r:?}");
    let a = pair.a.connection(ConnectionHandle(1)).expect("a");
    let hb = pair.b.find(addr(A_ADDR), a.send_id()).expect("b");
    let b = pair.b.connection(hb).expect("b");
    (
        a.path_mtu(),
        b.mtu_ceiling(),
        a.peer_is_crust(),
        b.peer_is_crust(),
    )
}

fn no_hello() -> Config {
    let mut c = Config::default();
    c.crust_hello = false;
    c
}

#[test]
fn two_crust_ends_search_up_to_the_routes_mtu() {
    let (mtu, b_ceiling, a_crust, b_crust) = run(Config::default(), Config::default());
    assert!(a_crust && b_crust);
    assert_eq!(b_ceiling, JUMBO);
    assert!(mtu > JUMBO - 16 && mtu <= JUMBO, "path MTU {mtu}");
}

#[test]
fn a_peer_without_the_hello_keeps_the_safe_ceiling() {
    // The other end behaves like libutp: it announces nothing (and skips
    // our hello). Either side may be the one without it.
    for (a, b) in [
        (Config::default(), no_hello()),
        (no_hello(), Config::default()),
    ] {
        let (mtu, b_ceiling, a_crust, b_crust) = run(a, b);
        assert!(!a_crust && !b_crust);
        assert!(mtu <= 1472, "path MTU {mtu}");
        assert_eq!(b_ceiling, 1472);
    }
}

#[test]
fn the_search_is_capped_at_the_smaller_max_datagram() {
    let mut small = Config::default();
    small.max_datagram = 4000;
    for (a, b) in [
        (Config::default(), small.clone()),
        (small, Config::default()),
    ] {
        let (mtu, b_ceiling, a_crust, b_crust) = run(a, b);
        assert!(a_crust && b_crust);
        assert_eq!(b_ceiling, 4000);
        assert!(mtu > 4000 - 16 && mtu <= 4000, "path MTU {mtu}");
    }
}

#[test]
fn forced_mtu_from_interface_still_works_without_the_hello() {
    let mut forced = no_hello();
    forced.mtu_from_interface = true;
    let (mtu, b_ceiling, a_crust, b_crust) = run(forced.clone(), forced);
    assert!(!a_crust && !b_crust);
    assert_eq!(b_ceiling, JUMBO);
    assert!(mtu > JUMBO - 16, "path MTU {mtu}");
}

#[test]
fn the_hello_rides_on_the_syn_and_the_syn_reply_only() {
    let now = Instant::now();
    let mut a = Endpoint::new(EndpointConfig::default(), 1);
    let mut b = Endpoint::new(EndpointConfig::default(), 2);
    let ha = a.connect(now, addr(B_ADDR));
    let syn = a.poll_transmit(now).expect("syn");
    let p = Packet::decode(&syn.contents).expect("decode");
    assert_eq!(p.header.ty, PacketType::Syn);
    assert_eq!(p.crust_max_datagram, Some(65507));
    b.handle_datagram(now, addr(A_ADDR), &syn.contents)
        .expect("decode");
    let reply = b.poll_transmit(now).expect("reply");
    let p = Packet::decode(&reply.contents).expect("decode");
    assert_eq!(p.header.ty, PacketType::State);
    assert_eq!(p.crust_max_datagram, Some(65507));
    // A resent SYN gets the same reply, hello included.
    b.handle_datagram(now, addr(A_ADDR), &syn.contents)
        .expect("decode");
    let again = b.poll_transmit(now).expect("reply again");
    assert_eq!(
        Packet::decode(&again.contents)
            .expect("decode")
            .crust_max_datagram,
        Some(65507)
    );
    a.handle_datagram(now, addr(B_ADDR), &reply.contents)
        .expect("decode");
    assert!(a.connection(ha).expect("a").peer_is_crust());
    a.connection_mut(ha).expect("a").write(b"hello");
    let data = a.poll_transmit(now).expect("data");
    let p = Packet::decode(&data.contents).expect("decode");
    assert_eq!(p.header.ty, PacketType::Data);
    assert_eq!(p.crust_max_datagram, None);
    b.handle_datagram(now, addr(A_ADDR), &data.contents)
        .expect("decode");
    let later = std::iter::from_fn(|| b.poll_transmit(now + Duration::from_secs(1)));
    for t in later {
        assert_eq!(
            Packet::decode(&t.contents)
                .expect("decode")
                .crust_max_datagram,
            None
        );
    }
}

#[test]
fn without_the_hello_config_nothing_is_announced() {
    let now = Instant::now();
    let mut ec = EndpointConfig::default();
    ec.connection = no_hello();
    let mut a = Endpoint::new(ec, 1);
    a.connect(now, addr(B_ADDR));
    let syn = a.poll_transmit(now).expect("syn");
    // Byte-identical to a plain BEP 29 SYN: no extension at all.
    assert_eq!(syn.contents.len(), 20);
    assert_eq!(syn.contents[1], 0);
}

#[test]
fn a_syn_without_the_hello_gets_a_plain_reply() {
    // libutp's initiator, say: the reply carries no extension at all.
    let now = Instant::now();
    let mut ec = EndpointConfig::default();
    ec.connection = no_hello();
    let mut a = Endpoint::new(ec, 1);
    let mut b = Endpoint::new(EndpointConfig::default(), 2);
    a.connect(now, addr(B_ADDR));
    let syn = a.poll_transmit(now).expect("syn");
    b.handle_datagram(now, addr(A_ADDR), &syn.contents)
        .expect("decode");
    let reply = b.poll_transmit(now).expect("reply");
    assert_eq!(reply.contents.len(), 20);
    assert_eq!(reply.contents[1], 0);
}
