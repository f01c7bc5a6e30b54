//! Crust's own datagrams on the service's UDP socket: address echo and
//! hole punching. Each starts with `b"CRST"` and a version byte (which is
//! how the uTP socket tells them from uTP), then a postcard body.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 4] = b"CRST";
const VERSION: u8 = 1;

/// A crust datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Datagram {
    /// "Which address do you see me at?"
    EchoRequest { nonce: u64 },
    /// The answer: the request's source address.
    EchoResponse { nonce: u64, observed: SocketAddr },
    /// A hole-punching probe of one attempt.
    Punch { session: u64 },
    /// "Your probe reached me", sent to the probe's source.
    PunchAck { session: u64 },
}

impl Datagram {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        // Serialising these types cannot fail.
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    /// `None` for anything that is not a well-formed datagram of this
    /// version.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let rest = bytes.strip_prefix(MAGIC)?;
        let (&version, body) = rest.split_first()?;
        if version != VERSION {
            return None;
        }
        let (datagram, trailing) = postcard::take_from_bytes(body).ok()?;
        trailing.is_empty().then_some(datagram)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_round_trip_and_junk_is_refused() {
        for d in [
            Datagram::EchoRequest { nonce: 1 },
            Datagram::EchoResponse {
                nonce: u64::MAX,
                observed: "203.0.113.1:9".parse().unwrap(),
            },
            Datagram::Punch { session: 7 },
            Datagram::PunchAck { session: 7 },
        ] {
            let bytes = d.encode();
            assert!(bytes.starts_with(b"CRST"));
            assert_eq!(Datagram::decode(&bytes), Some(d));
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(Datagram::decode(&longer), None);
            let mut other_version = bytes.clone();
            other_version[4] = 9;
            assert_eq!(Datagram::decode(&other_version), None);
        }
        assert_eq!(Datagram::decode(b"CRS"), None);
        assert_eq!(Datagram::decode(b"\x41\x00"), None);
    }
}
