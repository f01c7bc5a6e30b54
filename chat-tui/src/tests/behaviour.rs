//! Key-driven behaviour: sending, commands, navigation, paging, mouse.

use chat_core::{ContactState, Event, Invite, MessageState};
use crossterm::event::{KeyCode, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};

use super::fake::Fake;
use super::{app_with, now, peer, press, press_with, screen, type_text};
use crate::Effect;

#[test]
fn enter_sends_to_the_open_conversation_and_ctrl_j_makes_a_new_line() {
    let fake = Fake::populated();
    let mut app = app_with(&fake, 80, 24);
    press_with(&mut app, KeyCode::Char('1'), KeyModifiers::ALT);
    type_text(&mut app, "hello");
    press_with(&mut app, KeyCode::Char('j'), KeyModifiers::CONTROL);
    type_text(&mut app, "bob");
    press(&mut app, KeyCode::Enter);
    let last = fake.messages(2).last().unwrap().clone();
    assert_eq!(last.text, "hello\nbob");
    assert_eq!(last.state, MessageState::Queued);
    assert!(
        app.conversation()
            .unwrap()
            .messages()
            .iter()
            .any(|m| m.id == last.id)
    );
    // Typing was announced and withdrawn.
    let typing = fake.0.borrow().typing.clone();
    assert_eq!(typing.first(), Some(&(peer(2), true)));
    assert_eq!(typing.last(), Some(&(peer(2), false)));
    // An empty input sends nothing.
    press(&mut app, KeyCode::Enter);
    assert_eq!(fake.messages(2).last().unwrap().id, last.id);
}

#[test]
fn a_double_slash_sends_a_message_starting_with_a_slash() {
    let fake = Fake::populated();
    let mut app = app_with(&fake, 80, 24);
    type_text(&mut app, "//shrug");
    press(&mut app, KeyCode::Enter);
    assert_eq!(fake.messages(3).last().unwrap().text, "/shrug");
}

#[test]
fn tab_ctrl_n_p_and_alt_numbers_move_between_contacts() {
    let mut app = app_with(&Fake::populated(), 80, 24);
    let selected = |app: &crate::App| app.conversation().unwrap().contact;
    // Starts on carol, who has unread messages; they are now read.
    assert_eq!(selected(&app), peer(3));
    assert_eq!(app.contacts()[1].unread, 0);
    press(&mut app, KeyCode::Tab);
    assert_eq!(selected(&app), peer(4));
    press(&mut app, KeyCode::Tab);
    assert_eq!(selected(&app), peer(2));
    press(&mut app, KeyCode::BackTab);
    assert_eq!(selected(&app), peer(4));
    press_with(&mut app, KeyCode::Char('n'), KeyModifiers::CONTROL);
    assert_eq!(selected(&app), peer(2));
    press_with(&mut app, KeyCode::Char('p'), KeyModifiers::CONTROL);
    assert_eq!(selected(&app), peer(4));
    press_with(&mut app, KeyCode::Char('2'), KeyModifiers::ALT);
    assert_eq!(selected(&app), peer(3));
}

#[test]
fn alt_a_goes_to_the_next_unread_conversation() {
    let fake = Fake::populated();
    let mut app = app_with(&fake, 80, 24);
    press_with(&mut app, KeyCode::Char('1'), KeyModifiers::ALT);
    press_with(&mut app, KeyCode::Char('a'), KeyModifiers::ALT);
    assert!(app.notice().unwrap().text.contains("No unread"));
    let m = fake.incoming(4, now(), "finally");
    fake.0.borrow_mut().contacts[2].unread = 1;
    app.on_node_event(Event::MessageReceived(m));
    assert!(screen(&app).contains("1 pending"));
    press_with(&mut app, KeyCode::Char('a'), KeyModifiers::ALT);
    assert_eq!(app.conversation().unwrap().contact, peer(4));
}

#[test]
fn incoming_message_in_the_open_conversation_is_shown_and_read() {
    let fake = Fake::populated();
    let mut app = app_with(&fake, 80, 24);
    press_with(&mut app, KeyCode::Char('1'), KeyModifiers::ALT);
    app.on_node_event(Event::Typing {
        contact: peer(2),
        typing: true,
    });
    assert!(screen(&app).contains("bob is typing…"));
    let m = fake.incoming(2, now(), "just arrived");
    fake.0.borrow_mut().contacts[0].unread = 1;
    app.on_node_event(Event::MessageReceived(m));
    let s = screen(&app);
    assert!(s.contains("bob: just arrived"));
    assert!(!s.contains("is typing"));
    assert_eq!(fake.0.borrow().contacts[0].unread, 0);
}

#[test]
fn accept_and_decline_by_command_with_completion() {
    let fake = Fake::populated();
    let mut app = app_with(&fake, 80, 24);
    type_text(&mut app, "/acc");
    press(&mut app, KeyCode::Tab);
    type_text(&mut app, "e");
    press(&mut app, KeyCode::Tab);
    assert!(screen(&app).contains("> /accept eve"));
    press(&mut app, KeyCode::Enter);
    assert!(fake.0.borrow().requests.is_empty());
    assert!(
        app.contacts()
            .iter()
            .any(|c| c.name == "eve" && c.state == ContactState::Friend)
    );
    assert_eq!(app.conversation().unwrap().contact, peer(5));
    type_text(&mut app, "/decline");
    press(&mut app, KeyCode::Enter);
    assert!(app.notice().unwrap().text.contains("No pending"));
    type_text(&mut app, "/nosuch");
    press(&mut app, KeyCode::Enter);
    assert!(app.notice().unwrap().error);
}

#[test]
fn completion_lists_several_candidates() {
    let mut app = app_with(&Fake::populated(), 80, 24);
    type_text(&mut app, "/re");
    press(&mut app, KeyCode::Tab);
    let notice = app.notice().unwrap().text.clone();
    assert!(
        notice.contains("/requests") && notice.contains("/rename") && notice.contains("/remove")
    );
}

#[test]
fn pasting_an_invite_into_add_contact_sends_a_request() {
    let fake = Fake::populated();
    let mut app = app_with(&fake, 80, 24);
    let frank = Invite {
        peer: peer(6),
        name: "frank".to_owned(),
        addrs: vec![std::net::SocketAddr::from(([127, 0, 0, 1], 4000)).into()],
        token: [9, 9, 9, 9],
    };
    press(&mut app, KeyCode::F(4));
    app.on_paste(&format!("{frank}\n"));
    press(&mut app, KeyCode::Tab);
    type_text(&mut app, "hi frank");
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.popup_name(), None);
    assert_eq!(fake.0.borrow().added, [(peer(6), "hi frank".to_owned())]);
    assert_eq!(app.conversation().unwrap().contact, peer(6));
    assert!(screen(&app).contains("request sent"));
    // The same by command, with our own invite: refused clearly.
    let mine = fake.0.borrow().me.unwrap();
    let own = Invite {
        peer: mine,
        name: "alice".to_owned(),
        addrs: vec![],
        token: [0; 4],
    };
    type_text(&mut app, &format!("/add {own}"));
    press(&mut app, KeyCode::Enter);
    assert!(app.notice().unwrap().text.contains("our own"));
}

#[test]
fn contact_popup_verifies_renames_and_blocks() {
    let fake = Fake::populated();
    let mut app = app_with(&fake, 80, 24);
    press_with(&mut app, KeyCode::Char('2'), KeyModifiers::ALT);
    press(&mut app, KeyCode::F(2));
    assert!(screen(&app).contains(&chat_core::safety_code(&peer(1), &peer(3))[..17]));
    press(&mut app, KeyCode::Char('v'));
    assert!(fake.0.borrow().contacts[1].verified);
    press(&mut app, KeyCode::Char('r'));
    press_with(&mut app, KeyCode::Char('u'), KeyModifiers::CONTROL);
    type_text(&mut app, "caroline");
    press(&mut app, KeyCode::Enter);
    assert!(
        fake.0
            .borrow()
            .contacts
            .iter()
            .any(|c| c.name == "caroline")
    );
    press(&mut app, KeyCode::Char('b'));
    press(&mut app, KeyCode::Char('y'));
    assert_eq!(fake.0.borrow().blocked, [peer(3)]);
    press(&mut app, KeyCode::Esc);
    assert_eq!(app.popup_name(), None);
    assert!(screen(&app).contains("blocked"));
}

#[test]
fn search_jumps_to_the_hit() {
    let fake = Fake::populated();
    for i in 0..1000 {
        fake.incoming(7, now() - 2_000_000 + i * 1000, &format!("filler {i}"));
    }
    fake.0
        .borrow_mut()
        .contacts
        .push(super::fake::contact(7, "zed", ContactState::Friend));
    let needle = fake.messages(7)[10].clone();
    let mut app = app_with(&fake, 80, 24);
    type_text(&mut app, "/search filler 10");
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.popup_name(), Some("search"));
    // "filler 10" matches 10, 100..109, 1000..: choose the oldest one.
    for _ in 0..20 {
        press(&mut app, KeyCode::Down);
    }
    press(&mut app, KeyCode::Enter);
    let conv = app.conversation().unwrap();
    assert_eq!(conv.contact, peer(7));
    assert_eq!(conv.highlight(), Some(needle.id));
    assert!(screen(&app).contains("filler 10"));
}

#[test]
fn scrolling_up_loads_older_pages_and_esc_returns_to_the_end() {
    let fake = Fake::populated();
    for i in 0..1000 {
        fake.incoming(7, now() - 2_000_000 + i * 1000, &format!("message {i}"));
    }
    fake.0
        .borrow_mut()
        .contacts
        .push(super::fake::contact(7, "zed", ContactState::Friend));
    let mut app = app_with(&fake, 80, 24);
    press_with(&mut app, KeyCode::Char('4'), KeyModifiers::ALT);
    assert_eq!(
        app.conversation().unwrap().messages().len(),
        crate::app::PAGE
    );
    for _ in 0..20 {
        press(&mut app, KeyCode::PageUp);
    }
    assert!(app.conversation().unwrap().messages().len() > crate::app::PAGE);
    assert!(!app.conversation().unwrap().following());
    for _ in 0..300 {
        press(&mut app, KeyCode::PageUp);
    }
    let s = screen(&app);
    assert!(s.contains("message 0\n") || s.contains("message 0 "), "{s}");
    assert_eq!(app.conversation().unwrap().older(), None);
    press(&mut app, KeyCode::Esc);
    assert!(app.conversation().unwrap().following());
    assert!(screen(&app).contains("message 999"));
}

#[test]
fn mouse_selects_contacts_and_scrolls() {
    let fake = Fake::populated();
    let mut app = app_with(&fake, 80, 24);
    let click = |app: &mut crate::App, column, row, kind| {
        app.on_mouse(MouseEvent {
            kind,
            column,
            row,
            modifiers: KeyModifiers::NONE,
        })
    };
    // Row 0 is the heading; bob is row 1.
    click(&mut app, 3, 1, MouseEventKind::Down(MouseButton::Left));
    assert_eq!(app.conversation().unwrap().contact, peer(2));
    click(&mut app, 40, 5, MouseEventKind::ScrollUp);
    click(&mut app, 3, 5, MouseEventKind::Down(MouseButton::Left));
    assert_eq!(app.popup_name(), Some("requests"));
    press(&mut app, KeyCode::Enter);
    assert!(fake.0.borrow().requests.is_empty());
}

#[test]
fn quit_and_copy_are_effects() {
    let mut app = app_with(&Fake::populated(), 80, 24);
    press(&mut app, KeyCode::F(3));
    press(&mut app, KeyCode::Char('c'));
    let invite = fake_invite(&app);
    assert_eq!(app.take_effects(), [Effect::Copy(invite)]);
    press(&mut app, KeyCode::Esc);
    type_text(&mut app, "/quit");
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.take_effects(), [Effect::Quit]);
    press_with(&mut app, KeyCode::Char('c'), KeyModifiers::CONTROL);
    assert_eq!(app.take_effects(), [Effect::Quit]);
}

fn fake_invite(app: &crate::App) -> String {
    app.backend.my_invite().unwrap().to_string()
}

#[test]
fn nick_changes_my_name_in_settings() {
    let fake = Fake::populated();
    let mut app = app_with(&fake, 80, 24);
    type_text(&mut app, "/nick Alice L.");
    press(&mut app, KeyCode::Enter);
    assert_eq!(fake.0.borrow().settings.display_name, "Alice L.");
    assert!(screen(&app).contains(" Alice L. · "));
}

#[test]
fn settings_toggle_upnp_and_edit_listen() {
    let fake = Fake::populated();
    let mut app = app_with(&fake, 80, 24);
    press(&mut app, KeyCode::F(8));
    for _ in 0..3 {
        press(&mut app, KeyCode::Down);
    }
    press(&mut app, KeyCode::Enter);
    assert!(!fake.0.borrow().settings.upnp);
    press(&mut app, KeyCode::Up);
    press(&mut app, KeyCode::Up);
    press(&mut app, KeyCode::Enter);
    press_with(&mut app, KeyCode::Char('u'), KeyModifiers::CONTROL);
    type_text(&mut app, "not an address");
    press(&mut app, KeyCode::Enter);
    assert!(app.notice().unwrap().error);
    assert_eq!(fake.0.borrow().settings.listen.len(), 1);
    press(&mut app, KeyCode::Enter);
    press_with(&mut app, KeyCode::Char('u'), KeyModifiers::CONTROL);
    type_text(&mut app, "0.0.0.0:7000, [::]:7000");
    press(&mut app, KeyCode::Enter);
    assert_eq!(fake.0.borrow().settings.listen.len(), 2);
}

#[test]
fn settings_cycle_the_dht_role_and_save_it() {
    let fake = Fake::populated();
    let mut app = app_with(&fake, 80, 24);
    press(&mut app, KeyCode::F(8));
    for _ in 0..4 {
        press(&mut app, KeyCode::Down);
    }
    assert!(screen(&app).contains("DHT role         auto: serve others when reachable"));
    let mut seen = Vec::new();
    for _ in 0..3 {
        press(&mut app, KeyCode::Enter);
        seen.push(fake.0.borrow().settings.dht_mode);
    }
    assert_eq!(
        seen,
        [
            chat_core::DhtMode::Server,
            chat_core::DhtMode::Client,
            chat_core::DhtMode::Auto
        ]
    );
    press(&mut app, KeyCode::Enter);
    assert!(screen(&app).contains("DHT role         server: always serve others"));
}
