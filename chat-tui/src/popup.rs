//! The popups: their state and their keys. Each is modal; Esc closes it.

use chat_core::{Invite, Message, PeerId, Settings};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::app::{App, Effect, PAGE};
use crate::backend::Backend;
use crate::input::TextInput;

/// What the contact-details popup is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ContactMode {
    /// Showing details.
    View,
    /// Typing a new name.
    Rename(TextInput),
    /// Asking "remove? y/n".
    ConfirmRemove,
    /// Asking "block? y/n".
    ConfirmBlock,
}

/// The rows of the settings popup.
pub(crate) const SETTINGS_ROWS: &[&str] = &[
    "Display name",
    "Listen (TCP)",
    "Bootstrap peers",
    "UPnP",
    "DHT role",
    "Address hints",
    "Passphrase",
];
/// The settings rows that toggle or cycle rather than take text.
const ROW_UPNP: usize = 3;
const ROW_DHT: usize = 4;
const ROW_HINTS: usize = 5;
/// The passphrase row: typed blind, never shown.
pub(crate) const ROW_PASSPHRASE: usize = 6;

/// An open popup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Popup {
    /// Keys and commands.
    Help {
        /// Rows scrolled.
        scroll: u16,
    },
    /// Paste someone's invite.
    AddContact {
        /// The code.
        code: TextInput,
        /// The request's message.
        message: TextInput,
        /// 0 = code, 1 = message.
        field: usize,
        /// Why the code was refused.
        error: Option<String>,
    },
    /// Our invite and its QR code.
    MyInvite {
        /// The invite.
        invite: Invite,
        /// Only the QR code (for short terminals).
        qr_only: bool,
    },
    /// Pending friend requests.
    Requests {
        /// The highlighted request.
        selected: usize,
    },
    /// One contact: safety code, verify, rename, remove, block.
    Contact {
        /// Who.
        peer: PeerId,
        /// What we are doing.
        mode: ContactMode,
    },
    /// Search across all conversations.
    Search {
        /// The words.
        query: TextInput,
        /// Hits, newest first; `None` before the first search.
        results: Option<Vec<Message>>,
        /// The highlighted hit.
        selected: usize,
    },
    /// The network report.
    Network,
    /// Settings.
    Settings {
        /// The settings being edited.
        settings: Settings,
        /// The highlighted row.
        selected: usize,
        /// The field being edited.
        editing: Option<TextInput>,
    },
}

impl Popup {
    pub(crate) fn add_contact(code: &str) -> Self {
        Popup::AddContact {
            code: TextInput::with_text(code),
            message: TextInput::default(),
            field: 0,
            error: None,
        }
    }

    pub(crate) fn contact(peer: PeerId) -> Self {
        Popup::Contact {
            peer,
            mode: ContactMode::View,
        }
    }

    pub(crate) fn search(query: &str) -> Self {
        Popup::Search {
            query: TextInput::with_text(query),
            results: None,
            selected: 0,
        }
    }

    pub(crate) fn settings(settings: Settings) -> Self {
        Popup::Settings {
            settings,
            selected: 0,
            editing: None,
        }
    }

    /// A short name ("help", "add-contact", …).
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Popup::Help { .. } => "help",
            Popup::AddContact { .. } => "add-contact",
            Popup::MyInvite { .. } => "my-invite",
            Popup::Requests { .. } => "requests",
            Popup::Contact { .. } => "contact",
            Popup::Search { .. } => "search",
            Popup::Network => "network",
            Popup::Settings { .. } => "settings",
        }
    }

    pub(crate) fn run_search(&mut self, backend: &dyn Backend) {
        if let Popup::Search {
            query,
            results,
            selected,
        } = self
        {
            let words = query.text().trim();
            *selected = 0;
            *results = if words.is_empty() {
                None
            } else {
                Some(backend.search(words, None, 100).unwrap_or_default())
            };
        }
    }

    /// A paste while the popup is open goes into its text field.
    pub(crate) fn paste(&mut self, text: &str) {
        let one_line = text.replace(['\r', '\n'], " ");
        match self {
            Popup::AddContact {
                code,
                message,
                field,
                error,
            } => {
                *error = None;
                if *field == 0 {
                    code.insert_str(one_line.trim());
                } else {
                    message.insert_str(&one_line);
                }
            }
            Popup::Search { query, .. } => query.insert_str(&one_line),
            Popup::Contact {
                mode: ContactMode::Rename(name),
                ..
            } => name.insert_str(&one_line),
            Popup::Settings {
                editing: Some(field),
                ..
            } => field.insert_str(&one_line),
            _ => {}
        }
    }
}

/// Applies an editing key to a one-line field; true if it was one.
fn edit(field: &mut TextInput, key: KeyEvent) -> bool {
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    match key.code {
        KeyCode::Char('u') if ctrl => field.delete_to_line_start(),
        KeyCode::Char('w') if ctrl => field.delete_word(),
        KeyCode::Char('a') if ctrl => field.home(),
        KeyCode::Char('e') if ctrl => field.end(),
        KeyCode::Char(c) if !ctrl => field.insert(c),
        KeyCode::Backspace => field.backspace(),
        KeyCode::Delete => field.delete(),
        KeyCode::Left => field.left(),
        KeyCode::Right => field.right(),
        KeyCode::Home => field.home(),
        KeyCode::End => field.end(),
        _ => return false,
    }
    true
}

/// Parses every item, or names the first that does not parse.
fn parse_all<T: std::str::FromStr>(items: &[String]) -> Result<Vec<T>, String> {
    items
        .iter()
        .map(|item| item.parse().map_err(|_| item.clone()))
        .collect()
}

fn list_field(text: &str) -> Vec<String> {
    text.split([',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl App {
    /// A key while a popup is open.
    pub(crate) fn popup_key(&mut self, key: KeyEvent) {
        let Some(mut popup) = self.popup.take() else {
            return;
        };
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(key.code, KeyCode::Char('c')) {
            self.effect(Effect::Quit);
            return;
        }
        let editing = matches!(
            &popup,
            Popup::AddContact { .. }
                | Popup::Search { .. }
                | Popup::Contact {
                    mode: ContactMode::Rename(_),
                    ..
                }
                | Popup::Settings {
                    editing: Some(_),
                    ..
                }
        );
        if key.code == KeyCode::Esc {
            // Esc leaves a sub-mode first, then the popup.
            match &mut popup {
                Popup::Contact { mode, .. } if *mode != ContactMode::View => {
                    *mode = ContactMode::View;
                    self.popup = Some(popup);
                }
                Popup::Settings { editing, .. } if editing.is_some() => {
                    *editing = None;
                    self.popup = Some(popup);
                }
                _ => {}
            }
            return;
        }
        if !editing
            && !matches!(popup, Popup::MyInvite { .. })
            && matches!(key.code, KeyCode::Char('q'))
        {
            return;
        }
        let keep = match &mut popup {
            Popup::Help { scroll } => match key.code {
                KeyCode::Up => {
                    *scroll = scroll.saturating_sub(1);
                    true
                }
                KeyCode::Down => {
                    *scroll = scroll.saturating_add(1);
                    true
                }
                KeyCode::PageUp => {
                    *scroll = scroll.saturating_sub(10);
                    true
                }
                KeyCode::PageDown => {
                    *scroll = scroll.saturating_add(10);
                    true
                }
                _ => false,
            },
            Popup::AddContact {
                code,
                message,
                field,
                error,
            } => match key.code {
                KeyCode::Tab | KeyCode::BackTab | KeyCode::Up | KeyCode::Down => {
                    *field = 1 - *field;
                    true
                }
                KeyCode::Enter => match code.text().trim().parse::<Invite>() {
                    Ok(invite) => {
                        let message = message.text().to_owned();
                        self.add_contact(&invite, &message);
                        false
                    }
                    Err(e) => {
                        *error = Some(if code.is_empty() {
                            "Paste the code your friend gave you (it starts with crust:)."
                                .to_owned()
                        } else {
                            e.to_string()
                        });
                        true
                    }
                },
                _ => {
                    *error = None;
                    edit(if *field == 0 { code } else { message }, key);
                    true
                }
            },
            Popup::MyInvite { invite, qr_only } => match key.code {
                KeyCode::Char('q') => {
                    *qr_only = !*qr_only;
                    true
                }
                KeyCode::Char('c') | KeyCode::Char('y') => {
                    self.effect(Effect::Copy(invite.to_string()));
                    self.info("Invite copied to the clipboard (if your terminal allows OSC 52).");
                    true
                }
                _ => false,
            },
            Popup::Requests { selected } => {
                let n = self.requests.len();
                match key.code {
                    KeyCode::Up => {
                        *selected = selected.saturating_sub(1);
                        true
                    }
                    KeyCode::Down => {
                        *selected = (*selected + 1).min(n.saturating_sub(1));
                        true
                    }
                    KeyCode::Enter | KeyCode::Char('a') => {
                        if let Some(peer) = self.requests.get(*selected).map(|r| r.from) {
                            self.accept(peer);
                        }
                        !self.requests.is_empty()
                    }
                    KeyCode::Char('d') => {
                        if let Some(peer) = self.requests.get(*selected).map(|r| r.from) {
                            let name = self.name_of(&peer);
                            match self.backend.decline(&peer) {
                                Ok(()) => self.info(format!("Declined {name}.")),
                                Err(e) => self.error(format!("{e}")),
                            }
                            self.refresh_lists();
                        }
                        *selected = (*selected).min(self.requests.len().saturating_sub(1));
                        !self.requests.is_empty()
                    }
                    KeyCode::Char('b') => {
                        if let Some(peer) = self.requests.get(*selected).map(|r| r.from) {
                            self.block(peer);
                        }
                        *selected = (*selected).min(self.requests.len().saturating_sub(1));
                        !self.requests.is_empty()
                    }
                    _ => true,
                }
            }
            Popup::Contact { peer, mode } => {
                let peer = *peer;
                match mode {
                    ContactMode::View => match key.code {
                        KeyCode::Char('v') => {
                            let verified = self
                                .contacts
                                .iter()
                                .find(|c| c.id == peer)
                                .is_some_and(|c| c.verified);
                            match self.backend.set_verified(&peer, !verified) {
                                Ok(()) => {
                                    self.refresh_lists();
                                    self.info(if verified {
                                        "Marked not verified."
                                    } else {
                                        "Marked verified: the safety codes match."
                                    });
                                }
                                Err(e) => self.error(format!("{e}")),
                            }
                            true
                        }
                        KeyCode::Char('r') => {
                            *mode = ContactMode::Rename(TextInput::with_text(&self.name_of(&peer)));
                            true
                        }
                        KeyCode::Char('x') | KeyCode::Delete => {
                            *mode = ContactMode::ConfirmRemove;
                            true
                        }
                        KeyCode::Char('b') => {
                            if self.blocked.contains(&peer) {
                                match self.backend.unblock(&peer) {
                                    Ok(()) => self.info("Unblocked."),
                                    Err(e) => self.error(format!("{e}")),
                                }
                                self.refresh_lists();
                            } else {
                                *mode = ContactMode::ConfirmBlock;
                            }
                            true
                        }
                        KeyCode::Enter => false,
                        _ => true,
                    },
                    ContactMode::Rename(name) => match key.code {
                        KeyCode::Enter => {
                            let new = name.text().trim().to_owned();
                            if !new.is_empty() {
                                self.rename(peer, &new);
                            }
                            *mode = ContactMode::View;
                            true
                        }
                        _ => {
                            edit(name, key);
                            true
                        }
                    },
                    ContactMode::ConfirmRemove => match key.code {
                        KeyCode::Char('y') => {
                            let name = self.name_of(&peer);
                            match self.backend.remove(&peer) {
                                Ok(()) => {
                                    self.info(format!("Removed {name} and your conversation."))
                                }
                                Err(e) => self.error(format!("{e}")),
                            }
                            self.refresh_lists();
                            false
                        }
                        _ => {
                            *mode = ContactMode::View;
                            true
                        }
                    },
                    ContactMode::ConfirmBlock => match key.code {
                        KeyCode::Char('y') => {
                            self.block(peer);
                            *mode = ContactMode::View;
                            true
                        }
                        _ => {
                            *mode = ContactMode::View;
                            true
                        }
                    },
                }
            }
            Popup::Search { .. } => self.search_key(&mut popup, key),
            Popup::Network => {
                if key.code == KeyCode::Char('r') {
                    self.effect(Effect::RefreshReport);
                }
                !matches!(key.code, KeyCode::Enter)
            }
            Popup::Settings {
                settings,
                selected,
                editing,
            } => match editing {
                Some(field) => {
                    if key.code == KeyCode::Enter {
                        let text = field.text().trim().to_owned();
                        *editing = None;
                        self.save_setting(settings, *selected, &text);
                    } else {
                        edit(field, key);
                    }
                    true
                }
                None => match key.code {
                    KeyCode::Up => {
                        *selected = selected.saturating_sub(1);
                        true
                    }
                    KeyCode::Down => {
                        *selected = (*selected + 1).min(SETTINGS_ROWS.len() - 1);
                        true
                    }
                    KeyCode::Enter | KeyCode::Char(' ') => {
                        match *selected {
                            ROW_UPNP => {
                                settings.upnp = !settings.upnp;
                                self.store_settings(settings);
                            }
                            ROW_DHT => {
                                settings.dht_mode = settings.dht_mode.next();
                                self.store_settings(settings);
                            }
                            ROW_PASSPHRASE => *editing = Some(TextInput::default()),
                            row => {
                                let current = setting_text(settings, row);
                                *editing = Some(TextInput::with_text(&current));
                            }
                        }
                        true
                    }
                    _ => true,
                },
            },
        };
        if keep && self.popup.is_none() {
            self.popup = Some(popup);
        }
    }

    fn search_key(&mut self, popup: &mut Popup, key: KeyEvent) -> bool {
        let Popup::Search {
            query,
            results,
            selected,
        } = popup
        else {
            return false;
        };
        match key.code {
            KeyCode::Up => {
                *selected = selected.saturating_sub(1);
                true
            }
            KeyCode::Down => {
                let n = results.as_ref().map_or(0, Vec::len);
                *selected = (*selected + 1).min(n.saturating_sub(1));
                true
            }
            KeyCode::Enter => {
                if let Some(hit) = results.as_ref().and_then(|r| r.get(*selected)).cloned() {
                    self.jump_to(&hit);
                    false
                } else {
                    popup.run_search(&*self.backend);
                    true
                }
            }
            _ => {
                if edit(query, key) {
                    popup.run_search(&*self.backend);
                }
                true
            }
        }
    }

    /// Opens the conversation of a search hit and scrolls to it.
    fn jump_to(&mut self, hit: &Message) {
        self.open(hit.contact);
        let mut pages = 0;
        loop {
            let Some(conv) = self.conv.as_mut() else {
                return;
            };
            if let Some(index) = conv.index_of(&hit.id) {
                conv.show(index);
                return;
            }
            let Some(older) = conv.older() else {
                break;
            };
            pages += 1;
            if pages > 500 {
                break;
            }
            match self.backend.history(&conv.contact, Some(older), PAGE * 5) {
                Ok(page) => conv.prepend(page),
                Err(_) => break,
            }
        }
        self.error("That message is no longer in the conversation.");
    }

    fn store_settings(&mut self, settings: &Settings) {
        match self.backend.set_settings(settings.clone()) {
            Ok(()) => self.info("Saved; takes effect on the next start."),
            Err(e) => self.error(format!("cannot save settings: {e}")),
        }
    }

    fn save_setting(&mut self, settings: &mut Settings, row: usize, text: &str) {
        match row {
            0 => {
                if text.is_empty() {
                    self.error("The name cannot be empty.");
                    return;
                }
                match self.backend.set_display_name(text) {
                    Ok(()) => {
                        self.my_name = self.backend.display_name();
                        settings.display_name = self.my_name.clone();
                        self.info("Name changed.");
                    }
                    Err(e) => self.error(format!("cannot change the name: {e}")),
                }
                return;
            }
            1 => match parse_all(&list_field(text)) {
                Ok(addrs) => settings.listen = addrs,
                Err(item) => {
                    self.error(format!("{item:?} is not an IP:PORT address."));
                    return;
                }
            },
            ROW_HINTS => match parse_all(&list_field(text)) {
                Ok(endpoints) => settings.address_hints = endpoints,
                Err(item) => {
                    self.error(format!(
                        "{item:?} is not an address (IP:PORT, tcp:IP:PORT or utp:IP:PORT)."
                    ));
                    return;
                }
            },
            2 => settings.bootstrap = list_field(text),
            ROW_PASSPHRASE => {
                let new = (!text.is_empty()).then_some(text);
                match self.backend.change_passphrase(new) {
                    Ok(()) => self.info(if new.is_some() {
                        "Passphrase set: it is asked for at every start."
                    } else {
                        "Passphrase removed: the key is stored unsealed."
                    }),
                    Err(e) => self.error(format!("cannot change the passphrase: {e}")),
                }
                return;
            }
            _ => return,
        }
        self.store_settings(settings);
    }
}

/// A settings row's value as text.
pub(crate) fn setting_text(settings: &Settings, row: usize) -> String {
    fn join<T: ToString>(v: &[T]) -> String {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
    match row {
        0 => settings.display_name.clone(),
        1 => join(&settings.listen),
        2 => settings.bootstrap.join(", "),
        ROW_UPNP => if settings.upnp { "on" } else { "off" }.to_owned(),
        ROW_DHT => format!("{}: {}", settings.dht_mode, settings.dht_mode.describe()),
        ROW_HINTS => join(&settings.address_hints),
        _ => String::new(),
    }
}
