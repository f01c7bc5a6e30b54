//! Helpers shared by the integration tests: services on loopback and
//! waiting for events with a deadline.

#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

pub mod process;

use std::net::SocketAddr;
use std::time::Duration;

use crust::{Config, Event, Events, Priority, SecretId, Service};

/// A deadline that fails a test rather than hanging it; generous, since CI
/// machines are slow and shared.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Test settings with uTP on as well, on a free loopback UDP port.
pub fn config_with_utp() -> Config {
    Config {
        utp: Some("127.0.0.1:0".parse().unwrap()),
        ..config()
    }
}

/// Test settings: short timers, loopback listener on a free port.
pub fn config() -> Config {
    Config {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        keepalive_interval: Duration::from_millis(500),
        peer_timeout: Duration::from_secs(3),
        channel: crust::ChannelConfig {
            network_id: "crust-tests".into(),
            handshake_timeout: Duration::from_secs(5),
            ..Default::default()
        },
        ..Config::default()
    }
}

pub struct Node {
    pub service: Service,
    pub events: Events,
    /// The TCP listener's address.
    pub addr: SocketAddr,
    /// The UDP socket's address, when uTP is on.
    pub utp: Option<SocketAddr>,
}

impl Node {
    pub async fn start_with(config: Config, secret: SecretId) -> Self {
        let wants_utp = config.utp.is_some();
        let (service, mut events) = Service::start(config, secret).await.unwrap();
        let (mut addr, mut utp) = (None, None);
        while addr.is_none() || (wants_utp && utp.is_none()) {
            match events.recv().await {
                Some(Event::ListenerStarted(endpoint)) => match endpoint.transport {
                    crust::Transport::Utp => utp = Some(endpoint.addr),
                    _ => addr = Some(endpoint.addr),
                },
                // A LAN beacon from a service started just before can be
                // heard before our own listeners report; it is announced
                // again a few intervals later (`LanDiscovery`), so it is
                // safe to pass over here.
                Some(Event::LanPeer { .. }) => {}
                other => panic!("expected ListenerStarted, got {other:?}"),
            }
        }
        Self {
            service,
            events,
            addr: addr.unwrap(),
            utp,
        }
    }

    pub async fn start() -> Self {
        Self::start_with(config(), SecretId::generate()).await
    }

    pub fn id(&self) -> crust::PeerId {
        self.service.id()
    }

    /// Waits for the first event `pick` accepts, skipping others.
    pub async fn expect<T>(&mut self, what: &str, mut pick: impl FnMut(Event) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => {
                    if let Some(found) = pick(event) {
                        return found;
                    }
                }
                Ok(None) => panic!("events ended while waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}"),
            }
        }
    }

    /// Collects every event arriving within `window`.
    pub async fn drain(&mut self, window: Duration) -> Vec<Event> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + window;
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            seen.push(event);
        }
        seen
    }

    /// Waits for a message from `from`.
    pub async fn message_from(&mut self, from: crust::PeerId) -> bytes::Bytes {
        self.expect("a message", |e| match e {
            Event::NewMessage { peer, data } if peer == from => Some(data),
            _ => None,
        })
        .await
    }

    /// Sends `data` to `to` at normal priority and checks that it arrives.
    pub async fn says(&self, to: &mut Node, data: &'static [u8]) {
        self.service
            .send(&to.id(), data, Priority::NORMAL)
            .await
            .unwrap();
        assert_eq!(to.message_from(self.id()).await, data);
    }
}

/// A peer with no listener and no UDP socket: it can only dial out, so
/// nothing direct can reach it or be reached from it, and a connection to
/// another such peer must be relayed.
pub async fn unreachable_peer() -> (Service, Events) {
    let config = Config {
        listen: Vec::new(),
        utp: None,
        relay_after: Duration::from_millis(100),
        punch_timeout: Duration::from_secs(3),
        ..config()
    };
    Service::start(config, SecretId::generate()).await.unwrap()
}

/// A TCP proxy to `target` for one connection; `true` on the returned
/// sender freezes it: nothing passes any more but both sockets stay open,
/// as when the peer's machine vanished without a word.
pub async fn freezable_proxy(
    target: std::net::SocketAddr,
) -> (std::net::SocketAddr, tokio::sync::watch::Sender<bool>) {
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = proxy.local_addr().unwrap();
    let (freeze_tx, freeze_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let (client, _) = proxy.accept().await.unwrap();
        let server = tokio::net::TcpStream::connect(target).await.unwrap();
        let (cr, cw) = client.into_split();
        let (sr, sw) = server.into_split();
        let pump = |mut from: tokio::net::tcp::OwnedReadHalf,
                    mut to: tokio::net::tcp::OwnedWriteHalf,
                    mut frozen: tokio::sync::watch::Receiver<bool>| async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let mut buf = vec![0u8; 16384];
            loop {
                let n = tokio::select! {
                    read = from.read(&mut buf) => match read {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    },
                    _ = frozen.wait_for(|f| *f) => 0,
                };
                if *frozen.borrow() {
                    // Swallow everything from now on, keep the sockets open.
                    let _keep = (from, to);
                    std::future::pending::<()>().await;
                    return;
                }
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        };
        tokio::join!(pump(cr, sw, freeze_rx.clone()), pump(sr, cw, freeze_rx));
    });
    (addr, freeze_tx)
}
