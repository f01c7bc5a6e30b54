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

/// An encoded packet waiting to be sent: a short head and, for data, the
/// application's bytes, kept apart so they are never copied before they are
/// encrypted into a frame.
pub(crate) struct Outgoing {
    head: [u8; 16],
    head_len: u8,
    body: Bytes,
}

impl Outgoing {
    /// `Packet::Data(body)`, encoded as postcard would: the variant index,
    /// the length as a varint, then the bytes.
    pub(crate) fn data(body: Bytes) -> Self {
        let mut head = [0u8; 16];
        // Variant 0 is `Data`.
        let mut n = 1;
        let mut len = body.len() as u64;
        loop {
            let byte = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                head[n] = byte;
                n += 1;
                break;
            }
            head[n] = byte | 0x80;
            n += 1;
        }
        Self {
            head,
            head_len: n as u8,
            body,
        }
    }

    /// A small control packet.
    pub(crate) fn control(packet: &Packet<'_>) -> Self {
        let mut head = [0u8; 16];
        let len = postcard::to_slice(packet, &mut head).map_or(0, |used| used.len());
        Self {
            head,
            head_len: len as u8,
            body: Bytes::new(),
        }
    }

    /// Encoded length.
    pub(crate) fn len(&self) -> usize {
        usize::from(self.head_len) + self.body.len()
    }

    /// Up to `max` encoded bytes starting at `offset`, as two slices.
    pub(crate) fn slices(&self, offset: usize, max: usize) -> [&[u8]; 2] {
        let head = &self.head[..usize::from(self.head_len)];
        let end = (offset + max).min(self.len());
        let in_head = &head[offset.min(head.len())..end.min(head.len())];
        let body_start = offset.saturating_sub(head.len());
        let body_end = end.saturating_sub(head.len());
        [in_head, &self.body[body_start..body_end]]
    }
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
pub(crate) fn decode(message: Bytes) -> Option<Incoming> {
    let (packet, rest) = postcard::take_from_bytes::<Packet<'_>>(&message).ok()?;
    if !rest.is_empty() {
        return None;
    }
    Some(match packet {
        Packet::Data(data) => {
            let start = data.as_ptr() as usize - message.as_ptr() as usize;
            let end = start + data.len();
            Incoming::Data(message.slice(start..end))
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
            let decoded = decode(encode(&packet).into()).unwrap();
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
        assert_eq!(decode(bytes.into()), None);
        assert_eq!(decode(vec![9].into()), None);
        assert_eq!(decode(Bytes::new()), None);
        // A data length larger than the message.
        assert_eq!(decode(vec![0, 200, 1, 1, 2, 3].into()), None);
    }

    fn flatten(out: &Outgoing, chunk: usize) -> Vec<u8> {
        let mut all = Vec::new();
        let mut offset = 0;
        while offset < out.len() {
            let [a, b] = out.slices(offset, chunk);
            all.extend_from_slice(a);
            all.extend_from_slice(b);
            offset += a.len() + b.len();
        }
        all
    }

    #[test]
    fn outgoing_data_is_exactly_postcard() {
        for len in [0usize, 1, 127, 128, 300, 16_383, 16_384, 2_097_152] {
            let body: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let out = Outgoing::data(Bytes::from(body.clone()));
            let expected = encode(&Packet::Data(&body));
            assert_eq!(out.len(), expected.len());
            for chunk in [1, 2, 5, 1000, 65_000] {
                if len > 20_000 && chunk < 1000 {
                    continue;
                }
                assert_eq!(flatten(&out, chunk), expected, "len {len} chunk {chunk}");
            }
        }
        let ping = Outgoing::control(&Packet::Ping { nonce: u64::MAX });
        assert_eq!(flatten(&ping, 4), encode(&Packet::Ping { nonce: u64::MAX }));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(bytes.into());
        }
    }
}
