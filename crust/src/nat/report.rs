//! What a service knows about its own addresses and the NAT in front of
//! it, and the pure function that derives it from observations.
//!
//! Observations come in from the driver (`service/nat.rs`): address echoes
//! from connected peers over the UDP socket, the address a peer saw on a
//! TCP connection, UPnP mappings, local interface addresses. [`classify`]
//! turns them into a [`NatReport`]; the service emits
//! [`Event::NatReport`](crate::Event::NatReport) whenever the result
//! changes.

use std::net::{IpAddr, SocketAddr};

use crate::id::PeerId;

/// How the NAT maps our UDP socket to external addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Mapping {
    /// Fewer echoes than needed to tell.
    #[default]
    Unknown,
    /// No NAT: peers see our own address.
    NoNat,
    /// One external address whoever we talk to (RFC 4787 EIM): full,
    /// restricted and port-restricted cone NATs, most CGNATs.
    EndpointIndependent,
    /// A different external address per destination (a symmetric NAT).
    EndpointDependent,
}

/// How the NAT picks external ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum PortAllocation {
    /// Not enough observations to tell.
    #[default]
    Unknown,
    /// The external port is our local port.
    Preserved,
    /// One mapping, on another port than ours; with endpoint-independent
    /// mapping there is no second mapping to show a pattern.
    NotPreserved,
    /// Each new mapping takes the previous port plus `delta`, so the next
    /// ones can be predicted.
    Sequential {
        /// The step between consecutive mappings.
        delta: u16,
    },
    /// Ports are scattered; nothing to predict.
    Random,
}

/// One echo: a peer at `server` saw our UDP socket as `observed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Observation {
    /// The peer that answered.
    pub peer: PeerId,
    /// Where it answered from.
    pub server: SocketAddr,
    /// Our address as it saw it.
    pub observed: SocketAddr,
}

/// Port mappings made on the gateway with UPnP IGD.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpnpMapping {
    /// The gateway's external address.
    pub external_ip: IpAddr,
    /// The external address forwarded to our UDP socket.
    pub udp: Option<SocketAddr>,
    /// The external address forwarded to our (first) TCP listener.
    pub tcp: Option<SocketAddr>,
}

/// Everything the service has learnt about how it can be reached.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct NatReport {
    /// Our own interface addresses with the UDP socket's port (local
    /// candidates).
    pub local_udp: Vec<SocketAddr>,
    /// Our own interface addresses with each TCP listener's port.
    pub local_tcp: Vec<SocketAddr>,
    /// Echoes of our UDP socket, one per answering peer.
    pub udp_observations: Vec<Observation>,
    /// The external UDP address peers see most often (for an
    /// endpoint-dependent NAT, only the one seen by those peers).
    pub udp_external: Option<SocketAddr>,
    /// Our addresses as seen by peers on TCP connections (for outgoing
    /// connections, the NAT's mapping of that connection's port).
    pub tcp_observed: Vec<SocketAddr>,
    /// How the NAT maps the UDP socket.
    pub mapping: Mapping,
    /// How it allocates ports.
    pub port_allocation: PortAllocation,
    /// How the NAT maps the TCP listener's port: from the echoes of our
    /// outgoing connections that left from that port (the only ones of
    /// `tcp_observed` that show it).
    pub tcp_mapping: Mapping,
    /// How it allocates ports for those.
    pub tcp_port_allocation: PortAllocation,
    /// UPnP IGD mappings, if a gateway made them.
    pub upnp: Option<UpnpMapping>,
}

impl NatReport {
    /// UDP ports the NAT will probably hand out next for new destinations,
    /// nearest first: only for sequential endpoint-dependent NATs.
    pub fn predicted_udp(&self, count: usize) -> Vec<SocketAddr> {
        let (Mapping::EndpointDependent, PortAllocation::Sequential { delta }) =
            (self.mapping, self.port_allocation)
        else {
            return Vec::new();
        };
        let Some(last) = self
            .udp_observations
            .iter()
            .map(|o| o.observed)
            .max_by_key(|a| a.port())
        else {
            return Vec::new();
        };
        (1..=count as u32)
            .filter_map(|k| {
                let port = u32::from(last.port()) + k * u32::from(delta);
                u16::try_from(port)
                    .ok()
                    .map(|p| SocketAddr::new(last.ip(), p))
            })
            .collect()
    }
}

/// Ports within this span of each other, on an endpoint-dependent NAT, are
/// taken for sequential allocation; two random ones fall this close with
/// probability 2·64/64 512 ≈ 0.2% (with 256 it was 0.8%, and a random NAT
/// taken for a sequential one gets port prediction instead of the birthday
/// technique: netsim's symmetric_random with seed 1002 echoed ports 229
/// apart). Our echoes leave within milliseconds of each other, so a
/// sequential NAT's own gap is a few ports.
const SEQUENTIAL_SPAN: u16 = 64;

/// Derives the mapping and port behaviour from the echoes of a socket bound
/// on `local_port` whose interface addresses are `local_ips`.
pub(crate) fn classify(
    local_ips: &[IpAddr],
    local_port: u16,
    observations: &[Observation],
) -> (Mapping, PortAllocation, Option<SocketAddr>) {
    if observations.is_empty() {
        return (Mapping::Unknown, PortAllocation::Unknown, None);
    }
    let mut distinct: Vec<SocketAddr> = observations.iter().map(|o| o.observed).collect();
    distinct.sort();
    distinct.dedup();
    // The most common observation (ties: the lowest address, for stability).
    let external = distinct.iter().copied().max_by_key(|a| {
        (
            observations.iter().filter(|o| o.observed == *a).count(),
            std::cmp::Reverse(*a),
        )
    });
    let no_nat = distinct.len() == 1
        && distinct[0].port() == local_port
        && local_ips.contains(&distinct[0].ip());
    if no_nat {
        return (Mapping::NoNat, PortAllocation::Preserved, external);
    }
    let mut servers: Vec<IpAddr> = observations.iter().map(|o| o.server.ip()).collect();
    servers.sort();
    servers.dedup();
    if distinct.len() == 1 {
        let ports = if distinct[0].port() == local_port {
            PortAllocation::Preserved
        } else {
            PortAllocation::NotPreserved
        };
        // One server cannot show a destination-dependent mapping.
        let mapping = if servers.len() >= 2 {
            Mapping::EndpointIndependent
        } else {
            Mapping::Unknown
        };
        return (mapping, ports, external);
    }
    let mut ports: Vec<u16> = distinct.iter().map(|a| a.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    let allocation = match (ports.first(), ports.last()) {
        (Some(&lo), Some(&hi)) if ports.len() >= 2 && hi - lo < SEQUENTIAL_SPAN => {
            // Two ports cannot tell a step of 2 from a step of 1 with
            // another mapping (our own TCP connection, say) in between;
            // predicting every port is the safe guess.
            let delta = if ports.len() < 3 {
                1
            } else {
                ports.windows(2).map(|w| w[1] - w[0]).fold(0, gcd).max(1)
            };
            PortAllocation::Sequential { delta }
        }
        _ if ports.len() >= 2 => PortAllocation::Random,
        _ => PortAllocation::Unknown,
    };
    (Mapping::EndpointDependent, allocation, external)
}

fn gcd(a: u16, b: u16) -> u16 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(server: &str, observed: &str) -> Observation {
        Observation {
            peer: crate::SecretId::generate().peer_id(),
            server: server.parse().unwrap(),
            observed: observed.parse().unwrap(),
        }
    }

    const LOCAL: [IpAddr; 1] = [IpAddr::V4(std::net::Ipv4Addr::new(192, 168, 1, 2))];

    #[test]
    fn nothing_observed_is_unknown() {
        assert_eq!(
            classify(&LOCAL, 4000, &[]),
            (Mapping::Unknown, PortAllocation::Unknown, None)
        );
    }

    #[test]
    fn our_own_address_means_no_nat() {
        let o = [obs("192.0.2.11:1", "192.168.1.2:4000")];
        let (m, p, e) = classify(&LOCAL, 4000, &o);
        assert_eq!((m, p), (Mapping::NoNat, PortAllocation::Preserved));
        assert_eq!(e, Some("192.168.1.2:4000".parse().unwrap()));
    }

    #[test]
    fn one_external_address_from_two_servers_is_endpoint_independent() {
        let o = [
            obs("192.0.2.11:1", "203.0.113.1:4000"),
            obs("192.0.2.12:1", "203.0.113.1:4000"),
        ];
        assert_eq!(
            classify(&LOCAL, 4000, &o),
            (
                Mapping::EndpointIndependent,
                PortAllocation::Preserved,
                Some("203.0.113.1:4000".parse().unwrap())
            )
        );
        let o = [
            obs("192.0.2.11:1", "203.0.113.1:31000"),
            obs("192.0.2.12:1", "203.0.113.1:31000"),
        ];
        assert_eq!(classify(&LOCAL, 4000, &o).1, PortAllocation::NotPreserved);
        // One server alone cannot tell.
        assert_eq!(classify(&LOCAL, 4000, &o[..1]).0, Mapping::Unknown);
    }

    #[test]
    fn close_ports_are_sequential_and_predictable() {
        let o = [
            obs("192.0.2.11:1", "203.0.113.1:1026"),
            obs("192.0.2.12:1", "203.0.113.1:1024"),
            obs("192.0.2.13:1", "203.0.113.1:1030"),
        ];
        let (m, p, _) = classify(&LOCAL, 4000, &o);
        assert_eq!(m, Mapping::EndpointDependent);
        assert_eq!(p, PortAllocation::Sequential { delta: 2 });
        // Two ports two apart may be a step of 1 with a mapping between.
        assert_eq!(
            classify(&LOCAL, 4000, &o[..2]).1,
            PortAllocation::Sequential { delta: 1 }
        );
        let report = NatReport {
            mapping: m,
            port_allocation: p,
            udp_observations: o.to_vec(),
            ..NatReport::default()
        };
        assert_eq!(
            report.predicted_udp(2),
            vec![
                "203.0.113.1:1032".parse::<SocketAddr>().unwrap(),
                "203.0.113.1:1034".parse().unwrap()
            ]
        );
    }

    #[test]
    fn ports_a_few_hundred_apart_are_random() {
        let o = [
            obs("192.0.2.11:1", "203.0.113.1:40522"),
            obs("192.0.2.12:1", "203.0.113.1:40293"),
        ];
        let (_, p, _) = classify(&[], 5000, &o);
        assert_eq!(p, PortAllocation::Random);
    }

    #[test]
    fn scattered_ports_are_random() {
        let o = [
            obs("192.0.2.11:1", "203.0.113.1:9000"),
            obs("192.0.2.12:1", "203.0.113.1:41000"),
        ];
        let (m, p, _) = classify(&LOCAL, 4000, &o);
        assert_eq!((m, p), (Mapping::EndpointDependent, PortAllocation::Random));
        let report = NatReport {
            mapping: m,
            port_allocation: p,
            udp_observations: o.to_vec(),
            ..NatReport::default()
        };
        assert!(report.predicted_udp(8).is_empty());
    }
}
