//! The framing codec under the secure channel, without I/O.
//!
//! On the wire, after the handshake, a connection is a sequence of frames:
//! a big-endian `u16` length followed by that many bytes of one Noise
//! transport message (ciphertext plus a 16-byte tag). Each frame decrypts to
//! one *chunk*: a header byte (`lane << 4 | SIZED | FIN`) and up to
//! `max_frame_len - 17` bytes of a message. A message is the concatenation of
//! the chunks of one lane up to and including the chunk with FIN set, so a
//! sender may interleave chunks of messages on different lanes (priorities)
//! and a receiver reassembles each lane separately. The first chunk of a
//! message that spans several carries SIZED and the message's total length
//! (`u32`, big-endian) before its data, so the receiver refuses an oversized
//! message at its first chunk and reassembles into one exact allocation.
//!
//! Nonces are implicit counters, one per direction, so a replayed, dropped or
//! reordered frame fails to decrypt. Frames are encrypted and decrypted in
//! place (`cipher.rs`); a message that fits one frame reaches the
//! application without being copied again.
//!
//! Use: [`FrameEncoder::chunk_len`] and [`FrameEncoder::encode_chunk`] for
//! each chunk to send (or [`FrameEncoder::encode_message`]);
//! [`parse_frame_len`] on the two length bytes of each incoming frame, then
//! [`FrameDecoder::decode_frame`] on its body.

use bytes::{Bytes, BytesMut};

use super::cipher::{RecvCipher, SendCipher};

/// The largest Noise message, and so the largest frame body.
pub const MAX_FRAME_LEN: usize = 65535;
/// Bytes of the length prefix of every frame.
pub(crate) const LEN_PREFIX: usize = 2;
/// The Poly1305 tag that every frame body carries.
pub(crate) const TAG_LEN: usize = super::cipher::TAG_LEN;
/// Messages up to this size are copied out of the read buffer rather than
/// shared with it, so a small message kept by the application does not pin
/// a large buffer.
const COPY_BELOW: usize = 4096;
/// The chunk header byte.
pub(crate) const CHUNK_HEADER: usize = 1;
/// The smallest useful frame limit: room for a header, a tag and some data.
pub const MIN_FRAME_LEN: usize = 64;
/// Number of lanes a message can travel on; lane 0 is the most urgent.
pub(crate) const LANES: usize = 16;

const FIN: u8 = 0x01;
const SIZED: u8 = 0x02;
const RESERVED_BITS: u8 = 0x0c;
/// Bytes of the total length a SIZED chunk carries.
const SIZE_LEN: usize = 4;
/// What a multi-chunk message reserves at its first chunk (at most its
/// declared size); the buffer grows as the rest arrives.
const INITIAL_RESERVE: usize = 64 * 1024;

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
        return Err(FrameError::Malformed(
            "frame shorter than a header and a tag",
        ));
    }
    Ok(len)
}

/// Encrypts chunks into frames for one direction of a connection.
pub(crate) struct FrameEncoder {
    cipher: SendCipher,
    max_frame_len: usize,
}

impl FrameEncoder {
    pub(crate) fn new(cipher: SendCipher, max_frame_len: usize) -> Self {
        Self {
            cipher,
            max_frame_len: max_frame_len.clamp(MIN_FRAME_LEN, MAX_FRAME_LEN),
        }
    }

    /// The most message bytes one chunk can carry.
    pub(crate) fn max_chunk(&self) -> usize {
        self.max_frame_len - TAG_LEN - CHUNK_HEADER
    }

    /// How many bytes of a `total`-byte message the chunk starting at
    /// `offset` carries: all that is left, up to what fits (the first chunk
    /// of a message that needs several has four bytes less, for its size).
    pub(crate) fn chunk_len(&self, offset: usize, total: usize) -> usize {
        let max = self.max_chunk();
        let room = if offset == 0 && total > max {
            max - SIZE_LEN
        } else {
            max
        };
        total.saturating_sub(offset).min(room)
    }

    /// Appends to `out` the frame carrying bytes `offset..` of a
    /// `total`-byte message on `lane`: the concatenation of `parts`, which
    /// must be [`chunk_len`](Self::chunk_len)`(offset, total)` bytes long.
    /// `total` must fit in a `u32`.
    pub(crate) fn encode_chunk(
        &mut self,
        lane: u8,
        offset: usize,
        total: usize,
        parts: &[&[u8]],
        out: &mut Vec<u8>,
    ) {
        debug_assert!(usize::from(lane) < LANES);
        let data_len: usize = parts.iter().map(|p| p.len()).sum();
        debug_assert_eq!(data_len, self.chunk_len(offset, total));
        let fin = offset + data_len >= total;
        let sized = offset == 0 && !fin;
        let body_len = CHUNK_HEADER + if sized { SIZE_LEN } else { 0 } + data_len + TAG_LEN;
        let start = out.len();
        out.reserve(LEN_PREFIX + body_len);
        // body_len <= max_frame_len <= u16::MAX by construction.
        out.extend_from_slice(&(body_len as u16).to_be_bytes());
        out.push((lane << 4) | if fin { FIN } else { 0 } | if sized { SIZED } else { 0 });
        if sized {
            out.extend_from_slice(&u32::try_from(total).unwrap_or(u32::MAX).to_be_bytes());
        }
        for part in parts {
            out.extend_from_slice(part);
        }
        let tag = self.cipher.seal(&mut out[start + LEN_PREFIX..]);
        out.extend_from_slice(&tag);
    }

    /// Appends every chunk of `message` on `lane` to `out`.
    pub(crate) fn encode_message(&mut self, lane: u8, message: &[u8], out: &mut Vec<u8>) {
        let mut offset = 0;
        loop {
            let len = self.chunk_len(offset, message.len());
            self.encode_chunk(
                lane,
                offset,
                message.len(),
                &[&message[offset..offset + len]],
                out,
            );
            offset += len;
            if offset >= message.len() {
                break;
            }
        }
    }
}

/// A message being reassembled into its exact allocation.
struct Partial {
    buf: Vec<u8>,
    total: usize,
}

impl Partial {
    /// Appends received bytes, doubling the reservation as needed but never
    /// past the declared total, so the buffer ends as one exact allocation
    /// and what is reserved stays within twice what was received.
    fn extend(&mut self, data: &[u8]) {
        let need = self.buf.len() + data.len();
        if need > self.buf.capacity() {
            let want = need.max(self.buf.capacity() * 2).min(self.total);
            self.buf.reserve_exact(want - self.buf.len());
        }
        self.buf.extend_from_slice(data);
    }
}

/// Decrypts frames and reassembles messages for one direction.
pub(crate) struct FrameDecoder {
    cipher: RecvCipher,
    max_message_len: usize,
    partial: [Option<Partial>; LANES],
}

impl FrameDecoder {
    pub(crate) fn new(cipher: RecvCipher, max_message_len: usize) -> Self {
        Self {
            cipher,
            max_message_len,
            partial: Default::default(),
        }
    }

    /// Decrypts one frame body (the bytes after the length prefix) in place.
    /// Returns a message and its lane when this frame completes one.
    pub(crate) fn decode_frame(
        &mut self,
        mut body: BytesMut,
    ) -> Result<Option<(u8, Bytes)>, FrameError> {
        let len = self
            .cipher
            .open(&mut body)
            .map_err(|_| FrameError::Decrypt)?;
        body.truncate(len);
        if body.is_empty() {
            return Err(FrameError::Malformed("empty chunk"));
        }
        let header = body[0];
        if header & RESERVED_BITS != 0 {
            return Err(FrameError::Malformed("reserved chunk flags set"));
        }
        let lane = header >> 4;
        let fin = header & FIN != 0;
        let sized = header & SIZED != 0;
        let mut data = body.split_off(CHUNK_HEADER);
        let slot = &mut self.partial[usize::from(lane)];
        match slot {
            None if fin && sized => Err(FrameError::Malformed(
                "a single-chunk message declares a size",
            )),
            None if fin => {
                if data.is_empty() {
                    return Err(FrameError::Malformed("empty message"));
                }
                if data.len() > self.max_message_len {
                    return Err(FrameError::MessageTooLarge {
                        max: self.max_message_len,
                    });
                }
                let message = if data.len() < COPY_BELOW {
                    Bytes::copy_from_slice(&data)
                } else {
                    data.freeze()
                };
                Ok(Some((lane, message)))
            }
            None if !sized => Err(FrameError::Malformed(
                "a multi-chunk message without its size",
            )),
            None => {
                if data.len() < SIZE_LEN {
                    return Err(FrameError::Malformed("truncated message size"));
                }
                let rest = data.split_off(SIZE_LEN);
                let total =
                    usize::try_from(u32::from_be_bytes([data[0], data[1], data[2], data[3]]))
                        .unwrap_or(usize::MAX);
                if total > self.max_message_len {
                    return Err(FrameError::MessageTooLarge {
                        max: self.max_message_len,
                    });
                }
                if rest.len() >= total {
                    return Err(FrameError::Malformed(
                        "message longer than its declared size",
                    ));
                }
                // The declared size is only a claim: reserve for what has
                // arrived and grow as the rest does (see `Partial::extend`),
                // so a few small frames declaring huge messages on every
                // lane cannot make us reserve 16 × max_message_len.
                let mut buf = Vec::with_capacity(total.min(rest.len().max(INITIAL_RESERVE)));
                buf.extend_from_slice(&rest);
                *slot = Some(Partial { buf, total });
                Ok(None)
            }
            Some(_) if sized => Err(FrameError::Malformed(
                "size declared in the middle of a message",
            )),
            Some(partial) => {
                let have = partial.buf.len() + data.len();
                if have > partial.total || (!fin && have == partial.total) {
                    return Err(FrameError::Malformed(
                        "message longer than its declared size",
                    ));
                }
                if fin && have < partial.total {
                    return Err(FrameError::Malformed(
                        "message shorter than its declared size",
                    ));
                }
                partial.extend(&data);
                if !fin {
                    return Ok(None);
                }
                let message = slot.take().map(|p| Bytes::from(p.buf)).unwrap_or_default();
                Ok(Some((lane, message)))
            }
        }
    }

    /// Bytes held in partly received messages.
    pub(crate) fn buffered(&self) -> usize {
        self.partial.iter().flatten().map(|p| p.buf.len()).sum()
    }

    /// Bytes reserved for partly received messages.
    pub(crate) fn reserved(&self) -> usize {
        self.partial
            .iter()
            .flatten()
            .map(|p| p.buf.capacity())
            .sum()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A connected encoder/decoder pair with fresh keys, as a handshake
    /// would leave them.
    pub(crate) fn pair(
        max_frame_len: usize,
        max_message_len: usize,
    ) -> (FrameEncoder, FrameDecoder) {
        let key = [42u8; 32];
        (
            FrameEncoder::new(SendCipher::new(&key), max_frame_len),
            FrameDecoder::new(RecvCipher::new(&key), max_message_len),
        )
    }

    /// Splits a byte stream into frame bodies, checking each prefix.
    pub(crate) fn split_frames(mut wire: &[u8], max: usize) -> Result<Vec<BytesMut>, FrameError> {
        let mut frames = Vec::new();
        while !wire.is_empty() {
            if wire.len() < LEN_PREFIX {
                return Err(FrameError::Truncated);
            }
            let len = parse_frame_len([wire[0], wire[1]], max)?;
            if wire.len() < LEN_PREFIX + len {
                return Err(FrameError::Truncated);
            }
            frames.push(BytesMut::from(&wire[LEN_PREFIX..LEN_PREFIX + len]));
            wire = &wire[LEN_PREFIX + len..];
        }
        Ok(frames)
    }

    fn decode_all(
        dec: &mut FrameDecoder,
        wire: &[u8],
        max: usize,
    ) -> Result<Vec<(u8, Vec<u8>)>, FrameError> {
        let mut out = Vec::new();
        for body in split_frames(wire, max)? {
            if let Some((lane, m)) = dec.decode_frame(body)? {
                out.push((lane, m.to_vec()));
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
        let total = big.len();
        let first = enc.chunk_len(0, total);
        assert_eq!(first, max - SIZE_LEN);
        enc.encode_chunk(5, 0, total, &[&big[..first]], &mut wire);
        enc.encode_message(0, b"urgent", &mut wire);
        // The rest, each chunk given in two parts.
        let mut offset = first;
        while offset < total {
            let len = enc.chunk_len(offset, total);
            let split = offset + len / 2;
            enc.encode_chunk(
                5,
                offset,
                total,
                &[&big[offset..split], &big[split..offset + len]],
                &mut wire,
            );
            offset += len;
        }
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
        let body = |wire: &[u8]| BytesMut::from(&wire[LEN_PREFIX..]);
        // Reordered: the second frame arrives first.
        assert!(matches!(
            dec.decode_frame(body(&second)),
            Err(FrameError::Decrypt)
        ));
        let (mut enc, mut dec) = pair(MAX_FRAME_LEN, 1 << 20);
        let mut first = Vec::new();
        enc.encode_message(0, b"one", &mut first);
        assert!(dec.decode_frame(body(&first)).unwrap().is_some());
        // Replayed.
        assert!(matches!(
            dec.decode_frame(body(&first)),
            Err(FrameError::Decrypt)
        ));
    }

    #[test]
    fn oversized_prefix_and_message_are_refused() {
        assert!(matches!(
            parse_frame_len([0xff, 0xff], 1024),
            Err(FrameError::Oversized {
                len: 65535,
                max: 1024
            })
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
    fn an_oversized_message_is_refused_at_its_first_chunk() {
        let (mut enc, mut dec) = pair(1024, 100_000);
        let mut wire = Vec::new();
        enc.encode_message(1, &vec![1u8; 100_001], &mut wire);
        let frames = split_frames(&wire, 1024).unwrap();
        assert!(frames.len() > 90);
        let first = frames.into_iter().next().unwrap();
        assert!(matches!(
            dec.decode_frame(first),
            Err(FrameError::MessageTooLarge { max: 100_000 })
        ));
    }

    #[test]
    fn declared_sizes_are_enforced() {
        let size = |n: u32| n.to_be_bytes();
        let cases: Vec<(Vec<Vec<u8>>, &str)> = vec![
            (
                vec![vec![0x00, 1, 2]],
                "a multi-chunk message without its size",
            ),
            (
                vec![[&[0x03u8][..], &size(2), &[1, 2]].concat()],
                "a single-chunk message declares a size",
            ),
            (
                vec![[&[0x02u8][..], &size(3), &[1, 2, 3]].concat()],
                "message longer than its declared size",
            ),
            (
                vec![
                    [&[0x02u8][..], &size(5), &[1, 2]].concat(),
                    vec![0x01, 3, 4],
                ],
                "message shorter than its declared size",
            ),
            (
                vec![
                    [&[0x02u8][..], &size(5), &[1, 2]].concat(),
                    vec![0x01, 3, 4, 5, 6],
                ],
                "message longer than its declared size",
            ),
            (
                vec![
                    [&[0x02u8][..], &size(5), &[1, 2]].concat(),
                    [&[0x02u8][..], &size(5), &[1]].concat(),
                ],
                "size declared in the middle of a message",
            ),
            (vec![vec![0x02, 0, 0]], "truncated message size"),
        ];
        for (chunks, expected) in cases {
            let (mut enc, mut dec) = pair(MAX_FRAME_LEN, 1000);
            let mut result = Ok(None);
            for chunk in &chunks {
                result = dec.decode_frame(sealed(&mut enc, chunk));
                if result.is_err() {
                    break;
                }
            }
            match result {
                Err(FrameError::Malformed(what)) => assert_eq!(what, expected),
                other => panic!("{expected}: got {other:?}"),
            }
        }
    }

    fn sealed(enc: &mut FrameEncoder, plain: &[u8]) -> BytesMut {
        let mut body = plain.to_vec();
        let tag = enc.cipher.seal(&mut body);
        body.extend_from_slice(&tag);
        BytesMut::from(&body[..])
    }

    #[test]
    fn reserved_flags_and_empty_messages_are_malformed() {
        let (mut enc, mut dec) = pair(MAX_FRAME_LEN, 1000);
        assert!(matches!(
            dec.decode_frame(sealed(&mut enc, &[0x02, 1, 2])),
            Err(FrameError::Malformed(_))
        ));
        let (mut enc, mut dec) = pair(MAX_FRAME_LEN, 1000);
        assert!(matches!(
            dec.decode_frame(sealed(&mut enc, &[0x01])),
            Err(FrameError::Malformed("empty message"))
        ));
        let (mut enc, mut dec) = pair(MAX_FRAME_LEN, 1000);
        assert!(matches!(
            dec.decode_frame(sealed(&mut enc, &[])),
            Err(FrameError::Malformed("empty chunk"))
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
            if let Ok(got) = decode_all(&mut dec, &wire, 512) {
                prop_assert!(got.is_empty() || got != vec![(2, message)]);
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
