//! Headless mode: a [`Node`] driven by lines of text, for scripts and
//! tests (`crust-chat --headless` runs it on stdin and stdout).
//!
//! [`run`] reads one command per input line and writes one JSON object per
//! output line: the answer to each command, and every [`Event`] of the node
//! as it happens, interleaved in the order they occur. It returns after
//! `quit` or at the end of the input; it does not shut the node down (the
//! caller does, with [`Node::shutdown`]).
//!
//! # Commands
//!
//! Words are separated by spaces; `TEXT` and `MESSAGE` are the rest of the
//! line, as typed. `CONTACT` is a peer id, an unambiguous prefix of a
//! contact's or requester's id, or a contact's exact name. Empty lines and
//! lines starting with `#` are ignored.
//!
//! | command | answer (`"event"` value) |
//! |---|---|
//! | `id` | `id`: `id`, `name` |
//! | `invite` | `invite`: `code` (the `crust:` code), `id` |
//! | `add CODE [MESSAGE]` | `added`: `contact` (a friend request is on its way) |
//! | `requests` | `requests`: `requests` (array of requests) |
//! | `accept CONTACT` / `decline CONTACT` / `block CONTACT` / `unblock CONTACT` | `ok`: `command`, `contact` |
//! | `send CONTACT TEXT` | `queued`: the message (on disk, being delivered) |
//! | `read CONTACT` | `ok`: `command`, `contact`, `count` (messages newly read) |
//! | `typing CONTACT on\|off` | `ok` |
//! | `contacts` | `contacts`: `contacts` (array) |
//! | `history CONTACT [LIMIT]` | `history`: `contact`, `messages` (oldest first, default 50) |
//! | `search TEXT` | `search`: `messages` (newest first, at most 50) |
//! | `rename CONTACT NAME` / `remove CONTACT` / `verify CONTACT` | `ok` |
//! | `safety CONTACT` | `safety`: `contact`, `code` |
//! | `network` | `network`: the network report |
//! | `name NAME` | `ok` (our display name changed) |
//! | `help` | `help`: `commands` |
//! | `quit` | `bye`, then [`run`] returns |
//!
//! A command that fails answers `{"event":"error","command":...,"message":...}`
//! and the session goes on.
//!
//! # Events
//!
//! `message` (a [`Message`], incoming), `state` (`contact`, `id`, `state`:
//! `queued`/`sent`/`delivered`/`read`), `online` (`contact`, `path`),
//! `offline`, `connecting` (a dropped friend is being dialled again),
//! `reconnect_failed`, `request` (a friend request), `accepted`, `declined`,
//! `key_changed` (`contact`, `new_key`), `typing` (`contact`, `typing`),
//! `listening` (`endpoint`), `problem` (`message`), `network` (a report:
//! `listeners`, `invite_addrs`, `connections` with their paths, and what
//! crust knows of the NAT: `nat_mapping`, `nat_port_allocation`,
//! `udp_external`, `upnp`).
//! Every object has an `"event"` field; ids are the text forms (peer ids in
//! base32, message ids in hex); times are milliseconds since the Unix
//! epoch.
//!
//! # Example
//!
//! ```text
//! > invite
//! {"event":"invite","code":"crust:ae…","id":"…"}
//! > send alice hello there
//! {"event":"queued","contact":"…","id":"0192…","seq":1,"text":"hello there",…}
//! {"event":"state","contact":"…","id":"0192…","state":"sent"}
//! {"event":"state","contact":"…","id":"0192…","state":"delivered"}
//! ```

use std::fmt::Write as _;

use crust::PeerId;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

use crate::node::{Event, NetworkReport, Node, NodeEvents};
use crate::types::{Contact, ContactState, FriendRequest, Message, MessageState, Presence};

const HELP: &[&str] = &[
    "id",
    "invite",
    "add CODE [MESSAGE]",
    "requests",
    "accept CONTACT",
    "decline CONTACT",
    "block CONTACT",
    "unblock CONTACT",
    "send CONTACT TEXT",
    "read CONTACT",
    "typing CONTACT on|off",
    "contacts",
    "history CONTACT [LIMIT]",
    "search TEXT",
    "rename CONTACT NAME",
    "remove CONTACT",
    "verify CONTACT",
    "safety CONTACT",
    "network",
    "name NAME",
    "help",
    "quit",
];

/// Runs the line protocol until `quit` or the end of `input`. The node is
/// left running.
///
/// # Errors
///
/// Only reading `input` or writing `output` fails this; a command that
/// fails is answered with an `error` line.
pub async fn run<R, W>(
    node: Node,
    mut events: NodeEvents,
    input: R,
    mut output: W,
) -> std::io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut lines = input.lines();
    let mut events_open = true;
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line? else { break };
                let (answer, quit) = command(&node, &line).await;
                for json in answer {
                    write_line(&mut output, &json).await?;
                }
                if quit {
                    break;
                }
            }
            event = events.recv(), if events_open => match event {
                Some(event) => write_line(&mut output, &event_json(&event)).await?,
                None => events_open = false,
            },
        }
    }
    output.flush().await
}

async fn write_line<W: AsyncWrite + Unpin>(output: &mut W, json: &Json) -> std::io::Result<()> {
    let mut text = String::new();
    json.write(&mut text);
    text.push('\n');
    output.write_all(text.as_bytes()).await?;
    output.flush().await
}

/// The next word of `rest` and what follows it (leading spaces dropped).
fn word(rest: &str) -> (&str, &str) {
    let rest = rest.trim_start();
    match rest.find(char::is_whitespace) {
        Some(i) => (&rest[..i], rest[i..].trim_start()),
        None => (rest, ""),
    }
}

/// Answers one input line; the flag is set after `quit`.
async fn command(node: &Node, line: &str) -> (Vec<Json>, bool) {
    let line = line.trim_end_matches(['\r', '\n']);
    let (name, rest) = word(line);
    if name.is_empty() || name.starts_with('#') {
        return (Vec::new(), false);
    }
    if name == "quit" || name == "exit" {
        return (vec![obj("bye", vec![])], true);
    }
    let answer = match execute(node, name, rest).await {
        Ok(json) => json,
        Err(message) => obj(
            "error",
            vec![
                ("command", Json::str(name)),
                ("message", Json::Str(message)),
            ],
        ),
    };
    (vec![answer], false)
}

fn ok(command: &str, contact: &PeerId) -> Json {
    obj(
        "ok",
        vec![
            ("command", Json::str(command)),
            ("contact", Json::Str(contact.to_string())),
        ],
    )
}

async fn execute(node: &Node, name: &str, rest: &str) -> Result<Json, String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    Ok(match name {
        "id" => obj(
            "id",
            vec![
                ("id", Json::Str(node.id().to_string())),
                ("name", Json::Str(node.display_name())),
            ],
        ),
        "invite" => {
            let invite = node.my_invite().map_err(|e| err(&e))?;
            obj(
                "invite",
                vec![
                    ("code", Json::Str(invite.to_string())),
                    ("id", Json::Str(invite.peer.to_string())),
                ],
            )
        }
        "add" => {
            let (code, message) = word(rest);
            let invite: crate::Invite = code.parse().map_err(|e| err(&e))?;
            node.add_contact(&invite, message).map_err(|e| err(&e))?;
            obj(
                "added",
                vec![("contact", Json::Str(invite.peer.to_string()))],
            )
        }
        "requests" => {
            let requests = node.requests().map_err(|e| err(&e))?;
            obj(
                "requests",
                vec![(
                    "requests",
                    Json::Arr(requests.iter().map(request_json).collect()),
                )],
            )
        }
        "accept" | "decline" | "block" | "unblock" | "remove" | "verify" => {
            let peer = resolve(node, word(rest).0)?;
            match name {
                "accept" => node.accept(&peer),
                "decline" => node.decline(&peer),
                "block" => node.block(&peer),
                "unblock" => node.unblock(&peer),
                "remove" => node.remove(&peer),
                _ => node.set_verified(&peer, true),
            }
            .map_err(|e| err(&e))?;
            ok(name, &peer)
        }
        "send" => {
            let (who, text) = word(rest);
            let peer = resolve(node, who)?;
            let message = node.send(&peer, text).map_err(|e| err(&e))?;
            message_json("queued", &message)
        }
        "read" => {
            let peer = resolve(node, word(rest).0)?;
            let count = node.mark_read(&peer).map_err(|e| err(&e))?;
            let mut json = ok(name, &peer);
            json.push("count", Json::Int(count as i64));
            json
        }
        "typing" => {
            let (who, state) = word(rest);
            let peer = resolve(node, who)?;
            let typing = match word(state).0 {
                "on" | "" => true,
                "off" => false,
                other => return Err(format!("typing: expected on or off, not {other:?}")),
            };
            node.set_typing(&peer, typing).map_err(|e| err(&e))?;
            ok(name, &peer)
        }
        "contacts" => {
            let contacts = node.contacts().map_err(|e| err(&e))?;
            obj(
                "contacts",
                vec![(
                    "contacts",
                    Json::Arr(contacts.iter().map(contact_json).collect()),
                )],
            )
        }
        "history" => {
            let (who, limit) = word(rest);
            let peer = resolve(node, who)?;
            let limit = match word(limit).0 {
                "" => 50,
                n => n
                    .parse()
                    .map_err(|_| format!("history: {n:?} is not a number"))?,
            };
            let page = node.history(&peer, None, limit).map_err(|e| err(&e))?;
            obj(
                "history",
                vec![
                    ("contact", Json::Str(peer.to_string())),
                    (
                        "messages",
                        Json::Arr(
                            page.messages
                                .iter()
                                .map(|m| message_json("message", m))
                                .collect(),
                        ),
                    ),
                ],
            )
        }
        "search" => {
            let found = node.search(rest, None, 50).map_err(|e| err(&e))?;
            obj(
                "search",
                vec![(
                    "messages",
                    Json::Arr(found.iter().map(|m| message_json("message", m)).collect()),
                )],
            )
        }
        "rename" => {
            let (who, new_name) = word(rest);
            let peer = resolve(node, who)?;
            node.rename(&peer, new_name).map_err(|e| err(&e))?;
            ok(name, &peer)
        }
        "safety" => {
            let peer = resolve(node, word(rest).0)?;
            obj(
                "safety",
                vec![
                    ("contact", Json::Str(peer.to_string())),
                    ("code", Json::Str(node.safety_code(&peer))),
                ],
            )
        }
        "network" => report_json(&node.network_report().await),
        "name" => {
            if rest.is_empty() {
                return Err("name: give the new name".into());
            }
            node.set_display_name(rest).map_err(|e| err(&e))?;
            obj("ok", vec![("command", Json::str(name))])
        }
        "help" => obj(
            "help",
            vec![(
                "commands",
                Json::Arr(HELP.iter().map(|c| Json::str(c)).collect()),
            )],
        ),
        other => return Err(format!("unknown command {other:?}; try help")),
    })
}

/// A peer id, an unambiguous id prefix of a contact or requester, or a
/// contact's exact name.
fn resolve(node: &Node, who: &str) -> Result<PeerId, String> {
    if who.is_empty() {
        return Err("name a contact".into());
    }
    if let Ok(peer) = who.parse::<PeerId>() {
        return Ok(peer);
    }
    let contacts = node.contacts().map_err(|e| e.to_string())?;
    let requests = node.requests().map_err(|e| e.to_string())?;
    let mut matches: Vec<PeerId> = contacts
        .iter()
        .filter(|c| c.name == who)
        .map(|c| c.id)
        .collect();
    if matches.is_empty() {
        let known = contacts
            .iter()
            .map(|c| c.id)
            .chain(requests.iter().map(|r| r.from));
        matches = known
            .filter(|id| {
                id.to_string().starts_with(&who.to_ascii_lowercase())
                    || id.to_string().starts_with(who)
            })
            .collect();
    }
    matches.dedup();
    match matches.as_slice() {
        [one] => Ok(*one),
        [] => Err(format!("no contact or request matches {who:?}")),
        _ => Err(format!("{who:?} matches more than one contact")),
    }
}

fn state_name(state: MessageState) -> &'static str {
    match state {
        MessageState::Queued => "queued",
        MessageState::Sent => "sent",
        MessageState::Delivered => "delivered",
        MessageState::Read => "read",
    }
}

fn message_json(event: &str, m: &Message) -> Json {
    obj(
        event,
        vec![
            ("contact", Json::Str(m.contact.to_string())),
            ("id", Json::Str(m.id.to_string())),
            ("outgoing", Json::Bool(m.outgoing)),
            ("seq", Json::Int(m.seq as i64)),
            ("sent_at_ms", Json::Int(m.sent_at_ms)),
            (
                "received_at_ms",
                m.received_at_ms.map_or(Json::Null, Json::Int),
            ),
            ("state", Json::str(state_name(m.state))),
            ("text", Json::Str(m.text.clone())),
        ],
    )
}

fn request_json(r: &FriendRequest) -> Json {
    Json::Obj(vec![
        ("from", Json::Str(r.from.to_string())),
        ("name", Json::Str(r.name.clone())),
        ("message", Json::Str(r.message.clone())),
        (
            "addrs",
            Json::Arr(r.addrs.iter().map(|a| Json::Str(a.to_string())).collect()),
        ),
        ("received_at_ms", Json::Int(r.received_at_ms)),
        (
            "replaces",
            r.replaces.map_or(Json::Null, |p| Json::Str(p.to_string())),
        ),
    ])
}

fn contact_json(c: &Contact) -> Json {
    let (online, connecting, last_seen) = match &c.presence {
        Presence::Online(_) => (true, false, None),
        Presence::Offline {
            last_seen_ms,
            connecting,
        } => (false, *connecting, *last_seen_ms),
    };
    Json::Obj(vec![
        ("id", Json::Str(c.id.to_string())),
        ("name", Json::Str(c.name.clone())),
        (
            "state",
            Json::str(match c.state {
                ContactState::RequestSent => "request_sent",
                ContactState::Friend => "friend",
                ContactState::Declined => "declined",
            }),
        ),
        ("verified", Json::Bool(c.verified)),
        ("online", Json::Bool(online)),
        ("connecting", Json::Bool(connecting)),
        ("path", c.presence.path().map_or(Json::Null, Json::Str)),
        ("last_seen_ms", last_seen.map_or(Json::Null, Json::Int)),
        ("unread", Json::Int(c.unread as i64)),
        ("undelivered", Json::Int(c.undelivered as i64)),
        (
            "addrs",
            Json::Arr(c.addrs.iter().map(|a| Json::Str(a.to_string())).collect()),
        ),
    ])
}

fn report_json(r: &NetworkReport) -> Json {
    obj(
        "network",
        vec![
            ("id", Json::Str(r.id.to_string())),
            (
                "listeners",
                Json::Arr(
                    r.listeners
                        .iter()
                        .map(|e| Json::Str(e.to_string()))
                        .collect(),
                ),
            ),
            (
                "invite_addrs",
                Json::Arr(
                    r.invite_addrs
                        .iter()
                        .map(|e| Json::Str(e.to_string()))
                        .collect(),
                ),
            ),
            (
                "connections",
                Json::Arr(
                    r.connections
                        .iter()
                        .map(|(peer, info)| {
                            Json::Obj(vec![
                                ("peer", Json::Str(peer.to_string())),
                                ("path", Json::Str(crate::types::describe_path(info))),
                            ])
                        })
                        .collect(),
                ),
            ),
            ("nat_mapping", Json::Str(format!("{:?}", r.nat.mapping))),
            (
                "nat_port_allocation",
                Json::Str(format!("{:?}", r.nat.port_allocation)),
            ),
            (
                "udp_external",
                r.nat
                    .udp_external
                    .map_or(Json::Null, |a| Json::Str(a.to_string())),
            ),
            (
                "upnp",
                r.nat
                    .upnp
                    .as_ref()
                    .map_or(Json::Null, |u| Json::Str(format!("{u:?}"))),
            ),
        ],
    )
}

fn event_json(event: &Event) -> Json {
    let peer = |p: &PeerId| Json::Str(p.to_string());
    match event {
        Event::MessageReceived(m) => message_json("message", m),
        Event::MessageStateChanged { contact, id, state } => obj(
            "state",
            vec![
                ("contact", peer(contact)),
                ("id", Json::Str(id.to_string())),
                ("state", Json::str(state_name(*state))),
            ],
        ),
        Event::ContactOnline { contact, path } => obj(
            "online",
            vec![
                ("contact", peer(contact)),
                ("path", Json::Str(crate::types::describe_path(path))),
            ],
        ),
        Event::ContactOffline { contact } => obj("offline", vec![("contact", peer(contact))]),
        Event::ContactConnecting { contact } => obj("connecting", vec![("contact", peer(contact))]),
        Event::ContactReconnectFailed { contact } => {
            obj("reconnect_failed", vec![("contact", peer(contact))])
        }
        Event::FriendRequest(r) => {
            let Json::Obj(mut fields) = request_json(r) else {
                return Json::Null;
            };
            fields.insert(0, ("event", Json::str("request")));
            Json::Obj(fields)
        }
        Event::FriendAccepted { contact } => obj("accepted", vec![("contact", peer(contact))]),
        Event::FriendDeclined { contact } => obj("declined", vec![("contact", peer(contact))]),
        Event::KeyChanged { contact, new_key } => obj(
            "key_changed",
            vec![("contact", peer(contact)), ("new_key", peer(new_key))],
        ),
        Event::Typing { contact, typing } => obj(
            "typing",
            vec![("contact", peer(contact)), ("typing", Json::Bool(*typing))],
        ),
        Event::Listening { endpoint } => obj(
            "listening",
            vec![("endpoint", Json::Str(endpoint.to_string()))],
        ),
        Event::Problem(message) => obj("problem", vec![("message", Json::Str(message.clone()))]),
        Event::NetworkChanged(report) => report_json(report),
    }
}

/// Just enough JSON to write the output lines.
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(&'static str, Json)>),
}

/// An object whose first field is `"event": event`.
fn obj(event: &str, mut fields: Vec<(&'static str, Json)>) -> Json {
    fields.insert(0, ("event", Json::str(event)));
    Json::Obj(fields)
}

impl Json {
    fn str(s: &str) -> Self {
        Self::Str(s.to_owned())
    }

    fn push(&mut self, key: &'static str, value: Json) {
        if let Self::Obj(fields) = self {
            fields.push((key, value));
        }
    }

    fn write(&self, out: &mut String) {
        match self {
            Self::Null => out.push_str("null"),
            Self::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Self::Int(n) => {
                let _ = write!(out, "{n}");
            }
            Self::Str(s) => write_str(out, s),
            Self::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Self::Obj(fields) => {
                out.push('{');
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_str(out, key);
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
        }
    }
}

fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(json: &Json) -> String {
        let mut out = String::new();
        json.write(&mut out);
        out
    }

    #[test]
    fn json_strings_are_escaped_and_objects_keep_their_order() {
        let json = obj(
            "message",
            vec![
                (
                    "text",
                    Json::str("a \"quote\"\\ new\nline\u{1}\u{2028} ünï"),
                ),
                ("n", Json::Int(-3)),
                ("none", Json::Null),
                ("list", Json::Arr(vec![Json::Bool(true), Json::Bool(false)])),
            ],
        );
        assert_eq!(
            text(&json),
            r#"{"event":"message","text":"a \"quote\"\\ new\nline\u0001\u2028 ünï","n":-3,"none":null,"list":[true,false]}"#
        );
    }

    #[test]
    fn words_split_on_the_first_space_and_keep_the_rest_as_typed() {
        assert_eq!(
            word("send  bob  hello  there "),
            ("send", "bob  hello  there ")
        );
        assert_eq!(word("quit"), ("quit", ""));
        assert_eq!(word("   "), ("", ""));
    }
}
