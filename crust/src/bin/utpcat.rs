//! `utpcat`: netcat over uTP, with libutp's `ucat` command line.
//!
//! ```text
//! utpcat -l -p PORT > out        # listen; write the stream to stdout
//! utpcat HOST PORT < in          # connect; send stdin
//! ```
//!
//! The listener takes one connection, writes what it receives to stdout and
//! exits when the stream ends. The sender sends stdin, closes its direction,
//! copies anything the peer sends to stdout, and exits once every byte and
//! its FIN are acknowledged and the peer has closed too. A tool for testers,
//! and a way to check interoperability and speed against other uTP
//! implementations (`ucat -l -p 4000 > out` on one side, `utpcat` on the
//! other, or the reverse).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use crust::utp::proto::EndpointConfig;
use crust::utp::{UtpSocket, UtpStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, info, warn};

/// How long the listener waits for the sender to acknowledge its FIN after
/// the whole stream has arrived; the data is complete either way.
const LISTENER_CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Netcat over uTP (BEP 29), with the command line of libutp's `ucat`.
#[derive(Debug, Parser)]
#[command(
    name = "utpcat",
    version,
    about,
    override_usage = "utpcat [-d] [-n] [-B SIZE] [-s SOURCE] [-p PORT] HOST PORT\n       utpcat [-d] [-n] [-B SIZE] [-s SOURCE] -l -p PORT"
)]
struct Args {
    /// Listen for one incoming connection instead of connecting.
    #[arg(short = 'l')]
    listen: bool,

    /// Local port (required with -l; otherwise a free port is used).
    #[arg(short = 'p', value_name = "PORT")]
    local_port: Option<u16>,

    /// Local (source) address to bind.
    #[arg(short = 's', value_name = "SOURCE")]
    source: Option<IpAddr>,

    /// Buffer size for reading stdin and writing the stream, in bytes.
    #[arg(short = 'B', value_name = "SIZE", default_value_t = 64 * 1024)]
    buffer: usize,

    /// Numeric host only: don't resolve names.
    #[arg(short = 'n')]
    numeric: bool,

    /// Log to stderr; repeat for more (-d: debug, -dd: trace).
    #[arg(short = 'd', action = clap::ArgAction::Count)]
    debug: u8,

    /// Host to connect to (not with -l).
    #[arg(
        value_name = "HOST",
        required_unless_present = "listen",
        conflicts_with = "listen"
    )]
    host: Option<String>,

    /// Port to connect to (not with -l).
    #[arg(
        value_name = "PORT",
        required_unless_present = "listen",
        conflicts_with = "listen"
    )]
    port: Option<u16>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let level = match args.debug {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if args.buffer == 0 {
        bail!("-B must be at least 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        if args.listen {
            listen(&args).await
        } else {
            send(&args).await
        }
    })
}

async fn listen(args: &Args) -> Result<()> {
    let port = args.local_port.context("-l needs -p PORT")?;
    let ip = args.source.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let (socket, _other) = UtpSocket::bind(SocketAddr::new(ip, port), EndpointConfig::default())
        .await
        .with_context(|| format!("binding {ip}:{port}"))?;
    info!(local = %socket.local_addr()?, "listening");
    let mut stream = socket.accept().await.context("accepting")?;
    let started = Instant::now();
    debug!(peer = %stream.peer_addr()?, "accepted");
    let received = copy_to_stdout(&mut stream, args.buffer).await?;
    report(&stream, "received", received, started);
    // Our direction is empty: close it and give the peer a moment to see
    // that, so its sender can exit cleanly.
    stream.shutdown().await.context("closing")?;
    match tokio::time::timeout(LISTENER_CLOSE_WAIT, stream.closed()).await {
        Ok(Ok(())) => debug!("closed"),
        Ok(Err(e)) => warn!("closing handshake failed after the stream ended: {e}"),
        Err(_) => warn!("peer did not acknowledge our FIN; the stream was complete"),
    }
    Ok(())
}

async fn send(args: &Args) -> Result<()> {
    let (Some(host), Some(port)) = (&args.host, args.port) else {
        bail!("HOST and PORT are required without -l");
    };
    let remote = resolve(host, port, args.numeric).await?;
    let ip = args.source.unwrap_or(match remote {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    });
    let local = SocketAddr::new(ip, args.local_port.unwrap_or(0));
    let (socket, _other) = UtpSocket::bind(local, EndpointConfig::default())
        .await
        .with_context(|| format!("binding {local}"))?;
    let started = Instant::now();
    let mut stream = socket
        .connect(remote)
        .await
        .with_context(|| format!("connecting to {remote}"))?;
    debug!(%remote, local = %socket.local_addr()?, "connected");

    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; args.buffer];
    let mut sent = 0u64;
    loop {
        let n = stdin.read(&mut buf).await.context("reading stdin")?;
        if n == 0 {
            break;
        }
        stream
            .write_all(&buf[..n])
            .await
            .context("sending to the peer")?;
        sent += n as u64;
    }
    stream.shutdown().await.context("closing")?;
    // The peer closes after our FIN, which follows the last byte.
    copy_to_stdout(&mut stream, args.buffer).await?;
    stream
        .closed()
        .await
        .context("waiting for the peer to acknowledge everything")?;
    report(&stream, "sent", sent, started);
    Ok(())
}

/// Copies the stream to stdout until the peer's FIN; returns the byte count.
async fn copy_to_stdout(stream: &mut UtpStream, buffer: usize) -> Result<u64> {
    let mut stdout = tokio::io::stdout();
    let mut buf = vec![0u8; buffer];
    let mut total = 0u64;
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .context("receiving from the peer")?;
        if n == 0 {
            break;
        }
        stdout
            .write_all(&buf[..n])
            .await
            .context("writing stdout")?;
        total += n as u64;
    }
    stdout.flush().await.context("writing stdout")?;
    Ok(total)
}

async fn resolve(host: &str, port: u16, numeric: bool) -> Result<SocketAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    if numeric {
        bail!("{host} is not a numeric address (-n)");
    }
    tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("resolving {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))
}

fn report(stream: &UtpStream, what: &str, bytes: u64, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    let mib_per_s = bytes as f64 / (1024.0 * 1024.0) / secs.max(1e-9);
    debug!(
        bytes,
        secs = format_args!("{secs:.3}"),
        mib_per_s = format_args!("{mib_per_s:.1}"),
        stats = ?stream.stats(),
        "{what}"
    );
}
