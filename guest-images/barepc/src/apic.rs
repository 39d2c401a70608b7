//! The local APIC in xAPIC mode (SDM Vol. 3A ch. 11: IA32_APIC_BASE §11.4.4, the register
//! page §11.4.1, the LVT timer §11.5.4, the ICR §11.6.1, EOI §11.8.5) and the I/O APIC
//! (Intel 82093AA datasheet §3: IOREGSEL at +0x00, IOWIN at +0x10; ID 0x00, version 0x01,
//! redirection table 0x10 + 2n, §3.2.4).

use crate::cpu::{mmio_read, mmio_write, rdmsr, wrmsr};
use core::sync::atomic::{AtomicBool, Ordering};

const IA32_APIC_BASE: u32 = 0x1b;
const APIC_GLOBAL_ENABLE: u64 = 1 << 11;
pub const EOI: u64 = 0xb0;
const SVR: u64 = 0xf0;
const ICR_LOW: u64 = 0x300;
const ICR_HIGH: u64 = 0x310;
const LVT_TIMER: u64 = 0x320;
const TIMER_INITIAL: u64 = 0x380;
const TIMER_CURRENT: u64 = 0x390;
const TIMER_DIVIDE: u64 = 0x3e0;

static mut BASE: u64 = 0xfee0_0000;
/// Set once IA32_APIC_BASE was read: until then nothing touches the register page (a machine
/// without a local APIC has nothing there).
static FOUND: AtomicBool = AtomicBool::new(false);

/// The local APIC's base as IA32_APIC_BASE gives it, with the APIC globally enabled; an error
/// where CPUID.1:EDX.APIC (bit 9) says there is none (IA32_APIC_BASE then need not exist: a
/// #GP, which the caller's guard catches, where the CPU refuses it anyway).
pub fn base() -> Result<u64, &'static str> {
    if crate::cpu::cpuid(1).3 & (1 << 9) == 0 {
        return Err("no local APIC (CPUID.1:EDX.APIC clear)");
    }
    let v = rdmsr(IA32_APIC_BASE);
    if v & APIC_GLOBAL_ENABLE == 0 {
        // SAFETY: enabling our own local APIC; no interrupt source is unmasked yet.
        unsafe { wrmsr(IA32_APIC_BASE, v | APIC_GLOBAL_ENABLE) };
    }
    let base = v & 0xf_ffff_f000;
    if base == 0 {
        return Err("IA32_APIC_BASE gives base 0");
    }
    // SAFETY: one CPU; written here, read by `eoi` from the interrupt handlers.
    unsafe { BASE = base };
    FOUND.store(true, Ordering::SeqCst);
    Ok(base)
}

/// True once [`base`] found the local APIC.
pub fn found() -> bool {
    FOUND.load(Ordering::SeqCst)
}

pub fn read(reg: u64) -> u32 {
    // SAFETY: see `base`.
    mmio_read(unsafe { BASE } + reg)
}

pub fn write(reg: u64, v: u32) {
    // SAFETY: see `base`.
    mmio_write(unsafe { BASE } + reg, v);
}

/// Ends the interrupt in service (any value written to the EOI register), where there is a
/// local APIC.
pub fn eoi() {
    if found() {
        write(EOI, 0);
    }
}

/// Software-enables the APIC (SVR bit 8) with spurious vector 0xff.
pub fn enable() {
    write(SVR, 0x1ff);
}

/// Arms the timer one-shot at `vector`, divide by 1, `count` ticks; returns the current
/// count read right after.
pub fn one_shot(vector: u8, count: u32) -> u32 {
    write(TIMER_DIVIDE, 0b1011);
    write(LVT_TIMER, u32::from(vector));
    write(TIMER_INITIAL, count);
    read(TIMER_CURRENT)
}

/// Masks the timer's LVT entry and stops it.
pub fn stop_timer() {
    write(LVT_TIMER, 1 << 16);
    write(TIMER_INITIAL, 0);
}

/// A fixed IPI at `vector` to this CPU through the "self" shorthand.
pub fn self_ipi(vector: u8) {
    write(ICR_HIGH, 0);
    write(ICR_LOW, u32::from(vector) | (1 << 14) | (1 << 18));
}

/// An I/O APIC at a physical address.
#[derive(Clone, Copy, Debug)]
pub struct IoApic(pub u64);

impl IoApic {
    pub fn read(self, index: u32) -> u32 {
        mmio_write(self.0, index);
        mmio_read(self.0 + 0x10)
    }

    pub fn write(self, index: u32, v: u32) {
        mmio_write(self.0, index);
        mmio_write(self.0 + 0x10, v);
    }

    /// The highest redirection entry (version register bits 23:16).
    pub fn max_entry(self) -> u32 {
        (self.read(1) >> 16) & 0xff
    }

    /// Routes pin `pin` to `vector` on APIC `dest` (fixed, physical), with the MPS INTI
    /// `flags` of an ACPI interrupt source override (bits 1:0 polarity, 3:2 trigger; 0 = the
    /// bus default, ISA: active high, edge), unmasked.
    pub fn route(self, pin: u32, vector: u8, dest: u32, flags: u16) {
        let low_active = flags & 3 == 3;
        let level = (flags >> 2) & 3 == 3;
        let low = u32::from(vector) | (u32::from(low_active) << 13) | (u32::from(level) << 15);
        self.write(0x10 + 2 * pin + 1, dest << 24);
        self.write(0x10 + 2 * pin, low);
    }

    /// Masks pin `pin`.
    pub fn mask(self, pin: u32) {
        self.write(0x10 + 2 * pin, 1 << 16);
    }
}
