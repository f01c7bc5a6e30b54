//! What a probe found ([`Findings`], no identifying details), where
//! ([`Addresses`], identifying), and what would be sent to a collector
//! ([`Submission`]): addresses only if the tester opts in, otherwise the
//! external address's network prefix alone.

use std::fmt::{self, Write as _};
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::wire::TcpOutcome;

/// The version of the [`Submission`] format.
pub const FORMAT_VERSION: u32 = 1;

/// Whether UDP gets through at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UdpReach {
    /// A probe server answered.
    Reachable,
    /// No server answered any UDP request.
    Blocked,
}

/// On what a NAT's mapping or filtering depends (RFC 4787).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Behaviour {
    /// The same for every remote endpoint.
    EndpointIndependent,
    /// Depends on the remote address.
    AddressDependent,
    /// Depends on the remote address and port.
    AddressAndPortDependent,
}

impl Behaviour {
    /// `eim`/`adm`/`apdm` or `eif`/`adf`/`apdf`.
    fn short(self, filtering: bool) -> &'static str {
        match (self, filtering) {
            (Behaviour::EndpointIndependent, false) => "eim",
            (Behaviour::AddressDependent, false) => "adm",
            (Behaviour::AddressAndPortDependent, false) => "apdm",
            (Behaviour::EndpointIndependent, true) => "eif",
            (Behaviour::AddressDependent, true) => "adf",
            (Behaviour::AddressAndPortDependent, true) => "apdf",
        }
    }
}

/// How the NAT picks external ports for new mappings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ports {
    /// The external port is the local one.
    Preserved,
    /// Each new mapping takes the previous port plus `delta`.
    Sequential {
        /// The step (negative: downwards).
        delta: i32,
    },
    /// No pattern.
    Random,
}

/// What the router did with an unsolicited TCP SYN to its external address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SynAnswer {
    /// Silently dropped.
    Dropped,
    /// Answered with a TCP RST.
    Rst,
    /// Answered with an ICMP error.
    Icmp,
    /// Let through to something that accepted it.
    Accepted,
}

impl From<TcpOutcome> for SynAnswer {
    fn from(o: TcpOutcome) -> Self {
        match o {
            TcpOutcome::Connected => SynAnswer::Accepted,
            TcpOutcome::Refused => SynAnswer::Rst,
            TcpOutcome::Unreachable => SynAnswer::Icmp,
            TcpOutcome::TimedOut => SynAnswer::Dropped,
        }
    }
}

/// TCP findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpFindings {
    /// An outgoing TCP connection to the server worked.
    pub outgoing: Option<bool>,
    /// Whether the external TCP port was the local one.
    pub port_preserved: Option<bool>,
    /// What an unsolicited SYN got.
    pub unsolicited_syn: Option<SynAnswer>,
    /// Whether a simultaneous open with the server worked.
    pub simultaneous_open: Option<bool>,
}

/// UPnP findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpnpFindings {
    /// Whether a UPnP IGD answered (`None`: not tested).
    pub present: Option<bool>,
    /// Whether it granted a UDP mapping.
    pub mapped: Option<bool>,
    /// Whether the server reached us through that mapping.
    pub reachable: Option<bool>,
}

/// The binding-lifetime test's bracket: mappings idle for `at_least_secs`
/// survived; idle for `below_secs` they were gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lifetime {
    /// The longest idle time a mapping survived (0: none tested survived).
    pub at_least_secs: u32,
    /// The shortest idle time a mapping did not survive (`None`: all
    /// survived).
    pub below_secs: Option<u32>,
}

/// A connection technique.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Technique {
    /// Others dial us directly (no NAT, or a working UPnP mapping).
    DirectInbound,
    /// We dial out directly (TCP to a public peer).
    DirectOutbound,
    /// UDP hole punching through a rendezvous.
    UdpHolePunch,
    /// TCP simultaneous open.
    TcpSimultaneousOpen,
    /// A UPnP port mapping.
    Upnp,
    /// Relaying through a third peer: always possible.
    Relay,
}

impl Technique {
    /// The snake_case name used in JSON and the summary.
    pub fn name(self) -> &'static str {
        match self {
            Technique::DirectInbound => "direct_inbound",
            Technique::DirectOutbound => "direct_outbound",
            Technique::UdpHolePunch => "udp_hole_punch",
            Technique::TcpSimultaneousOpen => "tcp_simultaneous_open",
            Technique::Upnp => "upnp",
            Technique::Relay => "relay",
        }
    }
}

/// The prediction for one technique.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Expected to work with any peer.
    Works,
    /// Works when the peer's NAT maps endpoint-independently.
    WithEasyPeer,
    /// Needs port prediction (a sequential endpoint-dependent NAT).
    NeedsPrediction,
    /// Not expected to work.
    Fails,
    /// Not enough evidence.
    Unknown,
}

/// One technique's prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prediction {
    /// The technique.
    pub technique: Technique,
    /// Whether it should work.
    pub verdict: Verdict,
}

/// One observed connection attempt: a technique tried between us and a
/// peer whose NAT class was `peer_nat` (see [`Findings::nat_class`]). The
/// probe fills in its own attempts against the server (`peer_nat` "none");
/// an application may add those it saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    /// The peer's NAT class.
    pub peer_nat: String,
    /// The technique tried.
    pub technique: Technique,
    /// Whether it connected.
    pub success: bool,
}

/// Everything the probe classified: no addresses, nothing identifying.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Findings {
    /// UDP at all.
    pub udp: UdpReach,
    /// Whether the external address differs from every local one.
    pub behind_nat: Option<bool>,
    /// Mapping behaviour (`None`: not enough answers).
    pub mapping: Option<Behaviour>,
    /// Filtering behaviour.
    pub filtering: Option<Behaviour>,
    /// Port allocation.
    pub ports: Option<Ports>,
    /// Whether a datagram to our own external address came back in.
    pub hairpinning: Option<bool>,
    /// The optional binding-lifetime test.
    pub lifetime: Option<Lifetime>,
    /// TCP.
    pub tcp: TcpFindings,
    /// UPnP.
    pub upnp: UpnpFindings,
    /// Carrier-grade NAT in front of us (`None`: cannot tell).
    pub cgnat: Option<bool>,
    /// Whether a probe server answered over IPv6 (`None`: not tested).
    pub ipv6: Option<bool>,
    /// Which techniques should work.
    pub predicted: Vec<Prediction>,
}

impl Findings {
    /// A short label for the NAT: `blocked`, `none`, `unknown` or
    /// `<mapping>-<filtering>` such as `eim-apdf`: the key of the
    /// summary's per-pair table.
    pub fn nat_class(&self) -> String {
        if self.udp == UdpReach::Blocked {
            return "udp_blocked".into();
        }
        if self.behind_nat == Some(false) {
            return "none".into();
        }
        match (self.mapping, self.filtering) {
            (Some(m), Some(f)) => format!("{}-{}", m.short(false), f.short(true)),
            _ => "unknown".into(),
        }
    }
}

/// Identifying details, sent only if the tester opts in.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Addresses {
    /// Our interface addresses.
    pub local: Vec<IpAddr>,
    /// Our external UDP address as the server saw it.
    pub external_udp: Option<SocketAddr>,
    /// Our external TCP address as the server saw it.
    pub external_tcp: Option<SocketAddr>,
    /// The UPnP gateway's external address.
    pub upnp_external: Option<IpAddr>,
}

/// A probe's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeReport {
    /// What was found.
    pub findings: Findings,
    /// Where (identifying).
    pub addresses: Addresses,
    /// Attempts made against the server.
    pub outcomes: Vec<Outcome>,
    /// How long the probe took.
    pub duration_ms: u64,
}

/// Exactly what goes to a collector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// The probing software's version.
    pub client: String,
    /// What was found.
    pub findings: Findings,
    /// Connection attempts and their outcomes.
    pub outcomes: Vec<Outcome>,
    /// The external address's network (`/24` for IPv4, `/48` for IPv6),
    /// when the full addresses are not sent.
    pub network: Option<String>,
    /// The full addresses, only if the tester opted in.
    pub addresses: Option<Addresses>,
    /// How long the probe took.
    pub duration_ms: u64,
}

/// The network an address is in, with the host part zeroed.
fn network_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
    }
}

impl ProbeReport {
    /// What would be sent: the full addresses only with `share_addresses`.
    pub fn submission(&self, share_addresses: bool) -> Submission {
        Submission {
            version: FORMAT_VERSION,
            client: crate::VERSION.to_owned(),
            findings: self.findings.clone(),
            outcomes: self.outcomes.clone(),
            network: if share_addresses {
                None
            } else {
                self.addresses.external_udp.map(|a| network_of(a.ip()))
            },
            addresses: share_addresses.then(|| self.addresses.clone()),
            duration_ms: self.duration_ms,
        }
    }

    /// The exact bytes [`submit`](super::submit) would send, pretty
    /// printed: show this to the tester before asking.
    pub fn render_submission(&self, share_addresses: bool) -> String {
        serde_json::to_string_pretty(&self.submission(share_addresses)).unwrap_or_default()
    }

    /// The readable summary; `show_addresses` prints them in full.
    pub fn summary(&self, show_addresses: bool) -> String {
        let f = &self.findings;
        let mut s = String::new();
        let opt = |o: Option<String>| o.unwrap_or_else(|| "not determined".into());
        let yes = |b: Option<bool>| opt(b.map(|b| if b { "yes" } else { "no" }.to_owned()));
        let _ = writeln!(
            s,
            "UDP:                 {}",
            match f.udp {
                UdpReach::Reachable => "works",
                UdpReach::Blocked => "blocked",
            }
        );
        let _ = writeln!(s, "behind a NAT:        {}", yes(f.behind_nat));
        let _ = writeln!(s, "NAT class:           {}", f.nat_class());
        let _ = writeln!(s, "mapping:             {}", opt(f.mapping.map(describe)));
        let _ = writeln!(s, "filtering:           {}", opt(f.filtering.map(describe)));
        let _ = writeln!(
            s,
            "port allocation:     {}",
            opt(f.ports.map(|p| match p {
                Ports::Preserved => "preserved".to_owned(),
                Ports::Sequential { delta } => format!("sequential (delta {delta})"),
                Ports::Random => "random".to_owned(),
            }))
        );
        let _ = writeln!(s, "hairpinning:         {}", yes(f.hairpinning));
        if let Some(l) = f.lifetime {
            let _ = writeln!(
                s,
                "UDP binding lifetime: at least {} s{}",
                l.at_least_secs,
                l.below_secs
                    .map(|b| format!(", under {b} s"))
                    .unwrap_or_default()
            );
        }
        let _ = writeln!(s, "TCP outgoing:        {}", yes(f.tcp.outgoing));
        let _ = writeln!(s, "TCP port preserved:  {}", yes(f.tcp.port_preserved));
        let _ = writeln!(
            s,
            "unsolicited TCP SYN: {}",
            opt(f
                .tcp
                .unsolicited_syn
                .map(|a| format!("{a:?}").to_lowercase()))
        );
        let _ = writeln!(s, "TCP simultaneous open: {}", yes(f.tcp.simultaneous_open));
        let _ = writeln!(s, "UPnP gateway:        {}", yes(f.upnp.present));
        if f.upnp.present == Some(true) {
            let _ = writeln!(s, "UPnP mapping granted: {}", yes(f.upnp.mapped));
            let _ = writeln!(
                s,
                "UPnP mapping reachable from outside: {}",
                yes(f.upnp.reachable)
            );
        }
        let _ = writeln!(s, "carrier-grade NAT:   {}", yes(f.cgnat));
        let _ = writeln!(s, "IPv6:                {}", yes(f.ipv6));
        let _ = writeln!(s, "techniques:");
        for p in &f.predicted {
            let _ = writeln!(
                s,
                "  {:<22} {}",
                p.technique.name(),
                match p.verdict {
                    Verdict::Works => "should work",
                    Verdict::WithEasyPeer => "only with a peer behind an endpoint-independent NAT",
                    Verdict::NeedsPrediction => "needs port prediction",
                    Verdict::Fails => "will not work",
                    Verdict::Unknown => "unknown",
                }
            );
        }
        let a = &self.addresses;
        let masked = |x: Option<SocketAddr>| match x {
            None => "none".to_owned(),
            Some(x) if show_addresses => x.to_string(),
            Some(x) => format!("{} (masked)", network_of(x.ip())),
        };
        let _ = writeln!(s, "external UDP address: {}", masked(a.external_udp));
        let _ = writeln!(s, "external TCP address: {}", masked(a.external_tcp));
        if show_addresses {
            let local: Vec<String> = a.local.iter().map(IpAddr::to_string).collect();
            let _ = writeln!(s, "local addresses:     {}", local.join(", "));
        }
        let _ = write!(s, "probe took {:.1} s", self.duration_ms as f64 / 1000.0);
        s
    }
}

fn describe(b: Behaviour) -> String {
    match b {
        Behaviour::EndpointIndependent => "endpoint-independent",
        Behaviour::AddressDependent => "address-dependent",
        Behaviour::AddressAndPortDependent => "address-and-port-dependent",
    }
    .to_owned()
}

impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary(false))
    }
}
