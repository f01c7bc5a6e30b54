//! The open conversation: its messages, their delivery states, the unread
//! marker, the typing notice and the input box.
//!
//! Messages are cut into display rows of one line each (at newlines, and
//! wrapped by an estimate of how many characters fit the width), so the
//! scroll area has rows of one height and lays out only the visible ones
//! (`ScrollArea::show_rows`): a conversation of 100,000 messages costs the
//! same per frame as one of ten. Rows are rebuilt only when the width
//! changes or messages arrive.

use std::collections::HashMap;

use chat_core::{Message, MessageId, MessageState, PeerId};

/// What the conversation asks the app to do after a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this text.
    Send(String),
    /// We started (`true`) or stopped typing.
    Typing(bool),
}

/// One display row: part of a message's text, or the unread marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Row {
    /// "New messages" before the first unread message.
    Marker,
    /// Bytes `start..end` of message `msg`; `first` row of it shows the
    /// author, time and state.
    Text {
        msg: u32,
        start: u32,
        end: u32,
        first: bool,
    },
}

/// The conversation panel's state.
#[derive(Debug, Default)]
pub struct Conversation {
    /// Whose conversation.
    pub contact: Option<PeerId>,
    /// Their name, for the author column.
    pub contact_name: String,
    /// Whether the history arrived.
    pub loaded: bool,
    messages: Vec<Message>,
    index: HashMap<MessageId, usize>,
    /// Index of the first message that was unread when the conversation
    /// opened.
    marker_before: Option<usize>,
    rows: Vec<Row>,
    rows_width_chars: usize,
    /// Whether they are typing.
    pub typing: bool,
    /// The text being written.
    pub input: String,
    we_are_typing: bool,
}

impl Conversation {
    /// An empty conversation with `contact`, waiting for its history.
    pub fn open(contact: PeerId, name: &str) -> Self {
        Self {
            contact: Some(contact),
            contact_name: name.to_owned(),
            ..Self::default()
        }
    }

    /// The history arrived; `unread` incoming messages at its end are new.
    pub fn set_history(&mut self, messages: Vec<Message>, unread: u64) {
        self.index = messages
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id, i))
            .collect();
        self.marker_before = None;
        if unread > 0 {
            let mut left = unread;
            for (i, m) in messages.iter().enumerate().rev() {
                if !m.outgoing && m.state != MessageState::Read {
                    left -= 1;
                    if left == 0 {
                        self.marker_before = Some(i);
                        break;
                    }
                }
            }
        }
        self.messages = messages;
        self.loaded = true;
        self.rows.clear();
        self.rows_width_chars = 0;
    }

    /// A message arrived or was sent (ignored if already shown).
    pub fn push(&mut self, message: Message) {
        if self.index.contains_key(&message.id) {
            return;
        }
        let at = self.messages.len();
        self.index.insert(message.id, at);
        self.messages.push(message);
        if self.rows_width_chars > 0 {
            append_rows(&mut self.rows, &self.messages, at, self.rows_width_chars);
        }
    }

    /// An outgoing message moved on.
    pub fn set_state(&mut self, id: &MessageId, state: MessageState) {
        if let Some(&i) = self.index.get(id) {
            let m = &mut self.messages[i];
            // States only move forward; a late "sent" never undoes "delivered".
            if state > m.state {
                m.state = state;
            }
        }
    }

    /// The messages shown, oldest first.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// The state of a message, if shown.
    pub fn state_of(&self, id: &MessageId) -> Option<MessageState> {
        self.index.get(id).map(|&i| self.messages[i].state)
    }

    /// Whether the unread marker is shown.
    pub fn has_unread_marker(&self) -> bool {
        self.marker_before.is_some()
    }

    /// Draws the conversation into the central panel; returns what the
    /// user asked for.
    pub fn ui(&mut self, ui: &mut egui::Ui, me: &str) -> Vec<Action> {
        let mut actions = Vec::new();
        egui::TopBottomPanel::bottom("input")
            .resizable(false)
            .show_inside(ui, |ui| self.input_ui(ui, &mut actions));
        if self.typing {
            egui::TopBottomPanel::bottom("typing")
                .show_separator_line(false)
                .show_inside(ui, |ui| {
                    ui.weak(format!("{} is typing…", self.contact_name));
                });
        }
        egui::CentralPanel::default().show_inside(ui, |ui| self.messages_ui(ui, me));
        actions
    }

    fn input_ui(&mut self, ui: &mut egui::Ui, actions: &mut Vec<Action>) {
        ui.add_space(4.0);
        let mut send = false;
        // Right to left: the button keeps its place, the box takes the rest.
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            if ui.button("Send").clicked() {
                send = true;
            }
            let edit = egui::TextEdit::multiline(&mut self.input)
                .id_salt("message input")
                .hint_text("Write a message (Enter sends, Shift+Enter for a new line)")
                .desired_rows(2)
                .desired_width(ui.available_width())
                .return_key(egui::KeyboardShortcut::new(
                    egui::Modifiers::SHIFT,
                    egui::Key::Enter,
                ));
            let response = ui.add(edit);
            if response.has_focus()
                && ui.input(|i| i.key_pressed(egui::Key::Enter) && !i.modifiers.shift)
            {
                send = true;
            }
        });
        ui.add_space(4.0);
        let typing_now = !self.input.trim().is_empty();
        if send {
            let text = self.input.trim_end().to_owned();
            if !text.trim().is_empty() {
                actions.push(Action::Send(text));
                self.input.clear();
            }
        }
        let typing_now = typing_now && !send;
        if typing_now != self.we_are_typing {
            self.we_are_typing = typing_now;
            actions.push(Action::Typing(typing_now));
        }
    }

    fn messages_ui(&mut self, ui: &mut egui::Ui, me: &str) {
        if !self.loaded {
            ui.centered_and_justified(|ui| ui.spinner());
            return;
        }
        if self.messages.is_empty() {
            ui.centered_and_justified(|ui| {
                ui.weak("No messages yet. Say hello!");
            });
            return;
        }
        let body = egui::TextStyle::Body.resolve(ui.style());
        let row_height = ui.fonts_mut(|f| f.row_height(&body));
        let char_width = ui.fonts_mut(|f| f.glyph_width(&body, 'n')).max(1.0);
        // The author and time column is a fixed part of each row.
        let prefix_chars = 18;
        let width_chars = ((ui.available_width() / char_width) as usize)
            .saturating_sub(prefix_chars + 6)
            .max(16);
        if width_chars != self.rows_width_chars {
            self.rebuild_rows(width_chars);
        }
        let prefix_width = char_width * prefix_chars as f32;
        egui::ScrollArea::vertical()
            .auto_shrink([false, false])
            .stick_to_bottom(true)
            .show_rows(ui, row_height, self.rows.len(), |ui, range| {
                for row in &self.rows[range] {
                    self.row_ui(ui, *row, me, prefix_width);
                }
            });
    }

    fn row_ui(&self, ui: &mut egui::Ui, row: Row, me: &str, prefix_width: f32) {
        match row {
            Row::Marker => {
                ui.horizontal(|ui| {
                    ui.colored_label(ui.visuals().warn_fg_color, "— new messages —");
                });
            }
            Row::Text {
                msg,
                start,
                end,
                first,
            } => {
                let m = &self.messages[msg as usize];
                let text = &m.text[start as usize..end as usize];
                ui.horizontal(|ui| {
                    let (rect, _) = ui.allocate_exact_size(
                        egui::vec2(prefix_width, ui.spacing().interact_size.y.min(18.0)),
                        egui::Sense::hover(),
                    );
                    if first {
                        let who = if m.outgoing { me } else { &self.contact_name };
                        let prefix = format!("{} {}", clock(m.sent_at_ms), short(who, 10));
                        let color = if m.outgoing {
                            ui.visuals().hyperlink_color
                        } else {
                            ui.visuals().strong_text_color()
                        };
                        ui.painter().text(
                            rect.left_center(),
                            egui::Align2::LEFT_CENTER,
                            prefix,
                            egui::TextStyle::Body.resolve(ui.style()),
                            color,
                        );
                    }
                    ui.add(egui::Label::new(text).truncate());
                    if first && m.outgoing {
                        let (mark, tip) = state_mark(m.state);
                        ui.weak(mark).on_hover_text(tip);
                    }
                });
            }
        }
    }

    fn rebuild_rows(&mut self, width_chars: usize) {
        self.rows.clear();
        self.rows.reserve(self.messages.len() + 1);
        self.rows_width_chars = width_chars;
        for i in 0..self.messages.len() {
            if self.marker_before == Some(i) {
                self.rows.push(Row::Marker);
            }
            append_rows(&mut self.rows, &self.messages, i, width_chars);
        }
    }

    /// How many display rows the conversation has (for tests and benches).
    pub fn row_count(&self) -> usize {
        self.rows.len()
    }
}

/// Appends message `i`'s rows: one per line, long lines wrapped at a word
/// boundary near `width` characters.
fn append_rows(rows: &mut Vec<Row>, messages: &[Message], i: usize, width: usize) {
    let text = &messages[i].text;
    let mut first = true;
    let mut line_start = 0;
    for line in text.split('\n') {
        let base = line_start;
        line_start += line.len() + 1;
        let mut from = 0;
        loop {
            let rest = &line[from..];
            let cut = if rest.chars().count() <= width {
                rest.len()
            } else {
                let hard = rest
                    .char_indices()
                    .nth(width)
                    .map_or(rest.len(), |(at, _)| at);
                rest[..hard].rfind(' ').map_or(hard, |space| space + 1)
            };
            rows.push(Row::Text {
                msg: i as u32,
                start: (base + from) as u32,
                end: (base + from + cut) as u32,
                first,
            });
            first = false;
            from += cut;
            if from >= line.len() {
                break;
            }
        }
    }
}

/// The mark shown after an outgoing message, and its explanation.
pub fn state_mark(state: MessageState) -> (&'static str, &'static str) {
    match state {
        MessageState::Queued => ("⏳", "queued: waiting for a connection"),
        MessageState::Sent => ("✔", "sent, not yet acknowledged"),
        MessageState::Delivered => ("✔✔", "delivered"),
        MessageState::Read => ("👁", "read"),
    }
}

/// "HH:MM" (UTC) of a time in ms since the epoch.
fn clock(ms: i64) -> String {
    let minutes = ms.div_euclid(60_000);
    format!(
        "{:02}:{:02}",
        minutes.div_euclid(60).rem_euclid(24),
        minutes.rem_euclid(60)
    )
}

/// `name` cut to `max` characters.
fn short(name: &str, max: usize) -> String {
    if name.chars().count() <= max {
        name.to_owned()
    } else {
        let mut s: String = name.chars().take(max - 1).collect();
        s.push('…');
        s
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn some_peer() -> PeerId {
        (0u8..=255)
            .find_map(|b| PeerId::from_bytes([b; 32]).ok())
            .unwrap()
    }

    fn message(i: u64, text: &str) -> Message {
        Message {
            id: MessageId([i as u8; 16]),
            contact: some_peer(),
            outgoing: false,
            seq: i,
            sent_at_ms: 0,
            received_at_ms: None,
            text: text.to_owned(),
            state: MessageState::Delivered,
        }
    }

    #[test]
    fn rows_split_lines_and_wrap_long_ones_at_spaces() {
        let messages = vec![message(1, "a\nbb"), message(2, "one two three four")];
        let mut rows = Vec::new();
        append_rows(&mut rows, &messages, 0, 10);
        append_rows(&mut rows, &messages, 1, 9);
        let texts: Vec<&str> = rows
            .iter()
            .map(|r| match *r {
                Row::Text {
                    msg, start, end, ..
                } => &messages[msg as usize].text[start as usize..end as usize],
                Row::Marker => "marker",
            })
            .collect();
        assert_eq!(texts, ["a", "bb", "one two ", "three ", "four"]);
    }

    #[test]
    fn wrapping_never_splits_a_character() {
        let messages = vec![message(1, &"é".repeat(25))];
        let mut rows = Vec::new();
        append_rows(&mut rows, &messages, 0, 10);
        assert_eq!(rows.len(), 3);
    }

    #[test]
    fn the_unread_marker_sits_before_the_first_unread_message() {
        let mut c = Conversation::default();
        let mut read = message(1, "old");
        read.state = MessageState::Read;
        c.set_history(vec![read, message(2, "new"), message(3, "newer")], 2);
        assert_eq!(c.marker_before, Some(1));
        c.rebuild_rows(40);
        assert_eq!(c.rows[1], Row::Marker);
        assert_eq!(c.row_count(), 4);
    }
}
