//! CPUID in several encodings, the other instructions a hypervisor intercepts or must refuse,
//! and single-stepping across an emulated instruction.

use core::arch::asm;

use crate::Ctx;

/// A leaf biased to the ranges that mean something: basic, hypervisor, extended, or any.
fn leaf(ctx: &mut Ctx) -> u32 {
    let r = &mut ctx.rng;
    match r.below(8) {
        0..=2 => r.below(0x24) as u32,
        3 | 4 => 0x4000_0000 + r.below(0x120) as u32,
        5 | 6 => 0x8000_0000 + r.below(0x30) as u32,
        _ => r.next() as u32,
    }
}

/// CPUID with a random leaf and subleaf, in one of several encodings (legacy prefixes that
/// the CPU ignores make the instruction 2 to 5 bytes long: a hypervisor that computes the
/// length itself, as SVM without NRIP save must, has to get each right).
pub fn cpuid(ctx: &mut Ctx) {
    let eax = leaf(ctx);
    let ecx = if ctx.rng.chance(1, 2) { ctx.rng.below(4) } else { ctx.rng.next() } as u32;
    let form = ctx.rng.below(5);
    ctx.catch(|| {
        // SAFETY: CPUID only writes EAX, EBX, ECX, EDX (RBX is saved around it: LLVM reserves
        // it); the prefixes (CS/DS segment override, operand size, REX) do not change CPUID.
        unsafe {
            match form {
                0 => asm!("mov {s}, rbx", "cpuid", "mov rbx, {s}", s = out(reg) _,
                    inout("eax") eax => _, inout("ecx") ecx => _, out("edx") _),
                1 => asm!("mov {s}, rbx", ".byte 0x2e, 0x0f, 0xa2", "mov rbx, {s}", s = out(reg) _,
                    inout("eax") eax => _, inout("ecx") ecx => _, out("edx") _),
                2 => asm!("mov {s}, rbx", ".byte 0x66, 0x0f, 0xa2", "mov rbx, {s}", s = out(reg) _,
                    inout("eax") eax => _, inout("ecx") ecx => _, out("edx") _),
                3 => asm!("mov {s}, rbx", ".byte 0x3e, 0x48, 0x0f, 0xa2", "mov rbx, {s}",
                    s = out(reg) _, inout("eax") eax => _, inout("ecx") ecx => _, out("edx") _),
                _ => asm!("mov {s}, rbx", ".byte 0x2e, 0x3e, 0x66, 0x0f, 0xa2", "mov rbx, {s}",
                    s = out(reg) _, inout("eax") eax => _, inout("ecx") ecx => _, out("edx") _),
            }
        }
    });
}

/// One of the other instructions a hypervisor must intercept or refuse: WBINVD, INVD, RDPMC
/// (random counter), RDTSC, RDTSCP, MONITOR/MWAIT, GETSEC, RDRAND, SGDT/SIDT with LGDT/LIDT of
/// the same values, INVPCID, the VMX and SVM instructions, a VMCALL/VMMCALL of the other
/// vendor. HLT is left out here (the timer operation has it: with interrupts off it ends the
/// partition, which the guest contract says).
pub fn misc(ctx: &mut Ctx) {
    let which = ctx.rng.below(16);
    let ecx = if ctx.rng.chance(1, 2) { ctx.rng.below(8) } else { ctx.rng.next() } as u32;
    let mut scratch = [0u64; 4];
    let p = scratch.as_mut_ptr();
    ctx.catch(|| {
        // SAFETY: each instruction either runs as on the bare CPU at CPL 0 with no lasting
        // effect (WBINVD, RDPMC, RDTSC, RDRAND; SGDT/SIDT then loading the same values back),
        // or raises the exception the guest contract gives it (#UD for VMX/SVM instructions,
        // RDTSCP, MONITOR/MWAIT, GETSEC), which `catch` takes. INVD is emulated as WBINVD.
        // Memory operands point at `scratch`, this frame's own buffer.
        unsafe {
            match which {
                0 => asm!("wbinvd"),
                1 => asm!("invd"),
                2 => asm!("rdpmc", in("ecx") ecx, out("eax") _, out("edx") _),
                3 => asm!("rdtsc", out("eax") _, out("edx") _),
                4 => asm!("rdtscp", out("eax") _, out("edx") _, out("ecx") _),
                5 => asm!("monitor", in("rax") p, in("ecx") 0, in("edx") 0),
                6 => asm!("mwait", in("eax") 0, in("ecx") 0),
                7 => asm!("mov {s}, rbx", "getsec", "mov rbx, {s}", s = out(reg) _,
                    inout("eax") 0 => _, out("ecx") _, out("edx") _),
                8 => asm!("rdrand {}", out(reg) _),
                9 => asm!("sgdt [{p}]", "lgdt [{p}]", "sidt [{p}+16]", "lidt [{p}+16]", p = in(reg) p),
                10 => asm!("invpcid {}, [{}]", in(reg) u64::from(ecx & 3), in(reg) p),
                11 => asm!("vmxoff"),
                12 => asm!("vmread {}, {}", out(reg) _, in(reg) u64::from(ecx)),
                13 => asm!("clgi"),
                14 => asm!("vmload rax", in("rax") p),
                _ => {
                    // The other vendor's hypercall instruction: #UD on a real CPU, or (where a
                    // hypervisor accepts both) a call with a random number.
                    if guest_rt::hypercall::uses_vmcall() {
                        asm!("vmmcall", inout("rax") u64::from(ecx) | 0x100 => _, out("rdx") _)
                    } else {
                        asm!("vmcall", inout("rax") u64::from(ecx) | 0x100 => _, out("rdx") _)
                    }
                }
            }
        }
    });
}

/// RFLAGS.TF set before an emulated instruction (CPUID, an absent port read, a hypercall):
/// the hardware raises the single-step #DB after it (SDM Vol. 3, 18.3.1.4), which `catch`
/// takes; a hypervisor that loses it delivers the trap one instruction later, still inside.
pub fn single_step(ctx: &mut Ctx) {
    let which = ctx.rng.below(3);
    let leaf = ctx.rng.below(0x20) as u32;
    ctx.catch(|| {
        // SAFETY: TF is set for a few instructions only; the #DB it raises is caught and the
        // RFLAGS `catch` saved (TF clear) are restored. Every instruction after the emulated
        // one is a NOP, so where the trap lands changes nothing; the last POPFQ clears TF in
        // case no trap came at all.
        unsafe {
            match which {
                0 => asm!("mov {s}, rbx", "pushfq", "or qword ptr [rsp], 0x100", "popfq",
                    "cpuid", "nop", "nop", "pushfq", "and qword ptr [rsp], ~0x100", "popfq",
                    "mov rbx, {s}", s = out(reg) _, inout("eax") leaf => _, out("ecx") _,
                    out("edx") _),
                1 => asm!("pushfq", "or qword ptr [rsp], 0x100", "popfq", "in al, dx", "nop",
                    "nop", "pushfq", "and qword ptr [rsp], ~0x100", "popfq", in("dx") 0x1f7u16,
                    out("al") _),
                _ if guest_rt::hypercall::uses_vmcall() => asm!("pushfq",
                    "or qword ptr [rsp], 0x100", "popfq", "vmcall", "nop", "pushfq",
                    "and qword ptr [rsp], ~0x100", "popfq", inout("rax") 0u64 => _, out("rdx") _),
                _ => asm!("pushfq", "or qword ptr [rsp], 0x100", "popfq", "vmmcall", "nop",
                    "pushfq", "and qword ptr [rsp], ~0x100", "popfq", inout("rax") 0u64 => _,
                    out("rdx") _),
            }
        }
    });
}
