//! `crust-chat --probe`: the router probe from the terminal client, against
//! a real probe server on two loopback addresses (127.0.0.1 and 127.0.0.2,
//! so no NAT), with no profile and no chat screen.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::process::Output;

use crust::probe::ProbeServer;

/// A probe server with free ports on both loopback addresses.
async fn server() -> (ProbeServer, SocketAddr) {
    let server = ProbeServer::start_on_loopback().await.unwrap();
    let primary = server.primary();
    (server, primary)
}

/// Runs the real binary on a blocking thread, so the probe server keeps
/// answering meanwhile.
async fn crust_chat(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_crust-chat"))
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn probe_prints_the_findings_and_the_report_and_sends_nothing_unasked() {
    let (_server, addr) = server().await;
    let out = crust_chat(vec![
        "--probe".into(),
        "--no-upnp".into(),
        "--server".into(),
        addr.to_string(),
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("UDP:                 works"), "{stdout}");
    assert!(stdout.contains("behind a NAT:        no"), "{stdout}");
    // The exact JSON, masked, and nothing sent without a collector.
    assert!(stdout.contains("(addresses masked"), "{stdout}");
    assert!(stdout.contains("\"version\""), "{stdout}");
    assert!(!stdout.contains("127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("nothing was sent"), "{stdout}");
    // No chat screen was opened.
    assert!(!stdout.contains("\x1b[?1049h"));
}

#[tokio::test]
async fn probe_without_a_server_says_what_it_needs() {
    let out = crust_chat(vec!["--probe".into()]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--server IP:PORT"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
