//! Who a peer is: [`PeerId`], an Ed25519 public key, and [`SecretId`], the
//! matching secret key.
//!
//! A `PeerId` is shown and parsed as 52 characters of lowercase RFC 4648
//! base32 without padding; parsing also accepts upper case, and rejects a
//! string that is not a valid Ed25519 point. A `SecretId` never prints its
//! bytes, is zeroized on drop, and is saved as a small text file (mode 0600
//! on Unix) that says what it is.

use std::fmt;
use std::io::Write as _;
use std::path::Path;
use std::str::FromStr;

use data_encoding::{Encoding, Specification};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Lowercase base32 (RFC 4648 alphabet) without padding.
fn base32() -> &'static Encoding {
    static ENCODING: std::sync::OnceLock<Encoding> = std::sync::OnceLock::new();
    ENCODING.get_or_init(|| {
        let mut spec = Specification::new();
        spec.symbols.push_str("abcdefghijklmnopqrstuvwxyz234567");
        spec.translate.from.push_str("ABCDEFGHIJKLMNOPQRSTUVWXYZ");
        spec.translate.to.push_str("abcdefghijklmnopqrstuvwxyz");
        // The specification is a constant, so this cannot fail at run time;
        // the unit tests exercise it.
        #[allow(clippy::expect_used)]
        spec.encoding().expect("valid base32 specification")
    })
}

/// A peer's identity: its Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct PeerId([u8; 32]);

/// Why a string or byte array is not a [`PeerId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParsePeerIdError {
    /// Not base32, or not 52 characters long.
    #[error("a peer id is 52 base32 characters, got {0:?}")]
    Encoding(String),
    /// The right length, but not a point on the Ed25519 curve.
    #[error("not a valid Ed25519 public key")]
    InvalidKey,
}

impl PeerId {
    /// Length of the textual form.
    pub const TEXT_LEN: usize = 52;

    /// A peer id from a public key's 32 bytes, checking that they are a
    /// valid Ed25519 point.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, ParsePeerIdError> {
        VerifyingKey::from_bytes(&bytes).map_err(|_| ParsePeerIdError::InvalidKey)?;
        Ok(Self(bytes))
    }

    /// The public key's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first eight characters of the textual form, for people.
    pub fn short(&self) -> String {
        let mut s = self.to_string();
        s.truncate(8);
        s
    }

    /// Checks `signature` over `message` against this key.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        key.verify(message, &Signature::from_bytes(signature))
            .is_ok()
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&base32().encode(&self.0))
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", self.short())
    }
}

impl FromStr for PeerId {
    type Err = ParsePeerIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() != Self::TEXT_LEN {
            return Err(ParsePeerIdError::Encoding(s.to_owned()));
        }
        let bytes = base32()
            .decode(s.as_bytes())
            .map_err(|_| ParsePeerIdError::Encoding(s.to_owned()))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| ParsePeerIdError::Encoding(s.to_owned()))?;
        Self::from_bytes(bytes)
    }
}

impl From<PeerId> for String {
    fn from(id: PeerId) -> Self {
        id.to_string()
    }
}

impl TryFrom<String> for PeerId {
    type Error = ParsePeerIdError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// The secret half of an identity. Never printed, zeroized on drop.
pub struct SecretId {
    key: SigningKey,
}

/// Why a secret key could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// Reading or writing the file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file exists but is not a crust secret key.
    #[error("key file {path} is damaged or not a crust secret key")]
    Malformed {
        /// The file.
        path: std::path::PathBuf,
    },
}

const KEY_FILE_HEADER: &str = "crust-secret-key-v1";

impl SecretId {
    /// A new random identity from the operating system's generator.
    pub fn generate() -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        // getrandom fails only where the OS has no entropy source at all, in
        // which case no identity can be made safely.
        #[allow(clippy::expect_used)]
        getrandom::fill(seed.as_mut()).expect("the operating system's random generator failed");
        Self::from_bytes(&seed)
    }

    /// The identity with this 32-byte secret seed.
    pub fn from_bytes(seed: &[u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(seed),
        }
    }

    /// The secret seed; keep it in the returned wrapper so it is zeroized.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.to_bytes())
    }

    /// The public identity.
    pub fn peer_id(&self) -> PeerId {
        PeerId(self.key.verifying_key().to_bytes())
    }

    /// Signs `message` with this identity.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    /// Loads a key saved by [`SecretId::save`].
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| KeyFileError::Io {
                    path: path.to_owned(),
                    source,
                })?,
            );
        let malformed = || KeyFileError::Malformed {
            path: path.to_owned(),
        };
        let mut lines = text.lines();
        if lines.next() != Some(KEY_FILE_HEADER) {
            return Err(malformed());
        }
        let encoded = lines.next().ok_or_else(malformed)?;
        let bytes = Zeroizing::new(
            base32()
                .decode(encoded.trim().as_bytes())
                .map_err(|_| malformed())?,
        );
        let seed: &[u8; 32] = bytes.as_slice().try_into().map_err(|_| malformed())?;
        Ok(Self::from_bytes(seed))
    }

    /// Saves the key to `path` (created with mode 0600 on Unix), replacing
    /// any file there atomically.
    pub fn save(&self, path: &Path) -> Result<(), KeyFileError> {
        let io = |source| KeyFileError::Io {
            path: path.to_owned(),
            source,
        };
        let seed = self.to_bytes();
        let text = Zeroizing::new(format!(
            "{KEY_FILE_HEADER}\n{}\n",
            base32().encode(seed.as_ref())
        ));
        crate::fsutil::write_atomically(path, true, |file| file.write_all(text.as_bytes()))
            .map_err(io)
    }

    /// Loads the key at `path`, or creates and saves a new one if there is
    /// no file there yet. A damaged file is an error, never overwritten.
    pub fn load_or_generate(path: &Path) -> Result<Self, KeyFileError> {
        match Self::load(path) {
            Err(KeyFileError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                let key = Self::generate();
                key.save(path)?;
                Ok(key)
            }
            other => other,
        }
    }
}

impl fmt::Debug for SecretId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretId({}, secret hidden)", self.peer_id().short())
    }
}

impl Clone for SecretId {
    fn clone(&self) -> Self {
        Self::from_bytes(&self.to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_text_round_trips_and_is_lowercase() {
        for _ in 0..32 {
            let id = SecretId::generate().peer_id();
            let text = id.to_string();
            assert_eq!(text.len(), PeerId::TEXT_LEN);
            assert_eq!(text, text.to_lowercase());
            assert_eq!(text.parse::<PeerId>().unwrap(), id);
            assert_eq!(text.to_uppercase().parse::<PeerId>().unwrap(), id);
        }
    }

    #[test]
    fn peer_id_serde_uses_text() {
        let id = SecretId::generate().peer_id();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<PeerId>(&json).unwrap(), id);
    }

    #[test]
    fn bad_peer_ids_are_rejected() {
        let good = SecretId::generate().peer_id().to_string();
        assert!(matches!(
            good[1..].parse::<PeerId>(),
            Err(ParsePeerIdError::Encoding(_))
        ));
        let mut bad_char = good.clone();
        bad_char.replace_range(0..1, "1");
        assert!(matches!(
            bad_char.parse::<PeerId>(),
            Err(ParsePeerIdError::Encoding(_))
        ));
        // A y coordinate of 2 is not on the curve.
        let mut not_a_point = [0u8; 32];
        not_a_point[0] = 2;
        assert_eq!(
            PeerId::from_bytes(not_a_point),
            Err(ParsePeerIdError::InvalidKey)
        );
    }

    #[test]
    fn secret_never_prints_itself() {
        let key = SecretId::generate();
        let debug = format!("{key:?}");
        let seed = base32().encode(key.to_bytes().as_ref());
        assert!(!debug.contains(&seed));
        assert!(debug.contains("hidden"));
    }

    #[test]
    fn signatures_verify_only_for_the_signed_message_and_key() {
        let key = SecretId::generate();
        let sig = key.sign(b"hello");
        assert!(key.peer_id().verify(b"hello", &sig));
        assert!(!key.peer_id().verify(b"hellO", &sig));
        assert!(!SecretId::generate().peer_id().verify(b"hello", &sig));
    }

    #[test]
    fn key_file_round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let key = SecretId::load_or_generate(&path).unwrap();
        assert_eq!(
            SecretId::load_or_generate(&path).unwrap().peer_id(),
            key.peer_id()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "crust-secret-key-v1\nnot base32!\n").unwrap();
        assert!(matches!(
            SecretId::load_or_generate(&path),
            Err(KeyFileError::Malformed { .. })
        ));
        // The damaged file was not overwritten.
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("not base32")
        );
    }
}
