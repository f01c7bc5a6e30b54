//! From observations to findings: pure functions, no I/O.
//!
//! The execution (`run.rs`) fills an [`Observations`] with what the
//! server's answers said; [`classify`] turns it into [`Findings`] the way
//! RFC 5780 section 4 describes, and [`predict`] derives which connection
//! techniques should work.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::report::{
    Behaviour, Findings, Lifetime, Ports, Prediction, SynAnswer, TcpFindings, Technique, UdpReach,
    UpnpFindings, Verdict,
};
use super::wire::TcpOutcome;

/// Ports within this distance per step count as sequential allocation.
const SEQUENTIAL_STEP: i32 = 64;

/// What the probe saw, as raw as it comes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observations {
    /// Our interface addresses.
    pub local_ips: Vec<IpAddr>,
    /// The mapping test's socket's local port.
    pub mapping_local_port: u16,
    /// The mapping test, in order: our address as seen from the primary
    /// address and port, from the other address (same port), and from the
    /// other address and port. `None` where no answer came.
    pub mapping: [Option<SocketAddr>; 3],
    /// Filtering test: whether an answer from the other address and port
    /// came in, and whether one from the other port (same address) did.
    /// `None` when the test could not run.
    pub filtering: Option<(bool, bool)>,
    /// Port allocation test: (local port, external address) for fresh
    /// sockets, in the order they were mapped.
    pub port_samples: Vec<(u16, SocketAddr)>,
    /// Whether a datagram to our own external address reached us.
    pub hairpin: Option<bool>,
    /// Binding lifetime test: idle time and whether the mapping survived.
    pub lifetime: Vec<(Duration, bool)>,
    /// TCP: our local and external address for a connection to the server.
    pub tcp: Option<(SocketAddr, SocketAddr)>,
    /// Whether the TCP test ran (and the connection failed if `tcp` is
    /// `None`).
    pub tcp_tried: bool,
    /// What the server's unsolicited SYN got.
    pub tcp_unsolicited: Option<TcpOutcome>,
    /// Whether simultaneous open worked.
    pub tcp_simultaneous: Option<bool>,
    /// UPnP: `None` not tested; `Some(None)` no gateway; else its external
    /// address, the external address it mapped (if any) and whether the
    /// server reached it.
    pub upnp: Option<Option<UpnpSeen>>,
    /// IPv6: `None` not tested, else whether a server answered.
    pub ipv6: Option<bool>,
}

/// What a UPnP gateway did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpnpSeen {
    /// Its external address.
    pub external_ip: Option<IpAddr>,
    /// The mapping it granted.
    pub mapped: Option<SocketAddr>,
    /// Whether the server reached us through it.
    pub reachable: Option<bool>,
}

/// Classifies observations (RFC 5780 sections 4.3 and 4.4).
pub fn classify(o: &Observations) -> Findings {
    let external = o.mapping[0].or(o.port_samples.first().map(|s| s.1));
    let udp = if o.mapping.iter().any(Option::is_some) || !o.port_samples.is_empty() {
        UdpReach::Reachable
    } else {
        UdpReach::Blocked
    };
    let behind_nat = match (o.mapping[0], o.tcp) {
        (Some(e), _) => Some(!(o.local_ips.contains(&e.ip()) && e.port() == o.mapping_local_port)),
        (None, Some((local, ext))) => Some(local != ext),
        (None, None) => None,
    };
    let mapping = match o.mapping {
        [Some(a), Some(b), _] if a == b => Some(Behaviour::EndpointIndependent),
        [Some(_), Some(b), Some(c)] if b == c => Some(Behaviour::AddressDependent),
        [Some(_), Some(_), Some(_)] => Some(Behaviour::AddressAndPortDependent),
        _ => None,
    };
    let filtering = match (udp, o.filtering) {
        (UdpReach::Reachable, Some((true, _))) => Some(Behaviour::EndpointIndependent),
        (UdpReach::Reachable, Some((false, true))) => Some(Behaviour::AddressDependent),
        (UdpReach::Reachable, Some((false, false))) => Some(Behaviour::AddressAndPortDependent),
        _ => None,
    };
    let upnp = match o.upnp {
        None => UpnpFindings::default(),
        Some(None) => UpnpFindings {
            present: Some(false),
            ..UpnpFindings::default()
        },
        Some(Some(seen)) => UpnpFindings {
            present: Some(true),
            mapped: Some(seen.mapped.is_some()),
            reachable: seen.reachable,
        },
    };
    let mut findings = Findings {
        udp,
        behind_nat,
        mapping,
        filtering,
        ports: ports(&o.port_samples),
        hairpinning: o.hairpin,
        lifetime: lifetime(&o.lifetime),
        tcp: TcpFindings {
            outgoing: o.tcp_tried.then_some(o.tcp.is_some()),
            port_preserved: o.tcp.map(|(l, e)| l.port() == e.port()),
            unsolicited_syn: o.tcp_unsolicited.map(SynAnswer::from),
            simultaneous_open: o.tcp_simultaneous,
        },
        upnp,
        cgnat: cgnat(
            &o.local_ips,
            external.map(|e| e.ip()),
            o.upnp.flatten().and_then(|u| u.external_ip),
            behind_nat,
        ),
        ipv6: o.ipv6,
        predicted: Vec::new(),
    };
    findings.predicted = predict(&findings);
    findings
}

/// Preserved if every external port was the local one; sequential if the
/// steps between consecutive mappings are small and share a divisor;
/// random otherwise.
fn ports(samples: &[(u16, SocketAddr)]) -> Option<Ports> {
    if samples.len() < 2 {
        return None;
    }
    if samples.iter().all(|(local, ext)| *local == ext.port()) {
        return Some(Ports::Preserved);
    }
    let steps: Vec<i32> = samples
        .windows(2)
        .map(|w| i32::from(w[1].1.port()) - i32::from(w[0].1.port()))
        .collect();
    if steps.iter().all(|s| *s != 0 && s.abs() <= SEQUENTIAL_STEP)
        && steps.iter().all(|s| s.signum() == steps[0].signum())
    {
        let delta = steps.iter().fold(0, |g, s| gcd(g, s.abs()));
        return Some(Ports::Sequential {
            delta: delta * steps[0].signum(),
        });
    }
    Some(Ports::Random)
}

fn gcd(a: i32, b: i32) -> i32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn lifetime(tests: &[(Duration, bool)]) -> Option<Lifetime> {
    if tests.is_empty() {
        return None;
    }
    let secs = |d: &Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
    Some(Lifetime {
        at_least_secs: tests
            .iter()
            .filter(|t| t.1)
            .map(|t| secs(&t.0))
            .max()
            .unwrap_or(0),
        below_secs: tests.iter().filter(|t| !t.1).map(|t| secs(&t.0)).min(),
    })
}

/// Carrier-grade NAT: we sit on a `100.64.0.0/10` LAN, or the gateway's
/// own external address is private, shared or differs from the one the
/// server saw. Without a gateway to ask, a NAT's WAN side is unknown.
fn cgnat(
    local: &[IpAddr],
    external: Option<IpAddr>,
    gateway_external: Option<IpAddr>,
    behind_nat: Option<bool>,
) -> Option<bool> {
    if behind_nat == Some(false) {
        return Some(false);
    }
    if local.iter().any(|ip| shared(*ip)) {
        return Some(true);
    }
    match (gateway_external, external) {
        (Some(g), _) if shared(g) || private(g) => Some(true),
        (Some(g), Some(e)) => Some(g != e),
        _ => None,
    }
}

/// In `100.64.0.0/10` (RFC 6598 shared address space).
fn shared(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            a == 100 && (64..128).contains(&b)
        }
        IpAddr::V6(_) => false,
    }
}

fn private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private() || v4.is_link_local() || v4 == Ipv4Addr::UNSPECIFIED,
        IpAddr::V6(_) => false,
    }
}

/// Which techniques should work, from the findings alone.
pub fn predict(f: &Findings) -> Vec<Prediction> {
    use Verdict::*;
    let open = f.behind_nat == Some(false);
    let udp_ok = f.udp == UdpReach::Reachable;
    let direct_inbound = if open || f.upnp.reachable == Some(true) {
        Works
    } else if f.behind_nat.is_none() {
        Unknown
    } else {
        Fails
    };
    let direct_outbound = match f.tcp.outgoing {
        Some(true) => Works,
        Some(false) => Fails,
        None => Unknown,
    };
    let punch = match (udp_ok, open, f.mapping, f.ports) {
        (false, ..) => Fails,
        (true, true, ..) => Works,
        (true, false, Some(Behaviour::EndpointIndependent), _) => Works,
        (true, false, Some(_), Some(Ports::Sequential { .. })) => NeedsPrediction,
        (true, false, Some(_), _) => WithEasyPeer,
        (true, false, None, _) => Unknown,
    };
    let simultaneous = match f.tcp.simultaneous_open {
        Some(true) => Works,
        Some(false) => Fails,
        None => Unknown,
    };
    let upnp = match (f.upnp.present, f.upnp.reachable) {
        (_, Some(true)) => Works,
        (Some(false), _) | (_, Some(false)) => Fails,
        _ => Unknown,
    };
    [
        (Technique::DirectInbound, direct_inbound),
        (Technique::DirectOutbound, direct_outbound),
        (Technique::UdpHolePunch, punch),
        (Technique::TcpSimultaneousOpen, simultaneous),
        (Technique::Upnp, upnp),
        (Technique::Relay, Works),
    ]
    .into_iter()
    .map(|(technique, verdict)| Prediction { technique, verdict })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn behind(mapping: [Option<&str>; 3], filtering: (bool, bool)) -> Observations {
        Observations {
            local_ips: vec!["192.168.1.2".parse().unwrap()],
            mapping_local_port: 40000,
            mapping: mapping.map(|m| m.map(a)),
            filtering: Some(filtering),
            port_samples: vec![
                (41000, a("203.0.113.1:41000")),
                (42000, a("203.0.113.1:42000")),
                (43000, a("203.0.113.1:43000")),
            ],
            ..Observations::default()
        }
    }

    const E: Option<&str> = Some("203.0.113.1:40000");

    #[test]
    fn mapping_and_filtering_per_rfc_5780() {
        let f = classify(&behind([E, E, E], (true, true)));
        assert_eq!(f.udp, UdpReach::Reachable);
        assert_eq!(f.behind_nat, Some(true));
        assert_eq!(f.mapping, Some(Behaviour::EndpointIndependent));
        assert_eq!(f.filtering, Some(Behaviour::EndpointIndependent));
        assert_eq!(f.ports, Some(Ports::Preserved));
        assert_eq!(f.nat_class(), "eim-eif");
        let f = classify(&behind([E, E, E], (false, true)));
        assert_eq!(f.filtering, Some(Behaviour::AddressDependent));
        let f = classify(&behind([E, E, E], (false, false)));
        assert_eq!(f.filtering, Some(Behaviour::AddressAndPortDependent));
        assert_eq!(f.nat_class(), "eim-apdf");
        let b = Some("203.0.113.1:1025");
        let f = classify(&behind([E, b, b], (false, false)));
        assert_eq!(f.mapping, Some(Behaviour::AddressDependent));
        let f = classify(&behind([E, b, Some("203.0.113.1:1026")], (false, false)));
        assert_eq!(f.mapping, Some(Behaviour::AddressAndPortDependent));
        assert_eq!(f.nat_class(), "apdm-apdf");
        // A missing answer leaves the mapping undetermined.
        assert_eq!(
            classify(&behind([E, None, E], (false, false))).mapping,
            None
        );
    }

    #[test]
    fn no_answer_at_all_is_udp_blocked() {
        let o = Observations {
            local_ips: vec!["192.168.1.2".parse().unwrap()],
            filtering: Some((false, false)),
            ..Observations::default()
        };
        let f = classify(&o);
        assert_eq!(f.udp, UdpReach::Blocked);
        assert_eq!((f.mapping, f.filtering, f.ports), (None, None, None));
        assert_eq!(f.nat_class(), "udp_blocked");
        let punch = f
            .predicted
            .iter()
            .find(|p| p.technique == Technique::UdpHolePunch);
        assert_eq!(punch.map(|p| p.verdict), Some(Verdict::Fails));
    }

    #[test]
    fn our_own_address_is_no_nat() {
        let mut o = behind([None; 3], (true, true));
        o.local_ips = vec!["203.0.113.1".parse().unwrap()];
        o.mapping = [E.map(a); 3];
        let f = classify(&o);
        assert_eq!(f.behind_nat, Some(false));
        assert_eq!(f.nat_class(), "none");
        assert_eq!(f.cgnat, Some(false));
        assert!(f.predicted.contains(&Prediction {
            technique: Technique::DirectInbound,
            verdict: Verdict::Works
        }));
    }

    #[test]
    fn port_allocation_patterns() {
        let s = |ports: &[(u16, u16)]| -> Vec<(u16, SocketAddr)> {
            ports
                .iter()
                .map(|(l, e)| (*l, SocketAddr::from(([203, 0, 113, 1], *e))))
                .collect()
        };
        assert_eq!(ports(&s(&[(5, 5)])), None);
        assert_eq!(ports(&s(&[(5, 5), (9, 9)])), Some(Ports::Preserved));
        assert_eq!(
            ports(&s(&[(5, 1024), (9, 1025), (7, 1026)])),
            Some(Ports::Sequential { delta: 1 })
        );
        assert_eq!(
            ports(&s(&[(5, 1030), (9, 1026), (7, 1020)])),
            Some(Ports::Sequential { delta: -2 })
        );
        assert_eq!(
            ports(&s(&[(5, 9000), (9, 41000), (7, 2000)])),
            Some(Ports::Random)
        );
        // Close but back and forth is not a sequence.
        assert_eq!(
            ports(&s(&[(5, 1024), (9, 1030), (7, 1025)])),
            Some(Ports::Random)
        );
    }

    #[test]
    fn symmetric_sequential_needs_prediction() {
        let mut o = behind(
            [E, Some("203.0.113.1:1025"), Some("203.0.113.1:1026")],
            (false, false),
        );
        o.port_samples = vec![
            (41000, a("203.0.113.1:1027")),
            (42000, a("203.0.113.1:1028")),
            (43000, a("203.0.113.1:1029")),
        ];
        let f = classify(&o);
        assert_eq!(f.ports, Some(Ports::Sequential { delta: 1 }));
        let punch = f
            .predicted
            .iter()
            .find(|p| p.technique == Technique::UdpHolePunch);
        assert_eq!(punch.map(|p| p.verdict), Some(Verdict::NeedsPrediction));
    }

    #[test]
    fn cgnat_from_shared_space_or_gateway_address() {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let ext = Some(ip("203.0.113.1"));
        assert_eq!(
            cgnat(&[ip("100.64.3.2")], ext, None, Some(true)),
            Some(true)
        );
        assert_eq!(cgnat(&[ip("192.168.1.2")], ext, None, Some(true)), None);
        assert_eq!(
            cgnat(
                &[ip("192.168.1.2")],
                ext,
                Some(ip("100.100.0.1")),
                Some(true)
            ),
            Some(true)
        );
        assert_eq!(
            cgnat(&[ip("192.168.1.2")], ext, Some(ip("10.0.0.2")), Some(true)),
            Some(true)
        );
        assert_eq!(
            cgnat(
                &[ip("192.168.1.2")],
                ext,
                Some(ip("198.51.100.9")),
                Some(true)
            ),
            Some(true)
        );
        assert_eq!(
            cgnat(
                &[ip("192.168.1.2")],
                ext,
                Some(ip("203.0.113.1")),
                Some(true)
            ),
            Some(false)
        );
    }

    #[test]
    fn tcp_upnp_lifetime_and_hairpin_carried_over() {
        let mut o = behind([E, E, E], (false, false));
        o.hairpin = Some(true);
        o.tcp_tried = true;
        o.tcp = Some((a("192.168.1.2:5000"), a("203.0.113.1:5000")));
        o.tcp_unsolicited = Some(TcpOutcome::Refused);
        o.tcp_simultaneous = Some(true);
        o.upnp = Some(Some(UpnpSeen {
            external_ip: Some("203.0.113.1".parse().unwrap()),
            mapped: Some(a("203.0.113.1:6000")),
            reachable: Some(true),
        }));
        o.lifetime = vec![
            (Duration::from_secs(10), true),
            (Duration::from_secs(40), false),
            (Duration::from_secs(20), true),
        ];
        let f = classify(&o);
        assert_eq!(f.hairpinning, Some(true));
        assert_eq!(
            f.tcp,
            TcpFindings {
                outgoing: Some(true),
                port_preserved: Some(true),
                unsolicited_syn: Some(SynAnswer::Rst),
                simultaneous_open: Some(true),
            }
        );
        assert_eq!(
            f.upnp,
            UpnpFindings {
                present: Some(true),
                mapped: Some(true),
                reachable: Some(true)
            }
        );
        assert_eq!(f.cgnat, Some(false));
        assert_eq!(
            f.lifetime,
            Some(Lifetime {
                at_least_secs: 20,
                below_secs: Some(40)
            })
        );
        let verdict = |t| {
            f.predicted
                .iter()
                .find(|p| p.technique == t)
                .unwrap()
                .verdict
        };
        assert_eq!(verdict(Technique::DirectInbound), Verdict::Works);
        assert_eq!(verdict(Technique::Upnp), Verdict::Works);
        assert_eq!(verdict(Technique::TcpSimultaneousOpen), Verdict::Works);
        assert_eq!(verdict(Technique::Relay), Verdict::Works);
    }
}
