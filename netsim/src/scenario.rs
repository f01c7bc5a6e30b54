//! Scenario files: a TOML description of a virtual internet and the
//! commands its hosts run, for `netsim run` and `netsim up`.
//!
//! ```toml
//! seed = 7
//! timeout_secs = 30          # `run` kills hosts still running after this
//! pcap_dir = "captures"      # optional: one pcap per link
//! fate_log = "fates.jsonl"   # optional: every link decision, one JSON line each
//!
//! [[router]]
//! name = "home"
//! nat = "port_restricted_cone"   # a preset, or a table of NatConfig fields
//! upstream = "carrier"           # optional: another router; default the internet
//! link = { latency = 5.0 }       # both directions; `up` / `down` override
//!
//! [[router]]
//! name = "linux-gw"
//! linux = true                   # real kernel NAT (nftables) in a namespace
//! upnp = true                    # and the real miniupnpd on its LAN
//!
//! [[host]]
//! name = "alice"
//! network = "home"               # optional; default the internet
//! addresses = 1                  # public hosts: 1 or 2 addresses
//! link = { latency = 20.0, jitter = 5.0, loss = 0.01 }
//! down = { rate_bps = 10_000_000 }
//! command = ["ping", "-c", "3", "{server}"]
//! ```
//!
//! Parse with [`Scenario::from_toml`], then [`Scenario::topology`]. In a
//! command, `{name}` becomes the primary address of host `name` (or the
//! external address of router `name`); every command also gets
//! `NETSIM_IP_<NAME>` variables for all hosts and routers.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::link::{Impairment, LinkConfig};
use crate::nat::{NatConfig, NatPreset};
use crate::topology::Topology;

/// A NAT given by preset name or in full.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum NatSpec {
    /// A named preset.
    Preset(NatPreset),
    /// Every field spelled out.
    Config(NatConfig),
}

/// A router in a scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterEntry {
    /// Unique name.
    pub name: String,
    /// NAT behaviour of a simulated router (required unless `linux`).
    pub nat: Option<NatSpec>,
    /// A real Linux router (kernel nftables masquerade) instead.
    #[serde(default)]
    pub linux: bool,
    /// Offer UPnP IGD: the real miniupnpd with `linux`, else netsim's own.
    #[serde(default)]
    pub upnp: bool,
    /// The router it hangs off, by name; default the internet.
    pub upstream: Option<String>,
    /// Impairment both ways.
    pub link: Option<Impairment>,
    /// Impairment towards the upstream network (overrides `link`).
    pub up: Option<Impairment>,
    /// Impairment from the upstream network (overrides `link`).
    pub down: Option<Impairment>,
}

/// A host in a scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostEntry {
    /// Unique name.
    pub name: String,
    /// The router whose LAN it is on; default the internet.
    pub network: Option<String>,
    /// Number of public addresses (1 or 2); internet hosts only.
    #[serde(default = "one")]
    pub addresses: usize,
    /// Impairment both ways.
    pub link: Option<Impairment>,
    /// Impairment towards the network (overrides `link`).
    pub up: Option<Impairment>,
    /// Impairment from the network (overrides `link`).
    pub down: Option<Impairment>,
    /// Program and arguments to run; none leaves the host idle.
    #[serde(default)]
    pub command: Vec<String>,
    /// Start the command this many milliseconds after the network is up.
    #[serde(default)]
    pub delay_ms: u64,
}

fn one() -> usize {
    1
}

fn default_timeout() -> u64 {
    60
}

/// A host's program and arguments, and its environment.
pub type HostCommand = (Vec<String>, Vec<(String, String)>);

/// A parsed scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Seed of every random decision.
    #[serde(default)]
    pub seed: u64,
    /// Seconds `run` waits for commands before killing them.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Where to write a pcap per link.
    pub pcap_dir: Option<PathBuf>,
    /// Where to write the log of every packet fate (JSON lines).
    pub fate_log: Option<PathBuf>,
    /// Routers, upstreams first.
    #[serde(default, rename = "router")]
    pub routers: Vec<RouterEntry>,
    /// Hosts.
    #[serde(default, rename = "host")]
    pub hosts: Vec<HostEntry>,
}

/// A scenario file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// Not valid TOML or not the expected shape.
    #[error("cannot parse the scenario: {0}")]
    Parse(#[from] toml::de::Error),
    /// Refers to something that does not exist.
    #[error("{0}")]
    Invalid(String),
}

fn link(
    both: &Option<Impairment>,
    up: &Option<Impairment>,
    down: &Option<Impairment>,
) -> LinkConfig {
    let base = both.clone().unwrap_or_default();
    LinkConfig {
        up: up.clone().unwrap_or_else(|| base.clone()),
        down: down.clone().unwrap_or(base),
    }
}

impl Scenario {
    /// Parses a scenario from TOML text.
    pub fn from_toml(text: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario = toml::from_str(text)?;
        s.topology()?;
        Ok(s)
    }

    /// Builds the topology. Host `i` of the scenario is host `i` of the topology.
    pub fn topology(&self) -> Result<Topology, ScenarioError> {
        let mut t = Topology::new().seed(self.seed);
        t.pcap_dir = self.pcap_dir.clone();
        t.fate_log = self.fate_log.clone();
        for r in &self.routers {
            let upstream = match &r.upstream {
                None => None,
                Some(u) => Some(t.router_id(u).ok_or_else(|| {
                    ScenarioError::Invalid(format!(
                        "router {}: upstream {u:?} is not a router defined above it",
                        r.name
                    ))
                })?),
            };
            let id = match (&r.nat, r.linux) {
                (None, true) => t.linux_router(&r.name, upstream, r.upnp),
                (Some(nat), false) => {
                    let (cfg, carrier) = match nat {
                        NatSpec::Preset(p) => (p.config(), *p == NatPreset::Cgnat),
                        NatSpec::Config(c) => (Some(c.clone()), false),
                    };
                    let id = t.router_with(&r.name, cfg, upstream, carrier);
                    t.set_upnp(id, r.upnp);
                    id
                }
                _ => {
                    return Err(ScenarioError::Invalid(format!(
                        "router {}: give either `nat` or `linux = true`",
                        r.name
                    )));
                }
            };
            t.set_router_link(id, link(&r.link, &r.up, &r.down));
        }
        for h in &self.hosts {
            let id = match &h.network {
                None => {
                    if !(1..=2).contains(&h.addresses) {
                        return Err(ScenarioError::Invalid(format!(
                            "host {}: addresses must be 1 or 2",
                            h.name
                        )));
                    }
                    t.public_host_with_addrs(&h.name, h.addresses)
                }
                Some(n) => {
                    let r = t.router_id(n).ok_or_else(|| {
                        ScenarioError::Invalid(format!(
                            "host {}: network {n:?} is not a router",
                            h.name
                        ))
                    })?;
                    t.host(&h.name, r)
                }
            };
            t.set_link(id, link(&h.link, &h.up, &h.down));
        }
        t.validate().map_err(ScenarioError::Invalid)?;
        Ok(t)
    }

    /// Names and primary addresses of every host and router (WAN side).
    pub fn addresses(&self) -> Result<BTreeMap<String, std::net::Ipv4Addr>, ScenarioError> {
        let t = self.topology()?;
        let mut m = BTreeMap::new();
        for r in t.routers() {
            m.insert(t.router_spec(r).name.clone(), t.wan_ip(r));
        }
        for h in t.hosts() {
            m.insert(t.host_spec(h).name.clone(), t.ip(h));
        }
        Ok(m)
    }

    /// Host `i`'s command with `{name}` placeholders filled in, and the
    /// `NETSIM_IP_*` environment.
    pub fn command(&self, i: usize) -> Result<Option<HostCommand>, ScenarioError> {
        let h = &self.hosts[i];
        if h.command.is_empty() {
            return Ok(None);
        }
        let addrs = self.addresses()?;
        let args = h
            .command
            .iter()
            .map(|a| {
                addrs.iter().fold(a.clone(), |a, (n, ip)| {
                    a.replace(&format!("{{{n}}}"), &ip.to_string())
                })
            })
            .collect();
        let env = addrs
            .iter()
            .map(|(n, ip)| {
                (
                    format!(
                        "NETSIM_IP_{}",
                        n.to_ascii_uppercase().replace(['-', '.'], "_")
                    ),
                    ip.to_string(),
                )
            })
            .collect();
        Ok(Some((args, env)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_presets_tables_and_placeholders() {
        let s = Scenario::from_toml(
            r#"
            seed = 9
            [[router]]
            name = "carrier"
            nat = "cgnat"
            [[router]]
            name = "home"
            upstream = "carrier"
            nat = { mapping = "endpoint_independent", filtering = "address_dependent", ports = { sequential = { delta = 2 } }, udp_timeout = 30000.0 }
            link = { latency = 5.0 }
            down = { latency = 7.5, loss = 0.5 }
            [[host]]
            name = "a"
            network = "home"
            command = ["echo", "{server}", "{carrier}"]
            [[host]]
            name = "server"
            addresses = 2
            "#,
        )
        .unwrap();
        let t = s.topology().unwrap();
        let home = t.router_id("home").unwrap();
        let spec = t.router_spec(home);
        assert_eq!(spec.link.up.latency, std::time::Duration::from_millis(5));
        assert_eq!(spec.link.down.loss, 0.5);
        let nat = spec.nat.clone().unwrap();
        assert_eq!(
            nat.ports,
            crate::nat::PortAssignment::Sequential { delta: 2 }
        );
        assert_eq!(nat.udp_timeout, std::time::Duration::from_secs(30));
        let (args, env) = s.command(0).unwrap().unwrap();
        assert_eq!(args, ["echo", "192.0.2.11", "203.0.113.1"]);
        assert!(env.contains(&("NETSIM_IP_SERVER".into(), "192.0.2.11".into())));
        assert!(Scenario::from_toml("[[host]]\nname = \"x\"\nnetwork = \"nope\"").is_err());
        assert!(Scenario::from_toml("[[host]]\nname = \"x\"\nbogus = 1").is_err());
    }
}
