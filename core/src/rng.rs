//! A small seeded pseudo-random generator (`SplitMix64`) for deterministic sampling.
//!
//! The core never reads an entropy source: every random choice (synthetic fleets, canary
//! tie-breaks, simulated noise) is drawn from a generator the caller seeds, so the same seed
//! always gives the same fleet, cohort and decisions. Not for cryptography.

/// `SplitMix64`: fast, tiny, and passes `BigCrush` when used as a stream; ample for sampling.
#[derive(Clone, Debug)]
pub struct SeededRng {
    state: u64,
}

impl SeededRng {
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator for sub-stream `stream` of `seed`, so independent parts of one computation
    /// (say, device 17 of a fleet) draw the same values whatever order they are computed in.
    pub fn derive(seed: u64, stream: u64) -> Self {
        let mut mix = Self::new(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let _ = mix.next_u64();
        Self::new(mix.next_u64())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A float uniformly distributed in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// An integer uniformly distributed in `[0, n)`; `n` must be positive.
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        // Lemire's multiply-shift: bias below 2^-64 per draw, which sampling can ignore.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// An integer uniformly distributed in `[lo, hi]`.
    pub fn range_inclusive(&mut self, lo: i64, hi: i64) -> i64 {
        debug_assert!(lo <= hi);
        lo + self.below((hi - lo) as u64 + 1) as i64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }

    /// An index into `weights`, chosen with probability proportional to its weight.
    pub fn weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut x = self.next_f64() * total;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len().saturating_sub(1)
    }

    /// A normally distributed value (Box–Muller).
    pub fn normal(&mut self, mean: f64, std_dev: f64) -> f64 {
        let u1 = self.next_f64().max(f64::MIN_POSITIVE);
        let u2 = self.next_f64();
        mean + std_dev * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let a: Vec<u64> = (0..5)
            .scan(SeededRng::new(7), |r, _| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..5)
            .scan(SeededRng::new(7), |r, _| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(
            SeededRng::derive(7, 1).next_u64(),
            SeededRng::derive(7, 2).next_u64()
        );
    }

    #[test]
    fn weighted_respects_shares() {
        let mut r = SeededRng::new(42);
        let mut counts = [0u32; 3];
        for _ in 0..100_000 {
            counts[r.weighted(&[0.7, 0.29, 0.01])] += 1;
        }
        assert!((68_000..72_000).contains(&counts[0]), "{counts:?}");
        assert!((600..1_400).contains(&counts[2]), "{counts:?}");
    }
}
