//! Two and three nodes on loopback: invites, requests, chat, receipts,
//! offline delivery, presence, typing, key changes.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use chat_core::{
    ContactState, Event, MessageState, NodeError, Presence, Profile, ProfileError, Transport,
};
use common::{befriend, open, receive, start};

fn delivered(
    contact: chat_core::PeerId,
    id: chat_core::MessageId,
) -> impl FnMut(&Event) -> Option<()> {
    move |e| match e {
        Event::MessageStateChanged {
            contact: c,
            id: i,
            state: MessageState::Delivered,
        } if *c == contact && *i == id => Some(()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_befriend_by_invite_and_chat_both_ways_with_receipts() {
    let root = tempfile::tempdir().unwrap();
    let mut alice = start(root.path(), "alice").await;
    let mut bob = start(root.path(), "bob").await;
    // The invite travels as text.
    let invite: chat_core::Invite = alice.node.my_invite().unwrap().to_string().parse().unwrap();
    bob.node.add_contact(&invite, "hi, it's bob").unwrap();
    let request = alice
        .wait_for("request", |e| match e {
            Event::FriendRequest(r) => Some(r.clone()),
            _ => None,
        })
        .await;
    assert_eq!(request.from, bob.id());
    assert_eq!(request.name, "bob");
    assert_eq!(request.message, "hi, it's bob");
    assert_eq!(alice.node.requests().unwrap().len(), 1);
    alice.node.accept(&bob.id()).unwrap();
    assert!(alice.node.requests().unwrap().is_empty());
    let a = alice.id();
    bob.wait_for("accepted", |e| {
        matches!(e, Event::FriendAccepted { contact } if *contact == a).then_some(())
    })
    .await;
    assert_eq!(bob.node.contact(&a).unwrap().state, ContactState::Friend);
    assert_eq!(
        alice.node.contact(&bob.id()).unwrap().state,
        ContactState::Friend
    );

    let m1 = bob.node.send(&a, "hello alice").unwrap();
    assert_eq!(m1.state, MessageState::Queued);
    assert_eq!(receive(&mut alice, bob.id(), 1).await, ["hello alice"]);
    bob.wait_for("delivered", delivered(a, m1.id)).await;
    assert_eq!(
        bob.node.message(&a, &m1.id).unwrap().unwrap().state,
        MessageState::Delivered
    );

    let m2 = alice.node.send(&bob.id(), "hello bob").unwrap();
    assert_eq!(receive(&mut bob, a, 1).await, ["hello bob"]);
    alice
        .wait_for("delivered", delivered(bob.id(), m2.id))
        .await;

    // Read receipts.
    assert_eq!(alice.node.contact(&bob.id()).unwrap().unread, 1);
    assert_eq!(alice.node.mark_read(&bob.id()).unwrap(), 1);
    assert_eq!(alice.node.contact(&bob.id()).unwrap().unread, 0);
    bob.wait_for("read", |e| {
        matches!(e, Event::MessageStateChanged { id, state: MessageState::Read, .. } if *id == m1.id).then_some(())
    })
    .await;

    // Both histories hold the conversation in the same order.
    for (peer, other) in [(&alice, bob.id()), (&bob, a)] {
        let page = peer.node.history(&other, None, 10).unwrap();
        let texts: Vec<_> = page.messages.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, ["hello alice", "hello bob"]);
    }
    alice.stop().await;
    bob.stop().await;
}

/// A node with no TCP listener at all, only crust's uTP socket.
async fn start_utp_only(root: &std::path::Path, name: &str) -> common::Peer {
    let dir = root.join(name);
    let mut profile = Profile::create(&dir, name, None).unwrap();
    let mut settings = profile.settings().clone();
    settings.listen.clear();
    profile.set_settings(settings).unwrap();
    drop(profile);
    let mut config = chat_core::NodeConfig::loopback(common::NETWORK);
    config.crust.listen.clear();
    common::open_with(&dir, config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_without_tcp_chat_over_utp_and_report_the_utp_path() {
    let root = tempfile::tempdir().unwrap();
    let mut alice = start_utp_only(root.path(), "alice").await;
    let mut bob = start_utp_only(root.path(), "bob").await;
    let report = alice.node.network_report().await;
    assert!(
        report
            .listeners
            .iter()
            .all(|e| e.transport == Transport::Utp),
        "{report:?}"
    );
    // The invite carries only uTP endpoints, and survives the text form.
    let invite: chat_core::Invite = alice.node.my_invite().unwrap().to_string().parse().unwrap();
    assert!(!invite.addrs.is_empty());
    assert!(
        invite.addrs.iter().all(|e| e.transport == Transport::Utp),
        "{invite:?}"
    );
    bob.node.add_contact(&invite, "over udp").unwrap();
    let b = bob.id();
    alice
        .wait_for("request", |e| {
            matches!(e, Event::FriendRequest(r) if r.from == b).then_some(())
        })
        .await;
    alice.node.accept(&b).unwrap();
    let a = alice.id();
    bob.wait_for("accepted", |e| {
        matches!(e, Event::FriendAccepted { contact } if *contact == a).then_some(())
    })
    .await;
    let m = bob.node.send(&a, "hello over uTP").unwrap();
    assert_eq!(receive(&mut alice, b, 1).await, ["hello over uTP"]);
    bob.wait_for("delivered", delivered(a, m.id)).await;
    let m = alice.node.send(&b, "and back").unwrap();
    assert_eq!(receive(&mut bob, a, 1).await, ["and back"]);
    alice.wait_for("delivered", delivered(b, m.id)).await;

    // Both contact lists show the path in use: direct uTP.
    for (peer, other) in [(&alice, b), (&bob, a)] {
        let contact = peer.node.contact(&other).unwrap();
        let Presence::Online(info) = &contact.presence else {
            panic!("{other} offline: {contact:?}");
        };
        assert_eq!(info.transport, Transport::Utp);
        let path = contact.presence.path().unwrap();
        assert!(path.starts_with("direct uTP 127.0.0.1:"), "{path}");
        // What the peer said in its hello: uTP endpoints only.
        assert!(
            contact.addrs.iter().all(|e| e.transport == Transport::Utp),
            "{contact:?}"
        );
    }
    alice.stop().await;
    bob.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_are_dialled_over_both_transports_and_told_both() {
    let root = tempfile::tempdir().unwrap();
    let mut alice = start(root.path(), "alice").await;
    let mut bob = start(root.path(), "bob").await;
    let invite = alice.node.my_invite().unwrap();
    for transport in [Transport::Tcp, Transport::Utp] {
        assert!(
            invite.addrs.iter().any(|e| e.transport == transport),
            "{invite:?}"
        );
    }
    befriend(&mut alice, &mut bob).await;
    let contact = bob.node.contact(&alice.id()).unwrap();
    for transport in [Transport::Tcp, Transport::Utp] {
        assert!(
            contact.addrs.iter().any(|e| e.transport == transport),
            "{contact:?}"
        );
    }
    let path = contact.presence.path().unwrap();
    assert!(path.starts_with("direct "), "{path}");
    alice.stop().await;
    bob.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_chat_pairwise_and_messages_stay_in_their_conversation() {
    let root = tempfile::tempdir().unwrap();
    let mut a = start(root.path(), "a").await;
    let mut b = start(root.path(), "b").await;
    let mut c = start(root.path(), "c").await;
    befriend(&mut a, &mut b).await;
    befriend(&mut b, &mut c).await;
    befriend(&mut c, &mut a).await;
    let (ia, ib, ic) = (a.id(), b.id(), c.id());
    for i in 0..5 {
        a.node.send(&ib, &format!("a→b {i}")).unwrap();
        a.node.send(&ic, &format!("a→c {i}")).unwrap();
        b.node.send(&ic, &format!("b→c {i}")).unwrap();
    }
    let expect = |p: &str| (0..5).map(|i| format!("{p} {i}")).collect::<Vec<_>>();
    assert_eq!(receive(&mut b, ia, 5).await, expect("a→b"));
    let mut at_c = Vec::new();
    while at_c.len() < 10 {
        let (from, text) = c
            .wait_for("message", |e| match e {
                Event::MessageReceived(m) => Some((m.contact, m.text.clone())),
                _ => None,
            })
            .await;
        at_c.push((from, text));
    }
    let from_a: Vec<_> = at_c
        .iter()
        .filter(|(f, _)| *f == ia)
        .map(|(_, t)| t.clone())
        .collect();
    let from_b: Vec<_> = at_c
        .iter()
        .filter(|(f, _)| *f == ib)
        .map(|(_, t)| t.clone())
        .collect();
    assert_eq!(from_a, expect("a→c"));
    assert_eq!(from_b, expect("b→c"));
    assert_eq!(c.node.contacts().unwrap().len(), 2);
    assert!(c.node.search("a→c", Some(&ib), 10).unwrap().is_empty());
    for p in [a, b, c] {
        p.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_to_an_offline_friend_are_queued_and_delivered_when_it_returns() {
    let root = tempfile::tempdir().unwrap();
    let mut alice = start(root.path(), "alice").await;
    let mut bob = start(root.path(), "bob").await;
    befriend(&mut alice, &mut bob).await;
    let b = bob.id();
    let bob_dir = bob.stop().await;
    // A connection switch while they befriended (one connection replacing
    // the other) can have reported bob offline and online again already;
    // wait for the ContactOffline after which he stays offline.
    loop {
        alice
            .wait_for("bob offline", |e| {
                matches!(e, Event::ContactOffline { contact } if *contact == b).then_some(())
            })
            .await;
        if matches!(
            alice.node.contact(&b).unwrap().presence,
            Presence::Offline {
                last_seen_ms: Some(_),
                ..
            }
        ) {
            break;
        }
    }
    let queued: Vec<_> = (0..20)
        .map(|i| alice.node.send(&b, &format!("while away {i}")).unwrap())
        .collect();
    for m in &queued {
        assert_eq!(
            alice.node.message(&b, &m.id).unwrap().unwrap().state,
            MessageState::Queued
        );
    }
    assert_eq!(alice.node.contact(&b).unwrap().undelivered, 20);
    // Bob comes back on the same profile (a new port: alice finds him
    // because bob dials his contacts).
    let mut bob = open(&bob_dir).await;
    let texts = receive(&mut bob, alice.id(), 20).await;
    assert_eq!(
        texts,
        (0..20)
            .map(|i| format!("while away {i}"))
            .collect::<Vec<_>>()
    );
    for m in &queued {
        alice.wait_for("delivered", delivered(b, m.id)).await;
    }
    assert!(matches!(
        alice.node.contact(&b).unwrap().presence,
        Presence::Online(_)
    ));
    assert_eq!(alice.node.contact(&b).unwrap().undelivered, 0);
    alice.stop().await;
    bob.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_friends_queue_for_a_third_who_is_offline_and_everything_arrives_in_order() {
    let root = tempfile::tempdir().unwrap();
    let mut a = start(root.path(), "a").await;
    let mut b = start(root.path(), "b").await;
    let mut c = start(root.path(), "c").await;
    befriend(&mut c, &mut a).await;
    befriend(&mut c, &mut b).await;
    let ic = c.id();
    let c_dir = c.stop().await;
    for p in [&mut a, &mut b] {
        p.wait_for("c offline", |e| {
            matches!(e, Event::ContactOffline { contact } if *contact == ic).then_some(())
        })
        .await;
    }
    // a queues one by one, b a batch in one commit (all or nothing: a
    // batch with one oversized text writes nothing).
    let from_a: Vec<_> = (0..10)
        .map(|i| a.node.send(&ic, &format!("a{i}")).unwrap())
        .collect();
    let too_long = "x".repeat(chat_core::MAX_TEXT_BYTES + 1);
    assert!(matches!(
        b.node.send_many(&ic, &["fine", too_long.as_str()]),
        Err(NodeError::TooLarge { .. })
    ));
    assert_eq!(b.node.contact(&ic).unwrap().undelivered, 0);
    let texts: Vec<String> = (0..10).map(|i| format!("b{i}")).collect();
    let from_b = b.node.send_many(&ic, &texts).unwrap();
    assert_eq!(
        from_b.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (from_b[0].seq..from_b[0].seq + 10).collect::<Vec<_>>()
    );
    assert_eq!(b.node.contact(&ic).unwrap().undelivered, 10);

    let mut c = open(&c_dir).await;
    let (ia, ib) = (a.id(), b.id());
    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    while got_a.len() < 10 || got_b.len() < 10 {
        let m = c
            .wait_for("a message", |e| match e {
                Event::MessageReceived(m) => Some(m.clone()),
                _ => None,
            })
            .await;
        if m.contact == ia {
            got_a.push(m.text);
        } else if m.contact == ib {
            got_b.push(m.text);
        }
    }
    assert_eq!(got_a, (0..10).map(|i| format!("a{i}")).collect::<Vec<_>>());
    assert_eq!(got_b, texts);
    for (p, sent) in [(&mut a, &from_a), (&mut b, &from_b)] {
        for m in sent {
            p.wait_for("delivered", delivered(ic, m.id)).await;
        }
        assert_eq!(p.node.contact(&ic).unwrap().undelivered, 0);
    }
    // Each conversation holds only its own messages, in sender order.
    let page = c.node.history(&ib, None, 50).unwrap();
    assert_eq!(
        page.messages
            .iter()
            .map(|m| m.text.clone())
            .collect::<Vec<_>>(),
        texts
    );
    for p in [a, b, c] {
        p.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_display_name_changes_at_once_and_is_saved() {
    let root = tempfile::tempdir().unwrap();
    let alice = start(root.path(), "alice").await;
    alice.node.set_display_name("Alice Liddell").unwrap();
    assert_eq!(alice.node.display_name(), "Alice Liddell");
    assert_eq!(alice.node.my_invite().unwrap().name, "Alice Liddell");
    let dir = alice.stop().await;
    let profile = Profile::open(&dir, None).unwrap();
    assert_eq!(profile.settings().display_name, "Alice Liddell");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_survives_restarts_and_is_retried_until_answered() {
    let root = tempfile::tempdir().unwrap();
    let alice = start(root.path(), "alice").await;
    let bob = start(root.path(), "bob").await;
    let invite = alice.node.my_invite().unwrap();
    let listeners = alice.node.network_report().await.listeners;
    let alice_tcp = listeners
        .iter()
        .find(|e| e.transport == Transport::Tcp)
        .unwrap()
        .addr;
    let alice_utp = listeners
        .iter()
        .find(|e| e.transport == Transport::Utp)
        .unwrap()
        .addr;
    let alice_dir = alice.stop().await;
    // Alice is gone; bob's request and first message wait on disk, through
    // a restart of bob.
    bob.node.add_contact(&invite, "are you there?").unwrap();
    let m = bob.node.send(&invite.peer, "early message").unwrap();
    let bob_dir = bob.stop().await;
    let mut bob = open(&bob_dir).await;
    assert_eq!(
        bob.node.contact(&invite.peer).unwrap().state,
        ContactState::RequestSent
    );
    // Alice returns where the invite said; bob's redial finds her.
    let mut config = chat_core::NodeConfig::loopback(common::NETWORK);
    config.crust.listen = vec![alice_tcp];
    config.crust.utp = Some(alice_utp);
    let mut alice = common::open_with(&alice_dir, config).await;
    alice
        .wait_for("request", |e| {
            matches!(e, Event::FriendRequest(r) if r.message == "are you there?").then_some(())
        })
        .await;
    alice.node.accept(&bob.id()).unwrap();
    assert_eq!(receive(&mut alice, bob.id(), 1).await, ["early message"]);
    bob.wait_for("delivered", delivered(alice.id(), m.id)).await;
    alice.stop().await;
    bob.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declined_and_blocked_requests() {
    let root = tempfile::tempdir().unwrap();
    let mut alice = start(root.path(), "alice").await;
    let mut bob = start(root.path(), "bob").await;
    let carol = start(root.path(), "carol").await;
    let invite = alice.node.my_invite().unwrap();

    bob.node.add_contact(&invite, "hi").unwrap();
    alice
        .wait_for("bob's request", |e| {
            matches!(e, Event::FriendRequest(r) if r.from == bob.node.id()).then_some(())
        })
        .await;
    alice.node.decline(&bob.id()).unwrap();
    let a = alice.id();
    bob.wait_for("declined", |e| {
        matches!(e, Event::FriendDeclined { contact } if *contact == a).then_some(())
    })
    .await;
    assert_eq!(bob.node.contact(&a).unwrap().state, ContactState::Declined);
    assert!(matches!(
        bob.node.send(&a, "please"),
        Err(NodeError::Declined(_))
    ));
    assert!(matches!(
        alice.node.decline(&bob.id()),
        Err(NodeError::NoRequest(_))
    ));

    carol.node.add_contact(&invite, "hi").unwrap();
    alice
        .wait_for("carol's request", |e| {
            matches!(e, Event::FriendRequest(r) if r.from == carol.node.id()).then_some(())
        })
        .await;
    alice.node.block(&carol.id()).unwrap();
    assert!(alice.node.requests().unwrap().is_empty());
    assert_eq!(alice.node.blocked().unwrap(), [carol.id()]);
    assert!(matches!(
        alice.node.accept(&carol.id()),
        Err(NodeError::NoRequest(_))
    ));
    for p in [alice, bob, carol] {
        p.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_request_token_makes_old_invites_useless() {
    let root = tempfile::tempdir().unwrap();
    let mut alice = start(root.path(), "alice").await;
    let mut spammer = start(root.path(), "spammer").await;
    let friend = start(root.path(), "friend").await;
    let old = alice.node.my_invite().unwrap();
    let new = alice.node.rotate_request_token().unwrap();
    assert_ne!(old.token, new.token);
    assert_eq!(old.peer, new.peer);

    spammer.node.add_contact(&old, "buy now").unwrap();
    let a = alice.id();
    // The spammer reaches alice (so its request went out) ...
    spammer
        .wait_for("connected", |e| {
            matches!(e, Event::ContactOnline { contact, .. } if *contact == a).then_some(())
        })
        .await;
    friend.node.add_contact(&new, "hello").unwrap();
    let from = alice
        .wait_for("a request", |e| match e {
            Event::FriendRequest(r) => Some(r.from),
            _ => None,
        })
        .await;
    // ... but only the request with the current token is seen.
    assert_eq!(from, friend.id());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let requests = alice.node.requests().unwrap();
    assert_eq!(
        requests.iter().map(|r| r.from).collect::<Vec<_>>(),
        [friend.id()]
    );
    for p in [alice, spammer, friend] {
        p.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_key_claiming_to_be_a_contact_is_a_loud_warning_and_gets_nothing() {
    let root = tempfile::tempdir().unwrap();
    let mut alice = start(root.path(), "alice").await;
    let mut bob = start(root.path(), "bob").await;
    befriend(&mut alice, &mut bob).await;
    let old_bob = bob.id();
    bob.stop().await;
    // Bob is away (until Alice has seen him go, a message would still go
    // to the real Bob over the closing connection).
    alice
        .wait_for("bob offline", |e| match e {
            Event::ContactOffline { contact } if *contact == old_bob => Some(()),
            _ => None,
        })
        .await;
    let pending = alice.node.send(&old_bob, "for the real bob only").unwrap();

    let mut impostor = start(root.path(), "bob-new").await;
    impostor
        .node
        .add_contact_replacing(&alice.node.my_invite().unwrap(), "I lost my key", &old_bob)
        .unwrap();
    let (contact, new_key) = alice
        .wait_for("key changed", |e| match e {
            Event::KeyChanged { contact, new_key } => Some((*contact, *new_key)),
            _ => None,
        })
        .await;
    assert_eq!((contact, new_key), (old_bob, impostor.id()));
    let request = alice.node.requests().unwrap().pop().unwrap();
    assert_eq!(request.replaces, Some(old_bob));
    // Nothing meant for the old key went anywhere.
    assert_eq!(
        alice
            .node
            .message(&old_bob, &pending.id)
            .unwrap()
            .unwrap()
            .state,
        MessageState::Queued
    );
    assert!(
        impostor
            .events
            .try_recv()
            .is_none_or(|e| !matches!(e, Event::MessageReceived(_)))
    );
    // The safety code with the new key differs from the old one.
    assert_ne!(
        alice.node.safety_code(&old_bob),
        alice.node.safety_code(&impostor.id())
    );
    alice.stop().await;
    impostor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_presence_safety_codes_and_contact_management() {
    let root = tempfile::tempdir().unwrap();
    let mut alice = start(root.path(), "alice").await;
    let mut bob = start(root.path(), "bob").await;
    befriend(&mut alice, &mut bob).await;
    let (a, b) = (alice.id(), bob.id());
    // Typing needs the session to be up: wait until alice sees bob.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !matches!(
        alice.node.contact(&b).unwrap().presence,
        Presence::Online(_)
    ) {
        assert!(tokio::time::Instant::now() < deadline, "bob never online");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A round trip makes sure both sessions have said hello.
    let m = bob.node.send(&a, "ping").unwrap();
    bob.wait_for("delivered", delivered(a, m.id)).await;
    alice.node.set_typing(&b, true).unwrap();
    bob.wait_for("typing", |e| {
        matches!(e, Event::Typing { contact, typing: true } if *contact == a).then_some(())
    })
    .await;
    alice.node.set_typing(&b, false).unwrap();
    bob.wait_for("stopped", |e| {
        matches!(e, Event::Typing { contact, typing: false } if *contact == a).then_some(())
    })
    .await;

    let Presence::Online(path) = alice.node.contact(&b).unwrap().presence else {
        panic!("not online")
    };
    assert!(path.remote_addr.ip().is_loopback());
    assert_eq!(alice.node.safety_code(&b), bob.node.safety_code(&a));
    assert!(!alice.node.contact(&b).unwrap().verified);
    alice.node.set_verified(&b, true).unwrap();
    assert!(alice.node.contact(&b).unwrap().verified);
    alice.node.rename(&b, "Bobby").unwrap();
    assert_eq!(alice.node.contact(&b).unwrap().name, "Bobby");

    let too_long = "x".repeat(chat_core::MAX_TEXT_BYTES + 1);
    assert!(matches!(
        alice.node.send(&b, &too_long),
        Err(NodeError::TooLarge { .. })
    ));
    let stranger = chat_core::PeerId::from_bytes(*a.as_bytes()).unwrap();
    assert!(matches!(
        alice.node.send(&stranger, "x"),
        Err(NodeError::UnknownContact(_))
    ));
    assert!(matches!(
        alice
            .node
            .add_contact(&alice.node.my_invite().unwrap(), "me"),
        Err(NodeError::OwnId)
    ));

    let report = alice.node.network_report().await;
    assert!(report.connections.iter().any(|(p, _)| *p == b));
    // One TCP listener and the uTP socket.
    assert_eq!(report.listeners.len(), 2);

    alice.node.remove(&b).unwrap();
    assert!(alice.node.contacts().unwrap().is_empty());
    assert!(
        alice
            .node
            .history(&b, None, 10)
            .unwrap()
            .messages
            .is_empty()
    );
    alice.stop().await;
    bob.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_node_holds_its_profile_and_releases_it_on_shutdown() {
    let root = tempfile::tempdir().unwrap();
    let alice = start(root.path(), "alice").await;
    let err = Profile::open(&alice.dir, None).unwrap_err();
    assert!(matches!(err, ProfileError::InUse(_)), "{err}");
    let dir = alice.stop().await;
    Profile::open(&dir, None).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_import_carry_identity_contacts_and_history() {
    let root = tempfile::tempdir().unwrap();
    let mut alice = start(root.path(), "alice").await;
    let mut bob = start(root.path(), "bob").await;
    befriend(&mut alice, &mut bob).await;
    bob.node.send(&alice.id(), "remember this").unwrap();
    receive(&mut alice, bob.id(), 1).await;
    let backup = root.path().join("alice.crustchat");
    // Exported while running: the history copy is consistent.
    alice.node.export(&backup).unwrap();
    let (id, b) = (alice.id(), bob.id());
    alice.stop().await;
    bob.stop().await;

    let moved = root.path().join("alice-on-new-machine");
    chat_core::import(&backup, &moved).unwrap();
    let alice2 = open(&moved).await;
    assert_eq!(alice2.id(), id);
    assert_eq!(alice2.node.contact(&b).unwrap().state, ContactState::Friend);
    let hits = alice2.node.search("remember", None, 10).unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].contact, b);
    alice2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_history_stops_the_node_with_a_clear_error_and_is_not_overwritten() {
    let root = tempfile::tempdir().unwrap();
    let alice = start(root.path(), "alice").await;
    let dir = alice.stop().await;
    let history = dir.join("history.sqlite");
    let mut bytes = std::fs::read(&history).unwrap();
    assert!(bytes.len() >= 100);
    // Clobber the SQLite header.
    bytes[..16].copy_from_slice(b"not a database!!");
    std::fs::write(&history, &bytes).unwrap();
    let _ = std::fs::remove_file(dir.join("history.sqlite-wal"));
    let _ = std::fs::remove_file(dir.join("history.sqlite-shm"));

    let profile = Profile::open(&dir, None).unwrap();
    let err = chat_core::Node::open(profile, chat_core::NodeConfig::loopback(common::NETWORK))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            chat_core::OpenError::Store(chat_core::StoreError::Damaged { .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("damaged"), "{err}");
    assert_eq!(
        std::fs::read(&history).unwrap(),
        bytes,
        "the damaged file was modified"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passphrase_protected_profile_chats_after_the_right_passphrase() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("secret");
    let id = Profile::create(&dir, "secret", Some("hunter2"))
        .unwrap()
        .peer_id();
    assert!(matches!(
        Profile::open(&dir, Some("hunter3")),
        Err(ProfileError::Key(chat_core::KeyError::WrongPassphrase))
    ));
    let profile = Profile::open(&dir, Some("hunter2")).unwrap();
    let (node, events) =
        chat_core::Node::open(profile, chat_core::NodeConfig::loopback(common::NETWORK))
            .await
            .unwrap();
    let mut secret = common::Peer {
        node,
        events,
        dir: dir.clone(),
    };
    assert_eq!(secret.id(), id);
    let mut bob = start(root.path(), "bob").await;
    befriend(&mut secret, &mut bob).await;
    bob.node.send(&id, "psst").unwrap();
    assert_eq!(receive(&mut secret, bob.id(), 1).await, ["psst"]);
    // Changed while running: the old passphrase stops working.
    secret
        .node
        .change_passphrase(Some("correct horse"))
        .unwrap();
    secret.stop().await;
    bob.stop().await;
    assert!(matches!(
        Profile::open(&dir, Some("hunter2")),
        Err(ProfileError::Key(chat_core::KeyError::WrongPassphrase))
    ));
    assert_eq!(
        Profile::open(&dir, Some("correct horse"))
            .unwrap()
            .peer_id(),
        id
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_changes_are_reported_as_events() {
    let root = tempfile::tempdir().unwrap();
    let mut alice = start(root.path(), "alice").await;
    let bob = start(root.path(), "bob").await;
    // The listener is in a report, as in `network_report()`.
    let first = alice
        .wait_for("a network report", |e| match e {
            Event::NetworkChanged(report) if !report.listeners.is_empty() => Some(report.clone()),
            _ => None,
        })
        .await;
    assert_eq!(first.id, alice.id());
    assert!(first.connections.is_empty());
    // A connection opening is reported (bob dials to send his request),
    // then its closing.
    let invite = alice.node.my_invite().unwrap();
    bob.node.add_contact(&invite, "hello").unwrap();
    let b = bob.id();
    alice
        .wait_for("a report with bob connected", |e| match e {
            Event::NetworkChanged(r) if r.connections.iter().any(|(p, _)| *p == b) => Some(()),
            _ => None,
        })
        .await;
    assert!(
        alice
            .node
            .network_report()
            .await
            .connections
            .iter()
            .any(|(p, _)| *p == b)
    );
    bob.stop().await;
    alice
        .wait_for("a report without bob", |e| match e {
            Event::NetworkChanged(r) if !r.connections.iter().any(|(p, _)| *p == b) => Some(()),
            _ => None,
        })
        .await;
}
