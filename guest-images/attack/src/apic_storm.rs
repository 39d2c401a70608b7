//! The `apic` mode's loop: storms of IPIs to itself, to everyone and to no one, NMIs, SMIs and
//! reserved delivery modes, INIT and start-up IPIs that restart vCPU 1 again and again (at
//! page 0x9000 and at page 0, the SIPI vector 0), x2APIC switched on and off, IA32_APIC_BASE
//! moved, disabled and re-enabled, a 1-tick periodic timer; then checks that the storms
//! coalesced as the SDM says and that the APIC still works. Also the two modes that must end
//! the partition: `apic-init-self` (an INIT to itself, the bootstrap vCPU: a reset) and
//! `apic-lock` (a locked read-modify-write of the APIC page, which no APIC register takes).

use core::arch::asm;

use guest_rt::{Checks, checks::Why, ensure, instr, paging, println};

use crate::apic::{
    ALL, APIC_BASE_MSR, BASE, EN, EXTD, FIRMWARE_BASE, LVT_TIMER, MASKED, NMIS, PERIODIC, SELF,
    TIMER_DIVIDE, TIMER_INITIAL, TPR, X2APIC, firmware_state, hits, icr, window, write, wrmsr,
};
use core::sync::atomic::Ordering;

/// vCPU 1's code: `cli; inc word [cs:0x800]; hlt; jmp hlt` (16-bit real mode, entered at
/// CS:0 by a start-up IPI), so each start counts at offset 0x800 of its page.
const HALT_LOOP: [u8; 9] = [0xfa, 0x2e, 0xff, 0x06, 0x00, 0x08, 0xf4, 0xeb, 0xfd];
/// The page the start-up IPIs name (vector 0x09), and page 0 (vector 0).
const AP_PAGE: u64 = 0x9000;
const STARTS: u64 = 0x800;
const INIT: u32 = 5 << 8;
const STARTUP: u32 = 6 << 8;
const NMI: u32 = 4 << 8;
const ASSERT: u32 = 1 << 14;
const LEVEL: u32 = 1 << 15;
const LOGICAL: u32 = 1 << 11;
const AP_ID: u8 = 1;
/// TSC ticks to wait for vCPU 1 to run (it runs when this one's slice ends).
const WAIT_TICKS: u64 = 400_000_000;

/// Copies `bytes` to guest-physical (identity-mapped) `addr`, which may be 0.
fn poke(addr: u64, bytes: &[u8]) {
    // SAFETY: `addr` is RAM of this partition that nothing else uses (the first megabyte's
    // pages 0 and 9, outside the boot structures at 0x1000-0x5FFF, `docs/guest-contract.md`);
    // `rep movsb` takes a null destination, which a Rust pointer write may not.
    unsafe {
        asm!(
            "rep movsb",
            inout("rdi") addr => _,
            inout("rsi") bytes.as_ptr() => _,
            inout("rcx") bytes.len() => _,
            options(nostack)
        )
    };
}

fn starts(page: u64) -> u16 {
    let v: u16;
    // SAFETY: a 16-bit read of this partition's RAM (page 0 included, hence the asm).
    unsafe { asm!("mov {:x}, word ptr [{}]", out(reg) v, in(reg) page + STARTS, options(nostack)) };
    v
}

/// INIT (assert, then the level de-assert), then two start-up IPIs at `vector` (the second
/// finds vCPU 1 running and is ignored), as a kernel starts an application processor.
fn init_sipi(vector: u8) {
    icr(AP_ID, INIT | ASSERT | LEVEL);
    icr(AP_ID, INIT | LEVEL);
    icr(AP_ID, STARTUP | u32::from(vector));
    icr(AP_ID, STARTUP | u32::from(vector));
}

/// One round of the storm. Interrupts are off except in the windows. No NMI ever goes to
/// vCPU 1: in real mode its handler would be whatever the IVT at address 0 says.
fn round(i: u64) {
    for _ in 0..200 {
        icr(0, SELF | 0x50);
    }
    for _ in 0..200 {
        icr(0, ALL | 0x51);
    }
    for _ in 0..100 {
        icr(0, SELF | NMI);
    }
    for _ in 0..100 {
        icr(7, 0x52); // physical ID 7: no such vCPU
        icr(0x80, LOGICAL | 0x52); // a logical ID no LDR has
    }
    for mode in [2u32, 3, 7] {
        // SMI and the two reserved modes, to everyone.
        for _ in 0..50 {
            icr(0, ALL | mode << 8 | 0x53);
        }
    }
    for _ in 0..50 {
        icr(0, SELF | 1 << 8 | 0x54); // lowest priority
        icr(AP_ID, STARTUP | 0x09); // not waiting for one: ignored
    }
    // Fixed IPIs to vCPU 1 and all of them: nothing it takes (it runs with interrupts off).
    icr(AP_ID, 0x55);
    window();
    if i % 4 == 3 {
        // SIPI vector 0: vCPU 1 starts at address 0; wait until it has run there.
        let (before, start) = (starts(0), instr::rdtsc());
        init_sipi(0);
        while starts(0) == before && instr::rdtsc() - start < WAIT_TICKS {
            instr::cpuid(0, 0);
        }
    } else {
        init_sipi((AP_PAGE >> 12) as u8);
    }
    // x2APIC on and off, with a storm through the MSRs.
    if wrmsr(APIC_BASE_MSR, FIRMWARE_BASE | EXTD).is_none() {
        X2APIC.store(true, Ordering::SeqCst);
        for _ in 0..100 {
            let _ = wrmsr(0x83f, 0x56);
            let _ = wrmsr(0x830, 0xffff_ffff_0000_0057);
        }
        window();
    }
    // A disable (out of x2APIC mode), then moves of the APIC base and bad x2APIC MSRs in
    // xAPIC mode: each refused with #GP and a log line, rate-limited.
    firmware_state();
    for _ in 0..20 {
        let _ = wrmsr(APIC_BASE_MSR, 0xfed0_0000 | EN);
        let _ = wrmsr(0x80b, 1);
    }
    // A 1-tick periodic timer for a moment, then stopped.
    write(TIMER_DIVIDE, 0b1011);
    write(LVT_TIMER, PERIODIC | 0x58);
    write(TIMER_INITIAL, 1);
    let start = instr::rdtsc();
    instr::sti();
    while instr::rdtsc() - start < 1_000_000 {
        instr::cpuid(0, 0);
    }
    instr::cli();
    write(TIMER_INITIAL, 0);
    write(LVT_TIMER, MASKED | 0x58);
}

pub fn run(c: &mut Checks, rounds: u64) {
    poke(AP_PAGE, &[0; 4096]);
    poke(AP_PAGE, &HALT_LOOP);
    poke(0, &HALT_LOOP);
    poke(STARTS, &[0, 0]);
    let nmis = NMIS.load(Ordering::SeqCst);
    for i in 0..rounds {
        round(i);
    }
    let start = instr::rdtsc();
    init_sipi((AP_PAGE >> 12) as u8);
    while starts(AP_PAGE) == 0 && instr::rdtsc() - start < WAIT_TICKS {
        instr::cpuid(0, 0);
    }
    c.check("apic-abuse-storm-coalesced", coalesced(rounds, nmis));
    c.check("apic-abuse-sipi-starts", sipi_starts(rounds));
    c.check("apic-abuse-still-works", still_works());
}

fn coalesced(rounds: u64, nmis_before: u32) -> Result<(), Why> {
    let nmis = NMIS.load(Ordering::SeqCst) - nmis_before;
    // 200 fixed self-IPIs with interrupts off: one IRR bit, one interrupt per round.
    ensure!(
        u64::from(hits(0x50)) == rounds,
        "{} interrupts of 0x50 in {rounds} rounds",
        hits(0x50)
    )?;
    ensure!(u64::from(hits(0x51)) == rounds, "{} of 0x51 (all) in {rounds} rounds", hits(0x51))?;
    ensure!(hits(0x52) == 0 && hits(0x53) == 0, "an IPI to nobody, or an SMI, came in")?;
    ensure!(hits(0x55) == 0, "an IPI to vCPU 1 came here")?;
    ensure!(nmis >= 1 && u64::from(nmis) <= rounds * 100, "{nmis} NMIs for the storms")
}

fn sipi_starts(rounds: u64) -> Result<(), Why> {
    let (page9, page0) = (starts(AP_PAGE), starts(0));
    ensure!(page9 >= 1, "vCPU 1 never ran at {AP_PAGE:#x} ({rounds} INIT-SIPIs)")?;
    ensure!(rounds < 4 || page0 >= 1, "vCPU 1 never ran at 0 (SIPI vector 0)")?;
    println!("attack: vCPU 1 started {page9} times at {AP_PAGE:#x}, {page0} at 0");
    Ok(())
}

fn still_works() -> Result<(), Why> {
    let before = hits(0x60);
    icr(0, SELF | 0x60);
    write(TPR, 0);
    window();
    write(TIMER_DIVIDE, 0b1011);
    write(LVT_TIMER, 0x61);
    write(TIMER_INITIAL, 1000);
    let start = instr::rdtsc();
    while hits(0x61) == 0 && instr::rdtsc() - start < WAIT_TICKS {
        window();
    }
    ensure!(hits(0x60) == before + 1, "a self IPI after the storm: {}", hits(0x60) - before)?;
    ensure!(hits(0x61) == 1, "the one-shot timer after the storm: {}", hits(0x61))
}

/// `apic-init-self`: a short storm, then INIT to itself, the bootstrap vCPU: the hypervisor
/// takes it as a reset and stops the partition. Returns if it did not.
pub fn init_self() {
    // SAFETY: as in `apic::run`.
    if unsafe { paging::map_2m(BASE, BASE, paging::Caching::Uncached) }.is_err() {
        return;
    }
    guest_rt::register_handler(2, crate::apic::on_nmi);
    for _ in 0..100 {
        icr(0, SELF | 0x50);
        icr(0, SELF | NMI);
    }
    icr(0, SELF | INIT | ASSERT | LEVEL);
    println!("FAIL apic-init-self: still running after an INIT to itself");
}

/// `apic-lock`: `lock or` on the TPR: an instruction the hypervisor does not emulate on the
/// APIC page, so it stops the partition. Returns if it did not.
pub fn lock() {
    // SAFETY: as in `apic::run`.
    if unsafe { paging::map_2m(BASE, BASE, paging::Caching::Uncached) }.is_err() {
        return;
    }
    // SAFETY: a locked OR of 0 into the APIC's TPR: no memory of ours.
    unsafe {
        asm!("lock or dword ptr [{}], {:e}", in(reg) BASE + TPR, in(reg) 0u32, options(nostack))
    };
    println!("FAIL apic-lock: still running after a locked access to the APIC page");
}
