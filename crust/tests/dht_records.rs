//! DHT records and messages refused, and the engine's k-bucket and
//! refresh behaviour, one node at a time.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crust::dht::{
    Config, Contact, Dht, Event, Key, MAX_MESSAGE_BYTES, MAX_RECORD_BODY, MAX_RECORD_ENDPOINTS,
    MAX_RECORD_RENDEZVOUS, MAX_RENDEZVOUS_ENDPOINTS, Message, MessageError, Output, PeerRecord,
    RecordError, RecordStore, RendezvousPeer, SignedRecord, VerifiedRecord,
};
use crust::{Endpoint, PeerId, SecretId};

const NOW: u64 = 1_800_000_000;

fn secret(n: u8) -> SecretId {
    SecretId::from_bytes(&[n; 32])
}

fn record(secret: &SecretId, version: u64) -> PeerRecord {
    PeerRecord {
        peer: secret.peer_id(),
        version,
        issued_at: NOW,
        ttl_secs: 3600,
        endpoints: vec![Endpoint::tcp(
            "192.0.2.1:5483".parse::<SocketAddr>().unwrap(),
        )],
        rendezvous: vec![RendezvousPeer::new(
            secret_peer(99),
            vec![Endpoint::tcp(
                "198.51.100.9:5483".parse::<SocketAddr>().unwrap(),
            )],
        )],
    }
}

fn secret_peer(n: u8) -> PeerId {
    secret(n).peer_id()
}

fn verified(signed: &SignedRecord) -> VerifiedRecord {
    VerifiedRecord {
        record: signed.verify(NOW).unwrap(),
        signed: signed.clone(),
    }
}

#[test]
fn a_signed_record_verifies_and_round_trips() {
    let s = secret(1);
    let r = record(&s, 5);
    let signed = r.sign(&s).unwrap();
    assert_eq!(signed.verify(NOW).unwrap(), r);
    let bytes = Message::Store {
        record: signed.clone(),
    }
    .encode();
    assert_eq!(
        Message::decode(&bytes).unwrap(),
        Message::Store { record: signed }
    );
}

#[test]
fn a_bad_signature_is_refused() {
    let a = secret(1);
    let b = secret(2);
    let signed_a = record(&a, 1).sign(&a).unwrap();
    let signed_b = record(&b, 1).sign(&b).unwrap();
    // A's body with B's signature.
    let forged = SignedRecord::from_parts(signed_a.body().to_vec(), signed_b_signature(&signed_b));
    assert_eq!(forged.verify(NOW), Err(RecordError::BadSignature));
    // One bit of the body flipped (the version).
    let mut body = signed_a.body().to_vec();
    let last = body.len() - 1;
    body[last] ^= 1;
    let tampered = SignedRecord::from_parts(body, signed_b_signature(&signed_a));
    assert!(matches!(
        tampered.verify(NOW),
        Err(RecordError::BadSignature | RecordError::Malformed(_))
    ));
    // Signing someone else's record is refused up front.
    assert_eq!(record(&a, 1).sign(&b), Err(RecordError::BadSignature));
}

fn signed_b_signature(signed: &SignedRecord) -> Vec<u8> {
    // The signature is the second field: re-encode and split.
    let bytes = postcard::to_stdvec(signed).unwrap();
    bytes[bytes.len() - 64..].to_vec()
}

#[test]
fn an_expired_or_future_record_is_refused() {
    let s = secret(1);
    let signed = record(&s, 1).sign(&s).unwrap();
    assert_eq!(signed.verify(NOW + 3600), Err(RecordError::Expired));
    assert_eq!(signed.verify(NOW - 3600), Err(RecordError::FromTheFuture));
    assert!(signed.verify(NOW + 3599).is_ok());
}

#[test]
fn an_oversized_record_is_refused() {
    let huge = SignedRecord::from_parts(vec![0; MAX_RECORD_BODY + 1], vec![0; 64]);
    assert!(matches!(
        huge.verify(NOW),
        Err(RecordError::TooLarge { .. })
    ));
    let s = secret(1);
    let mut r = record(&s, 1);
    r.endpoints = vec![r.endpoints[0]; 9];
    assert!(matches!(r.sign(&s), Err(RecordError::Malformed(_))));
    // On the wire, the whole message is refused.
    let bytes = Message::Value {
        id: 1,
        record: huge,
    }
    .encode();
    assert!(Message::decode(&bytes).is_err());
}

#[test]
fn a_record_names_its_rendezvous_peers_with_their_endpoints() {
    let s = secret(1);
    let v4 = |n: u8| Endpoint::tcp(SocketAddr::from(([203, 0, 113, n], 40_000 + u16::from(n))));
    // The most a record may say, over IPv4: it fits.
    let mut r = record(&s, 1);
    r.endpoints = (0..MAX_RECORD_ENDPOINTS as u8).map(v4).collect();
    r.rendezvous = (0..MAX_RECORD_RENDEZVOUS as u8)
        .map(|n| {
            RendezvousPeer::new(
                secret_peer(100 + n),
                (0..MAX_RENDEZVOUS_ENDPOINTS as u8)
                    .map(|k| v4(10 * n + k))
                    .collect(),
            )
        })
        .collect();
    let signed = r.sign(&s).unwrap();
    assert!(signed.body().len() <= MAX_RECORD_BODY);
    let back = signed.verify(NOW).unwrap();
    assert_eq!(back.rendezvous, r.rendezvous);
    // One endpoint too many for a rendezvous peer is malformed.
    r.rendezvous[0].endpoints.push(v4(250));
    assert!(matches!(r.sign(&s), Err(RecordError::Malformed(_))));
}

#[test]
fn an_older_or_conflicting_version_is_refused() {
    let s = secret(1);
    let mut store = RecordStore::new(Key::from(secret_peer(50)), 10);
    let v2 = record(&s, 2).sign(&s).unwrap();
    let v1 = record(&s, 1).sign(&s).unwrap();
    store.insert(verified(&v2)).unwrap();
    assert_eq!(
        store.insert(verified(&v1)),
        Err(RecordError::Stale {
            have: 2,
            offered: 1
        })
    );
    let mut other = record(&s, 2);
    other.endpoints.clear();
    let other = other.sign(&s).unwrap();
    assert!(matches!(
        store.insert(verified(&other)),
        Err(RecordError::Stale { .. })
    ));
    // The same record again is fine, a newer one replaces it.
    store.insert(verified(&v2)).unwrap();
    let v3 = record(&s, 3).sign(&s).unwrap();
    store.insert(verified(&v3)).unwrap();
    assert_eq!(
        store
            .get(&Key::from(s.peer_id()), NOW)
            .unwrap()
            .record
            .version,
        3
    );
    assert!(store.get(&Key::from(s.peer_id()), NOW + 3600).is_none());
}

#[test]
fn a_full_store_keeps_the_closest_keys() {
    let me = Key::from(secret_peer(50));
    let mut store = RecordStore::new(me, 3);
    let mut secrets: Vec<SecretId> = (1..=10).map(secret).collect();
    secrets.sort_by_key(|s| me.distance(&Key::from(s.peer_id())));
    // Insert the 3 farthest, then a closer one evicts the farthest, and a
    // farther one is refused.
    for s in &secrets[7..] {
        store
            .insert(verified(&record(s, 1).sign(s).unwrap()))
            .unwrap();
    }
    store
        .insert(verified(&record(&secrets[0], 1).sign(&secrets[0]).unwrap()))
        .unwrap();
    assert_eq!(store.len(), 3);
    assert!(store.get(&Key::from(secrets[9].peer_id()), NOW).is_none());
    let far = SecretId::from_bytes(&[200; 32]);
    let far_key = Key::from(far.peer_id());
    let farthest_held = secrets[8..9]
        .iter()
        .map(|s| me.distance(&Key::from(s.peer_id())))
        .max()
        .unwrap();
    if me.distance(&far_key) > farthest_held {
        assert_eq!(
            store.insert(verified(&record(&far, 1).sign(&far).unwrap())),
            Err(RecordError::StoreFull)
        );
    }
}

#[test]
fn malformed_messages_are_refused() {
    assert_eq!(Message::decode(&[]), Err(MessageError::Version));
    assert_eq!(Message::decode(&[9, 0, 0]), Err(MessageError::Version));
    assert!(matches!(
        Message::decode(&vec![1; MAX_MESSAGE_BYTES + 1]),
        Err(MessageError::TooLarge(_))
    ));
    let mut ping = Message::Ping { id: 7 }.encode();
    assert_eq!(Message::decode(&ping).unwrap(), Message::Ping { id: 7 });
    ping.push(0);
    assert!(matches!(
        Message::decode(&ping),
        Err(MessageError::Malformed(_))
    ));
    let nodes: Vec<Contact> = (1..=21).map(|n| Contact::new(secret_peer(n))).collect();
    let bytes = Message::Nodes { id: 1, nodes }.encode();
    assert!(matches!(
        Message::decode(&bytes),
        Err(MessageError::Malformed(_))
    ));
    // Arbitrary bytes never panic.
    for n in 0..2000u32 {
        let junk: Vec<u8> = (0..(n % 97))
            .map(|i| (n.wrapping_mul(31).wrapping_add(i * 7)) as u8)
            .collect();
        let _ = Message::decode(&[&[1u8][..], &junk].concat());
    }
}

fn sends(out: &[Output]) -> Vec<(PeerId, Message)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { to, message } => Some((to.id, message.clone())),
            Output::Event(_) => None,
        })
        .collect()
}

/// Secrets whose ids fall in `me`'s far bucket (255).
fn far_bucket(me: &Key, count: usize) -> Vec<SecretId> {
    (1..=255u8)
        .map(secret)
        .filter(|s| me.distance(&Key::from(s.peer_id())).bucket() == Some(255))
        .take(count)
        .collect()
}

#[test]
fn a_full_bucket_pings_its_oldest_before_evicting() {
    let now = Instant::now();
    let me = SecretId::from_bytes(&[0; 32]);
    let my_key = Key::from(me.peer_id());
    let mut dht = Dht::new(Config::default(), me, now, Duration::from_secs(NOW));
    let peers = far_bucket(&my_key, 22);
    assert_eq!(peers.len(), 22);
    for p in &peers[..20] {
        let out = dht.handle(now, &Contact::new(p.peer_id()), Message::Ping { id: 1 });
        assert_eq!(sends(&out), vec![(p.peer_id(), Message::Pong { id: 1 })]);
    }
    // The 21st: the oldest is pinged, the newcomer not yet in.
    let newcomer = Contact::new(peers[20].peer_id());
    let out = dht.handle(now, &newcomer, Message::Ping { id: 2 });
    let s = sends(&out);
    let oldest = peers[0].peer_id();
    let ping_id = match &s[..] {
        [(to, Message::Ping { id }), (_, Message::Pong { .. })] if *to == oldest => *id,
        other => panic!("expected a ping to the oldest, got {other:?}"),
    };
    let far = Key([
        !my_key.0[0],
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ]);
    let known =
        |dht: &Dht| -> Vec<PeerId> { dht.closest_known(&far, 100).iter().map(|c| c.id).collect() };
    assert!(!known(&dht).contains(&newcomer.id));
    // It answers: it stays and the newcomer is dropped.
    dht.handle(now, &Contact::new(oldest), Message::Pong { id: ping_id });
    dht.handle_timeout(now + Duration::from_secs(3));
    assert!(known(&dht).contains(&oldest));
    assert!(!known(&dht).contains(&newcomer.id));
    // Another newcomer; the oldest is now peers[1], which stays silent: it
    // is replaced.
    let newcomer = Contact::new(peers[21].peer_id());
    let now = now + Duration::from_secs(4);
    let out = dht.handle(now, &newcomer, Message::Ping { id: 3 });
    assert!(
        sends(&out)
            .iter()
            .any(|(to, m)| *to == peers[1].peer_id() && matches!(m, Message::Ping { .. }))
    );
    dht.handle_timeout(now + Duration::from_secs(3));
    assert!(known(&dht).contains(&newcomer.id));
    assert!(!known(&dht).contains(&peers[1].peer_id()));
    assert_eq!(known(&dht).len(), 20);
}

#[test]
fn a_stored_bad_record_is_reported_and_not_served() {
    let now = Instant::now();
    let mut dht = Dht::new(Config::default(), secret(0), now, Duration::from_secs(NOW));
    let a = secret(1);
    let from = Contact::new(secret_peer(2));
    let expired = PeerRecord {
        issued_at: NOW - 7200,
        ..record(&a, 1)
    }
    .sign(&a)
    .unwrap();
    let out = dht.handle(now, &from, Message::Store { record: expired });
    assert!(matches!(
        &out[..],
        [Output::Event(Event::RecordRejected {
            error: RecordError::Expired,
            ..
        })]
    ));
    let out = dht.handle(
        now,
        &from,
        Message::FindValue {
            id: 4,
            target: Key::from(a.peer_id()),
        },
    );
    assert!(matches!(
        sends(&out)[..],
        [(_, Message::Nodes { id: 4, .. })]
    ));
    let good = record(&a, 1).sign(&a).unwrap();
    assert!(
        dht.handle(
            now,
            &from,
            Message::Store {
                record: good.clone()
            }
        )
        .is_empty()
    );
    let out = dht.handle(
        now,
        &from,
        Message::FindValue {
            id: 5,
            target: Key::from(a.peer_id()),
        },
    );
    assert_eq!(
        sends(&out),
        vec![(
            from.id,
            Message::Value {
                id: 5,
                record: good
            }
        )]
    );
    assert_eq!(dht.records_held(), 1);
}

#[test]
fn unsolicited_replies_are_ignored() {
    let now = Instant::now();
    let mut dht = Dht::new(Config::default(), secret(0), now, Duration::from_secs(NOW));
    let from = Contact::new(secret_peer(2));
    let a = secret(1);
    let out = dht.handle(
        now,
        &from,
        Message::Value {
            id: 9,
            record: record(&a, 1).sign(&a).unwrap(),
        },
    );
    assert!(out.is_empty());
    assert_eq!(dht.records_held(), 0);
}

#[test]
fn stale_buckets_are_refreshed_and_lookups_time_out() {
    let now = Instant::now();
    let config = Config::default();
    let mut dht = Dht::new(config.clone(), secret(0), now, Duration::from_secs(NOW));
    for n in 1..=5 {
        dht.handle(now, &Contact::new(secret_peer(n)), Message::Ping { id: 1 });
    }
    assert_eq!(dht.poll_timeout(), Some(now + config.refresh_interval));
    let later = now + config.refresh_interval;
    let out = dht.handle_timeout(later);
    let finds = sends(&out)
        .iter()
        .filter(|(_, m)| matches!(m, Message::FindNode { .. }))
        .count();
    assert!(finds >= 3, "refresh sent {finds} requests");
    // Nobody answers: no more than α per lookup were out, and every
    // lookup ends by its requests' timeouts.
    assert!(dht.lookups_in_progress() > 0);
    let mut t = later;
    for _ in 0..20 {
        t += config.request_timeout;
        dht.handle_timeout(t);
    }
    assert_eq!(dht.lookups_in_progress(), 0);
    assert_eq!(dht.table_len(), 0, "silent contacts are dropped");
}

#[test]
fn a_lookup_keeps_at_most_alpha_requests_out() {
    let now = Instant::now();
    let mut dht = Dht::new(Config::default(), secret(0), now, Duration::from_secs(NOW));
    for n in 1..=30 {
        dht.handle(now, &Contact::new(secret_peer(n)), Message::Ping { id: 1 });
    }
    let (_, out) = dht.start_lookup(now, Key([7; 32]));
    assert_eq!(sends(&out).len(), 3);
    let (q, out) = dht.find_record(now, secret_peer(77));
    assert_eq!(sends(&out).len(), 3);
    // The whole lookup ends by its deadline even if replies trickle.
    let out = dht.handle_timeout(now + Config::default().lookup_timeout + Duration::from_secs(1));
    assert!(out.iter().any(|o| matches!(o, Output::Event(Event::RecordFound { query, record: None, .. }) if *query == q)));
}

#[test]
fn the_wire_format_is_stable() {
    // Version byte, variant index, then the fields (varints, raw keys).
    assert_eq!(Message::Ping { id: 5 }.encode(), vec![1, 0, 5]);
    let mut find = vec![1, 2, 1];
    find.extend([0xab; 32]);
    assert_eq!(
        Message::FindNode {
            id: 1,
            target: Key([0xab; 32])
        }
        .encode(),
        find
    );
    // A record body starts with the raw 32-byte peer id, then the version.
    let s = secret(1);
    let signed = record(&s, 300).sign(&s).unwrap();
    assert_eq!(&signed.body()[..32], s.peer_id().as_bytes());
    assert_eq!(&signed.body()[32..34], &[0xac, 0x02]);
}

/// Answers every `FindNode` to `peer` with no contacts until the engine
/// stops asking; returns the records it was asked to store.
fn answer_lookups(
    dht: &mut Dht,
    now: Instant,
    peer: &Contact,
    mut out: Vec<Output>,
) -> Vec<(SignedRecord, Vec<Event>)> {
    let mut stored = Vec::new();
    let mut events = Vec::new();
    for _ in 0..100 {
        let mut next = Vec::new();
        for o in out {
            match o {
                Output::Send {
                    message: Message::FindNode { id, .. },
                    ..
                } => next.extend(dht.handle(now, peer, Message::Nodes { id, nodes: vec![] })),
                Output::Send {
                    message: Message::Store { record },
                    ..
                } => stored.push((record, Vec::new())),
                Output::Event(e) => events.push(e),
                Output::Send { .. } => {}
            }
        }
        if next.is_empty() {
            break;
        }
        out = next;
    }
    if let Some(last) = stored.last_mut() {
        last.1 = events;
    }
    stored
}

#[test]
fn our_record_is_published_served_and_republished_newer() {
    let now = Instant::now();
    let config = Config::default();
    let me = secret(0);
    let my_id = me.peer_id();
    let mut dht = Dht::new(config.clone(), me, now, Duration::from_secs(NOW));
    let peer = Contact::new(secret_peer(1));
    dht.handle(now, &peer, Message::Ping { id: 1 });
    let endpoint = Endpoint::tcp("198.51.100.7:5483".parse::<SocketAddr>().unwrap());
    let (q, out) = dht
        .publish(
            now,
            vec![endpoint],
            vec![RendezvousPeer::new(secret_peer(1), Vec::new())],
        )
        .unwrap();
    let stored = answer_lookups(&mut dht, now, &peer, out);
    assert_eq!(stored.len(), 1, "stored on the one node known");
    let first = stored[0].0.verify(NOW).unwrap();
    assert_eq!(first.peer, my_id);
    assert_eq!(first.endpoints, vec![endpoint]);
    assert!(
        stored[0]
            .1
            .iter()
            .any(|e| matches!(e, Event::Published { query, stored_at: 1, .. } if *query == q))
    );
    // Served to whoever asks.
    let out = dht.handle(
        now,
        &peer,
        Message::FindValue {
            id: 8,
            target: Key::from(my_id),
        },
    );
    assert!(matches!(
        &sends(&out)[..],
        [(_, Message::Value { id: 8, .. })]
    ));
    // Re-signed with a newer version after the republish interval.
    let later = now + config.republish_interval;
    let out = dht.handle_timeout(later);
    let stored = answer_lookups(&mut dht, later, &peer, out);
    let again = stored.last().unwrap().0.verify(NOW + 1800).unwrap();
    assert!(again.version > first.version);
    assert_eq!(again.issued_at, NOW + 1800);
    // A peer cannot store a record of ours (only we publish it).
    let out = dht.handle(
        later,
        &peer,
        Message::Store {
            record: stored[0].0.clone(),
        },
    );
    assert!(matches!(
        &out[..],
        [Output::Event(Event::RecordRejected { .. })]
    ));
}

#[test]
fn a_lookup_goes_no_further_than_max_hops() {
    let now = Instant::now();
    let config = Config {
        max_hops: 1,
        ..Config::default()
    };
    let mut dht = Dht::new(config, secret(0), now, Duration::from_secs(NOW));
    let peer = Contact::new(secret_peer(1));
    dht.handle(now, &peer, Message::Ping { id: 1 });
    let (q, out) = dht.start_lookup(now, Key([9; 32]));
    let id = match &sends(&out)[..] {
        [(to, Message::FindNode { id, .. })] if *to == peer.id => *id,
        other => panic!("expected one FindNode, got {other:?}"),
    };
    // It names five nodes at hop 2: none is asked, the lookup ends.
    let nodes = (2..7).map(|n| Contact::new(secret_peer(n))).collect();
    let out = dht.handle(now, &peer, Message::Nodes { id, nodes });
    assert!(sends(&out).is_empty());
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Event(Event::NodesFound { query, closest, stats, .. })
            if *query == q && closest.len() == 1 && stats.hops == 1
    )));
}

/// A node that restarts publishes a newer version than its last one, even
/// when it comes back within a second: versions are Unix milliseconds,
/// not seconds plus the time since start (which once lost the sub-second
/// part of the start time, so a quick restart was refused as stale).
#[test]
fn a_quick_restart_publishes_a_newer_version() {
    let start = Duration::from_secs(NOW);
    let endpoint = Endpoint::tcp("198.51.100.7:5483".parse::<SocketAddr>().unwrap());
    let now = Instant::now();
    // The first run starts on a whole second and publishes 2.3 s later.
    let mut before = Dht::new(Config::default(), secret(0), now, start);
    let (_, _) = before
        .publish(
            now + Duration::from_millis(2300),
            vec![endpoint],
            Vec::new(),
        )
        .unwrap();
    // The second starts 2.95 s after the first did and publishes at once.
    let restart = now + Duration::from_millis(2950);
    let mut after = Dht::new(
        Config::default(),
        secret(0),
        restart,
        start + Duration::from_millis(2950),
    );
    after.publish(restart, vec![endpoint], Vec::new()).unwrap();
    let (old, new) = (before.published_version(), after.published_version());
    assert_eq!(old, Some(NOW * 1000 + 2300));
    assert_eq!(new, Some(NOW * 1000 + 2950));
}

#[test]
fn a_publication_says_which_storers_it_missed() {
    // We know one server; it names a second one, which never answers
    // (slow, busy, or not dialled in time): the record goes to the first
    // alone, and the event says one storer was missed, so the driver can
    // publish again.
    let now = Instant::now();
    let config = Config::default();
    let mut dht = Dht::new(config.clone(), secret(0), now, Duration::from_secs(NOW));
    let first = Contact::new(secret_peer(1));
    let slow = Contact {
        endpoints: vec![Endpoint::tcp(
            "198.51.100.9:5483".parse::<SocketAddr>().unwrap(),
        )],
        ..Contact::new(secret_peer(2))
    };
    dht.handle(now, &first, Message::Ping { id: 1 });
    let endpoint = Endpoint::tcp("198.51.100.7:5483".parse::<SocketAddr>().unwrap());
    let (q, out) = dht.publish(now, vec![endpoint], Vec::new()).unwrap();
    let mut pending = out;
    let mut events = Vec::new();
    let mut stores = Vec::new();
    let mut timed_out = false;
    for _ in 0..10 {
        let mut next = Vec::new();
        for o in pending {
            match o {
                Output::Send {
                    to,
                    message: Message::FindNode { id, .. },
                } if to.id == first.id => next.extend(dht.handle(
                    now,
                    &first,
                    Message::Nodes {
                        id,
                        nodes: vec![slow.clone()],
                    },
                )),
                Output::Send {
                    to,
                    message: Message::Store { .. },
                } => stores.push(to.id),
                Output::Event(e) => events.push(e),
                Output::Send { .. } => {}
            }
        }
        if next.is_empty() {
            if timed_out {
                break;
            }
            // The slow one's request times out.
            timed_out = true;
            next = dht.handle_timeout(now + config.request_timeout + Duration::from_millis(1));
        }
        pending = next;
    }
    assert_eq!(stores, vec![first.id]);
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::Published { query, stored_at: 1, missed: 1, .. } if *query == q
        )),
        "{events:?}"
    );
}
