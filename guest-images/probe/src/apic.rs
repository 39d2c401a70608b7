//! The local APIC (SDM Vol. 3A ch. 11): CPUID offers it (with x2APIC and the TSC-deadline
//! timer), IA32_APIC_BASE reads as a PC's firmware leaves it, the ID and version registers,
//! the timer in one-shot, periodic and TSC-deadline modes (its interrupt is in service until
//! EOI), self-IPIs through the ICR and the x2APIC SELF_IPI register, the TPR holding back a
//! lower class, and the mode transitions of §11.12.5 (x2APIC to xAPIC is #GP).

use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use guest_rt::exception::GP;
use guest_rt::paging::{self, Caching};
use guest_rt::{Checks, InterruptFrame, checks::Why, ensure, expect_exception, instr};

use crate::cpu::faulted;

const BASE: u64 = 0xfee0_0000;
const APIC_BASE_MSR: u32 = 0x1b;
const TSC_DEADLINE_MSR: u32 = 0x6e0;
const EN: u64 = 1 << 11;
const EXTD: u64 = 1 << 10;
const BSP: u64 = 1 << 8;

const ID: u64 = 0x20;
const VERSION: u64 = 0x30;
const TPR: u64 = 0x80;
const EOI: u64 = 0xb0;
const SVR: u64 = 0xf0;
const ISR: u64 = 0x100;
const IRR: u64 = 0x200;
const ICR_LOW: u64 = 0x300;
const LVT_TIMER: u64 = 0x320;
const LVT_LINT0: u64 = 0x350;
const LVT_LINT1: u64 = 0x360;
const TIMER_INITIAL: u64 = 0x380;
const TIMER_CURRENT: u64 = 0x390;
const TIMER_DIVIDE: u64 = 0x3e0;

const TIMER_VECTOR: u8 = 0x50;
const IPI_VECTOR: u8 = 0x62;
const LOW_VECTOR: u8 = 0x53;
const X2_VECTOR: u8 = 0x64;
const PERIODIC: u32 = 1 << 17;
const TSC_DEADLINE: u32 = 2 << 17;
const MASKED: u32 = 1 << 16;
/// Timer counts, at the TSC's rate divided by 16 (3.2 M ticks).
const COUNT: u32 = 200_000;
/// The divide configuration register's code for 16 (§11.5.4, Figure 11-10).
const DIVIDE_16: u32 = 0b0011;

/// Interrupts taken, per vector (0x40-0x7f).
static HITS: [AtomicU32; 64] = [const { AtomicU32::new(0) }; 64];
/// The vector's ISR bit as the handler saw it (acknowledged: in service until EOI).
static IN_SERVICE: AtomicU64 = AtomicU64::new(0);
static X2APIC: AtomicBool = AtomicBool::new(false);

pub(crate) fn read(off: u64) -> u32 {
    let v: u32;
    // SAFETY: the APIC page is mapped uncached at its identity address (`run`); a 32-bit
    // aligned read of a register has no side effect.
    unsafe {
        asm!("mov {:e}, dword ptr [{}]", out(reg) v, in(reg) BASE + off, options(nostack, preserves_flags))
    };
    v
}

pub(crate) fn write(off: u64, v: u32) {
    // SAFETY: as in `read`; the registers written are the APIC's own, no memory of ours.
    unsafe {
        asm!("mov dword ptr [{}], {:e}", in(reg) BASE + off, in(reg) v, options(nostack, preserves_flags))
    };
}

fn on_interrupt(f: &mut InterruptFrame) {
    let v = f.vector as u8;
    HITS[usize::from(v - 0x40)].fetch_add(1, Ordering::SeqCst);
    if X2APIC.load(Ordering::SeqCst) {
        // SAFETY: the x2APIC EOI register, in x2APIC mode.
        let isr = unsafe { instr::rdmsr(0x810 + u32::from(v / 32)) };
        IN_SERVICE.store(isr >> (v % 32) & 1, Ordering::SeqCst);
        // SAFETY: as above.
        unsafe { instr::wrmsr(0x80b, 0) };
    } else {
        let isr = read(ISR + u64::from(v / 32) * 16);
        IN_SERVICE.store(u64::from(isr >> (v % 32) & 1), Ordering::SeqCst);
        write(EOI, 0);
    }
}

fn hits(v: u8) -> u32 {
    HITS[usize::from(v - 0x40)].load(Ordering::SeqCst)
}

/// Halts with interrupts on until vector `v` has come `n` times (at most 2000 wake-ups).
fn wait_for(v: u8, n: u32) -> u32 {
    let mut wakeups = 0;
    while hits(v) < n && wakeups < 2000 {
        instr::sti_hlt();
        instr::cli();
        wakeups += 1;
    }
    wakeups
}

/// Runs with interrupts on for a while, exiting (CPUID) so that anything pending comes in.
fn window() {
    instr::sti();
    for _ in 0..200 {
        instr::cpuid(0, 0);
    }
    instr::cli();
}

fn rdmsr(msr: u32) -> Result<u64, Why> {
    let mut v = 0;
    // SAFETY: a #GP is caught; the MSRs read here change nothing when read.
    let e = expect_exception(|| v = unsafe { instr::rdmsr(msr) });
    e.map_or(Ok(v), |e| Err(guest_rt::why!("RDMSR {msr:#x} raised {e}")))
}

/// Runs the checks; true when the APIC page is mapped and the APIC enabled (for [`crate::nmi`]).
pub fn run(c: &mut Checks) -> bool {
    let l1 = instr::cpuid(1, 0);
    let has = l1.edx & (1 << 9) != 0;
    c.check(
        "apic-cpuid",
        ensure!(
            has && l1.ecx & (1 << 21) != 0 && l1.ecx & (1 << 24) != 0,
            "CPUID.1 EDX {:#x} ECX {:#x}: want APIC, x2APIC and TSC-deadline",
            l1.edx,
            l1.ecx
        ),
    );
    if !has {
        return false;
    }
    let base = rdmsr(APIC_BASE_MSR);
    c.check(
        "apic-base",
        base.and_then(|b| {
            ensure!(b == BASE | EN | BSP, "IA32_APIC_BASE {b:#x}, want {:#x}", BASE | EN | BSP)
        }),
    );
    // SAFETY: nothing of this partition lives at 0xfee0_0000 (RAM ends below 1 GiB); the
    // window holds the APIC page and nothing else.
    if !c.check("apic-map", unsafe { paging::map_2m(BASE, BASE, Caching::Uncached) }) {
        return false;
    }
    for v in [TIMER_VECTOR, IPI_VECTOR, LOW_VECTOR, X2_VECTOR] {
        guest_rt::register_handler(v, on_interrupt);
    }
    let (id, version) = (read(ID), read(VERSION));
    c.check(
        "apic-id-version",
        ensure!(
            id >> 24 == l1.ebx >> 24
                && (0x10..=0x15).contains(&(version & 0xff))
                && version >> 16 & 0xff >= 4,
            "ID {id:#x} (CPUID initial ID {}), version {version:#x}",
            l1.ebx >> 24
        ),
    );
    write(SVR, 0x1ff);
    write(TIMER_DIVIDE, DIVIDE_16);
    c.check("apic-timer-one-shot", one_shot());
    c.check("apic-timer-periodic", periodic());
    c.check("apic-timer-tsc-deadline", tsc_deadline());
    c.check("apic-timer-while-running", while_running());
    c.check("apic-self-ipi", self_ipi());
    c.check("apic-tpr", tpr());
    c.check("apic-x2apic", x2apic());
    true
}

fn one_shot() -> Result<(), Why> {
    write(LVT_TIMER, u32::from(TIMER_VECTOR));
    let start = instr::rdtsc();
    write(TIMER_INITIAL, COUNT);
    let counting = read(TIMER_CURRENT);
    // Where an exit takes longer than the count (QEMU's TSC runs in real time), it is over.
    let over = instr::rdtsc() - start >= u64::from(COUNT) * 16;
    ensure!(
        counting <= COUNT && (counting > 0 || over),
        "current count {counting} right after the start"
    )?;
    let wakeups = wait_for(TIMER_VECTOR, 1);
    ensure!(hits(TIMER_VECTOR) == 1, "no interrupt after {wakeups} wake-ups")?;
    ensure!(IN_SERVICE.load(Ordering::SeqCst) == 1, "vector not in ISR in its handler")?;
    let isr = read(ISR + u64::from(TIMER_VECTOR / 32) * 16);
    ensure!(isr == 0, "ISR {isr:#x} after EOI")?;
    ensure!(read(TIMER_CURRENT) == 0, "current count {} after expiry", read(TIMER_CURRENT))?;
    window();
    ensure!(hits(TIMER_VECTOR) == 1, "{} interrupts from a one-shot", hits(TIMER_VECTOR))
}

fn periodic() -> Result<(), Why> {
    let before = hits(TIMER_VECTOR);
    write(LVT_TIMER, PERIODIC | u32::from(TIMER_VECTOR));
    write(TIMER_INITIAL, COUNT);
    let wakeups = wait_for(TIMER_VECTOR, before + 3);
    write(LVT_TIMER, MASKED | PERIODIC | u32::from(TIMER_VECTOR));
    write(TIMER_INITIAL, 0);
    let got = hits(TIMER_VECTOR) - before;
    // A period that ended before the stop has its interrupt in IRR already, which masking the
    // LVT entry does not take back (SDM Vol. 3A §11.5.1: the mask stops new ones): it may
    // still come, once (a host that held the vCPU back past a period, QEMU under load).
    let pending = read(IRR + u64::from(TIMER_VECTOR / 32) * 16) >> (TIMER_VECTOR % 32) & 1;
    ensure!(got >= 3, "{got} periodic interrupts after {wakeups} wake-ups, want 3")?;
    window();
    let after = hits(TIMER_VECTOR) - before;
    ensure!(
        after == got + pending,
        "{} more after stopping ({pending} was in IRR at the stop)",
        after - got
    )
}

fn tsc_deadline() -> Result<(), Why> {
    let before = hits(TIMER_VECTOR);
    write(LVT_TIMER, TSC_DEADLINE | u32::from(TIMER_VECTOR));
    let deadline = instr::rdtsc() + u64::from(COUNT) * 16;
    // SAFETY: IA32_TSC_DEADLINE, offered by CPUID.1:ECX[24].
    unsafe { instr::wrmsr(TSC_DEADLINE_MSR, deadline) };
    let armed = rdmsr(TSC_DEADLINE_MSR)?;
    let read_at = instr::rdtsc();
    let wakeups = wait_for(TIMER_VECTOR, before + 1);
    let at = instr::rdtsc();
    write(LVT_TIMER, MASKED | u32::from(TIMER_VECTOR));
    // It reads 0 once it fired (§11.5.4.1), which an exit as long as the delay allows.
    ensure!(
        armed == deadline || (armed == 0 && read_at >= deadline),
        "IA32_TSC_DEADLINE read {armed:#x}, wrote {deadline:#x}"
    )?;
    ensure!(hits(TIMER_VECTOR) == before + 1, "no interrupt after {wakeups} wake-ups")?;
    ensure!(at >= deadline, "fired {} ticks early", deadline - at)?;
    ensure!(rdmsr(TSC_DEADLINE_MSR)? == 0, "IA32_TSC_DEADLINE not 0 once it fired")
}

/// A short one-shot's count (its interrupt comes [`SHORT_COUNT`] x 16 TSC ticks later).
const SHORT_COUNT: u32 = 2_000;
/// How long [`while_running`] waits: 25 of the hypervisor's time slices.
const SPIN_BOUND: u64 = 50_000_000;

/// A one-shot armed while the vCPU then runs on with interrupts on and no exit at all (a
/// loop on memory and RDTSC): the hypervisor must end the run when the timer is due, as the
/// write that armed it said. A pinned vCPU runs with no time slice, so nothing else would.
fn while_running() -> Result<(), Why> {
    let before = hits(TIMER_VECTOR);
    write(LVT_TIMER, u32::from(TIMER_VECTOR));
    let start = instr::rdtsc();
    instr::sti();
    write(TIMER_INITIAL, SHORT_COUNT);
    let mut waited = 0;
    while hits(TIMER_VECTOR) == before && waited <= SPIN_BOUND {
        waited = instr::rdtsc().wrapping_sub(start);
    }
    instr::cli();
    write(LVT_TIMER, MASKED | u32::from(TIMER_VECTOR));
    write(TIMER_INITIAL, 0);
    ensure!(
        hits(TIMER_VECTOR) == before + 1,
        "no interrupt {waited} ticks after a one-shot of {} ticks, running without exits",
        u64::from(SHORT_COUNT) * 16
    )
}

fn self_ipi() -> Result<(), Why> {
    // Fixed, shorthand "self" (ICR bits 19:18 = 01).
    write(ICR_LOW, 1 << 18 | u32::from(IPI_VECTOR));
    ensure!(hits(IPI_VECTOR) == 0, "taken with interrupts off")?;
    window();
    ensure!(hits(IPI_VECTOR) == 1, "{} interrupts for one self-IPI", hits(IPI_VECTOR))
}

fn tpr() -> Result<(), Why> {
    write(TPR, 0x60);
    write(ICR_LOW, 1 << 18 | u32::from(LOW_VECTOR));
    window();
    let held = hits(LOW_VECTOR);
    write(TPR, 0);
    window();
    ensure!(held == 0, "vector {LOW_VECTOR:#x} taken with TPR 0x60")?;
    ensure!(hits(LOW_VECTOR) == 1, "not taken once TPR went to 0")
}

fn x2apic() -> Result<(), Why> {
    let xapic = BASE | EN | BSP;
    // SAFETY: the transitions of SDM §11.12.5 on this partition's own APIC; a #GP is caught.
    let wr = |v: u64| expect_exception(|| unsafe { instr::wrmsr(APIC_BASE_MSR, v) });
    ensure!(wr(xapic | EXTD).is_none(), "xAPIC to x2APIC refused")?;
    X2APIC.store(true, Ordering::SeqCst);
    let id = rdmsr(0x802)?;
    // SAFETY: SELF_IPI (MSR 0x83F), x2APIC mode.
    unsafe { instr::wrmsr(0x83f, u64::from(X2_VECTOR)) };
    window();
    let got = hits(X2_VECTOR);
    let back = wr(xapic);
    // Leave as the firmware did: disable, enable in xAPIC mode, virtual wire.
    let off = wr(BASE | BSP);
    X2APIC.store(false, Ordering::SeqCst);
    let on = wr(xapic);
    write(SVR, 0x1ff);
    write(LVT_LINT0, 0x700);
    write(LVT_LINT1, 0x400);
    ensure!(id == u64::from(instr::cpuid(1, 0).ebx >> 24), "x2APIC ID {id:#x}")?;
    ensure!(got == 1, "{got} interrupts for one SELF_IPI write")?;
    faulted(back, GP, Some(0))?;
    ensure!(off.is_none() && on.is_none(), "disable {off:?}, re-enable {on:?}")
}
