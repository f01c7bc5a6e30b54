//! Desktop notifications behind a small trait, so tests can count them
//! and the binary shows them.

use std::fmt::Debug;

/// Where notifications of new messages go (the app asks for one when a
/// message arrives while the window is not focused).
pub trait Notifier: Debug + Send {
    /// Shows a notification; must not block the UI thread.
    fn notify(&mut self, title: &str, body: &str);
}

/// Desktop notifications through the freedesktop `notify-send` tool when
/// it is installed (a D-Bus client library would add a large dependency
/// tree for one call), run on a short-lived thread so the UI never waits;
/// without the tool the window's attention request is all.
#[derive(Debug, Default, Clone, Copy)]
pub struct DesktopNotifier;

impl Notifier for DesktopNotifier {
    fn notify(&mut self, title: &str, body: &str) {
        let (title, body) = (title.to_owned(), body.to_owned());
        let _ = std::thread::Builder::new()
            .name("notify-send".into())
            .spawn(move || {
                let _ = std::process::Command::new("notify-send")
                    .args(["--app-name=Crust Chat", "--icon=crust-chat", &title, &body])
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
            });
    }
}
