//! Fuzz target: DHT messages from the network
//! (`crust::dht::Message::decode`, and the same bytes as the body of a
//! `crust::dht::Envelope`), and, inside them, every signed record through
//! `SignedRecord::verify`. What decodes re-encodes and decodes equal.
#![no_main]

use crust::dht::{Message, SignedRecord};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(message) = Message::decode(data) {
        let again = Message::decode(&message.encode());
        assert!(again.is_ok());
    }
    // The same bytes as an envelope's body, as a peer sends them.
    let mut envelope = crust::dht::MAGIC.to_vec();
    envelope.push(crust::dht::WIRE_VERSION);
    envelope.extend_from_slice(data);
    crust::fuzzing::dht_envelope(&envelope);
    // The same bytes as a record body with an arbitrary signature.
    let (body, signature) = data.split_at(data.len().min(64));
    let _ = SignedRecord::from_parts(signature.to_vec(), body.to_vec()).verify(1_800_000_000);
    let _ = SignedRecord::from_parts(body.to_vec(), signature.to_vec()).verify(1_800_000_000);
});
