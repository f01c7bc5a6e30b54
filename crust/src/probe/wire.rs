//! The probe's datagrams: a small RFC 5780-like protocol over UDP.
//!
//! A client sends a [`Request`] to one of the probe server's four UDP
//! sockets (two addresses × two ports); the server answers with a
//! [`Response`], from the socket the request's change flags ask for, saying
//! which source address it saw. Requests are padded to [`REQUEST_LEN`] bytes
//! so that no answer is larger than its request (no amplification), and the
//! server only ever sends to the address a request came from.
//!
//! Layout (big endian): magic `CRPB` | version | kind | txid (8) | body.
//! An address is family (4 or 6) | IP (4 or 16) | port (2). Anything else
//! is a [`WireError`], never a panic.
//!
//! Hand-written rather than STUN (`stun_codec`): the probe needs requests
//! STUN has no attribute for (send to my other mapping, TCP connect-back,
//! simultaneous open), and the codec is ~150 lines with no dependencies.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Every probe datagram starts with this.
pub const MAGIC: &[u8; 4] = b"CRPB";
const VERSION: u8 = 1;
/// Requests are padded to this length.
pub const REQUEST_LEN: usize = 80;

/// What a malformed datagram got wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Shorter than its fields.
    #[error("truncated probe datagram")]
    Truncated,
    /// Not a probe datagram at all.
    #[error("not a probe datagram (bad magic)")]
    BadMagic,
    /// Another protocol version.
    #[error("unsupported probe protocol version {0}")]
    Version(u8),
    /// An unknown message kind.
    #[error("unknown probe message kind {0}")]
    Kind(u8),
    /// An address family other than 4 or 6.
    #[error("bad address family {0}")]
    Family(u8),
    /// A field holds an impossible value.
    #[error("bad field value: {0}")]
    Value(&'static str),
}

/// Which of the server's sockets should answer (RFC 5780 CHANGE-REQUEST).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Change {
    /// Answer from the other address.
    pub ip: bool,
    /// Answer from the other port.
    pub port: bool,
}

/// A client's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// "Which address do you see me at?", answered from the socket `change`
    /// picks.
    Binding {
        /// Matches the answer.
        txid: u64,
        /// Where the answer comes from.
        change: Change,
    },
    /// "Send a [`Response::Binding`] to `target`" (which must be on the
    /// requester's own IP): tests whether a mapping made by another socket,
    /// or by UPnP, is reachable from a socket it never talked to.
    SendTo {
        /// Matches the answer.
        txid: u64,
        /// Where the answer comes from.
        change: Change,
        /// Where to send it (same IP as the request's source).
        target: SocketAddr,
    },
    /// "Open a TCP connection from your other address to `target` (same IP
    /// as the request's source) and tell me what happened": the
    /// unsolicited-SYN test.
    TcpConnect {
        /// Matches the answer.
        txid: u64,
        /// Where to connect.
        target: SocketAddr,
    },
    /// "Bind a TCP socket on your other address, tell me its port, then
    /// connect from it to `target` for a few seconds while I connect to
    /// you": TCP simultaneous open.
    TcpSimultaneous {
        /// Matches the answers.
        txid: u64,
        /// Our external address for the connection.
        target: SocketAddr,
    },
}

/// What became of the server's TCP connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TcpOutcome {
    /// The connection was established.
    Connected,
    /// Refused: a TCP RST came back.
    Refused,
    /// An ICMP error came back (host or port unreachable, prohibited).
    Unreachable,
    /// Nothing came back before the time limit: the SYN was dropped.
    TimedOut,
}

/// A server's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    /// The request's source as the server saw it.
    Binding {
        /// The request's txid.
        txid: u64,
        /// The requester's address as seen by the server.
        observed: SocketAddr,
        /// The server socket this answer was sent from.
        origin: SocketAddr,
        /// The server's other address and port (RFC 5780 OTHER-ADDRESS).
        other: SocketAddr,
    },
    /// The outcome of a [`Request::TcpConnect`] or
    /// [`Request::TcpSimultaneous`].
    Tcp {
        /// The request's txid.
        txid: u64,
        /// What happened.
        outcome: TcpOutcome,
    },
    /// The server's socket for [`Request::TcpSimultaneous`] is ready.
    TcpReady {
        /// The request's txid.
        txid: u64,
        /// Where to connect to.
        addr: SocketAddr,
    },
}

impl Request {
    /// The transaction id.
    pub fn txid(&self) -> u64 {
        match *self {
            Request::Binding { txid, .. }
            | Request::SendTo { txid, .. }
            | Request::TcpConnect { txid, .. }
            | Request::TcpSimultaneous { txid, .. } => txid,
        }
    }

    /// The datagram, padded to [`REQUEST_LEN`].
    pub fn encode(&self) -> Vec<u8> {
        let (kind, txid) = match self {
            Request::Binding { txid, .. } => (1, txid),
            Request::SendTo { txid, .. } => (2, txid),
            Request::TcpConnect { txid, .. } => (3, txid),
            Request::TcpSimultaneous { txid, .. } => (4, txid),
        };
        let mut out = header(kind, *txid);
        match self {
            Request::Binding { change, .. } => out.push(flags(*change)),
            Request::SendTo { change, target, .. } => {
                out.push(flags(*change));
                put_addr(&mut out, *target);
            }
            Request::TcpConnect { target, .. } | Request::TcpSimultaneous { target, .. } => {
                put_addr(&mut out, *target)
            }
        }
        out.resize(REQUEST_LEN.max(out.len()), 0);
        out
    }

    /// Parses a request; padding after the fields is ignored, but a request
    /// shorter than [`REQUEST_LEN`] is refused (it could amplify).
    pub fn decode(bytes: &[u8]) -> Result<Request, WireError> {
        if bytes.len() < REQUEST_LEN {
            return Err(WireError::Truncated);
        }
        let (kind, txid, mut r) = parse_header(bytes)?;
        Ok(match kind {
            1 => Request::Binding {
                txid,
                change: change(r.u8()?)?,
            },
            2 => Request::SendTo {
                txid,
                change: change(r.u8()?)?,
                target: r.addr()?,
            },
            3 => Request::TcpConnect {
                txid,
                target: r.addr()?,
            },
            4 => Request::TcpSimultaneous {
                txid,
                target: r.addr()?,
            },
            k => return Err(WireError::Kind(k)),
        })
    }
}

impl Response {
    /// The transaction id.
    pub fn txid(&self) -> u64 {
        match *self {
            Response::Binding { txid, .. }
            | Response::Tcp { txid, .. }
            | Response::TcpReady { txid, .. } => txid,
        }
    }

    /// The datagram.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Response::Binding {
                txid,
                observed,
                origin,
                other,
            } => {
                let mut out = header(0x81, *txid);
                for a in [observed, origin, other] {
                    put_addr(&mut out, *a);
                }
                out
            }
            Response::Tcp { txid, outcome } => {
                let mut out = header(0x82, *txid);
                out.push(match outcome {
                    TcpOutcome::Connected => 0,
                    TcpOutcome::Refused => 1,
                    TcpOutcome::Unreachable => 2,
                    TcpOutcome::TimedOut => 3,
                });
                out
            }
            Response::TcpReady { txid, addr } => {
                let mut out = header(0x83, *txid);
                put_addr(&mut out, *addr);
                out
            }
        }
    }

    /// Parses a response; trailing bytes are refused.
    pub fn decode(bytes: &[u8]) -> Result<Response, WireError> {
        let (kind, txid, mut r) = parse_header(bytes)?;
        let response = match kind {
            0x81 => Response::Binding {
                txid,
                observed: r.addr()?,
                origin: r.addr()?,
                other: r.addr()?,
            },
            0x82 => Response::Tcp {
                txid,
                outcome: match r.u8()? {
                    0 => TcpOutcome::Connected,
                    1 => TcpOutcome::Refused,
                    2 => TcpOutcome::Unreachable,
                    3 => TcpOutcome::TimedOut,
                    _ => return Err(WireError::Value("tcp outcome")),
                },
            },
            0x83 => Response::TcpReady {
                txid,
                addr: r.addr()?,
            },
            k => return Err(WireError::Kind(k)),
        };
        if !r.0.is_empty() {
            return Err(WireError::Value("trailing bytes"));
        }
        Ok(response)
    }
}

fn header(kind: u8, txid: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(REQUEST_LEN);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(kind);
    out.extend_from_slice(&txid.to_be_bytes());
    out
}

fn parse_header(bytes: &[u8]) -> Result<(u8, u64, Reader<'_>), WireError> {
    let mut r = Reader(bytes);
    if r.take(4)? != MAGIC {
        return Err(WireError::BadMagic);
    }
    let version = r.u8()?;
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    let kind = r.u8()?;
    let txid = u64::from_be_bytes(r.array()?);
    Ok((kind, txid, r))
}

fn flags(c: Change) -> u8 {
    (u8::from(c.ip) << 2) | (u8::from(c.port) << 1)
}

fn change(b: u8) -> Result<Change, WireError> {
    if b & !0b110 != 0 {
        return Err(WireError::Value("change flags"));
    }
    Ok(Change {
        ip: b & 4 != 0,
        port: b & 2 != 0,
    })
}

fn put_addr(out: &mut Vec<u8>, a: SocketAddr) {
    match a.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&a.port().to_be_bytes());
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn addr(&mut self) -> Result<SocketAddr, WireError> {
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            f => return Err(WireError::Family(f)),
        };
        let port = u16::from_be_bytes(self.array()?);
        Ok(SocketAddr::new(ip, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn requests_round_trip_padded() {
        for req in [
            Request::Binding {
                txid: 7,
                change: Change {
                    ip: true,
                    port: false,
                },
            },
            Request::SendTo {
                txid: u64::MAX,
                change: Change {
                    ip: true,
                    port: true,
                },
                target: a("[2001:db8::1]:9"),
            },
            Request::TcpConnect {
                txid: 1,
                target: a("203.0.113.1:4000"),
            },
            Request::TcpSimultaneous {
                txid: 2,
                target: a("203.0.113.1:4001"),
            },
        ] {
            let bytes = req.encode();
            assert_eq!(bytes.len(), REQUEST_LEN);
            assert_eq!(Request::decode(&bytes), Ok(req));
            assert_eq!(Request::decode(&bytes[..40]), Err(WireError::Truncated));
        }
    }

    #[test]
    fn responses_round_trip_and_are_no_larger_than_requests() {
        for resp in [
            Response::Binding {
                txid: 3,
                observed: a("[2001:db8::1]:1"),
                origin: a("[2001:db8::2]:2"),
                other: a("[2001:db8::3]:3"),
            },
            Response::Tcp {
                txid: 4,
                outcome: TcpOutcome::Unreachable,
            },
            Response::TcpReady {
                txid: 5,
                addr: a("198.51.100.1:5"),
            },
        ] {
            let bytes = resp.encode();
            assert!(bytes.len() <= REQUEST_LEN);
            assert_eq!(Response::decode(&bytes), Ok(resp));
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(Response::decode(&longer).is_err());
            for cut in 0..bytes.len() {
                assert!(Response::decode(&bytes[..cut]).is_err());
            }
        }
    }

    #[test]
    fn junk_is_an_error_never_a_panic() {
        let good = Request::Binding {
            txid: 1,
            change: Change::default(),
        }
        .encode();
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(Request::decode(&bad), Err(WireError::BadMagic));
        let mut bad = good.clone();
        bad[4] = 9;
        assert_eq!(Request::decode(&bad), Err(WireError::Version(9)));
        let mut bad = good.clone();
        bad[5] = 99;
        assert_eq!(Request::decode(&bad), Err(WireError::Kind(99)));
        let mut bad = good.clone();
        bad[14] = 1;
        assert!(matches!(Request::decode(&bad), Err(WireError::Value(_))));
        let mut bad = Request::TcpConnect {
            txid: 1,
            target: a("1.2.3.4:5"),
        }
        .encode();
        bad[14] = 5;
        assert_eq!(Request::decode(&bad), Err(WireError::Family(5)));
        // Every byte string up to a few bytes, and random-ish longer ones.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..200 {
            let mut buf: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = Request::decode(&buf);
            let _ = Response::decode(&buf);
            if buf.len() > 6 {
                buf[..4].copy_from_slice(MAGIC);
                buf[4] = VERSION;
                let _ = Request::decode(&buf);
                let _ = Response::decode(&buf);
            }
        }
    }
}
