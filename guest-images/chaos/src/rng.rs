//! The chaos guest's random choices, drawn from `hvabi::rng` (SplitMix64), so that a seed
//! replays a run exactly.

/// The generator.
#[derive(Clone, Debug)]
pub struct Rng(hvabi::rng::SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(hvabi::rng::SplitMix64::new(seed))
    }

    pub fn next(&mut self) -> u64 {
        self.0.next_u64()
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
