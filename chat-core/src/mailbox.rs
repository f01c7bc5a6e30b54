//! Delivery while a contact is away: sealed messages left with holders.
//!
//! A user names holders in [`NodeConfig::holders`](crate::NodeConfig): peers
//! that keep mail for them while they are offline — their own always-on
//! `crust-node --hold`, or a friend's chat node (every chat node holds mail
//! among its friends, in [`HELD_MAIL_FILE`] in its profile, so a restart
//! loses none of it). The node tells its friends who its
//! holders are (`Wire::Holders`, remembered per contact), and:
//! - when a friend is offline and messages for it wait in the outbox, the
//!   node seals each (`crate::seal`: only the friend can open it, and the
//!   friend checks it is signed by us) and deposits it with one of the
//!   friend's holders (`crust::mailbox`), dialling the holder if needed;
//! - it dials its own holders and, on connecting, collects what they hold
//!   for it: each box is opened, checked, and goes through the same path
//!   as a message that came directly (stored once by id: a copy that comes
//!   again later, directly or from another holder, is not shown twice),
//!   then removed from the holder.
//!
//! The sender's message stays unacknowledged until the two meet: the
//! outbox sends it again then, the recipient drops the repeat by id and
//! acknowledges it, and the sender sees it delivered.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crust::mailbox::{Limits, Mailbox, Message as MailMessage, Policy, unix_now};
use crust::{Contact, Endpoint, PeerId, Priority, SecretId};
use serde::{Deserialize, Serialize};

use crate::node::{Shared, lock};
use crate::proto::Wire;
use crate::store::{Store, StoreError};
use crate::types::{ContactState, MessageId};

/// Holders remembered per contact at most.
pub(crate) const MAX_HOLDERS: usize = 4;
/// A deposit not answered is tried again after this long (a holder
/// answers within a round trip; this covers a send lost with a connection
/// that died under it). Doubles with every try, up to [`RETRY_CAP`].
const DEPOSIT_RETRY: Duration = Duration::from_secs(8);
/// A deposit that failed outright (the holder was not reached, the send
/// failed, or the holder refused) is tried again after this long, doubling
/// with every try up to [`RETRY_CAP`].
const FAILED_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between two tries of one deposit.
const RETRY_CAP: Duration = Duration::from_secs(120);
const META_PREFIX: &str = "holders:";
/// Mail this node holds for its friends, in the profile directory: crust's
/// SQLite mailbox (the store `crust-node --hold` keeps, with the same
/// bounds), in a file of its own rather than in the history: it is others'
/// sealed mail in transit, not this user's history, so it stays out of
/// exports, and a damaged file is set aside without touching the history.
pub(crate) const HELD_MAIL_FILE: &str = "held-mail.sqlite";

/// A holder as told between friends: its id and where to dial it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HolderInfo {
    pub(crate) id: [u8; 32],
    pub(crate) addrs: Vec<Endpoint>,
}

/// The node's mail state (in `Shared`).
pub(crate) struct MailState {
    secret: SecretId,
    /// Our own holders.
    holders: Vec<(PeerId, Vec<Endpoint>)>,
    /// What we hold for our friends ([`open_held`]).
    held: Mailbox,
    /// Deposits in flight: tag → message, and each message's deposit
    /// state.
    tags: HashMap<u64, MessageId>,
    deposited: HashMap<MessageId, Deposit>,
    next_tag: u64,
    /// Deposits that failed outright, reported by the tasks that sent
    /// them; the next tick schedules their retry.
    failed: Arc<Mutex<Vec<MessageId>>>,
}

/// Where one message's deposit stands.
#[derive(Debug, Clone, Copy)]
enum Deposit {
    /// A holder has it.
    Held,
    /// Sent (or failed) `tries` times; tried again at `next`.
    Trying { next: Instant, tries: u32 },
}

/// The wait after `tries` tries, starting from `first`.
fn backoff(first: Duration, tries: u32) -> Duration {
    first
        .saturating_mul(1 << tries.saturating_sub(1).min(16))
        .min(RETRY_CAP)
}

impl std::fmt::Debug for MailState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailState")
            .field("holders", &self.holders)
            .finish()
    }
}

impl MailState {
    /// Our mail state: `holders` are ours, `held` is what we hold for
    /// friends ([`open_held`]).
    pub(crate) fn new(secret: &SecretId, holders: &[Contact], held: Mailbox) -> Self {
        Self {
            secret: SecretId::from_bytes(&secret.to_bytes()),
            holders: holders
                .iter()
                .filter_map(|c| c.id.map(|id| (id, vec![c.addr])))
                .take(MAX_HOLDERS)
                .collect(),
            held,
            tags: HashMap::new(),
            deposited: HashMap::new(),
            next_tag: 1,
            failed: Arc::default(),
        }
    }

    /// A deposit of `id` failed outright: try it again soon, backing off
    /// by the number of tries.
    fn failed(&mut self, id: MessageId, now: Instant) {
        if let Some(Deposit::Trying { next, tries }) = self.deposited.get_mut(&id) {
            *next = now + backoff(FAILED_RETRY, *tries);
        }
    }

    fn is_my_holder(&self, peer: &PeerId) -> bool {
        self.holders.iter().any(|(id, _)| id == peer)
    }
}

/// Opens the mail held for friends in the profile directory `dir`. A file
/// that cannot be opened (damaged) is renamed `*.damaged` and a new one
/// made; if even that fails, mail is held in memory. The second value says
/// what went wrong, for the user.
pub(crate) fn open_held(dir: &Path) -> (Mailbox, Option<String>) {
    let policy = || Policy::Among(HashSet::new());
    let path = dir.join(HELD_MAIL_FILE);
    let error = match Mailbox::open(&path, Limits::default(), policy()) {
        Ok(mailbox) => return (mailbox, None),
        Err(error) => error,
    };
    let aside = dir.join(format!("{HELD_MAIL_FILE}.damaged"));
    let moved = std::fs::rename(&path, &aside);
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.join(format!("{HELD_MAIL_FILE}{suffix}")));
    }
    let problem = format!(
        "mail held for friends ({}): {error}; set aside as {}",
        path.display(),
        aside.display()
    );
    if moved.is_ok()
        && let Ok(mailbox) = Mailbox::open(&path, Limits::default(), policy())
    {
        return (mailbox, Some(problem));
    }
    (
        Mailbox::in_memory(Limits::default(), policy()),
        Some(format!("{problem}; holding in memory only")),
    )
}

/// Who holds mail for `contact`, as it told us.
pub(crate) fn holders_of(s: &Store, contact: &PeerId) -> Result<Vec<HolderInfo>, StoreError> {
    Ok(s.meta(&format!("{META_PREFIX}{contact}"))?
        .and_then(|bytes| postcard::from_bytes::<Vec<HolderInfo>>(&bytes).ok())
        .unwrap_or_default())
}

/// A friend told us its holders.
pub(crate) fn learn_holders(
    s: &Store,
    peer: &PeerId,
    holders: Vec<HolderInfo>,
) -> Result<(), StoreError> {
    if s.contact_state(peer)? != Some(ContactState::Friend) {
        return Ok(());
    }
    let holders: Vec<HolderInfo> = holders
        .into_iter()
        .take(MAX_HOLDERS)
        .map(|mut h| {
            h.addrs.truncate(8);
            h
        })
        .collect();
    let bytes = postcard::to_allocvec(&holders).unwrap_or_default();
    s.set_meta(&format!("{META_PREFIX}{peer}"), &bytes)
}

/// `Collect`, for a peer that just connected if it is one of our holders.
pub(crate) fn on_connect(shared: &Shared, peer: &PeerId) -> Option<Vec<u8>> {
    lock(&shared.mail)
        .is_my_holder(peer)
        .then(|| MailMessage::Collect.encode())
}

/// Our holders, for a friend that said hello (`None` if we have none or
/// the peer is not a friend).
pub(crate) fn holders_wire(
    s: &Store,
    shared: &Shared,
    peer: &PeerId,
) -> Result<Option<Wire>, StoreError> {
    let mail = lock(&shared.mail);
    if mail.holders.is_empty() || s.contact_state(peer)? != Some(ContactState::Friend) {
        return Ok(None);
    }
    Ok(Some(Wire::Holders {
        holders: mail
            .holders
            .iter()
            .map(|(id, addrs)| HolderInfo {
                id: *id.as_bytes(),
                addrs: addrs.clone(),
            })
            .collect(),
    }))
}

/// A mailbox message from `peer`: as a holder, a request (answered in
/// `replies`); as a depositor, an answer; as a recipient, the items held
/// for us — returned as (sender, chat message) for the usual delivery
/// path, with the `Remove` to send once they are stored.
pub(crate) fn on_message(
    s: &Store,
    shared: &Shared,
    peer: &PeerId,
    data: &[u8],
    replies: &mut Vec<(PeerId, Vec<u8>)>,
) -> Result<Vec<(PeerId, Wire)>, StoreError> {
    let message = match MailMessage::decode(data) {
        Ok(Some(message)) => message,
        Ok(None) => return Ok(Vec::new()),
        Err(e) => {
            tracing::debug!(%peer, error = %e, "mailbox: bad message");
            return Ok(Vec::new());
        }
    };
    let mut mail = lock(&shared.mail);
    match message {
        MailMessage::Items { items, more } => {
            if !mail.is_my_holder(peer) {
                return Ok(Vec::new());
            }
            let mut delivered = Vec::new();
            let mut ids = Vec::new();
            for item in items {
                ids.push(item.id);
                match crate::seal::open(&mail.secret, &item.blob) {
                    Ok((sender, body)) => match Wire::decode(&body) {
                        Ok(wire @ Wire::Chat { .. }) => delivered.push((sender, wire)),
                        _ => tracing::debug!(%sender, "mailbox: not a chat message"),
                    },
                    Err(e) => tracing::info!(holder = %peer, error = %e, "mailbox: box refused"),
                }
            }
            if !ids.is_empty() {
                replies.push((*peer, MailMessage::Remove { ids }.encode()));
            }
            if more {
                replies.push((*peer, MailMessage::Collect.encode()));
            }
            Ok(delivered)
        }
        MailMessage::Deposited { tag } => {
            if let Some(id) = mail.tags.remove(&tag) {
                tracing::debug!(holder = %peer, ?id, "mailbox: deposited");
                mail.deposited.insert(id, Deposit::Held);
            }
            Ok(Vec::new())
        }
        MailMessage::Refused { tag, reason } => {
            if let Some(id) = mail.tags.remove(&tag) {
                tracing::info!(holder = %peer, %reason, ?id, "mailbox: deposit refused");
                mail.failed(id, Instant::now());
            }
            Ok(Vec::new())
        }
        request => {
            // Holding for friends: both ends must be friends of ours.
            let friends: HashSet<PeerId> = s
                .contacts()?
                .into_iter()
                .filter(|c| c.state == ContactState::Friend)
                .map(|c| c.id)
                .chain([shared.id])
                .collect();
            mail.held.set_policy(Policy::Among(friends));
            if let Some(reply) = mail.held.handle(peer, &request.encode(), unix_now()) {
                replies.push((*peer, reply));
            }
            Ok(Vec::new())
        }
    }
}

/// Every tick: dial our holders if not connected (connecting collects),
/// and deposit messages waiting for offline friends with their holders.
pub(crate) fn tick(service: &crust::Service, shared: &Shared, online: &HashSet<PeerId>) {
    let mut to_dial: Vec<(PeerId, Vec<Endpoint>)> = Vec::new();
    let mut deposits: Vec<(PeerId, Vec<Endpoint>, MessageId, Vec<u8>)> = Vec::new();
    let failed = lock(&shared.mail).failed.clone();
    {
        let mut mail = lock(&shared.mail);
        for (id, addrs) in &mail.holders {
            if !online.contains(id) {
                to_dial.push((*id, addrs.clone()));
            }
        }
        let pending = shared
            .with_store(|s| {
                let mut pending = Vec::new();
                for contact in s.contacts()? {
                    if contact.state != ContactState::Friend || online.contains(&contact.id) {
                        continue;
                    }
                    let holders = holders_of(s, &contact.id)?;
                    let Some(holder) = holders
                        .iter()
                        .filter_map(|h| PeerId::from_bytes(h.id).ok().map(|id| (id, h)))
                        .find(|(id, _)| *id != shared.id)
                    else {
                        continue;
                    };
                    for m in s.outbox(&contact.id, false)? {
                        pending.push((contact.id, holder.0, holder.1.addrs.clone(), m));
                    }
                }
                Ok(pending)
            })
            .unwrap_or_default();
        let now = Instant::now();
        let failed = std::mem::take(&mut *lock(&mail.failed));
        for id in failed {
            mail.failed(id, now);
        }
        for (recipient, holder, addrs, m) in pending {
            let tries = match mail.deposited.get(&m.id) {
                None => 0,
                Some(Deposit::Held) => continue,
                Some(Deposit::Trying { next, .. }) if now < *next => continue,
                Some(Deposit::Trying { tries, .. }) => *tries,
            };
            let wire = Wire::Chat {
                id: m.id.0,
                seq: m.seq,
                sent_at_ms: m.sent_at_ms,
                text: m.text.clone(),
            };
            let Some(blob) = crate::seal::seal(&mail.secret, &recipient, &wire.encode()) else {
                continue;
            };
            let tag = mail.next_tag;
            mail.next_tag += 1;
            mail.tags.insert(tag, m.id);
            mail.deposited.insert(
                m.id,
                Deposit::Trying {
                    next: now + backoff(DEPOSIT_RETRY, tries + 1),
                    tries: tries + 1,
                },
            );
            deposits.push((
                holder,
                addrs,
                m.id,
                MailMessage::Deposit {
                    tag,
                    recipient,
                    blob,
                }
                .encode(),
            ));
        }
    }
    for (holder, addrs) in to_dial {
        let service = service.clone();
        tokio::spawn(async move {
            if let Err(e) = service.connect(holder, &addrs).await {
                tracing::debug!(%holder, error = %e, "mailbox: holder not reached");
            }
        });
    }
    type Batch = (Vec<Endpoint>, Vec<(MessageId, Vec<u8>)>);
    let mut by_holder: HashMap<PeerId, Batch> = HashMap::new();
    for (holder, addrs, id, bytes) in deposits {
        by_holder
            .entry(holder)
            .or_insert((addrs, Vec::new()))
            .1
            .push((id, bytes));
    }
    for (holder, (addrs, messages)) in by_holder {
        let service = service.clone();
        let failed = failed.clone();
        tokio::spawn(async move {
            if service.connection_info(&holder).await.is_none()
                && let Err(e) = service.connect(holder, &addrs).await
            {
                tracing::debug!(%holder, error = %e, "mailbox: holder not reached");
                lock(&failed).extend(messages.into_iter().map(|(id, _)| id));
                return;
            }
            for (id, bytes) in messages {
                if let Err(e) = service.send(&holder, bytes, Priority::NORMAL).await {
                    tracing::debug!(%holder, error = %e, "mailbox: deposit not sent");
                    lock(&failed).push(id);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deposit_retries_back_off_to_a_cap() {
        assert_eq!(backoff(FAILED_RETRY, 1), Duration::from_secs(1));
        assert_eq!(backoff(FAILED_RETRY, 2), Duration::from_secs(2));
        assert_eq!(backoff(DEPOSIT_RETRY, 1), Duration::from_secs(8));
        assert_eq!(backoff(DEPOSIT_RETRY, 3), Duration::from_secs(32));
        assert_eq!(backoff(DEPOSIT_RETRY, 40), RETRY_CAP);
        assert_eq!(backoff(FAILED_RETRY, u32::MAX), RETRY_CAP);
    }

    #[test]
    fn held_mail_lives_in_the_profile_and_a_damaged_file_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (
            SecretId::generate().peer_id(),
            SecretId::generate().peer_id(),
        );
        let (mut held, problem) = open_held(dir.path());
        assert!(problem.is_none());
        held.set_policy(Policy::Open);
        held.deposit(&from, &to, b"sealed", unix_now()).unwrap();
        drop(held);
        let (held, problem) = open_held(dir.path());
        assert!(problem.is_none());
        assert_eq!(held.usage(&to), (1, 6));
        drop(held);

        let path = dir.path().join(HELD_MAIL_FILE);
        std::fs::remove_file(dir.path().join(format!("{HELD_MAIL_FILE}-wal"))).ok();
        std::fs::write(&path, b"not a database, not at all: garbage garbage").unwrap();
        let (mut held, problem) = open_held(dir.path());
        let problem = problem.expect("damage reported");
        assert!(problem.contains("set aside"), "{problem}");
        assert!(
            dir.path()
                .join(format!("{HELD_MAIL_FILE}.damaged"))
                .exists()
        );
        held.set_policy(Policy::Open);
        held.deposit(&from, &to, b"again", unix_now()).unwrap();
        drop(held);
        assert_eq!(open_held(dir.path()).0.usage(&to), (1, 5));
    }
}
