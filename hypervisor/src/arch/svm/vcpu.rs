//! An SVM virtual CPU: its VMCB, I/O and MSR permission maps, and the [`Vcpu`] operations;
//! its creation (the intercepts below, the initial state) is in `vcpu_setup.rs`.
//!
//! Intercepted (only VMRUN's intercept is required, §15.5.1; the rest is the guest contract):
//! - CPUID, HLT, INVD, WBINVD, XSETBV, RDPMC, RDTSCP, MONITOR, MWAIT: emulated or refused, as
//!   on VMX (where RDTSCP raises #UD: the core hides it in CPUID);
//! - every port and every MSR (both permission maps all ones, §15.10.1, §15.11);
//! - VMRUN, VMMCALL, VMLOAD, VMSAVE, STGI, CLGI, SKINIT, INVLPGA: the guest's EFER.SVME is
//!   really set (VMRUN demands it), so these would run without an intercept;
//! - INTR, NMI (host events), INIT and SHUTDOWN (the partition's end);
//! - IRET while an NMI the hypervisor injected is blocking the next, then #DB for one single
//!   step past it ([`Step`]): without V_NMI, NMI blocking is the hypervisor's to track;
//! - writes to CR0 and CR4 (§15.9): SVM fixes none of their bits, but the core must refuse the
//!   ones the architecture forbids (CR0.NW without CD, CR0 bits 63:32, PG cleared in long mode)
//!   and the CR4 bits the CPU lacks and VMXE/SMXE, and QEMU TCG (6.x to 9.x) ends the run with
//!   VMEXIT_INVALID on such a value instead of raising #GP. The CR0 write intercept catches
//!   CLTS and LMSW too. Without decode assists the exit does not name the source register; the
//!   core decodes the instruction.
//!
//! The other control registers are the guest's own under nested paging (VMRUN loads them).
//! CR3 writes are not intercepted: a CPU checks CR3's reserved bits itself (#GP), but QEMU TCG
//! does not, and the next VMRUN then fails its §15.5.1 check; the report names the bad CR3
//! ([`super::exit::invalid_state`]). Intercepting them was measured on Debian's kernel under
//! QEMU -icount: 17,949 more exits to power-off, /init at 0.480 s instead of 0.448 s of guest
//! time (+7%, past the Linux guest's 1.10 goal against bare QEMU) for a check only an emulator
//! lacks.
//! CR8 is V_TPR (V_INTR_MASKING, §15.21.1).
//! EFER.SVME stays set in the VMCB and is hidden: [`Vcpu::msr`] leaves it out and
//! [`Vcpu::set_msr`] puts it back.
//!
//! The guest's STAR, LSTAR, CSTAR, SFMASK and KernelGsBase live in the VMCB save area, loaded
//! by VMLOAD before each VMRUN and stored by VMSAVE after it (§15.5.2, `entry.rs`), so SYSCALL
//! and SWAPGS use the guest's values and RDMSR sees what SWAPGS left; its PAT is G_PAT, which
//! the CPU uses with nested paging (§15.25.4).

use super::EFER_SVME;
use super::entry::svm_run;
use super::exit::{code, code_name, decode, invalid_state};
use super::fast::FastCtx;
use super::vmcb::{
    INTERRUPT_SHADOW, IntCtl, Intercept1 as I1, Intercept2 as I2, NP_ENABLE, Seg, TLB_FLUSH_ALL,
    TLB_FLUSH_NOTHING, Vmcb, event_inj, reinjected,
};
use crate::arch::x86::instr::rdtsc;
use crate::arch::x86::paging::HostPages;
use crate::mm::addr::{HostPhys, PAGE_SIZE};
use crate::vmm::code_site::CodeSite;
use crate::vmm::exit::VmExit;
use crate::vmm::vcpu::{
    CpuMode, EntryError, Event, Gprs, HwMsr, InitialState, Vcpu, VcpuConfig, reg,
};
use core::fmt;

#[path = "nmi.rs"]
mod nmi;
use nmi::{INTERCEPT_DB, Step};

const RFLAGS_IF: u64 = 1 << 9;
const RFLAGS_TF: u64 = 1 << 8;
/// DR6.BS: the #DB was a single step (SDM Vol. 3B §17.2.3).
const DR6_BS: u64 = 1 << 14;
const RFLAGS_VM: u64 = 1 << 17;
const EFER_LMA: u64 = 1 << 10;
const EFER_LME: u64 = 1 << 8;
/// Attribute bits of CS (packed format): L and D/B.
const ATTRIB_L: u16 = 1 << 9;
const ATTRIB_DB: u16 = 1 << 10;
/// Power-on PAT, the guest's under nested paging.
const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;
/// The PAUSE filter (APM Vol. 2 §15.14.4): PAUSEs before the intercept, and the most cycles
/// between two of one spin loop (KVM's defaults).
const PAUSE_FILTER_COUNT: u16 = 3000;
const PAUSE_FILTER_THRESHOLD: u16 = 128;

/// The vCPU's block of frames: the VMCB, the 12 KiB I/O permission map and the 8 KiB MSR
/// permission map (both physically contiguous, 4 KiB aligned: §15.10.1, §15.11).
const IOPM_PAGE: u64 = 1;
const MSRPM_PAGE: u64 = 4;
const PAGES: u64 = 6;

/// An SVM vCPU.
pub struct SvmVcpu {
    pages: HostPhys,
    /// The backend's VMSAVE area holding the host's FS/GS/TR/LDTR and syscall MSRs.
    host_state: u64,
    gprs: Gprs,
    pending: Option<Event>,
    /// Where the last exiting instruction ends, when the CPU said.
    next_rip: Option<u64>,
    nrip_save: bool,
    /// Flush this vCPU's TLB entries (all ASIDs: TCG has no flush-by-ASID) at the next VMRUN.
    flush: bool,
    /// TSC ticks a run may last (0: no limit); see [`Vcpu::set_timeslice`].
    timeslice: u64,
    /// Where the core last decoded a CPUID (no NRIP save): the fast path's length source.
    cpuid_site: Option<CodeSite>,
    /// CPUID exits the fast path handled since the core last asked.
    fast_exits: u64,
    /// NMI blocking (SDM Vol. 3A §6.7.1): an injected NMI's handler runs until its IRET.
    /// SVM without V_NMI leaves it to the hypervisor (APM Vol. 2 §15.20, §15.21.4).
    nmi_masked: bool,
    /// The single step under way, if any.
    step: Option<Step>,
    /// The ASID owner table of the CPU it runs on (the one that made it).
    owners: &'static super::asid::Owners,
}

include!("vcpu_setup.rs");

impl SvmVcpu {
    /// One VMRUN to the next #VMEXIT (the body of [`Vcpu::run`]); `start` is when the run began.
    fn run_once(&mut self, start: u64) -> Result<VmExit, EntryError> {
        let (rax, rsp) = (self.gprs.0[reg::RAX], self.gprs.0[reg::RSP]);
        let event = self.pending.take().map_or(0, event_inj);
        // Another vCPU may have run with this ASID since (more vCPUs than ASIDs, `asid.rs`).
        let asid = self.vmcb().control.guest_asid;
        let flush = core::mem::take(&mut self.flush) | self.owners.claim(asid, self.pages.0);
        let c = &mut self.vmcb_mut().control;
        c.event_inj = event;
        c.tlb_control = if flush { TLB_FLUSH_ALL } else { TLB_FLUSH_NOTHING };
        let g = &mut self.vmcb_mut().save;
        (g.rax, g.rsp) = (rax, rsp);
        let vmcb = self.pages.0 as *mut Vmcb;
        let mut fast = FastCtx {
            vmcb,
            nrip_save: self.nrip_save,
            site: self.cpuid_site.as_ref().map_or(core::ptr::null(), |s| s as *const CodeSite),
            start,
            timeslice: self.timeslice,
            handled: 0,
        };
        // SAFETY: the backend set EFER.SVME and VM_HSAVE_PA and filled `host_state` with
        // VMSAVE; the VMCB is this vCPU's, set up by `setup` with the VMRUN intercept and a
        // non-zero ASID, and its guest state is what the core validated; `fast` describes
        // this vCPU and its VMCB.
        unsafe { svm_run(&mut self.gprs, vmcb, self.host_state, &mut fast) };
        self.fast_exits += fast.handled;

        let v = self.vmcb();
        let (code, info1, info2) =
            (v.control.exit_code, v.control.exit_info1, v.control.exit_info2);
        let (rax, rsp, nrip) = (v.save.rax, v.save.rsp, v.control.next_rip);
        // An event whose delivery the exit interrupted is delivered again (§15.7.2).
        self.pending = reinjected(v.control.exit_int_info);
        (self.gprs.0[reg::RAX], self.gprs.0[reg::RSP]) = (rax, rsp);
        let exit = decode(code, info1, info2).inspect_err(|e| {
            let g = &self.vmcb().save;
            let why = invalid_state(g.cr0, g.cr3, g.cr4, g.efer, crate::vmm::cr::maxphyaddr());
            crate::println!(
                "svm: VMRUN failed: {e}: the guest state fails a check of §15.5.1{}{}",
                if why.is_some() { ": " } else { "" },
                why.unwrap_or("")
            );
        })?;
        // IOIO always reports the next RIP in EXITINFO2 (§15.10.2); NRIP save covers the
        // other instruction intercepts and is 0 elsewhere (§15.7.1).
        self.next_rip = match exit {
            VmExit::Io(_) => Some(info2),
            _ if self.nrip_save && nrip != 0 => Some(nrip),
            _ => None,
        };
        if let VmExit::Unknown { code: c @ (code::IRET | code::EXCP_DB), .. } = exit {
            // The IRET intercept or a single step's #DB: the NMI tracking's (`nmi.rs`).
            return Ok(self.nmi_exit(c));
        }
        if exit == VmExit::HostInterrupt
            && self.timeslice != 0
            && rdtsc().wrapping_sub(start) >= self.timeslice
        {
            return Ok(VmExit::Preempted);
        }
        Ok(exit)
    }

    fn vmcb(&self) -> &Vmcb {
        // SAFETY: the first frame of `pages` is this vCPU's VMCB, identity-mapped and owned by
        // it; the CPU writes it only during `svm_run`, when no reference to it exists.
        unsafe { &*(self.pages.0 as *const Vmcb) }
    }

    fn vmcb_mut(&mut self) -> &mut Vmcb {
        // SAFETY: as `vmcb`; `&mut self` makes this the only reference.
        unsafe { &mut *(self.pages.0 as *mut Vmcb) }
    }
}

impl Vcpu for SvmVcpu {
    fn run(&mut self) -> Result<VmExit, EntryError> {
        let start = if self.timeslice != 0 { rdtsc() } else { 0 };
        self.run_once(start)
    }

    fn take_fast_exits(&mut self) -> u64 {
        core::mem::take(&mut self.fast_exits)
    }

    fn set_cpuid_site(&mut self, site: Option<CodeSite>) {
        self.cpuid_site = site;
    }

    fn gprs(&mut self) -> &mut Gprs {
        &mut self.gprs
    }

    fn rip(&self) -> u64 {
        self.vmcb().save.rip
    }
    fn set_rip(&mut self, rip: u64) {
        self.vmcb_mut().save.rip = rip;
    }
    fn rflags(&self) -> u64 {
        self.vmcb().save.rflags
    }
    fn set_rflags(&mut self, v: u64) {
        self.vmcb_mut().save.rflags = v;
    }
    fn next_rip(&self) -> Option<u64> {
        self.next_rip
    }

    fn cr(&self, n: u8) -> u64 {
        let v = self.vmcb();
        match n {
            0 => v.save.cr0,
            2 => v.save.cr2,
            3 => v.save.cr3,
            4 => v.save.cr4,
            8 => u64::from(v.control.int_ctl.bits() & 0xf),
            _ => 0,
        }
    }

    fn set_cr(&mut self, n: u8, val: u64) {
        let v = self.vmcb_mut();
        match n {
            0 => {
                // Turning paging on with EFER.LME set activates long mode (EFER.LMA), turning
                // it off leaves it (APM Vol. 2 §14.6.1); the CPU does this on a MOV that did
                // not exit, VMRUN takes EFER as it is.
                const PG: u64 = 1 << 31;
                if (v.save.cr0 ^ val) & PG != 0 {
                    let lma = val & PG != 0 && v.save.efer & EFER_LME != 0;
                    v.save.efer =
                        if lma { v.save.efer | EFER_LMA } else { v.save.efer & !EFER_LMA };
                }
                v.save.cr0 = val;
            }
            2 => {
                // Loaded by VMRUN (an injected #PF's address); no TLB effect.
                v.save.cr2 = val;
                return;
            }
            3 => v.save.cr3 = val,
            4 => v.save.cr4 = val,
            8 => {
                let tpr = IntCtl::from_bits_retain(val as u32 & 0xf);
                v.control.int_ctl = (v.control.int_ctl - IntCtl::V_TPR) | tpr;
                return;
            }
            _ => return,
        }
        // VMRUN does not flush the guest's TLB when CR0/CR3/CR4 change under it.
        self.flush = true;
    }

    fn msr(&self, m: HwMsr) -> u64 {
        let g = &self.vmcb().save;
        match m {
            HwMsr::Efer => g.efer & !EFER_SVME,
            HwMsr::FsBase => g.fs.base,
            HwMsr::GsBase => g.gs.base,
            HwMsr::SysenterCs => g.sysenter_cs,
            HwMsr::SysenterEsp => g.sysenter_esp,
            HwMsr::SysenterEip => g.sysenter_eip,
            // VMSAVE stored these after the last run (SWAPGS changes KernelGsBase without an
            // exit), VMLOAD loads them before the next (§15.5.2).
            HwMsr::KernelGsBase => g.kernel_gs_base,
            HwMsr::Star => g.star,
            HwMsr::Lstar => g.lstar,
            HwMsr::Cstar => g.cstar,
            HwMsr::Fmask => g.sfmask,
            // The guest PAT, used with nested paging (§15.25.4).
            HwMsr::Pat => g.g_pat,
        }
    }

    fn set_msr(&mut self, m: HwMsr, val: u64) {
        let g = &mut self.vmcb_mut().save;
        match m {
            HwMsr::Efer => {
                g.efer = val | EFER_SVME;
                self.flush = true;
            }
            HwMsr::FsBase => g.fs.base = val,
            HwMsr::GsBase => g.gs.base = val,
            HwMsr::SysenterCs => g.sysenter_cs = val,
            HwMsr::SysenterEsp => g.sysenter_esp = val,
            HwMsr::SysenterEip => g.sysenter_eip = val,
            HwMsr::KernelGsBase => g.kernel_gs_base = val,
            HwMsr::Star => g.star = val,
            HwMsr::Lstar => g.lstar = val,
            HwMsr::Cstar => g.cstar = val,
            HwMsr::Fmask => g.sfmask = val,
            HwMsr::Pat => {
                g.g_pat = val;
                // Cached translations carry the memory types the old PAT gave.
                self.flush = true;
            }
        }
    }

    fn cs_base(&self) -> u64 {
        self.vmcb().save.cs.base
    }

    #[inline]
    fn linear_rip(&self) -> u64 {
        let g = &self.vmcb().save;
        // CS.base is 0 in every flat mode, the common case; 64-bit mode ignores it.
        if g.cs.base == 0 || (g.efer & EFER_LMA != 0 && g.cs.attrib & ATTRIB_L != 0) {
            g.rip
        } else {
            g.cs.base.wrapping_add(g.rip) & 0xffff_ffff
        }
    }

    fn cpl(&self) -> u8 {
        self.vmcb().save.cpl & 3
    }

    fn mode(&self) -> CpuMode {
        let g = &self.vmcb().save;
        CpuMode::from_state(
            g.cr0 & 1 != 0,
            g.rflags & RFLAGS_VM != 0,
            g.efer & EFER_LMA != 0,
            g.cs.attrib & ATTRIB_L != 0,
            g.cs.attrib & ATTRIB_DB != 0,
        )
    }

    fn inject(&mut self, e: Event) {
        if e == Event::Nmi {
            // Blocked until the handler's IRET, which exits (§15.9, the IRET intercept). An NMI
            // injected again after an interrupted delivery (EXITINTINFO) finds both set.
            self.nmi_masked = true;
            self.vmcb_mut().control.intercept1 |= I1::IRET;
        }
        self.pending = Some(e);
    }
    fn event_pending(&self) -> bool {
        self.pending.is_some()
    }

    fn interruptible(&self) -> bool {
        let v = self.vmcb();
        v.save.rflags & RFLAGS_IF != 0 && v.control.int_state & INTERRUPT_SHADOW == 0
    }

    fn instruction_completed(&mut self) {
        let v = self.vmcb_mut();
        v.control.int_state &= !INTERRUPT_SHADOW;
        if v.save.rflags & RFLAGS_TF != 0 {
            if self.step.is_some() && self.end_step() {
                // The hypervisor's own single step (an instruction it emulated): no #DB.
                return;
            }
            let v = self.vmcb_mut();
            // DR6 is in the VMCB (loaded by VMRUN); the #DB goes in through EVENTINJ (§15.20).
            v.save.dr6 |= DR6_BS;
            if self.pending.is_none() {
                self.pending = Some(Event::Exception { vector: 1, error_code: None });
            }
        }
    }

    /// A virtual interrupt that ignores V_TPR and is intercepted (VINTR) as soon as the guest
    /// could take it (§15.21.4); the intercept comes first, so its vector is never delivered.
    fn set_interrupt_window_exiting(&mut self, on: bool) {
        let c = &mut self.vmcb_mut().control;
        let window = IntCtl::V_IRQ | IntCtl::V_IGN_TPR | IntCtl::V_INTR_PRIO;
        c.int_ctl.set(window, on);
        c.intercept1.set(I1::VINTR, on);
    }

    fn nmi_injectable(&self) -> bool {
        // The interrupt shadow holds NMIs back too (as KVM and the SDM's MOV-SS rule have it).
        self.pending.is_none()
            && !self.nmi_masked
            && self.vmcb().control.int_state & INTERRUPT_SHADOW == 0
    }

    /// SVM has no NMI window: while an injected NMI blocks, the IRET intercept is on (set at
    /// injection) and a single step follows it; an interrupt shadow is stepped over.
    fn set_nmi_window_exiting(&mut self, on: bool) {
        if on && !self.nmi_masked && self.vmcb().control.int_state & INTERRUPT_SHADOW != 0 {
            self.begin_step(false);
        }
    }

    /// SVM has no VMX-preemption-timer equivalent: a run ends at the next intercepted host
    /// interrupt (INTR), which this reports as [`VmExit::Preempted`] once the slice is spent.
    /// Preemption of a guest that never exits therefore comes from a host timer interrupt
    /// (the LAPIC timer), which the platform does not arm yet.
    fn set_pause_exiting(&mut self, on: bool) -> bool {
        // CPUID Fn8000_000A EDX: bit 10 pause filter, bit 12 its threshold (APM Vol. 3
        // Appendix E, Fn8000_000A_EDX). Without a filter every PAUSE exits (QEMU's TCG has none).
        let edx = core::arch::x86_64::__cpuid(0x8000_000a).edx;
        let c = &mut self.vmcb_mut().control;
        // APM Vol. 2 §15.14.4: with a count, the intercept comes once that many PAUSEs ran
        // (with a threshold: none more than that many cycles after the one before it).
        c.pause_filter_count = if edx & (1 << 10) != 0 { PAUSE_FILTER_COUNT } else { 0 };
        c.pause_filter_threshold = if edx & (1 << 12) != 0 { PAUSE_FILTER_THRESHOLD } else { 0 };
        c.intercept1.set(I1::PAUSE, on);
        true
    }

    fn set_timeslice(&mut self, ticks: u64) {
        self.timeslice = ticks;
        // SVM has no preemption timer: the host APIC's timer interrupt, which the INTR
        // intercept turns into an exit (APM vol. 2 §15.21.4), ends a slice whatever the guest
        // does (a guest spinning with interrupts off included). Armed once per slice.
        if ticks == 0 {
            crate::arch::x86::lapic::disarm();
        } else {
            crate::arch::x86::lapic::arm(ticks);
        }
    }

    fn pass_through_ports(&mut self, first: u16, count: u16) {
        let iopm = (self.pages.0 + IOPM_PAGE * PAGE_SIZE) as *mut u8;
        for port in u32::from(first)..(u32::from(first) + u32::from(count)).min(0x1_0000) {
            // One bit a port (§15.10.1).
            // SAFETY: the map's frames belong to this vCPU; the byte offset is below 8 KiB.
            unsafe { *iopm.add((port / 8) as usize) &= !(1 << (port % 8)) };
        }
    }

    fn flush_second_level(&mut self) {
        self.flush = true;
    }

    fn reset(&mut self, s: &InitialState) {
        self.write_guest_state(s);
        self.set_interrupt_window_exiting(false);
        self.nmi_masked = false;
        self.step = None;
        let c = &mut self.vmcb_mut().control;
        c.intercept1.remove(I1::IRET);
        c.intercept_exceptions &= !INTERCEPT_DB;
        c.int_state = 0;
        c.event_inj = 0;
        // V_TPR (CR8) is 0 after INIT.
        c.int_ctl.remove(IntCtl::V_TPR);
        self.gprs = s.gprs;
        self.pending = None;
        self.next_rip = None;
        self.cpuid_site = None;
        self.flush = true;
    }

    fn dump(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        let (c, g) = (&self.vmcb().control, &self.vmcb().save);
        writeln!(out, "  svm guest state (APM Vol. 2 §15.5.1 lists VMRUN's checks):")?;
        writeln!(
            out,
            "    RIP {:#x} RSP {:#x} RAX {:#x} RFLAGS {:#x} CPL {}",
            g.rip, g.rsp, g.rax, g.rflags, g.cpl
        )?;
        writeln!(
            out,
            "    CR0 {:#x} CR2 {:#x} CR3 {:#x} CR4 {:#x} EFER {:#x} DR6 {:#x} DR7 {:#x}",
            g.cr0, g.cr2, g.cr3, g.cr4, g.efer, g.dr6, g.dr7
        )?;
        for (name, s) in [
            ("CS", &g.cs),
            ("SS", &g.ss),
            ("DS", &g.ds),
            ("ES", &g.es),
            ("FS", &g.fs),
            ("GS", &g.gs),
            ("TR", &g.tr),
            ("LDTR", &g.ldtr),
            ("GDTR", &g.gdtr),
            ("IDTR", &g.idtr),
        ] {
            writeln!(
                out,
                "    {name:4} sel {:#06x} base {:#x} limit {:#x} attrib {:#05x}",
                s.selector, s.base, s.limit, s.attrib
            )?;
        }
        writeln!(
            out,
            "    intercepts CR {:#x} DR {:#x} exceptions {:#x} vector3 {:#x} vector4 {:#x}",
            c.intercept_cr,
            c.intercept_dr,
            c.intercept_exceptions,
            c.intercept1.bits(),
            c.intercept2.bits()
        )?;
        writeln!(
            out,
            "    ASID {} TLB control {} int_ctl {:#x} int_state {:#x} EVENTINJ {:#x} NP {:#x} nCR3 {:#x}",
            c.guest_asid,
            c.tlb_control,
            c.int_ctl.bits(),
            c.int_state,
            c.event_inj,
            c.np_control,
            c.n_cr3
        )?;
        writeln!(
            out,
            "    last exit: code {:#x} ({}) EXITINFO1 {:#x} EXITINFO2 {:#x} EXITINTINFO {:#x} nRIP {:#x}",
            c.exit_code,
            code_name(c.exit_code),
            c.exit_info1,
            c.exit_info2,
            c.exit_int_info,
            c.next_rip
        )
    }
}

impl Drop for SvmVcpu {
    fn drop(&mut self) {
        self.owners.release(self.vmcb().control.guest_asid, self.pages.0);
        HostPages::free(self.pages, PAGES);
    }
}
