//! SVM exit codes (APM Vol. 2 Appendix C, Table C-1) and their translation into [`VmExit`].

use super::vmcb::CR_GPR_VALID;
use crate::vmm::exit::{Access, IoAccess, VmExit};
use crate::vmm::vcpu::EntryError;

/// EXITCODE values used by this backend.
pub mod code {
    pub const CR0_READ: u64 = 0x00;
    pub const CR0_WRITE: u64 = 0x10;
    pub const CR15_WRITE: u64 = 0x1f;
    pub const INTR: u64 = 0x60;
    pub const NMI: u64 = 0x61;
    pub const INIT: u64 = 0x63;
    pub const VINTR: u64 = 0x64;
    pub const IRET: u64 = 0x74;
    /// Exception intercept 0x40 + 1: #DB.
    pub const EXCP_DB: u64 = 0x41;
    pub const RDPMC: u64 = 0x6f;
    pub const CPUID: u64 = 0x72;
    pub const INVD: u64 = 0x76;
    pub const PAUSE: u64 = 0x77;
    pub const HLT: u64 = 0x78;
    pub const INVLPGA: u64 = 0x7a;
    pub const IOIO: u64 = 0x7b;
    pub const MSR: u64 = 0x7c;
    pub const SHUTDOWN: u64 = 0x7f;
    pub const VMRUN: u64 = 0x80;
    pub const VMMCALL: u64 = 0x81;
    pub const VMLOAD: u64 = 0x82;
    pub const VMSAVE: u64 = 0x83;
    pub const STGI: u64 = 0x84;
    pub const CLGI: u64 = 0x85;
    pub const SKINIT: u64 = 0x86;
    pub const RDTSCP: u64 = 0x87;
    pub const WBINVD: u64 = 0x89;
    pub const MONITOR: u64 = 0x8a;
    pub const MWAIT: u64 = 0x8b;
    pub const MWAIT_CONDITIONAL: u64 = 0x8c;
    pub const XSETBV: u64 = 0x8d;
    pub const NPF: u64 = 0x400;
    /// VMEXIT_INVALID (-1): VMRUN refused the guest state (§15.5.1).
    pub const INVALID: u64 = u64::MAX;
    /// VMEXIT_BUSY (-2): the VMSA is in use (SEV-SNP).
    pub const BUSY: u64 = u64::MAX - 1;
}

/// The name of an exit code, for reports.
pub fn code_name(c: u64) -> &'static str {
    use code::*;
    match c {
        CR0_READ..=0x0f => "CR read",
        CR0_WRITE..=CR15_WRITE => "CR write",
        0x40..=0x5f => "exception",
        INTR => "INTR",
        NMI => "NMI",
        INIT => "INIT",
        VINTR => "VINTR",
        CPUID => "CPUID",
        HLT => "HLT",
        IOIO => "IOIO",
        MSR => "MSR",
        SHUTDOWN => "shutdown",
        VMRUN..=SKINIT | INVLPGA => "SVM instruction",
        XSETBV => "XSETBV",
        NPF => "nested page fault",
        INVALID => "VMEXIT_INVALID",
        BUSY => "VMEXIT_BUSY",
        _ => "other",
    }
}

/// Translates EXITCODE, EXITINFO1 and EXITINFO2 into the neutral [`VmExit`]; the codes VMRUN
/// reports without having entered the guest become an [`EntryError`].
pub fn decode(code: u64, info1: u64, info2: u64) -> Result<VmExit, EntryError> {
    use code::*;
    // QEMU TCG stores the 32-bit -1 and -2 (0xffff_ffff): sign-extend them.
    let code = if code as u32 >= BUSY as u32 { code as u32 as i32 as u64 } else { code };
    Ok(match code {
        CPUID => VmExit::Cpuid,
        // EXITINFO1: 0 RDMSR, 1 WRMSR (§15.11).
        MSR if info1 & 1 == 0 => VmExit::Rdmsr,
        MSR => VmExit::Wrmsr,
        // With decode assists EXITINFO1 names the GPR (§15.33.1); without, the exit says
        // nothing about the operand and the core decodes the instruction.
        CR0_READ..=CR15_WRITE => VmExit::CrAccess {
            cr: (code & 0xf) as u8,
            write: code >= CR0_WRITE,
            gpr: (info1 & CR_GPR_VALID != 0).then_some((info1 & 0xf) as u8),
        },
        XSETBV => VmExit::Xsetbv,
        INVD | WBINVD => VmExit::CacheFlush,
        HLT => VmExit::Hlt,
        VMMCALL => VmExit::Hypercall,
        VMRUN | VMLOAD | VMSAVE | STGI | CLGI | SKINIT | INVLPGA => VmExit::VirtInstruction,
        // EXITINFO1 (§15.10.2, Figure 15-2): bit 0 IN, 2 string, 3 REP, 6:4 size one-hot
        // (1, 2 or 4 bytes: the field's value is the size), 31:16 port.
        IOIO => VmExit::Io(IoAccess {
            port: (info1 >> 16) as u16,
            size: ((info1 >> 4) & 7) as u8,
            write: info1 & 1 == 0,
            string: info1 & (1 << 2) != 0,
            rep: info1 & (1 << 3) != 0,
        }),
        // EXITINFO1 is a #PF error code (bit 1 write, bit 4 fetch), EXITINFO2 the GPA
        // (§15.25.6).
        NPF => VmExit::Paging {
            gpa: info2,
            access: if info1 & (1 << 1) != 0 {
                Access::Write
            } else if info1 & (1 << 4) != 0 {
                Access::Fetch
            } else {
                Access::Read
            },
        },
        INTR | NMI => VmExit::HostInterrupt,
        VINTR => VmExit::InterruptWindow,
        SHUTDOWN => VmExit::TripleFault,
        INIT => VmExit::Init,
        RDPMC => VmExit::Rdpmc,
        PAUSE => VmExit::Pause,
        RDTSCP | MONITOR | MWAIT | MWAIT_CONDITIONAL => VmExit::Unsupported,
        INVALID | BUSY => {
            return Err(EntryError { what: code_name(code), code });
        }
        other => VmExit::Unknown { code: other, qualification: info1 },
    })
}

/// Which of VMRUN's control-register checks (APM Vol. 2 §15.5.1) the guest state fails, where
/// the guest itself wrote the register without an intercept: CR0 bits 63:32 or NW without CD,
/// CR3 bits at or above MAXPHYADDR in long mode (a MOV CR3 QEMU TCG does not check), CR4 bits
/// 63:32. `None`: none of these (another check failed).
pub fn invalid_state(
    cr0: u64,
    cr3: u64,
    cr4: u64,
    efer: u64,
    maxphyaddr: u8,
) -> Option<&'static str> {
    const CR0_NW: u64 = 1 << 29;
    const CR0_CD: u64 = 1 << 30;
    const EFER_LMA: u64 = 1 << 10;
    if cr0 >> 32 != 0 || (cr0 & CR0_NW != 0 && cr0 & CR0_CD == 0) {
        Some("CR0 has reserved bits or NW without CD")
    } else if efer & EFER_LMA != 0 && cr3 >> maxphyaddr.min(52) != 0 {
        Some("CR3 has bits set above MAXPHYADDR (a MOV to CR3 the CPU did not refuse)")
    } else if cr4 >> 32 != 0 {
        Some("CR4 has reserved bits")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::code::*;
    use super::*;

    fn io(info1: u64) -> VmExit {
        decode(IOIO, info1, 0x20_0010).unwrap()
    }

    #[test]
    fn ioio() {
        // OUT DX, AL to 0x3f8.
        assert_eq!(
            io((0x3f8 << 16) | (1 << 4)),
            VmExit::Io(IoAccess { port: 0x3f8, size: 1, write: true, string: false, rep: false })
        );
        // REP INSW from 0x1f0.
        assert_eq!(
            io((0x1f0 << 16) | (1 << 5) | (1 << 3) | (1 << 2) | 1),
            VmExit::Io(IoAccess { port: 0x1f0, size: 2, write: false, string: true, rep: true })
        );
        // IN EAX, 0x40.
        assert_eq!(
            io((0x40 << 16) | (1 << 6) | 1),
            VmExit::Io(IoAccess { port: 0x40, size: 4, write: false, string: false, rep: false })
        );
    }

    #[test]
    fn pause_is_its_own_exit() {
        // EXITCODE 0x77: the PAUSE intercept (APM Vol. 2 Appendix C).
        assert_eq!(decode(0x77, 0, 0), Ok(VmExit::Pause));
    }

    #[test]
    fn msr_and_npf() {
        assert_eq!(decode(MSR, 0, 0), Ok(VmExit::Rdmsr));
        assert_eq!(decode(MSR, 1, 0), Ok(VmExit::Wrmsr));
        let npf = |info1| decode(NPF, info1, 0xfeb0_0008).unwrap();
        let paging = |access| VmExit::Paging { gpa: 0xfeb0_0008, access };
        // Not-present user read, write, fetch (the U bit is always set: nested walks are user
        // accesses); bit 32 "final translation".
        assert_eq!(npf((1 << 32) | 0b00100), paging(Access::Read));
        assert_eq!(npf((1 << 32) | 0b00110), paging(Access::Write));
        assert_eq!(npf((1 << 32) | 0b10100), paging(Access::Fetch));
    }

    #[test]
    fn cr_access_gpr_from_decode_assists_only() {
        // MOV CR4, RBX with decode assists; MOV R9, CR0.
        assert_eq!(
            decode(CR0_WRITE + 4, CR_GPR_VALID | 3, 0),
            Ok(VmExit::CrAccess { cr: 4, write: true, gpr: Some(3) })
        );
        assert_eq!(
            decode(CR0_READ, CR_GPR_VALID | 9, 0),
            Ok(VmExit::CrAccess { cr: 0, write: false, gpr: Some(9) })
        );
        assert_eq!(
            decode(CR0_WRITE + 4, 0, 0),
            Ok(VmExit::CrAccess { cr: 4, write: true, gpr: None })
        );
    }

    #[test]
    fn invalid_state_names_the_register() {
        let (cr0, cr3, cr4, efer) = (0x8001_0033, 0x2000, 0x20, 0xd00);
        assert_eq!(invalid_state(cr0, cr3, cr4, efer, 40), None);
        assert!(invalid_state(cr0, cr3 | 1 << 62, cr4, efer, 40).unwrap().contains("CR3"));
        assert!(invalid_state(cr0 | 1 << 29, cr3, cr4, efer, 40).unwrap().contains("CR0"));
        assert!(invalid_state(cr0, cr3, cr4 | 1 << 32, efer, 40).unwrap().contains("CR4"));
        assert_eq!(invalid_state(cr0, 1 << 40, cr4, 0, 40), None, "32-bit CR3 outside long mode");
    }

    #[test]
    fn instructions_and_events() {
        assert_eq!(decode(CPUID, 0, 0), Ok(VmExit::Cpuid));
        assert_eq!(decode(VMMCALL, 0, 0), Ok(VmExit::Hypercall));
        for c in [VMRUN, VMLOAD, VMSAVE, STGI, CLGI, SKINIT, INVLPGA] {
            assert_eq!(decode(c, 0, 0), Ok(VmExit::VirtInstruction), "{c:#x}");
        }
        assert_eq!(decode(RDPMC, 0, 0), Ok(VmExit::Rdpmc));
        for c in [MONITOR, MWAIT, MWAIT_CONDITIONAL] {
            assert_eq!(decode(c, 0, 0), Ok(VmExit::Unsupported), "{c:#x}");
        }
        assert_eq!(decode(INVD, 0, 0), Ok(VmExit::CacheFlush));
        assert_eq!(decode(WBINVD, 0, 0), Ok(VmExit::CacheFlush));
        assert_eq!(decode(XSETBV, 0, 0), Ok(VmExit::Xsetbv));
        assert_eq!(decode(HLT, 0, 0), Ok(VmExit::Hlt));
        assert_eq!(decode(INTR, 0, 0), Ok(VmExit::HostInterrupt));
        assert_eq!(decode(VINTR, 0, 0), Ok(VmExit::InterruptWindow));
        assert_eq!(decode(SHUTDOWN, 0, 0), Ok(VmExit::TripleFault));
        assert_eq!(decode(INIT, 0, 0), Ok(VmExit::Init));
        assert_eq!(decode(0x4e, 6, 0), Ok(VmExit::Unknown { code: 0x4e, qualification: 6 }));
    }

    #[test]
    fn vmrun_failure_is_an_entry_error() {
        assert_eq!(
            decode(INVALID, 0, 0),
            Err(EntryError { what: "VMEXIT_INVALID", code: u64::MAX })
        );
        assert!(decode(BUSY, 0, 0).is_err());
        assert_eq!(decode(0xffff_ffff, 0, 0).map_err(|e| e.code), Err(INVALID));
    }
}
