//! Whether a node offers itself as a DHT server: [`Mode`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Mapping, NatReport};

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
        for mode in [Mode::Auto, Mode::Server, Mode::Client] {
            assert_eq!(mode.to_string().parse::<Mode>(), Ok(mode));
        }
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
}
