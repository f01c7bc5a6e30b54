//! The real `utpcat` binary end to end on 127.0.0.1: to itself, and to and
//! from libutp (through `libutp-rs2`).

// Test helpers panic on failure, like the tests.
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use libutp_rs2::UtpUdpContext;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const UTPCAT: &str = env!("CARGO_BIN_EXE_utpcat");
const LIMIT: Duration = Duration::from_secs(60);

fn payload(len: usize, salt: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(salt).wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

fn sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

/// A loopback UDP port that was free a moment ago.
fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_file(dir: &Path, name: &str, data: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    File::create(&path).unwrap().write_all(data).unwrap();
    path
}

/// Waits for `child` up to `limit`; kills it and panics when it overruns.
fn wait(child: &mut Child, what: &str, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn listener(port: u16, out: &Path) -> Child {
    Command::new(UTPCAT)
        .args(["-l", "-p", &port.to_string(), "-s", "127.0.0.1"])
        .stdin(Stdio::null())
        .stdout(File::create(out).unwrap())
        .spawn()
        .unwrap()
}

fn sender(port: u16, input: &Path) -> Child {
    Command::new(UTPCAT)
        .args(["127.0.0.1", &port.to_string()])
        .stdin(File::open(input).unwrap())
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn a_multi_megabyte_file_goes_through_utpcat_to_utpcat() {
    let dir = tempfile::tempdir().unwrap();
    let data = payload(6 << 20, 1);
    let input = write_file(dir.path(), "in", &data);
    let out = dir.path().join("out");
    let port = free_port();
    let mut rx = listener(port, &out);
    // A SYN sent before the listener binds is simply resent.
    std::thread::sleep(Duration::from_millis(100));
    let mut tx = sender(port, &input);
    let tx_status = wait(&mut tx, "sender", LIMIT);
    let rx_status = wait(&mut rx, "listener", LIMIT);
    assert!(tx_status.success(), "sender: {tx_status}");
    assert!(rx_status.success(), "listener: {rx_status}");
    let got = std::fs::read(&out).unwrap();
    assert_eq!(got.len(), data.len());
    assert_eq!(sha256(&got), sha256(&data));
    assert!(got == data);
}

#[test]
fn an_empty_stdin_makes_an_empty_file_and_both_exit() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_file(dir.path(), "in", b"");
    let out = dir.path().join("out");
    let port = free_port();
    let mut rx = listener(port, &out);
    std::thread::sleep(Duration::from_millis(100));
    let mut tx = sender(port, &input);
    assert!(wait(&mut tx, "sender", LIMIT).success());
    assert!(wait(&mut rx, "listener", LIMIT).success());
    assert!(std::fs::read(&out).unwrap().is_empty());
}

#[test]
fn the_sender_fails_when_nobody_listens() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_file(dir.path(), "in", b"hello");
    let mut tx = sender(free_port(), &input);
    let status = wait(&mut tx, "sender", LIMIT);
    assert!(!status.success());
}

#[test]
fn bad_command_lines_are_refused() {
    for args in [
        &["-l"][..],
        &["127.0.0.1"][..],
        &["-l", "-p", "1", "127.0.0.1", "2"][..],
    ] {
        let status = Command::new(UTPCAT)
            .args(args)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "{args:?} was accepted");
    }
}

/// utpcat sends to a libutp acceptor; libutp receives it all, then closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utpcat_sends_to_libutp() {
    let dir = tempfile::tempdir().unwrap();
    let data = payload(4 << 20, 2);
    let input = write_file(dir.path(), "in", &data);
    let port = free_port();
    let ctx = UtpUdpContext::new_udp(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    let server = tokio::spawn(async move {
        let mut s = ctx.accept().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        // libutp-rs2 has no shutdown: dropping the stream sends its FIN.
        drop(s);
        (got, ctx)
    });
    // libutp-rs2 only takes a connection while `accept` is pending.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut tx = sender(port, &input);
    let (got, _ctx) = tokio::time::timeout(LIMIT, server)
        .await
        .expect("libutp received in time")
        .unwrap();
    let status = tokio::task::spawn_blocking(move || wait(&mut tx, "sender", LIMIT))
        .await
        .unwrap();
    assert!(status.success(), "sender: {status}");
    assert_eq!(got.len(), data.len());
    assert_eq!(sha256(&got), sha256(&data));
}

/// libutp sends to a utpcat listener, which writes it all and exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libutp_sends_to_utpcat() {
    let dir = tempfile::tempdir().unwrap();
    let data = payload(4 << 20, 3);
    let out = dir.path().join("out");
    let port = free_port();
    let mut rx = listener(port, &out);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ctx = UtpUdpContext::new_udp(SocketAddr::from(([127, 0, 0, 1], free_port())))
        .await
        .unwrap();
    let to_send = data.clone();
    let client = tokio::spawn(async move {
        let mut s = ctx
            .connect(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .unwrap();
        s.write_all(&to_send).await.unwrap();
        // libutp-rs2 has no shutdown: dropping the stream sends its FIN
        // after the queued bytes. Keep the context running meanwhile.
        drop(s);
        ctx
    });
    let status = tokio::task::spawn_blocking(move || wait(&mut rx, "listener", LIMIT))
        .await
        .unwrap();
    assert!(status.success(), "listener: {status}");
    let _ctx = tokio::time::timeout(LIMIT, client)
        .await
        .expect("libutp finished in time")
        .unwrap();
    let got = std::fs::read(&out).unwrap();
    assert_eq!(got.len(), data.len());
    assert_eq!(sha256(&got), sha256(&data));
}
