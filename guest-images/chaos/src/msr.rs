//! RDMSR and WRMSR over the whole MSR space, biased to the ranges where MSRs live: the
//! architectural and model-specific `0..0x2000`, the AMD64 `0xc000_0000..0xc000_2000` and
//! `0xc001_0000..0xc001_2000`, and the hypervisor range `0x4000_0000..0x4000_0200`
//! (synthetic MSRs of other hypervisors). A read that succeeds may be followed by a write of a
//! random or nearby value and then of the value read, so the guest keeps its own state; a read
//! that faults may be followed by a write, which must fault too or be harmless.

use guest_rt::instr;

use crate::Ctx;

const EFER: u32 = 0xc000_0080;

fn index(ctx: &mut Ctx) -> u32 {
    let r = &mut ctx.rng;
    match r.below(20) {
        0..=7 => r.below(0x2000) as u32,
        8..=12 => 0xc000_0000 + r.below(0x2000) as u32,
        13..=16 => 0xc001_0000 + r.below(0x2000) as u32,
        17 => 0x4000_0000 + r.below(0x200) as u32,
        _ => r.next() as u32,
    }
}

/// A value to write over `old`: random, a bit flipped, all ones, zero or `old` itself.
fn value(ctx: &mut Ctx, old: u64) -> u64 {
    let r = &mut ctx.rng;
    match r.below(6) {
        0 => r.next(),
        1 | 2 => old ^ r.sparse(),
        3 => !0,
        4 => 0,
        _ => old,
    }
}

pub fn run(ctx: &mut Ctx) {
    let msr = index(ctx);
    write_random(ctx, msr);
}

/// EFER (`0xc000_0080`) with random bits flipped: LME while paging is on, LMA, SVME and
/// reserved bits must raise #GP; SCE and NXE may change. The working value goes back after.
pub fn efer(ctx: &mut Ctx) {
    write_random(ctx, EFER);
}

fn write_random(ctx: &mut Ctx, msr: u32) {
    let mut old = None;
    ctx.catch(|| {
        // SAFETY: RDMSR changes nothing; a refused MSR raises #GP, which `catch` takes.
        old = Some(unsafe { instr::rdmsr(msr) });
    });
    if !ctx.rng.chance(1, 2) {
        return;
    }
    let new = value(ctx, old.unwrap_or(0));
    ctx.catch(|| {
        // SAFETY: every MSR a partition may write is this partition's own state (the
        // allow-list, `docs/guest-contract.md`); the value read before goes back at once.
        // Writes to an MSR whose read faulted must fault too or change nothing this guest
        // uses: it never executes SYSCALL/SYSENTER, uses neither FS nor GS, and the PAT or
        // an MTRR value it sets lasts two instructions.
        unsafe {
            instr::wrmsr(msr, new);
            if let Some(old) = old {
                instr::wrmsr(msr, old);
            }
        }
    });
    if let Some(old) = old {
        // SAFETY: the value read before: the guest's working state.
        ctx.catch(|| unsafe { instr::wrmsr(msr, old) });
    }
}
