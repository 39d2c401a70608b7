//! The PC's real-time clock and CMOS RAM, a Motorola MC146818A, at ports 0x70 (index; bit 7
//! masks NMI) and 0x71 (data).
//!
//! Registers from the MC146818A datasheet: the time, calendar and alarm bytes 0x00-0x09
//! (BCD or binary, 12- or 24-hour, table "Time, Calendar and Alarm Data Modes"), registers
//! A-D ("Register A" UIP and divider/rate bits, "Register B" SET, PIE/AIE/UIE, DM, 24/12,
//! "Register C" IRQF/PF/AF/UF, "Register D" VRT) and the update cycle ("Update Cycle": UIP
//! rises 244 µs before the update). The IBM PC/AT's use of the remaining bytes: century at
//! 0x32, memory sizes at 0x15-0x18, 0x30-0x31, 0x34-0x35, checksum of 0x10-0x2D at 0x2E.
//!
//! Time is kept as Unix seconds at a TSC value and advanced with the [`Clock`]; the date
//! and time registers are computed from it on each read, so the update is instantaneous at
//! each second boundary and UIP is set for the 244 µs before it. While SET (register B bit
//! 7) is set or the divider is held in reset (register A bits 6:4 = 11x), the registers
//! stop and hold raw bytes the guest may rewrite; when counting resumes those bytes, read
//! in the current data mode, become the new time (the next update a second later, or half
//! a second after a divider reset, as the datasheet says). A time byte written while the
//! clock runs takes effect at once, keeping the phase within the second. Deviations: the
//! day-of-week register is computed from the date while the clock runs (writes to it
//! are kept only while stopped); a change of data mode (DM, 24/12) takes effect on the
//! values at once instead of leaving the stored bytes as they were; a divider other than
//! 010 or reset still counts real time; daylight saving (register B bit 0) is kept but not
//! applied, and there is no square-wave output.
//!
//! Interrupts (IRQ 8) are optional on a PC and Linux reads the clock by polling; the flags
//! in register C are still kept (UF each update, AF on an alarm match at an update, PF at
//! the periodic rate), and [`Rtc::irq8_pending`] / [`Rtc::next_irq8_deadline`] let a
//! caller deliver IRQ 8 if it wants.
//!
//! Port 0x70 is write-only on a PC: reads return 0xFF.

use super::civil::Civil;
use super::clock::{Clock, scale};
use super::shared::{read_bytes, write_bytes};
use crate::vmm::bus::Device;
use alloc::rc::Rc;

/// Register indices.
pub mod reg {
    pub const SECONDS: u8 = 0x00;
    pub const SECONDS_ALARM: u8 = 0x01;
    pub const MINUTES: u8 = 0x02;
    pub const MINUTES_ALARM: u8 = 0x03;
    pub const HOURS: u8 = 0x04;
    pub const HOURS_ALARM: u8 = 0x05;
    pub const WEEKDAY: u8 = 0x06;
    pub const DAY: u8 = 0x07;
    pub const MONTH: u8 = 0x08;
    pub const YEAR: u8 = 0x09;
    pub const A: u8 = 0x0a;
    pub const B: u8 = 0x0b;
    pub const C: u8 = 0x0c;
    pub const D: u8 = 0x0d;
    pub const CENTURY: u8 = 0x32;
}

/// Register A: update in progress.
pub const A_UIP: u8 = 0x80;
/// Register B bits.
pub const B_SET: u8 = 0x80;
pub const B_PIE: u8 = 0x40;
pub const B_AIE: u8 = 0x20;
pub const B_UIE: u8 = 0x10;
pub const B_DM_BINARY: u8 = 0x04;
pub const B_24H: u8 = 0x02;
/// Register C bits.
pub const C_IRQF: u8 = 0x80;
pub const C_PF: u8 = 0x40;
pub const C_AF: u8 = 0x20;
pub const C_UF: u8 = 0x10;
/// Register D: valid RAM and time.
pub const D_VRT: u8 = 0x80;

/// The time registers, in the order `snapshot` returns them.
const TIME_REGS: [u8; 8] = [
    reg::SECONDS,
    reg::MINUTES,
    reg::HOURS,
    reg::WEEKDAY,
    reg::DAY,
    reg::MONTH,
    reg::YEAR,
    reg::CENTURY,
];

/// UIP leads the update by 244 µs.
const UIP_NS: u64 = 244_000;
/// At most this many past updates are checked for an alarm match (one day covers them all).
const ALARM_SCAN: u64 = 86_400;
/// The divider's input: 32.768 kHz.
const TIME_BASE_HZ: u64 = 32_768;

/// An MC146818A and its CMOS RAM. Attach at 0x70..0x72.
pub struct Rtc {
    clock: Rc<dyn Clock>,
    index: u8,
    nmi_masked: bool,
    /// CMOS RAM; the alarm bytes live here too. 0x00-0x0D other than the alarms and the
    /// century byte are computed instead.
    cmos: [u8; 128],
    /// Register A bits 6:0.
    a: u8,
    b: u8,
    /// Unix seconds at TSC `base_tsc`: a second boundary.
    base_secs: i64,
    base_tsc: u64,
    /// The time registers' raw bytes while counting is stopped (order of `TIME_REGS`).
    stopped: Option<[u8; 8]>,
    /// Register C's flags not yet read.
    flags: u8,
    /// The TSC up to which updates and periodic ticks are accounted in `flags`.
    scanned: u64,
}

impl Rtc {
    /// An RTC reading `epoch_seconds` (Unix time) at TSC `start_tsc`, in the state PC
    /// firmware leaves: register A 0x26, B 0x02 (BCD, 24-hour), 640 KiB base memory.
    pub fn new(clock: Rc<dyn Clock>, epoch_seconds: u64, start_tsc: u64) -> Self {
        let mut rtc = Self {
            clock,
            index: 0,
            nmi_masked: false,
            cmos: [0; 128],
            a: 0x26,
            b: B_24H,
            base_secs: i64::try_from(epoch_seconds).unwrap_or(i64::MAX),
            base_tsc: start_tsc,
            stopped: None,
            flags: 0,
            scanned: start_tsc,
        };
        rtc.cmos[0x14] = 0x02; // equipment: maths coprocessor, EGA/VGA, no floppy
        rtc.set_memory_sizes(640, 0, 0);
        rtc
    }

    /// Whether the guest's last index write had bit 7 (NMI disabled) set.
    pub fn nmi_masked(&self) -> bool {
        self.nmi_masked
    }

    /// Writes the memory size bytes (each saturating at 0xFFFF): base memory in KiB
    /// (0x15/0x16), memory from 1 MiB to 16 MiB in KiB (0x17/0x18 and 0x30/0x31) and memory
    /// above 16 MiB in KiB (0x34/0x35, stored in 64 KiB units), then the checksum.
    pub fn set_memory_sizes(&mut self, base_kb: u64, ext_kb: u64, above_16m_kb: u64) {
        let mut put = |at: usize, v: u64| {
            let v = v.min(0xffff) as u16;
            self.cmos[at] = v as u8;
            self.cmos[at + 1] = (v >> 8) as u8;
        };
        put(0x15, base_kb);
        put(0x17, ext_kb);
        put(0x30, ext_kb);
        put(0x34, above_16m_kb / 64);
        let sum: u16 = self.cmos[0x10..=0x2d].iter().map(|&b| u16::from(b)).sum();
        self.cmos[0x2e] = (sum >> 8) as u8;
        self.cmos[0x2f] = sum as u8;
    }

    fn hz(&self) -> u64 {
        self.clock.hz().max(1)
    }

    fn halted(&self) -> bool {
        self.b & B_SET != 0 || self.divider_reset()
    }

    fn divider_reset(&self) -> bool {
        self.a & 0x60 == 0x60
    }

    /// Unix time at TSC `now` (the clock running).
    fn secs_at(&self, now: u64) -> i64 {
        let elapsed = now.saturating_sub(self.base_tsc) / self.hz();
        self.base_secs.saturating_add(i64::try_from(elapsed).unwrap_or(i64::MAX))
    }

    fn bcd(&self) -> bool {
        self.b & B_DM_BINARY == 0
    }

    fn encode(&self, v: u8) -> u8 {
        if self.bcd() { ((v / 10 % 10) << 4) | (v % 10) } else { v }
    }

    fn decode(&self, v: u8) -> u8 {
        if self.bcd() { (v >> 4) * 10 + (v & 0xf) } else { v }
    }

    fn encode_hour(&self, h: u8) -> u8 {
        if self.b & B_24H != 0 {
            return self.encode(h);
        }
        let h12 = if h.is_multiple_of(12) { 12 } else { h % 12 };
        self.encode(h12) | if h >= 12 { 0x80 } else { 0 }
    }

    fn decode_hour(&self, v: u8) -> u8 {
        if self.b & B_24H != 0 {
            return self.decode(v);
        }
        self.decode(v & 0x7f) % 12 + if v & 0x80 != 0 { 12 } else { 0 }
    }

    /// The time registers for Unix time `secs`, in the current data mode.
    fn snapshot(&self, secs: i64) -> [u8; 8] {
        let c = Civil::from_unix(secs);
        let year = c.year.rem_euclid(10_000) as u16;
        [
            self.encode(c.second),
            self.encode(c.minute),
            self.encode_hour(c.hour),
            self.encode(c.weekday() + 1),
            self.encode(c.day),
            self.encode(c.month),
            self.encode((year % 100) as u8),
            self.encode((year / 100) as u8),
        ]
    }

    /// Unix time of raw time registers read in the current data mode; fields out of range
    /// are clamped (days past a month's end carry into the next month).
    fn secs_of(&self, regs: &[u8; 8]) -> i64 {
        let [s, m, h, _, d, mo, y, cent] = *regs;
        Civil {
            year: i64::from(self.decode(cent)) * 100 + i64::from(self.decode(y)),
            month: self.decode(mo).clamp(1, 12),
            day: self.decode(d).clamp(1, 31),
            hour: self.decode_hour(h).min(23),
            minute: self.decode(m).min(59),
            second: self.decode(s).min(59),
        }
        .to_unix()
    }

    /// Brings register C's flags up to TSC `now`.
    fn refresh(&mut self, now: u64) {
        if now <= self.scanned {
            return;
        }
        let hz = self.hz();
        if !self.halted() {
            let since = |t: u64| t.saturating_sub(self.base_tsc) / hz;
            let (first, last) = (since(self.scanned) + 1, since(now));
            if first <= last {
                self.flags |= C_UF;
                let from = first.max(last.saturating_sub(ALARM_SCAN - 1));
                let base = self.base_secs;
                if (from..=last).any(|i| self.alarm_matches(base.saturating_add(i as i64))) {
                    self.flags |= C_AF;
                }
            }
        }
        if let Some(period) = self.periodic_tsc()
            && now / period > self.scanned / period
        {
            self.flags |= C_PF;
        }
        self.scanned = now;
    }

    /// Whether the update to Unix time `secs` matches the alarm (0xC0-0xFF: any value).
    fn alarm_matches(&self, secs: i64) -> bool {
        let [s, m, h, ..] = self.snapshot(secs);
        let hit = |alarm: u8, v: u8| alarm >= 0xc0 || alarm == v;
        hit(self.cmos[usize::from(reg::SECONDS_ALARM)], s)
            && hit(self.cmos[usize::from(reg::MINUTES_ALARM)], m)
            && hit(self.cmos[usize::from(reg::HOURS_ALARM)], h)
    }

    /// The periodic interrupt's period in TSC ticks (rate bits 3:0 of register A), if on.
    fn periodic_tsc(&self) -> Option<u64> {
        let rate = u32::from(self.a & 0x0f);
        if rate == 0 || self.divider_reset() {
            return None;
        }
        // Rates 1 and 2 repeat 8 and 9 with a 32.768 kHz time base.
        let rate = if rate < 3 { rate + 7 } else { rate };
        Some(scale(self.hz(), 1 << (rate - 1), TIME_BASE_HZ).max(1))
    }

    fn irqf(&self) -> bool {
        self.flags & self.b & (C_PF | C_AF | C_UF) != 0
    }

    /// Whether IRQ 8 is asserted now: an enabled flag is set and register C not yet read.
    pub fn irq8_pending(&mut self) -> bool {
        let now = self.clock.now();
        self.refresh(now);
        self.irqf()
    }

    /// The TSC at which IRQ 8 may next be asserted, while it is not (an update when update
    /// or alarm interrupts are enabled, a periodic tick when those are).
    pub fn next_irq8_deadline(&self) -> Option<u64> {
        if self.irqf() {
            return None;
        }
        let now = self.clock.now().max(self.scanned);
        let hz = self.hz();
        let update = (self.b & (B_UIE | B_AIE) != 0 && !self.halted()).then(|| {
            let n = now.saturating_sub(self.base_tsc) / hz + 1;
            self.base_tsc.saturating_add(n.saturating_mul(hz))
        });
        let periodic = self
            .periodic_tsc()
            .filter(|_| self.b & B_PIE != 0)
            .map(|p| (now / p).saturating_add(1).saturating_mul(p));
        match (update, periodic) {
            (Some(u), Some(p)) => Some(u.min(p)),
            (u, p) => u.or(p),
        }
    }

    /// Register A as read: UIP in the 244 µs before each update while the clock runs.
    fn reg_a(&self, now: u64) -> u8 {
        let hz = self.hz();
        let into = now.saturating_sub(self.base_tsc) % hz;
        let window = scale(hz, UIP_NS, 1_000_000_000).max(1);
        let uip = !self.halted() && hz - into <= window;
        self.a | if uip { A_UIP } else { 0 }
    }

    /// A guest read of the data port.
    fn read_data(&mut self, now: u64) -> u8 {
        self.refresh(now);
        let i = self.index;
        if let Some(slot) = TIME_REGS.iter().position(|&r| r == i) {
            return match self.stopped {
                Some(regs) => regs[slot],
                None => self.snapshot(self.secs_at(now))[slot],
            };
        }
        match i {
            reg::A => self.reg_a(now),
            reg::B => self.b,
            reg::C => {
                let v = self.flags | if self.irqf() { C_IRQF } else { 0 };
                self.flags = 0;
                v
            }
            reg::D => D_VRT,
            _ => self.cmos[usize::from(i & 0x7f)],
        }
    }

    /// A guest write to the data port.
    fn write_data(&mut self, now: u64, v: u8) {
        self.refresh(now);
        let i = self.index;
        if let Some(slot) = TIME_REGS.iter().position(|&r| r == i) {
            match &mut self.stopped {
                Some(regs) => regs[slot] = v,
                None => {
                    let old = self.secs_at(now);
                    let mut regs = self.snapshot(old);
                    regs[slot] = v;
                    let new = self.secs_of(&regs);
                    self.base_secs = self.base_secs.saturating_add(new.saturating_sub(old));
                }
            }
            return;
        }
        match i {
            reg::A => self.set_control(now, v & 0x7f, self.b),
            // Setting SET clears UIE.
            reg::B => self.set_control(now, self.a, if v & B_SET != 0 { v & !B_UIE } else { v }),
            reg::C | reg::D => {}
            _ => self.cmos[usize::from(i & 0x7f)] = v,
        }
    }

    /// New register A and B values: stops or restarts the clock when SET or the divider
    /// reset changes.
    fn set_control(&mut self, now: u64, a: u8, b: u8) {
        let was = self.halted();
        let was_divider_reset = self.divider_reset();
        if !was {
            let regs = self.snapshot(self.secs_at(now));
            (self.a, self.b) = (a, b);
            if self.halted() {
                self.stopped = Some(regs);
            }
            return;
        }
        (self.a, self.b) = (a, b);
        if let (false, Some(regs)) = (self.halted(), self.stopped) {
            self.base_secs = self.secs_of(&regs);
            // The first update comes half a second after a divider reset ends, a second
            // after SET is cleared.
            let phase = if was_divider_reset { self.hz() / 2 } else { 0 };
            self.base_tsc = now.saturating_sub(phase);
            self.stopped = None;
        }
    }
}

impl Device for Rtc {
    fn name(&self) -> &'static str {
        "rtc"
    }
    fn read(&mut self, offset: u64, size: u8) -> u64 {
        let now = self.clock.now();
        read_bytes(offset, size, 2, |p| if p == 0 { 0xff } else { self.read_data(now) })
    }
    fn write(&mut self, offset: u64, size: u8, value: u64) {
        let now = self.clock.now();
        write_bytes(offset, size, 2, value, |p, v| {
            if p == 0 {
                self.index = v & 0x7f;
                self.nmi_masked = v & 0x80 != 0;
            } else {
                self.write_data(now, v);
            }
        });
    }
}

#[cfg(test)]
#[path = "rtc_tests.rs"]
mod tests;
