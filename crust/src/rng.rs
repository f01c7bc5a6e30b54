//! A tiny seedable generator (SplitMix64) so the sans-IO state machines
//! (uTP's endpoint and connections, the DHT engine) never touch a global
//! RNG: the caller passes a seed in (`utp::proto::EndpointConfig`,
//! `dht::Config::rng_seed`) and each user derives its own stream from it.
//! Not for secrets.

/// SplitMix64: small, fast, statistically fine for ids, sequence numbers
/// and DHT refresh targets.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn next_u16(&mut self) -> u16 {
        (self.next_u64() >> 48) as u16
    }

    pub(crate) fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
}
