//! The client's state machine: everything on screen, fed by key, paste,
//! mouse and resize events and by the node's [`Event`]s. It calls the
//! [`Backend`] for what it needs and queues [`Effect`]s (quit, refresh the
//! network report, copy to the clipboard) that need the async driver.
//! Drawing (`ui`) only reads it.

use std::collections::{HashMap, HashSet};

use chat_core::{Contact, ContactState, Event, FriendRequest, NetworkReport, PeerId, Presence};
use crossterm::event::{
    KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use ratatui::layout::{Constraint, Layout, Position, Rect};

use crate::backend::Backend;
use crate::conversation::{Conversation, RowContext, Zone};
use crate::input::TextInput;
use crate::popup::Popup;

/// Messages loaded per page of history.
pub(crate) const PAGE: usize = 200;
/// How long a typing notice lasts without a refresh (ms).
const TYPING_SHOWN_MS: i64 = 6_000;
/// We stop saying "typing" after this long without a key (ms).
const TYPING_IDLE_MS: i64 = 4_000;
/// How long a notice stays (ms).
const NOTICE_MS: i64 = 15_000;
/// The input grows up to this many rows.
const MAX_INPUT_ROWS: usize = 6;

/// Something only the async driver can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Shut the node down and exit.
    Quit,
    /// Fetch [`NetworkReport`] again and pass it to [`App::on_report`].
    RefreshReport,
    /// Put this text on the terminal's clipboard (OSC 52).
    Copy(String),
}

/// How the app starts.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// The clock for message times.
    pub zone: Zone,
    /// Whether UPnP is on for this run.
    pub upnp: bool,
    /// The current time (ms since the Unix epoch).
    pub now_ms: i64,
    /// Terminal size.
    pub size: (u16, u16),
}

/// A notice on the line above the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The text.
    pub text: String,
    /// Whether it reports a failure.
    pub error: bool,
    /// When it was posted (ms).
    pub at_ms: i64,
}

/// Where each part of the screen is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Areas {
    /// The contact list (empty when the terminal is too narrow).
    pub contacts: Rect,
    /// The conversation's title row.
    pub header: Rect,
    /// The messages.
    pub messages: Rect,
    /// Notices and typing.
    pub notice: Rect,
    /// The input, with its top rule.
    pub input: Rect,
    /// The status bar.
    pub status: Rect,
}

/// A row of the contact list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactRow {
    /// `contacts[i]`.
    Contact(usize),
    /// The "Requests" heading.
    RequestsHeading,
    /// `requests[i]`.
    Request(usize),
}

/// The whole client state.
pub struct App {
    pub(crate) backend: Box<dyn Backend>,
    pub(crate) me: PeerId,
    pub(crate) my_name: String,
    pub(crate) contacts: Vec<Contact>,
    pub(crate) requests: Vec<FriendRequest>,
    pub(crate) blocked: HashSet<PeerId>,
    pub(crate) selected: Option<PeerId>,
    pub(crate) conv: Option<Conversation>,
    pub(crate) typing: HashMap<PeerId, i64>,
    pub(crate) typing_sent: Option<(PeerId, i64)>,
    pub(crate) input: TextInput,
    pub(crate) popup: Option<Popup>,
    pub(crate) notice: Option<Notice>,
    pub(crate) report: Option<NetworkReport>,
    pub(crate) upnp: bool,
    pub(crate) zone: Zone,
    pub(crate) now_ms: i64,
    pub(crate) size: (u16, u16),
    effects: Vec<Effect>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("me", &self.me)
            .field("selected", &self.selected)
            .finish_non_exhaustive()
    }
}

impl App {
    /// A client over `backend`: loads contacts and requests and opens the
    /// first conversation.
    pub fn new(backend: Box<dyn Backend>, config: AppConfig) -> Self {
        let mut app = Self {
            me: backend.id(),
            my_name: backend.display_name(),
            backend,
            contacts: Vec::new(),
            requests: Vec::new(),
            blocked: HashSet::new(),
            selected: None,
            conv: None,
            typing: HashMap::new(),
            typing_sent: None,
            input: TextInput::default(),
            popup: None,
            notice: None,
            report: None,
            upnp: config.upnp,
            zone: config.zone,
            now_ms: config.now_ms,
            size: config.size,
            effects: Vec::new(),
        };
        app.refresh_lists();
        let first = app
            .contacts
            .iter()
            .find(|c| c.unread > 0)
            .or(app.contacts.first())
            .map(|c| c.id);
        if let Some(first) = first {
            app.open(first);
        }
        if app.contacts.is_empty() && app.requests.is_empty() {
            app.info("Welcome! F3 shows your invite to give a friend; F4 adds theirs. ? for help.");
        }
        app
    }

    /// Takes the effects queued since the last call.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    pub(crate) fn effect(&mut self, effect: Effect) {
        self.effects.push(effect);
    }

    /// Sets the current time (ms since the Unix epoch).
    pub fn set_now(&mut self, now_ms: i64) {
        self.now_ms = now_ms;
    }

    /// The current network report, if any.
    pub fn report(&self) -> Option<&NetworkReport> {
        self.report.as_ref()
    }

    /// The conversation on screen.
    pub fn conversation(&self) -> Option<&Conversation> {
        self.conv.as_ref()
    }

    /// The contact list as loaded.
    pub fn contacts(&self) -> &[Contact] {
        &self.contacts
    }

    /// The open popup's name, for tests and the driver.
    pub fn popup_name(&self) -> Option<&'static str> {
        self.popup.as_ref().map(Popup::name)
    }

    /// The current notice text.
    pub fn notice(&self) -> Option<&Notice> {
        self.notice.as_ref()
    }

    pub(crate) fn info(&mut self, text: impl Into<String>) {
        self.notice = Some(Notice {
            text: text.into(),
            error: false,
            at_ms: self.now_ms,
        });
    }

    pub(crate) fn error(&mut self, text: impl Into<String>) {
        self.notice = Some(Notice {
            text: text.into(),
            error: true,
            at_ms: self.now_ms,
        });
    }

    /// Reloads contacts, requests and the block list.
    pub(crate) fn refresh_lists(&mut self) {
        match self.backend.contacts() {
            Ok(contacts) => self.contacts = contacts,
            Err(e) => self.error(format!("cannot read contacts: {e}")),
        }
        match self.backend.requests() {
            Ok(requests) => self.requests = requests,
            Err(e) => self.error(format!("cannot read friend requests: {e}")),
        }
        if let Ok(blocked) = self.backend.blocked() {
            self.blocked = blocked.into_iter().collect();
        }
        if let Some(sel) = self.selected
            && !self.contacts.iter().any(|c| c.id == sel)
        {
            self.selected = None;
            self.conv = None;
            if let Some(first) = self.contacts.first().map(|c| c.id) {
                self.open(first);
            }
        }
    }

    /// The selected contact.
    pub(crate) fn current(&self) -> Option<&Contact> {
        let sel = self.selected?;
        self.contacts.iter().find(|c| c.id == sel)
    }

    pub(crate) fn name_of(&self, peer: &PeerId) -> String {
        self.contacts
            .iter()
            .find(|c| c.id == *peer)
            .map(|c| c.name.clone())
            .or_else(|| {
                self.requests
                    .iter()
                    .find(|r| r.from == *peer)
                    .map(|r| r.name.clone())
            })
            .unwrap_or_else(|| peer.short())
    }

    /// Opens the conversation with `peer`.
    pub(crate) fn open(&mut self, peer: PeerId) {
        if self.selected == Some(peer) && self.conv.is_some() {
            return;
        }
        self.stop_typing();
        let unread = self
            .contacts
            .iter()
            .find(|c| c.id == peer)
            .map_or(0, |c| c.unread);
        self.selected = Some(peer);
        match self.backend.history(&peer, None, PAGE) {
            Ok(page) => {
                self.conv = Some(Conversation::new(peer, page, unread));
                if unread > 0 {
                    self.mark_read(peer);
                }
            }
            Err(e) => {
                self.conv = None;
                self.error(format!("cannot read the conversation: {e}"));
            }
        }
    }

    fn mark_read(&mut self, peer: PeerId) {
        match self.backend.mark_read(&peer) {
            Ok(0) => {}
            Ok(_) => {
                if let Some(c) = self.contacts.iter_mut().find(|c| c.id == peer) {
                    c.unread = 0;
                }
            }
            Err(e) => self.error(format!("cannot mark read: {e}")),
        }
    }

    /// Selects the contact `offset` places away (wrapping).
    pub(crate) fn cycle(&mut self, forward: bool) {
        if self.contacts.is_empty() {
            return;
        }
        let n = self.contacts.len();
        let pos = self
            .selected
            .and_then(|s| self.contacts.iter().position(|c| c.id == s));
        let next = match pos {
            None => 0,
            Some(p) if forward => (p + 1) % n,
            Some(p) => (p + n - 1) % n,
        };
        let id = self.contacts[next].id;
        self.open(id);
    }

    fn next_unread(&mut self) {
        let n = self.contacts.len();
        let start = self
            .selected
            .and_then(|s| self.contacts.iter().position(|c| c.id == s))
            .map_or(0, |p| p + 1);
        let found = (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| self.contacts[i].unread > 0 && Some(self.contacts[i].id) != self.selected);
        match found {
            Some(i) => {
                let id = self.contacts[i].id;
                self.open(id);
            }
            None => self.info("No unread messages."),
        }
    }

    /// Where everything is for a screen of `area`.
    pub fn areas(&self, area: Rect) -> Areas {
        let input_width = area.width.saturating_sub(2) as usize;
        let input_rows = self
            .input
            .layout(input_width)
            .rows
            .len()
            .clamp(1, MAX_INPUT_ROWS) as u16;
        let [main, notice, input, status] = Layout::vertical([
            Constraint::Min(3),
            Constraint::Length(1),
            Constraint::Length(input_rows + 1),
            Constraint::Length(1),
        ])
        .areas(area);
        let contacts_width = if area.width >= 60 {
            (area.width / 4).clamp(20, 30)
        } else {
            0
        };
        let [contacts, conv] =
            Layout::horizontal([Constraint::Length(contacts_width), Constraint::Min(10)])
                .areas(main);
        let [header, messages] =
            Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(conv);
        Areas {
            contacts,
            header,
            messages,
            notice,
            input,
            status,
        }
    }

    fn screen(&self) -> Rect {
        Rect::new(0, 0, self.size.0, self.size.1)
    }

    /// The rows of the contact list, top to bottom.
    pub fn contact_rows(&self) -> Vec<ContactRow> {
        let mut rows: Vec<ContactRow> = (0..self.contacts.len()).map(ContactRow::Contact).collect();
        if !self.requests.is_empty() {
            rows.push(ContactRow::RequestsHeading);
            rows.extend((0..self.requests.len()).map(ContactRow::Request));
        }
        rows
    }

    /// The first contact row shown in a list of `height` rows (keeps the
    /// selection visible).
    pub fn contacts_offset(&self, height: usize) -> usize {
        let pos = self
            .selected
            .and_then(|s| self.contacts.iter().position(|c| c.id == s))
            .unwrap_or(0);
        (pos + 1).saturating_sub(height)
    }

    fn view_height(&self) -> usize {
        self.areas(self.screen()).messages.height as usize
    }

    /// Scrolls the conversation; `up` towards older messages.
    pub(crate) fn scroll(&mut self, up: bool, rows: usize) {
        let height = self.view_height();
        let ctx_me = self.my_name.clone();
        let them = self.current().map(|c| c.name.clone()).unwrap_or_default();
        let ctx = RowContext {
            me: &ctx_me,
            them: &them,
            zone: self.zone,
            width: self.areas(self.screen()).messages.width as usize,
        };
        let Some(conv) = self.conv.as_mut() else {
            return;
        };
        if up {
            conv.scroll_up(rows, &ctx, height);
        } else {
            conv.scroll_down(rows, &ctx);
        }
        self.load_older_if_needed();
        if let Some(conv) = self.conv.as_ref()
            && conv.following()
        {
            let peer = conv.contact;
            if self.current().is_some_and(|c| c.unread > 0) {
                self.mark_read(peer);
            }
        }
    }

    fn load_older_if_needed(&mut self) {
        let Some(conv) = self.conv.as_mut() else {
            return;
        };
        if !conv.wants_older() {
            return;
        }
        match self.backend.history(&conv.contact, conv.older(), PAGE) {
            Ok(page) => conv.prepend(page),
            Err(e) => self.error(format!("cannot read older messages: {e}")),
        }
    }

    /// A terminal resize.
    pub fn on_resize(&mut self, width: u16, height: u16) {
        self.size = (width, height);
    }

    /// A bracketed paste.
    pub fn on_paste(&mut self, text: &str) {
        if let Some(popup) = self.popup.as_mut() {
            popup.paste(text);
            return;
        }
        self.input.insert_str(text);
        self.typed();
    }

    /// The periodic tick: expires typing notices and our own typing state.
    pub fn on_tick(&mut self, now_ms: i64) {
        self.now_ms = now_ms;
        self.typing.retain(|_, until| *until > now_ms);
        if let Some((peer, last)) = self.typing_sent
            && now_ms - last > TYPING_IDLE_MS
        {
            let _ = self.backend.set_typing(&peer, false);
            self.typing_sent = None;
        }
        if let Some(n) = &self.notice
            && now_ms - n.at_ms > NOTICE_MS
        {
            self.notice = None;
        }
    }

    /// Tells the contact we type (at most once until we stop).
    fn typed(&mut self) {
        let Some(peer) = self.selected else {
            return;
        };
        if self.input.is_empty() || self.input.text().starts_with('/') {
            self.stop_typing();
            return;
        }
        match self.typing_sent {
            Some((p, _)) if p == peer => self.typing_sent = Some((peer, self.now_ms)),
            _ => {
                self.stop_typing();
                if self
                    .current()
                    .is_some_and(|c| c.state == ContactState::Friend)
                {
                    let _ = self.backend.set_typing(&peer, true);
                    self.typing_sent = Some((peer, self.now_ms));
                }
            }
        }
    }

    fn stop_typing(&mut self) {
        if let Some((peer, _)) = self.typing_sent.take() {
            let _ = self.backend.set_typing(&peer, false);
        }
    }

    /// A fresh network report.
    pub fn on_report(&mut self, report: NetworkReport) {
        self.report = Some(report);
    }

    /// An event from the node.
    pub fn on_node_event(&mut self, event: Event) {
        match event {
            Event::MessageReceived(message) => {
                let peer = message.contact;
                self.typing.remove(&peer);
                let mut visible = false;
                if let Some(conv) = self.conv.as_mut()
                    && conv.contact == peer
                {
                    conv.push(message);
                    visible = conv.following();
                }
                self.refresh_lists();
                if visible {
                    self.mark_read(peer);
                }
            }
            Event::MessageStateChanged { contact, id, state } => {
                if let Some(conv) = self.conv.as_mut()
                    && conv.contact == contact
                {
                    conv.set_state(&id, state);
                }
                self.refresh_lists();
            }
            Event::ContactOnline { .. }
            | Event::ContactOffline { .. }
            | Event::ContactConnecting { .. }
            | Event::ContactReconnectFailed { .. } => self.refresh_lists(),
            Event::FriendRequest(request) => {
                let name = request.name.clone();
                self.refresh_lists();
                if request.replaces.is_some() {
                    self.error(format!(
                        "Warning: {name} claims a NEW key for a contact you know. Compare safety codes before accepting (F5)."
                    ));
                } else {
                    self.info(format!(
                        "{name} wants to be your friend: F5 or /accept {name}"
                    ));
                }
            }
            Event::FriendAccepted { contact } => {
                self.refresh_lists();
                let name = self.name_of(&contact);
                self.info(format!("{name} accepted: you are friends now."));
            }
            Event::FriendDeclined { contact } => {
                self.refresh_lists();
                let name = self.name_of(&contact);
                self.error(format!("{name} declined your friend request."));
            }
            Event::KeyChanged { contact, new_key } => {
                self.refresh_lists();
                let name = self.name_of(&contact);
                self.error(format!(
                    "KEY CHANGED: a new key {} claims to be {name}. Nothing goes to it unless you accept (F5) after comparing safety codes.",
                    new_key.short()
                ));
            }
            Event::Typing { contact, typing } => {
                if typing {
                    self.typing.insert(contact, self.now_ms + TYPING_SHOWN_MS);
                } else {
                    self.typing.remove(&contact);
                }
            }
            Event::Problem(text) => self.error(text),
            Event::NetworkChanged(report) => {
                self.report = Some(report);
                self.refresh_lists();
            }
            Event::Listening { .. } => self.effect(Effect::RefreshReport),
            _ => {}
        }
    }

    /// A key press.
    pub fn on_key(&mut self, key: KeyEvent) {
        if key.kind == KeyEventKind::Release {
            return;
        }
        if self.popup.is_some() {
            self.popup_key(key);
            return;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        let page = self.view_height().saturating_sub(2).max(1);
        match key.code {
            KeyCode::Char('c') | KeyCode::Char('q') if ctrl => self.effect(Effect::Quit),
            KeyCode::Char('n') if ctrl => self.cycle(true),
            KeyCode::Char('p') if ctrl => self.cycle(false),
            KeyCode::Char('f') if ctrl => self.open_popup(Popup::search("")),
            KeyCode::Char('j') if ctrl => {
                self.input.insert('\n');
                self.typed();
            }
            KeyCode::Char('a') if alt => self.next_unread(),
            KeyCode::Char(c @ '1'..='9') if alt => {
                let i = c as usize - '1' as usize;
                if let Some(id) = self.contacts.get(i).map(|c| c.id) {
                    self.open(id);
                }
            }
            KeyCode::Enter if alt || key.modifiers.contains(KeyModifiers::SHIFT) => {
                self.input.insert('\n');
                self.typed();
            }
            KeyCode::Enter => self.submit(),
            KeyCode::Tab => {
                if self.input.text().starts_with('/') {
                    self.complete();
                } else {
                    self.cycle(true);
                }
            }
            KeyCode::BackTab => self.cycle(false),
            KeyCode::PageUp => self.scroll(true, page),
            KeyCode::PageDown => self.scroll(false, page),
            KeyCode::Up if alt || ctrl => self.cycle(false),
            KeyCode::Down if alt || ctrl => self.cycle(true),
            // ↑/↓ move between the input's lines first, then scroll.
            KeyCode::Up if !self.input.up() => self.scroll(true, 1),
            KeyCode::Down if !self.input.down() => self.scroll(false, 1),
            KeyCode::End if ctrl => {
                if let Some(conv) = self.conv.as_mut() {
                    conv.scroll_to_bottom();
                }
            }
            KeyCode::Esc => {
                self.notice = None;
                if let Some(conv) = self.conv.as_mut() {
                    conv.scroll_to_bottom();
                    conv.clear_unread_marker();
                }
            }
            KeyCode::F(1) => self.open_popup(Popup::Help { scroll: 0 }),
            KeyCode::F(2) => self.open_contact_popup(),
            KeyCode::F(3) => self.open_invite_popup(),
            KeyCode::F(4) => self.open_popup(Popup::add_contact("")),
            KeyCode::F(5) => self.open_popup(Popup::Requests { selected: 0 }),
            KeyCode::F(6) => self.open_popup(Popup::search("")),
            KeyCode::F(7) => self.open_network_popup(),
            KeyCode::F(8) => self.open_settings_popup(),
            KeyCode::Char('?') if self.input.is_empty() => {
                self.open_popup(Popup::Help { scroll: 0 })
            }
            KeyCode::Char('a') if ctrl => self.input.home(),
            KeyCode::Char('e') if ctrl => self.input.end(),
            KeyCode::Char('u') if ctrl => {
                self.input.delete_to_line_start();
                self.typed();
            }
            KeyCode::Char('w') if ctrl => {
                self.input.delete_word();
                self.typed();
            }
            KeyCode::Char(c) if !ctrl && !alt => {
                self.input.insert(c);
                self.typed();
            }
            KeyCode::Backspace => {
                self.input.backspace();
                self.typed();
            }
            KeyCode::Delete => {
                self.input.delete();
                self.typed();
            }
            KeyCode::Left => self.input.left(),
            KeyCode::Right => self.input.right(),
            KeyCode::Home => self.input.home(),
            KeyCode::End => self.input.end(),
            _ => {}
        }
    }

    /// Enter: run a command or send the message.
    fn submit(&mut self) {
        let text = self.input.text().to_owned();
        if text.trim().is_empty() {
            return;
        }
        if let Some(command) = text.strip_prefix('/')
            && !command.starts_with('/')
        {
            self.input.take();
            self.run_command(command.trim());
            return;
        }
        let text = text.strip_prefix('/').unwrap_or(&text).to_owned();
        let Some(peer) = self.selected else {
            self.error("No conversation open: add a contact first (F4 or /add CODE).");
            return;
        };
        match self.backend.send(&peer, &text) {
            Ok(message) => {
                self.input.take();
                self.stop_typing();
                if let Some(conv) = self.conv.as_mut() {
                    conv.push(message);
                    conv.scroll_to_bottom();
                    conv.clear_unread_marker();
                }
                self.refresh_lists();
            }
            Err(e) => self.error(format!("not sent: {e}")),
        }
    }

    /// A mouse event.
    pub fn on_mouse(&mut self, mouse: MouseEvent) {
        if self.popup.is_some() {
            if let MouseEventKind::ScrollUp | MouseEventKind::ScrollDown = mouse.kind {
                let code = if mouse.kind == MouseEventKind::ScrollUp {
                    KeyCode::Up
                } else {
                    KeyCode::Down
                };
                self.popup_key(KeyEvent::new(code, KeyModifiers::NONE));
            }
            return;
        }
        let areas = self.areas(self.screen());
        let at = Position::new(mouse.column, mouse.row);
        match mouse.kind {
            MouseEventKind::ScrollUp if areas.messages.contains(at) => self.scroll(true, 3),
            MouseEventKind::ScrollDown if areas.messages.contains(at) => self.scroll(false, 3),
            MouseEventKind::ScrollUp if areas.contacts.contains(at) => self.cycle(false),
            MouseEventKind::ScrollDown if areas.contacts.contains(at) => self.cycle(true),
            MouseEventKind::Down(MouseButton::Left) if areas.contacts.contains(at) => {
                let list_height = areas.contacts.height.saturating_sub(1) as usize;
                let row = (mouse.row - areas.contacts.y) as usize;
                if row == 0 {
                    return;
                }
                let index = row - 1 + self.contacts_offset(list_height);
                match self.contact_rows().get(index) {
                    Some(ContactRow::Contact(i)) => {
                        let id = self.contacts[*i].id;
                        self.open(id);
                    }
                    Some(ContactRow::Request(i)) => {
                        self.open_popup(Popup::Requests { selected: *i });
                    }
                    Some(ContactRow::RequestsHeading) => {
                        self.open_popup(Popup::Requests { selected: 0 });
                    }
                    None => {}
                }
            }
            MouseEventKind::Down(MouseButton::Left) if areas.header.contains(at) => {
                self.open_contact_popup();
            }
            _ => {}
        }
    }

    pub(crate) fn open_popup(&mut self, popup: Popup) {
        self.popup = Some(popup);
    }

    pub(crate) fn open_contact_popup(&mut self) {
        match self.selected {
            Some(peer) => self.open_popup(Popup::contact(peer)),
            None => self.error("No contact selected."),
        }
    }

    pub(crate) fn open_invite_popup(&mut self) {
        match self.backend.my_invite() {
            Ok(invite) => self.open_popup(Popup::MyInvite {
                invite,
                qr_only: false,
            }),
            Err(e) => self.error(format!("cannot make an invite: {e}")),
        }
    }

    pub(crate) fn open_network_popup(&mut self) {
        self.effect(Effect::RefreshReport);
        self.open_popup(Popup::Network);
    }

    pub(crate) fn open_settings_popup(&mut self) {
        match self.backend.settings() {
            Ok(settings) => self.open_popup(Popup::settings(settings)),
            Err(e) => self.error(format!("cannot read settings: {e}")),
        }
    }

    /// Whether `peer` is typing to us now.
    pub(crate) fn is_typing(&self, peer: &PeerId) -> bool {
        self.typing
            .get(peer)
            .is_some_and(|until| *until > self.now_ms)
    }

    /// How many live connections the node has.
    pub(crate) fn connection_count(&self) -> usize {
        match &self.report {
            Some(r) => r.connections.len(),
            None => self
                .contacts
                .iter()
                .filter(|c| matches!(c.presence, Presence::Online(_)))
                .count(),
        }
    }
}
