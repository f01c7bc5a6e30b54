//! `crust-chat`: the terminal client. Opens (or creates) a profile, starts
//! the node, and runs one loop: event → update the app → draw.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use chat_core::{KeyError, Node, OpenError, Profile, ProfileError};
use chat_tui::{App, AppConfig, Effect, Zone};
use clap::Parser;
use crossterm::event::{
    DisableBracketedPaste, DisableMouseCapture, EnableBracketedPaste, EnableMouseCapture,
    Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers,
};
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use tokio::sync::mpsc;

/// Crust Chat in the terminal: peer-to-peer, no server in the middle.
#[derive(Debug, Parser)]
#[command(name = "crust-chat", version = chat_core::VERSION, about)]
struct Cli {
    #[command(flatten)]
    node: chat_core::cli::NodeArgs,
    /// Write logs here (default: crust-chat.log in the profile directory).
    /// Logs never go to the screen; RUST_LOG sets the level.
    #[arg(long, value_name = "FILE")]
    log_file: Option<PathBuf>,
    /// Display name for a new profile (default: $USER).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// No screen: read commands from stdin, write events to stdout as JSON
    /// lines (for scripts and tests; `help` lists the commands). A sealed
    /// profile's passphrase comes from $CRUST_CHAT_PASSPHRASE.
    #[arg(long)]
    headless: bool,
    /// No chat: probe the router in front of this computer against a probe
    /// server (`--server`), print what was found and the exact report, and
    /// send it to a collector (`--collector`) if you agree.
    #[arg(long)]
    probe: bool,
    #[command(flatten, next_help_heading = "Router probe (with --probe)")]
    tester: crust::probe::TesterArgs,
}

/// An error already explained to the user: exit with this status.
#[derive(Debug)]
struct Explained(i32);

impl std::fmt::Display for Explained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}", self.0)
    }
}

impl std::error::Error for Explained {}

fn fail(message: impl std::fmt::Display) -> anyhow::Error {
    eprintln!("crust-chat: {message}");
    Explained(1).into()
}

fn main() {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => {}
        Err(e) => {
            if let Some(Explained(code)) = e.downcast_ref::<Explained>() {
                std::process::exit(*code);
            }
            eprintln!("crust-chat: {e:#}");
            std::process::exit(1);
        }
    }
}

/// `crust-chat --probe`: the tester's flow, as `crust-node probe` runs it.
fn probe(cli: &Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let mut stdout = std::io::stdout();
    runtime
        .block_on(crust::probe::run_tester(
            &cli.tester,
            !cli.node.no_upnp,
            &mut stdout,
            &mut crust::probe::ask_on_stdin,
        ))
        .map_err(fail)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn default_name() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .ok()
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "me".to_owned())
}

fn setup_logging(path: &Path) -> anyhow::Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open the log file {}", path.display()))?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .init();
    Ok(())
}

/// Reads a passphrase without echo: from $CRUST_CHAT_PASSPHRASE, or the
/// terminal.
fn read_passphrase(prompt: &str) -> anyhow::Result<Option<String>> {
    if !std::io::stdin().is_terminal() {
        let mut line = String::new();
        eprint!("{prompt}");
        std::io::stdin().read_line(&mut line)?;
        return Ok(Some(line.trim_end_matches(['\r', '\n']).to_owned()));
    }
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    enable_raw_mode()?;
    let mut text = String::new();
    let result = loop {
        match crossterm::event::read() {
            Ok(TermEvent::Key(KeyEvent {
                code,
                modifiers,
                kind,
                ..
            })) if kind != KeyEventKind::Release => match code {
                KeyCode::Enter => break Ok(Some(text)),
                KeyCode::Esc => break Ok(None),
                KeyCode::Char('c') if modifiers.contains(KeyModifiers::CONTROL) => break Ok(None),
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Char(c) => text.push(c),
                _ => {}
            },
            Ok(_) => {}
            Err(e) => break Err(e.into()),
        }
    };
    let _ = disable_raw_mode();
    eprintln!();
    result
}

/// Opens the profile in `dir`, creating it on first use; asks for the
/// passphrase when the key is sealed.
fn open_profile(dir: &Path, cli: &Cli) -> anyhow::Result<Profile> {
    if !Profile::exists(dir) {
        let name = cli.name.clone().unwrap_or_else(default_name);
        return Profile::create(dir, &name, None).map_err(|e| profile_error(dir, e));
    }
    let env = std::env::var("CRUST_CHAT_PASSPHRASE").ok();
    let mut passphrase: Option<String> = None;
    let mut tries = 0;
    loop {
        match Profile::open(dir, passphrase.as_deref().or(env.as_deref())) {
            Ok(p) => return Ok(p),
            Err(ProfileError::Key(KeyError::PassphraseRequired))
            | Err(ProfileError::Key(KeyError::WrongPassphrase))
                if tries < 3 =>
            {
                if tries > 0 || env.is_some() {
                    eprintln!("Wrong passphrase.");
                }
                tries += 1;
                if cli.headless {
                    return Err(fail(
                        "the profile is protected by a passphrase: set CRUST_CHAT_PASSPHRASE for --headless.",
                    ));
                }
                match read_passphrase(&format!("Passphrase for {}: ", dir.display()))? {
                    Some(p) => passphrase = Some(p),
                    None => return Err(Explained(1).into()),
                }
            }
            Err(ProfileError::Key(KeyError::WrongPassphrase)) => {
                return Err(fail("wrong passphrase, three times; giving up."));
            }
            Err(e) => return Err(profile_error(dir, e)),
        }
    }
}

fn profile_error(dir: &Path, e: ProfileError) -> anyhow::Error {
    match e {
        ProfileError::InUse(_) => fail(format_args!(
            "the profile {} is open in another crust-chat.\n  Close that one first, or start with --profile OTHER_DIR for a second identity.",
            dir.display()
        )),
        other => fail(format_args!(
            "cannot open the profile {}: {other}",
            dir.display()
        )),
    }
}

fn open_error(e: OpenError) -> anyhow::Error {
    let text = e.to_string();
    if let OpenError::Service(ref service) = e {
        let source =
            std::error::Error::source(service).and_then(|s| s.downcast_ref::<std::io::Error>());
        if source.is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse) {
            return fail(format_args!(
                "{text}\n  The port is taken (another crust-chat?). Choose another with --listen IP:PORT (port 0 picks a free one)."
            ));
        }
    }
    fail(format_args!("cannot start: {text}"))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if cli.probe {
        return probe(&cli);
    }
    let dir = Profile::resolve_dir(cli.node.profile.as_deref()).map_err(fail)?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| fail(format_args!("cannot create {}: {e}", dir.display())))?;
    let log_path = cli
        .log_file
        .clone()
        .unwrap_or_else(|| dir.join("crust-chat.log"));
    setup_logging(&log_path).map_err(|e| fail(format_args!("{e:#}")))?;
    let profile = open_profile(&dir, &cli)?;
    let upnp = profile.settings().upnp && !cli.node.no_upnp;
    let config = cli.node.node_config();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let (node, events) = Node::open(profile, config).await.map_err(open_error)?;
        tracing::info!(id = %node.id(), "node started");
        let result = if cli.headless {
            let input = tokio::io::BufReader::new(tokio::io::stdin());
            chat_core::headless::run(node.clone(), events, input, tokio::io::stdout())
                .await
                .context("headless mode: reading stdin or writing stdout failed")
        } else {
            ui_loop(node.clone(), events, upnp).await
        };
        let _ = tokio::time::timeout(Duration::from_secs(3), node.shutdown()).await;
        result
    })
}

/// Puts the terminal back: on every exit path, and from the panic hook.
fn restore_terminal() {
    let _ = disable_raw_mode();
    let _ = crossterm::execute!(
        std::io::stdout(),
        DisableBracketedPaste,
        DisableMouseCapture,
        LeaveAlternateScreen,
        crossterm::cursor::Show
    );
}

struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

async fn ui_loop(node: Node, mut events: chat_core::NodeEvents, upnp: bool) -> anyhow::Result<()> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        previous(info);
    }));
    enable_raw_mode().context("this program needs a terminal")?;
    let _guard = TerminalGuard;
    crossterm::execute!(
        std::io::stdout(),
        EnterAlternateScreen,
        EnableMouseCapture,
        EnableBracketedPaste
    )?;
    let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
    let size = terminal.size()?;

    let (term_tx, mut term_rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("terminal-input".into())
        .spawn(move || {
            while let Ok(event) = crossterm::event::read() {
                if term_tx.send(event).is_err() {
                    break;
                }
            }
        })?;

    let mut app = App::new(
        Box::new(node.clone()),
        AppConfig {
            zone: Zone::Local,
            upnp,
            now_ms: now_ms(),
            size: (size.width, size.height),
        },
    );
    app.on_report(node.network_report().await);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let stop = termination();
    tokio::pin!(stop);
    loop {
        terminal.draw(|frame| chat_tui::render(&app, frame))?;
        tokio::select! {
            event = term_rx.recv() => {
                let Some(event) = event else { break };
                app.set_now(now_ms());
                handle_terminal(&mut app, event);
                while let Ok(event) = term_rx.try_recv() {
                    handle_terminal(&mut app, event);
                }
            }
            event = events.recv() => {
                let Some(event) = event else { break };
                app.set_now(now_ms());
                app.on_node_event(event);
                while let Some(event) = events.try_recv() {
                    app.on_node_event(event);
                }
            }
            _ = tick.tick() => app.on_tick(now_ms()),
            () = &mut stop => break,
        }
        let mut quit = false;
        for effect in app.take_effects() {
            match effect {
                Effect::Quit => quit = true,
                Effect::RefreshReport => app.on_report(node.network_report().await),
                Effect::Copy(text) => {
                    let b64 = data_encoding::BASE64.encode(text.as_bytes());
                    let mut out = std::io::stdout();
                    let _ = write!(out, "\x1b]52;c;{b64}\x07");
                    let _ = out.flush();
                }
            }
        }
        if quit {
            break;
        }
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGHUP, which end the program like Ctrl+C does:
/// the terminal is put back and the node shut down cleanly.
#[cfg(unix)]
async fn termination() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(mut terminate), Ok(mut hangup)) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = hangup.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn termination() {
    std::future::pending().await
}

fn handle_terminal(app: &mut App, event: TermEvent) {
    match event {
        TermEvent::Key(key) => app.on_key(key),
        TermEvent::Paste(text) => app.on_paste(&text),
        TermEvent::Mouse(mouse) => app.on_mouse(mouse),
        TermEvent::Resize(w, h) => app.on_resize(w, h),
        _ => {}
    }
}
