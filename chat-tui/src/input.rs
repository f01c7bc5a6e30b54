//! A multi-line text field: the message input and the one-line fields of
//! the popups. Pure editing on a `String` with a byte cursor; layout into
//! rows for a given width is computed by [`TextInput::layout`].

use unicode_width::UnicodeWidthChar;

/// An editable text with a cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TextInput {
    text: String,
    /// Byte offset of the cursor, always on a char boundary.
    cursor: usize,
}

/// Rows of a laid-out input and where the cursor is in them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InputLayout {
    /// The text of each row (no newlines).
    pub rows: Vec<String>,
    /// Cursor row.
    pub cursor_row: usize,
    /// Cursor column, in cells.
    pub cursor_col: usize,
}

impl TextInput {
    /// An input holding `text`, cursor at the end.
    pub(crate) fn with_text(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            cursor: text.len(),
        }
    }

    /// The text.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// Whether nothing is typed.
    pub(crate) fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Empties the field and returns what it held.
    pub(crate) fn take(&mut self) -> String {
        self.cursor = 0;
        std::mem::take(&mut self.text)
    }

    /// Replaces the text, cursor at the end.
    pub(crate) fn set(&mut self, text: &str) {
        self.text = text.to_owned();
        self.cursor = self.text.len();
    }

    /// Inserts a character at the cursor.
    pub(crate) fn insert(&mut self, c: char) {
        self.text.insert(self.cursor, c);
        self.cursor += c.len_utf8();
    }

    /// Inserts a string (a paste) at the cursor; `\r\n` and `\r` become `\n`.
    pub(crate) fn insert_str(&mut self, s: &str) {
        let s = s.replace("\r\n", "\n").replace('\r', "\n");
        self.text.insert_str(self.cursor, &s);
        self.cursor += s.len();
    }

    fn prev_boundary(&self) -> usize {
        self.text[..self.cursor]
            .char_indices()
            .next_back()
            .map_or(0, |(i, _)| i)
    }

    fn next_boundary(&self) -> usize {
        self.text[self.cursor..]
            .chars()
            .next()
            .map_or(self.cursor, |c| self.cursor + c.len_utf8())
    }

    /// Deletes the character before the cursor.
    pub(crate) fn backspace(&mut self) {
        if self.cursor > 0 {
            let start = self.prev_boundary();
            self.text.replace_range(start..self.cursor, "");
            self.cursor = start;
        }
    }

    /// Deletes the character under the cursor.
    pub(crate) fn delete(&mut self) {
        if self.cursor < self.text.len() {
            let end = self.next_boundary();
            self.text.replace_range(self.cursor..end, "");
        }
    }

    /// Deletes the word before the cursor (Ctrl+W).
    pub(crate) fn delete_word(&mut self) {
        let before = &self.text[..self.cursor];
        let trimmed = before.trim_end();
        let start = trimmed
            .char_indices()
            .rev()
            .find(|(_, c)| c.is_whitespace())
            .map_or(0, |(i, c)| i + c.len_utf8());
        self.text.replace_range(start..self.cursor, "");
        self.cursor = start;
    }

    /// Deletes from the start of the line to the cursor (Ctrl+U).
    pub(crate) fn delete_to_line_start(&mut self) {
        let start = self.line_start();
        self.text.replace_range(start..self.cursor, "");
        self.cursor = start;
    }

    /// Moves one character left.
    pub(crate) fn left(&mut self) {
        self.cursor = self.prev_boundary();
    }

    /// Moves one character right.
    pub(crate) fn right(&mut self) {
        self.cursor = self.next_boundary();
    }

    fn line_start(&self) -> usize {
        self.text[..self.cursor].rfind('\n').map_or(0, |i| i + 1)
    }

    fn line_end(&self) -> usize {
        self.text[self.cursor..]
            .find('\n')
            .map_or(self.text.len(), |i| self.cursor + i)
    }

    /// Moves to the start of the line.
    pub(crate) fn home(&mut self) {
        self.cursor = self.line_start();
    }

    /// Moves to the end of the line.
    pub(crate) fn end(&mut self) {
        self.cursor = self.line_end();
    }

    /// Moves to the previous line (same column, by characters); false on
    /// the first line.
    pub(crate) fn up(&mut self) -> bool {
        let start = self.line_start();
        if start == 0 {
            return false;
        }
        let col = self.text[start..self.cursor].chars().count();
        let prev_start = self.text[..start - 1].rfind('\n').map_or(0, |i| i + 1);
        self.cursor = advance(&self.text, prev_start, start - 1, col);
        true
    }

    /// Moves to the next line; false on the last line.
    pub(crate) fn down(&mut self) -> bool {
        let end = self.line_end();
        if end == self.text.len() {
            return false;
        }
        let col = self.text[self.line_start()..self.cursor].chars().count();
        let next_start = end + 1;
        let next_end = self.text[next_start..]
            .find('\n')
            .map_or(self.text.len(), |i| next_start + i);
        self.cursor = advance(&self.text, next_start, next_end, col);
        true
    }

    /// The text wrapped into rows of at most `width` cells (hard breaks at
    /// newlines, soft breaks anywhere), with the cursor's position.
    pub(crate) fn layout(&self, width: usize) -> InputLayout {
        let width = width.max(1);
        let mut rows = vec![String::new()];
        let mut col = 0;
        let (mut cursor_row, mut cursor_col) = (0, 0);
        for (i, c) in self.text.char_indices() {
            if i == self.cursor {
                (cursor_row, cursor_col) = (rows.len() - 1, col);
            }
            if c == '\n' {
                rows.push(String::new());
                col = 0;
                continue;
            }
            let w = c.width().unwrap_or(0);
            if col + w > width {
                rows.push(String::new());
                col = 0;
                if i == self.cursor {
                    (cursor_row, cursor_col) = (rows.len() - 1, 0);
                }
            }
            if let Some(row) = rows.last_mut() {
                row.push(if c == '\t' { ' ' } else { c });
            }
            col += w;
        }
        if self.cursor == self.text.len() {
            if col >= width {
                rows.push(String::new());
                col = 0;
            }
            (cursor_row, cursor_col) = (rows.len() - 1, col);
        }
        InputLayout {
            rows,
            cursor_row,
            cursor_col,
        }
    }
}

/// The byte offset `col` characters after `start`, at most `end`.
fn advance(text: &str, start: usize, end: usize, col: usize) -> usize {
    text[start..end]
        .char_indices()
        .nth(col)
        .map_or(end, |(i, _)| start + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_and_moves_by_characters() {
        let mut input = TextInput::default();
        for c in "héllo".chars() {
            input.insert(c);
        }
        input.left();
        input.left();
        input.backspace();
        assert_eq!(input.text(), "hélo");
        input.home();
        input.delete();
        assert_eq!(input.text(), "élo");
        input.end();
        input.insert_str(" wide\r\nworld");
        assert_eq!(input.text(), "élo wide\nworld");
        assert!(input.up());
        assert!(!input.up());
        assert!(input.down());
        input.delete_word();
        assert_eq!(input.text(), "élo wide\n");
        input.delete_to_line_start();
        input.backspace();
        input.delete_word();
        assert_eq!(input.text(), "élo ");
        assert_eq!(input.take(), "élo ");
        assert!(input.is_empty());
    }

    #[test]
    fn layout_wraps_and_places_the_cursor() {
        let input = TextInput::with_text("abcdef\ngh");
        let layout = input.layout(4);
        assert_eq!(layout.rows, ["abcd", "ef", "gh"]);
        assert_eq!((layout.cursor_row, layout.cursor_col), (2, 2));
        let full = TextInput::with_text("abcd");
        let layout = full.layout(4);
        assert_eq!(layout.rows, ["abcd", ""]);
        assert_eq!((layout.cursor_row, layout.cursor_col), (1, 0));
    }
}
