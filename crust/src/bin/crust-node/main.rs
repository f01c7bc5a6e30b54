//! `crust-node`: the headless crust peer for public hosts.
//!
//! Listens on the given TCP addresses and on one UDP socket for uTP,
//! accepts bootstrap connections, and bootstraps from its cache and the
//! given contacts. It serves as a rendezvous for NAT traversal (forwarding
//! connect requests between peers connected to it, and relaying for those
//! that cannot connect directly, up to `--relay-circuits`) and answers
//! address echoes, unless `--no-rendezvous`; behind a NAT it asks the gateway for
//! UPnP port mappings unless `--no-upnp`. Prints its id and
//! addresses on start; logs with `tracing` (`RUST_LOG`, default `info`).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Parser;
use crust::{Config, Contact, Event, SecretId, Service};

/// Runs a crust peer that others can bootstrap from.
#[derive(Debug, Parser)]
#[command(name = "crust-node", version = crust::VERSION, about)]
struct Args {
    /// TCP address to listen on; repeat for several.
    #[arg(long = "listen", value_name = "ADDR", default_value = "0.0.0.0:5483")]
    listen: Vec<SocketAddr>,

    /// UDP address for uTP connections.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "0.0.0.0:5483",
        conflicts_with = "no_utp"
    )]
    utp: SocketAddr,

    /// Don't open a UDP socket; TCP only.
    #[arg(long)]
    no_utp: bool,

    /// Peer to bootstrap from, as [ID@]IP:PORT (TCP) or [ID@]utp:IP:PORT;
    /// repeat for several.
    #[arg(long = "bootstrap", value_name = "CONTACT")]
    bootstrap: Vec<Contact>,

    /// Network id; peers on other networks are refused.
    #[arg(long, default_value = "crust")]
    network: String,

    /// Directory for the identity key and the bootstrap cache (default: the
    /// platform's data directory for crust-node).
    #[arg(long, value_name = "DIR", conflicts_with = "ephemeral")]
    data_dir: Option<PathBuf>,

    /// Use a fresh identity and no files at all.
    #[arg(long)]
    ephemeral: bool,

    /// Send a keep-alive this often, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    keepalive: f64,

    /// Report a peer lost after this many seconds of silence.
    #[arg(long, value_name = "SECS", default_value_t = 20.0)]
    peer_timeout: f64,

    /// Don't forward rendezvous signals between peers connected to us.
    #[arg(long)]
    no_rendezvous: bool,

    /// Don't ask a UPnP gateway for port mappings.
    #[arg(long)]
    no_upnp: bool,

    /// Most relayed circuits carried at once for peers that cannot connect
    /// directly (0: relay nothing).
    #[arg(long, value_name = "N", default_value_t = 64)]
    relay_circuits: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let (secret, cache) = if args.ephemeral {
        (SecretId::generate(), None)
    } else {
        let dir = match args.data_dir {
            Some(dir) => dir,
            None => directories::ProjectDirs::from("", "", "crust-node")
                .context("no data directory on this platform; pass --data-dir or --ephemeral")?
                .data_dir()
                .to_owned(),
        };
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let key = SecretId::load_or_generate(&dir.join("secret.key"))
            .context("cannot load the identity key")?;
        (key, Some(dir.join("bootstrap-cache.json")))
    };
    let config = Config {
        listen: args.listen.clone(),
        utp: (!args.no_utp).then_some(args.utp),
        bootstrap_contacts: args.bootstrap.clone(),
        bootstrap_cache: cache,
        keepalive_interval: secs(args.keepalive, "--keepalive")?,
        peer_timeout: secs(args.peer_timeout, "--peer-timeout")?,
        rendezvous: !args.no_rendezvous,
        upnp: !args.no_upnp,
        relay_circuits: args.relay_circuits,
        channel: crust::ChannelConfig {
            network_id: args.network.clone(),
            ..Default::default()
        },
        ..Config::default()
    };
    let (service, mut events) = Service::start(config, secret)
        .await
        .context("cannot start the service")?;
    // The banner is for whoever started us; a node must keep running when
    // that reader has gone away (`crust-node | head -1`, a test that stops
    // reading), so a closed stdout is not an error.
    let mut banner = format!("peer id: {}\n", service.id());
    for endpoint in service.listeners().await {
        banner.push_str(&format!("listening on {endpoint}\n"));
        banner.push_str(&format!("contact: {}@{endpoint}\n", service.id()));
    }
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout
        .write_all(banner.as_bytes())
        .and_then(|()| stdout.flush())
    {
        tracing::debug!(%error, "stdout is closed; the banner was not printed");
    }
    drop(stdout);
    service.bootstrap().context("cannot bootstrap")?;

    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("shutting down");
                service.shutdown().await;
                return Ok(());
            }
        };
        let Some(event) = event else { return Ok(()) };
        match event {
            Event::BootstrapConnect { peer, addr } => tracing::info!(%peer, %addr, "bootstrapped"),
            Event::BootstrapAccept { peer, addr } => {
                tracing::info!(%peer, %addr, "peer bootstrapped from us")
            }
            Event::BootstrapFailed if !args.bootstrap.is_empty() => {
                tracing::warn!("no bootstrap peer could be reached")
            }
            Event::ConnectSuccess { peer, info } => {
                tracing::info!(%peer, addr = %info.remote_addr, path = ?info.path, "connected")
            }
            Event::NatReport(report) => tracing::info!(
                external = ?report.udp_external,
                mapping = ?report.mapping,
                ports = ?report.port_allocation,
                upnp = ?report.upnp,
                "NAT report"
            ),
            Event::LostPeer { peer, reason } => tracing::info!(%peer, %reason, "peer lost"),
            Event::NewMessage { peer, data } => {
                tracing::debug!(%peer, len = data.len(), "message (a bare node ignores messages)")
            }
            Event::ListenerFailed {
                endpoint: addr,
                error,
            } => {
                tracing::error!(%addr, %error, "listener failed")
            }
            _ => {}
        }
    }
}

fn secs(value: f64, flag: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(value)
        .with_context(|| format!("{flag} must be a non-negative number of seconds"))
}
