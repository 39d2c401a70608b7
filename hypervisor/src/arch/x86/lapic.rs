//! The host's local APIC (xAPIC, SDM vol. 3A ch. 11): its timer ends a guest's time slice on
//! CPUs without a VMX-preemption timer (SVM: the INTR intercept turns the timer interrupt into
//! an exit), and its end-of-interrupt register acknowledges the interrupts it delivers.
//!
//! The hypervisor uses the APIC only where the firmware left it enabled (IA32_APIC_BASE bit 11
//! and the spurious-vector register's bit 8): then the legacy PIC's interrupts already reach
//! the CPU through LINT0 in virtual-wire mode, which this leaves as it is.

use super::instr::{rdmsr, rdtsc};
use core::sync::atomic::{AtomicU64, Ordering};

/// The timer's vector.
pub const TIMER_VECTOR: u8 = 0xef;
/// The spurious-interrupt vector (its low four bits must be ones on older APICs).
pub const SPURIOUS_VECTOR: u8 = 0xff;

const IA32_APIC_BASE: u32 = 0x1b;
const APIC_GLOBAL_ENABLE: u64 = 1 << 11;
const REG_ID: u64 = 0x20;
const REG_EOI: u64 = 0xb0;
const REG_ICR_LOW: u64 = 0x300;
const REG_ICR_HIGH: u64 = 0x310;
const REG_SVR: u64 = 0xf0;
const REG_ISR: u64 = 0x100;
const REG_LVT_TIMER: u64 = 0x320;
const REG_TIMER_INITIAL: u64 = 0x380;
const REG_TIMER_CURRENT: u64 = 0x390;
const REG_TIMER_DIVIDE: u64 = 0x3e0;
const SVR_ENABLE: u32 = 1 << 8;
const LVT_MASKED: u32 = 1 << 16;
/// Divide configuration 0b1011: divide by 1 (SDM vol. 3A §11.5.4, Figure 11-10).
const DIVIDE_BY_1: u32 = 0b1011;

/// The APIC's register page (0 until [`init`] found an enabled APIC).
static BASE: AtomicU64 = AtomicU64::new(0);
/// Timer ticks per TSC tick, as a 32.32 fixed-point ratio (0: not calibrated).
static TIMER_PER_TSC: AtomicU64 = AtomicU64::new(0);
/// The TSC when [`init`] started the timer counting.
static START_TSC: AtomicU64 = AtomicU64::new(0);
/// Per CPU index: interrupts at vectors nothing expects, and the last such vector.
static UNEXPECTED: [AtomicU64; super::smp::MAX_CPUS] =
    [const { AtomicU64::new(0) }; super::smp::MAX_CPUS];
static LAST_UNEXPECTED: [AtomicU64; super::smp::MAX_CPUS] =
    [const { AtomicU64::new(0) }; super::smp::MAX_CPUS];

fn read(reg: u64) -> u32 {
    let base = BASE.load(Ordering::Relaxed);
    // SAFETY: `base` is the enabled APIC's register page, identity-mapped (uncached by the
    // firmware's MTRRs); reading these registers has no side effects.
    unsafe { core::ptr::read_volatile((base + reg) as *const u32) }
}

fn write(reg: u64, v: u32) {
    let base = BASE.load(Ordering::Relaxed);
    // SAFETY: as in `read`; the registers written (timer, EOI) belong to the hypervisor.
    unsafe { core::ptr::write_volatile((base + reg) as *mut u32, v) };
}

/// Finds the APIC and, where the firmware enabled it, sets its timer up (one-shot, masked,
/// divide by 1) and starts it counting down from its largest count, for [`calibrate`].
/// Returns false (and the APIC stays unused) where there is none or it is disabled. Call it
/// once the hypervisor's own page tables identity-map the APIC's page.
pub fn init() -> bool {
    let has_apic = raw_cpuid::CpuId::new().get_feature_info().is_some_and(|f| f.has_apic());
    if !has_apic {
        return false;
    }
    // SAFETY: CPUID says the CPU has an APIC, so IA32_APIC_BASE exists (SDM vol. 4, 0x1b).
    let msr = unsafe { rdmsr(IA32_APIC_BASE) };
    if msr & APIC_GLOBAL_ENABLE == 0 {
        return false;
    }
    BASE.store(msr & 0x000f_ffff_ffff_f000, Ordering::Relaxed);
    if read(REG_SVR) & SVR_ENABLE == 0 {
        BASE.store(0, Ordering::Relaxed);
        return false;
    }
    write(REG_SVR, (read(REG_SVR) & !0xff) | u32::from(SPURIOUS_VECTOR));
    write(REG_TIMER_DIVIDE, DIVIDE_BY_1);
    write(REG_LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
    write(REG_TIMER_INITIAL, u32::MAX);
    START_TSC.store(rdtsc(), Ordering::Relaxed);
    true
}

/// Records the timer's rate: its ticks since [`init`] over the TSC's, then stops it.
pub fn calibrate() {
    if BASE.load(Ordering::Relaxed) == 0 {
        return;
    }
    let timer_ticks = u64::from(u32::MAX - read(REG_TIMER_CURRENT));
    let tsc_ticks = rdtsc().saturating_sub(START_TSC.load(Ordering::Relaxed));
    if let Some(ratio) = ratio(timer_ticks, tsc_ticks) {
        TIMER_PER_TSC.store(ratio, Ordering::Relaxed);
    }
    write(REG_TIMER_INITIAL, 0);
}

/// `timer / tsc` in 32.32 fixed point.
fn ratio(timer: u64, tsc: u64) -> Option<u64> {
    if timer == 0 || tsc == 0 {
        return None;
    }
    u64::try_from((u128::from(timer) << 32) / u128::from(tsc)).ok()
}

/// Timer counts for `tsc_ticks`, at least 1.
fn counts(tsc_ticks: u64, ratio: u64) -> u32 {
    let n = (u128::from(tsc_ticks) * u128::from(ratio)) >> 32;
    n.clamp(1, u128::from(u32::MAX)) as u32
}

/// True when the timer can end time slices.
pub fn timer_usable() -> bool {
    TIMER_PER_TSC.load(Ordering::Relaxed) != 0
}

/// Raises [`TIMER_VECTOR`] once, `tsc_ticks` from now (replacing any earlier deadline).
pub fn arm(tsc_ticks: u64) {
    let ratio = TIMER_PER_TSC.load(Ordering::Relaxed);
    if ratio == 0 {
        return;
    }
    write(REG_LVT_TIMER, u32::from(TIMER_VECTOR));
    write(REG_TIMER_INITIAL, counts(tsc_ticks, ratio));
}

/// Stops the timer.
pub fn disarm() {
    if TIMER_PER_TSC.load(Ordering::Relaxed) != 0 {
        write(REG_TIMER_INITIAL, 0);
    }
}

/// Interrupts at unexpected vectors so far on CPU `cpu` (an index), and the last one's vector.
pub fn unexpected(cpu: usize) -> (u64, u8) {
    let i = cpu.min(UNEXPECTED.len() - 1);
    (UNEXPECTED[i].load(Ordering::Relaxed), LAST_UNEXPECTED[i].load(Ordering::Relaxed) as u8)
}

/// The timer's interrupt (from its IDT stub, interrupts off, with the vector): it has done its
/// work by arriving (an SVM guest exits, an idle HLT ends); end it.
pub extern "C" fn timer_entry(_vector: u64) {
    write(REG_EOI, 0);
}

/// An interrupt at a vector nothing expects (a device's stray MSI, a passed-through APIC's
/// vector, ...): counted, and ended at the APIC if the APIC delivered it (its in-service bit is
/// set; SDM vol. 3A §11.8.4), so it cannot block lower-priority interrupts. Never fatal.
pub extern "C" fn unexpected_entry(vector: u64) {
    let vector = vector & 0xff;
    let i = super::smp::cpu_index();
    UNEXPECTED[i].fetch_add(1, Ordering::Relaxed);
    LAST_UNEXPECTED[i].store(vector, Ordering::Relaxed);
    if BASE.load(Ordering::Relaxed) != 0 {
        let isr = read(REG_ISR + (vector / 32) * 0x10);
        if isr & (1 << (vector % 32)) != 0 {
            write(REG_EOI, 0);
        }
    }
}

// Interprocessor interrupts (SDM vol. 3A §11.6.1, Figure 11-12: the interrupt command register).
const ICR_FIXED: u32 = 0b000 << 8;
const ICR_INIT: u32 = 0b101 << 8;
const ICR_STARTUP: u32 = 0b110 << 8;
const ICR_SEND_PENDING: u32 = 1 << 12;
const ICR_ASSERT: u32 = 1 << 14;
const ICR_LEVEL: u32 = 1 << 15;

/// True once [`init`] found an enabled xAPIC.
pub fn present() -> bool {
    BASE.load(Ordering::Relaxed) != 0
}

/// This CPU's local APIC ID (xAPIC: bits 31-24 of the ID register), where there is an APIC.
pub fn id() -> Option<u32> {
    present().then(|| read(REG_ID) >> 24)
}

/// Software-enables this CPU's APIC (an application processor's comes out of INIT disabled,
/// SDM vol. 3A §11.4.7.2), with the spurious vector, so it accepts fixed IPIs. The register
/// page is the same address on every CPU; each CPU reaches its own APIC there.
pub fn enable_this_cpu() {
    if present() {
        write(REG_SVR, SVR_ENABLE | u32::from(SPURIOUS_VECTOR));
        write(REG_LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
    }
}

/// Ends the interrupt in service on this CPU.
pub fn eoi() {
    if present() {
        write(REG_EOI, 0);
    }
}

/// Sends one IPI to `apic_id` and waits (up to `spins` reads) until the APIC has sent it.
/// Returns false when there is no APIC or the send stayed pending.
fn send_ipi(apic_id: u32, command: u32, spins: u32) -> bool {
    if !present() || apic_id > 0xff {
        return false;
    }
    // The high half first: writing the low half sends (§11.6.1).
    write(REG_ICR_HIGH, apic_id << 24);
    write(REG_ICR_LOW, command);
    (0..spins).any(|_| {
        core::hint::spin_loop();
        read(REG_ICR_LOW) & ICR_SEND_PENDING == 0
    })
}

/// INIT IPI to `apic_id` (level assert), then the de-assert older APICs need (§11.6.1).
pub fn send_init(apic_id: u32) -> bool {
    send_ipi(apic_id, ICR_INIT | ICR_ASSERT | ICR_LEVEL, 1_000_000)
        && send_ipi(apic_id, ICR_INIT | ICR_LEVEL, 1_000_000)
}

/// Start-up IPI to `apic_id`: the processor starts in real mode at `page << 12` (CS:IP =
/// `page << 8`:0000).
pub fn send_sipi(apic_id: u32, page: u8) -> bool {
    send_ipi(apic_id, ICR_STARTUP | ICR_ASSERT | u32::from(page), 1_000_000)
}

/// Fixed IPI at `vector` to `apic_id` (edge-triggered).
pub fn send_fixed(apic_id: u32, vector: u8) -> bool {
    send_ipi(apic_id, ICR_FIXED | ICR_ASSERT | u32::from(vector), 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_counts_follow_the_measured_rate() {
        // An APIC timer at a quarter of the TSC's rate.
        let r = ratio(250, 1000).unwrap();
        assert_eq!(counts(4_000_000, r), 1_000_000);
        assert_eq!(counts(0, r), 1, "at least one count");
        assert_eq!(counts(u64::MAX, r), u32::MAX, "clamped");
        assert_eq!(ratio(0, 1000), None);
        assert_eq!(ratio(1000, 0), None);
        // Equal rates.
        assert_eq!(counts(12_345, ratio(7, 7).unwrap()), 12_345);
    }
}
