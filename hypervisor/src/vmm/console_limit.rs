//! A partition's console output budget (issue 13, item 6): a guest may not make the hypervisor
//! write without bound to the serial line every partition shares. A token bucket: a burst of
//! [`BURST`] bytes (a Linux boot log fits), refilled at [`PER_SECOND`] bytes per second of TSC;
//! what does not fit is dropped and counted, and the console says how much once output flows
//! again (or the partition stops): `[N bytes dropped]`.

/// Bytes a partition may write at once.
pub const BURST: u64 = 256 * 1024;
/// Bytes the budget regains per second.
pub const PER_SECOND: u64 = 16 * 1024;
/// TSC frequency assumed when it is unknown (kHz).
const DEFAULT_KHZ: u64 = 1_000_000;

/// One partition's budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsoleLimit {
    tokens: u64,
    /// TSC at the last refill.
    last: u64,
    /// Bytes dropped and not yet reported.
    dropped: u64,
}

impl ConsoleLimit {
    /// A full budget at TSC `now`.
    pub const fn new(now: u64) -> Self {
        Self { tokens: BURST, last: now, dropped: 0 }
    }

    /// How many of `n` bytes may be written at TSC `now` (TSC at `tsc_khz` kHz, 0: unknown);
    /// the rest count as dropped.
    pub fn admit(&mut self, now: u64, tsc_khz: u64, n: u64) -> u64 {
        let ticks_per_second = u128::from(if tsc_khz == 0 { DEFAULT_KHZ } else { tsc_khz }) * 1000;
        let elapsed = u128::from(now.saturating_sub(self.last));
        let gained = elapsed * u128::from(PER_SECOND) / ticks_per_second;
        if gained > 0 {
            self.tokens = (u128::from(self.tokens) + gained).min(u128::from(BURST)) as u64;
            self.last = now;
        }
        let ok = n.min(self.tokens);
        self.tokens -= ok;
        self.dropped = self.dropped.saturating_add(n - ok);
        ok
    }

    /// The bytes dropped since the last call.
    pub fn take_dropped(&mut self) -> u64 {
        core::mem::take(&mut self.dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KHZ: u64 = 1_000_000; // 1 GHz: 10^9 ticks per second

    #[test]
    fn a_burst_then_the_rate() {
        let mut l = ConsoleLimit::new(0);
        assert_eq!(l.admit(0, KHZ, BURST - 10), BURST - 10);
        assert_eq!(l.admit(0, KHZ, 100), 10, "the burst is spent");
        assert_eq!(l.take_dropped(), 90);
        assert_eq!(l.take_dropped(), 0, "reported once");
        // Half a second later: half a second's worth.
        assert_eq!(l.admit(500_000_000, KHZ, 1 << 20), PER_SECOND / 2);
        assert_eq!(l.take_dropped(), (1 << 20) - PER_SECOND / 2);
        // An hour of silence refills no more than the burst.
        assert_eq!(l.admit(3_600_000_000_000, KHZ, 1 << 30), BURST);
    }

    #[test]
    fn unbounded_output_is_bounded() {
        // 43 MB offered over 175 s (what a hostile guest did): at most the burst and the rate.
        let mut l = ConsoleLimit::new(0);
        let mut written = 0;
        for ms in 0..175_000u64 {
            written += l.admit(ms * 1_000_000, KHZ, 250);
        }
        assert!(written <= BURST + 175 * PER_SECOND, "{written}");
        assert!(written >= 175 * PER_SECOND, "{written}: the rate is kept");
        assert_eq!(l.take_dropped(), 175_000 * 250 - written);
    }

    #[test]
    fn unknown_frequency_and_time_going_back() {
        let mut l = ConsoleLimit::new(1000);
        assert_eq!(l.admit(1000, 0, BURST), BURST);
        assert_eq!(l.admit(10, 0, 1), 0, "TSC behind: nothing regained");
        assert_eq!(l.admit(1_000_001_000, 0, u64::MAX), PER_SECOND, "1 GHz assumed");
    }
}
