//! The values the API hands out: message ids, messages, delivery states,
//! contacts, friend requests, history pages.
//!
//! These are plain data; the [`Node`](crate::Node) and the store produce
//! them, front ends display them.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use crust::{ConnectionInfo, ConnectionPath, Endpoint, PeerId, Transport};

/// The largest message text accepted, in bytes of UTF-8.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

/// A message's identity: 16 bytes, shown as 32 hex digits — the sender's
/// clock in milliseconds (6 bytes, big-endian) then 10 random bytes.
///
/// Chosen by the sender; receipt is idempotent per (contact, id). Leading
/// with the time keeps new ids at the end of the database's unique index,
/// so an insert touches the same few pages however large the history is;
/// the time is no secret, messages carry it anyway.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub [u8; 16]);

impl MessageId {
    /// A fresh random id.
    pub(crate) fn random() -> Self {
        let mut bytes = [0u8; 16];
        let ms = u64::try_from(now_ms()).unwrap_or(0);
        bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
        crate::fill_random(&mut bytes[6..]);
        Self(bytes)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&data_encoding::HEXLOWER.encode(&self.0))
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

/// A string is not a message id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a message id: expected 32 hex digits")]
pub struct ParseMessageIdError;

impl FromStr for MessageId {
    type Err = ParseMessageIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = data_encoding::HEXLOWER_PERMISSIVE
            .decode(s.trim().as_bytes())
            .map_err(|_| ParseMessageIdError)?;
        Ok(Self(bytes.try_into().map_err(|_| ParseMessageIdError)?))
    }
}

/// Where a message is on its way.
///
/// Outgoing: `Queued` (on disk, not yet handed to a connection) → `Sent`
/// (handed to a live connection) → `Delivered` (the peer stored it and
/// acknowledged) → `Read` (the peer's client reported it read). A message
/// that was `Sent` when the connection dropped is sent again on the next
/// connection; it never goes back to `Queued` in what is reported.
/// Incoming messages are `Delivered` until [`Node::mark_read`] makes them
/// `Read`.
///
/// [`Node::mark_read`]: crate::Node::mark_read
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MessageState {
    /// Written to the outbox, waiting for a connection.
    Queued,
    /// Handed to a live connection, not yet acknowledged.
    Sent,
    /// Stored by the recipient.
    Delivered,
    /// Read by the recipient.
    Read,
}

impl MessageState {
    pub(crate) fn to_db(self) -> i64 {
        match self {
            Self::Queued => 0,
            Self::Sent => 1,
            Self::Delivered => 2,
            Self::Read => 3,
        }
    }

    pub(crate) fn from_db(value: i64) -> Self {
        match value {
            0 => Self::Queued,
            1 => Self::Sent,
            2 => Self::Delivered,
            _ => Self::Read,
        }
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its id.
    pub id: MessageId,
    /// The other side of the conversation (not necessarily the author).
    pub contact: PeerId,
    /// Whether we wrote it.
    pub outgoing: bool,
    /// The sender's sequence number (a Lamport clock per conversation):
    /// history is ordered by it, not by arrival.
    pub seq: u64,
    /// When the sender wrote it, by the sender's clock (ms since the Unix
    /// epoch).
    pub sent_at_ms: i64,
    /// When it arrived here (incoming only), by our clock.
    pub received_at_ms: Option<i64>,
    /// The text.
    pub text: String,
    /// Delivery state.
    pub state: MessageState,
}

impl Message {
    /// The position of this message in its conversation, for paging.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            seq: self.seq,
            outgoing: self.outgoing,
            id: self.id,
        }
    }
}

/// A position in a conversation: history pages end before it.
///
/// Positions are stable: messages that arrive later sort after every
/// message already stored from the same sender, so paging backwards from a
/// cursor never repeats or skips a stored message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor {
    /// Sender sequence.
    pub seq: u64,
    /// Tie-break between the two senders.
    pub outgoing: bool,
    /// Tie-break within a sender.
    pub id: MessageId,
}

/// One page of history, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    /// The messages, oldest first.
    pub messages: Vec<Message>,
    /// Pass this as `before` to get the older page; `None` at the start of
    /// the conversation.
    pub older: Option<Cursor>,
}

/// How far a contact relationship has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContactState {
    /// We sent a friend request and wait for an answer.
    RequestSent,
    /// Both sides accepted: messages flow.
    Friend,
    /// The peer declined our request.
    Declined,
}

impl ContactState {
    pub(crate) fn to_db(self) -> i64 {
        match self {
            Self::RequestSent => 0,
            Self::Friend => 1,
            Self::Declined => 2,
        }
    }

    pub(crate) fn from_db(value: i64) -> Self {
        match value {
            0 => Self::RequestSent,
            1 => Self::Friend,
            _ => Self::Declined,
        }
    }
}

/// Whether a contact is reachable right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presence {
    /// Connected, over this path.
    Online(ConnectionInfo),
    /// Not connected; last seen at this time (ms since the Unix epoch), if
    /// ever.
    Offline {
        /// When we were last connected.
        last_seen_ms: Option<i64>,
        /// The connection dropped and the node is dialling the contact
        /// again right now ([`crate::Event::ContactConnecting`]): a contact
        /// list shows "connecting" rather than "offline".
        connecting: bool,
    },
}

impl Presence {
    /// The path in use, for a contact list: `"direct TCP 192.0.2.1:5483"`,
    /// `"direct uTP 192.0.2.1:5483"`, `"hole-punched uTP …"`,
    /// `"relayed via PEER, TCP …"`, or `None` when offline.
    pub fn path(&self) -> Option<String> {
        match self {
            Self::Online(info) => Some(describe_path(info)),
            Self::Offline { .. } => None,
        }
    }
}

/// A connection's path in words: how it was found (direct, hole-punched,
/// relayed), its transport and the peer's address as we see it.
pub fn describe_path(info: &ConnectionInfo) -> String {
    let transport = match info.transport {
        Transport::Tcp => "TCP",
        Transport::Utp => "uTP",
        _ => "other transport",
    };
    match info.path {
        ConnectionPath::Direct => format!("direct {transport} {}", info.remote_addr),
        ConnectionPath::HolePunched => format!("hole-punched {transport} {}", info.remote_addr),
        ConnectionPath::Relayed { via } => {
            format!("relayed via {via}, {transport} {}", info.remote_addr)
        }
        _ => format!("{transport} {}", info.remote_addr),
    }
}

/// Someone in the contact list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// Their key.
    pub id: PeerId,
    /// The name shown (theirs, or one we chose with
    /// [`Node::rename`](crate::Node::rename)).
    pub name: String,
    /// Relationship.
    pub state: ContactState,
    /// Whether we compared safety codes and marked them verified.
    pub verified: bool,
    /// Where they were last reachable (TCP and uTP endpoints).
    pub addrs: Vec<Endpoint>,
    /// Online or offline.
    pub presence: Presence,
    /// Incoming messages not yet marked read.
    pub unread: u64,
    /// Outgoing messages not yet acknowledged ("waiting for them").
    pub undelivered: u64,
}

/// A friend request someone sent us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FriendRequest {
    /// Who asks.
    pub from: PeerId,
    /// The name they gave.
    pub name: String,
    /// Their short message.
    pub message: String,
    /// Where they said they can be reached (TCP and uTP endpoints).
    pub addrs: Vec<Endpoint>,
    /// When it arrived (ms since the Unix epoch).
    pub received_at_ms: i64,
    /// A known contact this key claims to replace (a changed key): treat
    /// with suspicion and compare safety codes before accepting.
    pub replaces: Option<PeerId>,
}

/// Milliseconds since the Unix epoch, by this machine's clock.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_round_trip_through_text() {
        let id = MessageId::random();
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(text.parse::<MessageId>().unwrap(), id);
        assert!("xyz".parse::<MessageId>().is_err());
        // Later ids sort after earlier ones (by millisecond).
        let later = {
            std::thread::sleep(std::time::Duration::from_millis(2));
            MessageId::random()
        };
        assert!(later > id);
        assert!("00".parse::<MessageId>().is_err());
    }

    #[test]
    fn states_round_trip_through_the_database_encoding() {
        for s in [
            MessageState::Queued,
            MessageState::Sent,
            MessageState::Delivered,
            MessageState::Read,
        ] {
            assert_eq!(MessageState::from_db(s.to_db()), s);
        }
        for s in [
            ContactState::RequestSent,
            ContactState::Friend,
            ContactState::Declined,
        ] {
            assert_eq!(ContactState::from_db(s.to_db()), s);
        }
    }
}
