//! One fast, deterministic hasher for the core's internal hash maps (the planner's depot,
//! stratum and component maps, the cluster tally), and the app's maps keyed by the fleet's own
//! values (the console's column index, the cache's snapshot dictionaries). The core reads no random source, so std's
//! randomly keyed SipHash is out, and SipHash with fixed keys is the hot spot of a
//! million-device pass. Not for keys an adversary chooses, and never for anything whose
//! output depends on iteration order.

/// A fast, deterministic hasher for the core's internal maps (depot ids, stratum values,
/// component states, cluster keys), which SipHash (or hashing byte by byte) would make the hot spot of a
/// million-device plan. It mixes eight bytes at a time (FxHash's multiply-rotate step) and
/// finishes with SplitMix64's avalanche, so that the top bits `hashbrown` uses are well
/// spread. Keys are the fleet's own strings, not attacker-chosen, so flooding is not a
/// concern; no map is ever iterated, so the hash values never show in a plan.
#[derive(Clone, Copy, Debug, Default)]
pub struct FastHasher(u64);

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl std::hash::Hasher for FastHasher {
    #[inline]
    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            // The length keeps `[1]` and `[1, 0]` apart.
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 60));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
}

/// Builds [`FastHasher`]s, for `HashMap::with_hasher` and map types.
pub type FastBuild = std::hash::BuildHasherDefault<FastHasher>;

/// A `HashMap` with [`FastHasher`].
pub type FastMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<FastHasher>>;

/// A `HashSet` with [`FastHasher`].
pub type FastSet<K> = std::collections::HashSet<K, std::hash::BuildHasherDefault<FastHasher>>;
