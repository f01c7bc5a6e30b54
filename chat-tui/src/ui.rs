//! Drawing: a pure function of the [`App`] onto a ratatui frame.

use chat_core::{
    ConnectionPath, ContactState, Direction, Mapping, NetworkReport, Presence, QrMatrix, Transport,
};
use ratatui::Frame;
use ratatui::layout::{Position, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};
use unicode_width::UnicodeWidthStr;

use crate::app::{App, ContactRow};
use crate::commands::COMMANDS;
use crate::conversation::{self, state_word};
use crate::popup::{ContactMode, Popup, ROW_PASSPHRASE, SETTINGS_ROWS, setting_text};
use crate::theme;

/// Draws the whole screen.
pub fn render(app: &App, frame: &mut Frame<'_>) {
    let area = frame.area();
    let areas = app.areas(area);
    render_contacts(app, frame, areas.contacts);
    render_header(app, frame, areas.header);
    render_messages(app, frame, areas.messages);
    render_notice(app, frame, areas.notice);
    render_input(app, frame, areas.input);
    render_status(app, frame, areas.status);
    if let Some(popup) = &app.popup {
        render_popup(app, popup, frame, area);
    }
}

/// How a connection was found, in words.
fn path_kind(info: &chat_core::ConnectionInfo) -> &'static str {
    match info.path {
        ConnectionPath::HolePunched => "hole-punched",
        ConnectionPath::Relayed { .. } => "relayed",
        _ => "direct",
    }
}

/// The NAT in front of us, in a few words, from the network report.
fn nat_label(report: Option<&NetworkReport>) -> &'static str {
    match report.map(|r| r.nat.mapping) {
        Some(Mapping::NoNat) => "no NAT",
        Some(Mapping::EndpointIndependent) => "NAT cone",
        Some(Mapping::EndpointDependent) => "NAT symmetric",
        _ => "NAT ?",
    }
}

fn upnp_label(app: &App) -> String {
    match app.report.as_ref().and_then(|r| r.nat.upnp.as_ref()) {
        Some(m) => format!("UPnP {}", m.external_ip),
        None if app.upnp => "UPnP on".to_owned(),
        None => "UPnP off".to_owned(),
    }
}

/// The short label of a connection path in the contact list.
pub(crate) fn path_short(info: &chat_core::ConnectionInfo) -> &'static str {
    match (path_kind(info), info.transport) {
        ("relayed", _) => "relay",
        ("hole-punched", _) => "punch",
        (_, Transport::Tcp) => "tcp",
        (_, Transport::Utp) => "utp",
        _ => "?",
    }
}

fn path_long(info: &chat_core::ConnectionInfo) -> String {
    let transport = match info.transport {
        Transport::Tcp => "TCP",
        Transport::Utp => "uTP",
        _ => "?",
    };
    let who = match info.direction {
        Direction::Outgoing => "we dialled",
        Direction::Incoming => "they dialled",
    };
    let rtt = info
        .rtt
        .map(|r| format!(", rtt {} ms", r.as_millis()))
        .unwrap_or_default();
    format!(
        "{} {transport} {} ({who}{rtt})",
        path_kind(info),
        info.remote_addr
    )
}

fn pad_to(s: &str, width: usize) -> String {
    let mut out = String::new();
    let mut w = 0;
    for c in s.chars() {
        let cw = unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
        if w + cw > width {
            break;
        }
        out.push(c);
        w += cw;
    }
    out.push_str(&" ".repeat(width - w));
    out
}

fn render_contacts(app: &App, frame: &mut Frame<'_>, area: Rect) {
    if area.width == 0 {
        return;
    }
    let block = Block::new()
        .borders(ratatui::widgets::Borders::RIGHT)
        .border_style(theme::dim());
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let width = inner.width as usize;
    let mut lines = vec![Line::styled(pad_to(" Contacts", width), theme::bold())];
    let list_height = inner.height.saturating_sub(1) as usize;
    let offset = app.contacts_offset(list_height);
    for row in app
        .contact_rows()
        .into_iter()
        .skip(offset)
        .take(list_height)
    {
        lines.push(match row {
            ContactRow::Contact(i) => {
                let c = &app.contacts[i];
                let selected = app.selected == Some(c.id);
                let (dot, dot_style) = match (&c.presence, c.state) {
                    (_, _) if app.blocked.contains(&c.id) => ("⊘", theme::dim()),
                    (_, ContactState::RequestSent) => ("?", theme::dim()),
                    (_, ContactState::Declined) => ("✗", theme::error()),
                    (Presence::Online(_), _) => ("●", theme::online()),
                    (
                        Presence::Offline {
                            connecting: true, ..
                        },
                        _,
                    ) => ("◌", theme::dim()),
                    (Presence::Offline { .. }, _) => ("○", theme::dim()),
                };
                let right = match (&c.presence, c.state) {
                    _ if app.blocked.contains(&c.id) => "blocked".to_owned(),
                    (_, ContactState::RequestSent) => "pending".to_owned(),
                    (_, ContactState::Declined) => "declined".to_owned(),
                    (Presence::Online(info), _) => path_short(info).to_owned(),
                    (
                        Presence::Offline {
                            connecting: true, ..
                        },
                        _,
                    ) => "connecting".to_owned(),
                    _ => String::new(),
                };
                let unread = if c.unread > 0 {
                    format!("{} ", c.unread.min(999))
                } else {
                    String::new()
                };
                let number = if i < 9 {
                    format!("{}", i + 1)
                } else {
                    " ".to_owned()
                };
                let verified = if c.verified { "✓" } else { "" };
                let fixed = 1 + 2 + 1 + unread.width() + right.width();
                let name_width = width.saturating_sub(fixed + verified.width());
                let name = pad_to(&c.name, name_width);
                let base = if selected {
                    theme::reversed()
                } else {
                    Style::new()
                };
                let name_style = if c.unread > 0 {
                    theme::bold().patch(base)
                } else {
                    base
                };
                Line::from(vec![
                    Span::styled(number, theme::dim().patch(base)),
                    Span::styled(format!("{dot} "), dot_style.patch(base)),
                    Span::styled(name, name_style),
                    Span::styled(verified, base),
                    Span::styled(" ", base),
                    Span::styled(unread, theme::unread().patch(base)),
                    Span::styled(right, theme::dim().patch(base)),
                ])
            }
            ContactRow::RequestsHeading => Line::styled(
                pad_to(&format!(" Requests ({})  F5", app.requests.len()), width),
                theme::bold(),
            ),
            ContactRow::Request(i) => {
                let r = &app.requests[i];
                let mark = if r.replaces.is_some() { "!" } else { "+" };
                Line::from(vec![
                    Span::styled(format!(" {mark} "), theme::error()),
                    Span::raw(pad_to(&r.name, width.saturating_sub(3))),
                ])
            }
        });
    }
    if app.contacts.is_empty() {
        lines.push(Line::styled(" nobody yet:", theme::dim()));
        lines.push(Line::styled(" F3 my invite", theme::dim()));
        lines.push(Line::styled(" F4 add a friend", theme::dim()));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

fn render_header(app: &App, frame: &mut Frame<'_>, area: Rect) {
    let Some(c) = app.current() else {
        frame.render_widget(
            Paragraph::new(Line::styled(
                pad_to(" Crust Chat", area.width as usize),
                theme::reversed(),
            )),
            area,
        );
        return;
    };
    let status = match (&c.presence, c.state) {
        (_, ContactState::RequestSent) => "request sent, waiting for them to accept".to_owned(),
        (_, ContactState::Declined) => "declined our request".to_owned(),
        (Presence::Online(info), _) => format!("online · {}", path_long(info)),
        (
            Presence::Offline {
                last_seen_ms,
                connecting,
            },
            _,
        ) => {
            let state = if *connecting {
                "connecting…"
            } else {
                "offline"
            };
            match last_seen_ms {
                Some(ms) => {
                    let t = app.zone.local(*ms);
                    format!("{state} · last seen {}", t.format("%Y-%m-%d %H:%M"))
                }
                None => format!("{state} · never seen"),
            }
        }
    };
    let verified = if c.verified { " ✓" } else { "" };
    let waiting = if c.undelivered > 0 {
        format!(" · {} waiting", c.undelivered)
    } else {
        String::new()
    };
    let unverified = if c.verified || c.state != ContactState::Friend {
        ""
    } else {
        " · not verified (F2)"
    };
    let text = format!(" {}{verified} · {status}{waiting}{unverified}", c.name);
    frame.render_widget(
        Paragraph::new(Line::styled(
            pad_to(&text, area.width as usize),
            theme::reversed(),
        )),
        area,
    );
}

fn render_messages(app: &App, frame: &mut Frame<'_>, area: Rect) {
    let Some(conv) = &app.conv else {
        let text = if app.contacts.is_empty() {
            vec![
                Line::raw(""),
                Line::styled(" Welcome to Crust Chat.", theme::bold()),
                Line::raw(""),
                Line::raw(" To chat, one of you gives the other an invite:"),
                Line::raw("  F3 or /myid  shows your invite code and QR code"),
                Line::raw("  F4 or /add   adds a friend's code; they accept"),
                Line::raw(""),
                Line::raw(" ? or F1 lists every key and command."),
            ]
        } else {
            vec![Line::raw(" Choose a contact: Tab, Alt+1…9 or a click.")]
        };
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: false }), area);
        return;
    };
    let them = app.current().map_or("", |c| c.name.as_str());
    let ctx = conversation::RowContext {
        me: &app.my_name,
        them,
        zone: app.zone,
        width: area.width as usize,
    };
    let rows = conv.view(area.height as usize, &ctx);
    if conv.messages().is_empty() {
        let hint = match app.current().map(|c| c.state) {
            Some(ContactState::RequestSent) => {
                " No messages yet. Write now: messages wait until they accept."
            }
            _ => " No messages yet. Say hello!",
        };
        frame.render_widget(Paragraph::new(Line::styled(hint, theme::dim())), area);
        return;
    }
    frame.render_widget(Paragraph::new(rows), area);
    if !conv.following() {
        let label = " ↓ more below (Esc) ";
        let w = label.width() as u16;
        if area.width > w {
            let at = Rect::new(area.x + area.width - w, area.y + area.height - 1, w, 1);
            frame.render_widget(Paragraph::new(Line::styled(label, theme::reversed())), at);
        }
    }
}

fn render_notice(app: &App, frame: &mut Frame<'_>, area: Rect) {
    let typing = app
        .selected
        .filter(|p| app.is_typing(p))
        .map(|p| format!(" {} is typing…", app.name_of(&p)));
    let line = if let Some(n) = &app.notice {
        let style = if n.error {
            theme::error()
        } else {
            theme::bold()
        };
        let mut spans = vec![Span::styled(format!(" {}", n.text), style)];
        if let Some(t) = typing {
            spans.push(Span::styled(format!("  ·{t}"), theme::dim()));
        }
        Line::from(spans)
    } else if let Some(t) = typing {
        Line::styled(t, theme::dim())
    } else if let Some(last) = app
        .conv
        .as_ref()
        .and_then(|c| c.messages().iter().rev().find(|m| m.outgoing))
    {
        Line::styled(
            format!(" last message {}", state_word(last.state)),
            theme::dim(),
        )
    } else {
        Line::default()
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn render_input(app: &App, frame: &mut Frame<'_>, area: Rect) {
    if area.height == 0 {
        return;
    }
    let rule = Rect::new(area.x, area.y, area.width, 1);
    frame.render_widget(
        Paragraph::new(Line::styled("─".repeat(area.width as usize), theme::dim())),
        rule,
    );
    let body = Rect::new(area.x, area.y + 1, area.width, area.height - 1);
    let layout = app.input.layout(area.width.saturating_sub(2) as usize);
    let visible = body.height as usize;
    let first = (layout.cursor_row + 1).saturating_sub(visible);
    let mut lines: Vec<Line<'_>> = Vec::new();
    for (i, row) in layout.rows.iter().enumerate().skip(first).take(visible) {
        let prompt = if i == 0 { "> " } else { "  " };
        lines.push(Line::from(vec![
            Span::styled(prompt, theme::bold()),
            Span::raw(row.clone()),
        ]));
    }
    if app.input.is_empty() {
        let hint = match app.current() {
            Some(c) => format!("message {}  (Enter sends, Ctrl+J new line, /help)", c.name),
            None => "type /help, or press ? for keys".to_owned(),
        };
        lines = vec![Line::from(vec![
            Span::styled("> ", theme::bold()),
            Span::styled(hint, theme::dim()),
        ])];
    }
    frame.render_widget(Paragraph::new(lines), body);
    if app.popup.is_none() {
        frame.set_cursor_position(Position::new(
            body.x + 2 + layout.cursor_col as u16,
            body.y + (layout.cursor_row - first) as u16,
        ));
    }
}

fn render_status(app: &App, frame: &mut Frame<'_>, area: Rect) {
    let conns = app.connection_count();
    let left = format!(
        " {} · {} · {} connection{} · {} · {}",
        app.my_name,
        app.me.short(),
        conns,
        if conns == 1 { "" } else { "s" },
        nat_label(app.report.as_ref()),
        upnp_label(app),
    );
    let right = "? help · F3 invite · F4 add ";
    let width = area.width as usize;
    let text = if left.width() + right.width() + 2 <= width {
        format!(
            "{left}{}{right}",
            " ".repeat(width - left.width() - right.width())
        )
    } else {
        pad_to(&left, width)
    };
    frame.render_widget(Paragraph::new(Line::styled(text, theme::reversed())), area);
}

/// A rectangle of `width` × `height` centred in `area` (clipped to it).
fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect::new(
        area.x + (area.width - width) / 2,
        area.y + (area.height - height) / 2,
        width,
        height,
    )
}

fn popup_frame(frame: &mut Frame<'_>, area: Rect, title: &str, keys: &str) -> Rect {
    frame.render_widget(Clear, area);
    let block = Block::bordered()
        .title(Line::styled(format!(" {title} "), theme::bold()))
        .title_bottom(Line::styled(format!(" {keys} "), theme::dim()));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    inner
}

fn render_popup(app: &App, popup: &Popup, frame: &mut Frame<'_>, screen: Rect) {
    let wide = screen.width.saturating_sub(4).min(76);
    match popup {
        Popup::Help { scroll } => {
            let area = centered(screen, wide, screen.height.saturating_sub(2));
            let inner = popup_frame(frame, area, "Help", "↑↓ PgUp PgDn scroll · Esc close");
            let lines = help_lines();
            let max = (lines.len() as u16).saturating_sub(inner.height);
            frame.render_widget(Paragraph::new(lines).scroll(((*scroll).min(max), 0)), inner);
        }
        Popup::AddContact {
            code,
            message,
            field,
            error,
        } => {
            let area = centered(screen, wide, 12);
            let inner = popup_frame(
                frame,
                area,
                "Add a contact",
                "Enter send request · Tab next field · Esc cancel",
            );
            let w = inner.width.saturating_sub(2) as usize;
            let code_rows = code.layout(w).rows;
            let mut lines = vec![Line::raw("Paste your friend's invite code (crust:…):")];
            for row in code_rows.iter().take(3) {
                lines.push(Line::from(vec![
                    Span::styled(if *field == 0 { "> " } else { "  " }, theme::bold()),
                    Span::raw(row.clone()),
                ]));
            }
            lines.push(Line::raw("A message for them (optional):"));
            lines.push(Line::from(vec![
                Span::styled(if *field == 1 { "> " } else { "  " }, theme::bold()),
                Span::raw(message.text().to_owned()),
            ]));
            if let Some(e) = error {
                lines.push(Line::styled(e.clone(), theme::error()));
            }
            frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), inner);
            let layout = if *field == 0 {
                code.layout(w)
            } else {
                message.layout(w)
            };
            let y = if *field == 0 {
                1 + layout.cursor_row.min(2)
            } else {
                2 + code_rows.len().min(3)
            };
            frame.set_cursor_position(Position::new(
                inner.x + 2 + layout.cursor_col as u16,
                inner.y + y as u16,
            ));
        }
        Popup::MyInvite { invite, qr_only } => {
            let code = invite.to_string();
            let qr = invite.qr_matrix();
            let text_width = wide.saturating_sub(2) as usize;
            let code_rows = chunk(&code, text_width);
            let qr_rows = qr_lines(&qr, 1);
            let qr_height = qr_rows.len() as u16;
            let text_height = 3 + code_rows.len() as u16;
            let with_qr = *qr_only || text_height + qr_height + 2 <= screen.height;
            let with_text = !*qr_only;
            let height =
                if with_text { text_height } else { 1 } + if with_qr { qr_height } else { 1 } + 2;
            let area = centered(screen, wide, height);
            let keys = if *qr_only {
                "q code · c copy · Esc close"
            } else {
                "q QR code only · c copy · Esc close"
            };
            let inner = popup_frame(frame, area, "My invite", keys);
            let mut lines = vec![Line::raw(format!(
                "Give this code to a friend ({} · {}):",
                app.my_name,
                app.me.short()
            ))];
            if with_text {
                for row in &code_rows {
                    lines.push(Line::styled(row.clone(), theme::bold()));
                }
                lines.push(Line::raw(""));
            }
            if with_qr {
                let pad = (inner.width as usize).saturating_sub(qr.width + 2) / 2;
                for row in qr_rows {
                    let mut spans = vec![Span::raw(" ".repeat(pad))];
                    spans.extend(row.spans);
                    lines.push(Line::from(spans));
                }
            } else {
                lines.push(Line::styled(
                    "q shows the QR code (the terminal is too short for both)",
                    theme::dim(),
                ));
            }
            frame.render_widget(Paragraph::new(lines), inner);
        }
        Popup::Requests { selected } => {
            let area = centered(screen, wide, 16);
            let inner = popup_frame(
                frame,
                area,
                "Friend requests",
                "Enter/a accept · d decline · b block · Esc close",
            );
            let mut lines = Vec::new();
            if app.requests.is_empty() {
                lines.push(Line::styled("No pending requests.", theme::dim()));
            }
            for (i, r) in app.requests.iter().enumerate() {
                let style = if i == *selected {
                    theme::reversed()
                } else {
                    Style::new()
                };
                let when = app.zone.local(r.received_at_ms).format("%Y-%m-%d %H:%M");
                lines.push(Line::styled(
                    pad_to(
                        &format!("{} ({}) · {when}", r.name, r.from.short()),
                        inner.width as usize,
                    ),
                    style.patch(theme::bold()),
                ));
                if !r.message.is_empty() {
                    lines.push(Line::raw(format!("  “{}”", r.message)));
                }
                if let Some(old) = r.replaces {
                    lines.push(Line::styled(
                        format!(
                            "  ! claims to replace the key of {} — compare safety codes first",
                            app.name_of(&old)
                        ),
                        theme::error(),
                    ));
                }
            }
            frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), inner);
        }
        Popup::Contact { peer, mode } => {
            let area = centered(screen, wide, 17);
            let keys = match mode {
                ContactMode::View => "v verify · r rename · x remove · b block · Esc close",
                ContactMode::Rename(_) => "Enter save · Esc cancel",
                ContactMode::ConfirmRemove | ContactMode::ConfirmBlock => "y yes · any key no",
            };
            let contact = app.contacts.iter().find(|c| c.id == *peer);
            let name = contact.map_or_else(|| peer.short(), |c| c.name.clone());
            let inner = popup_frame(frame, area, &name, keys);
            let mut lines = vec![
                kv("Id", peer.to_string()),
                kv(
                    "State",
                    match contact.map(|c| c.state) {
                        Some(ContactState::Friend) => "friend",
                        Some(ContactState::RequestSent) => "request sent",
                        Some(ContactState::Declined) => "declined our request",
                        None => "not a contact",
                    }
                    .to_owned()
                        + if app.blocked.contains(peer) {
                            ", blocked"
                        } else {
                            ""
                        },
                ),
            ];
            if let Some(c) = contact {
                lines.push(kv(
                    "Path",
                    match &c.presence {
                        Presence::Online(info) => path_long(info),
                        Presence::Offline {
                            connecting: true, ..
                        } => "connecting…".to_owned(),
                        Presence::Offline { .. } => "offline".to_owned(),
                    },
                ));
                let addrs: Vec<String> = c.addrs.iter().map(ToString::to_string).collect();
                lines.push(kv("Addresses", addrs.join(", ")));
                lines.push(kv(
                    "Messages",
                    format!("{} unread, {} waiting for them", c.unread, c.undelivered),
                ));
                lines.push(kv(
                    "Verified",
                    if c.verified { "yes ✓" } else { "no" }.to_owned(),
                ));
            }
            lines.push(Line::raw(""));
            lines.push(Line::raw(
                "Safety code — compare it with theirs (read aloud, or side by side):",
            ));
            let code = app.backend.safety_code(peer);
            let groups: Vec<&str> = code.split(' ').collect();
            for half in groups.chunks(6) {
                lines.push(Line::styled(format!("  {}", half.join(" ")), theme::bold()));
            }
            lines.push(Line::raw(""));
            match mode {
                ContactMode::View => {}
                ContactMode::Rename(field) => lines.push(Line::from(vec![
                    Span::styled("New name: ", theme::bold()),
                    Span::raw(field.text().to_owned()),
                ])),
                ContactMode::ConfirmRemove => lines.push(Line::styled(
                    format!("Remove {name} and your whole conversation? y/n"),
                    theme::error(),
                )),
                ContactMode::ConfirmBlock => lines.push(Line::styled(
                    format!("Block {name}? Their messages and requests are dropped. y/n"),
                    theme::error(),
                )),
            }
            frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), inner);
        }
        Popup::Search {
            query,
            results,
            selected,
        } => {
            let area = centered(screen, wide, screen.height.saturating_sub(4).max(8));
            let inner = popup_frame(
                frame,
                area,
                "Search",
                "type words · ↑↓ choose · Enter open · Esc close",
            );
            let mut lines = vec![Line::from(vec![
                Span::styled("Find: ", theme::bold()),
                Span::raw(query.text().to_owned()),
            ])];
            match results {
                None => lines.push(Line::styled(
                    "Words match from their start, in every conversation.",
                    theme::dim(),
                )),
                Some(hits) if hits.is_empty() => {
                    lines.push(Line::styled("No messages found.", theme::dim()))
                }
                Some(hits) => {
                    lines.push(Line::styled(
                        format!("{} found, newest first:", hits.len()),
                        theme::dim(),
                    ));
                    let room = inner.height.saturating_sub(2) as usize;
                    let first = (*selected + 1).saturating_sub(room);
                    for (i, m) in hits.iter().enumerate().skip(first).take(room) {
                        let who = if m.outgoing {
                            format!("me→{}", app.name_of(&m.contact))
                        } else {
                            app.name_of(&m.contact)
                        };
                        let when = app.zone.local(m.sent_at_ms).format("%Y-%m-%d %H:%M");
                        let text = m.text.replace('\n', " ");
                        let style = if i == *selected {
                            theme::reversed()
                        } else {
                            Style::new()
                        };
                        lines.push(Line::styled(
                            pad_to(&format!("{when} {who}: {text}"), inner.width as usize),
                            style,
                        ));
                    }
                }
            }
            frame.render_widget(Paragraph::new(lines), inner);
            frame.set_cursor_position(Position::new(
                inner.x + 6 + query.layout(200).cursor_col as u16,
                inner.y,
            ));
        }
        Popup::Network => {
            let area = centered(screen, wide, screen.height.saturating_sub(2));
            let inner = popup_frame(frame, area, "Network test", "r refresh · Esc close");
            let lines = network_lines(app, app.report.as_ref());
            frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), inner);
        }
        Popup::Settings {
            settings,
            selected,
            editing,
        } => {
            let area = centered(screen, wide, 14);
            let keys = if editing.is_some() {
                "Enter save · Esc cancel"
            } else {
                "↑↓ choose · Enter edit/toggle · Esc close"
            };
            let inner = popup_frame(frame, area, "Settings", keys);
            let mut lines = Vec::new();
            for (i, label) in SETTINGS_ROWS.iter().enumerate() {
                let value = match (i, editing) {
                    (ROW_PASSPHRASE, Some(field)) if i == *selected => {
                        "•".repeat(field.text().chars().count())
                    }
                    (_, Some(field)) if i == *selected => field.text().to_owned(),
                    (ROW_PASSPHRASE, _) => "Enter to set or change (empty = none)".to_owned(),
                    _ => setting_text(settings, i),
                };
                let style = if i == *selected {
                    theme::reversed()
                } else {
                    Style::new()
                };
                lines.push(Line::styled(
                    pad_to(&format!("{label:<16} {value}"), inner.width as usize),
                    style,
                ));
            }
            lines.push(Line::raw(""));
            lines.push(Line::styled(
                "Changes are saved in the profile's settings.toml and take effect",
                theme::dim(),
            ));
            lines.push(Line::styled(
                "on the next start (the passphrase at once).",
                theme::dim(),
            ));
            frame.render_widget(Paragraph::new(lines), inner);
        }
    }
}

fn kv(key: &str, value: String) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!("{key:<10} "), theme::bold()),
        Span::raw(value),
    ])
}

/// Cuts `s` into rows of `width` characters (an invite code is ASCII).
fn chunk(s: &str, width: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    chars
        .chunks(width.max(1))
        .map(|c| c.iter().collect())
        .collect()
}

/// A QR code drawn with half blocks: each text row holds two module rows.
/// Black on white whatever the terminal's colours, with a quiet zone of
/// `quiet` modules.
pub fn qr_lines(qr: &QrMatrix, quiet: usize) -> Vec<Line<'static>> {
    let size = qr.width + 2 * quiet;
    let dark = |x: usize, y: usize| -> bool {
        if x < quiet || y < quiet || x >= quiet + qr.width || y >= quiet + qr.width {
            return false;
        }
        qr.dark[(y - quiet) * qr.width + (x - quiet)]
    };
    let style = Style::new().fg(Color::Black).bg(Color::White);
    let mut lines = Vec::new();
    for y in (0..size).step_by(2) {
        let row: String = (0..size)
            .map(|x| match (dark(x, y), dark(x, y + 1)) {
                (true, true) => '█',
                (true, false) => '▀',
                (false, true) => '▄',
                (false, false) => ' ',
            })
            .collect();
        lines.push(Line::from(Span::styled(row, style)));
    }
    lines
}

fn help_lines() -> Vec<Line<'static>> {
    let keys: &[(&str, &str)] = &[
        ("Enter", "send the message (or run the /command)"),
        ("Ctrl+J, Alt+Enter", "new line in the message"),
        (
            "Tab, Shift+Tab",
            "next / previous contact (in a /command: complete)",
        ),
        ("Ctrl+N, Ctrl+P", "next / previous contact"),
        ("Alt+1 … Alt+9", "jump to contact 1 … 9"),
        ("Alt+A", "next contact with unread messages"),
        (
            "PgUp, PgDn, ↑, ↓",
            "scroll the conversation (mouse wheel too)",
        ),
        ("Esc", "back to the newest message; close a popup"),
        ("Ctrl+F, F6", "search all conversations"),
        ("F1, ?", "this help"),
        (
            "F2",
            "contact details: safety code, verify, rename, remove, block",
        ),
        ("F3", "my invite (code and QR code)"),
        ("F4", "add a contact by invite code"),
        ("F5", "friend requests"),
        ("F7", "network test"),
        ("F8", "settings"),
        ("Ctrl+C, Ctrl+Q", "quit"),
    ];
    let mut lines = vec![Line::styled("Keys", theme::bold())];
    for (k, v) in keys {
        lines.push(Line::from(vec![
            Span::styled(format!("  {k:<20}"), theme::bold()),
            Span::raw(*v),
        ]));
    }
    lines.push(Line::raw(""));
    lines.push(Line::styled("Commands (Tab completes)", theme::bold()));
    for (c, args, what) in COMMANDS {
        lines.push(Line::from(vec![
            Span::styled(format!("  /{c} {args:<15}"), theme::bold()),
            Span::raw(*what),
        ]));
    }
    lines.push(Line::raw(""));
    lines.push(Line::styled("Delivery marks", theme::bold()));
    lines.push(Line::raw(
        "  … queued (on disk)   ✓ sent   ✓✓ delivered   ✓✓ (blue) read",
    ));
    lines.push(Line::raw(
        "  Contacts: ● online  ○ offline  ? request sent  ✗ declined  ⊘ blocked",
    ));
    lines.push(Line::raw(
        "  Mouse: click a contact, wheel scrolls; Shift+drag selects text to copy.",
    ));
    lines
}

fn network_lines(app: &App, report: Option<&NetworkReport>) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    let Some(r) = report else {
        lines.push(Line::styled("Measuring…", theme::dim()));
        return lines;
    };
    lines.push(kv("My id", r.id.to_string()));
    lines.push(Line::styled("Listening on", theme::bold()));
    if r.listeners.is_empty() {
        lines.push(Line::styled(
            "  nothing (no listener could start)",
            theme::error(),
        ));
    }
    for l in &r.listeners {
        lines.push(Line::raw(format!("  {l}")));
    }
    lines.push(Line::styled("My invite carries", theme::bold()));
    for a in &r.invite_addrs {
        lines.push(Line::raw(format!("  {a}")));
    }
    lines.push(Line::styled(
        format!("Connections ({})", r.connections.len()),
        theme::bold(),
    ));
    for (peer, info) in &r.connections {
        lines.push(Line::raw(format!(
            "  {:<12} {}",
            app.name_of(peer),
            path_long(info)
        )));
    }
    lines.push(Line::styled("Router", theme::bold()));
    let nat = &r.nat;
    lines.push(Line::raw(format!(
        "  NAT: {} (mapping {:?}, ports {:?})",
        nat_label(Some(r)),
        nat.mapping,
        nat.port_allocation
    )));
    if let Some(external) = nat.udp_external {
        lines.push(Line::raw(format!("  external UDP address: {external}")));
    }
    lines.push(Line::raw(match &nat.upnp {
        Some(m) => format!(
            "  UPnP: mapped by the gateway {} (udp {:?}, tcp {:?})",
            m.external_ip, m.udp, m.tcp
        ),
        None if app.upnp => "  UPnP: on, no mapping (yet)".to_owned(),
        None => "  UPnP: off".to_owned(),
    }));
    lines.push(Line::styled(
        "  (the full router probe comes with its own issue)",
        theme::dim(),
    ));
    lines
}
