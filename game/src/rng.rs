//! The seeded random source and the few draws the rules use.
//!
//! Draws are implemented here on top of `next_u64` rather than through `rand`'s
//! distribution code so that a replay stays bit-identical even if `rand` changes its
//! sampling algorithms: only the PCG stream itself (`rand_pcg::Pcg32`, a fixed,
//! specified algorithm) is relied upon.

use rand::{RngCore, SeedableRng};
use rand_pcg::Pcg32;

/// The world's random source: PCG-XSH-RR 64/32 seeded from the world seed.
#[derive(Debug, Clone)]
pub(crate) struct GameRng(Pcg32);

/// SplitMix64 finaliser: a bijection on u64 used to spread seeds.
pub(crate) fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl GameRng {
    /// A generator for `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        GameRng(Pcg32::seed_from_u64(splitmix64(seed)))
    }

    /// A uniformly distributed u64.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A value in `lo..=hi` (order-insensitive). Modulo bias is below 2^-32.
    pub(crate) fn range(&mut self, lo: u32, hi: u32) -> u32 {
        let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
        let span = u64::from(hi - lo) + 1;
        lo + (self.next_u64() % span) as u32
    }

    /// A value in `lo..=hi` for signed bounds.
    pub(crate) fn range_i32(&mut self, lo: i32, hi: i32) -> i32 {
        let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
        let span = (i64::from(hi) - i64::from(lo)) as u64 + 1;
        (i64::from(lo) + (self.next_u64() % span) as i64) as i32
    }

    /// True with probability `pct`/100.
    pub(crate) fn percent(&mut self, pct: u32) -> bool {
        self.range(0, 99) < pct
    }

    /// An index chosen with probability proportional to `weights`; `None` if all are 0.
    pub(crate) fn weighted(&mut self, weights: &[u32]) -> Option<usize> {
        let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        if total == 0 {
            return None;
        }
        let mut r = self.next_u64() % total;
        for (i, w) in weights.iter().enumerate() {
            let w = u64::from(*w);
            if r < w {
                return Some(i);
            }
            r -= w;
        }
        None
    }

    /// A fingerprint of the generator state (for state hashes) without advancing it.
    pub(crate) fn fingerprint(&self) -> u64 {
        self.0.clone().next_u64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_stay_in_range_and_are_reproducible() {
        let mut a = GameRng::new(5);
        let mut b = GameRng::new(5);
        for _ in 0..1000 {
            let v = a.range(3, 7);
            assert!((3..=7).contains(&v));
            assert_eq!(v, b.range(3, 7));
        }
        assert_eq!(a.weighted(&[0, 0]), None);
        assert_eq!(a.weighted(&[0, 5]), Some(1));
        assert!((-3..=3).contains(&a.range_i32(3, -3)));
    }
}
