//! `/commands` typed in the input, and their Tab completion.

use chat_core::{Invite, PeerId};

use crate::app::{App, Effect};
use crate::popup::{ContactMode, Popup};

/// Every command with its arguments and what it does (also the help text).
pub(crate) const COMMANDS: &[(&str, &str, &str)] = &[
    (
        "add",
        "CODE [MESSAGE]",
        "send a friend request to an invite code",
    ),
    ("accept", "[NAME]", "accept a friend request"),
    ("decline", "[NAME]", "decline a friend request"),
    ("requests", "", "show friend requests"),
    ("myid", "", "show my invite code and QR code"),
    ("nick", "NAME", "change my display name"),
    ("rename", "NAME", "rename the current contact"),
    ("verify", "", "compare safety codes, mark verified"),
    ("info", "", "details of the current contact"),
    ("remove", "", "remove the current contact"),
    ("block", "[NAME]", "block a contact or requester"),
    ("unblock", "NAME", "unblock a peer"),
    ("search", "[WORDS]", "search all conversations"),
    ("network", "", "network test: listeners, connections, NAT"),
    ("settings", "", "display name, listen, bootstrap, UPnP"),
    ("help", "", "keys and commands"),
    ("quit", "", "leave (messages keep waiting in the outbox)"),
];

fn longest_common_prefix<'a>(words: impl Iterator<Item = &'a str>) -> String {
    let mut prefix: Option<String> = None;
    for w in words {
        prefix = Some(match prefix {
            None => w.to_owned(),
            Some(p) => p
                .chars()
                .zip(w.chars())
                .take_while(|(a, b)| a == b)
                .map(|(a, _)| a)
                .collect(),
        });
    }
    prefix.unwrap_or_default()
}

impl App {
    /// Finds a request by name or id prefix; `None` argument means "the
    /// only one".
    fn find_request(&mut self, arg: &str) -> Option<PeerId> {
        let arg = arg.trim();
        if arg.is_empty() {
            return match self.requests.as_slice() {
                [one] => Some(one.from),
                [] => {
                    self.error("No pending friend requests.");
                    None
                }
                _ => {
                    self.error("Several requests: name one (/accept NAME) or press F5.");
                    None
                }
            };
        }
        let lower = arg.to_lowercase();
        let found = self
            .requests
            .iter()
            .find(|r| r.name.to_lowercase() == lower)
            .or_else(|| {
                self.requests.iter().find(|r| {
                    r.name.to_lowercase().starts_with(&lower) || r.from.to_string().starts_with(arg)
                })
            })
            .map(|r| r.from);
        if found.is_none() {
            self.error(format!("No friend request from {arg:?}."));
        }
        found
    }

    fn find_peer(&self, arg: &str) -> Option<PeerId> {
        let lower = arg.trim().to_lowercase();
        self.contacts
            .iter()
            .find(|c| c.name.to_lowercase() == lower)
            .map(|c| c.id)
            .or_else(|| {
                self.contacts
                    .iter()
                    .find(|c| {
                        c.name.to_lowercase().starts_with(&lower)
                            || c.id.to_string().starts_with(arg.trim())
                    })
                    .map(|c| c.id)
            })
            .or_else(|| {
                self.requests
                    .iter()
                    .find(|r| r.name.to_lowercase().starts_with(&lower))
                    .map(|r| r.from)
            })
            .or_else(|| arg.trim().parse().ok())
    }

    /// Runs `command` (the text after `/`).
    pub(crate) fn run_command(&mut self, command: &str) {
        let (name, arg) = command
            .split_once(char::is_whitespace)
            .map_or((command, ""), |(n, a)| (n, a.trim()));
        let name = name.to_lowercase();
        let matches: Vec<&str> = COMMANDS
            .iter()
            .map(|(c, _, _)| *c)
            .filter(|c| c.starts_with(&name))
            .collect();
        let name = match (
            COMMANDS.iter().any(|(c, _, _)| *c == name),
            matches.as_slice(),
        ) {
            (true, _) => name.as_str(),
            (false, [one]) => one,
            _ => {
                self.error(format!("Unknown command /{name}. /help lists them."));
                return;
            }
        };
        match name {
            "add" => {
                if arg.is_empty() {
                    self.open_popup(Popup::add_contact(""));
                    return;
                }
                let (code, message) = arg
                    .split_once(char::is_whitespace)
                    .map_or((arg, ""), |(c, m)| (c, m.trim()));
                match code.parse::<Invite>() {
                    Ok(invite) => self.add_contact(&invite, message),
                    Err(e) => self.error(format!("{e}")),
                }
            }
            "accept" => {
                if let Some(peer) = self.find_request(arg) {
                    self.accept(peer);
                }
            }
            "decline" => {
                if let Some(peer) = self.find_request(arg) {
                    let name = self.name_of(&peer);
                    match self.backend.decline(&peer) {
                        Ok(()) => self.info(format!("Declined {name}.")),
                        Err(e) => self.error(format!("{e}")),
                    }
                    self.refresh_lists();
                }
            }
            "requests" => self.open_popup(Popup::Requests { selected: 0 }),
            "myid" => self.open_invite_popup(),
            "nick" => self.set_nick(arg),
            "rename" => match self.selected {
                Some(peer) if !arg.is_empty() => self.rename(peer, arg),
                Some(peer) => {
                    let mut popup = Popup::contact(peer);
                    if let Popup::Contact { mode, .. } = &mut popup {
                        *mode = ContactMode::Rename(Default::default());
                    }
                    self.open_popup(popup);
                }
                None => self.error("No contact selected."),
            },
            "verify" | "info" => self.open_contact_popup(),
            "remove" => match self.selected {
                Some(peer) => {
                    let mut popup = Popup::contact(peer);
                    if let Popup::Contact { mode, .. } = &mut popup {
                        *mode = ContactMode::ConfirmRemove;
                    }
                    self.open_popup(popup);
                }
                None => self.error("No contact selected."),
            },
            "block" => {
                let peer = if arg.is_empty() {
                    self.selected
                } else {
                    self.find_peer(arg)
                };
                match peer {
                    Some(peer) => self.block(peer),
                    None => self.error("Block whom? /block NAME"),
                }
            }
            "unblock" => match self.find_peer(arg) {
                Some(peer) => match self.backend.unblock(&peer) {
                    Ok(()) => {
                        self.refresh_lists();
                        let name = self.name_of(&peer);
                        self.info(format!("Unblocked {name}."));
                    }
                    Err(e) => self.error(format!("{e}")),
                },
                None => self.error("Unblock whom? /unblock NAME (or the peer id)"),
            },
            "search" => {
                let mut popup = Popup::search(arg);
                if !arg.is_empty() {
                    popup.run_search(&*self.backend);
                }
                self.open_popup(popup);
            }
            "network" => self.open_network_popup(),
            "settings" => self.open_settings_popup(),
            "help" => self.open_popup(Popup::Help { scroll: 0 }),
            "quit" => self.effect(Effect::Quit),
            _ => {}
        }
    }

    pub(crate) fn add_contact(&mut self, invite: &Invite, message: &str) {
        let message = if message.is_empty() {
            format!("Hi, it's {}", self.my_name)
        } else {
            message.to_owned()
        };
        match self.backend.add_contact(invite, &message) {
            Ok(()) => {
                self.refresh_lists();
                self.open(invite.peer);
                let name = self.name_of(&invite.peer);
                self.info(format!(
                    "Friend request sent to {name}. Write now: messages wait until they accept."
                ));
            }
            Err(e) => self.error(format!("{e}")),
        }
    }

    pub(crate) fn accept(&mut self, peer: PeerId) {
        let name = self.name_of(&peer);
        match self.backend.accept(&peer) {
            Ok(()) => {
                self.refresh_lists();
                self.open(peer);
                self.info(format!("You and {name} are friends now."));
            }
            Err(e) => self.error(format!("{e}")),
        }
    }

    pub(crate) fn block(&mut self, peer: PeerId) {
        let name = self.name_of(&peer);
        match self.backend.block(&peer) {
            Ok(()) => {
                self.refresh_lists();
                self.info(format!("Blocked {name}. /unblock {name} undoes it."));
            }
            Err(e) => self.error(format!("{e}")),
        }
    }

    pub(crate) fn rename(&mut self, peer: PeerId, name: &str) {
        match self.backend.rename(&peer, name) {
            Ok(()) => {
                self.refresh_lists();
                self.info(format!("Renamed to {name}."));
            }
            Err(e) => self.error(format!("{e}")),
        }
    }

    fn set_nick(&mut self, name: &str) {
        let name = name.trim();
        if name.is_empty() {
            self.error("/nick NAME");
            return;
        }
        match self.backend.set_display_name(name) {
            Ok(()) => {
                self.my_name = self.backend.display_name();
                let name = self.my_name.clone();
                self.info(format!(
                    "You are {name} now; friends see it when they next connect."
                ));
            }
            Err(e) => self.error(format!("cannot change the name: {e}")),
        }
    }

    /// Tab in a `/command`: completes the command name, or a name after
    /// commands that take one.
    pub(crate) fn complete(&mut self) {
        let text = self.input.text().to_owned();
        let Some(rest) = text.strip_prefix('/') else {
            return;
        };
        match rest.split_once(' ') {
            None => {
                let candidates: Vec<&str> = COMMANDS
                    .iter()
                    .map(|(c, _, _)| *c)
                    .filter(|c| c.starts_with(rest))
                    .collect();
                match candidates.as_slice() {
                    [] => self.error(format!("No command starts with /{rest}.")),
                    [one] => self.input.set(&format!("/{one} ")),
                    many => {
                        let common = longest_common_prefix(many.iter().copied());
                        self.input.set(&format!("/{common}"));
                        let list: Vec<String> = many.iter().map(|c| format!("/{c}")).collect();
                        self.info(list.join("  "));
                    }
                }
            }
            Some((command, partial)) => {
                let names: Vec<String> = match command {
                    "accept" | "decline" => self.requests.iter().map(|r| r.name.clone()).collect(),
                    "block" | "unblock" => self
                        .contacts
                        .iter()
                        .map(|c| c.name.clone())
                        .chain(self.requests.iter().map(|r| r.name.clone()))
                        .collect(),
                    _ => return,
                };
                let lower = partial.to_lowercase();
                let candidates: Vec<&String> = names
                    .iter()
                    .filter(|n| n.to_lowercase().starts_with(&lower))
                    .collect();
                match candidates.as_slice() {
                    [] => {}
                    [one] => self.input.set(&format!("/{command} {one}")),
                    many => {
                        let list: Vec<&str> = many.iter().map(|s| s.as_str()).collect();
                        self.info(list.join("  "));
                    }
                }
            }
        }
    }
}
