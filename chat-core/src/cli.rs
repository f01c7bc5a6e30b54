//! The command-line options every client takes, so the terminal and the
//! desktop client read them alike: which profile, which addresses to
//! listen on, which peers to bootstrap from, UPnP and LAN announcements
//! off for one run, and the node's part in the DHT.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::NodeConfig;

/// Profile and network options, for a client's clap parser
/// (`#[command(flatten)]`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NodeArgs {
    /// Profile directory (default: $CRUST_CHAT_PROFILE, else the platform's
    /// data directory). Created on first use.
    #[arg(long, value_name = "DIR")]
    pub profile: Option<PathBuf>,
    /// Listen on this TCP address instead of the profile's (repeatable),
    /// e.g. 127.0.0.1:0 for loopback only.
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Vec<SocketAddr>,
    /// Bootstrap from this peer, ID@IP:PORT or IP:PORT, besides the
    /// profile's (repeatable).
    #[arg(long, value_name = "PEER")]
    pub bootstrap: Vec<crust::Contact>,
    /// Do not ask the router for a port mapping this time.
    #[arg(long)]
    pub no_upnp: bool,
    /// Do not announce this computer on the local network or look for
    /// friends there this time.
    #[arg(long)]
    pub no_lan: bool,
    /// Serve the DHT that finds friends who moved (`server`: an always-on
    /// node on a public host), only use it (`client`), or decide from the
    /// NAT (`auto`) [default: the profile's `dht_mode`, which is `auto`].
    #[arg(long, value_name = "MODE")]
    pub dht_mode: Option<crate::DhtMode>,
}

impl NodeArgs {
    /// The node's settings with these options applied to the defaults.
    pub fn node_config(&self) -> NodeConfig {
        let mut config = NodeConfig::default();
        config.crust.listen = self.listen.clone();
        // Off here wins; on here still needs the profile's setting
        // (the node ANDs the two).
        config.crust.upnp = !self.no_upnp;
        config.crust.bootstrap_contacts = self.bootstrap.clone();
        if self.no_lan {
            config.crust.lan_discovery = None;
        }
        if let Some(mode) = self.dht_mode {
            config.dht.mode = mode;
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        node: NodeArgs,
    }

    #[test]
    fn the_options_reach_the_node_config() {
        let id = crust::SecretId::generate().peer_id();
        let cli = Cli::try_parse_from([
            "client".to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--bootstrap".into(),
            format!("{id}@192.0.2.1:5483"),
            "--bootstrap".into(),
            "198.51.100.2:5483".into(),
            "--no-upnp".into(),
            "--no-lan".into(),
            "--dht-mode".into(),
            "client".into(),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let config = cli.node.node_config();
        assert_eq!(
            config.crust.listen,
            ["127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"))]
        );
        assert_eq!(config.crust.bootstrap_contacts.len(), 2);
        assert_eq!(config.crust.bootstrap_contacts[0].id, Some(id));
        assert!(!config.crust.upnp);
        assert!(config.crust.lan_discovery.is_none());
        assert_eq!(config.dht.mode, crate::DhtMode::Client);
        let plain = Cli::try_parse_from(["client"]).unwrap_or_else(|e| panic!("{e}"));
        assert!(plain.node.node_config().crust.lan_discovery.is_some());
        assert_eq!(plain.node.node_config().dht.mode, crate::DhtMode::Auto);
        assert!(cli.node.profile.is_none());
    }

    #[test]
    fn a_bad_bootstrap_peer_is_a_clear_error() {
        let err = match Cli::try_parse_from(["client", "--bootstrap", "nowhere"]) {
            Ok(_) => panic!("a bad peer was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("--bootstrap"), "{err}");
        assert!(err.contains("nowhere"), "{err}");
        let err = match Cli::try_parse_from(["client", "--dht-mode", "always"]) {
            Ok(_) => panic!("a bad DHT mode was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("--dht-mode"), "{err}");
        assert!(err.contains("expected auto, server or client"), "{err}");
    }
}
