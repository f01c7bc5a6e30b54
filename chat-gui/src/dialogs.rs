//! The dialogs: add contact, my invite (with its QR code), friend requests,
//! contact details, search, network test, settings, how to add a friend,
//! about. Each is a small state struct drawn as an `egui::Window`; what the
//! user asks for goes into [`Out`] for the app to carry out.

use std::net::SocketAddr;

use chat_core::{
    Contact, ContactState, FriendRequest, Message, NetworkReport, PeerId, Presence, QrMatrix,
    Settings,
};

use crate::worker::{Me, Request};

/// What the dialogs see of the app.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// Who we are.
    pub me: &'a Me,
    /// The contact list.
    pub contacts: &'a [Contact],
    /// Pending friend requests.
    pub requests: &'a [FriendRequest],
    /// The open conversation.
    pub selected: Option<PeerId>,
    /// `--no-upnp` was given.
    pub no_upnp: bool,
}

/// What the user asked for in a frame.
#[derive(Debug, Default)]
pub struct Out {
    /// Requests for the worker.
    pub requests: Vec<Request>,
    /// Open this conversation.
    pub select: Option<PeerId>,
    /// Open these dialogs.
    pub open: Vec<Kind>,
}

/// The dialogs by name, for menus and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Add contact.
    AddContact,
    /// My invite.
    Invite,
    /// Friend requests.
    Requests,
    /// Details of the selected contact.
    Details,
    /// Search.
    Search,
    /// Network test.
    Network,
    /// Settings.
    Settings,
    /// How to add a friend.
    Help,
    /// About.
    About,
}

/// Add contact: paste an invite code.
#[derive(Debug, Default)]
pub struct AddContact {
    /// The code.
    pub code: String,
    /// The message sent with the request.
    pub message: String,
    /// Why the last attempt failed.
    pub error: Option<String>,
    /// Waiting for the worker.
    pub busy: bool,
}

/// My invite, once the worker sent it.
#[derive(Default)]
pub struct InviteView {
    /// The code.
    pub code: Option<String>,
    qr: Option<QrMatrix>,
    texture: Option<egui::TextureHandle>,
}

impl std::fmt::Debug for InviteView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InviteView")
            .field("code", &self.code)
            .finish()
    }
}

impl InviteView {
    /// The worker sent the invite.
    pub fn set(&mut self, code: String, qr: QrMatrix) {
        self.code = Some(code);
        self.qr = Some(qr);
        self.texture = None;
    }

    /// Whether the QR code was turned into a texture.
    pub fn has_qr_texture(&self) -> bool {
        self.texture.is_some()
    }
}

/// The QR code as an image: one texel per module, a quiet zone of four
/// modules, drawn scaled up with nearest-neighbour filtering.
pub fn qr_image(qr: &QrMatrix) -> egui::ColorImage {
    const QUIET: usize = 4;
    let side = qr.width + 2 * QUIET;
    let mut pixels = vec![egui::Color32::WHITE; side * side];
    for y in 0..qr.width {
        for x in 0..qr.width {
            if qr.dark[y * qr.width + x] {
                pixels[(y + QUIET) * side + x + QUIET] = egui::Color32::BLACK;
            }
        }
    }
    egui::ColorImage::new([side, side], pixels)
}

/// Contact details of one contact.
#[derive(Debug)]
pub struct Details {
    /// Whose.
    pub peer: PeerId,
    /// The new name being typed.
    pub rename: String,
    /// "Really remove" ticked.
    pub confirm_remove: bool,
}

/// Search.
#[derive(Debug, Default)]
pub struct Search {
    /// The words.
    pub query: String,
    /// Only in the open conversation.
    pub this_conversation: bool,
    /// The last results and the query they answer.
    pub results: Option<(String, Vec<Message>)>,
}

/// Settings being edited.
#[derive(Debug, Default)]
pub struct SettingsForm {
    /// As loaded (None until the worker sent them).
    pub loaded: Option<Settings>,
    /// Display name.
    pub name: String,
    /// Listen addresses, one a line.
    pub listen: String,
    /// Bootstrap peers, one a line.
    pub bootstrap: String,
    /// Extra invite addresses, one a line.
    pub hints: String,
    /// UPnP.
    pub upnp: bool,
    /// uTP besides TCP.
    pub utp: bool,
    /// Whether to serve the DHT that finds friends who moved.
    pub dht_mode: chat_core::DhtMode,
    /// New passphrase.
    pub passphrase: String,
    /// Repeated.
    pub passphrase_again: String,
    /// What is wrong with the form.
    pub error: Option<String>,
}

impl SettingsForm {
    /// The worker sent the settings.
    pub fn set(&mut self, settings: Settings) {
        self.name = settings.display_name.clone();
        self.listen = lines(&settings.listen);
        self.bootstrap = settings.bootstrap.join("\n");
        self.hints = lines(&settings.address_hints);
        self.upnp = settings.upnp;
        self.utp = settings.utp;
        self.dht_mode = settings.dht_mode;
        self.loaded = Some(settings);
    }

    /// The settings the form describes, or what is wrong with it.
    pub fn parse(&self) -> Result<Settings, String> {
        let mut settings = self.loaded.clone().unwrap_or_default();
        let addrs = |text: &str, what: &str| {
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(|l| {
                    l.parse::<SocketAddr>()
                        .map_err(|_| format!("{what}: {l:?} is not IP:PORT"))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let name = self.name.trim();
        if name.is_empty() {
            return Err("the display name is empty".into());
        }
        settings.display_name = name.to_owned();
        settings.listen = addrs(&self.listen, "listen address")?;
        settings.address_hints = self
            .hints
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| {
                l.parse::<chat_core::Endpoint>()
                    .map_err(|_| format!("invite address: {l:?} is not IP:PORT or utp:IP:PORT"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        settings.bootstrap = self
            .bootstrap
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        settings.upnp = self.upnp;
        settings.utp = self.utp;
        settings.dht_mode = self.dht_mode;
        Ok(settings)
    }
}

/// Items one a line.
fn lines<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every dialog's state; `None`/`false` is closed.
#[derive(Debug, Default)]
pub struct Dialogs {
    /// Add contact.
    pub add_contact: Option<AddContact>,
    /// My invite.
    pub invite: Option<InviteView>,
    /// Friend requests.
    pub requests: bool,
    /// Contact details.
    pub details: Option<Details>,
    /// Search.
    pub search: Option<Search>,
    /// Network test (the report once it came).
    pub network: Option<Option<NetworkReport>>,
    /// Settings.
    pub settings: Option<SettingsForm>,
    /// How to add a friend.
    pub help: bool,
    /// About.
    pub about: bool,
}

/// A window that closes with its title-bar button.
fn window<'a>(title: &str, open: &'a mut bool) -> egui::Window<'a> {
    egui::Window::new(title.to_owned())
        .open(open)
        .collapsible(false)
        .resizable(true)
        .default_width(420.0)
}

impl Dialogs {
    /// Opens a dialog, asking the worker for what it shows.
    pub fn open(&mut self, kind: Kind, view: View<'_>, out: &mut Out) {
        match kind {
            Kind::AddContact => self.add_contact = Some(AddContact::default()),
            Kind::Invite => {
                self.invite = Some(InviteView::default());
                out.requests.push(Request::MyInvite);
            }
            Kind::Requests => self.requests = true,
            Kind::Details => {
                if let Some(peer) = view.selected {
                    let name = view
                        .contacts
                        .iter()
                        .find(|c| c.id == peer)
                        .map(|c| c.name.clone())
                        .unwrap_or_default();
                    self.details = Some(Details {
                        peer,
                        rename: name,
                        confirm_remove: false,
                    });
                }
            }
            Kind::Search => {
                if self.search.is_none() {
                    self.search = Some(Search::default());
                }
            }
            Kind::Network => {
                self.network = Some(None);
                out.requests.push(Request::NetworkReport);
            }
            Kind::Settings => {
                self.settings = Some(SettingsForm::default());
                out.requests.push(Request::LoadSettings);
            }
            Kind::Help => self.help = true,
            Kind::About => self.about = true,
        }
    }

    /// Draws the open dialogs.
    pub fn ui(&mut self, ctx: &egui::Context, view: View<'_>, out: &mut Out) {
        self.add_contact_ui(ctx, out);
        self.invite_ui(ctx, out);
        self.requests_ui(ctx, view, out);
        self.details_ui(ctx, view, out);
        self.search_ui(ctx, view, out);
        self.network_ui(ctx, view, out);
        self.settings_ui(ctx, out);
        if self.help {
            window("How to add a friend", &mut self.help).show(ctx, |ui| {
                help_text(ui);
            });
        }
        if self.about {
            window("About Crust Chat", &mut self.about).show(ctx, |ui| {
                ui.heading("Crust Chat");
                ui.label(format!("Version {}", chat_core::VERSION));
                ui.label("Secure peer-to-peer chat: no server in the middle.");
                ui.label("Licence: MIT OR Apache-2.0");
                ui.separator();
                ui.label(format!("Profile: {}", view.me.dir.display()));
                ui.label(format!("Your id: {}", view.me.id));
            });
        }
    }

    fn add_contact_ui(&mut self, ctx: &egui::Context, out: &mut Out) {
        let Some(state) = &mut self.add_contact else {
            return;
        };
        let mut open = true;
        let mut cancel = false;
        window("Add contact", &mut open).show(ctx, |ui| {
            ui.label("Paste the invite code your friend gave you (it starts with crust:).");
            let label = ui.label("Invite code");
            ui.add(
                egui::TextEdit::multiline(&mut state.code)
                    .desired_rows(3)
                    .desired_width(f32::INFINITY)
                    .hint_text("crust:…"),
            )
            .labelled_by(label.id);
            let label = ui.label("Message with the request");
            ui.add(egui::TextEdit::singleline(&mut state.message).hint_text("Hi, it's me!"))
                .labelled_by(label.id);
            if let Some(error) = &state.error {
                ui.colored_label(ui.visuals().error_fg_color, error);
            }
            ui.horizontal(|ui| {
                let ready = !state.code.trim().is_empty() && !state.busy;
                if ui
                    .add_enabled(ready, egui::Button::new("Send request"))
                    .clicked()
                {
                    state.busy = true;
                    state.error = None;
                    out.requests.push(Request::AddContact {
                        invite: state.code.trim().to_owned(),
                        message: state.message.trim().to_owned(),
                    });
                }
                if ui.button("Cancel").clicked() {
                    cancel = true;
                }
                if state.busy {
                    ui.spinner();
                }
            });
        });
        if !open || cancel {
            self.add_contact = None;
        }
    }

    fn invite_ui(&mut self, ctx: &egui::Context, out: &mut Out) {
        let Some(state) = &mut self.invite else {
            return;
        };
        let mut open = true;
        window("My invite", &mut open).show(ctx, |ui| {
            let Some(code) = state.code.clone() else {
                ui.spinner();
                return;
            };
            ui.label("Give this code to a friend (or let them scan the QR code). They add you with Chat > Add contact.");
            if state.texture.is_none()
                && let Some(qr) = &state.qr
            {
                state.texture = Some(ctx.load_texture(
                    "invite-qr",
                    qr_image(qr),
                    egui::TextureOptions::NEAREST,
                ));
            }
            if let Some(texture) = &state.texture {
                let side = texture.size()[0] as f32 * 5.0;
                ui.vertical_centered(|ui| {
                    ui.add(egui::Image::new((texture.id(), egui::vec2(side, side))).alt_text("QR code of my invite"));
                });
            }
            ui.add(
                egui::TextEdit::multiline(&mut code.as_str())
                    .desired_rows(3)
                    .desired_width(f32::INFINITY)
                    .font(egui::TextStyle::Monospace),
            );
            ui.horizontal(|ui| {
                if ui.button("Copy code").clicked() {
                    ctx.copy_text(code.clone());
                }
                if ui
                    .button("New code")
                    .on_hover_text("Old codes stop working for new requests; friends are not affected.")
                    .clicked()
                {
                    out.requests.push(Request::RotateInvite);
                }
            });
        });
        if !open {
            self.invite = None;
        }
    }

    fn requests_ui(&mut self, ctx: &egui::Context, view: View<'_>, out: &mut Out) {
        if !self.requests {
            return;
        }
        window("Friend requests", &mut self.requests).show(ctx, |ui| {
            if view.requests.is_empty() {
                ui.label("No friend requests.");
            }
            for request in view.requests {
                ui.group(|ui| {
                    ui.strong(&request.name);
                    ui.weak(request.from.to_string());
                    if !request.message.is_empty() {
                        ui.label(format!("“{}”", request.message));
                    }
                    if let Some(old) = request.replaces {
                        let name = view
                            .contacts
                            .iter()
                            .find(|c| c.id == old)
                            .map_or_else(|| old.short(), |c| c.name.clone());
                        ui.colored_label(
                            ui.visuals().error_fg_color,
                            format!("⚠ This is a NEW KEY claiming to be {name}. Compare safety codes before accepting."),
                        );
                    }
                    ui.label(format!(
                        "Safety code: {}",
                        chat_core::safety_code(&view.me.id, &request.from)
                    ));
                    ui.horizontal(|ui| {
                        if ui.button("Accept").clicked() {
                            out.requests.push(Request::Accept(request.from));
                            out.select = Some(request.from);
                        }
                        if ui.button("Decline").clicked() {
                            out.requests.push(Request::Decline(request.from));
                        }
                        if ui.button("Block").clicked() {
                            out.requests.push(Request::Block(request.from));
                            out.requests.push(Request::Decline(request.from));
                        }
                    });
                });
            }
        });
    }

    fn details_ui(&mut self, ctx: &egui::Context, view: View<'_>, out: &mut Out) {
        let Some(state) = &mut self.details else {
            return;
        };
        let Some(contact) = view.contacts.iter().find(|c| c.id == state.peer) else {
            self.details = None;
            return;
        };
        let mut open = true;
        let mut close = false;
        window("Contact details", &mut open).show(ctx, |ui| {
            ui.heading(&contact.name);
            egui::Grid::new("details").num_columns(2).show(ui, |ui| {
                ui.label("Id");
                ui.add(egui::Label::new(contact.id.to_string()).wrap());
                ui.end_row();
                ui.label("Status");
                ui.label(match contact.state {
                    ContactState::RequestSent => "friend request sent",
                    ContactState::Friend => "friend",
                    ContactState::Declined => "declined our request",
                });
                ui.end_row();
                ui.label("Presence");
                ui.label(presence_text(&contact.presence));
                ui.end_row();
                ui.label("Addresses");
                ui.label(
                    contact
                        .addrs
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                );
                ui.end_row();
                ui.label("Waiting for them");
                ui.label(format!("{} message(s)", contact.undelivered));
                ui.end_row();
            });
            ui.separator();
            ui.label("Safety code: compare it with your friend (in person or by phone).");
            ui.label(
                egui::RichText::new(chat_core::safety_code(&view.me.id, &contact.id))
                    .monospace()
                    .size(18.0),
            );
            if contact.verified {
                ui.label("✔ Verified");
                if ui.button("Mark as not verified").clicked() {
                    out.requests.push(Request::SetVerified(contact.id, false));
                }
            } else if ui.button("Mark as verified").clicked() {
                out.requests.push(Request::SetVerified(contact.id, true));
            }
            ui.separator();
            ui.horizontal(|ui| {
                let label = ui.label("Name");
                ui.text_edit_singleline(&mut state.rename)
                    .labelled_by(label.id);
                if ui.button("Rename").clicked() && !state.rename.trim().is_empty() {
                    out.requests
                        .push(Request::Rename(contact.id, state.rename.trim().to_owned()));
                }
            });
            ui.horizontal(|ui| {
                if ui.button("Block").clicked() {
                    out.requests.push(Request::Block(contact.id));
                }
                if ui.button("Unblock").clicked() {
                    out.requests.push(Request::Unblock(contact.id));
                }
            });
            ui.horizontal(|ui| {
                ui.checkbox(&mut state.confirm_remove, "Also delete the conversation");
                if ui
                    .add_enabled(state.confirm_remove, egui::Button::new("Remove contact"))
                    .clicked()
                {
                    out.requests.push(Request::Remove(contact.id));
                    close = true;
                }
            });
        });
        if !open || close {
            self.details = None;
        }
    }

    fn search_ui(&mut self, ctx: &egui::Context, view: View<'_>, out: &mut Out) {
        let Some(state) = &mut self.search else {
            return;
        };
        let mut open = true;
        window("Search messages", &mut open).show(ctx, |ui| {
            let mut go = false;
            ui.horizontal(|ui| {
                let label = ui.label("Words");
                let response = ui
                    .text_edit_singleline(&mut state.query)
                    .labelled_by(label.id);
                if response.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter)) {
                    go = true;
                }
                if ui.button("Search").clicked() {
                    go = true;
                }
            });
            if view.selected.is_some() {
                ui.checkbox(&mut state.this_conversation, "Only this conversation");
            }
            if go && !state.query.trim().is_empty() {
                out.requests.push(Request::Search {
                    query: state.query.trim().to_owned(),
                    contact: view.selected.filter(|_| state.this_conversation),
                });
            }
            if let Some((query, results)) = &state.results {
                ui.separator();
                if results.is_empty() {
                    ui.label(format!("Nothing found for “{query}”."));
                } else {
                    ui.label(format!("{} result(s) for “{query}”:", results.len()));
                }
                egui::ScrollArea::vertical()
                    .max_height(300.0)
                    .show(ui, |ui| {
                        for m in results {
                            let who = if m.outgoing {
                                view.me.name.clone()
                            } else {
                                contact_name(view.contacts, &m.contact)
                            };
                            let line = format!("{who}: {}", m.text.replace('\n', " "));
                            if ui
                                .add(egui::Button::new(line).frame(false).truncate())
                                .on_hover_text("Open the conversation")
                                .clicked()
                            {
                                out.select = Some(m.contact);
                            }
                        }
                    });
            }
        });
        if !open {
            self.search = None;
        }
    }

    fn network_ui(&mut self, ctx: &egui::Context, view: View<'_>, out: &mut Out) {
        let Some(report) = &self.network else {
            return;
        };
        let mut open = true;
        window("Network test", &mut open).show(ctx, |ui| {
            let Some(report) = report else {
                ui.spinner();
                return;
            };
            let text = report_text(report, view);
            ui.add(
                egui::TextEdit::multiline(&mut text.as_str())
                    .font(egui::TextStyle::Monospace)
                    .desired_width(f32::INFINITY),
            );
            ui.horizontal(|ui| {
                if ui.button("Refresh").clicked() {
                    out.requests.push(Request::NetworkReport);
                }
                if ui.button("Copy report").clicked() {
                    ctx.copy_text(text.clone());
                }
            });
        });
        if !open {
            self.network = None;
        }
    }

    fn settings_ui(&mut self, ctx: &egui::Context, out: &mut Out) {
        let Some(form) = &mut self.settings else {
            return;
        };
        let mut open = true;
        let mut close = false;
        window("Settings", &mut open).show(ctx, |ui| {
            if form.loaded.is_none() {
                ui.spinner();
                return;
            }
            ui.label("Changes take effect the next time Crust Chat starts.");
            egui::Grid::new("settings").num_columns(2).show(ui, |ui| {
                let label = ui.label("Display name");
                ui.text_edit_singleline(&mut form.name)
                    .labelled_by(label.id);
                ui.end_row();
                let label = ui.label("Listen on (IP:PORT, one a line)");
                ui.text_edit_multiline(&mut form.listen)
                    .labelled_by(label.id);
                ui.end_row();
                let label = ui.label("Bootstrap peers (ID@IP:PORT, one a line)");
                ui.text_edit_multiline(&mut form.bootstrap)
                    .labelled_by(label.id);
                ui.end_row();
                let label = ui.label("Extra invite addresses");
                ui.text_edit_multiline(&mut form.hints)
                    .labelled_by(label.id);
                ui.end_row();
                ui.label("Router");
                ui.checkbox(&mut form.upnp, "Ask the router to open a port (UPnP)");
                ui.end_row();
                ui.label("Transports");
                ui.checkbox(&mut form.utp, "Also connect over UDP (uTP)");
                ui.end_row();
                ui.label("Finding friends (DHT)");
                ui.vertical(|ui| {
                    for mode in chat_core::DhtMode::ALL {
                        let text = format!("{mode}: {}", mode.describe());
                        ui.radio_value(&mut form.dht_mode, mode, text);
                    }
                });
                ui.end_row();
            });
            if let Some(error) = &form.error {
                ui.colored_label(ui.visuals().error_fg_color, error);
            }
            ui.horizontal(|ui| {
                if ui.button("Save").clicked() {
                    match form.parse() {
                        Ok(settings) => {
                            out.requests.push(Request::SaveSettings(settings));
                            close = true;
                        }
                        Err(e) => form.error = Some(e),
                    }
                }
                if ui.button("Cancel").clicked() {
                    close = true;
                }
            });
            ui.separator();
            ui.label("Passphrase (protects your identity key on this computer)");
            let label = ui.label("New passphrase");
            ui.add(egui::TextEdit::singleline(&mut form.passphrase).password(true))
                .labelled_by(label.id);
            let label = ui.label("Repeat it");
            ui.add(egui::TextEdit::singleline(&mut form.passphrase_again).password(true))
                .labelled_by(label.id);
            ui.horizontal(|ui| {
                if ui.button("Set passphrase").clicked() {
                    if form.passphrase.is_empty() {
                        form.error = Some("the passphrase is empty".into());
                    } else if form.passphrase != form.passphrase_again {
                        form.error = Some("the two passphrases differ".into());
                    } else {
                        out.requests
                            .push(Request::ChangePassphrase(Some(form.passphrase.clone())));
                        form.passphrase.clear();
                        form.passphrase_again.clear();
                        form.error = None;
                    }
                }
                if ui.button("Remove passphrase").clicked() {
                    out.requests.push(Request::ChangePassphrase(None));
                }
            });
        });
        if !open || close {
            self.settings = None;
        }
    }
}

/// The "how to add a friend" steps (first-run screen and Help menu).
pub(crate) fn help_text(ui: &mut egui::Ui) {
    ui.label(
        "1. Open Chat > My invite… and give your friend the code, or let them scan the QR code.",
    );
    ui.label(
        "2. Your friend opens Chat > Add contact… and pastes your code. (Or you paste theirs.)",
    );
    ui.label(
        "3. Accept the friend request when it arrives (it shows at the top of the contact list).",
    );
    ui.label("4. Open Contact > Details… and compare the safety code with your friend, then mark them verified.");
    ui.label("Messages you write while your friend is offline wait on disk and are delivered when you both are online.");
}

/// A contact's name, or a short id for a stranger.
pub(crate) fn contact_name(contacts: &[Contact], peer: &PeerId) -> String {
    contacts
        .iter()
        .find(|c| c.id == *peer)
        .map_or_else(|| peer.short(), |c| c.name.clone())
}

/// "online, direct TCP to 1.2.3.4:5 (12 ms)" or "offline".
pub(crate) fn presence_text(presence: &Presence) -> String {
    match presence {
        Presence::Online(info) => {
            let rtt = info
                .rtt
                .map(|d| format!(" ({} ms)", d.as_millis()))
                .unwrap_or_default();
            format!("online, {}{rtt}", chat_core::describe_path(info))
        }
        Presence::Offline {
            connecting: true, ..
        } => "connecting…".to_owned(),
        Presence::Offline {
            last_seen_ms: Some(_),
            ..
        } => "offline (seen before)".to_owned(),
        Presence::Offline {
            last_seen_ms: None, ..
        } => "offline (never connected)".to_owned(),
    }
}

/// The network report as copyable text.
pub(crate) fn report_text(report: &NetworkReport, view: View<'_>) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "Crust Chat {} network report", chat_core::VERSION);
    let _ = writeln!(s, "id: {}", report.id);
    let _ = writeln!(s, "listening:");
    if report.listeners.is_empty() {
        let _ = writeln!(s, "  (nothing: friends cannot dial us)");
    }
    for l in &report.listeners {
        let _ = writeln!(s, "  {:?} {}", l.transport, l.addr);
    }
    let _ = writeln!(s, "addresses in our invite:");
    for a in &report.invite_addrs {
        let _ = writeln!(s, "  {a}");
    }
    let _ = writeln!(s, "connections: {}", report.connections.len());
    for (peer, info) in &report.connections {
        let rtt = info
            .rtt
            .map(|d| format!("{} ms", d.as_millis()))
            .unwrap_or_else(|| "rtt unknown".into());
        let _ = writeln!(
            s,
            "  {} via {:?} {} ({:?}, {rtt})",
            contact_name(view.contacts, peer),
            info.transport,
            info.remote_addr,
            info.direction,
        );
    }
    let nat = &report.nat;
    let _ = writeln!(s, "router:");
    let _ = writeln!(
        s,
        "  NAT: mapping {:?}, ports {:?}",
        nat.mapping, nat.port_allocation
    );
    if let Some(external) = nat.udp_external {
        let _ = writeln!(s, "  external UDP address: {external}");
    }
    for observed in &nat.tcp_observed {
        let _ = writeln!(s, "  seen over TCP as: {observed}");
    }
    let _ = match (&nat.upnp, view.no_upnp) {
        (Some(m), _) => writeln!(
            s,
            "  UPnP: mapped by the gateway {} (udp {:?}, tcp {:?})",
            m.external_ip, m.udp, m.tcp
        ),
        (None, true) => writeln!(s, "  UPnP: off for this run (--no-upnp)"),
        (None, false) => writeln!(
            s,
            "  UPnP: no mapping (off in settings, or no gateway found)"
        ),
    };
    s
}
