//! Styles. Text uses the terminal's own foreground and background, with
//! bold, dim, underline and reverse for emphasis; the few colours are the
//! dark ANSI ones (red, green, blue, magenta), which stay readable on light
//! and dark backgrounds alike. Nothing sets a background colour except by
//! reversing the terminal's own.

use ratatui::style::{Color, Modifier, Style};

/// Less important text (times, hints).
pub(crate) fn dim() -> Style {
    Style::new().add_modifier(Modifier::DIM)
}

/// Headings and names.
pub(crate) fn bold() -> Style {
    Style::new().add_modifier(Modifier::BOLD)
}

/// The selected row, the status bar.
pub(crate) fn reversed() -> Style {
    Style::new().add_modifier(Modifier::REVERSED)
}

/// Our name in the conversation.
pub(crate) fn my_name() -> Style {
    Style::new().fg(Color::Blue).add_modifier(Modifier::BOLD)
}

/// The contact's name in the conversation.
pub(crate) fn their_name() -> Style {
    Style::new().fg(Color::Magenta).add_modifier(Modifier::BOLD)
}

/// The "read" marker.
pub(crate) fn read_marker() -> Style {
    Style::new().fg(Color::Blue).add_modifier(Modifier::BOLD)
}

/// Day separators.
pub(crate) fn separator() -> Style {
    dim()
}

/// The "new messages" line.
pub(crate) fn unread_marker() -> Style {
    Style::new().fg(Color::Red)
}

/// Online presence.
pub(crate) fn online() -> Style {
    Style::new().fg(Color::Green).add_modifier(Modifier::BOLD)
}

/// Errors and warnings.
pub(crate) fn error() -> Style {
    Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
}

/// Unread counts.
pub(crate) fn unread() -> Style {
    Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
}
