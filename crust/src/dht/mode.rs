//! Whether a node offers itself as a DHT server: [`Mode`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Endpoint, Mapping, NatReport};

/// Whether a node offers itself as a DHT server: lists the endpoints it
/// takes connections on in every [`Envelope`](super::Envelope), so others
/// put it in their routing tables and hand it out. A client lists none: it
/// looks records up and publishes its own, and is answered, but nobody
/// hands out an address that nobody can dial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Mode {
    /// A server when crust finds no NAT in front of it, or a UPnP mapping;
    /// otherwise a client. Decided again on every message, so a node
    /// becomes a server once the NAT report says it can.
    #[default]
    Auto,
    /// Always a server (a public host, or tests on one machine).
    Server,
    /// Never a server.
    Client,
}

impl Mode {
    /// Every mode, in the order a settings screen offers them.
    pub const ALL: [Mode; 3] = [Mode::Auto, Mode::Server, Mode::Client];

    /// What the mode means, in a few words for a settings screen.
    pub fn describe(self) -> &'static str {
        match self {
            Mode::Auto => "serve others when reachable (no NAT, or UPnP)",
            Mode::Server => "always serve others (a public host)",
            Mode::Client => "never serve others (only look up and publish)",
        }
    }

    /// The mode after this one in [`Mode::ALL`], wrapping around.
    pub fn next(self) -> Mode {
        let i = Mode::ALL.iter().position(|m| *m == self).unwrap_or(0);
        Mode::ALL[(i + 1) % Mode::ALL.len()]
    }

    /// Whether a node in this mode serves, given what crust knows about
    /// the NAT in front of it.
    pub fn serves(self, report: &NatReport) -> bool {
        match self {
            Mode::Server => true,
            Mode::Client => false,
            Mode::Auto => report.mapping == Mapping::NoNat || report.upnp.is_some(),
        }
    }
}

/// The endpoints a node can be reached at: `own` (its listeners, or hints),
/// then what a UPnP mapping or an endpoint-independent NAT maps to it,
/// without repeats, at most `max`. What a server lists in its envelopes
/// and a node names in its record.
pub fn reachable_endpoints(own: Vec<Endpoint>, report: &NatReport, max: usize) -> Vec<Endpoint> {
    let mut endpoints = own;
    let mut add = |e: Endpoint| {
        if !endpoints.contains(&e) {
            endpoints.push(e);
        }
    };
    if let Some(upnp) = &report.upnp {
        if let Some(tcp) = upnp.tcp {
            add(Endpoint::tcp(tcp));
        }
        if let Some(udp) = upnp.udp {
            add(Endpoint::utp(udp));
        }
    }
    if report.mapping == Mapping::EndpointIndependent
        && let Some(udp) = report.udp_external
    {
        add(Endpoint::utp(udp));
    }
    endpoints.truncate(max);
    endpoints
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Auto => "auto",
            Mode::Server => "server",
            Mode::Client => "client",
        })
    }
}

/// A DHT mode that is not `auto`, `server` or `client`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown DHT mode {0:?}: expected auto, server or client")]
pub struct ParseModeError(String);

impl FromStr for Mode {
    type Err = ParseModeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Mode::Auto),
            "server" => Ok(Mode::Server),
            "client" => Ok(Mode::Client),
            other => Err(ParseModeError(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_print_and_decide() {
        for mode in Mode::ALL {
            assert_eq!(mode.to_string().parse::<Mode>(), Ok(mode));
        }
        // `next` visits every mode once and comes back.
        let mut seen = vec![Mode::Auto];
        while seen.last().map(|m| m.next()) != Some(Mode::Auto) {
            seen.push(seen.last().unwrap().next());
            assert!(seen.len() <= Mode::ALL.len());
        }
        assert_eq!(seen, Mode::ALL);
        let err = "servre".parse::<Mode>().err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("unknown DHT mode \"servre\": expected auto, server or client")
        );
        let nat = NatReport::default();
        assert!(Mode::Server.serves(&nat));
        assert!(!Mode::Client.serves(&nat));
        assert!(!Mode::Auto.serves(&nat), "unknown NAT: a client");
        let open = NatReport {
            mapping: Mapping::NoNat,
            ..NatReport::default()
        };
        assert!(Mode::Auto.serves(&open));
        assert!(!Mode::Client.serves(&open));
    }

    #[test]
    fn reachable_endpoints_add_mappings_once_and_are_bounded() {
        let listener = Endpoint::tcp(([192, 168, 1, 5], 5483).into());
        let upnp_tcp: std::net::SocketAddr = ([198, 51, 100, 7], 40_000).into();
        let upnp_udp: std::net::SocketAddr = ([198, 51, 100, 7], 40_001).into();
        let mut report = NatReport {
            upnp: Some(crate::UpnpMapping {
                external_ip: upnp_tcp.ip(),
                udp: Some(upnp_udp),
                tcp: Some(upnp_tcp),
            }),
            ..NatReport::default()
        };
        // An unknown NAT: its observed UDP address is no endpoint.
        report.udp_external = Some(([198, 51, 100, 7], 50_000).into());
        let all = reachable_endpoints(vec![listener], &report, 8);
        assert_eq!(
            all,
            [listener, Endpoint::tcp(upnp_tcp), Endpoint::utp(upnp_udp)]
        );
        // Endpoint-independent: the same address UPnP gave is not repeated.
        report.mapping = Mapping::EndpointIndependent;
        report.udp_external = Some(upnp_udp);
        assert_eq!(reachable_endpoints(vec![listener], &report, 8), all);
        report.udp_external = Some(([198, 51, 100, 7], 50_000).into());
        assert_eq!(reachable_endpoints(vec![listener], &report, 8).len(), 4);
        assert_eq!(reachable_endpoints(vec![listener], &report, 2), all[..2]);
    }
}
