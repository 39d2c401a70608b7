//! VMX exit reasons (SDM Vol. 3D Appendix C) and their translation into [`VmExit`].

use crate::vmm::exit::{Access, IoAccess, VmExit};

/// Basic exit reasons used by this backend.
pub mod reason {
    pub const EXCEPTION_OR_NMI: u32 = 0;
    pub const EXTERNAL_INTERRUPT: u32 = 1;
    pub const TRIPLE_FAULT: u32 = 2;
    pub const INIT: u32 = 3;
    pub const SIPI: u32 = 4;
    pub const INTERRUPT_WINDOW: u32 = 7;
    pub const NMI_WINDOW: u32 = 8;
    pub const CPUID: u32 = 10;
    pub const GETSEC: u32 = 11;
    pub const HLT: u32 = 12;
    pub const INVD: u32 = 13;
    pub const INVLPG: u32 = 14;
    pub const RDPMC: u32 = 15;
    pub const RDTSC: u32 = 16;
    pub const VMCALL: u32 = 18;
    pub const VMCLEAR: u32 = 19;
    pub const VMXON: u32 = 27;
    pub const CR_ACCESS: u32 = 28;
    pub const IO: u32 = 30;
    pub const RDMSR: u32 = 31;
    pub const WRMSR: u32 = 32;
    pub const INVALID_GUEST_STATE: u32 = 33;
    pub const MSR_LOADING: u32 = 34;
    pub const MWAIT: u32 = 36;
    pub const MONITOR: u32 = 39;
    pub const PAUSE: u32 = 40;
    pub const MACHINE_CHECK: u32 = 41;
    pub const EPT_VIOLATION: u32 = 48;
    pub const EPT_MISCONFIG: u32 = 49;
    pub const INVEPT: u32 = 50;
    pub const RDTSCP: u32 = 51;
    pub const PREEMPTION_TIMER: u32 = 52;
    pub const INVVPID: u32 = 53;
    pub const WBINVD: u32 = 54;
    pub const XSETBV: u32 = 55;
    pub const RDRAND: u32 = 57;
    pub const INVPCID: u32 = 58;
    pub const VMFUNC: u32 = 59;
    pub const RDSEED: u32 = 61;
}

/// The name of a basic exit reason, for reports.
pub fn reason_name(r: u32) -> &'static str {
    use reason::*;
    match r {
        EXCEPTION_OR_NMI => "exception or NMI",
        EXTERNAL_INTERRUPT => "external interrupt",
        TRIPLE_FAULT => "triple fault",
        INIT => "INIT signal",
        SIPI => "SIPI",
        INTERRUPT_WINDOW => "interrupt window",
        NMI_WINDOW => "NMI window",
        CPUID => "CPUID",
        HLT => "HLT",
        INVD => "INVD",
        VMCALL => "VMCALL",
        19..=27 => "VMX instruction",
        CR_ACCESS => "control-register access",
        IO => "I/O instruction",
        RDMSR => "RDMSR",
        WRMSR => "WRMSR",
        INVALID_GUEST_STATE => "VM-entry failure: invalid guest state",
        MSR_LOADING => "VM-entry failure: MSR loading",
        MACHINE_CHECK => "VM-entry failure: machine-check event",
        EPT_VIOLATION => "EPT violation",
        EPT_MISCONFIG => "EPT misconfiguration",
        PREEMPTION_TIMER => "VMX-preemption timer expired",
        WBINVD => "WBINVD",
        XSETBV => "XSETBV",
        PAUSE => "PAUSE",
        _ => "other",
    }
}

/// Translates a basic exit reason and its qualification (and, for EPT violations, the
/// guest-physical address) into the neutral [`VmExit`].
pub fn decode(basic: u32, qualification: u64, gpa: u64) -> VmExit {
    use reason::*;
    match basic {
        CPUID => VmExit::Cpuid,
        RDMSR => VmExit::Rdmsr,
        WRMSR => VmExit::Wrmsr,
        // SDM Table 28-3: CR number in 3:0, access type in 5:4, GPR in 11:8.
        CR_ACCESS => match (qualification >> 4) & 3 {
            0 | 1 => VmExit::CrAccess {
                cr: (qualification & 0xf) as u8,
                write: (qualification >> 4) & 3 == 0,
                gpr: Some(((qualification >> 8) & 0xf) as u8),
            },
            // CLTS and LMSW only touch bits the guest owns unless masked; treat as unsupported.
            _ => VmExit::Unsupported,
        },
        XSETBV => VmExit::Xsetbv,
        INVD | WBINVD => VmExit::CacheFlush,
        HLT => VmExit::Hlt,
        VMCALL => VmExit::Hypercall,
        19..=27 | INVEPT | INVVPID | VMFUNC | GETSEC => VmExit::VirtInstruction,
        // SDM Table 28-5: size-1 in 2:0, direction in 3 (1 = IN), string 4, REP 5, port 31:16.
        IO => VmExit::Io(IoAccess {
            port: (qualification >> 16) as u16,
            size: ((qualification & 7) + 1) as u8,
            write: qualification & (1 << 3) == 0,
            string: qualification & (1 << 4) != 0,
            rep: qualification & (1 << 5) != 0,
        }),
        // SDM Table 28-7: bit 0 read, 1 write, 2 fetch.
        EPT_VIOLATION => VmExit::Paging {
            gpa,
            access: if qualification & 2 != 0 {
                Access::Write
            } else if qualification & 4 != 0 {
                Access::Fetch
            } else {
                Access::Read
            },
        },
        PREEMPTION_TIMER => VmExit::Preempted,
        EXTERNAL_INTERRUPT => VmExit::HostInterrupt,
        // The core looks at every source again after either window.
        INTERRUPT_WINDOW | NMI_WINDOW => VmExit::InterruptWindow,
        TRIPLE_FAULT => VmExit::TripleFault,
        INIT => VmExit::Init,
        RDPMC => VmExit::Rdpmc,
        PAUSE => VmExit::Pause,
        MWAIT | MONITOR | RDRAND | RDSEED | INVPCID | RDTSCP => VmExit::Unsupported,
        other => VmExit::Unknown { code: u64::from(other), qualification },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_qualification() {
        // OUT DX, AL to 0x3f8: size 1, OUT, DX operand.
        let q = (0x3f8u64 << 16) | (1 << 6);
        assert_eq!(
            decode(reason::IO, q, 0),
            VmExit::Io(IoAccess { port: 0x3f8, size: 1, write: true, string: false, rep: false })
        );
        // REP INSW from 0x1f0.
        let q = (0x1f0u64 << 16) | 1 | (1 << 3) | (1 << 4) | (1 << 5);
        assert_eq!(
            decode(reason::IO, q, 0),
            VmExit::Io(IoAccess { port: 0x1f0, size: 2, write: false, string: true, rep: true })
        );
    }

    #[test]
    fn pause_is_its_own_exit() {
        // Basic reason 40: PAUSE, by PAUSE exiting or PAUSE-loop exiting (SDM Vol. 3D App. C).
        assert_eq!(decode(40, 0, 0), VmExit::Pause);
        assert_eq!(VmExit::Pause.name(), "pause");
    }

    #[test]
    fn cr_access_qualification() {
        // MOV CR4, RBX (write, GPR 3).
        assert_eq!(
            decode(reason::CR_ACCESS, 4 | (3 << 8), 0),
            VmExit::CrAccess { cr: 4, write: true, gpr: Some(3) }
        );
        // MOV R9, CR0 (read, GPR 9).
        assert_eq!(
            decode(reason::CR_ACCESS, (1 << 4) | (9 << 8), 0),
            VmExit::CrAccess { cr: 0, write: false, gpr: Some(9) }
        );
        assert_eq!(decode(reason::CR_ACCESS, 3 << 4, 0), VmExit::Unsupported);
    }

    #[test]
    fn ept_violation_and_others() {
        assert_eq!(
            decode(reason::EPT_VIOLATION, 0b010, 0x1_0000_0000),
            VmExit::Paging { gpa: 0x1_0000_0000, access: Access::Write }
        );
        assert_eq!(
            decode(reason::EPT_VIOLATION, 0b100, 5),
            VmExit::Paging { gpa: 5, access: Access::Fetch }
        );
        assert_eq!(decode(reason::VMXON, 0, 0), VmExit::VirtInstruction);
        assert_eq!(decode(reason::VMCALL, 0, 0), VmExit::Hypercall);
        assert_eq!(decode(reason::TRIPLE_FAULT, 0, 0), VmExit::TripleFault);
        assert_eq!(decode(reason::NMI_WINDOW, 0, 0), VmExit::InterruptWindow);
        assert_eq!(decode(99, 7, 0), VmExit::Unknown { code: 99, qualification: 7 });
    }
}
