use super::*;
use crate::id::SecretId;

fn id() -> PeerId {
    SecretId::generate().peer_id()
}

fn small() -> Limits {
    Limits {
        max_blob: 100,
        per_recipient_count: 3,
        per_recipient_bytes: 250,
        per_depositor_bytes: 400,
        total_bytes: 500,
        expiry: Duration::from_secs(60),
    }
}

/// Every test runs on both stores.
fn mailboxes(limits: Limits, policy: Policy) -> Vec<(Mailbox, Option<tempfile::TempDir>)> {
    let mut all = vec![(Mailbox::in_memory(limits, policy.clone()), None)];
    #[cfg(feature = "node")]
    {
        let dir = tempfile::tempdir().unwrap();
        let db = Mailbox::open(&dir.path().join("mail.sqlite"), limits, policy).unwrap();
        all.push((db, Some(dir)));
    }
    all
}

#[test]
fn only_the_recipient_collects_and_removes_its_mail() {
    for (mut mb, _dir) in mailboxes(small(), Policy::Open) {
        let (alice, bob, carol) = (id(), id(), id());
        let first = mb.deposit(&alice, &bob, b"one", 10).unwrap();
        mb.deposit(&alice, &carol, b"not for bob", 10).unwrap();
        mb.deposit(&carol, &bob, b"two", 11).unwrap();
        let (items, more) = mb.collect(&bob, 12, MAX_ITEMS_BYTES);
        assert!(!more);
        let blobs: Vec<_> = items.iter().map(|i| i.blob.as_slice()).collect();
        assert_eq!(blobs, [&b"one"[..], b"two"]);
        assert_eq!(items[0].from, alice);
        assert_eq!(items[0].deposited_at, 10);
        // Carol cannot remove bob's mail; bob cannot remove carol's.
        assert_eq!(mb.remove(&carol, &[first]), 0);
        let carols = mb.collect(&carol, 12, MAX_ITEMS_BYTES).0;
        assert_eq!(mb.remove(&bob, &[carols[0].id]), 0);
        assert_eq!(mb.remove(&bob, &[first]), 1);
        assert_eq!(mb.collect(&bob, 12, MAX_ITEMS_BYTES).0.len(), 1);
        assert_eq!(mb.collect(&carol, 12, MAX_ITEMS_BYTES).0.len(), 1);
    }
}

#[test]
fn limits_bound_blobs_recipients_depositors_and_the_total() {
    for (mut mb, _dir) in mailboxes(small(), Policy::Open) {
        let (a, b) = (id(), id());
        assert_eq!(mb.deposit(&a, &b, &[0; 101], 0), Err(Refusal::TooLarge));
        mb.deposit(&a, &b, &[0; 100], 0).unwrap();
        mb.deposit(&a, &b, &[0; 100], 0).unwrap();
        // 250 bytes per recipient.
        assert_eq!(mb.deposit(&a, &b, &[0; 51], 0), Err(Refusal::RecipientFull));
        mb.deposit(&a, &b, &[0; 50], 0).unwrap();
        // 3 items per recipient.
        assert_eq!(mb.deposit(&a, &b, &[0; 1], 0), Err(Refusal::RecipientFull));
        // 400 bytes per depositor.
        mb.deposit(&a, &id(), &[0; 100], 0).unwrap();
        assert_eq!(
            mb.deposit(&a, &id(), &[0; 51], 0),
            Err(Refusal::DepositorFull)
        );
        // 500 in all.
        mb.deposit(&id(), &id(), &[0; 100], 0).unwrap();
        assert_eq!(
            mb.deposit(&id(), &id(), &[0; 51], 0),
            Err(Refusal::HolderFull)
        );
        assert_eq!(mb.usage(&b), (3, 250));
    }
}

#[test]
fn old_mail_expires() {
    for (mut mb, _dir) in mailboxes(small(), Policy::Open) {
        let (a, b) = (id(), id());
        mb.deposit(&a, &b, b"old", 1000).unwrap();
        mb.deposit(&a, &b, b"new", 1050).unwrap();
        assert_eq!(mb.collect(&b, 1059, MAX_ITEMS_BYTES).0.len(), 2);
        let (items, _) = mb.collect(&b, 1061, MAX_ITEMS_BYTES);
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].blob, b"new");
        assert_eq!(mb.expire(2000), 1);
        assert_eq!(mb.usage(&b), (0, 0));
    }
}

#[test]
fn policies_decide_who_may_deposit() {
    let (owner, friend, stranger) = (id(), id(), id());
    let for_owner = Policy::For([owner].into());
    for (mut mb, _dir) in mailboxes(small(), for_owner) {
        mb.deposit(&stranger, &owner, b"x", 0).unwrap();
        assert_eq!(
            mb.deposit(&owner, &stranger, b"x", 0),
            Err(Refusal::NotAccepted)
        );
    }
    let among = Policy::Among([owner, friend].into());
    for (mut mb, _dir) in mailboxes(small(), among) {
        mb.deposit(&friend, &owner, b"x", 0).unwrap();
        assert_eq!(
            mb.deposit(&stranger, &owner, b"x", 0),
            Err(Refusal::NotAccepted)
        );
        assert_eq!(
            mb.deposit(&friend, &stranger, b"x", 0),
            Err(Refusal::NotAccepted)
        );
    }
}

#[test]
fn collect_is_paged_by_bytes() {
    let limits = Limits {
        max_blob: 1000,
        per_recipient_bytes: 10_000,
        per_depositor_bytes: 10_000,
        total_bytes: 10_000,
        ..small()
    };
    for (mut mb, _dir) in mailboxes(limits, Policy::Open) {
        let (a, b) = (id(), id());
        for _ in 0..3 {
            mb.deposit(&a, &b, &[1; 600], 0).unwrap();
        }
        let (items, more) = mb.collect(&b, 0, 1000);
        assert_eq!(items.len(), 1);
        assert!(more);
        // One item always comes, even over the page size.
        assert_eq!(mb.collect(&b, 0, 10).0.len(), 1);
    }
}

#[test]
fn the_protocol_answers_deposits_and_collects_for_the_connected_peer() {
    let mut mb = Mailbox::in_memory(small(), Policy::Open);
    let (a, b) = (id(), id());
    let deposit = Message::Deposit {
        tag: 7,
        recipient: b,
        blob: b"sealed".to_vec(),
    };
    let reply = mb.handle(&a, &deposit.encode(), 0).unwrap();
    assert_eq!(
        Message::decode(&reply).unwrap(),
        Some(Message::Deposited { tag: 7 })
    );
    let big = Message::Deposit {
        tag: 8,
        recipient: b,
        blob: vec![0; 101],
    };
    let reply = mb.handle(&a, &big.encode(), 0).unwrap();
    assert_eq!(
        Message::decode(&reply).unwrap(),
        Some(Message::Refused {
            tag: 8,
            reason: Refusal::TooLarge
        })
    );
    // `a` collects nothing: the mail is for `b`.
    let reply = mb.handle(&a, &Message::Collect.encode(), 0).unwrap();
    assert_eq!(
        Message::decode(&reply).unwrap(),
        Some(Message::Items {
            items: vec![],
            more: false
        })
    );
    let reply = mb.handle(&b, &Message::Collect.encode(), 0).unwrap();
    let Some(Message::Items { items, .. }) = Message::decode(&reply).unwrap() else {
        panic!("not items");
    };
    assert_eq!(items[0].blob, b"sealed");
    assert_eq!(
        mb.handle(
            &b,
            &Message::Remove {
                ids: vec![items[0].id]
            }
            .encode(),
            0
        ),
        None
    );
    assert_eq!(mb.usage(&b), (0, 0));
    // Other traffic and junk are not answered.
    assert_eq!(mb.handle(&a, b"\x02hello", 0), None);
    assert_eq!(mb.handle(&a, b"CRMB\xff\xff", 0), None);
    assert!(Message::decode(b"CRMB\xff\xff").is_err());
    assert_eq!(Message::decode(b"other").unwrap(), None);
}
