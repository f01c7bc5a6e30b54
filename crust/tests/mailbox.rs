//! `crust-node --hold`: the real binary holds sealed mail in SQLite for a
//! peer that is away, hands it only to that peer, and keeps it across a
//! restart until the peer removes it.
#![allow(clippy::unwrap_used)]

mod common;

use common::Node;
use common::process::{RunningNode, connected_to, start_node};
use crust::mailbox::{Item, Message};
use crust::{Event, Priority};

/// Sends `request` to the holder and waits for its answer.
async fn ask(us: &mut Node, node: &RunningNode, request: Message) -> Message {
    us.service
        .send(&node.id, request.encode(), Priority::NORMAL)
        .await
        .unwrap();
    let id = node.id;
    us.expect("a mailbox answer", |e| match e {
        Event::NewMessage { peer, data } if peer == id => Message::decode(&data).unwrap(),
        _ => None,
    })
    .await
}

async fn collect(us: &mut Node, node: &RunningNode) -> Vec<Item> {
    match ask(us, node, Message::Collect).await {
        Message::Items { items, .. } => items,
        other => panic!("expected items, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_node_keeps_mail_for_its_recipient_only_and_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mail.sqlite");
    let db = db.to_str().unwrap();
    let node = start_node(&["--hold", db]);
    let mut sender = connected_to(&node).await;
    let mut recipient = Node::start().await;
    let recipient_id = recipient.id();

    let answer = ask(
        &mut sender,
        &node,
        Message::Deposit {
            tag: 1,
            recipient: recipient_id,
            blob: b"sealed bytes".to_vec(),
        },
    )
    .await;
    assert_eq!(answer, Message::Deposited { tag: 1 });
    let too_big = ask(
        &mut sender,
        &node,
        Message::Deposit {
            tag: 2,
            recipient: recipient_id,
            blob: vec![0; crust::mailbox::DEFAULT_MAX_BLOB + 1],
        },
    )
    .await;
    assert!(
        matches!(too_big, Message::Refused { tag: 2, .. }),
        "{too_big:?}"
    );
    // The sender is not the recipient: nothing for it.
    assert!(collect(&mut sender, &node).await.is_empty());

    // The holder restarts on the same database; the recipient collects.
    drop(node);
    let node = start_node(&["--hold", db]);
    recipient
        .service
        .connect(node.id, &[node.addr])
        .await
        .unwrap();
    let items = collect(&mut recipient, &node).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].blob, b"sealed bytes");
    assert_eq!(items[0].from, sender.id());
    // Removed once stored: gone.
    recipient
        .service
        .send(
            &node.id,
            Message::Remove {
                ids: vec![items[0].id],
            }
            .encode(),
            Priority::NORMAL,
        )
        .await
        .unwrap();
    assert!(collect(&mut recipient, &node).await.is_empty());
}
