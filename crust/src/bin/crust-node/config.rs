//! crust-node's options: flags, a TOML config file with the same names
//! (`listen = ["0.0.0.0:5483"]`, `probe-server = ["192.0.2.1",
//! "198.51.100.1"]`), and the merge: a flag given on the command line wins,
//! then the file, then the default.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context as _, Result, bail};
use crust::Contact;
use serde::{Deserialize, Deserializer};

/// The node's roles and settings; every field optional so that flags and
/// file can be merged.
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Options {
    /// TCP address to listen on; repeat for several [default: 0.0.0.0:5483].
    #[arg(long = "listen", value_name = "ADDR")]
    #[serde(default)]
    pub(crate) listen: Vec<SocketAddr>,

    /// UDP address for uTP connections [default: 0.0.0.0:5483].
    #[arg(long, value_name = "ADDR")]
    pub(crate) utp: Option<SocketAddr>,

    /// Don't open a UDP socket; TCP only.
    #[arg(long)]
    #[serde(default)]
    pub(crate) no_utp: bool,

    /// Peer to bootstrap from, as `[ID@]IP:PORT` (TCP) or `[ID@]utp:IP:PORT`;
    /// repeat for several.
    #[arg(long = "bootstrap", value_name = "CONTACT")]
    #[serde(default, deserialize_with = "parsed")]
    pub(crate) bootstrap: Vec<Contact>,

    /// Network id; peers on other networks are refused [default: crust].
    #[arg(long)]
    pub(crate) network: Option<String>,

    /// Directory for the identity key and the bootstrap cache (default: the
    /// platform's data directory for crust-node).
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,

    /// Use a fresh identity and no files at all.
    #[arg(long)]
    #[serde(default)]
    pub(crate) ephemeral: bool,

    /// Send a keep-alive this often, in seconds [default: 5].
    #[arg(long, value_name = "SECS")]
    pub(crate) keepalive: Option<f64>,

    /// Report a peer lost after this many seconds of silence [default: 20].
    #[arg(long, value_name = "SECS")]
    pub(crate) peer_timeout: Option<f64>,

    /// Don't forward rendezvous signals between peers connected to us.
    #[arg(long)]
    #[serde(default)]
    pub(crate) no_rendezvous: bool,

    /// Don't ask a UPnP gateway for port mappings.
    #[arg(long)]
    #[serde(default)]
    pub(crate) no_upnp: bool,

    /// Most relayed circuits carried at once for peers that cannot connect
    /// directly (0: relay nothing) [default: 64].
    #[arg(long, value_name = "N")]
    pub(crate) relay_circuits: Option<usize>,

    /// Serve router probes on these two public IPs of this host
    /// (RFC 5780 needs two), as IP1,IP2.
    #[arg(long, value_name = "IP1,IP2", value_delimiter = ',')]
    #[serde(default)]
    pub(crate) probe_server: Vec<IpAddr>,

    /// The probe server's first UDP/TCP port; the second is the next one
    /// [default: 3478].
    #[arg(long, value_name = "PORT")]
    pub(crate) probe_port: Option<u16>,

    /// Collect probe reports into this SQLite database.
    #[arg(long, value_name = "DB_PATH")]
    pub(crate) collector: Option<PathBuf>,

    /// Reports a peer may send at once before the rate limit [default: 5].
    #[arg(long, value_name = "N")]
    pub(crate) collector_burst: Option<u32>,

    /// Then one report per this many seconds [default: 60].
    #[arg(long, value_name = "SECS")]
    pub(crate) collector_every: Option<f64>,

    /// Hold sealed mail for peers that are away (`crust::mailbox`), in
    /// this SQLite database; they collect it when they connect.
    #[arg(long, value_name = "DB_PATH")]
    pub(crate) hold: Option<PathBuf>,

    /// Hold mail only for these recipients, e.g. your own chat id
    /// (repeatable; default: for anyone, within the bounds).
    #[arg(long, value_name = "PEER_ID")]
    #[serde(default, deserialize_with = "parsed")]
    pub(crate) hold_for: Vec<crust::PeerId>,

    /// Don't take part in the DHT (by default the node serves it: answers
    /// lookups, keeps the records peers publish, refreshes its table).
    #[arg(long)]
    #[serde(default)]
    pub(crate) no_dht: bool,

    /// `server` lists this node's addresses so peers hand it out; `auto`
    /// only when it finds no NAT in front of it or a UPnP mapping;
    /// `client` answers only the peers connected to it [default: server].
    #[arg(long, value_name = "MODE")]
    pub(crate) dht_mode: Option<crust::dht::Mode>,

    /// Most DHT records held for others [default: 4096].
    #[arg(long, value_name = "N")]
    pub(crate) dht_records: Option<usize>,
}

fn parsed<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: std::fmt::Display,
{
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .collect()
}

impl Options {
    /// Reads a config file.
    pub(crate) fn from_file(path: &Path) -> Result<Options> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("bad config file {}", path.display()))
    }

    /// `self` (the flags) over `file`.
    pub(crate) fn over(self, file: Options) -> Options {
        fn vec<T>(a: Vec<T>, b: Vec<T>) -> Vec<T> {
            if a.is_empty() { b } else { a }
        }
        Options {
            listen: vec(self.listen, file.listen),
            utp: self.utp.or(file.utp),
            no_utp: self.no_utp || file.no_utp,
            bootstrap: vec(self.bootstrap, file.bootstrap),
            network: self.network.or(file.network),
            data_dir: self.data_dir.or(file.data_dir),
            ephemeral: self.ephemeral || file.ephemeral,
            keepalive: self.keepalive.or(file.keepalive),
            peer_timeout: self.peer_timeout.or(file.peer_timeout),
            no_rendezvous: self.no_rendezvous || file.no_rendezvous,
            no_upnp: self.no_upnp || file.no_upnp,
            relay_circuits: self.relay_circuits.or(file.relay_circuits),
            probe_server: vec(self.probe_server, file.probe_server),
            probe_port: self.probe_port.or(file.probe_port),
            collector: self.collector.or(file.collector),
            collector_burst: self.collector_burst.or(file.collector_burst),
            collector_every: self.collector_every.or(file.collector_every),
            hold: self.hold.or(file.hold),
            hold_for: vec(self.hold_for, file.hold_for),
            no_dht: self.no_dht || file.no_dht,
            dht_mode: self.dht_mode.or(file.dht_mode),
            dht_records: self.dht_records.or(file.dht_records),
        }
    }

    /// Refuses contradictory settings.
    pub(crate) fn check(&self) -> Result<()> {
        if self.no_utp && self.utp.is_some() {
            bail!("--utp and --no-utp contradict each other");
        }
        if self.ephemeral && self.data_dir.is_some() {
            bail!("--data-dir and --ephemeral contradict each other");
        }
        match self.probe_server.as_slice() {
            [] => {}
            [a, b] if a != b => {}
            _ => bail!("--probe-server needs two different IPs of this host, as IP1,IP2"),
        }
        if self.probe_port == Some(u16::MAX) {
            bail!("--probe-port must leave room for the next port");
        }
        if self.no_dht && (self.dht_mode.is_some() || self.dht_records.is_some()) {
            bail!("--no-dht contradicts --dht-mode and --dht-records");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file() {
        let file: Options = toml::from_str(
            r#"
            listen = ["0.0.0.0:6000"]
            network = "lab"
            relay-circuits = 8
            no-upnp = true
            probe-server = ["192.0.2.1", "198.51.100.1"]
            collector = "/var/lib/crust-node/reports.db"
            bootstrap = ["127.0.0.1:5483"]
            dht-mode = "auto"
            "#,
        )
        .unwrap();
        let flags = Options {
            network: Some("prod".into()),
            ..Options::default()
        };
        let o = flags.over(file);
        assert_eq!(o.network.as_deref(), Some("prod"));
        assert_eq!(o.relay_circuits, Some(8));
        assert!(o.no_upnp);
        assert_eq!(
            o.listen,
            vec!["0.0.0.0:6000".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(o.probe_server.len(), 2);
        assert_eq!(o.bootstrap.len(), 1);
        assert_eq!(o.dht_mode, Some(crust::dht::Mode::Auto));
        o.check().unwrap();
    }

    #[test]
    fn the_example_config_in_dist_is_valid() {
        let text = include_str!("../../../../dist/crust-node.toml");
        let o: Options = toml::from_str(text).unwrap();
        o.check().unwrap();
        assert_eq!(o.relay_circuits, Some(64));
    }

    #[test]
    fn unknown_keys_and_one_probe_ip_are_refused() {
        assert!(toml::from_str::<Options>("lisen = []").is_err());
        let one = Options {
            probe_server: vec!["192.0.2.1".parse().unwrap()],
            ..Options::default()
        };
        assert!(one.check().is_err());
        assert!(toml::from_str::<Options>("dht-mode = \"always\"").is_err());
        let contradiction = Options {
            no_dht: true,
            dht_mode: Some(crust::dht::Mode::Server),
            ..Options::default()
        };
        assert!(contradiction.check().is_err());
    }
}
