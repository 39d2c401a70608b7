//! One counter of an 8254 programmable interval timer, as a function of time: the guest's
//! programming is recorded with the PIT clock tick it happened at, and the counting element
//! (CE) and OUT are computed for any later tick, so nothing runs between accesses.
//!
//! Behaviour from the Intel 82C54 datasheet (order no. 231244): "Programming the 8254"
//! (control word, write and read sequences, counter latch, read-back command and status
//! byte) and "Mode Definitions" (modes 0-5, the gate's effect, table "Gate Pin Operations
//! Summary"). A count is loaded into CE on the CLK pulse after it is written (or, in modes 1
//! and 5, after the gate's rising edge), so CE first holds it one tick after the write and
//! mode 0's OUT rises N + 1 ticks after the write. Before that first CLK pulse CE reads as
//! it will once loaded (the datasheet leaves it undefined). BCD counting is supported; a BCD
//! count with digits above 9 is taken digit by digit and reduced modulo 10000.

/// Read/write access of a counter (control word bits RW1:RW0; 00 is the latch command).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Lsb = 1,
    Msb = 2,
    LsbMsb = 3,
}

impl Access {
    /// RW1:RW0 of a control word; `None` for 00 (the counter latch command).
    pub fn from_bits(rw: u8) -> Option<Self> {
        match rw & 3 {
            1 => Some(Self::Lsb),
            2 => Some(Self::Msb),
            3 => Some(Self::LsbMsb),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Run {
    /// Not counting: after a control word, in mode 0 between the two bytes of a new count,
    /// in modes 2 and 3 while the gate is low, in modes 1 and 5 before the first trigger.
    Stopped { ce: u32, out: bool },
    /// Counting the initial count `n`: `k0` CLK pulses counted at tick `start`, one more per
    /// tick after it. `k` = 0 is the pulse that loaded CE.
    Counting { start: u64, k0: u64, n: u32 },
    /// Modes 0 and 4 with the gate low: `k` pulses counted, counting suspended.
    Paused { k: u64, n: u32 },
}

/// A count written during counting in mode 2 or 3, taking over at tick `at` (the end of
/// the current cycle, or half-cycle in mode 3) as `Counting { start: at, k0, n }`.
#[derive(Clone, Copy, Debug)]
struct Reload {
    at: u64,
    k0: u64,
    n: u32,
}

/// One 8254 counter.
#[derive(Clone, Copy, Debug)]
pub struct Counter {
    /// M2:M0 as written (6 and 7 are modes 2 and 3; the status byte returns them as written).
    mode_bits: u8,
    access: Access,
    bcd: bool,
    /// The initial count last written (1..=the modulus, 0 meaning the modulus); `None`
    /// from a control word until a whole count is written.
    cr: Option<u32>,
    run: Run,
    reload: Option<Reload>,
    gate: bool,
    /// The status byte's NULL COUNT bit is set while the tick is below this.
    null_until: u64,
    /// Write sequence of a two-byte count: the LSB, waiting for the MSB.
    write_lsb: Option<u8>,
    /// Read sequence of a two-byte value: the next read returns the MSB.
    read_msb: bool,
    latched_count: Option<u16>,
    latched_status: Option<u8>,
    /// Rising edges of OUT counted and not yet taken.
    edges: u64,
    /// The tick up to which `edges` is counted.
    synced: u64,
}

/// A BCD value (four digits, each taken as 0-15) as a number below 10000.
fn from_bcd(v: u16) -> u32 {
    let d = |s: u16| u32::from((v >> s) & 0xf);
    (d(12) * 1000 + d(8) * 100 + d(4) * 10 + d(0)) % 10_000
}

/// A number below 10000 as four BCD digits.
fn to_bcd(v: u32) -> u16 {
    let v = v % 10_000;
    ((v / 1000) << 12 | (v / 100 % 10) << 8 | (v / 10 % 10) << 4 | (v % 10)) as u16
}

impl Counter {
    /// A counter programmed with `control` bits (mode in 3:1, BCD in 0) and access, counting
    /// `count` from tick `now` with the gate at `gate`: the state firmware leaves.
    pub fn running(now: u64, mode_bits: u8, access: Access, count: u16, gate: bool) -> Self {
        let mut c = Self {
            mode_bits: 0,
            access,
            bcd: false,
            cr: None,
            run: Run::Stopped { ce: 0, out: false },
            reload: None,
            gate,
            null_until: 0,
            write_lsb: None,
            read_msb: false,
            latched_count: None,
            latched_status: None,
            edges: 0,
            synced: now,
        };
        c.program(now, mode_bits, access, false);
        c.load(now, count);
        c.edges = 0;
        c
    }

    /// Mode 0-5 (6 and 7 alias 2 and 3).
    fn mode(&self) -> u8 {
        if self.mode_bits >= 6 { self.mode_bits - 4 } else { self.mode_bits }
    }

    /// CE's range: 65536 in binary, 10000 in BCD; a count of 0 stands for it.
    fn modulus(&self) -> u64 {
        if self.bcd { 10_000 } else { 65_536 }
    }

    /// Pulses counted at tick `now` in a counting state.
    fn k_at(start: u64, k0: u64, now: u64) -> u64 {
        k0.saturating_add(now.saturating_sub(start))
    }

    /// Rising edges of OUT between counted pulses `k0` (exclusive) and `k1` (inclusive).
    fn edges_between(&self, n: u32, k0: u64, k1: u64) -> u64 {
        let n = u64::from(n);
        let crossed = |at: u64| u64::from(k0 < at && at <= k1);
        match self.mode() {
            0 | 1 => crossed(n),
            2 | 3 if n >= 2 => k1 / n - k0 / n,
            4 | 5 => crossed(n + 1),
            _ => 0, // a count of 1 in modes 2 and 3 is illegal: OUT does not toggle
        }
    }

    /// Brings the edge count and any due reload up to tick `now`.
    fn sync(&mut self, now: u64) {
        if now <= self.synced {
            return;
        }
        if let Some(r) = self.reload.filter(|r| now >= r.at) {
            self.count_edges(r.at);
            self.run = Run::Counting { start: r.at, k0: r.k0, n: r.n };
            self.reload = None;
        }
        self.count_edges(now);
    }

    fn count_edges(&mut self, to: u64) {
        if let Run::Counting { start, k0, n } = self.run {
            let (a, b) = (Self::k_at(start, k0, self.synced), Self::k_at(start, k0, to));
            self.edges = self.edges.saturating_add(self.edges_between(n, a, b));
        }
        self.synced = self.synced.max(to);
    }

    /// CE at tick `now` (synced), 0..=the modulus (the modulus reads as 0).
    fn ce(&self, now: u64) -> u32 {
        let m = self.modulus();
        let wrap = |n: u32, k: u64| ((u64::from(n) + m - k % m) % m) as u32;
        match self.run {
            Run::Stopped { ce, .. } => ce,
            Run::Paused { k, n } => wrap(n, k),
            Run::Counting { start, k0, n } => {
                let k = Self::k_at(start, k0, now);
                let p = (k % u64::from(n)) as u32;
                match self.mode() {
                    2 => n - p,
                    3 => {
                        // Each half starts from n (even n) or n - 1 (odd n: the high half
                        // is one pulse longer and ends on 0), down by two per pulse.
                        let h = n.div_ceil(2);
                        let j = if p < h { p } else { p - h };
                        n - n % 2 - 2 * j
                    }
                    _ => wrap(n, k),
                }
            }
        }
    }

    /// OUT at tick `now` (synced).
    fn out(&self, now: u64) -> bool {
        let (k, n) = match self.run {
            Run::Stopped { out, .. } => return out,
            Run::Paused { k, n } => (k, u64::from(n)),
            Run::Counting { start, k0, n } => (Self::k_at(start, k0, now), u64::from(n)),
        };
        match self.mode() {
            0 | 1 => k >= n,
            2 => k % n != n - 1,
            3 => k % n < n.div_ceil(2),
            _ => k != n,
        }
    }

    /// Runs `change` at tick `now`, counting the rising edge of OUT it causes, if any.
    fn transition(&mut self, now: u64, change: impl FnOnce(&mut Self)) {
        self.sync(now);
        let before = self.out(now);
        change(self);
        if !before && self.out(now) {
            self.edges = self.edges.saturating_add(1);
        }
    }

    /// A control word for this counter (RW not 00) at tick `now`: OUT to its mode's initial
    /// level, counting stopped until a count is written.
    pub fn program(&mut self, now: u64, mode_bits: u8, access: Access, bcd: bool) {
        self.transition(now, |c| {
            let ce = c.ce(now);
            c.mode_bits = mode_bits & 7;
            c.access = access;
            c.bcd = bcd;
            c.cr = None;
            c.reload = None;
            c.write_lsb = None;
            c.read_msb = false;
            c.latched_count = None;
            c.latched_status = None;
            c.null_until = u64::MAX;
            c.run = Run::Stopped { ce, out: c.mode() != 0 };
        });
    }

    /// A guest write to the counter's port at tick `now`.
    pub fn write(&mut self, now: u64, byte: u8) {
        match self.access {
            Access::Lsb => self.load(now, u16::from(byte)),
            Access::Msb => self.load(now, u16::from(byte) << 8),
            Access::LsbMsb => match self.write_lsb.take() {
                Some(lsb) => self.load(now, u16::from(lsb) | u16::from(byte) << 8),
                None => {
                    self.write_lsb = Some(byte);
                    if self.mode() == 0 {
                        // Mode 0: the first byte stops counting and sets OUT low at once.
                        self.transition(now, |c| {
                            c.reload = None;
                            c.run = Run::Stopped { ce: c.ce(now), out: false };
                        });
                    }
                }
            },
        }
    }

    /// A whole initial count written at tick `now`.
    fn load(&mut self, now: u64, raw: u16) {
        let v = if self.bcd { from_bcd(raw) } else { u32::from(raw) };
        let n = if v == 0 { self.modulus() as u32 } else { v };
        self.cr = Some(n);
        self.transition(now, |c| {
            let next = now.saturating_add(1);
            match (c.mode(), c.run) {
                (0 | 4, _) => {
                    c.reload = None;
                    c.run = if c.gate {
                        Run::Counting { start: next, k0: 0, n }
                    } else {
                        Run::Paused { k: 0, n }
                    };
                    c.null_until = next;
                }
                (2 | 3, Run::Counting { start, k0, n: old }) if now >= start => {
                    // The current cycle (mode 2) or half-cycle (mode 3) runs out first.
                    let k = Self::k_at(start, k0, now);
                    let p = k % u64::from(old);
                    let h = u64::from(old.div_ceil(2));
                    let (left, k0) = match c.mode() {
                        3 if p < h => (h - p, u64::from(n.div_ceil(2))),
                        _ => (u64::from(old) - p, 0),
                    };
                    let at = now.saturating_add(left);
                    c.reload = Some(Reload { at, k0, n });
                    c.null_until = at;
                }
                (2 | 3, _) => {
                    c.reload = None;
                    c.run = if c.gate {
                        Run::Counting { start: next, k0: 0, n }
                    } else {
                        Run::Stopped { ce: n, out: true }
                    };
                    c.null_until = next;
                }
                // Modes 1 and 5: loaded by the next trigger.
                _ => c.null_until = u64::MAX,
            }
        });
    }

    /// The gate input at tick `now`.
    pub fn set_gate(&mut self, now: u64, high: bool) {
        if high == self.gate {
            return;
        }
        self.transition(now, |c| {
            c.gate = high;
            let next = now.saturating_add(1);
            match (c.mode(), high, c.run) {
                (0 | 4, false, Run::Counting { start, k0, n }) => {
                    c.run = Run::Paused { k: Self::k_at(start, k0, now), n };
                }
                (0 | 4, true, Run::Paused { k, n }) => {
                    c.run = Run::Counting { start: now, k0: k, n };
                }
                (2 | 3, false, _) => {
                    c.reload = None;
                    if let Run::Counting { .. } = c.run {
                        c.run = Run::Stopped { ce: c.ce(now), out: true };
                    }
                }
                (1 | 2 | 3 | 5, true, _) => {
                    if let Some(n) = c.cr {
                        c.reload = None;
                        c.run = Run::Counting { start: next, k0: 0, n };
                        c.null_until = c.null_until.min(next);
                    }
                }
                _ => {}
            }
        });
    }

    /// The counter latch command at tick `now` (ignored while a latched count is unread).
    pub fn latch_count(&mut self, now: u64) {
        self.sync(now);
        if self.latched_count.is_none() {
            self.latched_count = Some(self.encode(self.ce(now)));
        }
    }

    /// The read-back command's status latch at tick `now` (ignored while one is unread).
    pub fn latch_status(&mut self, now: u64) {
        self.sync(now);
        if self.latched_status.is_none() {
            self.latched_status = Some(self.status(now));
        }
    }

    /// The status byte: OUT, NULL COUNT, RW1:RW0, M2:M0, BCD.
    fn status(&self, now: u64) -> u8 {
        u8::from(self.out(now)) << 7
            | u8::from(now < self.null_until) << 6
            | (self.access as u8) << 4
            | self.mode_bits << 1
            | u8::from(self.bcd)
    }

    fn encode(&self, ce: u32) -> u16 {
        if self.bcd { to_bcd(ce) } else { ce as u16 }
    }

    /// A guest read of the counter's port at tick `now`: a latched status, else a latched
    /// count, else CE as it is now, one byte at a time as the access mode says.
    pub fn read(&mut self, now: u64) -> u8 {
        self.sync(now);
        if let Some(s) = self.latched_status.take() {
            return s;
        }
        let v = self.latched_count.unwrap_or_else(|| self.encode(self.ce(now)));
        let (byte, done) = match self.access {
            Access::Lsb => (v as u8, true),
            Access::Msb => ((v >> 8) as u8, true),
            Access::LsbMsb => {
                self.read_msb = !self.read_msb;
                if self.read_msb { (v as u8, false) } else { ((v >> 8) as u8, true) }
            }
        };
        if done {
            self.latched_count = None;
        }
        byte
    }

    /// OUT at tick `now`.
    pub fn output(&mut self, now: u64) -> bool {
        self.sync(now);
        self.out(now)
    }

    /// Rising edges of OUT up to tick `now` since the last call.
    pub fn take_edges(&mut self, now: u64) -> u64 {
        self.sync(now);
        core::mem::take(&mut self.edges)
    }

    /// The tick of OUT's next rising edge after `now`, if counting brings one.
    pub fn next_edge(&self, now: u64) -> Option<u64> {
        let mut c = *self;
        c.sync(now);
        let Run::Counting { start, k0, n } = c.run else { return None };
        let first = c.next_edge_of(start, k0, n, now)?;
        match c.reload {
            Some(r) if r.at < first => c.next_edge_of(r.at, r.k0, r.n, r.at),
            _ => Some(first),
        }
    }

    /// The next rising edge after tick `now` of a segment counting `n` from (`start`, `k0`).
    fn next_edge_of(&self, start: u64, k0: u64, n: u32, now: u64) -> Option<u64> {
        let k = Self::k_at(start, k0, now);
        let n = u64::from(n);
        let target = match self.mode() {
            0 | 1 => (k < n).then_some(n)?,
            4 | 5 => (k < n + 1).then_some(n + 1)?,
            2 | 3 if n >= 2 => (k / n + 1).checked_mul(n)?,
            _ => return None,
        };
        Some(now.max(start).saturating_add(target - k))
    }
}

#[cfg(test)]
#[path = "pit_counter_tests.rs"]
mod tests;
