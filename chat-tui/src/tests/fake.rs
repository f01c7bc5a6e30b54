//! An in-memory [`Backend`] with fixed contacts and history.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use chat_core::{
    Contact, ContactState, Cursor, FriendRequest, HistoryPage, Invite, Message, MessageId,
    MessageState, NodeError, PeerId, Presence, Settings,
};

use super::{now, online, peer};
use crate::Backend;

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) me: Option<PeerId>,
    pub(crate) name: String,
    pub(crate) contacts: Vec<Contact>,
    pub(crate) requests: Vec<FriendRequest>,
    pub(crate) blocked: Vec<PeerId>,
    pub(crate) messages: HashMap<PeerId, Vec<Message>>,
    pub(crate) settings: Settings,
    pub(crate) typing: Vec<(PeerId, bool)>,
    pub(crate) added: Vec<(PeerId, String)>,
    pub(crate) next: u64,
    pub(crate) history_calls: usize,
}

/// A shared handle: the app owns one clone, the test keeps another.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fake(pub(crate) Rc<RefCell<State>>);

const MINUTE: i64 = 60_000;

pub(crate) fn contact(n: u8, name: &str, state: ContactState) -> Contact {
    Contact {
        id: peer(n),
        name: name.to_owned(),
        state,
        verified: false,
        addrs: vec![std::net::SocketAddr::from(([192, 0, 2, 7], 5000 + u16::from(n))).into()],
        presence: Presence::Offline {
            last_seen_ms: Some(now() - 3 * 60 * MINUTE),
            connecting: false,
        },
        unread: 0,
        undelivered: 0,
    }
}

impl Fake {
    /// Nobody yet.
    pub(crate) fn empty() -> Self {
        let fake = Fake::default();
        {
            let mut s = fake.0.borrow_mut();
            s.me = Some(peer(1));
            s.name = "alice".to_owned();
            s.settings = Settings {
                display_name: "alice".to_owned(),
                listen: vec![std::net::SocketAddr::from(([0, 0, 0, 0], 5483))],
                ..Settings::default()
            };
        }
        fake
    }

    /// Alice with three contacts (bob online, carol with unread messages,
    /// dave who has not answered), a request from eve, and a conversation
    /// with bob over two days in every delivery state.
    pub(crate) fn populated() -> Self {
        let fake = Self::empty();
        {
            let mut s = fake.0.borrow_mut();
            let mut bob = contact(2, "bob", ContactState::Friend);
            bob.presence = online(5002);
            bob.verified = true;
            let mut carol = contact(3, "carol", ContactState::Friend);
            carol.unread = 2;
            let dave = contact(4, "dave", ContactState::RequestSent);
            s.contacts = vec![bob, carol, dave];
            s.requests = vec![FriendRequest {
                from: peer(5),
                name: "eve".to_owned(),
                message: "hi alice, it's eve from the climbing club".to_owned(),
                addrs: vec![std::net::SocketAddr::from(([192, 0, 2, 9], 5483)).into()],
                received_at_ms: now() - 5 * MINUTE,
                replaces: None,
            }];
        }
        let yesterday = now() - 24 * 60 * MINUTE;
        fake.incoming(2, yesterday, "are we still on for saturday?");
        fake.outgoing(
            2,
            yesterday + MINUTE,
            "yes! 10 at the station",
            MessageState::Read,
        );
        fake.incoming(2, now() - 30 * MINUTE, "bringing the rope and a thermos of tea, which is heavy but worth it when it gets cold up there");
        fake.outgoing(2, now() - 20 * MINUTE, "great", MessageState::Delivered);
        fake.outgoing(2, now() - 10 * MINUTE, "see you", MessageState::Sent);
        fake.outgoing(
            2,
            now() - MINUTE,
            "one more thing\non two lines",
            MessageState::Queued,
        );
        fake.incoming(3, now() - 50 * MINUTE, "hello?");
        fake.incoming(3, now() - 40 * MINUTE, "ping me when you are back");
        fake
    }

    fn push(&self, n: u8, outgoing: bool, at: i64, text: &str, state: MessageState) -> Message {
        let mut s = self.0.borrow_mut();
        s.next += 1;
        let seq = s.next;
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&seq.to_be_bytes());
        let m = Message {
            id: MessageId(id),
            contact: peer(n),
            outgoing,
            seq,
            sent_at_ms: at,
            received_at_ms: (!outgoing).then_some(at),
            text: text.to_owned(),
            state,
        };
        s.messages.entry(peer(n)).or_default().push(m.clone());
        m
    }

    pub(crate) fn incoming(&self, n: u8, at: i64, text: &str) -> Message {
        self.push(n, false, at, text, MessageState::Delivered)
    }

    pub(crate) fn outgoing(&self, n: u8, at: i64, text: &str, state: MessageState) -> Message {
        self.push(n, true, at, text, state)
    }

    pub(crate) fn messages(&self, n: u8) -> Vec<Message> {
        self.0
            .borrow()
            .messages
            .get(&peer(n))
            .cloned()
            .unwrap_or_default()
    }
}

impl Backend for Fake {
    fn id(&self) -> PeerId {
        self.0.borrow().me.unwrap()
    }
    fn display_name(&self) -> String {
        self.0.borrow().name.clone()
    }
    fn set_display_name(&self, name: &str) -> Result<(), NodeError> {
        let mut s = self.0.borrow_mut();
        s.name = name.to_owned();
        s.settings.display_name = name.to_owned();
        Ok(())
    }
    fn contacts(&self) -> Result<Vec<Contact>, NodeError> {
        Ok(self.0.borrow().contacts.clone())
    }
    fn requests(&self) -> Result<Vec<FriendRequest>, NodeError> {
        Ok(self.0.borrow().requests.clone())
    }
    fn blocked(&self) -> Result<Vec<PeerId>, NodeError> {
        Ok(self.0.borrow().blocked.clone())
    }
    fn history(
        &self,
        contact: &PeerId,
        before: Option<Cursor>,
        limit: usize,
    ) -> Result<HistoryPage, NodeError> {
        let mut s = self.0.borrow_mut();
        s.history_calls += 1;
        let all = s.messages.get(contact).cloned().unwrap_or_default();
        let older: Vec<Message> = all
            .into_iter()
            .filter(|m| before.is_none_or(|b| m.cursor() < b))
            .collect();
        let start = older.len().saturating_sub(limit);
        let messages = older[start..].to_vec();
        Ok(HistoryPage {
            older: (start > 0).then(|| messages[0].cursor()),
            messages,
        })
    }
    fn send(&self, to: &PeerId, text: &str) -> Result<Message, NodeError> {
        let n = (1..=9)
            .find(|n| peer(*n) == *to)
            .ok_or(NodeError::UnknownContact(*to))?;
        Ok(self.outgoing(n, now(), text, MessageState::Queued))
    }
    fn set_typing(&self, to: &PeerId, typing: bool) -> Result<(), NodeError> {
        self.0.borrow_mut().typing.push((*to, typing));
        Ok(())
    }
    fn mark_read(&self, contact: &PeerId) -> Result<usize, NodeError> {
        let mut s = self.0.borrow_mut();
        let c = s.contacts.iter_mut().find(|c| c.id == *contact);
        Ok(c.map_or(0, |c| std::mem::take(&mut c.unread) as usize))
    }
    fn add_contact(&self, invite: &Invite, message: &str) -> Result<(), NodeError> {
        let mut s = self.0.borrow_mut();
        if Some(invite.peer) == s.me {
            return Err(NodeError::OwnId);
        }
        s.added.push((invite.peer, message.to_owned()));
        let mut c = contact(0, &invite.name, ContactState::RequestSent);
        c.id = invite.peer;
        c.addrs = invite.addrs.clone();
        s.contacts.push(c);
        s.contacts.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(())
    }
    fn accept(&self, from: &PeerId) -> Result<(), NodeError> {
        let mut s = self.0.borrow_mut();
        let pos = s
            .requests
            .iter()
            .position(|r| r.from == *from)
            .ok_or(NodeError::NoRequest(*from))?;
        let r = s.requests.remove(pos);
        let mut c = contact(0, &r.name, ContactState::Friend);
        c.id = r.from;
        s.contacts.push(c);
        s.contacts.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(())
    }
    fn decline(&self, from: &PeerId) -> Result<(), NodeError> {
        let mut s = self.0.borrow_mut();
        let before = s.requests.len();
        s.requests.retain(|r| r.from != *from);
        if s.requests.len() == before {
            return Err(NodeError::NoRequest(*from));
        }
        Ok(())
    }
    fn block(&self, peer: &PeerId) -> Result<(), NodeError> {
        let mut s = self.0.borrow_mut();
        s.requests.retain(|r| r.from != *peer);
        s.blocked.push(*peer);
        Ok(())
    }
    fn unblock(&self, peer: &PeerId) -> Result<(), NodeError> {
        self.0.borrow_mut().blocked.retain(|p| p != peer);
        Ok(())
    }
    fn rename(&self, peer: &PeerId, name: &str) -> Result<(), NodeError> {
        let mut s = self.0.borrow_mut();
        let c = s
            .contacts
            .iter_mut()
            .find(|c| c.id == *peer)
            .ok_or(NodeError::UnknownContact(*peer))?;
        c.name = name.to_owned();
        s.contacts.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(())
    }
    fn remove(&self, peer: &PeerId) -> Result<(), NodeError> {
        let mut s = self.0.borrow_mut();
        s.contacts.retain(|c| c.id != *peer);
        s.messages.remove(peer);
        Ok(())
    }
    fn set_verified(&self, peer: &PeerId, verified: bool) -> Result<(), NodeError> {
        let mut s = self.0.borrow_mut();
        let c = s
            .contacts
            .iter_mut()
            .find(|c| c.id == *peer)
            .ok_or(NodeError::UnknownContact(*peer))?;
        c.verified = verified;
        Ok(())
    }
    fn safety_code(&self, peer: &PeerId) -> String {
        chat_core::safety_code(&self.id(), peer)
    }
    fn my_invite(&self) -> Result<Invite, NodeError> {
        Ok(Invite {
            peer: self.id(),
            name: self.display_name(),
            addrs: vec![std::net::SocketAddr::from(([192, 0, 2, 1], 5483)).into()],
            token: [1, 2, 3, 4],
        })
    }
    fn search(
        &self,
        query: &str,
        contact: Option<&PeerId>,
        limit: usize,
    ) -> Result<Vec<Message>, NodeError> {
        let s = self.0.borrow();
        let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
        let mut hits: Vec<Message> = s
            .messages
            .values()
            .flatten()
            .filter(|m| contact.is_none_or(|c| m.contact == *c))
            .filter(|m| {
                let text = m.text.to_lowercase();
                words.iter().all(|w| text.contains(w.as_str()))
            })
            .cloned()
            .collect();
        hits.sort_by_key(|m| std::cmp::Reverse(m.sent_at_ms));
        hits.truncate(limit);
        Ok(hits)
    }
    fn settings(&self) -> Result<Settings, NodeError> {
        Ok(self.0.borrow().settings.clone())
    }
    fn set_settings(&self, settings: Settings) -> Result<(), NodeError> {
        self.0.borrow_mut().settings = settings;
        Ok(())
    }
    fn change_passphrase(&self, _new: Option<&str>) -> Result<(), NodeError> {
        Ok(())
    }
}
