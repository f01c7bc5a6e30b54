//! The driver over real sockets, on 127.0.0.1 only.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{UtpSocket, UtpStream};
use crate::utp::proto::EndpointConfig;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn pair() -> (UtpSocket, UtpSocket) {
    let (a, _) = UtpSocket::bind(loopback(), EndpointConfig::default())
        .await
        .expect("bind a");
    let (b, _) = UtpSocket::bind(loopback(), EndpointConfig::default())
        .await
        .expect("bind b");
    (a, b)
}

/// Connects `a` to `b`. The initiator speaks first (`first`), and `b`'s
/// `accept` returns once that DATA has arrived.
async fn connect(a: &UtpSocket, b: &UtpSocket, first: &[u8]) -> (UtpStream, UtpStream) {
    let addr = b.local_addr().expect("addr");
    let mut client = a.connect(addr).await.expect("connect");
    client.write_all(first).await.expect("first write");
    let server = tokio::time::timeout(Duration::from_secs(10), b.accept())
        .await
        .expect("in time")
        .expect("accept");
    (client, server)
}

#[tokio::test]
async fn echo_over_loopback() {
    let (a, b) = pair().await;
    let (mut client, mut server) = connect(&a, &b, b"ping").await;
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).await.expect("read");
    assert_eq!(&buf, b"ping");
    server.write_all(b"pong").await.expect("write back");
    client.read_exact(&mut buf).await.expect("read back");
    assert_eq!(&buf, b"pong");
}

#[tokio::test]
async fn accept_waits_for_the_initiators_first_bytes() {
    let (a, b) = pair().await;
    let mut client = a
        .connect(b.local_addr().expect("addr"))
        .await
        .expect("connect");
    let early = tokio::time::timeout(Duration::from_millis(200), b.accept()).await;
    assert!(early.is_err(), "accepted before any data");
    client.write_all(b"hi").await.expect("write");
    let mut server = tokio::time::timeout(Duration::from_secs(5), b.accept())
        .await
        .expect("in time")
        .expect("accept");
    let mut buf = [0u8; 2];
    server.read_exact(&mut buf).await.expect("read");
    assert_eq!(&buf, b"hi");
}

#[tokio::test]
async fn bulk_transfer_arrives_intact_and_ends() {
    let (a, b) = pair().await;
    let data: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let expected = data.clone();
    let (mut client, mut server) = connect(&a, &b, &data[..1]).await;
    let sender = tokio::spawn(async move {
        client.write_all(&data[1..]).await.expect("write");
        client.shutdown().await.expect("shutdown");
        // Keep reading until the peer closes too.
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.expect("read end");
        client
    });
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), server.read_to_end(&mut got))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(got.len(), expected.len());
    assert!(got == expected);
    server.shutdown().await.expect("shutdown");
    let client = tokio::time::timeout(Duration::from_secs(30), sender)
        .await
        .expect("in time")
        .expect("join");
    drop(client);
}

#[tokio::test]
async fn other_datagrams_reach_the_channel() {
    let (a, _) = UtpSocket::bind(loopback(), EndpointConfig::default())
        .await
        .expect("bind");
    let (b, mut other) = UtpSocket::bind(loopback(), EndpointConfig::default())
        .await
        .expect("bind");
    let to = b.local_addr().expect("addr");
    a.send_datagram(b"CRST hello", to).await.expect("send");
    let (data, from) = tokio::time::timeout(Duration::from_secs(5), other.recv())
        .await
        .expect("in time")
        .expect("datagram");
    assert_eq!(data, b"CRST hello");
    assert_eq!(from, a.local_addr().expect("addr"));
}

#[tokio::test]
async fn many_streams_on_one_socket() {
    let (a, b) = pair().await;
    let addr = b.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let mut s = b.accept().await.expect("accept");
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                s.read_to_end(&mut got).await.expect("read");
                s.write_all(&got).await.expect("echo");
                s.shutdown().await.expect("shutdown");
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest).await;
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        b
    });
    let mut clients = Vec::new();
    for i in 0..16u8 {
        let a = a.clone();
        clients.push(tokio::spawn(async move {
            let mut s = a.connect(addr).await.expect("connect");
            let msg = vec![i; 50_000];
            s.write_all(&msg).await.expect("write");
            s.shutdown().await.expect("shutdown");
            let mut back = Vec::new();
            s.read_to_end(&mut back).await.expect("read");
            assert_eq!(back, msg);
        }));
    }
    for c in clients {
        tokio::time::timeout(Duration::from_secs(60), c)
            .await
            .expect("in time")
            .expect("client");
    }
    let _b = server.await.expect("server");
}

#[tokio::test]
async fn connect_to_silent_port_times_out() {
    // A bound socket that never answers: the SYN goes unanswered.
    let silent = std::net::UdpSocket::bind(loopback()).expect("bind");
    let (a, _) = UtpSocket::bind(loopback(), {
        let mut c = EndpointConfig::default();
        c.connection.initial_rto = Duration::from_millis(50);
        c
    })
    .await
    .expect("bind");
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        a.connect(silent.local_addr().expect("addr")),
    )
    .await
    .expect("in time")
    .expect_err("no answer");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
}

/// Crust's own datagrams start with `CRST`; byte 4 says which call sent it.
fn tagged(low_ttl: bool, i: u8) -> [u8; 6] {
    [b'C', b'R', b'S', b'T', u8::from(low_ttl), i]
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datagram_sent_with_a_ttl_is_the_only_one_that_carries_it() {
    use crate::utp::proto::looks_like_utp;

    let (a, _) = UtpSocket::bind(loopback(), EndpointConfig::default())
        .await
        .expect("bind");
    let normal = socket2::SockRef::from(&*a.shared.socket)
        .ttl_v4()
        .expect("ttl");
    assert_ne!(normal, 2);
    let raw = std::net::UdpSocket::bind(loopback()).expect("bind raw");
    super::sys::set_recv_ttl(&raw).expect("IP_RECVTTL");
    raw.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let to = raw.local_addr().expect("addr");

    // uTP SYNs from 20 connects race 20 low-TTL and 20 plain datagrams.
    let connects: Vec<_> = (0..20)
        .map(|_| {
            let a = a.clone();
            tokio::spawn(async move { a.connect(to).await })
        })
        .collect();
    let sender = {
        let a = a.clone();
        tokio::spawn(async move {
            for i in 0..20 {
                let n = a
                    .send_datagram_with_ttl(&tagged(true, i), to, 2)
                    .await
                    .expect("send with ttl");
                assert_eq!(n, 6);
                a.send_datagram(&tagged(false, i), to).await.expect("send");
            }
        })
    };
    let received = tokio::task::spawn_blocking(move || {
        (0..60)
            .map(|_| super::sys::recv_with_ttl(&raw).expect("recv"))
            .collect::<Vec<_>>()
    })
    .await
    .expect("receiver");
    sender.await.expect("sender");
    for c in connects {
        c.abort();
    }

    let (mut syns, mut low, mut plain) = (0, 0, 0);
    for (data, ttl) in received {
        let ttl = ttl.map(u32::from);
        if looks_like_utp(&data) {
            syns += 1;
            assert_eq!(ttl, Some(normal), "a uTP packet left with the wrong TTL");
        } else if data[4] == 1 {
            low += 1;
            assert_eq!(ttl, Some(2));
        } else {
            plain += 1;
            assert_eq!(
                ttl,
                Some(normal),
                "a plain datagram left with the wrong TTL"
            );
        }
    }
    assert_eq!((syns, low, plain), (20, 20, 20));
    // The socket's TTL is back where it was.
    let after = socket2::SockRef::from(&*a.shared.socket)
        .ttl_v4()
        .expect("ttl");
    assert_eq!(after, normal);
    for bad in [0, 256] {
        let e = a
            .send_datagram_with_ttl(b"CRST", to, bad)
            .await
            .expect_err("bad ttl");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    }
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_socket_is_fragmentable_between_mtu_probes() {
    // Only a first-time MTU probe leaves with "don't fragment"; the driver
    // switches back after each flush, so a transfer (whose probes loopback
    // accepts) ends with the socket fragmentable again.
    let (a, b) = pair().await;
    for s in [&a, &b] {
        let mode = super::sys::fragmentation(&*s.shared.socket, false).expect("mode");
        assert_eq!(mode, libc::IP_PMTUDISC_DONT);
    }
    let data = vec![7u8; 1 << 20];
    let (mut client, mut server) = connect(&a, &b, &data[..1]).await;
    let writer = tokio::spawn(async move {
        client.write_all(&data[1..]).await.expect("write");
        client.shutdown().await.expect("shutdown");
        client
    });
    let mut got = Vec::new();
    server.read_to_end(&mut got).await.expect("read");
    assert_eq!(got.len(), 1 << 20);
    let client = writer.await.expect("writer");
    let probes = client.stats().expect("stats").mtu_probes;
    assert!(probes > 0, "no MTU probe was sent");
    let mode = super::sys::fragmentation(&*a.shared.socket, false).expect("mode");
    assert_eq!(mode, libc::IP_PMTUDISC_DONT);
}

/// Sends 8 MiB from `a` to `b` over loopback with `config` on both ends;
/// returns the sender's path MTU.
#[cfg(target_os = "linux")]
async fn loopback_path_mtu(config: EndpointConfig) -> u16 {
    let (a, _) = UtpSocket::bind(loopback(), config.clone())
        .await
        .expect("bind a");
    let (b, _) = UtpSocket::bind(loopback(), config).await.expect("bind b");
    let data: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let (mut client, mut server) = connect(&a, &b, &data[..1]).await;
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        client.write_all(&sent[1..]).await.expect("write");
        client.shutdown().await.expect("shutdown");
        client
    });
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), server.read_to_end(&mut got))
        .await
        .expect("in time")
        .expect("read");
    assert!(got == data, "corrupted");
    let client = writer.await.expect("writer");
    client.path_mtu().expect("mtu")
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn two_crust_ends_find_loopbacks_large_mtu_by_default() {
    // Both ends announce crust's hello, so the MTU search starts from the
    // route's MTU: loopback carries 65535-byte packets, the DF probes find
    // far more than an Ethernet path's 1472 bytes, and the big datagrams
    // arrive intact (the driver's receive slots grow).
    let mtu = loopback_path_mtu(EndpointConfig::default()).await;
    println!("path MTU over loopback: {mtu}");
    assert!(mtu > 16_000, "path MTU {mtu}");
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn without_the_hello_loopback_stays_ethernet_sized_unless_forced() {
    let mut config = EndpointConfig::default();
    config.connection.crust_hello = false;
    let mtu = loopback_path_mtu(config.clone()).await;
    assert!(mtu <= 1472, "path MTU {mtu}");
    config.connection.mtu_from_interface = true;
    let mtu = loopback_path_mtu(config).await;
    assert!(mtu > 16_000, "path MTU {mtu}");
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn bulk_data_goes_as_gso_trains_over_loopback() {
    // Loopback takes UDP_SEGMENT sends (Linux ≥ 4.18); the driver turns
    // GSO off only when a send with it fails, and the bytes arrive intact
    // either way.
    let (a, b) = pair().await;
    let data: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let (mut client, mut server) = connect(&a, &b, &data[..1]).await;
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        client.write_all(&sent[1..]).await.expect("write");
        client.shutdown().await.expect("shutdown");
        client
    });
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), server.read_to_end(&mut got))
        .await
        .expect("in time")
        .expect("read");
    assert!(got == data, "corrupted");
    drop(writer.await.expect("writer"));
    assert!(
        a.shared.gso.load(std::sync::atomic::Ordering::Relaxed),
        "GSO was turned off on loopback"
    );
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_gro_train_arrives_as_its_datagrams() {
    // A GSO train of equal-sized datagrams (the last shorter) reaches a
    // socket with UDP_GRO on loopback as one message; the driver must hand
    // on each datagram as it was sent, in order.
    let (b, mut other) = UtpSocket::bind(loopback(), EndpointConfig::default())
        .await
        .expect("bind");
    let to = b.local_addr().expect("addr");
    let sender = tokio::net::UdpSocket::bind(loopback()).await.expect("bind");
    let datagrams: Vec<Vec<u8>> = (0..20u8)
        .map(|i| {
            let len = if i == 19 { 300 } else { 1200 };
            let mut d = b"CRST".to_vec();
            d.extend((0..len - 4).map(|k| i.wrapping_mul(31).wrapping_add(k as u8)));
            d
        })
        .collect();
    let segments: Vec<&[u8]> = datagrams.iter().map(Vec::as_slice).collect();
    sender.writable().await.expect("writable");
    let sent = sender
        .try_io(tokio::io::Interest::WRITABLE, || {
            super::sys::send_gso(&sender, &segments, to)
        })
        .expect("GSO send on loopback");
    assert_eq!(sent, datagrams.len());
    for (i, want) in datagrams.iter().enumerate() {
        let (data, _) = tokio::time::timeout(Duration::from_secs(5), other.recv())
            .await
            .expect("in time")
            .expect("datagram");
        assert_eq!(&data, want, "datagram {i}");
    }
}
