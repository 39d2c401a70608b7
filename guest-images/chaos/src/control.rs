//! Writes of random bits to CR0, CR3, CR4, CR8, DR0-DR7 and XCR0. Each write is followed at
//! once (no Rust code between) by a write of the guest's own working value, so the guest keeps
//! running whether the hypervisor took the random value or raised #GP; the working value is
//! written once more after the operation in case the first restore was skipped by a fault.
//!
//! Left out (the exclusion list): CR3 values that do not name this guest's page tables (the
//! next fetch would walk garbage: a partition ending by its own doing, tried by the `attack`
//! guest); CR4.SMEP, SMAP, PKE and CET (whether the guest's own pages become unusable depends
//! on the U/S bits of its page tables: a legitimate end, not a hypervisor's fault).

use core::arch::asm;

use guest_rt::exception::InterruptFrame;
use guest_rt::instr;

use crate::Ctx;

// CR0 bits (SDM Vol. 3, 2.5).
const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
const CR0_EM: u64 = 1 << 2;
const CR0_TS: u64 = 1 << 3;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_AM: u64 = 1 << 18;
const CR0_NW: u64 = 1 << 29;
const CR0_CD: u64 = 1 << 30;
const CR0_PG: u64 = 1 << 31;

// CR4 bits the guest may flip (SDM Vol. 3, 2.5): VME, PVI, TSD, DE, PSE, PAE, MCE, PGE, PCE,
// OSFXSR, OSXMMEXCPT, UMIP, LA57, VMXE, SMXE, FSGSBASE, PCIDE, OSXSAVE, KL.
const CR4_FLIP: u64 = 0b1111_1111_1111 | 1 << 13 | 1 << 14 | 1 << 16 | 1 << 17 | 1 << 18 | 1 << 19;
/// The bits above: SMEP (20), SMAP (21), PKE (22), CET (23), PKS (24) and UINTR (25) stay
/// as they are (see the module documentation).
const CR4_KEEP: u64 = 0x3f << 20;

/// Writes `value` to CR`n` and the working value `old` right after.
macro_rules! write_and_restore {
    ($cr:literal, $value:expr, $old:expr) => {
        // SAFETY: `value` is either refused (#GP, caught by the caller's `catch`) or taken for
        // the two instructions until `old`, the guest's working value, is back; none of the
        // bits flipped can stop those two instructions from running (see the module docs).
        unsafe {
            asm!(concat!("mov ", $cr, ", {v}"), concat!("mov ", $cr, ", {o}"),
                v = in(reg) $value, o = in(reg) $old, options(nostack))
        }
    };
}

/// SVM does not intercept CR3 writes (issue 13 finding 5: the hypervisor decided against it,
/// since it costs Linux 7% of its boot; a real AMD CPU refuses a reserved CR3 bit itself, but
/// QEMU 7.2's TCG lets it through to fail the next VMRUN). So a CR3 with a bit above
/// MAXPHYADDR is drawn only with `strict=1` on SVM. CR0 is intercepted and checked on both
/// backends, so every CR0 value is drawn everywhere.
fn cr3_reserved_ok(ctx: &Ctx) -> bool {
    ctx.strict || guest_rt::hypercall::uses_vmcall()
}

pub fn cr(ctx: &mut Ctx) {
    let reserved = cr3_reserved_ok(ctx);
    let r = &mut ctx.rng;
    match r.below(4) {
        0 => {
            let old = instr::read_cr0();
            let mut flip =
                r.subset(CR0_MP | CR0_EM | CR0_TS | CR0_NE | CR0_WP | CR0_AM | CR0_NW | CR0_CD);
            if r.chance(1, 4) {
                flip |= r.pick(&[CR0_PE, CR0_PG, CR0_ET, 1 << 40, 1 << 63, 1 << 6]);
            }
            let new = old ^ flip;
            ctx.catch(|| write_and_restore!("cr0", new, old));
            // SAFETY: the working value, taken at the start.
            ctx.catch(|| unsafe { asm!("mov cr0, {}", in(reg) old) });
        }
        1 => {
            let old = instr::read_cr3();
            // The same tables with PWT/PCD flipped, or with a reserved or PCID bit set.
            let mut flip = r.pick(&[0, 1 << 3, 1 << 4, 1 << 62, 1 << 63, 1 << 51, 1 << 52, 0x7]);
            if r.chance(1, 8) {
                flip ^= r.sparse() & !0x000f_ffff_ffff_f000;
            }
            if !reserved {
                flip &= 0xfff;
            }
            let new = old ^ flip;
            ctx.catch(|| write_and_restore!("cr3", new, old));
            // SAFETY: the working value.
            ctx.catch(|| unsafe { asm!("mov cr3, {}", in(reg) old) });
        }
        2 => {
            let old = instr::read_cr4();
            let flip = r.subset(CR4_FLIP) & if r.chance(1, 2) { r.sparse() } else { !0 };
            let flip =
                (flip | if r.chance(1, 8) { r.sparse() & !0x3ff_ffff } else { 0 }) & !CR4_KEEP;
            let new = old ^ flip;
            ctx.catch(|| write_and_restore!("cr4", new, old));
            // SAFETY: the working value.
            ctx.catch(|| unsafe { asm!("mov cr4, {}", in(reg) old) });
        }
        _ if !guest_rt::hypercall::uses_vmcall() && !ctx.strict => {
            // Left out on SVM: QEMU 7.2's TCG (our SVM test machine) aborts on a CR8 write in
            // an SVM guest ("tcg_handle_interrupt: assertion failed:
            // (qemu_mutex_iothread_locked())"): an emulator bug, not the hypervisor's.
        }
        _ => {
            // CR8 (TPR): 0..15 are valid, any bit above 3 raises #GP (SDM Vol. 3, 2.5).
            let new = if r.chance(3, 4) { r.below(16) } else { r.next() };
            ctx.catch(|| write_and_restore!("cr8", new, 0u64));
            // SAFETY: TPR 0, the working value.
            ctx.catch(|| unsafe { asm!("mov cr8, {}", in(reg) 0u64) });
        }
    }
}

/// DR0-DR7 with random values: breakpoints at random addresses (now and then at this guest's
/// own stack, so that one fires), DR6/DR7 with reserved bits (#GP), DR4/DR5 (aliases of DR6/DR7,
/// or #UD with CR4.DE), DR7.GD (the next debug-register access raises #DB). The registers are
/// cleared afterwards; a breakpoint that fires outside an operation is handled by
/// [`on_debug`].
pub fn dr(ctx: &mut Ctx) {
    let r = &mut ctx.rng;
    let n = r.below(8);
    let mut target = 0u64;
    let value = match n {
        0..=3 if r.chance(1, 2) => &raw mut target as u64,
        0..=3 => r.next(),
        6 => (r.next() & 0xffff_ffff) ^ if r.chance(1, 4) { r.sparse() } else { 0 },
        _ => r.subset(0xffff_27ff) | if r.chance(1, 4) { r.sparse() } else { 0 },
    };
    // Sometimes also a live breakpoint: DR0 on `target`, DR7 L0 with R/W = 11 (data reads and
    // writes) and LEN = 10 (8 bytes) (SDM Vol. 3, 18.2.4): the write below raises #DB.
    let arm = r.chance(1, 3);
    let t = &raw mut target;
    ctx.catch(|| {
        // SAFETY: debug registers change no memory; a breakpoint set here fires at most on
        // `target` (this frame's own) or on random addresses this guest does not use, and is
        // cleared below; every #DB or #GP is caught.
        unsafe {
            match n {
                0 => asm!("mov dr0, {}", in(reg) value),
                1 => asm!("mov dr1, {}", in(reg) value),
                2 => asm!("mov dr2, {}", in(reg) value),
                3 => asm!("mov dr3, {}", in(reg) value),
                4 => asm!("mov dr4, {}", in(reg) value),
                5 => asm!("mov dr5, {}", in(reg) value),
                6 => asm!("mov dr6, {}", in(reg) value),
                _ => asm!("mov dr7, {}", in(reg) value),
            }
            if arm {
                asm!("mov dr0, {t}", "mov dr7, {c}", t = in(reg) t, c = in(reg) 0xb_0001u64);
            }
            // Touch the target and read a debug register: a breakpoint or DR7.GD fires here.
            t.write_volatile(1);
            asm!("mov {}, dr6", out(reg) _);
        }
    });
    restore_debug();
}

/// DR7 and DR0-DR3 back to 0 (each tried more than once: with DR7.GD set, the first access
/// raises #DB, whose delivery clears GD).
pub fn restore_debug() {
    for _ in 0..3 {
        let e = guest_rt::expect_exception(|| {
            // SAFETY: clearing the debug registers disables every breakpoint.
            unsafe {
                asm!("mov dr7, {z}", "mov dr0, {z}", "mov dr1, {z}", "mov dr2, {z}",
                    "mov dr3, {z}", "mov dr6, {s}", z = in(reg) 0u64, s = in(reg) 0xffff_0ff0u64)
            }
        });
        if e.is_none() {
            break;
        }
    }
}

/// #DB outside an operation (a breakpoint left armed): clear DR7 and resume with RF set, so
/// an instruction breakpoint does not fire again (SDM Vol. 3, 18.3.1.1).
pub fn on_debug(frame: &mut InterruptFrame) {
    // SAFETY: clearing DR7 disables every breakpoint; GD was cleared by the #DB delivery.
    unsafe { asm!("mov dr7, {}", in(reg) 0u64, options(nostack)) };
    frame.rflags = (frame.rflags | 1 << 16) & !(1 << 8);
}

/// XCR0 with random bits through XSETBV (XCR0 bit 0 clear, AVX without SSE, bits the CPU does
/// not support, XCR numbers other than 0: #GP), then the working value back; XGETBV of random
/// XCR numbers. Needs CPUID.1:ECX.XSAVE; CR4.OSXSAVE is set for the operation if it was clear.
pub fn xcr0(ctx: &mut Ctx) {
    if instr::cpuid(1, 0).ecx & (1 << 26) == 0 {
        // No XSAVE: XSETBV raises #UD.
        // SAFETY: XSETBV without XSAVE support faults before it changes anything.
        ctx.catch(|| unsafe { instr::xsetbv(0, 1) });
        return;
    }
    let cr4 = instr::read_cr4();
    let osxsave = 1 << 18;
    // SAFETY: OSXSAVE only enables XGETBV/XSETBV; the old CR4 is written back below.
    ctx.catch(|| unsafe { instr::write_cr4(cr4 | osxsave) });
    let old = instr::xgetbv(0);
    let r = &mut ctx.rng;
    let xcr = if r.chance(7, 8) { 0 } else { r.next() as u32 };
    let value = r.subset(0x2ff) | if r.chance(1, 8) { r.sparse() } else { 0 };
    let getbv = r.next() as u32 & 3;
    ctx.catch(|| {
        // SAFETY: XCR0 only decides which state XSAVE manages; this guest uses no XSAVE, no
        // SSE and no AVX, and the old value is written back at once.
        unsafe {
            instr::xsetbv(xcr, value);
            instr::xsetbv(0, old);
        }
    });
    // SAFETY: as above: the working value.
    ctx.catch(|| unsafe { instr::xsetbv(0, old) });
    ctx.catch(|| {
        instr::xgetbv(getbv);
    });
    // SAFETY: the working value of CR4.
    ctx.catch(|| unsafe { instr::write_cr4(cr4) });
}
