//! A budget for log lines a guest can cause at will (an IPI it may not send, an APIC base it
//! may not move, an I/O APIC entry in a mode that is not delivered): a hostile guest doing
//! the same thing in a loop must not flood the serial console every partition shares, nor
//! slow its CPU to the console's pace. A token bucket: a burst of [`BURST`] lines, regaining
//! [`PER_SECOND`] lines per second of TSC; the lines that do not fit are counted, and the next
//! line that does says how many were left out before it.

/// Lines that may come at once.
pub const BURST: u32 = 8;
/// Lines regained per second.
pub const PER_SECOND: u64 = 2;

/// One source's budget (a vCPU's local APIC keeps one, `vmm/vlapic.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogLimit {
    tokens: u32,
    /// TSC at the last refill.
    last: u64,
    /// Lines left out since the last one written.
    dropped: u64,
}

impl Default for LogLimit {
    fn default() -> Self {
        Self::new()
    }
}

impl LogLimit {
    /// A full budget.
    pub const fn new() -> Self {
        Self { tokens: BURST, last: 0, dropped: 0 }
    }

    /// At TSC `now` (ticking at `hz`, 0: unknown, taken as 1 GHz), may one more line be
    /// written? `Some(n)`: yes, and `n` lines were left out before it (0: none); `None`: no,
    /// it is counted.
    pub fn admit(&mut self, now: u64, hz: u64) -> Option<u64> {
        let hz = if hz == 0 { 1_000_000_000 } else { hz };
        let per_token = (hz / PER_SECOND).max(1);
        let gained = now.saturating_sub(self.last) / per_token;
        if gained > 0 {
            self.tokens = (u64::from(self.tokens) + gained).min(u64::from(BURST)) as u32;
            self.last = now;
        } else if now < self.last {
            // The TSC went back (a different host CPU): start the interval again.
            self.last = now;
        }
        if self.tokens == 0 {
            self.dropped += 1;
            return None;
        }
        self.tokens -= 1;
        Some(core::mem::take(&mut self.dropped))
    }
}

/// `" (N earlier lines left out)"` for a line [`LogLimit::admit`] let through after dropping
/// `n` (empty for 0): for the end of that line. The count is the budget's, whatever lines they
/// were (a vCPU's budget covers all its rate-limited lines).
pub fn dropped_note(n: u64) -> alloc::string::String {
    if n == 0 {
        alloc::string::String::new()
    } else {
        alloc::format!(" ({n} earlier lines left out)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_two_lines_a_second_with_a_count_of_the_rest() {
        const HZ: u64 = 1_000_000_000;
        let mut l = LogLimit::new();
        let mut now = HZ; // some time after boot
        for _ in 0..BURST {
            assert_eq!(l.admit(now, HZ), Some(0));
        }
        // A storm of 10 000 lines within a millisecond: none of them.
        for i in 0..10_000 {
            now += 100;
            assert_eq!(l.admit(now, HZ), None, "line {i} of the storm");
        }
        // Half a second later: one line, which reports the 10 000.
        now += HZ / 2;
        assert_eq!(l.admit(now, HZ), Some(10_000));
        assert_eq!(l.admit(now, HZ), None, "one token per half second");
        // A long quiet time refills the burst, no more.
        now += 100 * HZ;
        for _ in 0..BURST {
            assert!(l.admit(now, HZ).is_some());
        }
        assert_eq!(l.admit(now, HZ), None);
        assert_eq!(dropped_note(0), "");
        assert_eq!(dropped_note(3), " (3 earlier lines left out)");
    }

    #[test]
    fn a_tsc_going_back_does_not_refill() {
        let mut l = LogLimit::new();
        for _ in 0..BURST {
            l.admit(1_000_000, 0);
        }
        assert_eq!(l.admit(10, 0), None);
        assert_eq!(l.admit(20, 0), None, "the interval starts again at the lower TSC");
    }
}
