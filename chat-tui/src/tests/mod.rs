//! State-and-render tests: a fake backend with fixed data, key events in,
//! `TestBackend` screens out, compared with insta snapshots.

#![allow(clippy::unwrap_used)]

mod behaviour;
mod fake;
mod screens;

use chat_core::{ConnectionInfo, Direction, PeerId, Transport};
use chrono::TimeZone;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

use crate::{App, AppConfig, Zone};
pub(crate) use fake::Fake;

/// 2026-11-28 12:00 UTC.
pub(crate) fn now() -> i64 {
    chrono::Utc
        .with_ymd_and_hms(2026, 11, 28, 12, 0, 0)
        .unwrap()
        .timestamp_millis()
}

pub(crate) fn peer(n: u8) -> PeerId {
    crust::SecretId::from_bytes(&[n; 32]).peer_id()
}

pub(crate) fn online(port: u16) -> chat_core::Presence {
    chat_core::Presence::Online(ConnectionInfo {
        transport: Transport::Tcp,
        path: crust::ConnectionPath::Direct,
        connect_time: None,
        remote_addr: ([192, 0, 2, 7], port).into(),
        local_addr: ([192, 0, 2, 1], 5483).into(),
        direction: Direction::Outgoing,
        rtt: Some(std::time::Duration::from_millis(12)),
        traversal: None,
    })
}

pub(crate) fn app_with(fake: &Fake, width: u16, height: u16) -> App {
    App::new(
        Box::new(fake.clone()),
        AppConfig {
            zone: Zone::utc(),
            upnp: false,
            now_ms: now(),
            size: (width, height),
        },
    )
}

pub(crate) fn screen(app: &App) -> String {
    let (w, h) = app.size;
    let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
    terminal.draw(|frame| crate::render(app, frame)).unwrap();
    terminal.backend().to_string()
}

pub(crate) fn press(app: &mut App, code: KeyCode) {
    app.on_key(KeyEvent::new(code, KeyModifiers::NONE));
}

pub(crate) fn press_with(app: &mut App, code: KeyCode, modifiers: KeyModifiers) {
    app.on_key(KeyEvent::new(code, modifiers));
}

pub(crate) fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        press(app, KeyCode::Char(c));
    }
}
