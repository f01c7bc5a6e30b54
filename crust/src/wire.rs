//! The messages a connection carries once the handshake is done.
//!
//! Each is encoded with `postcard` and travels as one message of the secure
//! channel. Lane 0 carries [`Packet::Ping`], [`Packet::Pong`] and
//! [`Packet::Close`]; lanes 1–15 carry application data by priority.

use std::net::SocketAddr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::id::PeerId;

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
    /// Sent once on every new connection: how the sender sees us and where
    /// its own sockets are (address echo over the secure channel).
    Hello(Hello),
    /// To a rendezvous peer: pass `signal` on to `to`.
    Forward { to: PeerId, signal: Signal },
    /// From a rendezvous peer: `from` sent `signal` through it.
    Forwarded { from: PeerId, signal: Signal },
    /// To a relay: pass these bytes of relayed circuit `session` on to
    /// `to`. They are the two ends' own Noise session: ciphertext.
    Relay {
        to: PeerId,
        session: u64,
        #[serde(borrow, with = "serde_bytes")]
        data: &'a [u8],
    },
    /// From a relay: bytes `from` sent on circuit `session`.
    Relayed {
        from: PeerId,
        session: u64,
        #[serde(borrow, with = "serde_bytes")]
        data: &'a [u8],
    },
    /// The data messages that follow on this connection come after the
    /// first `sent` data messages the sender sent us, on any connection.
    /// Written before the first data message a sender puts on a connection
    /// after it sent on another one (`service/order.rs`).
    After { sent: u64 },
}

/// The first control message on a connection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Hello {
    /// The receiver's address as the sender sees it on this connection.
    pub(crate) observed: SocketAddr,
    /// The sender's UDP socket port, if it has one (echo requests go there).
    pub(crate) udp_port: Option<u16>,
}

/// Where a peer may be reached, for a hole-punching attempt.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Candidates {
    /// UDP addresses, most promising first: local, mapped (UPnP), observed
    /// (echo), predicted (sequential NATs).
    pub(crate) udp: Vec<SocketAddr>,
    /// TCP listener addresses: local and mapped.
    pub(crate) tcp: Vec<SocketAddr>,
    /// How the sender's NAT maps its UDP socket, as its echoes show: an
    /// endpoint-independent side and a random-port side use the birthday
    /// technique (`nat::punch`).
    pub(crate) mapping: MappingHint,
    /// How the sender's NAT maps its TCP listener's port, as the echoes of
    /// connections that left from it show: the birthday technique over
    /// TCP (`service/nat/tcp_birthday.rs`) when UDP cannot be used.
    pub(crate) tcp_mapping: MappingHint,
}

/// The sender's UDP (or TCP) mapping behaviour, as far as a punching peer
/// cares.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) enum MappingHint {
    /// Not known, or neither of the others (no NAT, sequential ports).
    #[default]
    Unknown,
    /// One mapping whatever the destination: the observed address is
    /// where everyone reaches the socket.
    EndpointIndependent,
    /// A new mapping for each destination, on a random port.
    RandomPerDestination,
    /// A new mapping for each destination, on the next port (the
    /// candidates end with the predicted ones).
    SequentialPerDestination,
}

/// Rendezvous signalling between two peers, carried by a third.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) enum Signal {
    /// The sender wants a direct connection; here is where it may be.
    Connect {
        session: u64,
        candidates: Candidates,
    },
    /// The answer to `Connect`: where the answerer may be.
    Accept {
        session: u64,
        candidates: Candidates,
    },
    /// Start punching now (the sender starts half a round trip later).
    Sync { session: u64 },
    /// The answerer will not take part.
    Refuse { session: u64 },
    /// From the rendezvous itself: the peer is not connected to it.
    Unreachable { session: u64 },
    /// The sender opens a relayed circuit through the rendezvous; its
    /// handshake follows as `Relay` data.
    Relay { session: u64 },
}

impl Signal {
    pub(crate) fn session(&self) -> u64 {
        match self {
            Self::Connect { session, .. }
            | Self::Accept { session, .. }
            | Self::Sync { session }
            | Self::Refuse { session }
            | Self::Unreachable { session }
            | Self::Relay { session } => *session,
        }
    }
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

    /// A control packet of any size.
    pub(crate) fn control_owned(packet: &Packet<'_>) -> Self {
        Self {
            head: [0u8; 16],
            head_len: 0,
            body: Bytes::from(encode(packet)),
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
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
    Close(CloseReason),
    Hello(Hello),
    Forward {
        to: PeerId,
        signal: Signal,
    },
    Forwarded {
        from: PeerId,
        signal: Signal,
    },
    Relay {
        to: PeerId,
        session: u64,
        data: Bytes,
    },
    Relayed {
        from: PeerId,
        session: u64,
        data: Bytes,
    },
    After {
        sent: u64,
    },
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
        Packet::Hello(hello) => Incoming::Hello(hello),
        Packet::Forward { to, signal } => Incoming::Forward { to, signal },
        Packet::Forwarded { from, signal } => Incoming::Forwarded { from, signal },
        Packet::Relay { to, session, data } => Incoming::Relay {
            to,
            session,
            data: Bytes::copy_from_slice(data),
        },
        Packet::Relayed {
            from,
            session,
            data,
        } => Incoming::Relayed {
            from,
            session,
            data: Bytes::copy_from_slice(data),
        },
        Packet::After { sent } => Incoming::After { sent },
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
            Packet::After { sent: 1 << 40 },
        ] {
            let decoded = decode(encode(&packet).into()).unwrap();
            let expected = match packet {
                Packet::Data(d) => Incoming::Data(Bytes::copy_from_slice(d)),
                Packet::Ping { nonce } => Incoming::Ping { nonce },
                Packet::Pong { nonce } => Incoming::Pong { nonce },
                Packet::Close(r) => Incoming::Close(r),
                Packet::After { sent } => Incoming::After { sent },
                _ => unreachable!(),
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

    #[test]
    fn signalling_round_trips() {
        let peer = crate::SecretId::generate().peer_id();
        let candidates = Candidates {
            udp: vec!["192.0.2.1:5".parse().unwrap(), "[::1]:7".parse().unwrap()],
            tcp: vec!["203.0.113.9:80".parse().unwrap()],
            mapping: MappingHint::RandomPerDestination,
            tcp_mapping: MappingHint::EndpointIndependent,
        };
        let hello = Hello {
            observed: "198.51.100.2:4000".parse().unwrap(),
            udp_port: Some(9),
        };
        let packets = [
            Packet::Hello(hello.clone()),
            Packet::Forward {
                to: peer,
                signal: Signal::Connect {
                    session: 3,
                    candidates: candidates.clone(),
                },
            },
            Packet::Forwarded {
                from: peer,
                signal: Signal::Sync { session: u64::MAX },
            },
            Packet::Relay {
                to: peer,
                session: 9,
                data: b"ciphertext",
            },
        ];
        let expected = [
            Incoming::Hello(hello),
            Incoming::Forward {
                to: peer,
                signal: Signal::Connect {
                    session: 3,
                    candidates,
                },
            },
            Incoming::Forwarded {
                from: peer,
                signal: Signal::Sync { session: u64::MAX },
            },
            Incoming::Relay {
                to: peer,
                session: 9,
                data: Bytes::from_static(b"ciphertext"),
            },
        ];
        for (packet, expected) in packets.iter().zip(expected) {
            let out = Outgoing::control_owned(packet);
            assert_eq!(flatten(&out, 7), encode(packet));
            assert_eq!(decode(encode(packet).into()).unwrap(), expected);
        }
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(bytes.into());
        }
    }
}
