//! netsim benchmarks: TCP throughput through one NAT next to loopback TCP,
//! the simulator's added round-trip latency, and 10-host setup/teardown.
//! Run: `cargo bench -p netsim` (as root).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use netsim::{NatPreset, Network, Topology};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

const SECS: f64 = 3.0;

async fn sink(l: TcpListener) -> (u64, f64) {
    let (mut c, _) = l.accept().await.expect("accept");
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    let t0 = Instant::now();
    loop {
        let n = c.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    (total, t0.elapsed().as_secs_f64())
}

async fn source(to: (Ipv4Addr, u16)) {
    let mut c = TcpStream::connect(to).await.expect("connect");
    let buf = vec![0u8; 256 * 1024];
    let t0 = Instant::now();
    while t0.elapsed().as_secs_f64() < SECS {
        c.write_all(&buf).await.expect("write");
    }
}

fn gbps((bytes, secs): (u64, f64)) -> f64 {
    bytes as f64 * 8.0 / secs / 1e9
}

fn loopback_tcp() -> f64 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        let s = tokio::spawn(sink(l));
        source((Ipv4Addr::LOCALHOST, port)).await;
        gbps(s.await.expect("join"))
    })
}

fn nat_tcp() -> f64 {
    let mut t = Topology::new();
    let r = t.router("nat", NatPreset::PortRestrictedCone);
    let c = t.host("client", r);
    let s = t.public_host("server");
    let s_ip = t.ip(s);
    let net = Network::start(&t).expect("start");
    let server = net
        .spawn(s, || async {
            let l = TcpListener::bind("0.0.0.0:5001").await.expect("bind");
            sink(l).await
        })
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(100));
    net.spawn(c, move || source((s_ip, 5001)))
        .expect("spawn")
        .join()
        .expect("client");
    gbps(server.join().expect("server"))
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p) as usize]
}

async fn ping_pong(s: &UdpSocket, to: (Ipv4Addr, u16), n: usize) -> Vec<f64> {
    let mut rtts = Vec::with_capacity(n);
    let mut buf = [0u8; 64];
    for i in 0..n + 100 {
        let t0 = Instant::now();
        s.send_to(&[1u8; 32], to).await.expect("send");
        s.recv(&mut buf).await.expect("recv");
        if i >= 100 {
            rtts.push(t0.elapsed().as_secs_f64() * 1e6);
        }
    }
    rtts
}

async fn echo(s: UdpSocket, n: usize) {
    let mut buf = [0u8; 64];
    for _ in 0..n {
        let (k, from) = s.recv_from(&mut buf).await.expect("recv");
        s.send_to(&buf[..k], from).await.expect("send");
    }
}

const PINGS: usize = 5000;

fn loopback_rtt() -> Vec<f64> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let srv = std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async {
            echo(
                UdpSocket::bind("127.0.0.1:47001").await.expect("bind"),
                PINGS + 100,
            )
            .await
        })
    });
    std::thread::sleep(Duration::from_millis(100));
    let r = rt.block_on(async {
        let s = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        ping_pong(&s, (Ipv4Addr::LOCALHOST, 47001), PINGS).await
    });
    srv.join().expect("echo");
    r
}

fn sim_rtt() -> Vec<f64> {
    let mut t = Topology::new();
    let a = t.public_host("a");
    let b = t.public_host("b");
    let b_ip = t.ip(b);
    let net = Network::start(&t).expect("start");
    let srv = net
        .spawn(b, || async {
            echo(
                UdpSocket::bind("0.0.0.0:7").await.expect("bind"),
                PINGS + 100,
            )
            .await
        })
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(100));
    let r = net
        .spawn(a, move || async move {
            let s = UdpSocket::bind("0.0.0.0:0").await.expect("bind");
            ping_pong(&s, (b_ip, 7), PINGS).await
        })
        .expect("spawn")
        .join()
        .expect("ping");
    srv.join().expect("echo");
    r
}

fn setup_teardown_10() -> Vec<f64> {
    (0..5)
        .map(|_| {
            let mut t = Topology::new();
            let r1 = t.router("r1", NatPreset::PortRestrictedCone);
            let r2 = t.router("r2", NatPreset::Symmetric);
            for i in 0..4 {
                t.host(&format!("a{i}"), r1);
                t.host(&format!("b{i}"), r2);
            }
            t.public_host("s1");
            t.public_host("s2");
            let t0 = Instant::now();
            let net = Network::start(&t).expect("start");
            let up = t0.elapsed();
            drop(net);
            let total = t0.elapsed();
            let _ = up;
            total.as_secs_f64() * 1000.0
        })
        .collect()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!(
        "netsim benchmarks ({} s TCP transfers, {PINGS} UDP round trips)",
        SECS
    );
    let lo = loopback_tcp();
    let nat = nat_tcp();
    println!("tcp_throughput_loopback_gbps      {lo:.2}");
    println!("tcp_throughput_through_nat_gbps   {nat:.2}");
    let mut lo_rtt = loopback_rtt();
    let mut sim = sim_rtt();
    let (lo50, sim50, sim99) = (
        percentile(&mut lo_rtt, 0.5),
        percentile(&mut sim, 0.5),
        percentile(&mut sim, 0.99),
    );
    println!("udp_rtt_loopback_p50_us           {lo50:.1}");
    println!("udp_rtt_through_sim_p50_us        {sim50:.1}   (p99 {sim99:.1})");
    println!(
        "added_rtt_p50_us                  {:.1}   (two router traversals per round trip)",
        sim50 - lo50
    );
    let mut st = setup_teardown_10();
    println!(
        "setup_teardown_10_hosts_ms_median {:.1}   (min {:.1}, max {:.1})",
        percentile(&mut st, 0.5),
        st[0],
        st[st.len() - 1]
    );
}
