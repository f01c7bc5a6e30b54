//! `crust-chat-gui`: the desktop client.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, anyhow};
use chat_core::{NodeConfig, Profile};
use chat_gui::{App, Theme, Worker};
use clap::Parser;

/// Crust Chat: secure peer-to-peer chat, desktop client.
#[derive(Debug, Parser)]
#[command(name = "crust-chat-gui", version = chat_core::VERSION, about)]
struct Args {
    /// The profile directory (default: $CRUST_CHAT_PROFILE, else the
    /// platform's data directory).
    #[arg(long, value_name = "DIR")]
    profile: Option<PathBuf>,
    /// Listen on this TCP address instead of the profile's (repeatable).
    #[arg(long, value_name = "IP:PORT")]
    listen: Vec<SocketAddr>,
    /// Bootstrap from this peer, `ID@IP:PORT` or `IP:PORT`, besides the
    /// profile's (repeatable).
    #[arg(long, value_name = "PEER")]
    bootstrap: Vec<String>,
    /// Do not ask the router for a port mapping in this run.
    #[arg(long)]
    no_upnp: bool,
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
    let dir = Profile::resolve_dir(args.profile.as_deref()).context("choosing a profile")?;
    let mut config = NodeConfig::default();
    config.crust.listen = args.listen.clone();
    // Off here wins; on here still needs the profile's setting (chat-core
    // ANDs the two).
    config.crust.upnp = !args.no_upnp;
    for entry in &args.bootstrap {
        let contact = entry
            .parse()
            .map_err(|e| anyhow!("--bootstrap {entry:?}: {e}"))?;
        config.crust.bootstrap_contacts.push(contact);
    }
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
    let no_upnp = args.no_upnp;
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
