//! The Noise XX handshake that opens every connection.
//!
//! Three messages, each a big-endian `u16` length and a Noise handshake
//! message:
//!
//! 1. initiator → responder: `e` (empty payload);
//! 2. responder → initiator: `e, ee, s, es` with the responder's
//!    [`HandshakePayload`];
//! 3. initiator → responder: `s, se` with the initiator's payload.
//!
//! A payload carries the protocol version, the network id, the sender's
//! Ed25519 identity, its signature over the sender's Noise static key,
//! (from the initiator) why it dialled, and which run of its identity the
//! sender is (a random value per service start, so a restart is told from
//! a second connection). Each side checks the other's
//! payload before going on, so the initiator reveals its identity only to a
//! responder that proved its own. The whole handshake runs under a timeout.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::id::{PeerId, SecretId};
use crate::secure::cipher::CipherPair;
use crate::secure::{ChannelConfig, NOISE_PARAMS};

/// The version of crust's wire protocol. 2: `Candidates` carry a
/// `MappingHint` (the birthday technique), which version 1 cannot decode.
/// 3: they also carry a TCP `MappingHint` (the birthday technique over
/// TCP), and the `After` packet (in-order delivery across a switch of
/// connections) exists, and the handshake payload says which run of its
/// identity the sender is (`session`, to tell a restart); version 2 can
/// decode none of these.
pub const PROTOCOL_VERSION: u16 = 3;
/// Longest network id accepted.
pub const MAX_NETWORK_ID_LEN: usize = 64;
/// Largest handshake message accepted; real ones are under 300 bytes.
const MAX_HANDSHAKE_MSG: usize = 1024;
/// What an identity key signs: this label and the Noise static key.
const SIGNATURE_LABEL: &[u8] = b"crust/noise-static-key/v1";

/// Why a peer opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Intent {
    /// To join the network through us.
    Bootstrap,
    /// To talk to us specifically.
    Connect,
}

/// Which side of the handshake we are.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    /// We dialled; `expected` is the peer we meant to reach, if known.
    Initiator {
        /// The id the responder must prove, if we know it.
        expected: Option<PeerId>,
        /// Why we dialled.
        intent: Intent,
    },
    /// We accepted.
    Responder,
}

/// Why a handshake failed. The connection is closed in every case.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The handshake did not finish in time.
    #[error("handshake timed out after {0:?}")]
    Timeout(Duration),
    /// The peer closed the connection before the handshake finished.
    #[error("connection closed during the handshake")]
    Closed,
    /// Reading or writing failed.
    #[error("i/o error during the handshake: {0}")]
    Io(std::io::Error),
    /// A handshake message was longer than any valid one.
    #[error("handshake message of {len} bytes exceeds the limit of {max}")]
    Oversized {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A handshake message failed Noise processing (tampered or garbage).
    #[error("handshake message rejected by noise: {0}")]
    Noise(snow::Error),
    /// The payload did not decode.
    #[error("malformed handshake payload")]
    MalformedPayload,
    /// The peer speaks another protocol version.
    #[error("peer speaks protocol version {theirs}, we speak {ours}")]
    VersionMismatch {
        /// Ours.
        ours: u16,
        /// Theirs.
        theirs: u16,
    },
    /// The peer belongs to another network.
    #[error("peer is on network {theirs:?}, we are on {ours:?}")]
    NetworkMismatch {
        /// Ours.
        ours: String,
        /// Theirs.
        theirs: String,
    },
    /// The identity key's signature over the Noise key does not verify.
    #[error("peer's identity signature over its noise key is invalid")]
    BadSignature,
    /// The peer proved an identity other than the one we dialled.
    #[error("dialled {expected} but reached {actual}")]
    UnexpectedPeer {
        /// Whom we dialled.
        expected: PeerId,
        /// Whom we reached.
        actual: PeerId,
    },
    /// The peer has our own identity: we dialled ourselves.
    #[error("connected to ourselves")]
    SelfConnection,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct HandshakePayload {
    pub(crate) version: u16,
    pub(crate) network_id: String,
    pub(crate) identity: [u8; 32],
    #[serde(with = "serde_bytes")]
    pub(crate) signature: Vec<u8>,
    pub(crate) intent: Intent,
    /// The sender's run of its identity (`ChannelConfig::session`).
    pub(crate) session: u64,
}

/// Alters our own payload before it is sent; tests use it to play a
/// dishonest peer.
pub(crate) type HandshakePayloadTweak = fn(&mut HandshakePayload);

/// What a finished handshake yields.
pub(crate) struct Established {
    pub(crate) remote: PeerId,
    pub(crate) intent: Intent,
    pub(crate) session: u64,
    pub(crate) ciphers: CipherPair,
}

/// Runs the handshake over `io` within `params.timeout`.
pub(crate) async fn handshake<S>(
    io: &mut S,
    secret: &SecretId,
    params: &ChannelConfig,
    role: Role,
) -> Result<Established, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(
        params.handshake_timeout,
        run_with_tweak(io, secret, params, role, |_| {}),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(HandshakeError::Timeout(params.handshake_timeout)),
    }
}

pub(crate) async fn run_with_tweak<S>(
    io: &mut S,
    secret: &SecretId,
    params: &ChannelConfig,
    role: Role,
    tweak: HandshakePayloadTweak,
) -> Result<Established, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let noise_params: snow::params::NoiseParams =
        NOISE_PARAMS.parse().map_err(HandshakeError::Noise)?;
    let builder = snow::Builder::new(noise_params);
    let static_key = builder.generate_keypair().map_err(HandshakeError::Noise)?;
    let builder = builder
        .local_private_key(&static_key.private)
        .map_err(HandshakeError::Noise)?;
    let our_payload = |intent| {
        let mut signed = SIGNATURE_LABEL.to_vec();
        signed.extend_from_slice(&static_key.public);
        let mut payload = HandshakePayload {
            version: PROTOCOL_VERSION,
            network_id: params.network_id.clone(),
            identity: *secret.peer_id().as_bytes(),
            signature: secret.sign(&signed).to_vec(),
            intent,
            session: params.session,
        };
        tweak(&mut payload);
        postcard::to_allocvec(&payload).map_err(|_| HandshakeError::MalformedPayload)
    };
    let mut msg = vec![0u8; MAX_HANDSHAKE_MSG];
    let mut payload = vec![0u8; MAX_HANDSHAKE_MSG];

    let (remote, intent, session, mut state) = match role {
        Role::Initiator { expected, intent } => {
            let mut state = builder.build_initiator().map_err(HandshakeError::Noise)?;
            let n = state
                .write_message(&[], &mut msg)
                .map_err(HandshakeError::Noise)?;
            write_msg(io, &msg[..n]).await?;

            let received = read_msg(io).await?;
            let n = state
                .read_message(&received, &mut payload)
                .map_err(HandshakeError::Noise)?;
            let (remote, _, session) =
                verify(&payload[..n], state.get_remote_static(), params, secret)?;
            if let Some(expected) = expected
                && expected != remote
            {
                return Err(HandshakeError::UnexpectedPeer {
                    expected,
                    actual: remote,
                });
            }

            let ours = our_payload(intent)?;
            let n = state
                .write_message(&ours, &mut msg)
                .map_err(HandshakeError::Noise)?;
            write_msg(io, &msg[..n]).await?;
            (remote, intent, session, state)
        }
        Role::Responder => {
            let mut state = builder.build_responder().map_err(HandshakeError::Noise)?;
            let received = read_msg(io).await?;
            state
                .read_message(&received, &mut payload)
                .map_err(HandshakeError::Noise)?;

            let ours = our_payload(Intent::Connect)?;
            let n = state
                .write_message(&ours, &mut msg)
                .map_err(HandshakeError::Noise)?;
            write_msg(io, &msg[..n]).await?;

            let received = read_msg(io).await?;
            let n = state
                .read_message(&received, &mut payload)
                .map_err(HandshakeError::Noise)?;
            let (remote, intent, session) =
                verify(&payload[..n], state.get_remote_static(), params, secret)?;
            (remote, intent, session, state)
        }
    };
    if !state.is_handshake_finished() {
        return Err(HandshakeError::MalformedPayload);
    }
    let ciphers = CipherPair::from_split(state.dangerously_get_raw_split(), state.is_initiator());
    Ok(Established {
        remote,
        intent,
        session,
        ciphers,
    })
}

/// Checks a peer's payload against its Noise static key and our settings.
pub(crate) fn verify(
    payload: &[u8],
    remote_static: Option<&[u8]>,
    params: &ChannelConfig,
    secret: &SecretId,
) -> Result<(PeerId, Intent, u64), HandshakeError> {
    // The version comes first and is read on its own, so that a peer
    // speaking a future layout still gets a clear "version mismatch".
    let (version, _) =
        postcard::take_from_bytes::<u16>(payload).map_err(|_| HandshakeError::MalformedPayload)?;
    if version != PROTOCOL_VERSION {
        return Err(HandshakeError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: version,
        });
    }
    let payload: HandshakePayload =
        postcard::from_bytes(payload).map_err(|_| HandshakeError::MalformedPayload)?;
    if payload.network_id != params.network_id {
        let mut theirs = payload.network_id;
        theirs.truncate(MAX_NETWORK_ID_LEN);
        return Err(HandshakeError::NetworkMismatch {
            ours: params.network_id.clone(),
            theirs,
        });
    }
    let remote = PeerId::from_bytes(payload.identity).map_err(|_| HandshakeError::BadSignature)?;
    let signature: [u8; 64] = payload
        .signature
        .as_slice()
        .try_into()
        .map_err(|_| HandshakeError::MalformedPayload)?;
    let remote_static = remote_static.ok_or(HandshakeError::MalformedPayload)?;
    let mut signed = SIGNATURE_LABEL.to_vec();
    signed.extend_from_slice(remote_static);
    if !remote.verify(&signed, &signature) {
        return Err(HandshakeError::BadSignature);
    }
    if remote == secret.peer_id() {
        return Err(HandshakeError::SelfConnection);
    }
    Ok((remote, payload.intent, payload.session))
}

async fn write_msg<S: AsyncWrite + Unpin>(io: &mut S, msg: &[u8]) -> Result<(), HandshakeError> {
    let mut framed = Vec::with_capacity(2 + msg.len());
    // msg.len() <= MAX_HANDSHAKE_MSG < u16::MAX.
    framed.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    framed.extend_from_slice(msg);
    io.write_all(&framed).await.map_err(HandshakeError::Io)?;
    io.flush().await.map_err(HandshakeError::Io)
}

async fn read_msg<S: AsyncRead + Unpin>(io: &mut S) -> Result<Vec<u8>, HandshakeError> {
    let eof = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            HandshakeError::Closed
        } else {
            HandshakeError::Io(e)
        }
    };
    let mut prefix = [0u8; 2];
    io.read_exact(&mut prefix).await.map_err(eof)?;
    let len = usize::from(u16::from_be_bytes(prefix));
    if len > MAX_HANDSHAKE_MSG {
        return Err(HandshakeError::Oversized {
            len,
            max: MAX_HANDSHAKE_MSG,
        });
    }
    let mut msg = vec![0u8; len];
    io.read_exact(&mut msg).await.map_err(eof)?;
    Ok(msg)
}
