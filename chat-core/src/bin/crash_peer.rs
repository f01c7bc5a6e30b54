//! A node in its own process, for chat-core's crash tests, which kill it
//! with SIGKILL. Not part of the product.
//!
//! ```text
//! chat-core-crash-peer send PROFILE NETWORK PEER COUNT   # send "msg 0".."msg COUNT-1", resuming
//! chat-core-crash-peer receive PROFILE NETWORK           # stay online, print what arrives
//! ```
//!
//! `send` prints `accepted N` once `Node::send` has returned for message N
//! (it is then on disk), resumes after the last message already in the
//! history, prints `done` when all are accepted, and keeps running so they
//! can be delivered. `receive` prints `received TEXT` per new message.

use std::io::Write;
use std::path::PathBuf;

use chat_core::{Event, Node, NodeConfig, Profile};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, dir, network) = match args.as_slice() {
        [mode, dir, network, ..] => (mode.as_str(), PathBuf::from(dir), network.as_str()),
        _ => return Err("usage: crash_peer send|receive PROFILE NETWORK [PEER COUNT]".into()),
    };
    // The test that starts us may have just released the profile; a
    // process it forks at that moment can hold the lock until it execs.
    let mut attempts = 0;
    let profile = loop {
        match Profile::open(&dir, None) {
            Err(chat_core::ProfileError::InUse(_)) if attempts < 50 => {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            other => break other?,
        }
    };
    let (node, mut events) = Node::open(profile, NodeConfig::loopback(network)).await?;
    let mut out = std::io::stdout();
    if mode == "send" {
        let peer: chat_core::PeerId = args.get(3).ok_or("missing PEER")?.parse()?;
        let count: usize = args.get(4).ok_or("missing COUNT")?.parse()?;
        let mut already = 0;
        let mut before = None;
        loop {
            let page = node.history(&peer, before, 1000)?;
            already += page.messages.iter().filter(|m| m.outgoing).count();
            match page.older {
                Some(c) => before = Some(c),
                None => break,
            }
        }
        for i in already..count {
            node.send(&peer, &format!("msg {i}"))?;
            writeln!(out, "accepted {i}")?;
            out.flush()?;
            // Give the killer a window in the middle of sending.
            tokio::task::yield_now().await;
        }
        writeln!(out, "done")?;
        out.flush()?;
    }
    while let Some(event) = events.recv().await {
        if let Event::MessageReceived(m) = event {
            writeln!(out, "received {}", m.text)?;
            out.flush()?;
        }
    }
    Ok(())
}
