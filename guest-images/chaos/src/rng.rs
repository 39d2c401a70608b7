//! SplitMix64 (Steele, Lea, Flood: "Fast splittable pseudorandom number generators", 2014):
//! one 64-bit word of state, every seed a full-period stream, so a seed replays exactly.

/// The generator.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    /// One element of `items`.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// A value with few bits set (1 to 3 of the 64), for flipping bits of a register.
    pub fn sparse(&mut self) -> u64 {
        let mut v = 0;
        for _ in 0..=self.below(3) {
            v |= 1 << self.below(64);
        }
        v
    }

    /// A mask of `bits` chosen at random (each with probability one half).
    pub fn subset(&mut self, bits: u64) -> u64 {
        bits & self.next()
    }
}
