//! Every decoder of bytes from the network or disk, callable with arbitrary
//! bytes: the entry points of the fuzz targets in `fuzz/` and of the
//! property tests below. Hidden from the docs; not a stable API.
//!
//! Each function returns normally for any input; a panic, an abort or an
//! allocation out of proportion to the input is a bug. Where a decoder
//! accepts its input, the function also checks what the decoder promises
//! (round trips, bounds).

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::id::SecretId;
use crate::secure::ChannelConfig;
use crate::secure::cipher::{RecvCipher, SendCipher};
use crate::secure::frame::{FrameDecoder, LEN_PREFIX, parse_frame_len};
use crate::utp::proto::{Endpoint, EndpointConfig, Packet};

/// The largest message the frame targets accept: small, so the fuzzer can
/// reach the limit, and large enough to need many chunks.
const FUZZ_MAX_MESSAGE: usize = 100_000;
/// The frame targets' key (both directions; there is no handshake).
const KEY: [u8; 32] = [7; 32];

/// One message of an established connection (postcard `Packet`).
pub fn wire_message(data: &[u8]) {
    let _ = crate::wire::decode(Bytes::copy_from_slice(data));
}

/// One crust datagram on the UDP socket (echo, hole punching). What
/// decodes re-encodes to the same bytes.
pub fn datagram(data: &[u8]) {
    if let Some(d) = crate::nat::datagram::Datagram::decode(data) {
        assert_eq!(crate::nat::datagram::Datagram::decode(&d.encode()), Some(d));
    }
}

/// The byte stream after a handshake, as an attacker without the keys
/// sends it: length prefixes and ciphertext. Every frame must fail to
/// decrypt or be refused before decryption.
pub fn frame_stream(data: &[u8]) {
    let mut decoder = FrameDecoder::new(RecvCipher::new(&KEY), FUZZ_MAX_MESSAGE);
    let mut wire = data;
    while wire.len() >= LEN_PREFIX {
        let Ok(len) = parse_frame_len([wire[0], wire[1]], usize::from(u16::MAX)) else {
            return;
        };
        let body = &wire[LEN_PREFIX..];
        let body = &body[..len.min(body.len())];
        if decoder.decode_frame(BytesMut::from(body)).is_err() {
            return;
        }
        wire = &wire[LEN_PREFIX + body.len()..];
    }
}

/// Frames as an authenticated but hostile peer sends them: `data` is a
/// sequence of plaintext chunks (`u16` big-endian length, then the chunk:
/// header byte and data), each encrypted with the right key before it
/// reaches the decoder. The decoder must reassemble or refuse, and never
/// reserve more than twice what it was sent (plus one initial reservation
/// per lane).
pub fn frame_chunks(data: &[u8]) {
    let mut sender = SendCipher::new(&KEY);
    let mut decoder = FrameDecoder::new(RecvCipher::new(&KEY), FUZZ_MAX_MESSAGE);
    let mut wire = data;
    let mut received = 0usize;
    while wire.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([wire[0], wire[1]]));
        let chunk = &wire[2..];
        let chunk = &chunk[..len.min(chunk.len())];
        wire = &wire[2 + chunk.len()..];
        received += chunk.len();
        let mut body = BytesMut::from(chunk);
        let tag = sender.seal(&mut body);
        body.extend_from_slice(&tag);
        match decoder.decode_frame(body) {
            Ok(Some((lane, message))) => {
                assert!(lane < 16);
                assert!(!message.is_empty() && message.len() <= FUZZ_MAX_MESSAGE);
            }
            Ok(None) => {}
            Err(_) => return,
        }
        assert!(decoder.buffered() <= received);
        assert!(decoder.reserved() <= 2 * received + 16 * 64 * 1024);
    }
}

/// The payload of a peer's handshake message (after Noise decrypted it).
pub fn handshake_payload(data: &[u8]) {
    let ours = SecretId::from_bytes(&[1; 32]);
    let _ =
        crate::secure::handshake::verify(data, Some(&[9; 32]), &ChannelConfig::default(), &ours);
}

/// One uTP datagram through the packet decoder. A decoded packet's parts
/// lie within the datagram.
pub fn utp_packet(data: &[u8]) {
    if let Ok(p) = Packet::decode(data) {
        assert!(p.payload.len() <= data.len());
    }
}

/// A sequence of datagrams (`u16` big-endian length, then the datagram)
/// from a few source addresses into a uTP endpoint that also has a
/// connection of its own, with time passing between them. The endpoint's
/// tables stay within their configured bounds.
pub fn utp_endpoint(data: &[u8]) {
    let config = EndpointConfig::default();
    let mut endpoint = Endpoint::new(config.clone(), 1);
    let start = Instant::now();
    let mut now = start;
    let ours = endpoint.connect(now, "192.0.2.1:6881".parse().expect("an address"));
    let mut wire = data;
    let mut n = 0u16;
    while wire.len() >= 3 {
        let from = wire[0] % 4;
        let len = usize::from(u16::from_be_bytes([wire[1], wire[2]]));
        let datagram = &wire[3..];
        let datagram = &datagram[..len.min(datagram.len())];
        wire = &wire[3 + datagram.len()..];
        let remote = std::net::SocketAddr::from(([192, 0, 2, 1 + from], 6881));
        let _ = endpoint.handle_datagram(now, remote, datagram);
        n = n.wrapping_add(1);
        now += Duration::from_millis(u64::from(n % 7) * 50);
        endpoint.handle_timeout(now);
        while endpoint.poll_transmit(now).is_some() {}
        while let Some((handle, _)) = endpoint.poll_event() {
            if let Some(conn) = endpoint.connection_mut(handle) {
                let mut buf = [0u8; 4096];
                while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
            }
        }
        while endpoint.accept().is_some() {}
    }
    let _ = ours;
}

/// A bootstrap cache file's bytes. What parses re-serialises.
pub fn bootstrap_cache(data: &[u8]) {
    let _ = crate::bootstrap_cache::parse(data);
}

/// A LAN discovery beacon (UDP broadcast from anyone on the network). What
/// decodes announces few endpoints; and a beacon built from the same bytes,
/// signed, decodes to itself when it is within the limits.
pub fn lan_beacon(data: &[u8]) {
    use crate::service::LanBeacon as Beacon;
    if let Some(beacon) = Beacon::decode(data) {
        let ip = std::net::IpAddr::from([192, 0, 2, 1]);
        assert!(beacon.endpoints(ip).len() <= 16);
    }
    let (name, ports) = data.split_at(data.len().min(40));
    let ports: Vec<u16> = ports
        .chunks_exact(2)
        .map(|p| u16::from_be_bytes([p[0], p[1]]))
        .collect();
    let (tcp, utp) = ports.split_at(ports.len() / 2);
    let secret = SecretId::from_bytes(&[9; 32]);
    let beacon = Beacon {
        network: String::from_utf8_lossy(name).into_owned(),
        peer: secret.peer_id(),
        tcp: tcp.to_vec(),
        utp: utp.to_vec(),
    };
    let decoded = Beacon::decode(&beacon.encode(&secret));
    if beacon.network.len() <= 64 && tcp.len() <= 8 && utp.len() <= 8 {
        assert_eq!(decoded, Some(beacon));
    }
}

/// A mailbox request or answer from a peer. What decodes re-encodes and
/// decodes equal.
pub fn mailbox_message(data: &[u8]) {
    use crate::mailbox::Message;
    if let Ok(Some(message)) = Message::decode(data) {
        assert_eq!(Message::decode(&message.encode()), Ok(Some(message)));
    }
}

/// DHT traffic from a peer (`crust::dht::Envelope`). What decodes
/// re-encodes and decodes equal, within the bounds.
pub fn dht_envelope(data: &[u8]) {
    use crate::dht::{Envelope, MAX_ENVELOPE_BYTES};
    if let Ok(Some(envelope)) = Envelope::decode(data) {
        let again = envelope.encode();
        assert!(again.len() <= MAX_ENVELOPE_BYTES);
        assert_eq!(Envelope::decode(&again), Ok(Some(envelope)));
    }
}

#[cfg(test)]
mod tests {
    //! Random garbage, truncations and bit flips of valid encodings through
    //! every entry point above: errors, never panics.

    use super::*;
    use proptest::prelude::*;

    fn valid_wire() -> Vec<Vec<u8>> {
        use crate::wire::{Candidates, Hello, Packet as W, Signal, encode};
        let peer = SecretId::from_bytes(&[3; 32]).peer_id();
        vec![
            encode(&W::Data(b"hello")),
            encode(&W::Ping { nonce: 5 }),
            encode(&W::Hello(Hello {
                observed: "192.0.2.9:4000".parse().expect("an address"),
                udp_port: Some(4000),
            })),
            encode(&W::Forward {
                to: peer,
                signal: Signal::Connect {
                    session: 1,
                    candidates: Candidates {
                        udp: vec!["192.0.2.9:4000".parse().expect("an address")],
                        tcp: vec![],
                        mapping: Default::default(),
                        tcp_mapping: Default::default(),
                    },
                },
            }),
            encode(&W::Relayed {
                from: peer,
                session: 2,
                data: b"ciphertext",
            }),
        ]
    }

    fn valid_cache() -> Vec<u8> {
        let peer = SecretId::from_bytes(&[3; 32]).peer_id();
        format!(
            r#"{{"version":1,"peers":[{{"id":"{peer}","addrs":["tcp:192.0.2.1:4000"],"last_success":5}}]}}"#
        )
        .into_bytes()
    }

    /// `bytes` with bit `bit` (modulo its length) flipped, then cut to
    /// `keep` bytes (modulo its length + 1).
    fn mangle(mut bytes: Vec<u8>, bit: usize, keep: usize) -> Vec<u8> {
        if !bytes.is_empty() {
            let bit = bit % (bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
        }
        let keep = keep % (bytes.len() + 1);
        bytes.truncate(keep);
        bytes
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn garbage_is_refused_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            wire_message(&bytes);
            datagram(&bytes);
            frame_stream(&bytes);
            frame_chunks(&bytes);
            handshake_payload(&bytes);
            utp_packet(&bytes);
            utp_endpoint(&bytes);
            bootstrap_cache(&bytes);
            lan_beacon(&bytes);
            mailbox_message(&bytes);
            let mut with_magic = crate::mailbox::MAGIC.to_vec();
            with_magic.extend_from_slice(&bytes);
            mailbox_message(&with_magic);
            dht_envelope(&bytes);
            let mut with_magic = crate::dht::MAGIC.to_vec();
            with_magic.push(crate::dht::WIRE_VERSION);
            with_magic.extend_from_slice(&bytes);
            dht_envelope(&with_magic);
        }

        #[test]
        fn mangled_valid_input_is_refused_without_panicking(which in 0usize..5, bit in any::<usize>(), keep in any::<usize>()) {
            let wire = mangle(valid_wire()[which].clone(), bit, keep);
            wire_message(&wire);
            let mut with_magic = b"CRST\x01".to_vec();
            with_magic.extend_from_slice(&wire);
            datagram(&with_magic);
            handshake_payload(&wire);
            bootstrap_cache(&mangle(valid_cache(), bit, keep));
        }

        #[test]
        fn chunk_sequences_reassemble_or_are_refused(
            chunks in proptest::collection::vec((0u8..16, any::<bool>(), any::<bool>(), any::<u32>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..40)
        ) {
            // Well-formed-looking chunks (real lanes and flags, sizes near
            // the limit) reach deeper than raw garbage.
            let mut data = Vec::new();
            for (lane, fin, sized, size, body) in chunks {
                let mut chunk = vec![(lane << 4) | u8::from(fin) | (u8::from(sized) << 1)];
                if sized {
                    chunk.extend_from_slice(&(size % (2 * FUZZ_MAX_MESSAGE as u32)).to_be_bytes());
                }
                chunk.extend_from_slice(&body);
                data.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
                data.extend_from_slice(&chunk);
            }
            frame_chunks(&data);
        }
    }

    #[test]
    fn a_valid_cache_parses() {
        assert_eq!(
            crate::bootstrap_cache::parse(&valid_cache()).map(|p| p.len()),
            Ok(1)
        );
    }

    #[test]
    fn huge_declared_messages_on_every_lane_reserve_little() {
        // Regression (found by this hardening pass): the first chunk of a
        // multi-chunk message reserved its whole declared size, so 16
        // frames of 22 bytes each made a peer's decoder reserve 16 × the
        // message limit (256 MiB with the default 16 MiB).
        let max = 16 * 1024 * 1024;
        let mut sender = SendCipher::new(&KEY);
        let mut decoder = FrameDecoder::new(RecvCipher::new(&KEY), max);
        for lane in 0u8..16 {
            let mut body = BytesMut::new();
            body.extend_from_slice(&[(lane << 4) | 0x02]);
            body.extend_from_slice(&(max as u32).to_be_bytes());
            body.extend_from_slice(b"x");
            let tag = sender.seal(&mut body);
            body.extend_from_slice(&tag);
            assert!(matches!(decoder.decode_frame(body), Ok(None)));
        }
        assert_eq!(decoder.buffered(), 16);
        assert!(
            decoder.reserved() <= 16 * 64 * 1024,
            "reserved {}",
            decoder.reserved()
        );
    }

    #[test]
    fn a_message_grown_chunk_by_chunk_ends_as_one_exact_allocation() {
        let (mut encoder, mut decoder) = crate::secure::frame::tests::pair(1000, 1 << 20);
        let message: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let mut wire = Vec::new();
        encoder.encode_message(3, &message, &mut wire);
        let mut got = None;
        for frame in crate::secure::frame::tests::split_frames(&wire, 1000).expect("frames") {
            if let Some(m) = decoder.decode_frame(frame).expect("valid") {
                got = Some(m);
            }
        }
        assert_eq!(got.map(|(lane, m)| (lane, m.to_vec())), Some((3, message)));
        assert_eq!(decoder.reserved(), 0);
    }
}
