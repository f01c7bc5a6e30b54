//! A 100,000-message conversation in the window: the time to open it (from
//! the click to the first frame that shows its messages: the worker reads
//! the newest page from the profile's database), then the CPU side of
//! frames (egui layout of the whole window, then tessellation into
//! triangles) at the bottom, while scrolling up through it (older pages are
//! read by the worker as the view nears the top), and while the window is
//! resized (rows re-wrapped a slice a frame). The last part has all
//! 100,000 messages in memory at once, as after scrolling through the
//! whole conversation. The GPU side (software OpenGL under Xvfb) is not in
//! these figures; the start-up bench covers a real window.
//!
//! `cargo bench -p chat-gui --bench frame`

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use chat_core::{Message, MessageId, MessageState, Node, NodeConfig, PeerId, Profile};
use chat_gui::{App, Conversation, Screen, Worker};

const MESSAGES: usize = 100_000;
const FRAMES: usize = 400;
const NETWORK: &str = "chat-gui-bench";

fn frame(ctx: &egui::Context, app: &mut App, width: f32, events: Vec<egui::Event>) -> Duration {
    let input = egui::RawInput {
        screen_rect: Some(egui::Rect::from_min_size(
            egui::Pos2::ZERO,
            egui::vec2(width, 700.0),
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

fn text(i: usize) -> String {
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
    let len = 3 + i % 40;
    let mut text: Vec<&str> = (0..len).map(|w| words[(i + w) % words.len()]).collect();
    if i.is_multiple_of(17) {
        text.insert(len / 2, "\n");
    }
    text.join(" ")
}

/// A profile with a 100,000-message conversation with `Friend` (sent
/// while Friend was away: they wait in the outbox, which changes nothing
/// for the window). Returns the friend's id.
fn fill(root: &std::path::Path, dir: &std::path::Path) -> PeerId {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let friend_dir = root.join("friend");
        let (friend, _events) = Node::open(
            Profile::create(&friend_dir, "Friend", None).unwrap(),
            NodeConfig::loopback(NETWORK),
        )
        .await
        .unwrap();
        let invite = friend.my_invite().unwrap();
        friend.shutdown().await;
        let (node, _events) = Node::open(
            Profile::create(dir, "Bench", None).unwrap(),
            NodeConfig::loopback(NETWORK),
        )
        .await
        .unwrap();
        node.add_contact(&invite, "hi").unwrap();
        let texts: Vec<String> = (0..MESSAGES).map(text).collect();
        for chunk in texts.chunks(10_000) {
            node.send_many(&invite.peer, chunk).unwrap();
        }
        node.shutdown().await;
        invite.peer
    })
}

fn main() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("bench");
    let t = Instant::now();
    let peer = fill(root.path(), &dir);
    println!(
        "(a profile with {MESSAGES} messages written in {:.1} s)",
        t.elapsed().as_secs_f64()
    );
    let mut app = App::new(Worker::spawn(dir, NodeConfig::loopback(NETWORK)).unwrap());
    let ctx = egui::Context::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(app.screen, Screen::Main) || app.contacts.is_empty() {
        frame(&ctx, &mut app, 1000.0, Vec::new());
        assert!(Instant::now() < deadline, "the node did not start");
        std::thread::sleep(Duration::from_millis(10));
    }

    // Open it: the click, then frames until its messages are drawn.
    let start = Instant::now();
    app.select(peer);
    let mut frames = 0;
    let mut slowest = Duration::ZERO;
    loop {
        slowest = slowest.max(frame(&ctx, &mut app, 1000.0, Vec::new()));
        frames += 1;
        if app.conversation.row_count() > 0 {
            break;
        }
        assert!(Instant::now() < deadline + Duration::from_secs(30));
        std::thread::yield_now();
    }
    println!(
        "open the {MESSAGES}-message conversation: {:.1} ms to the first frame with messages \
         ({frames} frames, slowest {:.2} ms; {} messages loaded, {} rows)",
        start.elapsed().as_secs_f64() * 1000.0,
        slowest.as_secs_f64() * 1000.0,
        app.conversation.messages().len(),
        app.conversation.row_count()
    );

    // Warm up, then frames at the bottom with the pointer moving.
    for _ in 0..20 {
        frame(&ctx, &mut app, 1000.0, Vec::new());
    }
    let times = (0..FRAMES)
        .map(|i| {
            let pos = egui::pos2(500.0 + (i % 50) as f32, 300.0);
            frame(&ctx, &mut app, 1000.0, vec![egui::Event::PointerMoved(pos)])
        })
        .collect();
    summary("at the bottom", times);

    // Scrolling up, a wheel step a frame; older pages arrive meanwhile.
    let wheel = || {
        vec![
            egui::Event::PointerMoved(egui::pos2(600.0, 300.0)),
            egui::Event::MouseWheel {
                unit: egui::MouseWheelUnit::Point,
                delta: egui::vec2(0.0, 2000.0),
                modifiers: egui::Modifiers::NONE,
            },
        ]
    };
    let start = Instant::now();
    let times = (0..FRAMES)
        .map(|_| frame(&ctx, &mut app, 1000.0, wheel()))
        .collect();
    summary("scrolling up, paging in", times);
    println!(
        "  ({} messages loaded after {FRAMES} frames in {:.1} s)",
        app.conversation.messages().len(),
        start.elapsed().as_secs_f64()
    );

    // Resizing: the window 2 px narrower each frame.
    let times = (0..FRAMES / 2)
        .map(|i| frame(&ctx, &mut app, 1000.0 - 2.0 * i as f32, Vec::new()))
        .collect();
    summary("resizing", times);

    // All 100,000 messages in memory (as after scrolling to the start).
    let messages: Vec<Message> = (0..MESSAGES)
        .map(|i| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&(i as u64).to_be_bytes());
            Message {
                id: MessageId(id),
                contact: peer,
                outgoing: i % 3 == 0,
                seq: i as u64,
                sent_at_ms: 1_700_000_000_000 + i as i64 * 60_000,
                received_at_ms: None,
                text: text(i),
                state: MessageState::Delivered,
            }
        })
        .collect();
    let mut conversation = Conversation::open(peer, "Friend");
    conversation.set_history(messages, None, 0);
    app.conversation = conversation;
    let first = frame(&ctx, &mut app, 1000.0, Vec::new());
    println!(
        "all {MESSAGES} in memory: first wrap {:.1} ms ({} rows)",
        first.as_secs_f64() * 1000.0,
        app.conversation.row_count()
    );
    for _ in 0..20 {
        frame(&ctx, &mut app, 1000.0, Vec::new());
    }
    let times = (0..FRAMES)
        .map(|i| {
            let pos = egui::pos2(500.0 + (i % 50) as f32, 300.0);
            frame(&ctx, &mut app, 1000.0, vec![egui::Event::PointerMoved(pos)])
        })
        .collect();
    summary("  at the bottom", times);
    let times = (0..FRAMES)
        .map(|_| frame(&ctx, &mut app, 1000.0, wheel()))
        .collect();
    summary("  scrolling up", times);
    let mut rewrapped = 0;
    let times = (0..FRAMES / 2)
        .map(|i| {
            let t = frame(&ctx, &mut app, 1000.0 - 2.0 * i as f32, Vec::new());
            rewrapped += usize::from(!app.conversation.rewrapping());
            t
        })
        .collect();
    summary("  resizing", times);
    let mut frames = 0;
    let times = std::iter::from_fn(|| {
        frames += 1;
        (frames == 1 || app.conversation.rewrapping())
            .then(|| frame(&ctx, &mut app, 700.0, Vec::new()))
    })
    .collect::<Vec<_>>();
    let n = times.len();
    summary("  one resize, until re-wrapped", times);
    println!("  ({n} frames to re-wrap all {MESSAGES})");
}
