//! The secure channel: Noise XX over any byte stream, then encrypted,
//! length-prefixed, chunked frames.
//!
//! [`SecureChannel::connect`] / [`SecureChannel::accept`] run the handshake
//! (the `handshake` module docs give the messages); [`SecureChannel::split`]
//! gives a [`SecureReader`] that yields whole messages and a
//! [`SecureWriter`] that chunks them (the `frame` module docs give the
//! format). The service drives one of these per connection; they work over
//! TCP today and over any other `AsyncRead + AsyncWrite` transport.

pub(crate) mod cipher;
pub(crate) mod frame;
pub(crate) mod handshake;
#[cfg(test)]
mod tests;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{
    AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadHalf, WriteHalf,
};

use crate::id::{PeerId, SecretId};
use frame::{FrameDecoder, FrameEncoder, LEN_PREFIX};
pub use frame::{FrameError, MAX_FRAME_LEN, MIN_FRAME_LEN};
pub use handshake::{HandshakeError, Intent, MAX_NETWORK_ID_LEN, PROTOCOL_VERSION, Role};

/// The Noise protocol every crust connection runs.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";

/// Read buffer kept by an idle connection; it grows while data flows.
const IDLE_READ_BUF: usize = 2 * 1024;
/// Read ahead at least this much while a transfer is under way.
const ACTIVE_READ_BUF: usize = 128 * 1024;
/// Buffers larger than this are given back once they are empty.
const SHRINK_ABOVE: usize = 16 * 1024;

/// Settings of the secure channel.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    /// Peers on other networks are refused during the handshake.
    pub network_id: String,
    /// The handshake must finish within this time.
    pub handshake_timeout: Duration,
    /// Largest frame body (ciphertext) sent or accepted, from
    /// [`MIN_FRAME_LEN`] to [`MAX_FRAME_LEN`].
    pub max_frame_len: usize,
    /// Largest message accepted after reassembly.
    pub max_message_len: usize,
    /// Which run of this identity we are, told to the peer in the
    /// handshake so it can tell a restart of ours from a second connection
    /// of the same run (`SecureChannel::remote_session`). `Service::start`
    /// sets a fresh random value; 0 says nothing.
    pub session: u64,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self {
            network_id: "crust".to_owned(),
            handshake_timeout: Duration::from_secs(10),
            max_frame_len: MAX_FRAME_LEN,
            max_message_len: 16 * 1024 * 1024,
            session: 0,
        }
    }
}

/// An authenticated, encrypted connection to one peer.
pub struct SecureChannel<S> {
    io: S,
    remote: PeerId,
    intent: Intent,
    remote_session: u64,
    encoder: FrameEncoder,
    decoder: FrameDecoder,
    max_frame_len: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> SecureChannel<S> {
    /// Runs the handshake as the dialling side. With `expected`, a peer with
    /// another identity is refused.
    pub async fn connect(
        io: S,
        secret: &SecretId,
        config: &ChannelConfig,
        expected: Option<PeerId>,
        intent: Intent,
    ) -> Result<Self, HandshakeError> {
        Self::handshake(io, secret, config, Role::Initiator { expected, intent }).await
    }

    /// Runs the handshake as the accepting side.
    pub async fn accept(
        io: S,
        secret: &SecretId,
        config: &ChannelConfig,
    ) -> Result<Self, HandshakeError> {
        Self::handshake(io, secret, config, Role::Responder).await
    }

    /// Runs the handshake in the given role.
    pub async fn handshake(
        mut io: S,
        secret: &SecretId,
        config: &ChannelConfig,
        role: Role,
    ) -> Result<Self, HandshakeError> {
        let established = handshake::handshake(&mut io, secret, config, role).await?;
        let max_frame_len = config.max_frame_len.clamp(MIN_FRAME_LEN, MAX_FRAME_LEN);
        let ciphers = established.ciphers;
        Ok(Self {
            io,
            remote: established.remote,
            intent: established.intent,
            remote_session: established.session,
            encoder: FrameEncoder::new(ciphers.send, max_frame_len),
            decoder: FrameDecoder::new(ciphers.recv, config.max_message_len),
            max_frame_len,
        })
    }

    /// The authenticated identity of the other side.
    pub fn remote(&self) -> PeerId {
        self.remote
    }

    /// Why the dialling side opened this connection.
    pub fn intent(&self) -> Intent {
        self.intent
    }

    /// Which run of its identity the other side is (its
    /// [`ChannelConfig::session`]): two connections with different values
    /// come from different runs, the later one from a restart.
    pub fn remote_session(&self) -> u64 {
        self.remote_session
    }

    /// Splits into halves that can be used from different tasks.
    pub fn split(self) -> (SecureReader<ReadHalf<S>>, SecureWriter<WriteHalf<S>>) {
        let (read, write) = tokio::io::split(self.io);
        (
            SecureReader {
                io: read,
                decoder: self.decoder,
                buf: BytesMut::new(),
                max_frame_len: self.max_frame_len,
            },
            SecureWriter {
                io: write,
                encoder: self.encoder,
                out: Vec::new(),
            },
        )
    }
}

/// The receiving half: yields whole messages.
pub struct SecureReader<R> {
    io: R,
    decoder: FrameDecoder,
    buf: BytesMut,
    max_frame_len: usize,
}

impl<R: AsyncRead + Unpin> SecureReader<R> {
    /// Waits for the next whole message and returns it with its lane.
    /// [`FrameError::Closed`] means the peer closed between messages; any
    /// other error means the stream is unusable.
    pub async fn recv(&mut self) -> Result<(u8, Bytes), FrameError> {
        loop {
            while self.buf.len() >= LEN_PREFIX {
                let len = frame::parse_frame_len([self.buf[0], self.buf[1]], self.max_frame_len)?;
                if self.buf.len() < LEN_PREFIX + len {
                    self.buf.reserve((LEN_PREFIX + len).max(ACTIVE_READ_BUF));
                    break;
                }
                let mut frame = self.buf.split_to(LEN_PREFIX + len);
                let body = frame.split_off(LEN_PREFIX);
                if let Some(message) = self.decoder.decode_frame(body)? {
                    return Ok(message);
                }
            }
            if self.buf.is_empty() && self.buf.capacity() > SHRINK_ABOVE {
                self.buf = BytesMut::new();
            }
            if self.buf.capacity() == self.buf.len() {
                self.buf.reserve(IDLE_READ_BUF);
            }
            let n = self.io.read_buf(&mut self.buf).await?;
            if n == 0 {
                return Err(if self.buf.is_empty() && self.decoder.buffered() == 0 {
                    FrameError::Closed
                } else {
                    FrameError::Truncated
                });
            }
        }
    }
}

/// The sending half: chunks messages into frames and writes them.
pub struct SecureWriter<W> {
    io: W,
    encoder: FrameEncoder,
    out: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> SecureWriter<W> {
    /// How many bytes of a `total`-byte message the chunk starting at
    /// `offset` carries.
    pub fn chunk_len(&self, offset: usize, total: usize) -> usize {
        self.encoder.chunk_len(offset, total)
    }

    /// Queues the chunk of a `total`-byte message on `lane` (0–15, 0 most
    /// urgent) that starts at `offset`, given as parts that are concatenated
    /// and must be [`chunk_len`](Self::chunk_len) bytes in all. Chunks of
    /// one lane must come in order; lanes may interleave. Nothing is written
    /// until [`flush`](Self::flush).
    pub fn push_chunk(&mut self, lane: u8, offset: usize, total: usize, parts: &[&[u8]]) {
        self.encoder
            .encode_chunk(lane & 0x0f, offset, total, parts, &mut self.out);
    }

    /// Queues a whole message on `lane`.
    pub fn push_message(&mut self, lane: u8, message: &[u8]) {
        self.encoder
            .encode_message(lane & 0x0f, message, &mut self.out);
    }

    /// Bytes queued and not yet written.
    pub fn pending(&self) -> usize {
        self.out.len()
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        self.io.write_all(&self.out).await?;
        self.io.flush().await?;
        self.out.clear();
        if self.out.capacity() > SHRINK_ABOVE {
            self.out = Vec::new();
        }
        Ok(())
    }

    /// Queues a whole message and writes it.
    pub async fn send(&mut self, lane: u8, message: &[u8]) -> std::io::Result<()> {
        self.push_message(lane, message);
        self.flush().await
    }

    /// Writes everything queued and closes the write direction.
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        self.flush().await?;
        self.io.shutdown().await
    }
}
