//! Hostile peers over real loopback sockets (#11): floods of uTP SYNs and
//! of half-open TCP connections, and authenticated peers that break the
//! protocol after the handshake (oversized frames, garbage, replayed and
//! reordered ciphertext) or that are on another network. Each is refused,
//! the state it can make us hold stays bounded, and real peers are not
//! disturbed.
//!
//! One address holding many silent connections (slow-loris) gets only its
//! per-source quota of handshake slots.
//!
//! A relay that changes the bytes it relays is caught by the end-to-end
//! channel: the receiver drops that connection and keeps its others.
//!
//! Covered elsewhere, not repeated here: a peer claiming someone else's id
//! (`secure::tests::an_identity_signature_by_another_key_is_refused`,
//! `service::connecting_to_the_wrong_id_fails_clearly`), junk and oversized
//! handshake frames on the listener
//! (`service::garbage_on_the_listener_does_not_disturb_real_peers`).

#![allow(clippy::unwrap_used)]

mod common;

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use common::{Node, PATIENCE, config, config_with_utp};
use crust::secure::SecureChannel;
use crust::utp::UtpSocket;
use crust::utp::proto::{Endpoint, EndpointConfig};
use crust::{ChannelConfig, ConnectionPath, Event, Intent, LostReason, Priority, SecretId};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;

/// A SYN as a fresh uTP initiator would send it (random connection id).
fn syn(seed: u64, to: std::net::SocketAddr) -> Vec<u8> {
    let mut e = Endpoint::new(EndpointConfig::default(), seed);
    e.connect(Instant::now(), to);
    e.poll_transmit(Instant::now()).unwrap().contents.to_vec()
}

#[tokio::test]
async fn a_utp_syn_flood_stays_bounded_and_a_real_peer_still_connects() {
    let config = EndpointConfig::default();
    let bound = config.max_half_open + config.accept_queue;
    let (server, _other) = UtpSocket::bind("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    let server_addr = server.local_addr().unwrap();
    let server = Arc::new(server);
    // The server echoes what each accepted stream says.
    let acceptor = server.clone();
    tokio::spawn(async move {
        while let Ok(mut stream) = acceptor.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 5];
                if stream.read_exact(&mut buf).await.is_ok() {
                    let _ = stream.write_all(&buf).await;
                    let _ = stream.flush().await;
                }
            });
        }
    });

    // SYNs that never send DATA, 200 a second from one socket (new ids
    // each time), until the real peer is through: thirty times what it takes
    // to keep a 64-entry half-open table full of ten-second entries, so
    // refusing SYNs when full would lock the real peer out; evicting the
    // oldest entry leaves a real initiator 320 ms for its first DATA.
    let flooding = Arc::new(AtomicBool::new(true));
    let flood = {
        let flooding = flooding.clone();
        tokio::spawn(async move {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let mut sent = 0u64;
            while flooding.load(Ordering::Relaxed) || sent < 300 {
                let _ = socket.send_to(&syn(sent, server_addr), server_addr).await;
                sent += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            sent
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        server.connection_count() <= bound,
        "{}",
        server.connection_count()
    );

    let (client, _other) =
        UtpSocket::bind("127.0.0.1:0".parse().unwrap(), EndpointConfig::default())
            .await
            .unwrap();
    let talk = async {
        let mut stream = client.connect(server_addr).await?;
        stream.write_all(b"hello").await?;
        stream.flush().await?;
        let mut reply = [0u8; 5];
        stream.read_exact(&mut reply).await?;
        std::io::Result::Ok(reply)
    };
    let reply = tokio::time::timeout(PATIENCE, talk)
        .await
        .expect("the real peer is through in time");
    assert_eq!(&reply.unwrap(), b"hello");
    flooding.store(false, Ordering::Relaxed);
    let sent = flood.await.unwrap();
    assert!(sent >= 300);
    let count = server.connection_count();
    assert!(
        count <= bound,
        "{count} connections tracked after {sent} SYNs"
    );
}

#[tokio::test]
async fn half_open_tcp_connections_are_capped_and_time_out() {
    // Few handshake slots and a short handshake timeout, so the test sees
    // both the cap and the expiry quickly.
    let mut cfg = config();
    cfg.max_pending_handshakes = 8;
    cfg.channel.handshake_timeout = Duration::from_secs(2);
    let mut a = Node::start_with(cfg, SecretId::generate()).await;
    let b = Node::start().await;
    b.service.connect(a.id(), &[a.addr]).await.unwrap();

    // 100 connections that never say anything (slow-loris).
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(TcpStream::connect(a.addr).await.unwrap());
    }
    // Those past the cap are closed at once; the rest when their handshake
    // times out. No idle connection is kept beyond the timeout.
    let started = Instant::now();
    let mut waits = Vec::new();
    for mut s in idle {
        waits.push(tokio::spawn(async move {
            let mut buf = [0u8; 1];
            let r = tokio::time::timeout(PATIENCE, s.read(&mut buf)).await;
            assert!(
                matches!(r, Ok(Ok(0) | Err(_))),
                "an idle connection is closed, not answered: {r:?}"
            );
            started.elapsed()
        }));
    }
    let mut closed_at = Vec::new();
    for w in waits {
        closed_at.push(w.await.unwrap());
    }
    let slow = closed_at
        .iter()
        .filter(|t| **t >= Duration::from_secs(1))
        .count();
    assert!(
        slow <= 8,
        "at most the 8 handshake slots wait for the timeout, {slow} did"
    );

    // The established connection never noticed, and a new peer connects.
    b.says(&mut a, b"still here").await;
    let c = Node::start().await;
    c.service.connect(a.id(), &[a.addr]).await.unwrap();
}

#[tokio::test]
async fn one_address_holding_silent_connections_cannot_lock_others_out() {
    // Slots enough for everyone, a quota of 4 per source, and a handshake
    // timeout longer than the test: the attacker's connections stay open.
    let mut cfg = config();
    cfg.max_pending_handshakes = 32;
    cfg.max_pending_handshakes_per_source = 4;
    cfg.channel.handshake_timeout = Duration::from_secs(60);
    let a = Node::start_with(cfg, SecretId::generate()).await;

    // 100 silent connections from 127.0.0.2 (slow-loris): without the
    // quota they would hold all 32 slots.
    let mut idle = Vec::new();
    for _ in 0..100 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        idle.push(socket.connect(a.addr).await.unwrap());
    }
    // All but the quota are closed at once.
    let mut open = 0;
    for s in &mut idle {
        let mut buf = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await {
            Err(_) => open += 1,
            Ok(r) => assert!(matches!(r, Ok(0) | Err(_)), "closed, not answered: {r:?}"),
        }
    }
    assert_eq!(open, 4, "the source keeps exactly its quota of handshakes");

    // A real peer from another address connects and talks while the
    // attacker still holds its connections.
    let b = Node::start().await;
    b.service.connect(a.id(), &[a.addr]).await.unwrap();
    let mut a = a;
    b.says(&mut a, b"hello").await;
    drop(idle);
}

/// The next message from `peer`, or why it was lost.
async fn next_from(
    events: &mut crust::Events,
    peer: crust::PeerId,
) -> Result<bytes::Bytes, LostReason> {
    tokio::time::timeout(PATIENCE, async {
        loop {
            match events.recv().await.unwrap() {
                Event::NewMessage { peer: p, data } if p == peer => break Ok(data),
                Event::LostPeer { peer: p, reason } if p == peer => break Err(reason),
                _ => {}
            }
        }
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_relay_that_tampers_with_relayed_bytes_is_caught_end_to_end() {
    let mut r = Node::start_with(config_with_utp(), SecretId::generate()).await;
    let (a, _a_events) = common::unreachable_peer().await;
    let (b, mut b_events) = common::unreachable_peer().await;
    a.connect(r.id(), &[r.addr]).await.unwrap();
    b.connect(r.id(), &[r.addr]).await.unwrap();
    let info = a.connect_via(b.id(), r.id()).await.unwrap();
    assert_eq!(info.path, ConnectionPath::Relayed { via: r.id() });
    // Untouched, the relayed connection works.
    a.send(&b.id(), &b"before"[..], Priority::NORMAL)
        .await
        .unwrap();
    assert_eq!(
        next_from(&mut b_events, a.id()).await.unwrap(),
        &b"before"[..]
    );

    // From now on the relay flips a bit in everything it forwards: b's
    // end of the secure channel refuses the first changed frame and drops
    // the connection; nothing changed is ever delivered.
    crust::faults::tamper_relayed_bytes(r.id(), true);
    a.send(&b.id(), &b"after"[..], Priority::NORMAL)
        .await
        .unwrap();
    match next_from(&mut b_events, a.id()).await {
        Err(reason) => assert!(
            matches!(reason, LostReason::ProtocolViolation(_)),
            "{reason:?}"
        ),
        Ok(data) => panic!("a tampered message was delivered: {data:?}"),
    }
    crust::faults::tamper_relayed_bytes(r.id(), false);

    // Both ends' own connections to the relay are unaffected.
    for (peer, text) in [(&a, &b"a is fine"[..]), (&b, &b"b is fine"[..])] {
        peer.send(&r.id(), text, Priority::NORMAL).await.unwrap();
        assert_eq!(r.message_from(peer.id()).await, text);
    }
}

/// The hostile peer's side of a TCP connection: the secure channel writes
/// through it, every byte is recorded, and with `hold` set writes are only
/// recorded, so the test can send its own bytes (replays, reorderings,
/// garbage) on the raw stream through `raw`.
struct Tap {
    read: tokio::net::tcp::OwnedReadHalf,
    out: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
    log: Arc<Mutex<Vec<u8>>>,
    hold: Arc<AtomicBool>,
}

/// The test's handles on a [`Tap`]: its own raw bytes go out through
/// `raw`; `log` holds everything the channel wrote; `hold` stops the
/// channel's writes from going out.
struct Controls {
    raw: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
    log: Arc<Mutex<Vec<u8>>>,
    hold: Arc<AtomicBool>,
}

impl Tap {
    fn new(stream: TcpStream) -> (Self, Controls) {
        let (read, mut write) = stream.into_split();
        let (out, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            while let Some(bytes) = rx.recv().await {
                if write.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        });
        let log = Arc::new(Mutex::new(Vec::new()));
        let hold = Arc::new(AtomicBool::new(false));
        let tap = Self {
            read,
            out: out.clone(),
            log: log.clone(),
            hold: hold.clone(),
        };
        (
            tap,
            Controls {
                raw: out,
                log,
                hold,
            },
        )
    }
}

impl AsyncRead for Tap {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tap {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.log.lock().unwrap().extend_from_slice(buf);
        if !self.hold.load(Ordering::SeqCst) {
            let _ = self.out.send(buf.to_vec());
        }
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// What the hostile peer sends after a valid handshake.
#[derive(Debug, Clone, Copy)]
enum Attack {
    /// A length prefix past the service's frame limit.
    OversizedFrame,
    /// Random bytes where ciphertext belongs.
    Garbage,
    /// A frame it already sent, once more.
    Replay,
    /// Two frames in the wrong order.
    Reorder,
}

const MAX_FRAME: usize = 4096;

/// A crust `Data` message (postcard: variant 0, length, bytes) of 2 bytes.
fn data(text: &[u8; 2]) -> [u8; 4] {
    [0, 2, text[0], text[1]]
}

/// Runs `attack` against a service that also has an honest peer
/// connected; checks the attacker is dropped as a protocol violation, what
/// it sent after the fault is not delivered, and the honest connection and
/// new connections are unaffected.
async fn run_attack(attack: Attack) {
    let mut cfg = config();
    cfg.channel.max_frame_len = MAX_FRAME;
    let mut a = Node::start_with(cfg, SecretId::generate()).await;
    let b = Node::start().await;
    b.service.connect(a.id(), &[a.addr]).await.unwrap();

    let mallory = SecretId::generate();
    let (tap, Controls { raw, log, hold }) = Tap::new(TcpStream::connect(a.addr).await.unwrap());
    let channel_config = ChannelConfig {
        network_id: "crust-tests".into(),
        ..ChannelConfig::default()
    };
    let channel = SecureChannel::connect(
        tap,
        &mallory,
        &channel_config,
        Some(a.id()),
        Intent::Connect,
    )
    .await
    .unwrap();
    a.expect("mallory's connection", |e| {
        matches!(e, Event::ConnectSuccess { peer, .. } if peer == mallory.peer_id()).then_some(())
    })
    .await;
    let (_reader, mut writer) = channel.split();
    // One honest message first: it is delivered.
    writer.send(1, &data(b"ok")).await.unwrap();
    assert_eq!(a.message_from(mallory.peer_id()).await, &b"ok"[..]);
    match attack {
        Attack::OversizedFrame => {
            let mut p = ((MAX_FRAME + 1) as u16).to_be_bytes().to_vec();
            p.extend(std::iter::repeat_n(0u8, MAX_FRAME + 1));
            raw.send(p).unwrap();
        }
        Attack::Garbage => {
            let mut p = 200u16.to_be_bytes().to_vec();
            p.extend((0..200u32).map(|i| (i * 37) as u8));
            raw.send(p).unwrap();
        }
        Attack::Replay => {
            let before = log.lock().unwrap().len();
            writer.send(1, &data(b"r1")).await.unwrap();
            assert_eq!(a.message_from(mallory.peer_id()).await, &b"r1"[..]);
            let frame = log.lock().unwrap()[before..].to_vec();
            raw.send(frame).unwrap();
        }
        Attack::Reorder => {
            hold.store(true, Ordering::SeqCst);
            let start = log.lock().unwrap().len();
            writer.send(1, &data(b"o1")).await.unwrap();
            let mid = log.lock().unwrap().len();
            writer.send(1, &data(b"o2")).await.unwrap();
            let frames = log.lock().unwrap().clone();
            raw.send(frames[mid..].to_vec()).unwrap();
            raw.send(frames[start..mid].to_vec()).unwrap();
        }
    }
    // Anything after the fault is discarded, even if valid.
    let reason = a
        .expect("mallory dropped", |e| match e {
            Event::LostPeer { peer, reason } if peer == mallory.peer_id() => Some(reason),
            Event::NewMessage { peer, data } if peer == mallory.peer_id() => {
                panic!("{attack:?}: delivered {data:?} after the fault")
            }
            _ => None,
        })
        .await;
    assert!(
        matches!(reason, LostReason::ProtocolViolation(_)),
        "{attack:?}: {reason:?}"
    );

    b.says(&mut a, b"unaffected").await;
    let c = Node::start().await;
    c.service.connect(a.id(), &[a.addr]).await.unwrap();
}

#[tokio::test]
async fn an_oversized_frame_after_the_handshake_drops_only_that_peer() {
    run_attack(Attack::OversizedFrame).await;
}

#[tokio::test]
async fn garbage_after_the_handshake_drops_only_that_peer() {
    run_attack(Attack::Garbage).await;
}

#[tokio::test]
async fn a_replayed_frame_drops_only_that_peer() {
    run_attack(Attack::Replay).await;
}

#[tokio::test]
async fn reordered_frames_drop_only_that_peer() {
    run_attack(Attack::Reorder).await;
}

#[tokio::test]
async fn a_peer_on_another_network_is_refused() {
    let mut a = Node::start().await;
    let mallory = SecretId::generate();
    let stream = TcpStream::connect(a.addr).await.unwrap();
    let other = ChannelConfig {
        network_id: "another-network".into(),
        ..ChannelConfig::default()
    };
    let r = SecureChannel::connect(stream, &mallory, &other, Some(a.id()), Intent::Connect).await;
    assert!(
        matches!(r, Err(crust::HandshakeError::NetworkMismatch { .. })),
        "{:?}",
        r.err()
    );
    let events = a.drain(Duration::from_millis(500)).await;
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::ConnectSuccess { peer, .. } if *peer == mallory.peer_id())),
        "{events:?}"
    );
    let c = Node::start().await;
    c.service.connect(a.id(), &[a.addr]).await.unwrap();
}
