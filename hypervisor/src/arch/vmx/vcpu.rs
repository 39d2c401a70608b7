//! A VMX virtual CPU: its VMCS, I/O and MSR bitmaps, and the [`Vcpu`] operations (VM entry
//! and exit, register and event access); its creation is in `vcpu_setup.rs`.

use super::controls::{Entry, FixedBits, Proc, Proc2};
use super::entry::{vmx_enter, vmx_exit};
use super::exit::{decode, reason, reason_name};
use super::fields::{Field as F, ReadOnly as R, instruction_error_name};
use super::lazy::GuestMsrs;
use super::vmcs::{Current, Vmcs};
use super::{Controls, ept};
use crate::arch::x86::{gdt, instr::rdmsr, paging::HostPages};
use crate::mm::addr::HostPhys;
use crate::vmm::exit::VmExit;
use crate::vmm::msr::{IA32_PAT, PAT_RESET};
use crate::vmm::vcpu::{
    CpuMode, EntryError, Event, Gprs, HwMsr, InitialState, Segment, Vcpu, VcpuConfig, reg,
};
use alloc::boxed::Box;
use core::fmt;

const RFLAGS_IF: u64 = 1 << 9;
const RFLAGS_TF: u64 = 1 << 8;
/// CR0.CD and CR0.NW: VM entry does not load them (SDM §27.3.2.1), so the host keeps them and
/// the guest sees and changes only its read shadow.
const CR0_CD_NW: u64 = (1 << 30) | (1 << 29);
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// Interruptibility state: blocking by STI (bit 0) and by MOV SS (bit 1) (SDM Table 25-3).
const BLOCKING_STI_MOVSS: u64 = 3;
const BLOCKING_MOVSS: u64 = 2;
/// Interruptibility state bit 3: blocking by NMI (with "virtual NMIs": virtual-NMI blocking,
/// from an injected NMI's delivery to the guest's next IRET; SDM Table 25-3, §26.3).
const BLOCKING_NMI: u64 = 1 << 3;
/// EPT-violation qualification bit 12: "NMI unblocking due to IRET" (SDM §28.2.3).
const QUAL_NMI_UNBLOCKED_BY_IRET: u64 = 1 << 12;
/// VM-entry interruption information: valid bit and types (SDM Table 25-17).
const INTR_VALID: u64 = 1 << 31;
const INTR_TYPE_EXTERNAL: u64 = 0 << 8;
const INTR_TYPE_NMI: u64 = 2 << 8;
/// The NMI's vector.
const NMI_VECTOR: u64 = 2;
const INTR_TYPE_HW_EXCEPTION: u64 = 3 << 8;
const INTR_DELIVER_ERROR_CODE: u64 = 1 << 11;

/// A VMX vCPU.
pub struct VmxVcpu {
    vmcs: Vmcs,
    launched: bool,
    gprs: Gprs,
    rip: u64,
    rflags: u64,
    /// Length of the instruction that caused the last exit (0 when not reported).
    exit_insn_len: u64,
    /// A CR2 for the guest's next entry (an injected #PF): VMX does not switch CR2, so the
    /// guest's is the CPU's own, written just before entry.
    cr2: Option<u64>,
    pending: Option<Event>,
    proc: u32,
    bitmaps: HostPhys,
    cr0_fixed: FixedBits,
    cr4_fixed: FixedBits,
    cr8: u64,
    eptp: u64,
    vpid: u16,
    timer_shift: u8,
    timer_enabled: bool,
    /// The CPU has virtual NMIs with NMI-window exiting ([`Controls::nmi_window`]).
    nmi_window: bool,
    /// The CPU offers PAUSE-loop exiting ([`Controls::ple`]).
    ple: bool,
    timeslice: u64,
    /// A new slice must be loaded into the preemption timer at the next entry (otherwise the
    /// CPU's saved remainder runs on).
    timeslice_fresh: bool,
    /// The guest's SYSCALL MSRs and KERNEL_GS_BASE (boxed: their address is their owner tag).
    msrs: Box<GuestMsrs>,
    /// CPUID exits the fast path handled since the core last asked.
    fast_exits: u64,
}

/// Pages of the bitmaps block: I/O bitmap A, I/O bitmap B, MSR bitmap.
const BITMAP_PAGES: u64 = 3;
/// PAUSE-loop exiting (SDM Vol. 3C §26.1.3), in TSC ticks: PAUSEs at most PLE_GAP apart are
/// one spin loop, which exits once it has spun for PLE_WINDOW (KVM's defaults).
const PLE_GAP: u64 = 128;
const PLE_WINDOW: u64 = 4096;

include!("vcpu_setup.rs");

impl VmxVcpu {
    fn cr0_mask(&self) -> u64 {
        self.cr0_fixed.owned_by_host() | CR0_CD_NW
    }

    fn current(&self) -> Current {
        self.vmcs.load().expect("VMPTRLD of this vCPU's own VMCS")
    }

    fn entry_failure(&self, v: &Current, what: &'static str) -> EntryError {
        let code = v.read_ro(R::InstructionError);
        crate::println!(
            "vmx: VM entry failed: {what}: VM-instruction error {code}: {}",
            instruction_error_name(code)
        );
        EntryError { what, code }
    }
}

impl Vcpu for VmxVcpu {
    fn run(&mut self) -> Result<VmExit, EntryError> {
        let v = self.current();
        v.write(F::GuestRsp, self.gprs.0[reg::RSP]);
        v.write(F::GuestRip, self.rip);
        v.write(F::GuestRflags, self.rflags);
        if let Some(e) = self.pending {
            let info = match e {
                Event::Exception { vector, error_code } => {
                    if let Some(code) = error_code {
                        v.write(F::EntryExceptionErrorCode, u64::from(code));
                    }
                    INTR_VALID
                        | INTR_TYPE_HW_EXCEPTION
                        | u64::from(vector)
                        | if error_code.is_some() { INTR_DELIVER_ERROR_CODE } else { 0 }
                }
                Event::Interrupt { vector } => INTR_VALID | INTR_TYPE_EXTERNAL | u64::from(vector),
                // Type 2, vector 2 (SDM §25.8.3, Table 25-17); with virtual NMIs its delivery
                // sets virtual-NMI blocking until the guest's IRET (§27.6.1.2, §26.3).
                Event::Nmi => INTR_VALID | INTR_TYPE_NMI | NMI_VECTOR,
            };
            v.write(F::EntryInterruptionInfo, info);
            self.pending = None;
        }
        if self.timer_enabled && self.timeslice_fresh {
            self.timeslice_fresh = false;
            let ticks = if self.timeslice == 0 {
                u64::from(u32::MAX)
            } else {
                self.timeslice >> self.timer_shift
            };
            v.write(F::PreemptionTimerValue, ticks.clamp(1, u64::from(u32::MAX)));
        }
        self.msrs.activate();
        if let Some(cr2) = self.cr2.take() {
            // SAFETY: CR2 only reports page-fault addresses; the host takes none between here
            // and VM entry, so the guest finds this value.
            unsafe { core::arch::asm!("mov cr2, {}", in(reg) cr2, options(nostack, nomem)) };
        }
        // While the guest runs, the RSP slot (RSP is in the VMCS, written above) counts the
        // exits the fast path handles (`fast::vmx_fast_exit`).
        self.gprs.0[reg::RSP] = 0;
        // SAFETY: this vCPU's VMCS is current and was set up by `setup` with HOST_RIP =
        // vmx_exit; `launched` tracks VMLAUNCH vs VMRESUME for it.
        let failed = unsafe { vmx_enter(&mut self.gprs, u64::from(self.launched)) };
        self.fast_exits += core::mem::replace(&mut self.gprs.0[reg::RSP], v.read(F::GuestRsp));
        if failed != 0 {
            return Err(self.entry_failure(
                &v,
                if self.launched { "VMRESUME failed" } else { "VMLAUNCH failed" },
            ));
        }
        self.launched = true;
        let exit_reason = v.read_ro(R::ExitReason);
        let basic = (exit_reason & 0xffff) as u32;
        if exit_reason & (1 << 31) != 0 {
            let q = v.read_ro(R::ExitQualification);
            crate::println!(
                "vmx: VM entry failed: exit reason {basic} ({}), qualification {q:#x}",
                reason_name(basic)
            );
            return Err(EntryError { what: reason_name(basic), code: u64::from(basic) });
        }
        self.rip = v.read(F::GuestRip);
        self.rflags = v.read(F::GuestRflags);
        self.exit_insn_len = v.read_ro(R::ExitInstructionLength);
        // An event whose delivery the exit interrupted is delivered again (SDM §28.2.4).
        let idt = v.read_ro(R::IdtVectoringInfo);
        if idt & INTR_VALID != 0 {
            let vector = (idt & 0xff) as u8;
            self.pending = Some(match (idt >> 8) & 7 {
                0 => Event::Interrupt { vector },
                2 => {
                    // The NMI was not delivered: it blocks nothing yet, and VM entry refuses
                    // to inject one with blocking by NMI set (SDM §27.3.1.5).
                    let s = v.read(F::GuestInterruptibility);
                    v.write(F::GuestInterruptibility, s & !BLOCKING_NMI);
                    Event::Nmi
                }
                _ => Event::Exception {
                    vector,
                    error_code: (idt & INTR_DELIVER_ERROR_CODE != 0)
                        .then(|| v.read_ro(R::IdtVectoringErrorCode) as u32),
                },
            });
        }
        let q = if basic == reason::CPUID { 0 } else { v.read_ro(R::ExitQualification) };
        let gpa =
            if basic == reason::EPT_VIOLATION { v.read_ro(R::GuestPhysicalAddress) } else { 0 };
        if basic == reason::EPT_VIOLATION
            && q & QUAL_NMI_UNBLOCKED_BY_IRET != 0
            && idt & INTR_VALID == 0
            && self.nmi_window
        {
            // An IRET that unblocked NMIs faulted: it runs again, so the blocking is put back
            // (SDM §28.2.3, "NMI unblocking due to IRET").
            let s = v.read(F::GuestInterruptibility);
            v.write(F::GuestInterruptibility, s | BLOCKING_NMI);
        }
        Ok(decode(basic, q, gpa))
    }

    fn take_fast_exits(&mut self) -> u64 {
        core::mem::take(&mut self.fast_exits)
    }

    fn gprs(&mut self) -> &mut Gprs {
        &mut self.gprs
    }
    fn rip(&self) -> u64 {
        self.rip
    }
    fn set_rip(&mut self, rip: u64) {
        self.rip = rip;
    }
    fn rflags(&self) -> u64 {
        self.rflags
    }
    fn set_rflags(&mut self, v: u64) {
        self.rflags = v;
    }
    fn next_rip(&self) -> Option<u64> {
        (self.exit_insn_len != 0).then_some(self.rip + self.exit_insn_len)
    }

    fn cr(&self, n: u8) -> u64 {
        let v = self.current();
        match n {
            0 => {
                let mask = self.cr0_mask();
                (v.read(F::GuestCr0) & !mask) | (v.read(F::Cr0ReadShadow) & mask)
            }
            3 => v.read(F::GuestCr3),
            4 => {
                let mask = self.cr4_fixed.owned_by_host();
                (v.read(F::GuestCr4) & !mask) | (v.read(F::Cr4ReadShadow) & mask)
            }
            8 => self.cr8,
            _ => 0,
        }
    }

    fn set_cr(&mut self, n: u8, val: u64) {
        let v = self.current();
        match n {
            0 => {
                const PG: u64 = 1 << 31;
                let old = v.read(F::Cr0ReadShadow);
                v.write(F::Cr0ReadShadow, val);
                v.write(F::GuestCr0, self.cr0_fixed.apply(val) & !CR0_CD_NW);
                // Turning paging on with EFER.LME set activates IA-32e mode (EFER.LMA = 1);
                // turning it off leaves it (SDM vol. 3A §10.8.5). The CPU does this itself;
                // a MOV to CR0 that exited must have it done here, with the "IA-32e mode
                // guest" entry control following LMA (`set_msr`).
                if (old ^ val) & PG != 0 {
                    let efer = self.msr(HwMsr::Efer);
                    let lma = val & PG != 0 && efer & EFER_LME != 0;
                    let new = if lma { efer | EFER_LMA } else { efer & !EFER_LMA };
                    if new != efer {
                        self.set_msr(HwMsr::Efer, new);
                    }
                }
            }
            3 => v.write(F::GuestCr3, val),
            4 => {
                v.write(F::Cr4ReadShadow, val);
                v.write(F::GuestCr4, self.cr4_fixed.apply(val));
            }
            8 => self.cr8 = val & 0xf,
            2 => self.cr2 = Some(val),
            _ => {}
        }
    }

    fn msr(&self, m: HwMsr) -> u64 {
        let v = self.current();
        match m {
            HwMsr::Efer => v.read(F::GuestEfer),
            HwMsr::FsBase => v.read(F::GuestFsBase),
            HwMsr::GsBase => v.read(F::GuestGsBase),
            HwMsr::SysenterCs => v.read(F::GuestSysenterCs),
            HwMsr::SysenterEsp => v.read(F::GuestSysenterEsp),
            HwMsr::SysenterEip => v.read(F::GuestSysenterEip),
            HwMsr::Pat => v.read(F::GuestPat),
            m => self.msrs.get(m),
        }
    }

    fn set_msr(&mut self, m: HwMsr, val: u64) {
        let v = self.current();
        match m {
            HwMsr::Efer => {
                v.write(F::GuestEfer, val);
                // Keep "IA-32e mode guest" equal to EFER.LMA (SDM §27.3.1.1).
                let e = v.read(F::EntryControls) & !u64::from(Entry::IA32E_MODE_GUEST.bits());
                let lma = if val & (1 << 10) != 0 {
                    u64::from(Entry::IA32E_MODE_GUEST.bits())
                } else {
                    0
                };
                v.write(F::EntryControls, e | lma);
            }
            HwMsr::FsBase => v.write(F::GuestFsBase, val),
            HwMsr::GsBase => v.write(F::GuestGsBase, val),
            HwMsr::SysenterCs => v.write(F::GuestSysenterCs, val),
            HwMsr::SysenterEsp => v.write(F::GuestSysenterEsp, val),
            HwMsr::SysenterEip => v.write(F::GuestSysenterEip, val),
            HwMsr::Pat => v.write(F::GuestPat, val),
            m => self.msrs.set(m, val),
        }
    }

    fn mode(&self) -> CpuMode {
        let v = self.current();
        let cs = v.read(F::GuestCsAccess);
        CpuMode::from_state(
            v.read(F::GuestCr0) & 1 != 0,
            self.rflags & (1 << 17) != 0,
            v.read(F::GuestEfer) & (1 << 10) != 0,
            cs & (1 << 13) != 0,
            cs & (1 << 14) != 0,
        )
    }

    fn cs_base(&self) -> u64 {
        self.current().read(F::GuestCsBase)
    }

    fn cpl(&self) -> u8 {
        ((self.current().read(F::GuestSsAccess) >> 5) & 3) as u8
    }

    fn inject(&mut self, e: Event) {
        self.pending = Some(e);
    }
    fn event_pending(&self) -> bool {
        self.pending.is_some()
    }

    fn interruptible(&self) -> bool {
        self.rflags & RFLAGS_IF != 0
            && self.current().read(F::GuestInterruptibility) & BLOCKING_STI_MOVSS == 0
    }

    fn instruction_completed(&mut self) {
        let v = self.current();
        let s = v.read(F::GuestInterruptibility);
        if s & BLOCKING_STI_MOVSS != 0 {
            v.write(F::GuestInterruptibility, s & !BLOCKING_STI_MOVSS);
        }
        if self.rflags & RFLAGS_TF != 0 {
            // The pending debug exceptions field: with BS set and RFLAGS.TF the CPU delivers
            // the #DB right after VM entry, with DR6.BS (SDM Vol. 3C §27.7.3; the guest's DR6
            // is not in the VMCS).
            let pending = v.read(F::GuestPendingDebugExceptions);
            v.write(F::GuestPendingDebugExceptions, pending | (1 << 14));
        }
    }

    fn set_interrupt_window_exiting(&mut self, on: bool) {
        let bit = Proc::INTERRUPT_WINDOW_EXITING.bits();
        let new = if on { self.proc | bit } else { self.proc & !bit };
        if new != self.proc {
            self.proc = new;
            self.current().write(F::ProcBasedControls, u64::from(new));
        }
    }

    fn nmi_injectable(&self) -> bool {
        // STI blocking is left out: VM entry may inject an NMI inside it (SDM §27.3.1.5 forbids
        // only MOV-SS blocking and NMI blocking), and NMI-window exits happen inside it on some
        // CPUs (§26.7.6), so waiting for it could exit forever.
        self.pending.is_none()
            && self.current().read(F::GuestInterruptibility) & (BLOCKING_MOVSS | BLOCKING_NMI) == 0
    }

    fn set_nmi_window_exiting(&mut self, on: bool) {
        // Without virtual NMIs the NMI waits for the next exit of any kind.
        if !self.nmi_window {
            return;
        }
        let bit = Proc::NMI_WINDOW_EXITING.bits();
        let new = if on { self.proc | bit } else { self.proc & !bit };
        if new != self.proc {
            self.proc = new;
            self.current().write(F::ProcBasedControls, u64::from(new));
        }
    }

    fn set_pause_exiting(&mut self, on: bool) -> bool {
        if !self.ple {
            return false;
        }
        let v = self.current();
        // A PAUSE exits when it comes within PLE_Gap TSC ticks of the previous one and more
        // than PLE_Window ticks after the first of that run of them (SDM Vol. 3C §26.1.3).
        v.write(F::PleGap, PLE_GAP);
        v.write(F::PleWindow, PLE_WINDOW);
        let bit = u64::from(Proc2::PAUSE_LOOP_EXITING.bits());
        let proc2 = v.read(F::ProcBasedControls2);
        v.write(F::ProcBasedControls2, if on { proc2 | bit } else { proc2 & !bit });
        true
    }

    fn set_timeslice(&mut self, ticks: u64) {
        self.timeslice = ticks;
        self.timeslice_fresh = true;
    }

    fn pass_through_ports(&mut self, first: u16, count: u16) {
        for port in u32::from(first)..(u32::from(first) + u32::from(count)).min(0x1_0000) {
            // I/O bitmap A covers 0x0000-0x7fff, B 0x8000-0xffff (SDM §25.6.4): one bit a port.
            // SAFETY: the bitmap frames belong to this vCPU; the byte offset is < 8 KiB.
            unsafe {
                let byte = (self.bitmaps.0 as *mut u8).add((port / 8) as usize);
                *byte &= !(1 << (port % 8));
            }
        }
    }

    fn flush_second_level(&mut self) {
        // SAFETY: VMX is on (this vCPU exists); INVEPT single-context for our own EPTP.
        let _ = unsafe { super::instr::invept(self.eptp) };
    }

    fn reset(&mut self, s: &InitialState) {
        let v = self.current();
        self.write_guest_state(&v, s);
        // "IA-32e mode guest" follows EFER.LMA (SDM §27.3.1.1).
        self.set_msr(HwMsr::Efer, s.efer);
        v.write(F::GuestInterruptibility, 0);
        v.write(F::GuestActivityState, 0);
        v.write(F::GuestPendingDebugExceptions, 0);
        v.write(F::EntryInterruptionInfo, 0);
        self.set_interrupt_window_exiting(false);
        self.set_nmi_window_exiting(false);
        self.gprs = s.gprs;
        self.rip = s.rip;
        self.rflags = s.rflags;
        self.pending = None;
        self.exit_insn_len = 0;
        self.cr8 = 0;
        self.cr2 = Some(0);
    }

    fn dump(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        let v = self.current();
        writeln!(out, "  vmx guest state (SDM Vol. 3C §27.3 checks these):")?;
        writeln!(
            out,
            "    RIP {:#x} RSP {:#x} RFLAGS {:#x}",
            v.read(F::GuestRip),
            v.read(F::GuestRsp),
            v.read(F::GuestRflags)
        )?;
        writeln!(
            out,
            "    CR0 {:#x} (shadow {:#x}) CR3 {:#x} CR4 {:#x} (shadow {:#x}) EFER {:#x} DR7 {:#x}",
            v.read(F::GuestCr0),
            v.read(F::Cr0ReadShadow),
            v.read(F::GuestCr3),
            v.read(F::GuestCr4),
            v.read(F::Cr4ReadShadow),
            v.read(F::GuestEfer),
            v.read(F::GuestDr7)
        )?;
        for (name, sel, base, limit, ar) in [
            ("CS", F::GuestCsSelector, F::GuestCsBase, F::GuestCsLimit, F::GuestCsAccess),
            ("SS", F::GuestSsSelector, F::GuestSsBase, F::GuestSsLimit, F::GuestSsAccess),
            ("DS", F::GuestDsSelector, F::GuestDsBase, F::GuestDsLimit, F::GuestDsAccess),
            ("TR", F::GuestTrSelector, F::GuestTrBase, F::GuestTrLimit, F::GuestTrAccess),
            ("LDTR", F::GuestLdtrSelector, F::GuestLdtrBase, F::GuestLdtrLimit, F::GuestLdtrAccess),
        ] {
            writeln!(
                out,
                "    {name:4} sel {:#06x} base {:#x} limit {:#x} access {:#x}",
                v.read(sel),
                v.read(base),
                v.read(limit),
                v.read(ar)
            )?;
        }
        writeln!(
            out,
            "    GDTR {:#x}/{:#x} IDTR {:#x}/{:#x} activity {} interruptibility {:#x} link {:#x}",
            v.read(F::GuestGdtrBase),
            v.read(F::GuestGdtrLimit),
            v.read(F::GuestIdtrBase),
            v.read(F::GuestIdtrLimit),
            v.read(F::GuestActivityState),
            v.read(F::GuestInterruptibility),
            v.read(F::VmcsLinkPointer)
        )?;
        writeln!(
            out,
            "    controls: pin {:#x} proc {:#x} proc2 {:#x} exit {:#x} entry {:#x} EPTP {:#x}",
            v.read(F::PinBasedControls),
            v.read(F::ProcBasedControls),
            v.read(F::ProcBasedControls2),
            v.read(F::ExitControls),
            v.read(F::EntryControls),
            v.read(F::EptPointer)
        )?;
        writeln!(
            out,
            "    last exit: reason {:#x} qualification {:#x} instruction length {}",
            v.read_ro(R::ExitReason),
            v.read_ro(R::ExitQualification),
            v.read_ro(R::ExitInstructionLength)
        )
    }
}

impl Drop for VmxVcpu {
    fn drop(&mut self) {
        HostPages::free(self.bitmaps, BITMAP_PAGES);
    }
}
