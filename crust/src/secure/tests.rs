//! Handshake and channel tests over in-memory pipes.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream, duplex};

use bytes::Bytes;

use super::handshake::{HandshakePayloadTweak, run_with_tweak};
use super::*;

fn config(network: &str) -> ChannelConfig {
    ChannelConfig {
        network_id: network.to_owned(),
        handshake_timeout: Duration::from_secs(5),
        ..ChannelConfig::default()
    }
}

type Outcome = (
    Result<SecureChannel<DuplexStream>, HandshakeError>,
    Result<SecureChannel<DuplexStream>, HandshakeError>,
);

async fn pair_with(
    dialer: &SecretId,
    dialer_cfg: &ChannelConfig,
    acceptor: &SecretId,
    acceptor_cfg: &ChannelConfig,
    expected: Option<PeerId>,
) -> Outcome {
    // Room for a whole frame, so a writer never waits for its reader.
    let (a, b) = duplex(1024 * 1024);
    tokio::join!(
        SecureChannel::connect(a, dialer, dialer_cfg, expected, Intent::Connect),
        SecureChannel::accept(b, acceptor, acceptor_cfg),
    )
}

#[tokio::test]
async fn handshake_succeeds_and_messages_flow_both_ways() {
    let (alice, bob) = (SecretId::generate(), SecretId::generate());
    let cfg = config("test");
    let (a, b) = pair_with(&alice, &cfg, &bob, &cfg, Some(bob.peer_id())).await;
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.remote(), bob.peer_id());
    assert_eq!(b.remote(), alice.peer_id());
    assert_eq!(b.intent(), Intent::Connect);
    let (mut ar, mut aw) = a.split();
    let (mut br, mut bw) = b.split();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let send = async {
        aw.send(4, b"hello bob").await.unwrap();
        aw.send(4, &big).await.unwrap();
        bw.send(1, b"hello alice").await.unwrap();
    };
    let recv = async {
        assert_eq!(
            br.recv().await.unwrap(),
            (4, Bytes::from_static(b"hello bob"))
        );
        assert_eq!(br.recv().await.unwrap(), (4, Bytes::from(big.clone())));
        assert_eq!(
            ar.recv().await.unwrap(),
            (1, Bytes::from_static(b"hello alice"))
        );
    };
    tokio::join!(send, recv);
    aw.shutdown().await.unwrap();
    assert!(matches!(br.recv().await, Err(FrameError::Closed)));
}

#[tokio::test]
async fn wrong_expected_id_is_refused() {
    let (alice, bob, carol) = (
        SecretId::generate(),
        SecretId::generate(),
        SecretId::generate(),
    );
    let cfg = config("test");
    let (a, _b) = pair_with(&alice, &cfg, &bob, &cfg, Some(carol.peer_id())).await;
    match a {
        Err(HandshakeError::UnexpectedPeer { expected, actual }) => {
            assert_eq!(expected, carol.peer_id());
            assert_eq!(actual, bob.peer_id());
        }
        other => panic!("expected UnexpectedPeer, got {:?}", other.err()),
    }
}

#[tokio::test]
async fn wrong_network_id_is_refused() {
    let (alice, bob) = (SecretId::generate(), SecretId::generate());
    let (a, b) = pair_with(&alice, &config("main"), &bob, &config("testnet"), None).await;
    assert!(
        matches!(&a, Err(HandshakeError::NetworkMismatch { ours, theirs }) if ours == "main" && theirs == "testnet"),
        "{:?}",
        a.err()
    );
    // The dialler refused before revealing itself, so the acceptor just
    // sees the connection close.
    assert!(matches!(b, Err(HandshakeError::Closed)), "{:?}", b.err());
}

#[tokio::test]
async fn a_connection_to_ourselves_is_refused() {
    let alice = SecretId::generate();
    let cfg = config("test");
    let (a, _) = pair_with(&alice, &cfg, &alice, &cfg, None).await;
    assert!(matches!(a, Err(HandshakeError::SelfConnection)));
}

/// Runs a dialler whose payload is altered by `tweak` against an honest
/// acceptor and returns the acceptor's result.
async fn acceptor_sees(
    tweak: HandshakePayloadTweak,
) -> Result<SecureChannel<DuplexStream>, HandshakeError> {
    let (mallory, bob) = (SecretId::generate(), SecretId::generate());
    let cfg = config("test");
    let (mut a, b) = duplex(64 * 1024);
    let role = Role::Initiator {
        expected: None,
        intent: Intent::Connect,
    };
    let (_, accepted) = tokio::join!(
        async {
            let result = run_with_tweak(&mut a, &mallory, &cfg, role, tweak).await;
            drop(a);
            result
        },
        SecureChannel::accept(b, &bob, &cfg),
    );
    accepted
}

#[tokio::test]
async fn an_identity_signature_by_another_key_is_refused() {
    let result = acceptor_sees(|payload| {
        // Claim someone else's identity while keeping our own signature.
        payload.identity = *SecretId::generate().peer_id().as_bytes();
    })
    .await;
    assert!(
        matches!(result, Err(HandshakeError::BadSignature)),
        "{:?}",
        result.err()
    );
    let result = acceptor_sees(|payload| payload.signature[10] ^= 1).await;
    assert!(
        matches!(result, Err(HandshakeError::BadSignature)),
        "{:?}",
        result.err()
    );
}

#[tokio::test]
async fn another_protocol_version_is_refused() {
    let result = acceptor_sees(|payload| payload.version = PROTOCOL_VERSION + 1).await;
    assert!(
        matches!(result, Err(HandshakeError::VersionMismatch { theirs, .. }) if theirs == PROTOCOL_VERSION + 1),
        "{:?}",
        result.err()
    );
}

#[tokio::test]
async fn a_malformed_payload_is_refused() {
    let result = acceptor_sees(|payload| payload.signature.truncate(3)).await;
    assert!(
        matches!(result, Err(HandshakeError::MalformedPayload)),
        "{:?}",
        result.err()
    );
}

#[tokio::test]
async fn a_tampered_handshake_byte_is_refused() {
    let (alice, bob) = (SecretId::generate(), SecretId::generate());
    let cfg = config("test");
    // Alice ⇄ a2|a_side ⇄ copy ⇄ b_side|b2 ⇄ Bob, flipping byte 60 of
    // Bob's reply, which lies in its encrypted static key.
    let (a2, a_side) = duplex(64 * 1024);
    let (b2, b_side) = duplex(64 * 1024);
    let (a_side_r, a_side_w) = tokio::io::split(a_side);
    let (b_side_r, b_side_w) = tokio::io::split(b_side);
    tokio::spawn(copy_half(a_side_r, b_side_w, None));
    tokio::spawn(copy_half(b_side_r, a_side_w, Some(60)));
    let (dialled, accepted) = tokio::join!(
        SecureChannel::connect(a2, &alice, &cfg, None, Intent::Connect),
        SecureChannel::accept(b2, &bob, &cfg),
    );
    assert!(
        matches!(dialled, Err(HandshakeError::Noise(_))),
        "{:?}",
        dialled.err()
    );
    assert!(accepted.is_err());
}

async fn copy_half<R, W>(mut from: R, mut to: W, flip: Option<usize>)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut seen = 0usize;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(offset) = flip
            && (seen..seen + n).contains(&offset)
        {
            buf[offset - seen] ^= 0x20;
        }
        seen += n;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

#[tokio::test]
async fn a_tampered_frame_ends_the_stream_and_nothing_after_it_is_delivered() {
    let (alice, bob) = (SecretId::generate(), SecretId::generate());
    let cfg = config("test");
    let (a, a_side) = duplex(64 * 1024);
    let (b, b_side) = duplex(64 * 1024);
    let (a_side_r, a_side_w) = tokio::io::split(a_side);
    let (b_side_r, b_side_w) = tokio::io::split(b_side);
    tokio::spawn(copy_half(a_side_r, b_side_w, Some(2000)));
    tokio::spawn(copy_half(b_side_r, a_side_w, None));
    let (dialled, accepted) = tokio::join!(
        SecureChannel::connect(a, &alice, &cfg, None, Intent::Connect),
        SecureChannel::accept(b, &bob, &cfg),
    );
    let (_, mut aw) = dialled.unwrap().split();
    let (mut br, _) = accepted.unwrap().split();
    // The handshake sends well under 1000 bytes from Alice, so byte 2000 is
    // in the second message below.
    aw.send(0, &[1u8; 1000]).await.unwrap();
    aw.send(0, &[2u8; 1000]).await.unwrap();
    aw.send(0, &[3u8; 1000]).await.unwrap();
    assert_eq!(br.recv().await.unwrap().1, vec![1u8; 1000]);
    assert!(matches!(br.recv().await, Err(FrameError::Decrypt)));
}

#[tokio::test]
async fn a_truncated_stream_is_reported() {
    let (alice, bob) = (SecretId::generate(), SecretId::generate());
    let cfg = config("test");
    let (a, b) = pair_with(&alice, &cfg, &bob, &cfg, None).await;
    let (_, mut aw) = a.unwrap().split();
    let (mut br, _) = b.unwrap().split();
    // Write the first frame of a two-frame message, then close.
    let first = aw.chunk_len(0, 100_000);
    aw.push_chunk(0, 0, 100_000, &[&vec![9u8; first]]);
    aw.shutdown().await.unwrap();
    assert!(matches!(br.recv().await, Err(FrameError::Truncated)));

    // Closing in the middle of the handshake.
    let (mut raw, b) = duplex(1024);
    let accept =
        tokio::spawn(async move { SecureChannel::accept(b, &bob, &cfg).await.map(|_| ()) });
    raw.write_all(&[0, 32, 1, 2, 3]).await.unwrap();
    drop(raw);
    assert!(matches!(accept.await.unwrap(), Err(HandshakeError::Closed)));
}

#[tokio::test]
async fn oversized_frames_are_refused() {
    let (alice, bob) = (SecretId::generate(), SecretId::generate());
    let small = ChannelConfig {
        max_frame_len: 1024,
        ..config("test")
    };
    let (a, b) = pair_with(&alice, &config("test"), &bob, &small, None).await;
    let (_, mut aw) = a.unwrap().split();
    let (mut br, _) = b.unwrap().split();
    aw.send(0, &[0u8; 5000]).await.unwrap();
    assert!(matches!(
        br.recv().await,
        Err(FrameError::Oversized { max: 1024, .. })
    ));

    // An oversized handshake message.
    let (mut raw, b) = duplex(1024);
    let cfg = config("test");
    let accept =
        tokio::spawn(async move { SecureChannel::accept(b, &bob, &cfg).await.map(|_| ()) });
    raw.write_all(&[0xff, 0xff]).await.unwrap();
    assert!(matches!(
        accept.await.unwrap(),
        Err(HandshakeError::Oversized { len: 65535, .. })
    ));
}

#[tokio::test]
async fn a_message_over_the_limit_is_refused() {
    let (alice, bob) = (SecretId::generate(), SecretId::generate());
    let strict = ChannelConfig {
        max_message_len: 10_000,
        ..config("test")
    };
    let (a, b) = pair_with(&alice, &config("test"), &bob, &strict, None).await;
    let (_, mut aw) = a.unwrap().split();
    let (mut br, _) = b.unwrap().split();
    aw.send(3, &[0u8; 10_000]).await.unwrap();
    aw.send(3, &[0u8; 10_001]).await.unwrap();
    assert_eq!(br.recv().await.unwrap().1.len(), 10_000);
    assert!(matches!(
        br.recv().await,
        Err(FrameError::MessageTooLarge { max: 10_000 })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_times_out() {
    let bob = SecretId::generate();
    let cfg = config("test");
    let (_silent, b) = duplex(1024);
    let result = SecureChannel::accept(b, &bob, &cfg).await;
    assert!(matches!(result, Err(HandshakeError::Timeout(t)) if t == Duration::from_secs(5)));
    let (_silent, a) = duplex(1024);
    let result = SecureChannel::connect(a, &bob, &cfg, None, Intent::Bootstrap).await;
    assert!(matches!(result, Err(HandshakeError::Timeout(_))));
}

#[tokio::test]
async fn garbage_instead_of_a_handshake_is_refused() {
    let bob = SecretId::generate();
    let cfg = config("test");
    let (mut raw, b) = duplex(4096);
    let accept =
        tokio::spawn(async move { SecureChannel::accept(b, &bob, &cfg).await.map(|_| ()) });
    raw.write_all(&[0, 10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
        .await
        .unwrap();
    assert!(matches!(
        accept.await.unwrap(),
        Err(HandshakeError::Noise(_))
    ));
}

#[tokio::test]
async fn each_side_learns_the_others_session() {
    let (alice, bob) = (SecretId::generate(), SecretId::generate());
    let alice_cfg = ChannelConfig {
        session: 7,
        ..config("test")
    };
    let bob_cfg = ChannelConfig {
        session: 9,
        ..config("test")
    };
    let (a, b) = pair_with(&alice, &alice_cfg, &bob, &bob_cfg, None).await;
    assert_eq!(a.unwrap().remote_session(), 9);
    assert_eq!(b.unwrap().remote_session(), 7);
}
