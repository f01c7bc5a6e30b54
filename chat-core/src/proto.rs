//! The chat protocol: what two nodes say to each other over a crust
//! connection.
//!
//! Every message is one byte of protocol version followed by a
//! postcard-encoded [`Wire`]. A node ignores (and logs) messages with
//! another version or that do not decode, so a newer peer cannot crash an
//! older one; new message kinds are added as new variants at the end.
//!
//! A session between two connected nodes: each sends `Hello` first (name,
//! listening addresses, whether it considers the other a friend). On the
//! peer's `Hello`:
//! - if both are friends, each sends its unacknowledged outbox in sequence
//!   order and its unreported read receipts;
//! - if we sent a request and they are not yet friends, we send `Request`;
//!   if they say friend, the request was accepted.
//!
//! `Chat` is answered by `Ack` once stored; `Read` reports messages read.

use crust::Endpoint;
use serde::{Deserialize, Serialize};

/// The protocol version this program speaks. 2: addresses are crust
/// endpoints (`tcp:` / `utp:`), not bare TCP socket addresses.
pub(crate) const VERSION: u8 = 2;

/// One protocol message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Wire {
    /// Opens a session.
    Hello {
        name: String,
        addrs: Vec<Endpoint>,
        friend: bool,
    },
    /// A friend request, carrying the token from the invite.
    Request {
        token: [u8; 4],
        name: String,
        message: String,
        addrs: Vec<Endpoint>,
        replaces: Option<[u8; 32]>,
    },
    /// The request was declined.
    Decline,
    /// A chat message.
    Chat {
        id: [u8; 16],
        seq: u64,
        sent_at_ms: i64,
        text: String,
    },
    /// These messages are stored.
    Ack { ids: Vec<[u8; 16]> },
    /// These messages were read.
    Read { ids: Vec<[u8; 16]> },
    /// Typing started or stopped.
    Typing { typing: bool },
    /// The peer ids of the rendezvous peers (crust bootstrap nodes) the
    /// sender keeps connections to: when direct dials fail, a connection
    /// can be set up through one of them (hole punching, or a relayed
    /// circuit). Added within version 2: older programs cannot decode it
    /// and ignore it.
    Rendezvous { peers: Vec<[u8; 32]> },
    /// Retired: DHT traffic travels in crust's own envelope
    /// (`crust::dht::Envelope`, "CRDH"), which crust-node speaks too. Kept
    /// so the variants after it keep their postcard index; ignored on
    /// receipt, never sent.
    #[allow(dead_code)] // decoded (and dropped), never built
    Dht {
        reachable: Vec<Endpoint>,
        message: Vec<u8>,
    },
    /// The holders that keep mail for the sender while it is away
    /// (`crate::mailbox`): friends deposit sealed messages with them.
    /// Added within version 2 like `Rendezvous`.
    Holders {
        holders: Vec<crate::mailbox::HolderInfo>,
    },
}

/// Why bytes from a peer are not a protocol message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("empty message")]
    Empty,
    #[error("protocol version {0} not supported")]
    Version(u8),
    #[error("malformed message")]
    Malformed,
}

impl Wire {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        // Encoding a value of this type into a Vec cannot fail.
        if let Ok(body) = postcard::to_stdvec(self) {
            out.extend_from_slice(&body);
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        postcard::from_bytes(body).map_err(|_| DecodeError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Wire::decode(&bytes);
            let mut versioned = vec![VERSION];
            versioned.extend_from_slice(&bytes);
            if let Ok(wire) = Wire::decode(&versioned) {
                // Whatever decodes re-encodes to something that decodes the same.
                prop_assert_eq!(Wire::decode(&wire.encode()).unwrap(), wire);
            }
        }
    }

    #[test]
    fn round_trips_and_rejects_garbage() {
        let samples = [
            Wire::Hello {
                name: "a".into(),
                addrs: vec![
                    "1.2.3.4:5".parse().unwrap(),
                    "utp:[2001:db8::1]:6".parse().unwrap(),
                ],
                friend: true,
            },
            Wire::Chat {
                id: [7; 16],
                seq: 42,
                sent_at_ms: -1,
                text: "héllo".into(),
            },
            Wire::Ack {
                ids: vec![[1; 16], [2; 16]],
            },
            Wire::Typing { typing: true },
            Wire::Rendezvous {
                peers: vec![[3; 32]],
            },
            Wire::Dht {
                reachable: vec!["utp:1.2.3.4:5".parse().unwrap()],
                message: vec![1, 0, 7],
            },
        ];
        for w in samples {
            assert_eq!(Wire::decode(&w.encode()).unwrap(), w);
        }
        assert_eq!(Wire::decode(&[]), Err(DecodeError::Empty));
        assert_eq!(Wire::decode(&[9, 0]), Err(DecodeError::Version(9)));
        assert_eq!(
            Wire::decode(&[VERSION, 200, 200, 200]),
            Err(DecodeError::Malformed)
        );
        // Text that is not UTF-8 is refused by the decoder.
        let mut chat = Wire::Chat {
            id: [0; 16],
            seq: 1,
            sent_at_ms: 0,
            text: "ab".into(),
        }
        .encode();
        let n = chat.len();
        chat[n - 1] = 0xff;
        assert_eq!(Wire::decode(&chat), Err(DecodeError::Malformed));
    }
}
