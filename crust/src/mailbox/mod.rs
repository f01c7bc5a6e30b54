//! A mailbox: a peer holds opaque sealed blobs for recipients who are away,
//! and hands each recipient its own when it connects.
//!
//! The holder never needs to read what it holds: the application seals each
//! blob to the recipient before depositing it (chat-core seals and signs
//! messages; see its `seal` module). What the holder sees is the depositor's
//! and the recipient's peer ids, the blob's size and when it came.
//!
//! The protocol runs over ordinary crust messages between connected peers;
//! each [`Message`] starts with [`MAGIC`] so it can share a connection with
//! other traffic:
//! - a depositor sends [`Message::Deposit`] with a tag of its choice and is
//!   answered [`Message::Deposited`] or [`Message::Refused`] with the tag;
//! - a recipient sends [`Message::Collect`] and gets [`Message::Items`]
//!   (the items for *its* id, the one its connection proved: nobody can
//!   collect another's mail), then [`Message::Remove`] with the ids it has
//!   safely stored. An item not removed is handed out again on the next
//!   collect, so a crash between the two loses nothing.
//!
//! [`Mailbox`] is the holder's side: limits on the blob size, per
//! recipient (count and bytes), per depositor (bytes) and in total, and an
//! expiry; in memory ([`Mailbox::in_memory`]) or, with the `node` feature,
//! in SQLite ([`Mailbox::open`]), as `crust-node --hold` keeps it.

#[cfg(feature = "node")]
mod sqlite;

use std::collections::{BTreeMap, HashSet};
#[cfg(feature = "node")]
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::id::PeerId;

/// What every mailbox message starts with.
pub const MAGIC: &[u8; 4] = b"CRMB";
/// The largest blob a mailbox takes by default.
pub const DEFAULT_MAX_BLOB: usize = 96 * 1024;
/// Most bytes of items in one [`Message::Items`].
pub const MAX_ITEMS_BYTES: usize = 1024 * 1024;

/// A mailbox protocol message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Message {
    /// "Hold this blob for `recipient`."
    Deposit {
        /// The depositor's tag, echoed in the answer.
        tag: u64,
        /// Who may collect it.
        recipient: PeerId,
        /// The sealed blob.
        #[serde(with = "serde_bytes")]
        blob: Vec<u8>,
    },
    /// The deposit with this tag is held.
    Deposited {
        /// The depositor's tag.
        tag: u64,
    },
    /// The deposit with this tag was refused.
    Refused {
        /// The depositor's tag.
        tag: u64,
        /// Why.
        reason: Refusal,
    },
    /// "Hand me what you hold for me."
    Collect,
    /// What is held for the collector (at most [`MAX_ITEMS_BYTES`] of
    /// blobs; `more` says another collect will bring more).
    Items {
        /// The items, oldest first.
        items: Vec<Item>,
        /// Whether more are waiting.
        more: bool,
    },
    /// "I have stored these; drop them."
    Remove {
        /// Item ids from [`Message::Items`].
        ids: Vec<u64>,
    },
}

/// One held blob, as handed to its recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// The holder's id for it.
    pub id: u64,
    /// Who deposited it (as its connection proved).
    pub from: PeerId,
    /// When it was deposited, seconds since the Unix epoch (holder's clock).
    pub deposited_at: u64,
    /// The sealed blob.
    #[serde(with = "serde_bytes")]
    pub blob: Vec<u8>,
}

impl Message {
    /// The message bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        // Serialising these types cannot fail.
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    /// `Ok(None)` for bytes that are not a mailbox message at all (other
    /// traffic on the connection); an error for a broken one.
    pub fn decode(bytes: &[u8]) -> Result<Option<Self>, DecodeError> {
        let Some(body) = bytes.strip_prefix(MAGIC) else {
            return Ok(None);
        };
        if body.len() > MAX_ITEMS_BYTES + 64 * 1024 {
            return Err(DecodeError::TooLarge(body.len()));
        }
        match postcard::take_from_bytes(body) {
            Ok((message, [])) => Ok(Some(message)),
            _ => Err(DecodeError::Malformed),
        }
    }
}

/// Why bytes starting with [`MAGIC`] are not a mailbox message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Longer than any message the protocol sends.
    #[error("mailbox message of {0} bytes is too large")]
    TooLarge(usize),
    /// Does not decode.
    #[error("malformed mailbox message")]
    Malformed,
}

/// Why a deposit was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// This holder does not hold mail for that recipient (or from that
    /// depositor).
    #[error("this holder does not hold mail for that recipient")]
    NotAccepted,
    /// The blob is over the holder's limit.
    #[error("blob too large")]
    TooLarge,
    /// The recipient's box is full (count or bytes).
    #[error("the recipient's mailbox is full")]
    RecipientFull,
    /// The depositor has too much held already.
    #[error("too much held from this depositor")]
    DepositorFull,
    /// The holder is full.
    #[error("the holder is full")]
    HolderFull,
    /// The holder could not store it.
    #[error("the holder could not store it")]
    Storage,
}

/// A mailbox's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest blob taken.
    pub max_blob: usize,
    /// Most items held for one recipient.
    pub per_recipient_count: usize,
    /// Most bytes held for one recipient.
    pub per_recipient_bytes: usize,
    /// Most bytes held from one depositor (all recipients together).
    pub per_depositor_bytes: usize,
    /// Most bytes held in all.
    pub total_bytes: usize,
    /// An item not collected in this time is dropped.
    pub expiry: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_blob: DEFAULT_MAX_BLOB,
            per_recipient_count: 1000,
            per_recipient_bytes: 4 * 1024 * 1024,
            per_depositor_bytes: 4 * 1024 * 1024,
            total_bytes: 256 * 1024 * 1024,
            expiry: Duration::from_secs(14 * 24 * 3600),
        }
    }
}

/// Who may deposit and for whom.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Policy {
    /// Anyone, for anyone (bounded by the limits).
    #[default]
    Open,
    /// Only for these recipients (e.g. the holder's owner), from anyone.
    For(HashSet<PeerId>),
    /// Only between these peers: depositor and recipient both in the set
    /// (a chat node holding mail among its friends).
    Among(HashSet<PeerId>),
}

impl Policy {
    fn allows(&self, from: &PeerId, recipient: &PeerId) -> bool {
        match self {
            Self::Open => true,
            Self::For(recipients) => recipients.contains(recipient),
            Self::Among(peers) => peers.contains(from) && peers.contains(recipient),
        }
    }
}

/// Why a mailbox database could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MailboxError {
    /// SQLite failed.
    #[cfg(feature = "node")]
    #[error("mailbox database: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// Where items live.
trait Backend: Send {
    /// Stores a new item (its id is assigned here).
    fn insert(
        &mut self,
        from: &PeerId,
        recipient: &PeerId,
        at: u64,
        blob: &[u8],
    ) -> Result<u64, Refusal>;
    /// (count, bytes) held for a recipient.
    fn recipient_usage(&self, recipient: &PeerId) -> (usize, usize);
    /// Bytes held from a depositor.
    fn depositor_bytes(&self, from: &PeerId) -> usize;
    /// Bytes held in all.
    fn total_bytes(&self) -> usize;
    /// A recipient's items, oldest first, up to `max_bytes` of blobs (at
    /// least one item if there is any); and whether more are left.
    fn list(&self, recipient: &PeerId, max_bytes: usize) -> (Vec<Item>, bool);
    /// Drops these items of this recipient; returns how many there were.
    fn remove(&mut self, recipient: &PeerId, ids: &[u64]) -> usize;
    /// Drops items deposited before `before`; returns how many.
    fn expire(&mut self, before: u64) -> usize;
}

/// The first items of `items` (oldest first) that fit in `max_bytes` of
/// blobs, at least one if there is any; and whether more are left. Both
/// backends page a collect with it.
fn page(items: impl Iterator<Item = Item>, max_bytes: usize) -> (Vec<Item>, bool) {
    let mut out = Vec::new();
    let mut bytes = 0;
    for item in items {
        if !out.is_empty() && bytes + item.blob.len() > max_bytes {
            return (out, true);
        }
        bytes += item.blob.len();
        out.push(item);
    }
    (out, false)
}

#[derive(Default)]
struct Memory {
    next: u64,
    items: BTreeMap<u64, (PeerId, Item)>,
}

impl Backend for Memory {
    fn insert(
        &mut self,
        from: &PeerId,
        recipient: &PeerId,
        at: u64,
        blob: &[u8],
    ) -> Result<u64, Refusal> {
        self.next += 1;
        let item = Item {
            id: self.next,
            from: *from,
            deposited_at: at,
            blob: blob.to_vec(),
        };
        self.items.insert(self.next, (*recipient, item));
        Ok(self.next)
    }

    fn recipient_usage(&self, recipient: &PeerId) -> (usize, usize) {
        self.items
            .values()
            .filter(|(r, _)| r == recipient)
            .fold((0, 0), |(n, b), (_, i)| (n + 1, b + i.blob.len()))
    }

    fn depositor_bytes(&self, from: &PeerId) -> usize {
        self.items
            .values()
            .filter(|(_, i)| i.from == *from)
            .map(|(_, i)| i.blob.len())
            .sum()
    }

    fn total_bytes(&self) -> usize {
        self.items.values().map(|(_, i)| i.blob.len()).sum()
    }

    fn list(&self, recipient: &PeerId, max_bytes: usize) -> (Vec<Item>, bool) {
        page(
            self.items
                .values()
                .filter(|(r, _)| r == recipient)
                .map(|(_, item)| item.clone()),
            max_bytes,
        )
    }

    fn remove(&mut self, recipient: &PeerId, ids: &[u64]) -> usize {
        let mut removed = 0;
        for id in ids {
            if self.items.get(id).is_some_and(|(r, _)| r == recipient) {
                self.items.remove(id);
                removed += 1;
            }
        }
        removed
    }

    fn expire(&mut self, before: u64) -> usize {
        let len = self.items.len();
        self.items.retain(|_, (_, i)| i.deposited_at >= before);
        len - self.items.len()
    }
}

/// A holder's mailbox: the store, its limits and who may use it.
pub struct Mailbox {
    backend: Box<dyn Backend>,
    limits: Limits,
    policy: Policy,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("limits", &self.limits)
            .field("policy", &self.policy)
            .finish()
    }
}

impl Mailbox {
    /// A mailbox in memory: what it holds is gone when the process ends.
    pub fn in_memory(limits: Limits, policy: Policy) -> Self {
        Self {
            backend: Box::new(Memory::default()),
            limits,
            policy,
        }
    }

    /// A mailbox in the SQLite database at `path` (created if needed).
    #[cfg(feature = "node")]
    pub fn open(path: &Path, limits: Limits, policy: Policy) -> Result<Self, MailboxError> {
        Ok(Self {
            backend: Box::new(sqlite::Sqlite::open(path)?),
            limits,
            policy,
        })
    }

    /// Changes who may deposit (e.g. when the friends list changes).
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// Holds `blob` from `from` for `recipient`, at `now` (seconds since the
    /// Unix epoch); returns the item's id.
    pub fn deposit(
        &mut self,
        from: &PeerId,
        recipient: &PeerId,
        blob: &[u8],
        now: u64,
    ) -> Result<u64, Refusal> {
        if !self.policy.allows(from, recipient) {
            return Err(Refusal::NotAccepted);
        }
        if blob.len() > self.limits.max_blob {
            return Err(Refusal::TooLarge);
        }
        self.expire(now);
        let (count, bytes) = self.backend.recipient_usage(recipient);
        if count >= self.limits.per_recipient_count
            || bytes + blob.len() > self.limits.per_recipient_bytes
        {
            return Err(Refusal::RecipientFull);
        }
        if self.backend.depositor_bytes(from) + blob.len() > self.limits.per_depositor_bytes {
            return Err(Refusal::DepositorFull);
        }
        if self.backend.total_bytes() + blob.len() > self.limits.total_bytes {
            return Err(Refusal::HolderFull);
        }
        self.backend.insert(from, recipient, now, blob)
    }

    /// What is held for `recipient` (not yet expired at `now`), oldest
    /// first, up to `max_bytes` of blobs; and whether more are left.
    pub fn collect(&mut self, recipient: &PeerId, now: u64, max_bytes: usize) -> (Vec<Item>, bool) {
        self.expire(now);
        self.backend.list(recipient, max_bytes)
    }

    /// Drops `recipient`'s items with these ids (ids of others' items are
    /// ignored); returns how many were dropped.
    pub fn remove(&mut self, recipient: &PeerId, ids: &[u64]) -> usize {
        self.backend.remove(recipient, ids)
    }

    /// Drops items older than the expiry; returns how many.
    pub fn expire(&mut self, now: u64) -> usize {
        let before = now.saturating_sub(self.limits.expiry.as_secs());
        self.backend.expire(before)
    }

    /// (items, bytes) held for `recipient`.
    pub fn usage(&self, recipient: &PeerId) -> (usize, usize) {
        self.backend.recipient_usage(recipient)
    }

    /// Answers a message from `peer` (its id proven by the connection) at
    /// `now`: `None` when it is not a mailbox request (other traffic, or a
    /// reply meant for a depositor), else the reply to send back (nothing
    /// for `Remove`, which is not answered).
    pub fn handle(&mut self, peer: &PeerId, bytes: &[u8], now: u64) -> Option<Vec<u8>> {
        let message = match Message::decode(bytes) {
            Ok(Some(message)) => message,
            Ok(None) => return None,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "mailbox: bad request");
                return None;
            }
        };
        let reply = match message {
            Message::Deposit {
                tag,
                recipient,
                blob,
            } => match self.deposit(peer, &recipient, &blob, now) {
                Ok(_) => Message::Deposited { tag },
                Err(reason) => Message::Refused { tag, reason },
            },
            Message::Collect => {
                let (items, more) = self.collect(peer, now, MAX_ITEMS_BYTES);
                Message::Items { items, more }
            }
            Message::Remove { ids } => {
                self.remove(peer, &ids);
                return None;
            }
            Message::Deposited { .. } | Message::Refused { .. } | Message::Items { .. } => {
                return None;
            }
        };
        Some(reply.encode())
    }
}

/// Seconds since the Unix epoch now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
