//! [`App`]: the window's state and its `ui`. Plain state driven by
//! [`Update`]s from the worker; drawing a frame never waits for anything.
//!
//! Order of calls: [`App::new`] with a [`Worker`]; then [`App::ui`] once a
//! frame (eframe calls it through `eframe::App::update`; tests call it from
//! an `egui_kittest::Harness`). Each frame first applies the worker's
//! updates, then draws, then hands what the user asked for to the worker.

use std::collections::HashSet;

use chat_core::{Contact, ContactState, Event, FriendRequest, PeerId, Presence};

use crate::conversation::{self, Conversation, Zone};
use crate::dialogs::{self, Dialogs, Kind, Out, View};
use crate::notify::{DesktopNotifier, Notifier};
use crate::worker::{Me, Request, Update, Worker};

/// Which screen the window shows.
#[derive(Debug)]
pub enum Screen {
    /// Waiting for the worker to look at the profile.
    Starting,
    /// First run: choose a name and an optional passphrase.
    Setup(Setup),
    /// The identity key is sealed.
    Unlock {
        /// What is typed.
        passphrase: String,
        /// The last one was wrong.
        wrong: bool,
        /// Waiting for the worker.
        busy: bool,
    },
    /// After the first run: how to add a friend.
    Welcome,
    /// Contacts and conversation.
    Main,
    /// The profile or node could not be opened.
    Failed(String),
}

/// The first-run form.
#[derive(Debug, Default)]
pub struct Setup {
    /// Display name.
    pub name: String,
    /// Optional passphrase.
    pub passphrase: String,
    /// Repeated.
    pub passphrase_again: String,
    /// What is wrong.
    pub error: Option<String>,
    /// Waiting for the worker.
    pub busy: bool,
}

/// The theme, persisted in eframe's storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Theme {
    /// Follow the system.
    System,
    /// Light.
    Light,
    /// Dark.
    Dark,
}

impl Theme {
    /// The storage key.
    pub const KEY: &'static str = "theme";

    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::Light => "light",
            Self::Dark => "dark",
        }
    }

    /// From storage (unknown values follow the system).
    pub fn parse(s: &str) -> Self {
        match s {
            "light" => Self::Light,
            "dark" => Self::Dark,
            _ => Self::System,
        }
    }

    fn preference(self) -> egui::ThemePreference {
        match self {
            Self::System => egui::ThemePreference::System,
            Self::Light => egui::ThemePreference::Light,
            Self::Dark => egui::ThemePreference::Dark,
        }
    }
}

/// The status line: the last notice or error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The text.
    pub text: String,
    /// An error (shown in red)?
    pub error: bool,
}

/// The whole window's state.
#[derive(Debug)]
pub struct App {
    worker: Worker,
    /// The current screen.
    pub screen: Screen,
    /// Who we are, once the node runs.
    pub me: Option<Me>,
    /// The contact list, sorted by name.
    pub contacts: Vec<Contact>,
    /// Pending friend requests.
    pub requests: Vec<FriendRequest>,
    /// The open conversation.
    pub conversation: Conversation,
    /// Contacts typing right now.
    pub typing: HashSet<PeerId>,
    /// The dialogs.
    pub dialogs: Dialogs,
    /// The status line.
    pub status: Option<Status>,
    /// The theme.
    pub theme: Theme,
    /// `--no-upnp` was given.
    pub no_upnp: bool,
    title: String,
    theme_applied: Option<Theme>,
    /// The contact whose conversation opens once the contacts are known
    /// (`--open`).
    pub open_on_start: Option<String>,
    /// Notifications shown (messages that arrived while unfocused).
    pub notifications: u64,
    notifier: Box<dyn Notifier>,
    /// The clock message times are shown in.
    pub zone: Zone,
}

impl App {
    /// A window over `worker`.
    pub fn new(worker: Worker) -> Self {
        Self {
            worker,
            screen: Screen::Starting,
            me: None,
            contacts: Vec::new(),
            requests: Vec::new(),
            conversation: Conversation::default(),
            typing: HashSet::new(),
            dialogs: Dialogs::default(),
            status: None,
            theme: Theme::System,
            no_upnp: false,
            title: String::new(),
            theme_applied: None,
            notifications: 0,
            open_on_start: None,
            notifier: Box::new(DesktopNotifier),
            zone: Zone::Local,
        }
    }

    /// Sends notifications to `notifier` instead of the desktop.
    pub fn with_notifier(mut self, notifier: impl Notifier + 'static) -> Self {
        self.notifier = Box::new(notifier);
        self
    }

    /// The window title: the app name, with the unread count.
    pub fn title(&self) -> String {
        let unread: u64 = self.contacts.iter().map(|c| c.unread).sum();
        if unread > 0 {
            format!("Crust Chat ({unread})")
        } else {
            "Crust Chat".to_owned()
        }
    }

    /// The open conversation's contact.
    pub fn selected(&self) -> Option<PeerId> {
        self.conversation.contact
    }

    /// A contact by name.
    pub fn contact_named(&self, name: &str) -> Option<&Contact> {
        self.contacts.iter().find(|c| c.name == name)
    }

    fn send(&self, request: Request) {
        self.worker.send(request);
    }

    fn set_status(&mut self, text: impl Into<String>, error: bool) {
        self.status = Some(Status {
            text: text.into(),
            error,
        });
    }

    /// Opens `contact`'s conversation.
    pub fn select(&mut self, contact: PeerId) {
        if self.conversation.contact == Some(contact) {
            return;
        }
        let name = dialogs::contact_name(&self.contacts, &contact);
        self.conversation = Conversation::open(contact, &name);
        self.conversation.zone = self.zone;
        self.conversation.typing = self.typing.contains(&contact);
        let unread = self
            .contacts
            .iter()
            .find(|c| c.id == contact)
            .map_or(0, |c| c.unread);
        self.send(Request::OpenConversation { contact, unread });
    }

    /// Applies one update from the worker.
    pub fn apply(&mut self, update: Update, focused: bool, ctx: &egui::Context) {
        match update {
            Update::NeedSetup => self.screen = Screen::Setup(Setup::default()),
            Update::NeedPassphrase { wrong } => {
                self.screen = Screen::Unlock {
                    passphrase: String::new(),
                    wrong,
                    busy: false,
                };
            }
            Update::Ready(me) => {
                self.screen = if matches!(self.screen, Screen::Setup(_)) {
                    Screen::Welcome
                } else {
                    Screen::Main
                };
                self.me = Some(me);
            }
            Update::Failed(e) => self.screen = Screen::Failed(e),
            Update::Lists { contacts, requests } => {
                self.contacts = contacts;
                self.requests = requests;
                if let Some(name) = self.open_on_start.take() {
                    match self.contact_named(&name).map(|c| c.id) {
                        Some(peer) => self.select(peer),
                        None => self.set_status(format!("No contact named {name}."), true),
                    }
                }
                if let Some(peer) = self.conversation.contact {
                    match self.contacts.iter().find(|c| c.id == peer) {
                        Some(c) => self.conversation.contact_name = c.name.clone(),
                        None => self.conversation = Conversation::default(),
                    }
                }
            }
            Update::History {
                contact,
                messages,
                older,
            } => {
                if self.conversation.contact == Some(contact) {
                    let unread = self
                        .contacts
                        .iter()
                        .find(|c| c.id == contact)
                        .map_or(0, |c| c.unread);
                    self.conversation.set_history(messages, older, unread);
                    if focused {
                        self.send(Request::MarkRead(contact));
                    }
                }
            }
            Update::Older {
                contact,
                messages,
                older,
            } => {
                if self.conversation.contact == Some(contact) {
                    self.conversation.prepend(messages, older);
                }
            }
            Update::Sent(message) => {
                if self.conversation.contact == Some(message.contact) {
                    self.conversation.push(message);
                }
            }
            Update::Event(event) => self.apply_event(event, focused, ctx),
            Update::SearchResults { query, results } => {
                if let Some(search) = &mut self.dialogs.search {
                    search.results = Some((query, results));
                }
            }
            Update::Invite { code, qr } => {
                if let Some(invite) = &mut self.dialogs.invite {
                    invite.set(code, qr);
                }
            }
            Update::Network(report) => {
                if let Some(network) = &mut self.dialogs.network {
                    *network = Some(report);
                }
            }
            Update::Settings(settings) => {
                if let Some(form) = &mut self.dialogs.settings {
                    form.set(settings);
                }
            }
            Update::ContactAdded(peer) => {
                self.dialogs.add_contact = None;
                self.set_status("Friend request sent.", false);
                self.screen = Screen::Main;
                self.select(peer);
            }
            Update::Notice(text) => self.set_status(text, false),
            Update::Error(text) => {
                if let Screen::Setup(setup) = &mut self.screen {
                    setup.busy = false;
                    setup.error = Some(text.clone());
                }
                if let Some(add) = &mut self.dialogs.add_contact {
                    add.busy = false;
                    add.error = Some(text.clone());
                }
                self.set_status(text, true);
            }
        }
    }

    fn apply_event(&mut self, event: Event, focused: bool, ctx: &egui::Context) {
        match event {
            Event::MessageReceived(message) => {
                let from = message.contact;
                self.typing.remove(&from);
                if !focused {
                    self.notifications += 1;
                    let title = dialogs::contact_name(&self.contacts, &from);
                    let body: String = message.text.chars().take(200).collect();
                    self.notifier.notify(&title, &body);
                    ctx.send_viewport_cmd(egui::ViewportCommand::RequestUserAttention(
                        egui::UserAttentionType::Informational,
                    ));
                }
                if self.conversation.contact == Some(from) {
                    self.conversation.typing = false;
                    self.conversation.push(message);
                    if focused {
                        self.send(Request::MarkRead(from));
                    }
                }
            }
            Event::MessageStateChanged { contact, id, state }
                if self.conversation.contact == Some(contact) =>
            {
                self.conversation.set_state(&id, state);
            }
            Event::Typing { contact, typing } => {
                if typing {
                    self.typing.insert(contact);
                } else {
                    self.typing.remove(&contact);
                }
                if self.conversation.contact == Some(contact) {
                    self.conversation.typing = typing;
                }
            }
            Event::ContactOffline { contact } => {
                self.typing.remove(&contact);
                if self.conversation.contact == Some(contact) {
                    self.conversation.typing = false;
                }
            }
            Event::FriendRequest(request) => {
                self.set_status(format!("Friend request from {}.", request.name), false);
            }
            Event::FriendAccepted { contact } => {
                let name = dialogs::contact_name(&self.contacts, &contact);
                self.set_status(format!("{name} accepted your friend request."), false);
            }
            Event::FriendDeclined { contact } => {
                let name = dialogs::contact_name(&self.contacts, &contact);
                self.set_status(format!("{name} declined your friend request."), true);
            }
            Event::KeyChanged { contact, new_key } => {
                let name = dialogs::contact_name(&self.contacts, &contact);
                self.set_status(
                    format!(
                        "⚠ A new key ({}) claims to be {name}. Nothing goes to it unless you accept its request after comparing safety codes.",
                        new_key.short()
                    ),
                    true,
                );
            }
            Event::Problem(text) => self.set_status(text, true),
            Event::NetworkChanged(report) => {
                if let Some(Some(shown)) = &mut self.dialogs.network {
                    *shown = report;
                }
            }
            _ => {}
        }
    }

    /// Draws one frame.
    pub fn ui(&mut self, ctx: &egui::Context) {
        self.worker.set_context(ctx);
        let focused = ctx.input(|i| i.viewport().focused).unwrap_or(true);
        while let Some(update) = self.worker.try_recv() {
            self.apply(update, focused, ctx);
        }
        if self.theme_applied != Some(self.theme) {
            ctx.set_theme(self.theme.preference());
            self.theme_applied = Some(self.theme);
        }
        let title = self.title();
        if title != self.title {
            ctx.send_viewport_cmd(egui::ViewportCommand::Title(title.clone()));
            self.title = title;
        }
        match &mut self.screen {
            Screen::Starting => {
                egui::CentralPanel::default().show(ctx, |ui| {
                    ui.centered_and_justified(|ui| ui.spinner());
                });
            }
            Screen::Setup(_) => self.setup_ui(ctx),
            Screen::Unlock { .. } => self.unlock_ui(ctx),
            Screen::Welcome => self.welcome_ui(ctx),
            Screen::Failed(error) => {
                let error = error.clone();
                egui::CentralPanel::default().show(ctx, |ui| {
                    ui.heading("Crust Chat could not start");
                    ui.colored_label(ui.visuals().error_fg_color, error);
                });
            }
            Screen::Main => self.main_ui(ctx),
        }
    }

    fn setup_ui(&mut self, ctx: &egui::Context) {
        let Screen::Setup(setup) = &mut self.screen else {
            return;
        };
        let mut create = None;
        egui::CentralPanel::default().show(ctx, |ui| {
            ui.vertical_centered(|ui| {
                ui.add_space(40.0);
                ui.heading("Welcome to Crust Chat");
                ui.label("Chat with friends directly, with no server in the middle.");
                ui.add_space(20.0);
            });
            egui::Grid::new("setup").num_columns(2).show(ui, |ui| {
                let label = ui.label("Your name");
                ui.text_edit_singleline(&mut setup.name).labelled_by(label.id);
                ui.end_row();
                let label = ui.label("Passphrase (optional)");
                ui.add(egui::TextEdit::singleline(&mut setup.passphrase).password(true))
                    .labelled_by(label.id);
                ui.end_row();
                let label = ui.label("Repeat passphrase");
                ui.add(egui::TextEdit::singleline(&mut setup.passphrase_again).password(true))
                    .labelled_by(label.id);
                ui.end_row();
            });
            ui.weak("The passphrase protects your identity key on this computer. If you lose it, the key cannot be recovered.");
            if let Some(error) = &setup.error {
                ui.colored_label(ui.visuals().error_fg_color, error);
            }
            ui.horizontal(|ui| {
                if ui
                    .add_enabled(!setup.busy, egui::Button::new("Create profile"))
                    .clicked()
                {
                    if setup.name.trim().is_empty() {
                        setup.error = Some("Please choose a name your friends will see.".into());
                    } else if setup.passphrase != setup.passphrase_again {
                        setup.error = Some("The two passphrases differ.".into());
                    } else {
                        setup.busy = true;
                        setup.error = None;
                        create = Some(Request::Create {
                            name: setup.name.trim().to_owned(),
                            passphrase: (!setup.passphrase.is_empty())
                                .then(|| setup.passphrase.clone()),
                        });
                    }
                }
                if setup.busy {
                    ui.spinner();
                }
            });
        });
        if let Some(request) = create {
            self.send(request);
        }
    }

    fn unlock_ui(&mut self, ctx: &egui::Context) {
        let Screen::Unlock {
            passphrase,
            wrong,
            busy,
        } = &mut self.screen
        else {
            return;
        };
        let mut unlock = None;
        egui::CentralPanel::default().show(ctx, |ui| {
            ui.vertical_centered(|ui| {
                ui.add_space(40.0);
                ui.heading("Unlock your profile");
                let label = ui.label("Passphrase");
                let response = ui
                    .add(egui::TextEdit::singleline(passphrase).password(true))
                    .labelled_by(label.id);
                if *wrong {
                    ui.colored_label(ui.visuals().error_fg_color, "Wrong passphrase.");
                }
                let enter = response.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
                if (ui
                    .add_enabled(!*busy, egui::Button::new("Unlock"))
                    .clicked()
                    || enter)
                    && !*busy
                {
                    *busy = true;
                    unlock = Some(Request::Unlock {
                        passphrase: passphrase.clone(),
                    });
                }
                if *busy {
                    ui.spinner();
                }
            });
        });
        if let Some(request) = unlock {
            self.send(request);
        }
    }

    fn welcome_ui(&mut self, ctx: &egui::Context) {
        let mut out = Out::default();
        let mut done = false;
        egui::CentralPanel::default().show(ctx, |ui| {
            ui.add_space(30.0);
            let name = self.me.as_ref().map_or("", |m| m.name.as_str());
            ui.heading(format!("Hello, {name}! Your profile is ready."));
            ui.add_space(10.0);
            ui.strong("How to add a friend");
            dialogs::help_text(ui);
            ui.add_space(10.0);
            ui.horizontal(|ui| {
                if ui.button("Show my invite").clicked() {
                    out.open.push(Kind::Invite);
                    done = true;
                }
                if ui.button("Add a contact").clicked() {
                    out.open.push(Kind::AddContact);
                    done = true;
                }
                if ui.button("Start chatting").clicked() {
                    done = true;
                }
            });
        });
        if done {
            self.screen = Screen::Main;
        }
        self.carry_out(out);
    }

    fn main_ui(&mut self, ctx: &egui::Context) {
        let Some(me) = self.me.clone() else {
            return;
        };
        let mut out = Out::default();
        self.shortcuts(ctx, &mut out);
        egui::TopBottomPanel::top("menu").show(ctx, |ui| self.menu_ui(ui, &mut out));
        egui::TopBottomPanel::bottom("status").show(ctx, |ui| {
            ui.horizontal(|ui| {
                let online = self
                    .contacts
                    .iter()
                    .filter(|c| matches!(c.presence, Presence::Online(_)))
                    .count();
                ui.weak(format!("{} · {online} online", me.name));
                if let Some(status) = &self.status {
                    ui.separator();
                    if status.error {
                        ui.colored_label(ui.visuals().error_fg_color, &status.text);
                    } else {
                        ui.label(&status.text);
                    }
                }
            });
        });
        egui::SidePanel::left("contacts")
            .resizable(true)
            .default_width(230.0)
            .show(ctx, |ui| self.sidebar_ui(ui, &mut out));
        egui::CentralPanel::default().show(ctx, |ui| {
            let Some(peer) = self.conversation.contact else {
                ui.centered_and_justified(|ui| {
                    ui.weak("Choose a contact on the left, or add one with Chat > Add contact…");
                });
                return;
            };
            if let Some(contact) = self.contacts.iter().find(|c| c.id == peer) {
                egui::TopBottomPanel::top("conversation header").show_inside(ui, |ui| {
                    ui.horizontal(|ui| {
                        ui.heading(&contact.name);
                        if contact.verified {
                            ui.label("✔").on_hover_text("verified");
                        }
                        ui.weak(match contact.state {
                            ContactState::RequestSent => {
                                "request sent, waiting for an answer".to_owned()
                            }
                            ContactState::Declined => "declined our request".to_owned(),
                            ContactState::Friend => dialogs::presence_text(&contact.presence),
                        });
                        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                            if ui.button("Details").clicked() {
                                out.open.push(Kind::Details);
                            }
                        });
                    });
                });
            }
            for action in self.conversation.ui(ui, &me.name) {
                out.requests.push(match action {
                    conversation::Action::Send(text) => Request::Send { to: peer, text },
                    conversation::Action::Typing(typing) => Request::Typing { to: peer, typing },
                    conversation::Action::LoadOlder(before) => Request::LoadOlder {
                        contact: peer,
                        before,
                    },
                });
            }
        });
        let view = View {
            me: &me,
            contacts: &self.contacts,
            requests: &self.requests,
            selected: self.conversation.contact,
            no_upnp: self.no_upnp,
        };
        self.dialogs.ui(ctx, view, &mut out);
        self.carry_out(out);
    }

    fn carry_out(&mut self, mut out: Out) {
        for request in out.requests.drain(..) {
            self.send(request);
        }
        if let Some(peer) = out.select {
            self.select(peer);
        }
        if let Some(me) = self.me.clone() {
            for kind in out.open.drain(..) {
                let view = View {
                    me: &me,
                    contacts: &self.contacts,
                    requests: &self.requests,
                    selected: self.conversation.contact,
                    no_upnp: self.no_upnp,
                };
                let mut more = Out::default();
                self.dialogs.open(kind, view, &mut more);
                for request in more.requests {
                    self.send(request);
                }
            }
        }
    }

    /// Opens a dialog (what the menu items do).
    pub fn open_dialog(&mut self, kind: Kind) {
        self.carry_out(Out {
            open: vec![kind],
            ..Out::default()
        });
    }

    fn shortcuts(&mut self, ctx: &egui::Context, out: &mut Out) {
        let find = egui::KeyboardShortcut::new(egui::Modifiers::COMMAND, egui::Key::F);
        let add = egui::KeyboardShortcut::new(egui::Modifiers::COMMAND, egui::Key::N);
        if ctx.input_mut(|i| i.consume_shortcut(&find)) {
            out.open.push(Kind::Search);
        }
        if ctx.input_mut(|i| i.consume_shortcut(&add)) {
            out.open.push(Kind::AddContact);
        }
    }

    fn menu_ui(&mut self, ui: &mut egui::Ui, out: &mut Out) {
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("Chat", |ui| {
                for (label, kind) in [
                    ("Add contact…", Kind::AddContact),
                    ("My invite…", Kind::Invite),
                    ("Friend requests…", Kind::Requests),
                    ("Search…", Kind::Search),
                ] {
                    if ui.button(label).clicked() {
                        out.open.push(kind);
                    }
                }
                ui.separator();
                if ui.button("Quit").clicked() {
                    ui.ctx().send_viewport_cmd(egui::ViewportCommand::Close);
                }
            });
            ui.menu_button("Contact", |ui| {
                let selected = self.conversation.contact.is_some();
                if ui
                    .add_enabled(selected, egui::Button::new("Details…"))
                    .clicked()
                {
                    out.open.push(Kind::Details);
                }
            });
            ui.menu_button("Tools", |ui| {
                if ui.button("Network test…").clicked() {
                    out.open.push(Kind::Network);
                }
                if ui.button("Settings…").clicked() {
                    out.open.push(Kind::Settings);
                }
            });
            ui.menu_button("View", |ui| {
                for theme in [Theme::System, Theme::Light, Theme::Dark] {
                    let label = match theme {
                        Theme::System => "System theme",
                        Theme::Light => "Light theme",
                        Theme::Dark => "Dark theme",
                    };
                    ui.radio_value(&mut self.theme, theme, label);
                }
            });
            ui.menu_button("Help", |ui| {
                if ui.button("How to add a friend").clicked() {
                    out.open.push(Kind::Help);
                }
                if ui.button("About Crust Chat").clicked() {
                    out.open.push(Kind::About);
                }
            });
        });
    }

    fn sidebar_ui(&mut self, ui: &mut egui::Ui, out: &mut Out) {
        ui.add_space(4.0);
        if !self.requests.is_empty()
            && ui
                .button(format!("🔔 Friend requests ({})", self.requests.len()))
                .clicked()
        {
            out.open.push(Kind::Requests);
        }
        if ui.button("➕ Add contact").clicked() {
            out.open.push(Kind::AddContact);
        }
        ui.separator();
        if self.contacts.is_empty() {
            ui.weak("No contacts yet.");
        }
        let selected = self.conversation.contact;
        egui::ScrollArea::vertical().show(ui, |ui| {
            for contact in &self.contacts {
                let online = matches!(contact.presence, Presence::Online(_));
                let dot = if online { "●" } else { "○" };
                let mut text = format!("{dot} {}", contact.name);
                if contact.unread > 0 {
                    text.push_str(&format!("  ({})", contact.unread));
                }
                let mut rich = egui::RichText::new(text);
                if contact.unread > 0 {
                    rich = rich.strong();
                }
                let response = ui.selectable_label(selected == Some(contact.id), rich);
                let detail = match (&contact.state, &contact.presence) {
                    (ContactState::RequestSent, _) => "request sent".to_owned(),
                    (ContactState::Declined, _) => "declined".to_owned(),
                    (_, Presence::Online(info)) => chat_core::describe_path(info),
                    (_, Presence::Offline { connecting, .. }) => {
                        let state = if *connecting {
                            "connecting…"
                        } else {
                            "offline"
                        };
                        if contact.undelivered > 0 {
                            format!("{state}, {} waiting", contact.undelivered)
                        } else {
                            state.to_owned()
                        }
                    }
                };
                ui.weak(format!("   {detail}"));
                if response.clicked() {
                    out.select = Some(contact.id);
                }
            }
        });
    }
}

impl eframe::App for App {
    fn update(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.ui(ctx);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        storage.set_string(Theme::KEY, self.theme.as_str().to_owned());
    }
}
