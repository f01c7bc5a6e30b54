//! The DHT on a crust connection: an [`Envelope`] is one crust message
//! carrying one DHT [`Message`] and the endpoints on which its sender takes
//! connections. It starts with [`MAGIC`], so DHT traffic shares a
//! connection with anything else the peers say (chat, mailbox, probe
//! reports) and any crust peer can tell it apart without knowing the rest:
//! a `crust-node` and a chat node speak it alike.
//!
//! The sender is the peer the connection authenticated, so nobody can
//! speak for another id. `reachable` is what makes a sender a DHT
//! *server*: a node that lists endpoints enters the routing tables of
//! those it talks to; one that lists none (a *client*, behind a NAT) is
//! answered but never handed out to anyone.
//!
//! Layout: [`MAGIC`], [`WIRE_VERSION`], then postcard of `(reachable,
//! message)`. Decoding is bounded like [`Message::decode`]: total size,
//! endpoints, and the message's own bounds.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::message::{
    MAX_CONTACT_ENDPOINTS, MAX_MESSAGE_BYTES, Message, MessageError, WIRE_VERSION,
};
use crate::Endpoint;

/// What every DHT envelope starts with.
pub const MAGIC: &[u8; 4] = b"CRDH";
/// Largest envelope accepted: a largest message, plus the magic, the
/// version and [`MAX_CONTACT_ENDPOINTS`] endpoints.
pub const MAX_ENVELOPE_BYTES: usize = MAX_MESSAGE_BYTES + 512;

/// One DHT message as it travels between crust peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The endpoints on which the sender takes connections (at most
    /// [`MAX_CONTACT_ENDPOINTS`]); empty for a client. An unspecified IP
    /// (`0.0.0.0`) means "the address you see me at".
    pub reachable: Vec<Endpoint>,
    /// The DHT message.
    pub message: Message,
}

impl Envelope {
    /// The crust message bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.push(WIRE_VERSION);
        // Serialising plain data into a Vec cannot fail.
        postcard::to_extend(self, out).unwrap_or_default()
    }

    /// `Ok(None)` for bytes that are not DHT traffic at all (they do not
    /// start with [`MAGIC`]); an error for DHT traffic that is broken or
    /// breaks a bound.
    pub fn decode(bytes: &[u8]) -> Result<Option<Self>, MessageError> {
        let Some(body) = bytes.strip_prefix(MAGIC) else {
            return Ok(None);
        };
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(MessageError::TooLarge(bytes.len()));
        }
        let (&version, body) = body.split_first().ok_or(MessageError::Version)?;
        if version != WIRE_VERSION {
            return Err(MessageError::Version);
        }
        let (envelope, trailing) = postcard::take_from_bytes::<Envelope>(body)
            .map_err(|_| MessageError::Malformed("does not decode"))?;
        if !trailing.is_empty() {
            return Err(MessageError::Malformed("trailing bytes"));
        }
        if envelope.reachable.len() > MAX_CONTACT_ENDPOINTS {
            return Err(MessageError::Malformed("too many endpoints"));
        }
        envelope.message.check_bounds()?;
        Ok(Some(envelope))
    }

    /// The sender's endpoints as the receiver can dial them: an
    /// unspecified IP (a listener on all interfaces) becomes `remote`, the
    /// address the sender's connection comes from, when the families
    /// match; one that cannot be filled in is left out.
    pub fn reachable_at(&self, remote: Option<IpAddr>) -> Vec<Endpoint> {
        self.reachable
            .iter()
            .take(MAX_CONTACT_ENDPOINTS)
            .filter_map(|e| {
                if !e.addr.ip().is_unspecified() {
                    return Some(*e);
                }
                let ip = remote.filter(|ip| ip.is_ipv4() == e.addr.is_ipv4())?;
                Some(Endpoint {
                    addr: SocketAddr::new(ip, e.addr.port()),
                    ..*e
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dht::{Key, SignedRecord};

    fn endpoint(s: &str) -> Endpoint {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn envelopes_round_trip() {
        let envelope = Envelope {
            reachable: vec![endpoint("tcp:192.0.2.1:5483"), endpoint("utp:0.0.0.0:5483")],
            message: Message::FindValue {
                id: 7,
                target: Key([9; 32]),
            },
        };
        let bytes = envelope.encode();
        assert!(bytes.starts_with(MAGIC));
        assert_eq!(Envelope::decode(&bytes), Ok(Some(envelope)));
    }

    #[test]
    fn unspecified_endpoints_are_read_at_the_senders_address() {
        let envelope = Envelope {
            reachable: vec![
                endpoint("tcp:0.0.0.0:5483"),
                endpoint("utp:192.0.2.9:5484"),
                endpoint("tcp:[::]:5483"),
            ],
            message: Message::Ping { id: 1 },
        };
        let remote = "198.51.100.7".parse().ok();
        assert_eq!(
            envelope.reachable_at(remote),
            [
                endpoint("tcp:198.51.100.7:5483"),
                endpoint("utp:192.0.2.9:5484")
            ]
        );
        assert_eq!(
            envelope.reachable_at(None),
            [endpoint("utp:192.0.2.9:5484")]
        );
    }

    #[test]
    fn other_traffic_is_not_an_envelope() {
        assert_eq!(Envelope::decode(b""), Ok(None));
        assert_eq!(Envelope::decode(b"CRMB\x00"), Ok(None));
        assert_eq!(Envelope::decode(&[2, 0, 1]), Ok(None));
    }

    #[test]
    fn broken_envelopes_are_refused() {
        let good = Envelope {
            reachable: Vec::new(),
            message: Message::Ping { id: 1 },
        }
        .encode();
        assert_eq!(Envelope::decode(MAGIC), Err(MessageError::Version));
        let mut version = good.clone();
        version[4] = 9;
        assert_eq!(Envelope::decode(&version), Err(MessageError::Version));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(
            Envelope::decode(&trailing),
            Err(MessageError::Malformed(_))
        ));
        assert!(matches!(
            Envelope::decode(&good[..good.len() - 1]),
            Err(MessageError::Malformed(_))
        ));
        let mut huge = MAGIC.to_vec();
        huge.resize(MAX_ENVELOPE_BYTES + 1, 0);
        assert_eq!(
            Envelope::decode(&huge),
            Err(MessageError::TooLarge(MAX_ENVELOPE_BYTES + 1))
        );
        let crowded = Envelope {
            reachable: vec![endpoint("tcp:192.0.2.1:1"); MAX_CONTACT_ENDPOINTS + 1],
            message: Message::Ping { id: 1 },
        }
        .encode();
        assert_eq!(
            Envelope::decode(&crowded),
            Err(MessageError::Malformed("too many endpoints"))
        );
        let fat = Envelope {
            reachable: Vec::new(),
            message: Message::Store {
                record: SignedRecord::from_parts(vec![0; 4000], vec![0; 64]),
            },
        }
        .encode();
        assert_eq!(
            Envelope::decode(&fat),
            Err(MessageError::Malformed("record too large"))
        );
    }
}
