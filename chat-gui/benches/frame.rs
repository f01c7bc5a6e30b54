//! Frame time with a 100,000-message conversation open: the CPU side of a
//! frame (egui layout of the whole window, then tessellation into
//! triangles), at the bottom of the conversation and while scrolling up
//! through it. The GPU side (software OpenGL under Xvfb) is not in these
//! figures; the start-up bench covers a real window.
//!
//! `cargo bench -p chat-gui --bench frame`

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use chat_core::{
    Contact, ContactState, Message, MessageId, MessageState, NodeConfig, PeerId, Presence, Profile,
};
use chat_gui::{App, Conversation, Screen, Update, Worker};

const MESSAGES: usize = 100_000;
const FRAMES: usize = 400;

fn frame(ctx: &egui::Context, app: &mut App, events: Vec<egui::Event>) -> Duration {
    let input = egui::RawInput {
        screen_rect: Some(egui::Rect::from_min_size(
            egui::Pos2::ZERO,
            egui::vec2(1000.0, 700.0),
        )),
        events,
        ..Default::default()
    };
    let start = Instant::now();
    let output = ctx.run(input, |ctx| app.ui(ctx));
    let triangles = ctx.tessellate(output.shapes, output.pixels_per_point);
    std::hint::black_box(triangles);
    start.elapsed()
}

fn summary(name: &str, mut times: Vec<Duration>) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let n = times.len();
    println!(
        "{name}: {n} frames, median {:.3} ms, p95 {:.3} ms, max {:.3} ms",
        ms(times[n / 2]),
        ms(times[n * 95 / 100]),
        ms(times[n - 1])
    );
}

fn main() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("bench");
    drop(Profile::create(&dir, "Bench", None).unwrap());
    let mut app = App::new(Worker::spawn(dir, NodeConfig::loopback("chat-gui-bench")).unwrap());
    let ctx = egui::Context::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(app.screen, Screen::Main) {
        frame(&ctx, &mut app, Vec::new());
        assert!(Instant::now() < deadline, "the node did not start");
        std::thread::sleep(Duration::from_millis(10));
    }

    let peer = (0u8..=255)
        .find_map(|b| PeerId::from_bytes([b; 32]).ok())
        .unwrap();
    app.apply(
        Update::Contacts(vec![Contact {
            id: peer,
            name: "Friend".into(),
            state: ContactState::Friend,
            verified: true,
            addrs: Vec::new(),
            presence: Presence::Offline { last_seen_ms: None },
            unread: 0,
            undelivered: 0,
        }]),
        true,
        &ctx,
    );
    let words = [
        "hello",
        "how",
        "are",
        "you",
        "the",
        "connection",
        "works",
        "through",
        "NAT",
        "again",
    ];
    let messages: Vec<Message> = (0..MESSAGES)
        .map(|i| {
            let len = 3 + i % 40;
            let mut text: Vec<&str> = (0..len).map(|w| words[(i + w) % words.len()]).collect();
            if i % 17 == 0 {
                text.insert(len / 2, "\n");
            }
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&(i as u64).to_be_bytes());
            Message {
                id: MessageId(id),
                contact: peer,
                outgoing: i % 3 == 0,
                seq: i as u64,
                sent_at_ms: 1_700_000_000_000 + i as i64 * 60_000,
                received_at_ms: None,
                text: text.join(" "),
                state: MessageState::Delivered,
            }
        })
        .collect();

    let start = Instant::now();
    app.conversation = Conversation::open(peer, "Friend");
    app.conversation.set_history(messages, 0);
    let first = frame(&ctx, &mut app, Vec::new());
    println!(
        "open a {MESSAGES}-message conversation: {:.1} ms (first frame {:.1} ms, {} rows)",
        start.elapsed().as_secs_f64() * 1000.0,
        first.as_secs_f64() * 1000.0,
        app.conversation.row_count()
    );

    // Warm up, then frames at the bottom with the pointer moving.
    for _ in 0..20 {
        frame(&ctx, &mut app, Vec::new());
    }
    let times = (0..FRAMES)
        .map(|i| {
            let pos = egui::pos2(500.0 + (i % 50) as f32, 300.0);
            frame(&ctx, &mut app, vec![egui::Event::PointerMoved(pos)])
        })
        .collect();
    summary("at the bottom", times);

    // Scrolling up through the conversation, a wheel step a frame.
    let times = (0..FRAMES)
        .map(|_| {
            frame(
                &ctx,
                &mut app,
                vec![
                    egui::Event::PointerMoved(egui::pos2(600.0, 300.0)),
                    egui::Event::MouseWheel {
                        unit: egui::MouseWheelUnit::Point,
                        delta: egui::vec2(0.0, 2000.0),
                        modifiers: egui::Modifiers::NONE,
                    },
                ],
            )
        })
        .collect();
    summary("scrolling", times);
}
