//! [`VmExit`]: the contract between the backends and the core. Each backend turns its exit
//! codes (a VMX basic exit reason and qualification, an SVM EXITCODE and EXITINFO) into one of
//! these; every handler above is written once.

/// Why the vCPU stopped running guest code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmExit {
    /// CPUID (VMX reason 10, SVM 0x72). Leaf in EAX, subleaf in ECX.
    Cpuid,
    /// RDMSR (VMX 31, SVM 0x7C with EXITINFO1 = 0). MSR number in ECX.
    Rdmsr,
    /// WRMSR (VMX 32, SVM 0x7C with EXITINFO1 = 1). MSR in ECX, value in EDX:EAX.
    Wrmsr,
    /// MOV to or from a control register (VMX 28; SVM CR read/write intercepts 0x00-0x1F).
    /// `gpr` is the general register's number (0 = RAX ... 15 = R15), or `None` where the exit
    /// does not say (SVM without decode assists): the core decodes the instruction.
    CrAccess { cr: u8, write: bool, gpr: Option<u8> },
    /// XSETBV (VMX 55, SVM 0x8D).
    Xsetbv,
    /// INVD (VMX 13, SVM 0x76) or WBINVD (VMX 54, SVM 0x89).
    CacheFlush,
    /// HLT (VMX 12, SVM 0x78).
    Hlt,
    /// VMCALL (VMX 18) / VMMCALL (SVM 0x81).
    Hypercall,
    /// A virtualization instruction of either vendor executed by the guest (VMX 19-27, 50, 53;
    /// SVM 0x80-0x86 except VMMCALL); answered with #UD.
    VirtInstruction,
    /// Port I/O (VMX 30, SVM 0x7B).
    Io(IoAccess),
    /// A guest-physical access that the second-level tables do not allow (VMX 48 EPT violation,
    /// SVM 0x400 NPF): MMIO or a violation.
    Paging { gpa: u64, access: Access },
    /// The time slice ran out (VMX 52 preemption timer, SVM 0x60 INTR from the host timer).
    Preempted,
    /// A host interrupt arrived (VMX 1, SVM 0x60).
    HostInterrupt,
    /// The guest can take an interrupt now (VMX 7, SVM 0x64 VINTR), or an NMI (VMX 8 NMI
    /// window; SVM: the single step past the IRET that ended NMI blocking).
    InterruptWindow,
    /// Triple fault (VMX 2, SVM 0x7F shutdown).
    TripleFault,
    /// INIT signal (VMX 3, SVM 0x63).
    Init,
    /// An instruction the hypervisor refuses to the guest (MONITOR, MWAIT, RDPMC...): #UD.
    Unsupported,
    /// RDPMC (VMX 15, SVM 0x6f): read a performance counter.
    Rdpmc,
    /// PAUSE in a spin loop (VMX 40 by PAUSE-loop exiting, SDM Vol. 3C §26.1.3; SVM 0x77, the
    /// PAUSE intercept after its filter count, APM Vol. 2 §15.14.4): only for vCPUs that share
    /// a CPU (`Vcpu::set_pause_exiting`).
    Pause,
    /// An exit code the backend does not know; `code` is the vendor's raw value.
    Unknown { code: u64, qualification: u64 },
}

/// One port access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoAccess {
    pub port: u16,
    /// 1, 2 or 4 bytes.
    pub size: u8,
    pub write: bool,
    /// INS/OUTS.
    pub string: bool,
    /// REP prefix.
    pub rep: bool,
}

/// How a guest-physical address was touched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Fetch,
}

impl core::fmt::Display for Access {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Fetch => "instruction fetch",
        })
    }
}

impl VmExit {
    /// The name used in exit statistics (`hvabi::hypercall::EXIT_KIND_NAMES`, which the
    /// management partition's statistics call shares).
    pub const fn name(&self) -> &'static str {
        NAMES[self.index()]
    }

    /// Index into [`ExitStats`].
    pub const fn index(&self) -> usize {
        match self {
            Self::Cpuid => 0,
            Self::Rdmsr => 1,
            Self::Wrmsr => 2,
            Self::CrAccess { .. } => 3,
            Self::Xsetbv => 4,
            Self::CacheFlush => 5,
            Self::Hlt => 6,
            Self::Hypercall => 7,
            Self::VirtInstruction => 8,
            Self::Io(_) => 9,
            Self::Paging { .. } => 10,
            Self::Preempted => 11,
            Self::HostInterrupt => 12,
            Self::InterruptWindow => 13,
            Self::TripleFault => 14,
            Self::Init => 15,
            Self::Unsupported => 16,
            Self::Unknown { .. } => 17,
            Self::Rdpmc => 18,
            Self::Pause => 19,
        }
    }
}

impl core::fmt::Display for VmExit {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::CrAccess { cr, write, gpr } => {
                write!(f, "mov {} cr{cr}", if *write { "to" } else { "from" })?;
                match gpr {
                    Some(g) => write!(f, " (gpr {g})"),
                    None => f.write_str(" (gpr not decoded)"),
                }
            }
            Self::Io(io) => write!(
                f,
                "io {} port {:#x} size {}{}",
                if io.write { "out" } else { "in" },
                io.port,
                io.size,
                if io.string { " string" } else { "" }
            ),
            Self::Paging { gpa, access } => write!(f, "npf/ept {access} of {gpa:#x}"),
            Self::Unknown { code, qualification } => {
                write!(f, "unknown exit {code:#x} qualification {qualification:#x}")
            }
            other => f.write_str(other.name()),
        }
    }
}

/// Number of distinct exit kinds.
pub const EXIT_KINDS: usize = NAMES.len();
use hvabi::hypercall::EXIT_KIND_NAMES as NAMES;

/// Exit counts by kind.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExitStats {
    pub counts: [u64; EXIT_KINDS],
}

impl ExitStats {
    pub fn record(&mut self, e: &VmExit) {
        self.counts[e.index()] += 1;
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Non-zero counts with their names.
    pub fn nonzero(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        NAMES.iter().zip(self.counts).filter(|(_, c)| *c > 0).map(|(n, c)| (*n, c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_indices_agree() {
        let all = [
            VmExit::Cpuid,
            VmExit::Rdmsr,
            VmExit::Wrmsr,
            VmExit::CrAccess { cr: 0, write: true, gpr: Some(0) },
            VmExit::Xsetbv,
            VmExit::CacheFlush,
            VmExit::Hlt,
            VmExit::Hypercall,
            VmExit::VirtInstruction,
            VmExit::Io(IoAccess { port: 0, size: 1, write: false, string: false, rep: false }),
            VmExit::Paging { gpa: 0, access: Access::Read },
            VmExit::Preempted,
            VmExit::HostInterrupt,
            VmExit::InterruptWindow,
            VmExit::TripleFault,
            VmExit::Init,
            VmExit::Unsupported,
            VmExit::Unknown { code: 0, qualification: 0 },
            VmExit::Rdpmc,
            VmExit::Pause,
        ];
        for (i, e) in all.iter().enumerate() {
            assert_eq!(e.index(), i);
            assert_eq!(e.name(), NAMES[i]);
        }
        let mut s = ExitStats::default();
        s.record(&VmExit::Cpuid);
        s.record(&VmExit::Cpuid);
        s.record(&VmExit::Hlt);
        assert_eq!(s.total(), 3);
        assert_eq!(s.nonzero().collect::<alloc::vec::Vec<_>>(), [("cpuid", 2), ("hlt", 1)]);
    }
}
