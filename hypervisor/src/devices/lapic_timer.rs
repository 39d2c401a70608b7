//! The local APIC timer (SDM Vol. 3A §11.5.4): one-shot, periodic and TSC-deadline modes,
//! counting at the clock's rate divided by the divide configuration.

use super::{
    LVT_MASK, Lapic, TIMER_MODE_SHIFT, TIMER_ONE_SHOT, TIMER_PERIODIC, TIMER_TSC_DEADLINE,
};

/// The shortest time between two interrupts of a periodic timer, in microseconds: a guest
/// that programs a count of 1 at divide-by-1 gets its interrupts at this rate, not one per
/// tick, so that it still runs between them however slow its exits are (KVM bounds its
/// periodic timer the same way, at the same 200 µs). Its current count still counts at the
/// programmed rate; a one-shot or TSC-deadline timer is not bounded (each needs a write).
pub const MIN_PERIOD_US: u64 = 200;
/// The same floor in TSC ticks, for a TSC that is slow next to the cost of an exit (Bochs's
/// counts one tick per instruction and calibrates to about 4 MHz: 200 µs are 800 ticks, less
/// than the hypervisor's own work for one interrupt and its EOI, and a 1-tick periodic timer
/// would leave the guest no time at all). Linux's periodic tick at HZ=1000 is 1 ms, longer
/// than this at any rate above 20 MHz.
pub const MIN_PERIOD_TICKS: u64 = 20_000;

impl Lapic {
    /// The TSC at which the timer next raises an interrupt: armed and unmasked (a masked
    /// timer raises nothing, so nothing needs waking for it).
    pub fn timer_wake(&self) -> Option<u64> {
        (self.expiry != 0 && self.lvt[0] & LVT_MASK == 0).then_some(self.expiry)
    }

    pub(super) fn timer_mode(&self) -> u32 {
        (self.lvt[0] >> TIMER_MODE_SHIFT) & 3
    }

    /// An LVT timer write: vector, mask and mode (bits 18:17).
    pub(super) fn write_lvt_timer(&mut self, v: u32) {
        let old_mode = self.timer_mode();
        self.lvt[0] = self.lvt_value(v, 0x0007_00ff);
        if self.timer_mode() != old_mode {
            // A mode change disarms the timer (§11.5.4.1: the count and the deadline start
            // over in the new mode).
            self.initial = 0;
            self.tsc_deadline = 0;
            self.expiry = 0;
        }
    }

    /// An initial-count write: starts the count (0 stops it, §11.5.4); ignored in
    /// TSC-deadline mode (§11.5.4.1).
    pub(super) fn write_initial_count(&mut self, v: u32) {
        if self.timer_mode() != TIMER_TSC_DEADLINE {
            self.initial = v;
            self.start = self.clock.now();
            self.done_at_start = 0;
            self.expiry = if v == 0 { 0 } else { self.start + self.period() };
        }
    }

    /// A divide-configuration write (bits 0, 1 and 3). A count in progress goes on from where
    /// it is at the new rate.
    pub(super) fn write_divide(&mut self, v: u32) {
        let now = self.clock.now();
        let running = self.expiry != 0 && self.timer_mode() != TIMER_TSC_DEADLINE;
        let left = if running { self.current_count(now) } else { 0 };
        self.divide = v & 0b1011;
        if running {
            self.done_at_start = u64::from(self.initial - left.min(self.initial));
            self.start = now;
            self.expiry = now + u64::from(left.max(1)) * self.divisor();
        }
    }

    /// [`MIN_PERIOD_US`] in TSC ticks, and at least [`MIN_PERIOD_TICKS`].
    pub(super) fn min_period_ticks(&self) -> u64 {
        (self.clock.hz() / 1_000_000 * MIN_PERIOD_US).max(MIN_PERIOD_TICKS)
    }

    /// The divide configuration's divisor (§11.5.4, Figure 11-10: bits 0, 1 and 3).
    pub(super) fn divisor(&self) -> u64 {
        let code = (self.divide & 3) | ((self.divide >> 1) & 4);
        if code == 7 { 1 } else { 2 << code }
    }

    /// TSC ticks of one full count.
    fn period(&self) -> u64 {
        u64::from(self.initial).saturating_mul(self.divisor()).max(1)
    }

    pub(super) fn current_count(&self, now: u64) -> u32 {
        if self.initial == 0 || self.timer_mode() == TIMER_TSC_DEADLINE {
            return 0;
        }
        let counts = self.done_at_start + now.saturating_sub(self.start) / self.divisor();
        match self.timer_mode() {
            TIMER_PERIODIC => self.initial - (counts % u64::from(self.initial)) as u32,
            // One-shot (and the reserved mode 3, which counts as one-shot).
            TIMER_ONE_SHOT | 3 => u64::from(self.initial).saturating_sub(counts) as u32,
            _ => 0,
        }
    }

    /// The TSC at which the timer fires next, if it is armed (masked or not: a masked timer
    /// still counts, it only raises nothing).
    pub fn next_deadline(&self) -> Option<u64> {
        (self.expiry != 0).then_some(self.expiry)
    }

    /// Moves the timer to `now`: raises its vector when it expired (once, however many
    /// periods passed: the IRR bit coalesces them) and re-arms a periodic timer.
    #[inline]
    pub fn tick(&mut self, now: u64) {
        // Before every entry: nothing due is the common case.
        if self.expiry == 0 || now < self.expiry {
            return;
        }
        self.expire(now);
    }

    /// The timer expired at `now` (see [`Lapic::tick`]).
    #[inline(never)]
    fn expire(&mut self, now: u64) {
        match self.timer_mode() {
            TIMER_PERIODIC => {
                let p = self.period();
                let missed = (now - self.expiry) / p;
                self.expiry += (missed + 1) * p;
                // At most one interrupt per MIN_PERIOD_US, however short the period.
                self.expiry = self.expiry.max(now.saturating_add(self.min_period_ticks()));
            }
            TIMER_TSC_DEADLINE => {
                self.tsc_deadline = 0;
                self.expiry = 0;
            }
            _ => self.expiry = 0,
        }
        let lvt = self.lvt[0];
        if lvt & LVT_MASK == 0 {
            self.accept(lvt as u8, false);
        }
    }

    /// IA32_TSC_DEADLINE (MSR 0x6E0, §11.5.4.1): reads the armed deadline (0 once it fired).
    pub fn tsc_deadline(&self) -> u64 {
        if self.timer_mode() == TIMER_TSC_DEADLINE { self.tsc_deadline } else { 0 }
    }

    /// Writes IA32_TSC_DEADLINE: arms (0 disarms) in TSC-deadline mode, ignored otherwise
    /// (§11.5.4.1). A deadline already past fires at the next look ([`Lapic::tick`]).
    pub fn set_tsc_deadline(&mut self, tsc: u64) {
        if self.timer_mode() == TIMER_TSC_DEADLINE {
            self.tsc_deadline = tsc;
            self.expiry = tsc;
        }
    }
}
