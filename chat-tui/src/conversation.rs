//! One open conversation: the loaded part of its history, the scroll
//! position, and how each message is laid out into rows.
//!
//! Scrolling is anchored at the bottom of the view: `(message index, rows
//! of that message hidden below the view)`, or "follow the newest". Drawing
//! walks up from the anchor only as far as the view is tall, so a frame
//! costs the same at the top of a 100,000-message history as at its end.
//! Older pages are loaded by the app when the anchor nears the first
//! loaded message.

use std::collections::VecDeque;

use chat_core::{Cursor, HistoryPage, Message, MessageId, MessageState, PeerId};
use chrono::{DateTime, Datelike, FixedOffset, Local, NaiveDateTime, Offset, TimeZone, Utc};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use crate::theme;

/// Which clock messages are shown in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    /// The machine's local time zone.
    Local,
    /// A fixed offset (tests use UTC).
    Fixed(FixedOffset),
}

impl Zone {
    /// Coordinated Universal Time (what tests render in).
    pub fn utc() -> Self {
        Zone::Fixed(Utc.fix())
    }

    /// A Unix time in milliseconds as a local date and time.
    pub fn local(self, ms: i64) -> NaiveDateTime {
        let utc = DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
        match self {
            Zone::Local => Local.from_utc_datetime(&utc.naive_utc()).naive_local(),
            Zone::Fixed(offset) => offset.from_utc_datetime(&utc.naive_utc()).naive_local(),
        }
    }
}

/// What the rows of a conversation need besides the messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowContext<'a> {
    /// Our name.
    pub(crate) me: &'a str,
    /// Their name.
    pub(crate) them: &'a str,
    /// The clock.
    pub(crate) zone: Zone,
    /// Width of the view in cells.
    pub(crate) width: usize,
}

/// The state marker shown before an outgoing message.
pub(crate) fn state_marker(state: MessageState) -> &'static str {
    match state {
        MessageState::Queued => "… ",
        MessageState::Sent => "✓ ",
        MessageState::Delivered => "✓✓",
        MessageState::Read => "✓✓",
    }
}

/// The state in words.
pub(crate) fn state_word(state: MessageState) -> &'static str {
    match state {
        MessageState::Queued => "queued",
        MessageState::Sent => "sent",
        MessageState::Delivered => "delivered",
        MessageState::Read => "read",
    }
}

/// The loaded part of one conversation and where the view is.
#[derive(Debug, Clone)]
pub struct Conversation {
    /// Whose conversation.
    pub contact: PeerId,
    messages: VecDeque<Message>,
    older: Option<Cursor>,
    unread_from: Option<MessageId>,
    anchor: Option<(usize, usize)>,
    highlight: Option<MessageId>,
}

impl Conversation {
    /// A conversation from its newest page; `unread` incoming messages at
    /// the end get the "new messages" marker before them.
    pub(crate) fn new(contact: PeerId, page: HistoryPage, unread: u64) -> Self {
        let mut conv = Self {
            contact,
            messages: page.messages.into(),
            older: page.older,
            unread_from: None,
            anchor: None,
            highlight: None,
        };
        conv.set_unread_marker(unread);
        conv
    }

    fn set_unread_marker(&mut self, unread: u64) {
        if unread == 0 {
            return;
        }
        let mut left = unread;
        for m in self.messages.iter().rev() {
            if !m.outgoing {
                left -= 1;
                if left == 0 {
                    self.unread_from = Some(m.id);
                    return;
                }
            }
        }
        // More unread than loaded: the marker sits above the first loaded.
        self.unread_from = self.messages.front().map(|m| m.id);
    }

    /// The loaded messages, oldest first.
    pub fn messages(&self) -> &VecDeque<Message> {
        &self.messages
    }

    /// Whether older messages exist that are not loaded.
    pub fn older(&self) -> Option<Cursor> {
        self.older
    }

    /// Whether the view follows the newest message.
    pub fn following(&self) -> bool {
        self.anchor.is_none()
    }

    /// The message shown highlighted (a search hit).
    pub fn highlight(&self) -> Option<MessageId> {
        self.highlight
    }

    /// Whether the view is close enough to the oldest loaded message that
    /// the app should load the page before it.
    pub(crate) fn wants_older(&self) -> bool {
        self.older.is_some() && matches!(self.anchor, Some((i, _)) if i < 100)
    }

    /// Puts an older page in front of the loaded messages.
    pub(crate) fn prepend(&mut self, page: HistoryPage) {
        let n = page.messages.len();
        self.older = page.older;
        self.messages.reserve(n);
        for m in page.messages.into_iter().rev() {
            self.messages.push_front(m);
        }
        if let Some((i, skip)) = self.anchor {
            self.anchor = Some((i + n, skip));
        }
    }

    /// Adds a message that just arrived or was just sent. Kept in sequence
    /// order (a late message from the past lands where it belongs).
    pub(crate) fn push(&mut self, message: Message) {
        if self
            .messages
            .iter()
            .rev()
            .take(64)
            .any(|m| m.id == message.id)
        {
            return;
        }
        let key = message.cursor();
        let pos = self
            .messages
            .iter()
            .rposition(|m| m.cursor() < key)
            .map_or(0, |p| p + 1);
        self.messages.insert(pos, message);
        if let Some((i, skip)) = self.anchor
            && pos <= i
        {
            self.anchor = Some((i + 1, skip));
        }
    }

    /// Updates a message's delivery state; false if it is not loaded.
    pub(crate) fn set_state(&mut self, id: &MessageId, state: MessageState) -> bool {
        match self.messages.iter_mut().rev().find(|m| m.id == *id) {
            Some(m) => {
                if state > m.state {
                    m.state = state;
                }
                true
            }
            None => false,
        }
    }

    /// Removes the unread marker.
    pub(crate) fn clear_unread_marker(&mut self) {
        self.unread_from = None;
    }

    /// Index of a loaded message.
    pub(crate) fn index_of(&self, id: &MessageId) -> Option<usize> {
        self.messages.iter().position(|m| m.id == *id)
    }

    /// Scrolls so that message `index` is at the bottom of the view and
    /// highlights it.
    pub(crate) fn show(&mut self, index: usize) {
        if let Some(m) = self.messages.get(index) {
            self.highlight = Some(m.id);
            self.anchor = if index + 1 == self.messages.len() {
                None
            } else {
                Some((index, 0))
            };
        }
    }

    /// Back to the newest message.
    pub(crate) fn scroll_to_bottom(&mut self) {
        self.anchor = None;
        self.highlight = None;
    }

    /// Scrolls towards older messages by `rows`.
    pub(crate) fn scroll_up(&mut self, rows: usize, ctx: &RowContext<'_>, view_height: usize) {
        if self.messages.is_empty() {
            return;
        }
        let (mut i, mut skip) = self.anchor.unwrap_or((self.messages.len() - 1, 0));
        skip += rows;
        loop {
            let len = self.block(i, ctx).len();
            if skip < len {
                break;
            }
            if i == 0 {
                skip = len.saturating_sub(1);
                break;
            }
            skip -= len;
            i -= 1;
        }
        // Never scroll so far that the view would show empty rows above
        // the first message when everything is loaded.
        if self.older.is_none() {
            let above: usize = self.rows_above(i, skip, ctx, view_height);
            if above < view_height {
                // Move back down until the view is full (or at the bottom).
                let missing = view_height - above;
                self.anchor = Some((i, skip));
                self.scroll_down(missing, ctx);
                return;
            }
        }
        self.anchor = Some((i, skip));
    }

    /// Rows from the top of the conversation down to the anchor's bottom
    /// row, counted up to `limit`.
    fn rows_above(&self, i: usize, skip: usize, ctx: &RowContext<'_>, limit: usize) -> usize {
        let mut rows = self.block(i, ctx).len().saturating_sub(skip);
        let mut j = i;
        while rows < limit && j > 0 {
            j -= 1;
            rows += self.block(j, ctx).len();
        }
        rows
    }

    /// Scrolls towards newer messages by `rows`; reaching the end follows
    /// the newest again.
    pub(crate) fn scroll_down(&mut self, rows: usize, ctx: &RowContext<'_>) {
        let Some((mut i, skip)) = self.anchor else {
            return;
        };
        let mut skip = skip as isize - rows as isize;
        while skip < 0 {
            if i + 1 >= self.messages.len() {
                self.anchor = None;
                return;
            }
            i += 1;
            skip += self.block(i, ctx).len() as isize;
        }
        self.anchor = Some((i, skip as usize));
    }

    /// The rows of the view, top to bottom, exactly `height` of them
    /// (blank rows on top when the conversation is short).
    pub(crate) fn view(&self, height: usize, ctx: &RowContext<'_>) -> Vec<Line<'static>> {
        let mut rows: Vec<Line<'static>> = Vec::with_capacity(height);
        if !self.messages.is_empty() {
            let (mut i, skip) = self.anchor.unwrap_or((self.messages.len() - 1, 0));
            let mut block = self.block(i, ctx);
            block.truncate(block.len().saturating_sub(skip));
            loop {
                while let Some(row) = block.pop() {
                    rows.push(row);
                    if rows.len() == height {
                        break;
                    }
                }
                if rows.len() == height || i == 0 {
                    break;
                }
                i -= 1;
                block = self.block(i, ctx);
            }
        }
        while rows.len() < height {
            rows.push(Line::default());
        }
        rows.reverse();
        rows
    }

    /// The rows of message `i`: a day separator if the day changed, the
    /// unread marker if it starts the unread part, then the message.
    fn block(&self, i: usize, ctx: &RowContext<'_>) -> Vec<Line<'static>> {
        let m = &self.messages[i];
        let when = ctx.zone.local(m.sent_at_ms);
        let mut rows = Vec::new();
        let new_day = match i.checked_sub(1).map(|p| &self.messages[p]) {
            Some(prev) => ctx.zone.local(prev.sent_at_ms).date() != when.date(),
            None => self.older.is_none(),
        };
        if new_day {
            let label = format!(
                " {} {} {} {} ",
                when.weekday(),
                when.day(),
                month_name(when.month()),
                when.year()
            );
            rows.push(separator(&label, ctx.width, theme::separator()));
        }
        if self.unread_from == Some(m.id) {
            rows.push(separator(
                " new messages ",
                ctx.width,
                theme::unread_marker(),
            ));
        }
        let time = when.format("%H:%M").to_string();
        let (marker, name, name_style) = if m.outgoing {
            (state_marker(m.state), ctx.me, theme::my_name())
        } else {
            ("  ", ctx.them, theme::their_name())
        };
        let highlight = self.highlight == Some(m.id);
        let base = if highlight {
            Style::new().add_modifier(Modifier::REVERSED)
        } else {
            Style::new()
        };
        let marker_style = match m.state {
            MessageState::Read if m.outgoing => theme::read_marker(),
            _ => theme::dim(),
        };
        let prefix_width = time.width() + 1 + 2 + 1 + name.width() + 2;
        let text_rows = wrap(
            &m.text,
            ctx.width.saturating_sub(prefix_width).max(8),
            ctx.width.saturating_sub(INDENT).max(8),
        );
        for (k, text) in text_rows.into_iter().enumerate() {
            if k == 0 {
                rows.push(Line::from(vec![
                    Span::styled(time.clone(), theme::dim().patch(base)),
                    Span::styled(" ", base),
                    Span::styled(marker, marker_style.patch(base)),
                    Span::styled(" ", base),
                    Span::styled(name.to_owned(), name_style.patch(base)),
                    Span::styled(": ", base),
                    Span::styled(text, base),
                ]));
            } else {
                rows.push(Line::from(vec![
                    Span::styled(" ".repeat(INDENT), base),
                    Span::styled(text, base),
                ]));
            }
        }
        rows
    }
}

/// Continuation rows of a message start under its time.
const INDENT: usize = 6;

fn month_name(month: u32) -> &'static str {
    [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ]
    .get(month as usize - 1)
    .copied()
    .unwrap_or("?")
}

fn separator(label: &str, width: usize, style: Style) -> Line<'static> {
    let label_width = label.width();
    let left = width.saturating_sub(label_width) / 2;
    let right = width.saturating_sub(label_width + left);
    Line::styled(
        format!("{}{label}{}", "─".repeat(left), "─".repeat(right)),
        style,
    )
}

/// Word-wraps `text`: the first row holds `first` cells, the others
/// `rest`; newlines break rows, words longer than a row are split.
pub(crate) fn wrap(text: &str, first: usize, rest: usize) -> Vec<String> {
    let mut rows = Vec::new();
    let mut row = String::new();
    let mut col = 0;
    let limit = |rows: &Vec<String>| if rows.is_empty() { first } else { rest };
    for (n, line) in text.split('\n').enumerate() {
        if n > 0 {
            rows.push(std::mem::take(&mut row));
            col = 0;
        }
        for word in line.split_inclusive(' ') {
            let w = word.width();
            let trimmed = word.trim_end_matches(' ').width();
            if col > 0 && col + trimmed > limit(&rows) {
                rows.push(std::mem::take(&mut row));
                col = 0;
            }
            if w <= limit(&rows).saturating_sub(col) || trimmed <= limit(&rows).saturating_sub(col)
            {
                row.push_str(word);
                col += w;
                continue;
            }
            for c in word.chars() {
                let cw = c.width().unwrap_or(0);
                if col + cw > limit(&rows) && col > 0 {
                    rows.push(std::mem::take(&mut row));
                    col = 0;
                }
                row.push(if c == '\t' { ' ' } else { c });
                col += cw;
            }
        }
    }
    rows.push(row);
    rows.into_iter()
        .map(|r| r.trim_end_matches(' ').to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_breaks_at_words_and_splits_long_ones() {
        assert_eq!(wrap("hello world", 20, 20), ["hello world"]);
        assert_eq!(wrap("hello world", 7, 10), ["hello", "world"]);
        assert_eq!(wrap("abcdefghij", 4, 4), ["abcd", "efgh", "ij"]);
        assert_eq!(wrap("a\n\nb", 10, 10), ["a", "", "b"]);
        assert_eq!(wrap("", 10, 10), [""]);
    }
}
