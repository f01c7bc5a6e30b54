//! `crust-chat-gui`: the desktop client.

use std::time::Instant;

use anyhow::{Context as _, anyhow};
use chat_core::Profile;
use chat_gui::{App, Theme, Worker};
use clap::Parser;

/// Crust Chat: secure peer-to-peer chat, desktop client.
#[derive(Debug, Parser)]
#[command(name = "crust-chat-gui", version = chat_core::VERSION, about)]
struct Args {
    #[command(flatten)]
    node: chat_core::cli::NodeArgs,
    /// Open the conversation with the contact of this name at start.
    #[arg(long, value_name = "NAME")]
    open: Option<String>,
    /// Print the time from start to the first frame on stderr and quit
    /// (for the start-up benchmark and the Xvfb test).
    #[arg(long, hide = true)]
    exit_after_first_frame: bool,
    /// Print the time from start to the first frame on stderr.
    #[arg(long, hide = true)]
    report_first_frame: bool,
}

/// The app, plus the first-frame report the benchmark reads.
struct Window {
    app: App,
    started: Instant,
    frames: u64,
    report: bool,
    exit: bool,
}

impl eframe::App for Window {
    fn update(&mut self, ctx: &egui::Context, frame: &mut eframe::Frame) {
        // The second update starts after the first frame was painted and
        // swapped.
        if self.frames == 1 && self.report {
            eprintln!(
                "first frame after {:.1} ms",
                self.started.elapsed().as_secs_f64() * 1000.0
            );
            if self.exit {
                ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            }
        }
        self.frames += 1;
        if self.frames == 1 {
            ctx.request_repaint();
        }
        eframe::App::update(&mut self.app, ctx, frame);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        self.app.save(storage);
    }
}

fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let dir = Profile::resolve_dir(args.node.profile.as_deref()).context("choosing a profile")?;
    let config = args.node.node_config();
    let worker = Worker::spawn(dir, config).context("starting the chat worker")?;
    let viewport = egui::ViewportBuilder::default()
        .with_title("Crust Chat")
        .with_app_id("crust-chat")
        .with_inner_size([900.0, 620.0])
        .with_min_inner_size([480.0, 320.0])
        .with_icon(chat_gui::window_icon());
    let options = eframe::NativeOptions {
        viewport,
        persist_window: true,
        ..eframe::NativeOptions::default()
    };
    let no_upnp = args.node.no_upnp;
    let open = args.open.clone();
    let report = args.report_first_frame || args.exit_after_first_frame;
    let exit = args.exit_after_first_frame;
    eframe::run_native(
        "crust-chat",
        options,
        Box::new(move |cc| {
            let mut app = App::new(worker);
            app.no_upnp = no_upnp;
            app.open_on_start = open;
            if let Some(storage) = cc.storage
                && let Some(theme) = storage.get_string(Theme::KEY)
            {
                app.theme = Theme::parse(&theme);
            }
            Ok(Box::new(Window {
                app,
                started,
                frames: 0,
                report,
                exit,
            }))
        }),
    )
    .map_err(|e| anyhow!("the window could not be opened: {e}"))
}
