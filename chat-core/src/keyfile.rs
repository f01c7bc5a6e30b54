//! The identity key file: the Ed25519 seed, in the clear or sealed with a
//! passphrase (Argon2id → ChaCha20-Poly1305).
//!
//! The file is two lines of text:
//!
//! ```text
//! crust-chat-identity v1
//! plain <base32 seed>
//! ```
//! or
//! ```text
//! crust-chat-identity v1
//! argon2id <m KiB> <t> <p> <salt> <nonce> <ciphertext>
//! ```
//!
//! The Argon2 parameters travel in the file so they can be raised later
//! without breaking old files. The header line is the AEAD's associated
//! data, so it cannot be swapped. A wrong passphrase and a damaged
//! ciphertext look the same to the AEAD; both are reported as a wrong
//! passphrase, with the file left untouched.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use crust::SecretId;
use zeroize::Zeroizing;

const HEADER: &str = "crust-chat-identity v1";

/// Argon2id parameters used for new files (OWASP's 19 MiB, t=2, p=1).
const M_COST_KIB: u32 = 19 * 1024;
const T_COST: u32 = 2;
const P_COST: u32 = 1;

/// Why a key file could not be read or sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key is sealed and no passphrase was given.
    #[error("the identity key is protected by a passphrase; none was given")]
    PassphraseRequired,
    /// The passphrase does not open the key (or the sealed key is damaged).
    #[error("wrong passphrase for the identity key")]
    WrongPassphrase,
    /// The file is not an identity key file.
    #[error("the identity key file is damaged or not a crust-chat identity ({0})")]
    Malformed(&'static str),
    /// Argon2 refused its parameters.
    #[error("key derivation failed: {0}")]
    Kdf(String),
}

fn b32() -> data_encoding::Encoding {
    data_encoding::BASE32_NOPAD
}

fn derive(
    passphrase: &str,
    salt: &[u8],
    m: u32,
    t: u32,
    p: u32,
) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let params =
        argon2::Params::new(m, t, p, Some(32)).map_err(|e| KeyError::Kdf(e.to_string()))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase.as_bytes(), salt, key.as_mut())
        .map_err(|e| KeyError::Kdf(e.to_string()))?;
    Ok(key)
}

/// The file text for `secret`, sealed if `passphrase` is given.
pub(crate) fn seal(
    secret: &SecretId,
    passphrase: Option<&str>,
) -> Result<Zeroizing<String>, KeyError> {
    let seed = secret.to_bytes();
    let Some(passphrase) = passphrase else {
        return Ok(Zeroizing::new(format!(
            "{HEADER}\nplain {}\n",
            b32().encode(seed.as_ref())
        )));
    };
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 12];
    crate::fill_random(&mut salt);
    crate::fill_random(&mut nonce);
    let key = derive(passphrase, &salt, M_COST_KIB, T_COST, P_COST)?;
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key.as_ref()));
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: seed.as_ref(),
                aad: HEADER.as_bytes(),
            },
        )
        .map_err(|_| KeyError::Kdf("encryption failed".into()))?;
    Ok(Zeroizing::new(format!(
        "{HEADER}\nargon2id {M_COST_KIB} {T_COST} {P_COST} {} {} {}\n",
        b32().encode(&salt),
        b32().encode(&nonce),
        b32().encode(&sealed)
    )))
}

/// Whether the file text holds a sealed key.
pub(crate) fn is_sealed(text: &str) -> bool {
    text.lines()
        .nth(1)
        .is_some_and(|l| l.starts_with("argon2id "))
}

/// Reads the key from the file text.
pub(crate) fn open(text: &str, passphrase: Option<&str>) -> Result<SecretId, KeyError> {
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err(KeyError::Malformed("bad header"));
    }
    let body = lines
        .next()
        .ok_or(KeyError::Malformed("missing key line"))?;
    let mut fields = body.split_ascii_whitespace();
    let decode = |s: Option<&str>| -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let s = s.ok_or(KeyError::Malformed("missing field"))?;
        b32()
            .decode(s.as_bytes())
            .map(Zeroizing::new)
            .map_err(|_| KeyError::Malformed("bad base32"))
    };
    let number = |s: Option<&str>| -> Result<u32, KeyError> {
        s.and_then(|s| s.parse().ok())
            .ok_or(KeyError::Malformed("bad parameter"))
    };
    let seed: Zeroizing<Vec<u8>> = match fields.next() {
        Some("plain") => decode(fields.next())?,
        Some("argon2id") => {
            let (m, t, p) = (
                number(fields.next())?,
                number(fields.next())?,
                number(fields.next())?,
            );
            // Bounds far above what `seal` writes (19 MiB, t=2, p=1), so
            // files from a future, stronger default still open, but a
            // hostile file cannot ask for gigabytes or hours.
            if !(8..=1024 * 1024).contains(&m) || !(1..=16).contains(&t) || !(1..=8).contains(&p) {
                return Err(KeyError::Malformed("argon2 parameters out of range"));
            }
            let salt = decode(fields.next())?;
            let nonce = decode(fields.next())?;
            let sealed = decode(fields.next())?;
            if nonce.len() != 12 {
                return Err(KeyError::Malformed("bad nonce"));
            }
            let passphrase = passphrase.ok_or(KeyError::PassphraseRequired)?;
            let key = derive(passphrase, &salt, m, t, p)?;
            let cipher = ChaCha20Poly1305::new(Key::from_slice(key.as_ref()));
            Zeroizing::new(
                cipher
                    .decrypt(
                        Nonce::from_slice(&nonce),
                        Payload {
                            msg: &sealed,
                            aad: HEADER.as_bytes(),
                        },
                    )
                    .map_err(|_| KeyError::WrongPassphrase)?,
            )
        }
        _ => return Err(KeyError::Malformed("unknown key kind")),
    };
    let seed: &[u8; 32] = seed
        .as_slice()
        .try_into()
        .map_err(|_| KeyError::Malformed("bad seed length"))?;
    Ok(SecretId::from_bytes(seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_key_round_trips() {
        let secret = SecretId::generate();
        let text = seal(&secret, None).unwrap();
        assert!(!is_sealed(&text));
        assert_eq!(open(&text, None).unwrap().peer_id(), secret.peer_id());
        // A passphrase given for a plain key is simply not needed.
        assert_eq!(open(&text, Some("x")).unwrap().peer_id(), secret.peer_id());
    }

    #[test]
    fn sealed_key_needs_the_right_passphrase() {
        let secret = SecretId::generate();
        let text = seal(&secret, Some("correct horse")).unwrap();
        assert!(is_sealed(&text));
        assert!(!text.contains(&b32().encode(secret.to_bytes().as_ref())));
        assert_eq!(
            open(&text, Some("correct horse")).unwrap().peer_id(),
            secret.peer_id()
        );
        assert_eq!(
            open(&text, Some("wrong horse")).unwrap_err(),
            KeyError::WrongPassphrase
        );
        assert_eq!(open(&text, None).unwrap_err(), KeyError::PassphraseRequired);
    }

    #[test]
    fn hostile_argon2_parameters_are_refused() {
        for params in ["268435455 1 1", "8 4294967295 1", "8 1 4294967295", "0 1 1"] {
            let text = format!(
                "crust-chat-identity v1\nargon2id {params} AAAA AAAAAAAAAAAAAAAAAAAA AAAA\n"
            );
            assert!(
                matches!(open(&text, Some("pw")), Err(KeyError::Malformed(_))),
                "{params}"
            );
        }
    }

    #[test]
    fn damaged_files_are_reported_not_misread() {
        let secret = SecretId::generate();
        let text = seal(&secret, Some("pw")).unwrap();
        // Flip one character of the ciphertext.
        let mut damaged = text.trim_end().to_string();
        let last = damaged.pop().unwrap();
        damaged.push(if last == 'A' { 'B' } else { 'A' });
        assert!(matches!(
            open(&damaged, Some("pw")),
            Err(KeyError::WrongPassphrase | KeyError::Malformed(_))
        ));
        assert!(matches!(
            open("hello\nplain AAAA\n", None),
            Err(KeyError::Malformed(_))
        ));
        assert!(matches!(
            open("crust-chat-identity v1\nplain AAAA\n", None),
            Err(KeyError::Malformed(_))
        ));
    }
}
