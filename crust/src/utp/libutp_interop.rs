//! Interoperability with libutp, the reference C++ implementation, through
//! the `libutp-rs2` crate, over 127.0.0.1 only.
//!
//! Not yet wired into the crust crate: it needs `libutp-rs2` as a
//! dev-dependency (it builds libutp with the C++ compiler). Enable with
//! `#[cfg(test)] mod libutp_interop;` in `utp/mod.rs` once it is there.

use std::net::SocketAddr;
use std::time::Duration;

use libutp_rs2::UtpUdpContext;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::utp::UtpSocket;
use crate::utp::proto::EndpointConfig;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A free loopback port for libutp, which wants an address up front.
fn free_port() -> SocketAddr {
    let s = std::net::UdpSocket::bind(loopback()).expect("bind");
    s.local_addr().expect("addr")
}

fn data(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2654435761) >> 24) as u8 ^ salt)
        .collect()
}

const LIMIT: Duration = Duration::from_secs(60);

/// libutp-rs2 takes a connection only while an `accept` call is pending and
/// resets it otherwise; give the spawned acceptor time to get there.
async fn let_libutp_listen() {
    tokio::time::sleep(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_initiator_to_libutp_acceptor() {
    let their_addr = free_port();
    let ctx = UtpUdpContext::new_udp(their_addr)
        .await
        .expect("libutp bind");
    let payload = data(4 << 20, 1);
    let expected = payload.clone();
    let server = tokio::spawn(async move {
        let mut s = ctx.accept().await.expect("libutp accept");
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.expect("libutp read");
        s.write_all(b"thanks").await.expect("libutp write");
        drop(s);
        (got, ctx)
    });
    let (ours, _) = UtpSocket::bind(loopback(), EndpointConfig::default())
        .await
        .expect("bind");
    let_libutp_listen().await;
    let mut stream = tokio::time::timeout(LIMIT, ours.connect(their_addr))
        .await
        .expect("in time")
        .expect("connect");
    stream.write_all(&payload).await.expect("write");
    stream.shutdown().await.expect("fin");
    let mut reply = Vec::new();
    tokio::time::timeout(LIMIT, stream.read_to_end(&mut reply))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(reply, b"thanks");
    // libutp skipped our hello and announced none: the MTU search stayed
    // under the Ethernet-sized ceiling although loopback carries 64 KiB.
    let mtu = stream.path_mtu().expect("mtu");
    assert!(mtu <= 1472, "path MTU {mtu} towards libutp");
    let (got, _ctx) = tokio::time::timeout(LIMIT, server)
        .await
        .expect("in time")
        .expect("join");
    assert_eq!(got.len(), expected.len());
    assert!(got == expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libutp_initiator_to_our_acceptor() {
    let (ours, _) = UtpSocket::bind(loopback(), EndpointConfig::default())
        .await
        .expect("bind");
    let our_addr = ours.local_addr().expect("addr");
    let payload = data(4 << 20, 2);
    let expected = payload.clone();
    let client = tokio::spawn(async move {
        let ctx = UtpUdpContext::new_udp(free_port())
            .await
            .expect("libutp bind");
        let mut s = ctx.connect(our_addr).await.expect("libutp connect");
        s.write_all(&payload).await.expect("libutp write");
        let mut reply = vec![0u8; 2 << 20];
        s.read_exact(&mut reply).await.expect("libutp read");
        assert!(reply == data(2 << 20, 3), "reply corrupted");
        drop(s);
        ctx
    });
    let mut stream = tokio::time::timeout(LIMIT, ours.accept())
        .await
        .expect("in time")
        .expect("accept");
    let mut got = vec![0u8; expected.len()];
    tokio::time::timeout(LIMIT, stream.read_exact(&mut got))
        .await
        .expect("in time")
        .expect("read");
    assert!(got == expected);
    // 2 MiB back, enough for the MTU search to finish; libutp's SYN had no
    // hello, so it stays under the Ethernet-sized ceiling (libutp-rs2
    // reads into 16 KiB buffers and would cut anything larger).
    stream.write_all(&data(2 << 20, 3)).await.expect("write");
    stream.flush().await.expect("flush");
    let _ctx = tokio::time::timeout(LIMIT, client)
        .await
        .expect("in time")
        .expect("join");
    let mtu = stream.path_mtu().expect("mtu");
    assert!(mtu <= 1472, "path MTU {mtu} towards libutp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_back_to_back_connections_both_ways() {
    let their_addr = free_port();
    let ctx = std::sync::Arc::new(
        UtpUdpContext::new_udp(their_addr)
            .await
            .expect("libutp bind"),
    );
    let (ours, _) = UtpSocket::bind(loopback(), EndpointConfig::default())
        .await
        .expect("bind");
    let acceptor = ctx.clone();
    let server = tokio::spawn(async move {
        for _ in 0..50 {
            let mut s = acceptor.accept().await.expect("libutp accept");
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.expect("read");
            s.write_all(&buf).await.expect("echo");
        }
    });
    let_libutp_listen().await;
    for i in 0..50u32 {
        let mut s = tokio::time::timeout(LIMIT, ours.connect(their_addr))
            .await
            .expect("in time")
            .expect("connect");
        s.write_all(&i.to_be_bytes()).await.expect("write");
        let mut buf = [0u8; 4];
        tokio::time::timeout(LIMIT, s.read_exact(&mut buf))
            .await
            .expect("in time")
            .expect("read");
        assert_eq!(u32::from_be_bytes(buf), i);
    }
    tokio::time::timeout(LIMIT, server)
        .await
        .expect("in time")
        .expect("server");
    // And libutp dialling us.
    let our_addr = ours.local_addr().expect("addr");
    let dialer = ctx.clone();
    let client = tokio::spawn(async move {
        for i in 0..50u32 {
            let mut s = dialer.connect(our_addr).await.expect("libutp connect");
            s.write_all(&i.to_be_bytes()).await.expect("write");
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.expect("read");
            assert_eq!(u32::from_be_bytes(buf), i);
        }
    });
    for _ in 0..50 {
        let mut s = tokio::time::timeout(LIMIT, ours.accept())
            .await
            .expect("in time")
            .expect("accept");
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.expect("read");
        s.write_all(&buf).await.expect("echo");
        tokio::spawn(async move {
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
        });
    }
    tokio::time::timeout(LIMIT, client)
        .await
        .expect("in time")
        .expect("client");
}

/// A UDP relay on loopback between one client and `server` that drops a
/// seeded `loss` fraction of datagrams each way. Returns the address to dial.
async fn lossy_proxy(server: SocketAddr, loss: f64, seed: u64) -> SocketAddr {
    proxy(server, loss, seed, 0).await
}

/// As [`lossy_proxy`], and also drops the server's first `drop_replies`
/// datagrams.
async fn proxy(server: SocketAddr, loss: f64, seed: u64, drop_replies: usize) -> SocketAddr {
    let socket = tokio::net::UdpSocket::bind(loopback())
        .await
        .expect("proxy bind");
    let upstream = tokio::net::UdpSocket::bind(loopback())
        .await
        .expect("proxy bind");
    let addr = socket.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut state = seed;
        let mut drop_it = move || {
            // SplitMix64 step.
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) as f64 / u64::MAX as f64) < loss
        };
        let mut client = None;
        let mut dropped_replies = 0;
        let mut a = vec![0u8; 65536];
        let mut b = vec![0u8; 65536];
        loop {
            tokio::select! {
                r = socket.recv_from(&mut a) => {
                    let Ok((n, from)) = r else { return };
                    client = Some(from);
                    if !drop_it() {
                        let _ = upstream.send_to(&a[..n], server).await;
                    }
                }
                r = upstream.recv_from(&mut b) => {
                    let Ok((n, _)) = r else { return };
                    if dropped_replies < drop_replies {
                        dropped_replies += 1;
                        continue;
                    }
                    if let Some(c) = client && !drop_it() {
                        let _ = socket.send_to(&b[..n], c).await;
                    }
                }
            }
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_syn_reply_from_libutp_is_survived_by_a_retry_under_a_new_id() {
    // libutp drops a SYN whose id it already has a socket for and never
    // repeats its reply (see `Connection::renew_syn_id`): only a retry
    // under a fresh id, same sequence number, gets through.
    let their_addr = free_port();
    let ctx = UtpUdpContext::new_udp(their_addr)
        .await
        .expect("libutp bind");
    let proxy = proxy(their_addr, 0.0, 1, 1).await;
    let server = tokio::spawn(async move {
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let ctx = std::sync::Arc::new(ctx);
        let acceptor = ctx.clone();
        tokio::spawn(async move {
            // The first accepted socket is the phantom whose reply was lost.
            while let Ok(mut s) = acceptor.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut got = [0u8; 5];
                    if s.read_exact(&mut got).await.is_ok() {
                        let _ = s.write_all(b"world").await;
                        let _ = tx.send((got, s)).await;
                    }
                });
            }
        });
        let (got, s) = rx.recv().await.expect("a stream with data");
        (got, s, ctx)
    });
    let (ours, _) = UtpSocket::bind(loopback(), EndpointConfig::default())
        .await
        .expect("bind");
    let_libutp_listen().await;
    let mut stream = tokio::time::timeout(LIMIT, ours.connect(proxy))
        .await
        .expect("in time")
        .expect("connect despite the lost reply");
    stream.write_all(b"hello").await.expect("write");
    let mut reply = [0u8; 5];
    tokio::time::timeout(LIMIT, stream.read_exact(&mut reply))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(&reply, b"world");
    let (got, _s, _ctx) = tokio::time::timeout(LIMIT, server)
        .await
        .expect("in time")
        .expect("join");
    assert_eq!(&got, b"hello");
    assert!(stream.stats().expect("stats").retransmits >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_initiator_to_libutp_with_two_percent_loss() {
    let their_addr = free_port();
    let ctx = UtpUdpContext::new_udp(their_addr)
        .await
        .expect("libutp bind");
    let proxy = lossy_proxy(their_addr, 0.02, 7).await;
    let payload = data(1 << 20, 3);
    let expected = payload.clone();
    // libutp offers a connection at its SYN; if its reply is lost we retry
    // under a new id, so the first accepted stream may be a phantom that
    // never gets data. Serve every accepted stream; the real one answers.
    let server = tokio::spawn(async move {
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let ctx = std::sync::Arc::new(ctx);
        let acceptor = ctx.clone();
        tokio::spawn(async move {
            while let Ok(mut s) = acceptor.accept().await {
                let expected = expected.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut got = vec![0u8; expected.len()];
                    if s.read_exact(&mut got).await.is_ok() {
                        let _ = s.write_all(b"ok").await;
                        let _ = tx.send((got == expected, s)).await;
                    }
                });
            }
        });
        let (same, s) = rx.recv().await.expect("a stream with data");
        (same, s, ctx)
    });
    let (ours, _) = UtpSocket::bind(loopback(), EndpointConfig::default())
        .await
        .expect("bind");
    let_libutp_listen().await;
    let mut stream = tokio::time::timeout(LIMIT, ours.connect(proxy))
        .await
        .expect("in time")
        .expect("connect");
    stream.write_all(&payload).await.expect("write");
    let mut ok = [0u8; 2];
    tokio::time::timeout(LIMIT, stream.read_exact(&mut ok))
        .await
        .expect("in time")
        .expect("read");
    let (same, _s, _ctx) = tokio::time::timeout(LIMIT, server)
        .await
        .expect("in time")
        .expect("join");
    assert!(same);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libutp_initiator_to_us_with_two_percent_loss() {
    let (ours, _) = UtpSocket::bind(loopback(), EndpointConfig::default())
        .await
        .expect("bind");
    let proxy = lossy_proxy(ours.local_addr().expect("addr"), 0.02, 8).await;
    let payload = data(1 << 20, 4);
    let expected = payload.clone();
    let client = tokio::spawn(async move {
        let ctx = UtpUdpContext::new_udp(free_port())
            .await
            .expect("libutp bind");
        let mut s = ctx.connect(proxy).await.expect("libutp connect");
        s.write_all(&payload).await.expect("libutp write");
        let mut ok = [0u8; 2];
        s.read_exact(&mut ok).await.expect("libutp read");
        (s, ctx)
    });
    let mut stream = tokio::time::timeout(LIMIT, ours.accept())
        .await
        .expect("in time")
        .expect("accept");
    let mut got = vec![0u8; expected.len()];
    tokio::time::timeout(LIMIT, stream.read_exact(&mut got))
        .await
        .expect("in time")
        .expect("read");
    assert!(got == expected);
    stream.write_all(b"ok").await.expect("write");
    let _ = tokio::time::timeout(LIMIT, client)
        .await
        .expect("in time")
        .expect("join");
}
