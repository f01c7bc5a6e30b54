//! Property tests of the sans-IO core: garbage never panics the router, and
//! NAT translation round-trips for any traffic pattern.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use crate::fabric::Fabric;
use crate::link::{Impairment, LinkConfig};
use crate::nat::{Dependence, Nat, NatConfig, NatPreset, PortAssignment, Verdict};
use crate::packet::{self, checksums_ok, parse, udp};
use crate::topology::Topology;

fn any_config() -> impl Strategy<Value = NatConfig> {
    let dep = prop_oneof![
        Just(Dependence::EndpointIndependent),
        Just(Dependence::AddressDependent),
        Just(Dependence::AddressAndPortDependent),
    ];
    let ports = prop_oneof![
        Just(PortAssignment::Preserve),
        (1u16..50).prop_map(|delta| PortAssignment::Sequential { delta }),
        Just(PortAssignment::Random),
    ];
    (dep.clone(), dep, ports).prop_map(|(mapping, filtering, ports)| NatConfig {
        mapping,
        filtering,
        ports,
        ..NatConfig::full_cone()
    })
}

const EXT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

proptest! {
    /// Arbitrary bytes from any host, through a topology with every kind of
    /// router and impairment, never panic the fabric.
    #[test]
    fn garbage_never_panics_the_fabric(pkts in prop::collection::vec((0usize..4, prop::collection::vec(any::<u8>(), 0..120)), 1..60)) {
        let mut t = Topology::new();
        let carrier = t.router("carrier", NatPreset::Cgnat);
        let home = t.router_behind("home", NatPreset::SymmetricRandom, carrier);
        let open = t.router("open", NatPreset::Open);
        let a = t.host("a", home);
        t.host("b", open);
        t.public_host_with_addrs("s", 2);
        t.host("c", carrier);
        t.set_link(a, LinkConfig::symmetric(Impairment::none().loss(0.1).duplicate(0.1).mtu(60).jitter(Duration::from_millis(1), false)));
        let mut f = Fabric::new(&t, 1).unwrap();
        let now = Instant::now();
        for (i, (tun, mut bytes)) in pkts.into_iter().enumerate() {
            // Make about half of them look like IPv4 so they get further.
            if i % 2 == 0 && bytes.len() >= 20 {
                bytes[0] = 0x45;
            }
            f.ingress(now, tun, bytes);
            f.handle_timeout(now + Duration::from_millis(5));
            while f.poll_transmit().is_some() {}
        }
    }

    /// Whatever the NAT kind and traffic, an answer from the remote endpoint
    /// a LAN endpoint sent to comes back to exactly that LAN endpoint, with
    /// valid checksums; distinct live mappings never share an external port.
    #[test]
    fn replies_return_to_their_sender(
        cfg in any_config(),
        flows in prop::collection::vec((1u8..4, 1000u16..1010, 0u8..3, 1u16..4), 1..40),
    ) {
        let mut nat = Nat::new(cfg, EXT, 9);
        let now = Instant::now();
        let mut seen: std::collections::HashMap<u16, SocketAddrV4> = std::collections::HashMap::new();
        for (host, sport, server, dport) in flows {
            let src = Ipv4Addr::new(192, 168, 1, host + 1);
            let dst = Ipv4Addr::new(192, 0, 2, server + 1);
            let mut p = udp(src, sport, dst, dport, b"q");
            let mut m = parse(&p).unwrap();
            prop_assert_eq!(nat.outbound(now, &mut p, &mut m), Verdict::Forward);
            prop_assert!(checksums_ok(&p));
            let ext_port = m.sport;
            let internal = SocketAddrV4::new(src, sport);
            if let Some(prev) = seen.insert(ext_port, internal) {
                prop_assert_eq!(prev, internal, "external port {} shared by two LAN endpoints", ext_port);
            }
            let mut r = udp(dst, dport, EXT, ext_port, b"a");
            let mut rm = parse(&r).unwrap();
            prop_assert_eq!(nat.inbound(now, &mut r, &mut rm), Verdict::Forward);
            prop_assert_eq!(SocketAddrV4::new(rm.dst, rm.dport), internal);
            prop_assert!(checksums_ok(&r));
        }
    }

    /// The packet parsers and quoted-packet parser accept any bytes.
    #[test]
    fn parsers_accept_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Some(m) = packet::parse(&bytes) {
            let _ = packet::quoted(&bytes, &m);
            let _ = packet::tcp_rst(&bytes, &m);
            let _ = packet::echo_reply(&bytes, &m);
        }
        let _ = crate::stun::binding_response(&bytes, SocketAddrV4::new(EXT, 1));
    }

    /// ICMP errors quoting truncated or mangled packets never panic the NAT.
    #[test]
    fn mangled_icmp_errors_never_panic(cut in 0usize..80, noise in prop::collection::vec((0usize..60, any::<u8>()), 0..8)) {
        let mut nat = Nat::new(NatConfig::symmetric(), EXT, 1);
        let now = Instant::now();
        let mut p = udp(Ipv4Addr::new(192, 168, 1, 2), 5000, Ipv4Addr::new(192, 0, 2, 1), 9, b"payload!");
        let mut m = parse(&p).unwrap();
        let _ = nat.outbound(now, &mut p, &mut m);
        let mut e = packet::icmp_error(&p, &m, Ipv4Addr::new(192, 0, 2, 1), packet::ICMP_DEST_UNREACH, 3, 0);
        for (at, b) in noise {
            // Keep the outer header; mangle the quoted packet.
            let i = 28 + at;
            if i < e.len() && !(40..44).contains(&i) {
                e[i] = b;
            }
        }
        e.truncate((28 + cut).max(20));
        if let Some(mut em) = parse(&e) {
            let _ = nat.inbound(now, &mut e, &mut em);
            let _ = nat.outbound(now, &mut e, &mut em);
        }
    }
}
