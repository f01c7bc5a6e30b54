//! chat-tui: `crust-chat`, the terminal client of Crust Chat.
//!
//! The program is one loop (`main.rs`): an event — a key, a paste, a mouse
//! action, a resize, a node [`chat_core::Event`] or a timer tick — updates
//! the [`App`], then [`render`] draws it. The parts:
//! - `backend`: the [`Backend`] trait over [`chat_core::Node`] (tests use a
//!   fixed fake);
//! - `app`, `commands`, `popup`: the state machine, `/commands`, popups;
//! - `conversation`: the loaded history, scrolling, row layout;
//! - `input`: the text fields;
//! - `ui`, `theme`: drawing.

mod app;
mod backend;
mod commands;
mod conversation;
mod input;
mod popup;
#[cfg(test)]
mod tests;
mod theme;
mod ui;

pub use app::{App, AppConfig, Areas, ContactRow, Effect, Notice};
pub use backend::Backend;
pub use conversation::{Conversation, Zone};
pub use ui::{qr_lines, render};
