//! Helpers for tests that run real nodes on loopback.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use chat_core::{Event, Node, NodeConfig, NodeEvents, PeerId, Profile};

pub const NETWORK: &str = "chat-core-tests";
const PATIENCE: Duration = Duration::from_secs(20);

pub struct Peer {
    pub node: Node,
    pub events: NodeEvents,
    pub dir: PathBuf,
}

impl Peer {
    pub fn id(&self) -> PeerId {
        self.node.id()
    }

    /// Waits for the first event `pick` accepts, dropping others.
    pub async fn wait_for<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => {
                    if let Some(found) = pick(&event) {
                        return found;
                    }
                }
                Ok(None) => panic!(
                    "{}: events ended while waiting for {what}",
                    self.node.display_name()
                ),
                Err(_) => panic!("{}: timed out waiting for {what}", self.node.display_name()),
            }
        }
    }

    /// Shuts the node down; returns its profile directory.
    pub async fn stop(self) -> PathBuf {
        self.node.shutdown().await;
        self.dir
    }
}

pub async fn open(dir: &Path) -> Peer {
    open_with(dir, NodeConfig::loopback(NETWORK)).await
}

pub async fn open_with(dir: &Path, config: NodeConfig) -> Peer {
    let profile = Profile::open(dir, None).expect("open profile");
    let (node, events) = Node::open(profile, config).await.expect("open node");
    Peer {
        node,
        events,
        dir: dir.to_owned(),
    }
}

pub async fn start(root: &Path, name: &str) -> Peer {
    let dir = root.join(name);
    drop(Profile::create(&dir, name, None).expect("create profile"));
    open(&dir).await
}

/// `b` sends `a` a request with `a`'s invite, `a` accepts; returns when
/// both know.
pub async fn befriend(a: &mut Peer, b: &mut Peer) {
    let invite = a.node.my_invite().unwrap();
    b.node.add_contact(&invite, "let's chat").unwrap();
    let b_id = b.id();
    a.wait_for("friend request", |e| match e {
        Event::FriendRequest(r) if r.from == b_id => Some(()),
        _ => None,
    })
    .await;
    a.node.accept(&b_id).unwrap();
    let a_id = a.id();
    b.wait_for("friend accepted", |e| {
        matches!(e, Event::FriendAccepted { contact } if *contact == a_id).then_some(())
    })
    .await;
}

/// Waits until `peer` has received `count` new messages from `from`;
/// returns their texts in arrival order.
pub async fn receive(peer: &mut Peer, from: PeerId, count: usize) -> Vec<String> {
    let mut texts = Vec::new();
    while texts.len() < count {
        let text = peer
            .wait_for("a message", |e| match e {
                Event::MessageReceived(m) if m.contact == from => Some(m.text.clone()),
                _ => None,
            })
            .await;
        texts.push(text);
    }
    texts
}

/// Waits up to 40 s for the first event `pick` accepts on `events`, for a
/// node driven from inside a netsim host (where there is no [`Peer`]);
/// `who` names it in the failure.
pub async fn wait_on<T>(
    who: &str,
    events: &mut NodeEvents,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> T {
    loop {
        match tokio::time::timeout(Duration::from_secs(40), events.recv()).await {
            Ok(Some(e)) => {
                if let Some(found) = pick(&e) {
                    return found;
                }
            }
            Ok(None) => panic!("{who}: node stopped"),
            Err(_) => panic!("{who}: timed out"),
        }
    }
}

/// Creates a profile for each of `names` under `root`; their directories.
pub fn profiles<const N: usize>(root: &Path, names: [&str; N]) -> [PathBuf; N] {
    names.map(|name| {
        let dir = root.join(name);
        drop(Profile::create(&dir, name, None).unwrap());
        dir
    })
}

/// A wall clock `offset_ms` milliseconds off the system's, for playing a
/// suspend and resume.
#[derive(Debug, Default)]
pub struct MovableClock {
    pub offset_ms: std::sync::atomic::AtomicI64,
}

impl chat_core::WallClock for MovableClock {
    fn now(&self) -> std::time::SystemTime {
        let offset = self.offset_ms.load(std::sync::atomic::Ordering::SeqCst);
        let shift = Duration::from_millis(offset.unsigned_abs());
        if offset >= 0 {
            std::time::SystemTime::now() + shift
        } else {
            std::time::SystemTime::now() - shift
        }
    }
}
