//! One snapshot per screen and popup, reached with keys.

use chat_core::{Event, MessageState, NetworkReport};
use crossterm::event::{KeyCode, KeyModifiers};
use insta::assert_snapshot;

use super::fake::Fake;
use super::{app_with, now, online, peer, press, press_with, screen, type_text};

#[test]
fn welcome_on_a_fresh_profile() {
    let app = app_with(&Fake::empty(), 80, 24);
    assert_snapshot!(screen(&app));
}

#[test]
fn chat_with_day_separators_and_delivery_states() {
    let mut app = app_with(&Fake::populated(), 80, 24);
    // Opens on carol (unread); go to bob.
    press_with(&mut app, KeyCode::Char('1'), KeyModifiers::ALT);
    assert_snapshot!(screen(&app));
}

#[test]
fn unread_marker_when_opening_a_conversation_with_news() {
    let app = app_with(&Fake::populated(), 80, 24);
    assert_snapshot!(screen(&app));
}

#[test]
fn wide_terminal() {
    let mut app = app_with(&Fake::populated(), 120, 30);
    press_with(&mut app, KeyCode::Char('1'), KeyModifiers::ALT);
    assert_snapshot!(screen(&app));
}

#[test]
fn narrow_terminal_hides_the_contact_list() {
    let mut app = app_with(&Fake::populated(), 80, 24);
    press_with(&mut app, KeyCode::Char('1'), KeyModifiers::ALT);
    app.on_resize(50, 16);
    assert_snapshot!(screen(&app));
}

#[test]
fn typing_notice_and_growing_input() {
    let mut app = app_with(&Fake::populated(), 80, 24);
    press_with(&mut app, KeyCode::Char('1'), KeyModifiers::ALT);
    app.on_node_event(Event::Typing {
        contact: peer(2),
        typing: true,
    });
    type_text(&mut app, "first line");
    press_with(&mut app, KeyCode::Char('j'), KeyModifiers::CONTROL);
    type_text(&mut app, "second line");
    app.on_paste("\npasted third\npasted fourth");
    assert_snapshot!(screen(&app));
}

#[test]
fn scrolled_up_shows_more_below() {
    let fake = Fake::populated();
    for i in 0..40 {
        fake.incoming(
            2,
            now() - 100 * 60_000 + i * 1000,
            &format!("older message {i}"),
        );
    }
    let mut app = app_with(&fake, 80, 24);
    press_with(&mut app, KeyCode::Char('1'), KeyModifiers::ALT);
    press(&mut app, KeyCode::PageUp);
    assert_snapshot!(screen(&app));
}

#[test]
fn help_popup() {
    let mut app = app_with(&Fake::populated(), 80, 24);
    press(&mut app, KeyCode::Char('?'));
    assert_eq!(app.popup_name(), Some("help"));
    assert_snapshot!(screen(&app));
}

#[test]
fn add_contact_popup_with_a_mistyped_code() {
    let mut app = app_with(&Fake::populated(), 80, 24);
    press(&mut app, KeyCode::F(4));
    app.on_paste("crust:aaaabbbbccccdddd");
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.popup_name(), Some("add-contact"));
    assert_snapshot!(screen(&app));
}

#[test]
fn my_invite_popup_with_qr_code() {
    let mut app = app_with(&Fake::populated(), 100, 40);
    press(&mut app, KeyCode::F(3));
    assert_snapshot!(screen(&app));
}

#[test]
fn my_invite_popup_at_80x24_without_room_for_the_qr_code() {
    let mut app = app_with(&Fake::populated(), 80, 24);
    type_text(&mut app, "/myid");
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.popup_name(), Some("my-invite"));
    assert_snapshot!(screen(&app));
    press(&mut app, KeyCode::Char('q'));
    assert_snapshot!("qr_only_at_80x24", screen(&app));
}

#[test]
fn friend_requests_popup() {
    let mut app = app_with(&Fake::populated(), 80, 24);
    press(&mut app, KeyCode::F(5));
    assert_snapshot!(screen(&app));
}

#[test]
fn contact_details_popup() {
    let mut app = app_with(&Fake::populated(), 80, 24);
    press_with(&mut app, KeyCode::Char('1'), KeyModifiers::ALT);
    press(&mut app, KeyCode::F(2));
    assert_snapshot!(screen(&app));
}

#[test]
fn contact_details_confirm_remove() {
    let mut app = app_with(&Fake::populated(), 80, 24);
    press_with(&mut app, KeyCode::Char('1'), KeyModifiers::ALT);
    type_text(&mut app, "/remove");
    press(&mut app, KeyCode::Enter);
    assert_snapshot!(screen(&app));
}

#[test]
fn search_popup_with_results() {
    let mut app = app_with(&Fake::populated(), 80, 24);
    press_with(&mut app, KeyCode::Char('f'), KeyModifiers::CONTROL);
    type_text(&mut app, "the");
    assert_snapshot!(screen(&app));
}

#[test]
fn network_popup() {
    let mut app = app_with(&Fake::populated(), 80, 24);
    press(&mut app, KeyCode::F(7));
    let bob_path = match online(5002) {
        chat_core::Presence::Online(info) => info,
        chat_core::Presence::Offline { .. } => unreachable!(),
    };
    app.on_report(NetworkReport {
        id: peer(1),
        listeners: vec![
            "tcp:0.0.0.0:5483".parse().unwrap(),
            "utp:0.0.0.0:5483".parse().unwrap(),
        ],
        invite_addrs: vec![std::net::SocketAddr::from(([192, 0, 2, 1], 5483)).into()],
        connections: vec![(peer(2), bob_path)],
        nat: Default::default(),
    });
    assert_snapshot!(screen(&app));
}

#[test]
fn settings_popup() {
    let mut app = app_with(&Fake::populated(), 80, 24);
    press(&mut app, KeyCode::F(8));
    press(&mut app, KeyCode::Down);
    assert_snapshot!(screen(&app));
}

#[test]
fn delivery_state_moves_on_screen() {
    let fake = Fake::populated();
    let mut app = app_with(&fake, 80, 24);
    press_with(&mut app, KeyCode::Char('1'), KeyModifiers::ALT);
    let queued = fake.messages(2).last().unwrap().clone();
    assert_eq!(queued.state, MessageState::Queued);
    assert!(screen(&app).contains("…  alice: one more thing"));
    app.on_node_event(Event::MessageStateChanged {
        contact: peer(2),
        id: queued.id,
        state: MessageState::Delivered,
    });
    assert!(screen(&app).contains("✓✓ alice: one more thing"));
    assert!(screen(&app).contains("last message delivered"));
}

#[test]
fn a_contact_being_redialled_shows_as_connecting() {
    let fake = Fake::populated();
    if let chat_core::Presence::Offline { connecting, .. } =
        &mut fake.0.borrow_mut().contacts[1].presence
    {
        *connecting = true;
    }
    let mut app = app_with(&fake, 80, 24);
    press(&mut app, KeyCode::Char('2'));
    let text = screen(&app);
    assert!(text.contains("2◌ carol connecting"), "{text}");
    assert!(text.contains("carol · connecting… · last seen"), "{text}");
}
