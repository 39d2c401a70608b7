//! The ACPI fixed-hardware power-management registers a partition's FADT points at (ACPI 6.5
//! §4.8 "ACPI hardware model", fixed hardware registers), in one I/O block of [`PORTS`] ports:
//!
//! | offset | register | |
//! |---|---|---|
//! | 0 | PM1a_STS (16 bits) | status bits, write 1 to clear (§4.8.4.1.1); none is ever set here |
//! | 2 | PM1a_EN (16 bits) | enable bits, kept as written (§4.8.4.1.2) |
//! | 4 | PM1a_CNT (16 bits) | SCI_EN reads 1 (the FADT's SMI_CMD is 0: always in ACPI mode, §4.8.4.2.1); SLP_TYP and SLP_EN (§4.8.4.2.1, §7.4.2) |
//! | 8 | PM_TMR (32 bits) | the power-management timer, 3.579545 MHz, read-only (§4.8.4.3) |
//!
//! Writing SLP_EN with the sleeping type of the DSDT's `\_S5` object ([`S5_SLP_TYP`]) is the
//! soft-off request: the partition powers off ([`AcpiPm::poweroff_requested`]). Other sleeping
//! states do not exist in the DSDT, so an OS does not ask for them; a request for one is
//! ignored, as a chipset ignores an undefined SLP_TYP.

use super::clock::{Clock, scale};
use super::shared::{read_bytes, write_bytes};
use crate::vmm::bus::Device;
use alloc::rc::Rc;

/// Ports the block spans.
pub const PORTS: u64 = 12;
/// Offsets of the registers in the block.
pub const PM1_STS: u64 = 0;
pub const PM1_EN: u64 = 2;
pub const PM1_CNT: u64 = 4;
pub const PM_TMR: u64 = 8;
/// The timer's rate, Hz (ACPI §4.8.4.3).
pub const PM_TIMER_HZ: u64 = 3_579_545;
/// SLP_TYP for S5 (soft off), as the DSDT's `\_S5` package gives it.
pub const S5_SLP_TYP: u16 = 5;

/// PM1_CNT bits.
const SCI_EN: u16 = 1 << 0;
const SLP_TYP_SHIFT: u16 = 10;
const SLP_TYP_MASK: u16 = 0b111 << SLP_TYP_SHIFT;
const SLP_EN: u16 = 1 << 13;
/// PM1_CNT bits that keep what is written (BM_RLD; SLP_TYP): GBL_RLS and SLP_EN are
/// write-only and read 0, SCI_EN is fixed at 1.
const CNT_KEPT: u16 = (1 << 1) | SLP_TYP_MASK;

/// The register block.
pub struct AcpiPm {
    clock: Rc<dyn Clock>,
    sts: u16,
    en: u16,
    cnt: u16,
    /// Set by a soft-off request, taken by [`AcpiPm::poweroff_requested`].
    poweroff: bool,
}

impl AcpiPm {
    /// A block in its power-on state, the timer counting from the clock's zero.
    pub fn new(clock: Rc<dyn Clock>) -> Self {
        Self { clock, sts: 0, en: 0, cnt: SCI_EN, poweroff: false }
    }

    /// True once after the guest asked for soft-off (S5).
    pub fn poweroff_requested(&mut self) -> bool {
        core::mem::take(&mut self.poweroff)
    }

    /// The timer's 32-bit value now (TMR_VAL_EXT: the FADT says 32 bits).
    fn timer(&self) -> u32 {
        scale(self.clock.now(), PM_TIMER_HZ, self.clock.hz()) as u32
    }

    fn write_cnt(&mut self, v: u16) {
        self.cnt = SCI_EN | (v & CNT_KEPT);
        if v & SLP_EN != 0 && (v & SLP_TYP_MASK) >> SLP_TYP_SHIFT == S5_SLP_TYP {
            self.poweroff = true;
        }
    }

    fn read_port(&self, port: u64, timer: u32) -> u8 {
        let half = |v: u16| (v >> (8 * (port % 2))) as u8;
        match port {
            0..=1 => half(self.sts),
            2..=3 => half(self.en),
            4..=5 => half(self.cnt),
            8..=11 => (timer >> (8 * (port - 8))) as u8,
            _ => 0xff,
        }
    }

    fn write_port(&mut self, port: u64, b: u8) {
        let shift = 8 * (port % 2);
        let byte = |old: u16| (old & !(0xff << shift)) | (u16::from(b) << shift);
        match port {
            // Write 1 to clear.
            0..=1 => self.sts &= !(u16::from(b) << shift),
            2..=3 => self.en = byte(self.en),
            // SLP_TYP and SLP_EN are both in the high byte: the request takes effect with it
            // (a 16-bit OUT writes the low byte first).
            4..=5 => self.write_cnt(byte(self.cnt)),
            _ => {}
        }
    }
}

impl Device for AcpiPm {
    fn name(&self) -> &'static str {
        "acpi-pm"
    }
    fn read(&mut self, offset: u64, size: u8) -> u64 {
        // One timer reading per access, so that a 32-bit read is never torn.
        let timer = self.timer();
        read_bytes(offset, size, PORTS, |p| self.read_port(p, timer))
    }
    fn write(&mut self, offset: u64, size: u8, value: u64) {
        write_bytes(offset, size, PORTS, value, |p, b| self.write_port(p, b));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::clock::ManualClock;

    fn pm() -> (Rc<ManualClock>, AcpiPm) {
        let clock = Rc::new(ManualClock::new(1_000_000_000));
        (clock.clone(), AcpiPm::new(clock))
    }

    #[test]
    fn s5_with_slp_en_powers_off_and_nothing_else_does() {
        let (_, mut pm) = pm();
        assert_eq!(pm.read(PM1_CNT, 2) & 1, 1, "SCI_EN: always in ACPI mode");
        // SLP_TYP = 5 without SLP_EN: kept, no request.
        pm.write(PM1_CNT, 2, u64::from(S5_SLP_TYP << 10));
        assert!(!pm.poweroff_requested());
        assert_eq!(pm.read(PM1_CNT, 2), u64::from(S5_SLP_TYP << 10 | 1));
        // Another sleeping type with SLP_EN: ignored.
        pm.write(PM1_CNT, 2, (1 << 13) | (3 << 10));
        assert!(!pm.poweroff_requested());
        // S5 with SLP_EN, as Linux's acpi_hw_legacy_sleep writes it: once.
        pm.write(PM1_CNT, 2, u64::from(1 << 13 | S5_SLP_TYP << 10 | 1));
        assert!(pm.poweroff_requested());
        assert!(!pm.poweroff_requested(), "reported once");
        assert_eq!(pm.read(PM1_CNT, 2) & u64::from(SLP_EN), 0, "SLP_EN reads 0");
        // Byte-wise: the high byte carries the request.
        pm.write(PM1_CNT, 1, 1);
        pm.write(PM1_CNT + 1, 1, u64::from((1 << 13 | S5_SLP_TYP << 10) >> 8));
        assert!(pm.poweroff_requested());
    }

    #[test]
    fn status_is_write_one_to_clear_and_enable_is_kept() {
        let (_, mut pm) = pm();
        pm.sts = 0x8001;
        pm.write(PM1_STS, 2, 0x0001);
        assert_eq!(pm.read(PM1_STS, 2), 0x8000);
        pm.write(PM1_STS, 2, 0);
        assert_eq!(pm.read(PM1_STS, 2), 0x8000, "writing 0 changes nothing");
        pm.write(PM1_EN, 2, 0x0120);
        assert_eq!(pm.read(PM1_EN, 2), 0x0120);
        assert_eq!(pm.read(PM1_EN + 1, 1), 0x01);
        assert_eq!(pm.read(6, 2), 0xffff, "no register there");
    }

    #[test]
    fn the_timer_counts_at_3_579545_mhz_and_wraps_at_32_bits() {
        let (clock, mut pm) = pm();
        assert_eq!(pm.read(PM_TMR, 4), 0);
        clock.advance(1_000_000_000); // one second at 1 GHz
        assert_eq!(pm.read(PM_TMR, 4), PM_TIMER_HZ);
        assert_eq!(pm.read(PM_TMR + 2, 2), PM_TIMER_HZ >> 16, "the upper half alone");
        // 2^32 timer ticks later it has wrapped to the same value.
        clock.advance(scale(1 << 32, 1_000_000_000, PM_TIMER_HZ) + 1);
        let v = pm.read(PM_TMR, 4);
        assert!(v.abs_diff(PM_TIMER_HZ) <= 1, "{v}");
        pm.write(PM_TMR, 4, 0);
        assert!(pm.read(PM_TMR, 4).abs_diff(PM_TIMER_HZ) <= 1, "read-only");
    }
}
