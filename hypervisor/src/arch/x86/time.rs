//! The host's clocks, read once at boot: the TSC frequency (measured against the PIT) and the
//! wall-clock time (from the RTC). Partitions' virtual PIT and RTC run on these.

use super::instr::{inb, outb, rdtsc};
use crate::devices::civil::{civil_from_days, days_from_civil};

/// The PIT's input clock (8254 datasheet; the PC's 14.31818 MHz / 12).
pub const PIT_HZ: u64 = 1_193_182;
/// PIT ticks a measurement spans at least: 1 ms, so one PIT tick (838 ns) is 0.08 % of it.
const MIN_PIT_TICKS: u64 = 1193;

/// A TSC-rate measurement against PIT channel 2 (and, at its end, the host APIC timer's rate
/// against the TSC since [`super::lapic::init`]), which the hypervisor owns during boot
/// (partitions get a virtual PIT; the management partition's pass-through never includes it).
/// It starts early and is read late, so the boot's own work is the waiting: channel 2 counts
/// down from 0xffff in mode 0 (interrupt on terminal count) with its gate on (port 0x61 bit 0)
/// and the speaker off (bit 1); its OUT (port 0x61 bit 5) goes high at zero, 55 ms later.
#[derive(Debug)]
pub struct TscCalibration {
    tsc: u64,
    port61: u8,
}

impl TscCalibration {
    /// Starts channel 2 counting.
    pub fn start() -> Self {
        // SAFETY: ports 0x42, 0x43 and 0x61 are the PIT's channel 2 and the system control
        // port; nothing else in the hypervisor uses them, and the speaker stays off.
        unsafe {
            let port61 = inb(0x61);
            outb(0x61, (port61 & !0x03) | 0x01);
            // Channel 2, lobyte/hibyte, mode 0, binary (8254 datasheet, control word format).
            outb(0x43, 0xb0);
            outb(0x42, 0xff);
            outb(0x42, 0xff);
            Self { tsc: rdtsc(), port61 }
        }
    }

    /// PIT ticks since [`TscCalibration::start`], or `None` once the count has passed zero.
    fn elapsed(&self) -> Option<u64> {
        // SAFETY: as in `start`: the hypervisor's own PIT channel 2.
        unsafe {
            // Counter latch command for channel 2, then the latched count, low byte first.
            outb(0x43, 0x80);
            let count = u16::from_le_bytes([inb(0x42), inb(0x42)]);
            if inb(0x61) & 0x20 != 0 {
                return None;
            }
            Some(0xffff - u64::from(count))
        }
    }

    /// The TSC's rate in Hz: from the start if the count has not run out yet (waiting until
    /// at least 1 ms has passed), else from a fresh 1 ms measurement. `None` without a PIT.
    pub fn finish(self) -> Option<u64> {
        let mut spins: u64 = 0;
        let result = loop {
            match self.elapsed() {
                Some(t) if t >= MIN_PIT_TICKS => break hz_from(rdtsc() - self.tsc, t),
                Some(_) if spins < 100_000_000 => spins += 1,
                Some(_) => break None,
                // Wrapped: the boot took longer than 55 ms (a slow emulator). Again, briefly
                // (that measurement calibrates the APIC timer too).
                None => {
                    let again = Self::start().finish();
                    // SAFETY: restores the system control port's gate and speaker bits.
                    unsafe { outb(0x61, self.port61) };
                    return again;
                }
            }
        };
        // SAFETY: restores the system control port's gate and speaker bits.
        unsafe { outb(0x61, self.port61) };
        super::lapic::calibrate();
        result
    }
}

/// TSC ticks over PIT ticks, as Hz.
fn hz_from(tsc_ticks: u64, pit_ticks: u64) -> Option<u64> {
    if tsc_ticks == 0 || pit_ticks == 0 {
        return None;
    }
    Some((u128::from(tsc_ticks) * u128::from(PIT_HZ) / u128::from(pit_ticks)) as u64)
}

/// The RTC's date and time as Unix seconds (UTC: PC firmware and emulators keep the RTC in
/// UTC on the machines this runs on), read as the MC146818 datasheet says: wait for the
/// update-in-progress bit (register A bit 7) to clear, read, and read again until two reads
/// agree. `None` when the values are not a date.
pub fn read_rtc() -> Option<u64> {
    let read = || {
        // SAFETY: ports 0x70/0x71 are the CMOS index and data ports; the hypervisor owns them
        // (partitions get a virtual RTC) and keeps NMIs enabled (index bit 7 clear).
        let reg = |r: u8| unsafe {
            outb(0x70, r);
            inb(0x71)
        };
        let mut spins = 0;
        while reg(0x0a) & 0x80 != 0 && spins < 1_000_000 {
            spins += 1;
        }
        let b = reg(0x0b);
        let raw = [reg(0x00), reg(0x02), reg(0x04), reg(0x07), reg(0x08), reg(0x09), reg(0x32)];
        (b, raw)
    };
    let mut last = read();
    for _ in 0..4 {
        let now = read();
        if now == last {
            break;
        }
        last = now;
    }
    let (b, [s, m, h, day, mon, yr, century]) = last;
    rtc_to_unix(b, s, m, h, day, mon, yr, century)
}

/// Converts raw RTC registers (register B's format bits: bit 2 binary, bit 1 24-hour) to Unix
/// seconds. A century register of 0 or garbage means 20xx.
#[allow(clippy::too_many_arguments)]
fn rtc_to_unix(b: u8, s: u8, m: u8, h: u8, day: u8, mon: u8, yr: u8, century: u8) -> Option<u64> {
    let binary = b & 0x04 != 0;
    let conv = |v: u8| -> Option<u64> {
        if binary {
            Some(u64::from(v))
        } else if v & 0x0f <= 9 && v >> 4 <= 9 {
            Some(u64::from((v >> 4) * 10 + (v & 0x0f)))
        } else {
            None
        }
    };
    let pm = b & 0x02 == 0 && h & 0x80 != 0;
    let mut hour = conv(h & 0x7f)?;
    if b & 0x02 == 0 {
        // 12-hour mode: 12 AM is 0, 12 PM is 12.
        hour = hour % 12 + if pm { 12 } else { 0 };
    }
    let year = match conv(century) {
        Some(c @ 19..=21) => c * 100 + conv(yr)?,
        _ => 2000 + conv(yr)?,
    };
    let (sec, min, day, mon) = (conv(s)?, conv(m)?, conv(day)?, conv(mon)?);
    if sec > 59 || min > 59 || hour > 23 || !(1..=31).contains(&day) || !(1..=12).contains(&mon) {
        return None;
    }
    let days = u64::try_from(days_from_civil(year as i64, mon as u8, day as u8)).ok()?;
    Some(days * 86_400 + hour * 3600 + min * 60 + sec)
}

/// Unix seconds as `YYYY-MM-DD hh:mm:ss UTC`.
pub fn format_utc(unix: u64) -> alloc::string::String {
    let (y, mo, d) = civil_from_days((unix / 86_400) as i64);
    let s = unix % 86_400;
    alloc::format!("{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60)
}

/// The time of day now, from the wall clock read at `at_tsc` and the TSC's rate.
pub fn unix_now(wall: u64, at_tsc: u64, tsc_hz: u64, now_tsc: u64) -> u64 {
    wall + now_tsc.saturating_sub(at_tsc) / tsc_hz.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_dates() {
        assert_eq!(format_utc(1_796_393_373), "2026-12-04 14:09:33 UTC");
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
    }

    #[test]
    fn rtc_formats() {
        // 2026-12-04 14:09:33 UTC = 1796393373.
        let want = Some(1_796_393_373);
        // BCD, 24-hour, century register set.
        assert_eq!(rtc_to_unix(0x02, 0x33, 0x09, 0x14, 0x04, 0x12, 0x26, 0x20), want);
        // Binary, 24-hour, no century register.
        assert_eq!(rtc_to_unix(0x06, 33, 9, 14, 4, 12, 26, 0), want);
        // BCD, 12-hour: 2 PM.
        assert_eq!(rtc_to_unix(0x00, 0x33, 0x09, 0x82, 0x04, 0x12, 0x26, 0x20), want);
        // 12 AM is midnight.
        assert_eq!(rtc_to_unix(0x00, 0, 0, 0x12, 0x01, 0x01, 0x70, 0x19), Some(0));
        // Not BCD, not a date.
        assert_eq!(rtc_to_unix(0x02, 0x3a, 0, 0, 1, 1, 0x26, 0x20), None);
        assert_eq!(rtc_to_unix(0x02, 0, 0, 0, 0x32, 1, 0x26, 0x20), None);
    }

    #[test]
    fn tsc_rate() {
        assert_eq!(hz_from(5_000_000, 5966), Some(999_984_914));
        assert_eq!(hz_from(0, 5966), None);
        assert_eq!(unix_now(100, 1000, 1_000, 4500), 103);
        assert_eq!(unix_now(100, 1000, 1_000, 10), 100);
    }
}
