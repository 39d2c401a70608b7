//! The guest's SYSCALL MSRs and KERNEL_GS_BASE on VMX, switched lazily.
//!
//! The CPU uses STAR, LSTAR, CSTAR and FMASK on every SYSCALL and KERNEL_GS_BASE on every
//! SWAPGS, and VM entry and exit switch none of them (no VMCS fields, SDM Vol. 3C §25.4/§25.5).
//! They could go through the VM-entry MSR-load and VM-exit MSR-store/load lists (§25.7.2,
//! §25.8.2, §27.4, §28.6), at the price of ten MSR accesses on every exit. Instead, as
//! production hypervisors do: the hypervisor itself never executes SYSCALL, SYSRET or SWAPGS,
//! so the CPU may keep a guest's values while in the host. They are written to the CPU only
//! when a different vCPU is about to run here ([`GuestMsrs::activate`]), and KERNEL_GS_BASE,
//! the only one the guest changes without an exit, is read back from the CPU when its owner
//! is replaced or asks for it. Exits, the fast path included, pay nothing.
//!
//! Ownership is the address of the owner's [`GuestMsrs`] (boxed, so it does not move), cleared
//! when that is dropped: a later vCPU allocated at the same place, or given the same VPID,
//! loads its own values. One record per CPU (the MSRs are per logical processor), as
//! [`super::vmcs`]'s current-VMCS record: a vCPU runs only on the CPU that made it (a pinned
//! partition's on its own CPU), and a single record for all CPUs would let one CPU save its own
//! KERNEL_GS_BASE into the vCPU another CPU had loaded.

use crate::arch::x86::instr::{rdmsr, wrmsr};
use crate::vmm::msr::{IA32_CSTAR, IA32_FMASK, IA32_KERNEL_GS_BASE, IA32_LSTAR, IA32_STAR};
use crate::vmm::vcpu::HwMsr;
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

/// Per CPU index: whose values that CPU holds now (null: nobody's, the host's or a dropped
/// vCPU's).
static OWNER: [AtomicPtr<GuestMsrs>; crate::arch::x86::smp::MAX_CPUS] =
    [const { AtomicPtr::new(ptr::null_mut()) }; crate::arch::x86::smp::MAX_CPUS];

/// The MSRs switched here, in `MSRS` order.
const MSRS: [u32; 5] = [IA32_STAR, IA32_LSTAR, IA32_CSTAR, IA32_FMASK, IA32_KERNEL_GS_BASE];
const KGS: usize = 4;

/// One vCPU's values (all 0 at reset, SDM Vol. 3A Table 10-1).
#[derive(Debug)]
pub struct GuestMsrs {
    values: [u64; MSRS.len()],
    /// The owner record of the CPU it runs on.
    owner: &'static AtomicPtr<GuestMsrs>,
}

fn index(m: HwMsr) -> Option<usize> {
    Some(match m {
        HwMsr::Star => 0,
        HwMsr::Lstar => 1,
        HwMsr::Cstar => 2,
        HwMsr::Fmask => 3,
        HwMsr::KernelGsBase => KGS,
        _ => return None,
    })
}

impl GuestMsrs {
    /// All 0, for a vCPU of CPU `cpu` (an index).
    pub fn new(cpu: usize) -> Self {
        Self { values: [0; MSRS.len()], owner: &OWNER[cpu.min(OWNER.len() - 1)] }
    }

    #[inline(always)]
    fn owned(&self) -> bool {
        ptr::eq(self.owner.load(Ordering::Relaxed), self)
    }

    /// Puts these values into the CPU unless they are there already. Called right before
    /// every VM entry of this vCPU: a load and a compare (the switch itself stays out of line,
    /// so the entry path's code is not reshaped around it).
    #[inline(always)]
    pub fn activate(&mut self) {
        if !self.owned() {
            self.switch_in();
        }
    }

    /// Saves the previous owner's KERNEL_GS_BASE and loads ours.
    #[cold]
    #[inline(never)]
    fn switch_in(&mut self) {
        let me: *mut Self = self;
        let prev = self.owner.load(Ordering::Relaxed);
        if !prev.is_null() {
            // SAFETY: a non-null owner is a live `GuestMsrs` of this CPU (its drop clears the
            // record), not borrowed now: vCPUs run one at a time on this CPU and the previous
            // one's run has returned. KERNEL_GS_BASE exists on every 64-bit CPU.
            unsafe { (*prev).values[KGS] = rdmsr(IA32_KERNEL_GS_BASE) };
        }
        for (&msr, &v) in MSRS.iter().zip(&self.values) {
            // SAFETY: these MSRs exist on every 64-bit CPU; the core checked each value on
            // WRMSR (canonical addresses, FMASK's 32 bits), so none faults; the host never
            // uses them (no SYSCALL, SYSRET or SWAPGS in the hypervisor).
            unsafe { wrmsr(msr, v) };
        }
        self.owner.store(me, Ordering::Relaxed);
    }

    /// The guest's value of `m` (0 for an MSR not switched here): the CPU's for KERNEL_GS_BASE while
    /// these values are loaded (a SWAPGS may have changed it).
    pub fn get(&self, m: HwMsr) -> u64 {
        let Some(i) = index(m) else { return 0 };
        if i == KGS && self.owned() {
            // SAFETY: KERNEL_GS_BASE exists on every 64-bit CPU; reading changes nothing.
            return unsafe { rdmsr(IA32_KERNEL_GS_BASE) };
        }
        self.values[i]
    }

    /// Sets the guest's value of `m` (checked by the core), in the CPU too while loaded.
    pub fn set(&mut self, m: HwMsr, v: u64) {
        let Some(i) = index(m) else { return };
        self.values[i] = v;
        if self.owned() {
            // SAFETY: as in `activate`: an existing MSR, a value the core checked, and one
            // the host does not use.
            unsafe { wrmsr(MSRS[i], v) };
        }
    }
}

impl Drop for GuestMsrs {
    fn drop(&mut self) {
        let me: *mut Self = self;
        // Forget ownership: whoever takes this address (or VPID) next loads its own values.
        let _ =
            self.owner.compare_exchange(me, ptr::null_mut(), Ordering::Relaxed, Ordering::Relaxed);
    }
}
