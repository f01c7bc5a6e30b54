//! The framing codec under the secure channel, without I/O.
//!
//! On the wire, after the handshake, a connection is a sequence of frames:
//! a big-endian `u16` length followed by that many bytes of one Noise
//! transport message (ciphertext plus a 16-byte tag). Each frame decrypts to
//! one *chunk*: a header byte (`lane << 4 | FIN`) and up to
//! `max_frame_len - 17` bytes of a message. A message is the concatenation of
//! the chunks of one lane up to and including the chunk with FIN set, so a
//! sender may interleave chunks of messages on different lanes (priorities)
//! and a receiver reassembles each lane separately.
//!
//! Nonces are implicit counters, one per direction, so a replayed, dropped or
//! reordered frame fails to decrypt. Use: [`FrameEncoder::encode_chunk`] for
//! each chunk to send; [`parse_frame_len`] on the two length bytes of each
//! incoming frame, then [`FrameDecoder::decode_frame`] on its body.

use std::sync::Arc;

use snow::StatelessTransportState;

/// The largest Noise message, and so the largest frame body.
pub const MAX_FRAME_LEN: usize = 65535;
/// Bytes of the length prefix of every frame.
pub(crate) const LEN_PREFIX: usize = 2;
/// The Poly1305 tag that every frame body carries.
pub(crate) const TAG_LEN: usize = 16;
/// The chunk header byte.
pub(crate) const CHUNK_HEADER: usize = 1;
/// The smallest useful frame limit: room for a header, a tag and some data.
pub const MIN_FRAME_LEN: usize = 64;
/// Number of lanes a message can travel on; lane 0 is the most urgent.
pub(crate) const LANES: usize = 16;

const FIN: u8 = 0x01;
const RESERVED_BITS: u8 = 0x0e;

/// What is wrong with an incoming frame. Any of these ends the connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A frame's length prefix exceeds the configured maximum.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    Oversized {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A frame failed authentication: tampered, replayed, reordered or
    /// encrypted with another key.
    #[error("frame failed to decrypt (tampered, replayed or out of order)")]
    Decrypt,
    /// A frame decrypted but its contents break the framing rules.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    /// A reassembled message exceeds the configured maximum.
    #[error("message exceeds the limit of {max} bytes")]
    MessageTooLarge {
        /// The limit.
        max: usize,
    },
    /// The stream ended in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// The stream ended cleanly between frames.
    #[error("connection closed by the peer")]
    Closed,
    /// The underlying stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Checks the two length bytes that start a frame.
pub(crate) fn parse_frame_len(prefix: [u8; 2], max_frame_len: usize) -> Result<usize, FrameError> {
    let len = usize::from(u16::from_be_bytes(prefix));
    if len > max_frame_len {
        return Err(FrameError::Oversized {
            len,
            max: max_frame_len,
        });
    }
    if len < TAG_LEN + CHUNK_HEADER {
        return Err(FrameError::Malformed("frame shorter than a header and a tag"));
    }
    Ok(len)
}

/// Encrypts chunks into frames for one direction of a connection.
pub(crate) struct FrameEncoder {
    cipher: Arc<StatelessTransportState>,
    nonce: u64,
    max_frame_len: usize,
    plain: Vec<u8>,
}

impl FrameEncoder {
    pub(crate) fn new(cipher: Arc<StatelessTransportState>, max_frame_len: usize) -> Self {
        Self {
            cipher,
            nonce: 0,
            max_frame_len: max_frame_len.clamp(MIN_FRAME_LEN, MAX_FRAME_LEN),
            plain: Vec::new(),
        }
    }

    /// The most message bytes one chunk can carry.
    pub(crate) fn max_chunk(&self) -> usize {
        self.max_frame_len - TAG_LEN - CHUNK_HEADER
    }

    /// Appends to `out` one frame carrying `chunk` (at most
    /// [`max_chunk`](Self::max_chunk) bytes) of a message on `lane`; `fin`
    /// marks the message's last chunk.
    pub(crate) fn encode_chunk(&mut self, lane: u8, fin: bool, chunk: &[u8], out: &mut Vec<u8>) {
        debug_assert!(usize::from(lane) < LANES);
        debug_assert!(chunk.len() <= self.max_chunk());
        self.plain.clear();
        self.plain.push((lane << 4) | if fin { FIN } else { 0 });
        self.plain.extend_from_slice(chunk);
        let body_len = self.plain.len() + TAG_LEN;
        let start = out.len();
        out.resize(start + LEN_PREFIX + body_len, 0);
        // body_len <= max_frame_len <= u16::MAX by construction.
        out[start..start + LEN_PREFIX].copy_from_slice(&(body_len as u16).to_be_bytes());
        let written = self
            .cipher
            .write_message(self.nonce, &self.plain, &mut out[start + LEN_PREFIX..]);
        // Cannot fail: the output has room and the length is within Noise's
        // limit. Should it ever, the frame is dropped from `out` and the
        // connection's next frame fails to decrypt, closing it.
        if written.is_err() {
            out.truncate(start);
        }
        self.nonce += 1;
        if self.plain.capacity() > 4096 && chunk.len() < 1024 {
            self.plain = Vec::new();
        }
    }

    /// Appends every chunk of `message` on `lane` to `out`.
    pub(crate) fn encode_message(&mut self, lane: u8, message: &[u8], out: &mut Vec<u8>) {
        let max = self.max_chunk();
        let mut rest = message;
        loop {
            let take = rest.len().min(max);
            let (chunk, tail) = rest.split_at(take);
            self.encode_chunk(lane, tail.is_empty(), chunk, out);
            if tail.is_empty() {
                break;
            }
            rest = tail;
        }
    }
}

/// Decrypts frames and reassembles messages for one direction.
pub(crate) struct FrameDecoder {
    cipher: Arc<StatelessTransportState>,
    nonce: u64,
    max_message_len: usize,
    partial: [Vec<u8>; LANES],
    plain: Vec<u8>,
}

impl FrameDecoder {
    pub(crate) fn new(cipher: Arc<StatelessTransportState>, max_message_len: usize) -> Self {
        Self {
            cipher,
            nonce: 0,
            max_message_len,
            partial: Default::default(),
            plain: Vec::new(),
        }
    }

    /// Decrypts one frame body (the bytes after the length prefix). Returns
    /// a message and its lane when this frame completes one.
    pub(crate) fn decode_frame(&mut self, body: &[u8]) -> Result<Option<(u8, Vec<u8>)>, FrameError> {
        self.plain.resize(body.len(), 0);
        let len = self
            .cipher
            .read_message(self.nonce, body, &mut self.plain)
            .map_err(|_| FrameError::Decrypt)?;
        self.nonce += 1;
        let Some((&header, data)) = self.plain[..len].split_first() else {
            return Err(FrameError::Malformed("empty chunk"));
        };
        if header & RESERVED_BITS != 0 {
            return Err(FrameError::Malformed("reserved chunk flags set"));
        }
        let lane = header >> 4;
        let fin = header & FIN != 0;
        let partial = &mut self.partial[usize::from(lane)];
        if partial.len() + data.len() > self.max_message_len {
            return Err(FrameError::MessageTooLarge {
                max: self.max_message_len,
            });
        }
        let message = if partial.is_empty() {
            if fin {
                Some(data.to_vec())
            } else {
                partial.extend_from_slice(data);
                None
            }
        } else {
            partial.extend_from_slice(data);
            fin.then(|| std::mem::take(partial))
        };
        if self.plain.capacity() > 4096 && len < 1024 {
            self.plain = Vec::new();
        }
        if fin && message.as_ref().is_some_and(Vec::is_empty) {
            return Err(FrameError::Malformed("empty message"));
        }
        Ok(message.map(|m| (lane, m)))
    }

    /// Bytes held in partly received messages.
    pub(crate) fn buffered(&self) -> usize {
        self.partial.iter().map(Vec::len).sum()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A connected encoder/decoder pair with fresh keys, as a handshake
    /// would leave them.
    pub(crate) fn pair(max_frame_len: usize, max_message_len: usize) -> (FrameEncoder, FrameDecoder) {
        let params: snow::params::NoiseParams = crate::secure::NOISE_PARAMS.parse().unwrap();
        let ikey = snow::Builder::new(params.clone()).generate_keypair().unwrap();
        let rkey = snow::Builder::new(params.clone()).generate_keypair().unwrap();
        let mut i = snow::Builder::new(params.clone())
            .local_private_key(&ikey.private)
            .unwrap()
            .build_initiator()
            .unwrap();
        let mut r = snow::Builder::new(params)
            .local_private_key(&rkey.private)
            .unwrap()
            .build_responder()
            .unwrap();
        let (mut a, mut b) = ([0u8; 1024], [0u8; 1024]);
        let n = i.write_message(&[], &mut a).unwrap();
        r.read_message(&a[..n], &mut b).unwrap();
        let n = r.write_message(&[], &mut a).unwrap();
        i.read_message(&a[..n], &mut b).unwrap();
        let n = i.write_message(&[], &mut a).unwrap();
        r.read_message(&a[..n], &mut b).unwrap();
        let i = Arc::new(i.into_stateless_transport_mode().unwrap());
        let r = Arc::new(r.into_stateless_transport_mode().unwrap());
        (
            FrameEncoder::new(i, max_frame_len),
            FrameDecoder::new(r, max_message_len),
        )
    }

    /// Splits a byte stream into frame bodies, checking each prefix.
    pub(crate) fn split_frames(mut wire: &[u8], max: usize) -> Result<Vec<&[u8]>, FrameError> {
        let mut frames = Vec::new();
        while !wire.is_empty() {
            if wire.len() < LEN_PREFIX {
                return Err(FrameError::Truncated);
            }
            let len = parse_frame_len([wire[0], wire[1]], max)?;
            if wire.len() < LEN_PREFIX + len {
                return Err(FrameError::Truncated);
            }
            frames.push(&wire[LEN_PREFIX..LEN_PREFIX + len]);
            wire = &wire[LEN_PREFIX + len..];
        }
        Ok(frames)
    }

    fn decode_all(dec: &mut FrameDecoder, wire: &[u8], max: usize) -> Result<Vec<(u8, Vec<u8>)>, FrameError> {
        let mut out = Vec::new();
        for body in split_frames(wire, max)? {
            if let Some(m) = dec.decode_frame(body)? {
                out.push(m);
            }
        }
        Ok(out)
    }

    #[test]
    fn a_message_larger_than_a_frame_is_chunked_and_reassembled() {
        let (mut enc, mut dec) = pair(MAX_FRAME_LEN, 1 << 20);
        let message: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut wire = Vec::new();
        enc.encode_message(3, &message, &mut wire);
        let frames = split_frames(&wire, MAX_FRAME_LEN).unwrap();
        assert_eq!(frames.len(), 4);
        assert!(frames.iter().all(|f| f.len() <= MAX_FRAME_LEN));
        let got = decode_all(&mut dec, &wire, MAX_FRAME_LEN).unwrap();
        assert_eq!(got, vec![(3, message)]);
        assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn interleaved_lanes_reassemble_separately() {
        let (mut enc, mut dec) = pair(MIN_FRAME_LEN, 1 << 20);
        let max = enc.max_chunk();
        let big = vec![7u8; max * 3];
        let mut wire = Vec::new();
        enc.encode_chunk(5, false, &big[..max], &mut wire);
        enc.encode_message(0, b"urgent", &mut wire);
        enc.encode_chunk(5, false, &big[max..2 * max], &mut wire);
        enc.encode_chunk(5, true, &big[2 * max..], &mut wire);
        let got = decode_all(&mut dec, &wire, MIN_FRAME_LEN).unwrap();
        assert_eq!(got, vec![(0, b"urgent".to_vec()), (5, big)]);
    }

    #[test]
    fn a_tampered_byte_fails_to_decrypt() {
        let (mut enc, mut dec) = pair(MAX_FRAME_LEN, 1 << 20);
        let mut wire = Vec::new();
        enc.encode_message(0, b"hello world", &mut wire);
        wire[LEN_PREFIX + 3] ^= 0x40;
        assert!(matches!(
            decode_all(&mut dec, &wire, MAX_FRAME_LEN),
            Err(FrameError::Decrypt)
        ));
    }

    #[test]
    fn replayed_and_reordered_frames_fail_to_decrypt() {
        let (mut enc, mut dec) = pair(MAX_FRAME_LEN, 1 << 20);
        let (mut first, mut second) = (Vec::new(), Vec::new());
        enc.encode_message(0, b"one", &mut first);
        enc.encode_message(0, b"two", &mut second);
        // Reordered: the second frame arrives first.
        assert!(matches!(
            dec.decode_frame(&second[LEN_PREFIX..]),
            Err(FrameError::Decrypt)
        ));
        let (mut enc, mut dec) = pair(MAX_FRAME_LEN, 1 << 20);
        let mut first = Vec::new();
        enc.encode_message(0, b"one", &mut first);
        assert!(dec.decode_frame(&first[LEN_PREFIX..]).unwrap().is_some());
        // Replayed.
        assert!(matches!(
            dec.decode_frame(&first[LEN_PREFIX..]),
            Err(FrameError::Decrypt)
        ));
    }

    #[test]
    fn oversized_prefix_and_message_are_refused() {
        assert!(matches!(
            parse_frame_len([0xff, 0xff], 1024),
            Err(FrameError::Oversized { len: 65535, max: 1024 })
        ));
        assert!(matches!(
            parse_frame_len([0, 3], 1024),
            Err(FrameError::Malformed(_))
        ));
        let (mut enc, mut dec) = pair(MAX_FRAME_LEN, 1000);
        let mut wire = Vec::new();
        enc.encode_message(1, &[1u8; 1001], &mut wire);
        assert!(matches!(
            decode_all(&mut dec, &wire, MAX_FRAME_LEN),
            Err(FrameError::MessageTooLarge { max: 1000 })
        ));
    }

    #[test]
    fn reserved_flags_and_empty_messages_are_malformed() {
        let (enc, mut dec) = pair(MAX_FRAME_LEN, 1000);
        let mut body = vec![0u8; 64];
        let n = enc.cipher.write_message(0, &[0x02, 1, 2], &mut body).unwrap();
        assert!(matches!(
            dec.decode_frame(&body[..n]),
            Err(FrameError::Malformed(_))
        ));
        let (enc, mut dec) = pair(MAX_FRAME_LEN, 1000);
        let n = enc.cipher.write_message(0, &[0x01], &mut body).unwrap();
        assert!(matches!(
            dec.decode_frame(&body[..n]),
            Err(FrameError::Malformed("empty message"))
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any sequence of messages on any lanes, with any frame size,
        /// arrives whole, per lane in order.
        #[test]
        fn messages_round_trip(
            max_frame in MIN_FRAME_LEN..=2048usize,
            messages in proptest::collection::vec((0u8..16, proptest::collection::vec(any::<u8>(), 1..5000)), 1..20),
        ) {
            let (mut enc, mut dec) = pair(max_frame, 1 << 20);
            let mut wire = Vec::new();
            for (lane, m) in &messages {
                enc.encode_message(*lane, m, &mut wire);
            }
            let got = decode_all(&mut dec, &wire, max_frame).unwrap();
            prop_assert_eq!(got, messages);
        }

        /// Flipping any bit of the stream gives an error, never a panic and
        /// never a wrong message.
        #[test]
        fn bit_flips_are_detected(
            message in proptest::collection::vec(any::<u8>(), 1..3000),
            flip in any::<proptest::sample::Index>(),
            bit in 0u8..8,
        ) {
            let (mut enc, mut dec) = pair(512, 1 << 20);
            let mut wire = Vec::new();
            enc.encode_message(2, &message, &mut wire);
            let i = flip.index(wire.len());
            wire[i] ^= 1 << bit;
            match decode_all(&mut dec, &wire, 512) {
                Ok(got) => prop_assert!(got.is_empty() || got != vec![(2, message)]),
                Err(_) => {}
            }
        }

        /// Truncating the stream anywhere loses only the unfinished message.
        #[test]
        fn truncation_is_reported(
            message in proptest::collection::vec(any::<u8>(), 200..3000),
            cut in any::<proptest::sample::Index>(),
        ) {
            let (mut enc, mut dec) = pair(128, 1 << 20);
            let mut wire = Vec::new();
            enc.encode_message(0, &message, &mut wire);
            let cut = cut.index(wire.len() - 1) + 1;
            let result = decode_all(&mut dec, &wire[..cut], 128);
            prop_assert!(matches!(result, Err(FrameError::Truncated)) || result.unwrap().is_empty());
        }
    }
}
