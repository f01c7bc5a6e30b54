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
        let mut reply = [0u8; 6];
        s.read_exact(&mut reply).await.expect("libutp read");
        assert_eq!(&reply, b"thanks");
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
    stream.write_all(b"thanks").await.expect("write");
    let _ctx = tokio::time::timeout(LIMIT, client)
        .await
        .expect("in time")
        .expect("join");
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
