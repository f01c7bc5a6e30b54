//! What the client needs from a chat node, as a trait: [`chat_core::Node`]
//! implements it for the program; tests implement it with fixed data so
//! every screen renders the same way each run.
//!
//! Every method is synchronous: chat-core answers database questions on
//! the caller's thread and hands network work to its actor.

use chat_core::{
    Contact, Cursor, FriendRequest, HistoryPage, Invite, Message, Node, NodeError, PeerId, Settings,
};

/// The chat operations the client uses.
pub trait Backend {
    /// Our id.
    fn id(&self) -> PeerId;
    /// Our display name.
    fn display_name(&self) -> String;
    /// Changes our display name (settings, invites, friends) at once.
    fn set_display_name(&self, name: &str) -> Result<(), NodeError>;
    /// Every contact, sorted by name.
    fn contacts(&self) -> Result<Vec<Contact>, NodeError>;
    /// Pending friend requests, oldest first.
    fn requests(&self) -> Result<Vec<FriendRequest>, NodeError>;
    /// Blocked peers.
    fn blocked(&self) -> Result<Vec<PeerId>, NodeError>;
    /// A page of history, oldest first, ending before `before`.
    fn history(
        &self,
        contact: &PeerId,
        before: Option<Cursor>,
        limit: usize,
    ) -> Result<HistoryPage, NodeError>;
    /// Writes a message to the outbox.
    fn send(&self, to: &PeerId, text: &str) -> Result<Message, NodeError>;
    /// Tells a contact we are typing (or stopped).
    fn set_typing(&self, to: &PeerId, typing: bool) -> Result<(), NodeError>;
    /// Marks a conversation read; returns how many messages were newly read.
    fn mark_read(&self, contact: &PeerId) -> Result<usize, NodeError>;
    /// Sends a friend request.
    fn add_contact(&self, invite: &Invite, message: &str) -> Result<(), NodeError>;
    /// Accepts a friend request.
    fn accept(&self, from: &PeerId) -> Result<(), NodeError>;
    /// Declines a friend request.
    fn decline(&self, from: &PeerId) -> Result<(), NodeError>;
    /// Blocks a peer.
    fn block(&self, peer: &PeerId) -> Result<(), NodeError>;
    /// Unblocks a peer.
    fn unblock(&self, peer: &PeerId) -> Result<(), NodeError>;
    /// Renames a contact.
    fn rename(&self, peer: &PeerId, name: &str) -> Result<(), NodeError>;
    /// Removes a contact and its conversation.
    fn remove(&self, peer: &PeerId) -> Result<(), NodeError>;
    /// Marks a contact verified or not.
    fn set_verified(&self, peer: &PeerId, verified: bool) -> Result<(), NodeError>;
    /// The safety code of our conversation with `peer`.
    fn safety_code(&self, peer: &PeerId) -> String;
    /// Our invite.
    fn my_invite(&self) -> Result<Invite, NodeError>;
    /// Full-text search, newest first.
    fn search(
        &self,
        query: &str,
        contact: Option<&PeerId>,
        limit: usize,
    ) -> Result<Vec<Message>, NodeError>;
    /// The profile's settings.
    fn settings(&self) -> Result<Settings, NodeError>;
    /// Saves the profile's settings.
    fn set_settings(&self, settings: Settings) -> Result<(), NodeError>;
    /// Seals the identity key with a new passphrase (or none).
    fn change_passphrase(&self, new: Option<&str>) -> Result<(), NodeError>;
}

impl Backend for Node {
    fn id(&self) -> PeerId {
        Node::id(self)
    }
    fn display_name(&self) -> String {
        Node::display_name(self)
    }
    fn set_display_name(&self, name: &str) -> Result<(), NodeError> {
        Node::set_display_name(self, name)
    }
    fn contacts(&self) -> Result<Vec<Contact>, NodeError> {
        Node::contacts(self)
    }
    fn requests(&self) -> Result<Vec<FriendRequest>, NodeError> {
        Node::requests(self)
    }
    fn blocked(&self) -> Result<Vec<PeerId>, NodeError> {
        Node::blocked(self)
    }
    fn history(
        &self,
        contact: &PeerId,
        before: Option<Cursor>,
        limit: usize,
    ) -> Result<HistoryPage, NodeError> {
        Node::history(self, contact, before, limit)
    }
    fn send(&self, to: &PeerId, text: &str) -> Result<Message, NodeError> {
        Node::send(self, to, text)
    }
    fn set_typing(&self, to: &PeerId, typing: bool) -> Result<(), NodeError> {
        Node::set_typing(self, to, typing)
    }
    fn mark_read(&self, contact: &PeerId) -> Result<usize, NodeError> {
        Node::mark_read(self, contact)
    }
    fn add_contact(&self, invite: &Invite, message: &str) -> Result<(), NodeError> {
        Node::add_contact(self, invite, message)
    }
    fn accept(&self, from: &PeerId) -> Result<(), NodeError> {
        Node::accept(self, from)
    }
    fn decline(&self, from: &PeerId) -> Result<(), NodeError> {
        Node::decline(self, from)
    }
    fn block(&self, peer: &PeerId) -> Result<(), NodeError> {
        Node::block(self, peer)
    }
    fn unblock(&self, peer: &PeerId) -> Result<(), NodeError> {
        Node::unblock(self, peer)
    }
    fn rename(&self, peer: &PeerId, name: &str) -> Result<(), NodeError> {
        Node::rename(self, peer, name)
    }
    fn remove(&self, peer: &PeerId) -> Result<(), NodeError> {
        Node::remove(self, peer)
    }
    fn set_verified(&self, peer: &PeerId, verified: bool) -> Result<(), NodeError> {
        Node::set_verified(self, peer, verified)
    }
    fn safety_code(&self, peer: &PeerId) -> String {
        Node::safety_code(self, peer)
    }
    fn my_invite(&self) -> Result<Invite, NodeError> {
        Node::my_invite(self)
    }
    fn search(
        &self,
        query: &str,
        contact: Option<&PeerId>,
        limit: usize,
    ) -> Result<Vec<Message>, NodeError> {
        Node::search(self, query, contact, limit)
    }
    fn settings(&self) -> Result<Settings, NodeError> {
        Node::settings(self)
    }
    fn set_settings(&self, settings: Settings) -> Result<(), NodeError> {
        Node::set_settings(self, settings)
    }
    fn change_passphrase(&self, new: Option<&str>) -> Result<(), NodeError> {
        Node::change_passphrase(self, new)
    }
}
