//! The vendor-neutral interface to a virtual CPU and to the backend that makes them.
//!
//! A backend (VMX or SVM) implements [`Backend`] once per host and [`Vcpu`] per virtual CPU.
//! The core drives a vCPU only through these: run it, read and change its registers, inject an
//! event, choose what causes exits. Nothing above this file knows a VMCS from a VMCB.

use super::code_site::CodeSite;
use super::exit::VmExit;
use alloc::boxed::Box;
use core::fmt;

/// General-purpose registers, indexed by their x86 encoding (0 = RAX, 1 = RCX, 2 = RDX,
/// 3 = RBX, 4 = RSP, 5 = RBP, 6 = RSI, 7 = RDI, 8..15 = R8..R15).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Gprs(pub [u64; 16]);

/// Register numbers, for readability at call sites.
pub mod reg {
    pub const RAX: usize = 0;
    pub const RCX: usize = 1;
    pub const RDX: usize = 2;
    pub const RBX: usize = 3;
    pub const RSP: usize = 4;
    pub const RBP: usize = 5;
    pub const RSI: usize = 6;
    pub const RDI: usize = 7;
    pub const R8: usize = 8;
}

/// Register names for dumps.
pub const GPR_NAMES: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];

/// An event to deliver to the guest at the next entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A hardware exception (vector 0-31), with its error code where the vector has one.
    Exception { vector: u8, error_code: Option<u32> },
    /// An external interrupt (vector 32-255).
    Interrupt { vector: u8 },
    /// A non-maskable interrupt (vector 2): VMX interruption type 2 (SDM Vol. 3C §25.8.3),
    /// SVM EVENTINJ type 2 (APM Vol. 2 §15.20). Not masked by RFLAGS.IF; it blocks further
    /// NMIs until the guest's next IRET (SDM Vol. 3A §6.7.1), which the backend tracks
    /// ([`Vcpu::nmi_injectable`]).
    Nmi,
}

/// Exception vectors the core injects.
pub mod vector {
    pub const DB: u8 = 1;
    pub const UD: u8 = 6;
    pub const GP: u8 = 13;
}

impl Event {
    /// #GP(0).
    pub const GP0: Self = Self::Exception { vector: vector::GP, error_code: Some(0) };
    /// #UD.
    pub const UD: Self = Self::Exception { vector: vector::UD, error_code: None };

    /// A fault-class exception (SDM Vol. 3A §6.5, Table 6-1): #DE, #BR, #UD, #NM, #TS, #NP,
    /// #SS, #GP, #PF, #MF, #AC, #XM, #VE, #CP. The CPU saves RFLAGS with RF set when it
    /// delivers one (§6.13, §17.3.1.1); #DB (fault or trap), #BP and #OF (traps), #DF and #MC
    /// (aborts) are not.
    pub const fn is_fault(self) -> bool {
        matches!(
            self,
            Self::Exception { vector: 0 | 5 | 6 | 7 | 10..=14 | 16 | 17 | 19..=21, .. }
        )
    }
}

pub use super::decode::CpuMode;

/// A segment register's full state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub selector: u16,
    pub base: u64,
    pub limit: u32,
    /// Access rights in the VMX layout (type, S, DPL, P, AVL, L, D/B, G in bits 0-15);
    /// the SVM backend converts to its packed attribute format.
    pub access: u16,
}

/// Code segment access rights: 64-bit, present, DPL 0, execute/read, accessed, 4 KiB granular.
pub const ACCESS_CODE64: u16 = 0xa09b;
/// Code segment access rights: 32-bit (D/B), present, DPL 0, execute/read, accessed, 4 KiB
/// granular (multiboot kernels).
pub const ACCESS_CODE32: u16 = 0xc09b;
/// Data segment access rights: present, DPL 0, read/write, accessed, 32-bit, 4 KiB granular.
pub const ACCESS_DATA: u16 = 0xc093;
/// A busy TSS: 64-bit in IA-32e mode, 32-bit outside it (the same type, 11).
pub const ACCESS_TSS64: u16 = 0x008b;

/// The state a vCPU starts in (see `docs/guest-contract.md`).
#[derive(Clone, Copy, Debug, Default)]
pub struct InitialState {
    pub gprs: Gprs,
    pub rip: u64,
    pub rflags: u64,
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub cs: Segment,
    /// DS, ES, SS, FS and GS.
    pub data: Segment,
    pub tr: Segment,
    pub gdt_base: u64,
    pub gdt_limit: u16,
    pub idt_base: u64,
    pub idt_limit: u16,
}

/// MSRs whose guest value lives in the backend's hardware state rather than in the core's
/// software copy: every MSR the CPU itself uses while the guest runs. The backend keeps the
/// guest's value where the CPU finds it (VMCS guest fields, the VMCB save area with
/// VMLOAD/VMSAVE, or the CPU's own MSRs switched lazily) and [`Vcpu::msr`] returns the live
/// value (KERNEL_GS_BASE after a SWAPGS, for example).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HwMsr {
    Efer,
    FsBase,
    GsBase,
    KernelGsBase,
    SysenterCs,
    SysenterEsp,
    SysenterEip,
    /// SYSCALL/SYSRET: STAR, LSTAR, CSTAR, FMASK (SFMASK on AMD).
    Star,
    Lstar,
    Cstar,
    Fmask,
    /// IA32_PAT (the guest PAT under nested paging).
    Pat,
}

/// Why VM entry failed: the backend's words for it, and the raw code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryError {
    pub what: &'static str,
    pub code: u64,
}

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {:#x})", self.what, self.code)
    }
}

/// One virtual CPU of one partition.
pub trait Vcpu {
    /// Enters the guest and returns at the next exit.
    fn run(&mut self) -> Result<VmExit, EntryError>;
    /// CPUID exits the backend's fast path handled during the last run (counted in the
    /// statistics, not in the last-exits record).
    fn take_fast_exits(&mut self) -> u64 {
        0
    }
    /// Where the last CPUID the core emulated lies, when the CPU gives no next RIP: the backend
    /// may then handle later CPUID exits there on its fast path (SVM without NRIP save).
    fn set_cpuid_site(&mut self, _site: Option<CodeSite>) {}
    /// The general registers (RSP included, kept in step with the hardware state).
    fn gprs(&mut self) -> &mut Gprs;
    fn rip(&self) -> u64;
    fn set_rip(&mut self, rip: u64);
    fn rflags(&self) -> u64;
    fn set_rflags(&mut self, v: u64);
    /// Where the instruction that exited ends, when the hardware says (VMX exit instruction
    /// length, SVM NRIP save). `None`: the core decodes the instruction itself.
    fn next_rip(&self) -> Option<u64>;
    /// The guest's view of CR0, CR2, CR3, CR4 or CR8.
    fn cr(&self, n: u8) -> u64;
    /// A guest write to CR0, CR3, CR4 or CR8, already validated by the core; or CR2, for a #PF
    /// the core injects.
    fn set_cr(&mut self, n: u8, v: u64);
    /// The guest's value of a hardware-held MSR.
    fn msr(&self, m: HwMsr) -> u64;
    fn set_msr(&mut self, m: HwMsr, v: u64);
    /// The guest's execution mode.
    fn mode(&self) -> CpuMode;
    /// CS's base: outside 64-bit mode, the instruction at RIP is at linear CS.base + RIP
    /// (SDM Vol. 3A §3.4.3; real mode: CS × 16).
    fn cs_base(&self) -> u64;
    /// The linear address of the instruction at RIP: RIP in 64-bit mode, CS.base + EIP (32
    /// bits wide) outside it (SDM Vol. 3A §3.4.3, §5.3.1). One call on the exit path.
    fn linear_rip(&self) -> u64 {
        let (rip, base) = (self.rip(), self.cs_base());
        if base == 0 || self.mode() == CpuMode::Long64 {
            rip
        } else {
            base.wrapping_add(rip) & 0xffff_ffff
        }
    }
    /// The guest's current privilege level (SS.DPL on VMX, SDM vol. 3C §25.4.1; the VMCB's
    /// CPL field on SVM, APM vol. 2 §15.5.1).
    fn cpl(&self) -> u8;
    /// Queues an event for the next entry (one at a time).
    fn inject(&mut self, e: Event);
    /// True when an event is queued and not yet delivered.
    fn event_pending(&self) -> bool;
    /// True when the guest would accept an external interrupt now (RFLAGS.IF and no
    /// STI/MOV-SS shadow).
    fn interruptible(&self) -> bool;
    /// An instruction the core emulated completed (RIP is past it): ends an STI/MOV-SS
    /// interrupt shadow and, with RFLAGS.TF set, delivers the single-step #DB (DR6.BS, SDM
    /// Vol. 3B §17.3.1.4) before the guest's next instruction. One call for both: it is on
    /// every emulated instruction's path.
    fn instruction_completed(&mut self);
    /// Exit as soon as the guest can take an interrupt.
    fn set_interrupt_window_exiting(&mut self, on: bool);
    /// True when an NMI injected now would be delivered: no NMI blocking (an NMI delivered
    /// and its handler's IRET not yet executed, SDM Vol. 3A §6.7.1) and no MOV-SS shadow
    /// (SDM Vol. 3C §25.4.2, Table 25-3; STI blocking is left to the backend: the SDM lets a
    /// CPU deliver an NMI inside it). An injected event must not be pending either.
    fn nmi_injectable(&self) -> bool;
    /// Exit ([`super::exit::VmExit::InterruptWindow`]) as soon as the guest can take an NMI
    /// (VMX NMI-window exiting; SVM: the IRET intercept, then one single step past the IRET).
    fn set_nmi_window_exiting(&mut self, on: bool);
    /// Ends the next run after about `ticks` TSC ticks of guest time (0 = no limit).
    fn set_timeslice(&mut self, ticks: u64);
    /// Exits ([`super::exit::VmExit::Pause`]) on a PAUSE that spins: VMX PAUSE-loop exiting,
    /// SVM's PAUSE intercept (with its filter count where the CPU has one). For vCPUs that
    /// share a CPU, so that one spinning for another hands it the CPU. False (and nothing
    /// changes) where the CPU cannot.
    fn set_pause_exiting(&mut self, _on: bool) -> bool {
        false
    }
    /// Lets the guest reach ports `[first, first+count)` directly (management partition).
    fn pass_through_ports(&mut self, first: u16, count: u16);
    /// Root of the second-level table changed or shrank: flush its translations.
    fn flush_second_level(&mut self);
    /// Puts the vCPU into architectural state `s`, as INIT and a start-up IPI do (SDM Vol. 3A
    /// §10.1.1, Table 10-1; APM Vol. 2 §14.1.3): registers, segments (LDTR unusable), control
    /// registers, EFER, GDTR, IDTR, DR7; a queued event, an interrupt shadow, a pending
    /// single-step trap and the interrupt window are dropped. The hardware-held MSRs other
    /// than EFER keep their values (INIT leaves MSRs alone).
    fn reset(&mut self, s: &InitialState);
    /// Prints the vendor's view of the guest state (for failed entries and crash reports).
    fn dump(&self, out: &mut dyn fmt::Write) -> fmt::Result;
}

/// A second-level address translation (EPT or NPT) for one partition.
pub trait SecondLevel {
    /// Maps guest-physical `[gpa, gpa+len)` to host-physical `hpa`, read/write/execute.
    fn map(&mut self, gpa: u64, hpa: u64, len: u64) -> Result<(), crate::mm::pagetable::MapError>;
    /// Maps device space `[gpa, gpa+len)` to host-physical `hpa`, read/write, uncacheable
    /// (management partition pass-through).
    fn map_mmio(
        &mut self,
        gpa: u64,
        hpa: u64,
        len: u64,
    ) -> Result<(), crate::mm::pagetable::MapError>;
    /// Maps `[gpa, gpa+len)` to host-physical `hpa`, read and execute only, write-back: the
    /// firmware's read-only memory (a write is a second-level fault: EPT violation, SDM Vol. 3C
    /// §29.3.3.2; nested page fault, APM Vol. 2 §15.25.6).
    fn map_readonly(
        &mut self,
        gpa: u64,
        hpa: u64,
        len: u64,
    ) -> Result<(), crate::mm::pagetable::MapError>;
    /// Removes a mapping.
    fn unmap(&mut self, gpa: u64, len: u64) -> Result<(), crate::mm::pagetable::MapError>;
    /// Host-physical address for a guest-physical one, if mapped.
    fn translate(&mut self, gpa: u64) -> Option<u64>;
    /// The root to put into the EPTP / nCR3.
    fn root(&self) -> u64;
    /// Table pages in use.
    fn tables_used(&self) -> usize;
}

/// What the backend needs to know to build a vCPU.
#[derive(Debug)]
pub struct VcpuConfig {
    pub initial: InitialState,
    /// Second-level table root (EPTP / nCR3 value before vendor bits).
    pub slat_root: u64,
    /// Tag for TLB entries (VPID / ASID), unique per live vCPU, never 0.
    pub tag: u16,
}

/// A hardware virtualization backend, chosen once at boot by CPUID.
pub trait Backend {
    /// "vmx" or "svm".
    fn name(&self) -> &'static str;
    /// A new, empty second-level table.
    fn new_second_level(&mut self) -> Result<Box<dyn SecondLevel>, &'static str>;
    /// A new vCPU in `config`'s initial state.
    fn create_vcpu(&mut self, config: &VcpuConfig) -> Result<Box<dyn Vcpu>, &'static str>;
}

#[cfg(test)]
mod tests {
    use super::Event;

    #[test]
    fn faults_are_the_fault_class_vectors() {
        let fault = |v| Event::Exception { vector: v, error_code: None }.is_fault();
        for v in [0, 5, 6, 7, 10, 11, 12, 13, 14, 16, 17, 19, 20, 21] {
            assert!(fault(v), "vector {v}");
        }
        for v in [1, 2, 3, 4, 8, 9, 15, 18, 22, 31] {
            assert!(!fault(v), "vector {v}");
        }
        assert!(Event::GP0.is_fault() && Event::UD.is_fault());
        assert!(!Event::Interrupt { vector: 14 }.is_fault(), "an interrupt is no fault");
    }
}
