//! The x2APIC MSR interface of the local APIC (SDM Vol. 3A §11.12.1.2, Table 11-6): MSR
//! 0x800 + n is the xAPIC register at offset n << 4, in x2APIC mode only. The CPU refuses
//! with #GP (§11.12.1.2, §11.12.1.3):
//! - any x2APIC MSR while the APIC is in xAPIC mode or disabled;
//! - an MSR of the range with no register behind it: APR, RRD, DFR, the ICR's high half
//!   (0x831: the ICR is the one 64-bit MSR 0x830), the holes, and 0x840-0x8FF;
//! - RDMSR of a write-only register (EOI, SELF IPI), WRMSR of a read-only one (ID, version,
//!   PPR, LDR, ISR, TMR, IRR, current count);
//! - WRMSR setting a reserved bit: bits 63:32 of every register but the ICR, and each
//!   register's reserved bits ([`writable`]); the EOI and ESR take 0 only.

use super::{GeneralProtection, Ipi, Lapic, reg};

/// The x2APIC registers' MSR range (§11.12.1.2).
const FIRST: u32 = 0x800;
/// One past the last register (SELF IPI, 0x83F).
const END: u32 = 0x840;
/// ICR bits reserved in x2APIC mode (Figure 11-28): 12 (no delivery status), 13, 17:16, 31:20.
const ICR_RESERVED: u64 = 0xfff3_3000;

/// The bits WRMSR may set in the register at `offset` (the rest are reserved: #GP), or `None`
/// when it cannot be written. Read-only bits that read-modify-write could carry (delivery
/// status, remote IRR) are accepted and ignored.
fn writable(offset: u32) -> Option<u32> {
    Some(match offset {
        reg::TPR => 0xff,
        reg::EOI | reg::ESR => 0,
        // Vector, APIC enable, focus checking; no EOI-broadcast suppression (bit 12).
        reg::SVR => 0x3ff,
        // Vector, delivery mode, delivery status, mask.
        reg::LVT_CMCI | reg::LVT_THERMAL | reg::LVT_PERF => 0x0001_17ff,
        // Vector, delivery status, mask, timer mode.
        reg::LVT_TIMER => 0x0007_10ff,
        // Vector, delivery mode, status, polarity, remote IRR, trigger mode, mask.
        reg::LVT_LINT0 | reg::LVT_LINT1 => 0x0001_f7ff,
        // Vector, delivery status, mask.
        reg::LVT_ERROR => 0x0001_10ff,
        reg::TIMER_INITIAL => u32::MAX,
        reg::TIMER_DIVIDE => 0b1011,
        reg::SELF_IPI => 0xff,
        _ => return None,
    })
}

/// True when RDMSR reads the register at `offset`.
fn readable(offset: u32) -> bool {
    let register = matches!(
        offset,
        reg::ID
            | reg::VERSION
            | reg::TPR
            | reg::PPR
            | reg::LDR
            | reg::SVR
            | reg::ISR..=0x270
            | reg::ESR
            | reg::LVT_CMCI
            | reg::ICR_LOW
            | reg::LVT_TIMER..=reg::LVT_ERROR
            | reg::TIMER_INITIAL
            | reg::TIMER_CURRENT
            | reg::TIMER_DIVIDE
    );
    register && offset.is_multiple_of(16)
}

/// The xAPIC offset of x2APIC MSR `msr`, if it is in the register range.
fn offset(msr: u32) -> Option<u32> {
    (FIRST..END).contains(&msr).then(|| (msr - FIRST) << 4)
}

impl Lapic {
    /// RDMSR of an x2APIC register (MSR 0x800 + offset / 16, §11.12.1.2); `None`: #GP (not in
    /// x2APIC mode, a write-only or absent register).
    pub fn read_msr(&mut self, msr: u32) -> Option<u64> {
        let offset = offset(msr).filter(|o| self.x2apic && readable(*o))?;
        if offset == reg::ICR_LOW {
            return Some(u64::from(self.icr_high) << 32 | u64::from(self.icr_low));
        }
        Some(u64::from(self.read(offset)))
    }

    /// WRMSR of an x2APIC register; `Err`: #GP (not in x2APIC mode, a read-only or absent
    /// register, a reserved bit set; see the module text).
    pub fn write_msr(&mut self, msr: u32, v: u64) -> Result<Option<Ipi>, GeneralProtection> {
        let offset = offset(msr).filter(|_| self.x2apic).ok_or(GeneralProtection)?;
        // The two writes of every interrupt and IPI first, straight to their work.
        if offset == reg::EOI {
            if v != 0 {
                return Err(GeneralProtection);
            }
            self.eoi();
            return Ok(None);
        }
        if offset == reg::ICR_LOW {
            if v & ICR_RESERVED != 0 {
                return Err(GeneralProtection);
            }
            self.icr_high = (v >> 32) as u32;
            return Ok(self.write(offset, v as u32));
        }
        let bits = writable(offset).ok_or(GeneralProtection)?;
        if v & !u64::from(bits) != 0 {
            return Err(GeneralProtection);
        }
        Ok(self.write(offset, v as u32))
    }
}
