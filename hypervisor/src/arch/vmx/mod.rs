//! The Intel VMX backend (SDM Vol. 3C, revision 84): VMXON, one VMCS per vCPU, EPT.
//!
//! [`VmxBackend::enable`] checks and turns on VMX once; it is the only way to get a backend,
//! so holding one proves VMXON ran. Control words are computed here once from the capability
//! MSRs; a control the hypervisor needs and the CPU lacks is reported by name.

pub mod controls;
pub mod entry;
pub mod ept;
pub mod exit;
pub mod fast;
pub mod fields;
pub mod instr;
pub mod lazy;
pub mod vcpu;
pub mod vmcs;

use crate::arch::x86::cpu::{self, VmxCaps};
use crate::arch::x86::instr::{rdmsr, wrmsr};
use crate::arch::x86::paging::HostPages;
use crate::mm::addr::HostPhys;
use crate::mm::pagetable::{MapError, MemType, PageTable, Perm};
use crate::vmm::vcpu::{Backend, SecondLevel, Vcpu, VcpuConfig};
use alloc::boxed::Box;
use controls::{Entry, Exit, FixedBits, Pin, Proc, Proc2, compute};
use x86_64::registers::control::{Cr0, Cr4};

const IA32_VMX_CR0_FIXED0: u32 = 0x486;
/// CR0.PE and CR0.PG.
const CR0_PE_PG: u64 = 0x8000_0001;
const IA32_VMX_CR0_FIXED1: u32 = 0x487;
const IA32_VMX_CR4_FIXED0: u32 = 0x488;
const IA32_VMX_CR4_FIXED1: u32 = 0x489;
const IA32_VMX_EXIT_CTLS: u32 = 0x483;
const IA32_VMX_ENTRY_CTLS: u32 = 0x484;
const IA32_VMX_TRUE_EXIT_CTLS: u32 = 0x48f;
const IA32_VMX_TRUE_ENTRY_CTLS: u32 = 0x490;
const FEATURE_CONTROL_LOCK: u64 = 1;
const FEATURE_CONTROL_VMX_OUTSIDE_SMX: u64 = 1 << 2;
const CR4_VMXE: u64 = 1 << 13;

/// Everything a vCPU needs from the backend's one-time setup.
#[derive(Clone, Copy, Debug)]
pub struct Controls {
    pub revision: u32,
    pub pin: u32,
    pub proc: u32,
    pub proc2: u32,
    pub exit: u32,
    pub entry: u32,
    pub cr0_fixed: FixedBits,
    pub cr4_fixed: FixedBits,
    pub vpid: bool,
    pub timer_enabled: bool,
    pub timer_shift: u8,
    /// "Virtual NMIs" and "NMI-window exiting" are both on.
    pub nmi_window: bool,
    /// The CPU offers PAUSE-loop exiting (off until `Vcpu::set_pause_exiting`).
    pub ple: bool,
}

/// VMX is on; vCPUs and EPT tables come from here.
#[derive(Debug)]
pub struct VmxBackend {
    controls: Controls,
    vmxon_region: HostPhys,
    gib_pages: bool,
    /// The CPU it was enabled on (an index): its vCPUs' current-VMCS and MSR records.
    cpu: usize,
}

/// An EPT table for one partition.
struct Ept(PageTable<ept::EptFormat, HostPages>);

impl SecondLevel for Ept {
    fn map(&mut self, gpa: u64, hpa: u64, len: u64) -> Result<(), MapError> {
        self.0.map(gpa, hpa, len, Perm::RWX, MemType::WriteBack)
    }
    fn map_mmio(&mut self, gpa: u64, hpa: u64, len: u64) -> Result<(), MapError> {
        self.0.map(gpa, hpa, len, Perm::READ | Perm::WRITE, MemType::Uncacheable)
    }
    fn map_readonly(&mut self, gpa: u64, hpa: u64, len: u64) -> Result<(), MapError> {
        // EPT bits 0 (read) and 2 (execute) set, bit 1 (write) clear (SDM Vol. 3C Table 29-6).
        self.0.map(gpa, hpa, len, Perm::READ | Perm::EXEC, MemType::WriteBack)
    }
    fn unmap(&mut self, gpa: u64, len: u64) -> Result<(), MapError> {
        self.0.unmap(gpa, len)
    }
    fn translate(&mut self, gpa: u64) -> Option<u64> {
        self.0.translate(gpa).map(|t| t.pa)
    }
    fn root(&self) -> u64 {
        self.0.root()
    }
    fn tables_used(&self) -> usize {
        self.0.tables_used()
    }
}

impl Drop for Ept {
    fn drop(&mut self) {
        let t = core::mem::replace(
            &mut self.0,
            PageTable::new(HostPages, 1).expect("a page for an empty table"),
        );
        t.destroy();
    }
}

impl VmxBackend {
    /// Turns VMX on: IA32_FEATURE_CONTROL (lock it with VMX enabled if the firmware left it
    /// unlocked, SDM §24.7), CR0/CR4 fixed bits (§24.8), the VMXON region, VMXON.
    pub fn enable(caps: &VmxCaps, gib_pages: bool) -> Result<Self, &'static str> {
        if !caps.ept || !caps.ept_4level || !caps.ept_wb {
            return Err("the CPU lacks EPT with 4-level walks and write-back tables");
        }
        // SAFETY: the MSRs below exist on every CPU with CPUID.1:ECX.VMX = 1 (SDM Appendix A).
        let controls = unsafe { Self::compute_controls(caps)? };
        // SAFETY: IA32_FEATURE_CONTROL exists (VMX present); writing it is allowed while it is
        // unlocked, and locking it with VMX enabled is what the firmware normally does.
        unsafe {
            let fc = rdmsr(cpu::IA32_FEATURE_CONTROL);
            if fc & FEATURE_CONTROL_LOCK == 0 {
                wrmsr(
                    cpu::IA32_FEATURE_CONTROL,
                    fc | FEATURE_CONTROL_LOCK | FEATURE_CONTROL_VMX_OUTSIDE_SMX,
                );
                log::info!(
                    "vmx: IA32_FEATURE_CONTROL was unlocked ({fc:#x}): locked with VMX enabled"
                );
            } else if fc & FEATURE_CONTROL_VMX_OUTSIDE_SMX == 0 {
                return Err(
                    "VMX is disabled by the firmware (IA32_FEATURE_CONTROL locked without VMX)",
                );
            }
        }
        let cr0 = controls.cr0_fixed.apply(Cr0::read_raw());
        let cr4 = controls.cr4_fixed.apply(Cr4::read_raw() | CR4_VMXE);
        if cr0 & 0x8000_0001 != 0x8000_0001 {
            return Err("CR0 cannot meet VMX's fixed bits");
        }
        // SAFETY: the fixed-1 bits VMX demands in CR0 (NE in practice: native x87 error
        // reporting) and CR4 (VMXE) change nothing the hypervisor relies on (SDM §24.8).
        unsafe {
            Cr0::write_raw(cr0);
            Cr4::write_raw(cr4);
        }
        let region = HostPages::alloc_zeroed(1).ok_or("out of memory for the VMXON region")?;
        // SAFETY: the frame was just allocated for the VMXON region.
        unsafe {
            HostPages::page_mut(region)[..4].copy_from_slice(&controls.revision.to_le_bytes())
        };
        // SAFETY: CR0/CR4 honour the fixed bits, VMXE is set, the feature control MSR allows
        // VMX and the region is ours with the revision identifier (SDM §24.11.5).
        unsafe { instr::vmxon(region.0) }.map_err(|_| "VMXON failed")?;
        if caps.invept {
            // SAFETY: VMX is on and INVEPT is supported; drop stale translations.
            let _ = unsafe { instr::invept(0) };
        }
        // The fast path keeps time slices only where the timer's remaining value survives exits.
        let saves_timer = controls.exit & Exit::SAVE_PREEMPTION_TIMER.bits() != 0;
        fast::ENABLED
            .store(controls.timer_enabled && saves_timer, core::sync::atomic::Ordering::Relaxed);
        Ok(Self {
            controls,
            vmxon_region: region,
            gib_pages: gib_pages && caps.ept_1g,
            cpu: crate::arch::x86::smp::cpu_index(),
        })
    }

    /// # Safety
    /// The CPU supports VMX.
    unsafe fn compute_controls(caps: &VmxCaps) -> Result<Controls, &'static str> {
        use cpu::{IA32_VMX_PINBASED_CTLS, IA32_VMX_PROCBASED_CTLS, IA32_VMX_PROCBASED_CTLS2};
        use cpu::{IA32_VMX_TRUE_PINBASED_CTLS, IA32_VMX_TRUE_PROCBASED_CTLS};
        let t = caps.true_controls;
        // SAFETY: the caller guarantees VMX; TRUE_* MSRs are read only when VMX_BASIC[55] says
        // they exist, PROCBASED_CTLS2 only with secondary controls (SDM A.3.2, A.3.3).
        let (pin_cap, proc_cap, proc2_cap, exit_cap, entry_cap, cr) = unsafe {
            (
                rdmsr(if t { IA32_VMX_TRUE_PINBASED_CTLS } else { IA32_VMX_PINBASED_CTLS }),
                rdmsr(if t { IA32_VMX_TRUE_PROCBASED_CTLS } else { IA32_VMX_PROCBASED_CTLS }),
                if caps.secondary_controls { rdmsr(IA32_VMX_PROCBASED_CTLS2) } else { 0 },
                rdmsr(if t { IA32_VMX_TRUE_EXIT_CTLS } else { IA32_VMX_EXIT_CTLS }),
                rdmsr(if t { IA32_VMX_TRUE_ENTRY_CTLS } else { IA32_VMX_ENTRY_CTLS }),
                [
                    rdmsr(IA32_VMX_CR0_FIXED0),
                    rdmsr(IA32_VMX_CR0_FIXED1),
                    rdmsr(IA32_VMX_CR4_FIXED0),
                    rdmsr(IA32_VMX_CR4_FIXED1),
                ],
            )
        };
        let err = |e: controls::MissingControl| {
            log::error!("vmx: {e}");
            "a VMX control the hypervisor needs is missing (see the line above)"
        };
        let pin = compute(
            "pin-based",
            pin_cap,
            Pin::EXTERNAL_INTERRUPT_EXITING | Pin::NMI_EXITING,
            // Virtual NMIs: the CPU tracks the guest's NMI blocking from an injected NMI to
            // its IRET (SDM Vol. 3C §25.6.1, §26.3, §27.6.1.2); with NMI-window exiting the
            // next NMI waits for that IRET (§26.7.6).
            Pin::PREEMPTION_TIMER | Pin::VIRTUAL_NMIS,
        )
        .map_err(err)?;
        let proc = compute(
            "primary processor-based",
            proc_cap,
            Proc::HLT_EXITING
                | Proc::USE_IO_BITMAPS
                | Proc::USE_MSR_BITMAPS
                | Proc::SECONDARY_CONTROLS,
            Proc::MWAIT_EXITING | Proc::MONITOR_EXITING | Proc::RDPMC_EXITING,
        )
        .map_err(err)?;
        // CR3 and CR8 accesses need no exits with EPT: clear them when the CPU allows.
        let proc = proc
            & !((Proc::CR3_LOAD_EXITING | Proc::CR3_STORE_EXITING).bits() & !(proc_cap as u32));
        let proc2 = compute(
            "secondary processor-based",
            proc2_cap,
            Proc2::ENABLE_EPT,
            Proc2::ENABLE_VPID | Proc2::WBINVD_EXITING | Proc2::UNRESTRICTED_GUEST,
        )
        .map_err(err)?;
        let exit = compute(
            "VM-exit",
            exit_cap,
            // The guest's PAT lives in the VMCS, switched on entry and exit (SDM §25.7.1,
            // §25.8.1, §27.3.2.1, §28.3.1); every CPU with EPT has these controls.
            Exit::HOST_ADDRESS_SPACE_SIZE
                | Exit::SAVE_EFER
                | Exit::LOAD_EFER
                | Exit::SAVE_PAT
                | Exit::LOAD_PAT,
            Exit::SAVE_PREEMPTION_TIMER,
        )
        .map_err(err)?;
        let entry =
            compute("VM-entry", entry_cap, Entry::LOAD_EFER | Entry::LOAD_PAT, Entry::empty())
                .map_err(err)?
                & !Entry::IA32E_MODE_GUEST.bits();
        Ok(Controls {
            revision: caps.revision,
            pin,
            proc,
            proc2,
            exit,
            entry,
            // With unrestricted guest, CR0.PE and CR0.PG are not checked at entry (SDM
            // §27.3.1.1): a guest may run with paging off (multiboot kernels, real mode).
            cr0_fixed: FixedBits {
                fixed0: if proc2 & Proc2::UNRESTRICTED_GUEST.bits() != 0 {
                    cr[0] & !CR0_PE_PG
                } else {
                    cr[0]
                },
                fixed1: cr[1],
            },
            cr4_fixed: FixedBits { fixed0: cr[2], fixed1: cr[3] },
            vpid: proc2 & Proc2::ENABLE_VPID.bits() != 0,
            timer_enabled: pin & Pin::PREEMPTION_TIMER.bits() != 0,
            timer_shift: caps.preemption_timer_rate,
            // NMI-window exiting may be 1 only with virtual NMIs (SDM Vol. 3C §27.2.1.1);
            // IA32_VMX_PROCBASED_CTLS bit 54 says the CPU has it (Appendix A.3.2).
            nmi_window: pin & Pin::VIRTUAL_NMIS.bits() != 0
                && (proc_cap >> 32) as u32 & Proc::NMI_WINDOW_EXITING.bits() != 0,
            // IA32_VMX_PROCBASED_CTLS2 bit 42: PAUSE-loop exiting may be 1 (Appendix A.3.3).
            ple: (proc2_cap >> 32) as u32 & Proc2::PAUSE_LOOP_EXITING.bits() != 0,
        })
    }

    /// The computed controls (for the banner and tests).
    pub fn controls(&self) -> &Controls {
        &self.controls
    }
}

impl Drop for VmxBackend {
    fn drop(&mut self) {
        // SAFETY: leaving VMX operation; no vCPU outlives the backend.
        let _ = unsafe { instr::vmxoff() };
        HostPages::free(self.vmxon_region, 1);
    }
}

impl Backend for VmxBackend {
    fn name(&self) -> &'static str {
        "vmx"
    }

    fn new_second_level(&mut self) -> Result<Box<dyn SecondLevel>, &'static str> {
        let t = PageTable::new(HostPages, if self.gib_pages { 3 } else { 2 })
            .map_err(|_| "out of memory for EPT")?;
        Ok(Box::new(Ept(t)))
    }

    fn create_vcpu(&mut self, config: &VcpuConfig) -> Result<Box<dyn Vcpu>, &'static str> {
        if config.initial.cr0 & CR0_PE_PG != CR0_PE_PG
            && self.controls.proc2 & Proc2::UNRESTRICTED_GUEST.bits() == 0
        {
            return Err("this CPU's VMX lacks unrestricted guest: no partition can start with \
                        paging off (multiboot kernels)");
        }
        Ok(Box::new(vcpu::VmxVcpu::new(&self.controls, config, self.cpu)?))
    }
}
