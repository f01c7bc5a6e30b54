//! The window driven by `egui_kittest`: widgets found by label or role,
//! clicked and typed into, with real chat-core nodes on loopback behind
//! the worker.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chat_core::{ContactState, MessageState, NodeConfig, Profile};
use chat_gui::{App, Kind, Notifier, Screen, Worker};
use egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

const NETWORK: &str = "chat-gui-harness";

fn app(dir: &Path) -> App {
    App::new(Worker::spawn(dir.to_owned(), NodeConfig::loopback(NETWORK)).unwrap())
}

/// Notifications the app showed: (title, body).
#[derive(Debug, Clone, Default)]
struct Shown(Arc<Mutex<Vec<(String, String)>>>);

impl Notifier for Shown {
    fn notify(&mut self, title: &str, body: &str) {
        self.0
            .lock()
            .unwrap()
            .push((title.to_owned(), body.to_owned()));
    }
}

impl Shown {
    fn list(&self) -> Vec<(String, String)> {
        self.0.lock().unwrap().clone()
    }
}

/// Tells the window whether it has the keyboard focus, as the window
/// system does.
fn set_focused(h: &mut Harness<'static, App>, focused: bool) {
    let input = h.input_mut();
    input.focused = focused;
    input
        .viewports
        .get_mut(&egui::ViewportId::ROOT)
        .unwrap()
        .focused = Some(focused);
}

fn harness(app: App) -> Harness<'static, App> {
    Harness::builder()
        .with_size([1000.0, 700.0])
        .build_state(|ctx, app: &mut App| app.ui(ctx), app)
}

/// A window whose profile already exists, past the welcome screen.
fn running(root: &Path, name: &str) -> Harness<'static, App> {
    running_with(root, name, Shown::default())
}

/// [`running`], with notifications going to `shown`.
fn running_with(root: &Path, name: &str, shown: Shown) -> Harness<'static, App> {
    let dir = root.join(name);
    drop(Profile::create(&dir, name, None).unwrap());
    let mut h = harness(app(&dir).with_notifier(shown));
    wait(&mut h, "the main screen", |a| {
        matches!(a.screen, Screen::Main)
    });
    h
}

/// Steps the window until `done` holds (the worker answers in the
/// background), failing after 20 s.
fn wait(h: &mut Harness<'static, App>, what: &str, done: impl Fn(&App) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        h.step();
        if done(h.state()) {
            h.step();
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; status {:?}, input {:?}",
            h.state().status,
            h.state().conversation.input
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Steps two windows until `done` holds for the first.
fn wait2(
    a: &mut Harness<'static, App>,
    b: &mut Harness<'static, App>,
    what: &str,
    done: impl Fn(&App) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        a.step();
        b.step();
        if done(a.state()) {
            a.step();
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn type_into(h: &mut Harness<'static, App>, label: &str, text: &str) {
    h.get_by_label(label).click();
    h.step();
    h.get_by_label(label).type_text(text);
    h.step();
}

fn click(h: &mut Harness<'static, App>, label: &str) {
    h.get_by_label(label).click();
    h.step();
    h.step();
}

fn menu(h: &mut Harness<'static, App>, menu: &str, item: &str) {
    click(h, menu);
    click(h, item);
    // A new window measures itself on its first frames; let it settle
    // before clicking inside it.
    h.run_steps(3);
}

#[test]
fn first_run_creates_a_profile_and_explains_how_to_add_a_friend() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("new");
    let mut h = harness(app(&dir));
    wait(&mut h, "the first-run screen", |a| {
        matches!(a.screen, Screen::Setup(_))
    });
    h.get_by_label("Welcome to Crust Chat");

    // An empty name is refused, and nothing is created.
    click(&mut h, "Create profile");
    assert!(matches!(&h.state().screen, Screen::Setup(s) if s.error.is_some()));
    assert!(!Profile::exists(&dir));

    type_into(&mut h, "Your name", "Alice");
    type_into(&mut h, "Passphrase (optional)", "open sesame");
    type_into(&mut h, "Repeat passphrase", "open sesame");
    click(&mut h, "Create profile");
    wait(&mut h, "the welcome screen", |a| {
        matches!(a.screen, Screen::Welcome)
    });
    h.get_by_label("Hello, Alice! Your profile is ready.");
    h.get_by_label("How to add a friend");
    assert_eq!(h.state().me.as_ref().unwrap().name, "Alice");
    assert!(Profile::exists(&dir));

    click(&mut h, "Start chatting");
    assert!(matches!(h.state().screen, Screen::Main));
    h.get_by_label("No contacts yet.");
    drop(h);

    // The passphrase sealed the key: the next start asks for it.
    let mut h = harness(app(&dir));
    wait(&mut h, "the unlock screen", |a| {
        matches!(a.screen, Screen::Unlock { .. })
    });
    type_into(&mut h, "Passphrase", "wrong");
    click(&mut h, "Unlock");
    wait(&mut h, "the wrong-passphrase notice", |a| {
        matches!(a.screen, Screen::Unlock { wrong: true, .. })
    });
    h.get_by_label("Wrong passphrase.");
}

#[test]
fn two_windows_befriend_chat_and_see_delivery() {
    let root = tempfile::tempdir().unwrap();
    let alice_shown = Shown::default();
    let bob_shown = Shown::default();
    let mut alice = running_with(root.path(), "Alice", alice_shown.clone());
    let mut bob = running_with(root.path(), "Bob", bob_shown.clone());

    // Alice shows her invite, with a QR code image.
    menu(&mut alice, "Chat", "My invite…");
    wait(&mut alice, "the invite", |a| {
        a.dialogs.invite.as_ref().is_some_and(|i| i.code.is_some())
    });
    assert!(
        alice
            .state()
            .dialogs
            .invite
            .as_ref()
            .unwrap()
            .has_qr_texture()
    );
    alice.get_by_label("QR code of my invite");
    let code = alice
        .state()
        .dialogs
        .invite
        .as_ref()
        .unwrap()
        .code
        .clone()
        .unwrap();
    assert!(code.starts_with("crust:"));
    click(&mut alice, "Close window");

    // Bob adds her with it.
    menu(&mut bob, "Chat", "Add contact…");
    type_into(&mut bob, "Invite code", &code);
    type_into(&mut bob, "Message with the request", "hi, it's Bob");
    click(&mut bob, "Send request");
    wait(&mut bob, "the contact", |a| {
        a.contact_named("Alice").is_some()
    });
    assert!(bob.state().dialogs.add_contact.is_none());
    let alice_id = bob.state().contact_named("Alice").unwrap().id;
    assert_eq!(bob.state().selected(), Some(alice_id));
    assert_eq!(
        bob.state().contact_named("Alice").unwrap().state,
        ContactState::RequestSent
    );

    // Alice sees the request in the sidebar and accepts it.
    wait2(&mut alice, &mut bob, "the request", |a| {
        !a.requests.is_empty()
    });
    click(&mut alice, "🔔 Friend requests (1)");
    alice.get_by_label("“hi, it's Bob”");
    click(&mut alice, "Accept");
    wait2(&mut alice, &mut bob, "Bob as a friend", |a| {
        a.contact_named("Bob")
            .is_some_and(|c| c.state == ContactState::Friend)
    });
    assert!(alice.state().requests.is_empty());
    // Accepting opened the conversation; close it so the message arrives
    // unread (an open, focused conversation is read at once).
    assert!(alice.state().selected().is_some());
    alice.state_mut().conversation = chat_gui::Conversation::default();
    wait2(&mut bob, &mut alice, "the acceptance", |b| {
        b.contact_named("Alice")
            .is_some_and(|c| c.state == ContactState::Friend)
    });

    // Alice's window is in the background when Bob writes.
    set_focused(&mut alice, false);

    // Bob writes; the message shows in his window and becomes delivered.
    let input = |h: &Harness<'static, App>| {
        h.get_by_role(Role::MultilineTextInput).click();
    };
    input(&bob);
    bob.step();
    bob.get_by_role(Role::MultilineTextInput)
        .type_text("hello Alice\nsecond line");
    bob.step();
    click(&mut bob, "Send");
    wait(&mut bob, "the sent message", |b| {
        b.conversation.messages().len() == 1
    });
    assert!(bob.state().conversation.input.is_empty());
    let sent = bob.state().conversation.messages()[0].clone();
    assert_eq!(sent.text, "hello Alice\nsecond line");
    wait2(&mut bob, &mut alice, "delivery", |b| {
        b.conversation.state_of(&sent.id) >= Some(MessageState::Delivered)
    });
    bob.get_by_label("✔✔");

    // Alice has one unread message: in the sidebar and the window title.
    wait2(&mut alice, &mut bob, "the unread count", |a| {
        a.contact_named("Bob").is_some_and(|c| c.unread == 1)
    });
    assert_eq!(alice.state().title(), "Crust Chat (1)");
    // Unfocused: one desktop notification, with Bob's name and the text.
    assert_eq!(
        alice_shown.list(),
        [("Bob".to_owned(), "hello Alice\nsecond line".to_owned())]
    );
    assert_eq!(alice.state().notifications, 1);
    set_focused(&mut alice, true);
    // She opens the conversation: the marker, the text, and it is read.
    alice.get_by_label_contains("Bob  (1)").click();
    wait(&mut alice, "the history", |a| a.conversation.loaded);
    assert!(alice.state().conversation.has_unread_marker());
    alice.get_by_label("— new messages —");
    alice.get_by_label("hello Alice");
    alice.get_by_label("second line");
    wait2(&mut alice, &mut bob, "the message read", |a| {
        a.contact_named("Bob").is_some_and(|c| c.unread == 0)
    });
    assert_eq!(alice.state().title(), "Crust Chat");
    wait2(&mut bob, &mut alice, "the read receipt", |b| {
        b.conversation.state_of(&sent.id) == Some(MessageState::Read)
    });

    // Typing notices.
    input(&alice);
    alice.step();
    alice.get_by_role(Role::MultilineTextInput).type_text("hi");
    alice.step();
    wait2(&mut bob, &mut alice, "the typing notice", |b| {
        b.conversation.typing
    });
    bob.get_by_label("Alice is typing…");
    // Enter sends.
    input(&alice);
    alice.step();
    alice.key_press(egui::Key::Enter);
    alice.step();
    wait2(&mut bob, &mut alice, "Alice's reply", |b| {
        b.conversation.messages().len() == 2
    });
    assert_eq!(bob.state().conversation.messages()[1].text, "hi");
    assert!(!bob.state().conversation.typing);
    // Bob's window has the focus: no notification, for either message.
    assert!(bob_shown.list().is_empty());
    assert_eq!(alice_shown.list().len(), 1);

    // Search finds both messages, in all conversations.
    menu(&mut bob, "Chat", "Search…");
    type_into(&mut bob, "Words", "hello");
    click(&mut bob, "Search");
    wait(&mut bob, "search results", |b| {
        b.dialogs
            .search
            .as_ref()
            .is_some_and(|s| s.results.is_some())
    });
    bob.get_by_label("1 result(s) for “hello”:");
    bob.get_by_label_contains("Bob: hello Alice");
    click(&mut bob, "Close window");

    // Contact details: the safety code agrees on both sides; rename.
    menu(&mut bob, "Contact", "Details…");
    let code = chat_core::safety_code(&alice_id, &bob.state().me.as_ref().unwrap().id);
    bob.get_by_label(&code);
    click(&mut bob, "Mark as verified");
    wait(&mut bob, "verified", |b| {
        b.contact_named("Alice").is_some_and(|c| c.verified)
    });
    bob.get_by_label("✔ Verified");
}

#[test]
fn every_dialog_opens_from_the_menus_and_closes() {
    let root = tempfile::tempdir().unwrap();
    let mut h = running(root.path(), "Carol");
    let dialogs = [
        ("Chat", "Add contact…", "Add contact"),
        ("Chat", "My invite…", "My invite"),
        ("Chat", "Friend requests…", "Friend requests"),
        ("Chat", "Search…", "Search messages"),
        ("Tools", "Network test…", "Network test"),
        ("Tools", "Settings…", "Settings"),
        ("Help", "How to add a friend", "How to add a friend"),
        ("Help", "About Crust Chat", "About Crust Chat"),
    ];
    for (menu_name, item, title) in dialogs {
        menu(&mut h, menu_name, item);
        assert!(
            h.query_all_by_label(title).next().is_some(),
            "no window {title:?}"
        );
        match title {
            "Friend requests" => {
                h.get_by_label("No friend requests.");
            }
            "About Crust Chat" => {
                h.get_by_label(&format!("Version {}", chat_core::VERSION));
            }
            "My invite" => {
                wait(&mut h, "the invite", |a| {
                    a.dialogs
                        .invite
                        .as_ref()
                        .is_some_and(|i| i.has_qr_texture())
                });
            }
            "Network test" => {
                wait(&mut h, "the network report", |a| {
                    matches!(a.dialogs.network, Some(Some(_)))
                });
            }
            "Settings" => {
                wait(&mut h, "the settings", |a| {
                    a.dialogs
                        .settings
                        .as_ref()
                        .is_some_and(|s| s.loaded.is_some())
                });
                // The DHT role shows as a choice of three, and the choice
                // goes into the settings that are saved.
                let form = h.state().dialogs.settings.as_ref().unwrap();
                assert_eq!(form.dht_mode, chat_core::DhtMode::Auto);
                click(&mut h, "server: always serve others (a public host)");
                let form = h.state().dialogs.settings.as_ref().unwrap();
                assert_eq!(form.parse().unwrap().dht_mode, chat_core::DhtMode::Server);
                // A bad listen address is refused with a message, and the
                // form stays open with what was typed.
                h.state_mut().dialogs.settings.as_mut().unwrap().listen = "not an address".into();
                click(&mut h, "Save");
                let error = h.state().dialogs.settings.as_ref().unwrap().error.clone();
                assert!(error.unwrap().contains("is not IP:PORT"));
                let form = h.state().dialogs.settings.as_ref().unwrap();
                assert!(form.listen.contains("not an address"));
            }
            _ => {}
        }
        click(&mut h, "Close window");
        let d = &h.state().dialogs;
        assert!(
            d.add_contact.is_none()
                && d.invite.is_none()
                && !d.requests
                && d.search.is_none()
                && d.network.is_none()
                && d.settings.is_none()
                && !d.help
                && !d.about,
            "{title:?} did not close"
        );
    }

    // Theme choice.
    menu(&mut h, "View", "Dark theme");
    assert_eq!(h.state().theme, chat_gui::Theme::Dark);
    h.step();
    assert!(h.ctx.style().visuals.dark_mode);
    menu(&mut h, "View", "Light theme");
    h.step();
    assert!(!h.ctx.style().visuals.dark_mode);

    // A bad invite code is refused with the reason.
    h.state_mut().open_dialog(Kind::AddContact);
    h.step();
    type_into(&mut h, "Invite code", "crust:AAAA");
    click(&mut h, "Send request");
    wait(&mut h, "the error", |a| {
        a.dialogs
            .add_contact
            .as_ref()
            .is_some_and(|d| d.error.is_some())
    });
    assert!(h.state().contacts.is_empty());
}

/// A profile `name` with `n` messages ("message 0" oldest) sent to a
/// friend who is away (they wait in the outbox). Returns the friend's id.
fn with_history(root: &Path, name: &str, n: usize) -> chat_core::PeerId {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (friend, _events) = chat_core::Node::open(
            Profile::create(&root.join("away"), "Away", None).unwrap(),
            NodeConfig::loopback(NETWORK),
        )
        .await
        .unwrap();
        let invite = friend.my_invite().unwrap();
        friend.shutdown().await;
        let (node, _events) = chat_core::Node::open(
            Profile::create(&root.join(name), name, None).unwrap(),
            NodeConfig::loopback(NETWORK),
        )
        .await
        .unwrap();
        node.add_contact(&invite, "hi").unwrap();
        let texts: Vec<String> = (0..n).map(|i| format!("message {i}")).collect();
        node.send_many(&invite.peer, &texts).unwrap();
        node.shutdown().await;
        invite.peer
    })
}

#[test]
fn a_long_conversation_opens_with_its_newest_page_and_pages_in_older_ones_on_scrolling_up() {
    let root = tempfile::tempdir().unwrap();
    let page = chat_gui::HISTORY_PAGE;
    let total = 2 * page + 50;
    let away = with_history(root.path(), "Dave", total);
    let mut h = harness(app(&root.path().join("Dave")).with_notifier(Shown::default()));
    wait(&mut h, "the contact", |a| {
        matches!(a.screen, Screen::Main) && !a.contacts.is_empty()
    });
    h.get_by_label_contains("Away").click();
    wait(&mut h, "the history", |a| a.conversation.row_count() > 0);
    assert_eq!(h.state().selected(), Some(away));
    // Only the newest page, and the view at its bottom.
    let loaded = |h: &Harness<'static, App>| h.state().conversation.messages().len();
    assert_eq!(loaded(&h), page);
    assert!(h.state().conversation.has_older());
    assert_eq!(
        h.state().conversation.messages()[0].text,
        format!("message {}", total - page)
    );
    h.get_by_label(&format!("message {}", total - 1));

    // Page Up, a page at a time, until the view nears the top of what is
    // loaded and the next page is asked for: it comes, and the view stays
    // on the message it showed.
    let scroll_until = |h: &mut Harness<'static, App>, what: &str, done: &dyn Fn(&App) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(h.state()) {
            // One frame with the key in it (`key_press` would take two:
            // a page could then arrive between them, unseen).
            h.input_mut().events.push(egui::Event::Key {
                key: egui::Key::PageUp,
                physical_key: None,
                pressed: true,
                repeat: false,
                modifiers: egui::Modifiers::NONE,
            });
            h.step();
            assert!(Instant::now() < deadline, "timed out scrolling to {what}");
        }
    };
    scroll_until(&mut h, "the top of the page", &|a| {
        a.conversation.loading_older()
    });
    assert_eq!(loaded(&h), page);
    let top = h.state().conversation.top_text().unwrap().to_owned();
    let n: usize = top.strip_prefix("message ").unwrap().parse().unwrap();
    assert!((total - page..total - page + 60).contains(&n), "{top}");
    wait(&mut h, "the older page", |a| {
        a.conversation.messages().len() == 2 * page
    });
    h.step();
    assert_eq!(h.state().conversation.top_text(), Some(top.as_str()));
    h.get_by_label(&top);
    assert!(h.state().conversation.has_older());

    // Scrolling on reaches the start; nothing more is asked for then.
    scroll_until(&mut h, "the start", &|a| {
        a.conversation.top_text() == Some("message 0")
    });
    assert_eq!(loaded(&h), total);
    assert!(!h.state().conversation.has_older());
    assert!(!h.state().conversation.loading_older());
    h.get_by_label("message 0");
}
