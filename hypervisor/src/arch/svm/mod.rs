//! The AMD SVM backend (APM Vol. 2 revision 3.42, Chapter 15): EFER.SVME, one VMCB per vCPU,
//! nested paging.
//!
//! [`SvmBackend::enable`] checks and turns on SVM once; it is the only way to get a backend,
//! so holding one proves EFER.SVME is set and VM_HSAVE_PA names the host save area. There are
//! no capability words to fit, unlike VMX: every intercept but VMRUN's is optional. What the
//! CPU may lack is nested paging, ASIDs and NRIP save; without the last (QEMU TCG) the core
//! decodes each exiting instruction's length itself.

mod asid;
pub mod entry;
pub mod exit;
pub mod fast;
pub mod npt;
pub mod vcpu;
pub mod vmcb;

use crate::arch::x86::cpu::SvmCaps;
use crate::arch::x86::instr::{rdmsr, wrmsr};
use crate::arch::x86::paging::HostPages;
use crate::mm::addr::HostPhys;
use crate::vmm::vcpu::{Backend, SecondLevel, Vcpu, VcpuConfig};
use alloc::boxed::Box;

const IA32_EFER: u32 = 0xc000_0080;
/// EFER.SVME (§15.4).
pub const EFER_SVME: u64 = 1 << 12;
/// Physical address of the host save area VMRUN writes (§15.30.4).
const VM_HSAVE_PA: u32 = 0xc001_0117;

/// SVM is on; vCPUs and nested page tables come from here.
#[derive(Debug)]
pub struct SvmBackend {
    /// The host save area (VM_HSAVE_PA), for the CPU alone.
    hsave: HostPhys,
    /// The host's VMLOAD/VMSAVE state, restored after each #VMEXIT (see `entry`).
    host_state: HostPhys,
    asids: u32,
    nrip_save: bool,
    /// The CPU it was enabled on (its ASID owner table).
    cpu: usize,
}

impl SvmBackend {
    /// Turns SVM on (§15.4): refuses a CPU whose firmware disabled SVM (VM_CR.SVMDIS, where
    /// setting EFER.SVME would fault) or that lacks nested paging, sets EFER.SVME, gives the
    /// CPU its host save area and records the host's VMLOAD state.
    pub fn enable(caps: &SvmCaps) -> Result<Self, &'static str> {
        if caps.disabled_by_firmware {
            return Err("SVM disabled by firmware (VM_CR.SVMDIS)");
        }
        if !caps.npt {
            return Err("the CPU lacks nested paging (CPUID Fn8000_000A EDX[0])");
        }
        if caps.asids < 2 {
            return Err("the CPU has no ASID to give a guest (CPUID Fn8000_000A EBX)");
        }
        let hsave = HostPages::alloc_zeroed(1).ok_or("out of memory for the host save area")?;
        let Some(host_state) = HostPages::alloc_zeroed(1) else {
            HostPages::free(hsave, 1);
            return Err("out of memory for the host's VMSAVE area");
        };
        // SAFETY: the CPU has SVM and the firmware left it enabled (checked above), so EFER.SVME
        // may be set (§15.4); it only makes the SVM instructions legal. VM_HSAVE_PA then gets a
        // page of ours, 4 KiB aligned (§15.30.4), and VMSAVE writes only the other page.
        unsafe {
            wrmsr(IA32_EFER, rdmsr(IA32_EFER) | EFER_SVME);
            wrmsr(VM_HSAVE_PA, hsave.0);
            entry::vmsave(host_state.0);
        }
        Ok(Self {
            hsave,
            host_state,
            asids: caps.asids,
            nrip_save: caps.nrip_save,
            cpu: crate::arch::x86::smp::cpu_index(),
        })
    }
}

impl Drop for SvmBackend {
    fn drop(&mut self) {
        // SAFETY: no vCPU outlives the backend, so no VMRUN uses the save area any more;
        // clearing EFER.SVME leaves SVM (§15.4).
        unsafe {
            wrmsr(VM_HSAVE_PA, 0);
            wrmsr(IA32_EFER, rdmsr(IA32_EFER) & !EFER_SVME);
        }
        HostPages::free(self.hsave, 1);
        HostPages::free(self.host_state, 1);
    }
}

impl Backend for SvmBackend {
    fn name(&self) -> &'static str {
        "svm"
    }

    fn new_second_level(&mut self) -> Result<Box<dyn SecondLevel>, &'static str> {
        let t = npt::Npt::new(2).map_err(|_| "out of memory for a nested page table")?;
        Ok(Box::new(t))
    }

    fn create_vcpu(&mut self, config: &VcpuConfig) -> Result<Box<dyn Vcpu>, &'static str> {
        // ASID 0 is the host's; VMRUN refuses it (§15.5.1, §15.16). More vCPUs than ASIDs
        // share them, flushed on each switch (`asid.rs`).
        let asid = asid::for_tag(config.tag, self.asids)
            .ok_or("the vCPU's tag is 0 or the CPU has no guest ASID")?;
        Ok(Box::new(vcpu::SvmVcpu::new(
            config,
            asid,
            self.host_state.0,
            self.nrip_save,
            asid::owners(self.cpu),
        )?))
    }
}
