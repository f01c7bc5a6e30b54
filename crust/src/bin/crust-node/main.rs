//! `crust-node`: the headless crust peer for public hosts.
//!
//! Listens on the given TCP addresses and on one UDP socket for uTP,
//! accepts bootstrap connections, and bootstraps from its cache and the
//! given contacts. It serves as a rendezvous for NAT traversal (forwarding
//! connect requests between peers connected to it, and relaying for those
//! that cannot connect directly, up to `--relay-circuits`) and answers
//! address echoes, unless `--no-rendezvous`; behind a NAT it asks the
//! gateway for UPnP port mappings unless `--no-upnp`. With
//! `--probe-server IP1,IP2` it answers router probes; with `--collector DB`
//! it stores probe reports peers send it; with `--hold DB` it holds sealed
//! mail for peers that are away (`--hold-for ID` to hold only for them).
//! It serves the DHT (`crust::dht::Server`: lookups, records, as a server
//! others hand out) unless `--no-dht`. Any combination; options come
//! from flags and `--config FILE` (flags win). Prints its id and addresses
//! on start; logs with `tracing` (`RUST_LOG`, default `info`).
//!
//! `crust-node reports summary --db PATH` prints the collected reports'
//! summary; `crust-node probe --server IP:PORT [--collector ID@IP:PORT]`
//! probes the router in front of this host, shows the report and sends it
//! if the tester agrees.

mod config;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use crust::probe::{
    Collector, Envelope, ProbeServer, RateLimit, Rejection, ReportStore, TesterArgs, ask_on_stdin,
    run_tester,
};
use crust::{Config, Event, Priority, SecretId, Service};

use config::Options;

/// Runs a crust peer that others can bootstrap from.
#[derive(Debug, Parser)]
#[command(name = "crust-node", version = crust::VERSION, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    /// Read options from this TOML file (same names as the flags, e.g.
    /// `relay-circuits = 64`); flags given here win.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,

    #[command(flatten)]
    options: Options,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with the collected probe reports.
    Reports {
        #[command(subcommand)]
        action: Reports,
    },
    /// Probe the router in front of this host against a probe server,
    /// print what was found and the report that would be sent, and send it
    /// to a collector if you agree.
    Probe(ProbeArgs),
}

#[derive(Debug, clap::Args)]
struct ProbeArgs {
    #[command(flatten)]
    tester: TesterArgs,
    /// Don't test UPnP.
    #[arg(long)]
    no_upnp: bool,
}

#[derive(Debug, Subcommand)]
enum Reports {
    /// Prevalence of each router behaviour and the success of each
    /// connection technique per NAT pair.
    Summary {
        /// The collector's database.
        #[arg(long, value_name = "PATH")]
        db: PathBuf,
    },
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(Command::Reports {
        action: Reports::Summary { db },
    }) = &args.command
    {
        if !db.exists() {
            anyhow::bail!("no report database at {}", db.display());
        }
        let store = ReportStore::open(db).context("cannot open the report database")?;
        let summary = store.summary().context("cannot read the reports")?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{summary}").context("cannot print the summary")?;
        return Ok(());
    }
    if let Some(Command::Probe(probe)) = args.command {
        return tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?
            .block_on(probe_command(probe));
    }
    let options = match &args.config {
        Some(path) => args.options.over(Options::from_file(path)?),
        None => args.options,
    };
    options.check()?;
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
        .block_on(run(options))
}

const DEFAULT_PORT: u16 = 5483;
const DEFAULT_PROBE_PORT: u16 = 3478;

async fn run(o: Options) -> Result<()> {
    let (secret, cache) = if o.ephemeral {
        (SecretId::generate(), None)
    } else {
        let dir = match &o.data_dir {
            Some(dir) => dir.clone(),
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
    let default_addr = SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT));
    let listen = if o.listen.is_empty() {
        vec![default_addr]
    } else {
        o.listen.clone()
    };
    let config = Config {
        listen,
        utp: (!o.no_utp).then_some(o.utp.unwrap_or(default_addr)),
        bootstrap_contacts: o.bootstrap.clone(),
        bootstrap_cache: cache,
        keepalive_interval: secs(o.keepalive.unwrap_or(5.0), "--keepalive")?,
        peer_timeout: secs(o.peer_timeout.unwrap_or(20.0), "--peer-timeout")?,
        rendezvous: !o.no_rendezvous,
        upnp: !o.no_upnp,
        relay_circuits: o.relay_circuits.unwrap_or(64),
        channel: crust::ChannelConfig {
            network_id: o.network.clone().unwrap_or_else(|| "crust".into()),
            ..Default::default()
        },
        ..Config::default()
    };
    // The probe server and the collector's database first: a bad address
    // or path stops the node before it joins the network.
    let probe_server = match o.probe_server.as_slice() {
        [a, b] => {
            let port = o.probe_port.unwrap_or(DEFAULT_PROBE_PORT);
            let server =
                ProbeServer::start(SocketAddr::new(*a, port), SocketAddr::new(*b, port + 1))
                    .await
                    .context("cannot start the probe server")?;
            Some(server)
        }
        _ => None,
    };
    let mut collector = match &o.collector {
        Some(path) => {
            let store = ReportStore::open(path)
                .with_context(|| format!("cannot open the report database {}", path.display()))?;
            let limit = RateLimit {
                burst: o.collector_burst.unwrap_or(5),
                every: secs(o.collector_every.unwrap_or(60.0), "--collector-every")?,
            };
            Some((Collector::new(limit), store))
        }
        None => None,
    };
    let mut hold = match &o.hold {
        Some(path) => {
            let policy = if o.hold_for.is_empty() {
                crust::mailbox::Policy::Open
            } else {
                crust::mailbox::Policy::For(o.hold_for.iter().copied().collect())
            };
            let mailbox =
                crust::mailbox::Mailbox::open(path, crust::mailbox::Limits::default(), policy)
                    .with_context(|| format!("cannot open the mail database {}", path.display()))?;
            Some(mailbox)
        }
        None => None,
    };
    let (service, mut events) = Service::start(config, secret.clone())
        .await
        .context("cannot start the service")?;
    let mut dht = if o.no_dht {
        None
    } else {
        let mut config = crust::dht::ServerConfig {
            mode: o.dht_mode.unwrap_or(crust::dht::Mode::Server),
            ..Default::default()
        };
        if let Some(records) = o.dht_records {
            config.engine.store_capacity = records;
        }
        config.engine.rng_seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Some(crust::dht::Server::new(config, secret, service.clone()).await)
    };
    // The banner is for whoever started us; a node must keep running when
    // that reader has gone away (`crust-node | head -1`, a test that stops
    // reading), so a closed stdout is not an error.
    let mut banner = format!("peer id: {}\n", service.id());
    for endpoint in service.listeners().await {
        banner.push_str(&format!("listening on {endpoint}\n"));
        banner.push_str(&format!("contact: {}@{endpoint}\n", service.id()));
    }
    if let Some(server) = &probe_server {
        banner.push_str(&format!(
            "probe server on {} and {}\n",
            server.primary(),
            server.alternate()
        ));
    }
    if let Some(path) = &o.collector {
        banner.push_str(&format!("collecting reports into {}\n", path.display()));
    }
    if let Some(path) = &o.hold {
        banner.push_str(&format!("holding mail in {}\n", path.display()));
    }
    if let Some(dht) = &dht {
        let mode = o.dht_mode.unwrap_or(crust::dht::Mode::Server);
        let serving = if dht.status().serving {
            ""
        } else {
            ", not listed yet"
        };
        banner.push_str(&format!("serving the DHT ({mode} mode{serving})\n"));
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
            wake = async {
                match &mut dht {
                    Some(dht) => dht.wait().await,
                    None => std::future::pending().await,
                }
            } => {
                if let Some(dht) = &mut dht {
                    dht.woke(wake).await;
                }
                continue;
            }
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("shutting down");
                service.shutdown().await;
                return Ok(());
            }
        };
        let Some(event) = event else { return Ok(()) };
        if let Some(dht) = &mut dht
            && dht.handle_event(&event).await
        {
            continue;
        }
        match event {
            Event::BootstrapConnect { peer, addr } => tracing::info!(%peer, %addr, "bootstrapped"),
            Event::BootstrapAccept { peer, addr } => {
                tracing::info!(%peer, %addr, "peer bootstrapped from us")
            }
            Event::BootstrapFailed if !o.bootstrap.is_empty() => {
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
            Event::NewMessage { peer, data } if data.starts_with(crust::mailbox::MAGIC) => {
                let Some(mailbox) = &mut hold else { continue };
                let reply = mailbox.handle(&peer, &data, crust::mailbox::unix_now());
                if let Some(reply) = reply
                    && let Err(error) = service.send(&peer, reply, Priority::NORMAL).await
                {
                    tracing::debug!(%peer, %error, "cannot answer a mailbox request");
                }
            }
            Event::NewMessage { peer, data } => match &mut collector {
                Some((collector, store)) => {
                    let answer = match collector.receive(peer, Instant::now(), &data) {
                        Ok(None) => {
                            tracing::debug!(%peer, len = data.len(), "message ignored");
                            continue;
                        }
                        Ok(Some(report)) => match store.insert(unix_now(), &report) {
                            Ok(id) => {
                                tracing::info!(%peer, id, nat = %report.findings.nat_class(), "report stored");
                                Envelope::Accepted { id }
                            }
                            Err(error) => {
                                tracing::error!(%error, "cannot store a report");
                                Envelope::Rejected {
                                    reason: Rejection::Storage.to_string(),
                                }
                            }
                        },
                        Err(rejection) => {
                            tracing::info!(%peer, %rejection, "report rejected");
                            Envelope::Rejected {
                                reason: rejection.to_string(),
                            }
                        }
                    };
                    if let Err(error) = service.send(&peer, answer.encode(), Priority::NORMAL).await
                    {
                        tracing::debug!(%peer, %error, "cannot answer a report");
                    }
                }
                None => {
                    tracing::debug!(%peer, len = data.len(), "message (a bare node ignores messages)")
                }
            },
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

/// `crust-node probe`: probe, show, ask, submit.
async fn probe_command(args: ProbeArgs) -> Result<()> {
    let mut stdout = std::io::stdout();
    run_tester(&args.tester, !args.no_upnp, &mut stdout, &mut ask_on_stdin).await?;
    Ok(())
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn secs(value: f64, flag: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(value)
        .with_context(|| format!("{flag} must be a non-negative number of seconds"))
}
