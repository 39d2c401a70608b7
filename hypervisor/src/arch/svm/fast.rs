//! The exit fast path, as on VMX (`arch/vmx/fast.rs`): a CPUID exit with nothing pending is
//! answered inside the world-switch stub ([`super::entry::svm_run`]) and the guest resumes at
//! once, without returning to the run loop. A CPUID under single-step (RFLAGS.TF) goes the
//! normal way, which delivers the #DB. The answer is the core's own [`guest_cpuid`]; the leaves that depend on the vCPU
//! ([`per_vcpu`]: APIC ID, topology) go the normal way.
//!
//! The instruction's length comes from NRIP save (APM Vol. 2 §15.7.1) where the CPU has it.
//! Without it (QEMU TCG) it comes from the site the core last decoded
//! ([`crate::vmm::code_site::CodeSite`]): the same RIP under the same CR3, through the same
//! page-table entries, with the same bytes there, is the same instruction. Anything else (an interrupt
//! shadow, an event being delivered again, the end of the time slice) goes the normal way.

use super::vmcb::{INTERRUPT_SHADOW, TLB_FLUSH_NOTHING, Vmcb};
use crate::arch::x86::instr::rdtsc;
use crate::vmm::code_site::CodeSite;
use crate::vmm::cpuid::{Regs, guest_cpuid, per_vcpu};
use crate::vmm::vcpu::{Gprs, reg};

/// SVM exit code of CPUID (APM Vol. 2 Appendix C).
const EXIT_CPUID: u64 = 0x72;
/// EXITINTINFO.V: an event was being delivered when the exit happened (§15.7.2).
const EXITINTINFO_VALID: u64 = 1 << 31;
/// RFLAGS.TF: the core delivers the single-step #DB after an emulated instruction.
const RFLAGS_TF: u64 = 1 << 8;

/// What the stub's fast path needs of the vCPU, for one [`super::entry::svm_run`].
#[derive(Debug)]
#[repr(C)]
pub struct FastCtx {
    pub vmcb: *mut Vmcb,
    pub nrip_save: bool,
    /// The vCPU's [`CodeSite`] (null: none), valid for the run.
    pub site: *const CodeSite,
    /// TSC at the start of the run and the time slice (0: none).
    pub start: u64,
    pub timeslice: u64,
    /// Exits handled here during the run.
    pub handled: u64,
}

/// Called by the stub after each #VMEXIT, with the host's state loaded again and the guest's
/// general registers in `g` (RAX and RSP are in the VMCB). 1 when the exit was handled and the
/// guest may resume.
pub extern "C" fn svm_fast_exit(g: &mut Gprs, ctx: &mut FastCtx) -> u64 {
    // SAFETY: `vmcb` is the running vCPU's VMCB (identity-mapped, owned by it); the CPU does
    // not touch it between #VMEXIT and the next VMRUN, and no other reference is live while
    // the stub runs.
    let v = unsafe { &mut *ctx.vmcb };
    let c = &v.control;
    if c.exit_code != EXIT_CPUID
        || c.exit_int_info & EXITINTINFO_VALID != 0
        || c.int_state & INTERRUPT_SHADOW != 0
        || v.save.rflags & RFLAGS_TF != 0
        || (ctx.timeslice != 0 && rdtsc().wrapping_sub(ctx.start) >= ctx.timeslice)
    {
        return 0;
    }
    let rip = v.save.rip;
    let next = if ctx.nrip_save && c.next_rip != 0 {
        c.next_rip
    } else {
        // SAFETY: `site` is null or the vCPU's site, alive and unchanged during the run.
        match unsafe { ctx.site.as_ref() } {
            // SAFETY: the site was captured from this partition's RAM, which outlives its
            // vCPU; the guest is not running.
            Some(s) if unsafe { s.still_valid(rip, v.save.cr3) } => rip + u64::from(s.len),
            _ => return 0,
        }
    };
    let (leaf, sub) = (v.save.rax as u32, g.0[reg::RCX] as u32);
    // The leaves that say which vCPU asks (APIC ID, topology, APIC and OSXSAVE bits) go the
    // normal way, which knows it (leaf 0, the benchmarks' round trip, tested first).
    if leaf != 0 && per_vcpu(leaf) {
        return 0;
    }
    let h = core::arch::x86_64::__cpuid_count(leaf, sub);
    let r = guest_cpuid(leaf, sub, Regs { eax: h.eax, ebx: h.ebx, ecx: h.ecx, edx: h.edx }, false);
    v.save.rax = u64::from(r.eax);
    g.0[reg::RBX] = u64::from(r.ebx);
    g.0[reg::RCX] = u64::from(r.ecx);
    g.0[reg::RDX] = u64::from(r.edx);
    v.save.rip = next;
    v.control.tlb_control = TLB_FLUSH_NOTHING;
    ctx.handled += 1;
    1
}
