//! Fuzz target: chat-core's invite codes (`crust:...` text and QR text),
//! typed or pasted by users. What parses re-encodes and parses back equal.
#![no_main]

use chat_core::Invite;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(invite) = text.parse::<Invite>() {
        assert_eq!(invite.to_string().parse::<Invite>().ok(), Some(invite.clone()));
    }
});
