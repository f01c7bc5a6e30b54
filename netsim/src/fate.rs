//! Counter-based randomness: every random decision is a pure function of the
//! scenario seed and where the decision is made (which link direction, which
//! flow, which packet of that flow, which draw). The same seed therefore gives
//! the same fate to the same packet no matter how threads and the kernel
//! interleave other traffic.

/// Mixes one 64-bit word into a state (SplitMix64 finaliser).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hashes a sequence of words into one well-mixed word.
pub(crate) fn hash(words: &[u64]) -> u64 {
    let mut h = 0x6a09_e667_f3bc_c908u64;
    for w in words {
        h = mix(h ^ mix(*w));
    }
    h
}

/// A uniform number in `[0, 1)` from a hash.
pub(crate) fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// A small sequential generator (for NAT port choice), seeded from the scenario.
#[derive(Debug, Clone)]
pub(crate) struct Stream {
    key: u64,
    counter: u64,
}

impl Stream {
    pub(crate) fn new(key: u64) -> Self {
        Stream { key, counter: 0 }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.counter += 1;
        hash(&[self.key, self.counter])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_is_roughly_uniform_and_deterministic() {
        let n = 100_000u64;
        let mean: f64 = (0..n).map(|i| unit(hash(&[1, i]))).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
        assert_eq!(hash(&[1, 2, 3]), hash(&[1, 2, 3]));
        assert_ne!(hash(&[1, 2, 3]), hash(&[1, 2, 4]));
    }
}
