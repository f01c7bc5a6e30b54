//! Fuzz target: the mailbox protocol from the network (`crust::mailbox`).
//! What decodes re-encodes and decodes equal; and a holder answering a
//! sequence of requests from two peers, hours apart or not, never holds
//! more than its limits allow, whatever they send.
#![no_main]

use std::time::Duration;

use crust::SecretId;
use crust::mailbox::{Limits, MAGIC, MAX_ITEMS_BYTES, Mailbox, Message, Policy};

const LIMITS: Limits = Limits {
    max_blob: 256,
    per_recipient_count: 4,
    per_recipient_bytes: 1024,
    per_depositor_bytes: 1536,
    total_bytes: 2048,
    expiry: Duration::from_secs(3600),
};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(Some(message)) = Message::decode(data) {
        assert_eq!(Message::decode(&message.encode()), Ok(Some(message)));
    }

    // The same bytes as a conversation: each request is a header byte
    // (which peer; how many minutes pass), a 16-bit length and the body
    // after the magic.
    let peers = [
        SecretId::from_bytes(&[1; 32]).peer_id(),
        SecretId::from_bytes(&[2; 32]).peer_id(),
    ];
    let mut mailbox = Mailbox::in_memory(LIMITS, Policy::Open);
    let mut now = 1_800_000_000u64;
    let mut rest = data;
    while rest.len() >= 3 {
        let who = &peers[usize::from(rest[0] & 1)];
        now += 60 * u64::from(rest[0] >> 1);
        let len = usize::from(u16::from_le_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let (body, tail) = rest[3..].split_at(len);
        rest = tail;
        let mut request = MAGIC.to_vec();
        request.extend_from_slice(body);
        if let Some(reply) = mailbox.handle(who, &request, now) {
            assert!(reply.len() <= MAX_ITEMS_BYTES + 64 * 1024);
        }
        mailbox.expire(now);
        let mut total = 0;
        for peer in &peers {
            let (count, bytes) = mailbox.usage(peer);
            assert!(count <= LIMITS.per_recipient_count, "{count} items held");
            assert!(bytes <= LIMITS.per_recipient_bytes, "{bytes} bytes held");
            total += bytes;
        }
        assert!(total <= LIMITS.total_bytes);
    }
});
