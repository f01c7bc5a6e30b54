//! Sealing a message to one recipient, for a holder that must not read it
//! (`crate::mailbox`).
//!
//! A sealed box: version byte 1, an ephemeral Ed25519 public key (32
//! bytes), then ChaCha20-Poly1305 ciphertext. The key is SHA-256 over a
//! label, the X25519 shared secret (the ephemeral key's scalar with the
//! recipient's identity key in Montgomery form — every chat identity is an
//! Ed25519 key, and its birationally equivalent X25519 key is used for
//! this only), the ephemeral key and the recipient's id; the ephemeral key
//! is fresh per box, so the nonce is fixed. Inside: the sender's id, the
//! recipient's id, the body and the sender's Ed25519 signature over the
//! label, recipient and body.
//!
//! The holder sees the recipient (it must, to hand the box over), the
//! box's size and when it came; not the sender (the depositor need not be
//! the sender, though in chat it is) and not the body. The recipient
//! accepts a box only if it is addressed to it and signed by the sender it
//! names; anything changed in transit fails the AEAD tag.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use crust::{PeerId, SecretId};
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

const VERSION: u8 = 1;
const KEY_LABEL: &[u8] = b"crust-chat sealed box v1: key";
const SIGN_LABEL: &[u8] = b"crust-chat sealed box v1: signature";
/// Longest sealed box opened.
pub(crate) const MAX_SEALED: usize = 96 * 1024;

/// Why a box did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SealError {
    #[error("sealed box too large or too short")]
    Size,
    #[error("unknown sealed box version")]
    Version,
    #[error("sealed box does not decrypt (not ours, or tampered with)")]
    Decrypt,
    #[error("sealed box is malformed inside")]
    Malformed,
    #[error("sealed box is addressed to someone else")]
    WrongRecipient,
    #[error("sealed box has a bad signature")]
    Signature,
}

#[derive(Serialize, Deserialize)]
struct Inner {
    sender: [u8; 32],
    recipient: [u8; 32],
    body: Vec<u8>,
    signature: Vec<u8>,
}

fn signed_part(recipient: &PeerId, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SIGN_LABEL.len() + 32 + body.len());
    out.extend_from_slice(SIGN_LABEL);
    out.extend_from_slice(recipient.as_bytes());
    out.extend_from_slice(body);
    out
}

/// The X25519 secret for an Ed25519 seed.
fn scalar(seed: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(SigningKey::from_bytes(seed).to_scalar_bytes())
}

fn key(shared: &[u8; 32], ephemeral: &[u8; 32], recipient: &PeerId) -> Zeroizing<[u8; 32]> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(KEY_LABEL);
    ctx.update(shared);
    ctx.update(ephemeral);
    ctx.update(recipient.as_bytes());
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(ctx.finish().as_ref());
    key
}

/// The AEAD's associated data: the box's header.
fn header(ephemeral: &[u8; 32]) -> [u8; 33] {
    let mut out = [0u8; 33];
    out[0] = VERSION;
    out[1..].copy_from_slice(ephemeral);
    out
}

/// Seals `body` from `sender` to `recipient`. `None` only if the
/// recipient's id is not a usable key.
pub(crate) fn seal(sender: &SecretId, recipient: &PeerId, body: &[u8]) -> Option<Vec<u8>> {
    let their_key = VerifyingKey::from_bytes(recipient.as_bytes()).ok()?;
    let mut seed = Zeroizing::new([0u8; 32]);
    crate::fill_random(seed.as_mut());
    let ephemeral = SigningKey::from_bytes(&seed);
    let ephemeral_pub = ephemeral.verifying_key().to_bytes();
    let shared = their_key
        .to_montgomery()
        .mul_clamped(*scalar(&seed))
        .to_bytes();
    if shared == [0; 32] {
        return None;
    }
    let inner = Inner {
        sender: *sender.peer_id().as_bytes(),
        recipient: *recipient.as_bytes(),
        body: body.to_vec(),
        signature: sender.sign(&signed_part(recipient, body)).to_vec(),
    };
    let plain = Zeroizing::new(postcard::to_allocvec(&inner).ok()?);
    let key = key(&shared, &ephemeral_pub, recipient);
    let head = header(&ephemeral_pub);
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key.as_ref()));
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(&[0; 12]),
            Payload {
                msg: &plain,
                aad: &head,
            },
        )
        .ok()?;
    let mut out = head.to_vec();
    out.extend(sealed);
    Some(out)
}

/// Opens a box sealed to `me`: the sender (as its signature proves) and
/// the body.
pub(crate) fn open(me: &SecretId, sealed: &[u8]) -> Result<(PeerId, Vec<u8>), SealError> {
    if sealed.len() > MAX_SEALED || sealed.len() < 33 + 16 {
        return Err(SealError::Size);
    }
    if sealed[0] != VERSION {
        return Err(SealError::Version);
    }
    let ephemeral_pub: [u8; 32] = sealed[1..33].try_into().map_err(|_| SealError::Size)?;
    let their_key = VerifyingKey::from_bytes(&ephemeral_pub).map_err(|_| SealError::Decrypt)?;
    let shared = their_key
        .to_montgomery()
        .mul_clamped(*scalar(&me.to_bytes()))
        .to_bytes();
    if shared == [0; 32] {
        return Err(SealError::Decrypt);
    }
    let me_id = me.peer_id();
    let key = key(&shared, &ephemeral_pub, &me_id);
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key.as_ref()));
    let plain = Zeroizing::new(
        cipher
            .decrypt(
                Nonce::from_slice(&[0; 12]),
                Payload {
                    msg: &sealed[33..],
                    aad: &sealed[..33],
                },
            )
            .map_err(|_| SealError::Decrypt)?,
    );
    let inner: Inner = postcard::from_bytes(&plain).map_err(|_| SealError::Malformed)?;
    if inner.recipient != *me_id.as_bytes() {
        return Err(SealError::WrongRecipient);
    }
    let sender = PeerId::from_bytes(inner.sender).map_err(|_| SealError::Malformed)?;
    let signature: [u8; 64] = inner
        .signature
        .as_slice()
        .try_into()
        .map_err(|_| SealError::Malformed)?;
    if !sender.verify(&signed_part(&me_id, &inner.body), &signature) {
        return Err(SealError::Signature);
    }
    Ok((sender, inner.body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recipient_opens_and_learns_the_sender() {
        let (alice, bob) = (SecretId::generate(), SecretId::generate());
        let sealed = seal(&alice, &bob.peer_id(), b"meet at noon").unwrap();
        let (from, body) = open(&bob, &sealed).unwrap();
        assert_eq!(from, alice.peer_id());
        assert_eq!(body, b"meet at noon");
        // Two seals of one body differ (fresh ephemeral key).
        assert_ne!(
            sealed,
            seal(&alice, &bob.peer_id(), b"meet at noon").unwrap()
        );
    }

    #[test]
    fn the_holder_sees_no_content_and_cannot_open() {
        let (alice, bob, holder) = (
            SecretId::generate(),
            SecretId::generate(),
            SecretId::generate(),
        );
        let body = b"a secret the holder must not see";
        let sealed = seal(&alice, &bob.peer_id(), body).unwrap();
        assert!(!sealed.windows(body.len()).any(|w| w == body));
        assert!(!sealed.windows(32).any(|w| w == alice.peer_id().as_bytes()));
        assert_eq!(open(&holder, &sealed), Err(SealError::Decrypt));
        // Nor can the sender, once it is sealed.
        assert_eq!(open(&alice, &sealed), Err(SealError::Decrypt));
    }

    #[test]
    fn tampering_is_detected() {
        let (alice, bob) = (SecretId::generate(), SecretId::generate());
        let sealed = seal(&alice, &bob.peer_id(), b"pay 10").unwrap();
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x20;
            assert!(open(&bob, &bad).is_err(), "byte {i}");
        }
        assert_eq!(open(&bob, &sealed[..40]), Err(SealError::Size));
        assert_eq!(open(&bob, &vec![1; MAX_SEALED + 1]), Err(SealError::Size));
    }

    #[test]
    fn a_forged_sender_or_a_forwarded_box_is_refused() {
        let (alice, bob, mallory) = (
            SecretId::generate(),
            SecretId::generate(),
            SecretId::generate(),
        );
        // Mallory seals to bob claiming to be alice: the inner signature
        // is mallory's, not alice's.
        let body = b"from alice, honest";
        let inner = Inner {
            sender: *alice.peer_id().as_bytes(),
            recipient: *bob.peer_id().as_bytes(),
            body: body.to_vec(),
            signature: mallory.sign(&signed_part(&bob.peer_id(), body)).to_vec(),
        };
        let forged = seal_inner(&bob.peer_id(), &inner);
        assert_eq!(open(&bob, &forged), Err(SealError::Signature));
        // Bob re-seals alice's signed box to carol: addressed to bob inside.
        let carol = SecretId::generate();
        let inner = Inner {
            sender: *alice.peer_id().as_bytes(),
            recipient: *bob.peer_id().as_bytes(),
            body: body.to_vec(),
            signature: alice.sign(&signed_part(&bob.peer_id(), body)).to_vec(),
        };
        let forwarded = seal_inner(&carol.peer_id(), &inner);
        assert_eq!(open(&carol, &forwarded), Err(SealError::WrongRecipient));
    }

    /// Seals an arbitrary inner record to `recipient` (what an attacker
    /// can do).
    fn seal_inner(recipient: &PeerId, inner: &Inner) -> Vec<u8> {
        let seed = [7u8; 32];
        let ephemeral_pub = SigningKey::from_bytes(&seed).verifying_key().to_bytes();
        let shared = VerifyingKey::from_bytes(recipient.as_bytes())
            .unwrap()
            .to_montgomery()
            .mul_clamped(*scalar(&seed))
            .to_bytes();
        let key = key(&shared, &ephemeral_pub, recipient);
        let head = header(&ephemeral_pub);
        let cipher = ChaCha20Poly1305::new(Key::from_slice(key.as_ref()));
        let plain = postcard::to_allocvec(inner).unwrap();
        let mut out = head.to_vec();
        out.extend(
            cipher
                .encrypt(
                    Nonce::from_slice(&[0; 12]),
                    Payload {
                        msg: &plain,
                        aad: &head,
                    },
                )
                .unwrap(),
        );
        out
    }
}
