//! The messages a connection carries once the handshake is done.
//!
//! Each is encoded with `postcard` and travels as one message of the secure
//! channel. Lane 0 carries [`Packet::Ping`], [`Packet::Pong`] and
//! [`Packet::Close`]; lanes 1–15 carry application data by priority.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The lane of keep-alives and connection control.
pub(crate) const CONTROL_LANE: u8 = 0;

/// A message between two services.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) enum Packet<'a> {
    /// Application bytes.
    Data(#[serde(borrow, with = "serde_bytes")] &'a [u8]),
    /// Keep-alive; the other side answers with a `Pong` carrying `nonce`.
    Ping { nonce: u64 },
    /// Answer to a `Ping`.
    Pong { nonce: u64 },
    /// The sender will write nothing more on this connection.
    Close(CloseReason),
}

/// Why a connection is being closed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// Another connection to the same peer replaces this one.
    Superseded,
    /// The application asked to disconnect.
    Disconnect,
    /// The service is shutting down.
    Shutdown,
}

/// Encodes a packet.
pub(crate) fn encode(packet: &Packet<'_>) -> Vec<u8> {
    // Serialising these types to a Vec cannot fail.
    postcard::to_allocvec(packet).unwrap_or_default()
}

/// What a decoded message is, with application data handed out without a
/// copy.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    Data(Bytes),
    Ping { nonce: u64 },
    Pong { nonce: u64 },
    Close(CloseReason),
}

/// Decodes a message; `None` if it is not a valid packet.
pub(crate) fn decode(message: Vec<u8>) -> Option<Incoming> {
    let (packet, rest) = postcard::take_from_bytes::<Packet<'_>>(&message).ok()?;
    if !rest.is_empty() {
        return None;
    }
    Some(match packet {
        Packet::Data(data) => {
            let start = data.as_ptr() as usize - message.as_ptr() as usize;
            let end = start + data.len();
            Incoming::Data(Bytes::from(message).slice(start..end))
        }
        Packet::Ping { nonce } => Incoming::Ping { nonce },
        Packet::Pong { nonce } => Incoming::Pong { nonce },
        Packet::Close(reason) => Incoming::Close(reason),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn packets_round_trip() {
        let data = vec![5u8; 1000];
        for packet in [
            Packet::Data(&data),
            Packet::Ping { nonce: 7 },
            Packet::Pong { nonce: u64::MAX },
            Packet::Close(CloseReason::Superseded),
        ] {
            let decoded = decode(encode(&packet)).unwrap();
            let expected = match packet {
                Packet::Data(d) => Incoming::Data(Bytes::copy_from_slice(d)),
                Packet::Ping { nonce } => Incoming::Ping { nonce },
                Packet::Pong { nonce } => Incoming::Pong { nonce },
                Packet::Close(r) => Incoming::Close(r),
            };
            assert_eq!(decoded, expected);
        }
    }

    #[test]
    fn trailing_bytes_and_unknown_tags_are_rejected() {
        let mut bytes = encode(&Packet::Ping { nonce: 1 });
        bytes.push(0);
        assert_eq!(decode(bytes), None);
        assert_eq!(decode(vec![9]), None);
        assert_eq!(decode(vec![]), None);
        // A data length larger than the message.
        assert_eq!(decode(vec![0, 200, 1, 1, 2, 3]), None);
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(bytes);
        }
    }
}
