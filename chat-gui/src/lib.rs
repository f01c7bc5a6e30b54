//! chat-gui: Crust Chat's desktop client, `crust-chat-gui`.
//!
//! The window is plain state ([`App`]) drawn each frame with egui; a
//! [`Worker`] thread owns the chat-core [`Node`](chat_core::Node) on a tokio
//! runtime and talks to the window through channels, so no frame ever
//! waits on the network or the database.
//!
//! The parts:
//! - `worker`: the thread, its [`Request`]s and [`Update`]s;
//! - `app`: screens (first run, unlock, welcome, main), menus, sidebar;
//! - `conversation`: the message list (paged in from the worker; only
//!   visible rows are laid out) and the input box;
//! - `dialogs`: add contact, my invite with its QR code, friend requests,
//!   contact details, search, network test, settings, help, about;
//! - `notify`: desktop notifications ([`Notifier`]);
//! - `icon`: the window icon.

mod app;
mod conversation;
mod dialogs;
mod icon;
mod notify;
mod worker;

pub use app::{App, Screen, Setup, Status, Theme};
pub use conversation::{Action, Conversation, Zone, state_mark};
pub use dialogs::{Dialogs, Kind, qr_image};
pub use icon::window_icon;
pub use notify::{DesktopNotifier, Notifier};
pub use worker::{HISTORY_PAGE, Me, Request, Update, Worker};
