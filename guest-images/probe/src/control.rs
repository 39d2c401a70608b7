//! Control-register writes the architecture refuses with #GP(0) (SDM Vol. 2B MOV to CR, APM
//! Vol. 2 §3.1; issue 13, item 5), and CLTS/LMSW, which write CR0 too. Under SVM the
//! hypervisor intercepts these writes to check them; a bad value must give the guest #GP, not
//! end the partition.

use core::arch::asm;

use guest_rt::exception::GP;
use guest_rt::{Checks, checks::Why, ensure, expect_exception, instr};

use crate::cpu::faulted;

const CR0_TS: u64 = 1 << 3;
const CR0_NW: u64 = 1 << 29;
const CR0_PG: u64 = 1 << 31;

fn write_cr0(v: u64) {
    // SAFETY: the callers pass the current CR0 with at most TS changed (harmless: no FPU use
    // here) or a value the CPU refuses with #GP, caught by expect_exception.
    unsafe { asm!("mov cr0, {}", in(reg) v, options(nostack, preserves_flags)) };
}

pub fn run(c: &mut Checks) {
    let cr0 = instr::read_cr0();
    let e = expect_exception(|| write_cr0(cr0 | CR0_NW));
    c.check("cr0-nw-without-cd-gp", faulted(e, GP, Some(0)));
    let e = expect_exception(|| write_cr0(cr0 & !CR0_PG));
    c.check("cr0-pg-clear-long-mode-gp", faulted(e, GP, Some(0)));
    c.check_eq("cr0-unchanged-after-gp", instr::read_cr0(), cr0);
    // A reserved CR3 bit is not checked here: CPUs refuse it themselves, QEMU TCG does not,
    // and the SVM backend does not intercept CR3 writes (arch/svm/vcpu.rs says why).
    let cr3 = instr::read_cr3();
    // SAFETY: the same page tables: a TLB flush and nothing else.
    let e = expect_exception(|| unsafe { instr::write_cr3(cr3) });
    c.check(
        "cr3-reload",
        ensure_none(e).and_then(|()| {
            let now = instr::read_cr3();
            ensure!(now == cr3, "CR3 {now:#x} after reloading {cr3:#x}")
        }),
    );
    c.check("clts-lmsw", clts_lmsw(cr0));
}

fn ensure_none(e: Option<guest_rt::Exception>) -> Result<(), Why> {
    e.map_or(Ok(()), |e| Err(guest_rt::why!("raised {e}")))
}

/// TS set by MOV, cleared by CLTS; set by LMSW from a register, which cannot clear PE.
fn clts_lmsw(cr0: u64) -> Result<(), Why> {
    write_cr0(cr0 | CR0_TS);
    ensure!(instr::read_cr0() & CR0_TS != 0, "TS clear after MOV CR0")?;
    // SAFETY: CLTS only clears CR0.TS.
    let e = expect_exception(|| unsafe { asm!("clts", options(nostack, preserves_flags)) });
    ensure_none(e)?;
    let now = instr::read_cr0();
    ensure!(now == cr0 & !CR0_TS, "CR0 {now:#x} after CLTS, want {:#x}", cr0 & !CR0_TS)?;
    // LMSW with PE clear and TS set: PE stays, TS is set, MP (bit 1) and EM (bit 2) follow.
    let msw = (cr0 & 0xe) | CR0_TS;
    // SAFETY: LMSW loads CR0 bits 3:0; PE cannot be cleared; TS is harmless here.
    let e = expect_exception(|| unsafe {
        asm!("lmsw {0:x}", in(reg) msw, options(nostack, preserves_flags))
    });
    ensure_none(e)?;
    let now = instr::read_cr0();
    write_cr0(cr0);
    ensure!(now == cr0 | CR0_TS, "CR0 {now:#x} after LMSW {msw:#x}, want {:#x}", cr0 | CR0_TS)
}
