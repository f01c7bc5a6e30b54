//! The real `crust-node` binary, started for a test and killed when the
//! test drops it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use crust::PeerId;

use super::PATIENCE;

pub struct RunningNode {
    pub child: Child,
    pub id: PeerId,
    /// The TCP listener's address.
    pub addr: SocketAddr,
    /// Every line the node prints, stdout and stderr interleaved. Both pipes
    /// are read to the end, so the node never writes into a closed pipe.
    log: mpsc::Receiver<String>,
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `crust-node` on loopback (TCP and uTP, UPnP off, the tests'
/// network id) with `extra` arguments, and waits for its id and address.
pub fn start_node(extra: &[&str]) -> RunningNode {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crust-node"))
        .args(["--ephemeral", "--listen", "127.0.0.1:0"])
        .args(["--utp", "127.0.0.1:0", "--network", "crust-tests"])
        .arg("--no-upnp")
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("crust-node starts");
    let (tx, log) = mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let stderr = BufReader::new(child.stderr.take().unwrap());
    for pipe in [
        Box::new(stdout) as Box<dyn BufRead + Send>,
        Box::new(stderr),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            pipe.lines()
                .map_while(Result::ok)
                .for_each(|line| drop(tx.send(line)))
        });
    }
    let (mut id, mut addr) = (None, None);
    while id.is_none() || addr.is_none() {
        let line = log
            .recv_timeout(PATIENCE)
            .expect("crust-node prints its id and address");
        if let Some(rest) = line.strip_prefix("peer id: ") {
            id = Some(rest.parse().unwrap());
        }
        if let Some(rest) = line.strip_prefix("listening on tcp:") {
            addr = Some(rest.parse().unwrap());
        }
    }
    RunningNode {
        child,
        id: id.unwrap(),
        addr: addr.unwrap(),
        log,
    }
}

impl RunningNode {
    /// Waits for a printed line containing `needle`.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("crust-node never logged {needle:?}"),
            }
        }
    }
}

/// A fresh service on loopback, connected to `node`.
pub async fn connected_to(node: &RunningNode) -> super::Node {
    let mut us = super::Node::start().await;
    us.service.connect(node.id, &[node.addr]).await.unwrap();
    let id = node.id;
    us.expect("connect", |e| {
        matches!(e, crust::Event::ConnectSuccess { peer, .. } if peer == id).then_some(())
    })
    .await;
    us
}
