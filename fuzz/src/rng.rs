//! The driver's only source of randomness (`hvabi::rng`, SplitMix64): a run is replayed by its
//! seed.

#[derive(Clone, Debug)]
pub struct Rng(hvabi::rng::SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(hvabi::rng::SplitMix64::new(seed))
    }

    pub fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
