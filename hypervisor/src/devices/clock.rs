//! Guest time for the device models. Devices never read hardware: they hold an
//! `Rc<dyn Clock>` and ask it for the time, so the same models run on the host under a
//! [`ManualClock`] in tests and under the TSC on the machine.

use core::cell::Cell;

/// Guest time for device models: the TSC (host and guest TSC are the same, no offset) and its
/// frequency.
pub trait Clock {
    /// The current TSC value.
    fn now(&self) -> u64;
    /// TSC ticks per second.
    fn hz(&self) -> u64;
}

/// A clock that moves only when told to: for tests, and for callers that drive time
/// themselves.
#[derive(Debug)]
pub struct ManualClock {
    now: Cell<u64>,
    hz: u64,
}

impl ManualClock {
    /// A clock at TSC 0 ticking at `hz`.
    pub fn new(hz: u64) -> Self {
        Self { now: Cell::new(0), hz }
    }
    /// Sets the TSC.
    pub fn set(&self, tsc: u64) {
        self.now.set(tsc);
    }
    /// Moves the TSC forward by `ticks`.
    pub fn advance(&self, ticks: u64) {
        self.now.set(self.now.get().saturating_add(ticks));
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.now.get()
    }
    fn hz(&self) -> u64 {
        self.hz
    }
}

/// `value * mul / div`, rounded down, saturating at `u64::MAX`; a zero `div` counts as 1.
pub fn scale(value: u64, mul: u64, div: u64) -> u64 {
    let r = u128::from(value) * u128::from(mul) / u128::from(div.max(1));
    u64::try_from(r).unwrap_or(u64::MAX)
}

/// `value * mul / div`, rounded up, saturating at `u64::MAX`; a zero `div` counts as 1.
pub fn scale_up(value: u64, mul: u64, div: u64) -> u64 {
    let r = (u128::from(value) * u128::from(mul)).div_ceil(u128::from(div.max(1)));
    u64::try_from(r).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_when_told() {
        let c = ManualClock::new(1_000);
        assert_eq!((c.now(), c.hz()), (0, 1_000));
        c.advance(5);
        c.advance(7);
        assert_eq!(c.now(), 12);
        c.set(u64::MAX - 1);
        c.advance(10);
        assert_eq!(c.now(), u64::MAX, "saturates");
    }

    #[test]
    fn scaling_rounds_and_saturates() {
        assert_eq!(scale(10, 3, 4), 7);
        assert_eq!(scale_up(10, 3, 4), 8);
        assert_eq!(scale_up(8, 3, 4), 6);
        assert_eq!(scale(u64::MAX, u64::MAX, 1), u64::MAX);
        assert_eq!(scale(5, 2, 0), 10, "zero divisor counts as one");
        assert_eq!(scale(u64::MAX, 1_193_182, 3_000_000_000), 7_336_774_329_118_970);
    }
}
