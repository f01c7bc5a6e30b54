//! The BEP 29 wire format: the 20-byte header, the extension chain and the
//! selective-ACK bitmask.
//!
//! Decoding borrows from the datagram and never allocates, so a hostile peer
//! cannot make us allocate by lying about lengths; every malformed input
//! comes back as a [`DecodeError`]. Encoding appends to a caller's buffer.
//! Call order: [`Packet::decode`] on receipt; [`encode`] when building a
//! transmit.

use std::fmt;

/// The only protocol version BEP 29 defines.
pub const VERSION: u8 = 1;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 20;
/// Extension type of a selective ACK.
pub const EXT_SACK: u8 = 1;
/// Extension type of libutp's 8-byte "extension bits" (parsed and ignored).
pub const EXT_BITS: u8 = 2;
/// Extension type of libtorrent's 4-byte close reason.
pub const EXT_CLOSE_REASON: u8 = 3;
/// Extension type of crust's hello: "this end is crust and can receive
/// datagrams up to N bytes". Sent in the SYN and in the acceptor's SYN
/// reply only; other implementations skip it by its length (libutp's
/// `utp_process_incoming` and libtorrent's `incoming_packet` both walk
/// unknown extensions), and only when both ends announce it does the
/// path-MTU search start from the route's MTU.
///
/// It never comes first in the chain: libutp's `UTP_Version` calls a
/// packet whose *first* extension type is 3 or more a version-0 packet and
/// drops it silently. So the chain starts with libutp's own "extension
/// bits" (type 2, eight zero bytes: no extensions), which libutp requires
/// to be eight bytes long and otherwise only logs, then the hello.
pub const EXT_CRUST: u8 = 0x63;
/// The hello's payload: this magic, a version (`u16`, 1) and the largest
/// UDP payload the sender can receive (`u16`), big-endian. Later versions
/// may append fields; a reader takes the first eight bytes.
const CRUST_MAGIC: [u8; 4] = *b"crst";
const CRUST_HELLO_LEN: usize = 8;
/// The most extensions we walk before calling the chain malformed.
const MAX_EXTENSIONS: usize = 16;

/// The five packet types of BEP 29.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// Carries payload and consumes a sequence number.
    Data = 0,
    /// The last packet of a stream; consumes a sequence number.
    Fin = 1,
    /// An acknowledgement; does not consume a sequence number.
    State = 2,
    /// Abrupt termination.
    Reset = 3,
    /// Connection request; consumes a sequence number.
    Syn = 4,
}

impl PacketType {
    fn from_nibble(n: u8) -> Option<Self> {
        Some(match n {
            0 => Self::Data,
            1 => Self::Fin,
            2 => Self::State,
            3 => Self::Reset,
            4 => Self::Syn,
            _ => return None,
        })
    }
}

/// Why a datagram is not a uTP packet we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer than 20 bytes.
    TooShort,
    /// The version nibble is not 1.
    BadVersion(u8),
    /// The type nibble is not one of the five known types.
    BadType(u8),
    /// The extension chain runs past the end of the datagram.
    TruncatedExtension,
    /// The extension chain is longer than we are willing to walk.
    TooManyExtensions,
    /// A selective ACK with a length of zero.
    EmptySack,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort => write!(f, "datagram shorter than a utp header"),
            Self::BadVersion(v) => write!(f, "unsupported utp version {v}"),
            Self::BadType(t) => write!(f, "unknown utp packet type {t}"),
            Self::TruncatedExtension => write!(f, "utp extension runs past the datagram"),
            Self::TooManyExtensions => write!(f, "utp extension chain too long"),
            Self::EmptySack => write!(f, "utp selective ack of length zero"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// The fixed part of every packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Packet type.
    pub ty: PacketType,
    /// The receiver's connection id (BEP 29 `connection_id`).
    pub conn_id: u16,
    /// Sender's clock in microseconds, wrapping.
    pub timestamp: u32,
    /// The sender's last measured one-way delay; 0 means "no sample".
    pub timestamp_diff: u32,
    /// Free bytes in the sender's receive buffer.
    pub wnd_size: u32,
    /// Sequence number of this packet.
    pub seq_nr: u16,
    /// Last in-order sequence number the sender received.
    pub ack_nr: u16,
}

/// A decoded packet borrowing from its datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The fixed header.
    pub header: Header,
    /// The selective-ACK bitmask, if present: bit `i` (LSB first within each
    /// byte) acknowledges `ack_nr + 2 + i`.
    pub sack: Option<&'a [u8]>,
    /// libtorrent's close reason, if present.
    pub close_reason: Option<u16>,
    /// The peer's crust hello ([`EXT_CRUST`]), if present: the largest UDP
    /// payload it can receive.
    pub crust_max_datagram: Option<u16>,
    /// Payload after the extensions.
    pub payload: &'a [u8],
}

impl<'a> Packet<'a> {
    /// Parses one datagram, walking the extension chain and skipping
    /// extensions it does not know by their length.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        if bytes.len() < HEADER_LEN {
            return Err(DecodeError::TooShort);
        }
        let version = bytes[0] & 0x0f;
        if version != VERSION {
            return Err(DecodeError::BadVersion(version));
        }
        let ty =
            PacketType::from_nibble(bytes[0] >> 4).ok_or(DecodeError::BadType(bytes[0] >> 4))?;
        let u16_at = |i: usize| u16::from_be_bytes([bytes[i], bytes[i + 1]]);
        let u32_at =
            |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let header = Header {
            ty,
            conn_id: u16_at(2),
            timestamp: u32_at(4),
            timestamp_diff: u32_at(8),
            wnd_size: u32_at(12),
            seq_nr: u16_at(16),
            ack_nr: u16_at(18),
        };
        let mut next = bytes[1];
        let mut rest = &bytes[HEADER_LEN..];
        let mut sack = None;
        let mut close_reason = None;
        let mut crust_max_datagram = None;
        let mut walked = 0;
        while next != 0 {
            walked += 1;
            if walked > MAX_EXTENSIONS {
                return Err(DecodeError::TooManyExtensions);
            }
            let [following, len, tail @ ..] = rest else {
                return Err(DecodeError::TruncatedExtension);
            };
            let len = usize::from(*len);
            if tail.len() < len {
                return Err(DecodeError::TruncatedExtension);
            }
            let (data, after) = tail.split_at(len);
            match next {
                EXT_SACK => {
                    if len == 0 {
                        return Err(DecodeError::EmptySack);
                    }
                    sack = Some(data);
                }
                EXT_CLOSE_REASON if len >= 4 => {
                    close_reason = Some(u16::from_be_bytes([data[2], data[3]]));
                }
                EXT_CRUST if len >= CRUST_HELLO_LEN && data[..4] == CRUST_MAGIC => {
                    let version = u16::from_be_bytes([data[4], data[5]]);
                    if version >= 1 {
                        crust_max_datagram = Some(u16::from_be_bytes([data[6], data[7]]));
                    }
                }
                _ => {}
            }
            next = *following;
            rest = after;
        }
        Ok(Packet {
            header,
            sack,
            close_reason,
            crust_max_datagram,
            payload: rest,
        })
    }
}

/// Appends one packet to `out`: header, an optional SACK extension and the
/// payload. The SACK mask is written as given (its length must fit a u8).
pub fn encode(header: &Header, sack: Option<&[u8]>, payload: &[u8], out: &mut Vec<u8>) {
    encode_with(header, sack, None, payload, out);
}

/// [`encode`] with crust's hello ([`EXT_CRUST`]) announcing
/// `crust_max_datagram` when it is given; the hello comes first in the
/// chain, the SACK after it.
pub fn encode_with(
    header: &Header,
    sack: Option<&[u8]>,
    crust_max_datagram: Option<u16>,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    let sack = sack.filter(|s| !s.is_empty() && s.len() <= usize::from(u8::MAX));
    out.reserve(
        HEADER_LEN
            + sack.map_or(0, |s| 2 + s.len())
            + crust_max_datagram.map_or(0, |_| 10 + 2 + CRUST_HELLO_LEN)
            + payload.len(),
    );
    out.push(((header.ty as u8) << 4) | VERSION);
    let sack_type = if sack.is_some() { EXT_SACK } else { 0 };
    out.push(if crust_max_datagram.is_some() {
        EXT_BITS
    } else {
        sack_type
    });
    out.extend_from_slice(&header.conn_id.to_be_bytes());
    out.extend_from_slice(&header.timestamp.to_be_bytes());
    out.extend_from_slice(&header.timestamp_diff.to_be_bytes());
    out.extend_from_slice(&header.wnd_size.to_be_bytes());
    out.extend_from_slice(&header.seq_nr.to_be_bytes());
    out.extend_from_slice(&header.ack_nr.to_be_bytes());
    if let Some(max) = crust_max_datagram {
        out.extend_from_slice(&[EXT_CRUST, 8, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.push(sack_type);
        out.push(CRUST_HELLO_LEN as u8);
        out.extend_from_slice(&CRUST_MAGIC);
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&max.to_be_bytes());
    }
    if let Some(mask) = sack {
        out.push(0);
        // Checked by the filter above.
        out.push(mask.len() as u8);
        out.extend_from_slice(mask);
    }
    out.extend_from_slice(payload);
}

/// True if the first byte of a datagram says uTP version 1 with a known type.
/// The driver uses this to split uTP from crust's own datagrams.
pub fn looks_like_utp(datagram: &[u8]) -> bool {
    datagram.len() >= HEADER_LEN
        && datagram[0] & 0x0f == VERSION
        && PacketType::from_nibble(datagram[0] >> 4).is_some()
}

/// Wrapping comparison of 16-bit sequence numbers: `a` comes before `b`.
pub(crate) fn seq_lt(a: u16, b: u16) -> bool {
    (a.wrapping_sub(b) as i16) < 0
}

/// Wrapping comparison of 32-bit timestamps: `a` is less than `b`.
pub(crate) fn ts_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(ty: PacketType) -> Header {
        Header {
            ty,
            conn_id: 0x1234,
            timestamp: 0xdead_beef,
            timestamp_diff: 7,
            wnd_size: 1 << 20,
            seq_nr: 65535,
            ack_nr: 3,
        }
    }

    #[test]
    fn every_type_round_trips() {
        for ty in [
            PacketType::Data,
            PacketType::Fin,
            PacketType::State,
            PacketType::Reset,
            PacketType::Syn,
        ] {
            let mut buf = Vec::new();
            encode(&header(ty), None, b"hi", &mut buf);
            assert_eq!(buf[0], (ty as u8) << 4 | 1);
            let p = Packet::decode(&buf).unwrap();
            assert_eq!(p.header, header(ty));
            assert_eq!(p.payload, b"hi");
            assert_eq!(p.sack, None);
        }
    }

    #[test]
    fn exact_byte_layout() {
        let mut buf = Vec::new();
        encode(
            &header(PacketType::State),
            Some(&[0b101, 0, 0, 0]),
            &[],
            &mut buf,
        );
        assert_eq!(
            buf,
            [
                0x21, 1, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 7, 0, 0x10, 0, 0, 0xff, 0xff,
                0, 3, 0, 4, 5, 0, 0, 0
            ]
        );
        let p = Packet::decode(&buf).unwrap();
        assert_eq!(p.sack, Some(&[5u8, 0, 0, 0][..]));
    }

    #[test]
    fn unknown_extensions_are_skipped_by_length() {
        let mut buf = Vec::new();
        encode(&header(PacketType::Data), None, &[], &mut buf);
        buf[1] = 77; // unknown first extension
        buf.extend_from_slice(&[EXT_BITS, 3, 9, 9, 9]); // -> bits ext, 3 bytes
        buf.extend_from_slice(&[EXT_SACK, 8, 0, 0, 0, 0, 0, 0, 0, 0]); // -> sack
        buf.extend_from_slice(&[EXT_CLOSE_REASON, 5, 0xff, 0xff, 0xff, 0xff, 0xff]);
        buf.extend_from_slice(&[0, 4, 0, 0, 0, 42]); // close reason 42
        buf.extend_from_slice(b"payload");
        let p = Packet::decode(&buf).unwrap();
        assert_eq!(p.sack.map(<[u8]>::len), Some(5));
        assert_eq!(p.close_reason, Some(42));
        assert_eq!(p.payload, b"payload");
    }

    #[test]
    fn crust_hello_round_trips_alone_and_before_a_sack() {
        let mut buf = Vec::new();
        encode_with(&header(PacketType::Syn), None, Some(65507), &[], &mut buf);
        // Zeroed extension bits first (libutp drops a packet whose first
        // extension type is 3 or more), then the hello.
        assert_eq!(buf[1], EXT_BITS);
        assert_eq!(
            &buf[20..],
            &[
                EXT_CRUST, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, b'c', b'r', b's', b't', 0, 1, 0xff,
                0xe3
            ]
        );
        let p = Packet::decode(&buf).unwrap();
        assert_eq!(p.crust_max_datagram, Some(65507));
        assert_eq!(p.header, header(PacketType::Syn));
        assert!(p.payload.is_empty());

        let mut buf = Vec::new();
        encode_with(
            &header(PacketType::State),
            Some(&[1, 0, 0, 0]),
            Some(9000),
            b"x",
            &mut buf,
        );
        let p = Packet::decode(&buf).unwrap();
        assert_eq!(p.crust_max_datagram, Some(9000));
        assert_eq!(p.sack, Some(&[1u8, 0, 0, 0][..]));
        assert_eq!(p.payload, b"x");

        let mut plain = Vec::new();
        encode(&header(PacketType::Syn), None, &[], &mut plain);
        assert_eq!(Packet::decode(&plain).unwrap().crust_max_datagram, None);
    }

    #[test]
    fn a_foreign_extension_63_is_not_a_crust_hello() {
        // Same type number, wrong magic or too short: skipped by length.
        for data in [
            &b"xxxx\0\x01\x10\x00"[..],
            &b"crst\0\x01"[..],
            &b"crst\0\0\x10\0"[..],
        ] {
            let mut buf = Vec::new();
            encode(&header(PacketType::Syn), None, &[], &mut buf);
            buf[1] = EXT_CRUST;
            buf.push(0);
            buf.push(data.len() as u8);
            buf.extend_from_slice(data);
            let p = Packet::decode(&buf).unwrap();
            assert_eq!(p.crust_max_datagram, None, "{data:?}");
            assert!(p.payload.is_empty());
        }
    }

    #[test]
    fn long_sack_accepted() {
        let mut buf = Vec::new();
        let mask = [0xffu8; 252];
        encode(&header(PacketType::State), Some(&mask), &[], &mut buf);
        assert_eq!(Packet::decode(&buf).unwrap().sack.unwrap().len(), 252);
    }

    #[test]
    fn malformed_inputs_are_errors() {
        let mut good = Vec::new();
        encode(&header(PacketType::Data), None, &[], &mut good);
        assert_eq!(Packet::decode(&good[..19]), Err(DecodeError::TooShort));
        assert_eq!(Packet::decode(&[]), Err(DecodeError::TooShort));
        let mut bad = good.clone();
        bad[0] = 0x02;
        assert_eq!(Packet::decode(&bad), Err(DecodeError::BadVersion(2)));
        bad[0] = 0x51;
        assert_eq!(Packet::decode(&bad), Err(DecodeError::BadType(5)));
        let mut trunc = good.clone();
        trunc[1] = 1;
        assert_eq!(Packet::decode(&trunc), Err(DecodeError::TruncatedExtension));
        trunc.extend_from_slice(&[0, 10, 1, 2]);
        assert_eq!(Packet::decode(&trunc), Err(DecodeError::TruncatedExtension));
        let mut empty = good.clone();
        empty[1] = 1;
        empty.extend_from_slice(&[0, 0]);
        assert_eq!(Packet::decode(&empty), Err(DecodeError::EmptySack));
        let mut looped = good.clone();
        looped[1] = 9;
        for _ in 0..40 {
            looped.extend_from_slice(&[9, 0]);
        }
        assert_eq!(Packet::decode(&looped), Err(DecodeError::TooManyExtensions));
    }

    #[test]
    fn crust_magic_is_not_utp() {
        let mut d = b"CRST".to_vec();
        d.resize(40, 0);
        assert!(!looks_like_utp(&d));
        let mut u = Vec::new();
        encode(&header(PacketType::Syn), None, &[], &mut u);
        assert!(looks_like_utp(&u));
    }

    #[test]
    fn wrapping_comparisons() {
        assert!(seq_lt(65535, 0));
        assert!(seq_lt(1, 2));
        assert!(!seq_lt(2, 2));
        assert!(ts_lt(u32::MAX - 5, 3));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2000,
            rng_seed: proptest::test_runner::RngSeed::Fixed(29),
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let _ = Packet::decode(&bytes);
        }

        #[test]
        fn decode_never_panics_with_valid_first_byte(ty in 0u8..5, rest in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let mut bytes = vec![(ty << 4) | 1];
            bytes.extend(rest);
            if let Ok(p) = Packet::decode(&bytes) {
                proptest::prop_assert!(p.payload.len() < bytes.len());
            }
        }
    }
}
