//! The key space: 256-bit [`Key`]s (a peer id's public key bytes) and the
//! XOR [`Distance`] between them.

use std::fmt;

use crate::PeerId;
use crate::rng::SplitMix64;
use serde::{Deserialize, Serialize};

/// A point in the DHT's key space: a peer id's 32 bytes. A peer's record is
/// stored under its own id's key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Key(pub [u8; 32]);

impl Key {
    /// The XOR distance to `other`.
    pub fn distance(&self, other: &Key) -> Distance {
        let mut d = [0u8; 32];
        for (i, byte) in d.iter_mut().enumerate() {
            *byte = self.0[i] ^ other.0[i];
        }
        Distance(d)
    }

    /// A random key whose distance from `self` falls in bucket `bucket`
    /// (its highest set bit is bit `bucket`, counting from the least
    /// significant).
    pub(crate) fn random_in_bucket(&self, bucket: usize, rng: &mut SplitMix64) -> Key {
        let mut d = [0u8; 32];
        for chunk in d.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        let top_byte = 31 - bucket / 8;
        let bit = bucket % 8;
        for byte in d.iter_mut().take(top_byte) {
            *byte = 0;
        }
        // Keep the bits below `bit`, clear those above, set `bit`.
        d[top_byte] = (d[top_byte] & ((1u8 << bit) - 1)) | (1u8 << bit);
        Key(self.distance(&Key(d)).0)
    }
}

impl From<PeerId> for Key {
    fn from(id: PeerId) -> Self {
        Key(*id.as_bytes())
    }
}

impl From<&PeerId> for Key {
    fn from(id: &PeerId) -> Self {
        Key(*id.as_bytes())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key(")?;
        for byte in &self.0[..4] {
            write!(f, "{byte:02x}")?;
        }
        write!(f, "..)")
    }
}

/// The XOR of two keys, compared as a big-endian 256-bit number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Distance(pub [u8; 32]);

impl Distance {
    /// The k-bucket a key at this distance belongs in: the index of the
    /// highest set bit (0 = nearest, 255 = the far half of the space), or
    /// `None` for distance zero (ourselves).
    pub fn bucket(&self) -> Option<usize> {
        let zeros = self.leading_zeros() as usize;
        (zeros < 256).then(|| 255 - zeros)
    }

    /// How many leading bits are zero (256 for distance zero).
    pub fn leading_zeros(&self) -> u32 {
        let mut zeros = 0;
        for byte in &self.0 {
            if *byte == 0 {
                zeros += 8;
            } else {
                return zeros + byte.leading_zeros();
            }
        }
        zeros
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_is_symmetric_and_zero_to_self() {
        let a = Key([0x55; 32]);
        let b = Key([0xa0; 32]);
        assert_eq!(a.distance(&b), b.distance(&a));
        assert_eq!(a.distance(&a).bucket(), None);
        assert_eq!(a.distance(&b).bucket(), Some(255));
        let mut c = a;
        c.0[31] ^= 1;
        assert_eq!(a.distance(&c).bucket(), Some(0));
    }

    #[test]
    fn random_keys_land_in_the_asked_bucket() {
        let me = Key([0x3c; 32]);
        let mut rng = SplitMix64::new(7);
        for bucket in 0..256 {
            let key = me.random_in_bucket(bucket, &mut rng);
            assert_eq!(me.distance(&key).bucket(), Some(bucket));
        }
    }
}
