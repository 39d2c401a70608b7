//! The exit fast path: exits whose emulation needs nothing but the guest's registers are
//! handled right in the exit stub's frame and the guest resumes at once, skipping the run
//! loop. Today that is CPUID (the most frequent exit of an idle Linux and the benchmark's
//! yardstick), answered by the same [`guest_cpuid`] as the slow path, except the leaves that depend on
//! the vCPU ([`per_vcpu`]: APIC ID, topology), which go the normal way.
//!
//! It is only armed when the CPU saves the VMX-preemption timer on exit (SDM §25.7.1), so time
//! slices still end while a guest spins on CPUID; anything unusual (an interrupt shadow, any
//! other exit) goes the normal way.

use super::exit::reason;
use super::fields::{Field, ReadOnly};
use super::instr::{vmread_unchecked, vmwrite_unchecked};
use crate::vmm::cpuid::{Regs, guest_cpuid, per_vcpu};
use crate::vmm::vcpu::{Gprs, reg};
use core::sync::atomic::{AtomicBool, Ordering};

/// Whether the fast path may handle exits (set by the backend from the CPU's controls).
pub static ENABLED: AtomicBool = AtomicBool::new(false);

const RFLAGS_TF: u64 = 1 << 8;

/// Called by the exit stub with the guest's registers; true (1) when the exit was handled
/// and the guest can resume.
pub extern "C" fn vmx_fast_exit(g: &mut Gprs) -> u64 {
    if !ENABLED.load(Ordering::Relaxed) {
        return 0;
    }
    // SAFETY: called only from `vmx_exit`, right after a VM exit of the current VMCS; these
    // fields exist on every VMX CPU.
    unsafe {
        // Under single-step (RFLAGS.TF) the normal way delivers the #DB: one test of
        // interruptibility and TF together.
        if vmread_unchecked(ReadOnly::ExitReason as u32) != u64::from(reason::CPUID)
            || vmread_unchecked(Field::GuestInterruptibility as u32)
                | (vmread_unchecked(Field::GuestRflags as u32) & RFLAGS_TF)
                != 0
        {
            return 0;
        }
        let (leaf, sub) = (g.0[reg::RAX] as u32, g.0[reg::RCX] as u32);
        // The leaves that say which vCPU asks (APIC ID, topology, APIC and OSXSAVE bits) go
        // the normal way, which knows it (leaf 0, the benchmarks' round trip, tested first).
        if leaf != 0 && per_vcpu(leaf) {
            return 0;
        }
        let h = core::arch::x86_64::__cpuid_count(leaf, sub);
        let r =
            guest_cpuid(leaf, sub, Regs { eax: h.eax, ebx: h.ebx, ecx: h.ecx, edx: h.edx }, false);
        g.0[reg::RAX] = u64::from(r.eax);
        g.0[reg::RBX] = u64::from(r.ebx);
        g.0[reg::RCX] = u64::from(r.ecx);
        g.0[reg::RDX] = u64::from(r.edx);
        let rip = vmread_unchecked(Field::GuestRip as u32)
            + vmread_unchecked(ReadOnly::ExitInstructionLength as u32);
        vmwrite_unchecked(Field::GuestRip as u32, rip);
    }
    // The count of exits handled here goes in the RSP slot, free while the guest runs (its RSP
    // lives in the VMCS; the stubs never touch the slot): per vCPU, so per CPU
    // (`VmxVcpu::run` zeroes it before the entry and takes it after).
    g.0[reg::RSP] += 1;
    1
}
