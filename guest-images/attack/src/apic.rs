//! `apic`: abuses its local APICs (SDM Vol. 3A ch. 11) and checks that what comes back is what
//! the SDM says, then does the nastiest of it in a loop (`apic_storm.rs`). Runs on a partition
//! of two vCPUs; vCPU 1 is only ever started into a halt loop. The partition runs on and
//! exits with status 0 when every check passed (`expect = "exit"`).
//!
//! The checks: every offset and size of the xAPIC page (holes read 0 and are "illegal
//! register" errors, read-only registers ignore writes), the ESR's illegal-vector errors
//! (§11.5.3), the software-disabled state (§11.4.7.2), the timer's divide values, huge and
//! 1-tick periodic counts and a TSC deadline in the past (§11.5.4), IA32_APIC_BASE's moves,
//! disable and re-enable (§11.4.3, §11.4.4), and every x2APIC MSR 0x800-0x8FF read and written
//! the wrong way (§11.12.1.2, §11.12.1.3).

use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use guest_rt::exception::{GP, register_handler};
use guest_rt::paging::{self, Caching};
use guest_rt::{Checks, Exception, InterruptFrame, checks::Why, ensure, expect_exception, instr};

pub const BASE: u64 = 0xfee0_0000;
pub const APIC_BASE_MSR: u32 = 0x1b;
pub const FIRMWARE_BASE: u64 = BASE | EN | BSP;
pub const EN: u64 = 1 << 11;
pub const EXTD: u64 = 1 << 10;
pub const BSP: u64 = 1 << 8;
const TSC_DEADLINE_MSR: u32 = 0x6e0;

pub const ID: u64 = 0x20;
const VERSION: u64 = 0x30;
pub const TPR: u64 = 0x80;
const PPR: u64 = 0xa0;
pub const EOI: u64 = 0xb0;
pub const SVR: u64 = 0xf0;
const ISR: u64 = 0x100;
const IRR: u64 = 0x200;
pub const ESR: u64 = 0x280;
pub const ICR_LOW: u64 = 0x300;
pub const ICR_HIGH: u64 = 0x310;
pub const LVT_TIMER: u64 = 0x320;
pub const LVT_LINT0: u64 = 0x350;
pub const LVT_LINT1: u64 = 0x360;
const LVT_ERROR: u64 = 0x370;
pub const TIMER_INITIAL: u64 = 0x380;
const TIMER_CURRENT: u64 = 0x390;
pub const TIMER_DIVIDE: u64 = 0x3e0;

pub const MASKED: u32 = 1 << 16;
pub const PERIODIC: u32 = 1 << 17;
const TSC_DEADLINE: u32 = 2 << 17;
pub const SELF: u32 = 1 << 18;
pub const ALL: u32 = 2 << 18;
/// ESR bits (Figure 11-9).
const SEND_ILLEGAL: u32 = 1 << 5;
const RECEIVE_ILLEGAL: u32 = 1 << 6;
const ILLEGAL_REGISTER: u32 = 1 << 7;

/// Interrupts taken per vector.
static HITS: [AtomicU32; 256] = [const { AtomicU32::new(0) }; 256];
pub static NMIS: AtomicU32 = AtomicU32::new(0);
/// The EOI goes through the x2APIC MSR while in x2APIC mode.
pub static X2APIC: AtomicBool = AtomicBool::new(false);

pub fn read(off: u64) -> u32 {
    let v: u32;
    // SAFETY: the APIC page is mapped uncached at its identity address (`run`): a read of it
    // touches no memory of ours.
    unsafe { asm!("mov {:e}, dword ptr [{}]", out(reg) v, in(reg) BASE + off, options(nostack)) };
    v
}

pub fn write(off: u64, v: u32) {
    // SAFETY: as in `read`.
    unsafe { asm!("mov dword ptr [{}], {:e}", in(reg) BASE + off, in(reg) v, options(nostack)) };
}

fn read8(off: u64) -> u64 {
    let v: u64;
    // SAFETY: as in `read`: an 8-byte read.
    unsafe { asm!("mov {}, qword ptr [{}]", out(reg) v, in(reg) BASE + off, options(nostack)) };
    v
}

fn write1(off: u64, v: u8) {
    // SAFETY: as in `read`: a 1-byte write.
    unsafe { asm!("mov byte ptr [{}], {}", in(reg) BASE + off, in(reg_byte) v, options(nostack)) };
}

pub fn rdmsr(msr: u32) -> Result<u64, Exception> {
    let mut v = 0;
    // SAFETY: the APIC MSRs of this partition's own vCPU; a #GP is caught.
    match expect_exception(|| v = unsafe { instr::rdmsr(msr) }) {
        None => Ok(v),
        Some(e) => Err(e),
    }
}

pub fn wrmsr(msr: u32, v: u64) -> Option<Exception> {
    // SAFETY: as in `rdmsr`.
    expect_exception(|| unsafe { instr::wrmsr(msr, v) })
}

fn gp(e: Option<Exception>, what: &str) -> Result<(), Why> {
    match e {
        Some(e) if e.vector == GP => Ok(()),
        Some(e) => Err(guest_rt::why!("{what}: {e}, want #GP")),
        None => Err(guest_rt::why!("{what}: no #GP")),
    }
}

/// The errors an ESR write latches (xAPIC mode: write, then read, §11.5.3).
fn esr() -> u32 {
    write(ESR, 0);
    read(ESR)
}

pub fn hits(v: u8) -> u32 {
    HITS[usize::from(v)].load(Ordering::SeqCst)
}

fn on_interrupt(f: &mut InterruptFrame) {
    HITS[f.vector as usize & 0xff].fetch_add(1, Ordering::SeqCst);
    if X2APIC.load(Ordering::SeqCst) {
        // SAFETY: the x2APIC EOI MSR, in x2APIC mode.
        unsafe { instr::wrmsr(0x80b, 0) };
    } else {
        write(EOI, 0);
    }
}

pub fn on_nmi(_: &mut InterruptFrame) {
    NMIS.fetch_add(1, Ordering::SeqCst);
}

/// Runs with interrupts on for a while, exiting (CPUID) so that anything pending comes in.
pub fn window() {
    instr::sti();
    for _ in 0..100 {
        instr::cpuid(0, 0);
    }
    instr::cli();
}

/// Sends an IPI through the xAPIC ICR.
pub fn icr(dest: u8, low: u32) {
    write(ICR_HIGH, u32::from(dest) << 24);
    write(ICR_LOW, low);
}

/// The firmware's state again (`docs/guest-contract.md`): xAPIC mode, software-enabled,
/// virtual wire.
pub fn firmware_state() {
    X2APIC.store(false, Ordering::SeqCst);
    let _ = wrmsr(APIC_BASE_MSR, BASE | BSP);
    let _ = wrmsr(APIC_BASE_MSR, FIRMWARE_BASE);
    write(SVR, 0x1ff);
    write(LVT_LINT0, 0x700);
    write(LVT_LINT1, 0x400);
    esr();
}

/// Runs the checks and the storm; returns the number of failed checks.
pub fn run(rounds: u64) -> u64 {
    let mut c = Checks::new();
    // SAFETY: nothing of this partition lives at 0xfee0_0000 (RAM ends below 1 GiB).
    if !c.check("apic-abuse-map", unsafe { paging::map_2m(BASE, BASE, Caching::Uncached) }) {
        return c.summary("attack");
    }
    for v in 0x20..=0xffu8 {
        register_handler(v, on_interrupt);
    }
    register_handler(2, on_nmi);
    firmware_state();
    c.check("apic-abuse-xapic-page", xapic_page());
    c.check("apic-abuse-read-only", read_only());
    c.check("apic-abuse-esr-illegal-vectors", illegal_vectors());
    c.check("apic-abuse-error-interrupt", error_interrupt());
    c.check("apic-abuse-software-disable", software_disable());
    firmware_state();
    c.check("apic-abuse-timer-divide-huge", timer_divide_huge());
    c.check("apic-abuse-timer-1-tick-periodic", tiny_periodic());
    c.check("apic-abuse-tsc-deadline", tsc_deadline());
    c.check("apic-abuse-apic-base", apic_base());
    firmware_state();
    c.check("apic-abuse-x2apic-msrs", x2apic_msrs());
    firmware_state();
    crate::apic_storm::run(&mut c, rounds);
    firmware_state();
    c.summary("attack")
}

/// Every dword of the page and a few other sizes: holes and the bytes past a register's
/// first dword read 0; a hole is an "illegal register address" error.
fn xapic_page() -> Result<(), Why> {
    esr();
    // The registers of Table 11-1 (16-byte aligned); everything else is a hole.
    let register = |o: u64| matches!(o, 0x20 | 0x30 | 0x80..=0x280 | 0x2f0..=0x390 | 0x3e0);
    for off in (0..0x1000u64).step_by(4) {
        let v = read(off);
        let aligned = off.is_multiple_of(16);
        ensure!(aligned && register(off) || v == 0, "offset {off:#x} read {v:#x}")?;
    }
    ensure!(esr() & ILLEGAL_REGISTER != 0, "no illegal-register error for the holes")?;
    let version = read8(VERSION);
    ensure!(version >> 32 == 0 && version as u32 == read(VERSION), "8-byte read {version:#x}")?;
    ensure!(read8(0xff8) == 0, "8-byte read at the end of the page")?;
    write(TPR, 0x20);
    write1(TPR, 0x70);
    write1(TPR + 1, 0x70);
    let tpr = read(TPR);
    write(TPR, 0);
    esr();
    ensure!(tpr == 0x20, "TPR {tpr:#x} after byte writes (dropped)")
}

fn read_only() -> Result<(), Why> {
    let version = read(VERSION);
    esr();
    for off in [VERSION, PPR, ISR, ISR + 0x70, IRR, IRR + 0x40, TIMER_CURRENT] {
        write(off, 0xffff_ffff);
    }
    ensure!(read(VERSION) == version, "version changed")?;
    ensure!(read(ISR) == 0 && read(IRR + 0x40) == 0, "ISR/IRR took a write")?;
    ensure!(read(TIMER_CURRENT) == 0, "current count took a write")?;
    let e = esr();
    ensure!(e == 0, "ESR {e:#x} after writes to read-only registers (want none)")
}

fn illegal_vectors() -> Result<(), Why> {
    esr();
    icr(0, SELF | 0x05);
    let send = esr();
    write(LVT_TIMER, 0x03);
    let lvt = esr();
    write(LVT_TIMER, MASKED | 0x40);
    write(LVT_LINT0, 0x700); // ExtINT with vector 0: no error
    let extint = esr();
    window();
    ensure!(send == SEND_ILLEGAL, "ICR vector 5: ESR {send:#x}, want {SEND_ILLEGAL:#x}")?;
    ensure!(lvt == RECEIVE_ILLEGAL, "LVT vector 3: ESR {lvt:#x}, want {RECEIVE_ILLEGAL:#x}")?;
    ensure!(extint == 0, "ExtINT LINT0: ESR {extint:#x}")?;
    ensure!((0..16).all(|v| hits(v) == 0), "an interrupt below 16 came in")
}

fn error_interrupt() -> Result<(), Why> {
    write(LVT_ERROR, 0xe7);
    read(0x3b0); // a hole
    window();
    write(LVT_ERROR, MASKED | 0xe7);
    let e = esr();
    ensure!(hits(0xe7) == 1, "{} error interrupts for one error", hits(0xe7))?;
    ensure!(e == ILLEGAL_REGISTER, "ESR {e:#x}")
}

fn software_disable() -> Result<(), Why> {
    write(SVR, 0xff);
    write(LVT_TIMER, 0x41);
    let timer = read(LVT_TIMER);
    let lint0 = read(LVT_LINT0);
    icr(0, SELF | 0x61);
    window();
    write(SVR, 0x1ff);
    window();
    ensure!(timer & MASKED != 0, "LVT timer {timer:#x}: unmasked while disabled")?;
    ensure!(lint0 & MASKED != 0, "LINT0 {lint0:#x} not masked by the disable")?;
    ensure!(hits(0x61) == 0, "a fixed IPI reached a software-disabled APIC")
}

fn timer_divide_huge() -> Result<(), Why> {
    for dcr in [0b0000, 0b0001, 0b0010, 0b0011, 0b1000, 0b1001, 0b1010, 0b1011] {
        write(TIMER_DIVIDE, dcr);
        write(LVT_TIMER, 0x42);
        write(TIMER_INITIAL, u32::MAX);
        let now = read(TIMER_CURRENT);
        let back = read(TIMER_DIVIDE);
        write(TIMER_INITIAL, 0);
        let stopped = read(TIMER_CURRENT);
        ensure!(back == dcr, "DCR {dcr:#b} reads {back:#b}")?;
        ensure!(now > 0 && stopped == 0, "DCR {dcr:#b}: current {now:#x}, after 0: {stopped}")?;
    }
    window();
    write(LVT_TIMER, MASKED | 0x42);
    ensure!(hits(0x42) == 0, "a stopped timer fired")
}

/// A periodic count of 1 at divide-by-1 for 20 M TSC ticks: the guest still gets work done,
/// and a count of 0 stops it.
fn tiny_periodic() -> Result<(), Why> {
    write(TIMER_DIVIDE, 0b1011);
    write(LVT_TIMER, PERIODIC | 0x43);
    write(TIMER_INITIAL, 1);
    let start = instr::rdtsc();
    let mut loops = 0u64;
    instr::sti();
    while instr::rdtsc() - start < 20_000_000 {
        instr::cpuid(0, 0);
        loops += 1;
    }
    instr::cli();
    write(TIMER_INITIAL, 0);
    write(LVT_TIMER, MASKED | PERIODIC | 0x43);
    let got = hits(0x43);
    window();
    ensure!(got >= 1, "no interrupt from a 1-tick periodic timer in {loops} loops")?;
    ensure!(hits(0x43) == got, "it fired after being stopped")
}

fn tsc_deadline() -> Result<(), Why> {
    write(LVT_TIMER, 0x44); // one-shot: the MSR is ignored
    let ignored = wrmsr(TSC_DEADLINE_MSR, instr::rdtsc() + 1000);
    let reads = rdmsr(TSC_DEADLINE_MSR);
    write(LVT_TIMER, TSC_DEADLINE | 0x44);
    let past = wrmsr(TSC_DEADLINE_MSR, 1);
    window();
    let after = rdmsr(TSC_DEADLINE_MSR);
    write(LVT_TIMER, MASKED | 0x44);
    ensure!(ignored.is_none() && reads.ok() == Some(0), "one-shot mode: read {reads:?}")?;
    ensure!(past.is_none() && hits(0x44) == 1, "a past deadline: {} interrupts", hits(0x44))?;
    ensure!(after.ok() == Some(0), "reads {after:?} once fired")
}

fn apic_base() -> Result<(), Why> {
    gp(wrmsr(APIC_BASE_MSR, 0xfed0_0000 | EN | BSP), "moving the base")?;
    gp(wrmsr(APIC_BASE_MSR, FIRMWARE_BASE | 1), "reserved bit 0")?;
    gp(wrmsr(APIC_BASE_MSR, BASE | EXTD | BSP), "EXTD without EN")?;
    ensure!(wrmsr(APIC_BASE_MSR, BASE | EN).is_none(), "BSP bit write refused")?;
    let bsp = rdmsr(APIC_BASE_MSR).unwrap_or(0);
    ensure!(bsp == FIRMWARE_BASE, "IA32_APIC_BASE {bsp:#x} after clearing BSP")?;
    write(ID, 5 << 24);
    write(TPR, 0x30);
    ensure!(wrmsr(APIC_BASE_MSR, BASE | BSP).is_none(), "disable refused")?;
    let gone = read(VERSION);
    gp(rdmsr(0x802).err(), "x2APIC MSR while disabled")?;
    gp(wrmsr(APIC_BASE_MSR, FIRMWARE_BASE | EXTD), "disabled straight to x2APIC")?;
    ensure!(wrmsr(APIC_BASE_MSR, FIRMWARE_BASE).is_none(), "re-enable refused")?;
    let (id, tpr, svr, timer) = (read(ID), read(TPR), read(SVR), read(LVT_TIMER));
    ensure!(gone == u32::MAX, "the page read {gone:#x} while disabled")?;
    ensure!(
        id == 0 && tpr == 0 && svr == 0xff,
        "re-enabled: ID {id:#x} TPR {tpr:#x} SVR {svr:#x}"
    )?;
    ensure!(timer & MASKED != 0, "re-enabled: LVT timer {timer:#x}")
}

/// The MSRs RDMSR reads in x2APIC mode (Table 11-6).
fn x2apic_readable(msr: u32) -> bool {
    matches!(msr, 0x802 | 0x803 | 0x808 | 0x80a | 0x80d | 0x80f | 0x810..=0x828 | 0x82f | 0x830)
        || matches!(msr, 0x832..=0x839 | 0x83e)
}

fn x2apic_msrs() -> Result<(), Why> {
    ensure!(wrmsr(APIC_BASE_MSR, FIRMWARE_BASE | EXTD).is_none(), "to x2APIC refused")?;
    X2APIC.store(true, Ordering::SeqCst);
    for msr in 0x800..=0x8ffu32 {
        let r = rdmsr(msr);
        ensure!(r.is_ok() == x2apic_readable(msr), "RDMSR {msr:#x}: {r:?}")?;
    }
    for msr in [0x802, 0x803, 0x80a, 0x80d, 0x80e, 0x810, 0x818, 0x820, 0x831, 0x839] {
        gp(wrmsr(msr, 0), "WRMSR of a read-only or absent register")?;
    }
    let reserved = [
        (0x808, 0x100),
        (0x808, 1 << 32),
        (0x80b, 1),
        (0x828, 1),
        (0x80f, 0x11ff),
        (0x832, 0x8_0045),
        (0x83e, 0b0100),
        (0x83f, 0x145),
        (0x830, 1 << 13 | 0x45),
        (0x830, 1 << 16 | 0x45 | 1 << 18),
        (0x830, 1 << 31 | 0x45 | 1 << 18),
    ];
    for (msr, v) in reserved {
        gp(wrmsr(msr, v), "a reserved bit")?;
    }
    window();
    ensure!(hits(0x45) == 0, "a refused write sent an IPI")?;
    // SELF IPI, the 64-bit ICR to the broadcast ID (physical and logical), an illegal vector.
    ensure!(wrmsr(0x83f, 0x46).is_none(), "SELF IPI refused")?;
    ensure!(wrmsr(0x830, 0xffff_ffff_0000_0047).is_none(), "ICR to 0xFFFFFFFF refused")?;
    ensure!(wrmsr(0x830, 0xffff_ffff_0000_0848).is_none(), "logical 0xFFFFFFFF refused")?;
    ensure!(wrmsr(0x83f, 0x05).is_none(), "SELF IPI vector 5 refused")?;
    window();
    let _ = wrmsr(0x828, 0);
    let e = rdmsr(0x828).unwrap_or(0) as u32;
    let got = [hits(0x46), hits(0x47), hits(0x48)];
    gp(wrmsr(APIC_BASE_MSR, FIRMWARE_BASE), "x2APIC straight to xAPIC")?;
    ensure!(got == [1, 1, 1], "SELF IPI, physical and logical broadcast: {got:?}")?;
    ensure!(e == SEND_ILLEGAL | RECEIVE_ILLEGAL, "ESR {e:#x} after SELF IPI vector 5")
}
