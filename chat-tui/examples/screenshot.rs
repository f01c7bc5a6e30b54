//! The README's screenshot of `crust-chat`, made from a real chat.
//!
//! ```sh
//! cargo run -p chat-tui --example screenshot [-- OUT.svg]
//! ```
//!
//! Four real chat-core nodes on loopback (Alice, Bob, Carol, Dave) make
//! friends by invite, Alice and Bob talk, Carol goes offline, Dave's friend
//! request waits. Then Alice's screen is drawn exactly as `crust-chat` draws
//! it (the same `App` and `render`), into ratatui's test backend, and the
//! cells are written out as an SVG with a dark terminal palette (default:
//! `assets/screenshots/crust-chat.svg`).

#![allow(clippy::unwrap_used, missing_docs)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chat_core::{Event, MessageState, Node, NodeConfig, NodeEvents, Profile};
use chat_tui::{App, AppConfig, Zone};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::{Color, Modifier};

const NETWORK: &str = "chat-tui-screenshot";
const SIZE: (u16, u16) = (100, 30);

async fn wait(events: &mut NodeEvents, what: &str, mut pick: impl FnMut(&Event) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(e)) if pick(&e) => return,
            Ok(Some(_)) => {}
            _ => panic!("timed out waiting for {what}"),
        }
    }
}

async fn node(root: &Path, name: &str) -> (Node, NodeEvents) {
    let profile = Profile::create(&root.join(name), name, None).unwrap();
    Node::open(profile, NodeConfig::loopback(NETWORK))
        .await
        .unwrap()
}

/// `from` asks `to` to be friends and `to` accepts.
async fn befriend(from: &Node, to: (&Node, &mut NodeEvents), events: &mut NodeEvents) {
    from.add_contact(&to.0.my_invite().unwrap(), "hi, it's me")
        .unwrap();
    wait(to.1, "the friend request", |e| {
        matches!(e, Event::FriendRequest(_))
    })
    .await;
    to.0.accept(&from.id()).unwrap();
    wait(events, "the acceptance", |e| {
        matches!(e, Event::FriendAccepted { .. })
    })
    .await;
}

async fn delivered(node: &Node, to: &chat_core::PeerId, id: &chat_core::MessageId) {
    while node.message(to, id).unwrap().unwrap().state < MessageState::Delivered {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn screen() -> Buffer {
    let root = tempfile::tempdir().unwrap();
    let (alice, mut alice_events) = node(root.path(), "Alice").await;
    let (bob, mut bob_events) = node(root.path(), "Bob").await;
    let (carol, mut carol_events) = node(root.path(), "Carol").await;
    let (dave, _dave_events) = node(root.path(), "Dave").await;
    befriend(&bob, (&alice, &mut alice_events), &mut bob_events).await;
    befriend(&alice, (&carol, &mut carol_events), &mut alice_events).await;
    carol.send(&alice.id(), "landed! talk tomorrow").unwrap();
    let carol_id = carol.id();
    wait(&mut alice_events, "Carol's message", |e| {
        matches!(e, Event::MessageReceived { .. })
    })
    .await;
    carol.shutdown().await;
    wait(
        &mut alice_events,
        "Carol going offline",
        |e| matches!(e, Event::ContactOffline { contact } if *contact == carol_id),
    )
    .await;
    dave.add_contact(&alice.my_invite().unwrap(), "Dave from the climbing gym 👋")
        .unwrap();

    let lines: [(bool, &str); 7] = [
        (false, "are we still on for saturday?"),
        (true, "yes! 9:00 at the station?"),
        (false, "perfect. I'll bring the rope and the small stove"),
        (true, "then I bring coffee ☕\nand the guidebook"),
        (false, "the forecast says sun until 3, rain after"),
        (true, "so we start early and are down by 2"),
        (false, "deal. see you there"),
    ];
    let (a, b) = (alice.id(), bob.id());
    for (from_alice, text) in lines {
        let (sender, to) = if from_alice { (&alice, b) } else { (&bob, a) };
        let id = sender.send(&to, text).unwrap().id;
        delivered(sender, &to, &id).await;
    }
    wait(&mut alice_events, "Dave's request", |e| {
        matches!(e, Event::FriendRequest(_))
    })
    .await;

    let mut app = App::new(
        Box::new(alice.clone()),
        AppConfig {
            zone: Zone::Local,
            upnp: false,
            now_ms: now_ms(),
            size: SIZE,
        },
    );
    app.on_report(alice.network_report().await);
    // Open Bob's conversation (the first contact), which reads it, then let
    // Bob's typing notice and the read receipt arrive.
    app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
    bob.set_typing(&a, true).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, alice_events.recv()).await {
        app.on_node_event(event);
    }
    app.on_tick(now_ms());
    let mut terminal = Terminal::new(TestBackend::new(SIZE.0, SIZE.1)).unwrap();
    terminal.draw(|f| chat_tui::render(&app, f)).unwrap();
    for n in [alice, bob, dave] {
        n.shutdown().await;
    }
    terminal.backend().buffer().clone()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A dark terminal's palette (the xterm defaults for the 16 named colours).
fn rgb(color: Color, default: &str) -> String {
    let named = |i: usize| {
        [
            "#000000", "#cd0000", "#00cd00", "#cdcd00", "#3b78ff", "#cd00cd", "#00cdcd", "#e5e5e5",
            "#7f7f7f", "#ff5555", "#55ff55", "#ffff55", "#6f9fff", "#ff55ff", "#55ffff", "#ffffff",
        ][i]
            .to_string()
    };
    match color {
        Color::Reset => default.to_string(),
        Color::Black => named(0),
        Color::Red => named(1),
        Color::Green => named(2),
        Color::Yellow => named(3),
        Color::Blue => named(4),
        Color::Magenta => named(5),
        Color::Cyan => named(6),
        Color::Gray => named(7),
        Color::DarkGray => named(8),
        Color::LightRed => named(9),
        Color::LightGreen => named(10),
        Color::LightYellow => named(11),
        Color::LightBlue => named(12),
        Color::LightMagenta => named(13),
        Color::LightCyan => named(14),
        Color::White => named(15),
        Color::Rgb(r, g, b) => format!("#{r:02x}{g:02x}{b:02x}"),
        Color::Indexed(i) if i < 16 => named(i as usize),
        Color::Indexed(i) if i >= 232 => {
            let v = 8 + 10 * (i - 232);
            format!("#{v:02x}{v:02x}{v:02x}")
        }
        Color::Indexed(i) => {
            let i = i - 16;
            let level = |c: u8| if c == 0 { 0 } else { 55 + 40 * c };
            let (r, g, b) = (level(i / 36), level((i / 6) % 6), level(i % 6));
            format!("#{r:02x}{g:02x}{b:02x}")
        }
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The buffer as an SVG: one rectangle per cell background that differs
/// from the terminal's, one text run per cell (so wide characters and the
/// QR-style half blocks keep their columns).
fn svg(buffer: &Buffer) -> String {
    const W: f32 = 8.4;
    const H: f32 = 17.0;
    const FG: &str = "#d0d0d0";
    const BG: &str = "#1d1f21";
    let area = buffer.area;
    let mut out = String::new();
    let (width, height) = (f32::from(area.width) * W, f32::from(area.height) * H);
    writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="14" shape-rendering="crispEdges">"#
    )
    .unwrap();
    writeln!(out, r#"<rect width="100%" height="100%" fill="{BG}"/>"#).unwrap();
    let colours = |x: u16, y: u16| {
        let cell = &buffer[(x, y)];
        let (fg, bg) = (rgb(cell.fg, FG), rgb(cell.bg, BG));
        if cell.modifier.contains(Modifier::REVERSED) {
            (bg, fg)
        } else {
            (fg, bg)
        }
    };
    // Backgrounds first, one rectangle per run of equal colour in a row (one
    // per cell would leave hairline seams between cells when scaled).
    for y in 0..area.height {
        let mut x = 0;
        while x < area.width {
            let bg = colours(x, y).1;
            let start = x;
            while x < area.width && colours(x, y).1 == bg {
                x += 1;
            }
            if bg != BG {
                let (px, py, w) = (
                    f32::from(start) * W,
                    f32::from(y) * H,
                    f32::from(x - start) * W,
                );
                writeln!(
                    out,
                    r#"<rect x="{px}" y="{py}" width="{w}" height="{H}" fill="{bg}"/>"#
                )
                .unwrap();
            }
        }
    }
    // Then the text, one element per cell, so wide characters and box
    // drawing keep their columns whatever the viewer's font.
    for y in 0..area.height {
        for x in 0..area.width {
            let cell = &buffer[(x, y)];
            let symbol = cell.symbol();
            if symbol.trim().is_empty() {
                continue;
            }
            let fg = colours(x, y).0;
            let mut style = String::new();
            if cell.modifier.contains(Modifier::BOLD) {
                style.push_str(r#" font-weight="bold""#);
            }
            if cell.modifier.contains(Modifier::ITALIC) {
                style.push_str(r#" font-style="italic""#);
            }
            if cell.modifier.contains(Modifier::DIM) {
                style.push_str(r#" opacity="0.6""#);
            }
            if cell.modifier.contains(Modifier::UNDERLINED) {
                style.push_str(r#" text-decoration="underline""#);
            }
            writeln!(
                out,
                r#"<text x="{}" y="{}" fill="{fg}"{style}>{}</text>"#,
                f32::from(x) * W,
                f32::from(y) * H + H * 0.78,
                escape(symbol)
            )
            .unwrap();
        }
    }
    out.push_str("</svg>\n");
    out
}

fn main() {
    let out = std::env::args().nth(1).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets/screenshots/crust-chat.svg"),
        PathBuf::from,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let buffer = runtime.block_on(screen());
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(&out, svg(&buffer)).unwrap();
    println!("{}", out.display());
}
