//! The open conversation: its messages, their delivery states, the unread
//! marker, the typing notice and the input box.
//!
//! Only part of a conversation is loaded: the newest page when it opens,
//! then older pages, one at a time, when the view nears the top
//! ([`Action::LoadOlder`]; the worker reads them, the view stays where it
//! was). Messages are cut into display rows of one line each (at newlines,
//! and wrapped by an estimate of how many characters fit the width), so the
//! scroll area has rows of one height and lays out only the visible ones
//! (`ScrollArea::show_rows`). Rows are built when messages arrive (only
//! theirs); when the width changes they are re-wrapped newest first, a few
//! milliseconds a frame, while the old rows stay on screen, so no frame
//! does work in proportion to the history.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chat_core::{Cursor, Message, MessageId, MessageState, PeerId};
use chrono::{DateTime, FixedOffset, Local, Offset, TimeZone, Utc};

/// Older history is asked for when the view's top is this many rows from
/// the first loaded row.
const LOAD_OLDER_WITHIN: usize = 60;
/// Most time a frame spends re-wrapping rows after a resize (give or
/// take 64 messages).
const REWRAP_BUDGET: Duration = Duration::from_millis(2);

/// The next conversation view's number.
static NEXT_VIEW: AtomicU64 = AtomicU64::new(1);

/// Which clock message times are shown in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Zone {
    /// The machine's local time zone.
    #[default]
    Local,
    /// A fixed offset from UTC (tests).
    Fixed(FixedOffset),
}

impl Zone {
    /// Coordinated Universal Time.
    pub fn utc() -> Self {
        Zone::Fixed(Utc.fix())
    }

    /// "HH:MM" of a time in ms since the epoch, in this zone.
    pub fn clock(self, ms: i64) -> String {
        self.local(ms).format("%H:%M").to_string()
    }

    /// "Sat 28 Nov 2026, 14:03" of a time in ms since the epoch.
    pub fn date_time(self, ms: i64) -> String {
        self.local(ms).format("%a %-d %b %Y, %H:%M").to_string()
    }

    fn local(self, ms: i64) -> chrono::NaiveDateTime {
        let utc = DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
        match self {
            Zone::Local => Local.from_utc_datetime(&utc.naive_utc()).naive_local(),
            Zone::Fixed(offset) => offset.from_utc_datetime(&utc.naive_utc()).naive_local(),
        }
    }
}

/// What the conversation asks the app to do after a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this text.
    Send(String),
    /// We started (`true`) or stopped typing.
    Typing(bool),
    /// Load the page of history before this cursor.
    LoadOlder(Cursor),
}

/// One display row: part of a message's text, or the unread marker.
///
/// Messages are named by their position: the first loaded page counts
/// from 0, older pages go below 0, so loading one moves nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Row {
    /// "New messages" before the first unread message, at `before`.
    Marker { before: i64 },
    /// Bytes `start..end` of the message at `msg`; the `first` row of it
    /// shows the author, time and state.
    Text {
        msg: i64,
        start: u32,
        end: u32,
        first: bool,
    },
}

impl Row {
    /// The position of the message the row belongs to (rows are sorted
    /// by it).
    fn msg(&self) -> i64 {
        match *self {
            Row::Marker { before } => before,
            Row::Text { msg, .. } => msg,
        }
    }
}

/// A re-wrap in progress: rows at `width` for the messages from `from`
/// to the newest.
#[derive(Debug)]
struct Rewrap {
    width: usize,
    from: i64,
    rows: VecDeque<Row>,
}

/// Where the view was in the last frame.
#[derive(Debug, Default, Clone, Copy)]
struct ScrollMemo {
    offset: f32,
    height: f32,
    at_bottom: bool,
    top_row: usize,
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
    /// The clock times are shown in.
    pub zone: Zone,
    messages: VecDeque<Message>,
    /// Position of `messages[0]`.
    first: i64,
    index: HashMap<MessageId, i64>,
    /// Where the next older page starts; `None` once the start is loaded.
    older: Option<Cursor>,
    /// An older page was asked for and has not arrived.
    loading_older: bool,
    /// Position of the first message that was unread when the
    /// conversation opened.
    marker_before: Option<i64>,
    rows: VecDeque<Row>,
    rows_width_chars: usize,
    rewrap: Option<Rewrap>,
    /// The frame that had its slice of re-wrapping.
    rewrapped_in: Option<u64>,
    /// Rows added above the view since the last frame.
    rows_added_above: usize,
    /// A scroll offset to apply in the next frame.
    set_offset: Option<f32>,
    scroll: ScrollMemo,
    /// The rows were drawn once (the first frame has the view at the top;
    /// it sticks to the bottom from the next one).
    settled: bool,
    /// Names the scroll area: a conversation opens at its bottom, not
    /// where the last one was.
    view: u64,
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
            view: NEXT_VIEW.fetch_add(1, Ordering::Relaxed),
            ..Self::default()
        }
    }

    /// The newest page of the history arrived (oldest first); `older`
    /// fetches the page before it; `unread` incoming messages at its end
    /// are new.
    pub fn set_history(&mut self, messages: Vec<Message>, older: Option<Cursor>, unread: u64) {
        self.index = messages
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id, i as i64))
            .collect();
        self.first = 0;
        self.marker_before = None;
        if unread > 0 {
            let mut left = unread;
            for (i, m) in messages.iter().enumerate().rev() {
                if !m.outgoing && m.state != MessageState::Read {
                    // The oldest unread one loaded, if not all are.
                    self.marker_before = Some(i as i64);
                    left -= 1;
                    if left == 0 {
                        break;
                    }
                }
            }
        }
        self.messages = messages.into();
        self.older = older;
        self.loading_older = false;
        self.loaded = true;
        self.rows.clear();
        self.rows_width_chars = 0;
        self.rewrap = None;
        self.rows_added_above = 0;
        self.set_offset = None;
        self.settled = false;
    }

    /// An older page arrived (oldest first): it goes above what is loaded,
    /// and the view stays on the messages it showed.
    pub fn prepend(&mut self, messages: Vec<Message>, older: Option<Cursor>) {
        self.loading_older = false;
        self.older = older;
        let old_first = self.first;
        for message in messages.into_iter().rev() {
            if self.index.contains_key(&message.id) {
                continue;
            }
            self.first -= 1;
            self.index.insert(message.id, self.first);
            self.messages.push_front(message);
        }
        if self.rows_width_chars > 0 {
            let added = self.rows_for(self.first, old_first, self.rows_width_chars);
            self.rows_added_above += added.len();
            for row in added.into_iter().rev() {
                self.rows.push_front(row);
            }
        }
    }

    /// Whether older history is waiting to be loaded.
    pub fn has_older(&self) -> bool {
        self.older.is_some()
    }

    /// Whether an older page was asked for and has not arrived.
    pub fn loading_older(&self) -> bool {
        self.loading_older
    }

    /// The cursor of the next older page, marking it asked for; `None`
    /// when there is none or it is on its way.
    pub fn take_older(&mut self) -> Option<Cursor> {
        if self.loading_older {
            return None;
        }
        let cursor = self.older?;
        self.loading_older = true;
        Some(cursor)
    }

    /// A message arrived or was sent (ignored if already shown).
    pub fn push(&mut self, message: Message) {
        if self.index.contains_key(&message.id) {
            return;
        }
        let at = self.first + self.messages.len() as i64;
        self.index.insert(message.id, at);
        self.messages.push_back(message);
        if self.rows_width_chars > 0 {
            let rows = self.rows_for(at, at + 1, self.rows_width_chars);
            self.rows.extend(rows);
        }
        if let Some(rewrap) = &self.rewrap {
            let rows = self.rows_for(at, at + 1, rewrap.width);
            if let Some(rewrap) = &mut self.rewrap {
                rewrap.rows.extend(rows);
            }
        }
    }

    /// An outgoing message moved on.
    pub fn set_state(&mut self, id: &MessageId, state: MessageState) {
        if let Some(&at) = self.index.get(id) {
            let i = (at - self.first) as usize;
            let m = &mut self.messages[i];
            // States only move forward; a late "sent" never undoes "delivered".
            if state > m.state {
                m.state = state;
            }
        }
    }

    /// The loaded messages, oldest first.
    pub fn messages(&self) -> &VecDeque<Message> {
        &self.messages
    }

    /// The state of a message, if loaded.
    pub fn state_of(&self, id: &MessageId) -> Option<MessageState> {
        self.index.get(id).map(|&at| self.message(at).state)
    }

    /// Whether the unread marker is shown.
    pub fn has_unread_marker(&self) -> bool {
        self.marker_before.is_some()
    }

    fn message(&self, at: i64) -> &Message {
        &self.messages[(at - self.first) as usize]
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
        egui::CentralPanel::default().show_inside(ui, |ui| self.messages_ui(ui, me, &mut actions));
        actions
    }

    fn input_ui(&mut self, ui: &mut egui::Ui, actions: &mut Vec<Action>) {
        ui.add_space(4.0);
        let mut send = false;
        // Right to left: the button keeps its place, the box takes the rest.
        // (Aligned to the top: centring would fill the panel's height, and
        // the panel would grow a little every frame.)
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Min), |ui| {
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

    fn messages_ui(&mut self, ui: &mut egui::Ui, me: &str, actions: &mut Vec<Action>) {
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
        // What `show_rows` moves per row.
        let stride = row_height + ui.spacing().item_spacing.y;
        let char_width = ui.fonts_mut(|f| f.glyph_width(&body, 'n')).max(1.0);
        // The author and time column is a fixed part of each row.
        let prefix_chars = 18;
        let width_chars = ((ui.available_width() / char_width) as usize)
            .saturating_sub(prefix_chars + 6)
            .max(16);
        // One slice of re-wrapping a frame, however many passes egui makes
        // of it (a resize takes two).
        let frame = ui.ctx().cumulative_frame_nr();
        let deadline = if self.rewrapped_in == Some(frame) {
            Instant::now()
        } else {
            self.rewrapped_in = Some(frame);
            Instant::now() + REWRAP_BUDGET
        };
        self.fit_width(width_chars, deadline, stride);
        let prefix_width = char_width * prefix_chars as f32;

        let added = std::mem::take(&mut self.rows_added_above);
        // Page Up / Page Down scroll by a page (Ctrl+Home / Ctrl+End to
        // the ends of what is loaded), as in a document.
        let page = (self.scroll.height - stride).max(stride);
        let key = ui.input_mut(|i| {
            let ctrl = egui::Modifiers::COMMAND;
            if i.consume_key(egui::Modifiers::NONE, egui::Key::PageUp) {
                Some(self.scroll.offset - page)
            } else if i.consume_key(egui::Modifiers::NONE, egui::Key::PageDown) {
                Some(self.scroll.offset + page)
            } else if i.consume_key(ctrl, egui::Key::Home) {
                Some(0.0)
            } else if i.consume_key(ctrl, egui::Key::End) {
                Some(f32::MAX)
            } else {
                None
            }
        });
        let set = self.set_offset.take();
        let offset = match (key, set) {
            (Some(offset), _) | (None, Some(offset)) => Some(offset),
            (None, None) if added > 0 && !self.scroll.at_bottom => {
                Some(self.scroll.offset + added as f32 * stride)
            }
            (None, None) => None,
        };
        // The view sticks to the newest message while it is at the bottom
        // (egui notes that at the end of each frame); a frame that moves it
        // elsewhere must not stick, or it would be pulled back down.
        let mut area = egui::ScrollArea::vertical()
            .id_salt(("messages", self.view))
            .auto_shrink([false, false])
            .stick_to_bottom(offset.is_none());
        if let Some(offset) = offset {
            let max = (self.rows.len() as f32 * stride - self.scroll.height).max(0.0);
            area = area.vertical_scroll_offset(offset.clamp(0.0, max));
        }
        let output = area.show_rows(ui, row_height, self.rows.len(), |ui, range| {
            for row in self.rows.range(range.clone()) {
                self.row_ui(ui, *row, me, prefix_width);
            }
            range
        });
        let visible = output.inner;
        self.scroll = ScrollMemo {
            offset: output.state.offset.y,
            height: output.inner_rect.height(),
            at_bottom: output.state.offset.y + output.inner_rect.height()
                >= output.content_size.y - stride,
            top_row: visible.start,
        };
        if !std::mem::replace(&mut self.settled, true) {
            return;
        }
        if visible.start < LOAD_OLDER_WITHIN
            && let Some(cursor) = self.take_older()
        {
            actions.push(Action::LoadOlder(cursor));
        }
    }

    /// Makes the rows fit `width` characters: at once when there are none
    /// (what is loaded when a conversation opens is one page), else by a
    /// re-wrap that works until `deadline` each call and replaces the rows
    /// when done, keeping the top row's message in view (`stride`: the
    /// height of a row).
    fn fit_width(&mut self, width: usize, deadline: Instant, stride: f32) {
        if self.rows_width_chars == 0 {
            self.rows = self.rows_for(self.first, self.end(), width).into();
            self.rows_width_chars = width;
            return;
        }
        if width == self.rows_width_chars {
            self.rewrap = None;
            return;
        }
        let mut rewrap = match self.rewrap.take() {
            Some(r) if r.width == width => r,
            _ => Rewrap {
                width,
                from: self.end(),
                rows: VecDeque::new(),
            },
        };
        let mut n = 0u32;
        while rewrap.from > self.first {
            let at = rewrap.from - 1;
            for row in self.rows_for(at, at + 1, width).into_iter().rev() {
                rewrap.rows.push_front(row);
            }
            rewrap.from = at;
            n += 1;
            if n.is_multiple_of(64) && Instant::now() >= deadline {
                self.rewrap = Some(rewrap);
                return;
            }
        }
        // Done: the message at the top of the view keeps its place.
        if !self.scroll.at_bottom
            && let Some(top) = self.rows.get(self.scroll.top_row)
        {
            let msg = top.msg();
            let row = rewrap.rows.partition_point(|r| r.msg() < msg);
            self.set_offset = Some(row as f32 * stride);
        }
        self.rows = rewrap.rows;
        self.rows_width_chars = width;
        self.rows_added_above = 0;
    }

    /// Position after the newest message.
    fn end(&self) -> i64 {
        self.first + self.messages.len() as i64
    }

    /// The rows of the messages at `from..to`, with the unread marker.
    fn rows_for(&self, from: i64, to: i64, width: usize) -> Vec<Row> {
        let mut rows = Vec::with_capacity((to - from).max(0) as usize);
        for at in from..to {
            if self.marker_before == Some(at) {
                rows.push(Row::Marker { before: at });
            }
            append_rows(&mut rows, &self.message(at).text, at, width);
        }
        rows
    }

    fn row_ui(&self, ui: &mut egui::Ui, row: Row, me: &str, prefix_width: f32) {
        match row {
            Row::Marker { .. } => {
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
                let m = self.message(msg);
                let text = &m.text[start as usize..end as usize];
                // Ids that follow the row, not its place on screen: a text
                // selection stays with its message while rows scroll by.
                ui.push_id((msg, start), |ui| {
                    ui.horizontal(|ui| {
                        let (rect, response) = ui.allocate_exact_size(
                            egui::vec2(prefix_width, ui.spacing().interact_size.y.min(18.0)),
                            egui::Sense::hover(),
                        );
                        if first {
                            let who = if m.outgoing { me } else { &self.contact_name };
                            let prefix =
                                format!("{} {}", self.zone.clock(m.sent_at_ms), short(who, 10));
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
                            // The day, and when it arrived, on hover.
                            response.on_hover_ui(|ui| {
                                ui.label(self.zone.date_time(m.sent_at_ms));
                                if let Some(at) = m.received_at_ms {
                                    ui.weak(format!("received {}", self.zone.date_time(at)));
                                }
                            });
                        }
                        ui.add(egui::Label::new(text).truncate());
                        if first && m.outgoing {
                            let (mark, tip) = state_mark(m.state);
                            ui.weak(mark).on_hover_text(tip);
                        }
                    })
                });
            }
        }
    }

    /// How many display rows the conversation has (for tests and benches).
    pub fn row_count(&self) -> usize {
        self.rows.len()
    }

    /// Whether rows are being re-wrapped to a new width.
    pub fn rewrapping(&self) -> bool {
        self.rewrap.is_some()
    }

    /// The first line of the message at the top of the view in the last
    /// frame (for tests).
    pub fn top_text(&self) -> Option<&str> {
        let row = self.rows.get(self.scroll.top_row)?;
        let text = &self.message(row.msg()).text;
        text.lines().next()
    }
}

/// Appends the rows of message `at` with `text`: one per line, long lines
/// wrapped at a word boundary near `width` characters.
fn append_rows(rows: &mut Vec<Row>, text: &str, at: i64, width: usize) {
    let mut first = true;
    let mut line_start = 0;
    for line in text.split('\n') {
        let base = line_start;
        line_start += line.len() + 1;
        let mut from = 0;
        loop {
            let rest = &line[from..];
            let cut = match rest.char_indices().nth(width) {
                None => rest.len(),
                Some((hard, _)) => rest[..hard].rfind(' ').map_or(hard, |space| space + 1),
            };
            rows.push(Row::Text {
                msg: at,
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
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&i.to_be_bytes());
        Message {
            id: MessageId(id),
            contact: some_peer(),
            outgoing: false,
            seq: i,
            sent_at_ms: 0,
            received_at_ms: None,
            text: text.to_owned(),
            state: MessageState::Delivered,
        }
    }

    fn texts(c: &Conversation) -> Vec<String> {
        c.rows
            .iter()
            .map(|r| match *r {
                Row::Text {
                    msg, start, end, ..
                } => c.message(msg).text[start as usize..end as usize].to_owned(),
                Row::Marker { .. } => "marker".to_owned(),
            })
            .collect()
    }

    fn cursor(seq: u64) -> Cursor {
        Cursor {
            seq,
            outgoing: false,
            id: message(seq, "").id,
        }
    }

    #[test]
    fn rows_split_lines_and_wrap_long_ones_at_spaces() {
        let mut c = Conversation::default();
        c.set_history(
            vec![message(1, "a\nbb"), message(2, "one two three four")],
            None,
            0,
        );
        c.fit_width(9, Instant::now(), 20.0);
        assert_eq!(texts(&c), ["a", "bb", "one two ", "three ", "four"]);
    }

    #[test]
    fn wrapping_never_splits_a_character() {
        let mut rows = Vec::new();
        append_rows(&mut rows, &"é".repeat(25), 0, 10);
        assert_eq!(rows.len(), 3);
    }

    #[test]
    fn the_unread_marker_sits_before_the_first_unread_message() {
        let mut c = Conversation::default();
        let mut read = message(1, "old");
        read.state = MessageState::Read;
        c.set_history(vec![read, message(2, "new"), message(3, "newer")], None, 2);
        assert_eq!(c.marker_before, Some(1));
        c.fit_width(40, Instant::now(), 20.0);
        assert_eq!(texts(&c), ["old", "marker", "new", "newer"]);
        assert_eq!(c.row_count(), 4);
    }

    #[test]
    fn older_pages_go_above_and_count_the_rows_they_add() {
        let mut c = Conversation::default();
        c.set_history(
            vec![message(10, "ten"), message(11, "eleven")],
            Some(cursor(10)),
            0,
        );
        c.fit_width(40, Instant::now(), 20.0);
        assert_eq!(c.take_older(), Some(cursor(10)));
        // Asked once until the page arrives.
        assert_eq!(c.take_older(), None);
        c.prepend(vec![message(8, "eight\nlines"), message(9, "nine")], None);
        assert_eq!(texts(&c), ["eight", "lines", "nine", "ten", "eleven"]);
        assert_eq!(c.rows_added_above, 3);
        assert!(!c.has_older());
        assert_eq!(c.take_older(), None);
        // State changes and new messages still find their message.
        c.push(message(12, "twelve"));
        c.set_state(&message(8, "").id, MessageState::Read);
        assert_eq!(c.state_of(&message(8, "").id), Some(MessageState::Read));
        let seqs: Vec<u64> = c.messages().iter().map(|m| m.seq).collect();
        assert_eq!(seqs, [8, 9, 10, 11, 12]);
        assert_eq!(texts(&c).last().unwrap(), "twelve");
    }

    #[test]
    fn a_new_width_is_wrapped_a_slice_at_a_time_and_keeps_the_top_message() {
        let mut c = Conversation::default();
        let messages = (0..1000)
            .map(|i| message(i, &format!("m{i} one two three four five")))
            .collect();
        c.set_history(messages, None, 0);
        c.fit_width(100, Instant::now(), 10.0);
        assert_eq!(c.row_count(), 1000);
        c.scroll = ScrollMemo {
            offset: 500.0,
            height: 300.0,
            at_bottom: false,
            top_row: 500,
        };
        // A past deadline: one slice of messages per call; the old rows stay.
        c.fit_width(16, Instant::now(), 10.0);
        assert!(c.rewrapping());
        assert_eq!(c.row_count(), 1000);
        assert_eq!(c.rewrap.as_ref().unwrap().from, 1000 - 64);
        // A message arriving meanwhile is in both.
        c.push(message(1000, "late"));
        assert_eq!(c.row_count(), 1001);
        let mut calls = 1;
        while c.rewrapping() {
            c.fit_width(16, Instant::now(), 10.0);
            calls += 1;
            assert!(calls < 100);
        }
        assert!(calls > 2);
        // "m500 one two " / "three four five": two rows each now.
        assert_eq!(c.row_count(), 2001);
        assert_eq!(c.set_offset, Some(10_000.0));
        assert_eq!(texts(&c)[1000], "m500 one two ");
        assert_eq!(texts(&c)[1001], "three four five");
        assert_eq!(texts(&c)[2000], "late");
    }

    #[test]
    fn times_are_shown_in_the_given_zone() {
        // 2023-11-14 22:13:20 UTC.
        let ms = 1_700_000_000_000;
        assert_eq!(Zone::utc().clock(ms), "22:13");
        let plus_two = FixedOffset::east_opt(2 * 3600).unwrap();
        assert_eq!(Zone::Fixed(plus_two).clock(ms), "00:13");
        // The next day there.
        assert_eq!(
            Zone::Fixed(plus_two).date_time(ms),
            "Wed 15 Nov 2023, 00:13"
        );
        assert_eq!(Zone::utc().date_time(ms), "Tue 14 Nov 2023, 22:13");
        let minus_five_thirty = FixedOffset::west_opt(5 * 3600 + 1800).unwrap();
        assert_eq!(Zone::Fixed(minus_five_thirty).clock(ms), "16:43");
        assert_eq!(Conversation::default().zone, Zone::Local);
    }
}
