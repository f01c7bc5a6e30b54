//! Two real chat-core profiles, Alice and Bob, that befriend each other
//! over loopback and exchange a few messages (delivered and read), for
//! the README screenshot (`assets/screenshots/make-gui.sh`).
//!
//! `cargo run -p chat-gui --example demo_profiles -- <DIR>` makes
//! `<DIR>/alice` and `<DIR>/bob`.

#![allow(missing_docs)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use chat_core::{Event, MessageState, Node, NodeConfig, NodeEvents, Profile};

const NETWORK: &str = "chat-gui-demo";

/// Waits up to 20 s for an event `pick` accepts.
async fn until<T>(
    events: &mut NodeEvents,
    what: &str,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> anyhow::Result<T> {
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(event) = events.recv().await {
            if let Some(found) = pick(&event) {
                return Ok(found);
            }
        }
        bail!("the node stopped before {what}")
    })
    .await
    .map_err(|_| anyhow!("timed out waiting for {what}"))?
}

/// Creates profile `name` in `dir/<name in lower case>` and starts it.
async fn open(dir: &Path, name: &str) -> anyhow::Result<(Node, NodeEvents)> {
    let dir = dir.join(name.to_lowercase());
    let profile =
        Profile::create(&dir, name, None).with_context(|| format!("creating {}", dir.display()))?;
    Node::open(profile, NodeConfig::loopback(NETWORK))
        .await
        .context("starting a node")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir: PathBuf = std::env::args_os()
        .nth(1)
        .context("usage: demo_profiles <DIR>")?
        .into();
    let (alice, mut alice_events) = open(&dir, "Alice").await?;
    let (bob, mut bob_events) = open(&dir, "Bob").await?;

    alice.add_contact(
        &bob.my_invite()?,
        "Hi Bob, it's Alice from the climbing club!",
    )?;
    let request = until(&mut bob_events, "the friend request", |e| match e {
        Event::FriendRequest(r) => Some(r.from),
        _ => None,
    })
    .await?;
    bob.accept(&request)?;
    until(&mut alice_events, "the acceptance", |e| {
        matches!(e, Event::FriendAccepted { .. }).then_some(())
    })
    .await?;

    let lines = [
        (true, "Hey Bob! Are we still on for Saturday?"),
        (false, "Yes! 10 am at the north wall."),
        (false, "I'll bring the new rope.\nAnd coffee, obviously."),
        (
            true,
            "Perfect. This chat goes straight from my laptop to yours, no server in between.",
        ),
        (false, "Even through both our routers?"),
        (
            true,
            "Hole punching, and a relay through a friend when that fails.",
        ),
        (false, "Nice. See you Saturday!"),
    ];
    let (alice_id, bob_id) = (alice.id(), bob.id());
    for (from_alice, text) in lines {
        let (sender, to, events) = if from_alice {
            (&alice, bob_id, &mut bob_events)
        } else {
            (&bob, alice_id, &mut alice_events)
        };
        sender.send(&to, text)?;
        until(events, "a message", |e| {
            matches!(e, Event::MessageReceived(m) if m.text == text).then_some(())
        })
        .await?;
        // Read at once, as in an open window.
        let receiver = if from_alice { &bob } else { &alice };
        receiver.mark_read(&if from_alice { alice_id } else { bob_id })?;
    }
    // Alice's last message read by Bob: wait for the receipt.
    until(&mut alice_events, "the read receipt", |e| {
        matches!(
            e,
            Event::MessageStateChanged {
                state: MessageState::Read,
                ..
            }
        )
        .then_some(())
    })
    .await
    .ok();
    // The receipts of the other messages too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    alice.shutdown().await;
    bob.shutdown().await;
    println!("{}", dir.display());
    Ok(())
}
