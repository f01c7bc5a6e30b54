//! A suspend and resume, played with a wall clock the test moves (the
//! monotonic clock stands still while a machine sleeps, the wall clock
//! does not): the node publishes its record again, dated by the clock it
//! woke up to, and looks its offline friends up again at once. The netsim
//! test `reconnect_netsim.rs` adds a connection that died in the sleep.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chat_core::{DhtStatus, Event, NodeConfig};
use common::{MovableClock, Peer, befriend, open_with, profiles};

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn status_until(peer: &Peer, what: &str, done: impl Fn(&DhtStatus) -> bool) -> DhtStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = peer.node.dht_status().await.unwrap();
        if done(&status) {
            return status;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_publishes_again_by_the_new_clock_and_looks_friends_up_again() {
    let root = tempfile::tempdir().unwrap();
    let [seed_dir, alice_dir, bob_dir] = profiles(root.path(), ["seed", "alice", "bob"]);
    let seed = open_with(&seed_dir, NodeConfig::loopback(common::NETWORK)).await;
    let seed_addrs = seed.node.network_report().await.listeners;
    let joining = || {
        let mut config = NodeConfig::loopback(common::NETWORK);
        config.bootstrap = true;
        config.crust.bootstrap_contacts = seed_addrs
            .iter()
            .map(|addr| crust::Contact {
                id: Some(seed.id()),
                addr: *addr,
            })
            .collect();
        // Only a resume sends the node looking again this soon.
        config.dht.record_retry = Duration::from_secs(120);
        config
    };
    let clock = Arc::new(MovableClock::default());
    // Two minutes behind while "asleep" (within the skew records allow).
    clock.offset_ms.store(-120_000, Ordering::SeqCst);
    let mut config = joining();
    config.clock = clock.clone();
    let mut alice = open_with(&alice_dir, config).await;
    let mut bob = open_with(&bob_dir, joining()).await;
    befriend(&mut alice, &mut bob).await;
    let bob_id = bob.id();
    bob.stop().await;
    alice
        .wait_for("bob offline", |e| {
            matches!(e, Event::ContactOffline { contact } if *contact == bob_id).then_some(())
        })
        .await;
    // Alice looked Bob up once while redialling him.
    let asleep = status_until(&alice, "alice published and looked bob up", |s| {
        s.published.is_some() && s.stored_at > 0 && s.lookups >= 1
    })
    .await;
    // Long enough that a clock counted from the node's start instead of
    // from the resume would show.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let woke_at = unix_secs();
    clock.offset_ms.store(0, Ordering::SeqCst);
    let awake = status_until(&alice, "alice published and looked up again", |s| {
        s.published > asleep.published && s.lookups > asleep.lookups
    })
    .await;
    // The seed comes to hold the new record, dated by the clock Alice
    // woke to.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let record = loop {
        let (record, _) = seed.node.find_record(&alice.id()).await.unwrap();
        if let Some(record) = record.filter(|r| Some(r.version) == awake.published) {
            break record;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the seed never got version {:?}",
            awake.published
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        record.issued_at + 1 >= woke_at,
        "issued at {}, woke at {woke_at}",
        record.issued_at
    );
    alice.stop().await;
    seed.stop().await;
}
