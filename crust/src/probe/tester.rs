//! The tester's flow, shared by `crust-node probe` and `crust-chat --probe`:
//! probe the router, show what was found and the exact report that would be
//! sent, ask, and only then submit it to a collector.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::Duration;

use crate::{ChannelConfig, Config, Contact, SecretId, Service};

use super::{Plan, ProbeConfig, ProbeError, SubmitError, probe, submit};

/// The tester's options, as both programs take them on the command line.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TesterArgs {
    /// A probe server's primary address (`crust-node --probe-server`'s
    /// first IP and --probe-port); repeat for fallbacks.
    #[arg(long = "server", value_name = "IP:PORT")]
    pub servers: Vec<SocketAddr>,
    /// A probe server's IPv6 address, for the IPv6 test.
    #[arg(long, value_name = "[IP]:PORT")]
    pub server_v6: Option<SocketAddr>,
    /// Offer the report to this collector, ID@IP:PORT (asks first).
    #[arg(long, value_name = "CONTACT")]
    pub collector: Option<Contact>,
    /// The collector's network id [default: crust].
    #[arg(long, value_name = "ID")]
    pub collector_network: Option<String>,
    /// Show and send full addresses instead of masked ones.
    #[arg(long)]
    pub share_addresses: bool,
    /// Also measure how long idle UDP mappings live (30, 60, 120 and 240
    /// s: takes four minutes more).
    #[arg(long)]
    pub lifetime: bool,
    /// Send without asking (for scripts).
    #[arg(long)]
    pub yes: bool,
}

/// Why the tester's flow stopped.
#[derive(Debug, thiserror::Error)]
pub enum TesterError {
    /// No `--server` was given.
    #[error("the probe needs a probe server: --server IP:PORT")]
    NoServer,
    /// The collector contact lacks the peer id a crust connection needs.
    #[error("the collector contact needs its peer id: ID@IP:PORT")]
    CollectorWithoutId,
    /// The probe itself could not run.
    #[error("the probe could not run: {0}")]
    Probe(#[from] ProbeError),
    /// Printing or reading the answer failed.
    #[error("terminal: {0}")]
    Io(#[from] io::Error),
    /// The service for the submission could not start or connect.
    #[error("cannot reach the collector {collector}: {reason}")]
    Unreachable {
        /// The collector as given.
        collector: String,
        /// What went wrong.
        reason: String,
    },
    /// The collector did not store the report.
    #[error("the report was not stored: {0}")]
    NotStored(#[from] SubmitError),
}

/// Probes with `args` (`upnp`: whether to test the router's UPnP), writes
/// the findings and the exact JSON to `out`, and, when a collector is
/// given, asks through `ask` (unless `--yes`) before submitting those bytes.
/// `ask` gets the question and answers whether the tester agreed.
pub async fn run_tester(
    args: &TesterArgs,
    upnp: bool,
    out: &mut dyn Write,
    ask: &mut dyn FnMut(&str) -> io::Result<bool>,
) -> Result<(), TesterError> {
    if args.servers.is_empty() {
        return Err(TesterError::NoServer);
    }
    let collector = match &args.collector {
        Some(contact) => Some((contact, contact.id.ok_or(TesterError::CollectorWithoutId)?)),
        None => None,
    };
    let mut config = ProbeConfig::new(args.servers.clone());
    config.upnp = upnp;
    config.ipv6_server = args.server_v6;
    if args.lifetime {
        config.lifetime = [30, 60, 120, 240].map(Duration::from_secs).to_vec();
    }
    writeln!(
        out,
        "probing the router (at most {} s)...",
        Plan::new(&config).budget.as_secs()
    )?;
    out.flush()?;
    let report = probe(&config).await?;
    let json = report.render_submission(args.share_addresses);
    write!(
        out,
        "{}\n\nThe report that would be sent",
        report.summary(args.share_addresses)
    )?;
    if !args.share_addresses {
        write!(
            out,
            " (addresses masked; --share-addresses sends them in full)"
        )?;
    }
    writeln!(out, ":\n{json}")?;
    let Some((contact, id)) = collector else {
        writeln!(out, "No --collector given: nothing was sent.")?;
        return Ok(());
    };
    out.flush()?;
    if !args.yes && !ask(&format!("Send this report to {contact}? [y/N] "))? {
        writeln!(out, "Not sent.")?;
        return Ok(());
    }
    let unreachable = |reason: String| TesterError::Unreachable {
        collector: contact.to_string(),
        reason,
    };
    let config = Config {
        listen: Vec::new(),
        utp: None,
        upnp: false,
        channel: ChannelConfig {
            network_id: args
                .collector_network
                .clone()
                .unwrap_or_else(|| "crust".into()),
            ..Default::default()
        },
        ..Config::default()
    };
    let (service, mut events) = Service::start(config, SecretId::generate())
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    if let Err(e) = service.connect(id, &[contact.addr]).await {
        service.shutdown().await;
        return Err(unreachable(e.to_string()));
    }
    let verdict = submit(&service, &mut events, id, json, Duration::from_secs(20)).await;
    service.shutdown().await;
    let stored = verdict?;
    writeln!(out, "Sent: the collector stored it as report {stored}.")?;
    Ok(())
}

/// The usual `ask` for a terminal: prints the question on `out`'s behalf to
/// stdout and reads one line from stdin; "y" or "yes" agrees.
pub fn ask_on_stdin(question: &str) -> io::Result<bool> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(question.as_bytes())?;
    stdout.flush()?;
    let mut answer = String::new();
    io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes"))
}
