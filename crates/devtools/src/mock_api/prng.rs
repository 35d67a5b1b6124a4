//! A seeded generator and a hash that will never change under us.
//!
//! `rand`'s `StdRng` documents that its algorithm may change between versions, which would
//! silently change every generated conversation; SplitMix64 and FNV-1a are a few fixed lines.

/// SplitMix64 (Steele, Lea and Flood): tiny, fast, and good enough for sample data.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A generator of its own for item `index`, so item 7 is the same whatever the item count.
    pub fn stream(seed: u64, index: u64) -> Self {
        let mut mixer = Self::new(seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
        Self::new(mixer.next_u64())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`); the modulo bias is far below what sample data can show.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A number in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high.saturating_sub(low) + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// `len` lowercase hex digits.
    pub fn hex(&mut self, len: usize) -> String {
        let mut out = String::with_capacity(len + 16);
        while out.len() < len {
            out.push_str(&format!("{:016x}", self.next_u64()));
        }
        out.truncate(len);
        out
    }
}

/// FNV-1a, 64 bits: for cursor checksums and filter fingerprints.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_numbers() {
        let a: Vec<u64> = (0..5).map(|i| SplitMix::stream(42, i).next_u64()).collect();
        let b: Vec<u64> = (0..5).map(|i| SplitMix::stream(42, i).next_u64()).collect();
        assert_eq!(a, b);
        assert_ne!(SplitMix::stream(42, 0).next_u64(), SplitMix::stream(43, 0).next_u64());
    }

    #[test]
    fn splitmix_matches_its_reference_output() {
        // First output of the reference implementation for seed 1234567.
        assert_eq!(SplitMix::new(1_234_567).next_u64(), 6_457_827_717_110_365_317);
    }

    #[test]
    fn fnv1a_matches_its_reference_values() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn between_stays_inside_its_bounds() {
        let mut rng = SplitMix::new(7);
        assert!((0..1000).map(|_| rng.between(3, 5)).all(|n| (3..=5).contains(&n)));
        assert_eq!(rng.hex(32).len(), 32);
    }
}
