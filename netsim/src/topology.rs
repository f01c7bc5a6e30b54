//! The shape of a virtual internet: routers (with or without NAT) hanging off
//! the internet or off each other, hosts on the internet or on a router's
//! LAN, and the link each of them uses to reach its network.
//!
//! Build it with [`Topology::new`], then `router*` and `*host*` calls. Each call
//! assigns addresses at once and deterministically, so a test can ask
//! [`Topology::ip`] for a peer's address before anything runs.
//!
//! Address plan (documentation and private ranges only):
//! public hosts `192.0.2.10+` (second address `198.51.100.10+`), router WAN
//! addresses on the internet `203.0.113.1+`, NAT LANs `192.168.N.0/24`
//! (`100.64.N.0/24` for carrier-grade NATs), open-router LANs
//! `203.0.113.64/27`, `.96/27`, ...

use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::link::LinkConfig;
use crate::nat::{NatConfig, NatPreset};

/// Refers to a router of a [`Topology`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouterId(pub(crate) usize);

/// Refers to a host of a [`Topology`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HostId(pub(crate) usize);

/// An IPv4 subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// Network address.
    pub addr: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
}

impl Subnet {
    /// The subnet mask as an integer.
    pub fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr) & self.mask()
    }

    /// The `n`th address of the subnet.
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from((u32::from(self.addr) & self.mask()) + n)
    }
}

/// A router.
#[derive(Debug, Clone)]
pub struct RouterSpec {
    /// Unique name.
    pub name: String,
    /// NAT behaviour; `None` routes the LAN as it is.
    pub nat: Option<NatConfig>,
    /// The router this one hangs off; `None` is the internet.
    pub upstream: Option<RouterId>,
    /// Address on the upstream network.
    pub wan_ip: Ipv4Addr,
    /// The LAN; the router itself is its first address.
    pub lan: Subnet,
    /// The link to the upstream network.
    pub link: LinkConfig,
    /// Set for a real Linux router (kernel nftables NAT, optional miniupnpd)
    /// instead of the simulated one; `nat` is then ignored.
    pub linux: Option<LinuxRouter>,
    /// Whether the simulated NAT offers UPnP IGD (SSDP + SOAP) on its LAN.
    pub upnp: bool,
    next_host: u32,
}

/// A router that is a namespace running Linux's own forwarding and
/// nftables masquerade, and optionally the real `miniupnpd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinuxRouter {
    /// Run `miniupnpd` (UPnP IGD and NAT-PMP) on the LAN side.
    pub upnp: bool,
}

impl RouterSpec {
    /// The router's own address on its LAN.
    pub fn lan_ip(&self) -> Ipv4Addr {
        self.lan.nth(1)
    }
}

/// A host.
#[derive(Debug, Clone)]
pub struct HostSpec {
    /// Unique name.
    pub name: String,
    /// The router whose LAN it is on; `None` is the internet.
    pub network: Option<RouterId>,
    /// Its addresses, the first is primary; each with its prefix length.
    pub addrs: Vec<(Ipv4Addr, u8)>,
    /// The link to its network.
    pub link: LinkConfig,
}

/// A whole virtual internet, ready for [`crate::Network::start`] or
/// [`crate::run`].
#[derive(Debug, Clone)]
pub struct Topology {
    /// Seed of every random decision (loss, jitter, NAT ports).
    pub seed: u64,
    /// If set, one pcap file per link is written here.
    pub pcap_dir: Option<PathBuf>,
    /// If set, every link decision is appended here as a JSON line.
    pub fate_log: Option<PathBuf>,
    pub(crate) routers: Vec<RouterSpec>,
    pub(crate) hosts: Vec<HostSpec>,
    public_hosts: u32,
    internet_routers: u32,
    open_lans: u32,
    nat_lans: u32,
}

impl Default for Topology {
    fn default() -> Self {
        Self::new()
    }
}

/// Address the internet core uses for the ICMP errors it originates.
pub(crate) const CORE_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 254);

impl Topology {
    /// An empty internet with seed 0.
    pub fn new() -> Self {
        Topology {
            seed: 0,
            pcap_dir: None,
            fate_log: None,
            routers: Vec::new(),
            hosts: Vec::new(),
            public_hosts: 0,
            internet_routers: 0,
            open_lans: 0,
            nat_lans: 0,
        }
    }

    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Asks for a pcap file per link in `dir`.
    pub fn pcap(mut self, dir: impl Into<PathBuf>) -> Self {
        self.pcap_dir = Some(dir.into());
        self
    }

    /// Asks for a log of every packet fate (JSON lines: link, direction,
    /// flow, index in flow, fate, delay) in `path`.
    pub fn fate_log(mut self, path: impl Into<PathBuf>) -> Self {
        self.fate_log = Some(path.into());
        self
    }

    /// Adds a router with a named preset, attached to the internet.
    pub fn router(&mut self, name: &str, preset: NatPreset) -> RouterId {
        self.router_with(name, preset.config(), None, preset == NatPreset::Cgnat)
    }

    /// Adds a router with a named preset behind another router.
    pub fn router_behind(&mut self, name: &str, preset: NatPreset, upstream: RouterId) -> RouterId {
        self.router_with(
            name,
            preset.config(),
            Some(upstream),
            preset == NatPreset::Cgnat,
        )
    }

    /// Adds a router with explicit NAT behaviour (`None`: no NAT).
    /// `carrier` picks a `100.64.0.0/10` LAN instead of `192.168.0.0/16`.
    pub fn router_with(
        &mut self,
        name: &str,
        nat: Option<NatConfig>,
        upstream: Option<RouterId>,
        carrier: bool,
    ) -> RouterId {
        let wan_ip = match upstream {
            None => {
                self.internet_routers += 1;
                Ipv4Addr::new(203, 0, 113, self.internet_routers.min(63) as u8)
            }
            Some(up) => self.next_lan_addr(up),
        };
        let lan = if nat.is_none() {
            self.open_lans += 1;
            Subnet {
                addr: Ipv4Addr::new(203, 0, 113, (32 + 32 * self.open_lans.min(6)) as u8),
                prefix: 27,
            }
        } else {
            self.nat_lans += 1;
            let n = self.nat_lans.min(254) as u8;
            if carrier {
                Subnet {
                    addr: Ipv4Addr::new(100, 64, n, 0),
                    prefix: 24,
                }
            } else {
                Subnet {
                    addr: Ipv4Addr::new(192, 168, n, 0),
                    prefix: 24,
                }
            }
        };
        self.routers.push(RouterSpec {
            name: name.to_owned(),
            nat,
            upstream,
            wan_ip,
            lan,
            link: LinkConfig::default(),
            linux: None,
            upnp: false,
            next_host: 1,
        });
        RouterId(self.routers.len() - 1)
    }

    /// Adds a real Linux router (nftables masquerade, and `miniupnpd` if
    /// `upnp`) on the internet or behind `upstream`. Its LAN is
    /// `192.168.N.0/24`, the router itself `.1`.
    pub fn linux_router(&mut self, name: &str, upstream: Option<RouterId>, upnp: bool) -> RouterId {
        let id = self.router_with(
            name,
            Some(NatConfig::port_restricted_cone()),
            upstream,
            false,
        );
        let r = &mut self.routers[id.0];
        r.nat = None;
        r.linux = Some(LinuxRouter { upnp });
        id
    }

    fn next_lan_addr(&mut self, r: RouterId) -> Ipv4Addr {
        let spec = &mut self.routers[r.0];
        spec.next_host += 1;
        spec.lan.nth(spec.next_host)
    }

    /// Adds a host on the internet with one public address.
    pub fn public_host(&mut self, name: &str) -> HostId {
        self.public_host_with_addrs(name, 1)
    }

    /// Adds a host on the internet with `n` (1 to 2) public addresses, as a
    /// probe server needs.
    pub fn public_host_with_addrs(&mut self, name: &str, n: usize) -> HostId {
        self.public_hosts += 1;
        let k = (10 + self.public_hosts).min(250) as u8;
        let mut addrs = vec![(Ipv4Addr::new(192, 0, 2, k), 24)];
        if n > 1 {
            addrs.push((Ipv4Addr::new(198, 51, 100, k), 24));
        }
        self.push_host(name, None, addrs)
    }

    /// Adds a host on a router's LAN.
    pub fn host(&mut self, name: &str, router: RouterId) -> HostId {
        let ip = self.next_lan_addr(router);
        let prefix = self.routers[router.0].lan.prefix;
        self.push_host(name, Some(router), vec![(ip, prefix)])
    }

    fn push_host(
        &mut self,
        name: &str,
        network: Option<RouterId>,
        addrs: Vec<(Ipv4Addr, u8)>,
    ) -> HostId {
        self.hosts.push(HostSpec {
            name: name.to_owned(),
            network,
            addrs,
            link: LinkConfig::default(),
        });
        HostId(self.hosts.len() - 1)
    }

    /// Sets the link of a host.
    pub fn set_link(&mut self, host: HostId, link: LinkConfig) {
        self.hosts[host.0].link = link;
    }

    /// Makes a simulated NAT router offer UPnP IGD on its LAN address
    /// (port 5000, found by SSDP), so LAN hosts can map ports.
    pub fn set_upnp(&mut self, router: RouterId, on: bool) {
        self.routers[router.0].upnp = on;
    }

    /// Adds a hidden service host at the router's own LAN address.
    pub(crate) fn service_host(&mut self, name: &str, router: RouterId) -> HostId {
        let r = &self.routers[router.0];
        let addr = (r.lan_ip(), r.lan.prefix);
        self.push_host(name, Some(router), vec![addr])
    }

    /// Sets the link of a router to its upstream network.
    pub fn set_router_link(&mut self, router: RouterId, link: LinkConfig) {
        self.routers[router.0].link = link;
    }

    /// The primary address of a host.
    pub fn ip(&self, host: HostId) -> Ipv4Addr {
        self.hosts[host.0].addrs[0].0
    }

    /// All addresses of a host.
    pub fn addrs(&self, host: HostId) -> Vec<Ipv4Addr> {
        self.hosts[host.0].addrs.iter().map(|a| a.0).collect()
    }

    /// A router's address on its upstream network.
    pub fn wan_ip(&self, router: RouterId) -> Ipv4Addr {
        self.routers[router.0].wan_ip
    }

    /// A router's spec.
    pub fn router_spec(&self, router: RouterId) -> &RouterSpec {
        &self.routers[router.0]
    }

    /// A host's spec.
    pub fn host_spec(&self, host: HostId) -> &HostSpec {
        &self.hosts[host.0]
    }

    /// Finds a host by name.
    pub fn host_id(&self, name: &str) -> Option<HostId> {
        self.hosts.iter().position(|h| h.name == name).map(HostId)
    }

    /// Finds a router by name.
    pub fn router_id(&self, name: &str) -> Option<RouterId> {
        self.routers
            .iter()
            .position(|r| r.name == name)
            .map(RouterId)
    }

    /// Every host, in the order added.
    pub fn hosts(&self) -> impl Iterator<Item = HostId> + '_ {
        (0..self.hosts.len()).map(HostId)
    }

    /// Every router, in the order added.
    pub fn routers(&self) -> impl Iterator<Item = RouterId> + '_ {
        (0..self.routers.len()).map(RouterId)
    }

    /// Checks names are unique and non-empty.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let mut names = std::collections::HashSet::new();
        for n in self
            .routers
            .iter()
            .map(|r| &r.name)
            .chain(self.hosts.iter().map(|h| &h.name))
        {
            if n.is_empty()
                || n.len() > 64
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(format!(
                    "bad name {n:?}: use 1 to 64 letters, digits, '-', '_' or '.'"
                ));
            }
            if !names.insert(n.clone()) {
                return Err(format!("name {n:?} is used twice"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_assigned_deterministically() {
        let mut t = Topology::new();
        let carrier = t.router("carrier", NatPreset::Cgnat);
        let home = t.router_behind("home", NatPreset::PortRestrictedCone, carrier);
        let a = t.host("a", home);
        let s = t.public_host_with_addrs("s", 2);
        assert_eq!(t.wan_ip(carrier), Ipv4Addr::new(203, 0, 113, 1));
        assert_eq!(t.wan_ip(home), Ipv4Addr::new(100, 64, 1, 2));
        assert_eq!(t.ip(a), Ipv4Addr::new(192, 168, 2, 2));
        assert_eq!(
            t.addrs(s),
            [
                Ipv4Addr::new(192, 0, 2, 11),
                Ipv4Addr::new(198, 51, 100, 11)
            ]
        );
        assert!(t.validate().is_ok());
        t.public_host("s");
        assert!(t.validate().is_err());
    }
}
