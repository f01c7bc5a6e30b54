//! Our own interface addresses (local candidates).
//!
//! Without a dependency on `getifaddrs`, a socket bound to the unspecified
//! address asks the routing table which source address it would use
//! towards the internet: a UDP `connect` sends nothing. That gives the
//! primary interface's address, which is the one a peer on the same LAN can
//! reach.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};

/// The addresses a socket bound to `bound` can be reached at locally.
pub(crate) fn local_ips(bound: IpAddr) -> Vec<IpAddr> {
    if !bound.is_unspecified() {
        return vec![bound];
    }
    // Any routable address does; nothing is sent.
    let probe = SocketAddr::from((Ipv4Addr::new(198, 51, 100, 1), 9));
    UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|s| {
            s.connect(probe)?;
            s.local_addr()
        })
        .map(|a| vec![a.ip()])
        .unwrap_or_default()
}

/// Whether a gateway may be doing NAT for this address, so that UPnP is
/// worth asking: private (RFC 1918) and shared (RFC 6598) IPv4 space.
pub(crate) fn behind_nat(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_private() || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_specific_bind_is_its_own_answer() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(local_ips(ip), vec![ip]);
    }

    #[test]
    fn private_and_shared_space_may_be_natted() {
        for (ip, natted) in [
            ("192.168.1.2", true),
            ("10.0.0.1", true),
            ("100.64.3.2", true),
            ("100.128.0.1", false),
            ("127.0.0.1", false),
            ("192.0.2.11", false),
        ] {
            assert_eq!(behind_nat(ip.parse().unwrap()), natted, "{ip}");
        }
    }
}
