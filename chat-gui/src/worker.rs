//! The worker: a thread with a tokio runtime that owns the profile and the
//! [`Node`], so the UI thread never waits on the network or the database.
//!
//! Order of calls: [`Worker::spawn`] with the profile directory and the
//! node's configuration; the worker first reports whether the profile
//! exists ([`Update::NeedSetup`]) or is sealed ([`Update::NeedPassphrase`]),
//! the UI answers with [`Request::Create`] or [`Request::Unlock`], and once
//! the node runs ([`Update::Ready`]) every other [`Request`] is served.
//! The UI calls [`Worker::try_recv`] each frame; the worker wakes it with
//! `request_repaint` after every update it sends.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock, mpsc as std_mpsc};

use chat_core::{
    Contact, Cursor, Event, FriendRequest, Invite, KeyError, Message, NetworkReport, Node,
    NodeConfig, PeerId, Profile, ProfileError, QrMatrix, Settings,
};
use tokio::sync::mpsc;

/// Messages loaded when a conversation opens (more if more are unread),
/// and per older page as the user scrolls up.
pub const HISTORY_PAGE: usize = 200;
/// Most messages loaded when a conversation opens, however many are
/// unread (the unread marker then sits before the oldest one loaded).
pub(crate) const HISTORY_FIRST_MAX: usize = 5_000;
/// Most search results shown.
pub(crate) const SEARCH_LIMIT: usize = 200;

/// What the UI asks of the worker.
#[derive(Debug, Clone)]
pub enum Request {
    /// First run: create the profile and start the node.
    Create {
        /// Display name.
        name: String,
        /// Optional passphrase sealing the identity key.
        passphrase: Option<String>,
    },
    /// Open a sealed profile.
    Unlock {
        /// The passphrase.
        passphrase: String,
    },
    /// Reload contacts and requests.
    Refresh,
    /// Load the newest page of a conversation.
    OpenConversation {
        /// Whose.
        contact: PeerId,
        /// How many messages are unread (all of them are loaded, so the
        /// unread marker has its place).
        unread: u64,
    },
    /// Load the page of a conversation before a cursor.
    LoadOlder {
        /// Whose.
        contact: PeerId,
        /// Where the loaded part starts.
        before: Cursor,
    },
    /// Send a message.
    Send {
        /// To whom.
        to: PeerId,
        /// The text.
        text: String,
    },
    /// Tell a contact we started or stopped typing.
    Typing {
        /// To whom.
        to: PeerId,
        /// Typing now?
        typing: bool,
    },
    /// Mark a conversation read.
    MarkRead(PeerId),
    /// Send a friend request to an invite code.
    AddContact {
        /// The `crust:` code.
        invite: String,
        /// A short message.
        message: String,
    },
    /// Accept a friend request.
    Accept(PeerId),
    /// Decline a friend request.
    Decline(PeerId),
    /// Rename a contact.
    Rename(PeerId, String),
    /// Remove a contact and its conversation.
    Remove(PeerId),
    /// Block a peer.
    Block(PeerId),
    /// Unblock a peer.
    Unblock(PeerId),
    /// Mark a contact verified or not.
    SetVerified(PeerId, bool),
    /// Search messages.
    Search {
        /// Words to find.
        query: String,
        /// One conversation, or all.
        contact: Option<PeerId>,
    },
    /// Our invite and its QR code.
    MyInvite,
    /// A new request token (old invites stop working).
    RotateInvite,
    /// The network report.
    NetworkReport,
    /// The profile's settings.
    LoadSettings,
    /// Save new settings.
    SaveSettings(Settings),
    /// Seal the key with a new passphrase, or unseal it.
    ChangePassphrase(Option<String>),
}

/// Who we are, once the node runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Me {
    /// Our id.
    pub id: PeerId,
    /// Our display name.
    pub name: String,
    /// The profile directory.
    pub dir: PathBuf,
}

/// What the worker reports to the UI.
#[derive(Debug, Clone)]
pub enum Update {
    /// No profile yet: show the first-run screen.
    NeedSetup,
    /// The key is sealed; `wrong` after a failed attempt.
    NeedPassphrase {
        /// The last passphrase was wrong.
        wrong: bool,
    },
    /// The node runs.
    Ready(Me),
    /// The profile or the node could not be opened; nothing more will come.
    Failed(String),
    /// The contact list and the pending friend requests, read together so
    /// a window never shows a request already accepted beside the friend
    /// it made (the two used to arrive as two updates, one frame apart).
    Lists {
        /// The contact list.
        contacts: Vec<Contact>,
        /// Pending friend requests.
        requests: Vec<FriendRequest>,
    },
    /// The newest page of a conversation, oldest first.
    History {
        /// Whose.
        contact: PeerId,
        /// The messages.
        messages: Vec<Message>,
        /// Where the older page starts; `None` when this is all.
        older: Option<Cursor>,
    },
    /// An older page of a conversation, oldest first.
    Older {
        /// Whose.
        contact: PeerId,
        /// The messages.
        messages: Vec<Message>,
        /// Where the next older page starts; `None` at the beginning.
        older: Option<Cursor>,
    },
    /// A message we sent, as stored.
    Sent(Message),
    /// Something the node reported.
    Event(Event),
    /// Search results, newest first.
    SearchResults {
        /// The query they answer.
        query: String,
        /// The messages.
        results: Vec<Message>,
    },
    /// Our invite.
    Invite {
        /// The `crust:` code.
        code: String,
        /// Its QR code.
        qr: QrMatrix,
    },
    /// The network report.
    Network(NetworkReport),
    /// The profile's settings.
    Settings(Settings),
    /// A friend request was sent to this invite.
    ContactAdded(PeerId),
    /// Something the user should read (an action's outcome).
    Notice(String),
    /// An action failed.
    Error(String),
}

/// The UI's handle on the worker thread.
#[derive(Debug)]
pub struct Worker {
    requests: mpsc::UnboundedSender<Request>,
    updates: std_mpsc::Receiver<Update>,
    repaint: Arc<OnceLock<egui::Context>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Sends updates to the UI and wakes it.
struct Outbox {
    tx: std_mpsc::Sender<Update>,
    repaint: Arc<OnceLock<egui::Context>>,
}

impl Outbox {
    fn send(&self, update: Update) {
        let _ = self.tx.send(update);
        if let Some(ctx) = self.repaint.get() {
            ctx.request_repaint();
        }
    }
}

impl Worker {
    /// Starts the worker thread for the profile in `dir`.
    pub fn spawn(dir: PathBuf, config: NodeConfig) -> std::io::Result<Self> {
        let (requests, rx) = mpsc::unbounded_channel();
        let (tx, updates) = std_mpsc::channel();
        let repaint = Arc::new(OnceLock::new());
        let outbox = Outbox {
            tx,
            repaint: repaint.clone(),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("chat-worker")
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("chat-worker".into())
            .spawn(move || runtime.block_on(run(dir, config, rx, outbox)))?;
        Ok(Self {
            requests,
            updates,
            repaint,
            thread: Some(thread),
        })
    }

    /// Lets the worker wake the UI (called with the UI's context on the
    /// first frame).
    pub fn set_context(&self, ctx: &egui::Context) {
        if self.repaint.get().is_none() {
            let _ = self.repaint.set(ctx.clone());
        }
    }

    /// Hands a request to the worker (never blocks).
    pub fn send(&self, request: Request) {
        let _ = self.requests.send(request);
    }

    /// The next update, if one is waiting.
    pub fn try_recv(&self) -> Option<Update> {
        self.updates.try_recv().ok()
    }
}

impl Drop for Worker {
    /// Closes the request channel, which makes the worker shut the node
    /// down cleanly (connections closed, profile released), and waits for
    /// that.
    fn drop(&mut self) {
        let (closed, _) = mpsc::unbounded_channel();
        self.requests = closed;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn run(
    dir: PathBuf,
    config: NodeConfig,
    mut rx: mpsc::UnboundedReceiver<Request>,
    out: Outbox,
) {
    let Some(profile) = open_profile(&dir, &mut rx, &out).await else {
        return;
    };
    let (node, mut events) = match Node::open(profile, config).await {
        Ok(opened) => opened,
        Err(e) => {
            out.send(Update::Failed(format!("could not start: {e}")));
            return;
        }
    };
    out.send(Update::Ready(Me {
        id: node.id(),
        name: node.display_name(),
        dir: dir.clone(),
    }));
    refresh(&node, &out);
    loop {
        tokio::select! {
            request = rx.recv() => match request {
                Some(request) => handle(&node, request, &out).await,
                None => break,
            },
            event = events.recv() => match event {
                Some(event) => {
                    let changes_list = changes_contacts(&event);
                    out.send(Update::Event(event));
                    // Coalesce a burst of events into one list refresh.
                    let mut dirty = changes_list;
                    while let Some(event) = events.try_recv() {
                        dirty |= changes_contacts(&event);
                        out.send(Update::Event(event));
                    }
                    if dirty {
                        refresh(&node, &out);
                    }
                }
                None => break,
            },
        }
    }
    node.shutdown().await;
}

/// Opens (or, on the first run, creates) the profile, asking the UI for
/// what it needs. `None` when the UI went away or opening failed for good.
async fn open_profile(
    dir: &std::path::Path,
    rx: &mut mpsc::UnboundedReceiver<Request>,
    out: &Outbox,
) -> Option<Profile> {
    if !Profile::exists(dir) {
        out.send(Update::NeedSetup);
        loop {
            match rx.recv().await? {
                Request::Create { name, passphrase } => {
                    let dir = dir.to_owned();
                    let created = tokio::task::spawn_blocking(move || {
                        Profile::create(&dir, &name, passphrase.as_deref())
                    })
                    .await;
                    match created {
                        Ok(Ok(profile)) => return Some(profile),
                        Ok(Err(e)) => out.send(Update::Error(format!("could not create: {e}"))),
                        Err(e) => out.send(Update::Error(format!("could not create: {e}"))),
                    }
                }
                _ => continue,
            }
        }
    }
    let mut passphrase: Option<String> = None;
    loop {
        let d = dir.to_owned();
        let p = passphrase.clone();
        // Unsealing runs Argon2: not on the runtime's threads.
        let opened = tokio::task::spawn_blocking(move || Profile::open(&d, p.as_deref())).await;
        match opened {
            Ok(Ok(profile)) => return Some(profile),
            Ok(Err(ProfileError::Key(KeyError::PassphraseRequired))) => {
                out.send(Update::NeedPassphrase { wrong: false });
            }
            Ok(Err(ProfileError::Key(KeyError::WrongPassphrase))) => {
                out.send(Update::NeedPassphrase { wrong: true });
            }
            Ok(Err(e)) => {
                out.send(Update::Failed(e.to_string()));
                return None;
            }
            Err(e) => {
                out.send(Update::Failed(e.to_string()));
                return None;
            }
        }
        loop {
            if let Request::Unlock { passphrase: p } = rx.recv().await? {
                passphrase = Some(p);
                break;
            }
        }
    }
}

fn changes_contacts(event: &Event) -> bool {
    !matches!(
        event,
        Event::Typing { .. } | Event::Listening { .. } | Event::NetworkChanged(_)
    )
}

fn refresh(node: &Node, out: &Outbox) {
    let contacts = node.contacts();
    let requests = node.requests();
    match (contacts, requests) {
        (Ok(contacts), Ok(requests)) => out.send(Update::Lists { contacts, requests }),
        (Err(e), _) => out.send(Update::Error(format!("contacts: {e}"))),
        (_, Err(e)) => out.send(Update::Error(format!("friend requests: {e}"))),
    }
}

/// Reports an action's error, or refreshes the list after it worked.
fn done<T>(node: &Node, out: &Outbox, what: &str, result: Result<T, chat_core::NodeError>) {
    match result {
        Ok(_) => refresh(node, out),
        Err(e) => out.send(Update::Error(format!("{what}: {e}"))),
    }
}

async fn handle(node: &Node, request: Request, out: &Outbox) {
    match request {
        Request::Create { .. } | Request::Unlock { .. } => {}
        Request::Refresh => refresh(node, out),
        Request::OpenConversation { contact, unread } => {
            let limit = usize::try_from(unread)
                .unwrap_or(usize::MAX)
                .saturating_add(HISTORY_PAGE / 4)
                .clamp(HISTORY_PAGE, HISTORY_FIRST_MAX);
            match node.history(&contact, None, limit) {
                Ok(page) => out.send(Update::History {
                    contact,
                    messages: page.messages,
                    older: page.older,
                }),
                Err(e) => out.send(Update::Error(format!("history: {e}"))),
            }
        }
        Request::LoadOlder { contact, before } => {
            match node.history(&contact, Some(before), HISTORY_PAGE) {
                Ok(page) => out.send(Update::Older {
                    contact,
                    messages: page.messages,
                    older: page.older,
                }),
                Err(e) => out.send(Update::Error(format!("history: {e}"))),
            }
        }
        Request::Send { to, text } => match node.send(&to, &text) {
            Ok(message) => {
                out.send(Update::Sent(message));
                refresh(node, out);
            }
            Err(e) => out.send(Update::Error(format!("not sent: {e}"))),
        },
        Request::Typing { to, typing } => {
            let _ = node.set_typing(&to, typing);
        }
        Request::MarkRead(contact) => {
            if let Ok(n) = node.mark_read(&contact)
                && n > 0
            {
                refresh(node, out);
            }
        }
        Request::AddContact { invite, message } => match invite.trim().parse::<Invite>() {
            Ok(invite) => match node.add_contact(&invite, &message) {
                Ok(()) => {
                    out.send(Update::ContactAdded(invite.peer));
                    refresh(node, out);
                }
                Err(e) => out.send(Update::Error(format!("could not add: {e}"))),
            },
            Err(e) => out.send(Update::Error(e.to_string())),
        },
        Request::Accept(peer) => done(node, out, "accept", node.accept(&peer)),
        Request::Decline(peer) => done(node, out, "decline", node.decline(&peer)),
        Request::Rename(peer, name) => done(node, out, "rename", node.rename(&peer, &name)),
        Request::Remove(peer) => done(node, out, "remove", node.remove(&peer)),
        Request::Block(peer) => done(node, out, "block", node.block(&peer)),
        Request::Unblock(peer) => done(node, out, "unblock", node.unblock(&peer)),
        Request::SetVerified(peer, verified) => {
            done(node, out, "verify", node.set_verified(&peer, verified));
        }
        Request::Search { query, contact } => {
            match node.search(&query, contact.as_ref(), SEARCH_LIMIT) {
                Ok(results) => out.send(Update::SearchResults { query, results }),
                Err(e) => out.send(Update::Error(format!("search: {e}"))),
            }
        }
        Request::MyInvite => send_invite(out, node.my_invite()),
        Request::RotateInvite => send_invite(out, node.rotate_request_token()),
        Request::NetworkReport => out.send(Update::Network(node.network_report().await)),
        Request::LoadSettings => match node.settings() {
            Ok(settings) => out.send(Update::Settings(settings)),
            Err(e) => out.send(Update::Error(format!("settings: {e}"))),
        },
        Request::SaveSettings(settings) => match node.set_settings(settings) {
            Ok(()) => out.send(Update::Notice(
                "Settings saved; they take effect on the next start.".into(),
            )),
            Err(e) => out.send(Update::Error(format!("settings not saved: {e}"))),
        },
        Request::ChangePassphrase(passphrase) => {
            let node = node.clone();
            let changed =
                tokio::task::spawn_blocking(move || node.change_passphrase(passphrase.as_deref()))
                    .await;
            match changed {
                Ok(Ok(())) => out.send(Update::Notice("Passphrase changed.".into())),
                Ok(Err(e)) => out.send(Update::Error(format!("passphrase not changed: {e}"))),
                Err(e) => out.send(Update::Error(format!("passphrase not changed: {e}"))),
            }
        }
    }
}

fn send_invite(out: &Outbox, invite: Result<Invite, chat_core::NodeError>) {
    match invite {
        Ok(invite) => out.send(Update::Invite {
            code: invite.to_string(),
            qr: invite.qr_matrix(),
        }),
        Err(e) => out.send(Update::Error(format!("invite: {e}"))),
    }
}
